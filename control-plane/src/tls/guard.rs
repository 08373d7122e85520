//! The `Gateway` guard: every method requires a connection whose client certificate the
//! data-plane CA issued. Anything else (no certificate, another CA, an expired one) is
//! `UNAUTHENTICATED` before the service sees the request, so no lease — and no upstream
//! credential — is ever served to an unauthenticated peer.

use tonic::{Request, Status};

use super::server::{PeerIdentity, PeerInfo};

#[derive(Debug, Clone)]
pub struct GatewayGuard {
    /// False only in explicit plaintext development mode, where no identity exists.
    require_data_plane: bool,
}

impl GatewayGuard {
    pub fn new(require_data_plane: bool) -> Self {
        Self { require_data_plane }
    }
}

impl tonic::service::Interceptor for GatewayGuard {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if !self.require_data_plane {
            return Ok(req);
        }
        match req.extensions().get::<PeerInfo>() {
            Some(PeerInfo {
                identity: PeerIdentity::DataPlane,
                ..
            }) => Ok(req),
            peer => {
                tracing::debug!(
                    remote_addr = ?peer.map(|p| p.remote_addr),
                    identity = ?peer.map(|p| &p.identity),
                    "Gateway call refused: no data-plane certificate"
                );
                Err(Status::unauthenticated(
                    "the Gateway service requires a data-plane client certificate issued by the operator's CA",
                ))
            }
        }
    }
}
