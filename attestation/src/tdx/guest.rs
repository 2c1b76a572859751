//! Collecting a TDX quote inside a guest without configfs-tsm's poll interval: the
//! TDREPORT from `/dev/tdx_guest` (`TDX_CMD_GET_REPORT0`, Linux 6.2+), then the quote
//! from the host's Quote Generation Service over vsock ([`super::qgs`]).
//!
//! configfs-tsm ([`crate::tsm`]) asks the host for the quote through a TDVMCALL and
//! polls for the answer, which costs about a second per quote; talking to the QGS
//! directly takes only the QGS's own time (not measured here: no TDX hardware). Both
//! give the same kind of quote: the TD quoting enclave signs the TDREPORT.
//!
//! `TDX_CMD_GET_REPORT0` is `_IOWR('T', 1, struct tdx_report_req)` with
//! `struct tdx_report_req { __u8 reportdata[64]; __u8 tdreport[1024]; }`
//! (`include/uapi/linux/tdx-guest.h`): the one `unsafe` call of this module. The vsock
//! connection goes through `socket2` (safe), with a connect timeout and read and write
//! timeouts, so a host that does not answer cannot hold the caller.
//!
//! Like [`crate::tsm`], this module only collects; it never verifies what it returns
//! ([`crate::tdx::verify`] does). It blocks: call it at boot or from a refresh task,
//! never on a request path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::qgs::{self, QgsError};

/// The TDX guest device.
pub const TDX_GUEST_DEVICE: &str = "/dev/tdx_guest";

/// Where and how long to wait for the QGS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QgsConfig {
    /// The vsock CID of the QGS (the host, [`qgs::HOST_CID`]).
    pub cid: u32,
    /// The vsock port ([`qgs::DEFAULT_PORT`]).
    pub port: u32,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long each read or write may take (the QGS signs in its quoting enclave, and
    /// may first fetch the PCK certificate from the host's caching service).
    pub io_timeout: Duration,
}

impl Default for QgsConfig {
    fn default() -> Self {
        Self {
            cid: qgs::HOST_CID,
            port: qgs::DEFAULT_PORT,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the TDREPORT or the quote could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TdxGuestError {
    /// The device could not be opened.
    #[error("opening {}: {source}", path.display())]
    Open {
        /// The device.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `TDX_CMD_GET_REPORT0` failed.
    #[error("TDX_CMD_GET_REPORT0 on {}: {source}", path.display())]
    Ioctl {
        /// The device.
        path: PathBuf,
        /// The error (EINVAL: bad operands; EIO: the TDCALL failed).
        source: std::io::Error,
    },
    /// The vsock connection to the QGS failed or timed out.
    #[error("connecting to the QGS at vsock {cid}:{port}: {source}")]
    Connect {
        /// CID.
        cid: u32,
        /// Port.
        port: u32,
        /// The error.
        source: std::io::Error,
    },
    /// The QGS exchange failed.
    #[error(transparent)]
    Qgs(#[from] QgsError),
    /// Not Linux.
    #[error("{} needs Linux", path.display())]
    Unsupported {
        /// The device.
        path: PathBuf,
    },
}

/// Whether the TDX guest device exists at `device`.
#[must_use]
pub fn available(device: &Path) -> bool {
    device.exists()
}

/// The TDREPORT over `report_data`, from `device` (normally [`TDX_GUEST_DEVICE`]).
///
/// # Errors
/// [`TdxGuestError::Open`] or [`TdxGuestError::Ioctl`].
pub fn tdreport(device: &Path, report_data: &[u8; 64]) -> Result<Vec<u8>, TdxGuestError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|source| TdxGuestError::Open {
            path: device.to_path_buf(),
            source,
        })?;
    get_report0(&file, device, report_data)
}

/// A quote over `report_data`: the TDREPORT from `device`, quoted by the QGS at
/// `config`.
///
/// # Errors
/// The [`TdxGuestError`] of the step that failed.
pub fn quote(
    device: &Path,
    report_data: &[u8; 64],
    config: &QgsConfig,
) -> Result<Vec<u8>, TdxGuestError> {
    let report = tdreport(device, report_data)?;
    let mut stream = connect(config)?;
    Ok(qgs::get_quote(&mut stream, &report)?)
}

/// A vsock stream to the QGS, with the configured timeouts.
#[cfg(target_os = "linux")]
fn connect(config: &QgsConfig) -> Result<socket2::Socket, TdxGuestError> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let failed = |source| TdxGuestError::Connect {
        cid: config.cid,
        port: config.port,
        source,
    };
    let socket = Socket::new(Domain::VSOCK, Type::STREAM, None).map_err(failed)?;
    socket
        .connect_timeout(
            &SockAddr::vsock(config.cid, config.port),
            config.connect_timeout,
        )
        .map_err(failed)?;
    socket
        .set_read_timeout(Some(config.io_timeout))
        .map_err(failed)?;
    socket
        .set_write_timeout(Some(config.io_timeout))
        .map_err(failed)?;
    Ok(socket)
}

#[cfg(not(target_os = "linux"))]
fn connect(_config: &QgsConfig) -> Result<std::fs::File, TdxGuestError> {
    Err(TdxGuestError::Unsupported {
        path: PathBuf::from(TDX_GUEST_DEVICE),
    })
}

#[cfg(not(target_os = "linux"))]
fn get_report0(
    _file: &std::fs::File,
    device: &Path,
    _report_data: &[u8; 64],
) -> Result<Vec<u8>, TdxGuestError> {
    Err(TdxGuestError::Unsupported {
        path: device.to_path_buf(),
    })
}

/// The `TDX_CMD_GET_REPORT0` ioctl.
#[cfg(target_os = "linux")]
fn get_report0(
    file: &std::fs::File,
    device: &Path,
    report_data: &[u8; 64],
) -> Result<Vec<u8>, TdxGuestError> {
    use std::os::fd::AsRawFd;

    let mut req = sys::ReportReq {
        reportdata: *report_data,
        tdreport: [0; qgs::TDREPORT_LEN],
    };
    // SAFETY: `req` is a `struct tdx_report_req` (layout checked in `sys`), live and
    // exclusively borrowed for the call; the kernel copies `sizeof(struct
    // tdx_report_req)` bytes in and out of it (the size is encoded in the request
    // number) and keeps no pointer after returning.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            sys::TDX_CMD_GET_REPORT0 as _,
            &raw mut req,
        )
    };
    if rc != 0 {
        return Err(TdxGuestError::Ioctl {
            path: device.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(req.tdreport.to_vec())
}

/// The kernel's structure (`include/uapi/linux/tdx-guest.h`).
#[cfg(target_os = "linux")]
mod sys {
    use super::qgs::TDREPORT_LEN;

    /// `struct tdx_report_req`.
    #[repr(C)]
    pub(super) struct ReportReq {
        pub(super) reportdata: [u8; 64],
        pub(super) tdreport: [u8; TDREPORT_LEN],
    }

    const _: () = assert!(size_of::<ReportReq>() == 1088);

    /// `_IOWR('T', 1, struct tdx_report_req)`.
    pub(super) const TDX_CMD_GET_REPORT0: u64 =
        (3 << 30) | ((size_of::<ReportReq>() as u64) << 16) | ((b'T' as u64) << 8) | 0x1;

    const _: () = assert!(TDX_CMD_GET_REPORT0 == 0xC440_5401);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_an_open_error_naming_it() {
        let path = Path::new("/nonexistent/tdx_guest");
        assert!(!available(path));
        let err = tdreport(path, &[0; 64]).unwrap_err();
        assert!(matches!(err, TdxGuestError::Open { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/tdx_guest"), "{err}");
        let err = quote(path, &[0; 64], &QgsConfig::default()).unwrap_err();
        assert!(matches!(err, TdxGuestError::Open { .. }), "{err}");
    }

    /// Not a TDX guest device: the ioctl fails with an error, it does not crash.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_ioctl_on_another_file_is_an_error() {
        let err = tdreport(Path::new("/dev/null"), &[0; 64]).unwrap_err();
        assert!(matches!(err, TdxGuestError::Ioctl { .. }), "{err}");
    }

    /// No QGS here (no vsock host, or nothing on the port): connecting fails within the
    /// timeout with a typed error.
    #[cfg(target_os = "linux")]
    #[test]
    fn no_qgs_is_a_connect_error_within_the_timeout() {
        let config = QgsConfig {
            connect_timeout: Duration::from_millis(300),
            ..QgsConfig::default()
        };
        let started = std::time::Instant::now();
        let err = connect(&config).unwrap_err();
        assert!(
            matches!(
                err,
                TdxGuestError::Connect {
                    cid: 2,
                    port: 4050,
                    ..
                }
            ),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
