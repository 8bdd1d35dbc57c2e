//! The server checks: the kit plays an agent (fresh presence keys and secrets) and a linker
//! (the target's credentials) over the server's routes.
//! They must not call the server's functions or read its store: only the routes, over the network,
//! so that a server on any stack is judged alike.
//!
//! The order matters, because of two pieces of state the kit cannot reset:
//!
//! - **Wrong guesses** are charged to the kit's address (5 per 10 minutes by default), and a
//!   right guess needs an admitted charge too. So the kit makes one wrong guess (a wrong secret,
//!   which must come before the right one) ahead of the checks that need a right guess, and the
//!   other four (an instance not present, the used secret again, the used code again, an
//!   unknown code) after them, then more up to `lockout_threshold` if that is higher, and
//!   counts them. A check refused `locked_out` is skipped, not failed, and
//!   `server.lockout.locked_out` says whether the lockout came exactly when it should.
//! - **Presences**: discovery shows none, and links are refused `too_many_agents`, when more
//!   than `max_visible` agents are present in the network. So the kit links its one agent first,
//!   and only then announces the others (a contested one, extra ones, the network filler last).

mod budgets;
mod hold;
mod link;
mod routes;

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::time::{Duration, Instant};

use super::raw::{self, RawRequest, Until};
use super::reply::{self, Reply};
use super::{CheckSpec, Recorder, Report, ServerTarget, Verdict};
use crate::http::client::{default_client, Credential};
use crate::id::InstanceId;
use crate::secret::{LocalSecret, PresenceKey};

const CONVENTIONS: &str = "Conventions";
const REFUSALS: &str = "Refusals";
const WHO: &str = "Who is the client";
const ANNOUNCE: &str = "`POST {prefix}/agent/announce`";
const REDEEM: &str = "`POST {prefix}/agent/redeem`";
const USER: &str = "The server, user-facing routes";
const DISCOVER: &str = "`GET {prefix}/discover`";
const LINK: &str = "`POST {prefix}/link`";
const STATUS: &str = "`GET {prefix}/link/{instance_id}`";
const CODES: &str = "`POST {prefix}/codes`";
const CROSS_SITE: &str = "Cross-site requests";
const HOLD: &str = "Held requests (revision 1.6)";
/// How long the kit's held requests ask to be held, in milliseconds: long enough to tell an
/// answer at its end from one at once, short enough for a quick run.
const HOLD_MS: u64 = 1500;
/// The hold of the announcement a link answers: an answer at once is told from one at its end.
const RUNG_HOLD_MS: u64 = 5000;
/// How long after a held announcement the kit sends the link that answers it.
const LINK_AFTER: std::time::Duration = std::time::Duration::from_millis(500);
/// How soon after the link is sent its held announcement must be answered, in milliseconds: the
/// link's round trip and the answer's (a server that only looks again at its announce interval,
/// 2 s by default, is late).
const RUNG_WITHIN_MS: u64 = 1000;
/// An origin no server allows: another site's page.
const FOREIGN_ORIGIN: &str = "https://lanlink-conformance.invalid";

const fn spec(id: &'static str, section: &'static str, expects: &'static str) -> CheckSpec {
    CheckSpec {
        id,
        section,
        expects,
    }
}

/// Every server check, in the order the kit makes them.
pub const SERVER_CHECKS: &[CheckSpec] = &[
    spec("server.not_found", REFUSALS, "404 not_found (JSON) for an unknown path under the prefix"),
    spec("server.method_not_allowed", REFUSALS, "405 method_not_allowed for GET on POST {prefix}/agent/announce"),
    spec("server.method_not_allowed.allow", REFUSALS, "405 with an Allow header naming the route's methods: POST for GET on {prefix}/agent/announce, GET (and HEAD) for DELETE on {prefix}/discover"),
    spec("server.discover.head", CONVENTIONS, "HEAD on GET {prefix}/discover, with the account: 200 with the GET's JSON headers and no body"),
    spec("server.forwarded.non_utf8", WHO, "200 for a discovery carrying an X-Forwarded-For line that is not UTF-8 from a peer that is no trusted proxy (ignored like any forwarding header it sends)"),
    spec("server.http.garbled_request_line", REFUSALS, "a 4xx with an empty body (or the connection closed) for a request line that is not HTTP"),
    spec("server.http.headers_too_large", REFUSALS, "431 with an empty body for 256 KiB of headers (the limit is 64 KiB)"),
    spec("server.body.too_large", CONVENTIONS, "413 too_large for a 17 KiB body"),
    spec("server.body.request_timeout", CONVENTIONS, "408 request_timeout, then the connection closed, for a body not complete by the request deadline"),
    spec("server.announce.malformed_json", CONVENTIONS, "400 malformed for a body that is not JSON"),
    spec("server.announce.unknown_field", CONVENTIONS, "400 malformed for an unknown field"),
    spec("server.announce.missing_field", CONVENTIONS, "400 malformed for a missing field (presence_key)"),
    spec("server.announce.wrong_type", CONVENTIONS, "400 malformed for a wrong type (port as a string)"),
    spec("server.announce.bad_instance_id", CONVENTIONS, "400 malformed for an instance_id that is not a version-4 UUID"),
    spec("server.announce.unsupported_version", ANNOUNCE, "400 unsupported_version for version 2"),
    spec("server.announce.too_large", CONVENTIONS, "413 too_large for a 5 KiB announcement"),
    spec("server.announce.long_field", ANNOUNCE, "400 bad_field for a 254-byte hostname"),
    spec("server.announce.hidden_character", ANNOUNCE, "400 bad_field for U+202E in the model"),
    spec("server.announce.forged_instance", ANNOUNCE, "403 forged_instance for a presence_key that does not derive the instance_id"),
    spec("server.announce.not_private_ip", ANNOUNCE, "403 not_private_ip for a public private_ip"),
    spec("server.announce.ok", ANNOUNCE, "200 {\"messages\": [], \"poll_after_ms\": n}"),
    spec("server.hold.announce_ends", HOLD, "200 {\"messages\": []} at the hold's end (after at least 1.2 s, within 3.5 s) for an announcement with hold_ms 1500 and no message waiting"),
    spec("server.discover.unauthorized", USER, "401 unauthorized without an account"),
    spec("server.link.unauthorized", USER, "401 unauthorized without an account"),
    spec("server.link_status.unauthorized", USER, "401 unauthorized without an account"),
    spec("server.codes.unauthorized", USER, "401 unauthorized without an account"),
    spec("server.link.text_plain", CROSS_SITE, "415 unsupported_media_type for a link request sent as text/plain, with the account's credential"),
    spec("server.link.form_urlencoded", CROSS_SITE, "415 unsupported_media_type for a link request sent as application/x-www-form-urlencoded"),
    spec("server.link.cross_origin", CROSS_SITE, "403 bad_origin for a JSON link request with another site's Origin"),
    spec("server.codes.cross_origin", CROSS_SITE, "403 bad_origin for a mint with another site's Origin (a server that fails it mints one code)"),
    spec("server.discover.ok", DISCOVER, "200 {\"agents\": [...]} showing the kit's agent as announced"),
    spec("server.link_status.unknown", STATUS, "200 state unknown before any link"),
    spec("server.hold.link_status_at_once", HOLD, "200 state unknown at once (within 0.75 s) for a status request with ?hold_ms=1500 when no link is on its way"),
    spec("server.link_status.malformed_id", STATUS, "400 malformed for an id that is not a UUID"),
    spec("server.link.malformed", CONVENTIONS, "400 malformed for a link request with an unknown field"),
    spec("server.link.wrong_secret", LINK, "403 wrong_secret"),
    spec("server.link.accepted", LINK, "202 {\"instance_id\", \"state\": \"pending\"}"),
    spec("server.link_status.pending", STATUS, "200 state pending after the link"),
    spec("server.link_status.other_account", STATUS, "200 state unknown for another account"),
    spec("server.hold.link_status_held", HOLD, "200 state pending at the hold's end (after at least 1.2 s, within 3.5 s) for a status request with ?hold_ms=1500 while the link is pending"),
    spec("server.announce.delivers_message", ANNOUNCE, "200 with one verify_and_redeem message: the instance, the linked secret, a code"),
    spec("server.link_status.delivered", STATUS, "200 state delivered"),
    spec("server.announce.delivered_once", ANNOUNCE, "200 with no message on the next announcement"),
    spec("server.redeem.ok", REDEEM, "200 {\"auth_token\": 64 hex, \"attempt\": 1} for the delivered code, redeemed with the presence key as attempt 1"),
    spec("server.redeem.forged_key", REDEEM, "403 forged_instance for a retry whose presence_key does not derive the instance_id"),
    spec("server.redeem.retry_reissues", REDEEM, "200 with a new auth_token and \"attempt\": 2 for the same redemption retried as attempt 2 (the reply was lost)"),
    spec("server.redeem.superseded", REDEEM, "409 superseded for attempt 2 again (a late duplicate)"),
    spec("server.link_status.linked", STATUS, "200 state linked"),
    spec("server.announce.instance_used", ANNOUNCE, "409 instance_used for a linked instance announcing afresh"),
    spec("server.hold.announce_rung", HOLD, "an announcement with hold_ms 5000 from a second agent, held while its link is accepted, answered then (after the link was sent and within 1 s of it) with its verify_and_redeem message"),
    spec("server.redeem.malformed", CONVENTIONS, "400 malformed for a redeem request with an unknown field"),
    spec("server.announce.presence_conflict", ANNOUNCE, "409 presence_conflict for another commitment of a present instance"),
    spec("server.link.agent_contested", LINK, "409 agent_contested for the right secret of a contested agent"),
    spec("server.discover.too_many_agents", DISCOVER, "200 {\"agents\": []} when more than max_visible agents are present"),
    spec("server.link.too_many_agents", LINK, "409 too_many_agents for the right secret when more than max_visible agents are present"),
    spec("server.codes.ok", CODES, "201 {\"code\", \"expires_at\": RFC 3339 UTC, in the future}"),
    spec("server.redeem.manual_code", REDEEM, "200 {\"auth_token\": 64 hex} for a manual code, from any instance"),
    spec("server.link.agent_not_found", LINK, "404 agent_not_found for an instance not present"),
    spec("server.link.already_linking", LINK, "409 already_linking for another link with a used secret"),
    spec("server.redeem.used_code", REDEEM, "403 invalid_code for a code already redeemed"),
    spec("server.redeem.unknown_code", REDEEM, "403 invalid_code for an unknown code"),
    spec("server.lockout.locked_out", REFUSALS, "no lockout before the threshold's wrong guesses, then 429 locked_out even for a right code"),
    spec("server.codes.mint_quota", REFUSALS, "429 mint_quota once the second account holds its most live codes"),
    spec("server.announce.network_full", ANNOUNCE, "429 network_full once the network holds its most agents"),
];

/// An agent the kit plays: a presence key, the id it derives, a secret.
pub(super) struct KitAgent {
    pub(super) key: PresenceKey,
    pub(super) id: InstanceId,
    secret: LocalSecret,
    ip: IpAddr,
    port: u16,
}

impl KitAgent {
    pub(super) fn new() -> Self {
        let mut rng = crate::os_rng();
        let key = PresenceKey::generate(&mut rng);
        let id = key.instance_id();
        let mut port = [0u8; 2];
        rand::RngCore::fill_bytes(&mut rng, &mut port);
        Self {
            key,
            id,
            secret: LocalSecret::generate(&mut rng),
            ip: IpAddr::from([10, 77, port[0], 1]),
            port: 1024 + u16::from_be_bytes(port) % 60000,
        }
    }

    fn info() -> Value {
        json!({
            "hostname": "lanlink-conformance.local",
            "model": "conformance kit",
            "agent": "lanlink-conformance",
            "agent_version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// The announcement, as `PROTOCOL.md` shows it.
    pub(super) fn announce(&self) -> Value {
        json!({
            "version": 1,
            "instance_id": self.id.to_string(),
            "private_ip": self.ip.to_string(),
            "port": self.port,
            "info": Self::info(),
            "commitment": self.secret.commitment(&self.id).to_hex(),
            "presence_key": self.key.to_hex().as_str(),
        })
    }

    fn link(&self) -> Value {
        json!({"instance_id": self.id.to_string(), "local_secret": self.secret.to_hex().as_str()})
    }
}

/// How far the link of the kit's agent went.
#[derive(Default)]
struct Linked {
    /// The link was accepted (its secret is used).
    accepted: bool,
    /// The delivered code, once redeemed.
    code: Option<String>,
}

/// Who a request speaks as.
#[derive(Clone, Copy)]
enum As {
    Nobody,
    User,
    Second,
}

fn body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub(super) fn random_hex32() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut crate::os_rng(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_id() -> InstanceId {
    InstanceId::generate(&mut crate::os_rng())
}

struct Session<'t> {
    target: &'t ServerTarget,
    client: reqwest::Client,
    base: String,
    rec: Recorder,
    /// Wrong guesses the kit made so far.
    wrong: u32,
    /// How many wrong guesses the kit had made when it first met `locked_out`.
    first_lockout: Option<u32>,
    /// Whether the held requests of revision 1.6 are checked, from the server's stated revision.
    holds: Holds,
}

/// Whether the kit checks held requests (revision 1.6), from the revision the server states in
/// its announce reply.
enum Holds {
    /// It states 1.6 or later.
    Checked,
    /// It states an older revision (or none, as before 1.5): the checks do not apply.
    Older(String),
    /// Not known: `server.announce.ok` did not pass.
    Unknown,
}

pub(crate) async fn run(target: &ServerTarget) -> Report {
    let client = match &target.client {
        Some(client) => Ok(client.clone()),
        None => default_client().map_err(|err| err.to_string()),
    };
    let mut rec = Recorder::new(SERVER_CHECKS, &target.opted_out);
    let client = match client {
        Ok(client) => client,
        Err(err) => {
            for spec in SERVER_CHECKS {
                rec.skip(spec.id, format!("no HTTP client: {err}"));
            }
            return rec.finish();
        }
    };
    let mut session = Session {
        target,
        client,
        base: format!("{}{}", target.url, target.prefix),
        rec,
        wrong: 0,
        first_lockout: None,
        holds: Holds::Unknown,
    };
    session.run().await;
    session.rec.finish()
}

impl Session<'_> {
    async fn run(&mut self) {
        self.routing().await;
        self.raw_http().await;
        self.bodies().await;
        self.announce_refusals().await;
        let agent = KitAgent::new();
        let announced = self.announce_ok(&agent).await;
        self.hold_announce_ends(&agent).await;
        self.unauthorized().await;
        self.cross_site().await;
        let linked = if announced {
            self.link_flow(&agent).await
        } else {
            Linked::default()
        };
        self.hold_announce_rung().await;
        self.redeem_malformed().await;
        self.crowded().await;
        let spare = self.manual_codes().await;
        self.wrong_guesses(&agent, linked).await;
        self.lockout(spare).await;
        self.mint_quota().await;
        self.network_full().await;
    }

    // ───────────────────────────── requests ─────────────────────────────

    async fn call(
        &self,
        method: &str,
        path: &str,
        who: As,
        payload: Option<Vec<u8>>,
    ) -> Result<Reply, String> {
        let payload = payload.map(|payload| (payload, "application/json"));
        self.call_as(method, path, who, payload, None).await
    }

    /// [`Self::call`] with the payload's content type and an `Origin`.
    async fn call_as(
        &self,
        method: &str,
        path: &str,
        who: As,
        payload: Option<(Vec<u8>, &str)>,
        origin: Option<&str>,
    ) -> Result<Reply, String> {
        let mut request = self.request(method, path, who)?;
        if let Some((payload, content_type)) = payload {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(payload);
        }
        if let Some(origin) = origin {
            request = request.header(reqwest::header::ORIGIN, origin);
        }
        self.read(request).await
    }

    /// A bodyless request with extra header lines (each value as bytes, or why it could not
    /// be made).
    async fn call_with(
        &self,
        method: &str,
        path: &str,
        who: As,
        headers: &[(&str, Result<reqwest::header::HeaderValue, String>)],
    ) -> Result<Reply, String> {
        let mut request = self.request(method, path, who)?;
        for (name, value) in headers {
            request = request.header(*name, value.clone()?);
        }
        self.read(request).await
    }

    /// A request for `path` under the prefix, with `who`'s credential and the target's timeout.
    fn request(
        &self,
        method: &str,
        path: &str,
        who: As,
    ) -> Result<reqwest::RequestBuilder, String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(self.target.timeout);
        let credential = match who {
            As::Nobody => None,
            As::User => Some(&self.target.credential),
            As::Second => self.target.second.as_ref(),
        };
        Ok(match credential {
            Some(credential) => apply(credential, request),
            None => request,
        })
    }

    /// Sends `request` and reads its answer (at most 1 MiB of body).
    async fn read(&self, request: reqwest::RequestBuilder) -> Result<Reply, String> {
        let mut response = request
            .send()
            .await
            .map_err(|err| format!("no answer: {}", err.without_url()))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|err| format!("{status}, body cut off: {}", err.without_url()))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > 1024 * 1024 {
                return Err(format!("{status}, body over 1 MiB"));
            }
        }
        Ok(Reply {
            status,
            headers,
            body: bytes,
        })
    }

    async fn post(&self, path: &str, who: As, value: &Value) -> Result<Reply, String> {
        self.call("POST", path, who, Some(body(value))).await
    }

    async fn announce(&self, value: &Value) -> Result<Reply, String> {
        self.post("/agent/announce", As::Nobody, value).await
    }

    /// A redemption of revision 1.1: with a presence key and an attempt number.
    async fn redeem_proven(
        &self,
        id: &InstanceId,
        key: &PresenceKey,
        code: &str,
        attempt: u32,
    ) -> Result<Reply, String> {
        let value = json!({
            "instance_id": id.to_string(),
            "code": code,
            "presence_key": key.to_hex().as_str(),
            "attempt": attempt,
        });
        self.post("/agent/redeem", As::Nobody, &value).await
    }

    async fn redeem(&self, id: &InstanceId, code: &str) -> Result<Reply, String> {
        let value = json!({"instance_id": id.to_string(), "code": code});
        self.post("/agent/redeem", As::Nobody, &value).await
    }

    /// Announces `agent` again so that its presence stays fresh; `Ok` with the reply's messages.
    async fn refresh(&self, agent: &KitAgent) -> Result<Vec<Value>, String> {
        let reply = self.announce(&agent.announce()).await?;
        let map = reply::json_object(&reply, 200)?;
        Ok(map
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    async fn link_status(&self, id: &InstanceId, who: As) -> Result<Reply, String> {
        self.call("GET", &format!("/link/{id}"), who, None).await
    }

    // ───────────────────────────── verdicts ─────────────────────────────

    fn check(&mut self, id: &'static str, verdict: Verdict) -> bool {
        self.rec.verdict(id, verdict)
    }

    /// Records a check whose request is a guess (charged to the kit's address): a `locked_out`
    /// answer it did not expect skips it. `wrong` counts the guess as one of the kit's wrong
    /// ones. Returns the reply when the check passed.
    fn guess(
        &mut self,
        id: &'static str,
        wrong: bool,
        reply: Result<Reply, String>,
        expect: impl FnOnce(&Reply) -> Verdict,
    ) -> Option<Reply> {
        if wrong {
            self.wrong += 1;
        }
        let reply = match reply {
            Ok(reply) => reply,
            Err(err) => {
                self.check(id, Err(err));
                return None;
            }
        };
        if reply.is_locked_out() {
            let before = self.wrong - u32::from(wrong);
            self.first_lockout.get_or_insert(before);
            let why = if before == 0 {
                "429 locked_out before the kit's first wrong guess: this network is already \
                 locked out (a run from it within the lockout, 10 minutes by default?)"
                    .to_owned()
            } else {
                format!(
                    "429 locked_out after the kit's own {before} wrong guesses (see \
                     server.lockout.locked_out)"
                )
            };
            self.rec.skip(id, why);
            return None;
        }
        let verdict = expect(&reply);
        self.check(id, verdict).then_some(reply)
    }

    // ───────────────────────────── checks ─────────────────────────────
}

/// A credential on a request (what `HttpLinkerClient` sends).
fn apply(credential: &Credential, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match credential {
        Credential::Bearer(token) => request.header(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", token.as_str()),
        ),
        Credential::Cookie(cookie) => request.header(reqwest::header::COOKIE, cookie.as_str()),
        Credential::Header(name, value) => request.header(name.clone(), value.as_str()),
        Credential::None => request,
    }
}

/// The one message of a `200` announce reply, or why there is not exactly one: `200 with N
/// messages` followed by `context` (what the check adds: the time, the reply's excerpt).
fn only_message(reply: &Reply, context: impl FnOnce() -> String) -> Result<Value, String> {
    let map = reply::json_object(reply, 200)?;
    let messages = map
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let [message] = messages.as_slice() else {
        return Err(format!("200 with {} messages{}", messages.len(), context()));
    };
    Ok(message.clone())
}

/// `200 {"instance_id": id, "state": state}` as a JSON response.
fn state_of(reply: &Reply, id: &InstanceId, state: &str) -> Verdict {
    reply::json_object(reply, 200)?;
    state_of_body(reply, id, state).map(|()| format!("200 {state}"))
}

fn state_of_body(reply: &Reply, id: &InstanceId, state: &str) -> Result<(), String> {
    let map = reply.object()?;
    if map.get("instance_id") == Some(&json!(id.to_string()))
        && map.get("state") == Some(&json!(state))
    {
        Ok(())
    } else {
        Err(reply.summary())
    }
}

/// `200 {"auth_token": 64 hex}` as a JSON response.
/// The reply's `auth_token`, if any.
fn token_of(reply: &Reply) -> Option<String> {
    reply::json_object(reply, 200).ok().and_then(|map| {
        map.get("auth_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
}

/// A 200 reply echoing `attempt`.
fn attempt_echo(reply: &Reply, attempt: u32) -> Verdict {
    let map = reply::json_object(reply, 200)?;
    match map.get("attempt").and_then(Value::as_u64) {
        Some(n) if n == u64::from(attempt) => Ok(format!("200 auth_token, attempt {attempt}")),
        other => Err(format!("200 with attempt {other:?}, not {attempt}")),
    }
}

fn auth_token(reply: &Reply) -> Verdict {
    let map = reply::json_object(reply, 200)?;
    match map.get("auth_token").and_then(Value::as_str) {
        Some(token) if reply::is_hex64(token) => Ok("200 auth_token (64 hex)".to_owned()),
        _ => Err(format!(
            "200 without a 64-hex auth_token: {}",
            reply.excerpt()
        )),
    }
}

/// Whether `reply`'s `Allow` header names every method of `methods` (tokens, any case).
fn allows(reply: &Reply, methods: &[&str]) -> Verdict {
    let allowed = reply.tokens("allow");
    if allowed.is_empty() {
        return Err(format!("{} without an Allow header", reply.status));
    }
    let missing: Vec<&str> = methods
        .iter()
        .filter(|m| !allowed.iter().any(|a| a.eq_ignore_ascii_case(m)))
        .copied()
        .collect();
    if missing.is_empty() {
        Ok(format!("{} Allow: {}", reply.status, allowed.join(", ")))
    } else {
        Err(format!(
            "{} Allow: {} (without {})",
            reply.status,
            allowed.join(", "),
            missing.join(", ")
        ))
    }
}

/// Whether the kit checks held requests for a server stating `stated` in its announce reply.
fn holds_of(stated: Option<&str>) -> Holds {
    use crate::wire::Revision;
    match stated.map(str::parse::<Revision>) {
        Some(Ok(revision)) if revision >= Revision::V1_6 => Holds::Checked,
        Some(Ok(revision)) => Holds::Older(format!(
            "server states revision {revision} < 1.6: held requests not checked"
        )),
        None => Holds::Older(
            "server states no revision (before 1.5, so < 1.6): held requests not checked"
                .to_owned(),
        ),
        Some(Err(_)) => Holds::Older(
            "server states a revision the kit cannot read: held requests not checked".to_owned(),
        ),
    }
}

/// Whole milliseconds of `elapsed`.
fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// An answer at the end of a hold of `hold_ms`: after at least four fifths of it, and within
/// 2 s past it. Its milliseconds, or what is wrong.
fn held_to_its_end(elapsed: Duration, hold_ms: u64) -> Result<u64, String> {
    let ms = millis(elapsed);
    if ms < hold_ms * 4 / 5 {
        Err(format!(
            "answered at once ({ms} ms), not held for its hold of {hold_ms} ms"
        ))
    } else if ms > hold_ms + 2000 {
        Err(format!(
            "answered after {ms} ms, past its hold of {hold_ms} ms"
        ))
    } else {
        Ok(ms)
    }
}

/// An answer at once to a request asking for a hold of `hold_ms`: within half of it.
fn answered_at_once(elapsed: Duration, hold_ms: u64) -> Result<u64, String> {
    let ms = millis(elapsed);
    if ms * 2 > hold_ms {
        Err(format!(
            "answered after {ms} ms (hold {hold_ms} ms): held though nothing was on its way"
        ))
    } else {
        Ok(ms)
    }
}
