//! The Admin API tests' harness: a control plane from the test kit on a fresh database,
//! an Admin API client that sends the admin token, and direct database access (sqlx) so
//! tests can look at rows the way an attacker with a database dump would, and write rows
//! the way billing would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use sqlx::any::{AnyPoolOptions, AnyRow, install_default_drivers};
use sqlx::{AnyPool, Column, Row};
use tollgate_control_plane::Config;
use tollgate_control_plane::storage::Store;
use tollgate_tests::Backend;
use tollgate_tests::cluster::ControlPlane;
use tonic::{Code, Status};

pub use tollgate_tests::cluster::ADMIN_TOKEN as TOKEN;

pub type Client = tollgate_tests::cluster::Admin;

/// Rows of every table, in a stable order, for "nothing was written" checks.
pub type Snapshot = BTreeMap<&'static str, Vec<DbRow>>;
/// One row: column name → value.
pub type DbRow = BTreeMap<String, Value>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl Value {
    pub fn text(&self) -> &str {
        match self {
            Value::Text(s) => s,
            other => panic!("not text: {other:?}"),
        }
    }
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Null => None,
            other => panic!("not an integer: {other:?}"),
        }
    }
    fn contains(&self, needle: &str) -> bool {
        match self {
            Value::Text(s) => s.contains(needle),
            Value::Int(i) => i.to_string().contains(needle),
            Value::Null => false,
        }
    }
}

/// Every table of the schema with the ORDER BY that makes its snapshot stable.
pub const TABLES: &[(&str, &str)] = &[
    ("users", "id"),
    ("balance_ledger", "id"),
    ("groups", "id"),
    ("api_keys", "id"),
    ("accounts", "id"),
    ("account_groups", "account_id, group_id"),
    ("subscriptions", "id"),
    ("prices", "model"),
    ("usage_logs", "id"),
];

pub struct Harness {
    pub backend: Backend,
    /// Direct database access, bypassing the control plane.
    pub pool: AnyPool,
    /// A store on the same database with the control plane's encryption key, to check
    /// what was stored (decrypted) and to seed rows the Admin API does not write.
    pub store: Store,
    cp: ControlPlane,
}

impl Harness {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts with a configuration adjusted by `configure` (upstream policy, prefix, …).
    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        let cp = ControlPlane::on(backend, configure).await;
        // Only now: the control plane has migrated the database.
        install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&cp.database_url())
            .await
            .unwrap();
        let store = cp.store().await;
        Self {
            backend,
            pool,
            store,
            cp,
        }
    }

    /// A client that sends the right admin token.
    pub fn client(&self) -> Client {
        self.cp.admin()
    }

    /// A client that sends `authorization: <header>` (or no header at all).
    pub fn client_with(&self, header: Option<&str>) -> Client {
        self.cp.admin_with(header)
    }

    pub async fn stop(self) {
        self.store.close().await;
        self.pool.close().await;
        self.cp.stop().await;
    }

    /// Every row of every table.
    pub async fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot::new();
        for (table, order) in TABLES {
            out.insert(*table, self.rows(table, order).await);
        }
        out
    }

    pub async fn rows(&self, table: &str, order: &str) -> Vec<DbRow> {
        let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .fetch_all(&self.pool)
            .await
            .unwrap();
        rows.iter().map(decode_row).collect()
    }

    /// The row of `table` with this id (soft-deleted rows included).
    pub async fn row(&self, table: &str, id: i64) -> DbRow {
        let row = sqlx::query(&format!("SELECT * FROM {table} WHERE id = $1"))
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        decode_row(&row)
    }

    /// Runs a statement directly (as billing or the health rules would).
    pub async fn exec(&self, sql: &str, args: &[i64]) {
        let mut q = sqlx::query(sql);
        for a in args {
            q = q.bind(*a);
        }
        q.execute(&self.pool).await.unwrap();
    }

    /// `(table, column)` of every stored value containing `needle`.
    pub async fn where_stored(&self, needle: &str) -> Vec<(String, String)> {
        let snap = self.snapshot().await;
        let mut hits = Vec::new();
        for (table, rows) in &snap {
            for row in rows {
                for (col, v) in row {
                    if v.contains(needle) {
                        hits.push(((*table).to_owned(), col.clone()));
                    }
                }
            }
        }
        hits
    }
}

fn decode_row(row: &AnyRow) -> DbRow {
    let mut out = DbRow::new();
    for (i, col) in row.columns().iter().enumerate() {
        let v = if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
            v.map_or(Value::Null, Value::Int)
        } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
            v.map_or(Value::Null, Value::Text)
        } else {
            panic!("column {} has a type the test cannot read", col.name());
        };
        out.insert(col.name().to_owned(), v);
    }
    out
}

/// Asserts `result` is the error `code` and its message names `needle`.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    code: Code,
    needle: &str,
) -> Status {
    let status = match result {
        Ok(r) => panic!(
            "expected {code:?} mentioning {needle:?}, got Ok({:?})",
            r.get_ref()
        ),
        Err(s) => s,
    };
    assert_eq!(status.code(), code, "{needle}: {status:?}");
    assert!(
        status.message().contains(needle),
        "message {:?} should name {needle:?}",
        status.message()
    );
    status
}
