//! The MQTT transport (feature `mqtt`, over [`rumqttc`]): the agent ↔ server channel through an
//! MQTT broker, documented topic by topic in `PROTOCOL.md`.
//! The transport must not decide protocol rules: topics, sizes, tickets and refusals are the core's
//! ([`crate::server::mqtt`]); it moves messages between the broker and the core.
//!
//! - [`agent::MqttAgentTransport`] implements [`AgentServerTransport`](crate::transport::AgentServerTransport),
//!   so [`crate::driver::run_agent`] runs unchanged over MQTT.
//! - [`server::MqttServer`] consumes agents' requests with a shared subscription
//!   (`$share/<group>/…`), so several server instances split the load, and answers each on the
//!   agent's own topic. It is a shell: every rule (topics, sizes, tickets, refusals) is the
//!   core's [`crate::server::mqtt::handle_up`], which it calls through an
//!   [`server::MqttBackend`] (implemented for a [`Server`](crate::server::Server) over any store,
//!   and an `Arc` of one).
//! - [`server::MqttWaker`] / [`server::wake_on_link`]: when a link is accepted (over HTTP), the
//!   agent's topic gets a `wake` (no secret in it) and the agent announces at once to fetch its
//!   message, instead of at its next announce.
//!
//! MQTT does not show the server an agent's address, so the agent first fetches a signed network
//! ticket over HTTP ([`crate::ticket`], `POST {prefix}/agent/ticket`) and attaches it to every
//! request; the reply also names the MQTT client id the agent connects with, which only the
//! servers can compute, and which names the agent's topics:
//!
//! | topic | publisher | subscriber | payload |
//! | --- | --- | --- | --- |
//! | `{prefix}/up/{client_id}` | the agent | servers (`$share/{group}/{prefix}/up/+`) | [`UpMessage`] |
//! | `{prefix}/down/{client_id}` | servers | the agent | [`DownMessage`] |
//!
//! Every publish is QoS 1; both sides reconnect with capped exponential back-off and subscribe
//! again after each connection, and the agent retries a request that got no reply (through the
//! driver), so a broker restart delays a link but does not break it.

pub mod agent;
pub mod server;

use std::future::Future;
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode,
};
use tokio::sync::watch;
use zeroize::Zeroizing;

pub use rumqttc;

// The wire and its rules are the core's (`server::mqtt`, feature `ticket`): re-exported here
// under their earlier paths.
pub use crate::server::mqtt::{
    valid_name, DownMessage, UpMessage, DEFAULT_TOPIC_PREFIX, MAX_DOWN_BYTES, MAX_ID_CHARS,
    MAX_UP_BYTES,
};

use crate::driver::{Backoff, DriverConfig};
use crate::server::mqtt as wire_mqtt;

/// The default shared-subscription group of the servers.
pub const DEFAULT_GROUP: &str = "lanlink-servers";

/// Largest packet a server consumer reads, in bytes. Larger requests are dropped unread, but
/// only after the connection is dropped; a broker should refuse them first (mosquitto:
/// `max_packet_size 8192`, see `PROTOCOL.md`).
pub const SERVER_MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Why an MQTT configuration is refused.
///
/// ```
/// use lanlink::mqtt::{Broker, MqttConfigError};
/// for bad in ["", "$SYS", "/lead", "trail/", "a/+/b", "a/#"] {
///     assert!(matches!(Broker::new("127.0.0.1", 1883).prefix(bad), Err(MqttConfigError::Prefix)), "{bad}");
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MqttConfigError {
    /// The topic prefix is empty, starts with `$` or `/`, ends with `/`, or holds `+`, `#` or a
    /// NUL.
    #[error("bad topic prefix")]
    Prefix,
    /// The group or client id is empty, too long, or holds a character outside `[A-Za-z0-9_-]`.
    #[error("bad group or client id")]
    Name,
}

/// Where the broker is and how to log in.
///
/// ```
/// use lanlink::mqtt::{Broker, DEFAULT_TOPIC_PREFIX};
/// let broker = Broker::new("broker.example", 8883);
/// assert_eq!(broker.topic_prefix(), DEFAULT_TOPIC_PREFIX);
/// assert!(format!("{broker:?}").contains("broker.example"));
/// ```
#[derive(Clone)]
pub struct Broker {
    host: String,
    port: u16,
    prefix: String,
    credentials: Option<(String, Zeroizing<String>)>,
    keep_alive: Duration,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("prefix", &self.prefix)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// The broker at `host:port` (plain TCP), topics under [`DEFAULT_TOPIC_PREFIX`], anonymous,
    /// a 5 s keep-alive (so a dead broker is noticed within seconds).
    ///
    /// ```
    /// let broker = lanlink::mqtt::Broker::new("127.0.0.1", 1883).prefix("acme/lanlink").unwrap();
    /// assert_eq!(broker.up_topic("ll-0"), "acme/lanlink/up/ll-0");
    /// assert!(lanlink::mqtt::Broker::new("h", 1).prefix("a/#").is_err());
    /// ```
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            prefix: DEFAULT_TOPIC_PREFIX.to_owned(),
            credentials: None,
            keep_alive: Duration::from_secs(5),
        }
    }

    /// Topics under `prefix` (no wildcard, no leading `$` or `/`, no trailing `/`).
    ///
    /// ```
    /// use lanlink::mqtt::Broker;
    /// let broker = Broker::new("127.0.0.1", 1883).prefix("site-a/lanlink")?;
    /// assert_eq!(broker.down_topic("ll-7"), "site-a/lanlink/down/ll-7");
    /// assert!(Broker::new("127.0.0.1", 1883).prefix(&"p".repeat(129)).is_err(), "too long");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prefix(mut self, prefix: &str) -> Result<Self, MqttConfigError> {
        let bad = prefix.is_empty()
            || prefix.starts_with('$')
            || prefix.starts_with('/')
            || prefix.ends_with('/')
            || prefix.len() > 128
            || prefix.contains(['+', '#', '\0']);
        if bad {
            return Err(MqttConfigError::Prefix);
        }
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// Logs in with `username` and `password`.
    ///
    /// ```
    /// use lanlink::mqtt::Broker;
    /// let broker = Broker::new("127.0.0.1", 1883).credentials("lanlink-server", "s3cret-pw");
    /// // Debug names the user, never the password.
    /// let shown = format!("{broker:?}");
    /// assert!(shown.contains("lanlink-server") && !shown.contains("s3cret-pw"));
    /// ```
    pub fn credentials(mut self, username: impl Into<String>, password: &str) -> Self {
        self.credentials = Some((username.into(), Zeroizing::new(password.to_owned())));
        self
    }

    /// The MQTT keep-alive (at least 1 s).
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive.max(Duration::from_secs(1));
        self
    }

    /// The topic prefix.
    ///
    /// ```
    /// use lanlink::mqtt::Broker;
    /// let broker = Broker::new("127.0.0.1", 1883).prefix("acme")?;
    /// assert_eq!(broker.topic_prefix(), "acme");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn topic_prefix(&self) -> &str {
        &self.prefix
    }

    /// The topic agent `client_id` publishes its requests on.
    ///
    /// ```
    /// use lanlink::mqtt::Broker;
    /// let broker = Broker::new("127.0.0.1", 1883).prefix("acme")?;
    /// let topic = broker.up_topic("ll-0123");
    /// assert_eq!(topic, "acme/up/ll-0123");
    /// assert_eq!(broker.client_of_up_topic(&topic), Some("ll-0123"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn up_topic(&self, client_id: &str) -> String {
        wire_mqtt::up_topic(&self.prefix, client_id)
    }

    /// The topic agent `client_id` receives replies and wakes on.
    ///
    /// ```
    /// use lanlink::mqtt::Broker;
    /// let broker = Broker::new("127.0.0.1", 1883).prefix("acme")?;
    /// assert_eq!(broker.down_topic("ll-0123"), "acme/down/ll-0123");
    /// // A down topic is not an up topic.
    /// assert_eq!(broker.client_of_up_topic(&broker.down_topic("ll-0123")), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn down_topic(&self, client_id: &str) -> String {
        wire_mqtt::down_topic(&self.prefix, client_id)
    }

    /// The servers' shared subscription for `group`.
    ///
    /// ```
    /// use lanlink::mqtt::{Broker, DEFAULT_GROUP};
    /// let broker = Broker::new("127.0.0.1", 1883).prefix("acme")?;
    /// assert_eq!(broker.shared_up_filter(DEFAULT_GROUP), "$share/lanlink-servers/acme/up/+");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shared_up_filter(&self, group: &str) -> String {
        format!("$share/{group}/{}/up/+", self.prefix)
    }

    /// The client id in an up topic, if `topic` is one.
    ///
    /// ```
    /// use lanlink::mqtt::Broker;
    /// let broker = Broker::new("127.0.0.1", 1883).prefix("acme")?;
    /// assert_eq!(broker.client_of_up_topic("acme/up/ll-ab"), Some("ll-ab"));
    /// assert_eq!(broker.client_of_up_topic("other/up/ll-ab"), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn client_of_up_topic<'a>(&self, topic: &'a str) -> Option<&'a str> {
        wire_mqtt::client_of_up_topic(&self.prefix, topic)
    }

    /// Options for `client_id`, accepting packets of up to `max_incoming` bytes (a larger one
    /// drops the connection, which is then made again).
    fn options(&self, client_id: &str, max_incoming: usize) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, self.host.clone(), self.port);
        options.set_keep_alive(self.keep_alive);
        options.set_clean_session(true);
        options.set_max_packet_size(max_incoming, MAX_DOWN_BYTES + 1024);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user.clone(), password.as_str());
        }
        options
    }
}

/// Runs a client's event loop forever: reconnects with capped exponential back-off after any
/// error, subscribes to `filter` (QoS 1) after each connection, reports whether that
/// subscription is granted on `subscribed`, and hands every incoming publish to `on_publish`,
/// awaiting the future it returns before polling again.
async fn run_event_loop<F>(
    mut events: EventLoop,
    client: AsyncClient,
    filter: String,
    subscribed: watch::Sender<bool>,
    mut on_publish: impl FnMut(Publish) -> F + Send,
) where
    F: Future<Output = ()> + Send,
{
    let mut backoff = Backoff::new(&DriverConfig {
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(3),
        max_attempts: u32::MAX,
    });
    let mut rng = crate::os_rng();
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                if let Err(err) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    tracing::warn!(target: "lanlink::mqtt", %err, "subscribe not queued");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|code| matches!(code, SubscribeReasonCode::Success(_)));
                if !granted {
                    tracing::warn!(target: "lanlink::mqtt", %filter, "subscription refused by the broker");
                }
                subscribed.send_replace(granted);
            }
            // Awaited before the next poll: a consumer that is full holds the loop back.
            Ok(Event::Incoming(Packet::Publish(publish))) => on_publish(publish).await,
            Ok(_) => {}
            Err(err) => {
                subscribed.send_replace(false);
                tracing::debug!(target: "lanlink::mqtt", %err, "broker connection lost; reconnecting");
                tokio::time::sleep(backoff.next_delay(&mut rng)).await;
            }
        }
    }
}

/// A fresh correlation id: 128 random bits as hex.
fn correlation_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    crate::os_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_names() {
        let broker = Broker::new("127.0.0.1", 1883);
        assert_eq!(broker.down_topic("ll-ab"), "lanlink/v1/down/ll-ab");
        assert_eq!(broker.shared_up_filter("g"), "$share/g/lanlink/v1/up/+");
        assert_eq!(
            broker.client_of_up_topic("lanlink/v1/up/ll-ab"),
            Some("ll-ab")
        );
        for bad in [
            "lanlink/v1/up/",
            "lanlink/v1/up/a/b",
            "lanlink/v1/down/x",
            "lanlink/v1/up/a+",
            "other/up/x",
        ] {
            assert_eq!(broker.client_of_up_topic(bad), None, "{bad}");
        }
        for bad in ["", "$SYS", "/a", "a/", "a/+", "a/#/b", "a\0"] {
            assert!(Broker::new("h", 1).prefix(bad).is_err(), "{bad:?}");
        }
        assert!(!valid_name(&"a".repeat(65)));
        assert!(valid_name(&correlation_id()));
    }
}
