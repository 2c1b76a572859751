//! TCB evaluation: the PCK certificate's SGX extensions, TCB Info and QE Identity
//! (the JSON collateral's types), TCB level selection and status convergence.

use serde::{Deserialize, Serialize};

use super::TdxError;
use crate::x509::Tlv;

/// OID of the PCK certificate's SGX extensions.
pub const SGX_EXTENSIONS_OID: &str = "1.2.840.113741.1.13.1";

/// A TCB status, as Intel's collateral names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TcbStatus {
    /// The platform is patched.
    UpToDate,
    /// Patched; software mitigations are needed for some advisories.
    SWHardeningNeeded,
    /// Patched; a platform configuration change is needed.
    ConfigurationNeeded,
    /// Both of the above.
    ConfigurationAndSWHardeningNeeded,
    /// Not patched.
    OutOfDate,
    /// Not patched, and a configuration change is needed.
    OutOfDateConfigurationNeeded,
    /// The TCB level is revoked.
    Revoked,
}

impl TcbStatus {
    /// The name Intel uses.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UpToDate => "UpToDate",
            Self::SWHardeningNeeded => "SWHardeningNeeded",
            Self::ConfigurationNeeded => "ConfigurationNeeded",
            Self::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            Self::OutOfDate => "OutOfDate",
            Self::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            Self::Revoked => "Revoked",
        }
    }

    /// Converge the platform's status with a component's (TDX module, QE): an
    /// out-of-date or revoked component makes the whole out of date or revoked.
    #[must_use]
    pub fn converge(self, component: Self) -> Self {
        match component {
            Self::Revoked => Self::Revoked,
            Self::OutOfDate | Self::OutOfDateConfigurationNeeded => match self {
                Self::UpToDate | Self::SWHardeningNeeded | Self::OutOfDate => Self::OutOfDate,
                Self::ConfigurationNeeded
                | Self::ConfigurationAndSWHardeningNeeded
                | Self::OutOfDateConfigurationNeeded => Self::OutOfDateConfigurationNeeded,
                Self::Revoked => Self::Revoked,
            },
            _ => self,
        }
    }
}

impl std::fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the PCK certificate's SGX extensions say about the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PckExtensions {
    /// The 16 SGX TCB component SVNs (`.2.1`..`.2.16`).
    pub cpu_svn: [u8; 16],
    /// PCESVN (`.2.17`).
    pub pce_svn: u16,
    /// PCE id (`.3`).
    pub pce_id: [u8; 2],
    /// FMSPC (`.4`).
    pub fmspc: [u8; 6],
}

/// One DER TLV: (tag, contents, rest).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), TdxError> {
    tlv_raw(input).map(|(tag, _, contents, rest)| (tag, contents, rest))
}

/// (OID contents, value tag, value contents).
type OidValue<'a> = (&'a [u8], u8, &'a [u8]);

pub(crate) fn tlv_raw(input: &[u8]) -> Result<Tlv<'_>, TdxError> {
    crate::x509::der_tlv(input).ok_or_else(|| TdxError::PckExtensions("malformed DER".to_owned()))
}

/// The elements of a DER SEQUENCE's contents as `(OID bytes, value TLV tag, value)`.
fn oid_value_pairs(mut seq: &[u8]) -> Result<Vec<OidValue<'_>>, TdxError> {
    let mut out = Vec::new();
    while !seq.is_empty() {
        let (tag, pair, rest) = tlv(seq)?;
        seq = rest;
        if tag != 0x30 {
            return Err(TdxError::PckExtensions("expected a SEQUENCE".to_owned()));
        }
        let (otag, oid, rest) = tlv(pair)?;
        if otag != 0x06 {
            return Err(TdxError::PckExtensions("expected an OID".to_owned()));
        }
        let (vtag, value, _) = tlv(rest)?;
        out.push((oid, vtag, value));
    }
    Ok(out)
}

/// DER content bytes of OID 1.2.840.113741.1.13.1.
const SGX_OID_PREFIX: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01];

fn small_int(tag: u8, value: &[u8], what: &str) -> Result<u32, TdxError> {
    if tag != 0x02 || value.is_empty() || value.len() > 5 {
        return Err(TdxError::PckExtensions(format!(
            "{what}: not a small INTEGER"
        )));
    }
    let v = value.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    u32::try_from(v).map_err(|_| TdxError::PckExtensions(format!("{what}: out of range")))
}

impl PckExtensions {
    /// Parse the extension's value (a DER SEQUENCE of (OID, value) pairs).
    ///
    /// # Errors
    /// [`TdxError::PckExtensions`] when malformed or missing a field.
    pub fn parse(ext_value: &[u8]) -> Result<Self, TdxError> {
        let (tag, seq, _) = tlv(ext_value)?;
        if tag != 0x30 {
            return Err(TdxError::PckExtensions("expected a SEQUENCE".to_owned()));
        }
        let mut cpu_svn = [None::<u8>; 16];
        let mut pce_svn = None;
        let mut pce_id = None;
        let mut fmspc = None;
        for (oid, vtag, value) in oid_value_pairs(seq)? {
            let Some(arc) = oid.strip_prefix(&SGX_OID_PREFIX[..]) else {
                continue;
            };
            match arc {
                [2] => {
                    if vtag != 0x30 {
                        return Err(TdxError::PckExtensions("TCB: not a SEQUENCE".to_owned()));
                    }
                    for (toid, ttag, tval) in oid_value_pairs(value)? {
                        let Some(sub) = toid.strip_prefix(&SGX_OID_PREFIX[..]) else {
                            continue;
                        };
                        match sub {
                            [2, n @ 1..=16] => {
                                let svn = small_int(ttag, tval, "TCB component")?;
                                let slot = cpu_svn
                                    .get_mut(usize::from(*n) - 1)
                                    .ok_or_else(|| TdxError::PckExtensions("index".to_owned()))?;
                                *slot = Some(u8::try_from(svn).map_err(|_| {
                                    TdxError::PckExtensions("TCB component > 255".to_owned())
                                })?);
                            }
                            [2, 17] => {
                                let svn = small_int(ttag, tval, "PCESVN")?;
                                pce_svn = Some(u16::try_from(svn).map_err(|_| {
                                    TdxError::PckExtensions("PCESVN > 65535".to_owned())
                                })?);
                            }
                            _ => {}
                        }
                    }
                }
                [3] => pce_id = Some(<[u8; 2]>::try_from(value).ok().filter(|_| vtag == 0x04)),
                [4] => fmspc = Some(<[u8; 6]>::try_from(value).ok().filter(|_| vtag == 0x04)),
                _ => {}
            }
        }
        let missing = |what: &str| TdxError::PckExtensions(format!("missing {what}"));
        let mut svn = [0u8; 16];
        for (out, got) in svn.iter_mut().zip(cpu_svn) {
            *out = got.ok_or_else(|| missing("a TCB component SVN"))?;
        }
        Ok(Self {
            cpu_svn: svn,
            pce_svn: pce_svn.ok_or_else(|| missing("PCESVN"))?,
            pce_id: pce_id.flatten().ok_or_else(|| missing("PCEID"))?,
            fmspc: fmspc.flatten().ok_or_else(|| missing("FMSPC"))?,
        })
    }
}

/// A TCB component in TCB Info.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TcbComponent {
    /// Its SVN.
    pub svn: u8,
}

/// The TCB of a TCB level.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Tcb {
    /// 16 SGX components.
    pub sgxtcbcomponents: Vec<TcbComponent>,
    /// PCESVN.
    pub pcesvn: u16,
    /// 16 TDX components (TEE_TCB_SVN).
    #[serde(default)]
    pub tdxtcbcomponents: Vec<TcbComponent>,
}

/// A platform TCB level.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcbLevel {
    /// The TCB.
    pub tcb: Tcb,
    /// Date of the TCB.
    pub tcb_date: String,
    /// Status.
    pub tcb_status: TcbStatus,
    /// Advisories.
    #[serde(default, rename = "advisoryIDs")]
    pub advisory_ids: Vec<String>,
}

/// An ISVSVN-keyed TCB level (TDX module identities, QE identity).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IsvTcbLevel {
    /// `{"isvsvn": n}`.
    pub tcb: IsvSvn,
    /// Date.
    pub tcb_date: String,
    /// Status.
    pub tcb_status: TcbStatus,
    /// Advisories.
    #[serde(default, rename = "advisoryIDs")]
    pub advisory_ids: Vec<String>,
}

/// `{"isvsvn": n}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IsvSvn {
    /// The SVN.
    pub isvsvn: u16,
}

/// A TDX module identity (TCB Info v3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TdxModuleIdentity {
    /// `TDX_<major version, 2 hex digits>`.
    pub id: String,
    /// Hex, 48 bytes.
    pub mrsigner: String,
    /// Hex, 8 bytes.
    pub attributes: String,
    /// Hex, 8 bytes.
    pub attributes_mask: String,
    /// Levels by the module's SVN (TEE_TCB_SVN\[0\]).
    pub tcb_levels: Vec<IsvTcbLevel>,
}

/// The `tcbInfo` object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcbInfo {
    /// `TDX`.
    pub id: String,
    /// 3.
    pub version: u32,
    /// RFC 3339.
    pub issue_date: String,
    /// RFC 3339.
    pub next_update: String,
    /// Hex, 6 bytes.
    pub fmspc: String,
    /// Hex, 2 bytes.
    pub pce_id: String,
    /// Evaluation data number.
    pub tcb_evaluation_data_number: u32,
    /// TDX module identities (absent in older TCB Info).
    #[serde(default)]
    pub tdx_module_identities: Option<Vec<TdxModuleIdentity>>,
    /// Levels, best first.
    pub tcb_levels: Vec<TcbLevel>,
}

/// The `enclaveIdentity` object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QeIdentity {
    /// `TD_QE`.
    pub id: String,
    /// 2.
    pub version: u32,
    /// RFC 3339.
    pub issue_date: String,
    /// RFC 3339.
    pub next_update: String,
    /// Evaluation data number.
    pub tcb_evaluation_data_number: u32,
    /// Hex, 4 bytes.
    pub miscselect: String,
    /// Hex, 4 bytes.
    pub miscselect_mask: String,
    /// Hex, 16 bytes.
    pub attributes: String,
    /// Hex, 16 bytes.
    pub attributes_mask: String,
    /// Hex, 32 bytes.
    pub mrsigner: String,
    /// ISVPRODID.
    pub isvprodid: u16,
    /// Levels by ISVSVN, best first.
    pub tcb_levels: Vec<IsvTcbLevel>,
}

/// The platform level matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformMatch {
    /// Its status.
    pub status: TcbStatus,
    /// Its date.
    pub tcb_date: String,
    /// Its advisories.
    pub advisory_ids: Vec<String>,
}

fn all_ge(have: &[u8], need: &[TcbComponent]) -> bool {
    need.len() == have.len() && have.iter().zip(need).all(|(h, n)| *h >= n.svn)
}

/// Select the first (best) TCB level whose SGX components and PCESVN the PCK
/// certificate's meet, and whose TDX components TEE_TCB_SVN meets (all 16 bytes,
/// component-wise).
///
/// # Errors
/// [`TdxError::NoMatchingTcbLevel`] when none.
pub fn match_platform(
    info: &TcbInfo,
    pck: &PckExtensions,
    tee_tcb_svn: &[u8; 16],
) -> Result<PlatformMatch, TdxError> {
    for level in &info.tcb_levels {
        if !all_ge(&pck.cpu_svn, &level.tcb.sgxtcbcomponents) || pck.pce_svn < level.tcb.pcesvn {
            continue;
        }
        if !all_ge(tee_tcb_svn, &level.tcb.tdxtcbcomponents) {
            continue;
        }
        return Ok(PlatformMatch {
            status: level.tcb_status,
            tcb_date: level.tcb_date.clone(),
            advisory_ids: level.advisory_ids.clone(),
        });
    }
    Err(TdxError::NoMatchingTcbLevel)
}

/// The TDX module identity rule (TCB Info v3): the identity `TDX_<TEE_TCB_SVN[1]>`
/// must exist when the major version is non-zero, match MRSIGNERSEAM and the SEAM
/// attributes under its mask, and its first level with `isvsvn <= TEE_TCB_SVN[0]`
/// gives the module's status. `Ok(None)` when the rule does not apply (no identities
/// in the TCB Info, or major version 0).
///
/// # Errors
/// [`TdxError::TdxModule`] naming what did not match.
pub fn match_module(
    info: &TcbInfo,
    tee_tcb_svn: &[u8; 16],
    mr_signer_seam: &[u8; 48],
    seam_attributes: &[u8; 8],
) -> Result<Option<(String, IsvTcbLevel)>, TdxError> {
    let Some(identities) = &info.tdx_module_identities else {
        return Ok(None);
    };
    let major = tee_tcb_svn[1];
    if major == 0 {
        return Ok(None);
    }
    let id = format!("TDX_{major:02X}");
    let identity = identities
        .iter()
        .find(|m| m.id.eq_ignore_ascii_case(&id))
        .ok_or_else(|| TdxError::TdxModule(format!("no identity {id} in the TCB Info")))?;
    let signer = hex_exact::<48>(&identity.mrsigner, "tdxModule mrsigner")?;
    if &signer != mr_signer_seam {
        return Err(TdxError::TdxModule(format!(
            "MRSIGNERSEAM {} is not {id}'s {}",
            hex::encode(mr_signer_seam),
            identity.mrsigner
        )));
    }
    let attrs = hex_exact::<8>(&identity.attributes, "tdxModule attributes")?;
    let mask = hex_exact::<8>(&identity.attributes_mask, "tdxModule attributesMask")?;
    if seam_attributes
        .iter()
        .zip(&mask)
        .zip(&attrs)
        .any(|((a, m), e)| a & m != e & m)
    {
        return Err(TdxError::TdxModule(format!(
            "SEAM attributes {} do not match {id}'s",
            hex::encode(seam_attributes)
        )));
    }
    let level = identity
        .tcb_levels
        .iter()
        .find(|l| l.tcb.isvsvn <= u16::from(tee_tcb_svn[0]))
        .ok_or_else(|| {
            TdxError::TdxModule(format!(
                "no {id} TCB level for module SVN {}",
                tee_tcb_svn[0]
            ))
        })?;
    Ok(Some((id, level.clone())))
}

/// Decode exactly `N` bytes of hex.
///
/// # Errors
/// [`TdxError::Collateral`] naming `what`.
pub fn hex_exact<const N: usize>(text: &str, what: &str) -> Result<[u8; N], TdxError> {
    let bytes = hex::decode(text).map_err(|e| TdxError::Collateral(format!("{what}: {e}")))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| TdxError::Collateral(format!("{what}: expected {N} bytes")))
}
