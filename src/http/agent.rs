//! The agent's local endpoint: `GET {prefix}/secret?instance_id=…` over a shared [`Agent`](crate::agent::Agent),
//! and `GET {prefix}/popup?instance_id=…&origin=…`, the same secret as an HTML page for browsers
//! that cannot fetch it (the fallback of the browser linker, `web/lanlink.js`).
//!
//! Every decision is the core's ([`Agent::handle_secret_request`](crate::agent::Agent::handle_secret_request)): the socket peer and the
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
use axum::http::{header, HeaderValue, Response, StatusCode};
use axum::routing::{any, get};
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
        .route(&format!("{prefix}/popup"), get(popup))
        // Unknown paths under the prefix only (no router-wide fallback: see `server::router`).
        .route(&format!("{prefix}/{{*rest}}"), any(not_found))
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

/// The single value of parameter `name` in a query string; `None` when absent, repeated or not
/// text.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query.unwrap_or(""))?;
    let mut found = pairs.into_iter().filter(|(k, _)| k == name);
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

/// Runs the agent's checks on a request for the secret (shared by `GET …/secret` and the popup
/// page): the socket peer, the forwarding headers, `Host`, `Origin` and the single
/// `instance_id` parameter go to the core; the secret or a ready refusal comes out.
fn check_request(
    agent: &SharedAgent,
    parts: &axum::http::request::Parts,
) -> Result<wire::SecretReply, (StatusCode, &'static str)> {
    check_request_with(agent, parts, |agent, request| {
        agent.handle_secret_request(Instant::now(), request)
    })
}

/// The checks of [`check_request`], with `decide` in place of serving the secret.
fn check_request_with<T>(
    agent: &SharedAgent,
    parts: &axum::http::request::Parts,
    decide: impl FnOnce(&mut crate::agent::Agent, &SecretRequest<'_>) -> Result<T, SecretRefusal>,
) -> Result<T, (StatusCode, &'static str)> {
    let refuse = |status, code| (status, code);
    // axum routes HEAD to GET handlers; a HEAD would be "served" without a body, and logged as
    // served. Refuse it.
    if parts.method == axum::http::Method::HEAD {
        return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    }
    let Some(peer) = peer_of(parts) else {
        return Err(refuse(StatusCode::FORBIDDEN, "unresolvable_client"));
    };
    let Some(instance_id) = query_param(parts.uri.query(), "instance_id") else {
        return Err(refuse(StatusCode::BAD_REQUEST, "malformed"));
    };
    let text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    // Several Host or Origin lines are ambiguous: refuse rather than pick one.
    if parts.headers.get_all(header::HOST).iter().count() > 1 {
        return Err(refuse(StatusCode::FORBIDDEN, SecretRefusal::BadHost.code()));
    }
    if parts.headers.get_all(header::ORIGIN).iter().count() > 1 {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            SecretRefusal::BadOrigin.code(),
        ));
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
    // The events go to the driver's log; only the outcome is traced here, without the secret.
    let result = decide(&mut lock(agent), &request);
    match result {
        Ok(answer) => {
            tracing::info!(target: "lanlink::agent", %peer, "secret request accepted");
            Ok(answer)
        }
        Err(refusal) => {
            tracing::info!(target: "lanlink::agent", %peer, reason = refusal.code(), "secret refused");
            Err(refuse(status_of_secret_refusal(&refusal), refusal.code()))
        }
    }
}

async fn secret(State(agent): State<SharedAgent>, request: Request) -> Response<Body> {
    let (parts, _) = request.into_parts();
    match check_request(&agent, &parts) {
        Ok(reply) => {
            let mut response = json_response(StatusCode::OK, wire::encode(&reply));
            let origin = parts
                .headers
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok());
            if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
                let headers = response.headers_mut();
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            response
        }
        Err((status, code)) => error_response(status, code),
    }
}

/// The popup page's template (`web/popup.html`).
const POPUP_TEMPLATE: &str = include_str!("../../web/popup.html");

/// `GET {prefix}/popup?instance_id=…&origin=…`: the fallback for browsers whose linking page
/// cannot fetch the secret itself (mixed content, Local Network Access refused).
///
/// Refused before any secret check, as an HTML page: a load that is not a top-level navigation
/// (`Sec-Fetch-Dest` other than `document`, or `Sec-Fetch-Mode` other than `navigate`, when the
/// browser sends them: `403 not_top_level`), and an `origin` parameter that is absent, repeated
/// or not a configured origin (`403 bad_origin`). Then exactly the checks of `GET …/secret`
/// ([`Agent::check_secret_access`](crate::agent::Agent::check_secret_access): no secret, no
/// "served" event). On success the page, which holds no secret, runs the hello / ready exchange
/// with `window.opener` (target: that exact origin), then fetches the secret and posts
/// `{type: "lanlink-secret", version: 1, instance_id, local_secret}` the same way; on a refusal it
/// posts `{type: "lanlink-refused", version: 1, instance_id, error}` there instead (when the origin
/// is configured) and shows the reason in words.
async fn popup(State(agent): State<SharedAgent>, request: Request) -> Response<Body> {
    let (parts, _) = request.into_parts();
    let requested_id = query_param(parts.uri.query(), "instance_id")
        .and_then(|id| id.parse::<crate::InstanceId>().ok());
    let fetch_header = |name: &str, wanted: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .all(|v| v.as_bytes().eq_ignore_ascii_case(wanted.as_bytes()))
    };
    if !fetch_header("sec-fetch-dest", "document") || !fetch_header("sec-fetch-mode", "navigate") {
        return popup_refused(StatusCode::FORBIDDEN, "not_top_level", None, requested_id);
    }
    let target = query_param(parts.uri.query(), "origin")
        .filter(|origin| lock(&agent).origin_allowed(origin))
        .map(|origin| origin.trim().to_ascii_lowercase());
    let Some(target) = target else {
        return popup_refused(
            StatusCode::FORBIDDEN,
            SecretRefusal::BadOrigin.code(),
            None,
            requested_id,
        );
    };
    let accepted = check_request_with(&agent, &parts, |agent, request| {
        agent.check_secret_access(Instant::now(), request)
    });
    match accepted {
        Ok(()) => {
            let instance_id = lock(&agent).instance_id();
            // No secret in the page: its script fetches it from `secret` (same origin) only once
            // the opener has answered its hello from `target`.
            let data = serde_json::json!({
                "target": target,
                "instance_id": instance_id,
                "secret_url": format!("secret?instance_id={instance_id}"),
                "message": null,
            });
            popup_page(StatusCode::OK, true, "", &data.to_string())
        }
        Err((status, code)) => popup_refused(status, code, Some(&target), requested_id),
    }
}

/// The popup page for a refusal: shows it in words, and posts it to `target` when that is a
/// configured origin.
fn popup_refused(
    status: StatusCode,
    code: &'static str,
    target: Option<&str>,
    instance_id: Option<crate::InstanceId>,
) -> Response<Body> {
    let data = serde_json::json!({
        "target": target,
        "message": {
            "type": "lanlink-refused",
            "version": 1,
            "instance_id": instance_id,
            "error": code,
        },
    });
    popup_page(status, false, code, &data.to_string())
}

/// Fills the popup template and sets the headers that keep it out of frames, caches and other
/// origins' reach.
fn popup_page(status: StatusCode, ok: bool, code: &str, data: &str) -> Response<Body> {
    let nonce = {
        let mut bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut crate::os_rng(), &mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    // JSON inside a script element: escape what could end it or open a comment.
    let data = data
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let page = POPUP_TEMPLATE
        .replace("{{NONCE}}", &nonce)
        .replace("{{OK}}", if ok { "1" } else { "0" })
        .replace("{{ERROR}}", code)
        .replace("{{DATA}}", &data);
    let mut response = Response::new(Body::from(page));
    *response.status_mut() = status;
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(headers, "content-type", "text/html; charset=utf-8");
    set(headers, "cache-control", "no-store");
    set(headers, "content-security-policy", &csp);
    set(headers, "x-frame-options", "DENY");
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "no-referrer");
    set(headers, "cross-origin-resource-policy", "same-origin");
    response
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
