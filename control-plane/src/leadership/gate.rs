//! The leader-only gate: a tower layer around the `Gateway` and `Admin` servers. On a
//! standby every call is refused with `UNAVAILABLE`, naming the leader in the message and
//! in `x-tollgate-leader` metadata when known, so a data plane can follow it.

use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tokio::sync::watch;
use tonic::Status;
use tonic::server::NamedService;
use tower::Service;

use super::Role;

/// Metadata carrying the leader's advertised URL on a standby's refusal.
pub const LEADER_METADATA: &str = "x-tollgate-leader";

#[derive(Debug, Clone)]
pub struct LeaderOnly<S> {
    inner: S,
    role: watch::Receiver<Role>,
}

impl<S> LeaderOnly<S> {
    pub fn new(inner: S, role: watch::Receiver<Role>) -> Self {
        Self { inner, role }
    }
}

impl<S: NamedService> NamedService for LeaderOnly<S> {
    const NAME: &'static str = S::NAME;
}

/// The refusal a replica in `role` answers with (`None` for the leader).
pub fn refusal(role: &Role) -> Option<Status> {
    let leader = match role {
        Role::Leader { .. } => return None,
        Role::Standby { leader } => leader.as_deref(),
        Role::SteppedDown => None,
    };
    let mut status = match leader {
        Some(url) => Status::unavailable(format!("not the leader; the leader is {url}")),
        None => Status::unavailable("not the leader; no leader known yet"),
    };
    if let Some(v) = leader.and_then(|url| url.parse().ok()) {
        status.metadata_mut().insert(LEADER_METADATA, v);
    }
    Some(status)
}

impl<S, B, RB> Service<http::Request<B>> for LeaderOnly<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let refused = refusal(&self.role.borrow());
        match refused {
            Some(status) => Either::Left(ready(Ok(status.into_http()))),
            None => Either::Right(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_leader_is_let_through() {
        assert!(refusal(&Role::Leader { term: 7 }).is_none());
        for role in [Role::Standby { leader: None }, Role::SteppedDown] {
            let s = refusal(&role).unwrap();
            assert_eq!(s.code(), tonic::Code::Unavailable);
            assert!(s.metadata().get(LEADER_METADATA).is_none());
        }
    }

    #[test]
    fn a_standby_names_the_leader() {
        let s = refusal(&Role::Standby {
            leader: Some("https://cp-1:7600".into()),
        })
        .unwrap();
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("https://cp-1:7600"), "{}", s.message());
        assert_eq!(
            s.metadata().get(LEADER_METADATA).unwrap().to_str().unwrap(),
            "https://cp-1:7600"
        );
    }
}
