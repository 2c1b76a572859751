//! The trail of checks a verifier performed, for auditors: one entry per check, saying
//! what was expected, what was found, and the outcome. `veil-verify` prints it one line
//! per check (or as JSON); the verifiers fill it as they go, so a failure is reported
//! as the last entry, named, after every check that passed before it.

use serde::Serialize;

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The check passed.
    Pass,
    /// The check passed with a caveat the policy tolerates (for instance no OCSP
    /// response available offline, or a TCB status the policy accepts).
    Warn,
    /// The check failed; verification stops here.
    Fail,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A short, stable name (`report.signature`, `chain.vcek`, `policy.debug`...).
    pub name: String,
    /// The outcome.
    pub outcome: Outcome,
    /// What was expected and what was found, in words.
    pub detail: String,
}

/// The checks performed so far, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Checks(Vec<Check>);

impl Checks {
    /// An empty trail.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a passed check.
    pub fn pass(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, Outcome::Pass, detail);
    }

    /// Record a check that passed with a caveat.
    pub fn warn(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, Outcome::Warn, detail);
    }

    /// Record a failed check.
    pub fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.push(name, Outcome::Fail, detail);
    }

    /// Record `result` under `name`: pass with `detail` when it is `Ok`, fail with the
    /// error's text otherwise; returns `result` unchanged, so `?` can follow.
    ///
    /// # Errors
    /// `result`'s error.
    pub fn record<T, E: std::fmt::Display>(
        &mut self,
        name: &str,
        detail: impl Into<String>,
        result: Result<T, E>,
    ) -> Result<T, E> {
        match &result {
            Ok(_) => self.pass(name, detail),
            Err(e) => self.fail(name, e.to_string()),
        }
        result
    }

    fn push(&mut self, name: impl Into<String>, outcome: Outcome, detail: impl Into<String>) {
        self.0.push(Check {
            name: name.into(),
            outcome,
            detail: detail.into(),
        });
    }

    /// Append `other`'s checks, each name prefixed with `prefix` and a dot (`gpu0.`), so
    /// a sub-verifier's trail joins a bundle's.
    pub fn append_prefixed(&mut self, prefix: &str, other: Checks) {
        for mut check in other.0 {
            check.name = format!("{prefix}.{}", check.name);
            self.0.push(check);
        }
    }

    /// The checks, in order.
    #[must_use]
    pub fn as_slice(&self) -> &[Check] {
        &self.0
    }

    /// Whether no check failed.
    #[must_use]
    pub fn all_passed(&self) -> bool {
        self.0.iter().all(|c| c.outcome != Outcome::Fail)
    }

    /// The first failed check, if any.
    #[must_use]
    pub fn first_failure(&self) -> Option<&Check> {
        self.0.iter().find(|c| c.outcome == Outcome::Fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keeps_the_trail_and_the_result() {
        let mut checks = Checks::new();
        assert_eq!(checks.record("a", "fine", Ok::<u8, String>(1)), Ok(1));
        assert!(checks.all_passed());
        let failed = checks.record("b", "unused", Err::<u8, _>("broke".to_owned()));
        assert!(failed.is_err());
        assert!(!checks.all_passed());
        let failure = checks
            .first_failure()
            .map(|c| (c.name.as_str(), c.detail.as_str()));
        assert_eq!(failure, Some(("b", "broke")));
        assert_eq!(checks.as_slice().len(), 2);
    }
}
