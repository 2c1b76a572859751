#!/usr/bin/env python3
"""Peer figures for veil's engine benchmark: llama.cpp and sentence-transformers on CPU.

llama.cpp (llama-cpp-python, SmolLM2-135M-Instruct Q4_1 GGUF): for n_threads = 1 and
--threads (1 and 2 by default), prefill of a fixed 128-token prompt in one batch, then
128 single-token decode steps feeding back the argmax (the argmax is part of the timed
decode loop; EOS is not a stop here). Prefill tokens/s = 128 / time of the prompt
llama_decode; decode tokens/s = 128 / time of the 128 decode steps. One warm-up run,
then the median of RUNS runs; llama.cpp's own perf counters (llama_perf_context) are
reported beside the wall-clock figures as a cross-check.

sentence-transformers (all-MiniLM-L6-v2, float32, CPU, torch threads = --threads,
interop threads 1): embeddings/s encoding the 32 RAG_CHUNKS below one at a time
(batch 1) and all 32 in one call (batch 32, padded to the longest in the batch).
One warm-up pass, then the median of RUNS passes.

Prints a human summary, or with --json exactly one JSON object on stdout.

With --inputs, prints only the workload (prompt text, token counts, the 32 chunks) as one
JSON object, so that veil's own bench (enclave/benches/engine.rs) measures the same.

Usage: peer_bench.py [--model-dir DIR] [--threads N] [--json | --inputs]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import common  # noqa: E402

RUNS = 5
MIN_RUNS = 3
# Each measurement (one thread count or batch size) stops early, after the warm-up, once it
# has MIN_RUNS runs and has taken SOFT_BUDGET_S, or has one run and has taken HARD_BUDGET_S,
# so the whole script stays well under 3 minutes even on a busy machine (about a minute
# on an idle one, where all RUNS runs are done).
SOFT_BUDGET_S = 12.0
HARD_BUDGET_S = 20.0


def out_of_time(measured, started):
    elapsed = time.perf_counter() - started
    return (measured >= MIN_RUNS and elapsed > SOFT_BUDGET_S) or (measured >= 1 and elapsed > HARD_BUDGET_S)
PROMPT_TOKENS = 128
DECODE_TOKENS = 128

# The prefill prompt: this text is tokenized (no BOS, as in a chat prompt) and cut to its
# first 128 tokens.
PROMPT_TEXT = (
    "The history of cryptography stretches back thousands of years. Early ciphers, such as "
    "the Caesar cipher, shifted each letter of the alphabet by a fixed amount, and were "
    "easily broken by counting how often each letter appeared. During the Renaissance, "
    "polyalphabetic ciphers such as the Vigenere cipher used a keyword to vary the shift, "
    "which resisted simple frequency analysis for centuries. In the twentieth century, "
    "electromechanical rotor machines like the Enigma automated encryption, and the effort "
    "to break them helped to create modern computing. Public-key cryptography, introduced "
    "in the 1970s, allowed two parties who had never met to agree on a secret key over an "
    "open channel, and it now protects almost every connection on the internet. Today, "
    "researchers are designing new algorithms that resist attacks by quantum computers."
)

# Typical retrieval chunks: 32 short, distinct sentences (10-25 words, about 15-35 tokens).
RAG_CHUNKS = [
    "The enclave generates its signing key in memory at boot and never writes it to disk.",
    "Clients verify the attestation report before sending any prompt to the server.",
    "Oblivious HTTP separates the identity of a client from the content of its request.",
    "The gateway meters usage from receipts signed by the enclave, without seeing plaintext.",
    "A measured boot records a hash of each component before it is allowed to run.",
    "Rate limits are applied per API key at the gateway, before requests reach the enclave.",
    "Streaming responses are split into equal-size chunks so token lengths do not leak.",
    "Auditors can rebuild the image from source and compare its measurement with the report.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Paris is the capital of France and its largest city by population.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The mitochondria produce most of the chemical energy needed by a cell.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The Great Wall of China was built over many centuries by several dynasties.",
    "Mount Everest is the highest mountain above sea level on Earth.",
    "The Pacific Ocean is the largest and deepest of the world's oceans.",
    "To reset your password, open the settings page and choose 'Forgot password'.",
    "Invoices are sent on the first business day of each month by e-mail.",
    "Refunds are processed within five to seven business days after approval.",
    "Our support team is available from nine to five, Monday through Friday.",
    "The API returns HTTP 429 when a client exceeds its request quota.",
    "Each model is identified by a name and the SHA-256 digest of its weights.",
    "Embeddings map text to vectors so that similar meanings lie close together.",
    "Cosine similarity measures the angle between two vectors, ignoring their lengths.",
    "A vector database stores embeddings and finds the nearest neighbours of a query.",
    "Chunking splits long documents into passages small enough to embed and retrieve.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Regular exercise improves sleep, mood and cardiovascular health.",
    "The train to Berlin leaves at eight fifteen from platform four.",
    "Shakespeare wrote thirty-nine plays, including Hamlet and Macbeth.",
    "Backups are encrypted with a key that is rotated every ninety days.",
    "The meeting has been moved to Thursday afternoon at three o'clock.",
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def bench_llama(model_dir, thread_counts):
    import llama_cpp
    import numpy as np

    path = common.gguf_path(model_dir)
    results = []
    prompt_ids = None
    for n_threads in thread_counts:
        llm = llama_cpp.Llama(
            model_path=path, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=n_threads,
            n_threads_batch=n_threads, n_gpu_layers=0, logits_all=False, flash_attn=False, verbose=False,
        )
        if prompt_ids is None:
            prompt_ids = llm.tokenize(PROMPT_TEXT.encode(), add_bos=False, special=False)[:PROMPT_TOKENS]
            assert len(prompt_ids) == PROMPT_TOKENS, len(prompt_ids)
        ctx = llm._ctx.ctx
        n_vocab = llm.n_vocab()
        prefill, decode, perf_p, perf_d = [], [], [], []
        section_start = time.perf_counter()
        for run in range(RUNS + 1):
            if out_of_time(run - 1, section_start):
                break
            llm.reset()
            llama_cpp.llama_perf_context_reset(ctx)
            t0 = time.perf_counter()
            llm.eval(prompt_ids)
            t1 = time.perf_counter()
            for _ in range(DECODE_TOKENS):
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
                llm.eval([int(np.argmax(logits))])
            t2 = time.perf_counter()
            perf = llama_cpp.llama_perf_context(ctx)
            if run == 0:
                continue  # warm-up
            prefill.append(PROMPT_TOKENS / (t1 - t0))
            decode.append(DECODE_TOKENS / (t2 - t1))
            perf_p.append(1e3 * perf.n_p_eval / perf.t_p_eval_ms if perf.t_p_eval_ms > 0 else None)
            perf_d.append(1e3 * perf.n_eval / perf.t_eval_ms if perf.t_eval_ms > 0 else None)
        del llm
        r = {
            "n_threads": n_threads,
            "prefill_tokens_per_s": round(statistics.median(prefill), 1),
            "decode_tokens_per_s": round(statistics.median(decode), 1),
            "prefill_tokens_per_s_runs": [round(x, 1) for x in prefill],
            "decode_tokens_per_s_runs": [round(x, 1) for x in decode],
            "perf_counters_prefill_tokens_per_s": round(statistics.median([x for x in perf_p if x]), 1) if any(perf_p) else None,
            "perf_counters_decode_tokens_per_s": round(statistics.median([x for x in perf_d if x]), 1) if any(perf_d) else None,
        }
        log(f"llama.cpp n_threads={n_threads}: prefill {r['prefill_tokens_per_s']} tok/s, decode {r['decode_tokens_per_s']} tok/s")
        results.append(r)
    return {
        "version": llama_cpp.__version__,
        "model_file": common.GGUF_REL.replace(os.sep, "/"),
        "model_sha256": common.GGUF_SHA256,
        "prompt_tokens": PROMPT_TOKENS,
        "decode_tokens": DECODE_TOKENS,
        "warmup_runs": 1,
        "runs_max": RUNS,
        "statistic": "median",
        "settings": "n_ctx 512, n_batch 512, flash_attn off, CPU only, greedy argmax inside the timed decode loop",
        "results": results,
    }


def bench_st(model_dir, n_threads):
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(n_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    model = SentenceTransformer(common.minilm_dir(model_dir), device="cpu", local_files_only=True)
    token_counts = [len(model.tokenizer(s)["input_ids"]) for s in RAG_CHUNKS]
    results = []
    for batch_size in (1, 32):
        rates = []
        section_start = time.perf_counter()
        for run in range(RUNS + 1):
            if out_of_time(run - 1, section_start):
                break
            t0 = time.perf_counter()
            if batch_size == 1:
                for s in RAG_CHUNKS:
                    model.encode([s], batch_size=1, convert_to_numpy=True, show_progress_bar=False)
            else:
                model.encode(RAG_CHUNKS, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
            dt = time.perf_counter() - t0
            if run > 0:
                rates.append(len(RAG_CHUNKS) / dt)
        r = {
            "batch_size": batch_size,
            "embeddings_per_s": round(statistics.median(rates), 1),
            "embeddings_per_s_runs": [round(x, 1) for x in rates],
        }
        log(f"sentence-transformers threads={n_threads} batch={batch_size}: {r['embeddings_per_s']} embeddings/s")
        results.append(r)
    return {
        "versions": {"sentence_transformers": sentence_transformers.__version__, "torch": torch.__version__},
        "model_dir": common.MINILM_REL.replace(os.sep, "/"),
        "n_threads": n_threads,
        "texts": "RAG_CHUNKS in peer_bench.py: 32 short sentences",
        "n_texts": len(RAG_CHUNKS),
        "tokens_per_text_mean": round(sum(token_counts) / len(token_counts), 1),
        "tokens_per_text_min": min(token_counts),
        "tokens_per_text_max": max(token_counts),
        "warmup_runs": 1,
        "runs_max": RUNS,
        "statistic": "median",
        "settings": "float32, CPU, normalized embeddings (model config), encode() as a user calls it",
        "results": results,
    }


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}


def run_part(part, args):
    """Each peer runs in its own process, so neither's thread pools disturb the other."""
    import json
    import subprocess

    cmd = [sys.executable, os.path.abspath(__file__), "--part", part,
           "--model-dir", args.model_dir, "--threads", str(args.threads)]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, check=True)
    return json.loads(res.stdout)


def main():
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=common.DEFAULT_MODEL_DIR)
    ap.add_argument("--threads", type=int, default=2, help="torch threads; llama.cpp runs at 1 and at this count")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    ap.add_argument("--inputs", action="store_true", help="print the workload as JSON and exit")
    ap.add_argument("--part", choices=["llama", "st"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inputs:
        print(json.dumps({
            "prompt_text": PROMPT_TEXT, "prompt_tokens": PROMPT_TOKENS,
            "decode_tokens": DECODE_TOKENS, "rag_chunks": RAG_CHUNKS,
            "runs_max": RUNS, "min_runs": MIN_RUNS,
            "soft_budget_s": SOFT_BUDGET_S, "hard_budget_s": HARD_BUDGET_S,
        }))
        return
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    args.model_dir = os.path.abspath(args.model_dir)

    if args.part == "llama":
        print(json.dumps(bench_llama(args.model_dir, sorted({1, args.threads}))))
        return
    if args.part == "st":
        print(json.dumps(bench_st(args.model_dir, args.threads)))
        return

    start = time.perf_counter()
    out = {"schema": "veil-peer-bench-v1", "machine": machine()}
    out["llama_cpp"] = run_part("llama", args)
    out["sentence_transformers"] = run_part("st", args)
    out["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    out["wall_s"] = round(time.perf_counter() - start, 1)

    if args.json:
        print(json.dumps(out, indent=1))
        return
    m = out["machine"]
    print(f"machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, "
          f"load average {m['load_avg_1m_at_start']} at start, {m['load_avg_1m_at_end']} at end")
    print(f"llama.cpp (llama-cpp-python {out['llama_cpp']['version']}) SmolLM2-135M Q4_1, "
          f"prompt {PROMPT_TOKENS} tokens, decode {DECODE_TOKENS} tokens, median of up to {RUNS} runs")
    for r in out["llama_cpp"]["results"]:
        print(f"  threads {r['n_threads']}: prefill {r['prefill_tokens_per_s']:8.1f} tok/s   decode {r['decode_tokens_per_s']:7.1f} tok/s")
    st = out["sentence_transformers"]
    print(f"sentence-transformers {st['versions']['sentence_transformers']} all-MiniLM-L6-v2, "
          f"torch {st['versions']['torch']}, threads {st['n_threads']}")
    for r in st["results"]:
        print(f"  batch {r['batch_size']:2d}: {r['embeddings_per_s']:8.1f} embeddings/s")
    print(f"wall {out['wall_s']} s")


if __name__ == "__main__":
    main()
