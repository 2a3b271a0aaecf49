//! Usage anomalies: a per-identity baseline built incrementally from usage events, and a score
//! for each new event against it. Pure (time is an argument) and small: about 1 KB per identity.
//!
//! What is noticed, once the identity has been observed for the learning period:
//! - a scope never carried before;
//! - an audience (RFC 8707 resource) never addressed before;
//! - a source network (IPv4 /24, IPv6 /64) never seen before;
//! - volume: the events of the current hour exceed a robust bound over the identity's own
//!   hourly counts (the last 167 hours, or fewer since its first use) — median + 6 × (1.4826 × MAD), and at least [`MIN_SPIKE`] events (the
//!   bound is computed at most once per hour, and only once the hour has more than [`MIN_SPIKE`]
//!   events — the usual quiet hour costs nothing);
//! - use outside a schedule-bound identity's window of UTC hours.
//!
//! The token endpoint feeds it through `registry::anomaly`, which turns what it returns into
//! findings. Scopes and networks are remembered as 64-bit FNV-1a hashes (stable across releases
//! and restarts, so a saved baseline means the same after a restart); a collision only costs a
//! missed "new" alert.

use std::collections::HashMap;

use uuid::Uuid;

/// Hours of history the volume bound is computed over.
pub const HOURS: usize = 168;
/// Most distinct scopes and networks remembered per identity (beyond: no new-X alerts).
pub const MAX_SEEN: usize = 32;
/// A spike needs at least this many events in the hour.
pub const MIN_SPIKE: u32 = 20;

/// Something unusual about one usage event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// `index` into the event's scopes.
    NewScope {
        index: u8,
    },
    /// `index` into the event's audiences.
    NewAudience {
        index: u8,
    },
    NewNetwork,
    /// Events in the current hour crossed the bound.
    VolumeSpike {
        count: u32,
        bound: u32,
    },
    /// An hour of day (UTC) outside the identity's window.
    OutsideWindow {
        hour: u8,
    },
}

/// One identity's baseline.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Unix seconds of the first event.
    first_seen: i64,
    scopes: Vec<u64>,
    networks: Vec<u64>,
    audiences: Vec<u64>,
    /// Events per hour, a ring indexed by `hour % HOURS`.
    counts: Box<[u32; HOURS]>,
    /// The hour (unix seconds / 3600) `counts` was last advanced to.
    hour: i64,
    /// The spike bound for the current hour (0: not computed yet this hour), and whether it
    /// already alerted.
    bound: u32,
    spiked: bool,
}

impl Baseline {
    fn new(at: i64) -> Self {
        Baseline {
            first_seen: at,
            scopes: Vec::new(),
            networks: Vec::new(),
            audiences: Vec::new(),
            counts: Box::new([0; HOURS]),
            hour: at.div_euclid(3600),
            bound: u32::MAX,
            spiked: false,
        }
    }

    /// Moves the ring to `hour`, clearing the hours skipped; the bound is computed when needed.
    fn advance(&mut self, hour: i64) {
        if hour <= self.hour {
            return;
        }
        let steps = (hour - self.hour).min(HOURS as i64);
        for k in 1..=steps {
            let slot = (self.hour + k).rem_euclid(HOURS as i64) as usize;
            self.counts[slot] = 0;
        }
        self.hour = hour;
        self.spiked = false;
        self.bound = 0;
    }

    /// The bound over the hours before the current one that the identity existed in (at most
    /// 167 — hours before its first use would read as quiet ones): median + 6 × 1.4826 × MAD, at
    /// least [`MIN_SPIKE`]. No history: no bound.
    fn compute_bound(&self) -> u32 {
        let lived = (self.hour - self.first_seen.div_euclid(3600)).clamp(0, HOURS as i64 - 1);
        let n = lived as usize;
        if n == 0 {
            return u32::MAX;
        }
        // On the stack (no allocation): 168 × 4 bytes, twice.
        let mut past = [0u32; HOURS];
        for (k, p) in past.iter_mut().take(n).enumerate() {
            let slot = (self.hour - 1 - k as i64).rem_euclid(HOURS as i64) as usize;
            *p = self.counts[slot];
        }
        let mut sorted = past;
        let med = median(&mut sorted[..n]);
        let mut dev = [0u32; HOURS];
        for (d, c) in dev.iter_mut().zip(past.iter()).take(n) {
            *d = c.abs_diff(med);
        }
        let mad = median(&mut dev[..n]);
        let spread = (1.4826 * f64::from(mad) * 6.0).ceil() as u32;
        med.saturating_add(spread).max(MIN_SPIKE)
    }
}

fn median(v: &mut [u32]) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable(mid).1
}

/// Whether `set` holds `h`; adds it (while there is room) if not. `true` when it was new and
/// there was room to remember it.
fn remember(set: &mut Vec<u64>, h: u64) -> bool {
    if set.contains(&h) {
        return false;
    }
    if set.len() >= MAX_SEEN {
        return false;
    }
    set.push(h);
    true
}

/// One usage event.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub identity: Uuid,
    pub scopes: &'a [String],
    /// The token's audiences.
    pub audiences: &'a [String],
    /// The source network (see `registry::source_network`), if known.
    pub network: Option<&'a str>,
    /// Unix seconds.
    pub at: i64,
    /// The identity's window of UTC hours `[from, to)`, for schedule-bound identities.
    pub window: Option<(u8, u8)>,
}

/// 64-bit FNV-1a: a stable hash of a scope or network name.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The format version of [`Baselines::encode`] (1: without audiences, still read).
const FORMAT: u8 = 2;

/// A saved baseline that could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("a saved anomaly baseline is malformed")]
pub struct Malformed;

impl Baseline {
    /// A compact binary form: version, first seen, hour, bound, spiked, the three sets, 168
    /// counts.
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(
            1 + 8
                + 8
                + 4
                + 1
                + 3
                + 8 * (self.scopes.len() + self.networks.len() + self.audiences.len())
                + 4 * HOURS,
        );
        v.push(FORMAT);
        v.extend_from_slice(&self.first_seen.to_le_bytes());
        v.extend_from_slice(&self.hour.to_le_bytes());
        v.extend_from_slice(&self.bound.to_le_bytes());
        v.push(u8::from(self.spiked));
        for set in [&self.scopes, &self.networks, &self.audiences] {
            // At most MAX_SEEN (32) entries: fits a byte.
            v.push(set.len() as u8);
            for h in set {
                v.extend_from_slice(&h.to_le_bytes());
            }
        }
        for c in self.counts.iter() {
            v.extend_from_slice(&c.to_le_bytes());
        }
        v
    }

    fn decode(mut b: &[u8]) -> Result<Self, Malformed> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], Malformed> {
            if b.len() < n {
                return Err(Malformed);
            }
            let (head, rest) = b.split_at(n);
            *b = rest;
            Ok(head)
        }
        fn u64_of(b: &mut &[u8]) -> Result<u64, Malformed> {
            let a: [u8; 8] = take(b, 8)?.try_into().map_err(|_| Malformed)?;
            Ok(u64::from_le_bytes(a))
        }
        fn u32_of(b: &mut &[u8]) -> Result<u32, Malformed> {
            let a: [u8; 4] = take(b, 4)?.try_into().map_err(|_| Malformed)?;
            Ok(u32::from_le_bytes(a))
        }
        let version = take(&mut b, 1)?[0];
        if version != FORMAT && version != 1 {
            return Err(Malformed);
        }
        let first_seen = u64_of(&mut b)? as i64;
        let hour = u64_of(&mut b)? as i64;
        let bound = u32_of(&mut b)?;
        let spiked = take(&mut b, 1)?[0] != 0;
        let mut sets = [Vec::new(), Vec::new(), Vec::new()];
        let n_sets = if version == 1 { 2 } else { 3 };
        for set in sets.iter_mut().take(n_sets) {
            let n = usize::from(take(&mut b, 1)?[0]);
            if n > MAX_SEEN {
                return Err(Malformed);
            }
            for _ in 0..n {
                set.push(u64_of(&mut b)?);
            }
        }
        let mut counts = Box::new([0u32; HOURS]);
        for c in counts.iter_mut() {
            *c = u32_of(&mut b)?;
        }
        if !b.is_empty() {
            return Err(Malformed);
        }
        let [scopes, networks, audiences] = sets;
        Ok(Baseline {
            first_seen,
            scopes,
            networks,
            audiences,
            counts,
            hour,
            bound,
            spiked,
        })
    }
}

/// Every identity's baseline.
#[derive(Debug)]
pub struct Baselines {
    map: HashMap<Uuid, Baseline>,
    /// Seconds an identity is observed before anything about it is called unusual.
    learning_secs: i64,
}

impl Baselines {
    pub fn new(learning_secs: i64) -> Self {
        Baselines {
            map: HashMap::new(),
            learning_secs,
        }
    }

    /// One identity's baseline in its saved form.
    pub fn encode(&self, identity: Uuid) -> Option<Vec<u8>> {
        self.map.get(&identity).map(Baseline::encode)
    }

    /// Restores a saved baseline (replacing any held for the identity).
    pub fn restore(&mut self, identity: Uuid, saved: &[u8]) -> Result<(), Malformed> {
        self.map.insert(identity, Baseline::decode(saved)?);
        Ok(())
    }

    /// Forgets an identity (retired).
    pub fn forget(&mut self, identity: Uuid) {
        self.map.remove(&identity);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Folds `e` into its identity's baseline; pushes to `out` what was unusual about it.
    pub fn observe(&mut self, e: &Event<'_>, out: &mut Vec<Anomaly>) {
        let scope_hashes: [u64; 4] = {
            let mut a = [0u64; 4];
            for (slot, s) in a.iter_mut().zip(e.scopes.iter()) {
                *slot = fnv1a(s);
            }
            a
        };
        let net_hash = e.network.map(fnv1a);
        let audience_hashes: [u64; 4] = {
            let mut a = [0u64; 4];
            for (slot, s) in a.iter_mut().zip(e.audiences.iter()) {
                *slot = fnv1a(s);
            }
            a
        };
        let learning = self.learning_secs;
        let b = self
            .map
            .entry(e.identity)
            .or_insert_with(|| Baseline::new(e.at));
        let learned = e.at - b.first_seen >= learning;
        for (index, h) in scope_hashes.iter().take(e.scopes.len().min(4)).enumerate() {
            if remember(&mut b.scopes, *h) && learned {
                out.push(Anomaly::NewScope { index: index as u8 });
            }
        }
        for (index, h) in audience_hashes
            .iter()
            .take(e.audiences.len().min(4))
            .enumerate()
        {
            if remember(&mut b.audiences, *h) && learned {
                out.push(Anomaly::NewAudience { index: index as u8 });
            }
        }
        if let Some(h) = net_hash
            && remember(&mut b.networks, h)
            && learned
        {
            out.push(Anomaly::NewNetwork);
        }
        b.advance(e.at.div_euclid(3600));
        let slot = b.hour.rem_euclid(HOURS as i64) as usize;
        b.counts[slot] = b.counts[slot].saturating_add(1);
        if learned && !b.spiked && b.counts[slot] > MIN_SPIKE {
            if b.bound == 0 {
                b.bound = b.compute_bound();
            }
            if b.counts[slot] > b.bound {
                b.spiked = true;
                out.push(Anomaly::VolumeSpike {
                    count: b.counts[slot],
                    bound: b.bound,
                });
            }
        }
        if let Some((from, to)) = e.window {
            let hour = (e.at.rem_euclid(86_400) / 3600) as u8;
            let inside = if from <= to {
                (from..to).contains(&hour)
            } else {
                hour >= from || hour < to
            };
            if !inside {
                out.push(Anomaly::OutsideWindow { hour });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    /// Ten events an hour, every hour, for `days`, from `start`.
    fn steady(b: &mut Baselines, id: Uuid, sc: &[String], start: i64, days: i64) -> Vec<Anomaly> {
        let mut out = Vec::new();
        for h in 0..days * 24 {
            for k in 0..10 {
                b.observe(
                    &Event {
                        identity: id,
                        scopes: sc,
                        audiences: &[],
                        network: Some("10.1.2.0/24"),
                        at: start + h * 3600 + k * 300,
                        window: None,
                    },
                    &mut out,
                );
            }
        }
        out
    }

    fn ev<'a>(identity: Uuid, scopes: &'a [String], net: &'a str, at: i64) -> Event<'a> {
        Event {
            identity,
            scopes,
            audiences: &[],
            network: Some(net),
            at,
            window: None,
        }
    }

    #[test]
    fn a_steady_identity_raises_nothing_then_new_things_and_spikes_do() {
        let mut b = Baselines::new(7 * DAY);
        let id = Uuid::now_v7();
        let sc = scopes(&["ledger:read"]);
        let t0 = 1_700_000_000 - 1_700_000_000 % 3600;
        assert!(
            steady(&mut b, id, &sc, t0, 10).is_empty(),
            "steady use is usual"
        );
        let now = t0 + 10 * DAY;
        let mut out = Vec::new();
        b.observe(
            &ev(id, &scopes(&["ledger:write"]), "10.1.2.0/24", now),
            &mut out,
        );
        assert_eq!(out, [Anomaly::NewScope { index: 0 }]);
        out.clear();
        b.observe(&ev(id, &sc, "192.0.2.0/24", now + 1), &mut out);
        assert_eq!(out, [Anomaly::NewNetwork]);
        out.clear();
        // The same again is no longer new.
        b.observe(&ev(id, &sc, "192.0.2.0/24", now + 2), &mut out);
        assert!(out.is_empty());
        // A burst within one hour: one spike alert, at the first event over the bound.
        for k in 0..200 {
            b.observe(&ev(id, &sc, "10.1.2.0/24", now + 3 + k), &mut out);
        }
        let spikes: Vec<_> = out
            .iter()
            .filter(|a| matches!(a, Anomaly::VolumeSpike { .. }))
            .collect();
        assert_eq!(spikes.len(), 1, "{out:?}");
        let Anomaly::VolumeSpike { count, bound } = *spikes[0] else {
            unreachable!()
        };
        assert_eq!(bound, MIN_SPIKE, "steady 10/h: the bound is the floor");
        assert_eq!(count, bound + 1);
    }

    #[test]
    fn a_new_audience_is_noticed_and_old_saved_baselines_still_read() {
        let mut b = Baselines::new(DAY);
        let id = Uuid::now_v7();
        let sc = scopes(&["ledger:read"]);
        let ledger = scopes(&["https://ledger.example"]);
        let t0 = 1_700_000_000;
        let mut out = Vec::new();
        let at = |identity, audiences, at| Event {
            identity,
            scopes: &sc,
            audiences,
            network: None,
            at,
            window: None,
        };
        b.observe(&at(id, &ledger, t0), &mut out);
        b.observe(&at(id, &ledger, t0 + 2 * DAY), &mut out);
        assert!(out.is_empty());
        let payroll = scopes(&["https://ledger.example", "https://payroll.example"]);
        b.observe(&at(id, &payroll, t0 + 2 * DAY), &mut out);
        assert_eq!(out, [Anomaly::NewAudience { index: 1 }]);
        // A version-1 save (no audience set) reads back with an empty one.
        let v2 = b.encode(id).expect("held");
        let mut v1 = vec![1u8];
        let sets_at = 1 + 8 + 8 + 4 + 1;
        v1.extend_from_slice(&v2[1..sets_at]);
        let mut rest = &v2[sets_at..];
        for _ in 0..2 {
            let n = 1 + 8 * usize::from(rest[0]);
            v1.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        let n = 1 + 8 * usize::from(rest[0]);
        v1.extend_from_slice(&rest[n..]);
        let mut c = Baselines::new(DAY);
        c.restore(id, &v1).expect("version 1 reads");
        out.clear();
        c.observe(&at(id, &ledger, t0 + 3 * DAY), &mut out);
        assert_eq!(
            out,
            [Anomaly::NewAudience { index: 0 }],
            "it had no audiences"
        );
    }

    #[test]
    fn the_bound_follows_the_identitys_own_volume() {
        let mut b = Baselines::new(DAY);
        let id = Uuid::now_v7();
        let sc = scopes(&["ledger:read"]);
        let t0 = 1_700_000_000 - 1_700_000_000 % 3600;
        let mut out = Vec::new();
        // 50 an hour for 8 days: the bound is 50 (no spread).
        for h in 0..8 * 24 {
            for k in 0..50 {
                b.observe(
                    &ev(id, &sc, "10.1.2.0/24", t0 + h * 3600 + k * 60),
                    &mut out,
                );
            }
        }
        assert!(out.is_empty(), "{out:?}");
        let hour = t0 + 8 * DAY;
        for k in 0..50 {
            b.observe(&ev(id, &sc, "10.1.2.0/24", hour + k * 60), &mut out);
        }
        assert!(
            out.is_empty(),
            "50 in an hour is usual here (above the floor of 20)"
        );
        b.observe(&ev(id, &sc, "10.1.2.0/24", hour + 3_000), &mut out);
        assert_eq!(
            out,
            [Anomaly::VolumeSpike {
                count: 51,
                bound: 50
            }]
        );
    }

    #[test]
    fn nothing_is_unusual_while_learning() {
        let mut b = Baselines::new(7 * DAY);
        let id = Uuid::now_v7();
        let mut out = Vec::new();
        for (i, s) in ["a:r", "b:r", "c:r"].iter().enumerate() {
            b.observe(
                &Event {
                    identity: id,
                    scopes: &scopes(&[s]),
                    audiences: &[],
                    network: Some(["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"][i]),
                    at: 1_700_000_000 + i as i64,
                    window: None,
                },
                &mut out,
            );
        }
        assert!(out.is_empty());
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn use_outside_the_window_is_flagged_including_windows_across_midnight() {
        let mut b = Baselines::new(0);
        let id = Uuid::now_v7();
        let sc = scopes(&["a:r"]);
        let midnight = 1_700_000_000 - 1_700_000_000 % DAY;
        let at = |h: i64| midnight + h * 3600 + 5;
        let mut flagged = |window, hour| {
            let mut out = Vec::new();
            b.observe(
                &Event {
                    identity: id,
                    scopes: &sc,
                    audiences: &[],
                    network: None,
                    at: at(hour),
                    window: Some(window),
                },
                &mut out,
            );
            out.contains(&Anomaly::OutsideWindow { hour: hour as u8 })
        };
        assert!(!flagged((8, 18), 9));
        assert!(flagged((8, 18), 18));
        assert!(flagged((8, 18), 3));
        assert!(!flagged((22, 6), 23));
        assert!(!flagged((22, 6), 2));
        assert!(flagged((22, 6), 12));
    }

    #[test]
    fn a_saved_baseline_reads_back_the_same_and_a_damaged_one_is_refused() {
        let mut b = Baselines::new(7 * DAY);
        let id = Uuid::now_v7();
        let sc = scopes(&["ledger:read"]);
        let t0 = 1_700_000_000 - 1_700_000_000 % 3600;
        steady(&mut b, id, &sc, t0, 10);
        let saved = b.encode(id).expect("held");
        assert!(saved.len() < 1024, "{} bytes", saved.len());
        let mut c = Baselines::new(7 * DAY);
        c.restore(id, &saved).expect("reads back");
        assert_eq!(c.encode(id).as_deref(), Some(saved.as_slice()));
        // The restored baseline knows what it saw: the same scope is not new, another is.
        let mut out = Vec::new();
        let now = t0 + 10 * DAY;
        c.observe(&ev(id, &sc, "10.1.2.0/24", now), &mut out);
        assert!(out.is_empty(), "{out:?}");
        c.observe(
            &ev(id, &scopes(&["ledger:write"]), "10.1.2.0/24", now),
            &mut out,
        );
        assert_eq!(out, [Anomaly::NewScope { index: 0 }]);
        for bad in [
            &saved[..saved.len() - 1],
            &[saved.as_slice(), &[0]].concat()[..],
            &[2u8][..],
            &[][..],
        ] {
            assert!(c.restore(id, bad).is_err());
        }
        let mut wrong_version = saved.clone();
        wrong_version[0] = 9;
        assert!(c.restore(id, &wrong_version).is_err());
    }

    #[test]
    fn the_baseline_stays_small() {
        let mut b = Baselines::new(0);
        let id = Uuid::now_v7();
        let mut out = Vec::new();
        for i in 0..1_000 {
            b.observe(
                &Event {
                    identity: id,
                    scopes: &[format!("s{i}:r")],
                    audiences: &[],
                    network: Some(&format!("10.{}.{}.0/24", i / 250, i % 250)),
                    at: 1_700_000_000 + i,
                    window: None,
                },
                &mut out,
            );
        }
        let base = &b.map[&id];
        assert_eq!(
            (base.scopes.len(), base.networks.len()),
            (MAX_SEEN, MAX_SEEN)
        );
        assert_eq!(
            out.iter()
                .filter(|a| matches!(a, Anomaly::NewScope { .. }))
                .count(),
            MAX_SEEN,
            "new-scope alerts stop once the set is full"
        );
    }
}
