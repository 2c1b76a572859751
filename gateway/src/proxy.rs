//! `POST /v1/ohttp`: authenticate, admit, route by key configuration id, stream through,
//! and meter from the enclave's signed receipt. The sealed bodies are never read here
//! beyond hashing them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use veil_attestation::bytes::Sha256Digest;
use veil_attestation::channel::KeyId;
use veil_attestation::receipt::SignedReceipt;

use crate::backends::Live;
use crate::error::ApiError;
use crate::limits::{Admission, Refusal};
use crate::relay::{RequestBody, ResponseBody, ResponseWatcher, Seen};
use crate::store::{KeyRecord, UsageRow};
use crate::{AppState, KEY_CACHE_TTL, LedgerOutage, auth};

/// Outer header names (lowercase).
pub const KEY_ID_HEADER: &str = "veil-key-id";
/// The model.
pub const MODEL_HEADER: &str = "veil-model";
/// Declared maximum tokens.
pub const MAX_TOKENS_HEADER: &str = "veil-max-tokens";
/// Streaming flag.
pub const STREAM_HEADER: &str = "veil-stream";
/// The receipt (header or trailer).
pub const RECEIPT_FIELD: &str = "veil-receipt";

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Authenticates `Authorization: Bearer veil_...` against the database (every request, so
/// a revoked key is refused at once).
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<KeyRecord, ApiError> {
    let key = auth::bearer_key(header_str(headers, header::AUTHORIZATION.as_str()))
        .ok_or_else(ApiError::unauthorized)?;
    let hash = auth::hash_key(key);
    let serve = state.ledger_outage == LedgerOutage::Serve;
    let cache = || {
        state
            .key_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    match state.store.active_key_by_hash(&hash).await {
        Ok(Some(k)) => {
            if serve {
                cache().insert(hash, (k.clone(), Instant::now()));
            }
            Ok(k)
        }
        Ok(None) => {
            if serve {
                cache().remove(&hash);
            }
            Err(ApiError::unauthorized())
        }
        Err(e) => {
            tracing::error!(error = %e, "key lookup failed: the database is unreachable");
            state.metrics.inc("veil_gateway_ledger_errors_total", &[]);
            if serve
                && let Some((k, _)) = cache()
                    .get(&hash)
                    .filter(|(_, seen)| seen.elapsed() < KEY_CACHE_TTL)
            {
                state
                    .metrics
                    .inc("veil_gateway_served_during_ledger_outage_total", &[]);
                return Ok(k.clone());
            }
            Err(ApiError::ledger_unavailable())
        }
    }
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

/// A decimal number of digits only (no sign, no spaces), as `u32`.
pub fn digits_u32(v: &str) -> Option<u32> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

struct Meta {
    chunked: bool,
    key_id: KeyId,
    model: Option<String>,
    max_tokens: Option<u32>,
    stream: Option<bool>,
}

fn outer_meta(h: &HeaderMap) -> Result<Meta, ApiError> {
    let ct = header_str(h, header::CONTENT_TYPE.as_str()).map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let chunked = match ct.as_deref() {
        Some("message/ohttp-req") => false,
        Some("message/ohttp-chunked-req") => true,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "unsupported_media_type",
                "the content type must be message/ohttp-req or message/ohttp-chunked-req",
            ));
        }
    };
    let bad_key_id = || {
        ApiError::bad_request(
            "invalid_key_id",
            "Veil-Key-Id must be 32 lowercase hex digits",
        )
        .param("Veil-Key-Id")
    };
    let key_id = single(h, KEY_ID_HEADER)
        .map_err(|()| bad_key_id())?
        .ok_or_else(|| {
            ApiError::bad_request("missing_key_id", "the Veil-Key-Id header is required")
                .param("Veil-Key-Id")
        })?
        .parse::<KeyId>()
        .map_err(|_| bad_key_id())?;
    let model = match single(h, MODEL_HEADER) {
        Ok(None) => None,
        Ok(Some(m))
            if !m.is_empty()
                && m.len() <= 128
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b)) =>
        {
            Some(m.to_owned())
        }
        Ok(Some(_)) | Err(()) => {
            return Err(ApiError::bad_request(
                "invalid_model",
                "Veil-Model is not a valid model id",
            )
            .param("Veil-Model"));
        }
    };
    let max_tokens = match single(h, MAX_TOKENS_HEADER) {
        Ok(None) => None,
        Ok(Some(v)) if digits_u32(v).is_some() => digits_u32(v),
        Ok(Some(_)) | Err(()) => {
            return Err(ApiError::bad_request(
                "invalid_max_tokens",
                "Veil-Max-Tokens must be a non-negative integer",
            )
            .param("Veil-Max-Tokens"));
        }
    };
    let stream = match single(h, STREAM_HEADER) {
        Ok(None) => None,
        Ok(Some("true" | "1")) => Some(true),
        Ok(Some("false" | "0")) => Some(false),
        Ok(Some(_)) | Err(()) => {
            return Err(ApiError::bad_request(
                "invalid_stream",
                "Veil-Stream must be true or false",
            )
            .param("Veil-Stream"));
        }
    };
    Ok(Meta {
        chunked,
        key_id,
        model,
        max_tokens,
        stream,
    })
}

/// Everything needed to meter one request once its response has ended, and to log it.
///
/// The receipt (a response header, or a trailer when streaming) is only kept as it passes;
/// verifying it, settling the token reservation, the metrics, the log line and the ledger
/// write happen in [`Meter::settle`], after the last frame has been handed on, so that none
/// of them delays the response. The request's admission (its concurrency slot) is held until
/// the receipt is settled, and the key's next admission settles it first if it has not run
/// yet. `veil_gateway_unsettled` counts forwarded requests whose metering has not finished
/// (ledger write included): it reads 0 once every answered request is metered.
struct Meter {
    state: Arc<AppState>,
    request_id: String,
    key: String,
    model: String,
    backend: Arc<Live>,
    key_id: KeyId,
    seen: Arc<std::sync::Mutex<Seen>>,
    /// Held (with the request's slot and token reservation) until the settlement.
    admission: Option<Admission>,
    started: Instant,
    status: u16,
    /// `None` until the receipt field (header or trailers) is seen; then its value, `None`
    /// when it is absent from the trailers or not visible ASCII.
    receipt: Option<Option<String>>,
}

impl Meter {
    fn fault(&self, reason: &'static str) {
        self.state.metrics.inc(
            "veil_gateway_backend_faults_total",
            &[("backend", &self.backend.url), ("reason", reason)],
        );
        tracing::warn!(
            request_id = %self.request_id,
            backend = %self.backend.url,
            reason,
            "backend fault: receipt not billed"
        );
    }

    /// Verifies the receipt under the backend's attested key and settles the token
    /// reservation with it; the row to record, or `None` (a backend fault, counted).
    fn verify(&self, compact: Option<&str>) -> Option<UsageRow> {
        let Some(compact) = compact else {
            self.fault("missing_receipt");
            return None;
        };
        let Ok(signed) = SignedReceipt::parse_compact(compact) else {
            self.fault("malformed_receipt");
            return None;
        };
        let Ok(r) = signed.verify(self.backend.identity.receipt_public_key()) else {
            self.fault("receipt_signature");
            return None;
        };
        let digest: Option<Sha256Digest> = self.seen.lock().ok().and_then(|mut s| s.digest());
        if digest.is_none_or(|d| !d.ct_eq(&r.request_digest)) {
            self.fault("receipt_request_digest");
            return None;
        }
        if !r.key_id.ct_eq(&self.key_id) {
            self.fault("receipt_key_id");
            return None;
        }
        let used = r.prompt_tokens.saturating_add(r.completion_tokens);
        if let Some(a) = &self.admission {
            a.settle(used);
        }
        let m = &self.state.metrics;
        m.add(
            "veil_gateway_tokens_total",
            &[("key", &self.key), ("model", &r.model), ("kind", "prompt")],
            r.prompt_tokens,
        );
        m.add(
            "veil_gateway_tokens_total",
            &[
                ("key", &self.key),
                ("model", &r.model),
                ("kind", "completion"),
            ],
            r.completion_tokens,
        );
        Some(UsageRow {
            request_digest: r.request_digest.to_string(),
            key_name: self.key.clone(),
            model: r.model.clone(),
            backend: self.backend.url.clone(),
            key_id: r.key_id.to_string(),
            prompt_tokens: i64::try_from(r.prompt_tokens).unwrap_or(i64::MAX),
            completion_tokens: i64::try_from(r.completion_tokens).unwrap_or(i64::MAX),
            status: i64::from(r.status),
            started_at_ms: i64::try_from(r.started_at_ms).unwrap_or(i64::MAX),
            finished_at_ms: i64::try_from(r.finished_at_ms).unwrap_or(i64::MAX),
        })
    }

    /// Everything but the ledger write: the receipt verified and settled (or counted as a
    /// fault), the metrics and the log line; then the admission is released. Returns the
    /// state and the row to record.
    fn settle_now(
        mut self,
        complete: bool,
        bytes: u64,
        elapsed: std::time::Duration,
    ) -> (Arc<AppState>, String, Option<UsageRow>) {
        let row = match &self.receipt {
            Some(compact) => self.verify(compact.as_deref()),
            None if complete && self.status < 400 => {
                self.fault("missing_receipt");
                None
            }
            None => None,
        };
        self.state.metrics.observe(elapsed);
        let request_bytes = self.seen.lock().map(|s| s.bytes).unwrap_or(0);
        tracing::info!(
            request_id = %self.request_id,
            key = %self.key,
            model = %self.model,
            backend = %self.backend.url,
            status = self.status,
            request_bytes,
            response_bytes = bytes,
            complete,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
        // The concurrency slot is released only now, with the tokens settled.
        drop(self.admission.take());
        (self.state, self.request_id, row)
    }

    /// Settles the request and hands its row to the ledger writer.
    fn settle(self, complete: bool, bytes: u64, elapsed: std::time::Duration) {
        let (state, request_id, row) = self.settle_now(complete, bytes, elapsed);
        state.queue_receipt(request_id, row);
    }
}

impl ResponseWatcher for Meter {
    fn trailers(&mut self, trailers: &http::HeaderMap) {
        if self.receipt.is_none() {
            let compact = trailers.get(RECEIPT_FIELD).and_then(|v| v.to_str().ok());
            self.receipt = Some(compact.map(str::to_owned));
        }
    }

    fn finished(mut self, complete: bool, bytes: u64) {
        let elapsed = self.started.elapsed();
        self.state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        let Some(admission) = self.admission.take() else {
            self.settle(complete, bytes, elapsed);
            return;
        };
        // Called as the last frame is handed to the connection, before it is written: the
        // settlement is queued on the key's limiter and run by a task of its own once the
        // connection has written that frame and yielded, or by the key's next admission if
        // that comes first (so a client's next request always finds this one settled).
        let limiter = admission.settle_later(move |a| {
            self.admission = Some(a);
            self.settle(complete, bytes, elapsed);
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { limiter.run_deferred() });
        } else {
            limiter.run_deferred();
        }
    }
}

/// The handler.
pub async fn ohttp(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let request_id = state.request_id();
    match forward(&state, &request_id, started, &headers, body).await {
        Ok(r) => r,
        Err((e, key)) => {
            state.metrics.inc(
                "veil_gateway_requests_total",
                &[("status", e.status().as_str()), ("code", e.code())],
            );
            tracing::info!(
                request_id = %request_id,
                key = key.as_deref().unwrap_or("-"),
                status = e.status().as_u16(),
                code = e.code(),
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request refused"
            );
            e.into_response()
        }
    }
}

async fn forward(
    state: &Arc<AppState>,
    request_id: &str,
    started: Instant,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, (ApiError, Option<String>)> {
    let key = authenticate(state, headers).await.map_err(|e| (e, None))?;
    let name = Some(key.name.clone());
    let meta = outer_meta(headers).map_err(|e| (e, name.clone()))?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            "the encapsulated request is too large",
        )
    };
    if let Some(len) =
        header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok())
        && len > state.max_body_bytes
    {
        return Err((too_large(), name));
    }
    let routes = state.registry.routes();
    let Some(backend) = routes.by_key.get(&meta.key_id).cloned() else {
        let e = if routes.live.is_empty() {
            ApiError::no_backend()
        } else {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                "unknown_key_id",
                "no routable backend holds this key configuration; fetch the attestation again",
            )
            .param("Veil-Key-Id")
        };
        return Err((e, name));
    };
    if key.tpm.is_some() && meta.max_tokens.is_none() {
        return Err((
            ApiError::bad_request(
                "missing_max_tokens",
                "Veil-Max-Tokens is required for keys with a token limit",
            )
            .param("Veil-Max-Tokens"),
            name,
        ));
    }
    let admission = state
        .limits
        .admit(&key, u64::from(meta.max_tokens.unwrap_or(0)))
        .map_err(|r| {
            state
                .metrics
                .inc("veil_gateway_rate_limited_total", &[("key", &key.name)]);
            let e = match r {
                Refusal::Requests(s) => ApiError::rate_limited(
                    "rate_limit_requests",
                    "request rate limit reached for this API key",
                    s,
                ),
                Refusal::Tokens(s) => ApiError::rate_limited(
                    "rate_limit_tokens",
                    "token rate limit reached for this API key",
                    s,
                ),
                Refusal::Concurrency => ApiError::rate_limited(
                    "rate_limit_concurrency",
                    "too many requests in flight for this API key",
                    1,
                ),
            };
            (e, name.clone())
        })?;

    // Upstream: the same outer metadata, the body streamed through.
    let (req_body, seen) = RequestBody::new(body, state.max_body_bytes);
    let mut up = Request::builder()
        .method("POST")
        .uri(format!("{}/ohttp", backend.url))
        .header(
            header::CONTENT_TYPE,
            if meta.chunked {
                "message/ohttp-chunked-req"
            } else {
                "message/ohttp-req"
            },
        )
        .header(header::TE, "trailers")
        .header(KEY_ID_HEADER, meta.key_id.to_string());
    if let Some(m) = &meta.model {
        up = up.header(MODEL_HEADER, m.as_str());
    }
    if let Some(t) = meta.max_tokens {
        up = up.header(MAX_TOKENS_HEADER, t.to_string());
    }
    if let Some(s) = meta.stream {
        up = up.header(STREAM_HEADER, if s { "true" } else { "false" });
    }
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        up = up.header(header::CONTENT_LENGTH, len.clone());
    }
    let up = up
        .body(req_body)
        .map_err(|_| (ApiError::internal(), name.clone()))?;
    let resp = match state.upstream().request(up).await {
        Ok(r) => r,
        Err(e) => {
            if seen.lock().map(|s| s.too_large).unwrap_or(false) {
                return Err((too_large(), name));
            }
            state.metrics.inc(
                "veil_gateway_backend_errors_total",
                &[("backend", &backend.url)],
            );
            tracing::warn!(request_id, backend = %backend.url, error = %e, "backend request failed");
            // Check the backends now rather than at the next interval, so one that is gone
            // leaves the routing table before more requests meet it.
            state.registry.wake();
            return Err((ApiError::bad_gateway(), name));
        }
    };
    let status = resp.status();
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        // The backend no longer holds this key: re-verify now.
        state.registry.wake();
    }
    state.metrics.inc(
        "veil_gateway_requests_total",
        &[("status", status.as_str()), ("code", "forwarded")],
    );
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    state.metrics.unsettled.fetch_add(1, Ordering::SeqCst);
    let (parts, incoming) = resp.into_parts();
    let meter = Meter {
        state: Arc::clone(state),
        request_id: request_id.to_owned(),
        key: key.name.clone(),
        model: meta.model.clone().unwrap_or_else(|| "-".into()),
        backend,
        key_id: meta.key_id,
        seen,
        admission: Some(admission),
        started,
        status: status.as_u16(),
        // Kept here, verified once the response has ended.
        receipt: parts
            .headers
            .get(RECEIPT_FIELD)
            .map(|v| v.to_str().ok().map(str::to_owned)),
    };
    let mut out = Response::new(Body::new(ResponseBody::new(incoming, meter)));
    *out.status_mut() = status;
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::RETRY_AFTER,
        header::TRAILER,
        header::CACHE_CONTROL,
    ] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    if let Some(v) = parts.headers.get(RECEIPT_FIELD) {
        out.headers_mut().insert(RECEIPT_FIELD, v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        out.headers_mut().insert("x-request-id", v);
    }
    Ok(out)
}
