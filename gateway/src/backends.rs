//! Backends: fetch each enclave's bundle, verify it under the gateway's policy, health-check
//! it, and keep a routing table of the key configurations of those that pass. Fail closed:
//! a backend is routable only while its latest evidence verified.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Notify;
use veil_attestation::bundle::Bundle;
use veil_attestation::channel::KeyId;
use veil_attestation::verify::{EnclaveIdentity, Policy, Verified, verify_bundle};

use crate::metrics::Metrics;

/// The largest bundle or health answer read from a backend.
const MAX_BACKEND_DOC: usize = 4 << 20;

/// A model a backend offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Model {
    /// Model id.
    pub id: String,
    /// `chat` or `embeddings`.
    pub kind: String,
}

/// A backend whose evidence verified.
#[derive(Debug)]
pub struct Live {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// What its evidence established.
    pub identity: Verified<EnclaveIdentity>,
    /// The bundle as fetched.
    pub bundle: Bytes,
    /// Models its health check lists.
    pub models: Vec<Model>,
}

/// The routing table: only verified backends are in it.
#[derive(Debug, Default)]
pub struct Routes {
    /// Key configuration id → backend.
    pub by_key: HashMap<KeyId, Arc<Live>>,
    /// Routable backends, in configuration order.
    pub live: Vec<Arc<Live>>,
    /// `GET /v1/attestation`: `{"backends": [bundle, ...]}`.
    pub attestation: Bytes,
    /// Its ETag.
    pub etag: String,
    /// `application/ohttp-keys` of every routable backend.
    pub ohttp_keys: Bytes,
}

/// The backends and the routing table.
#[derive(Debug)]
pub struct Registry {
    urls: Vec<String>,
    policy: Policy,
    client: Client<HttpConnector, Empty<Bytes>>,
    routes: RwLock<Arc<Routes>>,
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl Registry {
    /// Backends by base URL; nothing is routable until the first refresh.
    #[must_use]
    pub fn new(urls: Vec<String>, policy: Policy, metrics: Arc<Metrics>) -> Self {
        let urls = urls
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect();
        // Idle connections are dropped before the enclave's 30 s idle limit closes them,
        // so a check never goes out on a connection the enclave is closing.
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(crate::UPSTREAM_IDLE)
            .build_http();
        Self {
            urls,
            policy,
            client,
            routes: RwLock::new(Arc::new(Routes::default())),
            wake: Notify::new(),
            metrics,
        }
    }

    /// The current routing table.
    #[must_use]
    pub fn routes(&self) -> Arc<Routes> {
        self.routes
            .read()
            .map(|r| Arc::clone(&r))
            .unwrap_or_default()
    }

    /// Asks the refresh loop to re-verify now (a key configuration changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    async fn get(&self, url: &str) -> anyhow::Result<Bytes> {
        let uri: hyper::Uri = url.parse()?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.get(uri)).await??;
        if !resp.status().is_success() {
            anyhow::bail!("status {}", resp.status());
        }
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_BACKEND_DOC);
        let body = tokio::time::timeout(Duration::from_secs(10), limited.collect())
            .await?
            .map_err(|e| anyhow::anyhow!("reading the body: {e}"))?;
        Ok(body.to_bytes())
    }

    async fn check(&self, url: &str) -> anyhow::Result<Live> {
        let raw = self.get(&format!("{url}/attestation")).await?;
        let bundle = Bundle::parse(&raw)?;
        let identity = verify_bundle(&bundle, &self.policy, OffsetDateTime::now_utc())?;
        let health: serde_json::Value =
            serde_json::from_slice(&self.get(&format!("{url}/healthz")).await?)?;
        if health.get("status").and_then(|s| s.as_str()) != Some("ok") {
            anyhow::bail!("the health check does not say ok");
        }
        let models = health
            .get("models")
            .and_then(|m| m.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|m| {
                        Some(Model {
                            id: m.get("id")?.as_str()?.to_owned(),
                            kind: m.get("kind")?.as_str()?.to_owned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Live {
            url: url.to_owned(),
            identity,
            bundle: raw,
            models,
        })
    }

    /// Fetches, verifies and health-checks every backend, and replaces the routing table.
    /// A check that fails is tried once more after a moment, so one dropped connection
    /// does not take a healthy backend out of routing.
    pub async fn refresh(&self) {
        let checks = self.urls.iter().map(|u| async move {
            let first = self.check(u).await;
            if first.is_ok() {
                return (u, first);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            (u, self.check(u).await)
        });
        let results = futures::future::join_all(checks).await;
        let mut routes = Routes::default();
        let mut bundles = Vec::new();
        let mut keys = Vec::new();
        for (url, result) in results {
            match result {
                Ok(live) => {
                    if live.identity.is_simulated() {
                        tracing::warn!(backend = %url, "backend runs the SIMULATED TEE (accepted by --insecure-allow-sim): no hardware protection");
                    }
                    let live = Arc::new(live);
                    for c in live.identity.key_configs().configs() {
                        routes
                            .by_key
                            .entry(c.id())
                            .or_insert_with(|| Arc::clone(&live));
                    }
                    bundles.push(String::from_utf8_lossy(&live.bundle).into_owned());
                    keys.extend_from_slice(live.identity.key_configs().as_bytes());
                    routes.live.push(live);
                }
                Err(e) => {
                    self.metrics.inc(
                        "veil_gateway_backend_check_failures_total",
                        &[("backend", url)],
                    );
                    tracing::warn!(backend = %url, error = %e, "backend not routable");
                }
            }
        }
        let parsed: Vec<serde_json::Value> = bundles
            .iter()
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect();
        let doc = serde_json::json!({ "backends": parsed }).to_string();
        routes.etag = format!(
            "\"{}\"",
            &veil_attestation::bytes::Sha256Digest::of(doc.as_bytes()).to_string()[..32]
        );
        routes.attestation = Bytes::from(doc);
        routes.ohttp_keys = Bytes::from(keys);
        self.metrics.routable_backends.store(
            routes.live.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Ok(mut r) = self.routes.write() {
            *r = Arc::new(routes);
        }
    }

    /// Re-verifies every `interval`, or at once when woken (from the start: the first
    /// refresh is the caller's).
    pub async fn run(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = self.wake.notified() => {}
            }
            self.refresh().await;
        }
    }
}
