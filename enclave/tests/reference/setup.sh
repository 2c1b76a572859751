#!/usr/bin/env bash
# Creates (or reuses) the reference venv .venv-ref at the repository root, installs the
# pinned requirements, and fetches the model weights into models/ (digests checked).
#
#   enclave/tests/reference/setup.sh            # venv + models/
#   VEIL_REF_SKIP_MODELS=1 .../setup.sh         # venv only
#   VEIL_REF_MODEL_DIR=/path .../setup.sh       # models elsewhere
#
# Idempotent: a stamp in the venv records the requirements and build flags it was made
# with; when they match and the packages import, nothing is installed again. On a fresh
# machine it builds llama.cpp from source (about 10-25 minutes on 2 cores) and downloads
# about 4 GB of wheels (torch and the CUDA runtime libraries it links against).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="$root/.venv-ref"
req="$here/requirements.txt"
python="${PYTHON:-python3}"

# llama.cpp for a portable x86-64-v3 CPU (AVX, AVX2, FMA, F16C, BMI2; no AVX-512), so its
# figures compare with veil's `-C target-cpu=x86-64-v3` build. OpenMP on, as in a default
# llama.cpp build; no curl (nothing is downloaded at run time).
cmake_args="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_OPENMP=ON -DLLAMA_CURL=OFF"

stamp="$venv/.veil-reference-stamp"
want="$( { cat "$req"; echo "$cmake_args"; } | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$py" -c "import llama_cpp, sentence_transformers, torch" 2>/dev/null; then
    echo "setup: $venv is up to date"
else
    "$py" -m pip install --quiet --upgrade pip
    llama_pin="$(grep -E '^llama-cpp-python==' "$req")"
    have_llama="$("$py" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null || true)"
    built_with="$(cat "$venv/.veil-llama-cmake-args" 2>/dev/null || true)"
    if [ "llama-cpp-python==$have_llama" != "$llama_pin" ] || [ "$built_with" != "$cmake_args" ]; then
        echo "setup: building $llama_pin from source (CMAKE_ARGS=$cmake_args); this takes a while"
        # --no-cache-dir: pip's wheel cache does not key on CMAKE_ARGS, so never reuse a
        # wheel built with other flags.
        CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
            "$py" -m pip install --quiet --no-deps --no-cache-dir --force-reinstall \
            --no-binary llama-cpp-python "$llama_pin"
        echo "$cmake_args" > "$venv/.veil-llama-cmake-args"
    fi
    echo "setup: installing the pinned requirements (--no-deps)"
    "$py" -m pip install --quiet --no-deps -r "$req"
    "$py" -c "import llama_cpp, sentence_transformers, torch; print('setup: llama-cpp-python', llama_cpp.__version__, '| sentence-transformers', sentence_transformers.__version__, '| torch', torch.__version__)"
    echo "$want" > "$stamp"
fi

if [ -z "${VEIL_REF_SKIP_MODELS:-}" ]; then
    "$py" "$here/fetch_models.py" "${VEIL_REF_MODEL_DIR:-$root/models}"
fi
