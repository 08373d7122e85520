//! Soak (not in CI: `#[ignore]`; run by `scripts/soak.sh`, report in `docs/soak.md`).
//!
//! `SOAK_MINUTES` (default 30) of mixed load — streaming and non-streaming, from
//! `SOAK_WORKERS` clients (default 8) — through two data-plane *processes* (the
//! `tollgate-data-plane` binary at `SOAK_DATA_PLANE_BIN`), which are SIGKILLed and
//! restarted at random (every 20–60 s), and one control-plane restart half-way. At the
//! end, after the grace period:
//! - usage records = requests the upstream received (each admitted exactly once);
//! - Σ tokens of the real records = Σ tokens the fake upstream billed for them, and every
//!   other record is a flagged estimate of a killed process's request;
//! - no slot held: as many concurrent requests as the user's and the account's limit
//!   are all admitted at once;
//! - memory flat: RSS of the data-plane processes sampled every 10 s, the last quarter's
//!   mean within 1.5× the second quarter's (after warm-up); this process's RSS (control
//!   plane, fake upstream — which keeps every request it received — and clients) is
//!   reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::cluster::test_pki;
use tollgate_tests::eventually;
use tollgate_tests::fake_upstream::{Gate, Script, Usage};
use tollgate_tests::fixture::{Gateway, Options};

const TOKENS_IN: u64 = 100;
const TOKENS_OUT: u64 = 50;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small xorshift generator (seeded from the clock; the seed is printed).
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("soak: seed {seed}");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A data-plane process; `kill` is SIGKILL.
struct DpProcess {
    child: Child,
    proxy: String,
    admin: String,
}

impl DpProcess {
    fn spawn(
        bin: &PathBuf,
        cp_url: &str,
        dir: &std::path::Path,
        i: usize,
        generation: u32,
    ) -> Self {
        let pki = test_pki();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca = write("ca.crt", &pki.ca_cert);
        let cert = write("tls.crt", &pki.data_plane_cert);
        let key = write("tls.key", &pki.data_plane_key);
        let (proxy_port, admin_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.join(format!("dp{i}-{generation}.log"))).unwrap();
        let child = Command::new(bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("TOLLGATE_DP_LISTEN", format!("127.0.0.1:{proxy_port}"))
            .env(
                "TOLLGATE_DP_ADMIN_LISTEN",
                format!("127.0.0.1:{admin_port}"),
            )
            .env("TOLLGATE_CONTROL_PLANE_URL", cp_url)
            .env("TOLLGATE_CONTROL_PLANE_CA", ca)
            .env("TOLLGATE_DP_CLIENT_CERT", cert)
            .env("TOLLGATE_DP_CLIENT_KEY", key)
            .env("TOLLGATE_ALLOW_PRIVATE_UPSTREAMS", "true")
            .env(
                "TOLLGATE_USAGE_SPILL_PATH",
                dir.join(format!("dp{i}-spill.jsonl")),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("data-plane binary (SOAK_DATA_PLANE_BIN) starts");
        Self {
            child,
            proxy: format!("http://127.0.0.1:{proxy_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
        }
    }

    async fn ready(&self) {
        let http = tollgate_tests::http_client();
        eventually("data plane ready", Duration::from_secs(30), || async {
            http.get(format!("{}/readyz", self.admin))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for DpProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    streams: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: minutes long; run by scripts/soak.sh"]
async fn soak() {
    let minutes: f64 = env_or("SOAK_MINUTES", 30.0);
    let workers: usize = env_or("SOAK_WORKERS", 8);
    let bin = PathBuf::from(
        std::env::var("SOAK_DATA_PLANE_BIN")
            .unwrap_or_else(|_| "../target/debug/tollgate-data-plane".into()),
    );
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let concurrency = i32::try_from(workers).unwrap();

    let gw = Gateway::start_with(Options {
        data_planes: 0,
        control_plane: Box::new(|c| c.user_wait_timeout_ms = 60_000),
        ..Default::default()
    })
    .await;
    let user = gw.user(concurrency, 1_000_000).await;
    let group = gw.group("1").await;
    gw.api_key_account("soak-a", group, 10, concurrency).await;
    let (key_id, key) = gw.key(user, Some(group)).await;
    let usage = Usage::new(TOKENS_IN, 0, TOKENS_OUT, 0);
    gw.up.set_default(
        Script::success()
            .usage(usage)
            .event_delay(Duration::from_millis(100)),
    );

    let dir = tempfile::tempdir().unwrap();
    let cp_url = gw.cp.url();
    let mut dps: Vec<DpProcess> = (0..2)
        .map(|i| DpProcess::spawn(&bin, &cp_url, dir.path(), i, 0))
        .collect();
    for dp in &dps {
        dp.ready().await;
    }
    let urls = Arc::new(RwLock::new(
        dps.iter().map(|d| d.proxy.clone()).collect::<Vec<_>>(),
    ));
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let mut clients = Vec::new();
    for w in 0..workers {
        let (urls, counts, stop, key) = (urls.clone(), counts.clone(), stop.clone(), key.clone());
        let http = tollgate_tests::http_client();
        #[allow(clippy::disallowed_methods)] // joined below
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let stream = (n + w as u64).is_multiple_of(2);
                let url = {
                    let urls = urls.read().unwrap();
                    urls[(n as usize + w) % urls.len()].clone()
                };
                let body =
                    json!({"model": "gpt-5.1", "input": format!("soak {w} {n}"), "stream": stream});
                let ok = match http
                    .post(format!("{url}/v1/responses"))
                    .bearer_auth(&key)
                    .json(&body)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                };
                let c = if ok { &counts.ok } else { &counts.failed };
                c.fetch_add(1, Ordering::Relaxed);
                if stream {
                    counts.streams.fetch_add(1, Ordering::Relaxed);
                }
                if !ok {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    let mut rss_self = Vec::new();
    let mut rss_dp: Vec<Vec<u64>> = vec![Vec::new(); 2];
    let mut kills = 0u32;
    let mut cp_restarted = false;
    let mut dice = Dice::new();
    let mut next_kill = started + Duration::from_secs(20 + dice.below(40));
    let mut next_sample = started;
    let Gateway {
        up,
        cp,
        dps: _,
        admin,
        http,
    } = gw;
    let mut cp = Some(cp);
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = Instant::now();
        if now >= next_sample {
            rss_self.push(rss_kib(std::process::id()).unwrap_or(0));
            for (i, dp) in dps.iter().enumerate() {
                rss_dp[i].push(rss_kib(dp.child.id()).unwrap_or(0));
            }
            next_sample = now + Duration::from_secs(10);
        }
        if now >= next_kill {
            let i = dice.below(2) as usize;
            kills += 1;
            eprintln!("soak: {:?} SIGKILL data plane {i}", started.elapsed());
            dps[i].kill();
            dps[i] = DpProcess::spawn(&bin, &cp_url, dir.path(), i, kills);
            dps[i].ready().await;
            urls.write().unwrap()[i] = dps[i].proxy.clone();
            rss_dp[i].clear(); // a new process: its memory starts over
            next_kill = Instant::now() + Duration::from_secs(20 + dice.below(40));
        }
        if !cp_restarted && started.elapsed() >= duration / 2 {
            eprintln!("soak: {:?} restarting the control plane", started.elapsed());
            cp = Some(cp.take().unwrap().restart().await);
            cp_restarted = true;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let gw = Gateway {
        up,
        cp: cp.take().unwrap(),
        dps: Vec::new(),
        admin,
        http,
    };

    // Every admitted request ends in exactly one record: wait past the grace period for
    // the killed processes' estimates and the live ones' queues.
    let upstream = gw.up.count() as i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let recs = all_records(&gw, key_id).await;
        if recs.len() as i64 >= upstream || Instant::now() >= deadline {
            break recs;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let real: Vec<_> = records.iter().filter(|r| !r.recovered).collect();
    let recovered = records.len() - real.len();
    let real_tokens: i64 = real.iter().map(|r| r.input_tokens + r.output_tokens).sum();
    let billed_tokens = real.len() as i64 * (TOKENS_IN + TOKENS_OUT) as i64;

    // No slot held: `concurrency` requests held open at once are all admitted.
    let gate = Gate::new();
    gw.up.push_n(Script::success().hold(&gate), workers);
    let before = gw.up.count();
    let mut probes = Vec::new();
    for _ in 0..workers {
        let (http, url, key) = (gw.http.clone(), dps[0].proxy.clone(), key.clone());
        #[allow(clippy::disallowed_methods)] // joined below
        probes.push(tokio::spawn(async move {
            http.post(format!("{url}/v1/responses"))
                .bearer_auth(key)
                .json(&json!({"model": "gpt-5.1", "input": "probe"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let slots_free = tokio::time::timeout(Duration::from_secs(20), async {
        while gw.up.count() < before + workers {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok();
    gate.open();
    for p in probes {
        let _ = p.await;
    }

    let flat = |s: &[u64]| -> (u64, u64, bool) {
        if s.len() < 8 {
            return (
                s.first().copied().unwrap_or(0),
                s.last().copied().unwrap_or(0),
                true,
            );
        }
        let q = s.len() / 4;
        let mean = |v: &[u64]| v.iter().sum::<u64>() / v.len() as u64;
        let (early, late) = (mean(&s[q..2 * q]), mean(&s[3 * q..]));
        (early, late, late * 2 <= early * 3)
    };
    let (self_early, self_late, self_flat) = flat(&rss_self);
    let report = format!(
        "duration {:.1} min, workers {workers}, data-plane kills {kills}, control-plane restart {cp_restarted}\n\
         client requests: {} ok, {} failed ({} streaming)\n\
         upstream requests {upstream}, usage records {} ({} real, {recovered} recovered estimates)\n\
         tokens: real records {real_tokens}, billed by the fake upstream for them {billed_tokens}\n\
         slots all free at the end: {slots_free}\n\
         RSS soak process (control plane + upstream + clients) KiB: 2nd quarter mean {self_early}, last quarter mean {self_late}, flat {self_flat}, samples {:?}\n\
         RSS data planes KiB (current processes): {:?}",
        started.elapsed().as_secs_f64() / 60.0,
        counts.ok.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
        counts.streams.load(Ordering::Relaxed),
        records.len(),
        real.len(),
        rss_self,
        rss_dp,
    );
    eprintln!("SOAK REPORT\n{report}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        std::fs::write(path, &report).unwrap();
    }
    assert_eq!(
        records.len() as i64,
        upstream,
        "one record per admitted request"
    );
    assert_eq!(real_tokens, billed_tokens);
    assert!(records.iter().filter(|r| r.recovered).all(|r| r.estimated));
    assert!(slots_free, "a slot is still held");
    // This process also holds the fake upstream's log of every request it received, so
    // its RSS grows with the request count; reported, not asserted.
    let _ = self_flat;
    for s in &rss_dp {
        assert!(flat(s).2, "a data plane's memory grew: {s:?}");
    }
    drop(dps);
}

async fn all_records(gw: &Gateway, key_id: i64) -> Vec<admin::UsageRecord> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let resp = gw
            .admin
            .clone()
            .query_usage(admin::QueryUsageRequest {
                filter: Some(admin::UsageFilter {
                    key_id,
                    ..Default::default()
                }),
                page: Some(admin::PageRequest {
                    limit: 1000,
                    page_token: token,
                }),
                newest_first: false,
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(resp.records);
        if resp.next_page_token.is_empty() {
            return out;
        }
        token = resp.next_page_token;
    }
}
