//! A value built from files that are replaced in place (cert-manager rotates a
//! certificate by rewriting the mounted secret). The files are re-read on an interval and
//! the value rebuilt only when their contents changed; readers take the current value per
//! new connection, so connections already open keep theirs and are never dropped.
//!
//! Contents rather than mtimes are compared: a rewrite within the same second, or a
//! Kubernetes symlink swap, changes the bytes even when an mtime check would miss it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::TlsError;

type Build<T> = dyn Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + Sync;

/// The current `T` built from `files`; cheap to clone (shared).
pub struct Reloading<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    what: String,
    files: Vec<PathBuf>,
    build: Box<Build<T>>,
    current: RwLock<Arc<T>>,
    contents: Mutex<Vec<Vec<u8>>>,
}

impl<T> Clone for Reloading<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Reads the files and builds the first value; fails (naming the file) if a file is
    /// missing or the build fails, so a bad configuration stops the start.
    pub fn load(
        what: impl Into<String>,
        files: Vec<PathBuf>,
        build: impl Fn(&[Vec<u8>]) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let contents = read_all(&files)?;
        let value = build(&contents)?;
        Ok(Self {
            inner: Arc::new(Inner {
                what: what.into(),
                files,
                build: Box::new(build),
                current: RwLock::new(Arc::new(value)),
                contents: Mutex::new(contents),
            }),
        })
    }

    /// A value that never changes (no files): for callers that build it in memory.
    pub fn fixed(value: T) -> Self {
        Self {
            inner: Arc::new(Inner {
                what: String::new(),
                files: Vec::new(),
                build: Box::new(|_| Err(TlsError::new("a fixed value is never rebuilt"))),
                current: RwLock::new(Arc::new(value)),
                contents: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The value new connections use.
    pub fn current(&self) -> Arc<T> {
        self.inner
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the files; rebuilds and swaps when they changed. A half-rotated set (a
    /// new certificate with the old key) fails to build: the old value stays and the next
    /// check tries again. Returns whether the value was replaced.
    pub fn check(&self) -> bool {
        let contents = match read_all(&self.inner.files) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(what = %self.inner.what, error = %e, "TLS files unreadable; keeping the current ones");
                return false;
            }
        };
        let mut last = self
            .inner
            .contents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == contents {
            return false;
        }
        match (self.inner.build)(&contents) {
            Ok(value) => {
                *self
                    .inner
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(value);
                *last = contents;
                tracing::info!(what = %self.inner.what, "TLS certificates reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(what = %self.inner.what, error = %e, "changed TLS files do not load; keeping the current ones");
                false
            }
        }
    }

    /// Checks every `interval` until `stop` (spawn it on the caller's task tracker).
    pub async fn watch(self, interval: Duration, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => { self.check(); }
            }
        }
    }
}

fn read_all(files: &[PathBuf]) -> Result<Vec<Vec<u8>>, TlsError> {
    files
        .iter()
        .map(|p| {
            std::fs::read(p).map_err(|e| TlsError(format!("cannot read {}: {e}", p.display())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rebuilds_only_on_changed_contents_and_keeps_the_old_value_on_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v");
        std::fs::write(&f, "1").unwrap();
        let r = Reloading::load("test", vec![f.clone()], |c| {
            std::str::from_utf8(&c[0])
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| TlsError::new("not a number"))
        })
        .unwrap();
        assert_eq!(*r.current(), 1);
        assert!(!r.check(), "unchanged file: no rebuild");
        std::fs::write(&f, "x").unwrap();
        assert!(!r.check());
        assert_eq!(*r.current(), 1, "a bad file keeps the old value");
        std::fs::write(&f, "2").unwrap();
        assert!(r.check());
        assert_eq!(*r.current(), 2);
        std::fs::remove_file(&f).unwrap();
        assert!(!r.check());
        assert_eq!(*r.current(), 2, "a missing file keeps the old value");
    }
}
