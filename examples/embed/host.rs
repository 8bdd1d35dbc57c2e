//! The host service of the embedding example: an axum app with its own routes, fallback and
//! session layer (tower-sessions), with lanlink's server routes nested in it. Shared by
//! `examples/embed/main.rs` (which runs it on loopback) and `tests/embed.rs` (which drives the
//! same app in process).
//!
//! | route | what |
//! | --- | --- |
//! | `GET /` | the host's home page (JSON: who is signed in) |
//! | `POST /login` | `{"user":"alice"}` signs in (puts `user` into the session) |
//! | `POST /logout` | ends the session |
//! | `GET /device/whoami` | a linked device, by its token (`Authorization: Bearer <64 hex>`) |
//! | `/lanlink/v1/…` | lanlink's server routes; the user routes need a signed-in session |
//! | anything else | the host's fallback: `404 {"host_error":"no such page"}` |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lanlink::chrono::{DateTime, Utc};
use lanlink::event::ServerEvent;
use lanlink::http::axum::extract::State;
use lanlink::http::axum::http::request::Parts;
use lanlink::http::axum::http::{header, HeaderMap, StatusCode};
use lanlink::http::axum::response::{IntoResponse, Response};
use lanlink::http::axum::routing::{get, post};
use lanlink::http::axum::{Json, Router};
use lanlink::http::{self, Authenticator, Rejection};
use lanlink::server::{
    CompletedLink, Events, HookError, LinkHook, LinkVia, MemoryStore, Server, ServerConfig,
};
use lanlink::{async_trait, AccountId, AuthToken, InstanceId, TokenDigest};
use serde_json::json;
use tower_sessions::cookie::time::Duration as CookieDuration;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// Where the host mounts lanlink: its routes are under `/lanlink/v1` (lanlink's default prefix,
/// which the agent and linker clients assume), as `/v1` nested at `/lanlink`.
pub const MOUNT: &str = "/lanlink";
/// lanlink's route prefix inside the mount.
pub const LANLINK_PREFIX: &str = "/v1";
/// The session key holding the signed-in user.
const USER: &str = "user";
/// The host's session cookie.
pub const SESSION_COOKIE: &str = "host_session";

/// One row of the host's device table: "device X belongs to user Y".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    /// The owner.
    pub account: AccountId,
    /// The digest of the device's current token (never the token).
    pub token_digest: TokenDigest,
    /// When the host recorded the link (its own clock).
    pub linked_at: DateTime<Utc>,
    /// The redemption attempt whose token that is.
    pub attempt: u32,
    /// Auto-discovery, a manual code, or the Obico profile.
    pub via: LinkVia,
}

/// The host's database (an in-memory stand-in): devices by instance, and a unique index on the
/// token digest, by which a device is authenticated.
#[derive(Default)]
pub struct HostDb {
    tables: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    devices: HashMap<InstanceId, DeviceRow>,
    by_digest: HashMap<TokenDigest, InstanceId>,
}

impl HostDb {
    /// The row of `device`, if it is linked.
    pub fn device(&self, device: &InstanceId) -> Option<DeviceRow> {
        self.tables.lock().unwrap().devices.get(device).cloned()
    }

    /// How many devices are linked.
    pub fn device_count(&self) -> usize {
        self.tables.lock().unwrap().devices.len()
    }

    /// The device `token` authenticates: looked up by the token's digest (a hash of 256 random
    /// bits, safe as an index key), so the host never keeps or compares the token itself.
    pub fn device_by_token(&self, token: &AuthToken) -> Option<(InstanceId, DeviceRow)> {
        let tables = self.tables.lock().unwrap();
        let id = *tables.by_digest.get(&TokenDigest::of(token))?;
        let row = tables.devices.get(&id)?;
        // The index and the row agree by construction; check the row in constant time anyway.
        row.token_digest.verify(token).then(|| (id, row.clone()))
    }
}

/// The hook: every completed link writes "device X belongs to user Y" into the host's table
/// before the device gets its token. A reissue (a retried redemption after a lost reply) brings
/// a new digest, which replaces the old one: the old token stops authenticating.
#[async_trait]
impl LinkHook for HostDb {
    async fn link_completed(&self, link: &CompletedLink) -> Result<(), HookError> {
        // A real host awaits its database here; an `Err` makes the agent retry later.
        let mut tables = self
            .tables
            .lock()
            .map_err(|_| HookError::new("device table unavailable"))?;
        // Two calls for one device can overlap (a retry while the first is still here): an
        // older attempt never replaces the row of a newer one, whose token the device keeps.
        if tables
            .devices
            .get(&link.instance_id)
            .is_some_and(|row| row.attempt > link.attempt)
        {
            return Ok(());
        }
        let row = DeviceRow {
            account: link.account.clone(),
            token_digest: link.token_digest,
            attempt: link.attempt,
            linked_at: link.at,
            via: link.via,
        };
        if let Some(old) = tables.devices.insert(link.instance_id, row) {
            tables.by_digest.remove(&old.token_digest);
        }
        tables.by_digest.insert(link.token_digest, link.instance_id);
        println!(
            "host    | hook wrote its table: device {} belongs to {} (via {}{})",
            link.instance_id,
            link.account,
            via_name(link.via),
            if link.reissued {
                ", token reissued"
            } else {
                ""
            }
        );
        Ok(())
    }
}

/// How a link was made, as its wire name (`auto`, `manual`, `obico`).
pub fn via_name(via: LinkVia) -> String {
    match serde_json::to_value(via) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{via:?}"),
    }
}

/// The host's JSON error body, `{"host_error": message}`, with `status`.
fn host_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "host_error": message }))).into_response()
}

/// The host's answer to a request that needs a signed-in user.
pub fn sign_in_first() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "host_error": "sign in first", "login": "/login" })),
    )
        .into_response()
}

/// lanlink's user authentication, over the host's own session: the tower-sessions `Session`
/// that `SessionManagerLayer` put in the request's extensions. No header is parsed here.
pub struct HostSessions;

#[async_trait]
impl Authenticator for HostSessions {
    async fn authenticate(&self, parts: &Parts) -> Result<AccountId, Rejection> {
        let Some(session) = parts.extensions.get::<Session>() else {
            // The session layer is missing: a wiring mistake, never a signed-in user.
            return Err(Rejection::Response(host_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no session layer",
            )));
        };
        match session.get::<String>(USER).await {
            Ok(Some(user)) => {
                AccountId::new(user).ok_or_else(|| Rejection::Response(sign_in_first()))
            }
            Ok(None) => Err(Rejection::Response(sign_in_first())),
            Err(_) => Err(Rejection::Response(host_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "sessions unavailable",
            ))),
        }
    }
}

/// `GET /`: the host's home page.
async fn home(session: Session) -> Response {
    let user = session.get::<String>(USER).await.ok().flatten();
    Json(json!({ "host": "embed example", "signed_in_as": user })).into_response()
}

#[derive(serde::Deserialize)]
struct Login {
    user: String,
}

/// `POST /login` with `{"user": "..."}`. A demo: no password; a real host checks one here.
async fn login(session: Session, Json(login): Json<Login>) -> Response {
    let Some(account) = AccountId::new(login.user) else {
        return host_error(StatusCode::BAD_REQUEST, "bad user name");
    };
    // A new session id at sign-in (no session fixation), then the user into the session.
    if session.cycle_id().await.is_err() || session.insert(USER, account.as_str()).await.is_err() {
        return host_error(StatusCode::SERVICE_UNAVAILABLE, "sessions unavailable");
    }
    Json(json!({ "signed_in_as": account })).into_response()
}

/// `POST /logout`.
async fn logout(session: Session) -> Response {
    if session.flush().await.is_err() {
        return host_error(StatusCode::SERVICE_UNAVAILABLE, "sessions unavailable");
    }
    Json(json!({ "signed_in_as": null })).into_response()
}

/// The token a device presents as `Authorization: Bearer <64 hex>`.
fn device_token(headers: &HeaderMap) -> Option<AuthToken> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    AuthToken::from_hex(token.trim())
}

/// `GET /device/whoami`: which user the calling device belongs to, from the digest the hook
/// stored. `401` for a missing, malformed or unknown (or replaced) token.
async fn whoami(State(db): State<Arc<HostDb>>, headers: HeaderMap) -> Response {
    match device_token(&headers).and_then(|token| db.device_by_token(&token)) {
        Some((device, row)) => Json(json!({
            "device": device,
            "user": row.account,
            "linked_at": row.linked_at,
            "via": row.via,
        }))
        .into_response(),
        None => {
            let mut response = host_error(StatusCode::UNAUTHORIZED, "unknown device");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
            response
        }
    }
}

/// The host's fallback for every path no route claims.
pub async fn host_not_found() -> Response {
    host_error(StatusCode::NOT_FOUND, "no such page")
}

/// The whole host app, with its device table; every `ServerEvent` goes to `audit`.
///
/// lanlink runs as a [`Server`] over an in-memory [`MemoryStore`] here: the shape a
/// multi-instance host keeps when it swaps in `Records` over a `RedisStore`.
pub fn app(
    audit: impl Fn(ServerEvent) + Send + Sync + 'static,
) -> Result<(Router, Arc<HostDb>), lanlink::ConfigError> {
    let db = Arc::new(HostDb::default());
    let store = MemoryStore::default();
    let service = Server::with_store(ServerConfig::default(), store, Events::sink(audit))?
        .with_link_hook(db.clone());
    let lanlink = http::server::router(Arc::new(service), Arc::new(HostSessions), LANLINK_PREFIX);
    let sessions = SessionManagerLayer::new(tower_sessions::MemoryStore::default())
        .with_name(SESSION_COOKIE)
        // `HttpOnly`, `SameSite=Strict` (tower-sessions' defaults): no script reads it and no
        // other site's page sends it with a `POST /lanlink/v1/link`. The demo runs on plain
        // HTTP over loopback; behind TLS keep the default `Secure` flag.
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(CookieDuration::hours(1)));
    let host = Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/device/whoami", get(whoami))
        .with_state(Arc::clone(&db));
    let app = host
        .nest(MOUNT, lanlink)
        .fallback(host_not_found)
        .layer(sessions);
    Ok((app, db))
}
