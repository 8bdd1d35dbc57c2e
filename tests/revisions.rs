//! Wire revisions that interoperate (PROTOCOL.md, "Revisions"): the revision matrix.
//!
//! `tests/fixtures/wire/{revision}/` holds each revision's messages as peers of that revision
//! send them (see its README for where each field set comes from). Two directions are run, for
//! every revision from 1.0 to this one:
//!
//! - **Old peers, this server.** An agent and a linker of revision R, played by R's recorded
//!   messages, link through this crate's server (its wire function, `server::endpoint::handle`),
//!   and every reply carries what R's peers read.
//! - **This agent and linker, old servers.** The crate's own `Agent` and `Linker` link through a
//!   server of revision R, emulated as R behaved on the wire: its requests were strict (a field
//!   newer than R is refused `400 malformed`) and its replies carry no field newer than R. Where
//!   R cannot carry what a party needs (a `Compare` device behind a server before 1.4), the party
//!   refuses with a clear reason instead of misreading.
//!
//! A revision of another major is refused (`400 unsupported_version`), never read as this one.

#![cfg(feature = "http-server")]

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lanlink::agent::{Agent, AgentConfig, AgentStatus, AgentTransmit, SecretRequest};
use lanlink::confirm::{ConfirmNonce, Confirmation};
use lanlink::event::{AgentEvent, LinkerEvent};
use lanlink::linker::{Linker, LinkerConfig, LinkerTransmit};
use lanlink::secret::PresenceKey;
use lanlink::server::endpoint::{handle, Handled, RequestBody};
use lanlink::server::{Server, ServerConfig, User};
use lanlink::wire::{
    self, Announce, AnnounceReply, DiscoverReply, LinkStatusReply, RedeemReply, Revision,
};
use lanlink::{AccountId, DeviceInfo, ForwardedHeaders, InstanceId, LocalSecret, VerifyFailure};
use serde_json::{json, Value};
use support::steps::ready;

const PREFIX: &str = "/lanlink/v1";
/// The household's public address, as the server sees every party of it.
const HOME: &str = "203.0.113.7";

/// Each field added to a message after 1.0, with the revision that added it: what a server of
/// an earlier revision refuses in a request (its requests are strict) and leaves out of a reply.
/// `[]` marks a field of each element of a list. Checked against `src/wire.rs` at each revision's
/// commit (tests/fixtures/wire/README.md).
const ADDED: &[(&str, &str, Revision)] = &[
    ("announce", "candidates", Revision::V1_3),
    ("announce", "revision", Revision::V1_5),
    ("announce", "hold_ms", Revision::V1_6),
    ("redeem", "presence_key", Revision::V1_1),
    ("redeem", "attempt", Revision::V1_1),
    ("redeem", "revision", Revision::V1_5),
    ("link", "nonce", Revision::V1_4),
    ("link", "revision", Revision::V1_5),
    ("announce_reply", "visibility", Revision::V1_2),
    ("announce_reply", "messages[].display_name", Revision::V1_4),
    ("announce_reply", "messages[].nonce", Revision::V1_4),
    ("announce_reply", "revision", Revision::V1_5),
    ("redeem_reply", "attempt", Revision::V1_1),
    ("redeem_reply", "revision", Revision::V1_5),
    ("discover_reply", "hidden", Revision::V1_2),
    ("discover_reply", "agents[].candidates", Revision::V1_3),
    ("discover_reply", "revision", Revision::V1_5),
    ("link_reply", "display_name", Revision::V1_4),
    ("link_reply", "revision", Revision::V1_5),
    ("code_reply", "revision", Revision::V1_5),
];

/// The fields of `message` that revision `at` has not yet, as (list, field) paths.
fn newer_than(
    message: &str,
    at: Revision,
) -> impl Iterator<Item = (Option<&'static str>, &'static str)> + '_ {
    ADDED
        .iter()
        .filter(move |(m, _, added)| *m == message && *added > at)
        .map(|(_, path, _)| match path.split_once("[].") {
            Some((list, field)) => (Some(list), field),
            None => (None, *path),
        })
}

/// `value` as a peer of revision `at` sends or reads it: without the fields `at` has not yet.
fn project(message: &str, at: Revision, mut value: Value) -> Value {
    for (list, field) in newer_than(message, at) {
        match list {
            None => {
                value.as_object_mut().expect("an object").remove(field);
            }
            Some(list) => {
                for item in value[list].as_array_mut().into_iter().flatten() {
                    item.as_object_mut().expect("an object").remove(field);
                }
            }
        }
    }
    // A peer of `at` states `at` (from 1.5, the revision that added the field).
    if let Some(stated) = value.get_mut("revision") {
        *stated = json!(at.to_string());
    }
    value
}

/// Whether a server of revision `at` reads `value` as a `message` request: it refuses any field
/// it does not know (requests are strict at every revision).
fn strict_at(message: &str, at: Revision, value: &Value) -> bool {
    newer_than(message, at).all(|(list, field)| match list {
        None => value.get(field).is_none(),
        Some(_) => true,
    })
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wire")
}

fn fixture(at: Revision, message: &str) -> Value {
    let path = fixtures()
        .join(at.to_string())
        .join(format!("{message}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// The recorded peer: its presence key, id, secret and nonce.
fn presence_key() -> PresenceKey {
    PresenceKey::from_bytes([0x11; 32])
}
fn secret() -> LocalSecret {
    LocalSecret::from_bytes([0x22; 32])
}
fn instance_id() -> InstanceId {
    presence_key().instance_id()
}

/// Every message of revision `at`, as this crate's types encode them, projected to `at`.
fn recorded(at: Revision) -> BTreeMap<&'static str, Value> {
    let id = instance_id();
    let info = DeviceInfo::new("printer.local", "MK4", "lanlink-agent", "0.1.0").expect("info");
    let announce = Announce::new(
        id,
        "192.168.1.50".parse().unwrap(),
        8080,
        info.clone(),
        secret().commitment(&id),
        presence_key(),
    )
    .with_candidates(vec!["10.0.0.5:8080".parse().unwrap()])
    .with_revision(Revision::CURRENT)
    .with_hold(20_000);
    let code = lanlink::LinkCode::parse("ABCD-2345").unwrap();
    let redeem = wire::RedeemRequest::new(id, code.clone())
        .with_presence_key(presence_key())
        .with_attempt(1)
        .with_revision(Revision::CURRENT);
    let nonce = ConfirmNonce::from_bytes([0x33; 16]);
    let link = wire::LinkRequest::new(id, secret())
        .with_nonce(nonce)
        .with_revision(Revision::CURRENT);
    let message = serde_json::from_value::<wire::AgentMessage>(json!({
        "type": "verify_and_redeem", "instance_id": id, "local_secret": hex(&[0x22; 32]),
        "code": "ABCD-2345", "display_name": "Alice", "nonce": hex(&[0x33; 16]),
    }))
    .expect("message");
    let announce_reply = AnnounceReply::new(vec![message], 2000);
    let agent = wire::DiscoveredAgent::new(id, "192.168.1.50".parse().unwrap(), 8080, info)
        .with_candidates(vec!["10.0.0.5:8080".parse().unwrap()]);
    let discover_reply = DiscoverReply::new(vec![agent].into());
    let link_reply =
        LinkStatusReply::new(id, wire::LinkState::Pending).with_display_name("Alice".into());
    let redeem_reply = RedeemReply::new(lanlink::AuthToken::from_bytes([0x44; 32]), 1);
    let expires = DateTime::from_timestamp(1_800_000_600, 0).unwrap();
    let code_reply = wire::CodeReply::new(code, expires);
    let all: [(&str, Value); 9] = [
        ("announce", to_value(&announce)),
        ("redeem", to_value(&redeem)),
        ("link", to_value(&link)),
        ("announce_reply", to_value(&announce_reply)),
        ("discover_reply", to_value(&discover_reply)),
        ("link_reply", to_value(&link_reply)),
        ("redeem_reply", to_value(&redeem_reply)),
        ("code_reply", to_value(&code_reply)),
        ("error", to_value(&wire::ErrorBody::new("wrong_secret"))),
    ];
    all.into_iter()
        .map(|(m, v)| (m, project(m, at, v)))
        .collect()
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::from_slice(&wire::encode(value)).expect("json")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fixtures are the recorded messages: `LANLINK_WRITE_FIXTURES=1` writes them (once, for a
/// new revision); otherwise this checks that this crate still encodes every revision's messages
/// exactly as recorded, so a change to an old revision's shape fails here.
#[test]
fn the_fixtures_are_each_revisions_messages() {
    let write = std::env::var_os("LANLINK_WRITE_FIXTURES").is_some();
    for at in Revision::ALL {
        for (message, value) in recorded(at) {
            let path = fixtures()
                .join(at.to_string())
                .join(format!("{message}.json"));
            if write {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let text = serde_json::to_string_pretty(&value).unwrap() + "\n";
                std::fs::write(&path, text).unwrap();
            }
            assert_eq!(fixture(at, message), value, "{}", path.display());
        }
    }
    // Each revision differs from the one before in exactly the fields PROTOCOL.md lists.
    let v10 = fixture(Revision::V1_0, "announce");
    assert!(v10.get("candidates").is_none() && v10.get("revision").is_none());
    assert_eq!(
        fixture(Revision::V1_3, "announce")["candidates"],
        json!(["10.0.0.5:8080"])
    );
    assert!(fixture(Revision::V1_0, "redeem")
        .get("presence_key")
        .is_none());
    assert_eq!(fixture(Revision::V1_1, "redeem")["attempt"], json!(1));
    assert!(fixture(Revision::V1_3, "link").get("nonce").is_none());
    assert!(fixture(Revision::V1_4, "link").get("nonce").is_some());
    assert!(fixture(Revision::V1_1, "announce_reply")
        .get("visibility")
        .is_none());
    assert_eq!(
        fixture(Revision::V1_2, "announce_reply")["visibility"],
        json!("visible")
    );
    assert_eq!(
        fixture(Revision::V1_5, "announce_reply")["revision"],
        json!("1.5")
    );
    assert!(fixture(Revision::V1_4, "discover_reply")
        .get("revision")
        .is_none());
}

/// A server of this crate over its wire function, seen as a peer of some revision sees it.
struct Wire {
    server: Server,
    now: DateTime<Utc>,
    rng: rand::rngs::StdRng,
    /// The server's revision as emulated: requests strict to it, replies projected to it.
    at: Revision,
    /// Requests the emulated server refused for a field newer than it.
    refused_newer: Vec<String>,
}

impl Wire {
    fn new(at: Revision) -> Self {
        use rand::SeedableRng;
        Self {
            server: Server::new(ServerConfig::default()).expect("config"),
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            rng: rand::rngs::StdRng::seed_from_u64(7),
            at,
            refused_newer: Vec::new(),
        }
    }

    /// One request; `(status, body)` as a server of revision `self.at` would answer.
    fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        user: Option<&User>,
    ) -> (u16, Value) {
        let (request_kind, reply_kind) = match (method, path) {
            ("POST", "/agent/announce") => (Some("announce"), "announce_reply"),
            ("POST", "/agent/redeem") => (Some("redeem"), "redeem_reply"),
            ("POST", "/link") => (Some("link"), "link_reply"),
            ("GET", "/discover") => (None, "discover_reply"),
            ("POST", "/codes") => (None, "code_reply"),
            _ => (None, "link_reply"),
        };
        if let (Some(kind), Some(body)) = (request_kind, body) {
            if !strict_at(kind, self.at, body) {
                self.refused_newer.push(format!("{kind} at {}", self.at));
                return (400, json!({"error": "malformed"}));
            }
        }
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let full = format!("{PREFIX}{path}");
        let headers: Vec<(&str, &[u8])> = vec![
            ("host", b"cloud.example"),
            ("content-type", b"application/json"),
        ];
        let request = lanlink::endpoint::HttpRequest {
            method,
            path: &full,
            query: None,
            authority: None,
            headers: &headers,
            peer: Some(HOME.parse::<IpAddr>().unwrap()),
        };
        // The endpoint's two passes: without a user, then with one if the route needs it.
        let mut pass = |user| {
            ready(handle(
                &self.server,
                self.now,
                &mut self.rng,
                PREFIX,
                &request,
                RequestBody::Complete(&bytes),
                user,
            ))
        };
        let mut answer = pass(None);
        if let Handled::NeedsUser { .. } = answer {
            answer = pass(Some(user.expect("a user route needs a user")));
        }
        let response = match answer {
            Handled::Answer(response) => response,
            // A 1.6 announcement asks for a hold: nothing happens, so it is answered when the
            // hold ends.
            Handled::Hold(held) => {
                self.now = held.until();
                ready(lanlink::server::endpoint::resume(
                    &self.server,
                    self.now,
                    &held,
                ))
                .expect("answered at the hold's end")
            }
            _ => panic!("no answer"),
        };
        let value: Value = serde_json::from_slice(&response.body).expect("a JSON body");
        let value = if response.status < 300 {
            project(reply_kind, self.at, value)
        } else {
            value
        };
        (response.status, value)
    }

    fn advance(&mut self, by: Duration) {
        self.now += chrono::Duration::from_std(by).unwrap();
    }
}

fn alice() -> User {
    User::named(
        AccountId::new("alice").unwrap(),
        lanlink::confirm::DisplayName::new("Alice"),
    )
}

/// An agent and a linker of every revision, played by their recorded messages, link through
/// this server; every reply carries what that revision's peers read.
#[test]
fn peers_of_every_revision_link_through_this_server() {
    for at in Revision::ALL {
        let mut wire = Wire::new(Revision::CURRENT);
        let announce = |wire: &mut Wire| {
            let body = fixture(at, "announce");
            let (status, reply) = wire.call("POST", "/agent/announce", Some(&body), None);
            assert_eq!(status, 200, "{at} announce: {reply}");
            assert_reads(at, "announce_reply", &reply);
            reply
        };
        announce(&mut wire);

        let (status, reply) = wire.call("GET", "/discover", None, Some(&alice()));
        assert_eq!(status, 200, "{at} discover: {reply}");
        assert_reads(at, "discover_reply", &reply);
        assert_eq!(reply["agents"][0]["instance_id"], json!(instance_id()));

        let (status, reply) =
            wire.call("POST", "/link", Some(&fixture(at, "link")), Some(&alice()));
        assert_eq!(status, 202, "{at} link: {reply}");
        assert_reads(at, "link_reply", &reply);

        wire.advance(Duration::from_secs(2));
        let reply = announce(&mut wire);
        let message = &reply["messages"][0];
        assert_eq!(message["local_secret"], json!(hex(&[0x22; 32])), "{at}");
        // Old agents ignore the fields they do not know; a 1.4 agent reads the nonce.
        if at >= Revision::V1_4 {
            assert_eq!(message["nonce"], json!(hex(&[0x33; 16])), "{at}");
        }

        let mut redeem = fixture(at, "redeem");
        redeem["code"] = message["code"].clone();
        let (status, reply) = wire.call("POST", "/agent/redeem", Some(&redeem), None);
        assert_eq!(status, 200, "{at} redeem: {reply}");
        assert_reads(at, "redeem_reply", &reply);

        let path = format!("/link/{}", instance_id());
        let (status, reply) = wire.call("GET", &path, None, Some(&alice()));
        assert_eq!((status, &reply["state"]), (200, &json!("linked")), "{at}");

        let (status, reply) = wire.call("POST", "/codes", None, Some(&alice()));
        assert_eq!(status, 201, "{at} codes: {reply}");
        assert_reads(at, "code_reply", &reply);
    }
}

/// `reply` holds every field revision `at`'s recorded reply has, of the same JSON type: what a
/// peer of `at` reads is there, whatever this revision added.
fn assert_reads(at: Revision, message: &str, reply: &Value) {
    fn same_shape(want: &Value, got: &Value, path: &str) {
        match (want, got) {
            (Value::Object(want), Value::Object(got)) => {
                for (key, value) in want {
                    let inner = got
                        .get(key)
                        .unwrap_or_else(|| panic!("{path}.{key} missing"));
                    same_shape(value, inner, &format!("{path}.{key}"));
                }
            }
            (Value::Array(want), Value::Array(got)) => {
                if let (Some(want), Some(got)) = (want.first(), got.first()) {
                    same_shape(want, got, &format!("{path}[0]"));
                }
            }
            (want, got) => assert_eq!(
                std::mem::discriminant(want),
                std::mem::discriminant(got),
                "{path}: {want} vs {got}"
            ),
        }
    }
    let want = fixture(at, message);
    // A reply may leave out an optional field the recording shows (no hidden agents, nothing
    // to forward): those the recording holds and this reply has must match in shape.
    let optional = [
        "hidden",
        "display_name",
        "nonce",
        "candidates",
        "attempt",
        "revision",
    ];
    let mut want = want;
    if let Value::Object(map) = &mut want {
        map.retain(|k, _| !optional.contains(&k.as_str()) || reply.get(k).is_some());
    }
    same_shape(&want, reply, &format!("{at} {message}"));
}

/// This crate's agent and linker against a server of every revision, emulated.
#[test]
fn this_agent_and_linker_link_through_servers_of_every_revision() {
    for at in Revision::ALL {
        let outcome = link_through(at, Confirmation::None);
        assert!(outcome.linked, "{at}: {outcome:?}");
        // Nothing newer than the server went unrefused, and this crate sent nothing the server
        // refused other than what it then dropped.
        assert_eq!(
            outcome.candidates_refused,
            at < Revision::V1_3,
            "{at}: {outcome:?}"
        );
        assert_eq!(
            outcome.nonce_refused,
            at < Revision::V1_4,
            "{at}: {outcome:?}"
        );
        // The revision is stated only to a server that stated 1.5 or later.
        assert_eq!(
            outcome.stated_revision,
            at >= Revision::V1_5,
            "{at}: {outcome:?}"
        );
        assert!(
            outcome
                .refused_newer
                .iter()
                .all(|r| !r.contains("revision")),
            "{at}: {outcome:?}"
        );
    }
}

/// A device that must compare codes cannot do so behind a server before 1.4 (which forwards no
/// nonce): it refuses the link with a clear reason, and never links unconfirmed.
#[test]
fn a_compare_device_refuses_clearly_behind_a_server_before_1_4() {
    for at in Revision::ALL {
        let outcome = link_through(at, Confirmation::Compare);
        if at < Revision::V1_4 {
            assert!(!outcome.linked, "{at}");
            assert_eq!(
                outcome.rejected,
                Some(VerifyFailure::ConfirmationUnavailable),
                "{at}"
            );
        } else {
            assert!(outcome.confirming, "{at}: {outcome:?}");
        }
    }
}

#[derive(Debug, Default)]
struct Outcome {
    linked: bool,
    confirming: bool,
    candidates_refused: bool,
    proof_refused: bool,
    nonce_refused: bool,
    stated_revision: bool,
    rejected: Option<VerifyFailure>,
    refused_newer: Vec<String>,
}

/// Drives this crate's `Agent` (with a candidate endpoint) and `Linker` (with a nonce) through
/// the emulated server of revision `at` until the agent links or stops (bounded).
fn link_through(at: Revision, policy: Confirmation) -> Outcome {
    let mut wire = Wire::new(at);
    let mut out = Outcome::default();
    let start = Instant::now();
    let mut now = start;
    let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, DeviceInfo::default())
        .candidates(vec!["10.0.0.5:8080".parse().unwrap()])
        .confirmation(policy);
    let mut rng = lanlink::os_rng();
    let mut agent = Agent::new(config, now, &mut rng).unwrap();
    let mut linker = Linker::new(LinkerConfig::default(), now, &mut rng);
    let id = agent.instance_id();
    for _ in 0..200 {
        // A party that sends again at once after every refusal would loop here: bounded.
        for _ in 0..8 {
            let Some(transmit) = agent.poll_transmit(now) else {
                break;
            };
            match transmit {
                AgentTransmit::Announce(announce) => {
                    out.stated_revision |= announce.revision.is_some();
                    let (status, reply) =
                        wire.call("POST", "/agent/announce", Some(&to_value(&announce)), None);
                    match status {
                        200 => {
                            agent.handle_announce_reply(now, serde_json::from_value(reply).unwrap())
                        }
                        400 if reply["error"] == "malformed" => agent.handle_request_malformed(now),
                        _ => panic!("{at} announce: {status} {reply}"),
                    }
                }
                AgentTransmit::Redeem(request) => {
                    out.stated_revision |= request.revision.is_some();
                    let (status, reply) =
                        wire.call("POST", "/agent/redeem", Some(&to_value(&request)), None);
                    match status {
                        200 => agent
                            .handle_redeem_reply(now, Ok(serde_json::from_value(reply).unwrap()))
                            .unwrap(),
                        400 if reply["error"] == "malformed" => agent.handle_request_malformed(now),
                        _ => panic!("{at} redeem: {status} {reply}"),
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        for _ in 0..8 {
            let Some(transmit) = linker.poll_transmit(now) else {
                break;
            };
            match transmit {
                LinkerTransmit::Discover => {
                    let (status, reply) = wire.call("GET", "/discover", None, Some(&alice()));
                    assert_eq!(status, 200, "{at}");
                    linker
                        .handle_discover_reply(now, Ok(serde_json::from_value(reply).unwrap()))
                        .unwrap();
                }
                LinkerTransmit::FetchSecret {
                    instance_id, fetch, ..
                } => {
                    let text = instance_id.to_string();
                    let request = SecretRequest {
                        peer: "192.168.1.20".parse().unwrap(),
                        forwarded: ForwardedHeaders::NONE,
                        host: Some("192.168.1.50:8080"),
                        origin: None,
                        instance_id: &text,
                    };
                    let reply = agent.handle_secret_request(now, &request).expect("served");
                    linker.handle_secret_reply(now, fetch, Ok(reply)).unwrap();
                }
                LinkerTransmit::Link(request) => {
                    out.stated_revision |= request.revision.is_some();
                    let (status, reply) =
                        wire.call("POST", "/link", Some(&to_value(&request)), Some(&alice()));
                    match status {
                        202 => linker
                            .handle_link_reply(now, Ok(serde_json::from_value(reply).unwrap()))
                            .unwrap(),
                        400 if reply["error"] == "malformed" => {
                            linker.handle_link_malformed(now).unwrap()
                        }
                        _ => panic!("{at} link: {status} {reply}"),
                    }
                }
                LinkerTransmit::LinkStatus { instance_id, .. } => {
                    let (status, reply) =
                        wire.call("GET", &format!("/link/{instance_id}"), None, Some(&alice()));
                    assert_eq!(status, 200, "{at}");
                    linker
                        .handle_link_status(now, Ok(serde_json::from_value(reply).unwrap()))
                        .unwrap();
                }
                other => panic!("{other:?}"),
            }
        }
        while let Some(event) = agent.poll_event() {
            match event {
                AgentEvent::CandidatesRefused => out.candidates_refused = true,
                AgentEvent::RedeemProofRefused => out.proof_refused = true,
                AgentEvent::MessageRejected { reason } => out.rejected = Some(reason),
                _ => {}
            }
        }
        while let Some(event) = linker.poll_event() {
            if let LinkerEvent::NonceRefused { instance_id } = event {
                assert_eq!(instance_id, id);
                out.nonce_refused = true;
            }
        }
        match agent.status() {
            AgentStatus::Linked => {
                out.linked = true;
                break;
            }
            AgentStatus::Confirming { .. } => {
                out.confirming = true;
                break;
            }
            AgentStatus::Stopped(_) => break,
            _ => {}
        }
        now += Duration::from_millis(500);
        wire.advance(Duration::from_millis(500));
    }
    out.refused_newer = wire.refused_newer;
    out
}

/// A peer of a newer minor is read (the fields it adds are optional, and sent only to a server
/// that states it knows them); another major is refused, never read as this one.
#[test]
fn a_newer_minor_is_read_and_another_major_is_refused() {
    let mut wire = Wire::new(Revision::CURRENT);
    let mut announce = fixture(Revision::V1_5, "announce");
    announce["revision"] = json!("1.9");
    assert_eq!(
        wire.call("POST", "/agent/announce", Some(&announce), None)
            .0,
        200
    );
    for other in ["2.0", "0.9"] {
        announce["revision"] = json!(other);
        let (status, reply) = wire.call("POST", "/agent/announce", Some(&announce), None);
        assert_eq!(
            (status, reply),
            (400, json!({"error": "unsupported_version"})),
            "{other}"
        );
    }
    announce["revision"] = json!("1.x");
    assert_eq!(
        wire.call("POST", "/agent/announce", Some(&announce), None)
            .1,
        json!({"error": "malformed"})
    );
    let mut link = fixture(Revision::V1_5, "link");
    link["revision"] = json!("2.1");
    let (status, reply) = wire.call("POST", "/link", Some(&link), Some(&alice()));
    assert_eq!(
        (status, reply),
        (400, json!({"error": "unsupported_version"}))
    );

    // A reply from a newer server: its revision is kept, its unknown fields ignored.
    let mut reply = fixture(Revision::V1_5, "announce_reply");
    reply["revision"] = json!("1.9");
    reply["something_new"] = json!({"x": 1});
    let reply: AnnounceReply = serde_json::from_value(reply).unwrap();
    assert_eq!(reply.revision, Some(Revision::new(1, 9)));
    let mut future = fixture(Revision::V1_5, "announce_reply");
    future["revision"] = json!("2.0");
    assert!(serde_json::from_value::<AnnounceReply>(future).is_err());
}
