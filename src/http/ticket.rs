//! The route that issues network tickets (features `http` and `ticket`):
//! `POST {prefix}/agent/ticket`, body an [`Announce`](crate::wire::Announce), answered `200`
//! [`TicketReply`].
//! It must not record anything or take a queued message. Unlike the other routes it is not yet a
//! shell over a core function: the presence-key check, the body limit and the client resolution are
//! applied here.
//!
//! The announcement only proves the presence key (its instance id must derive from the key,
//! else `403 forged_instance`); nothing is recorded and no queued message is taken. The network
//! is resolved from the socket peer and forwarding headers exactly as for every other route
//! (`403 unresolvable_client` when it cannot be). Merge it into the server's router:
//!
//! ```
//! use std::sync::Arc;
//! use lanlink::http::{server::router, ticket, BearerTokens, DEFAULT_PREFIX};
//! use lanlink::server::{Server, ServerConfig};
//! use lanlink::ticket::TicketKey;
//! let config = ServerConfig::default();
//! let server = Arc::new(Server::new(config.clone()).unwrap());
//! let key = TicketKey::generate(&mut lanlink::os_rng());
//! let app = router(server, Arc::new(BearerTokens::default()), DEFAULT_PREFIX)
//!     .merge(ticket::router(key, config, DEFAULT_PREFIX));
//! # let _ = app;
//! ```

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Response, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, TimeDelta, Utc};

use super::server::peer_of;
use super::{code_response, header_lines, json_response, read_body};
use super::{wire_error_response, MAX_BODY_BYTES};

use crate::addr::ForwardedHeaders;
use crate::error::{Refusal, WireCode};
use crate::server::ServerConfig;
use crate::ticket::{TicketKey, TicketReply, DEFAULT_TICKET_TTL};
use crate::wire;

struct Issuer {
    key: TicketKey,
    config: ServerConfig,
    ttl: TimeDelta,
}

/// `POST {prefix}/agent/ticket`, issuing tickets under `key` that last [`DEFAULT_TICKET_TTL`].
/// `config` gives the client-address resolver and the IPv6 grouping: pass the server's own.
pub fn router(key: TicketKey, config: ServerConfig, prefix: &str) -> Router {
    router_with_ttl(key, config, prefix, DEFAULT_TICKET_TTL)
}

/// As [`router`], with tickets that last `ttl`.
pub fn router_with_ttl(
    key: TicketKey,
    config: ServerConfig,
    prefix: &str,
    ttl: TimeDelta,
) -> Router {
    let issuer = Arc::new(Issuer { key, config, ttl });
    let prefix = prefix.trim_end_matches('/');
    Router::new()
        .route(&format!("{prefix}/agent/ticket"), post(issue))
        .with_state(issuer)
}

async fn issue(State(issuer): State<Arc<Issuer>>, request: Request) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let Some(peer) = peer_of(&parts) else {
        return code_response(WireCode::UnresolvableClient);
    };
    // The announcement carries the agent's presence key: zeroized when dropped.
    let bytes = match read_body(body, MAX_BODY_BYTES).await {
        Ok(bytes) => zeroize::Zeroizing::new(bytes.to_vec()),
        Err(response) => return response,
    };
    let announce = match wire::decode_announce(&bytes) {
        Ok(announce) => announce,
        Err(err) => return wire_error_response(&err),
    };
    if !announce.presence_key.proves(&announce.instance_id) {
        return code_response(Refusal::ForgedInstance.code());
    }
    let forwarded = header_lines(&parts.headers, "forwarded");
    let x_forwarded_for = header_lines(&parts.headers, "x-forwarded-for");
    let headers = ForwardedHeaders {
        forwarded: &forwarded,
        x_forwarded_for: &x_forwarded_for,
    };
    let ip = match issuer.config.resolver().resolve(peer, headers) {
        Ok(ip) => ip,
        Err(err) => {
            return code_response(Refusal::ClientAddr(err).code());
        }
    };
    let network = issuer.config.network_of(ip);
    let now = DateTime::<Utc>::from(SystemTime::now());
    let issued = issuer
        .key
        .issue(now, issuer.ttl, network, announce.instance_id);
    tracing::info!(target: "lanlink::server", %network, instance_id = %announce.instance_id, "ticket issued");
    json_response(
        StatusCode::OK,
        wire::encode(&TicketReply {
            ticket: issued.token,
            client_id: issuer.key.client_id(&announce.instance_id),
            expires_at: issued.ticket.expires_at,
        }),
    )
}
