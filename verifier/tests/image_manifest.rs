//! The image manifest that `veil-image` writes: its expected SEV-SNP measurements are
//! what `veil-verify measure snp` computes from the same artifacts, and `veil-verify
//! policy from-manifest` turns a version-2 manifest into a policy pinning them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use veil_images::build::{self, SnpConfig};
use veil_images::manifest::{
    Artifact, BuildRecord, FilesystemRecord, Manifest, VERSION, VerityRecord,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/measure/sev-snp-measure/fixtures")
        .join(name)
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veil-verify"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn digest(data: &[u8]) -> Artifact {
    Artifact {
        sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, data)),
        size: data.len() as u64,
    }
}

#[test]
fn manifest_snp_measurements_equal_veil_verify_measure_snp() {
    let dir = std::env::temp_dir().join(format!("veil-image-manifest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Stand-ins for the artifacts: the measurement hashes the kernel and initrd bytes
    // and the command line, whatever they are.
    let kernel = b"vmlinuz stand-in".repeat(1000);
    let initrd = b"initrd stand-in".repeat(700);
    let cmdline = format!(
        "console=ttyS0 panic=-1 veil.root=/dev/vda veil.verity.root_hash={} veil.tee=auto",
        "5a".repeat(32)
    );
    std::fs::write(dir.join("vmlinuz"), &kernel).unwrap();
    std::fs::write(dir.join("initrd.img"), &initrd).unwrap();
    let mut manifest = Manifest {
        version: VERSION,
        image: "veil-test".to_owned(),
        model_manifest_digest: Some("ab".repeat(32)),
        snp: Vec::new(),
        tdx: Vec::new(),
        build: Some(BuildRecord {
            source_date_epoch: 1_700_000_000,
            cmdline: cmdline.clone(),
            artifacts: BTreeMap::from([
                ("vmlinuz".to_owned(), digest(&kernel)),
                ("initrd.img".to_owned(), digest(&initrd)),
            ]),
            verity: VerityRecord {
                root_hash: "5a".repeat(32),
                salt: "00".repeat(32),
                uuid: "00000000-0000-8000-8000-000000000000".to_owned(),
                data_blocks: 1,
                hash_start_block: 2,
                data_block_size: 4096,
                hash_block_size: 4096,
                hash_algorithm: "sha256".to_owned(),
            },
            filesystem: FilesystemRecord {
                kind: "erofs".to_owned(),
                uuid: "00000000-0000-8000-8000-000000000001".to_owned(),
            },
            packages: Vec::new(),
            models: BTreeMap::new(),
            enclave: digest(b"enclave"),
            host_tools: BTreeMap::new(),
        }),
    };
    let ovmf = fixture("ovmf_AmdSev_suffix.bin");
    let configs: Vec<SnpConfig> = [(1, "EPYC-v4"), (4, "EPYC-Milan")]
        .iter()
        .map(|(vcpus, t)| SnpConfig {
            ovmf: ovmf.clone(),
            vcpus: *vcpus,
            vcpu_type: (*t).to_owned(),
        })
        .collect();
    build::measure_into(&mut manifest, &dir, &configs, &[]).unwrap();
    assert_eq!(manifest.snp.len(), 2);
    for entry in &manifest.snp {
        let vcpus = entry.vcpus.to_string();
        let (code, stdout, stderr) = run(&[
            "measure",
            "snp",
            "--ovmf",
            ovmf.to_str().unwrap(),
            "--kernel",
            dir.join("vmlinuz").to_str().unwrap(),
            "--initrd",
            dir.join("initrd.img").to_str().unwrap(),
            "--append",
            &cmdline,
            "--vcpus",
            &vcpus,
            "--vcpu-type",
            &entry.vcpu_type,
        ]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout.lines().last().unwrap(), entry.launch_measurement);
    }

    let path = dir.join("manifest.json");
    std::fs::write(&path, manifest.to_json().unwrap()).unwrap();
    let (code, stdout, stderr) = run(&["policy", "from-manifest", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let policy = veil_attestation::verify::Policy::from_toml(&stdout, "generated").unwrap();
    let pinned: Vec<String> = policy
        .launch_measurements
        .iter()
        .map(ToString::to_string)
        .collect();
    let want: Vec<String> = manifest
        .snp
        .iter()
        .map(|e| e.launch_measurement.clone())
        .collect();
    assert_eq!(pinned, want);
    assert!(
        stdout.contains(&"5a".repeat(32)),
        "the policy names the verity root hash"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
