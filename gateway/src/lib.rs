//! `veil-gateway`: the untrusted gateway in front of attested enclaves. API keys, limits,
//! routing to verified backends and metering from signed receipts, without plaintext.
//!
//! Layers: `routes`/`proxy` (HTTP, thin), `auth`, `limits`, `store` (keys and the ledger),
//! `backends` (verification and the routing table), `relay` (streamed bodies), `tls`
//! (HTTPS with rustls).

pub mod auth;
pub mod backends;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod relay;
pub mod routes;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use veil_attestation::verify::Policy;

use crate::auth::AdminToken;
use crate::backends::Registry;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::relay::RequestBody;
use crate::store::Store;

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// Backends and the routing table.
    pub registry: Arc<Registry>,
    /// Keys and the ledger.
    pub store: Store,
    /// Per-key limits.
    pub limits: Limits,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The admin token; without one the admin API is off.
    pub admin: Option<AdminToken>,
    /// The client to backends.
    pub upstream: Client<HttpConnector, RequestBody>,
    /// The largest encapsulated request accepted.
    pub max_body_bytes: u64,
    /// Ledger writes in progress.
    pub ledger_pending: AtomicU64,
    /// What to do while the database cannot be reached.
    pub ledger_outage: LedgerOutage,
    /// Receipts whose ledger write failed, written again (in order) until the database
    /// takes them; at most [`LEDGER_BACKLOG_MAX`].
    pub ledger_backlog: std::sync::Mutex<std::collections::VecDeque<store::UsageRow>>,
    /// Keys seen valid recently (by hash), for [`LedgerOutage::Serve`].
    pub key_cache:
        std::sync::Mutex<std::collections::HashMap<String, (store::KeyRecord, std::time::Instant)>>,
    next_id: AtomicU64,
    id_prefix: u32,
}

/// How long an idle connection to an enclave is kept for reuse: less than the 30 s after
/// which the enclave (and this gateway) close idle connections, so that a request never
/// goes out on a connection the other side is closing.
pub const UPSTREAM_IDLE: Duration = Duration::from_secs(20);

/// The most receipts kept for a later ledger write (about 300 bytes each).
pub const LEDGER_BACKLOG_MAX: usize = 100_000;
/// How long a key seen valid may be trusted while the database is unreachable
/// ([`LedgerOutage::Serve`]).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(600);

/// What the gateway does while its database cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerOutage {
    /// Refuse requests (503 `ledger_unavailable`): nothing is served unbilled.
    #[default]
    Refuse,
    /// Keep serving keys seen valid within the last ten minutes (a revocation made during
    /// the outage is seen only when it ends); their receipts are kept and written when the
    /// database is back.
    Serve,
}

impl AppState {
    /// Keeps `row` for a later write; false when the backlog is full (the row is lost,
    /// and counted).
    pub fn defer_receipt(&self, row: store::UsageRow) -> bool {
        let mut b = self
            .ledger_backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if b.len() >= LEDGER_BACKLOG_MAX {
            self.metrics.inc("veil_gateway_receipts_lost_total", &[]);
            return false;
        }
        b.push_back(row);
        self.metrics
            .ledger_backlog
            .store(b.len() as u64, Ordering::Relaxed);
        true
    }

    /// Writes the backlog, oldest first, until the database refuses one.
    pub async fn drain_backlog(&self) {
        loop {
            let Some(row) = self
                .ledger_backlog
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .front()
                .cloned()
            else {
                return;
            };
            match self.store.record(&row).await {
                Ok(recorded) => {
                    self.metrics.inc(
                        if recorded {
                            "veil_gateway_receipts_recorded_total"
                        } else {
                            "veil_gateway_receipts_duplicate_total"
                        },
                        &[],
                    );
                    let mut b = self
                        .ledger_backlog
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    b.pop_front();
                    self.metrics
                        .ledger_backlog
                        .store(b.len() as u64, Ordering::Relaxed);
                    if b.is_empty() {
                        tracing::info!("ledger backlog written");
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// A request id, unique within this process and distinct across restarts.
    pub fn request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{n:08x}", self.id_prefix)
    }
}

/// The gateway's settings (from flags, environment and the config file).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Backend base URLs.
    pub backends: Vec<String>,
    /// The verification policy for backends.
    pub policy: Policy,
    /// Database URL.
    pub database: String,
    /// Admin token.
    pub admin_token: Option<String>,
    /// How often backends are re-verified.
    pub refresh_interval: Duration,
    /// Largest encapsulated request.
    pub max_body_bytes: u64,
    /// Concurrent requests per key unless the key says otherwise.
    pub default_max_streams: u32,
    /// What to do while the database cannot be reached.
    pub ledger_outage: LedgerOutage,
}

/// Builds the state: opens the database, starts nothing.
pub async fn build_state(settings: &Settings) -> anyhow::Result<Arc<AppState>> {
    let metrics = Arc::new(Metrics::default());
    let store = Store::open(&settings.database).await?;
    let registry = Arc::new(Registry::new(
        settings.backends.clone(),
        settings.policy.clone(),
        Arc::clone(&metrics),
    ));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let upstream = Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(UPSTREAM_IDLE)
        .build(connector);
    let mut prefix = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut prefix)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(Arc::new(AppState {
        registry,
        store,
        limits: Limits::new(settings.default_max_streams),
        metrics,
        admin: settings.admin_token.as_deref().map(AdminToken::new),
        upstream,
        max_body_bytes: settings.max_body_bytes,
        ledger_pending: AtomicU64::new(0),
        ledger_outage: settings.ledger_outage,
        ledger_backlog: std::sync::Mutex::new(std::collections::VecDeque::new()),
        key_cache: std::sync::Mutex::new(std::collections::HashMap::new()),
        next_id: AtomicU64::new(1),
        id_prefix: u32::from_be_bytes(prefix),
    }))
}

/// Serves plain HTTP on `listener` until Ctrl-C: verifies backends first, then keeps
/// re-verifying them every interval.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    refresh_interval: Duration,
) -> anyhow::Result<()> {
    serve_with(state, listener, refresh_interval, None).await
}

/// As [`serve`], over TLS when `tls` is given (HTTP/1.1 and HTTP/2 by ALPN); prints
/// `listening on https://ADDR` then, `listening on http://ADDR` otherwise.
pub async fn serve_with(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    refresh_interval: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    state.registry.refresh().await;
    let registry = Arc::clone(&state.registry);
    tokio::spawn(registry.run(refresh_interval));
    let drainer = Arc::clone(&state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            drainer.drain_backlog().await;
        }
    });
    let addr: SocketAddr = listener.local_addr()?;
    if let Some(config) = tls {
        eprintln!("veil-gateway: listening on https://{addr}");
        return tls::serve_tls(listener, config, routes::router(state)).await;
    }
    eprintln!("veil-gateway: listening on http://{addr}");
    tls::serve_plain(listener, routes::router(state)).await
}
