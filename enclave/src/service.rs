//! The enclave service: boot (keys, evidence, bundle), the outer HTTP surface, the
//! sealed request path, receipts, admission, and the development-only plaintext inner
//! listener.
//!
//! Outer surface (axum): `GET /attestation`, `GET /.well-known/ohttp-gateway`,
//! `POST /ohttp`, `GET /healthz`, `GET /metrics`. Everything an outer response or a log
//! line carries is metadata (sizes, statuses, key ids, served model ids, timings): the
//! inner request and response exist only inside [`crate::inner`] and the sealers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use veil_attestation::bundle::Bundle;
use veil_attestation::bytes::Sha256Digest;
use veil_attestation::channel::{self, ChannelError, Headers, KeyId, Limits, ServerKeys};
use veil_attestation::claims::{ModelManifest, Platform};
use veil_attestation::receipt::{Receipt, ReceiptSigner};
use zeroize::Zeroizing;

use crate::backend::{Engine, Event};
use crate::inner::{self, InnerReply, NO_MODEL, OuterMeta};
use crate::metrics::Metrics;
use crate::openai::{ApiError, Usage};
use crate::platform::{CpuProvider, GpuProvider};
use crate::replay::{Refused, ReplayGuard, Strike};

/// The outer header naming the key configuration.
pub const KEY_ID_HEADER: &str = "veil-key-id";
/// The outer header naming the model.
pub const MODEL_HEADER: &str = "veil-model";
/// The outer header bounding completion tokens.
pub const MAX_TOKENS_HEADER: &str = "veil-max-tokens";
/// The outer header declaring streaming.
pub const STREAM_HEADER: &str = "veil-stream";
/// How long an encapsulated request's body may take to arrive.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The receipt's header (whole responses), trailer (streams) and inner trailer field.
pub const RECEIPT_FIELD: &str = "veil-receipt";

/// Service settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requests admitted per model (running plus waiting); beyond it, 503.
    pub queue_capacity: usize,
    /// Largest encapsulated request, bytes.
    pub max_request_bytes: usize,
    /// Largest inner request body, bytes (answered with a sealed 413).
    pub max_inner_body_bytes: usize,
    /// The enclave's version, written into the claims.
    pub version: String,
    /// How long an opened request is remembered (replay refused), and how far an inner
    /// `date` may be from the enclave's clock.
    pub replay_window: Duration,
    /// Most requests remembered at once; beyond it, 503 (see [`crate::replay`]).
    pub replay_capacity: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            queue_capacity: 16,
            max_request_bytes: 16 << 20,
            max_inner_body_bytes: 8 << 20,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            replay_window: crate::replay::DEFAULT_WINDOW,
            replay_capacity: crate::replay::DEFAULT_CAPACITY,
        }
    }
}

/// The running enclave.
pub struct Enclave {
    /// The current key configurations and private keys; replaced by [`Enclave::rotate_keys`].
    keys: RwLock<Arc<ServerKeys>>,
    /// Serializes evidence refreshes and key rotations.
    evidence: Mutex<()>,
    signer: ReceiptSigner,
    engine: Arc<dyn Engine>,
    manifest: ModelManifest,
    platform: Platform,
    cpu: Box<dyn CpuProvider>,
    gpu: Box<dyn GpuProvider>,
    bundle_json: RwLock<Bytes>,
    admission: Mutex<HashMap<String, usize>>,
    replay: ReplayGuard,
    settings: Settings,
    /// Metrics.
    pub metrics: Metrics,
}

impl std::fmt::Debug for Enclave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enclave")
            .field("platform", &self.platform)
            .field("engine", &self.engine.name())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A plain (unsealed) OpenAI-shaped error. Its text is fixed by the code: it never
/// carries anything from the request.
fn plain_error(status: u16, code: &'static str, message: &'static str) -> Response {
    let e = ApiError::new(status, "invalid_request_error", code, message);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        e.to_json(),
    )
        .into_response()
}

/// Holds a place in a model's admission queue until dropped.
struct Admitted {
    enclave: Arc<Enclave>,
    key: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut a = self
            .enclave
            .admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = a.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
        self.enclave
            .metrics
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Enclave {
    /// Boots: makes the keys in memory, binds them into evidence, builds the bundle.
    ///
    /// # Errors
    /// When key generation or evidence collection fails.
    pub fn boot(
        cpu: Box<dyn CpuProvider>,
        gpu: Box<dyn GpuProvider>,
        engine: Arc<dyn Engine>,
        manifest: ModelManifest,
        settings: Settings,
    ) -> anyhow::Result<Arc<Self>> {
        let keys = ServerKeys::generate()?;
        let signer = ReceiptSigner::generate()?;
        let platform = cpu.platform();
        let enclave = Self {
            keys: RwLock::new(Arc::new(keys)),
            evidence: Mutex::new(()),
            signer,
            engine,
            manifest,
            platform,
            cpu,
            gpu,
            bundle_json: RwLock::new(Bytes::new()),
            admission: Mutex::new(HashMap::new()),
            replay: ReplayGuard::new(settings.replay_window, settings.replay_capacity),
            settings,
            metrics: Metrics::default(),
        };
        enclave.refresh_bundle()?;
        Ok(Arc::new(enclave))
    }

    /// Gathers fresh evidence over the same keys and replaces the served bundle (so its
    /// age stays within verifiers' limits).
    ///
    /// # Errors
    /// When evidence collection fails; the previous bundle stays served.
    pub fn refresh_bundle(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self
            .evidence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let json = self.assemble(&self.keys())?;
        *self
            .bundle_json
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = json;
        Ok(())
    }

    /// Replaces the HPKE keys with new ones and serves a bundle with fresh evidence bound
    /// to them. Requests sealed to the old keys are answered 422 `unknown_key_id` (clients
    /// fetch the bundle again and reseal); the old private keys are dropped (and wiped).
    /// The receipt key stays, so receipts remain verifiable across rotations.
    ///
    /// # Errors
    /// When key generation or evidence collection fails; the old keys and bundle stay.
    pub fn rotate_keys(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self
            .evidence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys = Arc::new(ServerKeys::generate()?);
        let json = self.assemble(&keys)?;
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
        *self
            .bundle_json
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = json;
        Ok(())
    }

    /// The current keys.
    fn keys(&self) -> Arc<ServerKeys> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A bundle over `keys` with fresh evidence, as JSON.
    fn assemble(&self, keys: &ServerKeys) -> anyhow::Result<Bytes> {
        let b = Bundle::assemble(
            keys.configs(),
            self.signer.public_key(),
            self.manifest.clone(),
            self.platform,
            &self.settings.version,
            |nonce| self.gpu.evidence(nonce),
            |report_data| {
                let started = std::time::Instant::now();
                let evidence = self.cpu.evidence(report_data);
                if evidence.is_ok() {
                    self.metrics.cpu_evidence(
                        self.platform.name(),
                        self.cpu.last_source().unwrap_or("default"),
                        started.elapsed().as_secs_f64(),
                    );
                }
                evidence
            },
            OffsetDateTime::now_utc(),
        )?;
        Ok(Bytes::from(b.to_json()?))
    }

    /// The served bundle's JSON.
    #[must_use]
    pub fn bundle_json(&self) -> Bytes {
        self.bundle_json
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> Arc<dyn Engine> {
        self.engine.clone()
    }

    fn admit(self: &Arc<Self>, declared_model: Option<&str>) -> Option<Admitted> {
        let served = self.engine.models();
        let key = declared_model
            .filter(|m| served.iter().any(|c| c.id == *m))
            .unwrap_or("*")
            .to_owned();
        let mut a = self
            .admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = a.entry(key.clone()).or_default();
        if *n >= self.settings.queue_capacity {
            return None;
        }
        *n += 1;
        self.metrics
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Admitted {
            enclave: self.clone(),
            key,
        })
    }

    fn sign_receipt(
        &self,
        request_digest: Sha256Digest,
        key_id: KeyId,
        model: &str,
        usage: Usage,
        status: u16,
        started_at_ms: u64,
    ) -> Option<String> {
        let receipt = Receipt {
            request_digest,
            key_id,
            model: if model.is_empty() {
                NO_MODEL.to_owned()
            } else {
                model.to_owned()
            },
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            status,
            started_at_ms,
            finished_at_ms: now_ms().max(started_at_ms),
        };
        let signed = self.signer.sign(receipt).ok()?;
        let compact = signed.to_compact().ok()?;
        self.metrics.receipt();
        Some(compact)
    }

    /// The outer router (what the gateway and clients reach).
    pub fn outer_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/attestation", get(attestation))
            .route("/.well-known/ohttp-gateway", get(ohttp_keys))
            .route("/ohttp", post(ohttp))
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .fallback(|| async { plain_error(404, "unknown_url", "unknown path") })
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(self.clone())
    }

    /// The inner API in plaintext, for development and for one enclave serving another
    /// as its upstream engine. `main` refuses it unless the TEE is `sim` or the address
    /// is loopback.
    pub fn plaintext_router(self: &Arc<Self>) -> Router {
        Router::new()
            .fallback(plaintext_inner)
            .layer(axum::extract::DefaultBodyLimit::max(
                self.settings.max_request_bytes,
            ))
            .with_state(self.clone())
    }
}

async fn attestation(State(e): State<Arc<Enclave>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        e.bundle_json(),
    )
        .into_response()
}

async fn ohttp_keys(State(e): State<Arc<Enclave>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/ohttp-keys")],
        e.keys().configs().as_bytes().to_vec(),
    )
        .into_response()
}

async fn healthz(State(e): State<Arc<Enclave>>) -> Response {
    let in_flight = e
        .metrics
        .in_flight
        .load(std::sync::atomic::Ordering::Relaxed);
    let models: Vec<_> = e
        .engine
        .models()
        .into_iter()
        .map(|m| serde_json::json!({"id": m.id, "kind": m.kind, "loaded": true}))
        .collect();
    let v = serde_json::json!({
        "status": "ok",
        "engine": e.engine.name(),
        "platform": e.platform.name(),
        "models": models,
        "in_flight": in_flight,
        "queue_capacity": e.settings.queue_capacity,
        "gpu": null,
    });
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn metrics(State(e): State<Arc<Enclave>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        e.metrics.render(e.settings.queue_capacity),
    )
        .into_response()
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// One outer metadata header: absent, or exactly one value of visible ASCII. Two values,
/// or bytes that are not visible ASCII, are refused (never read as "absent").
fn single<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ()> {
    let mut values = h.get_all(name).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    v.to_str().map(Some).map_err(|_| ())
}

/// Reads the outer metadata headers. Malformed values are refused outright.
fn outer_meta(h: &HeaderMap, chunked: bool) -> Result<OuterMeta, &'static str> {
    let model = single(h, MODEL_HEADER)
        .map_err(|()| "Veil-Model must be one value of visible ASCII")?
        .map(str::to_owned);
    let max_tokens = match single(h, MAX_TOKENS_HEADER) {
        Ok(None) => None,
        Ok(Some(v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => Some(
            v.parse::<u32>()
                .map_err(|_| "Veil-Max-Tokens must be a non-negative integer")?,
        ),
        Ok(Some(_)) | Err(()) => return Err("Veil-Max-Tokens must be a non-negative integer"),
    };
    let stream = match single(h, STREAM_HEADER) {
        Ok(None) => None,
        Ok(Some("true" | "1")) => Some(true),
        Ok(Some("false" | "0")) => Some(false),
        Ok(Some(_)) | Err(()) => return Err("Veil-Stream must be true or false"),
    };
    Ok(OuterMeta {
        model,
        max_tokens,
        stream,
        can_stream: chunked,
    })
}

/// `POST /ohttp`: admission, decapsulation, the inner request, sealing, receipts.
async fn ohttp(State(e): State<Arc<Enclave>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let started_ms = now_ms();
    let chunked = match header_str(&headers, header::CONTENT_TYPE.as_str()).map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }) {
        Some(c) if c == "message/ohttp-req" => false,
        Some(c) if c == "message/ohttp-chunked-req" => true,
        _ => {
            e.metrics.rejected("content_type");
            return plain_error(
                415,
                "unsupported_media_type",
                "the content type must be message/ohttp-req or message/ohttp-chunked-req",
            );
        }
    };
    let meta = match outer_meta(&headers, chunked) {
        Ok(m) => m,
        Err(msg) => {
            e.metrics.rejected("outer_headers");
            return plain_error(400, "invalid_outer_header", msg);
        }
    };
    let bad_key_id = || {
        e.metrics.rejected("key_id");
        plain_error(
            400,
            "invalid_key_id",
            "Veil-Key-Id must be 32 lowercase hex digits",
        )
    };
    let header_key_id = match single(&headers, KEY_ID_HEADER) {
        Ok(None) => None,
        Ok(Some(v)) => match v.parse::<KeyId>() {
            Ok(k) => Some(k),
            Err(_) => return bad_key_id(),
        },
        Err(()) => return bad_key_id(),
    };
    let too_large = || {
        e.metrics.rejected("too_large");
        plain_error(
            413,
            "request_too_large",
            "the encapsulated request is too large",
        )
    };
    // A declared length over the limit is refused before anything is read.
    if single(&headers, header::CONTENT_LENGTH.as_str())
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > e.settings.max_request_bytes as u64)
    {
        return too_large();
    }
    // The body, whole, bounded in size and in time: a client that withholds it is cut off
    // (slowloris) and holds no admission place while it dawdles.
    let sealed = match tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(body, e.settings.max_request_bytes),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            e.metrics.rejected("body_timeout");
            let mut r = plain_error(
                408,
                "request_timeout",
                "the request body did not arrive in time",
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    // Admission before any decryption work.
    let Some(admitted) = e.admit(meta.model.as_deref()) else {
        e.metrics.rejected("queue_full");
        let mut r = plain_error(503, "queue_full", "the enclave is at capacity; retry later");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let request_digest = Sha256Digest::of(&sealed);
    // One snapshot of the keys for the whole request (a rotation may happen meanwhile).
    let keys = e.keys();
    // The key: from Veil-Key-Id, or for standard OHTTP clients from the message's own
    // one-byte key identifier.
    let key_id = header_key_id.or_else(|| {
        let first = *sealed.first()?;
        keys.configs()
            .configs()
            .iter()
            .find(|c| c.key_id() == first)
            .map(channel::KeyConfig::id)
    });
    let Some(key_id) = key_id.filter(|k| keys.configs().get(k).is_some()) else {
        e.metrics.rejected("unknown_key_id");
        return plain_error(
            422,
            "unknown_key_id",
            "no key configuration with this id; fetch /attestation again",
        );
    };
    let limits = Limits {
        max_request: e.settings.max_request_bytes,
    };
    let enc_len = keys
        .configs()
        .get(&key_id)
        .map_or(0, |c| c.kem().public_key_len());
    let strike = Strike::of(&key_id, &sealed, enc_len);
    // Checked once the request has opened, so bytes that do not open cannot block the
    // genuine request that carries the same KEM share.
    let replayed = |refused: Refused| {
        let (status, code, message) = match refused {
            Refused::Replayed => (
                400,
                "replayed_request",
                "this encapsulated request was seen before; seal the request again",
            ),
            Refused::Full => (
                503,
                "replay_register_full",
                "the enclave is at capacity; retry later",
            ),
        };
        e.metrics.rejected(code);
        let mut r = plain_error(status, code, message);
        if status == 503 {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    };
    let receipt_for_outer_error = |status: u16| {
        let model = meta
            .model
            .as_deref()
            .map_or_else(|| NO_MODEL.to_owned(), inner::receipt_model);
        e.sign_receipt(
            request_digest,
            key_id,
            &model,
            Usage::default(),
            status,
            started_ms,
        )
    };
    let with_receipt = |mut r: Response, receipt: Option<String>| {
        if let Some(v) = receipt.and_then(|c| HeaderValue::from_str(&c).ok()) {
            r.headers_mut().insert(RECEIPT_FIELD, v);
        }
        r
    };
    // A request that does not open: a plain 400 naming only the failure's kind, with a
    // receipt for the outer error.
    let unopened = |err: &ChannelError| {
        let reason = open_failure(err);
        e.metrics.rejected(reason);
        with_receipt(
            plain_error(400, reason, "the encapsulated request could not be opened"),
            receipt_for_outer_error(400),
        )
    };

    if chunked {
        let opened = keys.open_chunked_request(&key_id, &sealed, &limits);
        drop(sealed);
        let (request, mut sealer) = match opened {
            Ok(x) => x,
            Err(err) => return unopened(&err),
        };
        if let Err(refused) = e.replay.check(strike, Instant::now()) {
            return replayed(refused);
        }
        let (route, reply) = answer(&e, request, &meta).await;
        match reply {
            InnerReply::Whole {
                status,
                body,
                usage,
                model,
            } => {
                let receipt =
                    e.sign_receipt(request_digest, key_id, &model, usage, status, started_ms);
                let mut resp = channel::Response::new(status, body.to_vec());
                let _ = resp.headers.push("content-type", "application/json");
                if let Some(r) = &receipt {
                    let _ = resp.trailers.push(RECEIPT_FIELD, r);
                }
                let sealed = match sealer.seal_whole(&resp) {
                    Ok(s) => s,
                    Err(_) => {
                        return plain_error(500, "seal_failed", "the response could not be sealed");
                    }
                };
                drop(resp);
                e.metrics
                    .tokens(usage.prompt_tokens, usage.completion_tokens);
                e.metrics
                    .request(route, status, started.elapsed().as_secs_f64());
                drop(admitted);
                with_receipt(
                    (
                        [(header::CONTENT_TYPE, "message/ohttp-chunked-res")],
                        sealed,
                    )
                        .into_response(),
                    receipt,
                )
            }
            InnerReply::Stream { model, mut events } => {
                let head = match Headers::new().with("content-type", "text/event-stream") {
                    Ok(h) => h,
                    Err(_) => {
                        return plain_error(500, "seal_failed", "the response could not be sealed");
                    }
                };
                let first = match sealer.seal_head(200, &head) {
                    Ok(b) => b,
                    Err(_) => {
                        return plain_error(500, "seal_failed", "the response could not be sealed");
                    }
                };
                let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
                let enclave = e.clone();
                tokio::spawn(async move {
                    let _admitted = admitted;
                    if tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
                        return;
                    }
                    while let Some(ev) = events.recv().await {
                        match ev {
                            Event::Data(d) => {
                                let Ok(chunk) = sealer.seal_event(&d) else {
                                    return;
                                };
                                drop(d);
                                if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                                    return; // the client went away: dropping `events` cancels
                                }
                            }
                            Event::End { usage, status } => {
                                let receipt = enclave.sign_receipt(
                                    request_digest,
                                    key_id,
                                    &model,
                                    usage,
                                    status,
                                    started_ms,
                                );
                                let mut inner_trailers = Headers::new();
                                if let Some(r) = &receipt {
                                    let _ = inner_trailers.push(RECEIPT_FIELD, r);
                                }
                                let Ok(last) = sealer.finish(&inner_trailers) else {
                                    return;
                                };
                                enclave
                                    .metrics
                                    .tokens(usage.prompt_tokens, usage.completion_tokens);
                                enclave.metrics.request(
                                    route,
                                    status,
                                    started.elapsed().as_secs_f64(),
                                );
                                if tx.send(Ok(Frame::data(Bytes::from(last)))).await.is_err() {
                                    return;
                                }
                                let mut trailers = HeaderMap::new();
                                if let Some(v) =
                                    receipt.and_then(|c| HeaderValue::from_str(&c).ok())
                                {
                                    trailers.insert(RECEIPT_FIELD, v);
                                }
                                let _ = tx.send(Ok(Frame::trailers(trailers))).await;
                                return;
                            }
                        }
                    }
                    // The engine ended without its end event: leave the stream without
                    // its final chunk, which the client detects as truncation.
                    enclave
                        .metrics
                        .request(route, 500, started.elapsed().as_secs_f64());
                });
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|f| (f, rx))
                });
                let mut r = Response::new(Body::new(StreamBody::new(stream)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("message/ohttp-chunked-res"),
                );
                r.headers_mut()
                    .insert(header::TRAILER, HeaderValue::from_static(RECEIPT_FIELD));
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
        }
    } else {
        // Opened in place in the received buffer (taken over without a copy where the
        // body arrived as one unshared buffer).
        let opened = keys.open_request_owned(&key_id, Vec::from(sealed), &limits);
        let (request, sealer) = match opened {
            Ok(x) => x,
            Err(err) => return unopened(&err),
        };
        if let Err(refused) = e.replay.check(strike, Instant::now()) {
            return replayed(refused);
        }
        let (route, reply) = answer(&e, request, &meta).await;
        let (status, body, usage, model) = match reply {
            InnerReply::Whole {
                status,
                body,
                usage,
                model,
            } => (status, body, usage, model),
            // `handle` streams only when `can_stream`; never for a whole request.
            InnerReply::Stream { model, .. } => {
                let err = ApiError::new(500, "server_error", "engine_failure", "the engine failed");
                (500, Zeroizing::new(err.to_json()), Usage::default(), model)
            }
        };
        let receipt = e.sign_receipt(request_digest, key_id, &model, usage, status, started_ms);
        // The body is copied once, straight into the buffer it is sealed in.
        let mut headers = Headers::new();
        let _ = headers.push("content-type", "application/json");
        let Ok(mut writer) = sealer.writer(status, headers, body.len()) else {
            return plain_error(500, "seal_failed", "the response could not be sealed");
        };
        writer.extend_from_slice(&body);
        drop(body);
        if let Some(r) = &receipt {
            let _ = writer.trailers_mut().push(RECEIPT_FIELD, r);
        }
        let Ok(sealed) = writer.seal() else {
            return plain_error(500, "seal_failed", "the response could not be sealed");
        };
        e.metrics
            .tokens(usage.prompt_tokens, usage.completion_tokens);
        e.metrics
            .request(route, status, started.elapsed().as_secs_f64());
        drop(admitted);
        with_receipt(
            ([(header::CONTENT_TYPE, "message/ohttp-res")], sealed).into_response(),
            receipt,
        )
    }
}

/// Answers an opened request with the inner API (oversize bodies refused first). Returns
/// the route's metric label and the reply; the opened request is dropped (and wiped) here.
async fn answer(
    e: &Enclave,
    mut request: channel::Request,
    meta: &OuterMeta,
) -> (&'static str, InnerReply) {
    let route = inner::route_label(&request.method, &request.path);
    let ct = request.headers.get("content-type").map(str::to_owned);
    // The opened body, moved to the front of the buffer it was opened in (not copied).
    let body = Zeroizing::new(std::mem::take(&mut request.body).into_vec());
    let reply = if body.len() > e.settings.max_inner_body_bytes {
        too_large(meta)
    } else if let Some(err) = stale(
        request.headers.get("date"),
        SystemTime::now(),
        e.settings.replay_window,
    ) {
        inner::error(
            &err,
            &meta
                .model
                .as_deref()
                .map_or_else(|| NO_MODEL.to_owned(), inner::receipt_model),
        )
    } else {
        inner::handle(
            e.engine(),
            &request.method,
            &request.path,
            ct.as_deref(),
            body,
            meta,
        )
        .await
    };
    drop(request);
    (route, reply)
}

/// RFC 9458 §6.5: a request whose inner `date` is further from the enclave's clock than
/// the replay window could be a replay from before the window; refuse it (sealed, so the
/// client learns why). Requests without `date` (plain OHTTP clients) are guarded by the
/// replay register alone.
fn stale(date: Option<&str>, now: SystemTime, window: Duration) -> Option<ApiError> {
    let date = date?;
    let fresh = httpdate::parse_http_date(date).ok().is_some_and(|d| {
        let skew = now
            .duration_since(d)
            .or_else(|_| d.duration_since(now))
            .unwrap_or(Duration::MAX);
        skew <= window
    });
    (!fresh).then(|| {
        ApiError::new(
            400,
            "invalid_request_error",
            "stale_request",
            "the request's date header is missing a valid HTTP date or is further from the enclave's clock than its replay window; check the client's clock and seal the request again",
        )
    })
}

fn too_large(meta: &OuterMeta) -> InnerReply {
    let e = ApiError::new(
        413,
        "invalid_request_error",
        "request_too_large",
        "the request body is too large",
    );
    inner::error(
        &e,
        &meta
            .model
            .as_deref()
            .map_or_else(|| NO_MODEL.to_owned(), inner::receipt_model),
    )
}

/// A fixed reason for a failure to open, for metrics and the plain error's code.
fn open_failure(e: &ChannelError) -> &'static str {
    match e {
        ChannelError::TooLarge { .. } => "request_too_large",
        ChannelError::Unsupported { .. } => "unsupported_suite",
        ChannelError::StreamTruncated => "truncated",
        ChannelError::Malformed { .. } => "malformed_inner_message",
        _ => "open_failed",
    }
}

/// The plaintext inner listener: the same inner API without the envelope.
async fn plaintext_inner(
    State(e): State<Arc<Enclave>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let path = uri
        .path_and_query()
        .map_or("/", axum::http::uri::PathAndQuery::as_str)
        .to_owned();
    let route = inner::route_label(method.as_str(), &path);
    let ct = header_str(&headers, header::CONTENT_TYPE.as_str()).map(str::to_owned);
    let meta = OuterMeta {
        can_stream: true,
        ..OuterMeta::default()
    };
    let reply = inner::handle(
        e.engine(),
        method.as_str(),
        &path,
        ct.as_deref(),
        Zeroizing::new(body.to_vec()),
        &meta,
    )
    .await;
    drop(body);
    match reply {
        InnerReply::Whole {
            status,
            body,
            usage,
            ..
        } => {
            e.metrics
                .tokens(usage.prompt_tokens, usage.completion_tokens);
            e.metrics
                .request(route, status, started.elapsed().as_secs_f64());
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_vec(),
            )
                .into_response()
        }
        InnerReply::Stream { mut events, .. } => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
            let enclave = e.clone();
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    match ev {
                        Event::Data(d) => {
                            if tx
                                .send(Ok(Frame::data(Bytes::from(d.to_vec()))))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Event::End { usage, status } => {
                            enclave
                                .metrics
                                .tokens(usage.prompt_tokens, usage.completion_tokens);
                            enclave
                                .metrics
                                .request(route, status, started.elapsed().as_secs_f64());
                            return;
                        }
                    }
                }
            });
            let stream =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
                );
            let mut r = Response::new(Body::new(StreamBody::new(stream)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
    }
}
