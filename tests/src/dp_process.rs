//! A data plane as an OS process: the data plane's own `main.rs`, built by this crate as
//! `tollgate-data-plane-under-test` (a test passes
//! `env!("CARGO_BIN_EXE_tollgate-data-plane-under-test")`). For what only a process shows:
//! its memory, read from `/proc/<pid>/status`. Configured through its environment only
//! (cleared first, so the developer's `TOLLGATE_*` variables never reach it), on free
//! loopback ports, with mutual TLS to the control plane from the test PKI.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The usage spill file's name in the process's own temporary directory.
const SPILL_FILE: &str = "usage.jsonl";

/// How long the process may take to attach to its control plane.
const READY_WAIT: Duration = Duration::from_secs(30);

pub struct DataPlaneProcess {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

/// A loopback port that was free a moment ago.
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

impl DataPlaneProcess {
    /// Starts `exe` against the control plane at `control_plane_url` with the extra
    /// `TOLLGATE_*` variables in `env`, and waits until it is ready (attached).
    pub async fn start(exe: &str, control_plane_url: &str, env: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = tollgate_data_plane::Config::for_control_plane(control_plane_url);
        crate::cluster::with_test_client_tls(&mut config, dir.path());
        let proxy_addr = free_port();
        let admin_addr = free_port();
        let mut cmd = Command::new(exe);
        cmd.env_clear()
            .env("TOLLGATE_DP_LISTEN", proxy_addr.to_string())
            .env("TOLLGATE_DP_ADMIN_LISTEN", admin_addr.to_string())
            .env("TOLLGATE_CONTROL_PLANE_URL", control_plane_url)
            // The fake upstream is on 127.0.0.1.
            .env("TOLLGATE_ALLOW_PRIVATE_UPSTREAMS", "true")
            .env(
                "TOLLGATE_USAGE_SPILL_PATH",
                dir.path().join(SPILL_FILE).display().to_string(),
            )
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // The test PKI's files, written for an https:// URL (a plaintext fake control
        // plane needs TOLLGATE_ALLOW_PLAINTEXT_CONTROL_PLANE in `env` instead).
        let tls = [
            ("TOLLGATE_CONTROL_PLANE_CA", &config.control_plane_ca),
            ("TOLLGATE_DP_CLIENT_CERT", &config.client_cert),
            ("TOLLGATE_DP_CLIENT_KEY", &config.client_key),
        ];
        for (k, path) in tls {
            if let Some(p) = path {
                cmd.env(k, p);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let dp = Self {
            proxy_addr,
            admin_addr,
            child,
            dir,
        };
        crate::eventually("data-plane process ready", READY_WAIT, || async {
            dp.admin_status("/readyz").await == 200
        })
        .await;
        dp
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Status code of `GET <admin>/path`, or 0 when the port does not answer.
    pub async fn admin_status(&self, path: &str) -> u16 {
        match crate::http_client()
            .get(format!("http://{}{path}", self.admin_addr))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn terminate(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {}", self.pid());
    }

    /// Waits (up to `timeout`, else panics) for the process to exit; its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the data-plane process did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its usage spill file (`TOLLGATE_USAGE_SPILL_PATH`).
    pub fn spill_path(&self) -> std::path::PathBuf {
        self.dir.path().join(SPILL_FILE)
    }

    /// A `kB` line of `/proc/<pid>/status`, in bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()));
        kb * 1024
    }

    /// Peak resident memory so far (`VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        self.status_bytes("VmHWM")
    }

    /// Resident memory now (`VmRSS`).
    pub fn rss(&self) -> u64 {
        self.status_bytes("VmRSS")
    }
}

impl Drop for DataPlaneProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
