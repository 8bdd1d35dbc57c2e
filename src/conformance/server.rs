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

    async fn routing(&mut self) {
        let reply = self.call("GET", "/no-such-route", As::Nobody, None).await;
        self.check(
            "server.not_found",
            reply.and_then(|r| reply::refusal(&r, 404, "not_found")),
        );
        let reply = self.call("GET", "/agent/announce", As::Nobody, None).await;
        let allow_post = reply
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|r| allows(r, &["POST"]));
        self.check(
            "server.method_not_allowed",
            reply.and_then(|r| reply::refusal(&r, 405, "method_not_allowed")),
        );
        let reply = self.call("DELETE", "/discover", As::User, None).await;
        let allow_get = reply.and_then(|r| {
            reply::refusal(&r, 405, "method_not_allowed")?;
            allows(&r, &["GET"])
        });
        self.check(
            "server.method_not_allowed.allow",
            allow_post.and_then(|post| allow_get.map(|get| format!("{post}; {get}"))),
        );
        // HEAD: the GET's status and headers, no body.
        let reply = self.call("HEAD", "/discover", As::User, None).await;
        self.check(
            "server.discover.head",
            reply.and_then(|r| {
                if r.status != 200 {
                    return Err(r.summary());
                }
                reply::json_headers(&r)?;
                if !r.body.is_empty() {
                    return Err(format!("200 with a {}-byte body", r.body.len()));
                }
                Ok("200, JSON headers, no body".to_owned())
            }),
        );
        // A forwarding line that is not text, from a peer that is no trusted proxy: ignored.
        let reply = self
            .call_with(
                "GET",
                "/discover",
                As::User,
                &[(
                    "x-forwarded-for",
                    reqwest::header::HeaderValue::from_bytes(b"203.0.113.\xff9")
                        .map_err(|e| e.to_string()),
                )],
            )
            .await;
        self.check(
            "server.forwarded.non_utf8",
            reply.and_then(|r| reply::json_object(&r, 200).map(|_| "200".to_owned())),
        );
    }

    /// The target's `host:port` for raw requests, if it is plain HTTP.
    fn authority(&self) -> Result<(String, String), String> {
        let url = reqwest::Url::parse(&self.target.url).map_err(|e| format!("bad URL: {e}"))?;
        if url.scheme() != "http" {
            return Err("needs a plain http:// URL (the kit writes these requests itself)".into());
        }
        let host = url.host_str().ok_or("the URL has no host")?;
        let port = url.port_or_known_default().unwrap_or(80);
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = format!("{}{}", url.path().trim_end_matches('/'), self.target.prefix);
        Ok((authority, path))
    }

    async fn raw_http(&mut self) {
        let (authority, path) = match self.authority() {
            Ok(found) => found,
            Err(why) => {
                self.rec.skip_all(
                    &[
                        "server.http.garbled_request_line",
                        "server.http.headers_too_large",
                        "server.body.request_timeout",
                    ],
                    &why,
                );
                return;
            }
        };
        let limit = self.target.timeout;
        // Not HTTP at all.
        let garbled = raw::exchange(
            &authority,
            b"\x16\x03\x01 hello there\r\n\r\n".to_vec(),
            limit,
            Until::Response,
            false,
        )
        .await
        .map(|answer| match answer.reply(false) {
            Some(r) if (400..500).contains(&r.status) && r.body.is_empty() => {
                Ok(format!("{} (empty body)", r.status))
            }
            Some(r) => Err(r.summary()),
            None if answer.bytes.is_empty() && answer.closed => Ok("closed unanswered".to_owned()),
            None if answer.bytes.is_empty() => Err("no answer, connection left open".into()),
            None => Err(format!(
                "{} bytes that are not an HTTP response",
                answer.bytes.len()
            )),
        });
        self.check("server.http.garbled_request_line", garbled.and_then(|v| v));
        // Headers far over 64 KiB: the reference server's HTTP layer (hyper, whose read buffer
        // is capped at 64 KiB) still reads heads of about 100 KiB, so the kit sends 256 KiB.
        let request = RawRequest::new("GET", format!("{path}/discover"))
            .header("host", authority.clone())
            .header("x-conformance-padding", "a".repeat(256 * 1024));
        let reply = raw::send(&authority, &request, limit).await;
        self.check(
            "server.http.headers_too_large",
            reply.and_then(|r| {
                if r.status == 431 && r.body.is_empty() {
                    Ok("431 (empty body)".to_owned())
                } else {
                    Err(r.summary())
                }
            }),
        );
        // A body that never arrives.
        if self.rec.opted_out("server.body.request_timeout") {
            self.rec
                .skip("server.body.request_timeout", "not waited for the deadline");
            return;
        }
        let deadline = self.target.request_timeout;
        let mut request = RawRequest::new("POST", format!("{path}/agent/redeem"))
            .header("host", authority.clone())
            .header("content-type", "application/json")
            .header("content-length", "100");
        request.body = b"{\"instance_id\":".to_vec();
        let wait = deadline + std::time::Duration::from_secs(5);
        let verdict = raw::exchange(&authority, request.bytes(), wait, Until::Closed, false)
            .await
            .and_then(|answer| {
                let reply = answer
                    .reply(false)
                    .ok_or_else(|| format!("no answer within {wait:?}"))?;
                let got = reply::refusal(&reply, 408, "request_timeout")?;
                if answer.closed {
                    Ok(format!("{got}, connection closed"))
                } else {
                    Err(format!("{got}, but the connection stayed open"))
                }
            });
        self.check("server.body.request_timeout", verdict);
    }

    async fn bodies(&mut self) {
        let big = json!({"instance_id": random_id().to_string(), "code": "x".repeat(17 * 1024)});
        let reply = self.post("/agent/redeem", As::Nobody, &big).await;
        self.check(
            "server.body.too_large",
            reply.and_then(|r| reply::refusal(&r, 413, "too_large")),
        );
    }

    async fn announce_refusals(&mut self) {
        let reply = self
            .call(
                "POST",
                "/agent/announce",
                As::Nobody,
                Some(b"{\"version\": 1,".to_vec()),
            )
            .await;
        self.check(
            "server.announce.malformed_json",
            reply.and_then(|r| reply::refusal(&r, 400, "malformed")),
        );
        let agent = KitAgent::new();
        /// A check, its refusal code, and how it spoils a good announcement.
        type Edit = (&'static str, &'static str, fn(&mut Value));
        let edits: [Edit; 8] = [
            ("server.announce.unknown_field", "malformed", |v| {
                v["extra"] = json!(1)
            }),
            ("server.announce.missing_field", "malformed", |v| {
                if let Some(map) = v.as_object_mut() {
                    map.remove("presence_key");
                }
            }),
            ("server.announce.wrong_type", "malformed", |v| {
                v["port"] = json!("8080")
            }),
            ("server.announce.bad_instance_id", "malformed", |v| {
                v["instance_id"] = json!("7c1f0a52-3b8e-1d5a-9c2e-1f0b6a7d8e90")
            }),
            (
                "server.announce.unsupported_version",
                "unsupported_version",
                |v| v["version"] = json!(2),
            ),
            ("server.announce.long_field", "bad_field", |v| {
                v["info"]["hostname"] = json!("h".repeat(254))
            }),
            ("server.announce.hidden_character", "bad_field", |v| {
                v["info"]["model"] = json!("Prusa\u{202E}4KM")
            }),
            ("server.announce.not_private_ip", "not_private_ip", |v| {
                v["private_ip"] = json!("192.0.2.1")
            }),
        ];
        for (id, code, edit) in edits {
            let mut value = agent.announce();
            edit(&mut value);
            let status = match code {
                "not_private_ip" => 403,
                _ => 400,
            };
            let reply = self.announce(&value).await;
            self.check(id, reply.and_then(|r| reply::refusal(&r, status, code)));
        }
        // Over 4 KiB (and under 16): whitespace, so it is still JSON.
        let announcement = body(&agent.announce());
        let mut padded = b"{".to_vec();
        padded.extend(std::iter::repeat_n(b' ', 5 * 1024));
        padded.extend_from_slice(announcement.get(1..).unwrap_or_default());
        let reply = self
            .call("POST", "/agent/announce", As::Nobody, Some(padded))
            .await;
        self.check(
            "server.announce.too_large",
            reply.and_then(|r| reply::refusal(&r, 413, "too_large")),
        );
        // A key that derives another id.
        let mut forged = agent.announce();
        forged["presence_key"] = json!(PresenceKey::generate(&mut crate::os_rng())
            .to_hex()
            .as_str());
        let reply = self.announce(&forged).await;
        self.check(
            "server.announce.forged_instance",
            reply.and_then(|r| reply::refusal(&r, 403, "forged_instance")),
        );
    }

    async fn announce_ok(&mut self, agent: &KitAgent) -> bool {
        let reply = self.announce(&agent.announce()).await;
        let verdict = reply.and_then(|r| {
            let map = reply::json_object(&r, 200)?;
            let messages = map.get("messages").and_then(Value::as_array);
            let poll = map.get("poll_after_ms").and_then(Value::as_u64);
            let stated = map
                .get("revision")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match (messages, poll) {
                (Some(m), Some(poll)) if m.is_empty() => {
                    Ok((format!("200 no messages, poll_after_ms {poll}"), stated))
                }
                _ => Err(format!("200 {}", r.excerpt())),
            }
        });
        let verdict = verdict.map(|(got, stated)| {
            self.holds = holds_of(stated.as_deref());
            got
        });
        self.check("server.announce.ok", verdict)
    }

    /// Whether check `id` of held requests is made; if not, it is recorded as skipped: not
    /// applicable to a server of an older revision, or not run when its revision is unknown.
    fn holds_apply(&mut self, id: &'static str) -> bool {
        match &self.holds {
            Holds::Checked => true,
            Holds::Older(why) => {
                let why = why.clone();
                self.rec.not_applicable(id, why);
                false
            }
            Holds::Unknown => {
                self.rec.skip(id, "needs server.announce.ok to pass");
                false
            }
        }
    }

    /// `method path` asking for a hold of `hold_ms` (its timeout stretched to cover it): the
    /// reply, when the request was sent and when its answer was read.
    async fn held(
        &self,
        method: &str,
        path: &str,
        who: As,
        payload: Option<Vec<u8>>,
        hold_ms: u64,
    ) -> (Result<Reply, String>, Instant, Instant) {
        let started = Instant::now();
        let timeout = self
            .target
            .timeout
            .max(Duration::from_millis(hold_ms) + Duration::from_secs(5));
        let request = self.request(method, path, who).map(|request| {
            let request = request.timeout(timeout);
            match payload {
                Some(payload) => request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(payload),
                None => request,
            }
        });
        let reply = match request {
            Ok(request) => self.read(request).await,
            Err(err) => Err(err),
        };
        (reply, started, Instant::now())
    }

    /// An announcement with `hold_ms` and nothing waiting: answered at the hold's end, with no
    /// message (revision 1.6).
    async fn hold_announce_ends(&mut self, agent: &KitAgent) {
        const ID: &str = "server.hold.announce_ends";
        if !self.holds_apply(ID) {
            return;
        }
        let mut value = agent.announce();
        value["hold_ms"] = json!(HOLD_MS);
        let (reply, sent, answered) = self
            .held(
                "POST",
                "/agent/announce",
                As::Nobody,
                Some(body(&value)),
                HOLD_MS,
            )
            .await;
        let verdict = reply.and_then(|r| {
            let map = reply::json_object(&r, 200)?;
            match map.get("messages").and_then(Value::as_array) {
                Some(messages) if messages.is_empty() => {}
                _ => return Err(format!("200 {}", r.excerpt())),
            }
            let ms = held_to_its_end(answered - sent, HOLD_MS)?;
            Ok(format!("200 no messages after {ms} ms (hold {HOLD_MS} ms)"))
        });
        self.check(ID, verdict);
    }

    /// A status request with `?hold_ms=` for `agent`'s link, expected in `state`: at once when
    /// `at_once`, else at the hold's end.
    async fn hold_status(
        &mut self,
        id: &'static str,
        agent: &KitAgent,
        state: &str,
        at_once: bool,
    ) {
        if !self.holds_apply(id) {
            return;
        }
        let path = format!("/link/{}?hold_ms={HOLD_MS}", agent.id);
        let (reply, sent, answered) = self.held("GET", &path, As::User, None, HOLD_MS).await;
        let verdict = reply.and_then(|r| {
            state_of(&r, &agent.id, state)?;
            let elapsed = answered - sent;
            let ms = if at_once {
                answered_at_once(elapsed, HOLD_MS)?
            } else {
                held_to_its_end(elapsed, HOLD_MS)?
            };
            Ok(format!("200 {state} after {ms} ms (hold {HOLD_MS} ms)"))
        });
        self.check(id, verdict);
    }

    /// A second agent's announcement, held while its link is accepted: answered when the link
    /// is, with its message (revision 1.6). The agent then redeems its code, so nothing is left
    /// waiting.
    async fn hold_announce_rung(&mut self) {
        const ID: &str = "server.hold.announce_rung";
        if !self.holds_apply(ID) {
            return;
        }
        let agent = KitAgent::new();
        if let Err(err) = self.refresh(&agent).await {
            let why = format!("a fresh agent's announcement was refused: {err}");
            self.rec.skip(ID, why);
            return;
        }
        let mut value = agent.announce();
        value["hold_ms"] = json!(RUNG_HOLD_MS);
        let held = self.held(
            "POST",
            "/agent/announce",
            As::Nobody,
            Some(body(&value)),
            RUNG_HOLD_MS,
        );
        let link = async {
            tokio::time::sleep(LINK_AFTER).await;
            let sent = Instant::now();
            (self.post("/link", As::User, &agent.link()).await, sent)
        };
        let ((reply, sent, answered), (link, link_sent)) = tokio::join!(held, link);
        match link {
            Ok(link) if link.status == 202 => {}
            Ok(link) if link.is_locked_out() => {
                self.rec.skip(ID, "the link was refused 429 locked_out");
                return;
            }
            Ok(link) => {
                let why = format!(
                    "the second agent's link was not accepted: {}",
                    link.summary()
                );
                self.rec.skip(ID, why);
                return;
            }
            Err(err) => {
                self.rec.skip(ID, format!("the second agent's link: {err}"));
                return;
            }
        }
        let mut code = None;
        let verdict = reply.and_then(|r| {
            let ms = millis(answered - sent);
            if answered < link_sent {
                return Err(format!(
                    "answered before the link was sent ({ms} ms, {}): not held",
                    r.summary()
                ));
            }
            let map = reply::json_object(&r, 200)?;
            let messages = map
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let [message] = messages.as_slice() else {
                return Err(format!(
                    "200 with {} messages after {ms} ms",
                    messages.len()
                ));
            };
            if message["type"] != json!("verify_and_redeem")
                || message["instance_id"] != json!(agent.id.to_string())
            {
                return Err("200 with a message that is not verify_and_redeem for the \
                            second agent"
                    .to_owned());
            }
            code = message["code"].as_str().map(str::to_owned);
            let after_link = millis(answered - link_sent);
            if ms * 2 > RUNG_HOLD_MS || after_link > RUNG_WITHIN_MS {
                return Err(format!(
                    "200 with the message after {ms} ms (hold {RUNG_HOLD_MS} ms), \
                     {after_link} ms after the link was sent: at the hold's end or a later \
                     recheck, not when the link was accepted"
                ));
            }
            Ok(format!(
                "200 verify_and_redeem {ms} ms after the held announcement, {} ms after the \
                 link was sent",
                millis(answered - link_sent)
            ))
        });
        self.check(ID, verdict);
        // Nothing left waiting, whatever the verdict: the second agent takes its message (from
        // a plain announcement if the held one did not bring it) and links too (a right guess,
        // refunded), so that it does not crowd the checks after this one.
        let code = match code {
            Some(code) => Some(code),
            None => self.refresh(&agent).await.ok().and_then(|messages| {
                messages
                    .iter()
                    .find_map(|m| m["code"].as_str().map(str::to_owned))
            }),
        };
        if let Some(code) = code {
            let _ = self.redeem_proven(&agent.id, &agent.key, &code, 1).await;
        }
    }

    async fn unauthorized(&mut self) {
        let link = KitAgent::new().link();
        let cases = [
            (
                "server.discover.unauthorized",
                "GET",
                "/discover".to_owned(),
                None,
            ),
            (
                "server.link.unauthorized",
                "POST",
                "/link".to_owned(),
                Some(body(&link)),
            ),
            (
                "server.link_status.unauthorized",
                "GET",
                format!("/link/{}", random_id()),
                None,
            ),
            (
                "server.codes.unauthorized",
                "POST",
                "/codes".to_owned(),
                None,
            ),
        ];
        for (id, method, path, payload) in cases {
            let reply = self.call(method, &path, As::Nobody, payload).await;
            let own = self.target.own_rejection;
            self.check(
                id,
                reply.and_then(|r| match reply::refusal(&r, 401, "unauthorized") {
                    Ok(got) => Ok(got),
                    Err(_) if own && !(200..300).contains(&r.status) => {
                        Ok(format!("{} (the host's own rejection)", r.status))
                    }
                    Err(got) => Err(got),
                }),
            );
        }
    }

    /// The cross-site rule of the state-changing user routes, with the account's credential (a
    /// browser sends its cookie with another site's request). The link requests carry an unknown
    /// field, so a server that lets them through answers `400 malformed` and changes nothing.
    async fn cross_site(&mut self) {
        let mut link = KitAgent::new().link();
        link["extra"] = json!(true);
        for (id, content_type) in [
            ("server.link.text_plain", "text/plain"),
            (
                "server.link.form_urlencoded",
                "application/x-www-form-urlencoded",
            ),
        ] {
            let payload = Some((body(&link), content_type));
            let reply = self.call_as("POST", "/link", As::User, payload, None).await;
            self.check(
                id,
                reply.and_then(|r| reply::refusal(&r, 415, "unsupported_media_type")),
            );
        }
        let payload = Some((body(&link), "application/json"));
        let origin = Some(FOREIGN_ORIGIN);
        let reply = self
            .call_as("POST", "/link", As::User, payload, origin)
            .await;
        self.check(
            "server.link.cross_origin",
            reply.and_then(|r| reply::refusal(&r, 403, "bad_origin")),
        );
        let reply = self.call_as("POST", "/codes", As::User, None, origin).await;
        self.check(
            "server.codes.cross_origin",
            reply.and_then(|r| reply::refusal(&r, 403, "bad_origin")),
        );
    }

    /// Discovery, link status, a wrong secret (wrong guess 1), then the right one, its delivery
    /// and redemption.
    async fn link_flow(&mut self, agent: &KitAgent) -> Linked {
        let mut linked = Linked::default();
        // Discovery shows the agent as announced.
        let reply = self.call("GET", "/discover", As::User, None).await;
        let shared = reply.as_ref().is_ok_and(|r| {
            reply::json_object(r, 200).is_ok_and(|map| {
                map.get("hidden").map(|h| &h["reason"]) == Some(&json!("shared_network"))
            })
        });
        if shared {
            // Not the server's fault: the network was judged shared (revision 1.2), e.g. by a
            // lockout from it (the `failures` signal), which the kit's own lockout check trips.
            self.rec.skip(
                "server.discover.ok",
                "200 hidden: shared_network: this network is judged shared (a lockout from it \
                 marks it for 10 minutes by default): run again later or from another network",
            );
        }
        let verdict = reply.and_then(|r| {
            let map = reply::json_object(&r, 200)?;
            let agents = map
                .get("agents")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("200 without an agents list: {}", r.excerpt()))?;
            let id = agent.id.to_string();
            let Some(entry) = agents.iter().find(|a| a["instance_id"] == json!(id)) else {
                return Err(format!(
                    "200 with {} agents, not the kit's (other agents announcing from this \
                     network hide every one past max_visible)",
                    agents.len()
                ));
            };
            let ip_ok = entry["private_ip"]
                .as_str()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                == Some(agent.ip);
            let port_ok = entry["port"].as_u64() == Some(u64::from(agent.port));
            // Only the four fields: a later version may add some.
            let info = KitAgent::info();
            let info_ok = ["hostname", "model", "agent", "agent_version"]
                .iter()
                .all(|field| entry["info"][field] == info[field]);
            if ip_ok && port_ok && info_ok {
                Ok(format!("200 with the kit's agent ({} shown)", agents.len()))
            } else {
                Err(format!("200, the kit's agent shown as {entry}"))
            }
        });
        self.check("server.discover.ok", verdict);

        let reply = self.link_status(&agent.id, As::User).await;
        self.check(
            "server.link_status.unknown",
            reply.and_then(|r| state_of(&r, &agent.id, "unknown")),
        );
        self.hold_status("server.hold.link_status_at_once", agent, "unknown", true)
            .await;
        let reply = self
            .call("GET", "/link/not-an-instance-id", As::User, None)
            .await;
        self.check(
            "server.link_status.malformed_id",
            reply.and_then(|r| reply::refusal(&r, 400, "malformed")),
        );
        let mut extra = agent.link();
        extra["extra"] = json!(true);
        let reply = self.post("/link", As::User, &extra).await;
        self.check(
            "server.link.malformed",
            reply.and_then(|r| reply::refusal(&r, 400, "malformed")),
        );

        // Wrong guess 1 (the only one before a right guess: after the right secret, a wrong
        // one reads already_linking).
        let _ = self.refresh(agent).await;
        let wrong = json!({
            "instance_id": agent.id.to_string(),
            "local_secret": LocalSecret::generate(&mut crate::os_rng()).to_hex().as_str(),
        });
        let reply = self.post("/link", As::User, &wrong).await;
        self.guess("server.link.wrong_secret", true, reply, |r| {
            reply::refusal(r, 403, "wrong_secret")
        });

        // The right secret.
        let _ = self.refresh(agent).await;
        let reply = self.post("/link", As::User, &agent.link()).await;
        let accepted = self
            .guess("server.link.accepted", false, reply, |r| {
                if r.status != 202 {
                    return Err(r.summary());
                }
                reply::json_headers(r)?;
                state_of_body(r, &agent.id, "pending").map(|_| "202 pending".to_owned())
            })
            .is_some();
        if !accepted {
            return linked;
        }
        linked.accepted = true;
        let reply = self.link_status(&agent.id, As::User).await;
        self.check(
            "server.link_status.pending",
            reply.and_then(|r| state_of(&r, &agent.id, "pending")),
        );
        if self.target.second.is_some() {
            let reply = self.link_status(&agent.id, As::Second).await;
            self.check(
                "server.link_status.other_account",
                reply.and_then(|r| state_of(&r, &agent.id, "unknown")),
            );
        } else {
            self.rec.skip(
                "server.link_status.other_account",
                "no second account given",
            );
        }
        self.hold_status("server.hold.link_status_held", agent, "pending", false)
            .await;
        // The agent's next announcement brings the secret and a code.
        let reply = self.announce(&agent.announce()).await;
        let mut code = None;
        let verdict = reply.and_then(|r| {
            let map = reply::json_object(&r, 200)?;
            let messages = map
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let [message] = messages.as_slice() else {
                return Err(format!(
                    "200 with {} messages: {}",
                    messages.len(),
                    r.excerpt()
                ));
            };
            let secret_ok =
                message["local_secret"].as_str() == Some(agent.secret.to_hex().as_str());
            if message["type"] != json!("verify_and_redeem")
                || message["instance_id"] != json!(agent.id.to_string())
                || !secret_ok
            {
                return Err(
                    "200 with a message that is not verify_and_redeem for the kit's \
                            instance and secret"
                        .to_owned(),
                );
            }
            let text = message["code"]
                .as_str()
                .filter(|c| crate::code::LinkCode::parse(c).is_some())
                .ok_or("200 with a message without a code")?;
            code = Some(text.to_owned());
            Ok("200 verify_and_redeem with the linked secret and a code".to_owned())
        });
        self.check("server.announce.delivers_message", verdict);
        let Some(code) = code else {
            return linked;
        };
        let reply = self.link_status(&agent.id, As::User).await;
        self.check(
            "server.link_status.delivered",
            reply.and_then(|r| state_of(&r, &agent.id, "delivered")),
        );
        let again = self.refresh(agent).await;
        self.check(
            "server.announce.delivered_once",
            again.and_then(|messages| match messages.len() {
                0 => Ok("200 no messages".to_owned()),
                n => Err(format!("200 with {n} messages again")),
            }),
        );

        // The code, redeemed (revision 1.1: with the presence key, as attempt 1).
        let reply = self.redeem_proven(&agent.id, &agent.key, &code, 1).await;
        let Some(first) = self.guess("server.redeem.ok", false, reply, |r| {
            auth_token(r)?;
            attempt_echo(r, 1)
        }) else {
            return linked;
        };
        // The reply was "lost": the retry, proven and newer, gets a new token; a key that does
        // not prove the instance, and a late duplicate, change nothing.
        let forged = PresenceKey::generate(&mut crate::os_rng());
        let reply = self.redeem_proven(&agent.id, &forged, &code, 2).await;
        self.guess("server.redeem.forged_key", false, reply, |r| {
            reply::refusal(r, 403, "forged_instance")
        });
        let reply = self.redeem_proven(&agent.id, &agent.key, &code, 2).await;
        self.guess("server.redeem.retry_reissues", false, reply, |r| {
            auth_token(r)?;
            attempt_echo(r, 2)?;
            if token_of(r) == token_of(&first) {
                return Err("200, but the same token again (a retry must reissue)".to_owned());
            }
            Ok("200 a new auth_token, attempt 2".to_owned())
        });
        let reply = self.redeem_proven(&agent.id, &agent.key, &code, 2).await;
        self.guess("server.redeem.superseded", false, reply, |r| {
            reply::refusal(r, 409, "superseded")
        });
        let reply = self.link_status(&agent.id, As::User).await;
        self.check(
            "server.link_status.linked",
            reply.and_then(|r| state_of(&r, &agent.id, "linked")),
        );
        let reply = self.announce(&agent.announce()).await;
        self.check(
            "server.announce.instance_used",
            reply.and_then(|r| reply::refusal(&r, 409, "instance_used")),
        );
        linked.code = Some(code);
        linked
    }

    /// Wrong guesses 2 to 5, after every check that needs a right guess: an instance not
    /// present, the used secret again, the used code again, an unknown code.
    async fn wrong_guesses(&mut self, agent: &KitAgent, linked: Linked) {
        let stranger = KitAgent::new();
        let reply = self.post("/link", As::User, &stranger.link()).await;
        self.guess("server.link.agent_not_found", true, reply, |r| {
            reply::refusal(r, 404, "agent_not_found")
        });
        if linked.accepted {
            let reply = self.post("/link", As::User, &agent.link()).await;
            self.guess("server.link.already_linking", true, reply, |r| {
                reply::refusal(r, 409, "already_linking")
            });
        } else {
            self.rec.skip(
                "server.link.already_linking",
                "needs server.link.accepted to pass",
            );
        }
        match &linked.code {
            Some(code) => {
                let reply = self.redeem(&agent.id, code).await;
                self.guess("server.redeem.used_code", true, reply, |r| {
                    reply::refusal(r, 403, "invalid_code")
                });
            }
            None => self
                .rec
                .skip("server.redeem.used_code", "needs server.redeem.ok to pass"),
        }
        let reply = self.redeem(&random_id(), &random_hex32()).await;
        self.guess("server.redeem.unknown_code", true, reply, |r| {
            reply::refusal(r, 403, "invalid_code")
        });
    }

    async fn redeem_malformed(&mut self) {
        let value =
            json!({"instance_id": random_id().to_string(), "code": random_hex32(), "extra": 1});
        let reply = self.post("/agent/redeem", As::Nobody, &value).await;
        self.check(
            "server.redeem.malformed",
            reply.and_then(|r| reply::refusal(&r, 400, "malformed")),
        );
    }

    /// A contested agent, then more agents than `max_visible`.
    async fn crowded(&mut self) {
        let contested = KitAgent::new();
        if let Err(err) = self.refresh(&contested).await {
            let why = format!("a fresh agent's announcement was refused: {err}");
            self.rec.skip_all(
                &[
                    "server.announce.presence_conflict",
                    "server.link.agent_contested",
                    "server.discover.too_many_agents",
                    "server.link.too_many_agents",
                ],
                &why,
            );
            return;
        }
        let mut other = contested.announce();
        other["commitment"] = json!(LocalSecret::generate(&mut crate::os_rng())
            .commitment(&contested.id)
            .to_hex());
        let reply = self.announce(&other).await;
        self.check(
            "server.announce.presence_conflict",
            reply.and_then(|r| reply::refusal(&r, 409, "presence_conflict")),
        );
        let reply = self.post("/link", As::User, &contested.link()).await;
        self.guess("server.link.agent_contested", false, reply, |r| {
            reply::refusal(r, 409, "agent_contested")
        });
        // With the contested one, max_visible + 1 agents present.
        let mut extra = Vec::new();
        for _ in 0..self.target.max_visible {
            let agent = KitAgent::new();
            if let Err(err) = self.refresh(&agent).await {
                let why = format!("a fresh agent's announcement was refused: {err}");
                self.rec.skip_all(
                    &[
                        "server.discover.too_many_agents",
                        "server.link.too_many_agents",
                    ],
                    &why,
                );
                return;
            }
            extra.push(agent);
        }
        let reply = self.call("GET", "/discover", As::User, None).await;
        self.check(
            "server.discover.too_many_agents",
            reply.and_then(|r| {
                let map = reply::json_object(&r, 200)?;
                match map.get("agents").and_then(Value::as_array) {
                    Some(agents) if agents.is_empty() => Ok("200 no agents".to_owned()),
                    _ => Err(format!("200 {}", r.excerpt())),
                }
            }),
        );
        if let Some(first) = extra.first() {
            let reply = self.post("/link", As::User, &first.link()).await;
            self.guess("server.link.too_many_agents", false, reply, |r| {
                reply::refusal(r, 409, "too_many_agents")
            });
        }
    }

    /// Mints two manual codes: redeems the first, and returns the second for the lockout check.
    async fn manual_codes(&mut self) -> Option<String> {
        let mut codes = Vec::new();
        for first in [true, false] {
            let reply = self.call("POST", "/codes", As::User, None).await;
            let verdict = reply.and_then(|r| {
                if r.status == 429 && r.error_code().as_deref() == Some("mint_quota") {
                    return Err("mint_quota".to_owned());
                }
                let map = reply::json_object(&r, 201)?;
                let code = reply::string(&map, "code")?;
                if crate::code::LinkCode::parse(code).is_none() {
                    return Err(format!("201 with code {code:?}"));
                }
                let expires = reply::string(&map, "expires_at")?;
                let at = DateTime::parse_from_rfc3339(expires)
                    .map_err(|_| format!("201 with expires_at {expires:?}, not RFC 3339"))?;
                if at.offset().local_minus_utc() != 0 {
                    return Err(format!("201 with expires_at {expires:?}, not in UTC"));
                }
                // Allowing for clock skew between the kit and the server.
                let skew = chrono::TimeDelta::minutes(5);
                if at.with_timezone(&Utc)
                    <= DateTime::<Utc>::from(std::time::SystemTime::now()) - skew
                {
                    return Err(format!("201 with expires_at {expires:?}, in the past"));
                }
                codes.push(code.to_owned());
                Ok(format!(
                    "201 a {}-character code until {expires}",
                    code.len()
                ))
            });
            if first {
                match verdict {
                    Err(ref quota) if quota == "mint_quota" => self.rec.skip(
                        "server.codes.ok",
                        "429 mint_quota: the account holds its most live codes (earlier runs \
                         within 10 minutes?)",
                    ),
                    verdict => {
                        self.check("server.codes.ok", verdict);
                    }
                }
            }
        }
        let mut codes = codes.into_iter();
        match codes.next() {
            Some(code) => {
                let reply = self.redeem(&random_id(), &code).await;
                self.guess("server.redeem.manual_code", false, reply, auth_token);
            }
            None => self.rec.skip(
                "server.redeem.manual_code",
                "no manual code could be minted",
            ),
        }
        codes.next()
    }

    /// More wrong guesses up to the threshold (if it is above the kit's five), then a right
    /// code, refused `locked_out`.
    async fn lockout(&mut self, spare: Option<String>) {
        let threshold = self.target.lockout_threshold;
        // The rest of the threshold, if it is higher than the kit's five planned guesses.
        while self.wrong < threshold && self.first_lockout.is_none() {
            self.wrong += 1;
            match self.redeem(&random_id(), &random_hex32()).await {
                Ok(r) if r.is_locked_out() => {
                    self.first_lockout = Some(self.wrong - 1);
                }
                Ok(r) if r.status == 403 => {}
                Ok(r) => {
                    let got = format!(
                        "an unknown code (extra wrong guess {}) got {}",
                        self.wrong,
                        r.summary()
                    );
                    self.check("server.lockout.locked_out", Err(got));
                    return;
                }
                Err(err) => {
                    self.check("server.lockout.locked_out", Err(err));
                    return;
                }
            }
        }
        match self.first_lockout {
            Some(0) => {
                self.rec.skip(
                    "server.lockout.locked_out",
                    "this network was locked out before the kit's first wrong guess",
                );
                return;
            }
            Some(at) if at != threshold => {
                let got = format!(
                    "locked out after {at} wrong guesses, not {threshold} (is the server's \
                     threshold another? other wrong guesses from this network?)"
                );
                self.check("server.lockout.locked_out", Err(got));
                return;
            }
            _ => {}
        }
        let Some(code) = spare else {
            self.rec.skip(
                "server.lockout.locked_out",
                "no spare manual code to present as the right guess",
            );
            return;
        };
        let reply = self.redeem(&random_id(), &code).await;
        let verdict = reply.and_then(|r| {
            reply::refusal(&r, 429, "locked_out")
                .map(|got| format!("{got} for a right code after {threshold} wrong guesses"))
                .map_err(|got| format!("a right code after {threshold} wrong guesses got {got}"))
        });
        self.check("server.lockout.locked_out", verdict);
    }

    async fn mint_quota(&mut self) {
        if self.target.second.is_none() {
            self.rec.skip(
                "server.codes.mint_quota",
                "no second account given (the check leaves it holding its most live codes)",
            );
            return;
        }
        let quota = self.target.codes_per_account;
        let mut minted = 0;
        let verdict = loop {
            let reply = match self.call("POST", "/codes", As::Second, None).await {
                Ok(reply) => reply,
                Err(err) => break Err(err),
            };
            if reply.status == 201 {
                minted += 1;
                if minted > quota {
                    break Err(format!("{minted} live codes minted, more than {quota}"));
                }
                continue;
            }
            break reply::refusal(&reply, 429, "mint_quota")
                .map(|got| format!("{got} after {minted} codes"))
                .map_err(|got| format!("{got} after {minted} codes"));
        };
        self.check("server.codes.mint_quota", verdict);
    }

    async fn network_full(&mut self) {
        let most = self.target.max_agents_per_network;
        let mut accepted = 0;
        let verdict = loop {
            let agent = KitAgent::new();
            let reply = match self.announce(&agent.announce()).await {
                Ok(reply) => reply,
                Err(err) => break Err(err),
            };
            if reply.status == 200 {
                accepted += 1;
                if accepted > most {
                    break Err(format!(
                        "{accepted} fresh agents accepted, more than {most}"
                    ));
                }
                continue;
            }
            break reply::refusal(&reply, 429, "network_full")
                .map(|got| format!("{got} after {accepted} more agents"))
                .map_err(|got| format!("{got} after {accepted} more agents"));
        };
        self.check("server.announce.network_full", verdict);
    }
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
