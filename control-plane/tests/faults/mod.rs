//! What the fault-injection suite needs: a small filesystem to fill, a store and the
//! books a test keeps of what was acknowledged, checked against a fresh store after the
//! fault.

pub mod postgres;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tollgate_control_plane::billing::{BillingSettings, report_usage};
use tollgate_control_plane::events::Invalidations;
use tollgate_control_plane::model::{NewApiKey, NewUser, Page, UsageFilter, UserPatch};
use tollgate_control_plane::storage::Store;
use tollgate_shared::domain::UserRole;
use tollgate_shared::now_ms;
use tollgate_shared::proto::gateway::v1 as pb;

/// A tmpfs of a few MiB mounted on a temp dir for one test (unmounted on drop).
pub struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts a `mib` MiB tmpfs, or prints why not and returns `None` (the test is then
    /// skipped: mounting needs root or CAP_SYS_ADMIN).
    pub fn mount(mib: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            Ok(o) => {
                skipped(&String::from_utf8_lossy(&o.stderr));
                None
            }
            Err(e) => {
                skipped(&e.to_string());
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Mounts a `mib` MiB tmpfs on the existing empty directory `at` (a control plane's
    /// data dir), unmounted when the returned guard drops.
    pub fn mount_on(at: &Path, mib: u32) -> Option<Mounted> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Mounted(at.to_owned())),
            Ok(o) => {
                skipped(&String::from_utf8_lossy(&o.stderr));
                None
            }
            Err(e) => {
                skipped(&e.to_string());
                None
            }
        }
    }

    /// Fills the filesystem to the last byte; the space comes back when the filler drops.
    pub fn fill(&self) -> Filler {
        fill(self.path())
    }
}

fn skipped(why: &str) {
    println!(
        "SKIPPED: cannot mount a small tmpfs for the disk-full test ({}); run as root to include it",
        why.trim()
    );
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A tmpfs mounted by [`SmallFs::mount_on`]; unmounted on drop.
pub struct Mounted(PathBuf);

impl Mounted {
    pub fn fill(&self) -> Filler {
        fill(&self.0)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A file taking all free space in `dir`; removed on drop.
fn fill(dir: &Path) -> Filler {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    // The last partial block too.
    while file.write_all(&[0u8]).is_ok() {}
    Filler { path }
}

/// A file taking all free space; removed on drop.
pub struct Filler {
    path: PathBuf,
}

impl Filler {
    /// Gives back `bytes` of space (the disk then fills again as writes take it).
    pub fn release(&self, bytes: u64) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len.saturating_sub(bytes)).unwrap();
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub async fn connect(url: &str) -> Store {
    // A short wait for a connection keeps the tests with the database away quick.
    Store::connect_with(url, tollgate_tests::db::secrets(), Duration::from_secs(1))
        .await
        .unwrap()
}

/// The user and key every record of a test is charged to.
pub struct Books {
    pub user_id: i64,
    pub key_id: i64,
    pub initial_balance: i64,
}

/// What one round of writes saw: the acknowledged ids and the errors of the others.
#[derive(Debug, Default)]
pub struct Round {
    pub acked: Vec<String>,
    pub errors: Vec<String>,
}

/// Admin writes made during a fault: users created (ack = it must exist) and the last
/// note an `update_user` acknowledged.
#[derive(Debug, Default)]
pub struct AdminRound {
    pub created: Vec<String>,
    pub failed_emails: Vec<String>,
    pub notes_acked: Option<String>,
    pub notes_failed_after: Vec<String>,
    pub errors: Vec<String>,
}

impl Books {
    pub async fn open(store: &Store) -> Self {
        let initial_balance = 1_000_000_000_000;
        let user = store
            .create_user(NewUser {
                email: "payer@x.io".into(),
                name: "payer".into(),
                role: UserRole::User,
                concurrency: 5,
                notes: String::new(),
                initial_balance_nanos: initial_balance,
            })
            .await
            .unwrap();
        let key = store
            .create_key(NewApiKey {
                user_id: user.id,
                name: "k".into(),
                group_id: None,
                key_hash: "hash-of-k".into(),
                key_hint: "sk-...k".into(),
                ip_allow: vec![],
                ip_deny: vec![],
                quota_nanos: 0,
                expires_at_ms: None,
            })
            .await
            .unwrap();
        Self {
            user_id: user.id,
            key_id: key.id,
            initial_balance,
        }
    }

    fn report(&self, request_id: &str) -> pb::UsageReport {
        pb::UsageReport {
            request_id: request_id.into(),
            key_id: self.key_id,
            user_id: self.user_id,
            account_id: 1,
            model: "gpt-5".into(),
            upstream_model: "gpt-5".into(),
            input_tokens: 1000,
            output_tokens: 200,
            billing_mode: "balance".into(),
            rate_multiplier: "1".into(),
            account_cost_multiplier: "1".into(),
            started_at_ms: now_ms(),
            ..Default::default()
        }
    }

    /// Reports `n` records one call each, as a data plane's queue would, through the
    /// control plane's `ReportUsage` handler.
    pub async fn charge_many(&self, store: &Store, tag: &str, n: usize) -> Round {
        let bus = Invalidations::new();
        let metrics = tollgate_control_plane::metrics::Metrics::new();
        let mut round = Round::default();
        for i in 0..n {
            let id = format!("{tag}-{i}");
            match report_usage(
                store,
                &bus,
                &BillingSettings::default(),
                &metrics.billing,
                vec![self.report(&id)],
                now_ms(),
            )
            .await
            {
                Ok(resp) => {
                    assert!(
                        resp.dead_lettered.is_empty(),
                        "a storage fault dead-lettered a record: {resp:?}"
                    );
                    if resp.acked_request_ids == [id.clone()] {
                        round.acked.push(id);
                    } else {
                        round.errors.push(format!("{id}: not acknowledged"));
                    }
                }
                Err(e) => round.errors.push(format!("{id}: {e}")),
            }
        }
        round
    }

    /// Reports `n` records in ONE call (one batch transaction): either the batch
    /// committed (each record acknowledged) or the call failed and nothing is.
    pub async fn charge_batch(&self, store: &Store, tag: &str, n: usize) -> Round {
        let bus = Invalidations::new();
        let metrics = tollgate_control_plane::metrics::Metrics::new();
        let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
        let mut round = Round::default();
        match report_usage(
            store,
            &bus,
            &BillingSettings::default(),
            &metrics.billing,
            ids.iter().map(|id| self.report(id)).collect(),
            now_ms(),
        )
        .await
        {
            Ok(resp) => {
                assert!(
                    resp.dead_lettered.is_empty(),
                    "a storage fault dead-lettered a record: {resp:?}"
                );
                for id in ids {
                    if resp.acked_request_ids.contains(&id) {
                        round.acked.push(id);
                    } else {
                        round.errors.push(format!("{id}: not acknowledged"));
                    }
                }
            }
            Err(e) => round
                .errors
                .extend(ids.iter().map(|id| format!("{id}: {e}"))),
        }
        round
    }

    /// Admin writes: `n` users created, and the payer's notes updated `n` times.
    pub async fn admin_writes(&self, store: &Store, tag: &str, n: usize) -> AdminRound {
        let mut round = AdminRound::default();
        for i in 0..n {
            let email = format!("{tag}-{i}@x.io");
            let created = store
                .create_user(NewUser {
                    email: email.clone(),
                    name: email.clone(),
                    role: UserRole::User,
                    concurrency: 1,
                    notes: String::new(),
                    initial_balance_nanos: 5,
                })
                .await;
            match created {
                Ok(_) => round.created.push(email),
                Err(e) => {
                    round.errors.push(e.to_string());
                    round.failed_emails.push(email);
                }
            }
            let note = format!("{tag}-note-{i}");
            let patch = UserPatch {
                notes: Some(note.clone()),
                ..UserPatch::default()
            };
            match store.update_user(self.user_id, patch).await {
                Ok(u) => {
                    assert_eq!(u.notes, note);
                    round.notes_acked = Some(note);
                    round.notes_failed_after.clear();
                }
                Err(e) => {
                    round.errors.push(e.to_string());
                    round.notes_failed_after.push(note);
                }
            }
        }
        round
    }

    /// On a fresh store: every acknowledged record is there, once (the request id is the
    /// key), and the balance is the initial one minus exactly the records stored.
    pub async fn check(&self, fresh: &Store, rounds: &[&Round]) {
        let filter = UsageFilter {
            key_id: Some(self.key_id),
            ..UsageFilter::default()
        };
        let rows = fresh
            .query_usage(
                &filter,
                Page {
                    after_id: 0,
                    limit: 1000,
                },
            )
            .await
            .unwrap()
            .0
            .items;
        let stored: BTreeSet<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(stored.len(), rows.len(), "a request id stored twice");
        for round in rounds {
            for id in &round.acked {
                assert!(stored.contains(id.as_str()), "acknowledged {id} is missing");
            }
        }
        let charged: i64 = rows.iter().map(|r| r.actual_cost_nanos).sum();
        let user = fresh.get_user(self.user_id).await.unwrap();
        assert_eq!(
            user.balance_nanos,
            self.initial_balance - charged,
            "the balance on disk is not the initial one minus the records stored"
        );
    }

    /// On a fresh store: every acknowledged Admin write persisted; the notes are the
    /// last acknowledged ones or a later write that reported failure (a failed commit
    /// may be ambiguous, never a success that was lost).
    pub async fn check_admin(&self, fresh: &Store, rounds: &[&AdminRound]) {
        let users = fresh
            .list_users(
                None,
                Page {
                    after_id: 0,
                    limit: 1000,
                },
            )
            .await
            .unwrap()
            .items;
        let emails: BTreeSet<&str> = users.iter().map(|u| u.email.as_str()).collect();
        for email in rounds.iter().flat_map(|r| &r.created) {
            assert!(
                emails.contains(email.as_str()),
                "created user {email} is missing"
            );
        }
        let Some(round) = rounds.last() else {
            return;
        };
        let notes = fresh.get_user(self.user_id).await.unwrap().notes;
        let allowed: Vec<&String> = round
            .notes_acked
            .iter()
            .chain(&round.notes_failed_after)
            .collect();
        if !allowed.is_empty() {
            assert!(
                allowed.contains(&&notes),
                "notes on disk {notes:?}, acknowledged {:?}",
                round.notes_acked
            );
        }
    }
}
