#!/usr/bin/env bash
# veil's test command: installs what the tests need, then runs formatting, lints and
# every test. This is what `.ci/run` runs; it must work on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# A one-shot build gains nothing from incremental compilation, whose caches cost about
# 2 GB of disk; see also the debug-info settings in Cargo.toml's profiles.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

if [[ ! -d ../shared/testdata ]]; then
    echo "error: ../shared/testdata is missing; the tests read the shared vectors from beside the checkout" >&2
    exit 1
fi

step "toolchain"
cargo --version
rustup component list --installed 2>/dev/null | grep -E 'clippy|rustfmt' || true
for c in clippy rustfmt; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build the tests and the binaries they start"
# One build for both, in the tests' feature resolution (dev-dependencies included), so
# the engine's dependencies (candle) are compiled once, not once per feature set.
# `--bins` matters: `cargo test` alone builds a package's binaries only when that
# package has integration tests, and tests/binaries.rs runs every binary.
cargo build --workspace --locked --bins --tests

step "models (pinned digests; already-present files are not fetched again)"
target/debug/veil-enclave models fetch --dir "${VEIL_MODELS_DIR:-models}"
export VEIL_MODELS_DIR="${VEIL_MODELS_DIR:-$PWD/models}"

step "PostgreSQL from Debian's packages (the gateway's ledger tests)"
# Prints `export VEIL_TEST_POSTGRES_URL=...` for a server it has started (or found).
eval "$(scripts/setup-postgres.sh)"

step "Python venv with the openai and langchain-openai packages (the proxy's SDK tests)"
# Prints `export VEIL_TEST_PYTHON=...`, the venv's interpreter.
eval "$(scripts/setup-python.sh)"

step "tests"
cargo test --workspace --locked

step "disk"
df -h . | tail -n 1
du -sh target 2>/dev/null || true

fuzz_seconds="${VEIL_FUZZ_SECONDS:-20}"
if [[ "$fuzz_seconds" != "0" ]]; then
    step "fuzz (${fuzz_seconds} s per target)"
    scripts/fuzz.sh "$fuzz_seconds" --allow-skip
fi
