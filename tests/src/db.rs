//! Test databases: a fresh SQLite file or a fresh Postgres database per test, so that
//! runs never collide, and [`on_both_backends!`](crate::on_both_backends) to run one test
//! body on each.
//!
//! Postgres comes from `TOLLGATE_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test gets its own database named
//! `tollgate_test_<uuid>`, dropped when the [`TestDb`] is dropped — also when the test
//! panics half way, so a failing test leaks nothing.

use sqlx::Connection;
use tollgate_control_plane::crypto::SecretBox;
use tollgate_control_plane::storage::Store;

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test's database; dropping it deletes it (the SQLite file with its temp dir, the
/// Postgres database with `DROP DATABASE … WITH (FORCE)`, which also ends connections a
/// pool of the test still holds).
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Self {
                    url,
                    backend,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let admin_url = pg_admin_url();
                let name = format!("tollgate_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect(
                    "Postgres must be reachable at TOLLGATE_TEST_PG_URL (default 127.0.0.1:5432)",
                );
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let _ = conn.close().await;
                let url = replace_db(&admin_url, &name);
                Self {
                    url,
                    backend,
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// The Postgres database name (`None` on SQLite).
    pub fn pg_name(&self) -> Option<&str> {
        self.pg_name.as_deref()
    }

    /// A store on this database with a fresh encryption key.
    pub async fn store(&self) -> Store {
        Store::connect(&self.url, secrets()).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // `Drop` is synchronous and may run inside (or outside) a tokio runtime, which
        // cannot be blocked on from within: drop on a thread of its own with a runtime of
        // its own, and wait for it so the database is gone when the test ends.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

pub fn secrets() -> SecretBox {
    SecretBox::from_base64(&SecretBox::generate_key_b64()).unwrap()
}

/// The server to create test databases on (`TOLLGATE_TEST_PG_URL`, the one variable the
/// tests read on purpose).
pub fn pg_admin_url() -> String {
    std::env::var("TOLLGATE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned())
}

/// Whether a database of this name exists on the test server.
pub async fn pg_database_exists(name: &str) -> bool {
    let mut conn = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    n > 0
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Makes each listed test body run on both backends, as quickwit's
/// `metastore_test_suite!` does for its metastores.
///
/// `on_both_backends!(a, b)` turns `async fn a(backend: Backend)` into the tests
/// `a::sqlite` and `a::postgres`. With a runner, `on_both_backends!(crate::run => a, b)`
/// generates `crate::run(Backend::Sqlite, super::a).await` (and Postgres), for suites
/// whose cases take a prepared fixture (a store, say) instead of the backend.
#[macro_export]
macro_rules! on_both_backends {
    ($runner:path => $($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                $runner($crate::db::Backend::Sqlite, super::$name).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                $runner($crate::db::Backend::Postgres, super::$name).await
            }
        }
    )+};
    ($($name:ident),+ $(,)?) => {
        $crate::on_both_backends!($crate::db::run_with_backend => $($name),+);
    };
}

/// The plain runner of [`on_both_backends!`](crate::on_both_backends): the case gets the
/// backend and sets up what it needs.
pub async fn run_with_backend(backend: Backend, case: impl AsyncFnOnce(Backend)) {
    case(backend).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_postgres_database_goes_with_its_guard_even_while_in_use() {
        let db = TestDb::new(Backend::Postgres).await;
        let name = db.pg_name().unwrap().to_owned();
        assert!(pg_database_exists(&name).await);
        // A connection still open (as a pool of a test that failed would hold).
        let conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        drop(db);
        assert!(!pg_database_exists(&name).await, "{name} leaked");
        drop(conn);
    }

    #[test]
    fn a_test_that_panics_leaks_no_database() {
        let (tx, rx) = std::sync::mpsc::channel();
        let failed = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let db = TestDb::new(Backend::Postgres).await;
                tx.send(db.pg_name().unwrap().to_owned()).unwrap();
                panic!("the test fails half way");
            })
        })
        .join();
        assert!(failed.is_err());
        let name = rx.recv().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(!rt.block_on(pg_database_exists(&name)), "{name} leaked");
    }

    #[tokio::test]
    async fn a_sqlite_file_goes_with_its_guard() {
        let db = TestDb::new(Backend::Sqlite).await;
        db.store().await.close().await;
        let path = db.url.trim_start_matches("sqlite://").to_owned();
        assert!(std::path::Path::new(&path).exists());
        drop(db);
        assert!(!std::path::Path::new(&path).exists());
    }
}
