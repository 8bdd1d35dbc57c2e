//! reqwest clients implementing the [`crate::transport`] traits over the routes of `PROTOCOL.md`.
//! They must not decide what a reply means: statuses and bodies go to the core's
//! [`reply_from`](crate::transport::reply_from) and [`crate::wire::decode`], and the size limit is
//! the wire's.
//!
//! Replies are read with a size limit and decoded with [`crate::wire::decode`]; refusals come
//! back as [`TransportError::Refused`] with the server's code. Redirects are not followed.
//!
//! Without the crate's feature `tls` the clients speak plain HTTP only: an `https://` server
//! fails every request (it is never tried over plain HTTP). With `tls` they also speak HTTPS, over
//! rustls with the platform's verifier: the system's roots, plus any given to
//! `default_client_with_roots` (a private cloud's CA, a test's). The crypto provider is the
//! process's default if the host installed one, else aws-lc-rs. A client of your own (built with
//! any of reqwest's TLS features) goes to `with_client`. Requests from a linker to a device's
//! local endpoint are plain HTTP to a LAN address whatever the client.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Client, RequestBuilder};
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::DEFAULT_PREFIX;
use crate::id::InstanceId;
use crate::transport::{
    AgentServerTransport, LinkerAgentTransport, LinkerServerTransport, TransportError,
    ANNOUNCE_PATH, REDEEM_PATH,
};
use crate::wire::{
    self, Announce, AnnounceReply, CodeReply, DiscoverReply, LinkRequest, LinkStatusReply,
    RedeemReply, RedeemRequest, SecretReply, MAX_MESSAGE_BYTES,
};

/// The settings of [`default_client`] as a builder, for a client that needs more (a root
/// certificate, default headers, a cookie store): a 10 s timeout (5 s to connect), no
/// redirects, no proxy. Keep the redirect policy: a redirect would send a request (and its
/// credential) to a host that no rule checked.
///
/// ```
/// let client = lanlink::http::client::client_builder()
///     .user_agent("my-device/1.0")
///     .build()
///     .unwrap();
/// # let _ = client;
/// ```
pub fn client_builder() -> reqwest::ClientBuilder {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
}

/// How much longer than its hold a held request (revision 1.6) may take before the client gives
/// up on it: 10 seconds, the client's usual timeout ([`client_builder`]), for the round trip and
/// the server's last look at the store.
///
/// ```
/// assert_eq!(lanlink::http::client::HELD_REQUEST_MARGIN.as_secs(), 10);
/// ```
pub const HELD_REQUEST_MARGIN: Duration = Duration::from_secs(10);

/// A reqwest client with the settings this module relies on ([`client_builder`]): a 10 s
/// timeout, no redirects, no proxy. With feature `tls` it speaks HTTPS too, trusting the
/// platform's roots.
///
/// ```
/// use lanlink::http::client::{default_client, HttpAgentClient};
/// // Give it to the `with_client` constructors, or use theirs.
/// let client = default_client()?;
/// let agent = HttpAgentClient::with_client(client, "http://127.0.0.1:8080", "/lanlink/v1");
/// assert!(format!("{agent:?}").contains(r#"base: "http://127.0.0.1:8080/lanlink/v1""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn default_client() -> Result<Client, TransportError> {
    client_builder()
        .build()
        .map_err(|err| TransportError::Unreachable(err.to_string()))
}

/// [`default_client`], trusting besides the platform's roots the certificates of `pem`, one PEM
/// bundle (one or more `CERTIFICATE` blocks, such as a private CA's file); feature `tls`.
///
/// Fails with [`TransportError::Unreachable`] (no client, so no server can be reached) if `pem`
/// holds no certificate or one that does not parse.
///
/// ```
/// use lanlink::http::client::default_client_with_roots;
/// assert!(default_client_with_roots(b"not a certificate").is_err());
/// ```
#[cfg(feature = "tls")]
pub fn default_client_with_roots(pem: &[u8]) -> Result<Client, TransportError> {
    let roots = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|err| TransportError::Unreachable(format!("root certificates: {err}")))?;
    if roots.is_empty() {
        return Err(TransportError::Unreachable(
            "root certificates: no PEM certificate found".to_owned(),
        ));
    }
    client_builder()
        .tls_certs_merge(roots)
        .build()
        .map_err(|err| TransportError::Unreachable(err.to_string()))
}

/// The client of every request a linker makes to a device, whatever client the caller gave for
/// the server: built from [`default_client`] on first use, so it follows no redirect (a device's
/// redirect would send the request to a host that no address rule checked) and uses no proxy.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeviceClient(std::sync::OnceLock<Client>);

impl DeviceClient {
    /// The client, built on first use.
    pub(crate) fn get(&self) -> Result<&Client, TransportError> {
        if let Some(client) = self.0.get() {
            return Ok(client);
        }
        let client = default_client()?;
        Ok(self.0.get_or_init(|| client))
    }
}

/// `base` without a trailing slash, followed by `prefix`.
fn join(base: &str, prefix: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        prefix.trim_matches('/')
    )
}

/// Sends `request` and decodes a success as `T`, a refusal as [`TransportError::Refused`].
async fn exchange<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, TransportError> {
    let mut response = request
        .send()
        .await
        .map_err(|err| TransportError::Unreachable(err.without_url().to_string()))?;
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|len| len > MAX_MESSAGE_BYTES as u64)
    {
        return Err(TransportError::Malformed);
    }
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| TransportError::Unreachable(err.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_MESSAGE_BYTES {
            return Err(TransportError::Malformed);
        }
        body.extend_from_slice(&chunk);
    }
    crate::transport::reply_from(status.as_u16(), &body)
}

fn json(builder: RequestBuilder, body: Zeroizing<Vec<u8>>) -> RequestBuilder {
    builder
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
}

/// How much longer than its hold an agent's held announcement (revision 1.6) waits for its
/// answer before it counts as failed: 10 s, the default client's whole timeout, for the
/// connection, the request and the answer around the hold.
///
/// ```
/// use std::time::Duration;
/// // An announcement asking for the default 20 s hold waits 30 s for its answer.
/// let waits = lanlink::agent::DEFAULT_HOLD + lanlink::http::client::HOLD_MARGIN;
/// assert_eq!(waits, Duration::from_secs(30));
/// ```
pub const HOLD_MARGIN: Duration = Duration::from_secs(10);

/// The timeout of an announcement that asks for a hold of `hold_ms`: the hold plus
/// [`HOLD_MARGIN`].
fn held_timeout(hold_ms: u32) -> Duration {
    Duration::from_millis(u64::from(hold_ms)) + HOLD_MARGIN
}

/// The agent's client for the server's agent-facing routes. An announcement that asks for a
/// hold (revision 1.6) waits the hold plus [`HOLD_MARGIN`] for its answer; every other request
/// keeps the client's timeout (10 s for [`default_client`]).
///
/// ```
/// use lanlink::http::client::HttpAgentClient;
/// let client = HttpAgentClient::new("http://127.0.0.1:8080").unwrap();
/// # let _ = client;
/// ```
#[derive(Debug, Clone)]
pub struct HttpAgentClient {
    client: Client,
    base: String,
}

impl HttpAgentClient {
    /// A client for the server at `server` (e.g. `http://127.0.0.1:8080`) under the default prefix.
    ///
    /// ```
    /// use lanlink::http::client::HttpAgentClient;
    /// let client = HttpAgentClient::new("http://127.0.0.1:8080/")?;
    /// // Under the default prefix, with the trailing slash dropped.
    /// assert!(format!("{client:?}").contains(r#"base: "http://127.0.0.1:8080/lanlink/v1""#));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(server: &str) -> Result<Self, TransportError> {
        Ok(Self::with_client(default_client()?, server, DEFAULT_PREFIX))
    }

    /// A client over `client`, for the server at `server` under `prefix`.
    ///
    /// ```
    /// use lanlink::http::client::{default_client, HttpAgentClient};
    /// let client = HttpAgentClient::with_client(default_client()?, "https://cloud.example/", "/api/lanlink/");
    /// assert!(format!("{client:?}").contains(r#"base: "https://cloud.example/api/lanlink""#));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_client(client: Client, server: &str, prefix: &str) -> Self {
        Self {
            client,
            base: join(server, prefix),
        }
    }
}

#[async_trait]
impl AgentServerTransport for HttpAgentClient {
    /// Sends `announce`. One that asks for a hold (revision 1.6) waits up to the hold plus
    /// [`HOLD_MARGIN`] for its answer, whatever the client's own timeout.
    async fn announce(&self, announce: &Announce) -> Result<AnnounceReply, TransportError> {
        let url = format!("{}{ANNOUNCE_PATH}", self.base);
        let mut request = self.client.post(url);
        if let Some(hold) = announce.hold_ms {
            request = request.timeout(held_timeout(hold));
        }
        exchange(json(request, wire::encode(announce))).await
    }

    async fn redeem(&self, request: &RedeemRequest) -> Result<RedeemReply, TransportError> {
        let url = format!("{}{REDEEM_PATH}", self.base);
        exchange(json(self.client.post(url), wire::encode(request))).await
    }
}

#[cfg(feature = "ticket")]
impl HttpAgentClient {
    /// Asks for a signed network ticket (`POST {prefix}/agent/ticket`) with an announcement that
    /// proves the agent's presence key; see [`crate::ticket`].
    pub async fn ticket(
        &self,
        announce: &Announce,
    ) -> Result<crate::ticket::TicketReply, TransportError> {
        let url = format!("{}/agent/ticket", self.base);
        exchange(json(self.client.post(url), wire::encode(announce))).await
    }
}

/// The linker's client: the server's user routes (with a bearer token) and agents' local
/// endpoints.
///
/// ```
/// use lanlink::http::client::HttpLinkerClient;
/// let client = HttpLinkerClient::new("http://127.0.0.1:8080", "token").unwrap();
/// # let _ = client;
/// ```
#[derive(Clone)]
pub struct HttpLinkerClient {
    client: Client,
    device: DeviceClient,
    base: String,
    agent_prefix: String,
    credential: Credential,
}

/// How a linker client proves its user to the server: what the server's
/// [`Authenticator`](super::Authenticator) reads. Redacted in `Debug`, zeroized on drop.
///
/// ```
/// use lanlink::http::client::Credential;
/// let cookie = Credential::Cookie("session=abc123".to_owned().into());
/// assert_eq!(format!("{cookie:?}"), "Credential::Cookie(<redacted>)");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer(Zeroizing<String>),
    /// `Cookie: <value>` (for example a session cookie, `name=value`).
    Cookie(Zeroizing<String>),
    /// Any header, for example `("x-api-key", key)`.
    Header(reqwest::header::HeaderName, Zeroizing<String>),
    /// Nothing: the client itself carries the credential (a cookie store, default headers).
    None,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bearer(_) => "Credential::Bearer(<redacted>)",
            Self::Cookie(_) => "Credential::Cookie(<redacted>)",
            Self::Header(..) => "Credential::Header(<redacted>)",
            Self::None => "Credential::None",
        })
    }
}

impl Credential {
    fn apply(&self, builder: RequestBuilder) -> RequestBuilder {
        match self {
            Self::Bearer(token) => builder.header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", token.as_str()),
            ),
            Self::Cookie(cookie) => builder.header(reqwest::header::COOKIE, cookie.as_str()),
            Self::Header(name, value) => builder.header(name.clone(), value.as_str()),
            Self::None => builder,
        }
    }
}

impl std::fmt::Debug for HttpLinkerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLinkerClient")
            .field("base", &self.base)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl HttpLinkerClient {
    /// A client for the server at `server`, authenticating with bearer `token`, default prefixes.
    ///
    /// ```
    /// use lanlink::http::client::HttpLinkerClient;
    /// let client = HttpLinkerClient::new("http://127.0.0.1:8080", "alice-token")?;
    /// // Debug never shows the credential.
    /// let shown = format!("{client:?}");
    /// assert!(shown.contains("Credential::Bearer(<redacted>)") && !shown.contains("alice-token"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(server: &str, token: &str) -> Result<Self, TransportError> {
        Ok(Self::with_client(
            default_client()?,
            server,
            DEFAULT_PREFIX,
            DEFAULT_PREFIX,
            token,
        ))
    }

    /// A client over `client` with the server's and the agents' route prefixes, authenticated
    /// with a bearer `token`. `client` carries the requests to the server only: those to
    /// devices go through a client of the crate's, which follows no redirect.
    ///
    /// ```
    /// use lanlink::http::client::{default_client, HttpLinkerClient};
    /// let client = HttpLinkerClient::with_client(default_client()?, "https://cloud.example", "/lanlink/v1", "/lanlink/v1", "t0k3n");
    /// assert!(!format!("{client:?}").contains("t0k3n"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_client(
        client: Client,
        server: &str,
        server_prefix: &str,
        agent_prefix: &str,
        token: &str,
    ) -> Self {
        let credential = Credential::Bearer(Zeroizing::new(token.to_owned()));
        Self::with_credential(client, server, server_prefix, agent_prefix, credential)
    }

    /// A client over `client` with the server's and the agents' route prefixes, authenticated
    /// with any [`Credential`] (a session cookie, a custom header, or none).
    ///
    /// ```
    /// use lanlink::http::client::{default_client, Credential, HttpLinkerClient};
    /// use lanlink::http::DEFAULT_PREFIX;
    /// let cookie = Credential::Cookie("session=abc123".to_owned().into());
    /// let client = HttpLinkerClient::with_credential(
    ///     default_client().unwrap(), "https://cloud.example", DEFAULT_PREFIX, DEFAULT_PREFIX, cookie,
    /// );
    /// # let _ = client;
    /// ```
    pub fn with_credential(
        client: Client,
        server: &str,
        server_prefix: &str,
        agent_prefix: &str,
        credential: Credential,
    ) -> Self {
        Self {
            client,
            device: DeviceClient::default(),
            base: join(server, server_prefix),
            agent_prefix: agent_prefix.trim_matches('/').to_owned(),
            credential,
        }
    }

    fn authed(&self, builder: RequestBuilder) -> RequestBuilder {
        self.credential.apply(builder)
    }
}

#[async_trait]
impl LinkerServerTransport for HttpLinkerClient {
    async fn discover(&self) -> Result<DiscoverReply, TransportError> {
        let url = format!("{}/discover", self.base);
        exchange(self.authed(self.client.get(url))).await
    }

    async fn link(&self, request: &LinkRequest) -> Result<LinkStatusReply, TransportError> {
        let url = format!("{}/link", self.base);
        exchange(json(
            self.authed(self.client.post(url)),
            wire::encode(request),
        ))
        .await
    }

    async fn link_status(
        &self,
        instance_id: &InstanceId,
    ) -> Result<LinkStatusReply, TransportError> {
        let url = format!("{}/link/{instance_id}", self.base);
        exchange(self.authed(self.client.get(url))).await
    }

    /// `GET {prefix}/link/{instance_id}?hold_ms=N` (revision 1.6; `N` at most
    /// [`MAX_HOLD_MS`](crate::wire::MAX_HOLD_MS)), with a timeout of the hold plus
    /// [`HELD_REQUEST_MARGIN`] for this request (the client's own is 10 s by default).
    async fn link_status_held(
        &self,
        instance_id: &InstanceId,
        hold: Duration,
    ) -> Result<LinkStatusReply, TransportError> {
        let ms = u32::try_from(hold.as_millis())
            .unwrap_or(u32::MAX)
            .min(wire::MAX_HOLD_MS);
        if ms == 0 {
            return self.link_status(instance_id).await;
        }
        let url = format!("{}/link/{instance_id}?hold_ms={ms}", self.base);
        let timeout = Duration::from_millis(u64::from(ms)) + HELD_REQUEST_MARGIN;
        exchange(self.authed(self.client.get(url)).timeout(timeout)).await
    }

    async fn mint_code(&self) -> Result<CodeReply, TransportError> {
        let url = format!("{}/codes", self.base);
        exchange(self.authed(self.client.post(url))).await
    }
}

#[async_trait]
impl LinkerAgentTransport for HttpLinkerClient {
    async fn fetch_secret(
        &self,
        agent: SocketAddr,
        instance_id: &InstanceId,
    ) -> Result<SecretReply, TransportError> {
        // The instance id is a UUID: nothing in it needs escaping.
        let url = format!(
            "http://{agent}/{}/secret?instance_id={instance_id}",
            self.agent_prefix
        );
        // Never `self.client`: a caller's client may follow redirects.
        exchange(self.device.get()?.get(url)).await
    }
}
