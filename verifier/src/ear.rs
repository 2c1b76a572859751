//! The attestation result of `veil-verify bundle --json`, in the spirit of the RATS EAT
//! Attestation Result (EAR, draft-ietf-rats-ear) with AR4SI trustworthiness claims.
//!
//! One document for everything judged:
//!
//! ```text
//! {
//!   "eat_profile": "tag:github.com,2023:veraison/ear",
//!   "iat": 1795000000,                       // the verification time (--at), Unix seconds
//!   "ear.verifier-id": {"developer": "veil", "build": "veil-verify 0.1.0"},
//!   "veil.status": "warning",                // the worst submodule status
//!   "veil.policy-digest": "sha256:…",        // of the policy file's bytes, or "default"
//!   "submods": {
//!     "cpu": {                               // "backend1/cpu" for a gateway's list
//!       "ear.status": "affirming" | "warning" | "contraindicated",
//!       "ear.trustworthiness-vector": {"hardware": 2, "executables": 32, …},
//!       "veil.evidence-digest": "sha256:…",  // the bundle JSON this result judged
//!       "veil.claims": {…},                  // what the evidence says (when it parsed)
//!       "veil.checks": [{"name", "outcome", "detail"}, …]
//!     },
//!     "gpu0": { … }                          // one per GPU evidence item
//!   }
//! }
//! ```
//!
//! Trust values use the AR4SI tiers: 2 affirming, 32 warning, 96 contraindicated; a
//! claim that no check informed is left out (AR4SI "no claim"). Each check counts towards
//! one claim (see [`claim_of`]), and a claim takes its worst check. A submodule's status
//! is its worst claim. Keys only ever get added to this format, never renamed.

use serde_json::{Map, Value, json};
use veil_attestation::checks::{Check, Checks, Outcome};

/// AR4SI tier values.
const AFFIRMING: u8 = 2;
const WARNING: u8 = 32;
const CONTRAINDICATED: u8 = 96;

/// The AR4SI claim a check informs.
#[must_use]
pub fn claim_of(check: &str) -> &'static str {
    let name = check.rsplit('/').next().unwrap_or(check);
    let name = name.split_once('.').map_or(name, |(head, tail)| {
        // "gpu0.signature" → "signature"-style names of the GPU verifier.
        if is_gpu(head) { tail } else { name }
    });
    const EXECUTABLES: &[&str] = &[
        "policy.launch-measurement",
        "policy.measurement",
        "policy.mrtd",
        "policy.rtmr",
        "policy.mrseam",
        "policy.event",
        "event-log",
        "measurements",
        "rim",
    ];
    const IDENTITY: &[&str] = &[
        "bundle.",
        "claims.",
        "policy.report-data",
        "report-data",
        "chip-id",
        "nonce",
        "report.nonce",
        "evidence.age",
        "binding",
    ];
    const SOURCED: &[&str] = &["policy.model-manifest"];
    const CONFIGURATION: &[&str] = &["policy.", "tcb.", "cc-", "driver", "vbios"];
    let starts = |list: &[&str]| list.iter().any(|p| name.starts_with(p));
    if starts(EXECUTABLES) {
        "executables"
    } else if starts(SOURCED) {
        "sourced-data"
    } else if starts(IDENTITY) {
        "instance-identity"
    } else if name == "policy.simulated-tee" {
        "hardware"
    } else if starts(CONFIGURATION) {
        "configuration"
    } else {
        // Signatures, certificate chains, CRLs, OCSP, collateral, parsing.
        "hardware"
    }
}

/// `gpu0`, `gpu1`…: the prefix of a GPU's checks.
fn is_gpu(head: &str) -> bool {
    head.strip_prefix("gpu")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

fn tier(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Pass => AFFIRMING,
        Outcome::Warn => WARNING,
        Outcome::Fail => CONTRAINDICATED,
    }
}

/// The EAR status word of a trust value.
#[must_use]
pub fn status_word(value: u8) -> &'static str {
    match value {
        v if v >= CONTRAINDICATED => "contraindicated",
        v if v >= WARNING => "warning",
        _ => "affirming",
    }
}

/// One submodule: its checks, what the evidence says, and the digest of what was judged.
pub struct Submodule<'a> {
    /// `cpu`, `gpu0`, `backend1/cpu`…
    pub name: String,
    /// Its checks.
    pub checks: Vec<&'a Check>,
    /// What the evidence says.
    pub claims: Value,
    /// `sha256:…` of the judged bytes.
    pub evidence_digest: String,
}

impl Submodule<'_> {
    /// The worst tier of its checks (contraindicated when there are none: nothing was
    /// judged, nothing is affirmed).
    #[must_use]
    pub fn worst(&self) -> u8 {
        self.checks
            .iter()
            .map(|c| tier(c.outcome))
            .max()
            .unwrap_or(CONTRAINDICATED)
    }

    fn to_value(&self) -> Value {
        let mut vector = Map::new();
        for check in &self.checks {
            let claim = claim_of(&check.name);
            let value = tier(check.outcome);
            let worse = vector
                .get(claim)
                .and_then(Value::as_u64)
                .is_none_or(|old| u64::from(value) > old);
            if worse {
                vector.insert(claim.to_owned(), json!(value));
            }
        }
        json!({
            "ear.status": status_word(self.worst()),
            "ear.trustworthiness-vector": vector,
            "veil.evidence-digest": self.evidence_digest,
            "veil.claims": self.claims,
            "veil.checks": self.checks,
        })
    }
}

/// Split a bundle's trail into the CPU submodule and one per GPU: checks named
/// `gpuN.…` belong to GPU N, all others to the CPU (the bundle-level checks, the key
/// binding and the policy included, since the CPU evidence carries the binding).
#[must_use]
pub fn split(checks: &Checks) -> (Vec<&Check>, Vec<(String, Vec<&Check>)>) {
    let mut cpu = Vec::new();
    let mut gpus: Vec<(String, Vec<&Check>)> = Vec::new();
    for check in checks.as_slice() {
        let gpu = check
            .name
            .split_once('.')
            .map(|(head, _)| head)
            .filter(|h| is_gpu(h));
        match gpu {
            Some(name) => match gpus.iter_mut().find(|(n, _)| n == name) {
                Some((_, list)) => list.push(check),
                None => gpus.push((name.to_owned(), vec![check])),
            },
            None => cpu.push(check),
        }
    }
    (cpu, gpus)
}

/// The whole document.
#[must_use]
pub fn document(iat: i64, policy_digest: &str, submods: &[Submodule<'_>]) -> Value {
    let worst = submods
        .iter()
        .map(Submodule::worst)
        .max()
        .unwrap_or(CONTRAINDICATED);
    let mut map = Map::new();
    for s in submods {
        map.insert(s.name.clone(), s.to_value());
    }
    json!({
        "eat_profile": "tag:github.com,2023:veraison/ear",
        "iat": iat,
        "ear.verifier-id": {
            "developer": "veil",
            "build": concat!("veil-verify ", env!("CARGO_PKG_VERSION")),
        },
        "veil.status": status_word(worst),
        "veil.policy-digest": policy_digest,
        "submods": map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_map_to_claims() {
        for (check, claim) in [
            ("report.signature", "hardware"),
            ("chain.vcek", "hardware"),
            ("quote.signature", "hardware"),
            ("policy.simulated-tee", "hardware"),
            ("policy.launch-measurement", "executables"),
            ("policy.rtmr2", "executables"),
            ("event-log.rtmr1", "executables"),
            ("event-log.parse", "executables"),
            ("policy.event-log", "executables"),
            ("policy.events", "executables"),
            ("policy.debug", "configuration"),
            ("tcb.status", "configuration"),
            ("claims.report-data", "instance-identity"),
            ("policy.report-data", "instance-identity"),
            ("evidence.age", "instance-identity"),
            ("policy.model-manifest", "sourced-data"),
            ("gpu0.signature", "hardware"),
            ("gpu1.nonce", "instance-identity"),
            ("gpu0.report.nonce", "instance-identity"),
            ("gpu0.relay", "hardware"),
            ("gpu0.rim.vbios.signature", "executables"),
            ("gpu0.measurements", "executables"),
        ] {
            assert_eq!(claim_of(check), claim, "{check}");
        }
    }

    #[test]
    fn the_worst_check_decides() {
        let mut checks = Checks::new();
        checks.pass("report.signature", "ok");
        checks.warn("policy.launch-measurement", "pins none");
        checks.pass("gpu0.signature", "ok");
        let (cpu, gpus) = split(&checks);
        assert_eq!(cpu.len(), 2);
        assert_eq!(gpus.len(), 1);
        let cpu = Submodule {
            name: "cpu".into(),
            checks: cpu,
            claims: Value::Null,
            evidence_digest: String::new(),
        };
        let v = cpu.to_value();
        assert_eq!(v["ear.status"], "warning");
        assert_eq!(v["ear.trustworthiness-vector"]["hardware"], 2);
        assert_eq!(v["ear.trustworthiness-vector"]["executables"], 32);
        assert!(
            v["ear.trustworthiness-vector"]
                .get("configuration")
                .is_none()
        );
        checks.fail("evidence.age", "too old");
        let (cpu, _) = split(&checks);
        let cpu = Submodule {
            name: "cpu".into(),
            checks: cpu,
            claims: Value::Null,
            evidence_digest: String::new(),
        };
        assert_eq!(cpu.to_value()["ear.status"], "contraindicated");
        assert_eq!(
            document(0, "default", &[cpu])["veil.status"],
            "contraindicated"
        );
    }
}
