//! The planes' binaries as an operator runs them: a listen address already in use ends
//! the process with one line on stderr and a non-zero status (no backtrace, even with
//! `RUST_BACKTRACE=1`); the control plane's data dir is 0700 and every file it creates
//! there 0600 (the SQLite database with its `-wal`/`-shm`, generated secrets, the
//! development PKI); after SIGTERM both processes exit promptly once they log "stopped".

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tollgate_tests::cluster::test_pki;
use tollgate_tests::fixture::Gateway;

const CP: &str = env!("CARGO_BIN_EXE_tollgate-control-plane-under-test");
const DP: &str = env!("CARGO_BIN_EXE_tollgate-data-plane-under-test");

/// A free loopback address (bound, then released).
fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Runs a binary to its end with a clean environment (no `TOLLGATE_*` of the developer)
/// and `RUST_BACKTRACE=1`, which made anyhow print a stack before.
fn run_to_end(bin: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin)
        .args(args)
        .env_clear()
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_port_in_use_is_one_line_on_stderr_and_a_failure_status() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let cases = [
        (
            CP,
            vec!["--listen", &addr, "--data-dir", data_dir],
            "--listen / TOLLGATE_LISTEN",
        ),
        (
            DP,
            vec![
                "--listen",
                &addr,
                "--control-plane-url",
                "https://127.0.0.1:1",
            ],
            "--listen / TOLLGATE_DP_LISTEN",
        ),
    ];
    for (bin, args, setting) in cases {
        let (code, stderr) = run_to_end(bin, &args);
        assert_ne!(code, 0, "{bin}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{bin}: not one line:\n{stderr}");
        let line = lines[0];
        assert!(line.contains(&addr), "{line}");
        assert!(line.contains(setting), "names the setting: {line}");
        assert!(line.contains("in use"), "{line}");
        assert!(
            !line.contains("backtrace") && !line.contains("Os {"),
            "{line}"
        );
    }
}

/// A process with its stdout+stderr lines forwarded to a channel, killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(bin: &str, args: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .args(args)
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Self { child, lines }
    }

    /// Waits for a log line containing `text`.
    fn wait_for(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no log line with {text:?} within {within:?}");
    }

    /// SIGTERM; returns how long the process took to log "stopped", and to exit after.
    fn terminate(mut self) -> (Duration, Duration) {
        let pid = self.child.id().to_string();
        let signalled = Instant::now();
        let kill = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(kill.unwrap().success());
        self.wait_for(" stopped", Duration::from_secs(30));
        let stopped = Instant::now();
        let status = self.child.wait().unwrap();
        let after = stopped.elapsed();
        assert!(status.success(), "{status}");
        (stopped - signalled, after)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The control plane's files, and both planes' exit after SIGTERM with traffic served:
/// the data plane binary proxies requests from a control plane of the test kit, then
/// the control plane binary serves a data plane binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_files_and_prompt_exit_after_sigterm() {
    let pki_dir = tempfile::tempdir().unwrap();
    test_pki().write(pki_dir.path()).unwrap();
    let pki = |name: &str| pki_dir.path().join(name).display().to_string();
    let (ca, dp_cert, dp_key) = (pki("ca.crt"), pki("data-plane.crt"), pki("data-plane.key"));

    // The data plane binary on the kit's control plane, serving requests.
    let gw = Gateway::start(0).await;
    let basic = gw.basic().await;
    let dp_listen = free_addr();
    let dp_args = |cp_url: &str, listen: &str| {
        vec![
            "--listen".to_owned(),
            listen.to_owned(),
            "--admin-listen".to_owned(),
            free_addr(),
            "--control-plane-url".to_owned(),
            cp_url.to_owned(),
            "--control-plane-ca".to_owned(),
            ca.clone(),
            "--client-cert".to_owned(),
            dp_cert.clone(),
            "--client-key".to_owned(),
            dp_key.clone(),
            "--allow-private-upstreams".to_owned(),
        ]
    };
    let args = dp_args(&gw.cp.url(), &dp_listen);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dp = Running::start(DP, &args);
    dp.wait_for("attached to control plane", Duration::from_secs(20));
    for _ in 0..5 {
        let r = gw
            .http
            .post(format!("http://{dp_listen}/v1/responses"))
            .bearer_auth(&basic.key)
            .json(&serde_json::json!({"model": "gpt-5", "input": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let dp_exit = dp.terminate();

    // The control plane binary in a data dir it creates, with a data plane attached.
    let home = tempfile::tempdir().unwrap();
    let data_dir = home.path().join("tollgate");
    let cp_listen = free_addr();
    let data_dir_arg = data_dir.display().to_string();
    let cp = Running::start(
        CP,
        &[
            "--listen",
            &cp_listen,
            "--data-dir",
            &data_dir_arg,
            "--tls-reload-interval-ms",
            "60000",
        ],
    );
    cp.wait_for("control plane serving", Duration::from_secs(30));
    let generated_ca = data_dir.join("tls/ca.crt").display().to_string();
    let dp_listen = free_addr();
    let mut args = dp_args(&format!("https://{cp_listen}"), &dp_listen);
    let tls = |name: &str| data_dir.join("tls").join(name).display().to_string();
    args[7] = generated_ca;
    args[9] = tls("data-plane.crt");
    args[11] = tls("data-plane.key");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dp2 = Running::start(DP, &args);
    dp2.wait_for("attached to control plane", Duration::from_secs(20));

    assert_eq!(mode(&data_dir), 0o700, "data dir");
    let mut files = Vec::new();
    for dir in [data_dir.clone(), data_dir.join("tls")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                files.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    for expected in [
        "tollgate.db",
        "tollgate.db-wal",
        "tollgate.db-shm",
        "admin-token",
        "encryption-key",
        "server.key",
        "data-plane.key",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} not among {files:?}"
        );
    }

    let cp_exit = cp.terminate();
    drop(dp2);
    gw.cp.stop().await;
    println!(
        "SIGTERM → stopped, stopped → exit: data plane {dp_exit:?}, control plane {cp_exit:?}"
    );
    // A regression guard, not a speed test: a process that lingers for seconds after it
    // stopped (a blocking pool waiting, a task not stopped) fails here.
    for (plane, (_, took)) in [("data plane", dp_exit), ("control plane", cp_exit)] {
        assert!(
            took < Duration::from_secs(1),
            "{plane} exited {took:?} after logging stopped"
        );
    }
}
