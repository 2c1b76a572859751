//! What a TDX quote must show beyond verifying: accepted TCB statuses, refused
//! advisories, TD attributes, allowed measurement values, and what the TD event log
//! (CCEL) must show when evidence carries one.

use serde::{Deserialize, Serialize};

use super::TdxError;
use super::eventlog::{self, CcelRecord};
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
    /// Refuse evidence without the TD event log (CCEL). Whether required or not, a log
    /// that evidence carries must replay to the quoted RTMR 0..=3.
    pub require_event_log: bool,
    /// Events that must be in the event log (`[[tdx.events]]`: `rtmr`, `digest`,
    /// optionally `event_type`); pinning any makes the log required.
    pub events: Vec<PinnedEvent>,
}

/// An RTMR index, 0..=3 (anything else is refused when the policy is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct RtmrIndex(u8);

impl RtmrIndex {
    /// The index, 0..=3.
    #[must_use]
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

impl TryFrom<u8> for RtmrIndex {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, String> {
        if value <= 3 {
            Ok(Self(value))
        } else {
            Err(format!("RTMR index {value} is not 0..=3"))
        }
    }
}

impl From<RtmrIndex> for u8 {
    fn from(index: RtmrIndex) -> Self {
        index.0
    }
}

/// An event the TD event log must hold: one that extends `rtmr` with `digest` (and is of
/// `event_type`, when given), so a policy can pin one boot component (a kernel, a boot
/// loader, a command line) rather than a register's final value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedEvent {
    /// The RTMR the event extends, 0..=3.
    pub rtmr: RtmrIndex,
    /// The event's SHA-384 digest (96 hex digits).
    pub digest: Measurement,
    /// The TCG event type (`EV_EFI_BOOT_SERVICES_APPLICATION` is `0x80000003`); any when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<u32>,
}

impl PinnedEvent {
    /// Whether `record` is this event.
    #[must_use]
    pub fn matches(&self, record: &CcelRecord) -> bool {
        record.rtmr() == Some(self.rtmr.get())
            && record
                .sha384
                .is_some_and(|d| subtle::ConstantTimeEq::ct_eq(&d[..], &self.digest.0[..]).into())
            && self.event_type.is_none_or(|t| t == record.event_type)
    }
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
            require_event_log: false,
            events: Vec::new(),
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

    /// The event log checks. Without a log: nothing, unless the policy requires one or
    /// pins events (`policy.event-log` fails). With one: it parses (`event-log.parse`),
    /// its replay gives each quoted RTMR (`event-log.rtmr0` … `event-log.rtmr3`: a log
    /// that does not is an attack or a broken host, whatever the policy), and every pinned
    /// event is in it (`policy.events`). Returns the log's records (the Spec ID event
    /// left out), for display.
    ///
    /// `log` is untrusted: any bytes give a result or an error, never a panic. It needs no
    /// binding of its own: the quote signs the RTMRs it must replay to.
    ///
    /// # Errors
    /// [`TdxError::EventLogRequired`], [`TdxError::EventLog`] (it does not parse),
    /// [`TdxError::EventLogReplay`] naming the first RTMR that differs, or
    /// [`TdxError::EventMissing`] naming the first pinned event not found.
    pub fn check_event_log(
        &self,
        report: &TdReport,
        log: Option<&[u8]>,
        checks: &mut Checks,
    ) -> Result<Option<Vec<CcelRecord>>, TdxError> {
        let required = self.require_event_log || !self.events.is_empty();
        let Some(log) = log else {
            if required {
                let err = TdxError::EventLogRequired {
                    pinned: self.events.len(),
                };
                checks.fail("policy.event-log", err.to_string());
                return Err(err);
            }
            return Ok(None);
        };
        let records = match eventlog::parse_ccel_records(log) {
            Ok(records) => records,
            Err(e) => {
                let err = TdxError::EventLog(e);
                checks.fail("event-log.parse", err.to_string());
                return Err(err);
            }
        };
        let events: Vec<eventlog::Event> = records.iter().filter_map(CcelRecord::event).collect();
        checks.pass(
            "event-log.parse",
            format!(
                "CCEL of {} bytes: {} records, {} extend RTMRs",
                log.len(),
                records.len(),
                events.len()
            ),
        );
        let replayed = match eventlog::replay(&events) {
            Ok(r) => r,
            Err(err) => {
                checks.fail("event-log.parse", err.to_string());
                return Err(err);
            }
        };
        if let Err(err) = eventlog::compare(&replayed, &report.rtmr) {
            let failed = match &err {
                TdxError::EventLogReplay { rtmr, .. } => *rtmr,
                _ => 0,
            };
            for i in 0..failed {
                checks.pass(
                    format!("event-log.rtmr{i}"),
                    replay_detail(&events, i, &replayed),
                );
            }
            checks.fail(format!("event-log.rtmr{failed}"), err.to_string());
            return Err(err);
        }
        for i in 0..replayed.len() {
            checks.pass(
                format!("event-log.rtmr{i}"),
                replay_detail(&events, i, &replayed),
            );
        }
        checks.pass(
            "policy.event-log",
            if self.require_event_log {
                "the evidence carries the event log the policy requires"
            } else if required {
                "the evidence carries the event log the pinned events need"
            } else {
                "the evidence carries an event log (not required by the policy)"
            },
        );
        if let Some(missing) = self
            .events
            .iter()
            .find(|p| !records.iter().any(|r| p.matches(r)))
        {
            let err = TdxError::EventMissing {
                rtmr: missing.rtmr.get(),
                digest: missing.digest.to_string(),
                event_type: missing.event_type,
            };
            checks.fail("policy.events", err.to_string());
            return Err(err);
        }
        checks.pass(
            "policy.events",
            if self.events.is_empty() {
                "no event pinned".to_owned()
            } else {
                format!("all {} pinned event(s) are in the log", self.events.len())
            },
        );
        Ok(Some(records))
    }
}

/// `N event(s) replay to the quoted <hex>` for RTMR `i`.
fn replay_detail(events: &[eventlog::Event], i: usize, replayed: &[[u8; 48]; 4]) -> String {
    let n = events.iter().filter(|e| e.rtmr == i).count();
    format!(
        "{n} event(s) replay to the quoted {}",
        replayed.get(i).map(hex::encode).unwrap_or_default()
    )
}
