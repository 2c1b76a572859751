//! The SPDM 1.1 `GET_MEASUREMENTS` transcript an NVIDIA Hopper GPU returns in
//! confidential-computing mode: the request (with the verifier's nonce) followed by the
//! signed `MEASUREMENTS` response (DMTF measurement blocks, the responder's nonce,
//! NVIDIA's opaque data and a raw ECDSA P-384 signature).
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! request   0x11 0xe0 param1 param2 | nonce (32) | slot id (1)              37 bytes
//! response  0x11 0x60 param1 param2 | number of blocks (1) | record length (3)
//!           measurement record: blocks of
//!               index (1) | spec (1, 0x01 = DMTF) | size (2) |
//!               DMTF value type (1) | value size (2) | value
//!           responder nonce (32) | opaque length (2) | opaque data | signature (96, r||s)
//! ```
//!
//! The signature covers everything before it: request and response up to the end of
//! the opaque data. The parser is strict: every length must add up, block indices
//! are unique, opaque fields are unique and fill the opaque data exactly. After the
//! signature at most [`MAX_TRAILING_ZEROS`] zero bytes are tolerated (one real
//! sample, trustee's CoCo CI report, carries a single 0x00 there; it is not signed
//! and carries nothing); any other trailing byte is an error.

use crate::nvidia::opaque::OpaqueData;

/// SPDM version 1.1, as the request and response headers carry it.
pub const SPDM_VERSION_1_1: u8 = 0x11;
/// `GET_MEASUREMENTS` request code.
pub const GET_MEASUREMENTS: u8 = 0xe0;
/// `MEASUREMENTS` response code.
pub const MEASUREMENTS: u8 = 0x60;
/// The request's length: header, nonce and slot id.
pub const REQUEST_LEN: usize = 37;
/// The signature's length: raw r||s of ECDSA P-384.
pub const SIGNATURE_LEN: usize = 96;
/// Zero bytes tolerated after the signature (see the module documentation).
pub const MAX_TRAILING_ZEROS: usize = 1;
/// Measurement specification bit of the DMTF format.
pub const SPEC_DMTF: u8 = 0x01;

/// Why a GPU report was refused; each variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpdmError {
    /// The input ended inside a field.
    #[error("truncated: {field} needs {needed} bytes at offset {offset}, {available} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Its offset in the transcript.
        offset: usize,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// A header byte differs from what SPDM 1.1 `GET_MEASUREMENTS` requires.
    #[error("{field}: expected {expected:#04x}, found {found:#04x}")]
    Header {
        /// The field.
        field: &'static str,
        /// The required value.
        expected: u8,
        /// The value found.
        found: u8,
    },
    /// The request did not ask for a signature (param1 bit 0 clear).
    #[error("the request did not ask for a signed response (param1 {0:#04x})")]
    Unsigned(u8),
    /// A measurement block is malformed.
    #[error("measurement block {index}: {detail}")]
    Block {
        /// The block's index.
        index: u8,
        /// What is wrong.
        detail: String,
    },
    /// The blocks do not fill the record, or their count differs from the header's.
    #[error("measurement record: {0}")]
    Record(String),
    /// The opaque data is malformed.
    #[error("opaque data: {0}")]
    Opaque(String),
    /// Bytes after the signature other than the tolerated zero bytes.
    #[error(
        "{count} bytes after the signature ({zeros} leading zero; at most {MAX_TRAILING_ZEROS} zero bytes tolerated)"
    )]
    Trailing {
        /// How many bytes follow the signature.
        count: usize,
        /// How many of them, from the start, are zero.
        zeros: usize,
    },
    /// Hex input that does not decode.
    #[error("not binary SPDM and not hex: {0}")]
    Hex(String),
}

/// The `GET_MEASUREMENTS` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `param1` (bit 0: signature requested).
    pub param1: u8,
    /// `param2`: the measurement index requested (0xff: all).
    pub param2: u8,
    /// The verifier's nonce.
    pub nonce: [u8; 32],
    /// The certificate slot the responder signs with.
    pub slot_id: u8,
}

/// One DMTF measurement block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementBlock {
    /// The SPDM measurement index (1-based on NVIDIA GPUs; RIM index i is block i+1).
    pub index: u8,
    /// `DMTFSpecMeasurementValueType` (bit 7: raw bit stream rather than a digest).
    pub value_type: u8,
    /// The measurement (a 48-byte SHA-384 digest on Hopper).
    pub value: Vec<u8>,
}

/// A parsed SPDM `GET_MEASUREMENTS` transcript. Owns its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuReport {
    bytes: Vec<u8>,
    signed_len: usize,
    /// The request.
    pub request: Request,
    /// The response's `param1`.
    pub response_param1: u8,
    /// The response's `param2` (slot id in bits 0..3).
    pub response_param2: u8,
    /// The measurement blocks, in transcript order.
    pub blocks: Vec<MeasurementBlock>,
    /// The responder's nonce.
    pub responder_nonce: [u8; 32],
    /// NVIDIA's opaque data.
    pub opaque: OpaqueData,
    /// The signature, raw r||s.
    pub signature: [u8; SIGNATURE_LEN],
    /// Zero bytes that followed the signature (not signed).
    pub trailing_zeros: usize,
}

/// A cursor over the transcript that never reads past its end.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], SpdmError> {
        let rest = self.data.get(self.at..).unwrap_or_default();
        let out = rest.get(..n).ok_or(SpdmError::Truncated {
            field,
            offset: self.at,
            needed: n,
            available: rest.len(),
        })?;
        self.at += n;
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, SpdmError> {
        let b = self.take(field, 1)?;
        Ok(b.first().copied().unwrap_or_default())
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, SpdmError> {
        let b = self.array::<2>(field)?;
        Ok(u16::from_le_bytes(b))
    }

    fn u24(&mut self, field: &'static str) -> Result<usize, SpdmError> {
        let [a, b, c] = self.array::<3>(field)?;
        Ok(usize::from(a) | (usize::from(b) << 8) | (usize::from(c) << 16))
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], SpdmError> {
        let b = self.take(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn expect(&mut self, field: &'static str, expected: u8) -> Result<(), SpdmError> {
        let found = self.u8(field)?;
        if found != expected {
            return Err(SpdmError::Header {
                field,
                expected,
                found,
            });
        }
        Ok(())
    }
}

impl GpuReport {
    /// Parse a binary transcript (request || response).
    ///
    /// # Errors
    /// [`SpdmError`] naming the first field that is malformed.
    pub fn from_bytes(data: &[u8]) -> Result<Self, SpdmError> {
        let mut r = Reader { data, at: 0 };
        r.expect("request SPDM version", SPDM_VERSION_1_1)?;
        r.expect("request code", GET_MEASUREMENTS)?;
        let param1 = r.u8("request param1")?;
        let param2 = r.u8("request param2")?;
        if param1 & 1 == 0 {
            return Err(SpdmError::Unsigned(param1));
        }
        let nonce = r.array::<32>("request nonce")?;
        let slot_id = r.u8("request slot id")?;
        let request = Request {
            param1,
            param2,
            nonce,
            slot_id,
        };

        r.expect("response SPDM version", SPDM_VERSION_1_1)?;
        r.expect("response code", MEASUREMENTS)?;
        let response_param1 = r.u8("response param1")?;
        let response_param2 = r.u8("response param2")?;
        let count = r.u8("number of blocks")?;
        let record_len = r.u24("measurement record length")?;
        let record = r.take("measurement record", record_len)?;
        let blocks = parse_record(record, count)?;
        let responder_nonce = r.array::<32>("responder nonce")?;
        let opaque_len = r.u16("opaque data length")?;
        let opaque_bytes = r.take("opaque data", usize::from(opaque_len))?;
        let opaque = OpaqueData::parse(opaque_bytes)?;
        let signed_len = r.at;
        let signature = r.array::<SIGNATURE_LEN>("signature")?;
        let rest = data.get(r.at..).unwrap_or_default();
        let zeros = rest.iter().take_while(|&&b| b == 0).count();
        if zeros != rest.len() || rest.len() > MAX_TRAILING_ZEROS {
            return Err(SpdmError::Trailing {
                count: rest.len(),
                zeros,
            });
        }
        Ok(Self {
            bytes: data.to_vec(),
            signed_len,
            request,
            response_param1,
            response_param2,
            blocks,
            responder_nonce,
            opaque,
            signature,
            trailing_zeros: rest.len(),
        })
    }

    /// Parse a transcript given as binary or as hex text (whitespace ignored), as the
    /// published samples and NVIDIA's tools write it.
    ///
    /// # Errors
    /// [`SpdmError::Hex`] for text that is not hex, else as [`GpuReport::from_bytes`].
    pub fn from_bytes_or_hex(data: &[u8]) -> Result<Self, SpdmError> {
        let text = data.trim_ascii();
        let looks_hex = !text.is_empty()
            && text
                .iter()
                .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace());
        if !looks_hex {
            return Self::from_bytes(data);
        }
        let compact: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let bytes = hex::decode(&compact).map_err(|e| SpdmError::Hex(e.to_string()))?;
        Self::from_bytes(&bytes)
    }

    /// The whole transcript as parsed (trailing zero bytes included).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The signed bytes: the request and the response up to the signature.
    #[must_use]
    pub fn signed_bytes(&self) -> &[u8] {
        self.bytes.get(..self.signed_len).unwrap_or_default()
    }

    /// The block with SPDM `index`, if present.
    #[must_use]
    pub fn block(&self, index: u8) -> Option<&MeasurementBlock> {
        self.blocks.iter().find(|b| b.index == index)
    }
}

fn parse_record(record: &[u8], count: u8) -> Result<Vec<MeasurementBlock>, SpdmError> {
    let mut r = Reader {
        data: record,
        at: 0,
    };
    let mut blocks: Vec<MeasurementBlock> = Vec::with_capacity(usize::from(count));
    while r.at < record.len() {
        let index = r.u8("block index")?;
        let block_err = |detail: String| SpdmError::Block { index, detail };
        let spec = r.u8("block measurement specification")?;
        if spec != SPEC_DMTF {
            return Err(block_err(format!(
                "measurement specification {spec:#04x}, expected {SPEC_DMTF:#04x} (DMTF)"
            )));
        }
        let size = usize::from(r.u16("block size")?);
        let body = r
            .take("block", size)
            .map_err(|e| block_err(e.to_string()))?;
        let mut b = Reader { data: body, at: 0 };
        let value_type = b
            .u8("DMTF value type")
            .map_err(|e| block_err(e.to_string()))?;
        let value_size = usize::from(
            b.u16("DMTF value size")
                .map_err(|e| block_err(e.to_string()))?,
        );
        if value_size + 3 != size {
            return Err(block_err(format!(
                "DMTF value size {value_size} + 3 differs from the block size {size}"
            )));
        }
        let value = b
            .take("DMTF value", value_size)
            .map_err(|e| block_err(e.to_string()))?
            .to_vec();
        if blocks.iter().any(|x| x.index == index) {
            return Err(block_err("appears twice".to_owned()));
        }
        blocks.push(MeasurementBlock {
            index,
            value_type,
            value,
        });
    }
    if blocks.len() != usize::from(count) {
        return Err(SpdmError::Record(format!(
            "the header says {count} blocks, the record holds {}",
            blocks.len()
        )));
    }
    Ok(blocks)
}
