//! The Obico profile's HTTP routes, over an in-memory [`Server`](crate::server::Server) ([`router`]) or a [`Service`]
//! over a shared store such as Redis ([`service_router`]).
//!
//! | route | who | success | refusals |
//! | --- | --- | --- | --- |
//! | `POST /api/v1/octo/unlinked/` | agent | `200 {"messages": [...]}` (+ passcode fields) | `400`/`413` bad body (the agent's fault); `502 unresolvable_client`, `503` (the server's or the proxy's fault: never a 4xx, which would end discovery) |
//! | `POST`, `GET /api/v1/octo/verify/?code=…` (and older OctoPrint-Obico's `/api/v1/onetimeverificationcodes/verify/`) | agent | `200` Obico's verified code record (`id`, `printer` with `auth_token`, `code`, `expired_at`, `verified_at`) | `404` invalid code, `429` locked out (with a `message` and `Retry-After`), `502`, `503` |
//! | `GET /api/v1/octo/printer/` with `Authorization: Token …` | linked agent | `200 {"printer": {...}, "user": {...}}` | `401 invalid_token`, `503` |
//! | `GET /api/v1/printer_discovery/` | user | `200 [{"device_id", "host_or_ip", "port", …}]` | `401`, `403` |
//! | `POST /api/v1/printer_discovery/` | user | `200 {"queued": true}` | `400`, `401`, `403`, `404`, `409`, `415`, `429` |
//! | `POST /api/v1/one_time_passcodes/` | user | `200 {"detail": "OK"}` | `400`, `401`, `403`, `404`, `415`, `429` |
//! | any other `/api/v1/...` path | | | `404 not_found`, `405 method_not_allowed` |
//!
//! Every refusal is `{"detail": "<code>"}` with the core's stable codes (Obico's error shape),
//! except Obico's own `{"<field>": "missing param"}` for a missing field. Bodies are JSON of at
//! most [`MAX_BODY_BYTES`]; unknown fields are ignored (the agents send more than the server
//! keeps). The user `POST`s apply the core's cross-site rule first
//! ([`server::cross_site`](crate::server::cross_site)): `403 {"detail": "bad_origin"}` for an
//! `Origin` that is not allowed, `415 {"detail": "unsupported_media_type"}` for a body not
//! declared `application/json` (Obico's web app sends JSON). The routes can be merged with the core's ([`crate::http::server::router`]) to serve
//! both profiles on one server.

// Handlers return a ready refusal `Response` as their error, as `crate::http` does.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Response, StatusCode};
use axum::routing::{any, get, post};
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::tokens::{self, printer_id, LinkedPrinter, MemoryTokens, PrinterTokens};
use super::{device_id, parse_device_id, ObicoConfig, UnlinkedPoll};
use crate::addr::ForwardedHeaders;
use crate::code::LinkCode;
use crate::error::Refusal;
use crate::http::server::{lock, peer_of, SharedServer};
use crate::http::{
    cross_site, header_lines, json_response, read_body, Authenticator, MAX_BODY_BYTES,
};
use crate::id::AccountId;
use crate::secret::LocalSecret;
use crate::server::cross_site::UserRoute;
use crate::server::record::ObicoInfo;
use crate::server::{HookError, LinkHook, Service};
use crate::wire::{limits, DeviceInfo};

/// The agent poll route.
pub const UNLINKED_PATH: &str = "/api/v1/octo/unlinked/";
/// The agent redeem route.
pub const VERIFY_PATH: &str = "/api/v1/octo/verify/";
/// The redeem route of older OctoPrint-Obico releases (`GET`), served by the same handler.
pub const LEGACY_VERIFY_PATH: &str = "/api/v1/onetimeverificationcodes/verify/";
/// The linked agent's own printer record.
pub const PRINTER_PATH: &str = "/api/v1/octo/printer/";
/// The user discovery and link route.
pub const DISCOVERY_PATH: &str = "/api/v1/printer_discovery/";
/// The user passcode-claim route.
pub const PASSCODES_PATH: &str = "/api/v1/one_time_passcodes/";

/// What the routes call: one locked in-memory server, or a service over a shared store.
enum Backend {
    Local(SharedServer),
    Shared(Arc<Service>),
}

struct App {
    backend: Backend,
    auth: Arc<dyn Authenticator>,
    tokens: Arc<dyn PrinterTokens>,
    obico: ObicoConfig,
    /// The server's [`ServerConfig::allowed_origins`](crate::server::ServerConfig::allowed_origins).
    allowed_origins: Vec<String>,
}

/// The Obico routes over `server`, recognising linked printers in memory ([`MemoryTokens`]).
/// Refuses an invalid `obico` configuration.
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
    router_with_tokens(server, auth, obico, Arc::new(MemoryTokens::default()))
}

/// The Obico routes over `server`, recognising linked printers in `tokens`.
pub fn router_with_tokens(
    server: SharedServer,
    auth: Arc<dyn Authenticator>,
    obico: ObicoConfig,
    tokens: Arc<dyn PrinterTokens>,
) -> Result<Router, crate::ConfigError> {
    routes(Backend::Local(server), auth, obico, tokens)
}

/// The Obico routes over a [`Service`] (for example on a
/// [`RedisStore`](crate::server::redis::RedisStore), so that several processes act as one
/// server), recognising linked printers in `tokens`. Give the service
/// [`Events::sink`](crate::server::Events::sink)`(`[`log_event`](crate::http::server::log_event)`)`
/// to log its decisions.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use lanlink::http::BearerTokens;
/// use lanlink::obico::{server::service_router, tokens::MemoryTokens, ObicoConfig};
/// use lanlink::http::server::log_event;
/// use lanlink::server::{Events, MemoryStore, ServerConfig, Service};
/// let store = Arc::new(Mutex::new(MemoryStore::default()));
/// let events = Events::sink(log_event);
/// let service = Arc::new(Service::new(ServerConfig::default(), store, events).unwrap());
/// let tokens = Arc::new(MemoryTokens::default());
/// let app = service_router(service, Arc::new(BearerTokens::default()), ObicoConfig::default(), tokens);
/// assert!(app.is_ok());
/// ```
pub fn service_router(
    service: Arc<Service>,
    auth: Arc<dyn Authenticator>,
    obico: ObicoConfig,
    tokens: Arc<dyn PrinterTokens>,
) -> Result<Router, crate::ConfigError> {
    routes(Backend::Shared(service), auth, obico, tokens)
}

fn routes(
    backend: Backend,
    auth: Arc<dyn Authenticator>,
    obico: ObicoConfig,
    tokens: Arc<dyn PrinterTokens>,
) -> Result<Router, crate::ConfigError> {
    obico.validate()?;
    let allowed_origins = match &backend {
        Backend::Local(server) => lock(server).config().allowed_origins().to_vec(),
        Backend::Shared(service) => service.config().allowed_origins().to_vec(),
    };
    let app = Arc::new(App {
        backend,
        auth,
        tokens,
        obico,
        allowed_origins,
    });
    Ok(Router::new()
        .route(UNLINKED_PATH, post(unlinked))
        .route(VERIFY_PATH, post(verify).get(verify))
        .route(LEGACY_VERIFY_PATH, post(verify).get(verify))
        .route(PRINTER_PATH, get(printer))
        .route(DISCOVERY_PATH, get(discover).post(link))
        .route(PASSCODES_PATH, post(claim))
        // Every other path under Obico's API answers in Obico's shape too.
        .route("/api/v1/{*rest}", any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app))
}

async fn not_found() -> Response<Body> {
    detail(StatusCode::NOT_FOUND, "not_found")
}

async fn method_not_allowed() -> Response<Body> {
    detail(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
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

/// The status of a refusal on an agent route (`unlinked`, `verify`): a client address that the
/// proxy chain did not resolve is the proxy's (or the configuration's) fault, `502`, never a
/// 4xx, which OctoPrint-Obico takes for the end of discovery.
///
/// ```
/// use lanlink::obico::server::agent_status_of;
/// use lanlink::{ClientAddrError, Refusal};
/// assert_eq!(agent_status_of(&Refusal::ClientAddr(ClientAddrError::MissingForwarded)).as_u16(), 502);
/// assert_eq!(agent_status_of(&Refusal::StoreUnavailable).as_u16(), 503);
/// ```
pub fn agent_status_of(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::ClientAddr(_) => StatusCode::BAD_GATEWAY,
        other => status_of(other),
    }
}

fn refusal(refusal: &Refusal) -> Response<Body> {
    detail(status_of(refusal), refusal.code())
}

fn agent_refusal(refusal: &Refusal) -> Response<Body> {
    detail(agent_status_of(refusal), refusal.code())
}

/// A refusal of a guess (a code, a passcode, a secret): a lockout says so, with how long it
/// lasts at most (`Retry-After`, and a sentence for the agents' logs), in Obico's shape.
fn guess_refusal(app: &App, refusal: &Refusal, status: StatusCode) -> Response<Body> {
    if !matches!(refusal, Refusal::LockedOut) {
        return detail(status, refusal.code());
    }
    let seconds = app.lockout().num_seconds().max(1);
    let minutes = (seconds + 59) / 60;
    let mut response = respond(
        status,
        &json!({
            "detail": refusal.code(),
            "message": format!(
                "Too many wrong codes from this network: it is locked out for up to {minutes} \
                 minutes. This is not a wrong code; try again later."
            ),
        }),
    );
    if let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string()) {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

impl App {
    /// How long a filled guessing budget stays locked.
    fn lockout(&self) -> chrono::TimeDelta {
        match &self.backend {
            Backend::Local(server) => lock(server).config().budget_limits().lockout,
            Backend::Shared(service) => service.config().budget_limits().lockout,
        }
    }
}

/// The socket peer and forwarding headers of a request.
struct Caller {
    peer: IpAddr,
    forwarded: Vec<String>,
    x_forwarded_for: Vec<String>,
}

impl Caller {
    /// Without a peer address (the router served without [`crate::http::serve()`] or
    /// `ConnectInfo`: the server's configuration) nothing can be decided: `no_peer`.
    fn from_parts(parts: &Parts, no_peer: StatusCode) -> Result<Self, Response<Body>> {
        let peer = peer_of(parts).ok_or_else(|| detail(no_peer, "unresolvable_client"))?;
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

    fn lines(&self) -> (Vec<&str>, Vec<&str>) {
        (
            self.forwarded.iter().map(String::as_str).collect(),
            self.x_forwarded_for.iter().map(String::as_str).collect(),
        )
    }
}

fn headers<'a>(lines: &'a (Vec<&'a str>, Vec<&'a str>)) -> ForwardedHeaders<'a> {
    ForwardedHeaders {
        forwarded: &lines.0,
        x_forwarded_for: &lines.1,
    }
}

/// Calls one of the profile's operations (`obico_*`, the same on [`Server`](crate::server::Server)
/// and [`Service`]) at the wall-clock now, logging the in-memory server's events.
/// The link hook of the server behind the routes, if any.
fn link_hook(app: &App) -> Option<Arc<dyn LinkHook>> {
    match &app.backend {
        Backend::Local(server) => lock(server).link_hook(),
        Backend::Shared(service) => service.link_hook().cloned(),
    }
}

macro_rules! call {
    ($app:expr, $method:ident($($arg:expr),* $(,)?)) => {
        match &$app.backend {
            Backend::Local(server) => {
                let mut server = lock(server);
                let result = server.$method(wall_now(), $($arg),*);
                while let Some(event) = server.poll_event() {
                    tracing::info!(target: "lanlink::obico", ?event);
                }
                result
            }
            Backend::Shared(service) => service.$method(wall_now(), $($arg),*).await,
        }
    };
}

/// The cross-site rule of a state-changing user route
/// ([`check`](crate::server::cross_site::check)), in Obico's shape, checked before the request
/// reaches the host's [`Authenticator`].
fn same_site(app: &App, parts: &Parts) -> Result<(), Response<Body>> {
    cross_site(parts, UserRoute::WithBody, &app.allowed_origins).map_err(|r| refusal(&r))
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
    // `read_body` refuses in the core's shape: answered again in Obico's.
    let bytes = match read_body(body, MAX_BODY_BYTES).await {
        Ok(bytes) => Zeroizing::new(bytes.to_vec()),
        Err(refused) => {
            let code = match refused.status() {
                StatusCode::PAYLOAD_TOO_LARGE => "too_large",
                StatusCode::REQUEST_TIMEOUT => "request_timeout",
                _ => "malformed",
            };
            return Err(detail(refused.status(), code));
        }
    };
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
    let bounded = |name| text(map, name, ObicoInfo::MAX_FIELD);
    let extra = ObicoInfo {
        os: bounded("os"),
        arch: bounded("arch"),
        octopi_version: bounded("octopi_version"),
        machine_type: bounded("machine_type"),
        printerprofile: bounded("printerprofile"),
    };
    Ok(UnlinkedPoll {
        device_id: device,
        endpoint: ip.zip(port),
        info,
        extra,
        one_time_passcode,
    })
}

async fn unlinked(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, body) = request.into_parts();
            // No peer is the server's configuration: 500, never a 4xx (see `agent_status_of`).
            let caller = Caller::from_parts(&parts, StatusCode::INTERNAL_SERVER_ERROR)?;
            let poll = poll_of(&object(body).await?)?;
            let lines = caller.lines();
            let (peer, headers) = (caller.peer, headers(&lines));
            let reply = call!(
                app,
                obico_unlinked(&mut crate::os_rng(), &app.obico, peer, headers, &poll)
            )
            .map_err(|r| agent_refusal(&r))?;
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
            let caller = Caller::from_parts(&parts, StatusCode::INTERNAL_SERVER_ERROR)?;
            let query = axum::extract::Query::<CodeQuery>::try_from_uri(&parts.uri)
                .map_err(|_| detail(StatusCode::BAD_REQUEST, "malformed"))?;
            let code = query
                .0
                .code
                .as_deref()
                .map(str::trim)
                .and_then(LinkCode::parse)
                .ok_or_else(|| detail(StatusCode::NOT_FOUND, Refusal::UnknownCode.code()))?;
            let lines = caller.lines();
            let (peer, headers) = (caller.peer, headers(&lines));
            let pending = call!(
                app,
                obico_begin_verify(&mut crate::os_rng(), peer, headers, &code)
            )
            .map_err(|r| guess_refusal(&app, &r, agent_status_of(&r)))?;
            let now = wall_now();
            let link = pending.link();
            let printer = LinkedPrinter {
                id: printer_id(&link.instance_id),
                name: link
                    .info
                    .as_ref()
                    .map(|info| info.hostname().to_owned())
                    .filter(|hostname| !hostname.is_empty())
                    .unwrap_or_else(|| "My Printer".to_owned()),
                account: link.account.clone(),
                instance_id: link.instance_id,
                linked_at: now,
            };
            // The token is handed out only once its digest is kept (a printer must be able to
            // use it) and the host's hook recorded the link. If either fails, the code is given
            // back (no token was handed out, nothing is linked), so that the agent's retry
            // redeems it: nothing is stranded.
            let mut outcome = app
                .tokens
                .issue(*link.token_digest.as_bytes(), printer.clone())
                .await
                .map_err(|err| HookError::new(format!("printer tokens: {err}")));
            if outcome.is_ok() {
                if let Some(hook) = link_hook(&app) {
                    outcome = hook.link_completed(link).await;
                }
            }
            let verified = crate::obico::Verified::from(
                call!(app, finish_redeem(pending, outcome)).map_err(|r| agent_refusal(&r))?,
            );
            let redeemed = &verified.redeemed;
            let token = redeemed.reply.auth_token.to_hex();
            let mut printer_json = printer_value(&printer);
            printer_json["auth_token"] = token.as_str().into();
            let value = json!({
                "id": code_id(&code),
                "printer": printer_json,
                "code": code.expose(),
                "expired_at": iso(verified.code_expires_at),
                "verified_at": iso(now),
            });
            let response = respond(StatusCode::OK, &value);
            zeroize_value(value);
            Ok(response)
        }
        .await,
    )
}

/// Obico's time format (ISO 8601, UTC).
fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A numeric id for a code record (Obico's `id`): the first 48 bits of its key.
fn code_id(code: &LinkCode) -> u64 {
    code.key().as_bytes()[..6]
        .iter()
        .fold(0u64, |id, byte| (id << 8) | u64::from(*byte))
}

/// A printer as Obico's agent-facing routes show it (without its token).
fn printer_value(printer: &LinkedPrinter) -> Value {
    json!({
        "id": printer.id,
        "name": printer.name,
        "created_at": iso(printer.linked_at),
    })
}

/// `GET /api/v1/octo/printer/`: the linked printer that `Authorization: Token …` names.
async fn printer(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, _) = request.into_parts();
            let presented = parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Token "))
                .unwrap_or_default();
            let found = tokens::authenticate(&*app.tokens, presented)
                .await
                .map_err(|err| agent_refusal(&err.into()))?;
            let Some(printer) = found else {
                return Err(detail(StatusCode::UNAUTHORIZED, "invalid_token"));
            };
            Ok(respond(
                StatusCode::OK,
                &json!({
                    "printer": printer_value(&printer),
                    "user": { "is_pro": false },
                }),
            ))
        }
        .await,
    )
}

async fn discover(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, _) = request.into_parts();
            // The account is counted among the network's discoverers, as the core's route does.
            let account = account(&app, &parts).await?;
            let caller = Caller::from_parts(&parts, StatusCode::FORBIDDEN)?;
            let lines = caller.lines();
            let (peer, headers) = (caller.peer, headers(&lines));
            let agents =
                call!(app, obico_list(&account, peer, headers)).map_err(|r| refusal(&r))?;
            let list: Vec<Value> = agents
                .iter()
                .map(|(a, extra)| {
                    json!({
                        "device_id": device_id(&a.instance_id),
                        "host_or_ip": a.private_ip.to_string(),
                        "port": a.port,
                        "hostname": a.info.hostname(),
                        "rpi_model": a.info.model(),
                        "agent": a.info.agent(),
                        "plugin_version": a.info.agent_version(),
                        "os": extra.os,
                        "arch": extra.arch,
                        "octopi_version": extra.octopi_version,
                        "machine_type": extra.machine_type,
                        "printerprofile": extra.printerprofile,
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
            same_site(&app, &parts)?;
            let account = account(&app, &parts).await?;
            let caller = Caller::from_parts(&parts, StatusCode::FORBIDDEN)?;
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
            let lines = caller.lines();
            let (peer, headers) = (caller.peer, headers(&lines));
            call!(
                app,
                obico_link(
                    &mut crate::os_rng(),
                    &account,
                    peer,
                    headers,
                    device,
                    secret
                )
            )
            .map_err(|r| guess_refusal(&app, &r, status_of(&r)))?;
            Ok(respond(StatusCode::OK, &json!({ "queued": true })))
        }
        .await,
    )
}

async fn claim(State(app): State<Arc<App>>, request: Request) -> Response<Body> {
    answer(
        async {
            let (parts, body_in) = request.into_parts();
            same_site(&app, &parts)?;
            let account = account(&app, &parts).await?;
            let caller = Caller::from_parts(&parts, StatusCode::FORBIDDEN)?;
            let mut map = object(body_in).await?;
            let passcode = match map.get_mut("one_time_passcode") {
                Some(Value::String(s)) => Zeroizing::new(std::mem::take(s)),
                Some(_) => return Err(detail(StatusCode::BAD_REQUEST, "malformed")),
                None => return Err(missing("one_time_passcode")),
            };
            // `verification_code` (the user's code in Obico) is accepted and ignored: the server
            // mints a code bound to the agent's network instead.
            let lines = caller.lines();
            let (peer, headers) = (caller.peer, headers(&lines));
            call!(
                app,
                obico_claim(&mut crate::os_rng(), &account, peer, headers, &passcode)
            )
            .map_err(|r| guess_refusal(&app, &r, status_of(&r)))?;
            Ok(detail(StatusCode::OK, "OK"))
        }
        .await,
    )
}
