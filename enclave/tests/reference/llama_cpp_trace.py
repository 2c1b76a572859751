#!/usr/bin/env python3
"""Debugging aid: dumps llama.cpp's intermediate tensors for one reference case.

Evaluates the prompt of a case of llama_cpp_greedy.json in one batch exactly as
llama_cpp_greedy.py does (same context parameters), then optionally some greedy decode
steps, and writes every tensor the graph computes (through llama.cpp's eval callback)
as raw little-endian f32 files `<name>.<pass>.<k>.bin` (k: the k-th tensor of that name in
that pass), with a shape listing in `index.txt`, into OUT_DIR. Compare them with the
engine's own trace (`VEIL_TRACE_DIR`, the ignored test `trace_first_case_prompt`).

Usage: llama_cpp_trace.py OUT_DIR [--case N] [--decode STEPS] [--model-dir DIR]
"""

import argparse
import ctypes
import json
import os
import sys

import numpy as np

import common

GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--case", type=int, default=0)
    ap.add_argument("--decode", type=int, default=0)
    ap.add_argument("--model-dir", default=common.DEFAULT_MODEL_DIR)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    import llama_cpp
    import llama_cpp.llama_cpp as ll
    import llama_cpp_greedy as ref

    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    base = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))
    base.ggml_get_name.restype = ctypes.c_void_p
    base.ggml_get_name.argtypes = [ctypes.c_void_p]

    class Tensor(ctypes.Structure):
        _fields_ = [
            ("type", ctypes.c_int32),
            ("buffer", ctypes.c_void_p),
            ("ne", ctypes.c_int64 * 4),
            ("nb", ctypes.c_size_t * 4),
        ]

    state = {"pass": 0, "seen": {}}
    index = []

    def cb(t, ask, _user):
        if ask:
            return True
        name_at = base.ggml_get_name(t)
        name = ctypes.string_at(name_at).decode()
        hdr = Tensor.from_address(t)
        # `data` is the field just before `name` in struct ggml_tensor.
        data_ptr = ctypes.c_void_p.from_address(name_at - 8).value
        if hdr.type not in (GGML_TYPE_F32, GGML_TYPE_F16) or not data_ptr:
            return True
        ne = list(hdr.ne)
        nb = list(hdr.nb)
        dt = np.float32 if hdr.type == GGML_TYPE_F32 else np.float16
        size = max((n - 1) * s for n, s in zip(ne, nb)) + np.dtype(dt).itemsize
        buf = (ctypes.c_char * size).from_address(data_ptr)
        flat = np.frombuffer(buf, dtype=dt, count=size // np.dtype(dt).itemsize)
        arr = np.lib.stride_tricks.as_strided(
            flat, shape=tuple(reversed(ne)), strides=tuple(reversed(nb))
        )
        arr = np.ascontiguousarray(arr).astype(np.float32)
        key = (state["pass"], name)
        k = state["seen"].get(key, 0)
        state["seen"][key] = k + 1
        fname = f"{name}.{state['pass']}.{k}.bin"
        arr.tofile(os.path.join(args.out, fname))
        index.append(f"{fname} {list(reversed(ne))} {'f16' if hdr.type else 'f32'}")
        return True

    c_cb = ll.ggml_backend_sched_eval_callback(cb)
    orig = ll.llama_context_default_params

    def patched():
        p = orig()
        p.cb_eval = c_cb
        return p

    ll.llama_context_default_params = patched
    path = common.gguf_path(args.model_dir)
    llm = ref.load(path)
    with open(os.path.join(os.path.dirname(__file__), "llama_cpp_greedy.json"), encoding="utf-8") as f:
        case = json.load(f)["cases"][args.case]
    prompt = case["prompt_token_ids"]
    llm.reset()
    llm._ctx.kv_cache_clear()
    llm.eval(prompt)
    for tok in case["generated_token_ids"][: args.decode]:
        state["pass"] += 1
        llm.eval([tok])
    with open(os.path.join(args.out, "index.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(index) + "\n")
    print(f"{len(index)} tensors in {args.out}", file=sys.stderr)

if __name__ == "__main__":
    main()
