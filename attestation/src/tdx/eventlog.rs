//! Replaying a TD event log to RTMRs: each event extends `RTMR[imr]` with its SHA-384
//! digest, `RTMR = SHA-384(RTMR ‖ digest)`, from zero. (Parsing the binary CCEL, a TCG
//! crypto-agile event log, is not done here yet: events are passed in as (RTMR index,
//! digest) pairs, as tools such as dstack export them.)

use super::TdxError;

/// One event: which RTMR it extends (0..=3) and its SHA-384 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// RTMR index, 0..=3 (the event log's IMR/MR index minus one, for CCEL).
    pub rtmr: usize,
    /// SHA-384 digest.
    pub digest: [u8; 48],
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
/// [`TdxError::Policy`] naming the RTMR whose replay differs.
pub fn check(events: &[Event], quoted: &[[u8; 48]; 4]) -> Result<(), TdxError> {
    let replayed = replay(events)?;
    for (i, (r, q)) in replayed.iter().zip(quoted).enumerate() {
        if r != q {
            return Err(TdxError::Policy(format!(
                "event log: replayed RTMR{i} {} is not the quoted {}",
                hex::encode(r),
                hex::encode(q)
            )));
        }
    }
    Ok(())
}
