//! Authentication caches: secret hash → what the hash authenticates.
//!
//! Correctness rule: an entry is tagged with the *generation* read before the database read that
//! filled it, and is used only while the generation is unchanged. Every committed change that can
//! alter an authentication answer (revoke, rotate, suspend, retire, scope changes, approvals,
//! membership and operator changes) bumps the generation after its commit and before its caller is
//! answered. So once a revocation has been acknowledged, no cached entry can authenticate the
//! revoked credential: a racing reader either read the old state under the old generation (now
//! stale) or the new state.
//!
//! Expiry is not cached away: callers check `expires_at` against the clock on every use.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most entries a cache holds before it is cleared (a bound on memory, not a working-set size).
const MAX_ENTRIES: usize = 200_000;

#[derive(Debug)]
pub struct GenCache<K, V> {
    generation: AtomicU64,
    /// Off while changes made elsewhere (other nodes) cannot be heard: nothing is served or kept.
    enabled: std::sync::atomic::AtomicBool,
    map: Mutex<HashMap<K, (u64, Arc<V>)>>,
    /// Most entries held before the map is cleared.
    max: usize,
}

impl<K: Eq + Hash, V> Default for GenCache<K, V> {
    fn default() -> Self {
        GenCache {
            generation: AtomicU64::new(0),
            enabled: std::sync::atomic::AtomicBool::new(true),
            map: Mutex::new(HashMap::new()),
            max: MAX_ENTRIES,
        }
    }
}

impl<K: Eq + Hash, V> GenCache<K, V> {
    /// A cache of at most `max` entries (cleared when full).
    pub fn with_capacity(max: usize) -> Self {
        GenCache {
            max,
            ..GenCache::default()
        }
    }

    /// The current generation; read it before reading the database.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The entry for `key`, if it was filled under the current generation.
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let current = self.generation();
        let map = self.map.lock().ok()?;
        match map.get(key) {
            Some((g, v)) if *g == current => Some(Arc::clone(v)),
            _ => None,
        }
    }

    /// Stores `value` as read under `generation`.
    pub fn put(&self, key: K, generation: u64, value: Arc<V>) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.max {
                map.clear();
            }
            map.insert(key, (generation, value));
        }
    }

    /// Makes every entry stale.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Stops (`false`) or resumes (`true`) serving entries; either way every entry is made stale.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Release);
        self.invalidate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_filled_before_an_invalidation_are_never_served_after_it() {
        let c: GenCache<u8, &str> = GenCache::default();
        let g = c.generation();
        c.put(1, g, Arc::new("old"));
        assert_eq!(c.get(&1).as_deref(), Some(&"old"));
        c.invalidate();
        assert_eq!(c.get(&1), None);
        // A reader that started before the invalidation and stores late is still stale.
        c.put(2, g, Arc::new("racing"));
        assert_eq!(c.get(&2), None);
        let g2 = c.generation();
        c.put(2, g2, Arc::new("fresh"));
        assert_eq!(c.get(&2).as_deref(), Some(&"fresh"));
    }

    #[test]
    fn a_disabled_cache_serves_nothing_and_resumes_empty() {
        let c: GenCache<u8, &str> = GenCache::default();
        c.put(1, c.generation(), Arc::new("old"));
        c.set_enabled(false);
        assert_eq!(c.get(&1), None);
        c.put(2, c.generation(), Arc::new("while deaf"));
        assert_eq!(c.get(&2), None);
        c.set_enabled(true);
        assert_eq!(c.get(&1), None, "entries from before are stale");
        assert_eq!(c.get(&2), None, "entries filled while disabled are stale");
    }
}
