"""The dcap-qvl side of the TDX verification benchmark (attestation/benches/tdx.rs runs it
after timing veil, in the same run, on the same quotes and collateral).

    python dcap_qvl_peer.py N WARMUP QUOTE COLLATERAL_DIR UNIX_TIME [QUOTE DIR TIME ...]

For each quote: the collateral object is built once from the directory (the layout
`veil-verify tdx-quote --collateral` reads), then `dcap_qvl.verify(quote, collateral, now)`
is called WARMUP times untimed and N times timed one by one with time.perf_counter_ns.
Prints one JSON object per quote: status, advisory ids, p50/p99/mean and every sample, in
nanoseconds. The benchmark calls it once per round, alternating with veil's timing, so
both sides see the same load.
The Python call is included in every figure; dcap-qvl parses the collateral's JSON,
certificates and CRLs inside each verify call (its API takes the raw collateral).
"""

import json
import statistics
import sys
import time

import dcap_qvl


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


def collateral_from(cdir):
    def read(name, mode="r"):
        with open(f"{cdir}/{name}", mode) as f:
            return f.read()

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
    return dcap_qvl.QuoteCollateralV3.from_json(json.dumps({
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


def percentile(sorted_ns, p):
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * p))]


def main(argv):
    n, warmup = int(argv[0]), int(argv[1])
    rest = argv[2:]
    for i in range(0, len(rest), 3):
        quote_path, cdir, now = rest[i], rest[i + 1], int(rest[i + 2])
        with open(quote_path, "rb") as f:
            quote = f.read()
        collateral = collateral_from(cdir)
        try:
            r = dcap_qvl.verify(quote, collateral, now)
            status, advisories = r.status, sorted(r.advisory_ids)
        except Exception as e:  # dcap-qvl raises ValueError with its reason
            status, advisories = "error: " + str(e), []
        for _ in range(warmup):
            try:
                dcap_qvl.verify(quote, collateral, now)
            except Exception:
                pass
        samples = []
        for _ in range(n):
            t = time.perf_counter_ns()
            try:
                dcap_qvl.verify(quote, collateral, now)
            except Exception:
                pass
            samples.append(time.perf_counter_ns() - t)
        samples.sort()
        print(json.dumps({
            "quote": quote_path,
            "status": status,
            "advisory_ids": advisories,
            "n": n,
            "p50_ns": percentile(samples, 0.50),
            "p99_ns": percentile(samples, 0.99),
            "mean_ns": int(statistics.fmean(samples)),
            "samples_ns": samples,
            "dcap_qvl": getattr(dcap_qvl, "__version__", "?"),
        }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
