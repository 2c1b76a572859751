//! DCAP collateral: TCB Info, QE Identity, their issuer chain and signatures, and the
//! PCK and Root CA CRLs, parsed once (cacheable; verification takes `&Collateral`).
//!
//! ## File layout (names of [`Collateral::from_files`] and of a `--collateral` dir)
//!
//! | name | content | required |
//! |---|---|---|
//! | `tcb_info.json` + `tcb_info.sig.hex` | the exact signed bytes of the `tcbInfo` value; its signature, hex r‖s | one of the two forms |
//! | `tcb_info_response.json` | Intel PCS response `{"tcbInfo":{…},"signature":"hex"}` | one of the two forms |
//! | `tcb_info_issuer_chain.pem` | TCB Signing certificate (+ root) | yes |
//! | `qe_identity.json` + `qe_identity.sig.hex` | the exact signed bytes of `enclaveIdentity`; signature | one of the two forms |
//! | `qe_identity_response.json` | PCS response `{"enclaveIdentity":{…},"signature":"hex"}` | one of the two forms |
//! | `qe_identity_issuer_chain.pem` | TCB Signing certificate (+ root) | no: defaults to `tcb_info_issuer_chain.pem` |
//! | `pck_crl.der` | PCK CRL (platform or processor CA), DER or PEM | yes |
//! | `root_ca_crl.der` | Intel SGX Root CA CRL, DER or PEM | yes |
//! | `pck_crl_issuer_chain.pem` | PCK CRL issuer chain | no: ignored; the CRL is checked against the quote's own PCK CA |

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::TdxError;
use super::tcb::{QeIdentity, TcbInfo};
use crate::x509::{Certificate, Crl};

/// A signed JSON collateral item: the parsed body, the exact signed bytes, the raw
/// r‖s signature, and its validity window.
#[derive(Debug, Clone)]
pub struct Signed<T> {
    /// The parsed body.
    pub body: T,
    /// The exact bytes that were signed.
    pub signed: Vec<u8>,
    /// ECDSA P-256 raw r‖s.
    pub signature: Vec<u8>,
    /// `issueDate`.
    pub issue_date: OffsetDateTime,
    /// `nextUpdate`.
    pub next_update: OffsetDateTime,
    /// The issuer chain, signing certificate first.
    pub chain: Vec<Certificate>,
}

/// Parsed collateral.
#[derive(Debug, Clone)]
pub struct Collateral {
    /// TCB Info.
    pub tcb_info: Signed<TcbInfo>,
    /// QE Identity.
    pub qe_identity: Signed<QeIdentity>,
    /// PCK CRL.
    pub pck_crl: Crl,
    /// Root CA CRL.
    pub root_ca_crl: Crl,
}

#[derive(Deserialize)]
struct TcbInfoResponse<'a> {
    #[serde(rename = "tcbInfo", borrow)]
    body: &'a RawValue,
    signature: String,
}

#[derive(Deserialize)]
struct QeIdentityResponse<'a> {
    #[serde(rename = "enclaveIdentity", borrow)]
    body: &'a RawValue,
    signature: String,
}

fn missing(name: &str) -> TdxError {
    TdxError::Collateral(format!("missing {name}"))
}

fn parse_time(text: &str, what: &str) -> Result<OffsetDateTime, TdxError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| TdxError::Collateral(format!("{what} {text:?}: {e}")))
}

fn hex_sig(text: &[u8], what: &str) -> Result<Vec<u8>, TdxError> {
    let sig =
        hex::decode(text.trim_ascii()).map_err(|e| TdxError::Collateral(format!("{what}: {e}")))?;
    if sig.len() != 64 {
        return Err(TdxError::Collateral(format!(
            "{what}: {} bytes, expected 64 (r‖s)",
            sig.len()
        )));
    }
    Ok(sig)
}

/// (signed bytes, signature) from either form.
fn signed_json(
    files: &BTreeMap<String, Vec<u8>>,
    stem: &str,
    tcb: bool,
) -> Result<(Vec<u8>, Vec<u8>), TdxError> {
    let body_name = format!("{stem}.json");
    let sig_name = format!("{stem}.sig.hex");
    let resp_name = format!("{stem}_response.json");
    if let Some(body) = files.get(&body_name) {
        let sig = files.get(&sig_name).ok_or_else(|| missing(&sig_name))?;
        return Ok((body.clone(), hex_sig(sig, &sig_name)?));
    }
    let resp = files
        .get(&resp_name)
        .ok_or_else(|| missing(&format!("{body_name} or {resp_name}")))?;
    let bad = |e: serde_json::Error| TdxError::Collateral(format!("{resp_name}: {e}"));
    let (raw, sig) = if tcb {
        let r: TcbInfoResponse<'_> = serde_json::from_slice(resp).map_err(bad)?;
        (r.body.get().as_bytes().to_vec(), r.signature)
    } else {
        let r: QeIdentityResponse<'_> = serde_json::from_slice(resp).map_err(bad)?;
        (r.body.get().as_bytes().to_vec(), r.signature)
    };
    Ok((raw, hex_sig(sig.as_bytes(), &resp_name)?))
}

fn chain(files: &BTreeMap<String, Vec<u8>>, name: &str) -> Result<Vec<Certificate>, TdxError> {
    let pem = files.get(name).ok_or_else(|| missing(name))?;
    Certificate::all_from_pem_or_der(pem).map_err(|source| TdxError::X509 {
        what: "collateral issuer chain",
        source,
    })
}

fn crl(files: &BTreeMap<String, Vec<u8>>, name: &str) -> Result<Crl, TdxError> {
    let bytes = files.get(name).ok_or_else(|| missing(name))?;
    Crl::from_pem_or_der(bytes).map_err(|source| TdxError::X509 {
        what: "collateral CRL",
        source,
    })
}

impl Collateral {
    /// Parse collateral from named files (the layout above).
    ///
    /// # Errors
    /// [`TdxError::Collateral`] or [`TdxError::X509`] naming the file.
    pub fn from_files(files: &BTreeMap<String, Vec<u8>>) -> Result<Self, TdxError> {
        let (tcb_signed, tcb_sig) = signed_json(files, "tcb_info", true)?;
        let tcb_body: TcbInfo = serde_json::from_slice(&tcb_signed)
            .map_err(|e| TdxError::Collateral(format!("tcbInfo: {e}")))?;
        let (qe_signed, qe_sig) = signed_json(files, "qe_identity", false)?;
        let qe_body: QeIdentity = serde_json::from_slice(&qe_signed)
            .map_err(|e| TdxError::Collateral(format!("enclaveIdentity: {e}")))?;
        let tcb_chain = chain(files, "tcb_info_issuer_chain.pem")?;
        let qe_chain = if files.contains_key("qe_identity_issuer_chain.pem") {
            chain(files, "qe_identity_issuer_chain.pem")?
        } else {
            tcb_chain.clone()
        };
        Ok(Self {
            tcb_info: Signed {
                issue_date: parse_time(&tcb_body.issue_date, "tcbInfo issueDate")?,
                next_update: parse_time(&tcb_body.next_update, "tcbInfo nextUpdate")?,
                body: tcb_body,
                signed: tcb_signed,
                signature: tcb_sig,
                chain: tcb_chain,
            },
            qe_identity: Signed {
                issue_date: parse_time(&qe_body.issue_date, "enclaveIdentity issueDate")?,
                next_update: parse_time(&qe_body.next_update, "enclaveIdentity nextUpdate")?,
                body: qe_body,
                signed: qe_signed,
                signature: qe_sig,
                chain: qe_chain,
            },
            pck_crl: crl(files, "pck_crl.der")?,
            root_ca_crl: crl(files, "root_ca_crl.der")?,
        })
    }

    /// Read the files of the layout above from a directory (unknown names ignored).
    ///
    /// # Errors
    /// An I/O error, or what [`Collateral::from_files`] returns.
    pub fn from_dir(dir: &std::path::Path) -> Result<Self, TdxError> {
        Self::from_files(&read_dir_files(dir)?)
    }
}

/// The known collateral files present in `dir`, by name.
///
/// # Errors
/// [`TdxError::Collateral`] with the I/O error.
pub fn read_dir_files(dir: &std::path::Path) -> Result<BTreeMap<String, Vec<u8>>, TdxError> {
    const NAMES: [&str; 11] = [
        "tcb_info.json",
        "tcb_info.sig.hex",
        "tcb_info_response.json",
        "tcb_info_issuer_chain.pem",
        "qe_identity.json",
        "qe_identity.sig.hex",
        "qe_identity_response.json",
        "qe_identity_issuer_chain.pem",
        "pck_crl.der",
        "root_ca_crl.der",
        "pck_crl_issuer_chain.pem",
    ];
    let mut files = BTreeMap::new();
    for name in NAMES {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                files.insert(name.to_owned(), bytes);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(TdxError::Collateral(format!("{}: {e}", path.display())));
            }
        }
    }
    Ok(files)
}
