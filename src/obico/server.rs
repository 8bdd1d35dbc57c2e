//! The Obico profile's HTTP routes over a shared [`Server`].
//!
//! | route | who | success | refusals |
//! | --- | --- | --- | --- |
//! | `POST /api/v1/octo/unlinked/` | agent | `200 {"messages": [...]}` (+ passcode fields) | `400` bad body, `403` unresolvable client |
//! | `POST`, `GET /api/v1/octo/verify/?code=…` (and older OctoPrint-Obico's `/api/v1/onetimeverificationcodes/verify/`) | agent | `200 {"printer": {"auth_token": …}}` | `404` invalid code, `429` locked out, `403` |
//! | `GET /api/v1/printer_discovery/` | user | `200 [{"device_id", "host_or_ip", "port", …}]` | `401`, `403` |
//! | `POST /api/v1/printer_discovery/` | user | `200 {"queued": true}` | `400`, `401`, `403`, `404`, `409`, `429` |
//! | `POST /api/v1/one_time_passcodes/` | user | `200 {"detail": "OK"}` | `400`, `401`, `404`, `429` |
//!
//! Refusals are `{"detail": "<code>"}` with the core's stable codes (Obico's error shape), except
//! Obico's own `{"<field>": "missing param"}` for a missing field. Bodies are JSON of at most
//! [`MAX_BODY_BYTES`]; unknown fields are ignored (the agents send
//! more than the server keeps). The routes can be merged with the core's
//! ([`crate::http::server::router`]) to serve both profiles on one server.

// Handlers return a ready refusal `Response` as their error, as `crate::http` does.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::{device_id, parse_device_id, ObicoConfig, UnlinkedPoll};
use crate::addr::ForwardedHeaders;
use crate::code::LinkCode;
use crate::error::Refusal;
use crate::http::server::{lock, peer_of, SharedServer};
use crate::http::{header_lines, json_response, read_body, Authenticator, MAX_BODY_BYTES};
use crate::id::AccountId;
use crate::secret::LocalSecret;
use crate::server::Server;
use crate::wire::{limits, DeviceInfo};

/// The agent poll route.
pub const UNLINKED_PATH: &str = "/api/v1/octo/unlinked/";
/// The agent redeem route.
pub const VERIFY_PATH: &str = "/api/v1/octo/verify/";
/// The redeem route of older OctoPrint-Obico releases (`GET`), served by the same handler.
pub const LEGACY_VERIFY_PATH: &str = "/api/v1/onetimeverificationcodes/verify/";
/// The user discovery and link route.
pub const DISCOVERY_PATH: &str = "/api/v1/printer_discovery/";
/// The user passcode-claim route.
pub const PASSCODES_PATH: &str = "/api/v1/one_time_passcodes/";

struct App {
    server: SharedServer,
    auth: Arc<dyn Authenticator>,
    obico: ObicoConfig,
}

/// The Obico routes over `server`. Refuses an invalid `obico` configuration.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use lanlink::http::BearerTokens;
/// use lanlink::obico::{server::router, ObicoConfig};
/// use lanlink::server::{Server, ServerConfig};
/// let server = Arc::new(Mutex::new(Server::new(ServerConfig::default()).unwrap()));
/// let app = router(server, Arc::new(BearerTokens::default()), ObicoConfig::default()).unwrap();
/// # let _ = app;
/// ```
pub fn router(
    server: SharedServer,
    auth: Arc<dyn Authenticator>,
    obico: ObicoConfig,
) -> Result<Router, crate::ConfigError> {
    obico.validate()?;
    let app = Arc::new(App {
        server,
        auth,
        obico,
    });
    Ok(Router::new()
        .route(UNLINKED_PATH, post(unlinked))
        .route(VERIFY_PATH, post(verify).get(verify))
        .route(LEGACY_VERIFY_PATH, post(verify).get(verify))
        .route(DISCOVERY_PATH, get(discover).post(link))
        .route(PASSCODES_PATH, post(claim))
        .with_state(app))
}

fn wall_now() -> DateTime<Utc> {
    DateTime::<Utc>::from(SystemTime::now())
}

fn detail(status: StatusCode, text: &str) -> Response<Body> {
    respond(status, &json!({ "detail": text }))
}

fn respond(status: StatusCode, value: &Value) -> Response<Body> {
    json_response(
        status,
        Zeroizing::new(serde_json::to_vec(value).unwrap_or_default()),
    )
}

/// The Obico-profile status of a refusal.
///
/// ```
/// use lanlink::obico::server::status_of;
/// use lanlink::Refusal;
/// assert_eq!(status_of(&Refusal::UnknownCode).as_u16(), 404);
/// assert_eq!(status_of(&Refusal::LockedOut).as_u16(), 429);
/// ```
pub fn status_of(refusal: &Refusal) -> StatusCode {
    match refusal {
        // Obico answers an unknown code (and an unknown passcode) with 404.
        Refusal::UnknownCode
        | Refusal::CodeUsed
        | Refusal::CodeWrongAgent
        | Refusal::CodeWrongNetwork => StatusCode::NOT_FOUND,
        other => crate::http::status_of(other),
    }
}

fn refusal(refusal: &Refusal) -> Response<Body> {
    detail(status_of(refusal), refusal.code())
}

/// The socket peer and forwarding headers of a request.
struct Caller {
    peer: IpAddr,
    forwarded: Vec<String>,
    x_forwarded_for: Vec<String>,
}

impl Caller {
    fn from_parts(parts: &Parts) -> Result<Self, Response<Body>> {
        let peer =
            peer_of(parts).ok_or_else(|| detail(StatusCode::FORBIDDEN, "unresolvable_client"))?;
        let lines = |name| {
            header_lines(&parts.headers, name)
                .into_iter()
                .map(str::to_owned)
                .collect()
        };
        Ok(Self {
            peer,
            forwarded: lines("forwarded"),
            x_forwarded_for: lines("x-forwarded-for"),
        })
    }

    fn with_headers<T>(&self, f: impl FnOnce(IpAddr, ForwardedHeaders<'_>) -> T) -> T {
        let forwarded: Vec<&str> = self.forwarded.iter().map(String::as_str).collect();
        let xff: Vec<&str> = self.x_forwarded_for.iter().map(String::as_str).collect();
        f(
            self.peer,
            ForwardedHeaders {
                forwarded: &forwarded,
                x_forwarded_for: &xff,
            },
        )
    }
}

/// Runs `op` on the locked server and logs its events (they carry no secrets).
fn call<T>(app: &App, op: impl FnOnce(&mut Server, DateTime<Utc>) -> T) -> T {
    let mut server = lock(&app.server);
    let result = op(&mut server, wall_now());
    while let Some(event) = server.poll_event() {
        tracing::info!(target: "lanlink::obico", ?event);
    }
    result
}

async fn account(app: &App, parts: &Parts) -> Result<AccountId, Response<Body>> {
    app.auth.authenticate(parts).await.map_err(|rejection| {
        rejection.into_response(|| detail(StatusCode::UNAUTHORIZED, "unauthorized"))
    })
}

type Answer = Result<Response<Body>, Response<Body>>;

fn answer(answer: Answer) -> Response<Body> {
    answer.unwrap_or_else(|refusal| refusal)
}

/// A JSON object body (at most [`MAX_BODY_BYTES`], zeroized once read).
async fn object(body: Body) -> Result<Map<String, Value>, Response<Body>> {
    let bytes = Zeroizing::new(read_body(body, MAX_BODY_BYTES).await?.to_vec());
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(detail(StatusCode::BAD_REQUEST, "malformed")),
    }
}

/// A text field, truncated to `max` bytes on a character boundary, with the characters the core
/// wire refuses ([`crate::wire::is_hidden`]: controls, bidi controls, zero-width and other
/// default-ignorable characters) dropped rather than refused: the agents are unmodified, and a
/// refused poll would leave a device with such a name unlinkable.
fn text(map: &Map<String, Value>, name: &str, max: usize) -> String {
    let raw = match map.get(name) {
        Some(Value::String(s)) => s.as_str(),
        _ => "",
    };
    crate::wire::sanitized(raw, max)
}

/// An `unlinked` poll from a body's bytes, as the route reads it (`None` where it answers 400).
#[cfg(feature = "fuzz")]
pub(crate) fn poll_from_bytes(bytes: &[u8]) -> Option<UnlinkedPoll> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => poll_of(&map).ok(),
        _ => None,
    }
}

fn poll_of(map: &Map<String, Value>) -> Result<UnlinkedPoll, Response<Body>> {
    let device = map
        .get("device_id")
        .and_then(Value::as_str)
        .and_then(parse_device_id)
        .ok_or_else(|| detail(StatusCode::BAD_REQUEST, "malformed"))?;
    let ip = map
        .get("host_or_ip")
        .and_then(Value::as_str)
        .and_then(|s| s.trim().parse::<IpAddr>().ok());
    let port = match map.get("port") {
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
        _ => None,
    }
    .filter(|p| *p != 0);
    let info = DeviceInfo::new(
        text(map, "hostname", limits::HOSTNAME),
        text(map, "rpi_model", limits::MODEL),
        text(map, "agent", limits::AGENT),
        text(map, "plugin_version", limits::AGENT_VERSION),
    )
    .unwrap_or_default();
    let one_time_passcode = match map.get("one_time_passcode") {
        None => None,
        Some(Value::String(s)) => Some(s.chars().take(64).collect()),
        Some(_) => Some(String::new()),
    };
    Ok(UnlinkedPoll {
        device_id: device,
        endpoint: ip.zip(port),
        info,
        one_time_passcode,
    })
}

async fn unlinked(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, body) = request.into_parts();
            let caller = Caller::from_parts(&parts)?;
            let poll = poll_of(&object(body).await?)?;
            let reply = call(&app, |server, now| {
                caller.with_headers(|peer, headers| {
                    server.obico_unlinked(
                        now,
                        &mut crate::os_rng(),
                        &app.obico,
                        peer,
                        headers,
                        &poll,
                    )
                })
            })
            .map_err(|r| refusal(&r))?;
            let messages: Vec<Value> = reply
                .message
                .iter()
                .map(|m| {
                    json!({
                        "device_id": device_id(&m.device_id),
                        "type": "verify_code",
                        "data": { "code": m.code.expose(), "secret": m.secret.to_hex().as_str() },
                    })
                })
                .collect();
            let mut out = Map::new();
            out.insert("messages".into(), Value::Array(messages));
            if let Some(passcode) = &reply.passcode {
                out.insert(
                    "one_time_passcode".into(),
                    passcode.one_time_passcode.expose().into(),
                );
                out.insert(
                    "one_time_passlink".into(),
                    app.obico.passlink(&passcode.one_time_passcode).into(),
                );
                out.insert(
                    "verification_code".into(),
                    passcode
                        .verification_code
                        .as_ref()
                        .map_or("", LinkCode::expose)
                        .into(),
                );
            }
            let value = Value::Object(out);
            let response = respond(StatusCode::OK, &value);
            zeroize_value(value);
            Ok(response)
        }
        .await,
    )
}

/// Overwrites the strings of a reply that carried a secret or a code before it is dropped.
fn zeroize_value(mut value: Value) {
    fn walk(value: &mut Value) {
        match value {
            Value::String(s) => zeroize::Zeroize::zeroize(s),
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Object(map) => map.values_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
}

#[derive(Deserialize)]
struct CodeQuery {
    code: Option<String>,
}

async fn verify(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, _) = request.into_parts();
            let caller = Caller::from_parts(&parts)?;
            let query = axum::extract::Query::<CodeQuery>::try_from_uri(&parts.uri)
                .map_err(|_| detail(StatusCode::BAD_REQUEST, "malformed"))?;
            let code = query
                .0
                .code
                .as_deref()
                .map(str::trim)
                .and_then(LinkCode::parse)
                .ok_or_else(|| detail(StatusCode::NOT_FOUND, Refusal::UnknownCode.code()))?;
            let redeemed = call(&app, |server, now| {
                caller.with_headers(|peer, headers| {
                    server.obico_verify(now, &mut crate::os_rng(), peer, headers, &code)
                })
            })
            .map_err(|r| refusal(&r))?;
            let token = redeemed.reply.auth_token.to_hex();
            Ok(respond(
                StatusCode::OK,
                &json!({ "printer": { "auth_token": token.as_str() } }),
            ))
        }
        .await,
    )
}

async fn discover(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, _) = request.into_parts();
            account(&app, &parts).await?;
            let caller = Caller::from_parts(&parts)?;
            let agents = call(&app, |server, now| {
                caller.with_headers(|peer, headers| server.obico_discover(now, peer, headers))
            })
            .map_err(|r| refusal(&r))?;
            let list: Vec<Value> = agents
                .iter()
                .map(|a| {
                    json!({
                        "device_id": device_id(&a.instance_id),
                        "host_or_ip": a.private_ip.to_string(),
                        "port": a.port,
                        "hostname": a.info.hostname(),
                        "rpi_model": a.info.model(),
                        "agent": a.info.agent(),
                        "plugin_version": a.info.agent_version(),
                    })
                })
                .collect();
            Ok(respond(StatusCode::OK, &Value::Array(list)))
        }
        .await,
    )
}

fn missing(field: &str) -> Response<Body> {
    respond(StatusCode::BAD_REQUEST, &json!({ field: "missing param" }))
}

async fn link(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, body_in) = request.into_parts();
            let account = account(&app, &parts).await?;
            let caller = Caller::from_parts(&parts)?;
            let mut map = object(body_in).await?;
            let device = match map.get("device_id") {
                None => return Err(missing("device_id")),
                Some(value) => value
                    .as_str()
                    .and_then(parse_device_id)
                    .ok_or_else(|| detail(StatusCode::BAD_REQUEST, "malformed"))?,
            };
            // `code` (the user's code in Obico) is accepted and never forwarded: the server mints
            // a bound 128-bit code instead.
            let secret = match map.get_mut("device_secret") {
                None => return Err(missing("device_secret")),
                Some(Value::String(s)) => {
                    let parsed = LocalSecret::from_hex(s);
                    zeroize::Zeroize::zeroize(s);
                    parsed
                }
                Some(_) => None,
            };
            call(&app, |server, now| {
                caller.with_headers(|peer, headers| {
                    server.obico_link(
                        now,
                        &mut crate::os_rng(),
                        &account,
                        peer,
                        headers,
                        device,
                        secret,
                    )
                })
            })
            .map_err(|r| refusal(&r))?;
            Ok(respond(StatusCode::OK, &json!({ "queued": true })))
        }
        .await,
    )
}

async fn claim(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, body_in) = request.into_parts();
            let account = account(&app, &parts).await?;
            let caller = Caller::from_parts(&parts)?;
            let mut map = object(body_in).await?;
            let passcode = match map.get_mut("one_time_passcode") {
                Some(Value::String(s)) => Zeroizing::new(std::mem::take(s)),
                Some(_) => return Err(detail(StatusCode::BAD_REQUEST, "malformed")),
                None => return Err(missing("one_time_passcode")),
            };
            // `verification_code` (the user's code in Obico) is accepted and ignored: the server
            // mints a code bound to the agent's network instead.
            call(&app, |server, now| {
                caller.with_headers(|peer, headers| {
                    server.obico_claim(
                        now,
                        &mut crate::os_rng(),
                        &account,
                        peer,
                        headers,
                        &passcode,
                    )
                })
            })
            .map_err(|r| refusal(&r))?;
            Ok(detail(StatusCode::OK, "OK"))
        }
        .await,
    )
}
