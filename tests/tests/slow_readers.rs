//! Slow readers: clients that ask for large answers and then stop reading. The gateway
//! relays bodies without buffering them, so its memory stays bounded (backpressure reaches
//! the enclave through TCP) while a normal client is still served; when the slow readers
//! read again every answer arrives whole.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use veil_attestation::bundle::Bundle;
use veil_attestation::channel::{Request, Target};
use veil_attestation::verify::{Policy, verify_bundle};
use veil_client::procs::{Proc, create_key, sim_enclave, sim_gateway};

const READERS: usize = 12;
const INPUTS: usize = 200;

fn models() -> String {
    std::env::var("VEIL_MODELS_DIR").unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .to_string_lossy()
            .into_owned()
    })
}

fn rss_kib(p: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Sends a sealed request over a raw socket and reads only the response head.
fn send_raw(gw: &Proc, key: &str, target: &Target, body: &serde_json::Value) -> TcpStream {
    let mut req = Request::new("POST", "/v1/embeddings", body.to_string().into_bytes());
    req.headers
        .push("content-type", "application/json")
        .unwrap();
    let (sealed, _pending) = target.seal_request(&req).unwrap();
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "POST /v1/ohttp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: message/ohttp-req\r\nVeil-Key-Id: {}\r\nVeil-Model: all-MiniLM-L6-v2\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        target.key_id(),
        sealed.len()
    )
    .unwrap();
    s.write_all(&sealed).unwrap();
    s
}

#[test]
fn slow_readers_leave_the_gateways_memory_bounded() {
    let dir = std::env::temp_dir().join(format!("veil-slow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("ledger.db");
    let db = db.to_str().unwrap();
    let enclave = sim_enclave(&models(), &["--queue-capacity", "64"]).unwrap();
    let key = create_key(db, "slow").unwrap();
    let gw = sim_gateway(enclave.url(), db, &[]).unwrap();

    // The enclave's bundle, verified, for sealing.
    let mut s = TcpStream::connect(enclave.addr()).unwrap();
    write!(
        s,
        "GET /attestation HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let bundle = Bundle::parse(&raw[at..]).unwrap();
    let id = verify_bundle(
        &bundle,
        &Policy::insecure_allow_sim(),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let target = Target::preferred(&id).unwrap();

    let inputs: Vec<String> = (0..INPUTS)
        .map(|i| format!("line {i} of a long document"))
        .collect();
    let big = json!({"model": "all-MiniLM-L6-v2", "input": inputs});
    let before = rss_kib(&gw);
    // Slow readers: the request is sent, then nothing is read for a while.
    let mut slow: Vec<TcpStream> = (0..READERS)
        .map(|_| send_raw(&gw, &key, &target, &big))
        .collect();
    // Let the enclave answer them all (the answers then wait in socket buffers and the
    // gateway's relay), sampling the gateway's memory meanwhile.
    let mut peak = before;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        peak = peak.max(rss_kib(&gw));
    }
    // A normal client is served meanwhile.
    let mut quick = send_raw(
        &gw,
        &key,
        &target,
        &json!({"model": "all-MiniLM-L6-v2", "input": "hello"}),
    );
    let mut head = [0u8; 12];
    quick.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));

    // Now read everything: each answer arrives whole.
    let mut total = 0usize;
    for s in &mut slow {
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw[..raw.len().min(400)]).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{text}");
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let len: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(raw.len() - at);
        assert_eq!(raw.len() - at, len, "a truncated answer");
        total += len;
    }
    let growth_kib = peak.saturating_sub(before);
    eprintln!(
        "{READERS} slow readers, {} KiB of sealed answers held back; gateway RSS {before} KiB before, peak {peak} KiB (+{growth_kib} KiB)",
        total / 1024
    );
    assert!(
        total > READERS * 500 * 1024,
        "answers smaller than meant: {total} bytes"
    );
    // Unbuffered relaying: the gateway holds far less than the answers it relays.
    assert!(
        (growth_kib as usize) * 1024 < total / 4,
        "the gateway grew {growth_kib} KiB while relaying {total} bytes to slow readers"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
