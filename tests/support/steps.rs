//! The server's steps from a synchronous test: the caller resolved by `Server::caller` from a
//! socket peer and forwarding headers (as every transport does), then the step's future polled
//! once. Over the in-memory store every future is ready at once (a hook that waits is not: use
//! the async methods for those). This drives the one `Server` type, as production does.

use std::future::Future;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use lanlink::confirm::DisplayName;
use lanlink::event::RequestKind;
use lanlink::server::{Backend, Redeemed, Server, User};
use lanlink::wire::{
    Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply, RedeemRequest,
};
use lanlink::{AccountId, ForwardedHeaders, InstanceId, PublicNetwork, Refusal};
use rand::{CryptoRng, RngCore};

/// Polls `future` once; panics if it is not ready (a test over the in-memory store whose link
/// hook does not wait never is).
pub fn ready<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("the server's future was not ready at once"),
    }
}

/// The account a test discovers as when it names none.
pub fn anyone() -> User {
    User::new(AccountId::new("anyone").expect("account"))
}

/// Each step of the protocol at once, from a peer.
pub trait Steps {
    fn announce_now(
        &self,
        now: DateTime<Utc>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal>;
    fn announce_in_now(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal>;
    fn discover_now(
        &self,
        now: DateTime<Utc>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<DiscoverReply, Refusal>;
    fn discover_as_now(
        &self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<DiscoverReply, Refusal>;
    #[allow(clippy::too_many_arguments)]
    fn link_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal>;
    #[allow(clippy::too_many_arguments)]
    fn link_as_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        display_name: Option<DisplayName>,
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
    fn mint_code_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
    ) -> Result<CodeReply, Refusal>;
    fn redeem_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal>;
    fn redeem_in_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal>;
    fn purge_now(&self, now: DateTime<Utc>);
}

impl<S: Backend> Steps for Server<S> {
    fn announce_now(
        &self,
        now: DateTime<Utc>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal> {
        let network = self.caller(RequestKind::Announce, peer, headers)?;
        ready(self.announce(now, network, announce))
    }

    fn announce_in_now(
        &self,
        now: DateTime<Utc>,
        network: PublicNetwork,
        announce: &Announce,
    ) -> Result<AnnounceReply, Refusal> {
        ready(self.announce(now, network, announce))
    }

    fn discover_now(
        &self,
        now: DateTime<Utc>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<DiscoverReply, Refusal> {
        let network = self.caller(RequestKind::Discover, peer, headers)?;
        ready(self.discover(now, network, &anyone()))
    }

    fn discover_as_now(
        &self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<DiscoverReply, Refusal> {
        let network = self.caller(RequestKind::Discover, peer, headers)?;
        ready(self.discover(now, network, &User::new(account.clone())))
    }

    fn link_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal> {
        let network = self.caller(RequestKind::Link, peer, headers)?;
        ready(self.link(now, rng, network, &User::new(account.clone()), request))
    }

    fn link_as_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        display_name: Option<DisplayName>,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        request: LinkRequest,
    ) -> Result<LinkStatusReply, Refusal> {
        let network = self.caller(RequestKind::Link, peer, headers)?;
        let user = User::named(account.clone(), display_name);
        ready(self.link(now, rng, network, &user, request))
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
        ready(self.link_status(now, network, account, instance_id))
    }

    fn mint_code_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
    ) -> Result<CodeReply, Refusal> {
        ready(self.mint_code(now, rng, account))
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
        ready(self.redeem(now, rng, network, request))
    }

    fn redeem_in_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        network: PublicNetwork,
        request: &RedeemRequest,
    ) -> Result<Redeemed, Refusal> {
        ready(self.redeem(now, rng, network, request))
    }

    fn purge_now(&self, now: DateTime<Utc>) {
        ready(self.purge_expired(now)).expect("the in-memory store purges");
    }
}

/// The Obico profile's steps at once, from a peer (old argument order: the caller's peer and
/// forwarding headers where the step takes the network).
#[cfg(feature = "obico-wire")]
pub trait ObicoSteps {
    fn obico_unlinked_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        obico: &lanlink::obico::ObicoConfig,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        poll: &lanlink::obico::UnlinkedPoll,
    ) -> Result<lanlink::obico::UnlinkedReply, Refusal>;
    /// [`obico_unlinked_now`](Self::obico_unlinked_now) from `peer` itself (no forwarding
    /// headers).
    fn obico_poll_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        obico: &lanlink::obico::ObicoConfig,
        peer: IpAddr,
        poll: &lanlink::obico::UnlinkedPoll,
    ) -> Result<lanlink::obico::UnlinkedReply, Refusal> {
        self.obico_unlinked_now(now, rng, obico, peer, ForwardedHeaders::NONE, poll)
    }
    fn obico_discover_now(
        &self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<Vec<lanlink::wire::DiscoveredAgent>, Refusal>;
    #[allow(clippy::too_many_arguments)]
    fn obico_link_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        device_id: InstanceId,
        secret: Option<lanlink::LocalSecret>,
    ) -> Result<(), Refusal>;
    fn obico_verify_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        code: &lanlink::code::LinkCode,
    ) -> Result<lanlink::obico::Verified, Refusal>;
    #[allow(clippy::too_many_arguments)]
    fn obico_claim_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        passcode: &str,
    ) -> Result<(), Refusal>;
}

#[cfg(feature = "obico-wire")]
impl<S: Backend> ObicoSteps for Server<S> {
    fn obico_unlinked_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        obico: &lanlink::obico::ObicoConfig,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        poll: &lanlink::obico::UnlinkedPoll,
    ) -> Result<lanlink::obico::UnlinkedReply, Refusal> {
        let network = self.caller(RequestKind::Announce, peer, headers)?;
        ready(self.obico_unlinked(now, rng, obico, network, poll))
    }

    fn obico_discover_now(
        &self,
        now: DateTime<Utc>,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
    ) -> Result<Vec<lanlink::wire::DiscoveredAgent>, Refusal> {
        let network = self.caller(RequestKind::Discover, peer, headers)?;
        let listed = ready(self.obico_list(now, network, account))?;
        Ok(listed.into_iter().map(|(agent, _)| agent).collect())
    }

    fn obico_link_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        device_id: InstanceId,
        secret: Option<lanlink::LocalSecret>,
    ) -> Result<(), Refusal> {
        let network = self.caller(RequestKind::Link, peer, headers)?;
        ready(self.obico_link(now, rng, network, account, device_id, secret))
    }

    fn obico_verify_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        code: &lanlink::code::LinkCode,
    ) -> Result<lanlink::obico::Verified, Refusal> {
        let network = self.caller(RequestKind::Redeem, peer, headers)?;
        ready(self.obico_verify(now, rng, network, code))
    }

    fn obico_claim_now<R: CryptoRng + RngCore + Send + ?Sized>(
        &self,
        now: DateTime<Utc>,
        rng: &mut R,
        account: &AccountId,
        peer: IpAddr,
        headers: ForwardedHeaders<'_>,
        passcode: &str,
    ) -> Result<(), Refusal> {
        let network = self.caller(RequestKind::Link, peer, headers)?;
        ready(self.obico_claim(now, rng, network, account, passcode))
    }
}

/// An announcement from `peer`, awaited: the caller resolved as the HTTP route does.
pub async fn announce_at<S: Backend>(
    server: &Server<S>,
    now: DateTime<Utc>,
    peer: IpAddr,
    headers: ForwardedHeaders<'_>,
    announce: &Announce,
) -> Result<AnnounceReply, Refusal> {
    let network = server.caller(RequestKind::Announce, peer, headers)?;
    server.announce(now, network, announce).await
}

/// A discovery by a fixed account from `peer`, awaited.
pub async fn discover_at<S: Backend>(
    server: &Server<S>,
    now: DateTime<Utc>,
    peer: IpAddr,
    headers: ForwardedHeaders<'_>,
) -> Result<DiscoverReply, Refusal> {
    let network = server.caller(RequestKind::Discover, peer, headers)?;
    server.discover(now, network, &anyone()).await
}

/// A link request by `account` from `peer`, awaited.
pub async fn link_at<S: Backend, R: CryptoRng + RngCore + Send + ?Sized>(
    server: &Server<S>,
    now: DateTime<Utc>,
    rng: &mut R,
    account: &AccountId,
    peer: IpAddr,
    headers: ForwardedHeaders<'_>,
    request: LinkRequest,
) -> Result<LinkStatusReply, Refusal> {
    let network = server.caller(RequestKind::Link, peer, headers)?;
    let user = User::new(account.clone());
    server.link(now, rng, network, &user, request).await
}

/// A redemption from `peer`, awaited.
pub async fn redeem_at<S: Backend, R: CryptoRng + RngCore + Send + ?Sized>(
    server: &Server<S>,
    now: DateTime<Utc>,
    rng: &mut R,
    peer: IpAddr,
    headers: ForwardedHeaders<'_>,
    request: &RedeemRequest,
) -> Result<Redeemed, Refusal> {
    let network = server.caller(RequestKind::Redeem, peer, headers)?;
    server.redeem(now, rng, network, request).await
}
