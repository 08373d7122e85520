//! Mutual TLS between the planes, on real sockets: every `Gateway` method refuses an
//! anonymous caller and one with another CA's certificate (`UNAUTHENTICATED`), while a
//! data plane with the operator CA's certificate works end to end and operators reach
//! `Admin` with a token and no certificate; plaintext and production guards; and
//! certificate rotation that keeps existing sessions while new connections use the new
//! files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use serde_json::json;
use tollgate_control_plane::tls::dev::{DevPaths, DevPki};
use tollgate_tests::cluster::{ControlPlane, DataPlane, channel, test_pki};
use tollgate_tests::eventually;
use tollgate_tests::fixture::{Gateway, Options};
use tonic::Code;

const GATEWAY: &str = "tollgate.gateway.v1.Gateway";

/// Every method of the Gateway service, from the descriptor the server registers, with
/// whether the client streams: a new method is covered without editing this test.
fn gateway_methods() -> Vec<(String, bool)> {
    let set = prost_types::FileDescriptorSet::decode(tollgate_shared::proto::FILE_DESCRIPTOR_SET)
        .unwrap();
    let methods: Vec<(String, bool)> = set
        .file
        .iter()
        .filter(|f| f.package() == "tollgate.gateway.v1")
        .flat_map(|f| &f.service)
        .filter(|s| s.name() == "Gateway")
        .flat_map(|s| &s.method)
        .map(|m| (m.name().to_owned(), m.client_streaming()))
        .collect();
    let names: Vec<&str> = methods.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "Session",
        "Authorize",
        "Admit",
        "Release",
        "ReportUsage",
        "ReportOutcome",
        "RecordResponse",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    methods
}

/// Calls `method` with an empty message (a valid encoding of every request type).
async fn call(channel: tonic::transport::Channel, method: &str, client_streaming: bool) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path: http::uri::PathAndQuery = format!("/{GATEWAY}/{method}").parse().unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let result = if client_streaming {
        let stream = tokio_stream::iter(vec![()]);
        grpc.streaming(tonic::Request::new(stream), path, codec)
            .await
            .map(|_| ())
    } else {
        grpc.unary(tonic::Request::new(()), path, codec)
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn gateway_refuses_anonymous_and_foreign_callers_on_every_method() {
    let gw = Gateway::start(1).await;
    let b = gw.basic().await;
    let url = gw.cp.url();
    assert!(
        url.starts_with("https://"),
        "the test cluster runs over TLS"
    );

    let foreign = DevPki::generate(&[]).unwrap();
    let own = test_pki();
    let callers = [
        ("anonymous", channel(&url, None)),
        (
            "another CA's data-plane certificate",
            channel(
                &url,
                Some((&foreign.data_plane_cert, &foreign.data_plane_key)),
            ),
        ),
        (
            // Issued by the right CA, but for server authentication only.
            "the control plane's own server certificate",
            channel(&url, Some((&own.server_cert, &own.server_key))),
        ),
    ];
    let methods = gateway_methods();
    for (who, ch) in &callers {
        for (method, streaming) in &methods {
            assert_eq!(
                call(ch.clone(), method, *streaming).await,
                Code::Unauthenticated,
                "{who} calling {method}"
            );
        }
    }

    // The operator's CA certificate passes the guard (the request itself is empty, so
    // the service answers it with its own verdict, never UNAUTHENTICATED).
    let valid = channel(&url, Some((&own.data_plane_cert, &own.data_plane_key)));
    for (method, streaming) in &methods {
        if !streaming {
            assert_ne!(
                call(valid.clone(), method, false).await,
                Code::Unauthenticated,
                "data plane calling {method}"
            );
        }
    }

    // Operators reach Admin with a token and no certificate (the fixture's admin client
    // is anonymous at TLS); a data plane with a valid certificate serves requests.
    gw.admin
        .clone()
        .list_users(tollgate_shared::proto::admin::v1::ListUsersRequest::default())
        .await
        .unwrap();
    let r = gw
        .post(0, &b.key, json!({"model": "gpt-5.1", "input": "hi"}))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn data_plane_refuses_a_plaintext_control_plane_url_unless_allowed() {
    let mut config = tollgate_data_plane::Config::for_control_plane("http://127.0.0.1:1");
    let listeners = tollgate_data_plane::Listeners::bind(&config).await.unwrap();
    let err = tollgate_data_plane::serve_on(
        config.clone(),
        listeners,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("plaintext") && err.contains("TOLLGATE_ALLOW_PLAINTEXT_CONTROL_PLANE"),
        "{err}"
    );

    config.allow_plaintext_control_plane = true;
    let dp = DataPlane::start_with(config).await;
    assert_eq!(dp.admin_status("/healthz").await, 200, "allowed: it runs");
    dp.stop().await;

    // https without the certificate files is refused too, naming them.
    let mut config = tollgate_data_plane::Config::for_control_plane("https://127.0.0.1:1");
    config.client_cert = Some("/nonexistent/tls.crt".into());
    let listeners = tollgate_data_plane::Listeners::bind(&config).await.unwrap();
    let err = tollgate_data_plane::serve_on(
        config,
        listeners,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("TOLLGATE_CONTROL_PLANE_CA"), "{err}");
}

#[tokio::test]
async fn production_control_plane_refuses_to_start_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tollgate_control_plane::Config::for_data_dir(dir.path());
    config.production = true;
    config.admin_token = Some("production-admin-token-0123456789".into());
    config.encryption_key =
        Some(tollgate_control_plane::crypto::SecretBox::generate_key_b64().into());
    for plaintext in [false, true] {
        config.insecure_plaintext = plaintext;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = tollgate_control_plane::serve_on(
            config.clone(),
            listener,
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("production mode requires TLS") && err.contains("TOLLGATE_TLS_CERT"),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
    }
    assert!(
        !dir.path().join("tls").exists(),
        "production never generates certificates"
    );
}

#[tokio::test]
async fn development_mode_generates_a_private_pki_once_and_data_planes_use_it() {
    let home = tollgate_tests::cluster::Home::embedded();
    let mut config = tollgate_tests::cluster::base_config(home.data_dir());
    config.insecure_plaintext = false;
    let cp = ControlPlane::start_with(home, config).await;
    let paths = DevPaths::in_dir(&cp.home.data_dir().join("tls"));
    let files = [
        &paths.ca_cert,
        &paths.server_cert,
        &paths.server_key,
        &paths.data_plane_cert,
        &paths.data_plane_key,
    ];
    eventually("PKI written", Duration::from_secs(10), || async {
        files.iter().all(|f| f.is_file())
    })
    .await;
    #[cfg(unix)]
    for f in files {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();

    let dp_config = |url: String| {
        let mut c = tollgate_data_plane::Config::for_control_plane(url);
        c.control_plane_ca = Some(paths.ca_cert.clone());
        c.client_cert = Some(paths.data_plane_cert.clone());
        c.client_key = Some(paths.data_plane_key.clone());
        c
    };
    let dp = DataPlane::start_with(dp_config(cp.url())).await;
    eventually("attached over mTLS", Duration::from_secs(10), || async {
        dp.admin_status("/readyz").await == 200
    })
    .await;
    dp.stop().await;

    // A restart reuses the files: data planes keep trusting the same CA.
    let cp = cp.restart().await;
    let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(before == after, "generated once, reused across restarts");
    let dp = DataPlane::start_with(dp_config(cp.url())).await;
    eventually(
        "attached after restart",
        Duration::from_secs(10),
        || async { dp.admin_status("/readyz").await == 200 },
    )
    .await;
    dp.stop().await;
    cp.stop().await;
}

/// Writes a PKI's server files and a client-CA bundle into `dir` in place (as
/// cert-manager does).
fn write_server_files(dir: &Path, pki: &DevPki, client_cas: &[&DevPki]) {
    std::fs::write(dir.join("tls.crt"), &pki.server_cert).unwrap();
    std::fs::write(dir.join("tls.key"), &pki.server_key).unwrap();
    let bundle: String = client_cas.iter().map(|p| p.ca_cert.as_str()).collect();
    std::fs::write(dir.join("ca.crt"), bundle).unwrap();
}

/// Whether a fresh TLS handshake that trusts only `ca` succeeds.
async fn handshake_trusting(addr: std::net::SocketAddr, ca: &str) -> bool {
    let config = tollgate_shared::tls::client_config(ca.as_bytes(), None).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .is_ok()
}

#[tokio::test]
async fn rotated_certificates_are_used_by_new_connections_and_sessions_survive() {
    // The fixture's admin client trusts the test CA: start from it.
    let old = test_pki();
    let new = DevPki::generate(&[]).unwrap();
    let server_dir = tempfile::tempdir().unwrap();
    write_server_files(server_dir.path(), old, &[old, &new]);
    let sd = server_dir.path().to_owned();
    let gw = Gateway::start_with(Options {
        data_planes: 0,
        control_plane: Box::new(move |c| {
            c.tls_cert = Some(sd.join("tls.crt"));
            c.tls_key = Some(sd.join("tls.key"));
            c.tls_client_ca = Some(sd.join("ca.crt"));
            c.tls_reload_interval_ms = 100;
        }),
        ..Options::default()
    })
    .await;
    let b = gw.basic().await;

    // The data plane trusts only the old CA and presents the old CA's certificate.
    let dp_dir = tempfile::tempdir().unwrap();
    let d = dp_dir.path();
    std::fs::write(d.join("ca.crt"), &old.ca_cert).unwrap();
    std::fs::write(d.join("tls.crt"), &old.data_plane_cert).unwrap();
    std::fs::write(d.join("tls.key"), &old.data_plane_key).unwrap();
    let mut c = tollgate_data_plane::Config::for_control_plane(gw.cp.url());
    c.control_plane_ca = Some(d.join("ca.crt"));
    c.client_cert = Some(d.join("tls.crt"));
    c.client_key = Some(d.join("tls.key"));
    c.tls_reload_interval_ms = 100;
    let mut gw = gw;
    gw.dps.push(DataPlane::start_with(c).await);
    eventually("attached", Duration::from_secs(10), || async {
        gw.dp(0).admin_status("/readyz").await == 200
    })
    .await;
    let ok = json!({"model": "gpt-5.1", "input": "hi"});
    assert_eq!(gw.post(0, &b.key, ok.clone()).await.status(), 200);
    assert!(handshake_trusting(gw.cp.addr, &old.ca_cert).await);

    // The server certificate rotates to the new CA's.
    write_server_files(server_dir.path(), &new, &[old, &new]);
    eventually(
        "new connections get the new certificate",
        Duration::from_secs(10),
        || async { handshake_trusting(gw.cp.addr, &new.ca_cert).await },
    )
    .await;
    assert!(
        !handshake_trusting(gw.cp.addr, &old.ca_cert).await,
        "the old certificate is no longer served"
    );
    // The data plane cannot even verify the new certificate, so its working session
    // proves its connection was kept, not re-established.
    assert_eq!(gw.dp(0).admin_status("/readyz").await, 200);
    assert_eq!(gw.post(0, &b.key, ok.clone()).await.status(), 200);

    // The data plane's files rotate to the new CA; the control plane then stops trusting
    // the old CA and restarts: the data plane reconnects only if it reloaded both its
    // trust and its client certificate.
    std::fs::write(d.join("ca.crt"), &new.ca_cert).unwrap();
    std::fs::write(d.join("tls.crt"), &new.data_plane_cert).unwrap();
    std::fs::write(d.join("tls.key"), &new.data_plane_key).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // a few reload intervals
    write_server_files(server_dir.path(), &new, &[&new]);
    let Gateway { cp, dps, .. } = gw;
    let cp = cp.restart().await;
    eventually(
        "the data plane reattaches with its rotated certificate",
        Duration::from_secs(15),
        || async { dps[0].admin_status("/readyz").await == 200 },
    )
    .await;
    for dp in dps {
        dp.stop().await;
    }
    cp.stop().await;
}

#[tokio::test]
async fn the_health_port_answers_kubernetes_probes_in_plaintext() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let health_addr = free.local_addr().unwrap();
    drop(free);
    let home = tollgate_tests::cluster::Home::embedded();
    let mut config = tollgate_tests::cluster::control_plane_config(home.data_dir());
    config.health_listen = Some(health_addr);
    let cp = ControlPlane::start_with(home, config).await;
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{health_addr}"))
        .unwrap()
        .connect_lazy();
    let mut health = tonic_health::pb::health_client::HealthClient::new(plain);
    eventually("health port up", Duration::from_secs(10), || {
        let mut health = health.clone();
        async move {
            let req = tonic_health::pb::HealthCheckRequest::default();
            health.check(req).await.is_ok()
        }
    })
    .await;
    let req = tonic_health::pb::HealthCheckRequest {
        service: GATEWAY.into(),
    };
    assert_eq!(
        health.check(req).await.unwrap().into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // Only health is served there: no Gateway, no Admin.
    let mut grpc = tonic::client::Grpc::new(
        tonic::transport::Endpoint::from_shared(format!("http://{health_addr}"))
            .unwrap()
            .connect_lazy(),
    );
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let r = grpc
        .unary(
            tonic::Request::new(()),
            format!("/{GATEWAY}/Authorize").parse().unwrap(),
            codec,
        )
        .await;
    assert_eq!(r.unwrap_err().code(), Code::Unimplemented);
    cp.stop().await;
}

#[tokio::test]
async fn the_admin_cli_speaks_tls_with_the_control_planes_ca_and_no_client_certificate() {
    let cp = ControlPlane::start().await;
    let ca = cp.home.data_dir().join("test-tls").join("ca.crt");
    let url = cp.url();
    let run = |args: Vec<String>| async move {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = tollgate_admin::main_with(args, &mut out, &mut err).await;
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    };
    let base = |extra: &[&str]| -> Vec<String> {
        [
            "tollgate-admin",
            "--endpoint",
            &url,
            "--token",
            tollgate_tests::cluster::ADMIN_TOKEN,
        ]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect()
    };
    let ca_arg = ca.to_str().unwrap();
    let (code, out, err) = run(base(&["--ca-cert", ca_arg, "--json", "user", "list"])).await;
    assert_eq!(code, 0, "{out}{err}");

    // Another CA does not vouch for the control plane's certificate.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.crt");
    std::fs::write(&other, DevPki::generate(&[]).unwrap().ca_cert).unwrap();
    let (code, _, err) = run(base(&[
        "--ca-cert",
        other.to_str().unwrap(),
        "user",
        "list",
    ]))
    .await;
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    cp.stop().await;
}
