#!/usr/bin/env bash
# Fuzz veil-attestation's parsers of untrusted input for a bounded time.
#
# Usage: scripts/fuzz.sh [SECONDS] [--allow-skip]
#
#   SECONDS       how long to fuzz each target (default 30)
#   --allow-skip  exit 0, after saying why, when fuzzing cannot work on this machine
#                 (cargo-fuzz cannot be installed, or the toolchain cannot build
#                 sanitizer-instrumented code); without it that is a failure
#
# The targets live in fuzz/ (its own cargo workspace; see fuzz/src/lib.rs for the
# invariants). Each run starts from the committed seeds in fuzz/seeds/<target>/ and the
# gitignored working corpus fuzz/corpus/<target>/, where libFuzzer writes the new inputs
# it finds; crashing inputs land in fuzz/artifacts/<target>/. Reproduce one with
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<file>)
# The seeds are also replayed by plain `cargo test` (attestation/tests/fuzz_seeds.rs).
#
# Toolchain: cargo-fuzz needs nightly-only compiler flags (-Zsanitizer=address, and
# -Cpasses=sancov-module with its LLVM arguments). This script runs it on whatever
# toolchain is active (normally stable) with RUSTC_BOOTSTRAP=1, which tells a stable
# rustc and cargo to accept unstable flags. That is an escape hatch meant for building
# the compiler itself, not a supported interface: it works with stable 1.95.0 (the
# sanitizer runtimes ship in stable's rust-std for x86_64-unknown-linux-gnu), but a
# future stable release may change or drop these flags. Set FUZZ_TOOLCHAIN=nightly to
# run `cargo +nightly fuzz` instead where a nightly toolchain is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=30
allow_skip=0
for arg in "$@"; do
    case "$arg" in
        --allow-skip) allow_skip=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *[!0-9]* | '')
            echo "error: unexpected argument '$arg' (usage: scripts/fuzz.sh [SECONDS] [--allow-skip])" >&2
            exit 2
            ;;
        *) seconds="$arg" ;;
    esac
done
if ((seconds < 1)); then
    echo "error: SECONDS must be at least 1" >&2
    exit 2
fi

step() { printf '\n== %s\n' "$*"; }

skip() {
    echo "fuzz: cannot fuzz on this machine: $*" >&2
    if ((allow_skip)); then
        echo "fuzz: SKIPPED (--allow-skip given)" >&2
        exit 0
    fi
    echo "fuzz: failing; pass --allow-skip to treat this as a skip" >&2
    exit 1
}

export RUSTC_BOOTSTRAP=1
cargo_tc=(cargo)
rustc_tc=(rustc)
if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
    cargo_tc=(cargo "+$FUZZ_TOOLCHAIN")
    rustc_tc=(rustc "+$FUZZ_TOOLCHAIN")
fi

step "toolchain"
"${cargo_tc[@]}" --version || skip "no cargo for toolchain '${FUZZ_TOOLCHAIN:-default}'"
"${rustc_tc[@]}" --version

step "cargo-fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz missing: cargo install cargo-fuzz --locked"
    cargo install cargo-fuzz --locked || skip "'cargo install cargo-fuzz --locked' failed"
fi
cargo fuzz --version

step "probe: sanitizer-coverage instrumentation with RUSTC_BOOTSTRAP=1"
probe_dir="$(mktemp -d)"
trap 'rm -rf "$probe_dir"' EXIT
echo 'fn main() {}' >"$probe_dir/probe.rs"
if ! "${rustc_tc[@]}" --edition 2021 -Zsanitizer=address -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    "$probe_dir/probe.rs" -o "$probe_dir/probe" 2>"$probe_dir/err"; then
    cat "$probe_dir/err" >&2
    skip "this rustc does not accept the unstable flags cargo-fuzz needs, even with RUSTC_BOOTSTRAP=1"
fi
echo "ok"

cd fuzz
targets=()
while IFS= read -r t; do
    [[ -n "$t" ]] && targets+=("$t")
done < <("${cargo_tc[@]}" fuzz list)
if ((${#targets[@]} == 0)); then
    echo "error: cargo fuzz list found no targets" >&2
    exit 1
fi

step "build ${targets[*]}"
start=$SECONDS
"${cargo_tc[@]}" fuzz build
echo "built in $((SECONDS - start)) s"

failed=()
for t in "${targets[@]}"; do
    step "run $t for ${seconds} s"
    mkdir -p "corpus/$t"
    seeds=()
    [[ -d "seeds/$t" ]] && seeds=("seeds/$t")
    # The first directory receives new inputs; the seeds are only read.
    if ! "${cargo_tc[@]}" fuzz run "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1; then
        failed+=("$t")
        echo "fuzz: $t FAILED; crashing input under fuzz/artifacts/$t/" >&2
    fi
done

step "summary"
if ((${#failed[@]})); then
    echo "fuzz: failures in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds} s each without failures"
