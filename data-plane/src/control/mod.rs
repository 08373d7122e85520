//! Everything that talks to the control plane: the gRPC channel and the session.

pub mod session;

use tollgate_shared::proto::gateway::v1::gateway_client::GatewayClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// A lazily connecting channel: the data plane starts (and answers health) even while
/// the control plane is down, and reconnects by itself.
pub fn channel(url: &str) -> Result<GatewayClient<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::Config(format!("bad control-plane URL: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(GatewayClient::new(endpoint.connect_lazy()))
}
