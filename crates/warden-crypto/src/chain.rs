//! The audit chain's hash: `hash = SHA-256(prev_hash || canonical(event))`.
//!
//! The canonical encoding is a fixed sequence of length-prefixed fields (not JSON), so two encoders
//! can never disagree about whitespace, key order or number formats. The `details` field is hashed
//! as the exact JSON text that is stored.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first event.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// Domain separation tag, versioned: a change of encoding gets a new tag.
const DOMAIN: &[u8] = b"warden.audit.v1";

/// The fields of an event that the hash covers, in their canonical order.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    pub seq: u64,
    /// Unix time in microseconds.
    pub time_us: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: &'a str,
    pub request_id: &'a str,
    pub source: &'a str,
    /// The details JSON exactly as stored.
    pub details: &'a str,
}

/// The hash of an event given its predecessor's hash.
pub fn event_hash(prev: &[u8; 32], e: &EventFields<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev);
    h.update(e.seq.to_be_bytes());
    h.update(e.time_us.to_be_bytes());
    for field in [
        e.actor,
        e.action,
        e.target,
        e.outcome,
        e.request_id,
        e.source,
        e.details,
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().into()
}

/// The message a checkpoint MAC covers: the head of the chain at some sequence number.
pub fn checkpoint_message(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + 8 + 32);
    m.extend_from_slice(b"warden.ckpt.v1\0\0");
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(actor: &str) -> EventFields<'_> {
        EventFields {
            seq: 1,
            time_us: 1_700_000_000_000_000,
            actor,
            action: "identity.create",
            target: "identity:x",
            outcome: "success",
            request_id: "r1",
            source: "127.0.0.1",
            details: "{}",
        }
    }

    #[test]
    fn every_field_and_the_predecessor_change_the_hash() {
        let base = event_hash(&GENESIS, &fields("operator:admin"));
        assert_ne!(base, event_hash(&GENESIS, &fields("operator:admin2")));
        assert_ne!(base, event_hash(&[1u8; 32], &fields("operator:admin")));
        let mut f = fields("operator:admin");
        f.seq = 2;
        assert_ne!(base, event_hash(&GENESIS, &f));
    }

    #[test]
    fn length_prefixes_prevent_field_boundary_shifts() {
        let mut a = fields("ab");
        a.action = "c";
        let mut b = fields("a");
        b.action = "bc";
        assert_ne!(event_hash(&GENESIS, &a), event_hash(&GENESIS, &b));
    }
}
