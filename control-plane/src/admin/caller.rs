//! Who is calling the Admin API. An identity is a name with a scope, from one of three
//! sources, tried in this order:
//!
//! 1. a bearer token equal to the bootstrap token (`TOLLGATE_ADMIN_TOKEN`): `bootstrap`,
//!    scope `admin`, compared in constant time;
//! 2. a bearer token whose SHA-256 is a live named admin token: the token's name and scope;
//! 3. no bearer token, and a client certificate (verified by the TLS acceptor) whose
//!    subject CN is mapped in `TOLLGATE_ADMIN_CERT_SCOPES`: the CN and its scope.
//!
//! A bearer token that matches nothing, a revoked or expired token, or no credential at
//! all is `UNAUTHENTICATED`; a presented token is never ignored in favour of a certificate.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_shared::domain::AdminScope;
use tollgate_shared::now_ms;
use tonic::transport::CertificateDer;

use super::cert_scopes::{CertScopes, subject_cn};
use super::key_secret;
use crate::error::{Error, Result};
use crate::storage::Store;

/// Where an identity came from; stored as the audit entry's `actor_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    Bootstrap,
    Token,
    Certificate,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bootstrap => "bootstrap",
            Self::Token => "token",
            Self::Certificate => "certificate",
        }
    }
}

/// The authenticated caller of one Admin request (put in the request's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub kind: ActorKind,
    /// Token name, certificate subject CN, or `bootstrap`.
    pub name: String,
    pub scope: AdminScope,
}

impl Caller {
    pub fn bootstrap() -> Self {
        Self {
            kind: ActorKind::Bootstrap,
            name: "bootstrap".to_owned(),
            scope: AdminScope::Admin,
        }
    }
}

/// Resolves credentials to a [`Caller`]. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    // Compare digests, so that the comparison time depends on neither token's length.
    bootstrap: Arc<[u8; 32]>,
    store: Store,
    cert_scopes: Arc<CertScopes>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("bootstrap", &"<redacted>")
            .field("cert_scopes", &self.cert_scopes)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(bootstrap_token: &str, store: Store, cert_scopes: CertScopes) -> Self {
        Self {
            bootstrap: Arc::new(Sha256::digest(bootstrap_token.as_bytes()).into()),
            store,
            cert_scopes: Arc::new(cert_scopes),
        }
    }

    /// The caller behind a request's `authorization` header and peer certificates.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        peer_certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Caller> {
        match authorization {
            Some(header) => {
                let token = bearer(header).ok_or(Error::Unauthenticated)?;
                self.token_caller(token).await
            }
            None => peer_certs
                .and_then(|chain| self.certificate_caller(chain))
                .ok_or(Error::Unauthenticated),
        }
    }

    async fn token_caller(&self, token: &str) -> Result<Caller> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if bool::from(digest.ct_eq(&*self.bootstrap)) {
            return Ok(Caller::bootstrap());
        }
        // A hash lookup: the database compares digests, which reveal nothing of the token.
        let now = now_ms();
        let stored = self
            .store
            .get_admin_token_by_hash(&key_secret::hash(token))
            .await?;
        let Some(stored) = stored.filter(|t| t.is_live(now)) else {
            return Err(Error::Unauthenticated);
        };
        if let Err(e) = self.store.touch_admin_token(stored.id, now).await {
            // The call is authenticated; a missed last-used stamp is not worth refusing it.
            tracing::warn!(error = %e, token = %stored.name, "recording admin token use failed");
        }
        Ok(Caller {
            kind: ActorKind::Token,
            name: stored.name,
            scope: stored.scope,
        })
    }

    fn certificate_caller(&self, chain: &[CertificateDer<'static>]) -> Option<Caller> {
        let leaf = chain.first()?;
        let cn = subject_cn(leaf)?;
        let scope = self.cert_scopes.scope_of(&cn)?;
        Some(Caller {
            kind: ActorKind::Certificate,
            name: cn,
            scope,
        })
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, surrounding blanks ignored).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretBox;

    const BOOTSTRAP: &str = "bootstrap-token-0123456789";

    async fn authenticator(scopes: &str) -> (Authenticator, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("auth.db").display());
        let secrets = SecretBox::from_base64(&SecretBox::generate_key_b64()).unwrap();
        let store = Store::connect(&url, secrets).await.unwrap();
        (
            Authenticator::new(BOOTSTRAP, store, scopes.parse().unwrap()),
            dir,
        )
    }

    fn cert(cn: &str) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec![format!("{cn}.internal")]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[tokio::test]
    async fn certificate_subjects_map_to_scopes() {
        let (auth, _dir) = authenticator("billing-svc=keys,reporting=read").await;
        let billing = [cert("billing-svc")];
        let caller = auth.authenticate(None, Some(&billing)).await.unwrap();
        assert_eq!(
            caller,
            Caller {
                kind: ActorKind::Certificate,
                name: "billing-svc".into(),
                scope: AdminScope::Keys
            }
        );
        let reporting = [cert("reporting")];
        let caller = auth.authenticate(None, Some(&reporting)).await.unwrap();
        assert_eq!(caller.scope, AdminScope::Read);

        // An unmapped subject, no chain, or no credential at all: nobody.
        for chain in [Some(&[cert("data-plane-1")][..]), Some(&[][..]), None] {
            let e = auth.authenticate(None, chain).await.unwrap_err();
            assert!(matches!(e, Error::Unauthenticated), "{e}");
        }
        // A presented token decides, even next to a mapped certificate.
        let e = auth
            .authenticate(Some("Bearer wrong-token"), Some(&billing))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unauthenticated), "{e}");
        let caller = auth
            .authenticate(Some(&format!("Bearer {BOOTSTRAP}")), Some(&billing))
            .await
            .unwrap();
        assert_eq!(caller, Caller::bootstrap());
    }

    #[tokio::test]
    async fn certificates_grant_nothing_without_a_mapping() {
        let (auth, _dir) = authenticator("").await;
        let e = auth
            .authenticate(None, Some(&[cert("billing-svc")]))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unauthenticated), "{e}");
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("abc"), None);
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer  "), None);
    }
}
