//! The image recipe's pure parts: the deterministic initramfs, the verity parameters,
//! the module closure, the command line and `/init`, the manifest, the model digest, and
//! the launch measurements from artifacts. None needs root or the build tools.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use veil_images::build::cpio::{self, Entry};
use veil_images::build::kmod::{self, ModulesDep};
use veil_images::build::{self, BuildError, fsutil, recipe, verity};
use veil_images::launch::{self, Boot};
use veil_images::manifest::{
    Artifact, BuildRecord, FilesystemRecord, Manifest, SnpLaunch, VERSION, VerityRecord,
};
use veil_images::measure::MeasureError;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/measure")
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("veil-images-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One entry read back: (name, mode, uid, gid, mtime, ino, data).
type Parsed = (String, u32, u32, u32, u32, u32, Vec<u8>);

/// Reads a newc archive back.
fn parse_newc(mut b: &[u8]) -> Vec<Parsed> {
    let total = b.len();
    let mut out = Vec::new();
    loop {
        let off = total - b.len();
        assert!(off.is_multiple_of(4));
        assert_eq!(&b[..6], b"070701");
        let field = |i: usize| {
            u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap()
        };
        let (ino, mode, uid, gid, mtime, size, namesize) = (
            field(0),
            field(1),
            field(2),
            field(3),
            field(5),
            field(6),
            field(11),
        );
        let name_end = 110 + namesize as usize;
        let name = std::str::from_utf8(&b[110..name_end - 1])
            .unwrap()
            .to_owned();
        let data_start = (off + name_end).div_ceil(4) * 4 - off;
        let data = b[data_start..data_start + size as usize].to_vec();
        let next = (off + data_start + size as usize).div_ceil(4) * 4 - off;
        if name == "TRAILER!!!" {
            assert!(total.is_multiple_of(512));
            return out;
        }
        out.push((name, mode, uid, gid, mtime, ino, data));
        b = &b[next..];
    }
}

fn file(data: &[u8], executable: bool) -> Entry {
    Entry::File {
        data: data.to_vec(),
        executable,
    }
}

#[test]
fn cpio_is_sorted_fixed_and_order_independent() {
    let entries = vec![
        ("init".to_owned(), file(b"#!/bin/busybox sh\n", true)),
        ("bin".to_owned(), Entry::Dir),
        ("bin/sh".to_owned(), Entry::Symlink("busybox".to_owned())),
        ("bin/busybox".to_owned(), file(b"\x7fELF....", true)),
        ("etc/a".to_owned(), file(b"abc", false)),
        ("etc".to_owned(), Entry::Dir),
    ];
    let a = cpio::write(&entries, 1_700_000_000).unwrap();
    let mut reversed = entries.clone();
    reversed.reverse();
    let b = cpio::write(&reversed, 1_700_000_000).unwrap();
    assert_eq!(a, b, "entry order must not matter");
    let parsed = parse_newc(&a);
    let names: Vec<&str> = parsed.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        ["bin", "bin/busybox", "bin/sh", "etc", "etc/a", "init"]
    );
    for (i, (name, mode, uid, gid, mtime, ino, data)) in parsed.iter().enumerate() {
        assert_eq!((*uid, *gid, *mtime), (0, 0, 1_700_000_000), "{name}");
        assert_eq!(*ino as usize, i + 1);
        match name.as_str() {
            "bin" | "etc" => assert_eq!(*mode, 0o040_755),
            "bin/sh" => {
                assert_eq!(*mode, 0o120_777);
                assert_eq!(data, b"busybox");
            }
            "etc/a" => {
                assert_eq!(*mode, 0o100_644);
                assert_eq!(data, b"abc");
            }
            _ => assert_eq!(*mode, 0o100_755),
        }
    }
    // Another timestamp, other bytes.
    assert_ne!(a, cpio::write(&entries, 1).unwrap());
}

#[test]
fn cpio_refuses_unclean_paths_and_far_future_times() {
    for bad in ["", "/abs", "a/../b", "./a", "a//b", "a/"] {
        let r = cpio::write(&[(bad.to_owned(), Entry::Dir)], 0);
        assert!(matches!(r, Err(BuildError::Invalid(_))), "{bad:?}");
    }
    assert!(cpio::write(&[], u64::from(u32::MAX) + 1).is_err());
}

#[test]
fn cpio_from_a_directory_keeps_links_and_exec_bits() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cpio");
    std::fs::create_dir_all(dir.0.join("b/c")).unwrap();
    std::fs::write(dir.0.join("b/c/x"), b"x").unwrap();
    std::fs::write(dir.0.join("a"), b"a").unwrap();
    std::fs::set_permissions(dir.0.join("a"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("a", dir.0.join("l")).unwrap();
    let entries = cpio::entries_from_dir(&dir.0).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["a", "b", "b/c", "b/c/x", "l"]);
    assert_eq!(entries[0].1, file(b"a", true));
    assert_eq!(entries[4].1, Entry::Symlink("a".to_owned()));
    fsutil::normalize_modes(&dir.0).unwrap();
    let mode = |p: &str| {
        std::fs::metadata(dir.0.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!((mode("a"), mode("b"), mode("b/c/x")), (0o755, 0o755, 0o644));
}

#[test]
fn verity_parameters_are_derived_from_the_content() {
    let d1 = verity::derive(&[1; 32], 10 * 4096 + 1).unwrap();
    assert_eq!(d1, verity::derive(&[1; 32], 10 * 4096 + 1).unwrap());
    assert_eq!(d1.data_blocks, 11);
    assert_eq!(d1.hash_offset, 11 * 4096);
    assert_eq!(
        d1.hash_start_block, 12,
        "the verity superblock takes one block"
    );
    assert_eq!(d1.salt.len(), 64);
    let d2 = verity::derive(&[2; 32], 10 * 4096 + 1).unwrap();
    assert_ne!(d1.salt, d2.salt);
    assert_ne!(d1.verity_uuid, d2.verity_uuid);
    // RFC 9562 version 8, variant 10.
    let u = &d1.verity_uuid;
    assert_eq!(u.len(), 36);
    assert_eq!(&u[14..15], "8");
    assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    assert_ne!(verity::fs_uuid(&[1; 32]), d1.verity_uuid);
    assert!(verity::derive(&[1; 32], 0).is_err());

    let root = "ab".repeat(32);
    let table = verity::dm_table("/dev/vda", &d1, &root);
    assert_eq!(
        table,
        format!(
            "0 88 verity 1 /dev/vda /dev/vda 4096 4096 11 12 sha256 {root} {} 1 panic_on_corruption",
            d1.salt
        )
    );
}

#[test]
fn veritysetup_output_is_parsed() {
    let out = "VERITY header information for rootfs.img\nUUID:            \tx\nRoot hash:      \t65F07D072CC4460978F0DF9D72E63146BBAD1AAB64A04A1ACE1A02344864AC47\n";
    assert_eq!(
        verity::parse_root_hash(out).unwrap(),
        "65f07d072cc4460978f0df9d72e63146bbad1aab64a04a1ace1a02344864ac47"
    );
    assert!(verity::parse_root_hash("Root hash: abcd").is_err());
    assert!(verity::parse_root_hash("").is_err());
}

const DEP: &str = "\
kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko kernel/lib/reed_solomon/reed_solomon.ko
kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-mod.ko:
kernel/lib/reed_solomon/reed_solomon.ko:
kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
kernel/drivers/virt/coco/sev-guest/sev-guest.ko.xz:
";

#[test]
fn module_closure_loads_dependencies_first() {
    let dep = ModulesDep::parse(DEP).unwrap();
    let order = dep
        .load_order(&["dm_verity", "erofs"], &["sev-guest", "tdx-guest"])
        .unwrap();
    assert_eq!(
        order,
        [
            "kernel/lib/reed_solomon/reed_solomon.ko",
            "kernel/drivers/md/dm-mod.ko",
            "kernel/drivers/md/dm-bufio.ko",
            "kernel/drivers/md/dm-verity.ko",
            "kernel/lib/libcrc32c.ko",
            "kernel/fs/erofs/erofs.ko",
            "kernel/drivers/virt/coco/sev-guest/sev-guest.ko.xz",
        ]
    );
    let pos = |m: &str| order.iter().position(|o| o.ends_with(m)).unwrap();
    assert!(pos("dm-mod.ko") < pos("dm-bufio.ko"));
    let err = dep.load_order(&["virtio_blk"], &[]).unwrap_err();
    assert!(err.to_string().contains("virtio_blk"), "{err}");
    assert!(ModulesDep::parse("no colon here").is_err());
    let cyclic = ModulesDep::parse("a.ko: b.ko\nb.ko: a.ko\n").unwrap();
    assert!(cyclic.load_order(&["a"], &[]).is_err());
    assert_eq!(kmod::module_name("x/dm-verity.ko.xz"), "dm_verity");
    assert!(kmod::is_builtin(
        "kernel/drivers/virtio/virtio.ko\n",
        "virtio"
    ));
    assert!(!kmod::is_builtin(
        "kernel/drivers/virtio/virtio.ko\n",
        "virtio_blk"
    ));
}

#[test]
fn command_line_pins_the_verity_root_and_init_reads_it() {
    let d = verity::derive(&[3; 32], 4096 * 5).unwrap();
    let root = "cd".repeat(32);
    let c = recipe::cmdline(&d, &root, &recipe::Runtime::default());
    assert!(c.contains(&format!("veil.verity.root_hash={root}")));
    assert!(c.contains(&format!("veil.verity.salt={}", d.salt)));
    assert!(c.contains("veil.verity.data_blocks=5 veil.verity.hash_start=6"));
    assert!(c.contains("veil.tee=auto veil.gpu=required"));
    assert!(c.is_ascii() && !c.contains('\n'));

    let init = recipe::init_script(&["kernel/a.ko".to_owned()], &["kernel/b.ko".to_owned()]);
    assert!(init.starts_with("#!/bin/busybox sh\n"));
    assert!(init.contains("$B insmod /lib/modules/kernel/a.ko || fail"));
    assert!(init.contains("$B insmod /lib/modules/kernel/b.ko 2>/dev/null\n"));
    assert!(init.contains("case \"$TEE\" in auto|snp|tdx|sim) ;;"));
    assert!(init.contains("case \"$GPU\" in required|optional|off) ;;"));
    assert!(init.contains("verity 1 $ROOT $ROOT 4096 4096 $DATA $HSTART sha256 $RHASH $SALT"));
    assert!(init.contains(
        "exec $B switch_root /newroot /usr/bin/veil-enclave serve --listen 0.0.0.0:8443"
    ));

    assert!(recipe::is_shared_library("lib/x86_64-linux-gnu/libc.so.6"));
    assert!(recipe::is_shared_library("lib64/ld-linux-x86-64.so.2"));
    assert!(recipe::is_shared_library(
        "usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2"
    ));
    assert!(!recipe::is_shared_library(
        "usr/lib/x86_64-linux-gnu/gconv/UTF-16.so.x"
    ));
    assert!(!recipe::is_shared_library("usr/bin/ldd"));
    assert!(!recipe::is_shared_library("usr/share/doc/libc6/copyright"));
}

#[test]
fn apt_output_is_parsed() {
    let depends = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
    assert_eq!(
        build::parse_kernel_dep(depends).unwrap(),
        "linux-image-6.1.0-56-amd64"
    );
    assert!(build::parse_kernel_dep("linux-image-amd64\n").is_err());
    let show = "Package: dmsetup\nVersion: 2:1.02.185-2\nArchitecture: amd64\n";
    assert_eq!(
        build::parse_candidate_version("dmsetup", show).unwrap(),
        "2:1.02.185-2"
    );
    assert!(build::parse_candidate_version("x", "Package: x\n").is_err());
}

#[test]
fn model_digest_is_the_attested_one() {
    let mut files = BTreeMap::new();
    let mut attested = veil_attestation::claims::ModelManifest::default();
    for (i, f) in recipe::MODEL_FILES.iter().enumerate() {
        let digest = format!("{:02x}", i).repeat(32);
        attested
            .files
            .insert((*f).to_owned(), digest.parse().unwrap());
        files.insert((*f).to_owned(), digest);
    }
    assert_eq!(
        build::model_manifest_digest(&files).unwrap(),
        attested.digest().to_string()
    );
    files.insert("bad".to_owned(), "zz".to_owned());
    assert!(build::model_manifest_digest(&files).is_err());
}

fn sample_manifest(cmdline: &str, kernel: &[u8], initrd: &[u8]) -> Manifest {
    let art = |d: &[u8]| Artifact {
        sha256: fsutil::hex(&veil_images::measure::sha256(d)),
        size: d.len() as u64,
    };
    Manifest {
        version: VERSION,
        image: "veil-test".to_owned(),
        model_manifest_digest: Some("00".repeat(32)),
        snp: Vec::new(),
        tdx: Vec::new(),
        build: Some(BuildRecord {
            source_date_epoch: 1_700_000_000,
            cmdline: cmdline.to_owned(),
            artifacts: [
                ("vmlinuz".to_owned(), art(kernel)),
                ("initrd.img".to_owned(), art(initrd)),
            ]
            .into(),
            verity: VerityRecord {
                root_hash: "11".repeat(32),
                salt: "22".repeat(32),
                uuid: "u".to_owned(),
                data_blocks: 1,
                hash_start_block: 2,
                data_block_size: 4096,
                hash_block_size: 4096,
                hash_algorithm: "sha256".to_owned(),
            },
            filesystem: FilesystemRecord {
                kind: "erofs".to_owned(),
                uuid: "v".to_owned(),
            },
            packages: Vec::new(),
            models: BTreeMap::new(),
            enclave: art(b"enclave"),
            host_tools: BTreeMap::new(),
        }),
    }
}

#[test]
fn manifest_versions_round_trip_and_refusals() {
    // A version-1 manifest (what policies were written from before) still reads.
    let v1 = br#"{"version":1,"image":"veil-test","model_manifest_digest":null,
        "snp":[{"firmware":"OVMF.fd","vcpus":2,"vcpu_type":"EPYC-v4","launch_measurement":"ab"}]}"#;
    let m = Manifest::parse(v1).unwrap();
    assert_eq!(m.snp[0].firmware_sha256, None);
    assert!(m.build.is_none());
    let m2 = sample_manifest("console=ttyS0", b"k", b"i");
    let json = m2.to_json().unwrap();
    assert!(json.ends_with(b"}\n"));
    assert_eq!(Manifest::parse(&json).unwrap(), m2);
    let mut v = serde_json::to_value(&m2).unwrap();
    v["version"] = 3.into();
    assert!(
        Manifest::parse(v.to_string().as_bytes())
            .unwrap_err()
            .to_string()
            .contains("version 3")
    );
    let mut v = serde_json::to_value(&m2).unwrap();
    v["build"]["extra"] = 1.into();
    assert!(Manifest::parse(v.to_string().as_bytes()).is_err());
    assert!(Manifest::parse(b"not json").is_err());

    let mut m = m2;
    let e = |meas: &str| SnpLaunch {
        firmware: "f".to_owned(),
        firmware_sha256: Some("aa".to_owned()),
        vcpus: 2,
        vcpu_type: "EPYC-v4".to_owned(),
        launch_measurement: meas.to_owned(),
    };
    m.upsert_snp(e("1"));
    m.upsert_snp(e("2"));
    assert_eq!(m.snp.len(), 1);
    assert_eq!(m.snp[0].launch_measurement, "2");
}

#[test]
fn launch_measurements_from_artifacts() {
    let amdsev =
        std::fs::read(testdata().join("sev-snp-measure/fixtures/ovmf_AmdSev_suffix.bin")).unwrap();
    let ovmfx64 =
        std::fs::read(testdata().join("sev-snp-measure/fixtures/ovmf_OvmfX64_suffix.bin")).unwrap();
    let boot = Boot {
        kernel: b"not a real kernel, hashed only",
        initrd: b"initrd",
        cmdline: "console=ttyS0 veil.verity.root_hash=00",
    };
    let a = launch::snp_entry(&boot, "OVMF.amdsev.fd", &amdsev, 2, "EPYC-v4").unwrap();
    assert_eq!(a.launch_measurement.len(), 96);
    assert_eq!(a.firmware_sha256.as_deref().map(str::len), Some(64));
    // The command line (so the verity root hash) changes the measurement.
    let other = Boot {
        cmdline: "console=ttyS0 veil.verity.root_hash=01",
        ..boot
    };
    let b = launch::snp_entry(&other, "OVMF.amdsev.fd", &amdsev, 2, "EPYC-v4").unwrap();
    assert_ne!(a.launch_measurement, b.launch_measurement);
    let c = launch::snp_entry(&boot, "OVMF.amdsev.fd", &amdsev, 4, "EPYC-v4").unwrap();
    assert_ne!(a.launch_measurement, c.launch_measurement);
    assert_eq!(
        launch::snp_entry(&boot, "x", &ovmfx64, 2, "EPYC-v4").unwrap_err(),
        MeasureError::NoKernelHashesSection
    );
    assert!(matches!(
        launch::snp_entry(&boot, "x", &amdsev, 2, "Pentium"),
        Err(MeasureError::UnknownVcpuType(_))
    ));
    assert!(launch::snp_entry(&boot, "x", &amdsev, 0, "EPYC-v4").is_err());
    assert_eq!(launch::parse_memory("16G").unwrap(), 16 << 30);
    assert!(launch::parse_memory("0").is_err());
    assert!(launch::parse_memory("12X").is_err());
}

#[test]
fn measure_into_checks_artifact_digests_and_records_entries() {
    let dir = TempDir::new("measure");
    let (kernel, initrd) = (b"kernel bytes".to_vec(), b"initrd bytes".to_vec());
    std::fs::write(dir.0.join("vmlinuz"), &kernel).unwrap();
    std::fs::write(dir.0.join("initrd.img"), &initrd).unwrap();
    let mut m = sample_manifest("console=ttyS0 panic=-1", &kernel, &initrd);
    let cfg = build::SnpConfig {
        ovmf: testdata().join("sev-snp-measure/fixtures/ovmf_AmdSev_suffix.bin"),
        vcpus: 1,
        vcpu_type: "EPYC-Milan".to_owned(),
    };
    build::measure_into(&mut m, &dir.0, std::slice::from_ref(&cfg), &[]).unwrap();
    build::measure_into(&mut m, &dir.0, std::slice::from_ref(&cfg), &[]).unwrap();
    assert_eq!(m.snp.len(), 1, "measuring again replaces the entry");
    assert_eq!(m.snp[0].firmware, "ovmf_AmdSev_suffix.bin");
    // An artifact that is not the manifest's is refused.
    std::fs::write(dir.0.join("initrd.img"), b"other").unwrap();
    let err = build::measure_into(&mut m, &dir.0, &[cfg], &[]).unwrap_err();
    assert!(err.to_string().contains("initrd.img"), "{err}");
    // A missing firmware names the file.
    std::fs::write(dir.0.join("initrd.img"), &initrd).unwrap();
    let missing = build::SnpConfig {
        ovmf: dir.0.join("nope.fd"),
        vcpus: 1,
        vcpu_type: "EPYC-v4".to_owned(),
    };
    let err = build::measure_into(&mut m, &dir.0, &[missing], &[]).unwrap_err();
    assert!(err.to_string().contains("nope.fd"), "{err}");
}
