//! `veil-verify fetch tdx`: the DCAP collateral of a TDX quote's platform from Intel's
//! Provisioning Certification Service (PCS, API v4), or a PCCS that mirrors it:
//! - `GET /tdx/certification/v4/tcb?fmspc={fmspc}`: TCB Info, issuer chain in
//!   `TCB-Info-Issuer-Chain`;
//! - `GET /tdx/certification/v4/qe/identity`: the TD_QE identity, issuer chain in
//!   `SGX-Enclave-Identity-Issuer-Chain`;
//! - `GET /sgx/certification/v4/pckcrl?ca={platform|processor}&encoding=der`: the PCK
//!   CRL, issuer chain in `SGX-PCK-CRL-Issuer-Chain`;
//! - the Intel SGX Root CA CRL (Intel's certificate site, or a PCCS's `rootcacrl`).
//!
//! Issuer chains are URL-encoded PEM. The FMSPC and the PCK CA come from the PCK
//! certificate in the quote.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ring::signature::ECDSA_P256_SHA256_FIXED;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use veil_attestation::tdx::tcb::{PckExtensions, QeIdentity, SGX_EXTENSIONS_OID, TcbInfo};
use veil_attestation::tdx::{Collateral, INTEL_SGX_ROOT_CA_DER, Quote};
use veil_attestation::x509::{Certificate, Crl};

use super::{Common, FetchError, Http, cached_or_fetched, refused, write_atomic};

/// Intel's public PCS.
pub const DEFAULT_PCS_URL: &str = "https://api.trustedservices.intel.com";
/// Where Intel publishes the Intel SGX Root CA's CRL (its CRL distribution point).
pub const DEFAULT_ROOT_CRL_URL: &str =
    "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";
/// The Root CA CRL under a PCCS (used when `--pcs-url` names one).
const PCCS_ROOT_CRL_PATH: &str = "/sgx/certification/v4/rootcacrl";

/// `--help` text after the flags.
pub const HELP: &str = "\
A host-side tool for the host operator or an auditor, run ahead of time: never on a
request path (the enclave and the gateway never fetch collateral).

Requests (PCS API v4): /tdx/certification/v4/tcb?fmspc={fmspc},
/tdx/certification/v4/qe/identity, /sgx/certification/v4/pckcrl?ca={platform|processor}&encoding=der
(FMSPC and CA from the quote's PCK certificate), and the Root CA CRL from --root-crl-url
(Intel's certificate site by default; {pcs-url}/sgx/certification/v4/rootcacrl when
--pcs-url is given). Issuer chains come in the TCB-Info-Issuer-Chain,
SGX-Enclave-Identity-Issuer-Chain and SGX-PCK-CRL-Issuer-Chain headers.

Everything is verified before it is cached or written: each issuer chain to the pinned
Intel SGX Root CA, valid at --at; the TCB Info and QE Identity signatures over their exact
bytes, their issueDate..nextUpdate window at --at, the TCB Info's FMSPC and the QE
Identity's id (TD_QE); each CRL's signature, currency at --at, and the PCK CRL's issuer
(the quote's PCK CA).

Cache (--cache): tdx/tcb/{fmspc}.json, tdx/qe_identity.json, tdx/pckcrl/{ca}.json,
tdx/root_ca_crl.json, each fetched again once not current at --at (after nextUpdate).
Written to --out (collateral/ beside the quote when absent), in the layout
`veil-verify tdx-quote --collateral DIR` reads: tcb_info.json + tcb_info.sig.hex,
tcb_info_issuer_chain.pem, qe_identity.json + qe_identity.sig.hex,
qe_identity_issuer_chain.pem, pck_crl.der, pck_crl_issuer_chain.pem, root_ca_crl.der.

Retries: 429 and 5xx are retried after Retry-After or with exponential back-off within
--max-attempts and --max-wait; 404 is final.
Exit status: 0 fetched (or cached) and verified, 1 the service's answer did not verify
(nothing written), 2 usage, I/O, network or HTTP error.";

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The quote: binary, or hex text.
    #[arg(long)]
    pub quote: PathBuf,
    /// The PCS (or PCCS) base URL.
    #[arg(long, env = "VEIL_PCS_URL", default_value = DEFAULT_PCS_URL)]
    pub pcs_url: String,
    /// The Intel SGX Root CA CRL's URL; see below for the default.
    #[arg(long, env = "VEIL_ROOT_CRL_URL")]
    pub root_crl_url: Option<String>,
    /// Common flags.
    #[command(flatten)]
    pub common: Common,
}

/// What the quote's PCK certificate says about where its collateral is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// FMSPC.
    pub fmspc: [u8; 6],
    /// `platform` or `processor`: the PCK CA that issued the PCK certificate.
    pub ca: &'static str,
    /// That CA's subject, as the PCK certificate names its issuer.
    pub pck_issuer: String,
}

impl Platform {
    /// From a quote's PCK certificate.
    ///
    /// # Errors
    /// [`FetchError::Usage`] when the quote or its PCK certificate cannot be read.
    pub fn from_quote(quote: &[u8]) -> Result<Self, FetchError> {
        let bad = |e: String| FetchError::Usage(format!("the quote: {e}"));
        let quote = Quote::parse(quote).map_err(|e| bad(e.to_string()))?;
        let chain = Certificate::all_from_pem_or_der(&quote.pck_chain_pem)
            .map_err(|e| bad(format!("PCK chain: {e}")))?;
        let pck = chain
            .first()
            .ok_or_else(|| bad("no PCK certificate".to_owned()))?;
        let ext = pck
            .extension(SGX_EXTENSIONS_OID)
            .ok_or_else(|| bad("the PCK certificate has no SGX extensions".to_owned()))
            .and_then(|e| PckExtensions::parse(&e.value).map_err(|e| bad(e.to_string())))?;
        let issuer = pck.issuer();
        let ca = if issuer.contains("CN=Intel SGX PCK Platform CA") {
            "platform"
        } else if issuer.contains("CN=Intel SGX PCK Processor CA") {
            "processor"
        } else {
            return Err(bad(format!(
                "the PCK certificate's issuer {issuer} is neither the PCK Platform CA nor the PCK Processor CA"
            )));
        };
        Ok(Self {
            fmspc: ext.fmspc,
            ca,
            pck_issuer: issuer.to_owned(),
        })
    }

    /// The TCB Info path and query.
    #[must_use]
    pub fn tcb_path(&self) -> String {
        format!(
            "/tdx/certification/v4/tcb?fmspc={}",
            hex::encode(self.fmspc)
        )
    }

    /// The PCK CRL path and query.
    #[must_use]
    pub fn pck_crl_path(&self) -> String {
        format!("/sgx/certification/v4/pckcrl?ca={}&encoding=der", self.ca)
    }
}

/// The QE Identity path.
pub const QE_IDENTITY_PATH: &str = "/tdx/certification/v4/qe/identity";

/// A service answer as cached: the body and the issuer chain header.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    url: String,
    issuer_chain: Option<String>,
    body_hex: String,
}

impl Envelope {
    /// (body, issuer chain): the chain is required where `need_chain`.
    fn parse(
        bytes: &[u8],
        what: &'static str,
        source: &str,
        need_chain: bool,
    ) -> Result<(Vec<u8>, String), FetchError> {
        let env: Envelope = serde_json::from_slice(bytes).map_err(|e| refused(what, source, e))?;
        let body = hex::decode(&env.body_hex).map_err(|e| refused(what, source, e))?;
        let chain = match env.issuer_chain {
            Some(c) => c,
            None if !need_chain => String::new(),
            None => return Err(refused(what, source, "no issuer chain header")),
        };
        Ok((body, chain))
    }
}

async fn get_envelope(
    http: &Http,
    url: String,
    chain_headers: &[&str],
) -> Result<(Vec<u8>, String), FetchError> {
    let resp = http.get(&url).await?;
    let env = Envelope {
        issuer_chain: resp.header(chain_headers, true),
        body_hex: hex::encode(&resp.body),
        url: url.clone(),
    };
    let bytes = serde_json::to_vec(&env).map_err(|e| FetchError::Io(e.to_string()))?;
    Ok((bytes, url))
}

fn root() -> Result<Certificate, FetchError> {
    Certificate::from_der(INTEL_SGX_ROOT_CA_DER)
        .map_err(|e| FetchError::Io(format!("the pinned Intel SGX Root CA: {e}")))
}

/// An issuer chain (PEM, signer first), verified to the pinned root at `at`; returns the
/// signer.
fn verify_issuer_chain(pem: &str, at: OffsetDateTime) -> Result<Certificate, String> {
    let root = root().map_err(|e| e.to_string())?;
    let certs: Vec<Certificate> = Certificate::all_from_pem_or_der(pem.as_bytes())
        .map_err(|e| format!("issuer chain: {e}"))?
        .into_iter()
        .filter(|c| c.der() != root.der())
        .collect();
    let signer = certs
        .first()
        .cloned()
        .ok_or("issuer chain: no certificate below the pinned Intel SGX Root CA")?;
    for (i, cert) in certs.iter().enumerate() {
        if i > 0 && !cert.is_ca() {
            return Err(format!(
                "issuer chain: {} issues a certificate but is not a CA",
                cert.subject()
            ));
        }
        let issuer = certs.get(i + 1).unwrap_or(&root);
        cert.verify_issued_by(issuer)
            .and_then(|()| cert.check_valid_at(at))
            .map_err(|e| format!("issuer chain: {e}"))?;
    }
    root.check_valid_at(at)
        .map_err(|e| format!("issuer chain: {e}"))?;
    Ok(signer)
}

/// The signed bytes and r‖s signature of a PCS JSON response's `key` member.
fn signed_member(body: &[u8], key: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let map: BTreeMap<String, &RawValue> =
        serde_json::from_slice(body).map_err(|e| format!("not a PCS JSON response: {e}"))?;
    let raw = map.get(key).ok_or_else(|| format!("no {key:?} member"))?;
    let sig_raw = map.get("signature").ok_or("no \"signature\" member")?;
    let sig_hex: String =
        serde_json::from_str(sig_raw.get()).map_err(|e| format!("signature: {e}"))?;
    let sig = hex::decode(sig_hex.trim()).map_err(|e| format!("signature: {e}"))?;
    if sig.len() != 64 {
        return Err(format!("signature: {} bytes, expected 64 (r‖s)", sig.len()));
    }
    Ok((raw.get().as_bytes().to_vec(), sig))
}

fn window(issue: &str, next: &str, at: OffsetDateTime) -> Result<(), String> {
    let parse = |t: &str| OffsetDateTime::parse(t, &Rfc3339).map_err(|e| format!("{t:?}: {e}"));
    let (issue_t, next_t) = (parse(issue)?, parse(next)?);
    if at < issue_t || at > next_t {
        return Err(format!(
            "not current at {at} (issueDate {issue}, nextUpdate {next})"
        ));
    }
    Ok(())
}

/// A verified signed JSON item: (signed bytes, signature, issuer chain PEM).
type SignedItem = (Vec<u8>, Vec<u8>, String);

fn verify_tcb_info(
    bytes: &[u8],
    source: &str,
    fmspc: [u8; 6],
    at: OffsetDateTime,
) -> Result<SignedItem, FetchError> {
    let what = "TCB Info";
    let (body, chain) = Envelope::parse(bytes, what, source, true)?;
    (|| {
        let (signed, sig) = signed_member(&body, "tcbInfo")?;
        let info: TcbInfo = serde_json::from_slice(&signed).map_err(|e| format!("tcbInfo: {e}"))?;
        if info.id != "TDX" {
            return Err(format!("id {:?} is not TDX", info.id));
        }
        if !info.fmspc.eq_ignore_ascii_case(&hex::encode(fmspc)) {
            return Err(format!(
                "FMSPC {} is not the quote's {}",
                info.fmspc,
                hex::encode(fmspc)
            ));
        }
        let signer = verify_issuer_chain(&chain, at)?;
        signer
            .verify_with_key(&ECDSA_P256_SHA256_FIXED, &signed, &sig, "TCB Info")
            .map_err(|e| e.to_string())?;
        window(&info.issue_date, &info.next_update, at)?;
        Ok((signed, sig, chain.clone()))
    })()
    .map_err(|e: String| refused(what, source, e))
}

fn verify_qe_identity(
    bytes: &[u8],
    source: &str,
    at: OffsetDateTime,
) -> Result<SignedItem, FetchError> {
    let what = "QE Identity";
    let (body, chain) = Envelope::parse(bytes, what, source, true)?;
    (|| {
        let (signed, sig) = signed_member(&body, "enclaveIdentity")?;
        let qe: QeIdentity =
            serde_json::from_slice(&signed).map_err(|e| format!("enclaveIdentity: {e}"))?;
        if qe.id != "TD_QE" {
            return Err(format!("id {:?} is not TD_QE", qe.id));
        }
        let signer = verify_issuer_chain(&chain, at)?;
        signer
            .verify_with_key(&ECDSA_P256_SHA256_FIXED, &signed, &sig, "QE Identity")
            .map_err(|e| e.to_string())?;
        window(&qe.issue_date, &qe.next_update, at)?;
        Ok((signed, sig, chain.clone()))
    })()
    .map_err(|e: String| refused(what, source, e))
}

fn verify_pck_crl(
    bytes: &[u8],
    source: &str,
    pck_issuer: &str,
    at: OffsetDateTime,
) -> Result<(Vec<u8>, String), FetchError> {
    let what = "PCK CRL";
    let (body, chain) = Envelope::parse(bytes, what, source, true)?;
    (|| {
        let crl = Crl::from_pem_or_der(&body).map_err(|e| e.to_string())?;
        let signer = verify_issuer_chain(&chain, at)?;
        if crl.issuer() != pck_issuer || signer.subject() != pck_issuer {
            return Err(format!(
                "issued by {} (chain: {}), not the quote's PCK CA {pck_issuer}",
                crl.issuer(),
                signer.subject()
            ));
        }
        crl.verify_issued_by(&signer)
            .and_then(|()| crl.check_current_at(at))
            .map_err(|e| e.to_string())?;
        Ok((body.clone(), chain.clone()))
    })()
    .map_err(|e: String| refused(what, source, e))
}

/// The Root CA CRL's bytes: DER or PEM as served by Intel, or hex text (a PCCS).
fn verify_root_crl(bytes: &[u8], source: &str, at: OffsetDateTime) -> Result<Vec<u8>, FetchError> {
    let what = "Root CA CRL";
    let (body, _) = Envelope::parse(bytes, what, source, false)?;
    let text = body.trim_ascii();
    let der = if !text.is_empty() && text.iter().all(u8::is_ascii_hexdigit) {
        hex::decode(text).map_err(|e| refused(what, source, e))?
    } else {
        body
    };
    let root = root()?;
    let crl = Crl::from_pem_or_der(&der).map_err(|e| refused(what, source, e))?;
    crl.verify_issued_by(&root)
        .and_then(|()| crl.check_current_at(at))
        .map_err(|e| refused(what, source, e))?;
    Ok(der)
}

fn quote_bytes(raw: Vec<u8>) -> Vec<u8> {
    let text = raw.trim_ascii();
    if !text.is_empty()
        && text.len().is_multiple_of(2)
        && text.iter().all(u8::is_ascii_hexdigit)
        && let Ok(decoded) = hex::decode(text)
    {
        return decoded;
    }
    raw
}

/// Run the command.
///
/// # Errors
/// What failed.
pub fn run(args: &Args) -> Result<(), FetchError> {
    let at = super::at(&args.common)?;
    let raw = std::fs::read(&args.quote)
        .map_err(|e| FetchError::Usage(format!("{}: {e}", args.quote.display())))?;
    let platform = Platform::from_quote(&quote_bytes(raw))?;
    let base = super::base(&args.pcs_url);
    let root_crl_url = match &args.root_crl_url {
        Some(u) => u.clone(),
        None if base == DEFAULT_PCS_URL => DEFAULT_ROOT_CRL_URL.to_owned(),
        None => format!("{base}{PCCS_ROOT_CRL_PATH}"),
    };
    let http = Http::new(&base, args.common.retry())?;
    let root_http = Http::new(&root_crl_url, args.common.retry())?;
    let cache = args.common.cache();
    let out = args.common.out.clone().unwrap_or_else(|| {
        args.quote
            .parent()
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
            .join("collateral")
    });
    let fmspc = hex::encode(platform.fmspc);

    let rt = super::runtime()?;
    let files = rt.block_on(async {
        let mut files = BTreeMap::new();
        let tcb_url = format!("{base}{}", platform.tcb_path());
        let ((signed, sig, chain), _, origin) = cached_or_fetched(
            &cache,
            &format!("tdx/tcb/{fmspc}.json"),
            || {
                get_envelope(
                    &http,
                    tcb_url.clone(),
                    &["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"],
                )
            },
            |bytes, source| verify_tcb_info(bytes, source, platform.fmspc, at),
        )
        .await?;
        println!("{}  tcb_info     {tcb_url}", origin.word());
        files.insert("tcb_info.json".to_owned(), signed);
        files.insert("tcb_info.sig.hex".to_owned(), hex::encode(sig).into_bytes());
        files.insert("tcb_info_issuer_chain.pem".to_owned(), chain.into_bytes());

        let qe_url = format!("{base}{QE_IDENTITY_PATH}");
        let ((signed, sig, chain), _, origin) = cached_or_fetched(
            &cache,
            "tdx/qe_identity.json",
            || {
                get_envelope(
                    &http,
                    qe_url.clone(),
                    &[
                        "SGX-Enclave-Identity-Issuer-Chain",
                        "TCB-Info-Issuer-Chain",
                        "SGX-TCB-Info-Issuer-Chain",
                    ],
                )
            },
            |bytes, source| verify_qe_identity(bytes, source, at),
        )
        .await?;
        println!("{}  qe_identity  {qe_url}", origin.word());
        files.insert("qe_identity.json".to_owned(), signed);
        files.insert(
            "qe_identity.sig.hex".to_owned(),
            hex::encode(sig).into_bytes(),
        );
        files.insert(
            "qe_identity_issuer_chain.pem".to_owned(),
            chain.into_bytes(),
        );

        let crl_url = format!("{base}{}", platform.pck_crl_path());
        let ((crl, chain), _, origin) = cached_or_fetched(
            &cache,
            &format!("tdx/pckcrl/{}.json", platform.ca),
            || get_envelope(&http, crl_url.clone(), &["SGX-PCK-CRL-Issuer-Chain"]),
            |bytes, source| verify_pck_crl(bytes, source, &platform.pck_issuer, at),
        )
        .await?;
        println!("{}  pck_crl      {crl_url}", origin.word());
        files.insert("pck_crl.der".to_owned(), crl);
        files.insert("pck_crl_issuer_chain.pem".to_owned(), chain.into_bytes());

        let (crl, _, origin) = cached_or_fetched(
            &cache,
            "tdx/root_ca_crl.json",
            || get_envelope(&root_http, root_crl_url.clone(), &[]),
            |bytes, source| verify_root_crl(bytes, source, at),
        )
        .await?;
        println!("{}  root_ca_crl  {root_crl_url}", origin.word());
        files.insert("root_ca_crl.der".to_owned(), crl);
        Ok::<_, FetchError>(files)
    })?;

    // The set parses as `tdx-quote` will read it, before anything is written.
    Collateral::from_files(&files).map_err(|e| refused("collateral", "the services", e))?;
    for (name, bytes) in &files {
        write_atomic(&out.join(name), bytes)?;
    }
    let n = http.attempts.load(std::sync::atomic::Ordering::Relaxed)
        + root_http
            .attempts
            .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "wrote {}/ ({} files); verify with: veil-verify tdx-quote {} --collateral {}",
        out.display(),
        files.len(),
        args.quote.display(),
        out.display()
    );
    println!("{n} request(s)");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const TDX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/tdx");

    #[test]
    fn platform_of_real_quotes() {
        for (sample, fmspc) in [
            ("dcap-qvl-v4-uptodate", "b0c06f000000"),
            ("go-tdx-guest-v4-spr", "50806f000000"),
            ("dcap-qvl-v5-outdated", "90c06f000000"),
        ] {
            let q = std::fs::read(format!("{TDX}/{sample}/quote.bin")).unwrap();
            let p = Platform::from_quote(&q).unwrap();
            assert_eq!(hex::encode(p.fmspc), fmspc);
            assert_eq!(p.ca, "platform");
            assert_eq!(
                p.tcb_path(),
                format!("/tdx/certification/v4/tcb?fmspc={fmspc}")
            );
            assert_eq!(
                p.pck_crl_path(),
                "/sgx/certification/v4/pckcrl?ca=platform&encoding=der"
            );
        }
        assert!(Platform::from_quote(b"not a quote").is_err());
    }
}
