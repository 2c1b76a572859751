//! The fetchers' HTTP client: veil's client stack (hyper, rustls on `ring`, the system's
//! roots for `https://`), a connect and a per-attempt timeout, a response size limit, and
//! bounded retries with exponential back-off that honour `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::HeaderMap;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;

use super::FetchError;

/// Largest response body read (the largest PCS CRLs are a few hundred KiB).
const MAX_BODY: usize = 8 << 20;
/// The first back-off delay; it doubles per attempt.
const BASE_DELAY: Duration = Duration::from_secs(1);

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per URL, the first included (at least 1).
    pub max_attempts: u32,
    /// The most time spent waiting between attempts, per URL.
    pub max_wait: Duration,
    /// Connect timeout, and the limit of one attempt (request and whole body).
    pub timeout: Duration,
}

/// A response with status 200.
#[derive(Debug)]
pub struct Response {
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first of `names` present, as text (URL-decoded when `url_decode`).
    pub fn header(&self, names: &[&str], url_decode: bool) -> Option<String> {
        names.iter().find_map(|name| {
            let v = self.headers.get(*name)?.to_str().ok()?;
            Some(if url_decode {
                percent_decode(v)
            } else {
                v.to_owned()
            })
        })
    }
}

/// `%XX` escapes decoded (a `+` is kept: base64 text may hold one); invalid escapes and
/// non-UTF-8 results are kept as they are.
#[must_use]
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(s) = std::str::from_utf8(hex)
            && let Ok(v) = u8::from_str_radix(s, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// One service's client (`https://` or, for tests and a local mirror, `http://`).
pub struct Http {
    client: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    retry: RetryPolicy,
    /// Requests sent (attempts), for the summary.
    pub attempts: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Http {
    /// A client for URLs under `base` (whose scheme decides TLS).
    ///
    /// # Errors
    /// [`FetchError::Usage`] for a URL that is neither `https://` nor `http://`, or when
    /// the system has no root certificates for `https://`.
    pub fn new(base: &str, retry: RetryPolicy) -> Result<Self, FetchError> {
        let https = if base.starts_with("https://") {
            true
        } else if base.starts_with("http://") {
            false
        } else {
            return Err(FetchError::Usage(format!(
                "{base:?}: the service URL must start with https:// (or http:// for a local mirror)"
            )));
        };
        let uri: hyper::Uri = base
            .parse()
            .map_err(|e| FetchError::Usage(format!("{base:?}: {e}")))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(FetchError::Usage(format!("{base:?} has no host")));
        }
        let roots = if https {
            veil_client::tls_roots(None).map_err(|e| FetchError::Usage(format!("TLS: {e}")))?
        } else {
            RootCertStore::empty()
        };
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(retry.timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Usage(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config);
        let builder = if https {
            builder.https_only()
        } else {
            builder.https_or_http()
        };
        let connector = builder.enable_http1().wrap_connector(http);
        Ok(Self {
            client: HyperClient::builder(TokioExecutor::new()).build(connector),
            retry: RetryPolicy {
                max_attempts: retry.max_attempts.max(1),
                ..retry
            },
            attempts: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// One attempt: status, headers, body.
    async fn once(&self, url: &str) -> Result<(u16, HeaderMap, Vec<u8>), String> {
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = hyper::Request::get(url)
            .header(
                "user-agent",
                concat!("veil-verify/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let attempt = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| veil_client::error_chain(&e))?;
            let status = resp.status().as_u16();
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, parts.headers, body.to_vec()))
        };
        tokio::time::timeout(self.retry.timeout, attempt)
            .await
            .map_err(|_| format!("no complete answer within {:?}", self.retry.timeout))?
    }

    /// GET `url`: 200 is returned; 404 fails at once; 429, 5xx and transport errors are
    /// retried with exponential back-off (or after `Retry-After`), within the attempt and
    /// wait bounds; any other status fails at once.
    ///
    /// # Errors
    /// [`FetchError::NotFound`], [`FetchError::GaveUp`] or [`FetchError::Http`].
    pub async fn get(&self, url: &str) -> Result<Response, FetchError> {
        let mut waited = Duration::ZERO;
        let mut delay = BASE_DELAY;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (why, retry_after) = match self.once(url).await {
                Ok((200, headers, body)) => return Ok(Response { headers, body }),
                Ok((404, _, _)) => {
                    return Err(FetchError::NotFound {
                        url: url.to_owned(),
                    });
                }
                Ok((status, headers, body)) if status == 429 || (500..=599).contains(&status) => {
                    let after = headers
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(retry_after);
                    (format!("HTTP {status}{}", snippet(&body)), after)
                }
                Ok((status, _, body)) => {
                    return Err(FetchError::Http {
                        url: url.to_owned(),
                        detail: format!("HTTP {status}{}", snippet(&body)),
                    });
                }
                Err(e) => (e, None),
            };
            let wait = retry_after.unwrap_or(delay);
            let budget = self.retry.max_wait.saturating_sub(waited);
            if attempt >= self.retry.max_attempts || wait > budget {
                let reason = if attempt >= self.retry.max_attempts {
                    format!("{attempt} attempt(s)")
                } else {
                    format!(
                        "{attempt} attempt(s); the next wait ({wait:?}) exceeds what is left of --max-wait ({budget:?})"
                    )
                };
                return Err(FetchError::GaveUp {
                    url: url.to_owned(),
                    reason,
                    waited,
                    last: why,
                });
            }
            eprintln!("veil-verify fetch: {url}: {why}; retrying in {wait:?}");
            tokio::time::sleep(wait).await;
            waited += wait;
            delay = delay.saturating_mul(2);
        }
    }
}

/// `Retry-After`: delay seconds, or an HTTP date (IMF-fixdate).
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let secs = (when - time::OffsetDateTime::now_utc()).whole_seconds();
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// The start of an error body, printable, for a message.
fn snippet(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body.get(..body.len().min(160)).unwrap_or(&[]))
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("-----BEGIN%20CERTIFICATE-----%0AMII+/x%3D"),
            "-----BEGIN CERTIFICATE-----\nMII+/x="
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "%ff");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }
}
