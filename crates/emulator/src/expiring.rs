//! A map whose entries age out: what the emulator keeps of the sessions and tokens it issued.
//!
//! Every entry carries the instant after which it may be forgotten. An index ordered by that
//! instant lets each insert drop the entries that are due from its front, so the cost of an insert
//! is `O(log n)` however many entries are live, and a long-running emulator under load neither
//! slows down nor grows past what is live. A hard cap bounds memory even when everything is
//! live: past it, the entry due soonest is dropped first (a client presenting it is then treated
//! as presenting an unknown credential, as a real cloud treats a revoked one).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use time::OffsetDateTime;

/// A bounded map of entries, each forgotten once its `keep_until` has passed.
#[derive(Debug)]
pub struct ExpiringMap<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// `(keep_until, insertion sequence)` → key; the sequence makes equal instants distinct.
    order: BTreeMap<(OffsetDateTime, u64), K>,
    next_seq: u64,
    cap: usize,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    keep_until: OffsetDateTime,
    seq: u64,
}

impl<K: Hash + Eq + Clone, V> ExpiringMap<K, V> {
    /// An empty map holding at most `cap` entries (at least one).
    pub fn with_capacity_limit(cap: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            cap: cap.max(1),
        }
    }

    /// Inserts (or replaces) `key`, to be kept until `keep_until`. Entries due at `now` are
    /// dropped first; if the map is still full, so is the entry due soonest.
    pub fn insert(&mut self, key: K, value: V, keep_until: OffsetDateTime, now: OffsetDateTime) {
        self.purge(now);
        if let Some(old) = self.entries.remove(&key) {
            self.order.remove(&(old.keep_until, old.seq));
        }
        while self.entries.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert((keep_until, seq), key.clone());
        self.entries.insert(
            key,
            Entry {
                value,
                keep_until,
                seq,
            },
        );
    }

    /// Drops every entry whose `keep_until` is at or before `now`.
    pub fn purge(&mut self, now: OffsetDateTime) {
        while let Some(entry) = self.order.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }

    /// The entry for `key`, if it is still kept.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.get(key).map(|e| &e.value)
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn entries_age_out_on_insert() {
        let mut m = ExpiringMap::with_capacity_limit(100);
        m.insert("a", 1, T0 + Duration::seconds(10), T0);
        m.insert("b", 2, T0 + Duration::seconds(20), T0);
        assert_eq!(m.get(&"a"), Some(&1));
        m.insert(
            "c",
            3,
            T0 + Duration::seconds(30),
            T0 + Duration::seconds(10),
        );
        assert_eq!(
            m.get(&"a"),
            None,
            "due at 10 s, dropped by the insert at 10 s"
        );
        assert_eq!((m.get(&"b"), m.get(&"c"), m.len()), (Some(&2), Some(&3), 2));
        m.purge(T0 + Duration::seconds(60));
        assert!(m.is_empty());
        assert!(m.order.is_empty());
    }

    #[test]
    fn replacing_a_key_moves_its_deadline() {
        let mut m = ExpiringMap::with_capacity_limit(100);
        m.insert("a", 1, T0 + Duration::seconds(10), T0);
        m.insert("a", 2, T0 + Duration::seconds(50), T0);
        m.purge(T0 + Duration::seconds(20));
        assert_eq!(m.get(&"a"), Some(&2));
        assert_eq!((m.len(), m.order.len()), (1, 1));
    }

    #[test]
    fn the_cap_drops_the_entry_due_soonest() {
        let mut m = ExpiringMap::with_capacity_limit(3);
        for (i, due) in [40, 10, 30, 20].into_iter().enumerate() {
            m.insert(i, due, T0 + Duration::seconds(due), T0);
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&1), None, "due at 10 s: the first to go");
        assert!([0, 2, 3].iter().all(|k| m.get(k).is_some()));
        assert_eq!(m.order.len(), 3);
    }

    #[test]
    fn many_live_entries_stay_within_the_cap() {
        let cap = 20_000;
        let mut m = ExpiringMap::with_capacity_limit(cap);
        for i in 0..200_000u64 {
            let now = T0 + Duration::milliseconds(i as i64);
            m.insert(i, (), now + Duration::HOUR, now);
        }
        assert_eq!((m.len(), m.order.len()), (cap, cap));
        assert!(m.get(&199_999).is_some());
    }
}
