//! AMD's certificates: the pinned ARKs (and ASKs/ASVKs) of Milan, Genoa and Turin, the
//! VCEK/VLEK extensions (TCB, hardware id, product name), and the chain
//! VCEK → ASK → ARK or VLEK → ASVK → ARK.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::report::Tcb;
use super::{SnpError, fail};
use crate::checks::Checks;
use crate::x509::{Certificate, Crl, KeyKind, X509Error};

/// An AMD EPYC product line, which has its own ARK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// 3rd generation EPYC (Zen 3).
    Milan,
    /// 4th generation EPYC (Zen 4, including Bergamo/Siena).
    Genoa,
    /// 5th generation EPYC (Zen 5).
    Turin,
}

impl Product {
    /// All product lines with pinned roots.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// The name as AMD writes it (`Milan`...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// From a name (`milan`, `Milan`, or a VCEK `productName` such as `Milan-B0`).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        let base = name.split('-').next().unwrap_or(name);
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(base))
    }
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Product {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| format!("unknown product {s:?} (milan, genoa, turin)"))
    }
}

/// OIDs of the VCEK/VLEK extensions.
pub mod oid {
    /// `blSPL`.
    pub const BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
    /// `teeSPL`.
    pub const TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
    /// `snpSPL`.
    pub const SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
    /// `ucodeSPL`.
    pub const UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
    /// `fmcSPL` (Turin).
    pub const FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
    /// `hwID`.
    pub const HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
    /// `productName`.
    pub const PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
}

const MILAN_ARK: &[u8] = include_bytes!("../../roots/amd/milan/ark.pem");
const MILAN_ASK: &[u8] = include_bytes!("../../roots/amd/milan/ask.pem");
const MILAN_ASVK: &[u8] = include_bytes!("../../roots/amd/milan/asvk.pem");
const GENOA_ARK: &[u8] = include_bytes!("../../roots/amd/genoa/ark.pem");
const GENOA_ASK: &[u8] = include_bytes!("../../roots/amd/genoa/ask.pem");
const GENOA_ASVK: &[u8] = include_bytes!("../../roots/amd/genoa/asvk.pem");
const TURIN_ARK: &[u8] = include_bytes!("../../roots/amd/turin/ark.pem");
const TURIN_ASK: &[u8] = include_bytes!("../../roots/amd/turin/ask.pem");
const TURIN_ASVK: &[u8] = include_bytes!("../../roots/amd/turin/asvk.pem");

/// A product's pinned certificates.
#[derive(Debug)]
pub struct PinnedRoots {
    /// The AMD Root Key (self-signed).
    pub ark: Certificate,
    /// The AMD SEV Key, which signs VCEKs.
    pub ask: Certificate,
    /// The AMD SEV VLEK Key, which signs VLEKs.
    pub asvk: Certificate,
}

fn parse_one(pem: &[u8]) -> Result<Certificate, X509Error> {
    Certificate::all_from_pem_or_der(pem)?
        .into_iter()
        .next()
        .ok_or(X509Error::Empty)
}

fn parse_pinned(ark: &[u8], ask: &[u8], asvk: &[u8]) -> Result<PinnedRoots, X509Error> {
    Ok(PinnedRoots {
        ark: parse_one(ark)?,
        ask: parse_one(ask)?,
        asvk: parse_one(asvk)?,
    })
}

/// The pinned roots of `product` (parsed once per process).
///
/// # Errors
/// Only if the embedded PEMs do not parse (a build defect).
pub fn pinned(product: Product) -> Result<&'static PinnedRoots, SnpError> {
    static MILAN: OnceLock<Result<PinnedRoots, X509Error>> = OnceLock::new();
    static GENOA: OnceLock<Result<PinnedRoots, X509Error>> = OnceLock::new();
    static TURIN: OnceLock<Result<PinnedRoots, X509Error>> = OnceLock::new();
    let cell = match product {
        Product::Milan => MILAN.get_or_init(|| parse_pinned(MILAN_ARK, MILAN_ASK, MILAN_ASVK)),
        Product::Genoa => GENOA.get_or_init(|| parse_pinned(GENOA_ARK, GENOA_ASK, GENOA_ASVK)),
        Product::Turin => TURIN.get_or_init(|| parse_pinned(TURIN_ARK, TURIN_ASK, TURIN_ASVK)),
    };
    cell.as_ref().map_err(|e| SnpError::Certificate {
        check: "chain.ark",
        source: e.clone(),
    })
}

/// The common name of a subject as x509-parser writes it (`..., CN=SEV-VCEK`).
#[must_use]
pub fn common_name(subject: &str) -> &str {
    subject
        .rsplit(", ")
        .find_map(|rdn| rdn.strip_prefix("CN="))
        .unwrap_or("")
}

/// The kind of versioned endorsement key that signed a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndorsementKind {
    /// VCEK, issued by the ASK.
    Vcek,
    /// VLEK, issued by the ASVK.
    Vlek,
}

impl EndorsementKind {
    /// `VCEK` or `VLEK`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Vcek => "VCEK",
            Self::Vlek => "VLEK",
        }
    }
}

/// What role an AMD certificate plays, from its subject CN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Vek(EndorsementKind),
    Ask(Option<Product>),
    Asvk(Option<Product>),
    Ark(Option<Product>),
    Unknown,
}

fn role(cert: &Certificate) -> Role {
    let cn = common_name(cert.subject());
    if cn == "SEV-VCEK" {
        Role::Vek(EndorsementKind::Vcek)
    } else if cn == "SEV-VLEK" {
        Role::Vek(EndorsementKind::Vlek)
    } else if let Some(p) = cn.strip_prefix("SEV-VLEK-") {
        Role::Asvk(Product::from_name(p))
    } else if let Some(p) = cn.strip_prefix("ARK-") {
        Role::Ark(Product::from_name(p))
    } else if let Some(p) = cn.strip_prefix("SEV-") {
        Role::Ask(Product::from_name(p))
    } else {
        Role::Unknown
    }
}

/// Read a small DER INTEGER (an SPL).
fn der_u8(value: &[u8]) -> Option<u8> {
    match value {
        [0x02, 1, v] if *v < 0x80 => Some(*v),
        [0x02, 2, 0, v] if *v >= 0x80 => Some(*v),
        _ => None,
    }
}

/// The contents of a DER element with `tag` and a short or one/two-byte long length.
fn der_contents(value: &[u8], tag: u8) -> Option<&[u8]> {
    let (&t, rest) = value.split_first()?;
    if t != tag {
        return None;
    }
    let (&l, rest) = rest.split_first()?;
    let (len, rest) = match l {
        0..=0x7f => (usize::from(l), rest),
        0x81 => {
            let (&n, rest) = rest.split_first()?;
            (usize::from(n), rest)
        }
        0x82 => {
            let (n, rest) = rest.split_at_checked(2)?;
            (usize::from(u16::from_be_bytes([n[0], n[1]])), rest)
        }
        _ => return None,
    };
    (rest.len() == len).then_some(rest)
}

/// The TCB a VCEK/VLEK certifies, its hardware id and product name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VekInfo {
    /// The TCB from `blSPL`, `teeSPL`, `snpSPL`, `ucodeSPL` (and `fmcSPL`).
    pub tcb: Tcb,
    /// `hwID` (64 bytes, Turin 8; absent in a VLEK).
    pub hw_id: Option<Vec<u8>>,
    /// `productName` (`Milan-B0`, `Genoa`, `Turin`...).
    pub product_name: Option<String>,
}

/// Read the VCEK/VLEK extensions.
///
/// # Errors
/// [`SnpError::Extension`] naming the OID that is missing or malformed.
pub fn vek_info(vek: &Certificate) -> Result<VekInfo, SnpError> {
    let spl = |oid: &'static str| -> Result<Option<u8>, SnpError> {
        match vek.extension(oid) {
            None => Ok(None),
            Some(e) => der_u8(&e.value).map(Some).ok_or(SnpError::Extension {
                oid,
                detail: "not a small INTEGER",
            }),
        }
    };
    let need = |oid: &'static str| -> Result<u8, SnpError> {
        spl(oid)?.ok_or(SnpError::Extension {
            oid,
            detail: "missing",
        })
    };
    let tcb = Tcb {
        fmc: spl(oid::FMC_SPL)?,
        bootloader: need(oid::BL_SPL)?,
        tee: need(oid::TEE_SPL)?,
        snp: need(oid::SNP_SPL)?,
        microcode: need(oid::UCODE_SPL)?,
    };
    let hw_id = match vek.extension(oid::HW_ID) {
        None => None,
        // AMD writes the raw id as the extension value (64 bytes, Turin 8); an OCTET
        // STRING around it is accepted too.
        Some(e) if matches!(e.value.len(), 8 | 64) => Some(e.value.clone()),
        Some(e) => Some(
            der_contents(&e.value, 0x04)
                .filter(|v| matches!(v.len(), 8 | 64))
                .ok_or(SnpError::Extension {
                    oid: oid::HW_ID,
                    detail: "neither 8 or 64 raw bytes nor an OCTET STRING of them",
                })?
                .to_vec(),
        ),
    };
    let product_name = match vek.extension(oid::PRODUCT_NAME) {
        None => None,
        Some(e) => {
            let raw = der_contents(&e.value, 0x16).unwrap_or(&e.value);
            if !raw.iter().all(|c| c.is_ascii_graphic()) {
                return Err(SnpError::Extension {
                    oid: oid::PRODUCT_NAME,
                    detail: "not printable ASCII",
                });
            }
            Some(String::from_utf8_lossy(raw).into_owned())
        }
    };
    Ok(VekInfo {
        tcb,
        hw_id,
        product_name,
    })
}

/// A VCEK/VLEK with its issuer and root, whose signatures verified (time-independent
/// checks done; validity at a time and CRL currency are checked per verification).
/// Build it once and reuse it for every report of the same chip and TCB.
#[derive(Debug, Clone)]
pub struct SnpChain {
    /// The product line.
    pub product: Product,
    /// VCEK or VLEK.
    pub kind: EndorsementKind,
    /// The VCEK or VLEK.
    pub vek: Certificate,
    /// The ASK (VCEK) or ASVK (VLEK).
    pub ask: Certificate,
    /// The ARK (always the pinned one).
    pub ark: Certificate,
    /// The VEK's extensions.
    pub info: VekInfo,
    /// CRLs of the ARK that verified; checked for currency at verification time.
    pub crls: Vec<Crl>,
}

impl SnpChain {
    /// Build and verify the chain from DER certificates (the VCEK or VLEK, and optionally
    /// the ASK/ASVK and ARK, in any order). The ARK must be the pinned one of the
    /// product; a missing ASK/ASVK is taken from the pinned ones. `product`, when
    /// given, must agree with the certificates. Each CRL must be issued by the ARK and
    /// must not list the ASK/ASVK.
    ///
    /// # Errors
    /// The first failed check, also recorded in `checks`.
    pub fn from_der(
        certs: &[&[u8]],
        product: Option<Product>,
        crls: &[Crl],
        checks: &mut Checks,
    ) -> Result<Self, SnpError> {
        let mut parsed = Vec::with_capacity(certs.len());
        for der in certs {
            match Certificate::from_der(der) {
                Ok(cert) => parsed.push(cert),
                Err(source) => {
                    return fail(
                        checks,
                        SnpError::Certificate {
                            check: "chain.parse",
                            source,
                        },
                    );
                }
            }
        }
        checks.pass("chain.parse", format!("{} certificate(s)", parsed.len()));
        Self::from_certificates(parsed, product, crls, checks)
    }

    /// As [`Self::from_der`], with parsed certificates.
    ///
    /// # Errors
    /// The first failed check, also recorded in `checks`.
    pub fn from_certificates(
        certs: Vec<Certificate>,
        product: Option<Product>,
        crls: &[Crl],
        checks: &mut Checks,
    ) -> Result<Self, SnpError> {
        let mut vek: Option<(EndorsementKind, Certificate)> = None;
        let mut asks: Vec<(Role, Certificate)> = Vec::new();
        let mut ark_given: Option<(Option<Product>, Certificate)> = None;
        for cert in certs {
            match role(&cert) {
                Role::Vek(kind) => {
                    if vek.is_some() {
                        return fail(
                            checks,
                            SnpError::Chain {
                                check: "chain.vcek",
                                detail: "more than one VCEK/VLEK given".to_owned(),
                            },
                        );
                    }
                    vek = Some((kind, cert));
                }
                r @ (Role::Ask(_) | Role::Asvk(_)) => asks.push((r, cert)),
                Role::Ark(p) => ark_given = Some((p, cert)),
                Role::Unknown => {
                    return fail(
                        checks,
                        SnpError::Chain {
                            check: "chain.parse",
                            detail: format!("not an AMD SEV certificate: {}", cert.subject()),
                        },
                    );
                }
            }
        }
        let Some((kind, vek)) = vek else {
            return fail(
                checks,
                SnpError::Chain {
                    check: "chain.vcek",
                    detail: "no VCEK or VLEK given".to_owned(),
                },
            );
        };
        let vek_check = match kind {
            EndorsementKind::Vcek => "chain.vcek",
            EndorsementKind::Vlek => "chain.vlek",
        };
        if vek.key_kind() != KeyKind::EcP384 {
            return fail(
                checks,
                SnpError::Chain {
                    check: vek_check,
                    detail: format!("{} does not hold a P-384 key", kind.name()),
                },
            );
        }
        let info = match vek_info(&vek) {
            Ok(info) => info,
            Err(e) => return fail(checks, e),
        };

        // The product: given, from the VEK's productName, from a given ASK or ARK.
        let mut named: Vec<(&'static str, Product)> = Vec::new();
        if let Some(p) = product {
            named.push(("given", p));
        }
        if let Some(p) = info.product_name.as_deref().and_then(Product::from_name) {
            named.push(("productName", p));
        }
        for (r, _) in &asks {
            if let Role::Ask(Some(p)) | Role::Asvk(Some(p)) = r {
                named.push(("ASK", *p));
            }
        }
        if let Some((Some(p), _)) = &ark_given {
            named.push(("ARK", *p));
        }
        let Some(&(_, product)) = named.first() else {
            return fail(
                checks,
                SnpError::Chain {
                    check: "chain.product",
                    detail: "the product is neither given nor named by a certificate".to_owned(),
                },
            );
        };
        if let Some((source, other)) = named.iter().find(|(_, p)| *p != product) {
            return fail(
                checks,
                SnpError::Chain {
                    check: "chain.product",
                    detail: format!(
                        "product {product} ({}) but {source} says {other}",
                        named.first().map_or("", |n| n.0)
                    ),
                },
            );
        }
        let sources: Vec<&str> = named.iter().map(|n| n.0).collect();
        checks.pass(
            "chain.product",
            format!("{product} (from {})", sources.join(", ")),
        );

        let roots = pinned(product)?;
        // The ARK: the pinned one; a given ARK must be the same certificate.
        if let Some((_, given)) = &ark_given
            && given.der() != roots.ark.der()
        {
            return fail(
                checks,
                SnpError::Chain {
                    check: "chain.ark",
                    detail: format!(
                        "the given ARK ({}) is not the pinned ARK-{product}",
                        given.subject()
                    ),
                },
            );
        }
        let ark = roots.ark.clone();
        let r = ark
            .verify_issued_by(&ark)
            .map_err(|source| SnpError::Certificate {
                check: "chain.ark",
                source,
            });
        checks.record("chain.ark", format!("pinned ARK-{product}, self-signed"), r)?;

        // The ASK/ASVK: a given one of the right kind, else the pinned one.
        let want_asvk = kind == EndorsementKind::Vlek;
        let given_ask = asks.into_iter().find_map(|(r, c)| match (r, want_asvk) {
            (Role::Ask(_), false) | (Role::Asvk(_), true) => Some(c),
            _ => None,
        });
        let (ask_name, ask_check) = if want_asvk {
            ("ASVK", "chain.asvk")
        } else {
            ("ASK", "chain.ask")
        };
        let (ask, source) = match given_ask {
            Some(c) => (c, "given"),
            None => (
                if want_asvk {
                    roots.asvk.clone()
                } else {
                    roots.ask.clone()
                },
                "pinned",
            ),
        };
        let r = ask
            .verify_issued_by(&ark)
            .map_err(|source| SnpError::Certificate {
                check: ask_check,
                source,
            });
        checks.record(
            ask_check,
            format!(
                "{source} {ask_name} {} signed by ARK-{product}",
                common_name(ask.subject())
            ),
            r,
        )?;
        let r = vek
            .verify_issued_by(&ask)
            .map_err(|source| SnpError::Certificate {
                check: vek_check,
                source,
            });
        checks.record(
            vek_check,
            format!("{} signed by {}", kind.name(), common_name(ask.subject())),
            r,
        )?;

        for crl in crls {
            let r = crl
                .verify_issued_by(&ark)
                .and_then(|()| crl.check_not_revoked(&ask))
                .map_err(|source| SnpError::Certificate {
                    check: "crl.ark",
                    source,
                });
            checks.record(
                "crl.ark",
                format!(
                    "CRL of ARK-{product} ({} revoked) does not list the {ask_name}",
                    crl.revoked_count()
                ),
                r,
            )?;
        }
        Ok(Self {
            product,
            kind,
            vek,
            ask,
            ark,
            info,
            crls: crls.to_vec(),
        })
    }

    /// Check every certificate's validity, and every CRL's currency, at `at`.
    ///
    /// # Errors
    /// The first failed check, also recorded in `checks`.
    pub fn check_valid_at(&self, at: OffsetDateTime, checks: &mut Checks) -> Result<(), SnpError> {
        let vek_name = match self.kind {
            EndorsementKind::Vcek => "validity.vcek",
            EndorsementKind::Vlek => "validity.vlek",
        };
        let ask_name = match self.kind {
            EndorsementKind::Vcek => "validity.ask",
            EndorsementKind::Vlek => "validity.asvk",
        };
        for (name, cert) in [
            (vek_name, &self.vek),
            (ask_name, &self.ask),
            ("validity.ark", &self.ark),
        ] {
            let r = cert
                .check_valid_at(at)
                .map_err(|source| SnpError::Certificate {
                    check: name,
                    source,
                });
            checks.record(
                name,
                format!("valid {} .. {}", cert.not_before(), cert.not_after()),
                r,
            )?;
        }
        for crl in &self.crls {
            let r = crl
                .check_current_at(at)
                .map_err(|source| SnpError::Certificate {
                    check: "crl.current",
                    source,
                });
            checks.record(
                "crl.current",
                format!("CRL of {} current", common_name(crl.issuer())),
                r,
            )?;
        }
        Ok(())
    }
}
