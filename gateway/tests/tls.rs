//! The gateway over TLS, as real processes on loopback: a CA and a server certificate for
//! 127.0.0.1 and localhost made at test time (rcgen), `veil-enclave` (sim) behind
//! `veil-gateway serve --tls-cert --tls-key`, and the `veil` CLI trusting the CA with
//! `--ca-cert` (or `VEIL_CA_CERT`). Without the CA the client refuses the gateway (a
//! certificate error, no fallback to plain HTTP); plain HTTP to the TLS port fails; HTTP/1.1
//! and HTTP/2 are both offered by ALPN; the gateway refuses to start with half a TLS
//! configuration or unusable files, cuts off stalled handshakes, and stops on Ctrl-C.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{Proc, TempDir, bin, create_key, enclave, gateway, http};

/// A test PKI on disk: a CA, a server certificate it signed for 127.0.0.1 and localhost,
/// and an unrelated CA.
struct Pki {
    dir: TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// A key that does not belong to `cert`.
    other_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki(tag: &str) -> Pki {
    let dir = TempDir::new(tag);
    let issuer = ca("veil test CA");
    let other = ca("an unrelated CA");
    let leaf_key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "veil-gateway test");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", issuer.pem()),
        other_ca: write("other-ca.pem", other.pem()),
        cert: write("server.pem", leaf.pem()),
        key: write("server.key", leaf_key.serialize_pem()),
        other_key: write("other.key", KeyPair::generate().unwrap().serialize_pem()),
        dir,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `veil ARGS` with `envs`, without any stored configuration.
fn veil(args: &[&str], envs: &[(&str, &str)], home: &Path) -> Output {
    let mut cmd = Command::new(bin("veil"));
    cmd.args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("VEIL_CONFIG")
        .env_remove("VEIL_CA_CERT")
        .env_remove("VEIL_GATEWAY")
        .env_remove("VEIL_API_KEY");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A TLS connection to `addr` trusting only `ca`, offering `alpn`; returns the negotiated
/// protocol and the stream.
async fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    alpn: &[&[u8]],
) -> (
    Option<Vec<u8>>,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    (negotiated, stream)
}

/// `GET /healthz` over HTTP/2 (ALPN h2).
async fn healthz_h2(addr: SocketAddr, ca: &Path) -> u16 {
    let (alpn, stream) = tls_connect(addr, ca, &[b"h2"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("https://127.0.0.1:{}/healthz", addr.port()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

/// An HTTP/2 connection over TLS (ALPN h2) to `addr`, trusting only `ca`.
async fn h2(addr: SocketAddr, ca: &Path) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let (alpn, stream) = tls_connect(addr, ca, &[b"h2"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// Status, headers, body and trailers of `req` sent on `send`.
async fn h2_send(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    req: hyper::Request<Full<Bytes>>,
) -> (u16, hyper::HeaderMap, Vec<u8>, Option<hyper::HeaderMap>) {
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (status, headers, collected.to_bytes().to_vec(), trailers)
}

/// Sealed requests over HTTP/2: a whole embeddings request and a streamed chat, both
/// opened and their receipts verified (the streamed one's trailer passed on).
async fn sealed_over_h2(addr: SocketAddr, ca: &Path, key: &str) {
    let base = format!("https://127.0.0.1:{}", addr.port());
    let mut send = h2(addr, ca).await;
    let (status, _, body, _) = h2_send(
        &mut send,
        hyper::Request::get(format!("{base}/v1/attestation"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let sealer = common::Sealer::from_bundle(&serde_json::to_vec(&list["backends"][0]).unwrap());

    let mut sealed = sealer.embeddings("over HTTP/2");
    let (status, headers, body, _) = h2_send(
        &mut send,
        sealed.http_request(&base, "/v1/ohttp", Some(key)),
    )
    .await;
    let opened = common::open(&mut sealed, status, headers, body);
    assert_eq!(opened.outer_status, 200, "{opened:?}");
    assert_eq!(opened.inner.as_ref().map(|i| i.0), Some(200), "{opened:?}");
    sealer
        .verify_receipt(opened.inner_receipt.as_deref().unwrap())
        .unwrap();

    let mut stream = sealer.chat_stream("Count to three.", 8);
    let req = hyper::Request::post(format!("{base}/v1/ohttp"))
        .header("content-type", "message/ohttp-chunked-req")
        .header("veil-key-id", &stream.key_id)
        .header("veil-model", common::CHAT_MODEL)
        .header("veil-max-tokens", stream.max_tokens.to_string())
        .header("veil-stream", "true")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(stream.bytes.clone())))
        .unwrap();
    let (status, _, body, trailers) = h2_send(&mut send, req).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let opened = stream.pending.take().unwrap().open_all(body).unwrap();
    assert_eq!(opened.status, 200);
    assert!(
        String::from_utf8_lossy(&opened.body).contains("data: [DONE]"),
        "the stream did not end"
    );
    let inner = opened.trailers.get("veil-receipt").unwrap();
    sealer.verify_receipt(inner).unwrap();
    let outer = trailers
        .as_ref()
        .and_then(|t| t.get("veil-receipt"))
        .and_then(|v| v.to_str().ok());
    assert_eq!(outer, Some(inner), "the receipt trailer was not passed on");
}

/// `GET /healthz` over HTTP/1.1 (ALPN http/1.1).
async fn healthz_h1(addr: SocketAddr, ca: &Path) -> u16 {
    let (alpn, stream) = tls_connect(addr, ca, &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/healthz")
        .header("host", format!("127.0.0.1:{}", addr.port()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

/// A plain-TCP listener that records what clients send and answers in plain HTTP.
async fn plain_recorder() -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await
                {
                    record.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn sealed_chat_over_https_with_a_private_ca() {
    let pki = pki("https");
    let home = pki.dir.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let enclave = enclave(&[]);
    let db = pki.dir.path("ledger.db");
    let key = create_key(s(&db), "tls-user", &[]);
    let gw = gateway(&[
        "--backend",
        &enclave.url(),
        "--database",
        s(&db),
        "--tls-cert",
        s(&pki.cert),
        "--tls-key",
        s(&pki.key),
    ]);
    assert_eq!(gw.scheme, "https", "{}", gw.log_text());
    let url = gw.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // A sealed chat through https, the CA given with --ca-cert.
    let out = veil(
        &[
            "chat",
            "--gateway",
            &url,
            "--api-key",
            &key,
            "--insecure-allow-sim",
            "--ca-cert",
            s(&pki.ca),
            "--max-tokens",
            "8",
            "Say hello.",
        ],
        &[],
        &home,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "veil chat failed: {stderr}");
    assert!(!stdout.trim().is_empty(), "no answer: {stderr}");

    // Streamed, by host name (the certificate names localhost), the CA from VEIL_CA_CERT.
    let by_name = format!("https://localhost:{}", gw.addr.port());
    let out = veil(
        &[
            "chat",
            "--gateway",
            &by_name,
            "--api-key",
            &key,
            "--insecure-allow-sim",
            "--stream",
            "--max-tokens",
            "8",
            "Say hello.",
        ],
        &[("VEIL_CA_CERT", s(&pki.ca))],
        &home,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "veil chat --stream failed: {stderr}");
    assert!(!stdout.trim().is_empty(), "no answer: {stderr}");

    // Sealed requests over HTTP/2 as well (the CLI speaks HTTP/1.1).
    sealed_over_h2(gw.addr, &pki.ca, &key).await;

    // The receipts were billed as usual.
    common::eventually(Duration::from_secs(10), "every request billed", || async {
        common::ledger(s(&db)).await.len() == 4
    })
    .await;

    // Without the CA (the system's roots are then an unrelated CA, to be deterministic),
    // or with the wrong CA, the client refuses the certificate.
    for (args, envs) in [
        (vec![], vec![("SSL_CERT_FILE", s(&pki.other_ca))]),
        (vec!["--ca-cert", s(&pki.other_ca)], vec![]),
    ] {
        let mut all = vec![
            "status",
            "--gateway",
            url.as_str(),
            "--api-key",
            key.as_str(),
            "--insecure-allow-sim",
        ];
        all.extend(args.iter().copied());
        let out = veil(&all, &envs, &home);
        let (stdout, stderr) = text(&out);
        assert!(
            !out.status.success(),
            "veil {all:?} succeeded without trusting the gateway's CA: {stdout}"
        );
        assert!(
            stderr.contains("invalid peer certificate") && stderr.contains("UnknownIssuer"),
            "veil {all:?}: not a certificate error: {stderr}"
        );
    }

    // No fallback to plain HTTP: against a plain-HTTP server on an https:// URL, the
    // client sends a TLS ClientHello and nothing else, and fails.
    let (plain, seen) = plain_recorder().await;
    let plain_url = format!("https://{plain}");
    let out = tokio::task::spawn_blocking({
        let home = home.clone();
        let key = key.clone();
        let ca = pki.ca.clone();
        move || {
            veil(
                &[
                    "status",
                    "--gateway",
                    &plain_url,
                    "--api-key",
                    &key,
                    "--insecure-allow-sim",
                    "--ca-cert",
                    s(&ca),
                ],
                &[],
                &home,
            )
        }
    })
    .await
    .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "veil accepted a plain-HTTP server");
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the client sent nothing: {stderr}");
    assert_eq!(seen[0], 0x16, "not a TLS handshake record: {seen:?}");
    for verb in ["GET ", "POST ", "HTTP/1.1"] {
        assert!(
            !seen.windows(verb.len()).any(|w| w == verb.as_bytes()),
            "plaintext HTTP sent to an https:// gateway: {:?}",
            String::from_utf8_lossy(&seen)
        );
    }

    // Plain HTTP to the TLS port fails, for a raw HTTP client and for the CLI.
    let plain_http = format!("http://{}/healthz", gw.addr);
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        http().request(
            hyper::Request::get(&plain_http)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .expect("a plain-HTTP request to the TLS port hung");
    assert!(
        r.is_err(),
        "plain HTTP to the TLS port answered: {:?}",
        r.map(|x| x.status())
    );
    let out = veil(
        &[
            "status",
            "--gateway",
            &format!("http://{}", gw.addr),
            "--api-key",
            &key,
            "--insecure-allow-sim",
        ],
        &[],
        &home,
    );
    assert!(
        !out.status.success(),
        "plain HTTP to the TLS port succeeded"
    );

    // A client that connects and never finishes its handshake holds up no one.
    let _stalled = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    // HTTP/1.1 and HTTP/2 by ALPN, after the failed handshakes above.
    assert_eq!(healthz_h1(gw.addr, &pki.ca).await, 200);
    assert_eq!(healthz_h2(gw.addr, &pki.ca).await, 200);
    // And the sealed path still works.
    let out = veil(
        &[
            "status",
            "--gateway",
            &url,
            "--api-key",
            &key,
            "--insecure-allow-sim",
            "--ca-cert",
            s(&pki.ca),
        ],
        &[],
        &home,
    );
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "veil status failed: {stderr}");
    drop(gw);
}

/// `veil-gateway serve` with `args` (and `envs`), which must fail; returns its stderr.
fn serve_fails(args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(bin("veil-gateway"));
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--backend", "http://127.0.0.1:9"])
        .args(args)
        .env_remove("VEIL_TLS_CERT")
        .env_remove("VEIL_TLS_KEY");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("veil-gateway serve {args:?} did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "serve {args:?} exited 0");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tls_configuration_errors_handshake_timeout_and_ctrl_c() {
    let pki = pki("tls-config");
    let db = pki.dir.path("ledger.db");
    let db = s(&db);
    let garbage = pki.dir.path("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let missing = pki.dir.path("missing.pem");

    let e = serve_fails(&["--database", db, "--tls-cert", s(&pki.cert)], &[]);
    assert!(
        e.contains("go together") && e.contains("only the certificate"),
        "{e}"
    );
    let e = serve_fails(&["--database", db], &[("VEIL_TLS_KEY", s(&pki.key))]);
    assert!(
        e.contains("go together") && e.contains("only the key"),
        "{e}"
    );
    let e = serve_fails(
        &[
            "--database",
            db,
            "--tls-cert",
            s(&missing),
            "--tls-key",
            s(&pki.key),
        ],
        &[],
    );
    assert!(
        e.contains("reading the TLS certificate") && e.contains("missing.pem"),
        "{e}"
    );
    let e = serve_fails(
        &[
            "--database",
            db,
            "--tls-cert",
            s(&pki.cert),
            "--tls-key",
            s(&missing),
        ],
        &[],
    );
    assert!(e.contains("reading the TLS private key"), "{e}");
    let e = serve_fails(
        &[
            "--database",
            db,
            "--tls-cert",
            s(&garbage),
            "--tls-key",
            s(&pki.key),
        ],
        &[],
    );
    assert!(e.contains("no CERTIFICATE section"), "{e}");
    // A certificate where the key should be.
    let e = serve_fails(
        &[
            "--database",
            db,
            "--tls-cert",
            s(&pki.cert),
            "--tls-key",
            s(&pki.cert),
        ],
        &[],
    );
    assert!(e.contains("no PRIVATE KEY section"), "{e}");
    // A key that is not the certificate's.
    let e = serve_fails(
        &[
            "--database",
            db,
            "--tls-cert",
            s(&pki.cert),
            "--tls-key",
            s(&pki.other_key),
        ],
        &[],
    );
    assert!(e.contains("not usable together"), "{e}");

    // Both from the config file: it serves HTTPS.
    let config = pki.dir.path("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            s(&pki.cert),
            s(&pki.key)
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin("veil-gateway"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config", s(&config)])
        .args(["--backend", "http://127.0.0.1:9", "--database", db])
        .env_remove("VEIL_TLS_CERT")
        .env_remove("VEIL_TLS_KEY");
    let mut gw = Proc::spawn(cmd, "veil-gateway");
    assert_eq!(gw.scheme, "https", "{}", gw.log_text());

    // A client that never sends its handshake is cut off after the handshake timeout
    // (10 s), and meanwhile others are served.
    let started = std::time::Instant::now();
    let mut stalled = std::net::TcpStream::connect(gw.addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (alpn, _) = rt.block_on(tls_connect(gw.addr, &pki.ca, &[b"h2"]));
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(&mut stalled, &mut byte);
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut),
        "the stalled connection was not closed: {read:?} after {waited:?}"
    );
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(25),
        "closed after {waited:?}"
    );

    // Ctrl-C (SIGINT) stops it cleanly.
    let status = Command::new("kill")
        .args(["-INT", &gw.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = gw.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGINT: {}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}: {}", gw.log_text());
}
