//! `veil demo` as a new user runs it: it must finish, explain each step, and leave no
//! process behind, also when interrupted with Ctrl-C (SIGINT).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn models_dir() -> PathBuf {
    std::env::var_os("VEIL_MODELS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"),
        PathBuf::from,
    )
}

/// The `http://ADDR` addresses the demo printed for the enclave and the gateway.
fn addresses(out: &str) -> Vec<SocketAddr> {
    out.lines()
        .filter_map(|l| {
            let rest = l
                .trim()
                .strip_prefix("enclave at http://")
                .or_else(|| l.trim().strip_prefix("gateway at http://"))?;
            rest.split(|c: char| c == ';' || c.is_whitespace())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn assert_stopped(addrs: &[SocketAddr]) {
    for a in addrs {
        // Give the kernel a moment to close the listener of a process just killed.
        let mut closed = false;
        for _ in 0..50 {
            if TcpStream::connect_timeout(a, Duration::from_millis(100)).is_err() {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(closed, "something still listens on {a} after the demo");
    }
}

#[test]
fn demo_runs_explains_and_cleans_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .arg("demo")
        .env("VEIL_MODELS_DIR", models_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let all = format!("{stdout}\n{stderr}");
    for want in [
        "SIMULATED TEE",
        "[1] models",
        "[4] verify the attestation",
        "WARNING: accepting the SIMULATED TEE",
        "backend 0: VERIFIED",
        "the default policy refuses it",
        "[5] encrypted, streamed chat",
        "receipt (signed by the enclave, verified here)",
        "[6] encrypted embeddings",
        "384 dimensions",
        "[7] what the gateway saw",
        "ledger:",
        "SmolLM2-135M-Instruct",
        "every process the demo started has been stopped",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    let addrs = addresses(&stdout);
    assert_eq!(addrs.len(), 2, "{stdout}");
    assert_stopped(&addrs);
}

#[test]
fn ctrl_c_stops_everything() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
        .arg("demo")
        .env("VEIL_MODELS_DIR", models_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Interrupt once both processes run.
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("gateway at http://") {
            break;
        }
    }
    let addrs = addresses(&seen);
    assert_eq!(addrs.len(), 2, "{seen}");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "an interrupted demo must not report success"
    );
    assert_stopped(&addrs);
}
