//! The agent's local endpoint as a function, with no HTTP library in it (sans-IO): a request's
//! method, target, headers and socket peer go in, a status, headers and body come out, with
//! every rule of `PROTOCOL.md` ("The agent's local endpoint") applied. Any HTTP stack serves the
//! endpoint by calling [`handle`] and writing its answer as given; the axum adapter
//! (`http::agent`, feature `http-server`) is a thin shell over it, so every stack answers byte for byte alike.
//! A library that hands over the raw request target splits it with [`split_target`];
//! `examples/blocking_agent.rs` serves the endpoint over `tiny_http` that way, with no tokio.
//!
//! The function must not do I/O, read a clock or draw from a global RNG: the request, `now` and the
//! RNG come in as arguments, and every decision about the secret stays the agent's.
//!
//! Routes under `prefix`:
//!
//! - `GET {prefix}/secret?instance_id=…`: the secret ([`Agent::handle_secret_request`]), as
//!   `{"local_secret": …}`, with `Cache-Control: no-store`; a request with `Origin` gets that
//!   exact origin back in `Access-Control-Allow-Origin` (never `*`) and `Vary: Origin`.
//! - `OPTIONS {prefix}/secret`: the CORS preflight, answered only for an allowed `Host` and a
//!   configured `Origin` asking for `GET`, with `Access-Control-Allow-Private-Network: true` when
//!   the browser asks for it (Private Network Access).
//! - `GET {prefix}/popup?instance_id=…&origin=…`: the popup page for browsers that cannot fetch
//!   the secret themselves (it holds no secret; see `http::agent`, feature `http-server`).
//! - anything else: `404 not_found`, or `405 method_not_allowed` on a known path.
//!
//! Refusals are `{"error": code}` with the status `PROTOCOL.md` gives. A request naming
//! `instance_id` not exactly once is `400 malformed`; several `Host` or `Origin` lines are
//! refused (`bad_host`, `bad_origin`); `HEAD` is `405` (it would serve without a body).
//!
//! ```
//! use std::time::Instant;
//! use lanlink::agent::{Agent, AgentConfig};
//! use lanlink::endpoint::{self, LocalRequest};
//! let now = Instant::now();
//! let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
//! let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
//! let query = format!("instance_id={}", agent.instance_id());
//! let headers = [("host", &b"192.168.1.50:8080"[..])];
//! let request = LocalRequest {
//!     method: "GET",
//!     path: "/lanlink/v1/secret",
//!     query: Some(&query),
//!     authority: None,
//!     headers: &headers,
//!     peer: Some("192.168.1.20".parse().unwrap()),
//! };
//! let answer = endpoint::handle(&mut agent, now, &mut lanlink::os_rng(), "/lanlink/v1", &request);
//! assert_eq!(answer.status, 200);
//! assert!(answer.headers.contains(&("cache-control", "no-store".to_owned())));
//! // A caller off the LAN gets a refusal, and no secret.
//! let outside = LocalRequest { peer: Some("100.64.0.7".parse().unwrap()), ..request };
//! let refused = endpoint::handle(&mut agent, now, &mut lanlink::os_rng(), "/lanlink/v1", &outside);
//! assert_eq!((refused.status, &refused.body[..]), (403, &br#"{"error":"not_local"}"#[..]));
//! ```

use std::net::IpAddr;
use std::time::Instant;

use rand::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::addr::ForwardedHeaders;
use crate::agent::{Agent, SecretRequest};
use crate::error::{SecretRefusal, WireCode};
use crate::wire::{self, ErrorBody};

/// One HTTP request as any HTTP library parses it: what the agent's local endpoint ([`handle`])
/// and the server's routes ([`server::endpoint::handle`](crate::server::endpoint::handle)) read.
/// The body, if any, is given beside it.
///
/// ```
/// # use std::time::Instant;
/// # use lanlink::agent::{Agent, AgentConfig};
/// use lanlink::endpoint::{self, HttpRequest};
/// # let now = Instant::now();
/// # let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
/// # let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
/// let query = format!("instance_id={}", agent.instance_id());
/// // Two Host lines: which one the agent would read cannot be told, so neither is believed.
/// let headers = [("Host", &b"192.168.1.50"[..]), ("host", &b"evil.example"[..])];
/// let request = HttpRequest { method: "GET", path: "/lanlink/v1/secret", query: Some(&query),
///     authority: None, headers: &headers, peer: Some("192.168.1.20".parse().unwrap()) };
/// let answer = endpoint::handle(&mut agent, now, &mut lanlink::os_rng(), "/lanlink/v1", &request);
/// assert_eq!((answer.status, &answer.body[..]), (403, &br#"{"error":"bad_host"}"#[..]));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The method (`GET`, `OPTIONS`, …), as sent.
    pub method: &'a str,
    /// The target's path, without the query.
    pub path: &'a str,
    /// The target's query, without the `?`.
    pub query: Option<&'a str>,
    /// The authority of an absolute-form target (`GET http://host:port/…`), which stands for
    /// `Host` (RFC 9112 §3.2.2); `None` for the usual origin-form.
    pub authority: Option<&'a str>,
    /// Every header line, in the order received (names in any case; values as bytes).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The socket peer; `None` when the server could not say (refused as
    /// `unresolvable_client`).
    pub peer: Option<IpAddr>,
}

/// One request to the agent's local endpoint: an [`HttpRequest`] (the name this type had first).
pub type LocalRequest<'a> = HttpRequest<'a>;

impl<'a> HttpRequest<'a> {
    /// The values of header `name` (any case), in order.
    pub(crate) fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// The first value of header `name` as text, if it is text.
    pub(crate) fn text(&self, name: &str) -> Option<&'a str> {
        self.values(name)
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of header `name` that is text.
    fn lines(&self, name: &str) -> Vec<&'a str> {
        self.values(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .collect()
    }
}

/// A request target (the second word of the request line) split as [`LocalRequest`] takes it.
/// See [`split_target`].
///
/// ```
/// use lanlink::endpoint::{split_target, Target};
/// assert_eq!(split_target("/lanlink/v1/secret?instance_id=x"),
///     Target { authority: None, path: "/lanlink/v1/secret", query: Some("instance_id=x") });
/// assert_eq!(split_target("http://192.168.1.50:8080").authority, Some("192.168.1.50:8080"));
/// assert_eq!(split_target("http://192.168.1.50:8080").path, "/");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// The authority of an absolute-form target; `None` for origin-form.
    pub authority: Option<&'a str>,
    /// The path, without the query.
    pub path: &'a str,
    /// The query, without the `?`.
    pub query: Option<&'a str>,
}

/// Splits a request target as an HTTP library that hands it over unparsed (`tiny_http`'s
/// `Request::url`, a hand-written parser) needs it for [`LocalRequest`], the way the axum
/// adapter's URI parser does: origin-form `/path?query`; absolute-form
/// `scheme://authority/path?query` (RFC 9112 §3.2.2), whose authority then stands for `Host`
/// (an empty path is `/`). A fragment (`#…`, which no client sends) is dropped. Any other form
/// (`*`, authority-form, garbage) is kept whole as the path, which no route matches.
///
/// ```
/// use lanlink::endpoint::{split_target, Target};
/// assert_eq!(
///     split_target("/lanlink/v1/secret?instance_id=7c1f"),
///     Target { authority: None, path: "/lanlink/v1/secret", query: Some("instance_id=7c1f") }
/// );
/// assert_eq!(
///     split_target("http://192.168.1.50:8080/lanlink/v1/secret?instance_id=7c1f"),
///     Target {
///         authority: Some("192.168.1.50:8080"),
///         path: "/lanlink/v1/secret",
///         query: Some("instance_id=7c1f"),
///     }
/// );
/// assert_eq!(split_target("*"), Target { authority: None, path: "*", query: None });
/// ```
pub fn split_target(target: &str) -> Target<'_> {
    let target = target.split_once('#').map_or(target, |(before, _)| before);
    let (authority, rest) = match absolute_form(target) {
        Some((authority, rest)) => (Some(authority), rest),
        None => (None, target),
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let path = if authority.is_some() && path.is_empty() {
        "/"
    } else {
        path
    };
    Target {
        authority,
        path,
        query,
    }
}

/// `scheme://authority` and the rest, for an absolute-form target (RFC 3986 §3.1 scheme).
fn absolute_form(target: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = target.split_once("://")?;
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return None;
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(end);
    (!authority.is_empty()).then_some((authority, rest))
}

/// The endpoint's answer: write the status, the headers and the body as they are. `Debug` shows
/// the body's length, never its bytes (it may hold the secret).
///
/// ```
/// use lanlink::endpoint::LocalResponse;
/// let response = LocalResponse { status: 200, headers: vec![], body: b"secret".to_vec().into() };
/// assert_eq!(format!("{response:?}"), "LocalResponse { status: 200, headers: [], body_len: 6 }");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// The HTTP status.
    pub status: u16,
    /// Header lines (lowercase names).
    pub headers: Vec<(&'static str, String)>,
    /// The body; it may hold the secret, and is zeroized when dropped.
    pub body: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for LocalResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl LocalResponse {
    fn json(status: u16, body: Zeroizing<Vec<u8>>) -> Self {
        Self {
            status,
            headers: wire::json_headers(),
            body,
        }
    }

    /// `{"error": code}` with `status`.
    fn error(status: u16, code: &str) -> Self {
        Self::json(status, wire::encode(&ErrorBody::new(code.to_owned())))
    }

    /// `{"error": code}` with the code's status from the classification table.
    fn for_code(code: WireCode) -> Self {
        let (status, text) = code.answer();
        Self::error(status, text)
    }
}

/// The HTTP status of a secret refusal: its code's ([`WireCode::class`](crate::WireCode::class)):
/// `404` for another instance, `403` otherwise.
///
/// ```
/// use lanlink::endpoint::status_of_secret_refusal;
/// use lanlink::SecretRefusal;
/// assert_eq!(status_of_secret_refusal(&SecretRefusal::WrongInstance), 404);
/// assert_eq!(status_of_secret_refusal(&SecretRefusal::NotLocal), 403);
/// ```
pub fn status_of_secret_refusal(refusal: &SecretRefusal) -> u16 {
    // Every code a secret refusal collapses to has a status (the table test checks it).
    refusal.code().class().status.unwrap_or(403)
}

/// Answers one request to the agent's local endpoint under `prefix` (e.g.
/// [`DEFAULT_PREFIX`](crate::transport::DEFAULT_PREFIX)). `rng` draws the popup page's script
/// nonce. See the [module docs](self).
///
/// ```
/// # use std::time::Instant;
/// # use lanlink::agent::{Agent, AgentConfig};
/// use lanlink::endpoint::{self, LocalRequest};
/// # let now = Instant::now();
/// # let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, Default::default());
/// # let mut agent = Agent::new(config, now, &mut lanlink::os_rng()).unwrap();
/// let headers = [("host", &b"192.168.1.50"[..])];
/// let request = |method: &'static str, path: &'static str| LocalRequest { method, path, query: None, authority: None,
///     headers: &headers, peer: Some("192.168.1.20".parse().unwrap()) };
/// let mut rng = lanlink::os_rng();
/// assert_eq!(endpoint::handle(&mut agent, now, &mut rng, "/lanlink/v1", &request("GET", "/elsewhere")).status, 404);
/// assert_eq!(endpoint::handle(&mut agent, now, &mut rng, "/lanlink/v1", &request("HEAD", "/lanlink/v1/secret")).status, 405);
/// // No instance_id: malformed.
/// assert_eq!(endpoint::handle(&mut agent, now, &mut rng, "/lanlink/v1", &request("GET", "/lanlink/v1/secret")).status, 400);
/// ```
pub fn handle<R: CryptoRng + RngCore + ?Sized>(
    agent: &mut Agent,
    now: Instant,
    rng: &mut R,
    prefix: &str,
    request: &LocalRequest<'_>,
) -> LocalResponse {
    let prefix = prefix.trim_end_matches('/');
    let route = request.path.strip_prefix(prefix);
    match (route, request.method) {
        (Some("/secret"), "GET" | "HEAD") => secret(agent, now, request),
        (Some("/secret"), "OPTIONS") => preflight(agent, request),
        (Some("/popup"), "GET" | "HEAD") => popup(agent, now, rng, request),
        (Some("/secret" | "/popup"), _) => LocalResponse::for_code(WireCode::MethodNotAllowed),
        _ => LocalResponse::for_code(WireCode::NotFound),
    }
}

/// The single value of query parameter `name` (form-urlencoded); `None` when absent or
/// repeated.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let mut found = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(key, _)| form_decode(key) == name)
        .map(|(_, value)| form_decode(value));
    let value = found.next()?;
    found.next().is_none().then_some(value)
}

/// Decodes one form-urlencoded component: `+` is a space, `%XX` a byte; bytes that are not
/// UTF-8 become U+FFFD (as the WHATWG form parser does).
pub(crate) fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(high), Some(low)) => {
                        // Two hex digits: at most 0xff.
                        out.push(u8::try_from(high * 16 + low).unwrap_or(0));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The checks of a request for the secret (shared by `GET …/secret` and the popup page): the
/// socket peer, the forwarding headers, `Host`, `Origin` and the single `instance_id` go to the
/// agent through `decide`; its answer or a ready refusal comes out.
fn check<T>(
    agent: &mut Agent,
    request: &LocalRequest<'_>,
    decide: impl FnOnce(&mut Agent, &SecretRequest<'_>) -> Result<T, SecretRefusal>,
) -> Result<T, (u16, &'static str)> {
    // A HEAD would be "served" without a body, and logged as served: refuse it.
    if request.method == "HEAD" {
        return Err(WireCode::MethodNotAllowed.answer());
    }
    let Some(peer) = request.peer else {
        return Err(WireCode::UnresolvableClient.answer());
    };
    let Some(instance_id) = query_param(request.query, "instance_id") else {
        return Err(WireCode::Malformed.answer());
    };
    // Several Host or Origin lines are ambiguous: refuse rather than pick one.
    if request.values("host").count() > 1 {
        return Err(SecretRefusal::BadHost.code().answer());
    }
    if request.values("origin").count() > 1 {
        return Err(SecretRefusal::BadOrigin.code().answer());
    }
    // RFC 9112 §3.2.2: with an absolute-form target the target's authority is the host, and the
    // Host header is ignored.
    let host = request.authority.or_else(|| request.text("host"));
    let forwarded = request.lines("forwarded");
    let xff = request.lines("x-forwarded-for");
    let secret_request = SecretRequest {
        peer,
        forwarded: ForwardedHeaders {
            forwarded: &forwarded,
            x_forwarded_for: &xff,
        },
        host,
        origin: request.text("origin"),
        instance_id: &instance_id,
    };
    decide(agent, &secret_request).map_err(|refusal| refusal.code().answer())
}

fn secret(agent: &mut Agent, now: Instant, request: &LocalRequest<'_>) -> LocalResponse {
    match check(agent, request, |agent, r| {
        agent.handle_secret_request(now, r)
    }) {
        Ok(reply) => {
            let mut response = LocalResponse::json(200, wire::encode(&reply));
            if let Some(origin) = request.text("origin").filter(|o| is_header_text(o)) {
                response
                    .headers
                    .push(("access-control-allow-origin", origin.to_owned()));
                response.headers.push(("vary", "Origin".to_owned()));
            }
            response
        }
        Err((status, code)) => LocalResponse::error(status, code),
    }
}

/// Whether `text` may stand as a header value (visible ASCII, spaces and tabs).
fn is_header_text(text: &str) -> bool {
    text.bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

fn preflight(agent: &Agent, request: &LocalRequest<'_>) -> LocalResponse {
    // The same host rules as the secret route: one Host (or the target's authority), allowed;
    // several Host or Origin lines are ambiguous and refused rather than one picked.
    let host = request.authority.or_else(|| request.text("host"));
    let host_ok =
        request.values("host").count() <= 1 && host.is_some_and(|h| agent.host_allowed(h));
    if !host_ok {
        return LocalResponse::for_code(SecretRefusal::BadHost.code());
    }
    if request.values("origin").count() > 1 {
        return LocalResponse::for_code(SecretRefusal::BadOrigin.code());
    }
    let origin = request.text("origin");
    let origin_ok = origin.is_some_and(|o| agent.origin_allowed(o));
    let method_ok = request
        .values("access-control-request-method")
        .next()
        .is_some_and(|m| m == b"GET");
    let (Some(origin), true, true) = (origin, origin_ok, method_ok) else {
        return LocalResponse::for_code(SecretRefusal::BadOrigin.code());
    };
    let mut headers = Vec::with_capacity(5);
    if is_header_text(origin) {
        headers.push(("access-control-allow-origin", origin.to_owned()));
    }
    headers.push(("access-control-allow-methods", "GET".to_owned()));
    headers.push(("access-control-max-age", "60".to_owned()));
    headers.push(("vary", "Origin".to_owned()));
    let wants_private_network = request
        .values("access-control-request-private-network")
        .next()
        .is_some_and(|v| v.eq_ignore_ascii_case(b"true"));
    if wants_private_network {
        headers.push(("access-control-allow-private-network", "true".to_owned()));
    }
    LocalResponse {
        status: 204,
        headers,
        body: Zeroizing::new(Vec::new()),
    }
}

/// The popup page's template (`web/popup.html`).
const POPUP_TEMPLATE: &str = include_str!("../web/popup.html");

/// `GET {prefix}/popup?instance_id=…&origin=…`: refused before any secret check, as a page, for
/// a load that is not a top-level navigation (`Sec-Fetch-Dest` other than `document`, or
/// `Sec-Fetch-Mode` other than `navigate`, when sent: `403 not_top_level`) and for an `origin`
/// that is absent, repeated or not configured (`403 bad_origin`); then the checks of
/// `GET …/secret` ([`Agent::check_secret_access`]: no secret, no "served" event).
fn popup<R: CryptoRng + RngCore + ?Sized>(
    agent: &mut Agent,
    now: Instant,
    rng: &mut R,
    request: &LocalRequest<'_>,
) -> LocalResponse {
    let requested_id = query_param(request.query, "instance_id")
        .and_then(|id| id.parse::<crate::InstanceId>().ok());
    let fetch_header = |name: &str, wanted: &str| {
        request
            .values(name)
            .all(|v| v.eq_ignore_ascii_case(wanted.as_bytes()))
    };
    if !fetch_header("sec-fetch-dest", "document") || !fetch_header("sec-fetch-mode", "navigate") {
        let (status, code) = WireCode::NotTopLevel.answer();
        return popup_refused(rng, status, code, None, requested_id);
    }
    let target = query_param(request.query, "origin")
        .filter(|origin| agent.origin_allowed(origin))
        .map(|origin| origin.trim().to_ascii_lowercase());
    let Some(target) = target else {
        return popup_refused(
            rng,
            SecretRefusal::BadOrigin.code().answer().0,
            SecretRefusal::BadOrigin.code().static_str(),
            None,
            requested_id,
        );
    };
    match check(agent, request, |agent, r| agent.check_secret_access(now, r)) {
        Ok(()) => {
            let instance_id = agent.instance_id();
            // No secret in the page: its script fetches it from `secret` (same origin) only once
            // the opener has answered its hello from `target`.
            let data = serde_json::json!({
                "target": target,
                "instance_id": instance_id,
                "secret_url": format!("secret?instance_id={instance_id}"),
                "message": null,
            });
            popup_page(rng, 200, true, "", &data.to_string())
        }
        Err((status, code)) => popup_refused(rng, status, code, Some(&target), requested_id),
    }
}

/// The popup page for a refusal: shows it in words, and posts it to `target` when that is a
/// configured origin.
fn popup_refused<R: CryptoRng + RngCore + ?Sized>(
    rng: &mut R,
    status: u16,
    code: &'static str,
    target: Option<&str>,
    instance_id: Option<crate::InstanceId>,
) -> LocalResponse {
    let data = serde_json::json!({
        "target": target,
        "message": {
            "type": "lanlink-refused",
            "version": 1,
            "instance_id": instance_id,
            "error": code,
        },
    });
    popup_page(rng, status, false, code, &data.to_string())
}

/// Fills the popup template, with the headers that keep it out of frames, caches and other
/// origins' reach.
fn popup_page<R: CryptoRng + RngCore + ?Sized>(
    rng: &mut R,
    status: u16,
    ok: bool,
    code: &str,
    data: &str,
) -> LocalResponse {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    let nonce = bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
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
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    LocalResponse {
        status,
        headers: vec![
            ("content-type", "text/html; charset=utf-8".to_owned()),
            ("cache-control", "no-store".to_owned()),
            ("content-security-policy", csp),
            ("x-frame-options", "DENY".to_owned()),
            ("x-content-type-options", "nosniff".to_owned()),
            ("referrer-policy", "no-referrer".to_owned()),
            ("cross-origin-resource-policy", "same-origin".to_owned()),
        ],
        body: Zeroizing::new(page.into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_as_a_uri_parser_does() {
        let t = |authority, path, query| Target {
            authority,
            path,
            query,
        };
        assert_eq!(split_target("/a?b=1&c"), t(None, "/a", Some("b=1&c")));
        assert_eq!(split_target("/a?"), t(None, "/a", Some("")));
        assert_eq!(split_target("/a#f?x"), t(None, "/a", None));
        assert_eq!(split_target("/a?b#f"), t(None, "/a", Some("b")));
        assert_eq!(
            split_target("HTTP://10.0.0.5:80/a?b"),
            t(Some("10.0.0.5:80"), "/a", Some("b"))
        );
        assert_eq!(split_target("http://h"), t(Some("h"), "/", None));
        assert_eq!(split_target("http://h?q"), t(Some("h"), "/", Some("q")));
        assert_eq!(split_target("http://u@h/a"), t(Some("u@h"), "/a", None));
        // Not absolute-form: kept whole, matched by no route.
        assert_eq!(split_target("http:///a"), t(None, "http:///a", None));
        assert_eq!(split_target("1http://h/a"), t(None, "1http://h/a", None));
        assert_eq!(split_target("h:80"), t(None, "h:80", None));
        assert_eq!(split_target(""), t(None, "", None));
    }

    #[test]
    fn query_parameters_are_single_and_decoded() {
        assert_eq!(query_param(Some("a=1&b=2"), "b").as_deref(), Some("2"));
        assert_eq!(query_param(Some("a=1&a=2"), "a"), None, "repeated");
        assert_eq!(query_param(Some("a=1"), "b"), None, "absent");
        assert_eq!(query_param(None, "a"), None);
        assert_eq!(
            query_param(Some("origin=http%3A%2F%2Fx%2By+z"), "origin").as_deref(),
            Some("http://x+y z")
        );
        assert_eq!(query_param(Some("a"), "a").as_deref(), Some(""));
        assert_eq!(query_param(Some("a=%zz%4"), "a").as_deref(), Some("%zz%4"));
        assert_eq!(query_param(Some("a=%ff"), "a").as_deref(), Some("\u{fffd}"));
        assert_eq!(
            query_param(Some("%61=1"), "a").as_deref(),
            Some("1"),
            "encoded key"
        );
    }
}
