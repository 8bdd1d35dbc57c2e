//! An agent transport over the real HTTP client whose first successful redeem reply is lost on
//! the way back (the server committed; the agent hears nothing).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lanlink::http::client::HttpAgentClient;
use lanlink::transport::{AgentServerTransport, TransportError};
use lanlink::wire::{Announce, AnnounceReply, RedeemReply, RedeemRequest};
use lanlink::AuthToken;

/// Drops the first redeem reply and keeps its token in `lost`.
pub struct LoseFirstReply {
    pub inner: HttpAgentClient,
    pub lost: Arc<Mutex<Option<AuthToken>>>,
}

#[async_trait]
impl AgentServerTransport for LoseFirstReply {
    async fn announce(&self, announce: &Announce) -> Result<AnnounceReply, TransportError> {
        self.inner.announce(announce).await
    }

    async fn redeem(&self, request: &RedeemRequest) -> Result<RedeemReply, TransportError> {
        let reply = self.inner.redeem(request).await?;
        let mut lost = self.lost.lock().unwrap();
        if lost.is_none() {
            *lost = Some(reply.auth_token);
            return Err(TransportError::Unreachable("connection reset".into()));
        }
        Ok(reply)
    }
}
