//! The Admin service's gate: a tower layer around the generated server that, before any
//! handler runs, authenticates the caller ([`Authenticator`]) and checks the scope the
//! RPC needs ([`access`]). An admitted request carries its [`Caller`] in its extensions
//! for the handlers (the audit log); a refused one is answered here.
//!
//! It works on the HTTP request rather than as a tonic interceptor because it needs the
//! method path (interceptors do not see it) and an async token lookup.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::CertificateDer;
use tower::Service;

use super::access::{access, method_of};
use super::caller::{Authenticator, Caller};
use super::cert_scopes::peer_certs;
use crate::error::Error;

#[derive(Debug, Clone)]
pub struct AdminGuard<S> {
    inner: S,
    auth: Authenticator,
}

impl<S> AdminGuard<S> {
    pub fn new(inner: S, auth: Authenticator) -> Self {
        Self { inner, auth }
    }
}

impl<S: NamedService> NamedService for AdminGuard<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for AdminGuard<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // Keep the service `poll_ready` readied for this call; leave a fresh clone behind.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let auth = self.auth.clone();
        let credentials = Credentials::of(&req);
        let path = req.uri().path().to_owned();
        Box::pin(async move {
            match admit(&auth, credentials, &path).await {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                    inner.call(req).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// What a request presents: its `authorization` header and its TLS peer certificates.
struct Credentials {
    /// `Some(Err)`: a header that is not text (so cannot hold a token).
    authorization: Option<Result<String, ()>>,
    certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl Credentials {
    fn of<B>(req: &http::Request<B>) -> Self {
        Self {
            authorization: req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().map(str::to_owned).map_err(|_| ())),
            certs: peer_certs(req.extensions()),
        }
    }
}

/// Authenticates, then authorizes: who you are is settled before what you may do, so an
/// anonymous caller learns nothing about scopes.
async fn admit(auth: &Authenticator, presented: Credentials, path: &str) -> Result<Caller, Status> {
    let authorization = match &presented.authorization {
        Some(Ok(v)) => Some(v.as_str()),
        Some(Err(())) => return Err(Error::Unauthenticated.into()),
        None => None,
    };
    let caller = auth
        .authenticate(authorization, presented.certs.as_deref().map(Vec::as_slice))
        .await?;
    let method = method_of(path).unwrap_or_default();
    let Some(needed) = access(method) else {
        return Err(Status::unimplemented(format!(
            "unknown Admin method {method:?}"
        )));
    };
    if !caller.scope.allows(needed.scope) {
        return Err(Error::PermissionDenied(format!(
            "{method} needs the `{}` scope; {} `{}` has `{}`",
            needed.scope,
            caller.kind.as_str(),
            caller.name,
            caller.scope
        ))
        .into());
    }
    Ok(caller)
}
