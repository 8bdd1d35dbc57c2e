//! The agent's local endpoint: `GET {prefix}/secret?instance_id=…` over a shared [`Agent`](crate::agent::Agent),
//! and `GET {prefix}/popup?instance_id=…&origin=…`, the same secret as an HTML page for browsers
//! that cannot fetch it (the fallback of the browser linker, `web/lanlink.js`).
//! It must not decide any rule of the endpoint, and must never log the answer's body (it may hold
//! the secret): it logs the peer, the path and the status.
//!
//! Every rule is the core's: the routes hand the request's method, target, headers and socket
//! peer to [`crate::endpoint::handle`] and write its answer as it is, so another HTTP stack that
//! calls the same function answers byte for byte alike. Every decision is the agent's ([`Agent::handle_secret_request`](crate::agent::Agent::handle_secret_request)): the socket peer and the
//! forwarding headers (read only from the agent's trusted proxies), `Host`, `Origin` and the
//! `instance_id` go in; the secret or a refusal comes out. CORS: a preflight (`OPTIONS`) is answered
//! only for a configured origin, with that exact origin (never `*`) and, when the browser asks,
//! `Access-Control-Allow-Private-Network: true` (the Private Network Access preflight of Chromium
//! before 142; Local Network Access, from 142, sends no preflight but asks the user, and then needs
//! only the exact-origin CORS of the `GET`); a successful `GET` with an `Origin` echoes that
//! origin.
//!
//! The popup page is answered only under the same checks (without counting as serving the
//! secret), for a top-level navigation, and for a configured target `origin`. It holds no secret:
//! its script says hello to `window.opener` with that exact origin as the target (never `*`), and
//! only when the opener answers from that origin fetches the secret from `…/secret` and posts it
//! back the same way. It cannot be framed, cached or read by another origin. `PROTOCOL.md` has
//! the details.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Response, StatusCode};
use axum::routing::any;
use axum::Router;

use super::server::{core_request, header_pairs, response_of};
use crate::driver::{lock, SharedAgent};
use crate::endpoint::{self, LocalResponse};
use crate::error::SecretRefusal;

/// The agent's local routes under `prefix`.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Instant;
/// use lanlink::agent::{Agent, AgentConfig};
/// use lanlink::http::{agent::router, DEFAULT_PREFIX};
/// use lanlink::DeviceInfo;
/// let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, DeviceInfo::default());
/// let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap();
/// let app = router(Arc::new(Mutex::new(agent)), DEFAULT_PREFIX);
/// # let _ = app;
/// ```
pub fn router(agent: SharedAgent, prefix: &str) -> Router {
    let trimmed = prefix.trim_end_matches('/').to_owned();
    let handler = move |State(agent): State<SharedAgent>, request: Request| {
        let prefix = trimmed.clone();
        async move { answer(&agent, &prefix, request) }
    };
    let prefix = prefix.trim_end_matches('/');
    // Only paths under the prefix (no router-wide fallback: see `server::router`); the core
    // answers unknown ones `404 not_found`.
    Router::new()
        .route(&format!("{prefix}/secret"), any(handler.clone()))
        .route(&format!("{prefix}/popup"), any(handler.clone()))
        .route(&format!("{prefix}/{{*rest}}"), any(handler))
        .with_state(agent)
}

/// The HTTP status of an agent refusal (see [`endpoint::status_of_secret_refusal`]).
pub fn status_of_secret_refusal(refusal: &SecretRefusal) -> StatusCode {
    StatusCode::from_u16(endpoint::status_of_secret_refusal(refusal))
        .unwrap_or(StatusCode::FORBIDDEN)
}

/// Hands one request to the core's endpoint and writes its answer.
fn answer(agent: &SharedAgent, prefix: &str, request: Request) -> Response<Body> {
    let (parts, _) = request.into_parts();
    let headers = header_pairs(&parts);
    let local = core_request(&parts, &headers);
    let answer = endpoint::handle(
        &mut lock(agent),
        Instant::now(),
        &mut crate::os_rng(),
        prefix,
        &local,
    );
    // The outcome only, never the body (it may hold the secret).
    tracing::info!(
        target: "lanlink::agent",
        peer = ?local.peer,
        path = local.path,
        status = answer.status,
        "local endpoint answered"
    );
    into_response(answer)
}

fn into_response(answer: LocalResponse) -> Response<Body> {
    response_of(answer.status, answer.headers, &answer.body)
}
