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
    /// Verified receipts waiting for the ledger writer (with their request ids).
    ledger_queue: std::sync::Mutex<Vec<(String, store::UsageRow)>>,
    /// Whether a ledger writer task is running (it drains [`AppState::queue_receipt`]'s
    /// queue, several receipts per transaction when they come faster than one commit).
    ledger_writer: std::sync::atomic::AtomicBool,
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

/// The most receipts written in one ledger transaction.
pub const LEDGER_BATCH_MAX: usize = 256;

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

    /// Hands a settled request's row (`None`: nothing to bill) to the ledger writer, which
    /// writes what is queued in one transaction, then the rest, until the queue is empty;
    /// each row counts in `veil_gateway_unsettled` until it is written (or kept for a later
    /// write after a failure). Idempotent on the request digest, as [`store::Store::record`].
    pub fn queue_receipt(self: &Arc<Self>, request_id: String, row: Option<store::UsageRow>) {
        let Some(row) = row else {
            self.metrics.unsettled.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        self.ledger_pending.fetch_add(1, Ordering::SeqCst);
        self.ledger_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((request_id, row));
        if self.ledger_writer.swap(true, Ordering::SeqCst) {
            return;
        }
        let state = Arc::clone(self);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { state.write_queued().await });
        } else {
            // Outside a runtime (never in the server): the backlog writer takes the rows.
            let rows = std::mem::take(
                &mut *state
                    .ledger_queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            state.ledger_writer.store(false, Ordering::SeqCst);
            for (_, row) in rows {
                state.defer_receipt(row);
                state.ledger_pending.fetch_sub(1, Ordering::SeqCst);
                state.metrics.unsettled.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// The ledger writer: writes the queue in batches until it finds it empty.
    async fn write_queued(self: Arc<Self>) {
        loop {
            let batch: Vec<(String, store::UsageRow)> = {
                let mut q = self
                    .ledger_queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = q.len().min(LEDGER_BATCH_MAX);
                q.drain(..n).collect()
            };
            if batch.is_empty() {
                self.ledger_writer.store(false, Ordering::SeqCst);
                // A row queued after the queue was found empty, and before the flag was
                // cleared, is this writer's to write (unless another writer started).
                let empty = self
                    .ledger_queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_empty();
                if empty || self.ledger_writer.swap(true, Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            let rows = batch.iter().map(|(_, r)| r.clone()).collect();
            let results = self.store.record_many(rows).await;
            for ((request_id, row), result) in batch.into_iter().zip(results) {
                match result {
                    Ok(true) => self
                        .metrics
                        .inc("veil_gateway_receipts_recorded_total", &[]),
                    Ok(false) => self
                        .metrics
                        .inc("veil_gateway_receipts_duplicate_total", &[]),
                    Err(e) => {
                        self.metrics.inc("veil_gateway_ledger_errors_total", &[]);
                        tracing::error!(request_id = %request_id, error = %e, "ledger write failed; the receipt is kept and written again");
                        self.defer_receipt(row);
                    }
                }
                self.ledger_pending.fetch_sub(1, Ordering::SeqCst);
                self.metrics.unsettled.fetch_sub(1, Ordering::SeqCst);
            }
        }
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

    /// The client to the enclaves for a request handled on this thread: the worker's own
    /// (see [`serve_workers`]), or the shared one.
    #[must_use]
    pub fn upstream(&self) -> Client<HttpConnector, RequestBody> {
        WORKER_UPSTREAM
            .with(|c| c.get().cloned())
            .unwrap_or_else(|| self.upstream.clone())
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

/// A client to the enclaves: `TCP_NODELAY`, idle connections kept for [`UPSTREAM_IDLE`].
/// Each connection's task runs on the runtime that opened it.
#[must_use]
pub fn upstream_client() -> Client<HttpConnector, RequestBody> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(UPSTREAM_IDLE)
        .build(connector)
}

thread_local! {
    /// The client to the enclaves of a worker thread started by [`serve_workers`]: its
    /// connections, and their tasks, stay on that thread.
    static WORKER_UPSTREAM: std::cell::OnceCell<Client<HttpConnector, RequestBody>> =
        const { std::cell::OnceCell::new() };
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
    let upstream = upstream_client();
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
        ledger_queue: std::sync::Mutex::new(Vec::new()),
        ledger_writer: std::sync::atomic::AtomicBool::new(false),
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

/// As [`serve_with`], on `workers` threads (at least one: this one), each running a
/// single-threaded Tokio runtime that accepts from `listener`, serves its connections and
/// forwards their requests over connections to the enclaves of its own. A request is then
/// read, forwarded, answered and metered on one thread: no wake-up of another thread on its
/// path, where a work-stealing runtime moved the hops between its workers. Must be called
/// on a current-thread runtime (this thread serves too, and runs the backend checks). Until
/// Ctrl-C; then every worker stops accepting and waits for its connections (at most 30 s).
///
/// # Errors
/// When the listener cannot be shared or a worker's runtime cannot be built.
pub async fn serve_workers(
    state: Arc<AppState>,
    listener: std::net::TcpListener,
    refresh_interval: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
    workers: usize,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let addr: SocketAddr = listener.local_addr()?;
    start_background(&state, refresh_interval).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut threads = Vec::new();
    for i in 1..workers.max(1) {
        let listener = listener.try_clone()?;
        let router = routes::router(Arc::clone(&state));
        let tls = tls.clone();
        let mut stopped = stopped.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        threads.push(
            std::thread::Builder::new()
                .name(format!("veil-gateway-{i}"))
                .spawn(move || {
                    WORKER_UPSTREAM.with(|c| {
                        c.get_or_init(upstream_client);
                    });
                    rt.block_on(async move {
                        let listener = tokio::net::TcpListener::from_std(listener)?;
                        let shutdown = async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        };
                        tls::serve_until(listener, tls, router, shutdown).await
                    })
                })?,
        );
    }
    eprintln!(
        "veil-gateway: listening on {}://{addr}",
        if tls.is_some() { "https" } else { "http" }
    );
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let served = tls::serve_until(listener, tls, routes::router(state), async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
    .await;
    let _ = stop.send(true);
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a gateway worker panicked"))?
            })
            .collect::<anyhow::Result<Vec<()>>>()
    })
    .await?;
    served?;
    joined.map(drop)
}

/// The backend checks (now, then every interval) and the ledger backlog writer.
async fn start_background(state: &Arc<AppState>, refresh_interval: Duration) {
    state.registry.refresh().await;
    let registry = Arc::clone(&state.registry);
    tokio::spawn(registry.run(refresh_interval));
    let drainer = Arc::clone(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            drainer.drain_backlog().await;
        }
    });
}

/// As [`serve`], over TLS when `tls` is given (HTTP/1.1 and HTTP/2 by ALPN); prints
/// `listening on https://ADDR` then, `listening on http://ADDR` otherwise.
pub async fn serve_with(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    refresh_interval: Duration,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    start_background(&state, refresh_interval).await;
    let addr: SocketAddr = listener.local_addr()?;
    if let Some(config) = tls {
        eprintln!("veil-gateway: listening on https://{addr}");
        return tls::serve_tls(listener, config, routes::router(state)).await;
    }
    eprintln!("veil-gateway: listening on http://{addr}");
    tls::serve_plain(listener, routes::router(state)).await
}
