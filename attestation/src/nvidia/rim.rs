//! NVIDIA Reference Integrity Manifests (RIMs): ISO/IEC 19770-2 SWID tags whose
//! `Payload` lists the expected measurements of a driver or VBIOS release.
//!
//! Each `Resource type="Measurement"` has an `index` (RIM index i is SPDM measurement
//! block i+1), `active` (`True`/`False`; inactive ones are not compared), and
//! `alternatives` N with attributes `Hash0`..`Hash{N-1}` in the SHA-384 namespace
//! (`http://www.w3.org/2001/04/xmlenc#sha384`): the report's block must equal one of
//! them.
//!
//! Parsing does not verify the RIM's XML-DSig signature; the GPU verifier does, with
//! [`super::xmldsig::verify_enveloped`] over [`Rim::xml`], before comparing (check
//! `rim.<kind>.signature`), so a RIM whose signature fails is never used.

use std::fmt;

use serde::Serialize;

use crate::nvidia::spdm::GpuReport;

/// The SWID tag namespace.
pub const SWID_NS: &str = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd";
/// The namespace of the `HashN` attributes (SHA-384).
pub const SHA384_NS: &str = "http://www.w3.org/2001/04/xmlenc#sha384";
/// The XML-DSig namespace.
pub const XMLDSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// The largest RIM accepted (real ones are about 21 KB).
pub const MAX_RIM_LEN: usize = 1 << 20;
/// The most alternatives accepted for one measurement.
pub const MAX_ALTERNATIVES: usize = 64;

/// Why a RIM was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RimError {
    /// Larger than [`MAX_RIM_LEN`].
    #[error("RIM of {0} bytes is larger than {MAX_RIM_LEN}")]
    TooLarge(usize),
    /// Not well-formed XML (or a DTD, which is refused).
    #[error("RIM XML: {0}")]
    Xml(String),
    /// A required element or attribute is missing.
    #[error("RIM: missing {0}")]
    Missing(&'static str),
    /// A measurement resource is malformed.
    #[error("RIM measurement {index}: {detail}")]
    Measurement {
        /// The `index` attribute as written.
        index: String,
        /// What is wrong.
        detail: String,
    },
}

/// Which firmware a RIM describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RimKind {
    /// The GPU driver (GSP firmware); version like `550.90.07`.
    Driver,
    /// The VBIOS; version like `96.00.9F.00.01`.
    Vbios,
}

impl RimKind {
    /// `driver` or `vbios`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Vbios => "vbios",
        }
    }

    /// The kind a `colloquialVersion` denotes: five two-hex-digit components is a
    /// VBIOS version, anything else a driver version.
    #[must_use]
    pub fn of_version(version: &str) -> Self {
        let parts: Vec<&str> = version.split('.').collect();
        if parts.len() == 5
            && parts
                .iter()
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            Self::Vbios
        } else {
            Self::Driver
        }
    }
}

impl fmt::Display for RimKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One reference measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RimMeasurement {
    /// The RIM index (SPDM block index - 1).
    pub index: u32,
    /// Whether it is compared.
    pub active: bool,
    /// The `name` attribute.
    pub name: String,
    /// The accepted values.
    pub alternatives: Vec<Vec<u8>>,
}

/// A parsed RIM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rim {
    /// `SoftwareIdentity/@tagId`.
    pub tag_id: String,
    /// `Meta/@colloquialVersion`.
    pub version: String,
    /// `Meta/@product` (`GH100`).
    pub product: String,
    /// Driver or VBIOS, from the version's shape.
    pub kind: RimKind,
    /// The measurements, in document order.
    pub measurements: Vec<RimMeasurement>,
    /// Whether a `ds:Signature` element is present (NOT whether it verifies).
    pub has_signature: bool,
    /// The document, for [`super::xmldsig::verify_enveloped`].
    pub xml: String,
}

/// An active reference measurement the report does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RimMismatch {
    /// The RIM index.
    pub index: u32,
    /// The SPDM block index (RIM index + 1).
    pub block: u32,
    /// The accepted values, hex.
    pub expected: Vec<String>,
    /// The report's value, hex; `None` when the report has no such block.
    pub found: Option<String>,
}

impl fmt::Display for RimMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "index {} (SPDM block {}): expected {}, found {}",
            self.index,
            self.block,
            if self.expected.len() == 1 {
                self.expected.concat()
            } else {
                format!("one of [{}]", self.expected.join(", "))
            },
            self.found.as_deref().unwrap_or("no such block")
        )
    }
}

/// The outcome of comparing a report with a RIM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RimComparison {
    /// RIM indices of active measurements the report matches.
    pub matched: Vec<u32>,
    /// Active measurements it does not match.
    pub mismatched: Vec<RimMismatch>,
}

impl RimComparison {
    /// The RIM indices that mismatch.
    #[must_use]
    pub fn mismatched_indices(&self) -> Vec<u32> {
        self.mismatched.iter().map(|m| m.index).collect()
    }
}

impl Rim {
    /// Parse a RIM (UTF-8 XML; DTDs are refused).
    ///
    /// # Errors
    /// [`RimError`] naming what is missing or malformed.
    pub fn parse(xml: &[u8]) -> Result<Self, RimError> {
        if xml.len() > MAX_RIM_LEN {
            return Err(RimError::TooLarge(xml.len()));
        }
        let text = std::str::from_utf8(xml).map_err(|e| RimError::Xml(e.to_string()))?;
        let doc = roxmltree::Document::parse(text).map_err(|e| RimError::Xml(e.to_string()))?;
        let root = doc.root_element();
        if !root.has_tag_name((SWID_NS, "SoftwareIdentity")) {
            return Err(RimError::Missing("SoftwareIdentity root element"));
        }
        let tag_id = root
            .attribute("tagId")
            .ok_or(RimError::Missing("SoftwareIdentity/@tagId"))?
            .to_owned();
        let meta = root
            .children()
            .find(|n| n.has_tag_name((SWID_NS, "Meta")))
            .ok_or(RimError::Missing("Meta"))?;
        let version = meta
            .attribute("colloquialVersion")
            .ok_or(RimError::Missing("Meta/@colloquialVersion"))?
            .to_owned();
        let product = meta.attribute("product").unwrap_or_default().to_owned();
        let payload = root
            .children()
            .find(|n| n.has_tag_name((SWID_NS, "Payload")))
            .ok_or(RimError::Missing("Payload"))?;
        let mut measurements: Vec<RimMeasurement> = Vec::new();
        for res in payload
            .children()
            .filter(|n| n.has_tag_name((SWID_NS, "Resource")))
            .filter(|n| n.attribute("type") == Some("Measurement"))
        {
            let m = measurement(&res)?;
            if measurements.iter().any(|x| x.index == m.index) {
                return Err(RimError::Measurement {
                    index: m.index.to_string(),
                    detail: "appears twice".to_owned(),
                });
            }
            measurements.push(m);
        }
        if measurements.is_empty() {
            return Err(RimError::Missing("Payload/Resource[@type='Measurement']"));
        }
        let has_signature = root
            .children()
            .any(|n| n.has_tag_name((XMLDSIG_NS, "Signature")));
        Ok(Self {
            tag_id,
            kind: RimKind::of_version(&version),
            version,
            product,
            measurements,
            has_signature,
            xml: text.to_owned(),
        })
    }

    /// The RIM indices of the active measurements.
    #[must_use]
    pub fn active_indices(&self) -> Vec<u32> {
        self.measurements
            .iter()
            .filter(|m| m.active)
            .map(|m| m.index)
            .collect()
    }

    /// Compare every active measurement with the report's block index + 1.
    #[must_use]
    pub fn compare(&self, report: &GpuReport) -> RimComparison {
        let mut out = RimComparison::default();
        for m in self.measurements.iter().filter(|m| m.active) {
            let block = m.index.saturating_add(1);
            let found = u8::try_from(block)
                .ok()
                .and_then(|b| report.block(b))
                .map(|b| b.value.as_slice());
            let ok = found.is_some_and(|v| {
                m.alternatives
                    .iter()
                    .any(|a| subtle::ConstantTimeEq::ct_eq(a.as_slice(), v).into())
            });
            if ok {
                out.matched.push(m.index);
            } else {
                out.mismatched.push(RimMismatch {
                    index: m.index,
                    block,
                    expected: m.alternatives.iter().map(hex::encode).collect(),
                    found: found.map(hex::encode),
                });
            }
        }
        out
    }
}

fn measurement(res: &roxmltree::Node<'_, '_>) -> Result<RimMeasurement, RimError> {
    let raw_index = res.attribute("index").unwrap_or_default();
    let err = |detail: String| RimError::Measurement {
        index: raw_index.to_owned(),
        detail,
    };
    let index: u32 = raw_index
        .parse()
        .map_err(|_| err("index is not a number".to_owned()))?;
    let active = match res.attribute("active") {
        Some(a) if a.eq_ignore_ascii_case("true") => true,
        Some(a) if a.eq_ignore_ascii_case("false") => false,
        other => return Err(err(format!("active is {other:?}, not True or False"))),
    };
    let count: usize = res
        .attribute("alternatives")
        .and_then(|a| a.parse().ok())
        .filter(|&n| (1..=MAX_ALTERNATIVES).contains(&n))
        .ok_or_else(|| err(format!("alternatives is not 1..={MAX_ALTERNATIVES}")))?;
    let size: Option<usize> = res.attribute("size").and_then(|s| s.parse().ok());
    let mut alternatives = Vec::with_capacity(count);
    for k in 0..count {
        let name = format!("Hash{k}");
        let text = res
            .attribute((SHA384_NS, name.as_str()))
            .ok_or_else(|| err(format!("{name} (SHA-384) missing")))?;
        let value = hex::decode(text).map_err(|_| err(format!("{name} is not hex")))?;
        if value.len() != 48 || size.is_some_and(|s| s != value.len()) {
            return Err(err(format!(
                "{name} has {} bytes, not 48 (size {size:?})",
                value.len()
            )));
        }
        alternatives.push(value);
    }
    Ok(RimMeasurement {
        index,
        active,
        name: res.attribute("name").unwrap_or_default().to_owned(),
        alternatives,
    })
}
