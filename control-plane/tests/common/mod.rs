//! Test databases: a fresh SQLite file or a fresh Postgres database per test, so that
//! runs never collide. Postgres comes from `TOLLGATE_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test creates its own database
//! named `tollgate_test_<uuid>` and drops it in `TestDb::cleanup`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use sqlx::Connection;
use tollgate_control_plane::crypto::SecretBox;
use tollgate_control_plane::storage::Store;

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    dir: Option<tempfile::TempDir>,
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
                    dir: Some(dir),
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
                let url = replace_db(&admin_url, &name);
                Self {
                    url,
                    backend,
                    dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// A store on this database with a fresh encryption key.
    pub async fn store(&self) -> Store {
        Store::connect(&self.url, secrets()).await.unwrap()
    }

    /// Drops the Postgres database (SQLite files go with the temp dir).
    pub async fn cleanup(self) {
        if let Some(name) = &self.pg_name
            && let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await
        {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
        drop(self.dir);
    }
}

pub fn secrets() -> SecretBox {
    SecretBox::from_base64(&SecretBox::generate_key_b64()).unwrap()
}

pub fn pg_admin_url() -> String {
    std::env::var("TOLLGATE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned())
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
