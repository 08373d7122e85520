//! `tollgate-admin` against a real control plane on `127.0.0.1:0`: an operator's tour
//! through users, groups, accounts, keys, subscriptions, prices and usage, run in-process
//! through `cli::main_with`, plus the built binary for exit codes and environment
//! variables (`tollgate-admin-under-test`: the CLI's own `main.rs`, built by this crate,
//! see `tests/Cargo.toml`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tollgate_admin as cli;

const TOKEN: &str = "cli-test-admin-token-0123456789abcdef";
const UPSTREAM_SECRET: &str = "sk-upstream-secret-never-printed";

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<tollgate_control_plane::Result<()>>,
    _dir: tempfile::TempDir,
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = tollgate_control_plane::Config::for_data_dir(dir.path());
        config.admin_token = Some(TOKEN.into());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        #[allow(clippy::disallowed_methods)]
        let task = tokio::spawn(tollgate_control_plane::serve_on(
            config,
            listener,
            shutdown.clone(),
        ));
        Self {
            addr,
            shutdown,
            task,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs the CLI in-process with this server's endpoint and `token`.
    async fn run_with_token(&self, args: &[&str], token: &str) -> Outcome {
        let endpoint = self.endpoint();
        let mut argv = vec!["tollgate-admin"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--endpoint", &endpoint, "--token", token]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = cli::main_with(argv, &mut out, &mut err).await;
        Outcome {
            code,
            stdout: String::from_utf8(out).unwrap(),
            stderr: String::from_utf8(err).unwrap(),
        }
    }

    async fn run(&self, args: &[&str]) -> Outcome {
        self.run_with_token(args, TOKEN).await
    }

    /// Runs a command that must succeed; returns its table output.
    async fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args).await;
        assert_eq!(o.code, 0, "{args:?} failed: {}{}", o.stderr, o.stdout);
        assert!(o.stderr.is_empty(), "{args:?}: {}", o.stderr);
        o.stdout
    }

    /// Runs a command with `--json` that must succeed; returns the parsed output.
    async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let text = self.ok(&a).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    /// Runs a command that must fail; returns the outcome.
    async fn fails(&self, args: &[&str]) -> Outcome {
        let o = self.run(args).await;
        assert_ne!(o.code, 0, "{args:?} unexpectedly succeeded: {}", o.stdout);
        o
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn id(v: &Value) -> String {
    v["id"].as_i64().expect("an id").to_string()
}

#[tokio::test]
async fn operator_tour() {
    let s = Server::start().await;

    // Users: exact money in, both forms out.
    let alice = s
        .json(&[
            "user",
            "create",
            "--email",
            "alice@example.com",
            "--name",
            "Alice",
            "--balance",
            "100",
            "--concurrency",
            "3",
        ])
        .await;
    let uid = id(&alice);
    assert_eq!(alice["email"], "alice@example.com");
    assert_eq!(alice["balance_nanos"], 100_000_000_000_i64);
    assert_eq!(alice["balance_usd"], "100");
    assert_eq!(alice["concurrency"], 3);
    assert!(alice["created_at"].as_str().unwrap().ends_with('Z'));

    let adjusted = s
        .json(&[
            "user", "balance", &uid, "--add", "12.50", "--reason", "top-up",
        ])
        .await;
    assert_eq!(adjusted["user"]["balance_usd"], "112.5");
    assert_eq!(adjusted["entry"]["delta_nanos"], 12_500_000_000_i64);
    assert_eq!(adjusted["entry"]["reason"], "top-up");
    let adjusted = s
        .json(&[
            "user",
            "balance",
            &uid,
            "--subtract",
            "0.000000001",
            "--reason",
            "fee",
        ])
        .await;
    assert_eq!(adjusted["user"]["balance_nanos"], 112_499_999_999_i64);
    assert_eq!(adjusted["user"]["balance_usd"], "112.499999999");
    let ledger = s.json(&["user", "ledger", &uid]).await;
    assert!(ledger["entries"].as_array().unwrap().len() >= 2, "{ledger}");
    let table = s.ok(&["user", "ledger", &uid]).await;
    assert!(table.contains("top-up"), "{table}");

    let updated = s
        .json(&["user", "update", &uid, "--name", "Alice A."])
        .await;
    assert_eq!(updated["name"], "Alice A.");
    assert_eq!(updated["email"], "alice@example.com");
    let bob = s
        .json(&["user", "create", "--email", "bob@example.com"])
        .await;

    let table = s.ok(&["user", "list"]).await;
    assert!(table.contains("alice@example.com") && table.contains("bob@example.com"));
    assert!(table.contains("112.499999999"), "{table}");
    let listed = s.json(&["user", "list", "--limit", "1"]).await;
    assert_eq!(listed["users"].as_array().unwrap().len(), 1);
    let token = listed["next_page_token"].as_str().unwrap();
    assert!(!token.is_empty(), "two users, page of one: {listed}");
    let next = s
        .json(&["user", "list", "--limit", "1", "--page-token", token])
        .await;
    assert_eq!(next["users"].as_array().unwrap().len(), 1);
    assert_ne!(next["users"][0]["id"], listed["users"][0]["id"]);
    let got = s.json(&["user", "get", &uid]).await;
    assert_eq!(got["name"], "Alice A.");

    // Groups.
    let group = s
        .json(&[
            "group",
            "create",
            "--name",
            "team",
            "--rate-multiplier",
            "1.5",
        ])
        .await;
    let gid = id(&group);
    assert_eq!(group["rate_multiplier"], "1.5");
    assert_eq!(group["kind"], "standard");
    let group = s
        .json(&[
            "group",
            "update",
            &gid,
            "--description",
            "the team",
            "--exclusive",
            "true",
        ])
        .await;
    assert_eq!(group["exclusive"], true);
    assert_eq!(group["rate_multiplier"], "1.5");
    assert!(s.ok(&["group", "list"]).await.contains("team"));
    assert_eq!(
        s.json(&["group", "get", &gid]).await["description"],
        "the team"
    );

    // An API-key account in the group; the credential never comes back.
    let group_arg = format!("{gid}:10");
    let o = s
        .run(&[
            "account",
            "create",
            "--name",
            "upstream-1",
            "--api-key",
            UPSTREAM_SECRET,
            "--base-url",
            "https://api.openai.com",
            "--group",
            &group_arg,
            "--model-map",
            "gpt-5=gpt-5.1",
            "--json",
        ])
        .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stdout.contains(UPSTREAM_SECRET));
    let account: Value = serde_json::from_str(&o.stdout).unwrap();
    let aid = id(&account);
    assert_eq!(account["kind"], "api_key");
    assert_eq!(account["base_url"], "https://api.openai.com");
    assert_eq!(account["groups"][0]["group_id"].to_string(), gid);
    assert_eq!(account["groups"][0]["priority"], 10);
    assert_eq!(account["model_mapping"]["gpt-5"], "gpt-5.1");
    let account = s
        .json(&[
            "account",
            "update",
            &aid,
            "--priority",
            "7",
            "--schedulable",
            "false",
        ])
        .await;
    assert_eq!(account["priority"], 7);
    assert_eq!(account["schedulable"], false);
    assert_eq!(
        account["model_mapping"]["gpt-5"], "gpt-5.1",
        "mapping untouched"
    );
    let table = s.ok(&["account", "list"]).await;
    assert!(
        table.contains("upstream-1") && !table.contains(UPSTREAM_SECRET),
        "{table}"
    );
    let account = s.json(&["account", "set-groups", &aid, "--none"]).await;
    assert_eq!(account["groups"], Value::Array(vec![]));
    s.json(&["account", "clear-error", &aid]).await;
    s.json(&["account", "clear-rate-limit", &aid]).await;
    assert_eq!(
        s.json(&["account", "get", &aid]).await["name"],
        "upstream-1"
    );

    // A private upstream is refused by the server: INVALID_ARGUMENT, exit 2.
    let o = s
        .fails(&[
            "account",
            "create",
            "--name",
            "bad",
            "--api-key",
            "k",
            "--base-url",
            "https://127.0.0.1",
        ])
        .await;
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.starts_with("error: INVALID_ARGUMENT: "),
        "{}",
        o.stderr
    );

    // Keys: the secret is shown once, prominently.
    let table = s
        .ok(&[
            "key",
            "create",
            "--user",
            &uid,
            "--group",
            &gid,
            "--name",
            "ci",
            "--quota",
            "12.50",
            "--expires-in-days",
            "30",
            "--ip-allow",
            "10.0.0.0/8,192.168.0.0/16",
        ])
        .await;
    assert!(table.contains("shown only this once"), "{table}");
    let secret_line = table
        .lines()
        .find(|l| l.trim_start().starts_with("sk-"))
        .unwrap_or_else(|| panic!("no secret in {table}"));
    assert!(secret_line.trim().len() > 40, "{secret_line}");
    let created = s
        .json(&[
            "key", "create", "--user", &uid, "--name", "script", "--quota", "0.1",
        ])
        .await;
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("sk-"));
    let kid = id(&created["key"]);
    assert_eq!(created["key"]["quota_nanos"], 100_000_000);
    assert_eq!(created["key"]["quota_usd"], "0.1");
    assert!(created["key"]["expires_at"].is_null());
    assert!(created["key"]["group_id"].is_null());

    let keys = s.json(&["key", "list", "--user", &uid]).await;
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let ci = keys.iter().find(|k| k["name"] == "ci").unwrap();
    let ci_id = id(ci);
    assert_eq!(ci["quota_usd"], "12.5");
    assert_eq!(
        ci["ip_allow"],
        serde_json::json!(["10.0.0.0/8", "192.168.0.0/16"])
    );
    assert!(ci["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        keys.iter().all(|k| !k.to_string().contains(secret)),
        "secret listed"
    );
    let table = s.ok(&["key", "list", "--group", &gid]).await;
    assert!(table.contains("ci") && !table.contains("script"), "{table}");

    // Partial updates: lists replaced only when given.
    let k = s.json(&["key", "update", &ci_id, "--name", "ci-2"]).await;
    assert_eq!(k["name"], "ci-2");
    assert_eq!(k["ip_allow"].as_array().unwrap().len(), 2, "untouched: {k}");
    let k = s
        .json(&[
            "key",
            "update",
            &ci_id,
            "--clear-ip-allow",
            "--ip-deny",
            "10.9.9.9",
        ])
        .await;
    assert_eq!(k["ip_allow"], serde_json::json!([]));
    assert_eq!(k["ip_deny"], serde_json::json!(["10.9.9.9"]));
    let k = s
        .json(&["key", "update", &ci_id, "--quota", "20", "--no-group"])
        .await;
    assert_eq!(k["quota_nanos"], 20_000_000_000_i64);
    assert!(k["group_id"].is_null(), "{k}");
    assert_eq!(
        s.json(&["key", "disable", &kid]).await["status"],
        "disabled"
    );
    assert_eq!(s.json(&["key", "enable", &kid]).await["status"], "active");
    assert_eq!(
        s.json(&["key", "reset-quota", &ci_id]).await["quota_used_nanos"],
        0
    );
    let k = s.json(&["key", "clear-expiration", &ci_id]).await;
    assert!(
        k["expires_at"].is_null() && k["expires_at_ms"].is_null(),
        "{k}"
    );
    let k = s.json(&["key", "get", &ci_id]).await;
    assert_eq!(k["usage"]["requests"], 0);
    assert_eq!(k["usage"]["actual_cost_usd"], "0");

    // Subscriptions.
    let sub_group = s
        .json(&[
            "group",
            "create",
            "--name",
            "monthly",
            "--kind",
            "subscription",
            "--daily-limit",
            "5",
            "--monthly-limit",
            "99.99",
        ])
        .await;
    let sgid = id(&sub_group);
    assert_eq!(sub_group["daily_limit_usd"], "5");
    assert_eq!(sub_group["monthly_limit_nanos"], 99_990_000_000_i64);
    let sub = s
        .json(&[
            "subscription",
            "assign",
            "--user",
            &uid,
            "--group",
            &sgid,
            "--days",
            "30",
        ])
        .await;
    let sid = id(&sub);
    assert_eq!(sub["status"], "active");
    let before = sub["expires_at_ms"].as_i64().unwrap();
    let sub = s
        .json(&["subscription", "extend", &sid, "--days", "5"])
        .await;
    assert_eq!(
        sub["expires_at_ms"].as_i64().unwrap() - before,
        5 * 86_400_000
    );
    let table = s.ok(&["subscription", "list", "--user", &uid]).await;
    assert!(table.contains("active"), "{table}");
    assert_eq!(
        s.json(&["subscription", "get", &sid]).await["user_id"].to_string(),
        uid
    );
    let sub = s.json(&["subscription", "revoke", &sid]).await;
    assert_ne!(sub["status"], "active");

    // Prices, per million tokens.
    let p = s
        .json(&[
            "price",
            "set",
            "gpt-test",
            "--input",
            "1.25",
            "--output",
            "10",
            "--cached-input",
            "0.125",
        ])
        .await;
    assert_eq!(p["input_per_mtok_nanos"], 1_250_000_000);
    assert_eq!(p["cached_input_per_mtok_usd"], "0.125");
    assert_eq!(
        s.json(&["price", "get", "gpt-test"]).await["output_per_mtok_usd"],
        "10"
    );
    let table = s.ok(&["price", "list"]).await;
    assert!(
        table.contains("gpt-test") && table.contains("gpt-5"),
        "{table}"
    );
    assert_eq!(
        s.json(&["price", "delete", "gpt-test"]).await,
        serde_json::json!({"deleted": true, "price": "gpt-test"})
    );
    assert_eq!(s.fails(&["price", "get", "gpt-test"]).await.code, 2);

    // Usage (nothing has been proxied yet).
    let usage = s
        .json(&[
            "usage",
            "query",
            "--user",
            &uid,
            "--from",
            "2020-01-01T00:00:00Z",
        ])
        .await;
    assert_eq!(usage["records"], serde_json::json!([]));
    assert_eq!(usage["totals"]["requests"], 0);
    let series = s.json(&["usage", "series", "--last-days", "7"]).await;
    assert_eq!(series["totals"]["total_cost_usd"], "0");
    assert!(s.ok(&["usage", "series"]).await.contains("totals"));

    // Deletes, and NOT_FOUND afterwards with exit 2.
    assert_eq!(
        s.json(&["key", "delete", &kid]).await,
        serde_json::json!({"deleted": true, "key": kid.parse::<i64>().unwrap()})
    );
    assert!(
        s.ok(&["account", "delete", &aid])
            .await
            .contains("deleted account")
    );
    let o = s.fails(&["account", "get", &aid]).await;
    assert_eq!(o.code, 2);
    assert!(o.stderr.starts_with("error: NOT_FOUND: "), "{}", o.stderr);
    s.ok(&["user", "delete", &id(&bob)]).await;
    assert_eq!(s.fails(&["user", "get", &id(&bob)]).await.code, 2);

    s.stop().await;
}

/// `price import` of LiteLLM's registry (a trimmed copy of the real file): the dry run
/// shows the changes and sets nothing; the import sets exact prices; a second import
/// changes nothing. `audit` on fresh books is clean; dead letters list empty.
#[tokio::test]
async fn price_import_audit_and_dead_letters() {
    let s = Server::start().await;
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../admin-cli/tests/fixtures/litellm_prices_trimmed.json"
    );
    // The operator edited gpt-5-pro; the file has its list price.
    s.ok(&[
        "price",
        "set",
        "gpt-5-pro",
        "--input",
        "1",
        "--output",
        "2",
        "--cached-input",
        "0.5",
    ])
    .await;
    let dry = s.json(&["price", "import", file, "--dry-run"]).await;
    let changes = dry["changes"].as_array().unwrap();
    let models: Vec<&str> = changes
        .iter()
        .map(|c| c["model"].as_str().unwrap())
        .collect();
    // The dated snapshot is priced by its base already; the file adds its own row.
    assert_eq!(models, vec!["gpt-4.1-2025-04-14", "gpt-5-pro"], "{dry}");
    assert_eq!(changes[0]["change"], "new");
    assert_eq!(changes[1]["change"], "update");
    assert_eq!(changes[1]["was"], "1 / 2 / 0.5");
    let table = s.ok(&["price", "import", file, "--dry-run"]).await;
    assert!(table.contains("dry run: nothing set"), "{table}");
    let still = s.json(&["price", "get", "gpt-5-pro"]).await;
    assert_eq!(still["input_per_mtok_usd"], "1", "{still}");
    s.json(&["price", "import", file]).await;
    let pro = s.json(&["price", "get", "gpt-5-pro"]).await;
    assert_eq!(
        (
            &pro["input_per_mtok_usd"],
            &pro["output_per_mtok_usd"],
            &pro["cached_input_per_mtok_usd"]
        ),
        (&Value::from("15"), &Value::from("120"), &Value::from("15"))
    );
    let again = s.json(&["price", "import", file]).await;
    assert_eq!(again["changes"].as_array().unwrap().len(), 0);
    // Other providers on request.
    let azure = s
        .json(&["price", "import", file, "--provider", "azure", "--dry-run"])
        .await;
    assert_eq!(azure["changes"][0]["model"], "azure/gpt-5");

    let audit = s.json(&["audit"]).await;
    assert_eq!(audit["clean"], true, "{audit}");
    assert!(s.ok(&["audit"]).await.contains("the books are clean"));
    let dl = s.json(&["usage", "dead-letters", "--all"]).await;
    assert_eq!(dl["dead_letters"].as_array().unwrap().len(), 0);
    let o = s.fails(&["usage", "recharge", "12345"]).await;
    assert!(o.stderr.contains("NOT_FOUND"), "{}", o.stderr);
    s.stop().await;
}

#[tokio::test]
async fn errors_are_reported_with_code_and_exit_status() {
    let s = Server::start().await;

    // Wrong token: UNAUTHENTICATED, exit 1, nothing on stdout.
    let o = s
        .run_with_token(&["user", "list"], "wrong-token-0123456789abcdef")
        .await;
    assert_eq!(o.code, 1);
    assert!(o.stdout.is_empty());
    assert!(
        o.stderr.starts_with("error: UNAUTHENTICATED"),
        "{}",
        o.stderr
    );

    // Not found: exit 2.
    let o = s.fails(&["user", "get", "424242"]).await;
    assert_eq!(o.code, 2);
    assert!(o.stderr.starts_with("error: NOT_FOUND: "), "{}", o.stderr);

    // Local argument errors never reach the server: exit 2, clap's message.
    let o = s
        .fails(&[
            "user",
            "create",
            "--email",
            "x@example.com",
            "--balance",
            "1.0000000001",
        ])
        .await;
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("--balance"), "{}", o.stderr);
    let o = s
        .fails(&["key", "create", "--user", "1", "--expires-at", "tomorrow"])
        .await;
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("RFC 3339"), "{}", o.stderr);
    let o = s.fails(&["user", "update", "1"]).await;
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("nothing to update"), "{}", o.stderr);

    // Help goes to stdout with exit 0.
    let o = s.run(&["key", "--help"]).await;
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("clear-expiration"), "{}", o.stdout);

    s.stop().await;

    // Nobody listening: UNAVAILABLE, exit 1.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let argv = [
        "tollgate-admin",
        "user",
        "list",
        "--endpoint",
        &endpoint,
        "--token",
        TOKEN,
    ];
    let code = cli::main_with(argv, &mut out, &mut err).await;
    let err = String::from_utf8(err).unwrap();
    assert_eq!(code, 1);
    assert!(err.starts_with("error: UNAVAILABLE"), "{err}");
}

#[tokio::test]
async fn scoped_tokens_and_the_audit_log() {
    let s = Server::start().await;

    // Created with a scope; the secret is printed once.
    let created = s
        .json(&[
            "token",
            "create",
            "reporting",
            "--scope",
            "read",
            "--expires-in-days",
            "30",
        ])
        .await;
    let token = created["token"].clone();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(token["scope"], "read");
    assert_eq!(token["created_by"], "bootstrap");
    assert!(token["expires_at"].as_str().unwrap().ends_with('Z'));
    let table = s.ok(&["token", "create", "ops", "--scope", "admin"]).await;
    assert!(table.contains("shown only this once"), "{table}");

    // A read token reads, and is refused a write with the scope it lacks.
    let o = s.run_with_token(&["user", "list"], &secret).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = s
        .run_with_token(&["user", "create", "--email", "x@example.com"], &secret)
        .await;
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.starts_with("error: PERMISSION_DENIED"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("`admin` scope"), "{}", o.stderr);

    let listed = s.json(&["token", "list"]).await;
    let names: Vec<_> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["reporting", "ops"]);
    assert!(!listed.to_string().contains(&secret));
    let revoked = s.json(&["token", "revoke", &id(&token)]).await;
    assert!(revoked["revoked_at"].is_string());
    let o = s.run_with_token(&["user", "list"], &secret).await;
    assert!(
        o.stderr.starts_with("error: UNAUTHENTICATED"),
        "{}",
        o.stderr
    );
    let all = s.json(&["token", "list", "--all"]).await;
    assert_eq!(all["tokens"].as_array().unwrap().len(), 2);

    // The audit log: newest first, filtered, without secrets.
    let log = s.json(&["audit-log", "--actor", "bootstrap"]).await;
    let actions: Vec<_> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        ["RevokeAdminToken", "CreateAdminToken", "CreateAdminToken"]
    );
    assert!(!log.to_string().contains(&secret));
    let log = s
        .json(&[
            "audit-log",
            "--action",
            "RevokeAdminToken",
            "--since",
            "2020-01-01T00:00:00Z",
        ])
        .await;
    assert_eq!(log["entries"][0]["target"], id(&token));
    let table = s.ok(&["audit-log", "--limit", "1"]).await;
    assert!(
        table.contains("RevokeAdminToken") && !table.contains("\"reporting\""),
        "{table}"
    );
    s.stop().await;
}

/// The built binary: environment variables, token file, exit codes and streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reads_environment_and_exits_with_codes() {
    let s = Server::start().await;
    let endpoint = s.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();

    let run = |args: Vec<&'static str>, env: Vec<(&'static str, String)>| {
        let cwd = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_tollgate-admin-under-test"))
                .args(args)
                .current_dir(cwd)
                .env_remove("TOLLGATE_ADMIN_TOKEN")
                .env_remove("TOLLGATE_ADMIN_TOKEN_FILE")
                .env_remove("TOLLGATE_ADMIN_ENDPOINT")
                .envs(env)
                .output()
                .unwrap();
            Outcome {
                code: out.status.code().unwrap(),
                stdout: String::from_utf8(out.stdout).unwrap(),
                stderr: String::from_utf8(out.stderr).unwrap(),
            }
        })
    };

    // Endpoint and token from the environment.
    let o = run(
        vec!["user", "create", "--email", "env@example.com", "--json"],
        vec![
            ("TOLLGATE_ADMIN_ENDPOINT", endpoint.clone()),
            ("TOLLGATE_ADMIN_TOKEN", TOKEN.to_owned()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let user: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(user["email"], "env@example.com");

    // Token from a file named by the environment.
    let o = run(
        vec!["user", "list"],
        vec![
            ("TOLLGATE_ADMIN_ENDPOINT", endpoint.clone()),
            (
                "TOLLGATE_ADMIN_TOKEN_FILE",
                token_file.display().to_string(),
            ),
        ],
    )
    .await
    .unwrap();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("env@example.com"), "{}", o.stdout);

    // Wrong token: exit 1 and the code on stderr.
    let o = run(
        vec!["user", "list"],
        vec![
            ("TOLLGATE_ADMIN_ENDPOINT", endpoint.clone()),
            (
                "TOLLGATE_ADMIN_TOKEN",
                "definitely-not-the-token".to_owned(),
            ),
        ],
    )
    .await
    .unwrap();
    assert_eq!(o.code, 1);
    assert!(o.stdout.is_empty());
    assert!(o.stderr.contains("error: UNAUTHENTICATED"), "{}", o.stderr);

    // No token anywhere (the temp cwd has no .tollgate/admin-token): exit 2, a hint.
    let o = run(
        vec!["user", "list"],
        vec![("TOLLGATE_ADMIN_ENDPOINT", endpoint.clone())],
    )
    .await
    .unwrap();
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("no admin token"), "{}", o.stderr);

    // ... until the working directory has a `.tollgate/admin-token`, as a local control
    // plane writes it.
    std::fs::create_dir(dir.path().join(".tollgate")).unwrap();
    std::fs::write(dir.path().join(".tollgate/admin-token"), TOKEN).unwrap();
    let o = run(
        vec!["user", "list", "--json"],
        vec![("TOLLGATE_ADMIN_ENDPOINT", endpoint.clone())],
    )
    .await
    .unwrap();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let users: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(users["users"][0]["email"], "env@example.com");

    // Not found: exit 2.
    let o = run(
        vec!["key", "get", "99999"],
        vec![
            ("TOLLGATE_ADMIN_ENDPOINT", endpoint.clone()),
            ("TOLLGATE_ADMIN_TOKEN", TOKEN.to_owned()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("error: NOT_FOUND"), "{}", o.stderr);

    s.stop().await;
}

impl Server {
    /// Runs the built binary (`tollgate-admin-under-test`) against this server.
    async fn binary(&self, args: &[&str]) -> Outcome {
        let mut argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        argv.extend([
            "--endpoint".into(),
            self.endpoint(),
            "--token".into(),
            TOKEN.into(),
        ]);
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_tollgate-admin-under-test"))
                .args(argv)
                .env_remove("TOLLGATE_ADMIN_TOKEN")
                .env_remove("TOLLGATE_ADMIN_TOKEN_FILE")
                .env_remove("TOLLGATE_ADMIN_ENDPOINT")
                .output()
                .unwrap();
            Outcome {
                code: out.status.code().unwrap(),
                stdout: String::from_utf8(out.stdout).unwrap(),
                stderr: String::from_utf8(out.stderr).unwrap(),
            }
        })
        .await
        .unwrap()
    }
}

/// The guards, through the binary: a user or group with keys is not deleted without
/// `--cascade` (exit 1, the message names the flag), and `--cascade` says how many keys
/// it disabled; a balance below zero needs `--allow-negative`; dates as YYYY-MM-DD;
/// `usage query` newest first; the exit codes are in `--help`.
#[tokio::test]
async fn guards_need_their_flags() {
    let s = Server::start().await;
    let user = s
        .json(&[
            "user",
            "create",
            "--email",
            "g@example.com",
            "--balance",
            "1",
        ])
        .await;
    let uid = id(&user);
    let group = s.json(&["group", "create", "--name", "guarded"]).await;
    let gid = id(&group);
    let in_group = s
        .json(&["key", "create", "--user", &uid, "--group", &gid])
        .await;
    s.json(&["key", "create", "--user", &uid]).await;

    for (what, target) in [("group", &gid), ("user", &uid)] {
        let o = s.binary(&[what, "delete", target]).await;
        assert_eq!(o.code, 1, "{what}: {}{}", o.stderr, o.stdout);
        assert!(
            o.stderr.starts_with("error: FAILED_PRECONDITION: "),
            "{}",
            o.stderr
        );
        assert!(o.stderr.contains("--cascade"), "{}", o.stderr);
        assert!(o.stdout.is_empty());
    }
    let o = s.binary(&["group", "delete", &gid, "--cascade"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        format!("deleted group {gid}; disabled 1 API key")
    );
    let key = s.json(&["key", "get", &id(&in_group["key"])]).await;
    assert_eq!(key["status"], "disabled", "{key}");

    // Balance: below zero only with --allow-negative.
    let o = s
        .binary(&["user", "balance", &uid, "--subtract", "2", "--reason", "r"])
        .await;
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("--allow-negative"), "{}", o.stderr);
    assert_eq!(s.json(&["user", "get", &uid]).await["balance_usd"], "1");
    let o = s
        .binary(&[
            "user",
            "balance",
            &uid,
            "--subtract",
            "2",
            "--reason",
            "r",
            "--allow-negative",
            "--json",
        ])
        .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let adjusted: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(adjusted["user"]["balance_usd"], "-1");

    // Dates alone; newest first (no usage yet: an empty list, the filter accepted).
    let usage = s
        .json(&[
            "usage",
            "query",
            "--user",
            &uid,
            "--from",
            "2020-01-01",
            "--to",
            "2999-12-31",
        ])
        .await;
    assert_eq!(usage["records"], serde_json::json!([]));
    let o = s.binary(&["usage", "query", "--from", "01/02/2020"]).await;
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("2025-01-31"), "{}", o.stderr);

    let o = s
        .binary(&["user", "delete", &uid, "--cascade", "--json"])
        .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let deleted: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(deleted["keys_disabled"], 1, "{deleted}");
    let keys = s.json(&["key", "list", "--user", &uid]).await;
    let keys = keys["keys"].as_array().unwrap();
    assert!(keys.iter().all(|k| k["status"] != "active"), "{keys:?}");

    let o = s.binary(&["--help"]).await;
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.contains("Exit status:") && o.stdout.contains("2  bad arguments"),
        "{}",
        o.stdout
    );
    s.stop().await;
}
