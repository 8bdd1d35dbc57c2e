//! The route that issues network tickets (features `http` and `ticket`):
//! `POST {prefix}/agent/ticket`, body an [`Announce`](crate::wire::Announce), answered `200`
//! [`TicketReply`](crate::ticket::TicketReply).
//! It must not record anything, take a queued message, or decide a rule: it is a shell over the
//! core function [`issue_ticket`], which any other HTTP
//! stack serves the same way.
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
use axum::http::Response;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, TimeDelta, Utc};

use super::server::{core_request, header_pairs, into_response};
use super::{read_body_state, MAX_BODY_BYTES};

use crate::server::endpoint::{issue_ticket, RequestBody};
use crate::server::ServerConfig;
use crate::ticket::{TicketKey, DEFAULT_TICKET_TTL};

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

/// The route: the core's [`issue_ticket`] over the request's bytes.
async fn issue(State(issuer): State<Arc<Issuer>>, request: Request) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let headers = header_pairs(&parts);
    let request = core_request(&parts, &headers);
    let read = read_body_state(body, MAX_BODY_BYTES).await;
    let body = match &read {
        Ok(bytes) => RequestBody::Complete(bytes),
        Err(state) => *state,
    };
    let now = DateTime::<Utc>::from(SystemTime::now());
    let answer = issue_ticket(&issuer.key, &issuer.config, issuer.ttl, now, &request, body);
    if let Some((network, instance_id)) = answer.issued {
        tracing::info!(target: "lanlink::server", %network, %instance_id, "ticket issued");
    }
    into_response(answer.response)
}
