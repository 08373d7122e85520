//! High availability, end to end: etcd, three control-plane processes on one Postgres
//! database, two data planes, steady streaming and non-streaming load. SIGKILL the leader:
//! every in-flight stream completes, new requests succeed after the failover (nothing
//! beyond the data plane's failover wait), no user or account ever exceeds its
//! concurrency limit (the fake upstream counts per credential), every usage record is
//! charged exactly once, and the data planes stay ready. A leader cut off from etcd stops
//! serving before another leader starts; a SIGTERM'd leader resigns at once, and a
//! standby refuses calls naming the leader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_shared::proto::admin::v1 as admin;
use tollgate_tests::cluster::{DataPlane, admin_client};
use tollgate_tests::fake_upstream::{FakeUpstream, Script};
use tollgate_tests::ha::{Etcd, Replica, ReplicaSet, TcpRelay, leader_of};
use tollgate_tests::{Backend, TestDb, eventually};

const USER_LIMIT: i32 = 3;
const ACCOUNT_LIMIT: i32 = 2;
const CHUNKS: usize = 8;
const BIN: &str = env!("CARGO_BIN_EXE_tollgate-control-plane-under-test");

/// Short TTLs so the test is quick: a 2 s leader lease (the shortest etcd grants), a
/// 2.5 s reconcile window (data planes retry at most every 1.25 s), fast heartbeats.
fn fast_flags() -> Vec<String> {
    [
        "--leader-lease-ttl-s=2",
        "--reconcile-window-ms=2500",
        "--heartbeat-interval-ms=200",
        "--lease-grace-ms=5000",
    ]
    .map(String::from)
    .to_vec()
}

const BALANCE_NANOS: i64 = 1_000 * 1_000_000_000;

struct Seeded {
    user: i64,
    key: String,
    key_id: i64,
}

/// A user limited to `user_limit` whose group has one account per credential in `creds`,
/// each limited to `account_limit`.
async fn seed(
    leader_url: &str,
    up: &FakeUpstream,
    name: &str,
    user_limit: i32,
    creds: &[&str],
    account_limit: i32,
) -> Seeded {
    let mut a = admin_client(leader_url);
    let user = a
        .create_user(admin::CreateUserRequest {
            email: format!("{name}@example.com"),
            name: name.into(),
            concurrency: Some(user_limit),
            initial_balance_nanos: BALANCE_NANOS,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let group = a
        .create_group(admin::CreateGroupRequest {
            name: name.into(),
            rate_multiplier: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    for &secret in creds {
        a.create_account(admin::CreateAccountRequest {
            name: secret.into(),
            credential: Some(admin::create_account_request::Credential::ApiKey(
                admin::ApiKeyCredential {
                    api_key: secret.into(),
                },
            )),
            base_url: up.base_url(),
            concurrency: Some(account_limit),
            priority: 10,
            groups: vec![admin::AccountGroup {
                group_id: group,
                priority: 10,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let k = a
        .create_key(admin::CreateKeyRequest {
            user_id: user,
            group_id: Some(group),
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    Seeded {
        user,
        key: k.secret,
        key_id: k.key.unwrap().id,
    }
}

async fn data_plane(replicas: &[Replica]) -> DataPlane {
    let urls: Vec<String> = replicas.iter().map(Replica::url).collect();
    let mut c = tollgate_data_plane::Config::for_control_plane(urls.join(","));
    c.flow.failover_wait_ms = 15_000;
    DataPlane::start_with(c).await
}

/// One finished client request.
struct Outcome {
    stream: bool,
    /// From the probe client (not the limited load).
    probe: bool,
    started: Instant,
    ended: Instant,
    status: u16,
    complete: bool,
    detail: String,
}

async fn one_request(http: &reqwest::Client, url: &str, key: &str, stream: bool) -> Outcome {
    let started = Instant::now();
    let r = http
        .post(url)
        .bearer_auth(key)
        .json(&json!({"model": "gpt-5.1", "input": "hi", "stream": stream}))
        .send()
        .await;
    let (status, body) = match r {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    };
    let text: String = if stream {
        tollgate_tests::sse::parse_sse(&body)
            .events
            .iter()
            .filter(|e| e.kind().as_deref() == Some("response.output_text.delta"))
            .map(|e| e.json()["delta"].as_str().unwrap_or_default().to_owned())
            .collect()
    } else {
        body.clone()
    };
    let all_chunks = (0..CHUNKS).all(|i| text.contains(&format!("chunk{i};")));
    let completed = !stream || body.contains("response.completed");
    Outcome {
        stream,
        probe: false,
        started,
        ended: Instant::now(),
        status,
        complete: status == 200 && all_chunks && completed,
        detail: body.chars().take(300).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_leader_loses_no_stream_no_limit_and_no_charge() {
    let etcd = Etcd::start().await;
    let up = FakeUpstream::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let mut set = ReplicaSet::new(BIN, &db.url, &etcd.endpoint, &up.codex_url());
    set.flags = fast_flags();
    let mut replicas: Vec<Replica> = ["cp-a", "cp-b", "cp-c"]
        .iter()
        .map(|n| set.start(n, None))
        .collect();
    let first = leader_of(&replicas, Duration::from_secs(30)).await;
    let leader_url = replicas[first].url();
    let seeded = seed(
        &leader_url,
        &up,
        "load",
        USER_LIMIT,
        &["cred-a", "cred-b"],
        ACCOUNT_LIMIT,
    )
    .await;
    // A probe with slots to spare: its requests wait for nothing but the control plane,
    // so the gap in its answers is the failover a client sees.
    let probe = seed(&leader_url, &up, "probe", 10, &["cred-probe"], 10).await;
    up.count_group("load user", &["cred-a", "cred-b"]);
    // Streams of ~4 s, longer than the election, so the leases of streams open at the
    // kill are still held when the data planes re-attach (a new leader that ignored them
    // would over-grant); answers of 0.3 s.
    let chunks: Vec<String> = (0..CHUNKS).map(|i| format!("chunk{i};")).collect();
    up.set_default(
        Script::success()
            .text(chunks)
            .delay(Duration::from_millis(300))
            .event_delay(Duration::from_millis(450)),
    );
    let dps = [data_plane(&replicas).await, data_plane(&replicas).await];
    for dp in &dps {
        eventually("data plane ready", Duration::from_secs(20), || async {
            dp.admin_status("/readyz").await == 200
        })
        .await;
    }

    // Steady load: 6 clients (3 streaming, 3 not), over both data planes, for 3 s
    // before the kill and until 8 s after.
    let stop = Arc::new(AtomicBool::new(false));
    let http = tollgate_tests::http_client();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..6 {
        let url = format!("{}/v1/responses", dps[w % 2].proxy_url());
        let (http, key, stop) = (http.clone(), seeded.key.clone(), stop.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                done.push(one_request(&http, &url, &key, w < 3).await);
            }
            done
        });
    }
    {
        let url = format!("{}/v1/responses", dps[0].proxy_url());
        let (http, key, stop) = (http.clone(), probe.key.clone(), stop.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut o = one_request(&http, &url, &key, false).await;
                o.probe = true;
                done.push(o);
            }
            done
        });
    }
    // The data planes stay ready throughout (a failover must not take them out of
    // service): sampled every 100 ms until the load stops.
    {
        let urls: Vec<String> = dps
            .iter()
            .map(|d| format!("{}/readyz", d.admin_url()))
            .collect();
        let (http, stop) = (http.clone(), stop.clone());
        workers.spawn(async move {
            let mut not_ready = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for u in &urls {
                    let status = http.get(u).send().await.map(|r| r.status().as_u16());
                    if !matches!(status, Ok(200)) {
                        not_ready.push(Outcome {
                            stream: false,
                            probe: false,
                            started: Instant::now(),
                            ended: Instant::now(),
                            status: status.unwrap_or(0),
                            complete: false,
                            detail: format!("{u} not ready"),
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            not_ready
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        up.in_flight() > 0,
        "requests in flight when the leader dies"
    );
    replicas[first].kill().await;
    let killed_at = Instant::now();
    let standbys: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let new_leader = tollgate_tests::eventually_some(
        "a new leader serving",
        Duration::from_secs(20),
        || async {
            for &i in &standbys {
                if replicas[i].is_serving().await {
                    return Some(i);
                }
            }
            None
        },
    )
    .await;
    let elected_after = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(elected_after)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<Outcome> = workers.join_all().await.into_iter().flatten().collect();

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.complete).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed or came back incomplete, e.g. status {} {:?}",
        failed.len(),
        outcomes.len(),
        failed[0].status,
        failed[0].detail
    );
    let through_kill = outcomes
        .iter()
        .filter(|o| o.stream && o.started < killed_at && o.ended > killed_at)
        .count();
    assert!(through_kill > 0, "some stream was open across the kill");
    let after = outcomes.iter().filter(|o| o.started > killed_at).count();
    assert!(after > 0, "requests were made after the kill");
    // What a client saw: the probe's first answer to a request sent after the kill.
    let probe_back = outcomes
        .iter()
        .filter(|o| o.probe && o.started > killed_at)
        .map(|o| o.ended)
        .min()
        .unwrap();
    let slowest_after = outcomes
        .iter()
        .filter(|o| o.started > killed_at)
        .map(|o| o.ended - o.started)
        .max()
        .unwrap();
    println!(
        "failover: new leader serving {:.2} s after SIGKILL; a client's request sent after the kill answered {:.2} s after it (0.3 s of it the upstream's); slowest request sent after the kill took {:.2} s; {} requests, {} streams open across the kill",
        elected_after.as_secs_f64(),
        (probe_back - killed_at).as_secs_f64(),
        slowest_after.as_secs_f64(),
        outcomes.len(),
        through_kill,
    );

    // Limits held across the change.
    let limit = usize::try_from(ACCOUNT_LIMIT).unwrap();
    for cred in ["cred-a", "cred-b"] {
        let max = up.max_in_flight_for(cred);
        assert!(max <= limit, "{cred}: {max} at once, limit {limit}");
    }
    let user_limit = usize::try_from(USER_LIMIT).unwrap();
    let user_max = up.max_in_flight_of_group("load user");
    assert!(user_max > 0);
    assert!(
        user_max <= user_limit,
        "user: {user_max} at once, limit {user_limit}"
    );

    // Every usage record charged exactly once: the fake upstream's bill (100 input
    // tokens per answer) equals the usage log's, one record per request id.
    let served = up.count();
    assert_eq!(served, outcomes.len(), "one upstream call per request");
    let a = admin_client(&replicas[new_leader].url());
    let query = |key_id: i64| {
        let mut a = a.clone();
        async move {
            a.query_usage(admin::QueryUsageRequest {
                filter: Some(admin::UsageFilter {
                    key_id,
                    ..Default::default()
                }),
                page: Some(admin::PageRequest {
                    limit: 1_000,
                    page_token: String::new(),
                }),
                newest_first: false,
            })
            .await
            .unwrap()
            .into_inner()
            .records
        }
    };
    let all = || async {
        let mut r = query(seeded.key_id).await;
        r.extend(query(probe.key_id).await);
        r
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while all().await.len() < served {
        assert!(
            Instant::now() < deadline,
            "usage records committed: {} of {served}",
            all().await.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let usage = all().await;
    assert_eq!(usage.len(), served);
    let ids: HashSet<&str> = usage.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids.len(), served, "one record per request id");
    let billed_tokens: i64 = usage.iter().map(|r| r.input_tokens).sum();
    assert_eq!(billed_tokens, 100 * i64::try_from(served).unwrap());
    for s in [&seeded, &probe] {
        let cost: i64 = query(s.key_id)
            .await
            .iter()
            .map(|r| r.actual_cost_nanos)
            .sum();
        assert!(cost > 0);
        let user = a
            .clone()
            .get_user(admin::GetUserRequest { id: s.user })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            BALANCE_NANOS - user.balance_nanos,
            cost,
            "the balance is charged Σ cost, once"
        );
    }
    for dp in dps {
        dp.stop().await;
    }
    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_serving_before_another_leader_starts() {
    let etcd = Etcd::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let mut set = ReplicaSet::new(BIN, &db.url, &etcd.endpoint, "http://127.0.0.1:9");
    set.flags = fast_flags();
    // The first replica reaches etcd through a relay the test can black-hole, and is
    // started alone so that it becomes the leader.
    let relay = TcpRelay::start(etcd.addr()).await;
    let mut replicas = vec![set.start("cut", Some(&relay.url()))];
    assert_eq!(leader_of(&replicas, Duration::from_secs(30)).await, 0);
    replicas.push(set.start("standby-1", None));
    replicas.push(set.start("standby-2", None));
    // The standbys are up (answering, NOT_SERVING) before the cut.
    for r in &replicas[1..] {
        eventually(
            "standby answers health",
            Duration::from_secs(30),
            || async { r.health().await.is_some() },
        )
        .await;
    }
    assert!(replicas[0].is_serving().await);

    relay.block();
    let cut_at = Instant::now();
    // Watch all three: never two serving at once. (Each look takes a moment, so the
    // order is also read from the processes' own logs below.)
    let mut old_stopped = None;
    let mut new_leader = None;
    while new_leader.is_none() {
        assert!(cut_at.elapsed() < Duration::from_secs(30), "no new leader");
        if old_stopped.is_none() && !replicas[0].is_serving().await {
            old_stopped = Some(cut_at.elapsed());
        }
        for (i, r) in replicas.iter().enumerate().skip(1) {
            if r.is_serving().await {
                assert!(
                    !replicas[0].is_serving().await,
                    "{} serves while the cut-off leader still does",
                    r.name
                );
                new_leader = Some((i, cut_at.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (new, started) = new_leader.unwrap();
    let stopped = old_stopped.unwrap_or(started);
    println!(
        "cut-off leader stopped serving {:.2} s after the cut; a new leader served {:.2} s after",
        stopped.as_secs_f64(),
        started.as_secs_f64()
    );
    let stepped_down = replicas[0].logged_at("stepping down").unwrap();
    let elected = replicas[new].logged_at("elected leader").unwrap();
    assert!(
        stepped_down < elected,
        "stepped down at {stepped_down}, the new leader was elected at {elected}"
    );
    // The deposed process exits (a supervisor restarts it as a fresh standby).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !replicas[0].exited() {
        assert!(Instant::now() < deadline, "the deposed leader exits");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM gives leadership up at once: a standby serves long before the old leader's
/// 10 s lease could have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_leader_resigns_and_a_standby_takes_over_at_once() {
    let etcd = Etcd::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let mut set = ReplicaSet::new(BIN, &db.url, &etcd.endpoint, "http://127.0.0.1:9");
    set.flags = vec!["--leader-lease-ttl-s=10".into()];
    let mut replicas = vec![set.start("first", None)];
    assert_eq!(leader_of(&replicas, Duration::from_secs(30)).await, 0);
    replicas.push(set.start("standby", None));
    eventually(
        "standby answers health",
        Duration::from_secs(30),
        || async { replicas[1].health().await.is_some() },
    )
    .await;
    assert!(!replicas[1].is_serving().await, "a standby is NOT_SERVING");
    // A standby refuses Admin (and Gateway) calls, naming the leader.
    let refused = admin_client(&replicas[1].url())
        .list_users(admin::ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    let leader = replicas[0].url();
    assert!(refused.message().contains(&leader), "{}", refused.message());
    assert_eq!(
        refused
            .metadata()
            .get("x-tollgate-leader")
            .unwrap()
            .to_str()
            .unwrap(),
        leader
    );

    replicas[0].terminate().await;
    let terminated_at = Instant::now();
    eventually("the standby leads", Duration::from_secs(8), || async {
        replicas[1].is_serving().await
    })
    .await;
    let took = terminated_at.elapsed();
    println!(
        "after SIGTERM a standby served {:.2} s later",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(8),
        "well before the 10 s lease expires"
    );
    assert!(
        replicas[0].log().contains("resigned leadership"),
        "{}",
        replicas[0].log()
    );
}
