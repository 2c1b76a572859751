//! Collecting SEV-SNP evidence inside a guest through the `/dev/sev-guest` device's
//! extended-report ioctl (`SNP_GET_EXT_REPORT`, Linux 5.19+), for guests whose kernel
//! has no configfs-tsm ([`crate::tsm`], Linux 6.7+).
//!
//! One request returns the 1184-byte attestation report, signed by the AMD secure
//! processor over the 64-byte report data at the requested VMPL, and the certificate
//! buffer the host supplied (VCEK or VLEK, ASK or ASVK, ARK). The buffer has the layout
//! of configfs-tsm's `auxblob` and is read by the same bounds-checked parser,
//! [`crate::tsm::snp_certificate_table`].
//!
//! Why not the `sev` crate's `Firmware::get_ext_report`: it walks the host's certificate
//! table through raw pointers without checking the entries' offsets and lengths against
//! the buffer (`CertTableEntry::parse_table`), so a malicious host (SEV-SNP's adversary)
//! could make the guest read, and then publish as "certificates", guest memory outside
//! the buffer. Here the ioctl is made directly, with the one `unsafe` call below, and
//! every byte the host or firmware returned is parsed as untrusted input.
//!
//! Like [`crate::tsm`], this module only collects: it never verifies what it returns
//! (see [`crate::snp::verify`]). It blocks; call it at boot or from a refresh task.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::tsm::{SnpCertKind, SnpCertTableError, snp_certificate_table};

/// The SEV-SNP guest device.
pub const DEVICE: &str = "/dev/sev-guest";

/// Length of an SEV-SNP attestation report.
pub const REPORT_LEN: usize = 1184;

/// Size of the firmware's report response (`struct snp_report_resp`).
const RESPONSE_LEN: usize = 4000;

/// Offset of the report in the response (`MSG_REPORT_RSP`: status, report size, 24
/// reserved bytes, the report).
const REPORT_OFFSET: usize = 32;

/// Size of the certificate buffer offered to the host: the kernel's maximum
/// (`SEV_FW_BLOB_MAX_SIZE`, four pages), which it requires to be a whole number of pages.
const CERTS_LEN: usize = 0x4000;

/// `vmm_error` when the certificate buffer is too small (`SNP_GUEST_VMM_ERR_INVALID_LEN`).
const VMM_ERR_INVALID_LEN: u32 = 1;

/// What one extended-report request returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedReport {
    /// The attestation report, exactly [`REPORT_LEN`] bytes.
    pub report: Vec<u8>,
    /// The host-supplied certificates (DER), with their kinds, in table order; empty when
    /// the host supplied none.
    pub certificates: Vec<(SnpCertKind, Vec<u8>)>,
}

/// Why collection through `/dev/sev-guest` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SevGuestError {
    /// The device does not exist (not an SEV-SNP guest, or the `sev-guest` driver is not
    /// loaded).
    #[error("{path}: no such device (not an SEV-SNP guest, or the sev-guest driver is not loaded)")]
    DeviceMissing {
        /// The device path.
        path: PathBuf,
    },
    /// The device exists but cannot be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The device path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The ioctl failed without a firmware or hypervisor error code (for example
    /// `ENOTTY`: the path is not an SEV guest device).
    #[error("SNP_GET_EXT_REPORT on {path}: {source}")]
    Ioctl {
        /// The device path.
        path: PathBuf,
        /// The error the kernel returned.
        source: std::io::Error,
    },
    /// The ioctl failed with an error code from the AMD secure processor or the
    /// hypervisor (the kernel's `exitinfo2`).
    #[error(
        "SNP_GET_EXT_REPORT on {path}: firmware error {fw_error:#x}, hypervisor error {vmm_error:#x} ({source})"
    )]
    Firmware {
        /// The device path.
        path: PathBuf,
        /// The AMD secure processor's error code (`fw_error`).
        fw_error: u32,
        /// The hypervisor's error code (`vmm_error`).
        vmm_error: u32,
        /// The error the kernel returned.
        source: std::io::Error,
    },
    /// The host's certificates do not fit the largest buffer the kernel accepts.
    #[error(
        "SNP_GET_EXT_REPORT on {path}: the host's certificates need {needed} bytes, more than the kernel's {CERTS_LEN}"
    )]
    CertificatesTooLarge {
        /// The device path.
        path: PathBuf,
        /// The length the host asked for.
        needed: u32,
    },
    /// The report response has a non-zero status.
    #[error("SNP report response: status {status:#x}")]
    Status {
        /// The firmware's status.
        status: u32,
    },
    /// The report is not [`REPORT_LEN`] bytes.
    #[error("SNP report response: report of {len} bytes, expected {REPORT_LEN}")]
    ReportSize {
        /// The length the response gave or held.
        len: usize,
    },
    /// The host's certificate buffer is malformed.
    #[error("SNP extended report certificates: {0}")]
    CertificateTable(#[from] SnpCertTableError),
    /// `/dev/sev-guest` exists only on Linux.
    #[error("{path}: SEV-SNP guest devices exist only on Linux")]
    Unsupported {
        /// The device path.
        path: PathBuf,
    },
}

/// Whether the device `device` (normally [`DEVICE`]) exists.
#[must_use]
pub fn available(device: &Path) -> bool {
    device.exists()
}

/// Request an extended report over `report_data` at `vmpl` (veil uses VMPL 0) from the
/// SEV-SNP guest device `device` (normally [`DEVICE`]).
///
/// # Errors
/// A [`SevGuestError`] naming what failed: the device, the ioctl (with the firmware's
/// error code where there is one), the response or the certificate buffer.
pub fn extended_report(
    device: &Path,
    report_data: &[u8; 64],
    vmpl: u32,
) -> Result<ExtendedReport, SevGuestError> {
    // Read and write, as the sev crate and go-sev-guest open it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|source| {
            if source.kind() == ErrorKind::NotFound {
                SevGuestError::DeviceMissing {
                    path: device.to_path_buf(),
                }
            } else {
                SevGuestError::Open {
                    path: device.to_path_buf(),
                    source,
                }
            }
        })?;
    let (response, certs) = request(&file, device, report_data, vmpl)?;
    parse_extended_report(&response, &certs)
}

/// Parse what the kernel returned: the firmware's report response (`struct
/// snp_report_resp`) and the host's certificate buffer (empty for none). Never panics.
///
/// # Errors
/// [`SevGuestError::Status`], [`SevGuestError::ReportSize`] or
/// [`SevGuestError::CertificateTable`].
pub fn parse_extended_report(
    response: &[u8],
    certs: &[u8],
) -> Result<ExtendedReport, SevGuestError> {
    let word = |at: usize| {
        response
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
    };
    let (Some(status), Some(size)) = (word(0), word(4)) else {
        return Err(SevGuestError::ReportSize { len: 0 });
    };
    if status != 0 {
        return Err(SevGuestError::Status { status });
    }
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    if len != REPORT_LEN {
        return Err(SevGuestError::ReportSize { len });
    }
    let report = response
        .get(REPORT_OFFSET..REPORT_OFFSET + REPORT_LEN)
        .ok_or(SevGuestError::ReportSize {
            len: response.len().saturating_sub(REPORT_OFFSET),
        })?
        .to_vec();
    let certificates = if certs.is_empty() {
        Vec::new()
    } else {
        snp_certificate_table(certs)?
    };
    Ok(ExtendedReport {
        report,
        certificates,
    })
}

#[cfg(not(target_os = "linux"))]
fn request(
    _file: &std::fs::File,
    device: &Path,
    _report_data: &[u8; 64],
    _vmpl: u32,
) -> Result<(Vec<u8>, Vec<u8>), SevGuestError> {
    Err(SevGuestError::Unsupported {
        path: device.to_path_buf(),
    })
}

/// The `SNP_GET_EXT_REPORT` ioctl: the response buffer and the certificate buffer
/// (empty when the host wrote none).
#[cfg(target_os = "linux")]
fn request(
    file: &std::fs::File,
    device: &Path,
    report_data: &[u8; 64],
    vmpl: u32,
) -> Result<(Vec<u8>, Vec<u8>), SevGuestError> {
    use std::os::fd::AsRawFd;

    let mut response = vec![0u8; RESPONSE_LEN];
    let mut certs = vec![0u8; CERTS_LEN];
    let mut ext = sys::ExtReportReq {
        data: sys::ReportReq {
            user_data: *report_data,
            vmpl,
            rsvd: [0; 28],
        },
        certs_address: certs.as_mut_ptr().expose_provenance() as u64,
        certs_len: CERTS_LEN as u32,
    };
    let mut guest_request = sys::GuestRequest {
        msg_version: 1,
        req_data: (&raw mut ext).expose_provenance() as u64,
        resp_data: response.as_mut_ptr().expose_provenance() as u64,
        exitinfo2: 0,
    };
    // SAFETY: `guest_request` is a `struct snp_guest_request_ioctl` (layout checked in
    // `sys`) whose `req_data` points to `ext`, a `struct snp_ext_report_req`, and whose
    // `resp_data` points to `response`, the RESPONSE_LEN bytes of a `struct
    // snp_report_resp`; `ext.certs_address` points to `certs`, `ext.certs_len` bytes. All
    // are live, exclusively borrowed here, and outlive the call; the kernel writes only
    // within them (it copies back at most `sizeof` each struct and `certs_len` bytes of
    // certificates) and keeps no pointer after returning.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            sys::SNP_GET_EXT_REPORT as _,
            &raw mut guest_request,
        )
    };
    if rc != 0 {
        let source = std::io::Error::last_os_error();
        let fw_error = (guest_request.exitinfo2 & 0xffff_ffff) as u32;
        let vmm_error = (guest_request.exitinfo2 >> 32) as u32;
        let path = device.to_path_buf();
        return Err(if vmm_error == VMM_ERR_INVALID_LEN {
            SevGuestError::CertificatesTooLarge {
                path,
                needed: ext.certs_len,
            }
        } else if fw_error != 0 || vmm_error != 0 {
            SevGuestError::Firmware {
                path,
                fw_error,
                vmm_error,
                source,
            }
        } else {
            SevGuestError::Ioctl { path, source }
        });
    }
    // The host wrote no table: the buffer is as it was given, all zero.
    if certs.iter().all(|&b| b == 0) {
        certs.clear();
    }
    Ok((response, certs))
}

/// The kernel's structures (`include/uapi/linux/sev-guest.h`).
#[cfg(target_os = "linux")]
mod sys {
    /// `struct snp_report_req`.
    #[repr(C)]
    pub(super) struct ReportReq {
        pub(super) user_data: [u8; 64],
        pub(super) vmpl: u32,
        pub(super) rsvd: [u8; 28],
    }

    /// `struct snp_ext_report_req`.
    #[repr(C)]
    pub(super) struct ExtReportReq {
        pub(super) data: ReportReq,
        pub(super) certs_address: u64,
        pub(super) certs_len: u32,
    }

    /// `struct snp_guest_request_ioctl` (`exitinfo2`: `fw_error` in the low 32 bits,
    /// `vmm_error` in the high 32 bits).
    #[repr(C)]
    pub(super) struct GuestRequest {
        pub(super) msg_version: u8,
        pub(super) req_data: u64,
        pub(super) resp_data: u64,
        pub(super) exitinfo2: u64,
    }

    const _: () = assert!(size_of::<ReportReq>() == 96);
    const _: () = assert!(size_of::<ExtReportReq>() == 112);
    const _: () = assert!(size_of::<GuestRequest>() == 32);

    /// `_IOWR('S', 0x2, struct snp_guest_request_ioctl)`.
    pub(super) const SNP_GET_EXT_REPORT: u64 =
        (3 << 30) | ((size_of::<GuestRequest>() as u64) << 16) | ((b'S' as u64) << 8) | 0x2;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn guid(text: &str) -> [u8; 16] {
        hex::decode(text).unwrap().try_into().unwrap()
    }

    /// A response as the firmware writes it, with `report_size` and a recognizable report.
    fn response(status: u32, report_size: u32) -> Vec<u8> {
        let mut r = vec![0u8; RESPONSE_LEN];
        r[..4].copy_from_slice(&status.to_le_bytes());
        r[4..8].copy_from_slice(&report_size.to_le_bytes());
        for (i, b) in r[REPORT_OFFSET..REPORT_OFFSET + REPORT_LEN]
            .iter_mut()
            .enumerate()
        {
            *b = i as u8;
        }
        r
    }

    /// A certificate buffer as a host lays it out, zero-padded to the kernel's size.
    fn cert_buffer(entries: &[([u8; 16], &[u8])]) -> Vec<u8> {
        let mut table = Vec::new();
        let mut offset = 24 * (entries.len() + 1);
        for (g, body) in entries {
            table.extend_from_slice(g);
            table.extend_from_slice(&u32::try_from(offset).unwrap().to_le_bytes());
            table.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
            offset += body.len();
        }
        table.extend_from_slice(&[0; 24]);
        for (_, body) in entries {
            table.extend_from_slice(body);
        }
        table.resize(CERTS_LEN, 0);
        table
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn ioctl_number_matches_the_kernel_uapi() {
        // _IOWR('S', 0x2, struct snp_guest_request_ioctl) in linux/sev-guest.h.
        assert_eq!(sys::SNP_GET_EXT_REPORT, 0xc020_5302);
    }

    #[test]
    fn an_extended_report_maps_the_hosts_certificates_by_guid() {
        let vlek = guid("a8074bc2a25a483eaae639c045a0b8a1");
        let asvk = guid("4ab7b379bbac4fe4a02f05aef327c782");
        let ark = guid("c0b406a4a803495297433fb6014cd0ae");
        let certs = cert_buffer(&[(ark, b"ARK-DER"), (vlek, b"VLEK-DER"), (asvk, b"ASVK")]);
        let ext = parse_extended_report(&response(0, 1184), &certs).unwrap();
        assert_eq!(ext.report.len(), REPORT_LEN);
        assert_eq!(ext.report[..3], [0, 1, 2]);
        assert_eq!(ext.report[REPORT_LEN - 1], ((REPORT_LEN - 1) % 256) as u8);
        assert_eq!(
            ext.certificates,
            vec![
                (SnpCertKind::Ark, b"ARK-DER".to_vec()),
                (SnpCertKind::Vlek, b"VLEK-DER".to_vec()),
                (SnpCertKind::Ask, b"ASVK".to_vec()),
            ]
        );
        // No certificates from the host: an empty (or all-zero) buffer.
        assert!(
            parse_extended_report(&response(0, 1184), &[])
                .unwrap()
                .certificates
                .is_empty()
        );
        assert!(
            parse_extended_report(&response(0, 1184), &[0; CERTS_LEN])
                .unwrap()
                .certificates
                .is_empty()
        );
    }

    #[test]
    fn malformed_responses_and_tables_are_typed_errors_never_panics() {
        let vcek = guid("63da758de6644564adc5f4b93be8accd");
        let good = cert_buffer(&[(vcek, b"VCEK")]);
        let mut past_end = good.clone();
        past_end[16..20].copy_from_slice(&u32::try_from(CERTS_LEN).unwrap().to_le_bytes());
        assert!(matches!(
            parse_extended_report(&response(0, 1184), &past_end),
            Err(SevGuestError::CertificateTable(SnpCertTableError::Entry {
                index: 0,
                ..
            }))
        ));
        // A table with no terminating entry (a host filling the whole buffer).
        let unterminated = vec![0xa5u8; CERTS_LEN];
        assert!(matches!(
            parse_extended_report(&response(0, 1184), &unterminated),
            Err(SevGuestError::CertificateTable(_))
        ));
        assert!(matches!(
            parse_extended_report(&response(0x16, 1184), &good),
            Err(SevGuestError::Status { status: 0x16 })
        ));
        assert!(matches!(
            parse_extended_report(&response(0, 1000), &good),
            Err(SevGuestError::ReportSize { len: 1000 })
        ));
        let full = response(0, 1184);
        for cut in 0..REPORT_OFFSET + REPORT_LEN {
            assert!(matches!(
                parse_extended_report(&full[..cut], &good),
                Err(SevGuestError::ReportSize { .. })
            ));
        }
        for cut in 0..64 {
            let _ = parse_extended_report(&full, &good[..cut]);
        }
    }

    #[test]
    fn a_missing_device_is_device_missing() {
        let path = std::env::temp_dir().join(format!("veil-no-sev-guest-{}", std::process::id()));
        assert!(!available(&path));
        let err = extended_report(&path, &[0; 64], 0).unwrap_err();
        assert!(matches!(&err, SevGuestError::DeviceMissing { path: p } if *p == path));
        assert!(err.to_string().contains("veil-no-sev-guest"), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_that_is_not_the_device_fails_the_ioctl_without_a_firmware_code() {
        let path = std::env::temp_dir().join(format!("veil-not-sev-guest-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        let err = extended_report(&path, &[0; 64], 0).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        let SevGuestError::Ioctl { source, .. } = &err else {
            panic!("expected an ioctl error, got {err}");
        };
        assert_eq!(source.raw_os_error(), Some(libc::ENOTTY), "{err}");
    }
}
