//! The TDX Quote Generation Service (QGS) protocol: turning a TDREPORT into a quote.
//!
//! The QGS runs on the host (Intel's `qgsd`, from SGXDataCenterAttestationPrimitives)
//! and listens on vsock, by convention port 4050 of the host (CID 2). A guest sends one
//! framed `GET_QUOTE_REQ` and reads one framed `GET_QUOTE_RESP`. The messages are those
//! of Intel's `qgs_msg_lib` (`qgs_msg_lib.h`), packed, integers in host order
//! (little-endian on x86-64):
//!
//! ```text
//! header (16 bytes):  major_version u16 | minor_version u16 | type u32 | size u32 | error_code u32
//! GET_QUOTE_REQ  (type 0): header | report_size u32 | id_list_size u32 | report | id list
//! GET_QUOTE_RESP (type 1): header | selected_id_size u32 | quote_size u32 | selected id | quote
//! ```
//!
//! `size` is the whole message's, header included; `error_code` is used in responses
//! only (0 is success; `0x00012001..=0x00012007` are the library's errors). On the
//! socket each message is preceded by its length as a 4-byte **big-endian** integer
//! (`tdx_attest.c`). The request carries version 1.1 (`QGS_MSG_LIB_MAJOR_VER`,
//! `_MINOR_VER`); as Intel's library does, a response is checked for the major version
//! only (QGS before DCAP 1.21 answers 1.0).
//!
//! [`get_quote`] speaks this over any `Read + Write`, so it is tested against a local
//! socket; [`crate::tdx::guest`] gives it the vsock connection. Every length the host
//! sends is checked before use and capped at [`MAX_MESSAGE`]; a malformed, truncated or
//! oversize reply is a [`QgsError`], never a panic.

use std::io::{Read, Write};

/// The host's vsock CID (`VMADDR_CID_HOST`).
pub const HOST_CID: u32 = 2;
/// The QGS's conventional vsock port (`port = 4050` in Intel's `tdx-attest.conf`).
pub const DEFAULT_PORT: u32 = 4050;
/// `QGS_MSG_LIB_MAJOR_VER`.
pub const MAJOR_VERSION: u16 = 1;
/// `QGS_MSG_LIB_MINOR_VER` (1 since DCAP 1.21).
pub const MINOR_VERSION: u16 = 1;
/// `GET_QUOTE_REQ`.
pub const GET_QUOTE_REQ: u32 = 0;
/// `GET_QUOTE_RESP`.
pub const GET_QUOTE_RESP: u32 = 1;
/// `sizeof(qgs_msg_header_t)`.
pub const HEADER_LEN: usize = 16;
/// `sizeof(qgs_msg_get_quote_req_t)` and `sizeof(qgs_msg_get_quote_resp_t)`: the header
/// and two u32 sizes.
pub const FIXED_LEN: usize = HEADER_LEN + 8;
/// The length of a TDREPORT (`TDX_REPORT_LEN`).
pub const TDREPORT_LEN: usize = 1024;
/// The largest response accepted, in bytes (a quote with its PCK chain is about 5 KB;
/// Intel's library allows 16 KiB).
pub const MAX_MESSAGE: usize = 64 << 10;

/// Why the QGS exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QgsError {
    /// A read or write failed.
    #[error("QGS {stage}: {source}")]
    Io {
        /// What was being read or written.
        stage: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// A read or write ran past its timeout.
    #[error("QGS {stage}: timed out")]
    TimedOut {
        /// What was being read or written.
        stage: &'static str,
    },
    /// The service closed the connection early.
    #[error("QGS {stage}: connection closed after {got} of {need} bytes")]
    Truncated {
        /// What was being read.
        stage: &'static str,
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        need: usize,
    },
    /// The response announces more than [`MAX_MESSAGE`] bytes (nothing is allocated).
    #[error("QGS response of {0} bytes exceeds the limit of {MAX_MESSAGE}")]
    TooLarge(u64),
    /// A response too short for its fixed fields.
    #[error("QGS response of {0} bytes is shorter than the {FIXED_LEN}-byte GET_QUOTE_RESP")]
    TooShort(usize),
    /// Another major version.
    #[error("QGS message version {major}.{minor} (major 1 expected)")]
    Version {
        /// Major.
        major: u16,
        /// Minor.
        minor: u16,
    },
    /// Not a `GET_QUOTE_RESP`.
    #[error("QGS message type {0} is not GET_QUOTE_RESP (1)")]
    Type(u32),
    /// The header's size, the frame's length and the sizes inside disagree.
    #[error("QGS response sizes disagree: {0}")]
    Size(String),
    /// The service answered with an error code.
    #[error("QGS error {code:#010x} ({})", qgs_error_name(*code))]
    Service {
        /// The `error_code`.
        code: u32,
    },
    /// Success with no quote.
    #[error("QGS answered success with an empty quote")]
    EmptyQuote,
    /// A TDREPORT of the wrong length.
    #[error("a TDREPORT is {TDREPORT_LEN} bytes, not {0}")]
    ReportLength(usize),
}

/// The name of a `qgs_msg_error_t` code.
#[must_use]
pub fn qgs_error_name(code: u32) -> &'static str {
    match code {
        0 => "QGS_MSG_SUCCESS",
        0x0001_2001 => "QGS_MSG_ERROR_UNEXPECTED",
        0x0001_2002 => "QGS_MSG_ERROR_OUT_OF_MEMORY",
        0x0001_2003 => "QGS_MSG_ERROR_INVALID_PARAMETER",
        0x0001_2004 => "QGS_MSG_ERROR_INVALID_VERSION",
        0x0001_2005 => "QGS_MSG_ERROR_INVALID_TYPE",
        0x0001_2006 => "QGS_MSG_ERROR_INVALID_SIZE",
        0x0001_2007 => "QGS_MSG_ERROR_INVALID_CODE",
        _ => "not a qgs_msg_lib code",
    }
}

/// A `GET_QUOTE_REQ` for `tdreport` with an empty id list (the service then uses the
/// Intel TDQE), without the socket's length prefix.
///
/// # Errors
/// [`QgsError::ReportLength`] unless `tdreport` is [`TDREPORT_LEN`] bytes.
pub fn encode_get_quote_request(tdreport: &[u8]) -> Result<Vec<u8>, QgsError> {
    if tdreport.len() != TDREPORT_LEN {
        return Err(QgsError::ReportLength(tdreport.len()));
    }
    let size = FIXED_LEN + TDREPORT_LEN;
    let mut msg = Vec::with_capacity(size);
    msg.extend(MAJOR_VERSION.to_le_bytes());
    msg.extend(MINOR_VERSION.to_le_bytes());
    msg.extend(GET_QUOTE_REQ.to_le_bytes());
    msg.extend(u32_of(size).to_le_bytes());
    msg.extend(0u32.to_le_bytes()); // error_code: responses only
    msg.extend(u32_of(TDREPORT_LEN).to_le_bytes()); // report_size
    msg.extend(0u32.to_le_bytes()); // id_list_size
    msg.extend(tdreport);
    Ok(msg)
}

/// `n` as a u32 (the messages built here are a few KiB).
fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn le_u16(msg: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    if let Some(s) = msg.get(at..at + 2) {
        b.copy_from_slice(s);
    }
    u16::from_le_bytes(b)
}

fn le_u32(msg: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = msg.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

/// The quote in a `GET_QUOTE_RESP` (without the socket's length prefix), checked as
/// Intel's `qgs_msg_inflate_get_quote_resp` checks it: major version 1, type
/// `GET_QUOTE_RESP`, `size` equal to the message's length and to the fixed part plus
/// the selected id and the quote; then a non-zero `error_code` is [`QgsError::Service`]
/// and success needs a non-empty quote.
///
/// # Errors
/// The [`QgsError`] naming the first check that failed.
pub fn decode_get_quote_response(msg: &[u8]) -> Result<Vec<u8>, QgsError> {
    if msg.len() < FIXED_LEN {
        return Err(QgsError::TooShort(msg.len()));
    }
    let (major, minor) = (le_u16(msg, 0), le_u16(msg, 2));
    if major != MAJOR_VERSION {
        return Err(QgsError::Version { major, minor });
    }
    let msg_type = le_u32(msg, 4);
    if msg_type != GET_QUOTE_RESP {
        return Err(QgsError::Type(msg_type));
    }
    let size = le_u32(msg, 8);
    if u64::from(size) != msg.len() as u64 {
        return Err(QgsError::Size(format!(
            "header size {size}, message {} bytes",
            msg.len()
        )));
    }
    let error_code = le_u32(msg, 12);
    let id_size = le_u32(msg, 16);
    let quote_size = le_u32(msg, 20);
    let total = FIXED_LEN as u64 + u64::from(id_size) + u64::from(quote_size);
    if total != u64::from(size) {
        return Err(QgsError::Size(format!(
            "header size {size}, but {FIXED_LEN} + selected id {id_size} + quote {quote_size} = {total}"
        )));
    }
    if error_code != 0 {
        return Err(QgsError::Service { code: error_code });
    }
    if quote_size == 0 {
        return Err(QgsError::EmptyQuote);
    }
    // total == msg.len(), so the quote is the message's tail.
    let quote_at = msg.len() - quote_size as usize;
    Ok(msg.get(quote_at..).unwrap_or_default().to_vec())
}

fn io_error(stage: &'static str, source: std::io::Error) -> QgsError {
    match source.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            QgsError::TimedOut { stage }
        }
        _ => QgsError::Io { stage, source },
    }
}

/// Fill `buf` from `stream`, or say how far it got.
fn read_full<R: Read>(stream: &mut R, buf: &mut [u8], stage: &'static str) -> Result<(), QgsError> {
    let mut got = 0;
    while got < buf.len() {
        let Some(rest) = buf.get_mut(got..) else {
            break;
        };
        match stream.read(rest) {
            Ok(0) => {
                return Err(QgsError::Truncated {
                    stage,
                    got,
                    need: buf.len(),
                });
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(stage, e)),
        }
    }
    Ok(())
}

/// Ask the QGS on `stream` for a quote over `tdreport`: one framed `GET_QUOTE_REQ`, one
/// framed `GET_QUOTE_RESP`. Timeouts are the stream's own (set them before calling).
///
/// # Errors
/// A [`QgsError`]: I/O, timeout, a closed connection, an oversize or malformed
/// response, or the service's error code.
pub fn get_quote<S: Read + Write>(stream: &mut S, tdreport: &[u8]) -> Result<Vec<u8>, QgsError> {
    let request = encode_get_quote_request(tdreport)?;
    let mut framed = Vec::with_capacity(4 + request.len());
    framed.extend(u32_of(request.len()).to_be_bytes());
    framed.extend(&request);
    stream
        .write_all(&framed)
        .map_err(|e| io_error("sending GET_QUOTE_REQ", e))?;
    stream
        .flush()
        .map_err(|e| io_error("sending GET_QUOTE_REQ", e))?;
    let mut prefix = [0u8; 4];
    read_full(stream, &mut prefix, "reading the response length")?;
    let len = u32::from_be_bytes(prefix);
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= MAX_MESSAGE)
        .ok_or(QgsError::TooLarge(u64::from(len)))?;
    let mut msg = vec![0u8; len];
    read_full(stream, &mut msg, "reading GET_QUOTE_RESP")?;
    decode_get_quote_response(&msg)
}

/// Builds QGS responses, for tests and fake services.
#[doc(hidden)]
pub mod build {
    use super::{FIXED_LEN, GET_QUOTE_RESP, MAJOR_VERSION, MINOR_VERSION, u32_of};

    /// A `GET_QUOTE_RESP` with `error_code` and `quote` (no selected id), unframed.
    #[must_use]
    pub fn response(error_code: u32, quote: &[u8]) -> Vec<u8> {
        let mut msg = MAJOR_VERSION.to_le_bytes().to_vec();
        msg.extend(MINOR_VERSION.to_le_bytes());
        msg.extend(GET_QUOTE_RESP.to_le_bytes());
        msg.extend(u32_of(FIXED_LEN + quote.len()).to_le_bytes());
        msg.extend(error_code.to_le_bytes());
        msg.extend(0u32.to_le_bytes());
        msg.extend(u32_of(quote.len()).to_le_bytes());
        msg.extend(quote);
        msg
    }

    /// `msg` with the socket's 4-byte big-endian length prefix.
    #[must_use]
    pub fn framed(msg: &[u8]) -> Vec<u8> {
        let mut out = u32_of(msg.len()).to_be_bytes().to_vec();
        out.extend(msg);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread::JoinHandle;
    use std::time::Duration;

    use super::build::{framed, response};
    use super::*;

    fn sample_quote() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testdata/tdx/dcap-qvl-v4-uptodate/quote.bin"
        ))
        .unwrap()
    }

    /// A one-connection QGS on TCP loopback: checks the request it gets (a framed
    /// GET_QUOTE_REQ v1.1 around a TDREPORT) and answers `reply` bytes as given.
    fn fake_qgs(reply: Vec<u8>) -> (TcpStream, JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut prefix = [0u8; 4];
            conn.read_exact(&mut prefix).unwrap();
            let len = u32::from_be_bytes(prefix) as usize;
            assert_eq!(len, FIXED_LEN + TDREPORT_LEN);
            let mut req = vec![0u8; len];
            conn.read_exact(&mut req).unwrap();
            assert_eq!(&req[..4], &[1, 0, 1, 0], "version 1.1");
            assert_eq!(le_u32(&req, 4), GET_QUOTE_REQ);
            assert_eq!(le_u32(&req, 8) as usize, len, "size is the whole message");
            assert_eq!(le_u32(&req, 12), 0, "no error code in requests");
            assert_eq!(le_u32(&req, 16) as usize, TDREPORT_LEN);
            assert_eq!(le_u32(&req, 20), 0, "no id list");
            conn.write_all(&reply).unwrap();
            req[FIXED_LEN..].to_vec()
        });
        let client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (client, server)
    }

    fn tdreport() -> Vec<u8> {
        (0..TDREPORT_LEN).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_real_quote_comes_back_over_a_socket() {
        let quote = sample_quote();
        let (mut client, server) = fake_qgs(framed(&response(0, &quote)));
        let got = get_quote(&mut client, &tdreport()).unwrap();
        assert_eq!(got, quote);
        assert_eq!(server.join().unwrap(), tdreport(), "the TDREPORT was sent");
        crate::tdx::Quote::parse(&got).unwrap();
    }

    #[test]
    fn a_1_0_service_is_accepted_and_other_majors_are_not() {
        let quote = sample_quote();
        let mut old = response(0, &quote);
        old[2] = 0; // minor 0
        let (mut client, server) = fake_qgs(framed(&old));
        assert_eq!(get_quote(&mut client, &tdreport()).unwrap(), quote);
        server.join().unwrap();
        let mut v2 = response(0, &quote);
        v2[0] = 2;
        assert!(matches!(
            decode_get_quote_response(&v2),
            Err(QgsError::Version { major: 2, minor: 1 })
        ));
    }

    #[test]
    fn service_error_codes_are_typed_and_named() {
        let (mut client, server) = fake_qgs(framed(&response(0x0001_2001, &[])));
        let err = get_quote(&mut client, &tdreport()).unwrap_err();
        assert!(
            matches!(err, QgsError::Service { code: 0x0001_2001 }),
            "{err}"
        );
        assert!(
            err.to_string().contains("QGS_MSG_ERROR_UNEXPECTED"),
            "{err}"
        );
        server.join().unwrap();
        assert!(matches!(
            decode_get_quote_response(&response(0, &[])),
            Err(QgsError::EmptyQuote)
        ));
    }

    #[test]
    fn an_oversize_length_is_refused_before_reading_or_allocating() {
        let mut reply = u32::MAX.to_be_bytes().to_vec();
        reply.extend([0u8; 32]);
        let (mut client, server) = fake_qgs(reply);
        let err = get_quote(&mut client, &tdreport()).unwrap_err();
        assert!(matches!(err, QgsError::TooLarge(0xFFFF_FFFF)), "{err}");
        server.join().unwrap();
        let just_over = u32_of(MAX_MESSAGE + 1).to_be_bytes().to_vec();
        let (mut client, server) = fake_qgs(just_over);
        assert!(matches!(
            get_quote(&mut client, &tdreport()),
            Err(QgsError::TooLarge(_))
        ));
        server.join().unwrap();
    }

    #[test]
    fn truncated_replies_at_every_length_are_errors() {
        let whole = framed(&response(0, &sample_quote()));
        for cut in [
            0,
            1,
            3,
            4,
            5,
            FIXED_LEN + 3,
            whole.len() / 2,
            whole.len() - 1,
        ] {
            let (mut client, server) = fake_qgs(whole[..cut].to_vec());
            let err = get_quote(&mut client, &tdreport()).unwrap_err();
            assert!(
                matches!(err, QgsError::Truncated { .. }),
                "cut {cut}: {err}"
            );
            server.join().unwrap();
        }
        // Every shorter message, decoded directly, is refused too.
        let msg = response(0, &sample_quote());
        for cut in 0..msg.len() {
            assert!(decode_get_quote_response(&msg[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn inconsistent_sizes_and_types_are_refused() {
        let quote = sample_quote();
        let good = response(0, &quote);
        let mut bad = good.clone();
        bad[8] ^= 1; // header size
        assert!(matches!(
            decode_get_quote_response(&bad),
            Err(QgsError::Size(_))
        ));
        let mut bad = good.clone();
        bad[20] ^= 1; // quote size
        assert!(matches!(
            decode_get_quote_response(&bad),
            Err(QgsError::Size(_))
        ));
        let mut bad = good.clone();
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes()); // selected id size
        assert!(matches!(
            decode_get_quote_response(&bad),
            Err(QgsError::Size(_))
        ));
        let mut bad = good;
        bad[4] = 0; // GET_QUOTE_REQ
        assert!(matches!(
            decode_get_quote_response(&bad),
            Err(QgsError::Type(0))
        ));
        assert!(matches!(
            encode_get_quote_request(&[0u8; 10]),
            Err(QgsError::ReportLength(10))
        ));
    }

    #[test]
    fn a_silent_service_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(500));
            drop(conn);
        });
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let err = get_quote(&mut client, &tdreport()).unwrap_err();
        assert!(matches!(err, QgsError::TimedOut { .. }), "{err}");
        server.join().unwrap();
    }
}
