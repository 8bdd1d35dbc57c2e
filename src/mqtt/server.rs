//! The server's side of the MQTT transport, a shell over the core's MQTT wire function
//! ([`crate::server::mqtt::handle_up`]): [`MqttServer`] takes agents' requests from a shared
//! subscription, hands each one's topic and payload to its [`MqttBackend`] (the core function
//! over a server), and publishes the reply it gets; [`MqttWaker`] and [`wake_on_link`] publish
//! the core's [`wake`](crate::server::mqtt::wake) when a link for an agent is accepted.
//! It must not decide a rule of the MQTT wire: every one is the core function's.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, Response, StatusCode};
use axum::middleware::Next;
use axum::Router;
use chrono::{DateTime, Utc};
use rumqttc::{AsyncClient, Publish, QoS};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::{run_event_loop, valid_name, Broker, MqttConfigError, DEFAULT_GROUP};
use crate::id::InstanceId;
use crate::server::mqtt::{self, Dropped, Reply};
use crate::server::{Backend, Server};
use crate::ticket::TicketKey;

/// What the consumer answers requests with: the core's MQTT wire function
/// ([`mqtt::handle_up`]) over a server, with the operating system's RNG. Implemented for
/// [`Server`] over any store (whose queued events it logs) and an `Arc` of one; a wrapper that
/// observes or delays requests implements it by calling the one it wraps.
///
/// ```
/// use std::sync::Arc;
/// use lanlink::chrono::{DateTime, Utc};
/// use lanlink::mqtt::server::MqttBackend;
/// use lanlink::server::mqtt::{Dropped, Reply};
/// use lanlink::server::Server;
/// use lanlink::ticket::TicketKey;
///
/// /// Counts the requests it passes on.
/// struct Counted(Arc<Server>, std::sync::atomic::AtomicU64);
///
/// #[lanlink::async_trait]
/// impl MqttBackend for Counted {
///     async fn handle_up(
///         &self, now: DateTime<Utc>, key: &TicketKey, prefix: &str, topic: &str, payload: &[u8],
///     ) -> Result<Reply, Dropped> {
///         self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         self.0.handle_up(now, key, prefix, topic, payload).await
///     }
/// }
/// ```
#[async_trait]
pub trait MqttBackend: Send + Sync {
    /// Answers the request published on `topic` with `payload`, at `now`: tickets checked with
    /// `key`, topics under `prefix` (see [`mqtt::handle_up`]).
    async fn handle_up(
        &self,
        now: DateTime<Utc>,
        key: &TicketKey,
        prefix: &str,
        topic: &str,
        payload: &[u8],
    ) -> Result<Reply, Dropped>;
}

/// A server over any store answers the consumer (its queued events, if it queues them, are
/// logged after each request). Several instances sharing one store (e.g. Redis) and one shared
/// subscription act as one: any of them answers any agent.
#[async_trait]
impl<S: Backend + 'static> MqttBackend for Server<S> {
    async fn handle_up(
        &self,
        now: DateTime<Utc>,
        key: &TicketKey,
        prefix: &str,
        topic: &str,
        payload: &[u8],
    ) -> Result<Reply, Dropped> {
        let mut rng = crate::os_rng();
        let reply = mqtt::handle_up(self, now, &mut rng, key, prefix, topic, payload).await;
        while let Some(event) = self.poll_event() {
            tracing::info!(target: "lanlink::server", transport = "mqtt", ?event);
        }
        reply
    }
}

/// A shared server answers as the server does.
#[async_trait]
impl<B: MqttBackend + ?Sized> MqttBackend for Arc<B> {
    async fn handle_up(
        &self,
        now: DateTime<Utc>,
        key: &TicketKey,
        prefix: &str,
        topic: &str,
        payload: &[u8],
    ) -> Result<Reply, Dropped> {
        (**self).handle_up(now, key, prefix, topic, payload).await
    }
}

/// Requests an [`MqttServer`] works on at once by default ([`MqttServerConfig::max_in_flight`]).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// At most one warning per this interval about replies dropped because the broker client's
/// queue was full; the warning counts every reply dropped since the previous one.
const DROPPED_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of [`MqttServer`].
///
/// ```
/// use lanlink::mqtt::{server::MqttServerConfig, Broker};
/// use lanlink::ticket::TicketKey;
/// let config = MqttServerConfig::new(Broker::new("127.0.0.1", 1883).credentials("srv", "pw-123"), "server-1",
///     TicketKey::generate(&mut lanlink::os_rng()))?;
/// // Neither the broker's password nor the ticket key shows in Debug.
/// let shown = format!("{config:?}");
/// assert!(!shown.contains("pw-123") && shown.contains("TicketKey(<redacted>)"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct MqttServerConfig {
    broker: Broker,
    client_id: String,
    group: String,
    key: TicketKey,
    max_in_flight: usize,
}

impl MqttServerConfig {
    /// A consumer on `broker` connecting as `client_id` (unique per server instance), in the
    /// shared-subscription group [`DEFAULT_GROUP`], checking tickets with `key` (the key the
    /// HTTP ticket route signs with).
    ///
    /// ```
    /// use lanlink::mqtt::{server::MqttServerConfig, Broker, MqttConfigError};
    /// use lanlink::ticket::TicketKey;
    /// let key = || TicketKey::generate(&mut lanlink::os_rng());
    /// assert!(MqttServerConfig::new(Broker::new("127.0.0.1", 1883), "server-1", key()).is_ok());
    /// // A client id is `[A-Za-z0-9_-]`, not empty: no wildcard or slash can slip into a topic.
    /// let bad = MqttServerConfig::new(Broker::new("127.0.0.1", 1883), "server/1", key());
    /// assert!(matches!(bad, Err(MqttConfigError::Name)));
    /// ```
    pub fn new(broker: Broker, client_id: &str, key: TicketKey) -> Result<Self, MqttConfigError> {
        if !valid_name(client_id) {
            return Err(MqttConfigError::Name);
        }
        Ok(Self {
            broker,
            client_id: client_id.to_owned(),
            group: DEFAULT_GROUP.to_owned(),
            key,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        })
    }

    /// The most requests this consumer works on at once (default [`DEFAULT_MAX_IN_FLIGHT`], at
    /// least 1): each is one call to the [`MqttBackend`] and one reply.
    ///
    /// When that many are in flight, the consumer **waits** for one to finish before it takes
    /// the next request from the broker connection, rather than dropping requests: a burst
    /// queues in the broker and the socket (and, with a shared subscription, on this
    /// instance's share), every request is still answered, and the work held is bounded by the
    /// limit. Dropping would turn a burst of legitimate agents into timeouts and retries, and
    /// so into more traffic. The cost: while full, the connection's keep-alive also waits, so a
    /// backend that hangs longer than the broker's keep-alive allowance gets this consumer
    /// disconnected (it reconnects); the store's own timeouts bound the backend. Replies never
    /// wait on the held-back connection (which would deadlock): one that does not fit the
    /// client's outgoing queue is dropped, counted ([`MqttServer::replies_dropped`]) and
    /// warned about at most once per second, and the agent asks again when its request times
    /// out.
    ///
    /// ```
    /// use lanlink::mqtt::{server::MqttServerConfig, Broker};
    /// use lanlink::ticket::TicketKey;
    /// let key = TicketKey::generate(&mut lanlink::os_rng());
    /// let config = MqttServerConfig::new(Broker::new("127.0.0.1", 1883), "server-1", key)
    ///     .unwrap()
    ///     .max_in_flight(16);
    /// # let _ = config;
    /// ```
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = limit.max(1);
        self
    }

    /// The shared-subscription group (every instance of one service uses the same).
    ///
    /// ```
    /// use lanlink::mqtt::{server::MqttServerConfig, Broker, MqttConfigError};
    /// use lanlink::ticket::TicketKey;
    /// let config = MqttServerConfig::new(Broker::new("127.0.0.1", 1883), "server-1",
    ///     TicketKey::generate(&mut lanlink::os_rng()))?;
    /// assert!(config.clone().group("site-a").is_ok());
    /// assert!(matches!(config.group("a+b"), Err(MqttConfigError::Name)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn group(mut self, group: &str) -> Result<Self, MqttConfigError> {
        if !valid_name(group) {
            return Err(MqttConfigError::Name);
        }
        self.group = group.to_owned();
        Ok(self)
    }
}

struct Consumer {
    broker: Broker,
    key: TicketKey,
    client: AsyncClient,
    backend: Arc<dyn MqttBackend>,
    handled: AtomicU64,
    dropped: DroppedReplies,
}

/// Runs consumer work, at most `limit` at once: [`Bounded::run`] waits for a free slot before it
/// spawns the work.
#[derive(Debug, Clone)]
struct Bounded {
    permits: Arc<Semaphore>,
}

impl Bounded {
    fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit.max(1))),
        }
    }

    /// Waits until fewer than `limit` works are running, then spawns `work`.
    async fn run(&self, work: impl Future<Output = ()> + Send + 'static) {
        // The semaphore is never closed.
        let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            work.await;
        });
    }
}

/// Replies dropped because the client's outgoing queue was full: counted, and warned about at
/// most once per [`DROPPED_LOG_INTERVAL`].
#[derive(Debug, Default)]
struct DroppedReplies {
    total: AtomicU64,
    /// When the last warning was given, and the drops since.
    log: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl DroppedReplies {
    /// Counts one drop at `now`; returns the count to warn about when a warning is due.
    fn record(&self, now: Instant) -> Option<u64> {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut log = crate::lock_unpoisoned(&self.log);
        log.1 += 1;
        let due = log
            .0
            .is_none_or(|last| now.saturating_duration_since(last) >= DROPPED_LOG_INTERVAL);
        if !due {
            return None;
        }
        log.0 = Some(now);
        Some(std::mem::take(&mut log.1))
    }
}

/// A running MQTT consumer: one server instance's share of the agents' requests. Stops when
/// dropped.
pub struct MqttServer {
    consumer: Arc<Consumer>,
    subscribed: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for MqttServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttServer")
            .field("broker", &self.consumer.broker)
            .field("handled", &self.handled())
            .finish_non_exhaustive()
    }
}

impl Drop for MqttServer {
    fn drop(&mut self) {
        let _ = self.consumer.client.try_disconnect();
        self.task.abort();
    }
}

impl MqttServer {
    /// Connects (in the background, retrying with back-off) and serves requests with `backend`.
    /// Call from within a tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo(server: lanlink::http::server::SharedServer, key: lanlink::ticket::TicketKey) {
    /// use std::sync::Arc;
    /// use lanlink::mqtt::{server::{MqttServer, MqttServerConfig}, Broker};
    /// let config = MqttServerConfig::new(Broker::new("127.0.0.1", 1883), "server-1", key).unwrap();
    /// let consumer = MqttServer::spawn(config, Arc::new(server));
    /// # drop(consumer);
    /// # }
    /// ```
    pub fn spawn(config: MqttServerConfig, backend: Arc<dyn MqttBackend>) -> Self {
        let (client, events) = AsyncClient::new(
            config
                .broker
                .options(&config.client_id, super::SERVER_MAX_PACKET_BYTES),
            // Room for a reply from every request in flight, and wakes besides.
            256.max(2 * config.max_in_flight),
        );
        let filter = config.broker.shared_up_filter(&config.group);
        let consumer = Arc::new(Consumer {
            broker: config.broker,
            key: config.key,
            client: client.clone(),
            backend,
            handled: AtomicU64::new(0),
            dropped: DroppedReplies::default(),
        });
        let bounded = Bounded::new(config.max_in_flight);
        let (subscribed_tx, subscribed) = watch::channel(false);
        let task = {
            let consumer = Arc::clone(&consumer);
            tokio::spawn(run_event_loop(
                events,
                client,
                filter,
                subscribed_tx,
                move |publish| {
                    let consumer = Arc::clone(&consumer);
                    let bounded = bounded.clone();
                    // Backpressure: the event loop waits here while the limit is reached.
                    async move {
                        bounded
                            .run(async move { consumer.handle(publish).await })
                            .await
                    }
                },
            ))
        };
        Self {
            consumer,
            subscribed,
            task,
        }
    }

    /// How many requests this instance has answered.
    pub fn handled(&self) -> u64 {
        self.consumer.handled.load(Ordering::Relaxed)
    }

    /// How many replies were dropped because the broker client's outgoing queue was full (see
    /// [`MqttServerConfig::max_in_flight`]); their agents ask again.
    pub fn replies_dropped(&self) -> u64 {
        self.consumer.dropped.total.load(Ordering::Relaxed)
    }

    /// Waits until the shared subscription is in place (or `timeout` passes); whether it is.
    pub async fn wait_subscribed(&self, timeout: Duration) -> bool {
        let mut subscribed = self.subscribed.clone();
        tokio::time::timeout(timeout, async {
            subscribed.wait_for(|granted| *granted).await.is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// A waker that publishes through this consumer's connection.
    pub fn waker(&self) -> MqttWaker {
        MqttWaker {
            client: self.consumer.client.clone(),
            broker: self.consumer.broker.clone(),
            key: self.consumer.key.clone(),
        }
    }
}

impl Consumer {
    /// Hands one publish to the backend and publishes its reply.
    async fn handle(&self, publish: Publish) {
        let now = DateTime::<Utc>::from(SystemTime::now());
        let prefix = self.broker.topic_prefix();
        let handled = self
            .backend
            .handle_up(now, &self.key, prefix, &publish.topic, &publish.payload)
            .await;
        let reply = match handled {
            Ok(reply) => reply,
            Err(dropped) => {
                tracing::debug!(target: "lanlink::mqtt", %dropped, "request dropped");
                return;
            }
        };
        if let Some(reason) = reply.refused {
            tracing::info!(target: "lanlink::server", transport = "mqtt", instance_id = %reply.instance_id, reason, "request refused");
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        // Never wait for room: the event loop that makes room may be waiting for this work to
        // finish (see `MqttServerConfig::max_in_flight`).
        if let Err(err) =
            self.client
                .try_publish(reply.topic, QoS::AtLeastOnce, false, reply.payload.to_vec())
        {
            if let Some(dropped) = self.dropped.record(Instant::now()) {
                tracing::warn!(target: "lanlink::mqtt", %err, dropped, "replies dropped (the broker client's queue is full); logged at most once per second");
            }
        }
    }
}

/// Publishes `wake` messages on agents' topics. Cheap to clone.
#[derive(Clone)]
pub struct MqttWaker {
    client: AsyncClient,
    broker: Broker,
    key: TicketKey,
}

impl std::fmt::Debug for MqttWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttWaker")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

impl MqttWaker {
    /// Tells `instance_id`'s agent to announce now (best effort, QoS 1; the agent announces on
    /// time anyway). Returns whether the wake was queued for sending.
    pub fn wake(&self, instance_id: &InstanceId) -> bool {
        self.publish(mqtt::wake(
            &self.key,
            self.broker.topic_prefix(),
            instance_id,
        ))
    }

    fn publish(&self, wake: Reply) -> bool {
        self.client
            .try_publish(wake.topic, QoS::AtLeastOnce, false, wake.payload.to_vec())
            .is_ok()
    }
}

/// Wraps the server's HTTP router so that every accepted link request (`POST …/link` answered
/// `202` with a pending [`LinkStatusReply`](crate::wire::LinkStatusReply), as
/// [`mqtt::wake_after`] decides) wakes the agent over MQTT. The response itself is passed on
/// unchanged.
///
/// ```no_run
/// # fn demo(app: axum::Router, consumer: &lanlink::mqtt::server::MqttServer) {
/// let app = lanlink::mqtt::server::wake_on_link(app, consumer.waker());
/// # let _ = app;
/// # }
/// ```
pub fn wake_on_link(router: Router, waker: MqttWaker) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(waker),
        wake_middleware,
    ))
}

async fn wake_middleware(
    State(waker): State<Arc<MqttWaker>>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let method = request.method().clone();
    let response = next.run(request).await;
    // Only a POST answered 202 can call for a wake (`mqtt::wake_after`): any other answer is
    // passed on unread.
    if method != Method::POST || response.status() != StatusCode::ACCEPTED {
        return response;
    }
    let (parts, body) = response.into_parts();
    // A link status reply is small; anything larger is not one and is passed on as it was.
    let bytes = match axum::body::to_bytes(body, crate::wire::MAX_MESSAGE_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return Response::from_parts(parts, Body::empty()),
    };
    let prefix = waker.broker.topic_prefix();
    let status = parts.status.as_u16();
    if let Some(wake) = mqtt::wake_after(&waker.key, prefix, method.as_str(), status, &bytes) {
        if !waker.publish(wake) {
            tracing::debug!(target: "lanlink::mqtt", "wake not queued");
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Work that counts itself in flight until `release` lets one finish.
    fn work(
        running: &Arc<AtomicUsize>,
        most: &Arc<AtomicUsize>,
        release: &Arc<Semaphore>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (running, most, release) = (Arc::clone(running), Arc::clone(most), Arc::clone(release));
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            release.acquire().await.expect("open").forget();
            running.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn bounded_runs_at_most_its_limit_and_makes_the_caller_wait_for_a_slot() {
        let bounded = Bounded::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Semaphore::new(0));
        // Two start at once.
        bounded.run(work(&running, &most, &release)).await;
        bounded.run(work(&running, &most, &release)).await;
        settle().await;
        assert_eq!(running.load(Ordering::SeqCst), 2);
        // The third waits for a slot: its caller (the event loop) is held back.
        let third = {
            let bounded = bounded.clone();
            let work = work(&running, &most, &release);
            tokio::spawn(async move { bounded.run(work).await })
        };
        settle().await;
        assert!(
            !third.is_finished(),
            "the caller waits while the limit is reached"
        );
        assert_eq!(running.load(Ordering::SeqCst), 2);
        // One finishes: the third gets its slot.
        release.add_permits(1);
        third.await.expect("the third was spawned");
        settle().await;
        assert_eq!(running.load(Ordering::SeqCst), 2);
        release.add_permits(2);
        settle().await;
        assert_eq!(running.load(Ordering::SeqCst), 0);
        assert_eq!(most.load(Ordering::SeqCst), 2, "never more than the limit");
    }

    #[test]
    fn dropped_replies_warn_once_per_interval_with_a_count() {
        let dropped = DroppedReplies::default();
        let t0 = Instant::now();
        assert_eq!(dropped.record(t0), Some(1));
        for i in 1..1000u64 {
            assert_eq!(dropped.record(t0 + Duration::from_micros(i * 900)), None);
        }
        assert_eq!(dropped.record(t0 + DROPPED_LOG_INTERVAL), Some(1000));
        assert_eq!(dropped.total.load(Ordering::Relaxed), 1001);
    }
}
