//! Prometheus metrics. Every label value comes from a fixed set chosen by the code
//! (route names, status codes, rejection reasons, served model ids); none is derived
//! from request content.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latency histogram bucket bounds, seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    total: u64,
}

/// A CPU evidence collection's (platform, source) labels.
type EvidenceSource = (&'static str, &'static str);

/// The enclave's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (route, status) → count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// reason → count, outer requests refused before or during opening.
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// route → latency.
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    receipts: AtomicU64,
    /// (platform, source) → (collections, seconds of the last), CPU evidence.
    cpu_evidence: Mutex<BTreeMap<EvidenceSource, (u64, f64)>>,
    /// Requests admitted and not yet answered.
    pub in_flight: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// Counts an answered inner request.
    pub fn request(&self, route: &'static str, status: u16, seconds: f64) {
        *lock(&self.requests).entry((route, status)).or_default() += 1;
        let mut l = lock(&self.latency);
        let h = l.entry(route).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.total += 1;
    }

    /// Counts an outer request refused for `reason`.
    pub fn rejected(&self, reason: &'static str) {
        *lock(&self.rejected).entry(reason).or_default() += 1;
    }

    /// Adds token usage.
    pub fn tokens(&self, prompt: u64, completion: u64) {
        self.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion, Ordering::Relaxed);
    }

    /// Records a CPU evidence collection (at start and on each refresh or rotation,
    /// never on a request path) by platform and source (TDX: `qgs-vsock` or
    /// `configfs-tsm`) and how long it took.
    pub fn cpu_evidence(&self, platform: &'static str, source: &'static str, seconds: f64) {
        let mut m = lock(&self.cpu_evidence);
        let e = m.entry((platform, source)).or_default();
        e.0 += 1;
        e.1 = seconds;
    }

    /// Counts a signed receipt.
    pub fn receipt(&self) {
        self.receipts.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self, queue_capacity: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP veil_enclave_requests_total Inner requests answered, by route and status."
        );
        let _ = writeln!(s, "# TYPE veil_enclave_requests_total counter");
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                s,
                "veil_enclave_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP veil_enclave_rejected_total Outer requests refused, by reason."
        );
        let _ = writeln!(s, "# TYPE veil_enclave_rejected_total counter");
        for (reason, n) in lock(&self.rejected).iter() {
            let _ = writeln!(s, "veil_enclave_rejected_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "# HELP veil_enclave_request_seconds Time from receipt of a request to its last byte."
        );
        let _ = writeln!(s, "# TYPE veil_enclave_request_seconds histogram");
        for (route, h) in lock(&self.latency).iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "veil_enclave_request_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                s,
                "veil_enclave_request_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.total
            );
            let _ = writeln!(
                s,
                "veil_enclave_request_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                s,
                "veil_enclave_request_seconds_count{{route=\"{route}\"}} {}",
                h.total
            );
        }
        let _ = writeln!(s, "# HELP veil_enclave_tokens_total Tokens processed.");
        let _ = writeln!(s, "# TYPE veil_enclave_tokens_total counter");
        let _ = writeln!(
            s,
            "veil_enclave_tokens_total{{kind=\"prompt\"}} {}",
            self.prompt_tokens.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "veil_enclave_tokens_total{{kind=\"completion\"}} {}",
            self.completion_tokens.load(Ordering::Relaxed)
        );
        let _ = writeln!(s, "# HELP veil_enclave_receipts_total Receipts signed.");
        let _ = writeln!(s, "# TYPE veil_enclave_receipts_total counter");
        let _ = writeln!(
            s,
            "veil_enclave_receipts_total {}",
            self.receipts.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP veil_enclave_in_flight Requests admitted and not yet answered."
        );
        let _ = writeln!(s, "# TYPE veil_enclave_in_flight gauge");
        let _ = writeln!(
            s,
            "veil_enclave_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP veil_enclave_queue_capacity Admission queue capacity per model."
        );
        let _ = writeln!(s, "# TYPE veil_enclave_queue_capacity gauge");
        let _ = writeln!(s, "veil_enclave_queue_capacity {queue_capacity}");
        let evidence = lock(&self.cpu_evidence);
        let _ = writeln!(
            s,
            "# HELP veil_enclave_cpu_evidence_total CPU evidence collections, by platform and source."
        );
        let _ = writeln!(s, "# TYPE veil_enclave_cpu_evidence_total counter");
        for ((platform, source), (n, _)) in evidence.iter() {
            let _ = writeln!(
                s,
                "veil_enclave_cpu_evidence_total{{platform=\"{platform}\",source=\"{source}\"}} {n}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP veil_enclave_cpu_evidence_seconds How long the last CPU evidence collection took, by platform and source."
        );
        let _ = writeln!(s, "# TYPE veil_enclave_cpu_evidence_seconds gauge");
        for ((platform, source), (_, seconds)) in evidence.iter() {
            let _ = writeln!(
                s,
                "veil_enclave_cpu_evidence_seconds{{platform=\"{platform}\",source=\"{source}\"}} {seconds}"
            );
        }
        drop(evidence);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_evidence_is_counted_with_the_last_duration_by_platform_and_source() {
        let m = Metrics::default();
        m.cpu_evidence("tdx", "configfs-tsm", 1.25);
        m.cpu_evidence("tdx", "qgs-vsock", 0.5);
        m.cpu_evidence("tdx", "qgs-vsock", 0.25);
        let text = m.render(16);
        for line in [
            "veil_enclave_cpu_evidence_total{platform=\"tdx\",source=\"configfs-tsm\"} 1",
            "veil_enclave_cpu_evidence_total{platform=\"tdx\",source=\"qgs-vsock\"} 2",
            "veil_enclave_cpu_evidence_seconds{platform=\"tdx\",source=\"configfs-tsm\"} 1.25",
            "veil_enclave_cpu_evidence_seconds{platform=\"tdx\",source=\"qgs-vsock\"} 0.25",
            "# TYPE veil_enclave_cpu_evidence_seconds gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
