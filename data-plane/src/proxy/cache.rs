//! The authorization cache: key hash → what the control plane said about the key.
//! Bounded, per-entry TTL chosen by the control plane (short for unknown keys), and
//! dropped at once on invalidation pushes. Concurrent misses for one key are collapsed
//! into one Authorize call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::auth_info::KeyInfo;
use crate::control::domain::{Invalidation, InvalidationScope};
use crate::control::{CallFailed, ControlClient};

#[derive(Debug, Clone)]
struct Entry {
    /// `None` = the control plane does not know this key.
    info: Option<Arc<KeyInfo>>,
    ttl: Duration,
}

struct TtlFromEntry;

impl Expiry<String, Entry> for TtlFromEntry {
    fn expire_after_create(&self, _key: &String, value: &Entry, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

#[derive(Clone)]
pub struct AuthCache {
    /// Keyed by the API key's SHA-256 (hex), which no client can steer into collisions,
    /// so a fast hasher serves: each lookup hashes the key several times (segment, map,
    /// frequency sketch).
    cache: Cache<String, Entry, foldhash::fast::RandomState>,
    client: ControlClient,
    /// Bumped on every invalidation: a load that started before one must not be cached.
    generation: Arc<AtomicU64>,
    epoch: Arc<AtomicU64>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl AuthCache {
    pub fn new(
        client: ControlClient,
        capacity: u64,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .expire_after(TtlFromEntry)
            .support_invalidation_closures()
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            cache,
            client,
            generation: Arc::new(AtomicU64::new(0)),
            epoch: Arc::new(AtomicU64::new(0)),
            metrics,
        }
    }

    /// The key's info, `Ok(None)` for an unknown key, `Err` when the control plane
    /// cannot be asked (the caller answers 503; nothing is cached).
    pub async fn lookup(&self, key_hash: &str) -> Result<Option<Arc<KeyInfo>>, CallFailed> {
        let started_at = self.generation.load(Ordering::Acquire);
        // The common case first: a cached entry is read by reference, without copying the
        // key for the loader.
        let entry = match self.cache.get(key_hash).await {
            Some(entry) => {
                self.metrics.flow.auth_cache_hit();
                entry
            }
            // Boxed: the loader's future is large and only a miss needs it, so every
            // request's future stays small without it.
            None => Box::pin(self.load(key_hash)).await?,
        };
        if self.generation.load(Ordering::Acquire) != started_at {
            // An invalidation raced with the load; serve this answer once, don't keep it.
            self.cache.invalidate(key_hash).await;
        }
        Ok(entry.info)
    }

    /// A miss: one Authorize call, shared by the lookups of the same key meanwhile.
    async fn load(&self, key_hash: &str) -> Result<Entry, CallFailed> {
        // Set when this lookup ran the load (a miss); a lookup that joined another's
        // load, or found the entry cached by the time it got here, is a hit.
        let loaded = std::sync::atomic::AtomicBool::new(false);
        let entry = self
            .cache
            .try_get_with(key_hash.to_owned(), async {
                loaded.store(true, Ordering::Relaxed);
                let auth = self.client.authorize(key_hash).await?;
                Ok::<_, CallFailed>(Entry {
                    info: auth.key.map(Arc::new),
                    ttl: auth.ttl,
                })
            })
            .await
            .map_err(|e: Arc<CallFailed>| (*e).clone())?;
        if loaded.load(Ordering::Relaxed) {
            self.metrics.flow.auth_cache_miss();
        } else {
            self.metrics.flow.auth_cache_hit();
        }
        Ok(entry)
    }

    pub fn invalidate(&self, msg: &Invalidation) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let ids = msg.ids.clone();
        let result = match msg.scope {
            InvalidationScope::Keys => self.cache.invalidate_entries_if(move |_, e| {
                e.info.as_ref().is_some_and(|k| ids.contains(&k.key_id))
            }),
            InvalidationScope::Users => self.cache.invalidate_entries_if(move |_, e| {
                e.info
                    .as_ref()
                    .and_then(|k| k.user.as_ref())
                    .is_some_and(|u| ids.contains(&u.user_id))
            }),
            InvalidationScope::Groups => self.cache.invalidate_entries_if(move |_, e| {
                e.info
                    .as_ref()
                    .and_then(|k| k.group.as_ref())
                    .is_some_and(|g| ids.contains(&g.group_id))
            }),
            // Account changes reach admission directly (the control plane selects
            // accounts); cached key info only carries a group's model list, which may
            // lag by one TTL.
            InvalidationScope::Accounts => Ok(String::new()),
            InvalidationScope::All => {
                self.cache.invalidate_all();
                Ok(String::new())
            }
        };
        if result.is_err() {
            self.cache.invalidate_all();
        }
    }

    /// A new control-plane epoch means invalidations may have been missed.
    pub fn attached(&self, epoch: u64) {
        let previous = self.epoch.swap(epoch, Ordering::AcqRel);
        if previous != epoch {
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.cache.invalidate_all();
        }
    }
}
