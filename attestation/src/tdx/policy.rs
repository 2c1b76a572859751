//! What a TDX quote must show beyond verifying: accepted TCB statuses, refused
//! advisories, TD attributes, and allowed measurement values.

use serde::{Deserialize, Serialize};

use super::TdxError;
use super::quote::TdReport;
use super::tcb::TcbStatus;
use crate::bytes::{Measurement, hex_newtype};
use crate::checks::Checks;

hex_newtype!(
    /// The 8-byte XFAM of a TD report (the extended features the TD may use).
    Xfam,
    8,
    "8-byte XFAM"
);

/// TD attribute bit 0: DEBUG (TUD).
const TD_ATTR_DEBUG: u64 = 1;
/// TD attribute bit 28: SEPT_VE_DISABLE.
const TD_ATTR_SEPT_VE_DISABLE: u64 = 1 << 28;

/// TDX policy. Lists of allowed values are hex strings (any case) of the register's
/// exact length (48 bytes for the measurement registers, 8 for XFAM); a value of another
/// length is refused when the policy is read. An empty list allows any value.
///
/// The default accepts TCB status `UpToDate`, and `SWHardeningNeeded` with a warning:
/// the latter says the platform is fully patched but that some advisories call for
/// software mitigations inside the TD, which is the status most current TDX platforms
/// report (refusing it refuses most of the fleet; pin `rejected_advisory_ids` instead
/// for advisories your image does not mitigate). Anything out of date, needing
/// configuration, or revoked is refused. Debug TDs are refused; SEPT_VE_DISABLE is
/// required (a TD without it can be made to take #VE on EPT violations the host causes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TdxPolicy {
    /// Accepted TCB statuses; `UpToDate` passes, any other accepted one warns.
    pub accepted_tcb_statuses: Vec<TcbStatus>,
    /// Advisory ids (`INTEL-SA-…`) that make a quote fail even when its status is accepted.
    pub rejected_advisory_ids: Vec<String>,
    /// Accept a debug TD (TD attribute DEBUG). Never in production.
    pub allow_debug: bool,
    /// Require TD attribute SEPT_VE_DISABLE.
    pub require_sept_ve_disable: bool,
    /// Allowed XFAM values (8 bytes hex).
    pub xfam: Vec<Xfam>,
    /// Allowed MRTD values (48 bytes hex).
    pub mr_td: Vec<Measurement>,
    /// Allowed RTMR0 values.
    pub rtmr0: Vec<Measurement>,
    /// Allowed RTMR1 values.
    pub rtmr1: Vec<Measurement>,
    /// Allowed RTMR2 values.
    pub rtmr2: Vec<Measurement>,
    /// Allowed RTMR3 values.
    pub rtmr3: Vec<Measurement>,
    /// Allowed MRCONFIGID values.
    pub mr_config_id: Vec<Measurement>,
    /// Allowed MROWNER values.
    pub mr_owner: Vec<Measurement>,
    /// Allowed MROWNERCONFIG values.
    pub mr_owner_config: Vec<Measurement>,
    /// Allowed MRSEAM values (TDX module measurements).
    pub mr_seam: Vec<Measurement>,
}

impl Default for TdxPolicy {
    fn default() -> Self {
        Self {
            accepted_tcb_statuses: vec![TcbStatus::UpToDate, TcbStatus::SWHardeningNeeded],
            rejected_advisory_ids: Vec::new(),
            allow_debug: false,
            require_sept_ve_disable: true,
            xfam: Vec::new(),
            mr_td: Vec::new(),
            rtmr0: Vec::new(),
            rtmr1: Vec::new(),
            rtmr2: Vec::new(),
            rtmr3: Vec::new(),
            mr_config_id: Vec::new(),
            mr_owner: Vec::new(),
            mr_owner_config: Vec::new(),
            mr_seam: Vec::new(),
        }
    }
}

fn allowed<T: AsRef<[u8]>>(
    checks: &mut Checks,
    name: &str,
    list: &[T],
    value: &[u8],
) -> Result<(), TdxError> {
    let found = hex::encode(value);
    if list.is_empty() {
        checks.pass(name, format!("{found} (any allowed)"));
        return Ok(());
    }
    let matches = |v: &T| -> bool { subtle::ConstantTimeEq::ct_eq(v.as_ref(), value).into() };
    if list.iter().any(matches) {
        checks.pass(name, format!("{found} is allowed"));
        Ok(())
    } else {
        let err = TdxError::Policy(format!(
            "{name}: {found} is not among the {} allowed",
            list.len()
        ));
        checks.fail(name, err.to_string());
        Err(err)
    }
}

impl TdxPolicy {
    /// The TCB status and advisory checks (`tcb.status`, `policy.advisories`).
    ///
    /// # Errors
    /// [`TdxError::TcbStatusRejected`] or [`TdxError::AdvisoryRejected`].
    pub fn check_tcb(
        &self,
        status: TcbStatus,
        advisory_ids: &[String],
        checks: &mut Checks,
    ) -> Result<(), TdxError> {
        let detail = if advisory_ids.is_empty() {
            status.to_string()
        } else {
            format!("{status} (advisories {})", advisory_ids.join(", "))
        };
        if !self.accepted_tcb_statuses.contains(&status) {
            let err = TdxError::TcbStatusRejected(status);
            checks.fail("tcb.status", format!("{detail}: {err}"));
            return Err(err);
        }
        if status == TcbStatus::UpToDate {
            checks.pass("tcb.status", detail);
        } else {
            checks.warn("tcb.status", format!("{detail}: accepted by policy"));
        }
        if let Some(id) = advisory_ids.iter().find(|id| {
            self.rejected_advisory_ids
                .iter()
                .any(|r| r.eq_ignore_ascii_case(id))
        }) {
            let err = TdxError::AdvisoryRejected(id.clone());
            checks.fail("policy.advisories", err.to_string());
            return Err(err);
        }
        checks.pass(
            "policy.advisories",
            format!("none of {} refused", self.rejected_advisory_ids.len()),
        );
        Ok(())
    }

    /// The TD checks: attributes, XFAM, measurements, report data.
    ///
    /// # Errors
    /// [`TdxError::Policy`] naming the first check that failed.
    pub fn check_td(
        &self,
        report: &TdReport,
        expected_report_data: Option<&[u8; 64]>,
        checks: &mut Checks,
    ) -> Result<(), TdxError> {
        let attrs = u64::from_le_bytes(report.td_attributes);
        if attrs & TD_ATTR_DEBUG != 0 && !self.allow_debug {
            let err = TdxError::Policy("policy.debug: the TD is a debug TD".to_owned());
            checks.fail("policy.debug", err.to_string());
            return Err(err);
        }
        checks.pass(
            "policy.debug",
            if attrs & TD_ATTR_DEBUG == 0 {
                "debug off"
            } else {
                "debug on (allowed by policy)"
            },
        );
        if self.require_sept_ve_disable && attrs & TD_ATTR_SEPT_VE_DISABLE == 0 {
            let err =
                TdxError::Policy("policy.sept-ve-disable: SEPT_VE_DISABLE is not set".to_owned());
            checks.fail("policy.sept-ve-disable", err.to_string());
            return Err(err);
        }
        checks.pass(
            "policy.sept-ve-disable",
            format!("TD attributes {}", hex::encode(report.td_attributes)),
        );
        allowed(checks, "policy.xfam", &self.xfam, &report.xfam)?;
        allowed(checks, "policy.mrseam", &self.mr_seam, &report.mr_seam)?;
        allowed(checks, "policy.mrtd", &self.mr_td, &report.mr_td)?;
        let [r0, r1, r2, r3] = &report.rtmr;
        allowed(checks, "policy.rtmr0", &self.rtmr0, r0)?;
        allowed(checks, "policy.rtmr1", &self.rtmr1, r1)?;
        allowed(checks, "policy.rtmr2", &self.rtmr2, r2)?;
        allowed(checks, "policy.rtmr3", &self.rtmr3, r3)?;
        allowed(
            checks,
            "policy.mrconfigid",
            &self.mr_config_id,
            &report.mr_config_id,
        )?;
        allowed(checks, "policy.mrowner", &self.mr_owner, &report.mr_owner)?;
        allowed(
            checks,
            "policy.mrownerconfig",
            &self.mr_owner_config,
            &report.mr_owner_config,
        )?;
        match expected_report_data {
            Some(expected) if expected == &report.report_data => {
                checks.pass("policy.report-data", "REPORTDATA binds the expected value");
            }
            Some(expected) => {
                let err = TdxError::Policy(format!(
                    "policy.report-data: REPORTDATA {} is not the expected {}",
                    hex::encode(report.report_data),
                    hex::encode(expected)
                ));
                checks.fail("policy.report-data", err.to_string());
                return Err(err);
            }
            None => checks.warn(
                "policy.report-data",
                format!(
                    "{} (no expected value given: not checked)",
                    hex::encode(report.report_data)
                ),
            ),
        }
        Ok(())
    }
}
