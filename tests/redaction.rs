//! Nothing derived from a code, secret, key or token appears in any `Debug` or `Display`, event or
//! error: not the value, not its hex, not its bytes, not even a four-byte piece of its hash (a
//! six-digit code is singled out among 10^6 offline from that much of its key). Each test builds
//! the public types that can hold such material, formats them, and looks for every form of it.
#![cfg(feature = "sim")]

mod support;
use support::steps::Steps;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanlink::agent::{AgentConfig, SecretRequest};
use lanlink::server::{CompletedLink, HookError, LinkHook, Server, ServerConfig, TokenDigest};
use lanlink::sim::Sim;
use lanlink::wire::{LinkRequest, RedeemRequest};
use lanlink::{AccountId, DeviceInfo, ForwardedHeaders, InstanceId, LinkCode, LocalSecret};

const HOME: &str = "203.0.113.7";
const AGENT_IP: &str = "192.168.1.50";
const LINKER_IP: &str = "192.168.1.20";
const ORIGIN: &str = "https://cloud.example";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn bytes_of_hex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// What must never be printed: named byte strings (each checked by every four-byte piece, in
/// hex of either case and as a derived `Debug` prints bytes) and texts (checked whole).
#[derive(Default)]
struct Forbidden {
    bytes: Vec<(&'static str, Vec<u8>)>,
    texts: Vec<(&'static str, String)>,
}

impl Forbidden {
    fn bytes(&mut self, name: &'static str, bytes: &[u8]) {
        self.bytes.push((name, bytes.to_vec()));
    }

    fn text(&mut self, name: &'static str, text: &str) {
        self.texts.push((name, text.to_owned()));
    }

    /// Panics, naming what leaked and where, if `shown` holds any form of anything forbidden.
    fn assert_absent(&self, what: &str, shown: &str) {
        let lower = shown.to_ascii_lowercase();
        for (name, bytes) in &self.bytes {
            for piece in bytes.windows(4) {
                let hex: String = piece.iter().map(|b| format!("{b:02x}")).collect();
                assert!(
                    !lower.contains(&hex),
                    "{what} shows 4 bytes of {name} in hex ({hex}): {shown}"
                );
                let listed = piece
                    .iter()
                    .map(u8::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                assert!(
                    !shown.contains(&listed),
                    "{what} shows 4 bytes of {name} as a list ({listed}): {shown}"
                );
            }
        }
        for (name, text) in &self.texts {
            assert!(
                !shown.contains(text.as_str()),
                "{what} shows {name}: {shown}"
            );
        }
    }
}

/// A link hook that records each link it is handed (its token's digest, and how the link
/// formats) and fails, as a host's database that is down.
#[derive(Default)]
struct FailingHook {
    seen: Mutex<Vec<([u8; 32], String)>>,
}

#[lanlink::async_trait]
impl LinkHook for FailingHook {
    async fn link_completed(&self, link: &CompletedLink) -> Result<(), HookError> {
        let shown = format!("{link:?} {link:#?}");
        self.seen
            .lock()
            .unwrap()
            .push((*link.token_digest.as_bytes(), shown));
        Err(HookError::new("db down"))
    }
}

/// A whole link in the simulator (secret fetched, link accepted, code delivered and redeemed,
/// token minted), a manual code minted and half-redeemed with a failing hook: the simulator's
/// `Debug` (every party, the server's store, every event of all three), the pending link as the
/// hook sees it, the results and the errors show none of the secret, the presence key, the commitment, the token,
/// its digest, the codes or the codes' keys.
#[test]
fn no_party_store_event_or_pending_link_shows_secret_material() {
    let mut sim = Sim::new(11);
    let lan = sim.add_lan(ip(HOME));
    let config = AgentConfig::new(ip(AGENT_IP), 8080, DeviceInfo::default()).allow_origin(ORIGIN);
    let agent = sim.add_agent_with(lan, config).unwrap();
    sim.settle();
    let mut forbidden = Forbidden::default();

    // The secret, as a linker on the LAN fetches it.
    let instance_id = sim.agent(agent).instance_id();
    let id_text = instance_id.to_string();
    let host = format!("{AGENT_IP}:8080");
    let now = sim.now();
    let secret = sim.agents[agent]
        .agent
        .handle_secret_request(
            now,
            &SecretRequest {
                peer: ip(LINKER_IP),
                forwarded: ForwardedHeaders::NONE,
                host: Some(&host),
                origin: Some(ORIGIN),
                instance_id: &id_text,
            },
        )
        .unwrap()
        .local_secret;
    forbidden.bytes("the local secret", &bytes_of_hex(&secret.to_hex()));
    let commitment = secret.commitment(&instance_id);
    forbidden.bytes("the commitment", commitment.as_bytes());
    forbidden.text("the commitment's hex", &commitment.to_hex());

    // The link, delivered and redeemed.
    let wall = sim.wall();
    let accepted = sim.server.link_now(
        wall,
        &mut sim.rng,
        &AccountId::new("alice").unwrap(),
        ip(HOME),
        ForwardedHeaders::NONE,
        LinkRequest::new(instance_id, secret.clone()),
    );
    assert!(accepted.is_ok(), "{accepted:?}");
    sim.run_until(Duration::from_secs(30), |sim| {
        sim.agent(agent).auth_token().is_some()
    });
    let token = sim.agent(agent).auth_token().expect("linked").clone();
    forbidden.bytes("the auth token", &bytes_of_hex(&token.to_hex()));
    forbidden.bytes("the token's digest", TokenDigest::of(&token).as_bytes());

    // A manual code, and a redemption of it whose hook fails (the code is given back).
    let wall = sim.wall();
    let minted = sim
        .server
        .mint_code_now(wall, &mut sim.rng, &AccountId::new("bob").unwrap())
        .unwrap();
    let code = minted.code.clone();
    forbidden.text("the manual code", code.expose());
    forbidden.bytes("the manual code's key", code.key().as_bytes());
    let other = InstanceId::from_bytes([9; 16]);
    let request = RedeemRequest::new(other, LinkCode::parse(code.expose()).unwrap());
    // The hook sees the pending link (its token's digest, as the hook is handed it), and fails.
    let hook = Arc::new(FailingHook::default());
    let server = std::mem::replace(
        &mut sim.server,
        Server::new(ServerConfig::default()).unwrap(),
    );
    sim.server = server.with_link_hook(Arc::clone(&hook) as Arc<dyn LinkHook>);
    let failed = sim.server.redeem_now(
        wall,
        &mut sim.rng,
        ip(HOME),
        ForwardedHeaders::NONE,
        &request,
    );
    assert_eq!(
        failed.as_ref().map(|_| ()).unwrap_err(),
        &lanlink::Refusal::LinkUnavailable
    );
    let seen = hook.seen.lock().unwrap().clone();
    let [(digest, shown)] = seen.as_slice() else {
        panic!("the hook saw one link: {seen:?}");
    };
    forbidden.bytes("the pending token's digest", digest);
    forbidden.assert_absent("a link as the hook sees it", shown);
    forbidden.assert_absent("the refusal", &format!("{failed:?}"));
    forbidden.assert_absent("the minted reply", &format!("{minted:?}"));
    forbidden.assert_absent("the redeem request", &format!("{request:?}"));

    // Every party, the server's store with its live code records, and every event.
    while let Some(event) = sim.server.poll_event() {
        sim.server_events.push(event);
    }
    forbidden.assert_absent("the simulation", &format!("{sim:?}"));
    forbidden.assert_absent("the simulation ({:#?})", &format!("{sim:#?}"));
    for event in &sim.server_events {
        forbidden.assert_absent("a server event", &format!("{event:?}"));
    }
    for event in &sim.agents[agent].events {
        forbidden.assert_absent("an agent event", &format!("{event:?}"));
    }
    forbidden.assert_absent(
        "the secret's Display",
        &format!("{secret} {token} {code} {secret:?} {token:?} {code:?}"),
    );
    forbidden.assert_absent("keys", &format!("{:?} {commitment:?}", code.key()));
}

/// The agent's local endpoint answers the secret in its body: the response's `Debug` (the
/// natural thing to log in a host's handler) shows its length only.
#[test]
fn the_local_endpoints_response_shows_no_body() {
    let mut rng = lanlink::os_rng();
    let now = std::time::Instant::now();
    let config = AgentConfig::new(ip(AGENT_IP), 8080, DeviceInfo::default());
    let mut agent = lanlink::agent::Agent::new(config, now, &mut rng).unwrap();
    let id = agent.instance_id().to_string();
    let query = format!("instance_id={id}");
    let headers: [(&str, &[u8]); 1] = [("host", b"192.168.1.50:8080")];
    let request = lanlink::endpoint::LocalRequest {
        method: "GET",
        path: "/lanlink/v1/secret",
        query: Some(&query),
        authority: None,
        headers: &headers,
        peer: Some(ip(LINKER_IP)),
    };
    let response = lanlink::endpoint::handle(
        &mut agent,
        now,
        &mut rng,
        lanlink::transport::DEFAULT_PREFIX,
        &request,
    );
    assert_eq!(response.status, 200, "{response:?}");
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    let secret = LocalSecret::from_hex(body["local_secret"].as_str().unwrap()).unwrap();
    let mut forbidden = Forbidden::default();
    forbidden.bytes("the local secret", &bytes_of_hex(&secret.to_hex()));
    forbidden.bytes("the response body", &response.body);
    forbidden.assert_absent("the local response", &format!("{response:?}"));
}

/// Signed network tickets are bearer credentials: neither the issued ticket, nor the reply that
/// carries it, nor an MQTT message that presents it shows it.
#[cfg(feature = "mqtt")]
#[test]
fn tickets_are_redacted_wherever_they_travel() {
    use lanlink::ticket::{TicketKey, TicketReply};
    let key = TicketKey::generate(&mut lanlink::os_rng());
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let network = lanlink::PublicNetwork::from_ip(ip(HOME), 64);
    let issued = key.issue(
        now,
        chrono::TimeDelta::minutes(10),
        network,
        InstanceId::from_bytes([3; 16]),
    );
    let mut forbidden = Forbidden::default();
    forbidden.text("the ticket", &issued.token);
    // Its signature (the tail; the head says what the ticket says, which may be shown).
    let signature = bytes_of_hex(&issued.token);
    forbidden.bytes("the ticket's signature", &signature[signature.len() - 16..]);
    forbidden.assert_absent("an issued ticket", &format!("{issued:?}"));
    let reply = TicketReply {
        ticket: issued.token.clone(),
        client_id: key.client_id(&issued.ticket.instance_id),
        expires_at: issued.ticket.expires_at,
    };
    forbidden.assert_absent("a ticket reply", &format!("{reply:?}"));
    let up: lanlink::mqtt::UpMessage = serde_json::from_value(serde_json::json!({
        "type": "redeem",
        "id": "1",
        "ticket": issued.token,
        "redeem": {"instance_id": InstanceId::from_bytes([3; 16]).to_string(), "code": "123456"},
    }))
    .unwrap();
    forbidden.text("the typed code", "123456");
    forbidden.assert_absent("an MQTT message", &format!("{up:?}"));
}

/// An Obico poll's passcode, and the token store of Obico's post-link routes.
#[cfg(feature = "obico")]
#[test]
fn obico_passcodes_and_token_digests_are_redacted() {
    use lanlink::obico::tokens::MemoryTokens;
    use std::future::Future;
    let poll = lanlink::obico::UnlinkedPoll {
        device_id: InstanceId::from_bytes([4; 16]),
        endpoint: Some((ip(AGENT_IP), 80)),
        info: DeviceInfo::default(),
        extra: Default::default(),
        one_time_passcode: Some("917403".to_owned()),
    };
    let mut forbidden = Forbidden::default();
    forbidden.text("the passcode", "917403");
    forbidden.assert_absent("an unlinked poll", &format!("{poll:?}"));

    let tokens = MemoryTokens::new(16);
    let token = lanlink::AuthToken::generate(&mut lanlink::os_rng());
    let digest = TokenDigest::of(&token);
    let printer = lanlink::obico::tokens::LinkedPrinter {
        id: 1,
        name: "voron".into(),
        account: AccountId::new("alice").unwrap(),
        instance_id: InstanceId::from_bytes([4; 16]),
        linked_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
    };
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    let mut stored = std::pin::pin!(lanlink::obico::tokens::PrinterTokens::issue(
        &tokens,
        *digest.as_bytes(),
        printer
    ));
    assert!(stored.as_mut().poll(&mut context).is_ready());
    forbidden.bytes("the token's digest", digest.as_bytes());
    forbidden.bytes("the token", &bytes_of_hex(&token.to_hex()));
    forbidden.assert_absent("the token store", &format!("{tokens:?}"));
}
