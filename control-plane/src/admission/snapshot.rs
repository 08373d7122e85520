//! The admission snapshot: an in-memory read-through cache of what Admit reads from
//! storage — keys, users and groups by id, a group's accounts (credentials decrypted,
//! memberships included) and the price table (unpriced models are refused at
//! admission) — so that an uncontended Admit touches no storage.
//!
//! It never serves a change's old state once the call that made the change returned:
//! - The control plane is the only writer, and every write to these rows publishes on
//!   [`Invalidations`] before its call returns: admin changes, health changes, OAuth
//!   refreshes and billing flips to the data planes too; account creation, price edits
//!   and (per record) a charge's flips with `publish_local`, which only we hear.
//! - Publishing bumps the bus's generation inside the publishing call. The snapshot
//!   follows the numbered channel on a task ([`Snapshot::follow`]) and records the
//!   generation it has applied; entries are served only while that is the bus's
//!   generation. From a publish until the task has dropped the entries (the in-process
//!   broadcast latency) readers go to storage instead.
//! - A load during which the generation moved is returned but not kept: it may have
//!   read a row just before a write committed.
//! - Entries live at most `ttl`, a safety net for a write that would not publish (or an
//!   edit made directly in the database).
//!
//! What changes without a publish is harmless to cache: a charge moves a key's
//! `quota_used` and a user's balance, but they decide an Admit only at the
//! `quota_exhausted` and `balance ≤ 0` flips, and those publish. Account last-used times
//! are kept in memory by admission (it takes the later of both); the codex usage snapshot
//! is not read by Admit. Deliberately not cached, read fresh on every Admit: the
//! subscription (its usage windows move with every charge, and which one is active
//! depends on the clock), and the user after a wait for the user slot (the billing
//! re-check).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::billing::PriceTable;
use crate::error::Result;
use crate::events::{Change, Invalidations, Numbered, Scope};
use crate::model::{Account, ApiKey, Group, User};
use crate::storage::Store;

/// How long an entry is trusted without any invalidation.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// The snapshot. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Snapshot {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    bus: Invalidations,
    ttl: Duration,
    state: Mutex<State>,
    /// Subscribed at construction, before anything can be cached; taken by `follow`.
    changes: Mutex<Option<broadcast::Receiver<Numbered>>>,
}

#[derive(Debug)]
struct Entry<T> {
    value: T,
    loaded_at: Instant,
}

type Table<K, T> = HashMap<K, Entry<T>>;

#[derive(Debug, Default)]
struct State {
    /// Every change up to this generation has been applied to the tables below.
    applied: u64,
    // Shared, not copied, with each Admit that reads them.
    keys: Table<i64, Arc<ApiKey>>,
    users: Table<i64, Arc<User>>,
    groups: Table<i64, Arc<Group>>,
    /// By group; `None` is for keys without a group, which may use every account.
    accounts: Table<Option<i64>, Arc<Vec<Account>>>,
    /// A single entry: the whole table.
    prices: Table<(), Arc<PriceTable>>,
}

impl State {
    fn clear(&mut self) {
        self.keys.clear();
        self.users.clear();
        self.groups.clear();
        self.accounts.clear();
        self.prices.clear();
    }

    fn apply(&mut self, change: &Change) {
        let inv = match change {
            Change::Prices => {
                self.prices.clear();
                return;
            }
            Change::Invalidated(inv) => inv,
        };
        let named = |id: &i64| inv.ids.contains(id);
        match inv.scope {
            Scope::All => self.clear(),
            Scope::Key => self.keys.retain(|id, _| !named(id)),
            Scope::User => self.users.retain(|id, _| !named(id)),
            Scope::Group => {
                self.groups.retain(|id, _| !named(id));
                // A deleted group took its memberships with it.
                self.accounts.clear();
            }
            // Any list may hold the account, or it may just have joined one: the lists
            // are few, drop them all.
            Scope::Account => self.accounts.clear(),
        }
    }

    fn prune(&mut self, ttl: Duration) {
        let fresh = |loaded_at: Instant| loaded_at.elapsed() < ttl;
        self.keys.retain(|_, e| fresh(e.loaded_at));
        self.users.retain(|_, e| fresh(e.loaded_at));
        self.groups.retain(|_, e| fresh(e.loaded_at));
        self.accounts.retain(|_, e| fresh(e.loaded_at));
        self.prices.retain(|_, e| fresh(e.loaded_at));
    }
}

impl Snapshot {
    pub fn new(store: Store, bus: Invalidations, ttl: Duration) -> Self {
        let changes = bus.subscribe_numbered();
        // Read after subscribing: what was published before is about entries that cannot
        // be cached yet; what comes after arrives on `changes`.
        let applied = bus.generation();
        Self {
            inner: Arc::new(Inner {
                store,
                bus,
                ttl,
                state: Mutex::new(State {
                    applied,
                    ..State::default()
                }),
                changes: Mutex::new(Some(changes)),
            }),
        }
    }

    pub async fn key(&self, id: i64) -> Result<Arc<ApiKey>> {
        let load = async { Ok(Arc::new(self.inner.store.get_key(id).await?)) };
        self.read_through(|s| &mut s.keys, id, load).await
    }

    pub async fn user(&self, id: i64) -> Result<Arc<User>> {
        let load = async { Ok(Arc::new(self.inner.store.get_user(id).await?)) };
        self.read_through(|s| &mut s.users, id, load).await
    }

    pub async fn group(&self, id: i64) -> Result<Arc<Group>> {
        let load = async { Ok(Arc::new(self.inner.store.get_group(id).await?)) };
        self.read_through(|s| &mut s.groups, id, load).await
    }

    /// Every live account of the group (of all groups for `None`), whatever its status.
    /// Shared, not copied: Admit reads them all and copies only the account it grants.
    pub async fn group_accounts(&self, group_id: Option<i64>) -> Result<Arc<Vec<Account>>> {
        let load = async {
            let accounts = self.inner.store.list_group_accounts(group_id).await?;
            Ok(Arc::new(accounts))
        };
        self.read_through(|s| &mut s.accounts, group_id, load).await
    }

    pub async fn prices(&self) -> Result<Arc<PriceTable>> {
        let load = async { Ok(Arc::new(PriceTable::load(&self.inner.store).await?)) };
        self.read_through(|s| &mut s.prices, (), load).await
    }

    /// The cached value when it may be served, else `load`'s, kept only when no change
    /// was published while it ran. Errors (`NotFound` included) are never kept.
    async fn read_through<K: Eq + Hash, T: Clone>(
        &self,
        table: fn(&mut State) -> &mut Table<K, T>,
        key: K,
        load: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = self.inner.bus.generation();
        {
            let mut state = self.lock();
            // `applied < started`: a change is published but not yet applied here.
            if state.applied == started
                && let Some(e) = table(&mut state).get(&key)
                && e.loaded_at.elapsed() < self.inner.ttl
            {
                return Ok(e.value.clone());
            }
        }
        let value = load.await?;
        let mut state = self.lock();
        // Checked under the lock `follow` applies changes under: a change published
        // after this check is applied after the insert, and drops it.
        if self.inner.bus.generation() == started {
            let entry = Entry {
                value: value.clone(),
                loaded_at: Instant::now(),
            };
            table(&mut state).insert(key, entry);
        }
        Ok(value)
    }

    /// Applies published changes until `shutdown`, and drops expired entries. Spawn it
    /// once on the service's tracker; without it every publish sends readers to storage
    /// for good (correct, only slower).
    pub async fn follow(self, shutdown: CancellationToken) {
        let taken = self
            .inner
            .changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut changes) = taken else {
            tracing::warn!("the admission snapshot is already being followed");
            return;
        };
        let mut prune = tokio::time::interval(self.inner.ttl);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = prune.tick() => self.lock().prune(self.inner.ttl),
                received = changes.recv() => match received {
                    Ok(n) => {
                        let mut state = self.lock();
                        state.apply(&n.change);
                        state.applied = state.applied.max(n.generation);
                    }
                    Err(RecvError::Lagged(missed)) => {
                        // What was missed is unknown: drop everything. `applied` stays
                        // behind (readers go to storage) until the next change received.
                        tracing::warn!(missed, "admission snapshot lagged; cleared");
                        self.lock().clear();
                    }
                    Err(RecvError::Closed) => break,
                },
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the tables consistent (single inserts, removals
        // and clears), so a panic elsewhere cannot leave them half-updated.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use tollgate_shared::domain::UserRole;

    use super::*;
    use crate::crypto::SecretBox;
    use crate::events::Invalidation;
    use crate::model::{NewUser, UserPatch};

    struct Setup {
        store: Store,
        bus: Invalidations,
        snapshot: Snapshot,
        user: i64,
        _dir: tempfile::TempDir,
    }

    async fn setup(ttl: Duration) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("snapshot.db").display());
        let secrets = SecretBox::from_base64(&SecretBox::generate_key_b64()).unwrap();
        let store = Store::connect(&url, secrets).await.unwrap();
        let bus = Invalidations::new();
        let snapshot = Snapshot::new(store.clone(), bus.clone(), ttl);
        let user = store
            .create_user(NewUser {
                email: "u@example.com".into(),
                name: "before".into(),
                role: UserRole::User,
                concurrency: 1,
                notes: String::new(),
                initial_balance_nanos: 0,
            })
            .await
            .unwrap()
            .id;
        Setup {
            store,
            bus,
            snapshot,
            user,
            _dir: dir,
        }
    }

    /// Renames the user in storage without publishing anything.
    async fn rename(s: &Setup, name: &str) {
        let patch = UserPatch {
            name: Some(name.into()),
            ..UserPatch::default()
        };
        s.store.update_user(s.user, patch).await.unwrap();
    }

    async fn name(s: &Setup) -> String {
        s.snapshot.user(s.user).await.unwrap().name.clone()
    }

    /// Waits until the follower has applied everything published so far.
    async fn settled(s: &Setup) {
        for _ in 0..500 {
            if s.snapshot.lock().applied == s.bus.generation() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the follower did not catch up");
    }

    #[tokio::test]
    async fn cached_until_published_and_stale_for_no_reader_in_between() {
        let s = setup(Duration::from_secs(60)).await;
        let shutdown = CancellationToken::new();
        let follower = tokio_util::task::TaskTracker::new();
        follower.spawn(s.snapshot.clone().follow(shutdown.clone()));

        assert_eq!(name(&s).await, "before");
        rename(&s, "unpublished").await;
        assert_eq!(name(&s).await, "before", "served from memory");

        // Right after the publish, before the follower can have run, readers go to
        // storage; the follower then drops what they kept.
        s.bus.publish(Invalidation::user(s.user));
        assert_eq!(name(&s).await, "unpublished");
        settled(&s).await;
        assert_eq!(name(&s).await, "unpublished");
        rename(&s, "cached again").await;
        assert_eq!(name(&s).await, "unpublished", "the fresh read was cached");

        // Local changes count the same; an unrelated one leaves the entry.
        s.bus.publish_local(Change::Prices);
        settled(&s).await;
        assert_eq!(name(&s).await, "unpublished");
        s.bus
            .publish_local(Change::Invalidated(Invalidation::user(s.user)));
        assert_eq!(name(&s).await, "cached again");

        shutdown.cancel();
        follower.close();
        follower.wait().await;
    }

    #[tokio::test]
    async fn without_the_follower_a_publish_sends_every_reader_to_storage() {
        let s = setup(Duration::from_secs(60)).await;
        assert_eq!(name(&s).await, "before");
        s.bus.publish(Invalidation::key(12345));
        rename(&s, "after").await;
        assert_eq!(name(&s).await, "after");
        rename(&s, "later").await;
        assert_eq!(name(&s).await, "later");
    }

    #[tokio::test]
    async fn a_load_overtaken_by_a_change_is_not_kept() {
        let s = setup(Duration::from_secs(60)).await;
        // The load reads the row, then a write commits and publishes before it finishes.
        let load = async {
            let u = s.store.get_user(s.user).await;
            rename(&s, "written during the load").await;
            s.bus.publish(Invalidation::user(s.user));
            u.map(Arc::new)
        };
        let read = s
            .snapshot
            .read_through(|st| &mut st.users, s.user, load)
            .await
            .unwrap();
        assert_eq!(read.name, "before", "the caller gets what it read");
        assert!(s.snapshot.lock().users.is_empty(), "but it is not kept");
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let s = setup(Duration::from_millis(50)).await;
        assert_eq!(name(&s).await, "before");
        rename(&s, "after").await;
        assert_eq!(name(&s).await, "before");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(name(&s).await, "after");
    }

    #[tokio::test]
    async fn a_lagging_follower_drops_everything() {
        let s = setup(Duration::from_secs(60)).await;
        assert_eq!(name(&s).await, "before");
        rename(&s, "after").await;
        // Overflow the channel (4096) before the follower runs.
        for _ in 0..5000 {
            s.bus.publish(Invalidation::key(1));
        }
        let shutdown = CancellationToken::new();
        let follower = tokio_util::task::TaskTracker::new();
        follower.spawn(s.snapshot.clone().follow(shutdown.clone()));
        settled(&s).await;
        assert_eq!(name(&s).await, "after");
        shutdown.cancel();
        follower.close();
        follower.wait().await;
    }

    #[test]
    fn changes_drop_what_they_name() {
        fn entry<T>(value: T) -> Entry<T> {
            Entry {
                value,
                loaded_at: Instant::now(),
            }
        }
        let mut s = State::default();
        s.accounts.insert(Some(1), entry(Arc::default()));
        s.accounts.insert(None, entry(Arc::default()));
        s.prices.insert((), entry(Arc::default()));
        s.apply(&Change::Invalidated(Invalidation::user(7)));
        assert_eq!((s.accounts.len(), s.prices.len()), (2, 1));
        s.apply(&Change::Invalidated(Invalidation::account(3)));
        assert_eq!((s.accounts.len(), s.prices.len()), (0, 1));
        s.apply(&Change::Prices);
        assert!(s.prices.is_empty());
    }
}
