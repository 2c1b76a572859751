//! Every binary the design names is built and answers `--version` and `--help` as a
//! real process. (`scripts/test.sh` builds the binaries before the tests run.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

fn bin_dir() -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|p| p.parent()).unwrap().to_path_buf()
}

#[test]
fn every_binary_runs() {
    for name in [
        "veil",
        "veil-enclave",
        "veil-gateway",
        "veil-verify",
        "veil-image",
    ] {
        let path = bin_dir().join(name);
        assert!(
            path.exists(),
            "{} missing: build with `cargo build --workspace --bins` first",
            path.display()
        );
        let out = Command::new(&path).arg("--version").output().unwrap();
        assert!(out.status.success(), "{name} --version failed");
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")));
        let out = Command::new(&path).arg("--help").output().unwrap();
        assert!(out.status.success(), "{name} --help failed");
        assert!(String::from_utf8(out.stdout).unwrap().contains("Usage:"));
    }
}
