//! The agent's side of the MQTT transport: [`MqttAgentTransport`].
//! It must not decide anything for the agent: it carries the agent's messages and hands back what
//! the server published. The one thing it decides is its own ticket: when to fetch a fresh one
//! (before it expires, or after a ticket refusal).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

use super::{
    correlation_id, run_event_loop, valid_name, Broker, DownMessage, UpMessage, MAX_DOWN_BYTES,
};
use crate::http::client::HttpAgentClient;
use crate::id::InstanceId;
use crate::ticket::TicketReply;
use crate::transport::{AgentServerTransport, TransportError};
use crate::wire::{self, Announce, AnnounceReply, RedeemReply, RedeemRequest};
use crate::WireCode;

/// Settings of [`MqttAgentTransport`].
///
/// ```
/// use std::time::Duration;
/// use lanlink::mqtt::{agent::MqttAgentConfig, Broker};
/// let config = MqttAgentConfig { max_hold: Duration::ZERO, ..MqttAgentConfig::new(Broker::new("127.0.0.1", 1883)) };
/// assert_eq!(config.request_timeout, Duration::from_secs(5));
/// assert_eq!(config.max_hold, Duration::ZERO, "never waits for a wake");
/// ```
#[derive(Debug, Clone)]
pub struct MqttAgentConfig {
    /// The broker.
    pub broker: Broker,
    /// How long a request waits for its reply (and for the subscription to be in place) before
    /// it fails as unreachable (the driver then retries with back-off). Default 5 s.
    pub request_timeout: Duration,
    /// The longest an announcement with nothing for the agent waits on the agent's topic for a
    /// `wake` before returning (it never waits longer than the server's `poll_after_ms`, so the
    /// agent's announce cadence is unchanged). Zero disables waiting. Default 30 s.
    pub max_hold: Duration,
    /// A ticket is renewed (over HTTP) when it has less than this left. Default 60 s.
    pub renew_before: Duration,
}

impl MqttAgentConfig {
    /// Defaults for `broker`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanlink::mqtt::{agent::MqttAgentConfig, Broker};
    /// let config = MqttAgentConfig::new(Broker::new("127.0.0.1", 1883));
    /// assert_eq!((config.max_hold, config.renew_before), (Duration::from_secs(30), Duration::from_secs(60)));
    /// ```
    pub fn new(broker: Broker) -> Self {
        Self {
            broker,
            request_timeout: Duration::from_secs(5),
            max_hold: Duration::from_secs(30),
            renew_before: Duration::from_secs(60),
        }
    }
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<DownMessage>>>>;

/// One connection to the broker, as one client id.
struct Session {
    client_id: String,
    client: AsyncClient,
    pending: Pending,
    wake: Arc<Notify>,
    subscribed: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.task.abort();
    }
}

impl Session {
    fn connect(broker: &Broker, client_id: String) -> Self {
        let (client, events) =
            AsyncClient::new(broker.options(&client_id, MAX_DOWN_BYTES + 1024), 64);
        let pending: Pending = Arc::default();
        let wake = Arc::new(Notify::new());
        let (subscribed_tx, subscribed) = watch::channel(false);
        let task = {
            let pending = Arc::clone(&pending);
            let wake = Arc::clone(&wake);
            let topic = broker.down_topic(&client_id);
            let filter = topic.clone();
            let on_publish = move |publish: rumqttc::Publish| {
                if publish.topic != topic {
                    return;
                }
                let Ok(message) = wire::decode::<DownMessage>(&publish.payload, MAX_DOWN_BYTES)
                else {
                    tracing::debug!(target: "lanlink::mqtt", "malformed message on the agent's topic");
                    return;
                };
                let id = match &message {
                    DownMessage::Announced { id, .. }
                    | DownMessage::Redeemed { id, .. }
                    | DownMessage::Refused { id, .. } => id.clone(),
                    DownMessage::Wake => {
                        wake.notify_one();
                        return;
                    }
                    _ => return,
                };
                // A reply nobody waits for (a duplicate, or one that came too late) is dropped.
                if let Some(waiter) = crate::lock_unpoisoned(&pending).remove(&id) {
                    let _ = waiter.send(message);
                }
            };
            tokio::spawn(run_event_loop(
                events,
                client.clone(),
                filter,
                subscribed_tx,
                move |publish| {
                    on_publish(publish);
                    std::future::ready(())
                },
            ))
        };
        Self {
            client_id,
            client,
            pending,
            wake,
            subscribed,
            task,
        }
    }
}

#[derive(Default)]
struct State {
    ticket: Option<(InstanceId, TicketReply)>,
    session: Option<Arc<Session>>,
    /// The latest announcement, to ask for a new ticket when one lapses (it proves the key).
    last_announce: Option<Announce>,
}

/// The agent's channel to the server over MQTT: an
/// [`AgentServerTransport`], so [`crate::driver::run_agent`] drives it like the HTTP client.
///
/// Before its first request it fetches a network ticket over HTTP (with the announcement, which
/// proves its presence key), then connects to the broker as the client id the ticket reply
/// names, subscribes to its own down topic, and publishes requests on its up topic, waiting for
/// the reply with the same correlation id. An announcement that brings no message waits on the
/// topic for a `wake` (up to the server's `poll_after_ms`) and, when one comes, announces again at
/// once: a link accepted on the server reaches the agent without waiting for its next poll.
///
/// ```no_run
/// # async fn demo(agent: lanlink::driver::SharedAgent) -> Result<(), Box<dyn std::error::Error>> {
/// use lanlink::driver::{run_agent, DriverConfig};
/// use lanlink::http::client::HttpAgentClient;
/// use lanlink::mqtt::{agent::{MqttAgentConfig, MqttAgentTransport}, Broker};
/// let tickets = HttpAgentClient::new("https://cloud.example")?;
/// let config = MqttAgentConfig::new(Broker::new("mqtt.cloud.example", 1883));
/// let transport = MqttAgentTransport::new(config, tickets);
/// let status = run_agent(&agent, &transport, &DriverConfig::default(), |_| {}).await;
/// # let _ = status; Ok(()) }
/// ```
pub struct MqttAgentTransport {
    config: MqttAgentConfig,
    tickets: HttpAgentClient,
    state: tokio::sync::Mutex<State>,
}

impl std::fmt::Debug for MqttAgentTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttAgentTransport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Whether a refusal means the ticket must be fetched again.
fn is_ticket_refusal(err: &TransportError) -> bool {
    matches!(
        err.code(),
        Some(
            WireCode::BadTicket
                | WireCode::TicketExpired
                | WireCode::TicketWrongInstance
                | WireCode::WrongClient
        )
    )
}

impl MqttAgentTransport {
    /// A transport over `config`'s broker, fetching tickets with `tickets`. It connects on first
    /// use.
    ///
    /// ```
    /// use lanlink::http::client::HttpAgentClient;
    /// use lanlink::mqtt::{agent::{MqttAgentConfig, MqttAgentTransport}, Broker};
    /// let tickets = HttpAgentClient::new("http://127.0.0.1:8080")?;
    /// let transport = MqttAgentTransport::new(MqttAgentConfig::new(Broker::new("127.0.0.1", 1883)), tickets);
    /// # let mut fut = std::pin::pin!(transport.client_id());
    /// # use std::future::Future;
    /// # let std::task::Poll::Ready(client_id) = fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) else { panic!() };
    /// // It connects on first use: no ticket, so no client id, yet.
    /// assert_eq!(client_id, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(config: MqttAgentConfig, tickets: HttpAgentClient) -> Self {
        Self {
            config,
            tickets,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// The client id the transport connects as, once it has a ticket.
    ///
    /// ```
    /// use lanlink::http::client::HttpAgentClient;
    /// use lanlink::mqtt::{agent::{MqttAgentConfig, MqttAgentTransport}, Broker};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let tickets = HttpAgentClient::new("http://127.0.0.1:8080")?;
    /// let transport = MqttAgentTransport::new(MqttAgentConfig::new(Broker::new("127.0.0.1", 1883)), tickets);
    /// assert_eq!(transport.client_id().await, None, "no ticket fetched yet");
    /// # Ok(()) }
    /// ```
    pub async fn client_id(&self) -> Option<String> {
        let state = self.state.lock().await;
        state.ticket.as_ref().map(|(_, t)| t.client_id.clone())
    }

    /// A live ticket for `instance_id` and the session for its client id, fetching and
    /// connecting as needed.
    async fn prepare(
        &self,
        instance_id: &InstanceId,
        announce: Option<&Announce>,
    ) -> Result<(String, Arc<Session>), TransportError> {
        let mut state = self.state.lock().await;
        if let Some(announce) = announce {
            if state.last_announce.as_ref() != Some(announce) {
                state.last_announce = Some(announce.clone());
            }
        }
        let renew = TimeDelta::from_std(self.config.renew_before).unwrap_or(TimeDelta::MAX);
        let now = DateTime::<Utc>::from(SystemTime::now());
        let fresh = state.ticket.as_ref().is_some_and(|(id, ticket)| {
            id == instance_id && ticket.expires_at.signed_duration_since(now) > renew
        });
        if !fresh {
            state.ticket = None;
            let proof = state
                .last_announce
                .as_ref()
                .filter(|a| &a.instance_id == instance_id)
                .ok_or_else(|| {
                    TransportError::Unreachable("no network ticket: announce first".into())
                })?;
            let ticket = self.tickets.ticket(proof).await?;
            if !valid_name(&ticket.client_id) {
                return Err(TransportError::Malformed);
            }
            state.ticket = Some((*instance_id, ticket));
        }
        let Some((_, ticket)) = &state.ticket else {
            return Err(TransportError::Malformed);
        };
        let token = ticket.ticket.clone();
        let client_id = ticket.client_id.clone();
        let session = match &state.session {
            Some(session) if session.client_id == client_id => Arc::clone(session),
            _ => {
                let session = Arc::new(Session::connect(&self.config.broker, client_id));
                state.session = Some(Arc::clone(&session));
                session
            }
        };
        Ok((token, session))
    }

    /// Forgets the ticket (the server refused it).
    async fn drop_ticket(&self) {
        self.state.lock().await.ticket = None;
    }

    /// Publishes `up` on the session's up topic and waits for the reply with its id.
    async fn request(
        &self,
        session: &Session,
        id: String,
        up: &UpMessage,
    ) -> Result<DownMessage, TransportError> {
        let timeout = self.config.request_timeout;
        let mut subscribed = session.subscribed.clone();
        let ready = tokio::time::timeout(timeout, async {
            subscribed.wait_for(|granted| *granted).await.is_ok()
        })
        .await
        .unwrap_or(false);
        if !ready {
            return Err(TransportError::Unreachable(
                "not subscribed at the broker".into(),
            ));
        }
        let (sender, receiver) = oneshot::channel();
        crate::lock_unpoisoned(&session.pending).insert(id.clone(), sender);
        let payload = wire::encode(up);
        let topic = self.config.broker.up_topic(&session.client_id);
        let exchange = async {
            session
                .client
                .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
                .await
                .map_err(|err| TransportError::Unreachable(err.to_string()))?;
            receiver
                .await
                .map_err(|_| TransportError::Unreachable("connection closed".into()))
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        crate::lock_unpoisoned(&session.pending).remove(&id);
        match outcome {
            Ok(result) => result,
            Err(_) => Err(TransportError::Unreachable(
                "no reply from the server".into(),
            )),
        }
    }

    async fn announce_once(
        &self,
        announce: &Announce,
    ) -> Result<(AnnounceReply, Arc<Session>), TransportError> {
        let (ticket, session) = self.prepare(&announce.instance_id, Some(announce)).await?;
        let id = correlation_id();
        let up = UpMessage::Announce {
            id: id.clone(),
            ticket,
            announce: announce.clone(),
        };
        match self.request(&session, id, &up).await? {
            DownMessage::Announced { reply, .. } => Ok((reply, session)),
            DownMessage::Refused { status, error, .. } => Err(refused(status, &error)),
            _ => Err(TransportError::Malformed),
        }
    }

    async fn announce_retrying_ticket(
        &self,
        announce: &Announce,
    ) -> Result<(AnnounceReply, Arc<Session>), TransportError> {
        match self.announce_once(announce).await {
            Err(err) if is_ticket_refusal(&err) => {
                self.drop_ticket().await;
                self.announce_once(announce).await
            }
            other => other,
        }
    }

    async fn redeem_once(&self, request: &RedeemRequest) -> Result<RedeemReply, TransportError> {
        let (ticket, session) = self.prepare(&request.instance_id, None).await?;
        let id = correlation_id();
        let up = UpMessage::Redeem {
            id: id.clone(),
            ticket,
            redeem: request.clone(),
        };
        match self.request(&session, id, &up).await? {
            DownMessage::Redeemed { reply, .. } => Ok(reply),
            DownMessage::Refused { status, error, .. } => Err(refused(status, &error)),
            _ => Err(TransportError::Malformed),
        }
    }
}

/// A refusal from the server, its code typed as over HTTP ([`WireCode::parse`]; a word that is
/// no code is [`WireCode::NoCode`], never kept).
pub(crate) fn refused(status: u16, error: &str) -> TransportError {
    TransportError::Refused {
        status,
        code: WireCode::parse(error).unwrap_or(WireCode::NoCode),
    }
}

#[async_trait]
impl AgentServerTransport for MqttAgentTransport {
    async fn announce(&self, announce: &Announce) -> Result<AnnounceReply, TransportError> {
        let (reply, session) = self.announce_retrying_ticket(announce).await?;
        if !reply.messages.is_empty() {
            return Ok(reply);
        }
        let hold = Duration::from_millis(reply.poll_after_ms).min(self.config.max_hold);
        if hold.is_zero() {
            return Ok(reply);
        }
        // Nothing yet: wait on the topic for a wake, up to the next announce anyway.
        match tokio::time::timeout(hold, session.wake.notified()).await {
            Ok(()) => {
                tracing::debug!(target: "lanlink::mqtt", "woken: announcing now");
                Ok(self.announce_retrying_ticket(announce).await?.0)
            }
            Err(_) => Ok(reply),
        }
    }

    async fn redeem(&self, request: &RedeemRequest) -> Result<RedeemReply, TransportError> {
        match self.redeem_once(request).await {
            Err(err) if is_ticket_refusal(&err) => {
                self.drop_ticket().await;
                self.redeem_once(request).await
            }
            other => other,
        }
    }
}
