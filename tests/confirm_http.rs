//! Confirmation at both ends (revision 1.4) over real HTTP on 127.0.0.1: the embedder's
//! `Authenticator::display_name` reaches the device, the Rust linker and the device derive the
//! same short code, and the device links only once its owner approves.
#![cfg(feature = "http")]

mod support;
use support::net;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::request::Parts;
use lanlink::agent::{AgentConfig, AgentStatus};
use lanlink::confirm::{Confirmation, Decision, DisplayName};
use lanlink::driver::{lock, run_agent, DriverConfig};
use lanlink::event::{AgentEvent, LinkerEvent};
use lanlink::http::client::{HttpAgentClient, HttpLinkerClient};
use lanlink::http::{Authenticator, Rejection, ServeConfig};
use lanlink::linker::{Linker, LinkerConfig};
use lanlink::server::ServerConfig;
use lanlink::{async_trait, AccountId, DeviceInfo};
use support::linking::link_first;

/// One user whose account id is opaque and whose display name is an e-mail address.
struct Named;

#[async_trait]
impl Authenticator for Named {
    async fn authenticate(&self, parts: &Parts) -> Result<AccountId, Rejection> {
        let ok = parts
            .headers
            .get("authorization")
            .is_some_and(|v| v == "Bearer alice-token-0123456789");
        ok.then(|| AccountId::new("u-7f3a").unwrap())
            .ok_or(Rejection::Unauthorized)
    }

    async fn display_name(&self, _parts: &Parts, account: &AccountId) -> Option<DisplayName> {
        assert_eq!(account.as_str(), "u-7f3a");
        DisplayName::new("alice@example.com")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_over_http_with_the_embedders_display_name() {
    let (_server, server_at) = net::start_server_auth(
        ServerConfig::default(),
        Arc::new(Named),
        ServeConfig::default(),
    )
    .await;
    let base = format!("http://{server_at}");

    let (agent, _) = net::start_agent(|agent_at| {
        AgentConfig::new(agent_at.ip(), agent_at.port(), DeviceInfo::default())
            .window(Duration::from_secs(60))
            .confirmation(Confirmation::Compare)
    })
    .await;

    let asked = Arc::new(Mutex::new(Vec::new()));
    let agent_task = {
        let (agent, asked) = (Arc::clone(&agent), Arc::clone(&asked));
        let transport = HttpAgentClient::new(&base).unwrap();
        tokio::spawn(async move {
            run_agent(&agent, &transport, &DriverConfig::default(), |event| {
                if let AgentEvent::ConfirmationRequested {
                    display_name,
                    short_code,
                    ..
                } = event
                {
                    asked.lock().unwrap().push((display_name, short_code));
                }
            })
            .await
        })
    };
    // The owner: waits for the device's question, then approves at the device.
    let owner = {
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let status = lock(&agent).status();
                if matches!(status, AgentStatus::Confirming { .. }) {
                    // Waiting, it sends nothing: still confirming a little later.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    assert!(matches!(
                        lock(&agent).status(),
                        AgentStatus::Confirming { .. }
                    ));
                    lock(&agent)
                        .confirm(Instant::now(), Decision::Approve)
                        .unwrap();
                    return;
                }
                assert!(Instant::now() < deadline, "never asked: {status:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let client = HttpLinkerClient::new(&base, "alice-token-0123456789").unwrap();
    let mut linker = Linker::new(
        LinkerConfig::default(),
        Instant::now(),
        &mut lanlink::os_rng(),
    );
    let mut page_codes = Vec::new();
    let linked = tokio::time::timeout(
        Duration::from_secs(30),
        link_first(&mut linker, &client, &DriverConfig::default(), |event| {
            if let LinkerEvent::ShortCode { short_code, .. } = event {
                page_codes.push(short_code);
            }
        }),
    )
    .await
    .expect("linked in time");
    assert!(linked.is_ok(), "{linked:?}");
    owner.await.unwrap();
    assert_eq!(agent_task.await.unwrap(), AgentStatus::Linked);
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].0.as_str(), "alice@example.com");
    assert_eq!(page_codes.len(), 1);
    assert_eq!(asked[0].1, Some(page_codes[0]));
    assert_eq!(linker.short_code(), Some(page_codes[0]));
}
