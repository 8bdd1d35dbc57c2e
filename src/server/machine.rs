// (938 lines, 471 of them docs and doc examples: one concern, because it is the `Server` and its one method per protocol step.)
//! [`Server`], the server's state machine: one `async fn` per protocol step over its
//! [`Backend`], with its [`Events`] and the [`User`] a user step takes. (The module docs of
//! [`crate::server`] describe it.)
//! It must not decide a protocol rule itself (the operations and records do), read a clock or
//! draw from a global RNG: `now` and the RNG are arguments.

/// Runs one operation of `$server` (its configuration, its store, and its events, each handed
/// on as the operation makes it) and awaits it.
macro_rules! run {
    ($server:ident, |$ops:ident| $call:expr) => {{
        let mut $ops = $server.ops();
        $call.await
    }};
}

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};

use super::config::ServerConfig;
use super::hook::{HookError, LinkHook, PendingLink};
#[cfg(doc)]
use super::ops::MAX_QUEUED_EVENTS;
use super::ops::{core_listing, Emit, EventQueue, EventSink, OpEvents, Ops, Redeemed};
use super::store::{Backend, MemoryStore, StoreError, StoreRef};
#[cfg(doc)]
use super::{hook, shared, store::Store};
use crate::addr::{ForwardedHeaders, PublicNetwork};
use crate::confirm::DisplayName;
use crate::error::{ConfigError, Refusal};
use crate::event::{RequestKind, ServerEvent};
use crate::id::{AccountId, InstanceId};
use crate::wire::{
    Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemRequest,
};

/// The account a user request is from, as the host's own authentication found it: what the
/// user steps ([`Server::discover`], [`Server::link`]) take, and what the
/// [wire function](crate::server::endpoint::handle) asks the host for ([`endpoint::Handled::NeedsUser`](crate::server::endpoint::Handled::NeedsUser)).
///
/// ```
/// use lanlink::{confirm::DisplayName, server::User, AccountId};
/// // An account id too long for a display name sends none.
/// let user = User::new(AccountId::new("x".repeat(65)).unwrap());
/// assert_eq!(user.display_name, None);
/// let named = User::named(AccountId::new("u-1").unwrap(), DisplayName::new("Bob"));
/// assert_eq!(named.display_name.map(|n| n.to_string()).as_deref(), Some("Bob"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The account the request is from.
    pub account: AccountId,
    /// The name forwarded to the agent with a link request (revision 1.4: what a device with a
    /// confirmation policy shows). `None` sends none (a device with a confirmation policy then
    /// refuses the link); see `http::Authenticator::display_name` (feature `http-server`) for
    /// what to put here.
    pub display_name: Option<DisplayName>,
}

impl User {
    /// A user whose display name is the account id itself ([`DisplayName::of_account`]). A host
    /// that knows the account's real name sets [`display_name`](Self::display_name) instead.
    ///
    /// ```
    /// use lanlink::server::User;
    /// let alice = User::new(lanlink::AccountId::new("alice").unwrap());
    /// assert_eq!(alice.display_name.unwrap().as_str(), "alice");
    /// ```
    pub fn new(account: AccountId) -> Self {
        let display_name = DisplayName::of_account(&account);
        Self {
            account,
            display_name,
        }
    }

    /// A user with the display name the host gives (`None`: none is sent).
    ///
    /// ```
    /// use lanlink::confirm::DisplayName;
    /// use lanlink::server::User;
    /// let alice = User::named(lanlink::AccountId::new("u-1234").unwrap(), DisplayName::new("Alice"));
    /// assert_eq!(alice.display_name.unwrap().as_str(), "Alice");
    /// ```
    pub fn named(account: AccountId, display_name: Option<DisplayName>) -> Self {
        Self {
            account,
            display_name,
        }
    }
}

/// The server: its configuration, its [store](Store) (the in-memory [`MemoryStore`] by
/// default, or a shared one such as `Records` over a `RedisStore` (feature `redis`), over
/// which several processes act as one server), where its [events](Events) go, and the host's
/// [link hook](LinkHook). See the [module docs](crate::server).
///
/// One `async fn` per protocol step, each taking `&self` (one server serves concurrent
/// requests; no lock is held across an await) and the caller's network, resolved once by
/// [`caller`](Self::caller). Over the in-memory store every future is ready at its first poll,
/// unless the link hook waits; a blocking host drives them with any `block_on`.
///
/// ```
/// use lanlink::event::{RequestKind, ServerEvent};
/// use lanlink::server::{Server, ServerConfig};
/// use lanlink::ForwardedHeaders;
/// let server = Server::new(ServerConfig::default())?;
/// // Resolve the caller once per request, then run the step (see `Server::discover`).
/// let network = server.caller(RequestKind::Discover, "198.51.100.4".parse()?, ForwardedHeaders::NONE)?;
/// assert_eq!(network.to_string(), "198.51.100.4");
/// assert!(server.poll_event().is_none(), "resolving is no event");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server<S = MemoryStore> {
    pub(super) config: ServerConfig,
    pub(super) store: S,
    pub(super) events: Events,
    pub(super) hook: Option<Arc<dyn LinkHook>>,
}

impl<S> std::fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("events", &self.events)
            .field("hook", &self.hook.is_some())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for dyn LinkHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkHook")
    }
}

/// Where a [`Server`]'s events go: the host's choice, made by name. None is lost silently: a
/// [sink](Events::sink) gets each as it happens; a [queue](Events::queue) holds at most
/// [`MAX_QUEUED_EVENTS`] for [`Server::poll_event`] and reports any it had no room for
/// ([`ServerEvent::EventsLost`]); [`Events::discard`] drops them where the host wrote so.
///
/// ```
/// use lanlink::server::Events;
/// let logged = Events::sink(|event| eprintln!("{}", serde_json::to_string(&event).unwrap()));
/// let none = Events::discard(); // an explicit opt-out, for a reader to find
/// assert_eq!(format!("{logged:?} {none:?}"), "Events::sink(..) Events::discard()");
/// ```
///
/// ```compile_fail
/// // No default: events go nowhere only where the host says so.
/// let events: lanlink::server::Events = Default::default();
/// ```
pub struct Events(EventsTo);

enum EventsTo {
    Sink(EventSink),
    Queue(Mutex<EventQueue>),
    Discard,
}

impl Events {
    /// Every event goes to `sink` as the operation makes it.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lanlink::event::RequestKind;
    /// use lanlink::server::{Events, Server, ServerConfig};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let config = ServerConfig::default().trusted_proxies(vec!["10.0.0.0/8".parse()?]);
    /// let server = Server::new(config)?.with_events(Events::sink(move |e| log.lock().unwrap().push(e)));
    /// let _ = server.caller(RequestKind::Discover, "10.0.0.1".parse()?, lanlink::ForwardedHeaders::NONE);
    /// assert_eq!(seen.lock().unwrap().len(), 1, "the refusal went to the sink");
    /// assert!(server.poll_event().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sink(sink: impl Fn(ServerEvent) + Send + Sync + 'static) -> Self {
        Self(EventsTo::Sink(Arc::new(sink)))
    }

    /// Events wait in a bounded queue for [`Server::poll_event`] (what [`Server::new`] uses):
    /// drain it after each call. Past [`MAX_QUEUED_EVENTS`] waiting, events are counted, not
    /// queued, and one [`ServerEvent::EventsLost`] stands where they would have been.
    ///
    /// ```
    /// use lanlink::event::{RequestKind, ServerEvent};
    /// use lanlink::server::{Events, Server, ServerConfig};
    /// let config = ServerConfig::default().trusted_proxies(vec!["10.0.0.0/8".parse()?]);
    /// let server = Server::new(config)?.with_events(Events::queue());
    /// let _ = server.caller(RequestKind::Discover, "10.0.0.1".parse()?, lanlink::ForwardedHeaders::NONE);
    /// assert!(matches!(server.poll_event(), Some(ServerEvent::Refused { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue() -> Self {
        Self(EventsTo::Queue(Mutex::new(EventQueue::default())))
    }

    /// Every event is dropped. For benches and throwaway tools; a server that links real
    /// accounts should keep its decisions ([`Events::sink`]).
    ///
    /// ```
    /// use lanlink::event::RequestKind;
    /// use lanlink::server::{Events, Server, ServerConfig};
    /// let config = ServerConfig::default().trusted_proxies(vec!["10.0.0.0/8".parse()?]);
    /// let server = Server::new(config)?.with_events(Events::discard());
    /// let _ = server.caller(RequestKind::Discover, "10.0.0.1".parse()?, lanlink::ForwardedHeaders::NONE);
    /// assert!(server.poll_event().is_none());
    /// assert_eq!(server.lost_events(), 0, "discarded on purpose, not lost");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn discard() -> Self {
        Self(EventsTo::Discard)
    }
}

impl Emit for Events {
    fn emit_one(&self, event: ServerEvent) {
        match &self.0 {
            EventsTo::Sink(sink) => sink(event),
            EventsTo::Queue(queue) => crate::lock_unpoisoned(queue).push_back(event),
            EventsTo::Discard => {}
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            EventsTo::Sink(_) => f.write_str("Events::sink(..)"),
            EventsTo::Queue(queue) => {
                write!(f, "Events::queue({:?})", crate::lock_unpoisoned(queue))
            }
            EventsTo::Discard => f.write_str("Events::discard()"),
        }
    }
}

/// Polls a future once and returns its output: for the crate's own synchronous drivers (the
/// simulator, the fuzz harnesses) over the in-memory store, whose futures are ready at once. A
/// future that is not (a link hook that waits) fails closed as a store error.
#[cfg_attr(not(feature = "sim"), allow(dead_code))]
pub(crate) fn at_once<T>(
    future: impl std::future::Future<Output = Result<T, Refusal>>,
) -> Result<T, Refusal> {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker))
    {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => Err(Refusal::Store(StoreError::Unavailable)),
    }
}

impl Server {
    /// A server over an empty in-memory store, its events queued for
    /// [`poll_event`](Self::poll_event) ([`Events::queue`]).
    ///
    /// ```
    /// use chrono::DateTime;
    /// use lanlink::server::{Server, ServerConfig, User};
    /// use lanlink::{AccountId, ForwardedHeaders};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let network = server.caller(lanlink::event::RequestKind::Discover, "203.0.113.7".parse().unwrap(), ForwardedHeaders::NONE).unwrap();
    /// let alice = User::new(AccountId::new("alice").unwrap());
    /// let reply = server.discover(now, network, &alice).await.unwrap();
    /// assert!(reply.agents.is_empty());
    /// assert!(matches!(server.poll_event(), Some(lanlink::event::ServerEvent::Discovered { .. })));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn new(config: ServerConfig) -> Result<Self, ConfigError> {
        Self::with_store(config, MemoryStore::default(), Events::queue())
    }
}

impl<S: Backend> Server<S> {
    /// A server over `store` (checks the configuration), its events going where `events` says.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lanlink::server::{Backend, Events, MemoryStore, Server, ServerConfig};
    /// // Two servers over one store act as one (here in one process; Records over a RedisStore span many).
    /// let store: Arc<dyn Backend> = Arc::new(MemoryStore::default());
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let a = Server::with_store(ServerConfig::default(), store.clone(), Events::discard()).unwrap();
    /// let b = Server::with_store(ServerConfig::default(), store, Events::sink(move |e| log.lock().unwrap().push(e)))
    ///     .unwrap();
    /// # let _ = (a, b);
    /// ```
    pub fn with_store(config: ServerConfig, store: S, events: Events) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            store,
            events,
            hook: None,
        })
    }

    /// Sends events where `events` says from now on; any still queued go there first.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lanlink::server::{Events, Server, ServerConfig};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let server = Server::new(ServerConfig::default())
    ///     .unwrap()
    ///     .with_events(Events::sink(move |event| log.lock().unwrap().push(event)));
    /// assert!(server.poll_event().is_none());
    /// ```
    pub fn with_events(mut self, events: Events) -> Self {
        let old = std::mem::replace(&mut self.events, events);
        if let EventsTo::Queue(queue) = old.0 {
            let queued = queue.into_inner().unwrap_or_else(|e| e.into_inner());
            queued.drain().for_each(|event| self.events.emit_one(event));
        }
        self
    }

    /// Awaits `hook` on every completed link before its token is returned (see [`hook`]):
    /// every entry point ([`redeem`](Self::redeem), [`endpoint::handle`](crate::server::endpoint::handle), MQTT, the Obico
    /// profile) links through it, and no lock is held while it runs.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lanlink::server::{CompletedLink, HookError, LinkHook, Server, ServerConfig};
    /// use lanlink::wire::RedeemRequest;
    /// use lanlink::{AccountId, ForwardedHeaders, InstanceId};
    ///
    /// #[derive(Default)]
    /// struct Seen(Mutex<Vec<InstanceId>>);
    /// #[lanlink::async_trait]
    /// impl LinkHook for Seen {
    ///     async fn link_completed(&self, link: &CompletedLink) -> Result<(), HookError> {
    ///         self.0.lock().unwrap().push(link.instance_id);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # let mut fut = std::pin::pin!(async {
    /// let seen = Arc::new(Seen::default());
    /// let server = Server::new(ServerConfig::default()).unwrap().with_link_hook(seen.clone());
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let mut rng = lanlink::os_rng();
    /// let code = server.mint_code(now, &mut rng, &AccountId::new("alice").unwrap()).await.unwrap().code;
    /// let instance_id = InstanceId::generate(&mut rng);
    /// let request = RedeemRequest::new(instance_id, code).with_attempt(1);
    /// let network = lanlink::PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// server.redeem(now, &mut rng, network, &request).await.unwrap();
    /// assert_eq!(*seen.0.lock().unwrap(), [instance_id]);
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn with_link_hook(mut self, hook: Arc<dyn LinkHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The link hook, if one is set.
    ///
    /// ```
    /// use lanlink::server::{Server, ServerConfig};
    /// let server = Server::new(ServerConfig::default())?;
    /// assert!(server.link_hook().is_none(), "no hook unless `with_link_hook` sets one");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn link_hook(&self) -> Option<&Arc<dyn LinkHook>> {
        self.hook.as_ref()
    }

    /// The configuration.
    ///
    /// ```
    /// use lanlink::server::{Server, ServerConfig};
    /// let server = Server::new(ServerConfig::default().max_visible(2))?;
    /// assert_eq!(server.config().visible_limit(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The store.
    ///
    /// ```
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::AccountId;
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// assert_eq!(server.store().codes(), 0);
    /// server.mint_code(now, &mut lanlink::os_rng(), &AccountId::new("alice").unwrap()).await.unwrap();
    /// assert_eq!(server.store().codes(), 1);
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub fn store(&self) -> &S {
        &self.store
    }

    pub(super) fn ops(&self) -> Ops<'_> {
        Ops {
            config: &self.config,
            store: StoreRef::new(&self.store),
            events: OpEvents(&self.events),
        }
    }

    /// The next queued event, oldest first, when events go to a [queue](Events::queue) (as
    /// with [`Server::new`]); `None` otherwise. At most [`MAX_QUEUED_EVENTS`] wait; past that
    /// bound events are lost, never silently: one [`ServerEvent::EventsLost`] comes in their
    /// place, counting them (and [`lost_events`](Self::lost_events) counts them all).
    ///
    /// ```
    /// use lanlink::event::{RequestKind, ServerEvent};
    /// use lanlink::server::{Server, ServerConfig, MAX_QUEUED_EVENTS};
    /// use lanlink::ForwardedHeaders;
    /// let config = ServerConfig::default().trusted_proxies(vec!["10.0.0.0/8".parse().unwrap()]);
    /// let server = Server::new(config).unwrap();
    /// // A trusted proxy that names no client: the caller cannot be resolved, one event each.
    /// let proxy = "10.0.0.1".parse().unwrap();
    /// for _ in 0..MAX_QUEUED_EVENTS + 3 {
    ///     let _ = server.caller(RequestKind::Discover, proxy, ForwardedHeaders::NONE);
    /// }
    /// let mut queued = 0;
    /// while let Some(event) = server.poll_event() {
    ///     if let ServerEvent::EventsLost { count } = event {
    ///         assert_eq!(count, 3);
    ///         assert!(server.poll_event().is_none(), "the gap is where the events were");
    ///         break;
    ///     }
    ///     queued += 1;
    /// }
    /// assert_eq!(queued, MAX_QUEUED_EVENTS);
    /// assert_eq!(server.lost_events(), 3);
    /// ```
    #[must_use]
    pub fn poll_event(&self) -> Option<ServerEvent> {
        match &self.events.0 {
            EventsTo::Queue(queue) => crate::lock_unpoisoned(queue).pop_front(),
            _ => None,
        }
    }

    /// How many events were lost in all because more than [`MAX_QUEUED_EVENTS`] waited
    /// undrained in the [queue](Events::queue) (for a metric: [`poll_event`](Self::poll_event)
    /// reports each loss in its place as a [`ServerEvent::EventsLost`]).
    ///
    /// ```
    /// use lanlink::server::{Server, ServerConfig};
    /// let server = Server::new(ServerConfig::default())?;
    /// assert_eq!(server.lost_events(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lost_events(&self) -> u64 {
        match &self.events.0 {
            EventsTo::Queue(queue) => crate::lock_unpoisoned(queue).lost(),
            _ => 0,
        }
    }

    /// The public network of a `request` from the socket `peer` with the forwarding `headers`
    /// it carried: the one place a caller is resolved (trusting forwarding headers only from the
    /// configured proxies, [`ServerConfig::trusted_proxies`]). A caller that cannot be resolved
    /// is refused (`unresolvable_client`, with a [`ServerEvent::Refused`]).
    ///
    /// ```
    /// use lanlink::event::RequestKind;
    /// use lanlink::server::{Server, ServerConfig};
    /// use lanlink::{ClientAddrError, ForwardedHeaders, Refusal};
    /// let config = ServerConfig::default().trusted_proxies(vec!["10.0.0.0/8".parse()?]);
    /// let server = Server::new(config)?;
    /// let lb = "10.0.0.2".parse()?;
    /// let named = ForwardedHeaders { forwarded: &["for=203.0.113.50"], x_forwarded_for: &[] };
    /// assert_eq!(server.caller(RequestKind::Link, lb, named)?.to_string(), "203.0.113.50");
    /// let unnamed = server.caller(RequestKind::Link, lb, ForwardedHeaders::NONE);
    /// assert_eq!(unnamed, Err(Refusal::ClientAddr(ClientAddrError::MissingForwarded)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn caller(
        &self,
        request: RequestKind,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<PublicNetwork, Refusal> {
        self.ops().caller(request, peer, headers)
    }

    /// An agent announces from `network` (protocol step 3). The reply carries any queued
    /// messages.
    ///
    /// ```
    /// # use chrono::DateTime;
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::secret::PresenceKey;
    /// # use lanlink::wire::{Announce, WIRE_VERSION};
    /// # use lanlink::{LocalSecret, PublicNetwork};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// let (key, secret) = (PresenceKey::from_bytes([1; 32]), LocalSecret::from_bytes([2; 32]));
    /// let id = key.instance_id();
    /// let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(), secret.commitment(&id), key);
    /// let reply = server.announce(now, home, &announce).await.unwrap();
    /// assert!(reply.messages.is_empty());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn announce(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal> {
        run!(self, |ops| ops.announce_held(now, network, announce, false)).map(|(reply, _)| reply)
    }

    /// [`announce`](Self::announce), and until when its request may be held (revision 1.6).
    pub(crate) async fn announce_held(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        announce: &Announce,
    ) -> Result<(AnnounceReply, Option<DateTime<Utc>>), Refusal> {
        run!(self, |ops| ops.announce_held(now, network, announce, true))
    }

    /// Whether a message waits for `instance_id` in `network`: a held announcement's check.
    pub(crate) async fn message_waits(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        instance_id: &InstanceId,
    ) -> Result<bool, Refusal> {
        run!(self, |ops| ops.message_waits(now, network, instance_id))
    }

    /// A linker of `user` asks for discoverable agents in `network` (protocol step 4). The
    /// account is counted among the network's recent discoverers, as a short per-network hash,
    /// toward the [shared-network](shared) judgement: a plain read, but for one write the first
    /// time in a window that the account discovers from the network.
    ///
    /// ```
    /// use lanlink::server::{Server, ServerConfig, User};
    /// use lanlink::wire::HiddenReason;
    /// use lanlink::{AccountId, PublicNetwork};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let dorm = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// // Four accounts: a household. The fifth distinct account marks the network shared.
    /// for n in 0..5 {
    ///     let user = User::new(AccountId::new(format!("user{n}")).unwrap());
    ///     let reply = server.discover(now, dorm, &user).await.unwrap();
    ///     let shared = reply.hidden.map(|h| h.reason) == Some(HiddenReason::SharedNetwork);
    ///     assert_eq!(shared, n == 4);
    /// }
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn discover(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        user: &User,
    ) -> Result<DiscoverReply, Refusal> {
        // Discovery (protocol step 4): what the account finds, then the reply and its event.
        let mut ops = self.ops();
        let found = ops
            .discover_in(now, network, Some(&user.account), &core_listing)
            .await;
        found.map(|found| ops.discovered(network, found))
    }

    /// A linker of `user`, calling from `network`, asks to link an agent (protocol step 6). The
    /// user's display name (revision 1.4) is forwarded to the agent inside its
    /// `verify_and_redeem` message (and nowhere else an agent can read), and echoed in the reply
    /// so that the linker derives the same [short code](crate::confirm::short_code); a user
    /// with none sends none, and an agent with a
    /// [confirmation policy](crate::confirm::Confirmation) then refuses the link (fail closed).
    ///
    /// ```
    /// # use chrono::DateTime;
    /// # use lanlink::confirm::DisplayName;
    /// # use lanlink::server::{Server, ServerConfig, User};
    /// # use lanlink::secret::PresenceKey;
    /// # use lanlink::wire::{AgentMessage, Announce, LinkRequest, WIRE_VERSION};
    /// # use lanlink::{AccountId, LocalSecret, PublicNetwork, Refusal};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// let (key, secret) = (PresenceKey::from_bytes([1; 32]), LocalSecret::from_bytes([2; 32]));
    /// let id = key.instance_id();
    /// let announce = Announce::new(id, "192.168.1.50".parse().unwrap(), 8080, Default::default(), secret.commitment(&id), key);
    /// server.announce(now, home, &announce).await.unwrap();
    /// let alice = User::named(AccountId::new("u-1234").unwrap(), DisplayName::new("Alice Example"));
    /// let mut rng = lanlink::os_rng();
    /// // A wrong secret is refused (and counted toward a lockout); the right one is accepted.
    /// let wrong = LinkRequest::new(id, LocalSecret::from_bytes([3; 32]));
    /// let refused = server.link(now, &mut rng, home, &alice, wrong).await;
    /// assert_eq!(refused.unwrap_err(), Refusal::WrongSecret);
    /// let right = LinkRequest::new(id, secret);
    /// let reply = server.link(now, &mut rng, home, &alice, right).await.unwrap();
    /// assert_eq!(reply.display_name.as_deref(), Some("Alice Example"));
    /// let reply = server.announce(now, home, &announce).await.unwrap();
    /// let [AgentMessage::VerifyAndRedeem { display_name, .. }] = reply.messages.as_slice() else {
    ///     panic!()
    /// };
    /// assert_eq!(display_name.as_deref(), Some("Alice Example"));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn link<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        user: &User,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal> {
        let name = user.display_name.clone();
        run!(self, |ops| ops.link(
            now,
            rng,
            &user.account,
            name,
            network,
            request
        ))
    }

    /// The state of `account`'s link to an agent, as seen from the caller's `network`.
    ///
    /// ```
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::wire::LinkState;
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let home = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// let alice = AccountId::new("alice").unwrap();
    /// let id = InstanceId::from_bytes([7; 16]);
    /// // Nothing was asked for this instance: its state is unknown (and says no more).
    /// let reply = server.link_status(now, home, &alice, &id).await.unwrap();
    /// assert_eq!((reply.instance_id, reply.state), (id, LinkState::Unknown));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn link_status(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        account: &AccountId,
        instance_id: &InstanceId,
    ) -> Result<LinkStatusReply, Refusal> {
        run!(self, |ops| ops.link_status(
            now,
            account,
            network,
            instance_id
        ))
    }

    /// Mints a manual code for `account` (protocol step 9): from the CSPRNG, unique among live
    /// codes, single-use, valid for `manual_code_ttl`.
    ///
    /// ```
    /// # use chrono::DateTime;
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::AccountId;
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let alice = AccountId::new("alice").unwrap();
    /// let reply = server.mint_code(now, &mut lanlink::os_rng(), &alice).await.unwrap();
    /// assert_eq!(reply.code.expose().len(), 6);
    /// assert_eq!(reply.expires_at, now + chrono::TimeDelta::minutes(10));
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn mint_code<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
    ) -> Result<CodeReply, Refusal> {
        run!(self, |ops| ops.mint_code(now, rng, account))
    }

    /// An agent redeems a code from `network` (protocol step 8, and step 9's manual codes): the
    /// code must be live, unredeemed (or redeemed by this very instance, proven by its presence
    /// key: a retry after a lost reply), bound to the presenting instance if minted for one, and
    /// presented from the network it was bound to; failures count toward the presenter
    /// network's lockout.
    ///
    /// The code is claimed (see [`hook`] for the order), the [link hook](Self::with_link_hook)
    /// is awaited, holding nothing, and the link completed; a hook that fails gives the code
    /// back (`503 link_unavailable`, retryable) so that the agent's retry links.
    ///
    /// ```
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::wire::RedeemRequest;
    /// # use lanlink::{AccountId, InstanceId, PublicNetwork, WireCode};
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let mut rng = lanlink::os_rng();
    /// let code = server.mint_code(now, &mut rng, &AccountId::new("alice").unwrap()).await.unwrap().code;
    /// let network = PublicNetwork::from_ip("203.0.113.7".parse().unwrap(), 64);
    /// let request = RedeemRequest::new(InstanceId::generate(&mut rng), code);
    /// assert!(server.redeem(now, &mut rng, network, &request).await.is_ok());
    /// // Single-use: the same code again reads as any wrong code on the wire.
    /// let again = server.redeem(now, &mut rng, network, &request).await.unwrap_err();
    /// assert_eq!(again.code(), WireCode::InvalidCode);
    /// assert!(again.counts_as_failure());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn redeem<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal> {
        let with_info = self.hook.is_some();
        let pending = run!(self, |ops| ops
            .begin_redeem(now, rng, network, request, with_info))?;
        self.hook_and_finish(now, pending).await
    }

    /// Awaits the link hook (if any) on `pending`, then finishes the redemption.
    pub(crate) async fn hook_and_finish(
        &self,
        now: DateTime<Utc>,
        pending: PendingLink,
    ) -> Result<Redeemed, Refusal> {
        self.finish_around_hook(now, pending, Ok(())).await
    }

    /// The redeem around the hook, once the code is claimed (`pending`): unless `before` failed
    /// (a profile's own step, such as keeping a printer token's digest), the link hook is awaited
    /// (nothing is held meanwhile); then the link is finished, or on a failure the claim given
    /// back so that the agent's retry redeems the code.
    #[cfg_attr(not(feature = "obico-wire"), allow(dead_code))]
    pub(crate) async fn finish_around_hook(
        &self,
        now: DateTime<Utc>,
        pending: PendingLink,
        before: Result<(), HookError>,
    ) -> Result<Redeemed, Refusal> {
        let outcome = match (before, &self.hook) {
            (Ok(()), Some(hook)) => hook.link_completed(pending.link()).await,
            (before, _) => before,
        };
        self.finish_redeem(now, pending, outcome).await
    }

    /// The last step of a redemption: given the hook's `outcome`, completes the link and returns
    /// the token, or (the hook failed: `link_unavailable`) gives the code back.
    pub(crate) async fn finish_redeem(
        &self,
        now: DateTime<Utc>,
        pending: PendingLink,
        outcome: Result<(), HookError>,
    ) -> Result<Redeemed, Refusal> {
        run!(self, |ops| ops.finish_redeem(now, pending, outcome))
    }

    /// Drops every expired record from the store (a housekeeping call; every operation also
    /// ignores what has expired; a store with its own expiry, such as Redis, has nothing to do).
    ///
    /// ```
    /// # use lanlink::server::{Server, ServerConfig};
    /// # use lanlink::AccountId;
    /// # let mut fut = std::pin::pin!(async {
    /// let server = Server::new(ServerConfig::default()).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// server.mint_code(now, &mut lanlink::os_rng(), &AccountId::new("alice").unwrap()).await.unwrap();
    /// server.purge_expired(now).await.unwrap();
    /// assert_eq!(server.store().codes(), 1, "still live");
    /// server.purge_expired(now + chrono::TimeDelta::minutes(11)).await.unwrap();
    /// assert_eq!(server.store().codes(), 0, "a manual code lives 10 minutes");
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn purge_expired(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        run!(self, |ops| ops.purge(now))
    }
}

/// The crate's fuzz harnesses call the one server type through these: the caller resolved by [`Server::caller`], then the step polled once with
/// [`at_once`] (the in-memory store's futures are ready at once).
#[cfg(feature = "fuzz")]
pub(crate) trait AtOnce {
    fn announce_now(
        &self,
        now: DateTime<Utc>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal>;
    fn discover_now(
        &self,
        now: DateTime<Utc>,
        user: &User,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<DiscoverReply, Refusal>;
    #[allow(clippy::too_many_arguments)]
    fn link_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        user: &User,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal>;
    fn link_status_now(
        &self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        instance_id: &InstanceId,
    ) -> Result<LinkStatusReply, Refusal>;
    fn redeem_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal>;
    fn purge_now(&self, now: DateTime<Utc>);
}

#[cfg(feature = "fuzz")]
impl<S: Backend> AtOnce for Server<S> {
    fn announce_now(
        &self,
        now: DateTime<Utc>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal> {
        let network = self.caller(RequestKind::Announce, peer, headers)?;
        at_once(self.announce(now, network, announce))
    }

    fn discover_now(
        &self,
        now: DateTime<Utc>,
        user: &User,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<DiscoverReply, Refusal> {
        let network = self.caller(RequestKind::Discover, peer, headers)?;
        at_once(self.discover(now, network, user))
    }

    fn link_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        user: &User,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal> {
        let network = self.caller(RequestKind::Link, peer, headers)?;
        at_once(self.link(now, rng, network, user, request))
    }

    fn link_status_now(
        &self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        instance_id: &InstanceId,
    ) -> Result<LinkStatusReply, Refusal> {
        let network = self.caller(RequestKind::LinkStatus, peer, headers)?;
        at_once(self.link_status(now, network, account, instance_id))
    }

    fn redeem_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal> {
        let network = self.caller(RequestKind::Redeem, peer, headers)?;
        at_once(self.redeem(now, rng, network, request))
    }

    fn purge_now(&self, now: DateTime<Utc>) {
        // Over the in-memory store a purge cannot fail.
        let _ = at_once(async { self.purge_expired(now).await.map_err(Refusal::from) });
    }
}
