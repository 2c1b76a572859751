//! `veil-verify fetch snp`: the VCEK of a report's chip and reported TCB, with the ASK and
//! ARK (and, with `--crl`, the ARK's CRL), from AMD's Key Distribution Service (KDS).
//!
//! KDS (AMD's "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
//! Specification", 57230):
//! - `GET /vcek/v1/{Milan|Genoa|Turin}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..`
//!   (Turin: `fmcSPL=..&` first, and `hwid` is the first 8 bytes of `CHIP_ID`): the VCEK,
//!   DER;
//! - `GET /vcek/v1/{product}/cert_chain`: the ASK and the ARK, PEM;
//! - `GET /vcek/v1/{product}/crl`: the ARK's CRL, DER.
//!
//! KDS rate-limits (HTTP 429): the client backs off, and the cache means a chip's VCEK
//! is asked for once per TCB.

use std::path::PathBuf;

use ring::signature::ECDSA_P384_SHA384_FIXED;
use time::OffsetDateTime;
use veil_attestation::checks::Checks;
use veil_attestation::snp::certs::common_name;
use veil_attestation::snp::{AttestationReport, Product, SigningKey, SnpChain, Tcb, pinned};
use veil_attestation::x509::{Certificate, Crl};

use super::{Common, FetchError, Http, cached_or_fetched, refused, write_atomic};

/// AMD's public KDS.
pub const DEFAULT_KDS_URL: &str = "https://kdsintf.amd.com";

/// `--help` text after the flags.
pub const HELP: &str = "\
A host-side tool for the host operator or an auditor, run ahead of time: never on a
request path (the enclave and the gateway never fetch collateral).

Requests (KDS): /vcek/v1/{Milan|Genoa|Turin}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..
(Turin: fmcSPL first, hwid = the first 8 bytes of CHIP_ID), /vcek/v1/{product}/cert_chain,
and with --crl /vcek/v1/{product}/crl. The product comes from the report's CPUID fields
(report version 3 and later) or --product (required for version 2 reports).

Everything is verified before it is cached or written: the ARK must be the pinned one of
the product, the ASK and the VCEK must chain to it and be valid at --at, the VCEK's hwID
and TCB must equal the report's CHIP_ID and REPORTED_TCB, and the report's signature must
verify with it; the CRL must be signed by the ARK, current, and not list the ASK.

Cache (--cache): snp/vcek/{product}/{hwid}/{tcb}.der (reused while valid at --at),
snp/cert_chain/{product}.pem, snp/crl/{product}.der (fetched again after its nextUpdate).
Written to --out (the report's directory when absent): vcek.der, ask.der, ark.der and,
with --crl, crl.der, DER, for `veil-verify snp-report REPORT --vcek vcek.der --ask ask.der
--ark ark.der [--crl crl.der]` and for the host's SNP certificate table (VCEK, ASK, ARK).

Retries: 429 and 5xx are retried after Retry-After or with exponential back-off (1 s,
2 s, 4 s ...) within --max-attempts and --max-wait; 404 is final.
Exit status: 0 fetched (or cached) and verified, 1 the service's answer did not verify
(nothing written), 2 usage, I/O, network or HTTP error.";

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The attestation report (1184 bytes binary, or hex).
    #[arg(long)]
    pub report: PathBuf,
    /// The product line (milan, genoa, turin); from the report's CPUID fields when
    /// absent (report version 3 and later).
    #[arg(long)]
    pub product: Option<Product>,
    /// The KDS base URL.
    #[arg(long, env = "VEIL_KDS_URL", default_value = DEFAULT_KDS_URL)]
    pub kds_url: String,
    /// Also fetch the ARK's CRL.
    #[arg(long)]
    pub crl: bool,
    /// Common flags.
    #[command(flatten)]
    pub common: Common,
}

/// What to ask KDS for: a chip's VCEK at a TCB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcekRequest {
    /// The product line.
    pub product: Product,
    /// The hardware id: `CHIP_ID` (Turin: its first 8 bytes).
    pub hwid: Vec<u8>,
    /// `REPORTED_TCB`, decoded for the product.
    pub tcb: Tcb,
}

impl VcekRequest {
    /// From a report (and the product, where given).
    ///
    /// # Errors
    /// [`FetchError::Usage`] when the report cannot name a VCEK.
    pub fn from_report(
        report: &AttestationReport,
        product: Option<Product>,
    ) -> Result<Self, FetchError> {
        match report.signing_key {
            SigningKey::Vcek => {}
            SigningKey::Vlek => {
                return Err(FetchError::Usage(
                    "the report is signed by a VLEK: KDS issues VLEKs only to registered cloud \
                     providers; the host must supply it"
                        .to_owned(),
                ));
            }
            other => {
                return Err(FetchError::Usage(format!(
                    "the report's signing key is {other:?}, not a VCEK"
                )));
            }
        }
        let from_cpuid = report.cpuid_product();
        let product = match (product, from_cpuid) {
            (Some(p), Some(c)) if p != c => {
                return Err(FetchError::Usage(format!(
                    "--product {p} but the report's CPUID says {c}"
                )));
            }
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => {
                return Err(FetchError::Usage(format!(
                    "report version {} names no product (no known CPUID fields): pass --product",
                    report.version
                )));
            }
        };
        let hwid = match product {
            Product::Turin => report.chip_id.get(..8).unwrap_or(&[]).to_vec(),
            Product::Milan | Product::Genoa => report.chip_id.to_vec(),
        };
        if report.mask_chip_key || hwid.iter().all(|&b| b == 0) {
            return Err(FetchError::Usage(
                "the report's CHIP_ID is masked or zero: no VCEK can be looked up for it"
                    .to_owned(),
            ));
        }
        Ok(Self {
            product,
            hwid,
            tcb: report.reported_tcb.decode(product),
        })
    }

    /// The KDS path and query of the VCEK.
    #[must_use]
    pub fn path(&self) -> String {
        let t = &self.tcb;
        let fmc = match (self.product, t.fmc) {
            (Product::Turin, Some(f)) => format!("fmcSPL={f:02}&"),
            _ => String::new(),
        };
        format!(
            "/vcek/v1/{}/{}?{fmc}blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
            self.product.name(),
            hex::encode(&self.hwid),
            t.bootloader,
            t.tee,
            t.snp,
            t.microcode
        )
    }

    fn cache_key(&self) -> String {
        let t = &self.tcb;
        let fmc = t.fmc.map(|f| format!("fmc{f}-")).unwrap_or_default();
        format!(
            "snp/vcek/{}/{}/{fmc}bl{}-tee{}-snp{}-ucode{}.der",
            self.product.name(),
            hex::encode(&self.hwid),
            t.bootloader,
            t.tee,
            t.snp,
            t.microcode
        )
    }
}

/// The ASK and ARK of `cert_chain`: exactly the product's ASK and its pinned ARK, the
/// ASK signed by the ARK, both valid at `at`.
fn verify_cert_chain(
    bytes: &[u8],
    source: &str,
    product: Product,
    at: OffsetDateTime,
) -> Result<(Certificate, Certificate), FetchError> {
    let what = "cert_chain (ASK, ARK)";
    let certs = Certificate::all_from_pem_or_der(bytes).map_err(|e| refused(what, source, e))?;
    let roots = pinned(product).map_err(|e| refused(what, source, e))?;
    let ask_cn = format!("SEV-{}", product.name());
    let mut ask = None;
    let mut ark = None;
    for cert in certs {
        let cn = common_name(cert.subject()).to_owned();
        if cn == ask_cn && ask.is_none() {
            ask = Some(cert);
        } else if cert.der() == roots.ark.der() && ark.is_none() {
            ark = Some(cert);
        } else {
            return Err(refused(
                what,
                source,
                format!(
                    "unexpected certificate {} (expected {ask_cn} and the pinned ARK-{product})",
                    cert.subject()
                ),
            ));
        }
    }
    let (Some(ask), Some(ark)) = (ask, ark) else {
        return Err(refused(
            what,
            source,
            format!("expected {ask_cn} and the pinned ARK-{product}"),
        ));
    };
    ask.verify_issued_by(&ark)
        .and_then(|()| ask.check_valid_at(at))
        .map_err(|e| refused(what, source, format!("{ask_cn}: {e}")))?;
    Ok((ask, ark))
}

/// The VCEK: chains to the ASK and the pinned ARK, valid at `at`, certifies the
/// request's hwID and TCB, and verifies the report's signature.
fn verify_vcek(
    bytes: &[u8],
    source: &str,
    request: &VcekRequest,
    report: &AttestationReport,
    ask: &Certificate,
    ark: &Certificate,
    at: OffsetDateTime,
) -> Result<Certificate, FetchError> {
    let what = "VCEK";
    let bad = |detail: String| refused(what, source, detail);
    let mut certs = Certificate::all_from_pem_or_der(bytes).map_err(|e| bad(e.to_string()))?;
    if certs.len() != 1 {
        return Err(bad(format!("{} certificates, expected one", certs.len())));
    }
    let vcek = certs.remove(0);
    let mut checks = Checks::new();
    let chain = SnpChain::from_certificates(
        vec![vcek.clone(), ask.clone(), ark.clone()],
        Some(request.product),
        &[],
        &mut checks,
    )
    .and_then(|chain| chain.check_valid_at(at, &mut checks).map(|()| chain))
    .map_err(|e| bad(e.to_string()))?;
    if chain.kind != veil_attestation::snp::EndorsementKind::Vcek {
        return Err(bad("a VLEK, not a VCEK".to_owned()));
    }
    if chain.info.hw_id.as_deref() != Some(request.hwid.as_slice()) {
        return Err(bad(format!(
            "hwID {} is not the report's {}",
            chain
                .info
                .hw_id
                .as_deref()
                .map_or("absent".to_owned(), hex::encode),
            hex::encode(&request.hwid)
        )));
    }
    let (c, r) = (chain.info.tcb, request.tcb);
    let fmc_ok = request.product != Product::Turin || c.fmc == r.fmc;
    if !fmc_ok
        || (c.bootloader, c.tee, c.snp, c.microcode) != (r.bootloader, r.tee, r.snp, r.microcode)
    {
        return Err(bad(format!(
            "TCB {c:?} is not the report's REPORTED_TCB {r:?}"
        )));
    }
    let sig = report
        .signature_p384_fixed()
        .ok_or_else(|| bad("the report's signature is malformed".to_owned()))?;
    vcek.verify_with_key(
        &ECDSA_P384_SHA384_FIXED,
        report.signed_bytes(),
        &sig,
        "the attestation report",
    )
    .map_err(|e| {
        bad(format!(
            "the report's signature does not verify with it: {e}"
        ))
    })?;
    Ok(vcek)
}

/// The ARK's CRL: signed by the ARK, current at `at`, not listing the ASK.
fn verify_crl(
    bytes: &[u8],
    source: &str,
    ask: &Certificate,
    ark: &Certificate,
    at: OffsetDateTime,
) -> Result<Crl, FetchError> {
    let crl = Crl::from_pem_or_der(bytes).map_err(|e| refused("ARK CRL", source, e))?;
    crl.verify_issued_by(ark)
        .and_then(|()| crl.check_current_at(at))
        .and_then(|()| crl.check_not_revoked(ask))
        .map_err(|e| refused("ARK CRL", source, e))?;
    Ok(crl)
}

async fn get(http: &Http, base: &str, path: &str) -> Result<(Vec<u8>, String), FetchError> {
    let url = format!("{base}{path}");
    let resp = http.get(&url).await?;
    Ok((resp.body, url))
}

/// Run the command.
///
/// # Errors
/// What failed.
pub fn run(args: &Args) -> Result<(), FetchError> {
    let at = super::at(&args.common)?;
    let raw = std::fs::read(&args.report)
        .map_err(|e| FetchError::Usage(format!("{}: {e}", args.report.display())))?;
    let report = AttestationReport::from_bytes_or_hex(&raw)
        .map_err(|e| FetchError::Usage(format!("{}: {e}", args.report.display())))?;
    let request = VcekRequest::from_report(&report, args.product)?;
    let product = request.product;
    let base = super::base(&args.kds_url);
    let http = Http::new(&base, args.common.retry())?;
    let cache = args.common.cache();
    let out = args.common.out.clone().unwrap_or_else(|| {
        args.report
            .parent()
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
    });

    let rt = super::runtime()?;
    rt.block_on(async {
        let chain_path = format!("/vcek/v1/{}/cert_chain", product.name());
        let ((ask, ark), _, chain_origin) = cached_or_fetched(
            &cache,
            &format!("snp/cert_chain/{}.pem", product.name()),
            || get(&http, &base, &chain_path),
            |bytes, source| verify_cert_chain(bytes, source, product, at),
        )
        .await?;
        println!("{}  cert_chain  ASK + ARK-{product}", chain_origin.word());

        let vcek_path = request.path();
        let (vcek, _, vcek_origin) = cached_or_fetched(
            &cache,
            &request.cache_key(),
            || get(&http, &base, &vcek_path),
            |bytes, source| verify_vcek(bytes, source, &request, &report, &ask, &ark, at),
        )
        .await?;
        println!("{}  vcek        {vcek_path}", vcek_origin.word());

        let crl = if args.crl {
            let crl_path = format!("/vcek/v1/{}/crl", product.name());
            let (_, bytes, origin) = cached_or_fetched(
                &cache,
                &format!("snp/crl/{}.der", product.name()),
                || get(&http, &base, &crl_path),
                |bytes, source| verify_crl(bytes, source, &ask, &ark, at),
            )
            .await?;
            println!("{}  crl         {crl_path}", origin.word());
            Some(bytes)
        } else {
            None
        };

        write_atomic(&out.join("vcek.der"), vcek.der())?;
        write_atomic(&out.join("ask.der"), ask.der())?;
        write_atomic(&out.join("ark.der"), ark.der())?;
        if let Some(crl) = &crl {
            write_atomic(&out.join("crl.der"), crl)?;
        }
        let o = out.display();
        println!(
            "wrote {o}/vcek.der, ask.der, ark.der{}; verify with: veil-verify snp-report {} --vcek {o}/vcek.der --ask {o}/ask.der --ark {o}/ark.der{}",
            if crl.is_some() { ", crl.der" } else { "" },
            args.report.display(),
            if crl.is_some() {
                format!(" --crl {o}/crl.der")
            } else {
                String::new()
            }
        );
        Ok::<_, FetchError>(())
    })?;
    let n = http.attempts.load(std::sync::atomic::Ordering::Relaxed);
    println!("{n} request(s) to {base}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SNP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/snp");

    fn report(sample: &str) -> AttestationReport {
        AttestationReport::from_bytes(&std::fs::read(format!("{SNP}/{sample}/report.bin")).unwrap())
            .unwrap()
    }

    #[test]
    fn vcek_paths_of_real_reports() {
        let r = VcekRequest::from_report(&report("microsoft-turin-v5"), None).unwrap();
        assert_eq!(
            r.path(),
            "/vcek/v1/Turin/59790fb1c39f35c1?fmcSPL=01&blSPL=01&teeSPL=01&snpSPL=04&ucodeSPL=81"
        );
        let r = VcekRequest::from_report(&report("microsoft-genoa-v3"), None).unwrap();
        assert_eq!(
            r.path(),
            "/vcek/v1/Genoa/b1e24a27bbc3a4d58090d8b89851dce3b8031544be249b9ac17132bb222b027622347ee4d0fe4f689efdfc47a68cefc686cbb448d01436506ee1e28010cab7c0?blSPL=10&teeSPL=00&snpSPL=23&ucodeSPL=84"
        );
        // A v2 report needs --product.
        let v2 = report("go-sev-guest-milan-v2");
        assert!(matches!(
            VcekRequest::from_report(&v2, None),
            Err(FetchError::Usage(_))
        ));
        let r = VcekRequest::from_report(&v2, Some(Product::Milan)).unwrap();
        assert_eq!(
            r.path(),
            "/vcek/v1/Milan/3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d?blSPL=02&teeSPL=00&snpSPL=05&ucodeSPL=68"
        );
        // A product that contradicts CPUID, and a VLEK-signed report, are refused.
        assert!(
            VcekRequest::from_report(&report("microsoft-genoa-v3"), Some(Product::Milan)).is_err()
        );
        assert!(VcekRequest::from_report(&report("trustee-milan-vlek-v3"), None).is_err());
    }
}
