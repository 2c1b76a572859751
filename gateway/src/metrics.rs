//! Prometheus metrics. Labels are metadata only (route, status, key name, model, backend):
//! nothing from sealed content.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS_MS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 5000.0,
];

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Mutex<(Vec<u64>, u64, f64)>,
    /// Backends currently routable.
    pub routable_backends: AtomicU64,
    /// Requests in flight.
    pub in_flight: AtomicU64,
    /// Receipts waiting for the database.
    pub ledger_backlog: AtomicU64,
    /// Forwarded requests whose metering has not finished: the receipt verified and the
    /// limits settled (after the response's last byte), the ledger row written or kept.
    pub unsettled: AtomicU64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Adds one to `name{labels}`; `labels` is already formatted (`a="b",c="d"`).
    pub fn inc(&self, name: &'static str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    /// Adds `n` to `name{labels}`.
    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], n: u64) {
        let mut l = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                l.push(',');
            }
            let _ = write!(l, "{k}=\"{}\"", escape(v));
        }
        if let Ok(mut c) = self.counters.lock() {
            let e = c.entry((name, l)).or_insert(0);
            *e = e.saturating_add(n);
        }
    }

    /// Records a request's duration.
    pub fn observe(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        if let Ok(mut h) = self.latency.lock() {
            if h.0.is_empty() {
                h.0 = vec![0; BUCKETS_MS.len()];
            }
            for (b, c) in BUCKETS_MS.iter().zip(h.0.iter_mut()) {
                if ms <= *b {
                    *c = c.saturating_add(1);
                }
            }
            h.1 = h.1.saturating_add(1);
            h.2 += ms / 1000.0;
        }
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# TYPE veil_gateway_routable_backends gauge\nveil_gateway_routable_backends {}",
            self.routable_backends.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE veil_gateway_in_flight gauge\nveil_gateway_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE veil_gateway_ledger_backlog gauge\nveil_gateway_ledger_backlog {}",
            self.ledger_backlog.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE veil_gateway_unsettled gauge\nveil_gateway_unsettled {}",
            self.unsettled.load(Ordering::SeqCst)
        );
        if let Ok(c) = self.counters.lock() {
            let mut last = "";
            for ((name, labels), v) in c.iter() {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    last = name;
                }
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        if let Ok(h) = self.latency.lock() {
            let _ = writeln!(
                out,
                "# TYPE veil_gateway_request_duration_seconds histogram"
            );
            for (i, b) in BUCKETS_MS.iter().enumerate() {
                let n = h.0.get(i).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "veil_gateway_request_duration_seconds_bucket{{le=\"{}\"}} {n}",
                    b / 1000.0
                );
            }
            let _ = writeln!(
                out,
                "veil_gateway_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\nveil_gateway_request_duration_seconds_sum {}\nveil_gateway_request_duration_seconds_count {}",
                h.1, h.2, h.1
            );
        }
        out
    }
}
