//! OCSP responses (RFC 6960), offline: parse a DER `OCSPResponse`, verify its
//! signature (by the certificate's issuer, or by a responder certificate the issuer
//! issued with `id-kp-OCSPSigning`), check that it is current, and read the status of
//! one certificate.
//!
//! Current means `thisUpdate <= at <= nextUpdate`; a response without `nextUpdate` is
//! current for [`MAX_AGE_WITHOUT_NEXT_UPDATE`] after `thisUpdate`. CertIDs hashed with
//! SHA-1, SHA-256 or SHA-384 are recognised. Nonces are not used (the evidence is
//! verified offline, after the fact).

use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;

use crate::x509::{Certificate, KeyKind};

/// How long a response without `nextUpdate` is taken as current.
pub const MAX_AGE_WITHOUT_NEXT_UPDATE: Duration = Duration::hours(24);

const OID_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
const OID_KP_OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];
const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_EXT_KEY_USAGE: &str = "2.5.29.37";

/// Why an OCSP response was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OcspError {
    /// Not a DER OCSP response (names the structure).
    #[error("OCSP response: malformed {0}")]
    Der(&'static str),
    /// `responseStatus` is not `successful`.
    #[error("OCSP response status {0} (not successful)")]
    Status(u8),
    /// Not a basic OCSP response.
    #[error("OCSP response type is not id-pkix-ocsp-basic")]
    ResponseType,
    /// A signature algorithm or key this module does not verify.
    #[error("OCSP response: unsupported {0}")]
    Unsupported(String),
    /// Neither the issuer nor an authorised responder signed it.
    #[error("OCSP response for {subject} is not signed by {issuer} or a responder it authorised")]
    Signature {
        /// The certificate asked about.
        subject: String,
        /// Its issuer.
        issuer: String,
    },
    /// No single response is about the certificate.
    #[error("no OCSP response covers {0}")]
    NotCovered(String),
    /// The response is outside its validity window.
    #[error(
        "OCSP response for {subject} is not current at {at} (thisUpdate {this_update}, nextUpdate {next_update:?})"
    )]
    NotCurrent {
        /// The certificate asked about.
        subject: String,
        /// `thisUpdate`.
        this_update: OffsetDateTime,
        /// `nextUpdate`.
        next_update: Option<OffsetDateTime>,
        /// The verification time.
        at: OffsetDateTime,
    },
}

/// A certificate's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    /// Not revoked.
    Good,
    /// Revoked at the given time.
    Revoked(OffsetDateTime),
    /// The responder does not know the certificate.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdHash {
    Sha1,
    Sha256,
    Sha384,
}

impl IdHash {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            IdHash::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            IdHash::Sha256 => &ring::digest::SHA256,
            IdHash::Sha384 => &ring::digest::SHA384,
        };
        ring::digest::digest(alg, data).as_ref().to_vec()
    }
}

/// One `SingleResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleResponse {
    hash: IdHash,
    name_hash: Vec<u8>,
    key_hash: Vec<u8>,
    serial: Vec<u8>,
    /// The status.
    pub status: CertStatus,
    /// `thisUpdate`.
    pub this_update: OffsetDateTime,
    /// `nextUpdate`.
    pub next_update: Option<OffsetDateTime>,
}

/// A parsed basic OCSP response.
#[derive(Debug, Clone)]
pub struct OcspResponse {
    tbs: Vec<u8>,
    sig_oid: Vec<u8>,
    signature: Vec<u8>,
    /// Certificates the responder included (a delegated responder's).
    pub certs: Vec<Certificate>,
    /// The single responses.
    pub responses: Vec<SingleResponse>,
}

/// One DER element: (tag, contents, whole element, rest).
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        (
            bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b)),
            rest,
        )
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    let whole_len = input.len() - rest.len();
    Some((tag, contents, input.get(..whole_len)?, rest))
}

fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), OcspError> {
    match tlv(input) {
        Some((t, contents, _, rest)) if t == tag => Ok((contents, rest)),
        _ => Err(OcspError::Der(what)),
    }
}

fn generalized_time(contents: &[u8], what: &'static str) -> Result<OffsetDateTime, OcspError> {
    let err = OcspError::Der(what);
    let text = std::str::from_utf8(contents).map_err(|_| err.clone())?;
    let digits = text.strip_suffix('Z').ok_or(err.clone())?;
    // YYYYMMDDHHMMSS, optionally with fractional seconds (ignored).
    let main = digits.split('.').next().unwrap_or_default();
    if main.len() != 14 || !main.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err);
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> { main.get(r)?.parse().ok() };
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) = (
        num(0..4),
        num(4..6),
        num(6..8),
        num(8..10),
        num(10..12),
        num(12..14),
    ) else {
        return Err(err);
    };
    let month = u8::try_from(mo)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or(err.clone())?;
    let date = time::Date::from_calendar_date(
        i32::try_from(y).map_err(|_| err.clone())?,
        month,
        u8::try_from(d).map_err(|_| err.clone())?,
    )
    .map_err(|_| err.clone())?;
    let t = time::Time::from_hms(
        u8::try_from(h).map_err(|_| err.clone())?,
        u8::try_from(mi).map_err(|_| err.clone())?,
        u8::try_from(s).map_err(|_| err.clone())?,
    )
    .map_err(|_| err)?;
    Ok(date.with_time(t).assume_utc())
}

fn strip_zeros(serial: &[u8]) -> &[u8] {
    let start = serial.iter().position(|&b| b != 0).unwrap_or(serial.len());
    serial.get(start..).unwrap_or_default()
}

impl OcspResponse {
    /// Parse a DER `OCSPResponse` carrying a basic response.
    ///
    /// # Errors
    /// [`OcspError`] naming the malformed structure or the status.
    pub fn from_der(der: &[u8]) -> Result<Self, OcspError> {
        let (resp, rest) = expect(der, 0x30, "OCSPResponse")?;
        if !rest.is_empty() {
            return Err(OcspError::Der("trailing bytes after OCSPResponse"));
        }
        let (status, resp) = expect(resp, 0x0a, "responseStatus")?;
        match status {
            [0] => {}
            [s] => return Err(OcspError::Status(*s)),
            _ => return Err(OcspError::Der("responseStatus")),
        }
        let (bytes, _) = expect(resp, 0xa0, "responseBytes")?;
        let (bytes, _) = expect(bytes, 0x30, "ResponseBytes")?;
        let (oid, bytes) = expect(bytes, 0x06, "responseType")?;
        if oid != OID_BASIC {
            return Err(OcspError::ResponseType);
        }
        let (basic, _) = expect(bytes, 0x04, "response")?;
        let (basic, _) = expect(basic, 0x30, "BasicOCSPResponse")?;
        let Some((0x30, tbs_contents, tbs, basic)) = tlv(basic) else {
            return Err(OcspError::Der("tbsResponseData"));
        };
        let (alg, basic) = expect(basic, 0x30, "signatureAlgorithm")?;
        let (sig_oid, _) = expect(alg, 0x06, "signatureAlgorithm")?;
        let (sig_bits, basic) = expect(basic, 0x03, "signature")?;
        let signature = match sig_bits.split_first() {
            Some((0, sig)) => sig.to_vec(),
            _ => return Err(OcspError::Der("signature BIT STRING")),
        };
        let mut certs = Vec::new();
        if let Ok((wrapped, _)) = expect(basic, 0xa0, "certs") {
            let (mut list, _) = expect(wrapped, 0x30, "certs")?;
            while let Some((_, _, whole, rest)) = tlv(list) {
                certs.push(
                    Certificate::from_der(whole)
                        .map_err(|_| OcspError::Der("responder certificate"))?,
                );
                list = rest;
            }
            if !list.is_empty() {
                return Err(OcspError::Der("certs"));
            }
        }
        let responses = parse_tbs(tbs_contents)?;
        Ok(Self {
            tbs: tbs.to_vec(),
            sig_oid: sig_oid.to_vec(),
            signature,
            certs,
            responses,
        })
    }

    fn verify_by(&self, signer: &Certificate) -> bool {
        use ring::signature as s;
        let alg: &'static dyn s::VerificationAlgorithm =
            match (self.sig_oid.as_slice(), signer.key_kind()) {
                (OID_ECDSA_SHA256, KeyKind::EcP256) => &s::ECDSA_P256_SHA256_ASN1,
                (OID_ECDSA_SHA384, KeyKind::EcP256) => &s::ECDSA_P256_SHA384_ASN1,
                (OID_ECDSA_SHA256, KeyKind::EcP384) => &s::ECDSA_P384_SHA256_ASN1,
                (OID_ECDSA_SHA384, KeyKind::EcP384) => &s::ECDSA_P384_SHA384_ASN1,
                (OID_RSA_SHA256, KeyKind::Rsa) => &s::RSA_PKCS1_2048_8192_SHA256,
                (OID_RSA_SHA384, KeyKind::Rsa) => &s::RSA_PKCS1_2048_8192_SHA384,
                _ => return false,
            };
        signer
            .verify_with_key(alg, &self.tbs, &self.signature, "OCSP response")
            .is_ok()
    }

    /// The status of `cert` (issued by `issuer`) at `at`: the response must be signed
    /// by `issuer` or by an included responder certificate that `issuer` issued with
    /// `id-kp-OCSPSigning` and that is valid at `at`, and be current at `at`.
    ///
    /// # Errors
    /// [`OcspError`] when the response does not establish a status.
    pub fn status_of(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
        at: OffsetDateTime,
    ) -> Result<CertStatus, OcspError> {
        let issuer_name = x509_parser::certificate::X509Certificate::from_der(issuer.der())
            .map(|(_, c)| c.tbs_certificate.subject.as_raw().to_vec())
            .map_err(|_| OcspError::Der("issuer certificate"))?;
        let single = self
            .responses
            .iter()
            .find(|r| {
                strip_zeros(&r.serial) == strip_zeros(cert.serial())
                    && r.name_hash == r.hash.digest(&issuer_name)
                    && r.key_hash == r.hash.digest(issuer.public_key())
            })
            .ok_or_else(|| OcspError::NotCovered(cert.subject().to_owned()))?;
        let signed = self.verify_by(issuer)
            || self.certs.iter().any(|r| {
                r.verify_issued_by(issuer).is_ok()
                    && r.check_valid_at(at).is_ok()
                    && authorised_responder(r)
                    && self.verify_by(r)
            });
        if !signed {
            return Err(OcspError::Signature {
                subject: cert.subject().to_owned(),
                issuer: issuer.subject().to_owned(),
            });
        }
        let until = single
            .next_update
            .unwrap_or(single.this_update + MAX_AGE_WITHOUT_NEXT_UPDATE);
        if at < single.this_update || at > until {
            return Err(OcspError::NotCurrent {
                subject: cert.subject().to_owned(),
                this_update: single.this_update,
                next_update: single.next_update,
                at,
            });
        }
        Ok(single.status)
    }
}

fn authorised_responder(cert: &Certificate) -> bool {
    let Some(eku) = cert.extension(OID_EXT_KEY_USAGE) else {
        return false;
    };
    let Ok((mut list, _)) = expect(&eku.value, 0x30, "extKeyUsage") else {
        return false;
    };
    while let Some((tag, oid, _, rest)) = tlv(list) {
        if tag == 0x06 && oid == OID_KP_OCSP_SIGNING {
            return true;
        }
        list = rest;
    }
    false
}

fn parse_tbs(tbs: &[u8]) -> Result<Vec<SingleResponse>, OcspError> {
    let mut rest = tbs;
    // version [0] EXPLICIT, optional.
    if let Some((0xa0, _, _, after)) = tlv(rest) {
        rest = after;
    }
    // responderID [1] Name or [2] KeyHash.
    match tlv(rest) {
        Some((0xa1 | 0xa2, _, _, after)) => rest = after,
        _ => return Err(OcspError::Der("responderID")),
    }
    let (_, after) = expect(rest, 0x18, "producedAt")?;
    let (mut list, _) = expect(after, 0x30, "responses")?;
    let mut out = Vec::new();
    while !list.is_empty() {
        let (single, after) = expect(list, 0x30, "SingleResponse")?;
        out.push(parse_single(single)?);
        list = after;
    }
    Ok(out)
}

fn parse_single(single: &[u8]) -> Result<SingleResponse, OcspError> {
    let (cert_id, rest) = expect(single, 0x30, "CertID")?;
    let (alg, id) = expect(cert_id, 0x30, "CertID hashAlgorithm")?;
    let (oid, _) = expect(alg, 0x06, "CertID hashAlgorithm")?;
    let hash = match oid {
        OID_SHA1 => IdHash::Sha1,
        OID_SHA256 => IdHash::Sha256,
        OID_SHA384 => IdHash::Sha384,
        _ => return Err(OcspError::Unsupported("CertID hash algorithm".to_owned())),
    };
    let (name_hash, id) = expect(id, 0x04, "issuerNameHash")?;
    let (key_hash, id) = expect(id, 0x04, "issuerKeyHash")?;
    let (serial, _) = expect(id, 0x02, "serialNumber")?;
    let Some((tag, contents, _, rest)) = tlv(rest) else {
        return Err(OcspError::Der("certStatus"));
    };
    let status = match tag {
        0x80 => CertStatus::Good,
        0xa1 => {
            let (when, _) = expect(contents, 0x18, "revocationTime")?;
            CertStatus::Revoked(generalized_time(when, "revocationTime")?)
        }
        0x82 => CertStatus::Unknown,
        _ => return Err(OcspError::Der("certStatus")),
    };
    let (this, rest) = expect(rest, 0x18, "thisUpdate")?;
    let this_update = generalized_time(this, "thisUpdate")?;
    let next_update = match tlv(rest) {
        Some((0xa0, contents, _, _)) => {
            let (next, _) = expect(contents, 0x18, "nextUpdate")?;
            Some(generalized_time(next, "nextUpdate")?)
        }
        _ => None,
    };
    Ok(SingleResponse {
        hash,
        name_hash: name_hash.to_vec(),
        key_hash: key_hash.to_vec(),
        serial: serial.to_vec(),
        status,
        this_update,
        next_update,
    })
}
