#!/usr/bin/env bash
# Compare veil's TDX quote verification with dcap-qvl (Phala's Rust DCAP verifier, through
# its Python package) on every sample in ../shared/testdata/tdx, at the times PROVENANCE.md
# gives: TCB status and advisory ids (or, where no TCB level matches, that both say so).
#
#   scripts/dcap-qvl-compare.sh           compare; exit 1 on any disagreement
#   scripts/dcap-qvl-compare.sh --bench   also time dcap_qvl.verify per quote (collateral
#                                         object built once), p50 over 200 calls: a quick
#                                         look; the figures in BENCHMARKS.md come from
#                                         `cargo bench -p veil-attestation --bench tdx`,
#                                         which times veil and dcap-qvl in the same run
#                                         (attestation/benches/dcap_qvl_peer.py, this venv)
#
# Creates (once) a virtual environment under target/dcap-qvl-venv with a pinned dcap-qvl,
# installed with `python3 -m pip`; builds veil-verify (cargo build -p veil-verifier).
set -euo pipefail

DCAP_QVL_VERSION="0.7.0"
root="$(cd "$(dirname "$0")/.." && pwd)"
testdata="${VEIL_TESTDATA:-$root/../shared/testdata}/tdx"
venv="$root/target/dcap-qvl-venv"
bench=0
[[ "${1:-}" == "--bench" ]] && bench=1

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import dcap_qvl, sys; sys.exit(dcap_qvl.version() != '$DCAP_QVL_VERSION' if callable(getattr(dcap_qvl, 'version', None)) else 0)" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet "dcap-qvl==$DCAP_QVL_VERSION"
fi

(cd "$root" && cargo build --quiet -p veil-verifier)
veil="$root/target/debug/veil-verify"

# sample | collateral dir (relative to testdata/tdx) | verification time (PROVENANCE.md)
cases=(
    "dcap-qvl-v4-uptodate|dcap-qvl-v4-uptodate/collateral|2025-07-19T10:00:34Z"
    "dcap-qvl-v5-outdated|dcap-qvl-v5-outdated/collateral|2026-03-20T10:41:14Z"
    "go-tdx-guest-v4-spr|go-tdx-guest-v4-spr/collateral|2023-07-01T01:00:00Z"
    "go-tdx-guest-v5|dcap-qvl-v5-outdated/collateral|2026-03-01T00:00:00Z"
    "dstack-v4-eventlog|dcap-qvl-v5-outdated/collateral|2026-03-01T00:00:00Z"
)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail=0
for case in "${cases[@]}"; do
    IFS='|' read -r sample coll when <<<"$case"
    set +e
    "$veil" tdx-quote "$testdata/$sample/quote.bin" --collateral "$testdata/$coll" --at "$when" --json >"$tmp/veil.json"
    rc=$?
    set -e
    if [[ $rc -ne 0 && $rc -ne 1 ]]; then
        echo "$sample: veil-verify exited $rc" >&2
        fail=1
        continue
    fi
    if ! "$venv/bin/python" - "$testdata" "$sample" "$coll" "$when" "$tmp/veil.json" "$bench" <<'PY'
import json, sys, time, statistics, datetime
import dcap_qvl

testdata, sample, coll, when, veil_json, bench = sys.argv[1:7]
cdir = f"{testdata}/{coll}"

def read(name, mode="r"):
    with open(f"{cdir}/{name}", mode) as f:
        return f.read()

def raw_member(text, key):
    """The exact text of the JSON value of top-level `key` (the signed bytes)."""
    start = text.index(f'"{key}"')
    start = text.index("{", start)
    depth, i, in_str = 0, start, False
    while True:
        c = text[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
        i += 1

def signed(stem, key):
    try:
        return read(f"{stem}.json"), read(f"{stem}.sig.hex").strip()
    except FileNotFoundError:
        text = read(f"{stem}_response.json")
        return raw_member(text, key), json.loads(text)["signature"]

def optional(name, fallback):
    try:
        return read(name)
    except FileNotFoundError:
        return read(fallback)

tcb_info, tcb_sig = signed("tcb_info", "tcbInfo")
qe_id, qe_sig = signed("qe_identity", "enclaveIdentity")
collateral = dcap_qvl.QuoteCollateralV3.from_json(json.dumps({
    "pck_crl_issuer_chain": optional("pck_crl_issuer_chain.pem", "tcb_info_issuer_chain.pem"),
    "root_ca_crl": read("root_ca_crl.der", "rb").hex(),
    "pck_crl": read("pck_crl.der", "rb").hex(),
    "tcb_info_issuer_chain": read("tcb_info_issuer_chain.pem"),
    "tcb_info": tcb_info,
    "tcb_info_signature": tcb_sig,
    "qe_identity_issuer_chain": optional("qe_identity_issuer_chain.pem", "tcb_info_issuer_chain.pem"),
    "qe_identity": qe_id,
    "qe_identity_signature": qe_sig,
}))
quote = open(f"{testdata}/{sample}/quote.bin", "rb").read()
now = int(datetime.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp())
try:
    r = dcap_qvl.verify(quote, collateral, now)
    theirs = (r.status, sorted(r.advisory_ids))
except Exception as e:  # dcap-qvl raises ValueError with its reason
    theirs = ("error: " + str(e), [])

doc = json.load(open(veil_json))
facts = doc["facts"]
if "tcb_status" in facts:
    ours = (facts["tcb_status"], sorted(facts["advisory_ids"]))
else:
    ours = ("error: " + facts.get("error", "?"), [])

def norm(outcome):
    status, ids = outcome
    if status.startswith("error:") and "no matching tcb level" in status.lower():
        return ("NoMatchingTcbLevel", ids)
    return outcome

agree = norm(ours) == norm(theirs)
print(f"{'agree' if agree else 'DISAGREE'}  {sample:<22} at {when}  veil={norm(ours)}  dcap-qvl={norm(theirs)}")
if bench == "1":
    samples = []
    for _ in range(200):
        t = time.perf_counter()
        try:
            dcap_qvl.verify(quote, collateral, now)
        except Exception:
            pass
        samples.append(time.perf_counter() - t)
    print(f"      dcap-qvl {dcap_qvl.__name__} verify p50 {statistics.median(samples) * 1e6:.0f} µs (200 calls, Python call included)")
sys.exit(0 if agree else 1)
PY
    then
        fail=1
    fi
done
if [[ $fail -ne 0 ]]; then
    echo "dcap-qvl comparison: DISAGREEMENT" >&2
    exit 1
fi
echo "dcap-qvl comparison: all samples agree (dcap-qvl $DCAP_QVL_VERSION)"
