//! The tamper-evident audit chain: append and verify.
//!
//! `hash(n) = SHA-256("warden.audit.v1" || hash(n-1) || canonical(event n))`; the first event's
//! predecessor is 32 zero bytes. The store also keeps a checkpoint — the head `(seq, hash)` with an
//! HMAC under a server key that is not in the database — refreshed with every commit, so that cutting
//! events off the tail is detected too.

use time::OffsetDateTime;
use warden_crypto::KeyedHasher;
use warden_crypto::chain::{EventFields, GENESIS, checkpoint_message, event_hash};
use warden_types::AuditVerifyReport;

use crate::error::StoreError;
use crate::ports::{AuditRecord, ChainHead, NewAuditEvent, ReadStore, WriteTx};

/// Microseconds since the Unix epoch.
pub fn unix_micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

fn fields(r: &AuditRecord) -> EventFields<'_> {
    EventFields {
        seq: r.seq,
        time_us: r.time_us,
        actor: &r.actor,
        action: &r.action,
        target: &r.target,
        outcome: &r.outcome,
        request_id: &r.request_id,
        source: &r.source,
        details: &r.details,
    }
}

/// Appends `event` at the head of the chain inside `tx`; returns its sequence number.
pub fn append(
    tx: &mut dyn WriteTx,
    now: OffsetDateTime,
    event: NewAuditEvent,
) -> Result<u64, StoreError> {
    let head = tx.audit_head()?;
    let mut record = AuditRecord {
        seq: head.seq + 1,
        time_us: unix_micros(now),
        actor: event.actor,
        action: event.action.to_owned(),
        target: event.target,
        outcome: event.outcome.as_str().to_owned(),
        request_id: event.request_id,
        source: event.source,
        details: event.details,
        prev_hash: head.hash.to_vec(),
        hash: Vec::new(),
    };
    record.hash = event_hash(&head.hash, &fields(&record)).to_vec();
    tx.insert_audit_record(&record)?;
    Ok(record.seq)
}

/// The MAC of a checkpoint over `head`.
pub fn checkpoint_mac(hasher: &KeyedHasher, head: &ChainHead) -> Vec<u8> {
    hasher
        .hash(&checkpoint_message(head.seq, &head.hash))
        .to_vec()
}

/// Walks the whole chain and reports the first event that was edited, deleted, inserted or
/// reordered, and whether the chain ends exactly at the signed checkpoint (so that events cut from,
/// or forged onto, the tail are found too). Safe to run beside a live writer: when the chain grew
/// during the walk, the checkpoint is re-read and the walk continues.
pub fn verify(
    store: &dyn ReadStore,
    checkpoint_key: &KeyedHasher,
) -> Result<AuditVerifyReport, StoreError> {
    const PAGE: usize = 2_000;
    let mut prev = GENESIS;
    let mut expected = 1u64;
    let mut checked = 0u64;
    let mut checkpoint_seq = 0;
    let report =
        |checked: u64, bad: Option<u64>, problem: String, checkpoint_seq: u64| AuditVerifyReport {
            ok: false,
            events_checked: checked,
            last_good_seq: bad.map_or(checked, |b| b.saturating_sub(1)),
            first_bad_seq: bad,
            problem: Some(problem),
            checkpoint_seq,
        };
    loop {
        // Walk to the current end of the chain.
        loop {
            let page = store.audit_records(expected - 1, PAGE)?;
            let n = page.len();
            for r in page {
                if r.seq != expected {
                    return Ok(report(
                        checked,
                        Some(expected),
                        format!(
                            "event {expected} is missing (the next stored event is {})",
                            r.seq
                        ),
                        checkpoint_seq,
                    ));
                }
                if r.prev_hash.as_slice() != prev.as_slice() {
                    return Ok(report(
                        checked,
                        Some(r.seq),
                        format!(
                            "event {} does not follow its predecessor (prev_hash mismatch: an event before it was removed, inserted or reordered)",
                            r.seq
                        ),
                        checkpoint_seq,
                    ));
                }
                let computed = event_hash(&prev, &fields(&r));
                if computed.as_slice() != r.hash.as_slice() {
                    return Ok(report(
                        checked,
                        Some(r.seq),
                        format!(
                            "event {} was edited: its content does not match its hash",
                            r.seq
                        ),
                        checkpoint_seq,
                    ));
                }
                prev = computed;
                expected += 1;
                checked += 1;
            }
            if n < PAGE {
                break;
            }
        }
        let last = expected - 1;
        // The checkpoint is written in the same transaction as the events it covers, so a
        // checkpoint read now covers at least every event the walk saw.
        let Some(c) = store.audit_checkpoint()? else {
            if last == 0 {
                break;
            }
            return Ok(report(
                checked,
                None,
                "the signed checkpoint is missing: events may have been cut from the tail".into(),
                0,
            ));
        };
        checkpoint_seq = c.head.seq;
        if !warden_crypto::ct_eq(&checkpoint_mac(checkpoint_key, &c.head), &c.mac) {
            return Ok(report(
                checked,
                None,
                "the checkpoint's signature is invalid: it was altered or written with another key"
                    .into(),
                checkpoint_seq,
            ));
        }
        if c.head.seq > last {
            // Either the chain grew while we walked (continue), or events were cut off the tail.
            if store.audit_records(last, 1)?.is_empty() {
                return Ok(report(
                    checked,
                    Some(last + 1),
                    format!(
                        "events {}..={} were deleted: the signed checkpoint covers {} but the chain ends at {last}",
                        last + 1,
                        c.head.seq,
                        c.head.seq
                    ),
                    checkpoint_seq,
                ));
            }
            continue;
        }
        if c.head.seq < last {
            return Ok(report(
                checked,
                Some(c.head.seq + 1),
                format!(
                    "events after {} are not covered by the signed checkpoint: they were appended without the server key",
                    c.head.seq
                ),
                checkpoint_seq,
            ));
        }
        if c.head.hash != prev {
            return Ok(report(
                checked,
                Some(last),
                format!("event {last} differs from the signed checkpoint: the chain was rewritten"),
                checkpoint_seq,
            ));
        }
        break;
    }
    Ok(AuditVerifyReport {
        ok: true,
        events_checked: checked,
        last_good_seq: expected - 1,
        first_bad_seq: None,
        problem: None,
        checkpoint_seq,
    })
}
