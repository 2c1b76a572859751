//! `veil-client`: fetch bundles from a gateway, verify them against a policy, seal
//! requests to a verified enclave, and open the answers (whole or streamed), checking
//! the enclave's signed receipt.
//!
//! It never falls back to plaintext or to an unverified backend: every request is
//! sealed to a key configuration taken from a bundle that passed [`verify_bundle`].

pub mod procs;
pub mod proxy;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{Mutex, mpsc};
use veil_attestation::bundle::Bundle;
use veil_attestation::bytes::Sha256Digest;
use veil_attestation::channel::{ChannelError, Request, ResponseStream, Target};
use veil_attestation::receipt::{Receipt, SignedReceipt};
use veil_attestation::verify::{EnclaveIdentity, Policy, Verified, verify_bundle};
use zeroize::Zeroizing;

/// The receipt's header, trailer and inner trailer field.
pub const RECEIPT_FIELD: &str = "veil-receipt";
/// Largest whole response read.
const MAX_RESPONSE: usize = 64 << 20;

/// A client failure. Never carries request or response content.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway could not be reached or broke the HTTP exchange.
    #[error("gateway unreachable: {0}")]
    Transport(String),
    /// The gateway or enclave answered with an error outside the envelope.
    #[error("the gateway answered {status}: {message}")]
    Outer {
        /// HTTP status.
        status: u16,
        /// The OpenAI-shaped error body (from the gateway; it never saw content).
        body: Vec<u8>,
        /// Its message.
        message: String,
        /// `Retry-After`, if any.
        retry_after: Option<String>,
    },
    /// No backend's bundle passed verification.
    #[error("no backend passed attestation: {reason}")]
    NoVerifiedBackend {
        /// Why, backend by backend.
        reason: String,
        /// The report of every backend the gateway listed.
        reports: Vec<BackendReport>,
    },
    /// A bundle could not be read.
    #[error("attestation: {0}")]
    Attestation(String),
    /// The sealed channel failed (tampered, truncated, wrong key).
    #[error("sealed channel: {0}")]
    Channel(#[from] ChannelError),
    /// The enclave's receipt is missing, does not verify, or does not match the request.
    #[error("receipt: {0}")]
    Receipt(String),
}

/// Why the trust anchors for an `https://` gateway could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file is not PEM.
    #[error("the CA certificates are not valid PEM: {0}")]
    Pem(String),
    /// The CA file holds no certificate.
    #[error("the CA file holds no CERTIFICATE section")]
    NoCertificate,
    /// A CA certificate cannot serve as a trust anchor.
    #[error("a CA certificate is not usable as a trust anchor: {0}")]
    BadCertificate(String),
    /// Neither the system nor the caller provided a root certificate.
    #[error(
        "no trusted root certificates: the system store has none (install the ca-certificates package or set SSL_CERT_FILE) and no CA file was given"
    )]
    NoRoots,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The roots a client trusts for an `https://` gateway: the system's (the platform store,
/// or `SSL_CERT_FILE` / `SSL_CERT_DIR`), plus the CA certificates in `extra_ca_pem` (a
/// private CA). Verification is never turned off: a gateway whose certificate does not
/// chain to one of these, or does not name the host, is refused.
///
/// # Errors
/// When `extra_ca_pem` is not PEM or holds no usable certificate, or no root is left.
pub fn tls_roots(extra_ca_pem: Option<&[u8]>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped; only an empty store is an error.
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    if let Some(pem) = extra_ca_pem {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    Ok(roots)
}

/// The connector: TLS (rustls on `ring`, HTTP/1.1 by ALPN) for `https://` gateways, which
/// never falls back to plain HTTP; plain TCP for `http://` ones.
fn connector(https: bool, roots: RootCertStore) -> Result<HttpsConnector<HttpConnector>, TlsError> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.set_nodelay(true);
    http.enforce_http(false);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config);
    let builder = if https {
        builder.https_only()
    } else {
        builder.https_or_http()
    };
    Ok(builder.enable_http1().wrap_connector(http))
}

/// An error's message followed by each cause that adds something, joined by `": "`.
#[must_use]
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let m = s.to_string();
        if !message.contains(&m) {
            message.push_str(": ");
            message.push_str(&m);
        }
        source = s.source();
    }
    message
}

/// A transport error's message with its causes (e.g. why a certificate was refused).
fn transport(e: &(dyn std::error::Error + 'static)) -> ClientError {
    let mut message = error_chain(e);
    if message.contains("invalid peer certificate") {
        message.push_str(
            " (the gateway's certificate is not trusted; for a private CA, give its certificate: veil --ca-cert FILE or VEIL_CA_CERT)",
        );
    }
    ClientError::Transport(message)
}

/// One backend's verification outcome.
#[derive(Debug, Clone)]
pub struct BackendReport {
    /// Index in the gateway's list.
    pub index: usize,
    /// Whether it passed.
    pub verified: bool,
    /// The platform it claims.
    pub platform: String,
    /// Its key ids.
    pub key_ids: Vec<String>,
    /// The model manifest digest.
    pub model_manifest_digest: String,
    /// The enclave version.
    pub enclave_version: String,
    /// When its evidence was produced.
    pub produced_at: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Whether the evidence is simulated (no hardware protection).
    pub simulated: bool,
}

/// A verified backend.
struct Backend {
    identity: Verified<EnclaveIdentity>,
    target: Target,
}

/// What the client currently trusts.
struct Trusted {
    backends: Vec<Arc<Backend>>,
    reports: Vec<BackendReport>,
    next: usize,
    /// The gateway's ETag for the bundle list these were verified from.
    etag: Option<String>,
}

/// Metadata the gateway routes and meters on, repeated inside the envelope.
#[derive(Debug, Clone, Default)]
pub struct OuterMeta {
    /// `Veil-Model`.
    pub model: Option<String>,
    /// `Veil-Max-Tokens`.
    pub max_tokens: Option<u64>,
    /// `Veil-Stream`.
    pub stream: bool,
}

/// A complete inner answer.
#[derive(Debug)]
pub struct Answer {
    /// Inner HTTP status.
    pub status: u16,
    /// Inner body (JSON).
    pub body: Zeroizing<Vec<u8>>,
    /// The verified receipt.
    pub receipt: Receipt,
}

/// A streamed inner answer: server-sent events as they are opened.
pub struct EventStream {
    stream: ResponseStream,
    backend: Arc<Backend>,
    sealed_digest: Sha256Digest,
    outer_trailers: tokio::sync::oneshot::Receiver<Option<hyper::HeaderMap>>,
    /// Inner HTTP status.
    pub status: u16,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The answer to [`Client::send`].
#[derive(Debug)]
pub enum Reply {
    /// Complete.
    Whole(Answer),
    /// Streamed.
    Stream(EventStream),
}

/// A veil client bound to one gateway.
pub struct Client {
    gateway: String,
    api_key: Option<Zeroizing<String>>,
    policy: Policy,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    trusted: Mutex<Option<Trusted>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("gateway", &self.gateway)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn outer_error(status: u16, body: Vec<u8>, retry_after: Option<String>) -> ClientError {
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "no OpenAI-shaped error body".to_owned());
    ClientError::Outer {
        status,
        body,
        message,
        retry_after,
    }
}

impl Client {
    /// A client for `gateway` (`https://host[:port]`, or `http://host:port` for local use
    /// or a gateway behind a terminator on the same host), authenticating with `api_key`.
    /// An `https://` gateway must present a certificate that chains to the system's roots.
    ///
    /// # Errors
    /// When the URL is neither `https://` nor `http://` with a host, or the system has no
    /// root certificates for an `https://` gateway.
    pub fn new(
        gateway: &str,
        api_key: Option<String>,
        policy: Policy,
    ) -> Result<Self, ClientError> {
        Self::with_roots(gateway, api_key, policy, None)
    }

    /// As [`Client::new`], trusting `roots` (from [`tls_roots`], e.g. with a private CA)
    /// for an `https://` gateway instead of the system's roots alone.
    ///
    /// # Errors
    /// As [`Client::new`].
    pub fn with_roots(
        gateway: &str,
        api_key: Option<String>,
        policy: Policy,
        roots: Option<RootCertStore>,
    ) -> Result<Self, ClientError> {
        let gateway = gateway.trim_end_matches('/').to_owned();
        let uri: hyper::Uri = gateway
            .parse()
            .map_err(|e| ClientError::Transport(format!("the gateway URL {gateway:?}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(ClientError::Transport(format!(
                    "the gateway URL {gateway:?} must start with https:// (or http:// for local use); requests are sealed either way"
                )));
            }
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(ClientError::Transport(format!(
                "the gateway URL {gateway:?} has no host"
            )));
        }
        let tls_error = |e: TlsError| ClientError::Transport(format!("TLS setup: {e}"));
        let roots = match roots {
            Some(r) => r,
            // Plain HTTP needs no roots; do not read the system store for it.
            None if !https => RootCertStore::empty(),
            None => tls_roots(None).map_err(tls_error)?,
        };
        let connector = connector(https, roots).map_err(tls_error)?;
        Ok(Self {
            gateway,
            api_key: api_key.map(Zeroizing::new),
            policy,
            // Idle connections are dropped before the gateway's 30 s idle limit closes
            // them, so a request never goes out on a connection being closed.
            http: HyperClient::builder(TokioExecutor::new())
                .pool_idle_timeout(std::time::Duration::from_secs(20))
                .build(connector),
            trusted: Mutex::new(None),
        })
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The gateway's `/healthz`: its status code and JSON body.
    ///
    /// # Errors
    /// When the gateway cannot be reached or does not answer JSON.
    pub async fn gateway_health(&self) -> Result<(u16, Value), ClientError> {
        let (status, body) = self.get("/healthz").await?;
        let v = serde_json::from_slice(&body)
            .map_err(|e| ClientError::Transport(format!("/healthz is not JSON: {e}")))?;
        Ok((status, v))
    }

    /// `GET path` on the gateway (or enclave) URL this client was made with, returning the
    /// status and the body (at most the client's response limit). Nothing is verified:
    /// this is how `veil-verify bundle URL` fetches a bundle to judge it.
    ///
    /// # Errors
    /// [`ClientError::Transport`] when the URL cannot be reached.
    pub async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), ClientError> {
        self.get_if(path, None).await.map(|(s, _, b)| (s, b))
    }

    /// A GET, conditional on `if_none_match`; returns status, ETag and body.
    async fn get_if(
        &self,
        path: &str,
        if_none_match: Option<&str>,
    ) -> Result<(u16, Option<String>, Vec<u8>), ClientError> {
        let mut b = hyper::Request::get(format!("{}{path}", self.gateway));
        if let Some(k) = &self.api_key {
            b = b.header("authorization", format!("Bearer {}", k.as_str()));
        }
        if let Some(tag) = if_none_match {
            b = b.header("if-none-match", tag);
        }
        let req = b
            .body(Full::new(Bytes::new()))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let resp = self.http.request(req).await.map_err(|e| transport(&e))?;
        let status = resp.status().as_u16();
        let etag = header_text(&resp, "etag");
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?
            .to_bytes();
        Ok((status, etag, body.to_vec()))
    }

    /// Re-verifies when the gateway's bundle list has changed since the last
    /// verification (a conditional GET: unchanged lists cost one round trip and no
    /// verification). Returns whether it verified again. Without a previous
    /// verification, attests.
    ///
    /// # Errors
    /// As [`Client::attest`]; after a failure, nothing is trusted until a later call
    /// succeeds.
    pub async fn refresh(&self) -> Result<bool, ClientError> {
        let etag = self
            .trusted
            .lock()
            .await
            .as_ref()
            .and_then(|t| t.etag.clone());
        let Some(etag) = etag else {
            self.attest().await?;
            return Ok(true);
        };
        let (status, new_etag, body) = self.get_if("/v1/attestation", Some(&etag)).await?;
        if status == 304 {
            return Ok(false);
        }
        self.verify_list(status, new_etag, &body).await?;
        Ok(true)
    }

    /// Fetches the gateway's bundles and verifies each against the policy; only those
    /// that pass are used. Returns a report per backend.
    ///
    /// # Errors
    /// When the gateway cannot be reached or no backend passes.
    pub async fn attest(&self) -> Result<Vec<BackendReport>, ClientError> {
        let (status, etag, body) = self.get_if("/v1/attestation", None).await?;
        self.verify_list(status, etag, &body).await
    }

    async fn verify_list(
        &self,
        status: u16,
        etag: Option<String>,
        body: &[u8],
    ) -> Result<Vec<BackendReport>, ClientError> {
        if status != 200 {
            return Err(outer_error(status, body.to_vec(), None));
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ClientError::Attestation(format!("not JSON: {e}")))?;
        let list = v["backends"]
            .as_array()
            .ok_or_else(|| ClientError::Attestation("no `backends` list".into()))?;
        let now = OffsetDateTime::now_utc();
        let mut backends = Vec::new();
        let mut reports = Vec::new();
        for (index, b) in list.iter().enumerate() {
            let parsed = serde_json::to_vec(b)
                .map_err(|e| ClientError::Attestation(e.to_string()))
                .and_then(|bytes| {
                    Bundle::parse(&bytes).map_err(|e| ClientError::Attestation(e.to_string()))
                });
            let bundle = match parsed {
                Ok(b) => b,
                Err(e) => {
                    reports.push(BackendReport {
                        index,
                        verified: false,
                        platform: "?".into(),
                        key_ids: vec![],
                        model_manifest_digest: String::new(),
                        enclave_version: String::new(),
                        produced_at: String::new(),
                        error: Some(e.to_string()),
                        simulated: false,
                    });
                    continue;
                }
            };
            let mut report = BackendReport {
                index,
                verified: false,
                platform: bundle.claims.platform.name().to_owned(),
                key_ids: bundle
                    .claims
                    .key_ids
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                model_manifest_digest: bundle.claims.model_manifest.digest().to_string(),
                enclave_version: bundle.claims.enclave_version.clone(),
                produced_at: bundle
                    .produced_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                error: None,
                simulated: matches!(
                    bundle.claims.platform,
                    veil_attestation::claims::Platform::Sim
                ),
            };
            match verify_bundle(&bundle, &self.policy, now) {
                Ok(identity) => match Target::preferred(&identity) {
                    Ok(target) => {
                        report.verified = true;
                        backends.push(Arc::new(Backend { identity, target }));
                    }
                    Err(e) => report.error = Some(e.to_string()),
                },
                Err(e) => report.error = Some(e.to_string()),
            }
            reports.push(report);
        }
        if backends.is_empty() {
            let why = reports
                .iter()
                .map(|r| format!("backend {}: {}", r.index, r.error.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join("; ");
            *self.trusted.lock().await = None;
            return Err(ClientError::NoVerifiedBackend {
                reason: if why.is_empty() {
                    "the gateway lists none".into()
                } else {
                    why
                },
                reports,
            });
        }
        let mut trusted = self.trusted.lock().await;
        // Keep the round-robin position: a retry after a failure goes to the next backend.
        let next = trusted.as_ref().map_or(0, |t| t.next);
        *trusted = Some(Trusted {
            backends,
            reports: reports.clone(),
            next,
            etag,
        });
        Ok(reports)
    }

    /// The last verification reports, attesting first if needed.
    ///
    /// # Errors
    /// As [`Client::attest`].
    pub async fn reports(&self) -> Result<Vec<BackendReport>, ClientError> {
        if let Some(t) = &*self.trusted.lock().await {
            return Ok(t.reports.clone());
        }
        self.attest().await
    }

    async fn pick(&self) -> Result<Arc<Backend>, ClientError> {
        {
            let mut t = self.trusted.lock().await;
            if let Some(t) = t.as_mut() {
                let b = t.backends[t.next % t.backends.len()].clone();
                t.next = t.next.wrapping_add(1);
                return Ok(b);
            }
        }
        self.attest().await?;
        let mut t = self.trusted.lock().await;
        let t = t.as_mut().ok_or_else(|| ClientError::NoVerifiedBackend {
            reason: "none".into(),
            reports: Vec::new(),
        })?;
        Ok(t.backends[0].clone())
    }

    /// Seals `request` to a verified backend and sends it through the gateway. When the
    /// gateway says the key is unknown (the enclave rotated or left) or that it could not
    /// reach the backend (`backend_unavailable`: the enclave is gone, and nothing was
    /// answered or billed), attests again and retries once, sealed anew, on the next
    /// verified backend.
    ///
    /// # Errors
    /// Outer errors, channel failures, receipt failures.
    pub async fn send(&self, request: &Request, meta: &OuterMeta) -> Result<Reply, ClientError> {
        match self.send_once(request, meta).await {
            Err(ClientError::Outer { status: 422, .. }) => {
                self.attest().await?;
                self.send_once(request, meta).await
            }
            Err(ClientError::Outer {
                status: 502,
                ref body,
                ..
            }) if error_code(body) == Some("backend_unavailable") => {
                self.attest().await?;
                self.send_once(request, meta).await
            }
            other => other,
        }
    }

    /// Posts a sealed body to the gateway.
    async fn post(
        &self,
        builder: hyper::http::request::Builder,
        content_type: &str,
        sealed: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let req = builder
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(sealed)))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        self.http.request(req).await.map_err(|e| transport(&e))
    }

    async fn send_once(&self, request: &Request, meta: &OuterMeta) -> Result<Reply, ClientError> {
        // RFC 9458 §6.5: the inner `date` lets the enclave refuse a request replayed after
        // its replay register has forgotten it. Sealed, so only the enclave sees it.
        let mut headers = request.headers.clone();
        if headers.get("date").is_none() {
            headers.push(
                "date",
                &httpdate::fmt_http_date(std::time::SystemTime::now()),
            )?;
        }
        let backend = self.pick().await?;
        let key_id = backend.target.key_id().to_string();
        let mut b = hyper::Request::post(format!("{}/v1/ohttp", self.gateway))
            .header("veil-key-id", &key_id)
            .header("te", "trailers");
        if let Some(k) = &self.api_key {
            b = b.header("authorization", format!("Bearer {}", k.as_str()));
        }
        if let Some(m) = &meta.model {
            b = b.header("veil-model", m);
        }
        if let Some(m) = meta.max_tokens {
            b = b.header("veil-max-tokens", m.to_string());
        }
        b = b.header("veil-stream", if meta.stream { "true" } else { "false" });
        if meta.stream {
            let dated;
            let request = if headers == request.headers {
                request
            } else {
                dated = Request {
                    method: request.method.clone(),
                    path: request.path.clone(),
                    headers,
                    body: request.body.clone(),
                };
                &dated
            };
            let (sealed, pending) = backend.target.seal_chunked_request(request)?;
            let digest = Sha256Digest::of(&sealed);
            let resp = self.post(b, "message/ohttp-chunked-req", sealed).await?;
            let status = resp.status().as_u16();
            if status != 200 {
                let retry_after = header_text(&resp, "retry-after");
                let body = Limited::new(resp.into_body(), 1 << 20)
                    .collect()
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .unwrap_or_default();
                return Err(outer_error(status, body, retry_after));
            }
            let mut body = resp.into_body();
            let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(64);
            let (ttx, trx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let mut trailers = None;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => match f.into_data() {
                            Ok(d) => {
                                if tx.send(Ok(d)).await.is_err() {
                                    return; // the reader went away: drop the connection
                                }
                            }
                            Err(f) => trailers = f.into_trailers().ok(),
                        },
                        Err(e) => {
                            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                            return;
                        }
                    }
                }
                drop(tx);
                let _ = ttx.send(trailers);
            });
            let reader =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
                )
                .boxed()
                .into_async_read();
            let mut stream = pending.stream(reader)?;
            let (status, _) = stream.head().await?;
            Ok(Reply::Stream(EventStream {
                stream,
                backend,
                sealed_digest: digest,
                outer_trailers: trx,
                status,
            }))
        } else {
            // The body is copied once, straight into the buffer it is sealed in.
            let mut writer = backend.target.request_writer(
                &request.method,
                &request.path,
                headers,
                request.body.len(),
            )?;
            writer.extend_from_slice(&request.body);
            let (sealed, pending) = writer.seal()?;
            let digest = Sha256Digest::of(&sealed);
            let resp = self.post(b, "message/ohttp-req", sealed).await?;
            let status = resp.status().as_u16();
            let retry_after = header_text(&resp, "retry-after");
            let outer_receipt = header_text(&resp, RECEIPT_FIELD);
            let body = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| ClientError::Transport(e.to_string()))?
                .to_bytes();
            if status != 200 {
                return Err(outer_error(status, body.to_vec(), retry_after));
            }
            // Opened in place in the received buffer (taken over without a copy where it
            // arrived as one unshared buffer).
            let mut response = pending.open_owned(Vec::from(body))?;
            let receipt = check_receipt(
                &backend,
                response.trailers.get(RECEIPT_FIELD),
                outer_receipt.as_deref(),
                &digest,
                response.status,
            )?;
            Ok(Reply::Whole(Answer {
                status: response.status,
                body: Zeroizing::new(std::mem::take(&mut response.body).into_vec()),
                receipt,
            }))
        }
    }
}

/// A response header's value, when it is text.
fn header_text<B>(resp: &hyper::Response<B>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn check_receipt(
    backend: &Backend,
    inner: Option<&str>,
    outer: Option<&str>,
    digest: &Sha256Digest,
    status: u16,
) -> Result<Receipt, ClientError> {
    let inner = inner.ok_or_else(|| ClientError::Receipt("the enclave sent no receipt".into()))?;
    if let Some(outer) = outer
        && outer != inner
    {
        return Err(ClientError::Receipt(
            "the receipt the gateway saw differs from the enclave's".into(),
        ));
    }
    let signed =
        SignedReceipt::parse_compact(inner).map_err(|e| ClientError::Receipt(e.to_string()))?;
    let r = signed
        .verify(backend.identity.receipt_public_key())
        .map_err(|e| ClientError::Receipt(e.to_string()))?;
    if r.request_digest != *digest {
        return Err(ClientError::Receipt(
            "the receipt is for another request".into(),
        ));
    }
    if r.key_id != backend.target.key_id() {
        return Err(ClientError::Receipt("the receipt names another key".into()));
    }
    if r.status != status {
        return Err(ClientError::Receipt(
            "the receipt's status differs from the response's".into(),
        ));
    }
    Ok(r.clone())
}

impl EventStream {
    /// The next server-sent event (padding comment lines removed), or `None` at the end.
    ///
    /// # Errors
    /// A channel failure (tampering, truncation).
    pub async fn next_event(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        loop {
            let Some(piece) = self.stream.next_content().await? else {
                return Ok(None);
            };
            let piece = Zeroizing::new(piece);
            let mut out = Zeroizing::new(Vec::with_capacity(piece.len()));
            for line in piece.split_inclusive(|&b| b == b'\n') {
                if !line.starts_with(b":") {
                    out.extend_from_slice(line);
                }
            }
            if out.iter().any(|&b| b != b'\n' && b != b'\r') {
                return Ok(Some(out));
            }
        }
    }

    /// After the last event: the verified receipt (checked against the gateway's copy
    /// when the gateway passed the trailer on).
    ///
    /// # Errors
    /// A missing or invalid receipt.
    pub async fn finish(self) -> Result<Receipt, ClientError> {
        let inner = self.stream.trailers()?;
        let outer = self.outer_trailers.await.ok().flatten();
        let outer = outer
            .as_ref()
            .and_then(|t| t.get(RECEIPT_FIELD))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        check_receipt(
            &self.backend,
            inner.get(RECEIPT_FIELD),
            outer.as_deref(),
            &self.sealed_digest,
            self.status,
        )
    }
}

/// Builds an inner JSON request.
///
/// # Errors
/// Never in practice (the header name and value are fixed).
pub fn json_request(path: &str, body: Vec<u8>) -> Result<Request, ClientError> {
    let mut r = Request::new("POST", path, body);
    r.headers.push("content-type", "application/json")?;
    Ok(r)
}

/// The `error.code` of an OpenAI-shaped error body.
fn error_code(body: &[u8]) -> Option<&str> {
    #[derive(serde::Deserialize)]
    struct Inner<'a> {
        #[serde(borrow)]
        code: Option<&'a str>,
    }
    #[derive(serde::Deserialize)]
    struct Outer<'a> {
        #[serde(borrow)]
        error: Inner<'a>,
    }
    serde_json::from_slice::<Outer<'_>>(body)
        .ok()
        .and_then(|o| o.error.code)
}

/// The outer metadata of an OpenAI request body (model, max tokens, stream).
#[must_use]
pub fn meta_of(body: &Value) -> OuterMeta {
    OuterMeta {
        model: body["model"].as_str().map(str::to_owned),
        max_tokens: body["max_completion_tokens"]
            .as_u64()
            .or_else(|| body["max_tokens"].as_u64()),
        stream: body["stream"].as_bool().unwrap_or(false),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_https_or_http_with_a_host() {
        for bad in ["ftp://127.0.0.1:9", "127.0.0.1:9", "https://", "gateway"] {
            assert!(
                matches!(
                    Client::new(bad, None, Policy::default()),
                    Err(ClientError::Transport(_))
                ),
                "{bad}"
            );
        }
        assert!(Client::new("http://127.0.0.1:9/", None, Policy::default()).is_ok());
        let private = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let roots = tls_roots(Some(private.cert.pem().as_bytes())).unwrap();
        assert!(
            Client::with_roots("https://localhost:9", None, Policy::default(), Some(roots)).is_ok()
        );
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        assert!(matches!(
            tls_roots(Some(b"not PEM at all\n")),
            Err(TlsError::NoCertificate)
        ));
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        assert!(matches!(
            tls_roots(Some(key.as_bytes())),
            Err(TlsError::NoCertificate)
        ));
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(tls_roots(Some(broken.as_bytes())).is_err());
    }
}
