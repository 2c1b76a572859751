#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `veil-verify fetch snp|tdx` against a loopback server imitating AMD's KDS and Intel's
//! PCS, serving the real certificates and collateral of the shared samples: the exact
//! requests built from real reports and quotes, files that `snp-report` / `tdx-quote`
//! verify, the cache (a second run makes no request), back-off on 429 (Retry-After
//! honoured, bounded), 404 final, and tampered answers refused and never cached.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use veil_attestation::x509::Certificate;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata");

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn ok(body: Vec<u8>) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body,
        }
    }
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: b"{\"error\":\"test\"}".to_vec(),
        }
    }
}

#[derive(Default)]
struct Shared {
    /// Every request's path and query, in order.
    log: Mutex<Vec<String>>,
    /// Replies by path and query; 404 otherwise.
    routes: Mutex<HashMap<String, Reply>>,
    /// Replies served first, whatever the path.
    script: Mutex<VecDeque<Reply>>,
}

struct Server {
    url: String,
    shared: Arc<Shared>,
    _rt: tokio::runtime::Runtime,
}

async fn handle(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let key = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), ToString::to_string);
    shared.log.lock().unwrap().push(key.clone());
    let scripted = shared.script.lock().unwrap().pop_front();
    let reply = scripted.unwrap_or_else(|| {
        shared
            .routes
            .lock()
            .unwrap()
            .get(&key)
            .cloned()
            .unwrap_or_else(|| Reply::status(404))
    });
    let mut b = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        b = b.header(k, v);
    }
    b.body(axum::body::Body::from(reply.body)).unwrap()
}

impl Server {
    fn start() -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}"),
            shared,
            _rt: rt,
        }
    }
    fn route(&self, path: &str, reply: Reply) {
        self.shared
            .routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), reply);
    }
    fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }
    fn log(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }
}

fn tmp(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "veil-fetch-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn veil_verify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_veil-verify"))
        .args(args)
        .env_remove("VEIL_COLLATERAL_CACHE")
        .env_remove("VEIL_KDS_URL")
        .env_remove("VEIL_PCS_URL")
        .env_remove("VEIL_ROOT_CRL_URL")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read(path: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

fn der_of_pem(path: &str) -> Vec<u8> {
    Certificate::all_from_pem_or_der(&read(path))
        .unwrap()
        .remove(0)
        .der()
        .to_vec()
}

fn all_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(
                    e.path()
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------- SEV-SNP (KDS)

struct SnpSample {
    dir: &'static str,
    product: &'static str,
    /// The VCEK path and query, from the sample's known CHIP_ID and REPORTED_TCB
    /// (PROVENANCE.md).
    vcek_path: &'static str,
    at: &'static str,
}

const GENOA: SnpSample = SnpSample {
    dir: "microsoft-genoa-v3",
    product: "Genoa",
    vcek_path: "/vcek/v1/Genoa/b1e24a27bbc3a4d58090d8b89851dce3b8031544be249b9ac17132bb222b027622347ee4d0fe4f689efdfc47a68cefc686cbb448d01436506ee1e28010cab7c0?blSPL=10&teeSPL=00&snpSPL=23&ucodeSPL=84",
    at: "2026-03-01T00:00:00Z",
};

const TURIN: SnpSample = SnpSample {
    dir: "microsoft-turin-v5",
    product: "Turin",
    vcek_path: "/vcek/v1/Turin/59790fb1c39f35c1?fmcSPL=01&blSPL=01&teeSPL=01&snpSPL=04&ucodeSPL=81",
    at: "2026-03-01T00:00:00Z",
};

const MILAN: SnpSample = SnpSample {
    dir: "microsoft-milan-v3",
    product: "Milan",
    vcek_path: "/vcek/v1/Milan/4ffb5cb4fd594f3fee6528fc3fb10370bb38abe89dcd5ba2cf0ab6a11df2ca282add516bef45a890a8c9f9732bdca68f9f3f16c42e846030a800295dbeb19ba5?blSPL=04&teeSPL=00&snpSPL=24&ucodeSPL=219",
    at: "2026-03-01T00:00:00Z",
};

fn report(s: &SnpSample) -> String {
    format!("{TESTDATA}/snp/{}/report.bin", s.dir)
}

fn chain_path(s: &SnpSample) -> String {
    format!("/vcek/v1/{}/cert_chain", s.product)
}

/// Serve the sample's VCEK (DER) at its path and its ASK + the pinned ARK (PEM).
fn serve_snp(server: &Server, s: &SnpSample) {
    let lower = s.product.to_lowercase();
    let mut chain = read(format!("{TESTDATA}/snp/{}/ask.pem", s.dir));
    chain.extend(read(format!("{TESTDATA}/roots/amd/{lower}/ark.pem")));
    server.route(&chain_path(s), Reply::ok(chain));
    server.route(
        s.vcek_path,
        Reply::ok(der_of_pem(&format!("{TESTDATA}/snp/{}/vcek.pem", s.dir)))
            .header("content-type", "application/pkix-cert"),
    );
}

fn fetch_snp(server: &Server, s: &SnpSample, cache: &Path, out: &Path, extra: &[&str]) -> Output {
    fetch_snp_at(server, s, cache, out, s.at, extra)
}

fn fetch_snp_at(
    server: &Server,
    s: &SnpSample,
    cache: &Path,
    out: &Path,
    at: &str,
    extra: &[&str],
) -> Output {
    let report = report(s);
    let mut args = vec![
        "fetch",
        "snp",
        "--report",
        &report,
        "--kds-url",
        &server.url,
        "--cache",
        cache.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--at",
        at,
    ];
    args.extend_from_slice(extra);
    veil_verify(&args)
}

fn snp_report_verifies(s: &SnpSample, out: &Path, crl: bool) {
    let report = report(s);
    let o = out.to_str().unwrap();
    let (vcek, ask, ark, crl_path) = (
        format!("{o}/vcek.der"),
        format!("{o}/ask.der"),
        format!("{o}/ark.der"),
        format!("{o}/crl.der"),
    );
    let mut args = vec![
        "snp-report",
        &report,
        "--vcek",
        &vcek,
        "--ask",
        &ask,
        "--ark",
        &ark,
        "--at",
        s.at,
    ];
    if crl {
        args.extend_from_slice(&["--crl", &crl_path]);
    }
    let v = veil_verify(&args);
    assert_eq!(v.status.code(), Some(0), "snp-report: {}", text(&v));
}

#[test]
fn snp_genoa_fetches_exact_paths_verifies_and_then_hits_the_cache() {
    let server = Server::start();
    serve_snp(&server, &GENOA);
    let (cache, out) = (tmp("cache"), tmp("out"));
    let r = fetch_snp(&server, &GENOA, &cache, &out, &[]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    assert_eq!(
        server.log(),
        [chain_path(&GENOA), GENOA.vcek_path.to_owned()]
    );
    assert_eq!(all_files(&out), ["ark.der", "ask.der", "vcek.der"]);
    snp_report_verifies(&GENOA, &out, false);
    assert!(
        all_files(&cache)
            .iter()
            .any(|f| f.starts_with("snp/vcek/Genoa/b1e24a27"))
    );

    // Second run: everything from the cache, no request.
    let out2 = tmp("out2");
    let r = fetch_snp(&server, &GENOA, &cache, &out2, &[]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    assert_eq!(
        server.log().len(),
        2,
        "the cache was not used: {:?}",
        server.log()
    );
    assert!(String::from_utf8_lossy(&r.stdout).contains("cached   vcek"));
    assert_eq!(read(out.join("vcek.der")), read(out2.join("vcek.der")));

    // A time outside the cached VCEK's validity: the cache entry is not used; the
    // service's (same) VCEK is refused too, nothing is written.
    let out3 = tmp("out3");
    let r = fetch_snp_at(&server, &GENOA, &cache, &out3, "2026-01-01T00:00:00Z", &[]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert!(server.log().len() > 2);
    assert!(all_files(&out3).is_empty());
}

#[test]
fn snp_turin_uses_the_8_byte_hwid_and_fmc() {
    let server = Server::start();
    serve_snp(&server, &TURIN);
    let (cache, out) = (tmp("cache"), tmp("out"));
    let r = fetch_snp(&server, &TURIN, &cache, &out, &[]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    assert_eq!(
        server.log(),
        [chain_path(&TURIN), TURIN.vcek_path.to_owned()]
    );
    snp_report_verifies(&TURIN, &out, false);
}

#[test]
fn snp_milan_with_the_ark_crl() {
    let server = Server::start();
    let lower = MILAN.product.to_lowercase();
    let mut chain = read(format!("{TESTDATA}/snp/{}/ask.pem", MILAN.dir));
    chain.extend(read(format!("{TESTDATA}/roots/amd/{lower}/ark.pem")));
    server.route(&chain_path(&MILAN), Reply::ok(chain));
    server.route(
        "/vcek/v1/Milan/crl",
        Reply::ok(read(format!("{TESTDATA}/roots/amd/crl/milan_ark_crl.pem"))),
    );
    let (cache, out) = (tmp("cache"), tmp("out"));
    // First run: the VCEK path is unknown to the server (404, final, one request).
    let r = fetch_snp(&server, &MILAN, &cache, &out, &["--crl"]);
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    assert!(String::from_utf8_lossy(&r.stderr).contains("not found (HTTP 404"));
    let log = server.log();
    assert_eq!(log.len(), 2, "404 must not be retried: {log:?}");
    let vcek_path = log.last().unwrap().clone();
    assert_eq!(vcek_path, MILAN.vcek_path);
    server.route(
        &vcek_path,
        Reply::ok(der_of_pem(&format!(
            "{TESTDATA}/snp/{}/vcek.pem",
            MILAN.dir
        ))),
    );
    let r = fetch_snp(&server, &MILAN, &cache, &out, &["--crl"]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    // The chain came from the cache; the VCEK and the CRL from the server.
    assert_eq!(
        server.log()[2..],
        [vcek_path.clone(), "/vcek/v1/Milan/crl".to_owned()]
    );
    assert_eq!(
        all_files(&out),
        ["ark.der", "ask.der", "crl.der", "vcek.der"]
    );
    snp_report_verifies(&MILAN, &out, true);
}

#[test]
fn snp_429_with_retry_after_then_success() {
    let server = Server::start();
    serve_snp(&server, &GENOA);
    server.script([Reply::status(429).header("retry-after", "1")]);
    let (cache, out) = (tmp("cache"), tmp("out"));
    let start = Instant::now();
    let r = fetch_snp(&server, &GENOA, &cache, &out, &[]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
    assert_eq!(
        server.log(),
        [
            chain_path(&GENOA),
            chain_path(&GENOA),
            GENOA.vcek_path.to_owned()
        ]
    );
    snp_report_verifies(&GENOA, &out, false);
}

#[test]
fn snp_repeated_429_gives_up_within_the_bounds() {
    let server = Server::start();
    serve_snp(&server, &GENOA);
    server.script((0..10).map(|_| Reply::status(429).header("retry-after", "1")));
    let (cache, out) = (tmp("cache"), tmp("out"));
    let start = Instant::now();
    let r = fetch_snp(
        &server,
        &GENOA,
        &cache,
        &out,
        &["--max-attempts", "3", "--max-wait", "60"],
    );
    let took = start.elapsed();
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("gave up after 3 attempt(s)"), "{err}");
    assert!(err.contains("HTTP 429"), "{err}");
    assert_eq!(server.log().len(), 3);
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(20));
    assert!(all_files(&out).is_empty());

    // The wait bound: Retry-After 1 s with 1 s of budget: one retry, then stop.
    let r = fetch_snp(
        &server,
        &GENOA,
        &cache,
        &out,
        &["--max-attempts", "100", "--max-wait", "1"],
    );
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("exceeds what is left of --max-wait"), "{err}");
    assert_eq!(server.log().len(), 5);
}

#[test]
fn snp_tampered_or_wrong_vcek_is_refused_and_not_cached() {
    let server = Server::start();
    serve_snp(&server, &GENOA);
    let mut vcek = der_of_pem(&format!("{TESTDATA}/snp/{}/vcek.pem", GENOA.dir));
    let last = vcek.len() - 1;
    vcek[last] ^= 0x01; // the ASK's signature over it
    server.route(GENOA.vcek_path, Reply::ok(vcek));
    let (cache, out) = (tmp("cache"), tmp("out"));
    let r = fetch_snp(&server, &GENOA, &cache, &out, &[]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("VCEK from http://"), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(!all_files(&cache).iter().any(|f| f.contains("vcek")));
    assert!(all_files(&out).is_empty());

    // Another chip's valid VCEK (the Genoa VCEK of another sample) is refused too.
    server.route(
        GENOA.vcek_path,
        Reply::ok(std::fs::read(format!("{TESTDATA}/snp/trustee-genoa-v3-e2e/vcek.der")).unwrap()),
    );
    let r = fetch_snp(&server, &GENOA, &cache, &out, &[]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("hwID"),
        "{}",
        text(&r)
    );
    assert!(!all_files(&cache).iter().any(|f| f.contains("vcek")));

    // Garbage is an error, not a panic.
    server.route(
        GENOA.vcek_path,
        Reply::ok(b"\x30\x82\xff\xff garbage".to_vec()),
    );
    let r = fetch_snp(&server, &GENOA, &cache, &out, &[]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));

    // A tampered cert_chain (an ARK that is not the pinned one) is refused.
    let server = Server::start();
    serve_snp(&server, &GENOA);
    let mut chain = read(format!("{TESTDATA}/snp/{}/ask.pem", GENOA.dir));
    chain.extend(read(format!("{TESTDATA}/roots/amd/milan/ark.pem")));
    server.route(&chain_path(&GENOA), Reply::ok(chain));
    let cache = tmp("cache2");
    let r = fetch_snp(&server, &GENOA, &cache, &out, &[]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert!(all_files(&cache).is_empty());
}

// ---------------------------------------------------------------- TDX (PCS)

fn url_encode(text: &[u8]) -> String {
    text.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const TCB_PATH_V4: &str = "/tdx/certification/v4/tcb?fmspc=b0c06f000000";
const QE_PATH: &str = "/tdx/certification/v4/qe/identity";
const PCK_CRL_PATH: &str = "/sgx/certification/v4/pckcrl?ca=platform&encoding=der";
const ROOT_CRL_PATH: &str = "/sgx/certification/v4/rootcacrl";
const TDX_AT: &str = "2025-07-19T10:00:34Z";

fn response_json(dir: &str, stem: &str, key: &str) -> Vec<u8> {
    let body = String::from_utf8(read(format!("{dir}/{stem}.json"))).unwrap();
    let sig = String::from_utf8(read(format!("{dir}/{stem}.sig.hex"))).unwrap();
    format!("{{\"{key}\":{body},\"signature\":\"{}\"}}", sig.trim()).into_bytes()
}

/// Serve the `dcap-qvl-v4-uptodate` collateral as PCS answers.
fn serve_tdx(server: &Server) -> String {
    let dir = format!("{TESTDATA}/tdx/dcap-qvl-v4-uptodate/collateral");
    let chain = |name: &str| url_encode(&read(format!("{dir}/{name}")));
    server.route(
        TCB_PATH_V4,
        Reply::ok(response_json(&dir, "tcb_info", "tcbInfo"))
            .header("TCB-Info-Issuer-Chain", &chain("tcb_info_issuer_chain.pem")),
    );
    server.route(
        QE_PATH,
        Reply::ok(response_json(&dir, "qe_identity", "enclaveIdentity")).header(
            "SGX-Enclave-Identity-Issuer-Chain",
            &chain("qe_identity_issuer_chain.pem"),
        ),
    );
    server.route(
        PCK_CRL_PATH,
        Reply::ok(read(format!("{dir}/pck_crl.der"))).header(
            "SGX-PCK-CRL-Issuer-Chain",
            &chain("pck_crl_issuer_chain.pem"),
        ),
    );
    server.route(
        ROOT_CRL_PATH,
        Reply::ok(read(format!("{dir}/root_ca_crl.der"))),
    );
    dir
}

fn fetch_tdx(server: &Server, sample: &str, cache: &Path, out: &Path, at: &str) -> Output {
    let quote = format!("{TESTDATA}/tdx/{sample}/quote.bin");
    veil_verify(&[
        "fetch",
        "tdx",
        "--quote",
        &quote,
        "--pcs-url",
        &server.url,
        "--cache",
        cache.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--at",
        at,
    ])
}

fn tdx_quote(sample: &str, collateral: &Path, at: &str) -> Output {
    veil_verify(&[
        "tdx-quote",
        &format!("{TESTDATA}/tdx/{sample}/quote.bin"),
        "--collateral",
        collateral.to_str().unwrap(),
        "--at",
        at,
        "--json",
    ])
}

#[test]
fn tdx_fetches_exact_paths_verifies_and_then_hits_the_cache() {
    let server = Server::start();
    let dir = serve_tdx(&server);
    let (cache, out) = (tmp("cache"), tmp("out"));
    let r = fetch_tdx(&server, "dcap-qvl-v4-uptodate", &cache, &out, TDX_AT);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    assert_eq!(
        server.log(),
        [TCB_PATH_V4, QE_PATH, PCK_CRL_PATH, ROOT_CRL_PATH]
    );
    assert_eq!(
        all_files(&out),
        [
            "pck_crl.der",
            "pck_crl_issuer_chain.pem",
            "qe_identity.json",
            "qe_identity.sig.hex",
            "qe_identity_issuer_chain.pem",
            "root_ca_crl.der",
            "tcb_info.json",
            "tcb_info.sig.hex",
            "tcb_info_issuer_chain.pem",
        ]
    );
    // The exact signed bytes and the CRLs, as served.
    assert_eq!(
        read(out.join("tcb_info.json")),
        read(format!("{dir}/tcb_info.json"))
    );
    assert_eq!(
        read(out.join("pck_crl.der")),
        read(format!("{dir}/pck_crl.der"))
    );
    let v = tdx_quote("dcap-qvl-v4-uptodate", &out, TDX_AT);
    assert_eq!(v.status.code(), Some(0), "tdx-quote: {}", text(&v));
    assert!(String::from_utf8_lossy(&v.stdout).contains("\"tcb_status\": \"UpToDate\""));

    // Second run: from the cache, no request.
    let out2 = tmp("out2");
    let r = fetch_tdx(&server, "dcap-qvl-v4-uptodate", &cache, &out2, TDX_AT);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    assert_eq!(server.log().len(), 4, "the cache was not used");
    assert_eq!(all_files(&out), all_files(&out2));

    // After the collateral's nextUpdate the cached items are not used: they are fetched
    // again (and, the server's being as old, refused).
    let r = fetch_tdx(
        &server,
        "dcap-qvl-v4-uptodate",
        &cache,
        &tmp("out3"),
        "2025-08-01T00:00:00Z",
    );
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert_eq!(server.log().len(), 5);
    assert!(String::from_utf8_lossy(&r.stderr).contains("not current"));
}

#[test]
fn tdx_verbatim_pcs_responses_and_a_hex_root_crl() {
    // go-tdx-guest's sample PCS answers, verbatim; the root CRL as a PCCS's hex text.
    let server = Server::start();
    let dir = format!("{TESTDATA}/tdx/go-tdx-guest-v4-spr/collateral");
    let chain = |name: &str| url_encode(&read(format!("{dir}/{name}")));
    server.route(
        "/tdx/certification/v4/tcb?fmspc=50806f000000",
        Reply::ok(read(format!("{dir}/tcb_info_response.json")))
            .header("TCB-Info-Issuer-Chain", &chain("tcb_info_issuer_chain.pem")),
    );
    server.route(
        QE_PATH,
        Reply::ok(read(format!("{dir}/qe_identity_response.json"))).header(
            "SGX-Enclave-Identity-Issuer-Chain",
            &chain("qe_identity_issuer_chain.pem"),
        ),
    );
    server.route(
        PCK_CRL_PATH,
        Reply::ok(read(format!("{dir}/pck_crl.der"))).header(
            "SGX-PCK-CRL-Issuer-Chain",
            &chain("pck_crl_issuer_chain.pem"),
        ),
    );
    server.route(
        ROOT_CRL_PATH,
        Reply::ok(hex::encode(read(format!("{dir}/root_ca_crl.der"))).into_bytes()),
    );
    let (cache, out) = (tmp("cache"), tmp("out"));
    let at = "2023-07-01T01:00:00Z";
    let r = fetch_tdx(&server, "go-tdx-guest-v4-spr", &cache, &out, at);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r));
    assert_eq!(
        read(out.join("root_ca_crl.der")),
        read(format!("{dir}/root_ca_crl.der"))
    );
    // The collateral verifies; the quote's TCB has no matching level (PROVENANCE.md).
    let v = tdx_quote("go-tdx-guest-v4-spr", &out, at);
    assert_eq!(v.status.code(), Some(1), "tdx-quote: {}", text(&v));
    let doc: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let outcome = |name: &str| {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["outcome"].as_str().unwrap().to_owned())
    };
    for name in [
        "collateral",
        "crl.root-ca",
        "pck.crl",
        "tcb-info.signature",
        "tcb-info.validity",
        "qe-identity.signature",
        "qe-identity",
    ] {
        assert_eq!(
            outcome(name).as_deref(),
            Some("pass"),
            "{name}: {}",
            text(&v)
        );
    }
    assert_eq!(outcome("tcb.platform").as_deref(), Some("fail"));
}

#[test]
fn tdx_tampered_tcb_info_is_refused_and_not_cached() {
    let server = Server::start();
    let dir = serve_tdx(&server);
    let body = String::from_utf8(response_json(&dir, "tcb_info", "tcbInfo")).unwrap();
    let tampered = body.replacen(
        "\"tcbEvaluationDataNumber\":17",
        "\"tcbEvaluationDataNumber\":18",
        1,
    );
    assert_ne!(body, tampered);
    server.route(
        TCB_PATH_V4,
        Reply::ok(tampered.into_bytes()).header(
            "TCB-Info-Issuer-Chain",
            &url_encode(&read(format!("{dir}/tcb_info_issuer_chain.pem"))),
        ),
    );
    let (cache, out) = (tmp("cache"), tmp("out"));
    let r = fetch_tdx(&server, "dcap-qvl-v4-uptodate", &cache, &out, TDX_AT);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("TCB Info from http://"), "{err}");
    assert!(
        err.contains("does not verify") || err.contains("signature"),
        "{err}"
    );
    assert!(all_files(&cache).is_empty(), "{:?}", all_files(&cache));
    assert!(all_files(&out).is_empty());

    // No issuer chain header; JSON that is not a PCS answer: refused, no panic.
    server.route(
        TCB_PATH_V4,
        Reply::ok(response_json(&dir, "tcb_info", "tcbInfo")),
    );
    let r = fetch_tdx(&server, "dcap-qvl-v4-uptodate", &cache, &out, TDX_AT);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert!(String::from_utf8_lossy(&r.stderr).contains("no issuer chain"));
    server.route(
        TCB_PATH_V4,
        Reply::ok(b"[1,2".to_vec()).header("TCB-Info-Issuer-Chain", "x"),
    );
    let r = fetch_tdx(&server, "dcap-qvl-v4-uptodate", &cache, &out, TDX_AT);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));

    // A TCB Info for another FMSPC (validly signed) is refused.
    let other = format!("{TESTDATA}/tdx/dcap-qvl-v5-outdated/collateral");
    server.route(
        TCB_PATH_V4,
        Reply::ok(response_json(&other, "tcb_info", "tcbInfo")).header(
            "TCB-Info-Issuer-Chain",
            &url_encode(&read(format!("{other}/tcb_info_issuer_chain.pem"))),
        ),
    );
    let r = fetch_tdx(&server, "dcap-qvl-v4-uptodate", &cache, &out, TDX_AT);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("FMSPC"),
        "{}",
        text(&r)
    );
    assert!(all_files(&cache).is_empty());
}

#[test]
fn a_silent_server_times_out_within_the_bounds() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let (cache, out) = (tmp("cache"), tmp("out"));
    let report = report(&GENOA);
    let start = Instant::now();
    let r = veil_verify(&[
        "fetch",
        "snp",
        "--report",
        &report,
        "--kds-url",
        &url,
        "--cache",
        cache.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--at",
        GENOA.at,
        "--timeout",
        "1",
        "--max-attempts",
        "2",
    ]);
    let took = start.elapsed();
    assert_eq!(r.status.code(), Some(2), "{}", text(&r));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("no complete answer within 1s"), "{err}");
    assert!(err.contains("gave up after 2 attempt(s)"), "{err}");
    // Two 1 s attempts and one 1 s back-off.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "{took:?}"
    );
}
