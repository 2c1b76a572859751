//! X.509 certificates and CRLs for the evidence verifiers (SEV-SNP, TDX, NVIDIA).
//!
//! Parsing is `x509-parser`'s; every signature is checked with `ring`. A parsed
//! [`Certificate`] owns its bytes, so a verifier can parse a chain once and keep it.
//! Nothing here trusts anything: callers pin the roots and decide what a chain means.
//!
//! Signature algorithms accepted on certificates and CRLs: RSASSA-PSS with SHA-256 or
//! SHA-384 (salt length equal to the hash length, as AMD's certificates use),
//! PKCS #1 v1.5 RSA with SHA-256 or SHA-384, and ECDSA with SHA-256 or SHA-384 on
//! P-256 or P-384. Anything else is an error, never skipped.

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use time::OffsetDateTime;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_HASH_SHA256,
    OID_NIST_HASH_SHA384, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA,
    OID_PKCS1_SHA384WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// Why a certificate or CRL was refused. Each variant names the certificate (by subject)
/// or the CRL (by issuer) that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum X509Error {
    /// Not a DER certificate.
    #[error("not a DER X.509 certificate: {0}")]
    Der(String),
    /// PEM armour that does not decode.
    #[error("PEM: {0}")]
    Pem(String),
    /// Input with neither a certificate nor PEM armour.
    #[error("no certificate found in the input")]
    Empty,
    /// Bytes after the certificate's DER encoding.
    #[error("{0} trailing bytes after the certificate")]
    TrailingData(usize),
    /// A signature algorithm this module does not verify.
    #[error("{subject}: unsupported signature algorithm {oid}")]
    UnsupportedSignatureAlgorithm {
        /// The signed object's subject (or CRL issuer).
        subject: String,
        /// The algorithm's OID.
        oid: String,
    },
    /// A public key type or curve this module does not use.
    #[error("{subject}: unsupported public key {detail}")]
    UnsupportedKey {
        /// The key's certificate subject.
        subject: String,
        /// What the key is.
        detail: String,
    },
    /// The signature does not verify with the issuer's key.
    #[error("signature of {subject} does not verify with the key of {issuer}")]
    BadSignature {
        /// The signed object's subject (or "CRL of …").
        subject: String,
        /// The claimed signer's subject.
        issuer: String,
    },
    /// The issuer name does not match the signer's subject.
    #[error("{subject} names issuer {named}, not {signer}")]
    IssuerMismatch {
        /// The certificate's subject.
        subject: String,
        /// The issuer it names.
        named: String,
        /// The subject of the certificate offered as its issuer.
        signer: String,
    },
    /// Checked before `notBefore`.
    #[error("{subject} is not valid before {not_before} (checked at {at})")]
    NotYetValid {
        /// The certificate's subject.
        subject: String,
        /// Its `notBefore`.
        not_before: OffsetDateTime,
        /// The verification time.
        at: OffsetDateTime,
    },
    /// Checked after `notAfter`.
    #[error("{subject} expired at {not_after} (checked at {at})")]
    Expired {
        /// The certificate's subject.
        subject: String,
        /// Its `notAfter`.
        not_after: OffsetDateTime,
        /// The verification time.
        at: OffsetDateTime,
    },
    /// Not a DER CRL.
    #[error("not a DER X.509 CRL: {0}")]
    CrlDer(String),
    /// A CRL outside its `thisUpdate`..`nextUpdate` window.
    #[error(
        "CRL of {issuer} is not current at {at} (thisUpdate {this_update}, nextUpdate {next_update:?})"
    )]
    CrlNotCurrent {
        /// The CRL's issuer.
        issuer: String,
        /// Its `thisUpdate`.
        this_update: OffsetDateTime,
        /// Its `nextUpdate`, when present.
        next_update: Option<OffsetDateTime>,
        /// The verification time.
        at: OffsetDateTime,
    },
    /// The CRL was issued by someone else than the certificate's issuer.
    #[error("CRL of {crl_issuer} does not cover {subject}, issued by {issuer}")]
    CrlWrongIssuer {
        /// The CRL's issuer.
        crl_issuer: String,
        /// The certificate's subject.
        subject: String,
        /// The certificate's issuer.
        issuer: String,
    },
    /// The certificate's serial number is on the CRL.
    #[error("{subject} (serial {serial}) is revoked by the CRL of {issuer}")]
    Revoked {
        /// The certificate's subject.
        subject: String,
        /// Its serial number, hex.
        serial: String,
        /// The CRL's issuer.
        issuer: String,
    },
}

/// The kind of a certificate's public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyKind {
    /// RSA (the key is a DER `RSAPublicKey`).
    Rsa,
    /// ECDSA on P-256 (the key is an uncompressed SEC1 point).
    EcP256,
    /// ECDSA on P-384 (the key is an uncompressed SEC1 point).
    EcP384,
}

/// A certificate extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Dotted OID.
    pub oid: String,
    /// The critical flag.
    pub critical: bool,
    /// The extension's `extnValue` contents (DER of the extension's own type).
    pub value: Vec<u8>,
}

/// The parts of a signed X.509 object needed to check its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signed {
    tbs: Vec<u8>,
    algorithm: SigAlg,
    signature: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigAlg {
    RsaPss(Hash),
    RsaPkcs1(Hash),
    Ecdsa(Hash),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
}

/// A parsed certificate that owns its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
    signed: Signed,
    subject: String,
    issuer: String,
    subject_der: Vec<u8>,
    issuer_der: Vec<u8>,
    serial: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    key_kind: KeyKind,
    public_key: Vec<u8>,
    spki_der: Vec<u8>,
    is_ca: bool,
    extensions: Vec<Extension>,
}

impl Certificate {
    /// Parse one DER certificate; trailing bytes are an error.
    ///
    /// # Errors
    /// When the bytes are not a certificate, or it uses a signature algorithm or key
    /// type listed as unsupported in the module documentation.
    pub fn from_der(der: &[u8]) -> Result<Self, X509Error> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| X509Error::Der(e.to_string()))?;
        if !rest.is_empty() {
            return Err(X509Error::TrailingData(rest.len()));
        }
        let tbs = &cert.tbs_certificate;
        let subject = tbs.subject.to_string();
        // x509-parser ignores the unused-bits octet of the signature BIT STRING; one that
        // is not zero is the same certificate re-encoded (malleable bytes): refused.
        if cert.signature_value.unused_bits != 0 {
            return Err(X509Error::Der(format!(
                "{subject}: signature BIT STRING with {} unused bits",
                cert.signature_value.unused_bits
            )));
        }
        let algorithm = sig_alg(&subject, &cert.signature_algorithm)?;
        // RFC 5280 4.1.1.2: the outer signatureAlgorithm is not signed; it must be the
        // same bytes as the signed one, or a certificate could be altered unnoticed.
        if !algorithms_agree(der) {
            return Err(X509Error::UnsupportedSignatureAlgorithm {
                subject,
                oid: "outer signatureAlgorithm differs from the signed one".to_owned(),
            });
        }
        let (key_kind, public_key) = key_of(&subject, &tbs.subject_pki)?;
        let is_ca = tbs
            .basic_constraints()
            .map_err(|e| X509Error::Der(format!("{subject}: basicConstraints: {e}")))?
            .is_some_and(|bc| bc.value.ca);
        Ok(Self {
            der: cert.as_raw().to_vec(),
            signed: Signed {
                tbs: tbs.as_ref().to_vec(),
                algorithm,
                signature: cert.signature_value.data.to_vec(),
            },
            issuer: tbs.issuer.to_string(),
            subject_der: tbs.subject.as_raw().to_vec(),
            issuer_der: tbs.issuer.as_raw().to_vec(),
            serial: tbs.raw_serial().to_vec(),
            not_before: tbs.validity.not_before.to_datetime(),
            not_after: tbs.validity.not_after.to_datetime(),
            key_kind,
            public_key: public_key.to_vec(),
            spki_der: tbs.subject_pki.raw.to_vec(),
            is_ca,
            extensions: tbs
                .extensions()
                .iter()
                .map(|e| Extension {
                    oid: e.oid.to_id_string(),
                    critical: e.critical,
                    value: e.value.to_vec(),
                })
                .collect(),
            subject,
        })
    }

    /// Every certificate in `input`: PEM (one or more `CERTIFICATE` blocks, other
    /// blocks ignored) or a single DER certificate.
    ///
    /// # Errors
    /// When PEM armour does not decode, a certificate does not parse, or there is none.
    pub fn all_from_pem_or_der(input: &[u8]) -> Result<Vec<Self>, X509Error> {
        let trimmed = input.trim_ascii_start();
        if !trimmed.starts_with(b"-----BEGIN") {
            return Self::from_der(input).map(|c| vec![c]);
        }
        let mut certs = Vec::new();
        for pem in x509_parser::pem::Pem::iter_from_buffer(trimmed) {
            let pem = pem.map_err(|e| X509Error::Pem(e.to_string()))?;
            if pem.label == "CERTIFICATE" {
                certs.push(Self::from_der(&pem.contents)?);
            }
        }
        if certs.is_empty() {
            return Err(X509Error::Empty);
        }
        Ok(certs)
    }

    /// The DER encoding.
    #[must_use]
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The subject, as an RFC 4514-style string.
    #[must_use]
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The issuer, as an RFC 4514-style string.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The serial number's content octets (big-endian, as encoded).
    #[must_use]
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }

    /// `notBefore`.
    #[must_use]
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// `notAfter`.
    #[must_use]
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The public key's kind.
    #[must_use]
    pub fn key_kind(&self) -> KeyKind {
        self.key_kind
    }

    /// The public key: a DER `RSAPublicKey`, or an uncompressed SEC1 EC point.
    #[must_use]
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The DER `SubjectPublicKeyInfo`.
    #[must_use]
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Whether basicConstraints says CA.
    #[must_use]
    pub fn is_ca(&self) -> bool {
        self.is_ca
    }

    /// All extensions, in order.
    #[must_use]
    pub fn extensions(&self) -> &[Extension] {
        &self.extensions
    }

    /// The extension with the dotted `oid`, if present.
    #[must_use]
    pub fn extension(&self, oid: &str) -> Option<&Extension> {
        self.extensions.iter().find(|e| e.oid == oid)
    }

    /// Whether this certificate is self-issued and its signature verifies with its own key.
    #[must_use]
    pub fn is_self_signed(&self) -> bool {
        self.verify_issued_by(self).is_ok()
    }

    /// Check that `issuer` issued this certificate: the issuer name matches the
    /// issuer's subject, and the signature verifies with the issuer's key.
    ///
    /// # Errors
    /// [`X509Error::IssuerMismatch`], [`X509Error::BadSignature`], or an unsupported
    /// algorithm/key combination.
    pub fn verify_issued_by(&self, issuer: &Certificate) -> Result<(), X509Error> {
        if self.issuer_der != issuer.subject_der {
            return Err(X509Error::IssuerMismatch {
                subject: self.subject.clone(),
                named: self.issuer.clone(),
                signer: issuer.subject.clone(),
            });
        }
        verify_signed(&self.signed, &self.subject, issuer)
    }

    /// Check `notBefore <= at <= notAfter`.
    ///
    /// # Errors
    /// [`X509Error::NotYetValid`] or [`X509Error::Expired`].
    pub fn check_valid_at(&self, at: OffsetDateTime) -> Result<(), X509Error> {
        if at < self.not_before {
            return Err(X509Error::NotYetValid {
                subject: self.subject.clone(),
                not_before: self.not_before,
                at,
            });
        }
        if at > self.not_after {
            return Err(X509Error::Expired {
                subject: self.subject.clone(),
                not_after: self.not_after,
                at,
            });
        }
        Ok(())
    }

    /// Verify `signature` over `message` with this certificate's key, using `algorithm`
    /// (for instance `ring::signature::ECDSA_P384_SHA384_FIXED` for an SEV-SNP report).
    ///
    /// # Errors
    /// [`X509Error::BadSignature`] naming `what` as the signed object.
    pub fn verify_with_key(
        &self,
        algorithm: &'static dyn VerificationAlgorithm,
        message: &[u8],
        signature: &[u8],
        what: &str,
    ) -> Result<(), X509Error> {
        UnparsedPublicKey::new(algorithm, &self.public_key)
            .verify(message, signature)
            .map_err(|_| X509Error::BadSignature {
                subject: what.to_owned(),
                issuer: self.subject.clone(),
            })
    }
}

/// A parsed certificate revocation list that owns its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    signed: Signed,
    issuer: String,
    issuer_der: Vec<u8>,
    this_update: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
    revoked: Vec<Vec<u8>>,
}

impl Crl {
    /// Parse one DER CRL; trailing bytes are an error.
    ///
    /// # Errors
    /// When the bytes are not a CRL or use an unsupported signature algorithm.
    pub fn from_der(der: &[u8]) -> Result<Self, X509Error> {
        let (rest, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| X509Error::CrlDer(e.to_string()))?;
        if !rest.is_empty() {
            return Err(X509Error::CrlDer(format!("{} trailing bytes", rest.len())));
        }
        let tbs = &crl.tbs_cert_list;
        let issuer = tbs.issuer.to_string();
        let what = format!("CRL of {issuer}");
        if crl.signature_value.unused_bits != 0 {
            return Err(X509Error::CrlDer(format!(
                "{what}: signature BIT STRING with {} unused bits",
                crl.signature_value.unused_bits
            )));
        }
        let algorithm = sig_alg(&what, &crl.signature_algorithm)?;
        Ok(Self {
            signed: Signed {
                tbs: tbs.as_ref().to_vec(),
                algorithm,
                signature: crl.signature_value.data.to_vec(),
            },
            issuer_der: tbs.issuer.as_raw().to_vec(),
            this_update: tbs.this_update.to_datetime(),
            next_update: tbs.next_update.map(|t| t.to_datetime()),
            revoked: crl
                .iter_revoked_certificates()
                .map(|r| strip_zeros(r.raw_serial()).to_vec())
                .collect(),
            issuer,
        })
    }

    /// A CRL as PEM (`X509 CRL`) or DER.
    ///
    /// # Errors
    /// As [`Crl::from_der`], or when the PEM armour does not decode.
    pub fn from_pem_or_der(input: &[u8]) -> Result<Self, X509Error> {
        let trimmed = input.trim_ascii_start();
        if !trimmed.starts_with(b"-----BEGIN") {
            return Self::from_der(input);
        }
        for pem in x509_parser::pem::Pem::iter_from_buffer(trimmed) {
            let pem = pem.map_err(|e| X509Error::Pem(e.to_string()))?;
            if pem.label == "X509 CRL" {
                return Self::from_der(&pem.contents);
            }
        }
        Err(X509Error::CrlDer(
            "no X509 CRL block in the PEM input".to_owned(),
        ))
    }

    /// The issuer, as an RFC 4514-style string.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `thisUpdate`.
    #[must_use]
    pub fn this_update(&self) -> OffsetDateTime {
        self.this_update
    }

    /// `nextUpdate`, when present.
    #[must_use]
    pub fn next_update(&self) -> Option<OffsetDateTime> {
        self.next_update
    }

    /// How many serial numbers the CRL lists.
    #[must_use]
    pub fn revoked_count(&self) -> usize {
        self.revoked.len()
    }

    /// Check that `issuer` signed this CRL (name and signature).
    ///
    /// # Errors
    /// [`X509Error::IssuerMismatch`] or [`X509Error::BadSignature`].
    pub fn verify_issued_by(&self, issuer: &Certificate) -> Result<(), X509Error> {
        let what = format!("CRL of {}", self.issuer);
        if self.issuer_der != issuer.subject_der {
            return Err(X509Error::IssuerMismatch {
                subject: what,
                named: self.issuer.clone(),
                signer: issuer.subject.clone(),
            });
        }
        verify_signed(&self.signed, &what, issuer)
    }

    /// Check `thisUpdate <= at` and, when present, `at <= nextUpdate`.
    ///
    /// # Errors
    /// [`X509Error::CrlNotCurrent`].
    pub fn check_current_at(&self, at: OffsetDateTime) -> Result<(), X509Error> {
        let late = self.next_update.is_some_and(|next| at > next);
        if at < self.this_update || late {
            return Err(X509Error::CrlNotCurrent {
                issuer: self.issuer.clone(),
                this_update: self.this_update,
                next_update: self.next_update,
                at,
            });
        }
        Ok(())
    }

    /// Check that `cert` is issued by this CRL's issuer and is not listed.
    ///
    /// # Errors
    /// [`X509Error::CrlWrongIssuer`] or [`X509Error::Revoked`].
    pub fn check_not_revoked(&self, cert: &Certificate) -> Result<(), X509Error> {
        if cert.issuer_der != self.issuer_der {
            return Err(X509Error::CrlWrongIssuer {
                crl_issuer: self.issuer.clone(),
                subject: cert.subject.clone(),
                issuer: cert.issuer.clone(),
            });
        }
        let serial = strip_zeros(&cert.serial);
        if self.revoked.iter().any(|r| r.as_slice() == serial) {
            return Err(X509Error::Revoked {
                subject: cert.subject.clone(),
                serial: hex::encode(serial),
                issuer: self.issuer.clone(),
            });
        }
        Ok(())
    }
}

/// One DER element: (tag, the whole element, its contents, what follows it).
pub(crate) type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

/// One DER element ([`Tlv`]). Lengths of up to three octets; `None` when the input ends
/// early or the length is malformed.
pub(crate) fn der_tlv(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 {
            return None;
        }
        let (bytes, r) = rest.split_at_checked(n)?;
        rest = r;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    let whole = input.get(..input.len() - rest.len())?;
    Some((tag, whole, contents, rest))
}

/// Whether a certificate's outer `signatureAlgorithm` has exactly the bytes of
/// `tbsCertificate.signature`.
fn algorithms_agree(der: &[u8]) -> bool {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue };
    // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, ... }.
    (|| {
        let (_, _, certificate, _) = der_tlv(der)?;
        let (_, _, tbs, rest) = der_tlv(certificate)?;
        let (_, outer, _, _) = der_tlv(rest)?;
        let (tag, _, _, mut fields) = der_tlv(tbs)?;
        if tag == 0xa0 {
            fields = der_tlv(fields)?.3;
        }
        let (_, inner, _, _) = der_tlv(fields)?;
        Some(outer == inner)
    })()
    .unwrap_or(false)
}

/// Serial numbers compared without DER's leading zero octets.
fn strip_zeros(serial: &[u8]) -> &[u8] {
    let start = serial.iter().position(|&b| b != 0).unwrap_or(serial.len());
    &serial[start..]
}

fn sig_alg(subject: &str, alg: &AlgorithmIdentifier<'_>) -> Result<SigAlg, X509Error> {
    let unsupported = |oid: String| X509Error::UnsupportedSignatureAlgorithm {
        subject: subject.to_owned(),
        oid,
    };
    let oid = &alg.algorithm;
    if *oid == OID_PKCS1_RSASSAPSS {
        let Ok(SignatureAlgorithm::RSASSA_PSS(params)) = SignatureAlgorithm::try_from(alg) else {
            return Err(unsupported(
                "RSASSA-PSS with malformed parameters".to_owned(),
            ));
        };
        let hash_oid = params.hash_algorithm_oid();
        let (hash, len) = if *hash_oid == OID_NIST_HASH_SHA384 {
            (Hash::Sha384, 48)
        } else if *hash_oid == OID_NIST_HASH_SHA256 {
            (Hash::Sha256, 32)
        } else {
            return Err(unsupported(format!("RSASSA-PSS with hash {hash_oid}")));
        };
        let mgf_ok = params
            .mask_gen_algorithm()
            .is_ok_and(|mgf| mgf.hash == *hash_oid);
        if params.salt_length() != len || !mgf_ok {
            return Err(unsupported(format!(
                "RSASSA-PSS with hash {hash_oid} but salt length {} or MGF1 hash differing",
                params.salt_length()
            )));
        }
        return Ok(SigAlg::RsaPss(hash));
    }
    if *oid == OID_PKCS1_SHA256WITHRSA {
        Ok(SigAlg::RsaPkcs1(Hash::Sha256))
    } else if *oid == OID_PKCS1_SHA384WITHRSA {
        Ok(SigAlg::RsaPkcs1(Hash::Sha384))
    } else if *oid == OID_SIG_ECDSA_WITH_SHA256 {
        Ok(SigAlg::Ecdsa(Hash::Sha256))
    } else if *oid == OID_SIG_ECDSA_WITH_SHA384 {
        Ok(SigAlg::Ecdsa(Hash::Sha384))
    } else {
        Err(unsupported(oid.to_id_string()))
    }
}

fn key_of<'a>(
    subject: &str,
    spki: &'a SubjectPublicKeyInfo<'_>,
) -> Result<(KeyKind, &'a [u8]), X509Error> {
    let unsupported = |detail: String| X509Error::UnsupportedKey {
        subject: subject.to_owned(),
        detail,
    };
    let alg = &spki.algorithm.algorithm;
    let key = spki.subject_public_key.data.as_ref();
    if *alg == OID_PKCS1_RSAENCRYPTION || *alg == OID_PKCS1_RSASSAPSS {
        return Ok((KeyKind::Rsa, key));
    }
    if *alg != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(unsupported(format!("algorithm {alg}")));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .ok_or_else(|| unsupported("EC key without a named curve".to_owned()))?;
    if curve == OID_EC_P256 {
        Ok((KeyKind::EcP256, key))
    } else if curve == OID_NIST_EC_P384 {
        Ok((KeyKind::EcP384, key))
    } else {
        Err(unsupported(format!("curve {curve}")))
    }
}

fn verify_signed(signed: &Signed, what: &str, issuer: &Certificate) -> Result<(), X509Error> {
    let algorithm: &'static dyn VerificationAlgorithm = match (signed.algorithm, issuer.key_kind) {
        (SigAlg::RsaPss(Hash::Sha384), KeyKind::Rsa) => &signature::RSA_PSS_2048_8192_SHA384,
        (SigAlg::RsaPss(Hash::Sha256), KeyKind::Rsa) => &signature::RSA_PSS_2048_8192_SHA256,
        (SigAlg::RsaPkcs1(Hash::Sha384), KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA384,
        (SigAlg::RsaPkcs1(Hash::Sha256), KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (SigAlg::Ecdsa(Hash::Sha256), KeyKind::EcP256) => &signature::ECDSA_P256_SHA256_ASN1,
        (SigAlg::Ecdsa(Hash::Sha384), KeyKind::EcP256) => &signature::ECDSA_P256_SHA384_ASN1,
        (SigAlg::Ecdsa(Hash::Sha256), KeyKind::EcP384) => &signature::ECDSA_P384_SHA256_ASN1,
        (SigAlg::Ecdsa(Hash::Sha384), KeyKind::EcP384) => &signature::ECDSA_P384_SHA384_ASN1,
        (alg, key) => {
            return Err(X509Error::UnsupportedKey {
                subject: issuer.subject.clone(),
                detail: format!("{key:?} key for a {alg:?} signature on {what}"),
            });
        }
    };
    UnparsedPublicKey::new(algorithm, &issuer.public_key)
        .verify(&signed.tbs, &signed.signature)
        .map_err(|_| X509Error::BadSignature {
            subject: what.to_owned(),
            issuer: issuer.subject.clone(),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn testdata(path: &str) -> Vec<u8> {
        let p = format!(
            "{}/../../shared/testdata/{path}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn amd_milan_chain_verifies_and_a_flipped_byte_does_not() {
        let vcek = Certificate::from_der(&testdata("snp/virtee-sev-milan-v2/vcek.der")).unwrap();
        let chain =
            Certificate::all_from_pem_or_der(&testdata("snp/virtee-sev-milan-v2/cert_chain.pem"))
                .unwrap();
        let [ask, ark] = chain.as_slice() else {
            panic!("expected ASK and ARK, found {}", chain.len());
        };
        assert!(ark.is_self_signed());
        assert!(ark.is_ca() && ask.is_ca());
        ask.verify_issued_by(ark).unwrap();
        vcek.verify_issued_by(ask).unwrap();
        assert_eq!(vcek.key_kind(), KeyKind::EcP384);
        assert!(
            vcek.serial().iter().all(|&b| b == 0),
            "AMD VCEKs have serial 0"
        );
        assert!(matches!(
            vcek.verify_issued_by(ark),
            Err(X509Error::IssuerMismatch { .. })
        ));

        let mut der = vcek.der().to_vec();
        der[300] ^= 0x01;
        // Either the flipped byte breaks the encoding, or the signature.
        match Certificate::from_der(&der) {
            Err(_) => {}
            Ok(bad) => assert!(matches!(
                bad.verify_issued_by(ask),
                Err(X509Error::BadSignature { .. })
            )),
        }
    }

    #[test]
    fn validity_window_is_enforced() {
        let vcek = Certificate::from_der(&testdata("snp/virtee-sev-milan-v2/vcek.der")).unwrap();
        let inside = time::macros::datetime!(2025-01-01 0:00 UTC);
        vcek.check_valid_at(inside).unwrap();
        assert!(matches!(
            vcek.check_valid_at(time::macros::datetime!(2031-01-01 0:00 UTC)),
            Err(X509Error::Expired { .. })
        ));
        assert!(matches!(
            vcek.check_valid_at(time::macros::datetime!(2020-01-01 0:00 UTC)),
            Err(X509Error::NotYetValid { .. })
        ));
    }

    #[test]
    fn amd_crl_is_signed_by_the_ark_and_does_not_list_the_ask() {
        let crl = Crl::from_pem_or_der(&testdata("roots/amd/crl/milan_ark_crl.pem")).unwrap();
        let ark = Certificate::all_from_pem_or_der(&testdata("roots/amd/milan/ark.pem")).unwrap();
        let ask = Certificate::all_from_pem_or_der(&testdata("roots/amd/milan/ask.pem")).unwrap();
        crl.verify_issued_by(&ark[0]).unwrap();
        crl.check_not_revoked(&ask[0]).unwrap();
        assert!(matches!(
            crl.verify_issued_by(&ask[0]),
            Err(X509Error::IssuerMismatch { .. })
        ));
        let genoa = Certificate::all_from_pem_or_der(&testdata("roots/amd/genoa/ark.pem")).unwrap();
        assert!(crl.verify_issued_by(&genoa[0]).is_err());
    }

    #[test]
    fn an_outer_algorithm_differing_from_the_signed_one_is_refused() {
        let der = testdata("snp/virtee-sev-milan-v2/vcek.der");
        assert!(algorithms_agree(&der));
        // The outer AlgorithmIdentifier follows the TBS; change its last octet (inside
        // the RSASSA-PSS parameters), which the signature does not cover.
        let (_, _, certificate, _) = der_tlv(&der).unwrap();
        let (_, tbs, _, _) = der_tlv(certificate).unwrap();
        let (_, outer, _, _) = der_tlv(&certificate[tbs.len()..]).unwrap();
        let at = der.len() - certificate.len() + tbs.len() + outer.len() - 1;
        let mut bad = der.clone();
        bad[at] ^= 0x01;
        assert!(!algorithms_agree(&bad));
        assert!(Certificate::from_der(&bad).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [
            &b""[..],
            b"\x30",
            b"-----BEGIN CERTIFICATE-----\n!!\n",
            &[0x30; 64],
        ] {
            assert!(Certificate::all_from_pem_or_der(input).is_err());
            assert!(Crl::from_pem_or_der(input).is_err());
        }
    }
}
