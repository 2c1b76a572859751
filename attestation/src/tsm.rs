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

/// What a certificate-table entry holds, by its GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnpCertKind {
    /// The chip's VCEK.
    Vcek,
    /// A VLEK.
    Vlek,
    /// The AMD SEV signing key (or ASVK).
    Ask,
    /// The AMD root key.
    Ark,
    /// Any other GUID.
    Other([u8; 16]),
}

/// The most entries [`snp_certificate_table`] reads (a real table has 3 or 4).
pub const SNP_CERT_TABLE_MAX: usize = 16;

/// An SEV-SNP certificate table (`auxblob` of a `sev_guest` report, or the certificate
/// buffer of an extended report, as the GHCB specification lays it out): entries of a
/// 16-byte GUID (RFC 4122 byte order), a 4-byte little-endian offset from the start of
/// the table and a 4-byte little-endian length, ended by an all-zero entry. Returns each
/// entry's kind and bytes, in table order; never panics. At most [`SNP_CERT_TABLE_MAX`]
/// entries: entries may overlap, so without a bound a small table could make the caller
/// copy its bytes many times over.
///
/// # Errors
/// [`SnpCertTableError`] naming the entry that is malformed.
pub fn snp_certificate_table(
    table: &[u8],
) -> Result<Vec<(SnpCertKind, Vec<u8>)>, SnpCertTableError> {
    const ENTRY: usize = 24;
    let mut certs = Vec::new();
    for index in 0..=SNP_CERT_TABLE_MAX {
        let start = index * ENTRY;
        let entry = table
            .get(start..start + ENTRY)
            .ok_or(SnpCertTableError::Unterminated { entries: index })?;
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&entry[..16]);
        let word = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&entry[at..at + 4]);
            u32::from_le_bytes(b) as usize
        };
        let (offset, len) = (word(16), word(20));
        if guid != [0; 16] && index == SNP_CERT_TABLE_MAX {
            return Err(SnpCertTableError::Entry {
                index,
                detail: "more entries than a certificate table holds",
            });
        }
        if guid == [0; 16] {
            if offset != 0 || len != 0 {
                return Err(SnpCertTableError::Entry {
                    index,
                    detail: "zero GUID with a non-zero offset or length",
                });
            }
            return Ok(certs);
        }
        let bytes = offset
            .checked_add(len)
            .and_then(|end| table.get(offset..end))
            .ok_or(SnpCertTableError::Entry {
                index,
                detail: "offset and length beyond the table",
            })?;
        if len == 0 {
            return Err(SnpCertTableError::Entry {
                index,
                detail: "empty certificate",
            });
        }
        let kind = match guid {
            SNP_VCEK_GUID => SnpCertKind::Vcek,
            SNP_VLEK_GUID => SnpCertKind::Vlek,
            SNP_ASK_GUID => SnpCertKind::Ask,
            SNP_ARK_GUID => SnpCertKind::Ark,
            other => SnpCertKind::Other(other),
        };
        certs.push((kind, bytes.to_vec()));
    }
    Ok(certs)
}

/// GUID 63da758d-e664-4564-adc5-f4b93be8accd.
const SNP_VCEK_GUID: [u8; 16] = guid(0x63da_758d, 0xe664, 0x4564, 0xadc5_f4b9_3be8_accd);
/// GUID a8074bc2-a25a-483e-aae6-39c045a0b8a1.
const SNP_VLEK_GUID: [u8; 16] = guid(0xa807_4bc2, 0xa25a, 0x483e, 0xaae6_39c0_45a0_b8a1);
/// GUID 4ab7b379-bbac-4fe4-a02f-05aef327c782.
const SNP_ASK_GUID: [u8; 16] = guid(0x4ab7_b379, 0xbbac, 0x4fe4, 0xa02f_05ae_f327_c782);
/// GUID c0b406a4-a803-4952-9743-3fb6014cd0ae.
const SNP_ARK_GUID: [u8; 16] = guid(0xc0b4_06a4, 0xa803, 0x4952, 0x9743_3fb6_014c_d0ae);

/// A GUID's bytes in RFC 4122 order from its textual groups.
const fn guid(a: u32, b: u16, c: u16, d: u64) -> [u8; 16] {
    let (a, b, c, d) = (
        a.to_be_bytes(),
        b.to_be_bytes(),
        c.to_be_bytes(),
        d.to_be_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// A malformed SEV-SNP certificate table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnpCertTableError {
    /// No all-zero entry before the end.
    #[error("SNP certificate table: no terminating entry after {entries} entries")]
    Unterminated {
        /// Entries read.
        entries: usize,
    },
    /// An entry that does not make sense.
    #[error("SNP certificate table entry {index}: {detail}")]
    Entry {
        /// Its index.
        index: usize,
        /// What is wrong.
        detail: &'static str,
    },
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

    fn table(entries: &[([u8; 16], &[u8])]) -> Vec<u8> {
        let header = 24 * (entries.len() + 1);
        let mut out = Vec::new();
        let mut offset = header;
        for (guid, body) in entries {
            out.extend_from_slice(guid);
            out.extend_from_slice(&u32::try_from(offset).unwrap().to_le_bytes());
            out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
            offset += body.len();
        }
        out.extend_from_slice(&[0; 24]);
        for (_, body) in entries {
            out.extend_from_slice(body);
        }
        out
    }

    #[test]
    fn snp_certificate_table_reads_entries_by_guid() {
        assert_eq!(
            hex::encode(SNP_VCEK_GUID),
            "63da758de6644564adc5f4b93be8accd"
        );
        let t = table(&[
            (SNP_ARK_GUID, b"ark"),
            (SNP_ASK_GUID, b"ask!"),
            (SNP_VCEK_GUID, b"vcek"),
            ([9; 16], b"x"),
        ]);
        let certs = snp_certificate_table(&t).unwrap();
        let kinds: Vec<_> = certs.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                SnpCertKind::Ark,
                SnpCertKind::Ask,
                SnpCertKind::Vcek,
                SnpCertKind::Other([9; 16])
            ]
        );
        assert_eq!(certs[1].1, b"ask!");
        assert_eq!(snp_certificate_table(&[0; 24]).unwrap(), Vec::new());
    }

    #[test]
    fn snp_certificate_table_errors_never_panic() {
        let t = table(&[(SNP_VCEK_GUID, b"vcek")]);
        for cut in 0..t.len() {
            let _ = snp_certificate_table(&t[..cut]);
        }
        assert!(matches!(
            snp_certificate_table(&[]),
            Err(SnpCertTableError::Unterminated { entries: 0 })
        ));
        // The first entry points past the truncated table.
        assert!(matches!(
            snp_certificate_table(&t[..30]),
            Err(SnpCertTableError::Entry { index: 0, .. })
        ));
        let mut bad = t.clone();
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            snp_certificate_table(&bad),
            Err(SnpCertTableError::Entry { index: 0, .. })
        ));
    }

    #[test]
    fn overlapping_entries_are_bounded() {
        // Every entry points at the same 1 KiB: the table copies at most the bound.
        let blob = vec![0x30u8; 1024];
        let full = vec![(SNP_ASK_GUID, &blob[..]); SNP_CERT_TABLE_MAX];
        assert_eq!(
            snp_certificate_table(&table(&full)).unwrap().len(),
            SNP_CERT_TABLE_MAX
        );
        let over = vec![(SNP_ASK_GUID, &blob[..]); SNP_CERT_TABLE_MAX + 1];
        assert!(matches!(
            snp_certificate_table(&table(&over)),
            Err(SnpCertTableError::Entry { index, .. }) if index == SNP_CERT_TABLE_MAX
        ));
    }

    #[test]
    fn a_missing_root_is_an_io_error_naming_the_entry() {
        let root = std::env::temp_dir().join("veil-tsm-no-such-root/report");
        assert!(!available(&root));
        let err = report(&root, &[0; 64], None).unwrap_err();
        assert!(err.to_string().contains("veil-tsm-no-such-root"), "{err}");
    }
}
