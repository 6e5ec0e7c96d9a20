//! The IMDSv2 session tokens the daemon handed out, with a budget per caller.
//!
//! Any local user can `PUT /latest/api/token` in a loop, so the table is bounded — and bounded
//! per caller (the uid the listener identified), so that one client's flood of PUTs only
//! pushes out that client's own older tokens, never another client's live one:
//!
//! * a caller holding [`MAX_TOKENS_PER_CALLER`] live tokens loses its token closest to expiry
//!   when it asks for another;
//! * the whole table holds at most [`MAX_LIVE_TOKENS`]; past that (only with more than
//!   `MAX_LIVE_TOKENS / MAX_TOKENS_PER_CALLER` busy callers) expired tokens are dropped, then
//!   the soonest-expiring token of the caller holding the most.
//!
//! Callers that could not be identified share one budget. Only a SHA-256 of each token is
//! kept; expiry is tokio time, so tests can pause it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// Live session tokens kept at most. SDKs take one token per process and reuse it for hours,
/// so this is far above any host's need, and it bounds the daemon's memory.
pub const MAX_LIVE_TOKENS: usize = 4096;

/// Live session tokens one caller (uid) keeps at most: a few per process for a host full of
/// one user's processes. Past it, that caller's own oldest token goes (its holder gets a 401
/// and fetches a new one).
pub const MAX_TOKENS_PER_CALLER: usize = 256;

type Hash = [u8; 32];
type Owner = Option<u32>;

/// The live tokens.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tokens: HashMap<Hash, (Instant, Owner)>,
    by_owner: HashMap<Owner, BTreeSet<(Instant, Hash)>>,
}

impl Inner {
    fn remove(&mut self, hash: &Hash) {
        if let Some((expiry, owner)) = self.tokens.remove(hash)
            && let Some(set) = self.by_owner.get_mut(&owner)
        {
            set.remove(&(expiry, *hash));
            if set.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }

    /// Drops `owner`'s expired tokens, then its soonest-expiring ones down to `keep`.
    fn trim(&mut self, owner: Owner, now: Instant, keep: usize) {
        let Some(set) = self.by_owner.get(&owner) else {
            return;
        };
        let excess = set.len().saturating_sub(keep);
        let doomed: Vec<Hash> = set
            .iter()
            .enumerate()
            .take_while(|(i, (expiry, _))| *i < excess || *expiry <= now)
            .map(|(_, (_, h))| *h)
            .collect();
        for h in doomed {
            self.remove(&h);
        }
    }

    fn make_room(&mut self, now: Instant) {
        if self.tokens.len() < MAX_LIVE_TOKENS {
            return;
        }
        let owners: Vec<Owner> = self.by_owner.keys().copied().collect();
        for o in owners {
            self.trim(o, now, usize::MAX);
        }
        while self.tokens.len() >= MAX_LIVE_TOKENS {
            let Some(biggest) = self
                .by_owner
                .iter()
                .max_by_key(|(_, set)| set.len())
                .map(|(o, set)| (*o, set.len()))
            else {
                break;
            };
            self.trim(biggest.0, now, biggest.1 - 1);
        }
    }
}

impl TokenStore {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new token for `owner`, live for `ttl`.
    pub(crate) fn issue(&self, owner: Owner, ttl: Duration) -> String {
        let token = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let hash: Hash = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        let expiry = now + ttl;
        let mut inner = self.lock();
        inner.trim(owner, now, MAX_TOKENS_PER_CALLER - 1);
        inner.make_room(now);
        inner.tokens.insert(hash, (expiry, owner));
        inner
            .by_owner
            .entry(owner)
            .or_default()
            .insert((expiry, hash));
        token
    }

    /// Whether `token` was issued and has not expired.
    pub(crate) fn is_live(&self, token: &[u8]) -> bool {
        let hash: Hash = Sha256::digest(token).into();
        self.lock()
            .tokens
            .get(&hash)
            .is_some_and(|(expiry, _)| *expiry > Instant::now())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().tokens.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_caller_cannot_evict_another_callers_token() {
        let store = TokenStore::default();
        let hour = Duration::from_secs(3600);
        let victim = store.issue(Some(1000), hour);
        // The neighbour's 10,000 PUTs, with the longest TTL.
        let mut last = String::new();
        for _ in 0..10_000 {
            last = store.issue(Some(1001), Duration::from_secs(21_600));
        }
        assert!(
            store.is_live(victim.as_bytes()),
            "the victim's token survives"
        );
        assert!(store.is_live(last.as_bytes()));
        assert_eq!(store.len(), 1 + MAX_TOKENS_PER_CALLER);
        tokio::time::advance(hour).await;
        assert!(!store.is_live(victim.as_bytes()), "and expires on time");
        assert!(!store.is_live(b"never issued"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_across_many_callers() {
        let store = TokenStore::default();
        let ttl = Duration::from_secs(60);
        let first = store.issue(Some(0), ttl);
        for uid in 1..=40u32 {
            for _ in 0..MAX_TOKENS_PER_CALLER {
                store.issue(Some(uid), ttl);
            }
        }
        assert!(store.len() <= MAX_LIVE_TOKENS);
        assert!(
            store.is_live(first.as_bytes()),
            "the fullest callers pay, not the caller with one token"
        );
        // Expired tokens are dropped when a caller comes back.
        tokio::time::advance(ttl).await;
        store.issue(Some(1), ttl);
        assert!(store.lock().by_owner[&Some(1)].len() == 1);
    }
}
