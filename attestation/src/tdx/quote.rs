//! TDX quote parsing: versions 4 and 5, TD report bodies 1.0 and 1.5, ECDSA P-256
//! attestation keys, certification data type 6 (QE report) wrapping type 5 (PCK chain).
//!
//! Layout (Intel TDX DCAP Quote Generation Library and Quote Verification Library API,
//! "Quote Format"): a 48-byte header; v4: the 584-byte TD report 1.0 body; v5: a body
//! descriptor (`u16` type, `u32` size) then the body (type 2 = TD 1.0, 584 bytes;
//! type 3 = TD 1.5, 648 bytes); then `u32` signature data length and the signature data.
//! All integers are little-endian. Bytes after the signature data are unsigned and
//! ignored (captured quotes are zero-padded to their buffer's size); the verifier warns
//! when they are not all zero.

use super::TdxError;

/// Attestation key type 2: ECDSA P-256.
pub const ATT_KEY_ECDSA_P256: u16 = 2;
/// TEE type of TDX.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// Intel's QE vendor id.
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];
const TD10_LEN: usize = 584;
const TD15_LEN: usize = 648;
const ENCLAVE_REPORT_LEN: usize = 384;
/// Upper bound of any length field we follow (a quote is a few KiB).
const MAX_FIELD: usize = 1 << 20;

/// The quote header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 4 or 5.
    pub version: u16,
    /// 2 (ECDSA P-256).
    pub att_key_type: u16,
    /// 0x81 for TDX.
    pub tee_type: u32,
    /// QE security version (reserved in v4/v5 headers; informative).
    pub qe_svn: u16,
    /// PCE security version (informative; the PCK certificate's is authoritative).
    pub pce_svn: u16,
    /// The QE vendor (Intel's QE: `939a7233f79c4ca9940a0db3957f0607`).
    pub qe_vendor_id: [u8; 16],
    /// User data (the first 16 bytes are the platform's QE id).
    pub user_data: [u8; 20],
}

/// The TD report body (TDREPORT's TDINFO and TEE_TCB_INFO parts, as quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    /// 2 = TD report 1.0, 3 = TD report 1.5.
    pub body_type: u16,
    /// TEE_TCB_SVN: `[0]` TDX module minor SVN, `[1]` module major version, ...
    pub tee_tcb_svn: [u8; 16],
    /// Measurement of the TDX module.
    pub mr_seam: [u8; 48],
    /// Signer of the TDX module (zero for Intel's).
    pub mr_signer_seam: [u8; 48],
    /// SEAM attributes.
    pub seam_attributes: [u8; 8],
    /// TD attributes (bit 0: DEBUG).
    pub td_attributes: [u8; 8],
    /// XFAM.
    pub xfam: [u8; 8],
    /// Build-time measurement of the TD.
    pub mr_td: [u8; 48],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// RTMR0..3.
    pub rtmr: [[u8; 48]; 4],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// TEE_TCB_SVN2 (TD 1.5 only).
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// MRSERVICETD (TD 1.5 only).
    pub mr_service_td: Option<[u8; 48]>,
}

/// An SGX enclave report (here: the quoting enclave's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnclaveReport {
    /// The 384 bytes as signed.
    pub raw: Vec<u8>,
    /// CPUSVN.
    pub cpu_svn: [u8; 16],
    /// MISCSELECT.
    pub misc_select: u32,
    /// ATTRIBUTES.
    pub attributes: [u8; 16],
    /// MRENCLAVE.
    pub mr_enclave: [u8; 32],
    /// MRSIGNER.
    pub mr_signer: [u8; 32],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// REPORTDATA.
    pub report_data: [u8; 64],
}

/// A parsed TDX quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The header.
    pub header: Header,
    /// The TD report body.
    pub report: TdReport,
    /// The signed bytes: header and body (and, in v5, the body descriptor).
    pub signed: Vec<u8>,
    /// ECDSA P-256 signature over `signed`, raw r‖s.
    pub signature: [u8; 64],
    /// The attestation public key, raw x‖y.
    pub attestation_key: [u8; 64],
    /// The quoting enclave's report.
    pub qe_report: EnclaveReport,
    /// Its signature by the PCK key, raw r‖s.
    pub qe_report_signature: [u8; 64],
    /// QE authentication data.
    pub qe_auth_data: Vec<u8>,
    /// The PCK certificate chain (type 5 certification data), PEM, trailing NULs removed.
    pub pck_chain_pem: Vec<u8>,
    /// Bytes after the signature data (usually zero padding of the capture buffer;
    /// unsigned and ignored), counted.
    pub trailing_zeros: usize,
    /// Whether any of them is not zero (go-tdx-guest's sample appends text).
    pub trailing_nonzero: bool,
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TdxError> {
        let end = self.pos.checked_add(n).ok_or(TdxError::Truncated(what))?;
        let out = self
            .data
            .get(self.pos..end)
            .ok_or(TdxError::Truncated(what))?;
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], TdxError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, TdxError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, TdxError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn len32(&mut self, what: &'static str) -> Result<usize, TdxError> {
        let n = usize::try_from(self.u32(what)?).map_err(|_| TdxError::Truncated(what))?;
        if n > MAX_FIELD {
            return Err(TdxError::Truncated(what));
        }
        Ok(n)
    }
}

fn parse_header(r: &mut Reader<'_>) -> Result<Header, TdxError> {
    let version = r.u16("header")?;
    let att_key_type = r.u16("header")?;
    let tee_type = r.u32("header")?;
    let qe_svn = r.u16("header")?;
    let pce_svn = r.u16("header")?;
    let qe_vendor_id = r.array("header")?;
    let user_data = r.array("header")?;
    if version != 4 && version != 5 {
        return Err(TdxError::UnsupportedVersion(version));
    }
    if att_key_type != ATT_KEY_ECDSA_P256 {
        return Err(TdxError::UnsupportedKeyType(att_key_type));
    }
    if tee_type != TEE_TYPE_TDX {
        return Err(TdxError::NotTdx(tee_type));
    }
    Ok(Header {
        version,
        att_key_type,
        tee_type,
        qe_svn,
        pce_svn,
        qe_vendor_id,
        user_data,
    })
}

fn parse_td_report(body: &[u8], body_type: u16) -> Result<TdReport, TdxError> {
    let mut r = Reader { data: body, pos: 0 };
    let w = "TD report body";
    let tee_tcb_svn = r.array(w)?;
    let mr_seam = r.array(w)?;
    let mr_signer_seam = r.array(w)?;
    let seam_attributes = r.array(w)?;
    let td_attributes = r.array(w)?;
    let xfam = r.array(w)?;
    let mr_td = r.array(w)?;
    let mr_config_id = r.array(w)?;
    let mr_owner = r.array(w)?;
    let mr_owner_config = r.array(w)?;
    let rtmr = [r.array(w)?, r.array(w)?, r.array(w)?, r.array(w)?];
    let report_data = r.array(w)?;
    let (tee_tcb_svn2, mr_service_td) = if body_type == 3 {
        (Some(r.array(w)?), Some(r.array(w)?))
    } else {
        (None, None)
    };
    Ok(TdReport {
        body_type,
        tee_tcb_svn,
        mr_seam,
        mr_signer_seam,
        seam_attributes,
        td_attributes,
        xfam,
        mr_td,
        mr_config_id,
        mr_owner,
        mr_owner_config,
        rtmr,
        report_data,
        tee_tcb_svn2,
        mr_service_td,
    })
}

impl EnclaveReport {
    /// Parse a 384-byte SGX report.
    ///
    /// # Errors
    /// [`TdxError::Truncated`] when shorter.
    pub fn parse(raw: &[u8]) -> Result<Self, TdxError> {
        let raw = raw
            .get(..ENCLAVE_REPORT_LEN)
            .ok_or(TdxError::Truncated("QE report"))?;
        let mut r = Reader { data: raw, pos: 0 };
        let w = "QE report";
        let cpu_svn = r.array(w)?;
        let misc_select = r.u32(w)?;
        r.take(28, w)?;
        let attributes = r.array(w)?;
        let mr_enclave = r.array(w)?;
        r.take(32, w)?;
        let mr_signer = r.array(w)?;
        r.take(96, w)?;
        let isv_prod_id = r.u16(w)?;
        let isv_svn = r.u16(w)?;
        r.take(60, w)?;
        let report_data = r.array(w)?;
        Ok(Self {
            raw: raw.to_vec(),
            cpu_svn,
            misc_select,
            attributes,
            mr_enclave,
            mr_signer,
            isv_prod_id,
            isv_svn,
            report_data,
        })
    }
}

impl Quote {
    /// Parse a TDX quote (v4 or v5). Never panics.
    ///
    /// # Errors
    /// A [`TdxError`] naming the field that is truncated or unsupported.
    pub fn parse(data: &[u8]) -> Result<Self, TdxError> {
        let mut r = Reader { data, pos: 0 };
        let header = parse_header(&mut r)?;
        let (body_type, body_len) = if header.version == 4 {
            (2u16, TD10_LEN)
        } else {
            let body_type = r.u16("body descriptor")?;
            let size = r.len32("body descriptor")?;
            let expected = match body_type {
                2 => TD10_LEN,
                3 => TD15_LEN,
                other => return Err(TdxError::UnsupportedBodyType(other)),
            };
            if size != expected {
                return Err(TdxError::BodySize {
                    body_type,
                    size,
                    expected,
                });
            }
            (body_type, size)
        };
        let body = r.take(body_len, "TD report body")?;
        let report = parse_td_report(body, body_type)?;
        let signed_len = r.pos;
        let signed = data
            .get(..signed_len)
            .ok_or(TdxError::Truncated("signed part"))?
            .to_vec();

        let sig_len = r.len32("signature data length")?;
        let sig_data = r.take(sig_len, "signature data")?;
        let rest = data.get(r.pos..).unwrap_or_default();
        let trailing_zeros = rest.len();
        let trailing_nonzero = rest.iter().any(|&b| b != 0);

        let mut s = Reader {
            data: sig_data,
            pos: 0,
        };
        let signature = s.array("quote signature")?;
        let attestation_key = s.array("attestation key")?;
        let cert_type = s.u16("certification data type")?;
        let cert_len = s.len32("certification data size")?;
        let cert = s.take(cert_len, "certification data")?;
        if cert_type != 6 {
            return Err(TdxError::UnsupportedCertData(cert_type));
        }
        let mut c = Reader { data: cert, pos: 0 };
        let qe_report = EnclaveReport::parse(c.take(ENCLAVE_REPORT_LEN, "QE report")?)?;
        let qe_report_signature = c.array("QE report signature")?;
        let auth_len = usize::from(c.u16("QE authentication data size")?);
        let qe_auth_data = c.take(auth_len, "QE authentication data")?.to_vec();
        let inner_type = c.u16("PCK certification data type")?;
        let inner_len = c.len32("PCK certification data size")?;
        let inner = c.take(inner_len, "PCK certification data")?;
        if inner_type != 5 {
            return Err(TdxError::UnsupportedCertData(inner_type));
        }
        let mut end = inner.len();
        while end > 0 && inner.get(end - 1) == Some(&0) {
            end -= 1;
        }
        let pck_chain_pem = inner.get(..end).unwrap_or_default().to_vec();
        Ok(Self {
            header,
            report,
            signed,
            signature,
            attestation_key,
            qe_report,
            qe_report_signature,
            qe_auth_data,
            pck_chain_pem,
            trailing_zeros,
            trailing_nonzero,
        })
    }
}
