//! Admin authentication: `authorization: Bearer <token>` compared in constant time.
//! Anonymous or wrong token → `UNAUTHENTICATED`, before any handler runs.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::Error;

#[derive(Clone)]
pub struct AdminAuth {
    // Compare digests, so that the comparison time depends on neither token's length.
    expected: Arc<[u8; 32]>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminAuth(<redacted>)")
    }
}

impl AdminAuth {
    pub fn new(token: &str) -> Self {
        Self {
            expected: Arc::new(Sha256::digest(token.as_bytes()).into()),
        }
    }

    fn check(&self, presented: &str) -> bool {
        let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        got.ct_eq(&*self.expected).into()
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        match token {
            Some(t) if self.check(t) => Ok(req),
            _ => Err(Error::Unauthenticated.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    }

    #[test]
    fn checks_bearer() {
        let mut a = AdminAuth::new("right-token-0123456789");
        assert!(a.call(req(Some("Bearer right-token-0123456789"))).is_ok());
        assert!(a.call(req(Some("bearer  right-token-0123456789 "))).is_ok());
        for bad in [
            None,
            Some("Bearer wrong"),
            Some("right-token-0123456789"),
            Some("Basic right-token-0123456789"),
        ] {
            let e = a.call(req(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
    }
}
