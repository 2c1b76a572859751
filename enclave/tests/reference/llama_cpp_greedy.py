#!/usr/bin/env python3
"""Greedy decoding reference for SmolLM2-135M-Instruct (Q4_1 GGUF) with llama.cpp.

For each fixed chat conversation: render the prompt with the GGUF's own chat template
(`tokenizer.chat_template`, rendered exactly as llama-cpp-python's chat handler does:
jinja2 sandbox, trim_blocks, lstrip_blocks, add_generation_prompt=True, bos/eos token
strings from the vocabulary), tokenize it as llama-cpp-python's chat handler does
(no BOS added, special tokens parsed), evaluate the prompt in one batch, then decode
greedily: at every step the next token is the argmax of the last position's logits
(numpy argmax, lowest id on ties), with no sampler of any kind (no temperature, top-k,
top-p, min-p or repetition penalty). Each step is cross-checked against llama.cpp's own
greedy sampler (`llama_sampler_init_greedy`); a disagreement aborts. Decoding stops at
an end-of-generation token (llama.cpp's `llama_vocab_is_eog`) or after 64 tokens.

Writes llama_cpp_greedy.json next to this script; with --check, recomputes and exits 1
with a diff if anything differs from the committed file (token ids and text exactly,
logit figures within 1e-3).

Usage: llama_cpp_greedy.py [--model-dir DIR] [--check] [--out PATH]
"""

import argparse
import ctypes
import os
import sys

import numpy as np

import common

MAX_NEW_TOKENS = 64
N_THREADS = 2
N_CTX = 1024
TOP_K_RECORDED = 10
LOGIT_TOL = 1e-3

CASES = [
    {
        "name": "factual",
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
        ],
    },
    {
        "name": "system_instruction",
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in one short sentence."},
            {"role": "user", "content": "Explain what a hash function is."},
        ],
    },
    {
        "name": "multi_turn",
        "messages": [
            {"role": "user", "content": "Hi! My name is Ada and I like gardening."},
            {"role": "assistant", "content": "Hello Ada! Gardening is a wonderful hobby. How can I help you today?"},
            {"role": "user", "content": "What is my name, and can you list three vegetables that are easy to grow?"},
        ],
    },
    {
        "name": "non_ascii",
        "messages": [
            {"role": "user", "content": "Translate \"good morning\" into French and Spanish. 🌞"},
        ],
    },
    {
        "name": "list_instruction",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Give me three tips for writing clear code, as a numbered list."},
        ],
    },
]


def load(model_path):
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=model_path,
        n_ctx=N_CTX,
        n_batch=N_CTX,
        n_ubatch=N_CTX,
        n_threads=N_THREADS,
        n_threads_batch=N_THREADS,
        n_gpu_layers=0,
        logits_all=False,
        flash_attn=False,
        verbose=False,
    )
    return llm


def render(llm, messages):
    from llama_cpp import llama_chat_format

    template = llm.metadata["tokenizer.chat_template"]
    eos_id = llm.token_eos()
    bos_id = llm.token_bos()
    formatter = llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
        bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
        add_generation_prompt=True,
    )
    result = formatter(messages=messages)
    # llama-cpp-python's chat handler: add_bos = not added_special (True for Jinja2 templates).
    add_bos = not result.added_special
    return template, result.prompt, add_bos


def greedy(llm, prompt_ids):
    import llama_cpp

    ctx = llm._ctx.ctx
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    sampler = llama_cpp.llama_sampler_init_greedy()
    try:
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(prompt_ids)
        out, steps = [], []
        finish = "length"
        for _ in range(MAX_NEW_TOKENS):
            ptr = llama_cpp.llama_get_logits_ith(ctx, -1)
            logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float32, copy=True)
            tok = int(np.argmax(logits))
            check = int(llama_cpp.llama_sampler_sample(sampler, ctx, -1))
            if check != tok:
                sys.exit(f"argmax {tok} != llama.cpp greedy sampler {check}")
            order = np.argsort(-logits, kind="stable")[:TOP_K_RECORDED]
            steps.append((logits, order))
            out.append(tok)
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                finish = "stop"
                break
            llm.eval([tok])
        return out, finish, steps
    finally:
        llama_cpp.llama_sampler_free(sampler)


def compute(model_dir):
    import llama_cpp

    path = common.gguf_path(model_dir)
    llm = load(path)
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    eog = [t for t in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    cases = []
    for case in CASES:
        template, prompt, add_bos = render(llm, case["messages"])
        prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
        gen, finish, steps = greedy(llm, prompt_ids)
        text_ids = gen[:-1] if finish == "stop" else gen
        text = llm.detokenize(text_ids, special=False).decode("utf-8", errors="replace")
        margins = [float(lg[o[0]] - lg[o[1]]) for lg, o in steps]
        cases.append(
            {
                "name": case["name"],
                "messages": case["messages"],
                "prompt": prompt,
                "prompt_token_ids": [int(t) for t in prompt_ids],
                "generated_token_ids": gen,
                "generated_text": text,
                "finish_reason": finish,
                "top1_top2_logit_margins": [round(m, 5) for m in margins],
                "first_step_top_logits": [
                    {"id": int(t), "logit": round(float(steps[0][0][t]), 5)} for t in steps[0][1]
                ],
            }
        )
    return {
        "schema": "veil-reference-llama-cpp-greedy-v1",
        "generator": "enclave/tests/reference/llama_cpp_greedy.py",
        "llama_cpp_python_version": llama_cpp.__version__,
        "model_file": common.GGUF_REL.replace(os.sep, "/"),
        "model_sha256": common.GGUF_SHA256,
        "chat_template": template,
        "settings": {
            "decoding": "greedy argmax over the last position's logits (lowest id on ties), no samplers",
            "max_new_tokens": MAX_NEW_TOKENS,
            "n_threads": N_THREADS,
            "n_ctx": N_CTX,
            "n_batch": N_CTX,
            "flash_attn": False,
            "add_generation_prompt": True,
            "add_bos": add_bos,
            "parse_special_tokens": True,
            "stop": "llama_vocab_is_eog(token); the stopping token is included in generated_token_ids, not in generated_text",
            "cpu_build": "GGML_NATIVE=OFF, AVX AVX2 FMA F16C BMI2 (x86-64-v3), OpenMP",
        },
        "eog_token_ids": eog,
        "bos_token_id": int(llm.token_bos()),
        "eos_token_id": int(llm.token_eos()),
        "cases": cases,
    }


def compare(committed, fresh):
    """True when fresh matches committed: everything exactly, except logit figures within LOGIT_TOL."""

    def eq(a, b, key=None):
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(eq(a[k], b[k], k) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(eq(x, y, key) for x, y in zip(a, b))
        if key in ("top1_top2_logit_margins", "logit") and isinstance(a, float) and isinstance(b, float):
            return abs(a - b) <= LOGIT_TOL
        if key == "llama_cpp_python_version":
            return True  # reported in the diff below when it differs, but not a failure on its own
        return a == b and type(a) == type(b)

    return eq(committed, fresh)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=common.DEFAULT_MODEL_DIR)
    ap.add_argument("--check", action="store_true", help="recompute and compare with the committed JSON")
    ap.add_argument("--out", default=os.path.join(common.HERE, "llama_cpp_greedy.json"))
    args = ap.parse_args()

    fresh = compute(args.model_dir)
    if args.check:
        committed = common.read_json(args.out)
        if not compare(committed, fresh):
            print(common.diff_lines(args.out, committed, fresh))
            print(f"llama_cpp_greedy: MISMATCH with {args.out}", file=sys.stderr)
            sys.exit(1)
        if committed.get("llama_cpp_python_version") != fresh["llama_cpp_python_version"]:
            print(
                f"note: committed with llama-cpp-python {committed.get('llama_cpp_python_version')}, "
                f"checked with {fresh['llama_cpp_python_version']}",
                file=sys.stderr,
            )
        print(f"llama_cpp_greedy: OK, {len(fresh['cases'])} cases match {args.out}")
        return
    common.write_json(args.out, fresh)
    for c in fresh["cases"]:
        print(f"[{c['name']}] {len(c['prompt_token_ids'])} prompt tokens, "
              f"{len(c['generated_token_ids'])} generated ({c['finish_reason']}), "
              f"min margin {min(c['top1_top2_logit_margins']):.4f}")
        print("   " + c["generated_text"].replace("\n", "\n   "))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
