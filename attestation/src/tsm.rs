//! Collecting CPU evidence inside a guest through Linux's configfs-tsm report interface
//! (`/sys/kernel/config/tsm/report`, Linux 6.7+), which both SEV-SNP (`sev_guest`) and
//! TDX (`tdx_guest`) guests provide.
//!
//! The protocol (Documentation/ABI/testing/configfs-tsm-report): make a directory under
//! the report root, write the 64-byte report data to `inblob` (and, on SEV-SNP, the VMPL
//! to `privlevel`), then read `outblob` (the SNP report or the TDX quote) and, where the
//! provider has one, `auxblob` (SNP: the host's certificate table). `generation` counts
//! writes to the directory: reading it before and after the blobs detects a concurrent
//! writer, in which case the read is retried. The directory is removed afterwards.
//!
//! This module does file I/O only; it never parses what it reads (the platform
//! verifiers do). It blocks (a TDX quote can take about a second through configfs-tsm):
//! call it at boot or from a refresh task, never on a request path.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The configfs-tsm report root.
pub const REPORT_ROOT: &str = "/sys/kernel/config/tsm/report";

/// How many times a read is retried when another writer raced it.
const ATTEMPTS: usize = 3;

/// Largest blob read (SNP reports are 1184 bytes, quotes a few KiB, certificate tables a
/// few KiB; the kernel caps blobs at 32 KiB).
const MAX_BLOB: u64 = 1 << 20;

/// What one report request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    /// The provider (`sev_guest`, `tdx_guest`, ...).
    pub provider: String,
    /// The report (SEV-SNP) or quote (TDX).
    pub outblob: Vec<u8>,
    /// The auxiliary blob (SEV-SNP: the certificate table), when the provider has one
    /// and it is not empty.
    pub auxblob: Option<Vec<u8>>,
}

/// Why collection failed; each variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TsmError {
    /// I/O on a configfs-tsm file.
    #[error("configfs-tsm {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `generation` is not a number.
    #[error("configfs-tsm {path}: generation {found:?} is not a number")]
    Generation {
        /// The file.
        path: PathBuf,
        /// What it held.
        found: String,
    },
    /// Another writer kept changing the request.
    #[error("configfs-tsm {path}: another writer changed the request {ATTEMPTS} times in a row")]
    Raced {
        /// The entry.
        path: PathBuf,
    },
    /// A blob larger than any report.
    #[error("configfs-tsm {path}: {len} bytes, more than any report")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// The provider returned an empty report.
    #[error("configfs-tsm {path}: empty report")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Whether the configfs-tsm report interface is present under `root`.
#[must_use]
pub fn available(root: &Path) -> bool {
    root.is_dir()
}

/// Request a report with `report_data` from the configfs-tsm root `root` (normally
/// [`REPORT_ROOT`]), at `privlevel` when given (SEV-SNP's VMPL).
///
/// # Errors
/// A [`TsmError`] naming the file that failed.
pub fn report(
    root: &Path,
    report_data: &[u8; 64],
    privlevel: Option<u8>,
) -> Result<TsmReport, TsmError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let entry = root.join(format!(
        "veil-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&entry).map_err(|source| TsmError::Io {
        path: entry.clone(),
        source,
    })?;
    let result = request(&entry, report_data, privlevel);
    // configfs entries are removed with rmdir, whatever their attribute files hold.
    let removed = std::fs::remove_dir(&entry);
    let report = result?;
    removed.map_err(|source| TsmError::Io {
        path: entry,
        source,
    })?;
    Ok(report)
}

/// The request on an entry directory that exists (configfs made its attribute files).
fn request(
    entry: &Path,
    report_data: &[u8; 64],
    privlevel: Option<u8>,
) -> Result<TsmReport, TsmError> {
    let provider = String::from_utf8_lossy(&read(&entry.join("provider"))?)
        .trim()
        .to_owned();
    for _ in 0..ATTEMPTS {
        if let Some(level) = privlevel {
            write(&entry.join("privlevel"), level.to_string().as_bytes())?;
        }
        write(&entry.join("inblob"), report_data)?;
        let before = generation(entry)?;
        let outblob = read(&entry.join("outblob"))?;
        let auxblob = match read(&entry.join("auxblob")) {
            Ok(blob) if blob.is_empty() => None,
            Ok(blob) => Some(blob),
            Err(TsmError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if generation(entry)? != before {
            continue;
        }
        if outblob.is_empty() {
            return Err(TsmError::Empty {
                path: entry.join("outblob"),
            });
        }
        return Ok(TsmReport {
            provider,
            outblob,
            auxblob,
        });
    }
    Err(TsmError::Raced {
        path: entry.to_path_buf(),
    })
}

fn generation(entry: &Path) -> Result<u64, TsmError> {
    let path = entry.join("generation");
    let text = String::from_utf8_lossy(&read(&path)?).trim().to_owned();
    text.parse()
        .map_err(|_| TsmError::Generation { path, found: text })
}

fn read(path: &Path) -> Result<Vec<u8>, TsmError> {
    let io = |source| TsmError::Io {
        path: path.to_path_buf(),
        source,
    };
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_BLOB + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_BLOB {
        return Err(TsmError::TooLarge {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), TsmError> {
    std::fs::write(path, bytes).map_err(|source| TsmError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// An entry directory as configfs would make it, with a canned report: the request
    /// writes the report data and reads the canned blobs.
    fn fake_entry(name: &str, aux: Option<&[u8]>) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("veil-tsm-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("provider"), "sev_guest\n").unwrap();
        std::fs::write(dir.join("generation"), "1\n").unwrap();
        std::fs::write(dir.join("outblob"), [7u8; 1184]).unwrap();
        if let Some(aux) = aux {
            std::fs::write(dir.join("auxblob"), aux).unwrap();
        }
        dir
    }

    #[test]
    fn request_writes_the_report_data_and_reads_the_blobs() {
        let dir = fake_entry("ok", Some(b"certs"));
        let data = [0x5a; 64];
        let report = request(&dir, &data, Some(0)).unwrap();
        assert_eq!(report.provider, "sev_guest");
        assert_eq!(report.outblob, vec![7u8; 1184]);
        assert_eq!(report.auxblob.as_deref(), Some(&b"certs"[..]));
        assert_eq!(std::fs::read(dir.join("inblob")).unwrap(), data);
        assert_eq!(std::fs::read(dir.join("privlevel")).unwrap(), b"0");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_auxblob_is_none_and_bad_generation_is_named() {
        let dir = fake_entry("noaux", None);
        assert_eq!(request(&dir, &[0; 64], None).unwrap().auxblob, None);
        std::fs::write(dir.join("generation"), "x").unwrap();
        let err = request(&dir, &[0; 64], None).unwrap_err();
        assert!(matches!(err, TsmError::Generation { .. }), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_root_is_an_io_error_naming_the_entry() {
        let root = std::env::temp_dir().join("veil-tsm-no-such-root/report");
        assert!(!available(&root));
        let err = report(&root, &[0; 64], None).unwrap_err();
        assert!(err.to_string().contains("veil-tsm-no-such-root"), "{err}");
    }
}
