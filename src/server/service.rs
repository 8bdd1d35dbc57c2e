//! The server over a shared [`Store`], for many instances at once.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};

use super::hook::{HookError, LinkHook, PendingLink};
use super::ops::{EventQueue, Ops};
use super::store::{Shared, Store, StoreError};
use super::{Redeemed, ServerConfig};
use crate::addr::{ForwardedHeaders, PublicNetwork};
use crate::confirm::DisplayName;
use crate::error::{ConfigError, Refusal};
use crate::event::ServerEvent;
use crate::id::{AccountId, InstanceId};
use crate::wire::{
    Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemRequest,
};

/// Where a [`Service`] sends its events (they carry no secrets).
pub type EventSink = Arc<dyn Fn(ServerEvent) + Send + Sync>;

/// Where a [`Service`]'s events go: the host's choice, made by name when it builds the service
/// ([`Service::new`]). There is no default, so a service cannot lose its audit trail by
/// omission: it has [a sink](Events::sink), or the host wrote [`Events::discard`].
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
#[derive(Clone)]
pub struct Events(Option<EventSink>);

impl Events {
    /// Every event goes to `sink` as the operation that made it ends (a service has no queue:
    /// it is shared by concurrent requests).
    pub fn sink(sink: impl Fn(ServerEvent) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(sink)))
    }

    /// Every event is dropped. For benches and throwaway tools; a server that links real
    /// accounts should keep its decisions ([`Events::sink`]).
    pub fn discard() -> Self {
        Self(None)
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Events::sink(..)",
            None => "Events::discard()",
        })
    }
}

/// The server's operations over a shared [`Store`], as `async fn`s taking `&self`: one
/// `Service` serves concurrent requests, and several processes whose services share one store
/// (such as a `RedisStore` (feature `redis`)) act as one server.
///
/// The operations are the very code the synchronous [`Server`](super::Server) runs; see its
/// methods for what each checks. Decisions go where the host said when it built the service
/// ([`Events`]).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use chrono::DateTime;
/// use lanlink::event::ServerEvent;
/// use lanlink::server::{Events, MemoryStore, ServerConfig, Service};
/// use lanlink::ForwardedHeaders;
/// # let mut fut = std::pin::pin!(async {
/// let store = Arc::new(Mutex::new(MemoryStore::default()));
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let events = Events::sink(move |event| log.lock().unwrap().push(event));
/// let service = Service::new(ServerConfig::default(), store, events).unwrap();
/// let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
/// let peer = "203.0.113.7".parse().unwrap();
/// let reply = service.handle_discover(now, peer, ForwardedHeaders::NONE).await.unwrap();
/// assert!(reply.agents.is_empty());
/// assert!(matches!(seen.lock().unwrap()[..], [ServerEvent::Discovered { .. }]));
/// # });
/// # use std::future::Future;
/// # let waker = std::task::Waker::noop();
/// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(waker)).is_ready());
/// ```
#[derive(Clone)]
pub struct Service {
    config: ServerConfig,
    store: Arc<dyn Store>,
    events: Events,
    hook: Option<Arc<dyn LinkHook>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.config)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service over `store` (checks the configuration), its events going where `events`
    /// says: to a sink, or, named as such, nowhere.
    pub fn new(
        config: ServerConfig,
        store: Arc<dyn Store>,
        events: Events,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            store,
            events,
            hook: None,
        })
    }

    /// Awaits `hook` on every completed link before its token is returned (see
    /// [`hook`](super::hook)): every route and transport over this service (HTTP, MQTT, the
    /// Obico profile) links through it.
    pub fn with_link_hook(mut self, hook: Arc<dyn LinkHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The link hook, if one is set.
    pub fn link_hook(&self) -> Option<&Arc<dyn LinkHook>> {
        self.hook.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn ops<'a>(
        &'a self,
        store: &'a mut Shared<'a>,
        events: &'a mut EventQueue,
    ) -> Ops<'a, Shared<'a>> {
        Ops {
            config: &self.config,
            store,
            events,
        }
    }

    fn shared(&self) -> Shared<'_> {
        Shared(&*self.store)
    }

    fn emit(&self, events: EventQueue) {
        if let Some(sink) = &self.events.0 {
            events.drain().for_each(|event| sink(event));
        }
    }

    /// An agent announces; see [`Server::handle_announce`](super::Server::handle_announce).
    pub async fn handle_announce(
        &self,
        now: DateTime<Utc>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .handle_announce(now, peer, headers, announce)
            .await;
        self.emit(events);
        result
    }

    /// An announcement from an agent whose public network is already known; see
    /// [`Server::announce_in`](super::Server::announce_in).
    pub async fn announce_in(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .announce_in(now, network, announce)
            .await;
        self.emit(events);
        result
    }

    /// A linker asks for discoverable agents; see
    /// [`Server::handle_discover`](super::Server::handle_discover).
    pub async fn handle_discover(
        &self,
        now: DateTime<Utc>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<DiscoverReply, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .handle_discover(now, peer, headers, None)
            .await;
        self.emit(events);
        result
    }

    /// A linker of `account` asks for discoverable agents; see
    /// [`Server::handle_discover_as`](super::Server::handle_discover_as).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use lanlink::server::{Events, MemoryStore, ServerConfig, Service};
    /// use lanlink::{AccountId, ForwardedHeaders};
    /// # let mut fut = std::pin::pin!(async {
    /// let store = Arc::new(Mutex::new(MemoryStore::default()));
    /// let events = Events::sink(|event| println!("{event:?}"));
    /// let service = Service::new(ServerConfig::default(), store, events).unwrap();
    /// let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    /// let alice = AccountId::new("alice").unwrap();
    /// let reply = service
    ///     .handle_discover_as(now, &alice, "203.0.113.7".parse().unwrap(), ForwardedHeaders::NONE)
    ///     .await
    ///     .unwrap();
    /// assert!(reply.agents.is_empty() && reply.hidden.is_none());
    /// # });
    /// # use std::future::Future;
    /// # assert!(fut.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready());
    /// ```
    pub async fn handle_discover_as(
        &self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<DiscoverReply, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .handle_discover(now, peer, headers, Some(account))
            .await;
        self.emit(events);
        result
    }

    /// A linker asks to link an agent; see [`Server::handle_link`](super::Server::handle_link).
    pub async fn handle_link<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal> {
        let name = DisplayName::of_account(account);
        self.handle_link_as(now, rng, account, name, peer, headers, request)
            .await
    }

    /// A linker asks to link an agent, with the account's display name from the embedder; see
    /// [`Server::handle_link_as`](super::Server::handle_link_as).
    #[allow(clippy::too_many_arguments)]
    pub async fn handle_link_as<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        display_name: Option<DisplayName>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .handle_link(now, rng, account, display_name, peer, headers, request)
            .await;
        self.emit(events);
        result
    }

    /// The state of a link; see
    /// [`Server::handle_link_status`](super::Server::handle_link_status).
    pub async fn handle_link_status(
        &self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        instance_id: &InstanceId,
    ) -> Result<LinkStatusReply, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .handle_link_status(now, account, peer, headers, instance_id)
            .await;
        self.emit(events);
        result
    }

    /// Mints a manual code; see [`Server::mint_code`](super::Server::mint_code).
    pub async fn mint_code<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
    ) -> Result<CodeReply, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .mint_code(now, rng, account)
            .await;
        self.emit(events);
        result
    }

    /// An agent redeems a code; see [`Server::handle_redeem`](super::Server::handle_redeem).
    /// The [link hook](Self::with_link_hook), if any, is awaited between the claim and the
    /// completion.
    pub async fn handle_redeem<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal> {
        let pending = self.begin_redeem(now, rng, peer, headers, request).await?;
        self.run_hook_and_finish(now, pending).await
    }

    /// A redemption from an agent whose public network is already known; see
    /// [`Server::redeem_in`](super::Server::redeem_in).
    pub async fn redeem_in<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal> {
        let pending = self.begin_redeem_in(now, rng, network, request).await?;
        self.run_hook_and_finish(now, pending).await
    }

    /// Awaits the link hook (if any) on `pending`, then finishes the redemption.
    pub(crate) async fn run_hook_and_finish(
        &self,
        now: DateTime<Utc>,
        pending: PendingLink,
    ) -> Result<Redeemed, Refusal> {
        let outcome = match &self.hook {
            Some(hook) => hook.link_completed(pending.link()).await,
            None => Ok(()),
        };
        self.finish_redeem(now, pending, outcome).await
    }

    /// The first step of a redemption; see
    /// [`Server::begin_redeem`](super::Server::begin_redeem).
    pub async fn begin_redeem<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: &RedeemRequest,
    ) -> Result<PendingLink, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .begin_redeem(now, rng, peer, headers, request, self.hook.is_some())
            .await;
        self.emit(events);
        result
    }

    /// [`begin_redeem`](Self::begin_redeem) for an agent whose public network is already known.
    pub async fn begin_redeem_in<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        request: &RedeemRequest,
    ) -> Result<PendingLink, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .begin_redeem_in(now, rng, network, request, self.hook.is_some())
            .await;
        self.emit(events);
        result
    }

    /// The last step of a redemption; see
    /// [`Server::finish_redeem`](super::Server::finish_redeem).
    pub async fn finish_redeem(
        &self,
        now: DateTime<Utc>,
        pending: PendingLink,
        outcome: Result<(), HookError>,
    ) -> Result<Redeemed, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .finish_redeem(now, pending, outcome)
            .await;
        self.emit(events);
        result
    }

    /// Drops expired records (a store with its own expiry, such as Redis, has nothing to do).
    pub async fn purge_expired(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self.ops(&mut store, &mut events).purge(now).await;
        self.emit(events);
        result
    }
}

/// The Obico profile's operations (feature `obico-wire`): the very code the sync
/// [`Server`](super::Server)'s `obico_*` methods run, over the shared store.
#[cfg(feature = "obico-wire")]
impl Service {
    /// See [`Server::obico_unlinked`](super::Server::obico_unlinked).
    pub async fn obico_unlinked<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        obico: &crate::obico::ObicoConfig,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        poll: &crate::obico::UnlinkedPoll,
    ) -> Result<crate::obico::UnlinkedReply, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .obico_unlinked(now, rng, obico, peer, headers, poll)
            .await;
        self.emit(events);
        result
    }

    /// See [`Server::obico_discover`](super::Server::obico_discover).
    pub async fn obico_discover(
        &self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<Vec<crate::wire::DiscoveredAgent>, Refusal> {
        let listed = self.obico_list(now, account, peer, headers).await?;
        Ok(listed.into_iter().map(|(agent, _)| agent).collect())
    }

    /// See [`Server::obico_list`](super::Server::obico_list).
    pub async fn obico_list(
        &self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<Vec<(crate::wire::DiscoveredAgent, super::record::ObicoInfo)>, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .obico_list(now, account, peer, headers)
            .await;
        self.emit(events);
        result
    }

    /// See [`Server::obico_link`](super::Server::obico_link).
    #[allow(clippy::too_many_arguments)]
    pub async fn obico_link<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        device_id: InstanceId,
        secret: Option<crate::secret::LocalSecret>,
    ) -> Result<(), Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .obico_link(now, rng, account, peer, headers, device_id, secret)
            .await;
        self.emit(events);
        result
    }

    /// See [`Server::obico_verify`](super::Server::obico_verify) (the hook is awaited).
    pub async fn obico_verify<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        code: &crate::code::LinkCode,
    ) -> Result<crate::obico::Verified, Refusal> {
        let pending = self
            .obico_begin_verify(now, rng, peer, headers, code)
            .await?;
        self.run_hook_and_finish(now, pending)
            .await
            .map(crate::obico::Verified::from)
    }

    /// See [`Server::obico_begin_verify`](super::Server::obico_begin_verify).
    pub async fn obico_begin_verify<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        code: &crate::code::LinkCode,
    ) -> Result<PendingLink, Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .obico_begin_verify(now, rng, peer, headers, code)
            .await;
        self.emit(events);
        result
    }

    /// See [`Server::obico_claim`](super::Server::obico_claim).
    pub async fn obico_claim<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        passcode: &str,
    ) -> Result<(), Refusal> {
        let (mut events, mut store) = (EventQueue::default(), self.shared());
        let result = self
            .ops(&mut store, &mut events)
            .obico_claim(now, rng, account, peer, headers, passcode)
            .await;
        self.emit(events);
        result
    }
}
