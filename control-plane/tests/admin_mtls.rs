//! Admin mTLS over a real TLS connection: the Admin service behind its guard, served by
//! tonic's TLS listener (which verifies client certificates against an operator admin CA
//! and hands the chain to the request), and clients presenting certificates whose subject
//! CN is mapped to a scope by `TOLLGATE_ADMIN_CERT_SCOPES` — or not mapped, or absent.
//!
//! The control plane's own TLS listener is built elsewhere; this test mounts the same
//! guard and service on tonic's listener so the certificate path is proven end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tollgate_control_plane::Config;
use tollgate_control_plane::admin::{AdminContext, AdminGuard, AdminService, Authenticator};
use tollgate_control_plane::crypto::SecretBox;
use tollgate_control_plane::events::Invalidations;
use tollgate_control_plane::storage::{AuditFilter, Store};
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::admin_client::AdminClient;
use tollgate_shared::proto::admin::v1::admin_server::AdminServer;
use tonic::Code;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server, ServerTlsConfig};

const BOOTSTRAP: &str = "bootstrap-token-0123456789abcdef";

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for `cn` (and DNS name `localhost`) signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, cn: &str) -> Identity {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Identity::from_pem(cert.pem(), key.serialize_pem())
}

struct Served {
    addr: std::net::SocketAddr,
    store: Store,
    server_ca: Ca,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn serve(admin_ca: &Ca, scopes: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("mtls.db").display());
    let secrets = SecretBox::from_base64(&SecretBox::generate_key_b64()).unwrap();
    let store = Store::connect(&url, secrets).await.unwrap();
    let config = Config::for_data_dir(dir.path());
    let service = AdminService::new(AdminContext::new(
        store.clone(),
        Invalidations::new(),
        &config,
    ));
    let guard = AdminGuard::new(
        AdminServer::new(service),
        Authenticator::new(BOOTSTRAP, store.clone(), scopes.parse().unwrap()),
    );
    let server_ca = ca("server CA");
    let tls = ServerTlsConfig::new()
        .identity(leaf(&server_ca, "control-plane"))
        .client_ca_root(Certificate::from_pem(&admin_ca.pem))
        // Token callers connect without a certificate.
        .client_auth_optional(true);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    let router = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(guard);
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.cancelled())
            .await
            .unwrap();
    });
    Served {
        addr,
        store,
        server_ca,
        stop,
        _dir: dir,
    }
}

async fn client(s: &Served, identity: Option<Identity>) -> AdminClient<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&s.server_ca.pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let channel = Channel::from_shared(format!("https://{}", s.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    AdminClient::new(channel)
}

#[tokio::test]
async fn admin_client_certificates_map_to_scopes() {
    let admin_ca = ca("admin CA");
    let s = serve(&admin_ca, "billing-svc=keys,reporting=read").await;

    // Bootstrap token over TLS without a certificate: a user to work on.
    let mut boot = client(&s, None).await;
    let mut req = tonic::Request::new(pb::CreateUserRequest {
        email: "m@example.com".into(),
        ..Default::default()
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {BOOTSTRAP}").parse().unwrap(),
    );
    let user = boot.create_user(req).await.unwrap().into_inner();

    // `keys` by certificate: keys yes, users no.
    let mut billing = client(&s, Some(leaf(&admin_ca, "billing-svc"))).await;
    let key = billing
        .create_key(pb::CreateKeyRequest {
            user_id: user.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = billing
        .create_user(pb::CreateUserRequest {
            email: "x@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("`admin` scope"), "{e:?}");

    // `read` by certificate.
    let mut reporting = client(&s, Some(leaf(&admin_ca, "reporting"))).await;
    reporting
        .query_usage(pb::QueryUsageRequest::default())
        .await
        .unwrap();
    let e = reporting
        .disable_key(pb::KeyIdRequest {
            id: key.key.unwrap().id,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A valid admin-CA certificate with an unmapped CN, and no credential at all: nobody.
    let mut stranger = client(&s, Some(leaf(&admin_ca, "data-plane-7"))).await;
    let e = stranger
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = boot
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // The certificate's subject is the audit actor.
    let log = s.store.list_audit(&AuditFilter::default()).await.unwrap();
    let actors: Vec<_> = log
        .iter()
        .map(|e| (e.actor_kind.as_str(), e.actor.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        actors,
        [
            ("certificate", "billing-svc", "CreateKey"),
            ("bootstrap", "bootstrap", "CreateUser"),
        ]
    );
    s.stop.cancel();
}

#[tokio::test]
async fn certificates_from_another_ca_are_refused_at_the_handshake() {
    let admin_ca = ca("admin CA");
    let s = serve(&admin_ca, "billing-svc=admin").await;
    let other = ca("someone else's CA");
    let channel = Channel::from_shared(format!("https://{}", s.addr))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&s.server_ca.pem))
                .domain_name("localhost")
                .identity(leaf(&other, "billing-svc")),
        )
        .unwrap()
        .connect()
        .await;
    // Refused during the handshake, or (TLS 1.3 reports a client certificate rejection
    // after the client's handshake is done) on the first call of the connection.
    if let Ok(channel) = channel {
        let r = AdminClient::new(channel)
            .list_users(pb::ListUsersRequest::default())
            .await;
        assert!(r.is_err(), "a foreign certificate was served: {r:?}");
    }
    let log = s.store.list_audit(&AuditFilter::default()).await.unwrap();
    assert!(log.is_empty());
    s.stop.cancel();
}
