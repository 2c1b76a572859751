//! TLS for the client API: rustls on `ring` (TLS 1.2 and 1.3), HTTP/1.1 and HTTP/2 chosen
//! by ALPN. Without a certificate the gateway speaks plain HTTP (for local use behind a
//! terminator).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful shutdown waits for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of the certificate and the key was given.
    #[error(
        "--tls-cert and --tls-key (or VEIL_TLS_CERT and VEIL_TLS_KEY, or tls_cert and tls_key in the config) go together: give both for HTTPS or neither for plain HTTP; only the {given} was given"
    )]
    Incomplete {
        /// Which one was given.
        given: &'static str,
    },
    /// A file could not be read.
    #[error("reading the TLS {what} {}: {source}", path.display())]
    Read {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid PEM, or holds nothing of the kind expected.
    #[error("the TLS {what} {} is not usable PEM: {reason}", path.display())]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("the TLS certificate and key are not usable together: {0}")]
    Config(rustls::Error),
}

/// The server configuration from a PEM certificate chain (leaf first) and a PEM private
/// key (PKCS#8, PKCS#1 or SEC1); `None` when neither is given.
///
/// # Errors
/// When only one is given, a file cannot be read or parsed, or the key does not match
/// the certificate.
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => {
            return Err(TlsError::Incomplete {
                given: "certificate",
            });
        }
        (None, Some(_)) => return Err(TlsError::Incomplete { given: "key" }),
    };
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let pem_error = |what: &'static str, path: &Path, reason: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        reason,
    };
    let cert_pem = read("certificate", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            "certificate",
            cert,
            "no CERTIFICATE section".into(),
        ));
    }
    let key_pem = read("private key", key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY section (PKCS#8, PKCS#1 or SEC1)".to_owned()
            }
            other => other.to_string(),
        };
        pem_error("private key", key, reason)
    })?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// Accepts TLS connections on `listener` and serves `router` on each (HTTP/1.1 or HTTP/2)
/// until Ctrl-C; then waits for open connections to finish (at most 30 s). A failed or
/// slow handshake ends only its own connection.
///
/// # Errors
/// Never after it starts; the signature leaves room for setup failures.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
) -> anyhow::Result<()> {
    serve_connections(listener, Some(TlsAcceptor::from(config)), router, ctrl_c()).await
}

/// As [`serve_tls`], in plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge).
///
/// # Errors
/// Never after it starts.
pub async fn serve_plain(listener: TcpListener, router: Router) -> anyhow::Result<()> {
    serve_connections(listener, None, router, ctrl_c()).await
}

/// Ctrl-C (SIGINT), or never if it cannot be listened for.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// As [`serve_tls`] (with `tls`) or [`serve_plain`] (without), until `shutdown` completes
/// instead of Ctrl-C.
///
/// # Errors
/// Never after it starts.
pub async fn serve_until(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    serve_connections(listener, tls.map(TlsAcceptor::from), router, shutdown).await
}

/// How long a connection may take to send its first byte, and a request its headers
/// (slowloris): past it the connection is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent HTTP/2 streams per connection.
pub const H2_MAX_STREAMS: u32 = 100;
/// Largest HTTP/2 header list accepted (decoded), in bytes.
pub const H2_MAX_HEADER_LIST: u32 = 16 << 10;

async fn serve_connections(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // With a timer, HTTP/1 connections that do not send their headers in time are closed.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    // HTTP/2 limits, explicit (hyper's defaults are close to them): streams per
    // connection, the header list (a CONTINUATION flood ends there), and streams
    // reset before they were served (rapid reset, CVE-2023-44487) or refused for
    // errors, past which the connection gets GOAWAY.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(256);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // E.g. out of file descriptors: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // A relay writes each frame as it comes: no Nagle delay on the way back.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = Arc::clone(&builder);
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                // A connection that sends nothing at all is closed too (hyper's header
                // timer starts with the first byte; over TLS the handshake timeout does).
                let mut first = [0u8; 1];
                if !matches!(
                    tokio::time::timeout(HEADER_TIMEOUT, tcp.peek(&mut first)).await,
                    Ok(Ok(1..))
                ) {
                    return;
                }
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            };
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("connections still open after the shutdown grace period");
        }
    }
    Ok(())
}

/// Errors that concern one connection only (the listener is fine).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
