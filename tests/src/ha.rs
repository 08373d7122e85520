//! High availability kit: a real etcd (Debian's `etcd-server`, started on free loopback
//! ports in a temp dir), control-plane replicas as *processes* (so a test can SIGKILL the
//! leader) sharing one Postgres database, and a TCP relay that can black-hole a
//! connection (to cut a replica off from etcd).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::cluster::{ADMIN_TOKEN, channel, test_pki};

/// A port free right now on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd member on loopback, killed on drop.
pub struct Etcd {
    pub endpoint: String,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Etcd {
    /// Starts `etcd` (install with `apt-get install -y etcd-server`; `.ci/run` does) and
    /// waits until it answers.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--name", "default"])
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `etcd` ({e}): install it with `apt-get install -y etcd-server`")
            });
        let etcd = Self {
            endpoint,
            _dir: dir,
            child,
        };
        crate::eventually("etcd answers", Duration::from_secs(20), || async {
            crate::http_client()
                .get(format!("{}/health", etcd.endpoint))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        etcd
    }

    pub fn addr(&self) -> SocketAddr {
        self.endpoint.trim_start_matches("http://").parse().unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// What the replicas of one test share: the database, the encryption key, the TLS files
/// (the test PKI, so data planes trust every replica) and etcd's address.
pub struct ReplicaSet {
    /// The control-plane binary (a test passes
    /// `env!("CARGO_BIN_EXE_tollgate-control-plane-under-test")`).
    pub binary: PathBuf,
    pub database_url: String,
    pub etcd_endpoint: String,
    pub upstream_codex_url: String,
    encryption_key: String,
    tls_dir: PathBuf,
    _dir: tempfile::TempDir,
    /// Extra flags for every replica (e.g. short TTLs).
    pub flags: Vec<String>,
}

impl ReplicaSet {
    pub fn new(
        binary: &str,
        database_url: &str,
        etcd_endpoint: &str,
        upstream_codex_url: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        test_pki().write(&tls_dir).unwrap();
        Self {
            binary: binary.into(),
            database_url: database_url.to_owned(),
            etcd_endpoint: etcd_endpoint.to_owned(),
            upstream_codex_url: upstream_codex_url.to_owned(),
            encryption_key: tollgate_control_plane::crypto::SecretBox::generate_key_b64(),
            tls_dir,
            _dir: dir,
            flags: Vec::new(),
        }
    }

    /// Starts a replica process talking to etcd at `etcd` (default: the set's endpoint).
    pub fn start(&self, name: &str, etcd: Option<&str>) -> Replica {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        let paths = tollgate_control_plane::tls::dev::DevPaths::in_dir(&self.tls_dir);
        let log = data_dir.path().join("control-plane.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&self.binary)
            .env_clear()
            .env("RUST_LOG", "info")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--database-url", &self.database_url])
            .args(["--admin-token", ADMIN_TOKEN])
            .args(["--encryption-key", &self.encryption_key])
            .arg("--tls-cert")
            .arg(&paths.server_cert)
            .arg("--tls-key")
            .arg(&paths.server_key)
            .arg("--tls-client-ca")
            .arg(&paths.ca_cert)
            .args(["--allow-insecure-upstreams", "--allow-private-upstreams"])
            .args(["--codex-url", &self.upstream_codex_url])
            .args(["--etcd-endpoints", etcd.unwrap_or(&self.etcd_endpoint)])
            .args(&self.flags)
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Replica {
            name: name.to_owned(),
            addr,
            log,
            _data_dir: data_dir,
            child,
        }
    }
}

/// One control-plane process.
pub struct Replica {
    pub name: String,
    pub addr: SocketAddr,
    log: PathBuf,
    _data_dir: tempfile::TempDir,
    child: Child,
}

impl Replica {
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// gRPC health of the whole server: `Some(SERVING)` on the leader, `NOT_SERVING` on a
    /// standby, `None` when it does not answer.
    pub async fn health(&self) -> Option<ServingStatus> {
        let mut client =
            tonic_health::pb::health_client::HealthClient::new(channel(&self.url(), None));
        let call = client.check(tonic_health::pb::HealthCheckRequest::default());
        let r = tokio::time::timeout(Duration::from_millis(500), call)
            .await
            .ok()?
            .ok()?;
        ServingStatus::try_from(r.into_inner().status).ok()
    }

    pub async fn is_serving(&self) -> bool {
        self.health().await == Some(ServingStatus::Serving)
    }

    /// SIGKILL: no resignation, no drain; its etcd lease must expire.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM: the graceful stop (a leader resigns at once).
    pub async fn terminate(&mut self) {
        let pid = self.child.id().expect("still running").to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The timestamp (first field, RFC 3339 UTC: comparable as text) of the first log
    /// line containing `needle`.
    pub fn logged_at(&self, needle: &str) -> Option<String> {
        let log = self.log();
        let line = log.lines().find(|l| l.contains(needle))?;
        line.split_whitespace().next().map(str::to_owned)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// The one replica serving (the leader), waiting up to `within`.
pub async fn leader_of(replicas: &[Replica], within: Duration) -> usize {
    crate::eventually_some("a leader serving", within, || async {
        for (i, r) in replicas.iter().enumerate() {
            if r.is_serving().await {
                return Some(i);
            }
        }
        None
    })
    .await
}

/// A TCP relay on 127.0.0.1:0 to `target` that can be blocked: while blocked, nothing
/// crosses it (bytes are held, new connections wait), like a network partition in which
/// packets are dropped rather than refused.
pub struct TcpRelay {
    pub addr: SocketAddr,
    blocked: Arc<watch::Sender<bool>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl TcpRelay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (blocked, _) = watch::channel(false);
        let blocked = Arc::new(blocked);
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (b, st, t) = (blocked.clone(), stop.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let (down, _) = tokio::select! {
                    () = st.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (b, st) = (b.clone(), st.clone());
                t.spawn(async move {
                    let mut gate = b.subscribe();
                    if gate.wait_for(|blocked| !blocked).await.is_err() {
                        return;
                    }
                    let Ok(up) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::select! {
                        () = st.cancelled() => {}
                        () = pipe(dr, uw, b.subscribe()) => {}
                        () = pipe(ur, dw, b.subscribe()) => {}
                    }
                });
            }
        });
        Self {
            addr,
            blocked,
            stop,
            tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn block(&self) {
        self.blocked.send_replace(true);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.cancel();
        self.tasks.close();
    }
}

/// Copies bytes one way, holding them while the relay is blocked.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut blocked: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if blocked.wait_for(|b| !b).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
