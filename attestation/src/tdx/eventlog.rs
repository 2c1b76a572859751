//! TD event logs: parsing the binary CCEL and replaying events to RTMRs.
//!
//! Replay: each event extends `RTMR[i]` with its SHA-384 digest,
//! `RTMR = SHA-384(RTMR ‖ digest)`, from zero ([`replay`], [`check`]). Events come from
//! [`parse_ccel`] (the binary log of the ACPI CCEL table, which a guest reads at
//! `/sys/firmware/acpi/tables/data/CCEL`) or are passed in as (RTMR index, digest)
//! pairs, as tools such as dstack export them.
//!
//! The CCEL log is a TCG PC Client crypto-agile event log (TCG PC Client Platform
//! Firmware Profile, "Crypto Agile Log Entries Format"):
//!
//! 1. one legacy `TCG_PCClientPCREvent` (SHA-1 format): MR index u32, event type u32
//!    (`EV_NO_ACTION`), a 20-byte digest, event size u32, and as event data the
//!    `TCG_EfiSpecIDEventStruct`: signature `"Spec ID Event03\0"`, platform class u32,
//!    spec version minor/major, errata and uintn size (u8 each), the number of
//!    algorithms u32, then per algorithm its id u16 and digest size u16, then a vendor
//!    info size u8 and the vendor info;
//! 2. `TCG_PCR_EVENT2` records: MR index u32, event type u32, digest count u32, per
//!    digest an algorithm id u16 and a digest of the size the Spec ID event gives it,
//!    event size u32, event data;
//! 3. padding to the end of the table's log area (`0xFF`, or zeros), which ends the log.
//!
//! All integers are little-endian. In CCEL the MR index is 0 for MRTD (built by the TDX
//! module, not replayed) and 1..=4 for RTMR 0..=3. `EV_NO_ACTION` events extend nothing
//! and are skipped. Every other event must carry a SHA-384 digest (algorithm `0x000C`),
//! which is what extends the RTMR. The parser takes any bytes: a malformed log is a
//! [`CcelError`] naming the offset and what failed, never a panic.

use super::TdxError;

/// One event: which RTMR it extends (0..=3) and its SHA-384 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// RTMR index, 0..=3 (the event log's IMR/MR index minus one, for CCEL).
    pub rtmr: usize,
    /// SHA-384 digest.
    pub digest: [u8; 48],
}

/// Where the Linux kernel exposes the ACPI CCEL table's event log.
pub const CCEL_PATH: &str = "/sys/firmware/acpi/tables/data/CCEL";
/// The largest CCEL log accepted, in bytes (firmware reserves 64 KiB to a few MiB).
pub const MAX_CCEL: usize = 16 << 20;
/// `EV_NO_ACTION`: an event that extends nothing (the Spec ID event is one).
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// TCG algorithm id of SHA-384.
pub const TPM_ALG_SHA384: u16 = 0x000C;
/// The Spec ID event's signature.
pub const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";

/// One record of a CCEL log, for display and policy: its place, MR, type and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcelRecord {
    /// Offset of the record in the log.
    pub offset: usize,
    /// The CCEL MR index: 0 = MRTD, 1..=4 = RTMR 0..=3.
    pub mr_index: u32,
    /// The TCG event type (`EV_NO_ACTION`, `EV_EFI_VARIABLE_DRIVER_CONFIG`, ...).
    pub event_type: u32,
    /// The SHA-384 digest; `None` only for `EV_NO_ACTION` records without one.
    pub sha384: Option<[u8; 48]>,
    /// The event data.
    pub data: Vec<u8>,
}

impl CcelRecord {
    /// The RTMR this record extends: `None` for MRTD (MR index 0) and `EV_NO_ACTION`.
    #[must_use]
    pub fn rtmr(&self) -> Option<usize> {
        if self.event_type == EV_NO_ACTION || self.mr_index == 0 {
            return None;
        }
        usize::try_from(self.mr_index).ok()?.checked_sub(1)
    }

    /// The replayable [`Event`], where [`Self::rtmr`] gives one.
    #[must_use]
    pub fn event(&self) -> Option<Event> {
        Some(Event {
            rtmr: self.rtmr()?,
            digest: self.sha384?,
        })
    }
}

/// Why a CCEL log was refused: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CCEL event log at offset {offset}: {kind}")]
pub struct CcelError {
    /// Byte offset in the log where the failing field starts.
    pub offset: usize,
    /// What failed.
    pub kind: CcelErrorKind,
}

/// What was wrong with a CCEL log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CcelErrorKind {
    /// Larger than [`MAX_CCEL`].
    #[error("log of {0} bytes exceeds the limit of {MAX_CCEL}")]
    TooLarge(usize),
    /// A field runs past the end of the log.
    #[error("{field} needs {need} bytes, {left} left")]
    Truncated {
        /// The field.
        field: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes left.
        left: usize,
    },
    /// The first record is not the Spec ID event.
    #[error("the first event is not the Spec ID Event03 header: {0}")]
    NotSpecId(&'static str),
    /// The Spec ID event lists SHA-384 with a size other than 48, or not at all.
    #[error("the Spec ID event does not list SHA-384 (0x000c) as 48 bytes")]
    NoSha384InSpecId,
    /// A digest whose algorithm the Spec ID event does not list.
    #[error("digest algorithm {0:#06x} is not in the Spec ID event's table")]
    UnknownAlgorithm(u16),
    /// An MR index other than 0..=4.
    #[error("MR index {0} is not 0 (MRTD) or 1..=4 (RTMR 0..=3)")]
    MrIndex(u32),
    /// An event (other than `EV_NO_ACTION`) without a SHA-384 digest.
    #[error("event type {0:#010x} has no SHA-384 digest")]
    NoSha384(u32),
    /// An event with two SHA-384 digests.
    #[error("event has more than one SHA-384 digest")]
    DuplicateSha384,
}

/// A bounds-checked little-endian reader over the log.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, offset: usize, kind: CcelErrorKind) -> CcelError {
        CcelError { offset, kind }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CcelError> {
        let left = self.data.len().saturating_sub(self.pos);
        let truncated = CcelError {
            offset: self.pos,
            kind: CcelErrorKind::Truncated {
                field,
                need: n,
                left,
            },
        };
        let end = self.pos.checked_add(n).ok_or_else(|| truncated.clone())?;
        let out = self.data.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CcelError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, CcelError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, CcelError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, CcelError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// A u32 length followed by that many bytes.
    fn sized(
        &mut self,
        size_field: &'static str,
        field: &'static str,
    ) -> Result<&'a [u8], CcelError> {
        let at = self.pos;
        let size = self.u32(size_field)?;
        let size = usize::try_from(size).map_err(|_| {
            self.err(
                at,
                CcelErrorKind::Truncated {
                    field,
                    need: usize::MAX,
                    left: self.data.len().saturating_sub(self.pos),
                },
            )
        })?;
        self.take(size, field)
    }

    /// Whether everything from here on is padding (all `0xFF` or all zeros).
    fn at_padding(&self) -> bool {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        rest.iter().all(|&b| b == 0xFF) || rest.iter().all(|&b| b == 0)
    }
}

/// Parse the Spec ID event; returns the digest size table (algorithm id, size).
fn spec_id(r: &mut Reader<'_>) -> Result<Vec<(u16, usize)>, CcelError> {
    let start = r.pos;
    let _mr_index = r.u32("Spec ID event MR index")?;
    let event_type = r.u32("Spec ID event type")?;
    if event_type != EV_NO_ACTION {
        return Err(r.err(
            start + 4,
            CcelErrorKind::NotSpecId("event type is not EV_NO_ACTION"),
        ));
    }
    r.take(20, "Spec ID event SHA-1 digest")?;
    let data = r.sized("Spec ID event size", "Spec ID event data")?;
    let data_at = r.pos - data.len();
    let mut s = Reader { data, pos: 0 };
    let rebase = |e: CcelError| CcelError {
        offset: data_at.saturating_add(e.offset),
        kind: e.kind,
    };
    let signature: [u8; 16] = s.array("Spec ID signature").map_err(rebase)?;
    if &signature != SPEC_ID_SIGNATURE {
        return Err(r.err(
            data_at,
            CcelErrorKind::NotSpecId("signature is not \"Spec ID Event03\""),
        ));
    }
    // Platform class u32; spec version minor, major, errata and uintn size, u8 each.
    s.take(8, "Spec ID platform class and versions")
        .map_err(rebase)?;
    let count = s.u32("Spec ID number of algorithms").map_err(rebase)?;
    let mut table = Vec::new();
    for _ in 0..count {
        let alg = s.u16("Spec ID algorithm id").map_err(rebase)?;
        let size = s.u16("Spec ID digest size").map_err(rebase)?;
        table.push((alg, usize::from(size)));
    }
    let vendor = s.u8("Spec ID vendor info size").map_err(rebase)?;
    s.take(usize::from(vendor), "Spec ID vendor info")
        .map_err(rebase)?;
    if !table
        .iter()
        .any(|&(alg, size)| alg == TPM_ALG_SHA384 && size == 48)
        || table
            .iter()
            .any(|&(alg, size)| alg == TPM_ALG_SHA384 && size != 48)
    {
        return Err(r.err(data_at, CcelErrorKind::NoSha384InSpecId));
    }
    Ok(table)
}

/// Parse a binary CCEL event log into its records (the Spec ID event excluded).
///
/// Stops at trailing padding (all `0xFF` or all zeros from a record boundary on).
///
/// # Errors
/// [`CcelError`] with the offset and what failed: a truncated field, a first record
/// that is not the Spec ID event, an algorithm missing from its table, an MR index
/// above 4, an event without a SHA-384 digest, or a log over [`MAX_CCEL`].
pub fn parse_ccel_records(log: &[u8]) -> Result<Vec<CcelRecord>, CcelError> {
    parse(log).map(|(records, _)| records)
}

/// The length of a CCEL log without its trailing padding: the offset where the last
/// record ends. `log[..log_end(log)?]` parses to the same records as `log`, so an
/// enclave can carry only that part of the firmware's (mostly empty) log area.
///
/// # Errors
/// As [`parse_ccel_records`].
pub fn log_end(log: &[u8]) -> Result<usize, CcelError> {
    parse(log).map(|(_, end)| end)
}

/// The records, and the offset where the last one ends.
fn parse(log: &[u8]) -> Result<(Vec<CcelRecord>, usize), CcelError> {
    if log.len() > MAX_CCEL {
        return Err(CcelError {
            offset: 0,
            kind: CcelErrorKind::TooLarge(log.len()),
        });
    }
    let mut r = Reader { data: log, pos: 0 };
    let table = spec_id(&mut r)?;
    let mut records = Vec::new();
    while !r.at_padding() {
        let offset = r.pos;
        let mr_index = r.u32("MR index")?;
        if mr_index > 4 {
            return Err(r.err(offset, CcelErrorKind::MrIndex(mr_index)));
        }
        let event_type = r.u32("event type")?;
        let count = r.u32("digest count")?;
        let mut sha384 = None;
        for _ in 0..count {
            let alg_at = r.pos;
            let alg = r.u16("digest algorithm id")?;
            let size = table
                .iter()
                .find(|&&(a, _)| a == alg)
                .map(|&(_, size)| size)
                .ok_or_else(|| r.err(alg_at, CcelErrorKind::UnknownAlgorithm(alg)))?;
            let digest = r.take(size, "digest")?;
            if alg == TPM_ALG_SHA384 {
                if sha384.is_some() {
                    return Err(r.err(alg_at, CcelErrorKind::DuplicateSha384));
                }
                let mut d = [0u8; 48];
                // The Spec ID check made SHA-384's size 48.
                if let Some(src) = digest.get(..48) {
                    d.copy_from_slice(src);
                }
                sha384 = Some(d);
            }
        }
        if sha384.is_none() && event_type != EV_NO_ACTION {
            return Err(r.err(offset, CcelErrorKind::NoSha384(event_type)));
        }
        let data = r.sized("event size", "event data")?.to_vec();
        records.push(CcelRecord {
            offset,
            mr_index,
            event_type,
            sha384,
            data,
        });
    }
    Ok((records, r.pos))
}

/// Parse a binary CCEL event log into the [`Event`]s that replay to RTMR 0..=3
/// (`EV_NO_ACTION` and MRTD records left out).
///
/// # Errors
/// As [`parse_ccel_records`].
pub fn parse_ccel(log: &[u8]) -> Result<Vec<Event>, CcelError> {
    Ok(parse_ccel_records(log)?
        .iter()
        .filter_map(CcelRecord::event)
        .collect())
}

/// Replay `events` from all-zero RTMRs.
///
/// # Errors
/// [`TdxError::Policy`] for an RTMR index above 3.
pub fn replay(events: &[Event]) -> Result<[[u8; 48]; 4], TdxError> {
    let mut rtmr = [[0u8; 48]; 4];
    for (i, event) in events.iter().enumerate() {
        let slot = rtmr.get_mut(event.rtmr).ok_or_else(|| {
            TdxError::Policy(format!("event {i}: RTMR index {} out of range", event.rtmr))
        })?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA384);
        ctx.update(slot.as_slice());
        ctx.update(&event.digest);
        slot.copy_from_slice(ctx.finish().as_ref());
    }
    Ok(rtmr)
}

/// Replay `events` and compare with the quote's RTMRs; names the first that differs.
///
/// # Errors
/// [`TdxError::EventLogReplay`] naming the first RTMR whose replay differs (and the
/// others that differ too), or [`TdxError::Policy`] for an RTMR index above 3.
pub fn check(events: &[Event], quoted: &[[u8; 48]; 4]) -> Result<(), TdxError> {
    compare(&replay(events)?, quoted)
}

/// Compare replayed RTMRs with the quoted ones.
///
/// # Errors
/// [`TdxError::EventLogReplay`] naming the first RTMR that differs, and the others.
pub fn compare(replayed: &[[u8; 48]; 4], quoted: &[[u8; 48]; 4]) -> Result<(), TdxError> {
    let differ: Vec<usize> = replayed
        .iter()
        .zip(quoted)
        .enumerate()
        .filter(|(_, (r, q))| r != q)
        .map(|(i, _)| i)
        .collect();
    let Some((&rtmr, others)) = differ.split_first() else {
        return Ok(());
    };
    let (Some(r), Some(q)) = (replayed.get(rtmr), quoted.get(rtmr)) else {
        return Ok(());
    };
    Err(TdxError::EventLogReplay {
        rtmr,
        replayed: hex::encode(r),
        quoted: hex::encode(q),
        others: others.to_vec(),
    })
}

/// Builds CCEL logs for tests, fuzz seeds and examples.
#[doc(hidden)]
pub mod build {
    use super::{EV_NO_ACTION, SPEC_ID_SIGNATURE, TPM_ALG_SHA384};

    /// A CCEL log holding the events of a dstack quote report (`quote-report.json` of
    /// `../shared/testdata/tdx/dstack-v4-eventlog`: its `event_log` is a JSON array, as
    /// text, of `{imr, event_type, digest, event_payload}`), as a TD's firmware would log
    /// them: the Spec ID event, a `StartupLocality` `EV_NO_ACTION`, one SHA-384 record per
    /// event (dstack's IMR i is CCEL MR index i + 1), then 1 KiB of `0xFF` padding.
    ///
    /// # Errors
    /// When the report is not such JSON (the message names what is wrong).
    pub fn from_dstack_report(report_json: &[u8]) -> Result<Vec<u8>, String> {
        let report: serde_json::Value =
            serde_json::from_slice(report_json).map_err(|e| format!("quote report: {e}"))?;
        let text = report["event_log"]
            .as_str()
            .ok_or("quote report: no event_log string")?;
        let events: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("event_log: {e}"))?;
        let mut log = spec_id(false);
        log.extend(event(
            0,
            EV_NO_ACTION,
            &[0; 48],
            None,
            b"StartupLocality\0\0",
        ));
        for (i, e) in events.iter().enumerate() {
            let field = |name: &str| {
                e[name]
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| format!("event {i}: {name} is not a u32"))
            };
            let hex_field = |name: &str| {
                e[name]
                    .as_str()
                    .and_then(|h| hex::decode(h).ok())
                    .ok_or_else(|| format!("event {i}: {name} is not hex"))
            };
            let imr = field("imr")?;
            let event_type = field("event_type")?;
            let digest: [u8; 48] = hex_field("digest")?
                .try_into()
                .map_err(|_| format!("event {i}: digest is not 48 bytes"))?;
            let data = hex_field("event_payload")?;
            log.extend(event(
                imr.saturating_add(1),
                event_type,
                &digest,
                None,
                &data,
            ));
        }
        log.extend([0xFF; 1024]);
        Ok(log)
    }

    /// TCG algorithm id of SHA-256 (a second bank, to test digest skipping).
    pub const TPM_ALG_SHA256: u16 = 0x000B;

    /// The Spec ID event listing SHA-384 (48 bytes), and SHA-256 (32) when `sha256`.
    #[must_use]
    pub fn spec_id(sha256: bool) -> Vec<u8> {
        let mut data = SPEC_ID_SIGNATURE.to_vec();
        data.extend(0u32.to_le_bytes()); // platform class
        data.extend([0, 2, 0, 2]); // spec version 2.0, errata 0, uintn size 2 (u64)
        let mut algs = vec![(TPM_ALG_SHA384, 48u16)];
        if sha256 {
            algs.push((TPM_ALG_SHA256, 32));
        }
        data.extend(u32::try_from(algs.len()).unwrap_or(0).to_le_bytes());
        for (alg, size) in algs {
            data.extend(alg.to_le_bytes());
            data.extend(size.to_le_bytes());
        }
        data.push(0); // no vendor info
        let mut out = 0u32.to_le_bytes().to_vec();
        out.extend(EV_NO_ACTION.to_le_bytes());
        out.extend([0u8; 20]);
        out.extend(u32::try_from(data.len()).unwrap_or(0).to_le_bytes());
        out.extend(data);
        out
    }

    /// A `TCG_PCR_EVENT2` record with a SHA-384 digest (and a SHA-256 one first, when
    /// given).
    #[must_use]
    pub fn event(
        mr_index: u32,
        event_type: u32,
        sha384: &[u8; 48],
        sha256: Option<&[u8; 32]>,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = mr_index.to_le_bytes().to_vec();
        out.extend(event_type.to_le_bytes());
        out.extend(if sha256.is_some() { 2u32 } else { 1u32 }.to_le_bytes());
        if let Some(d) = sha256 {
            out.extend(TPM_ALG_SHA256.to_le_bytes());
            out.extend(d);
        }
        out.extend(TPM_ALG_SHA384.to_le_bytes());
        out.extend(sha384);
        out.extend(u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend(data);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::{event, spec_id};
    use super::*;

    fn sha384(data: &[u8]) -> [u8; 48] {
        let mut out = [0u8; 48];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA384, data).as_ref());
        out
    }

    /// A log with events on every RTMR, an MRTD record, an `EV_NO_ACTION` and a second
    /// digest bank, then `0xFF` padding; and the events it should give.
    fn synthetic() -> (Vec<u8>, Vec<Event>) {
        let mut log = spec_id(true);
        let mut expected = Vec::new();
        let digests: Vec<[u8; 48]> = (0u8..7).map(|i| sha384(&[i])).collect();
        let plan: [(u32, u32); 7] = [
            (1, 0x8000_0001),
            (1, 0x0000_0004),
            (2, 0x8000_0003),
            (0, 0x0000_000A), // MRTD: not replayed
            (3, 0x0000_0006),
            (4, 0x0800_0001),
            (1, 0x8000_0007),
        ];
        for (i, ((mr, ty), d)) in plan.iter().zip(&digests).enumerate() {
            let sha256 = (i % 2 == 0).then_some([i as u8; 32]);
            log.extend(event(*mr, *ty, d, sha256.as_ref(), &[i as u8; 5]));
            if *mr > 0 {
                expected.push(Event {
                    rtmr: (*mr - 1) as usize,
                    digest: *d,
                });
            }
            if i == 2 {
                // An EV_NO_ACTION in the middle: parsed, not replayed.
                log.extend(event(
                    2,
                    EV_NO_ACTION,
                    &[0; 48],
                    None,
                    b"StartupLocality\0\x03",
                ));
            }
        }
        log.extend([0xFF; 300]);
        (log, expected)
    }

    #[test]
    fn synthetic_log_parses_and_replays() {
        let (log, expected) = synthetic();
        let events = parse_ccel(&log).unwrap();
        assert_eq!(events, expected);
        let records = parse_ccel_records(&log).unwrap();
        assert_eq!(records.len(), 8);
        assert_eq!(records[3].event_type, EV_NO_ACTION);
        assert_eq!(records[3].data, b"StartupLocality\0\x03");
        assert_eq!(records[4].mr_index, 0);
        assert_eq!(records[4].rtmr(), None);
        // Replay by hand: RTMR0 gets digests 0, 1 and 6.
        let ext = |m: [u8; 48], d: &[u8; 48]| sha384(&[m.as_slice(), d].concat());
        let r0 = ext(
            ext(ext([0; 48], &sha384(&[0])), &sha384(&[1])),
            &sha384(&[6]),
        );
        let rtmr = replay(&events).unwrap();
        assert_eq!(rtmr[0], r0);
        assert_eq!(rtmr[1], ext([0; 48], &sha384(&[2])));
        assert_eq!(rtmr[2], ext([0; 48], &sha384(&[4])));
        assert_eq!(rtmr[3], ext([0; 48], &sha384(&[5])));
        check(&events, &rtmr).unwrap();
        // Zero padding, and no padding at all, end the log the same way.
        let body = log.len() - 300;
        let mut zeros = log[..body].to_vec();
        zeros.extend([0u8; 64]);
        assert_eq!(parse_ccel(&zeros).unwrap(), expected);
        assert_eq!(parse_ccel(&log[..body]).unwrap(), expected);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let (log, _) = synthetic();
        let body = log.len() - 300;
        let ends: Vec<usize> = {
            let records = parse_ccel_records(&log).unwrap();
            let mut ends: Vec<usize> = records.iter().skip(1).map(|r| r.offset).collect();
            ends.push(records[0].offset); // the end of the Spec ID event
            ends.push(body);
            ends
        };
        for cut in 0..body {
            let got = parse_ccel(&log[..cut]);
            if ends.contains(&cut) {
                assert!(got.is_ok(), "cut at a record boundary {cut}: {got:?}");
            } else {
                // A cut that leaves only zeros after the last record boundary reads as
                // zero padding (only an MRTD record, MR index 0, starts with zeros).
                let last = ends
                    .iter()
                    .filter(|&&e| e <= cut)
                    .max()
                    .copied()
                    .unwrap_or(0);
                let tail = &log[last..cut];
                if got.is_ok() && last > 0 && tail.iter().all(|&b| b == 0) {
                    continue;
                }
                let err = got.unwrap_err();
                assert!(
                    err.offset <= cut,
                    "offset {} past the cut {cut}",
                    err.offset
                );
            }
        }
    }

    #[test]
    fn malformed_logs_name_the_offset_and_the_problem() {
        let good = synthetic().0;
        let first = parse_ccel_records(&good).unwrap()[0].offset;

        // Not a Spec ID event.
        let mut bad = good.clone();
        bad[4] = 1;
        assert_eq!(
            parse_ccel(&bad).unwrap_err(),
            CcelError {
                offset: 4,
                kind: CcelErrorKind::NotSpecId("event type is not EV_NO_ACTION")
            }
        );
        let mut bad = good.clone();
        bad[32] = b'X';
        assert_eq!(parse_ccel(&bad).unwrap_err().offset, 32);

        // An MR index above 4.
        let mut bad = good.clone();
        bad[first] = 5;
        let err = parse_ccel(&bad).unwrap_err();
        assert_eq!(
            err,
            CcelError {
                offset: first,
                kind: CcelErrorKind::MrIndex(5)
            }
        );
        assert!(
            err.to_string().contains(&format!("offset {first}")),
            "{err}"
        );

        // An algorithm the Spec ID event does not list.
        let mut bad = good.clone();
        bad[first + 12] = 0x04; // SHA-256 (0x000B) -> SHA-1 (0x0004)
        assert_eq!(
            parse_ccel(&bad).unwrap_err().kind,
            CcelErrorKind::UnknownAlgorithm(4)
        );

        // No SHA-384 bank in the Spec ID event.
        let mut bad = spec_id(false);
        let at = 32 + 16 + 8 + 4;
        bad[at] = 0x0B;
        assert_eq!(
            parse_ccel(&bad).unwrap_err().kind,
            CcelErrorKind::NoSha384InSpecId
        );

        // An event without SHA-384.
        let mut log = spec_id(true);
        let mut rec = 1u32.to_le_bytes().to_vec();
        rec.extend(4u32.to_le_bytes());
        rec.extend(0u32.to_le_bytes());
        rec.extend(0u32.to_le_bytes());
        log.extend(rec);
        assert_eq!(
            parse_ccel(&log).unwrap_err().kind,
            CcelErrorKind::NoSha384(4)
        );

        // A huge event size is a truncation, not an allocation.
        let mut log = spec_id(false);
        let mut rec = event(1, 4, &[1; 48], None, b"");
        let n = rec.len();
        rec[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        log.extend(rec);
        assert!(matches!(
            parse_ccel(&log).unwrap_err().kind,
            CcelErrorKind::Truncated {
                field: "event data",
                ..
            }
        ));

        // Non-padding bytes after padding-looking bytes are parsed, and refused.
        let mut log = spec_id(false);
        log.extend([0xFF; 8]);
        log.push(1);
        assert!(matches!(
            parse_ccel(&log).unwrap_err().kind,
            CcelErrorKind::MrIndex(u32::MAX)
        ));
    }

    /// A CCEL built from the dstack sample's real events (IMR i is CCEL MR i + 1)
    /// replays to the RTMRs of the sample's real quote.
    #[test]
    fn dstack_sample_events_as_ccel_replay_to_the_quoted_rtmrs() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testdata/tdx/dstack-v4-eventlog"
        );
        let log = super::build::from_dstack_report(
            &std::fs::read(format!("{dir}/quote-report.json")).unwrap(),
        )
        .unwrap();
        let parsed = parse_ccel(&log).unwrap();
        assert_eq!(parsed.len(), 28);
        // Without its padding, the log parses the same.
        let end = log_end(&log).unwrap();
        assert_eq!(end, log.len() - 1024);
        assert_eq!(parse_ccel(&log[..end]).unwrap(), parsed);
        let quote = super::super::Quote::parse(&std::fs::read(format!("{dir}/quote.bin")).unwrap())
            .unwrap();
        check(&parsed, &quote.report.rtmr).unwrap();
        // One flipped digest bit names the RTMR.
        let mut flipped = parsed.clone();
        flipped[0].digest[0] ^= 1;
        let err = check(&flipped, &quote.report.rtmr).unwrap_err();
        assert!(
            matches!(err, TdxError::EventLogReplay { rtmr: 0, ref others, .. } if others.is_empty()),
            "{err}"
        );
        assert!(err.to_string().contains("RTMR0"), "{err}");
        // Two differing RTMRs: the first is named, the other listed.
        flipped[27].digest[0] ^= 1;
        let err = check(&flipped, &quote.report.rtmr).unwrap_err().to_string();
        assert!(
            err.contains("RTMR0") && err.contains("RTMR3 differs too"),
            "{err}"
        );
    }
}
