//! The Obico profile's wire, two ways: one corpus of raw requests sent over TCP to the axum
//! routes (`obico::server::router` on `http::serve`), and the same requests handed to the
//! sans-IO wire function (`obico::endpoint::handle`) by a host written here with no axum, no
//! hyper and no `http` crate. Both run the same configuration, the same users and the same
//! requests in the same order; every answer must be identical — the status, every header line in
//! order, and the body — apart from:
//!
//! - the framing headers the HTTP library writes itself ([`FRAMING`]: `date`, `server`,
//!   `content-length`, `transfer-encoding`, `connection`, `keep-alive`);
//! - the values each server draws at random or reads from its clock ([`MASKED`], and a code
//!   record's numeric `id`), masked in both bodies;
//! - a request that names a code, a passcode or a token the server handed out (`{CODE}`,
//!   `{PASSCODE}`, `{TOKEN}`) names each server's own.
//!
//! The host here plays the part of an HTTP stack: it splits the target, lists the header lines
//! as sent, says what became of the body (complete, too large, broken off, timed out: as the
//! request was sent), and answers `Handled::NeedsUser` with its own bearer tokens.
#![cfg(feature = "obico")]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanlink::endpoint::split_target;
use lanlink::http::{self, BearerTokens, ServeConfig};
use lanlink::obico::endpoint::{self, Profile};
use lanlink::obico::tokens::MemoryTokens;
use lanlink::obico::{self, ObicoConfig};
use lanlink::server::endpoint::{Handled, HttpRequest, RequestBody, ServerResponse, User};
use lanlink::server::{LinkHook, Server, ServerConfig};
use lanlink::AccountId;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789";
/// What every request names as its host.
const HOST: &str = "cloud.example";
/// A web origin allowed to send the state-changing user requests.
const APP: &str = "https://app.example";
/// The public networks the trusted proxy (127.0.0.1) names.
const HOME: &str = "203.0.113.7";
const OTHER: &str = "198.51.100.20";
const GUESSER: &str = "192.0.2.66";
/// The request deadline of the axum server.
const DEADLINE: Duration = Duration::from_secs(1);
/// The largest body a route reads.
const MAX_BODY: usize = lanlink::server::endpoint::MAX_BODY_BYTES;

/// Header lines the HTTP library writes itself, left out of the comparison.
const FRAMING: [&str; 6] = [
    "date",
    "server",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];
/// JSON keys whose non-empty string values are random or read from the clock.
const MASKED: [&str; 8] = [
    "code",
    "auth_token",
    "expired_at",
    "verified_at",
    "created_at",
    "one_time_passcode",
    "one_time_passlink",
    "verification_code",
];

fn config() -> ServerConfig {
    ServerConfig::default()
        .trusted_proxies(vec!["127.0.0.1/32".parse().unwrap()])
        .allow_origin(APP)
}

fn obico_config() -> ObicoConfig {
    // Polls of one device come closer together here than any agent's.
    ObicoConfig::default()
        .min_poll_gap(Duration::ZERO)
        .passlink_base("https://app.example/otp/")
}

fn users() -> Vec<(String, AccountId)> {
    vec![
        (ALICE.to_owned(), AccountId::new("alice").unwrap()),
        (BOB.to_owned(), AccountId::new("bob").unwrap()),
    ]
}

// ───────────────────────────── the corpus ─────────────────────────────

/// How a request is sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Send {
    /// All at once.
    Whole,
    /// All at once, then the client closes its side: a body shorter than its
    /// `Content-Length` breaks off.
    HalfClose,
    /// The bytes, then one more byte every 200 ms until the answer: the body trickles past the
    /// deadline.
    Trickle,
}

/// What an answer hands to later cases.
#[derive(Clone, Copy, Debug)]
enum Keep {
    /// `messages[0].data.code` as `{CODE}`.
    Code,
    /// `one_time_passcode` as `{PASSCODE}`.
    Passcode,
    /// `printer.auth_token` as `{TOKEN}`.
    Token,
}

#[derive(Debug)]
struct Case {
    name: String,
    /// From the trusted proxy (127.0.0.1) or from an untrusted peer (127.0.0.2).
    proxy: bool,
    method: String,
    target: String,
    /// Header lines after `host`, before `content-length` and `connection`; values as bytes.
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// The `Content-Length` sent, when not the body's length.
    declared: Option<usize>,
    send: Send,
    keep: Option<Keep>,
}

#[derive(Default)]
struct Corpus(Vec<Case>);

fn device(n: u8) -> String {
    // Version-4 UUIDs in 32-hex form, fixed so that both servers see the same ones.
    format!("{n:02x}0c3b5e2a7d4e1f8b6c0d2e4f6a8b0c")
}

fn poll(n: u8, host: &str) -> Value {
    json!({
        "device_id": device(n), "host_or_ip": host, "port": 80,
        "hostname": format!("printer-{n}"), "rpi_model": "Raspberry Pi 4",
        "agent": "OctoPrint-Obico", "plugin_version": "2.5.0", "os": "Linux",
    })
}

const SECRET: &str = "5f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100";

impl Corpus {
    fn add(
        &mut self,
        name: &str,
        proxy: bool,
        method: &str,
        target: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> &mut Case {
        self.0.push(Case {
            name: name.to_owned(),
            proxy,
            method: method.to_owned(),
            target: target.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
                .collect(),
            body: body.to_vec(),
            declared: None,
            send: Send::Whole,
            keep: None,
        });
        self.0.last_mut().unwrap()
    }

    /// An agent's request from `network`, through the trusted proxy.
    fn agent(
        &mut self,
        name: &str,
        method: &str,
        target: &str,
        network: &str,
        body: &[u8],
    ) -> &mut Case {
        let headers: [(&str, &[u8]); 2] = [
            ("content-type", b"application/json"),
            ("x-forwarded-for", network.as_bytes()),
        ];
        self.add(name, true, method, target, &headers, body)
    }

    /// A user's request (bearer `token`, if any) from `network`, with `extra` header lines.
    #[allow(clippy::too_many_arguments)]
    fn user(
        &mut self,
        name: &str,
        method: &str,
        target: &str,
        token: Option<&str>,
        network: &str,
        extra: &[(&str, &[u8])],
        body: &[u8],
    ) -> &mut Case {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &[u8])> = Vec::new();
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_bytes()));
        }
        headers.push(("x-forwarded-for", network.as_bytes()));
        headers.extend_from_slice(extra);
        self.add(name, true, method, target, &headers, body)
    }
}

const UNLINKED: &str = "/api/v1/octo/unlinked/";
const VERIFY: &str = "/api/v1/octo/verify/";
const LEGACY: &str = "/api/v1/onetimeverificationcodes/verify/";
const PRINTER: &str = "/api/v1/octo/printer/";
const DISCOVERY: &str = "/api/v1/printer_discovery/";
const PASSCODES: &str = "/api/v1/one_time_passcodes/";
const JSON: (&str, &[u8]) = ("content-type", b"application/json");

fn to_vec(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn corpus() -> Corpus {
    let mut c = Corpus::default();
    let one = to_vec(&poll(1, "192.168.1.50"));
    let mut two = poll(2, "192.168.7.9");
    two["one_time_passcode"] = "".into();
    let two = to_vec(&two);

    // ── the agents' poll ──
    c.agent("poll at home", "POST", UNLINKED, HOME, &one);
    c.agent("poll asking for a passcode", "POST", UNLINKED, OTHER, &two)
        .keep = Some(Keep::Passcode);
    c.agent("poll, malformed JSON", "POST", UNLINKED, HOME, b"{");
    c.agent("poll, not an object", "POST", UNLINKED, HOME, b"[1]");
    c.agent("poll, empty body", "POST", UNLINKED, HOME, b"");
    c.agent(
        "poll, bad device_id",
        "POST",
        UNLINKED,
        HOME,
        br#"{"device_id":"x","host_or_ip":"192.168.1.5","port":80}"#,
    );
    c.agent(
        "poll, public host_or_ip",
        "POST",
        UNLINKED,
        HOME,
        &to_vec(&poll(3, "8.8.8.8")),
    );
    let mut big = one.clone();
    big.resize(MAX_BODY + 1, b' ');
    c.agent("poll, oversized body", "POST", UNLINKED, HOME, &big);
    let mut at_limit = one.clone();
    at_limit.resize(MAX_BODY, b' ');
    c.agent("poll, body at the limit", "POST", UNLINKED, HOME, &at_limit);
    let case = c.agent("poll, body breaks off", "POST", UNLINKED, HOME, &one[..10]);
    case.declared = Some(one.len());
    case.send = Send::HalfClose;
    let case = c.agent(
        "poll, body trickles past the deadline",
        "POST",
        UNLINKED,
        HOME,
        &one[..10],
    );
    case.declared = Some(one.len());
    case.send = Send::Trickle;
    c.add(
        "poll from the proxy naming no client",
        true,
        "POST",
        UNLINKED,
        &[JSON],
        &one,
    );
    c.add(
        "poll from an untrusted peer",
        false,
        "POST",
        UNLINKED,
        &[JSON, ("x-forwarded-for", HOME.as_bytes())],
        &one,
    );
    c.add(
        "poll with Forwarded",
        true,
        "POST",
        UNLINKED,
        &[JSON, ("forwarded", b"for=203.0.113.7;proto=https")],
        &one,
    );
    c.add(
        "poll with two X-Forwarded-For lines",
        true,
        "POST",
        UNLINKED,
        &[
            JSON,
            ("x-forwarded-for", b"10.9.9.9"),
            ("x-forwarded-for", HOME.as_bytes()),
        ],
        &one,
    );
    c.add(
        "poll with an X-Forwarded-For line that is not text",
        true,
        "POST",
        UNLINKED,
        &[
            JSON,
            ("x-forwarded-for", b"\xff203.0.113.7"),
            ("x-forwarded-for", HOME.as_bytes()),
        ],
        &one,
    );
    c.add(
        "poll with a garbled Forwarded",
        true,
        "POST",
        UNLINKED,
        &[JSON, ("forwarded", b"for=\"[nonsense")],
        &one,
    );
    for method in ["GET", "HEAD", "OPTIONS", "DELETE", "PUT"] {
        c.agent(
            &format!("{method} on the poll route"),
            method,
            UNLINKED,
            HOME,
            b"",
        );
    }
    c.agent(
        "poll without the slash",
        "POST",
        "/api/v1/octo/unlinked",
        HOME,
        &one,
    );
    c.agent(
        "poll with a query",
        "POST",
        "/api/v1/octo/unlinked/?x=1",
        HOME,
        &one,
    );

    // ── unknown paths ──
    c.agent("an unknown GET", "GET", "/api/v1/nope", HOME, b"");
    c.agent(
        "an unknown POST",
        "POST",
        "/api/v1/octo/printer_events/",
        HOME,
        b"{}",
    );
    c.agent(
        "an unknown OPTIONS",
        "OPTIONS",
        "/api/v1/octo/anything/",
        HOME,
        b"",
    );
    c.agent(
        "an escaped known path",
        "POST",
        "/api/v1/octo/unlinked%2F",
        HOME,
        &one,
    );
    c.agent("a deep unknown path", "GET", "/api/v1/a/b/c/d/", HOME, b"");
    c.agent("the API's root", "GET", "/api/v1/", HOME, b"");

    // ── discovery ──
    c.user(
        "discovery without a user",
        "GET",
        DISCOVERY,
        None,
        HOME,
        &[],
        b"",
    );
    c.user(
        "discovery with a stranger's token",
        "GET",
        DISCOVERY,
        Some("nope"),
        HOME,
        &[],
        b"",
    );
    c.user(
        "discovery at home",
        "GET",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[],
        b"",
    );
    c.user(
        "HEAD discovery at home",
        "HEAD",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[],
        b"",
    );
    c.user(
        "discovery elsewhere",
        "GET",
        DISCOVERY,
        Some(BOB),
        OTHER,
        &[],
        b"",
    );
    c.add(
        "discovery from an untrusted peer",
        false,
        "GET",
        DISCOVERY,
        &[("authorization", format!("Bearer {ALICE}").as_bytes())],
        b"",
    );
    c.add(
        "discovery, absolute-form target",
        true,
        "GET",
        &format!("http://{HOST}{DISCOVERY}"),
        &[
            ("authorization", format!("Bearer {ALICE}").as_bytes()),
            ("x-forwarded-for", HOME.as_bytes()),
        ],
        b"",
    );
    for method in ["PUT", "OPTIONS", "PATCH"] {
        c.user(
            &format!("{method} discovery"),
            method,
            DISCOVERY,
            Some(ALICE),
            HOME,
            &[],
            b"",
        );
    }

    // ── linking ──
    let link = to_vec(&json!({"device_id": device(1), "device_secret": SECRET, "code": "123"}));
    c.user(
        "link without Content-Type",
        "POST",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[],
        &link,
    );
    c.user(
        "link as text/plain",
        "POST",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[("content-type", b"text/plain")],
        &link,
    );
    c.user(
        "link from a foreign Origin",
        "POST",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[JSON, ("origin", b"https://evil.example")],
        &link,
    );
    c.user(
        "link from a foreign Origin, no user",
        "POST",
        DISCOVERY,
        None,
        HOME,
        &[JSON, ("origin", b"https://evil.example")],
        &link,
    );
    c.user(
        "link with an Origin that is not text",
        "POST",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[JSON, ("origin", b"https://app.example\xff")],
        &link,
    );
    c.user(
        "link without a user",
        "POST",
        DISCOVERY,
        None,
        HOME,
        &[JSON],
        &link,
    );
    c.user(
        "link without device_id",
        "POST",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[JSON],
        &to_vec(&json!({"device_secret": SECRET})),
    );
    c.user(
        "link without device_secret",
        "POST",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[JSON],
        &to_vec(&json!({"device_id": device(1)})),
    );
    c.user(
        "link with a bad device_id",
        "POST",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[JSON],
        &to_vec(&json!({"device_id": 7, "device_secret": SECRET})),
    );
    c.user(
        "link, malformed JSON",
        "POST",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[JSON],
        b"{\"device_id\"",
    );
    let mut big_link = link.clone();
    big_link.resize(MAX_BODY + 10, b' ');
    c.user(
        "link, oversized body",
        "POST",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[JSON],
        &big_link,
    );
    c.user(
        "link an unknown device",
        "POST",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[JSON],
        &to_vec(&json!({"device_id": device(9), "device_secret": SECRET})),
    );
    c.user(
        "link from the allowed Origin",
        "POST",
        DISCOVERY,
        Some(ALICE),
        HOME,
        &[
            ("content-type", b"application/json; charset=utf-8"),
            ("origin", APP.as_bytes()),
        ],
        &link,
    );
    c.agent("poll: the link's message", "POST", UNLINKED, HOME, &one)
        .keep = Some(Keep::Code);
    c.agent("poll: the message is gone", "POST", UNLINKED, HOME, &one);

    // ── redemption ──
    c.agent("verify without a code", "GET", VERIFY, HOME, b"");
    c.agent(
        "verify an empty code",
        "GET",
        &format!("{VERIFY}?code="),
        HOME,
        b"",
    );
    c.agent(
        "verify with two codes",
        "GET",
        &format!("{VERIFY}?code=a&code=b"),
        HOME,
        b"",
    );
    for n in 1..=6 {
        c.agent(
            &format!("verify a made-up code ({n})"),
            "POST",
            &format!("{VERIFY}?code=ABCD-EFGH-{n}"),
            GUESSER,
            b"",
        );
    }
    c.agent(
        "verify the code from a locked-out network",
        "GET",
        &format!("{VERIFY}?code={{CODE}}"),
        GUESSER,
        b"",
    );
    c.agent(
        "verify the code (escaped, padded)",
        "GET",
        &format!("{VERIFY}?other=%zz&code=+{{CODE}}+"),
        HOME,
        b"",
    )
    .keep = Some(Keep::Token);
    c.agent(
        "verify the code again",
        "GET",
        &format!("{VERIFY}?code={{CODE}}"),
        HOME,
        b"",
    );
    c.agent("legacy verify without a code", "GET", LEGACY, HOME, b"");
    c.agent(
        "HEAD legacy verify",
        "HEAD",
        &format!("{LEGACY}?code=x"),
        HOME,
        b"",
    );
    for method in ["DELETE", "OPTIONS"] {
        c.agent(&format!("{method} verify"), method, VERIFY, HOME, b"");
    }
    c.add(
        "verify from the proxy naming no client",
        true,
        "POST",
        &format!("{VERIFY}?code=x"),
        &[],
        b"",
    );

    // ── the linked printer ──
    let token = |value: &str| [("authorization", value.as_bytes().to_vec())];
    for (name, value) in [
        ("printer with its token", "Token {TOKEN}"),
        ("printer with a padded token", "Token  {TOKEN} "),
        ("printer with a bearer token", "Bearer {TOKEN}"),
        ("printer with lowercase scheme", "token {TOKEN}"),
        ("printer with a wrong token", "Token 00"),
    ] {
        let headers = token(value);
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        c.add(name, true, "GET", PRINTER, &headers, b"");
    }
    c.add("printer without a token", true, "GET", PRINTER, &[], b"");
    c.add(
        "HEAD printer with its token",
        true,
        "HEAD",
        PRINTER,
        &[("authorization", b"Token {TOKEN}")],
        b"",
    );
    c.add(
        "printer, token on the second line",
        true,
        "GET",
        PRINTER,
        &[
            ("authorization", b"Basic x"),
            ("authorization", b"Token {TOKEN}"),
        ],
        b"",
    );
    c.add("POST printer", true, "POST", PRINTER, &[JSON], b"{}");

    // ── passcodes ──
    let claim = to_vec(&json!({"one_time_passcode": "{PASSCODE}", "verification_code": "1"}));
    c.user(
        "claim without a user",
        "POST",
        PASSCODES,
        None,
        OTHER,
        &[JSON],
        &claim,
    );
    c.user(
        "claim without Content-Type",
        "POST",
        PASSCODES,
        Some(BOB),
        OTHER,
        &[],
        &claim,
    );
    c.user(
        "claim without the passcode",
        "POST",
        PASSCODES,
        Some(BOB),
        OTHER,
        &[JSON],
        b"{}",
    );
    c.user(
        "claim with a number",
        "POST",
        PASSCODES,
        Some(BOB),
        OTHER,
        &[JSON],
        br#"{"one_time_passcode": 12}"#,
    );
    c.user(
        "claim a wrong passcode",
        "POST",
        PASSCODES,
        Some(BOB),
        OTHER,
        &[JSON],
        br#"{"one_time_passcode": "ZZZZZZZZ"}"#,
    );
    c.user(
        "claim, broken JSON",
        "POST",
        PASSCODES,
        Some(BOB),
        OTHER,
        &[JSON],
        b"nul",
    );
    c.user(
        "claim the passcode",
        "POST",
        PASSCODES,
        Some(BOB),
        OTHER,
        &[JSON],
        &claim,
    );
    c.user(
        "GET the passcode route",
        "GET",
        PASSCODES,
        Some(BOB),
        OTHER,
        &[],
        b"",
    );
    let mut again = poll(2, "192.168.7.9");
    again["one_time_passcode"] = "{PASSCODE}".into();
    c.agent(
        "poll: the claimed passcode's code",
        "POST",
        UNLINKED,
        OTHER,
        &to_vec(&again),
    );
    c
}

/// `{CODE}`, `{PASSCODE}`, `{TOKEN}` replaced by a side's own.
fn fill(bytes: &[u8], kept: &Kept) -> Vec<u8> {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if !text.contains('{') || std::str::from_utf8(bytes).is_err() {
        return bytes.to_vec();
    }
    for (key, value) in [
        ("{CODE}", &kept.code),
        ("{PASSCODE}", &kept.passcode),
        ("{TOKEN}", &kept.token),
    ] {
        if let Some(value) = value {
            text = text.replace(key, value);
        }
    }
    text.into_bytes()
}

#[derive(Default, Debug)]
struct Kept {
    code: Option<String>,
    passcode: Option<String>,
    token: Option<String>,
}

impl Kept {
    fn keep(&mut self, keep: Option<Keep>, body: &[u8]) {
        let Some(keep) = keep else { return };
        let value: Value = serde_json::from_slice(body).unwrap_or_default();
        let found = match keep {
            Keep::Code => value["messages"][0]["data"]["code"].as_str(),
            Keep::Passcode => value["one_time_passcode"].as_str(),
            Keep::Token => value["printer"]["auth_token"].as_str(),
        }
        .map(str::to_owned);
        assert!(found.is_some(), "{keep:?} in {value}");
        match keep {
            Keep::Code => self.code = found,
            Keep::Passcode => self.passcode = found,
            Keep::Token => self.token = found,
        }
    }
}

/// The request's bytes as sent: request line, `host`, its header lines, `content-length` (for
/// a body or a `POST`), `connection: close`, the body.
fn raw(case: &Case, kept: &Kept) -> Vec<u8> {
    let target = String::from_utf8(fill(case.target.as_bytes(), kept)).unwrap();
    let mut out = format!("{} {target} HTTP/1.1\r\n", case.method).into_bytes();
    for (name, value) in head_lines(case, kept) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&fill(&case.body, kept));
    out
}

/// Every header line as sent, in order (names lowercase, as hyper hands them over).
fn head_lines(case: &Case, kept: &Kept) -> Vec<(String, Vec<u8>)> {
    let mut lines = vec![("host".to_owned(), HOST.as_bytes().to_vec())];
    for (name, value) in &case.headers {
        lines.push((name.clone(), fill(value, kept)));
    }
    let body = fill(&case.body, kept);
    if !body.is_empty() || case.method == "POST" || case.declared.is_some() {
        let length = case.declared.unwrap_or(body.len());
        lines.push(("content-length".to_owned(), length.to_string().into_bytes()));
    }
    lines.push(("connection".to_owned(), b"close".to_vec()));
    lines
}

// ───────────────────────────── answers ─────────────────────────────

/// An answer as compared: the status, the header lines but the framing ones, the body with
/// [`MASKED`] values masked.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Answer {
    status: u16,
    headers: Vec<String>,
    body: String,
}

fn answer(status: u16, headers: Vec<(String, String)>, body: &[u8]) -> Answer {
    Answer {
        status,
        headers: headers
            .into_iter()
            .filter(|(name, _)| !FRAMING.contains(&name.as_str()))
            .map(|(name, value)| format!("{name}: {value}"))
            .collect(),
        body: mask(body),
    }
}

/// The body's own bytes (its keys in their order), each [`MASKED`] key's non-empty string value
/// replaced by `*`, and a code record's `"id":<n>` (after its `expired_at`) by `"id":0`.
fn mask(body: &[u8]) -> String {
    let mut out = String::from_utf8_lossy(body).into_owned();
    for key in MASKED {
        let opening = format!("\"{key}\":\"");
        let mut from = 0;
        while let Some(at) = out[from..].find(&opening) {
            let start = from + at + opening.len();
            let Some(end) = out[start..].find('"') else {
                break;
            };
            if end > 0 && &out[start..start + end] != "missing param" {
                out.replace_range(start..start + end, "*");
            }
            from = start + 1;
        }
    }
    // A code record's `id` follows its (masked) `expired_at`: keys in order.
    let opening = "\"expired_at\":\"*\",\"id\":";
    if let Some(at) = out.find(opening) {
        let start = at + opening.len();
        let end = start + out[start..].find(',').unwrap_or(0);
        out.replace_range(start..end, "0");
    }
    out
}

// ───────────────────────────── the axum side ─────────────────────────────

async fn start_axum() -> SocketAddr {
    let server = Arc::new(Server::new(config()).unwrap());
    let app = obico::server::router(server, Arc::new(BearerTokens::new(users())), obico_config())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve_config = ServeConfig {
        request_timeout: DEADLINE,
        ..ServeConfig::default()
    };
    tokio::spawn(http::serve(
        listener,
        app,
        serve_config,
        std::future::pending(),
    ));
    addr
}

/// Sends one case over TCP and reads its answer (`None`: closed unanswered) and its raw body.
async fn over_tcp(to: SocketAddr, case: &Case, kept: &Kept) -> Option<(Answer, Vec<u8>)> {
    let from: IpAddr = if case.proxy { "127.0.0.1" } else { "127.0.0.2" }
        .parse()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(to).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(&raw(case, kept)).await.unwrap();
    let trickler = match case.send {
        Send::Whole => None,
        Send::HalfClose => {
            writer.shutdown().await.unwrap();
            None
        }
        Send::Trickle => Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if writer.write_all(b" ").await.is_err() {
                    break;
                }
            }
        })),
    };
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut bytes)).await;
    if let Some(trickler) = trickler {
        trickler.abort();
    }
    read.expect("an answer in time").ok()?;
    if bytes.is_empty() {
        return None;
    }
    Some(parse_answer(&bytes, case.method == "HEAD"))
}

fn parse_answer(bytes: &[u8], head_request: bool) -> (Answer, Vec<u8>) {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = std::str::from_utf8(&bytes[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        let (name, value) = (name.to_ascii_lowercase(), value.trim().to_owned());
        chunked |= name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked");
        headers.push((name, value));
    }
    let mut body = bytes[split + 4..].to_vec();
    if head_request {
        body.clear();
    } else if chunked {
        body = dechunk(&body);
    }
    (answer(status, headers, &body), body)
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&bytes[..line]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&bytes[line + 2..line + 2 + size]);
        bytes = &bytes[line + 2 + size + 2..];
    }
}

// ───────────────────────────── the host with no HTTP library ─────────────────────────────

/// The wire function's host: an in-memory server, its printer tokens, the profile's settings.
struct Host {
    server: Server,
    tokens: MemoryTokens,
    obico: ObicoConfig,
}

impl Host {
    fn new(server: Server) -> Self {
        Self {
            server,
            tokens: MemoryTokens::default(),
            obico: obico_config(),
        }
    }

    fn profile(&self) -> Profile<'_> {
        Profile::new(&self.server, &self.tokens, &self.obico)
    }

    /// One request, as an HTTP stack hands it over: the first call, then (on `NeedsUser`) the
    /// host's own bearer tokens and the second call, or the profile's own `401`.
    async fn call(&self, request: &HttpRequest<'_>, body: RequestBody<'_>) -> ServerResponse {
        let (now, mut rng) = (chrono::Utc::now(), lanlink::os_rng());
        let profile = self.profile();
        let answer = match endpoint::handle(profile, now, &mut rng, request, body, None).await {
            Handled::Answer(answer) => answer,
            Handled::NeedsUser { .. } => match bearer(request) {
                Some(account) => {
                    let user = User::new(account);
                    let handled =
                        endpoint::handle(profile, now, &mut rng, request, body, Some(&user));
                    handled.await.into_answer().expect("an answer with a user")
                }
                None => endpoint::unauthorized(),
            },
            // Nothing here asks for a hold (revision 1.6).
            other => panic!("an answer or a user route, not {other:?}"),
        };
        // The host drains the server's events (here: drops them).
        while self.server.poll_event().is_some() {}
        answer
    }
}

/// The account of the request's bearer token, as `BearerTokens` reads it.
fn bearer(request: &HttpRequest<'_>) -> Option<AccountId> {
    let (_, value) = request
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))?;
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    users()
        .into_iter()
        .find(|(known, _)| known == token.trim())
        .map(|(_, account)| account)
}

/// Hands one case to the wire function, as the request was sent.
async fn over_wire(host: &Host, case: &Case, kept: &Kept) -> (Answer, Vec<u8>) {
    let target = String::from_utf8(fill(case.target.as_bytes(), kept)).unwrap();
    let target = split_target(&target);
    let lines = head_lines(case, kept);
    let headers: Vec<(&str, &[u8])> = lines
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_slice()))
        .collect();
    let peer: IpAddr = if case.proxy { "127.0.0.1" } else { "127.0.0.2" }
        .parse()
        .unwrap();
    let request = HttpRequest {
        method: &case.method,
        path: target.path,
        query: target.query,
        authority: target.authority,
        headers: &headers,
        peer: Some(peer),
    };
    // What the stack made of the body: read only for a route that takes one.
    let bytes = fill(&case.body, kept);
    let declared = case.declared.unwrap_or(bytes.len());
    let body = if !endpoint::reads_body(request.method, request.path) {
        RequestBody::Complete(&[])
    } else if declared > MAX_BODY {
        RequestBody::TooLarge
    } else if bytes.len() < declared {
        match case.send {
            Send::HalfClose => RequestBody::Broken,
            Send::Trickle => RequestBody::TimedOut,
            Send::Whole => unreachable!("{}: a short body sent whole", case.name),
        }
    } else {
        RequestBody::Complete(&bytes)
    };
    let sent = host.call(&request, body).await;
    assert_eq!(
        sent.close,
        !matches!(body, RequestBody::Complete(_)),
        "{}: close after a body not read whole",
        case.name
    );
    let headers = sent
        .headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    (answer(sent.status, headers, &sent.body), sent.body.to_vec())
}

// ───────────────────────────── the tests ─────────────────────────────

/// Every case of the corpus, through the axum routes over TCP and through the wire function
/// called directly: identical answers, case by case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_routes_and_the_wire_function_answer_alike() {
    let corpus = corpus();
    assert!(corpus.0.len() >= 30, "{} cases", corpus.0.len());
    let addr = start_axum().await;
    let host = Host::new(Server::new(config()).unwrap());
    let (mut axum_kept, mut wire_kept) = (Kept::default(), Kept::default());
    let mut dump = Vec::new();
    let mut statuses = std::collections::BTreeSet::new();
    for case in &corpus.0 {
        let over_axum = over_tcp(addr, case, &axum_kept)
            .await
            .unwrap_or_else(|| panic!("{}: axum closed unanswered", case.name));
        let over_wire = over_wire(&host, case, &wire_kept).await;
        axum_kept.keep(case.keep, &over_axum.1);
        wire_kept.keep(case.keep, &over_wire.1);
        assert_eq!(over_axum.0, over_wire.0, "{}", case.name);
        statuses.insert(over_wire.0.status);
        dump.push((case.name.clone(), Some(over_axum.0)));
    }
    // The corpus reaches every kind of answer it is meant to.
    for status in [200, 400, 401, 403, 404, 405, 408, 413, 415, 429, 502] {
        assert!(statuses.contains(&status), "no {status} in {statuses:?}");
    }
    if let Ok(path) = std::env::var("OBICO_WIRE_DUMP") {
        std::fs::write(path, serde_json::to_vec_pretty(&dump).unwrap()).unwrap();
    }
}

/// Without a socket peer (a router served without `http::serve` or `ConnectInfo`: the host's
/// configuration) the agent routes answer `500` (never a 4xx) and the user routes `403`, through
/// the axum routes and through the wire function alike.
#[tokio::test]
async fn without_a_peer_both_refuse_alike() {
    use tower::ServiceExt;
    let server = Arc::new(Server::new(config()).unwrap());
    let app = obico::server::router(server, Arc::new(BearerTokens::new(users())), obico_config())
        .unwrap();
    let host = Host::new(Server::new(config()).unwrap());
    let poll = to_vec(&poll(1, "192.168.1.50"));
    let link = to_vec(&json!({"device_id": device(1), "device_secret": SECRET}));
    let bearer = format!("Bearer {ALICE}");
    let cases: [(&str, &str, &[u8]); 4] = [
        ("POST", UNLINKED, &poll),
        ("GET", "/api/v1/octo/verify/?code=x", b""),
        ("GET", DISCOVERY, b""),
        ("POST", DISCOVERY, &link),
    ];
    for (method, target, body) in cases {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(target)
            .header("host", HOST)
            .header("content-type", "application/json")
            .header("authorization", &bearer);
        if !body.is_empty() {
            request = request.header("content-length", body.len());
        }
        let request = request.body(axum::body::Body::from(body.to_vec())).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let over_axum = answer(status, headers, &bytes);

        let target = split_target(target);
        let length = body.len().to_string();
        let mut lines: Vec<(&str, &[u8])> = vec![
            ("host", HOST.as_bytes()),
            ("content-type", b"application/json"),
            ("authorization", bearer.as_bytes()),
        ];
        if !body.is_empty() {
            lines.push(("content-length", length.as_bytes()));
        }
        let request = HttpRequest {
            method,
            path: target.path,
            query: target.query,
            authority: None,
            headers: &lines,
            peer: None,
        };
        let read = if endpoint::reads_body(method, target.path) {
            body
        } else {
            b""
        };
        let sent = host.call(&request, RequestBody::Complete(read)).await;
        let headers = sent
            .headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect();
        let over_wire = answer(sent.status, headers, &sent.body);
        assert_eq!(over_axum, over_wire, "{method} {}", target.path);
        let expected = if target.path == DISCOVERY { 403 } else { 500 };
        assert_eq!(
            (over_wire.status, over_wire.body.as_str()),
            (expected, r#"{"detail":"unresolvable_client"}"#)
        );
    }
}

/// A link hook that awaits (a timer, as a host's database call would) between the claim and the
/// token.
struct Sleepy {
    links: Mutex<Vec<lanlink::server::CompletedLink>>,
}

#[async_trait::async_trait]
impl LinkHook for Sleepy {
    async fn link_completed(
        &self,
        link: &lanlink::server::CompletedLink,
    ) -> Result<(), lanlink::server::HookError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.links.lock().unwrap().push(link.clone());
        Ok(())
    }
}

/// An Obico agent links through the wire function, with no HTTP library, on a server whose link
/// hook awaits a timer: the poll, the user's link, the message, the verify (the hook awaited
/// outside the lock), and the printer route with the token.
#[tokio::test]
async fn an_awaiting_link_hook_links_an_obico_agent_through_the_wire_function() {
    let hook = Arc::new(Sleepy {
        links: Mutex::new(Vec::new()),
    });
    let server = Server::new(config()).unwrap().with_link_hook(hook.clone());
    let host = Host::new(server);
    let xff = ("x-forwarded-for", HOME.as_bytes());
    let json_type = ("content-type", &b"application/json"[..]);
    let bearer = format!("Bearer {ALICE}");
    let request = |method, path, query, headers| HttpRequest {
        method,
        path,
        query,
        authority: None,
        headers,
        peer: Some("127.0.0.1".parse().unwrap()),
    };
    let agent = [json_type, xff];
    let poll = to_vec(&poll(1, "192.168.1.50"));
    let unlinked = request("POST", UNLINKED, None, &agent);
    let first = host.call(&unlinked, RequestBody::Complete(&poll)).await;
    assert_eq!(
        (first.status, &first.body[..]),
        (200, &br#"{"messages":[]}"#[..])
    );

    let user = [json_type, xff, ("authorization", bearer.as_bytes())];
    let link = to_vec(&json!({"device_id": device(1), "device_secret": SECRET}));
    let asked = host
        .call(
            &request("POST", DISCOVERY, None, &user),
            RequestBody::Complete(&link),
        )
        .await;
    assert_eq!(
        (asked.status, &asked.body[..]),
        (200, &br#"{"queued":true}"#[..])
    );

    let message = host.call(&unlinked, RequestBody::Complete(&poll)).await;
    let message: Value = serde_json::from_slice(&message.body).unwrap();
    assert_eq!(message["messages"][0]["data"]["secret"], SECRET);
    let code = message["messages"][0]["data"]["code"].as_str().unwrap();
    let query = format!("code={code}");
    let verify = request("GET", "/api/v1/octo/verify/", Some(&query), &agent);
    let verified = host.call(&verify, RequestBody::Complete(&[])).await;
    assert_eq!(
        verified.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&verified.body)
    );
    let verified: Value = serde_json::from_slice(&verified.body).unwrap();
    assert_eq!(verified["printer"]["name"], "printer-1");
    let links = hook.links.lock().unwrap().clone();
    assert_eq!(links.len(), 1, "the hook recorded the link once");
    assert_eq!(links[0].account, AccountId::new("alice").unwrap());
    assert_eq!(links[0].instance_id, device(1).parse().unwrap());

    let token = format!(
        "Token {}",
        verified["printer"]["auth_token"].as_str().unwrap()
    );
    let authorized = [("authorization", token.as_bytes())];
    let printer = host
        .call(
            &request("GET", PRINTER, None, &authorized),
            RequestBody::Complete(&[]),
        )
        .await;
    assert_eq!(printer.status, 200);
    let printer: Value = serde_json::from_slice(&printer.body).unwrap();
    assert_eq!(printer["printer"]["id"], verified["printer"]["id"]);
    // The code is used: a second verify is Obico's 404.
    let again = host.call(&verify, RequestBody::Complete(&[])).await;
    assert_eq!(again.status, 404);
}
