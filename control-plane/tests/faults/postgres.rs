//! A Postgres cluster of one test's own (never the machine's shared one): `initdb` and
//! `pg_ctl` from `/usr/lib/postgresql/*/bin`, run as the `postgres` OS user (Postgres
//! refuses root) in a temp dir it owns, on a free loopback port. It can be stopped and
//! started again; it is stopped and deleted on drop.

use std::path::PathBuf;
use std::process::Command;

pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgCluster {
    /// Creates and starts a cluster, or prints why it cannot and returns `None`.
    pub fn start() -> Option<Self> {
        let Some(bin) = pg_bin() else {
            println!(
                "SKIPPED: no /usr/lib/postgresql/*/bin/pg_ctl; install Postgres to include this test"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let owned = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        if !owned.is_ok_and(|s| s.success()) {
            println!("SKIPPED: cannot give a temp dir to the postgres user (needs root)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self { bin, dir, port };
        let data = cluster.data_dir();
        let init = cluster.as_postgres(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        assert!(init, "initdb failed");
        cluster.up();
        Some(cluster)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let started = self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
        assert!(started, "pg_ctl start failed; see {log}");
    }

    /// Stops the server (fast: open connections are ended) and waits until it is down.
    pub fn down(&self) {
        let stopped = self.as_postgres(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "fast", "-w", "stop"],
        );
        assert!(stopped, "pg_ctl stop failed");
    }

    /// Makes every transaction read-only (`default_transaction_read_only`, reloaded into
    /// open sessions), or writable again.
    pub fn set_read_only(&self, read_only: bool) {
        let set = if read_only {
            "ALTER SYSTEM SET default_transaction_read_only = on"
        } else {
            "ALTER SYSTEM RESET default_transaction_read_only"
        };
        for sql in [set, "SELECT pg_reload_conf()"] {
            let port = self.port.to_string();
            let ok = self.as_postgres(
                "psql",
                &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-c", sql],
            );
            assert!(ok, "psql {sql} failed");
        }
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> bool {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.as_postgres(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
        );
    }
}

/// The newest installed Postgres' bin dir.
fn pg_bin() -> Option<PathBuf> {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("pg_ctl").exists())
        .collect();
    bins.sort();
    bins.pop()
}
