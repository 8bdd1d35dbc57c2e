//! The agent's local endpoint: `GET {prefix}/secret?instance_id=…` over a shared [`Agent`](crate::agent::Agent).
//!
//! Every decision is the core's ([`Agent::handle_secret_request`](crate::agent::Agent::handle_secret_request)): the socket peer and the
//! forwarding headers (read only from the agent's trusted proxies), `Host`, `Origin` and the
//! `instance_id` go in; the secret or a refusal comes out. CORS: a preflight (`OPTIONS`) is answered
//! only for a configured origin, with that exact origin (never `*`) and, when the browser asks,
//! `Access-Control-Allow-Private-Network: true`; a successful `GET` with an `Origin` echoes that
//! origin.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Response, StatusCode};
use axum::routing::get;
use axum::Router;

use super::server::{method_not_allowed, not_found, peer_of};
use super::{error_response, header_lines, json_response};
use crate::addr::ForwardedHeaders;
use crate::agent::SecretRequest;
use crate::driver::{lock, SharedAgent};
use crate::error::SecretRefusal;
use crate::wire;

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
    let prefix = prefix.trim_end_matches('/');
    Router::new()
        .route(&format!("{prefix}/secret"), get(secret).options(preflight))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(agent)
}

/// The HTTP status of an agent refusal.
pub fn status_of_secret_refusal(refusal: &SecretRefusal) -> StatusCode {
    match refusal {
        SecretRefusal::WrongInstance => StatusCode::NOT_FOUND,
        _ => StatusCode::FORBIDDEN,
    }
}

/// The single `instance_id` of a query string; `None` when absent, repeated or not text.
fn instance_id_param(query: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query.unwrap_or(""))?;
    let mut found = pairs.into_iter().filter(|(k, _)| k == "instance_id");
    let (_, value) = found.next()?;
    found.next().is_none().then_some(value)
}

fn serde_urlencoded_pairs(query: &str) -> Option<Vec<(String, String)>> {
    let axum::extract::Query(pairs) = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{query}").parse().ok()?,
    )
    .ok()?;
    Some(pairs)
}

async fn secret(State(agent): State<SharedAgent>, request: Request) -> Response<Body> {
    let (parts, _) = request.into_parts();
    // axum routes HEAD to GET handlers; a HEAD would be "served" without a body, and logged as
    // served. Refuse it.
    if parts.method == axum::http::Method::HEAD {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    let Some(peer) = peer_of(&parts) else {
        return error_response(StatusCode::FORBIDDEN, "unresolvable_client");
    };
    let Some(instance_id) = instance_id_param(parts.uri.query()) else {
        return error_response(StatusCode::BAD_REQUEST, "malformed");
    };
    let text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    // Several Host or Origin lines are ambiguous: refuse rather than pick one.
    if parts.headers.get_all(header::HOST).iter().count() > 1 {
        return error_response(StatusCode::FORBIDDEN, SecretRefusal::BadHost.code());
    }
    if parts.headers.get_all(header::ORIGIN).iter().count() > 1 {
        return error_response(StatusCode::FORBIDDEN, SecretRefusal::BadOrigin.code());
    }
    // RFC 9112 §3.2.2: with an absolute-form target the target's authority is the host, and the
    // Host header is ignored.
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| text(header::HOST));
    let origin = text(header::ORIGIN);
    let forwarded = header_lines(&parts.headers, "forwarded");
    let xff = header_lines(&parts.headers, "x-forwarded-for");
    let request = SecretRequest {
        peer,
        forwarded: ForwardedHeaders {
            forwarded: &forwarded,
            x_forwarded_for: &xff,
        },
        host,
        origin,
        instance_id: &instance_id,
    };
    let result = {
        let mut guard = lock(&agent);
        let result = guard.handle_secret_request(Instant::now(), &request);
        // The events go to the driver's log; only the outcome is traced here, without the secret.
        result
    };
    match result {
        Ok(reply) => {
            tracing::info!(target: "lanlink::agent", %peer, "secret served");
            let mut response = json_response(StatusCode::OK, wire::encode(&reply));
            if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
                let headers = response.headers_mut();
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            response
        }
        Err(refusal) => {
            tracing::info!(target: "lanlink::agent", %peer, reason = refusal.code(), "secret refused");
            error_response(status_of_secret_refusal(&refusal), refusal.code())
        }
    }
}

async fn preflight(State(agent): State<SharedAgent>, request: Request) -> Response<Body> {
    let (parts, _) = request.into_parts();
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let (host_ok, origin_ok) = {
        let guard = lock(&agent);
        let host_ok = host.is_some_and(|h| guard.host_allowed(h));
        let origin_ok = origin.is_some_and(|o| guard.origin_allowed(o));
        (host_ok, origin_ok)
    };
    if !host_ok {
        return error_response(StatusCode::FORBIDDEN, SecretRefusal::BadHost.code());
    }
    let method_ok = parts
        .headers
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .is_some_and(|m| m.as_bytes() == b"GET");
    let (Some(origin), true, true) = (origin, origin_ok, method_ok) else {
        return error_response(StatusCode::FORBIDDEN, SecretRefusal::BadOrigin.code());
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("60"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    let wants_private_network = parts
        .headers
        .get("access-control-request-private-network")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if wants_private_network {
        headers.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    response
}
