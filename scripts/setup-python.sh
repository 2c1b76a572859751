#!/usr/bin/env bash
# Creates (or reuses) the Python venv that the proxy tests drive: the official `openai`
# package and `langchain-openai`, pinned in client/tests/python/requirements.txt.
# Progress goes to stderr; stdout is one line for `eval`:
#   export VEIL_TEST_PYTHON=<the venv's python>
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VEIL_VENV:-$PWD/.venv}"
req=client/tests/python/requirements.txt
stamp="$venv/.veil-requirements"

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    echo "python3-venv is missing; installing it from Debian's packages" >&2
    if [[ $(id -u) -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    else
        echo "error: python3-venv is missing and this is not root: sudo apt-get install python3-venv" >&2
        exit 1
    fi
fi

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating $venv" >&2
    python3 -m venv "$venv" >&2
fi
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
    echo "installing $(grep -v '^#' "$req" | tr '\n' ' ')" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2
    cp "$req" "$stamp"
else
    echo "$venv is up to date with $req" >&2
fi
"$venv/bin/python" -c 'import openai, langchain_openai; print("openai", openai.__version__, file=__import__("sys").stderr)'
echo "export VEIL_TEST_PYTHON=$venv/bin/python"
