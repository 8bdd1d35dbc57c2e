//! A linker for Obico agents over the Obico profile's routes ([`super::server`]).
//! It must not decide which device may be contacted: the core's private-address check does, as for
//! announcements.
//!
//! It lists the agents of the caller's network (`GET /api/v1/printer_discovery/`), fetches the
//! chosen agent's secret on the LAN from
//! `http://{host_or_ip}:{port}/plugin/obico/grab-discovery-secret?device_id=…` with
//! `Accept: application/json`, and posts `{device_id, device_secret}` to
//! `POST /api/v1/printer_discovery/`. It also claims one-time passcodes.
//!
//! The linker talks to an agent only at a private, loopback or link-local address (what the
//! server accepts in announcements), follows no redirect and reads bounded bodies.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::{Client, RequestBuilder};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::server::{DISCOVERY_PATH, PASSCODES_PATH};
use super::{device_id, parse_device_id};
use crate::id::InstanceId;
use crate::secret::LocalSecret;
use crate::transport::TransportError;
use crate::WireCode;

/// The agent's secret route (moonraker-obico serves it on port 46793, OctoPrint-Obico on
/// OctoPrint's port).
pub const SECRET_PATH: &str = "/plugin/obico/grab-discovery-secret";

/// Largest reply body read, in bytes.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// An Obico agent as discovery shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObicoDevice {
    /// The agent's `device_id`.
    pub device_id: InstanceId,
    /// Its LAN address.
    pub host_or_ip: IpAddr,
    /// Its port.
    pub port: u16,
    /// Its host name (at most [`limits::HOSTNAME`](crate::wire::limits::HOSTNAME) bytes, without
    /// the characters [`is_hidden`](crate::wire::is_hidden) names: they are dropped).
    pub hostname: String,
    /// Its agent software (bounded and cleaned as `hostname` is).
    pub agent: String,
}

/// Links Obico agents through a server's Obico routes.
///
/// ```
/// use lanlink::obico::linker::ObicoLinker;
/// let linker = ObicoLinker::new("http://127.0.0.1:8080", "user-token").unwrap();
/// # let _ = linker;
/// ```
pub struct ObicoLinker {
    client: Client,
    device: crate::http::client::DeviceClient,
    server: String,
    token: Zeroizing<String>,
}

impl std::fmt::Debug for ObicoLinker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObicoLinker")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl ObicoLinker {
    /// A linker for the server at `server` acting with the bearer `token`.
    ///
    /// ```
    /// use lanlink::obico::linker::ObicoLinker;
    /// let linker = ObicoLinker::new("http://127.0.0.1:8080", "user-token-abc")?;
    /// // Debug names the server, never the user's token.
    /// let shown = format!("{linker:?}");
    /// assert!(shown.contains("127.0.0.1:8080") && !shown.contains("user-token-abc"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(server: &str, token: &str) -> Result<Self, TransportError> {
        let client = Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|err| TransportError::Unreachable(err.to_string()))?;
        Ok(Self::with_client(client, server, token))
    }

    /// A linker over `client` (for HTTPS, build it with a TLS feature). `client` carries the
    /// requests to the server only: those to agents go through a client of the crate's, which
    /// follows no redirect.
    ///
    /// ```
    /// use lanlink::obico::linker::ObicoLinker;
    /// let client = lanlink::http::client::default_client()?;
    /// let linker = ObicoLinker::with_client(client, "https://cloud.example/", "user-token");
    /// assert!(format!("{linker:?}").contains(r#"server: "https://cloud.example""#), "the trailing slash is dropped");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_client(client: Client, server: &str, token: &str) -> Self {
        Self {
            client,
            device: Default::default(),
            server: server.trim_end_matches('/').to_owned(),
            token: Zeroizing::new(token.to_owned()),
        }
    }

    fn user(&self, builder: RequestBuilder) -> RequestBuilder {
        builder.header(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", self.token.as_str()),
        )
    }

    /// Lists the Obico agents the server shows this network (none when more than its
    /// `max_visible` are present). Entries with a malformed id or a non-private address are
    /// dropped; names are bounded and hidden characters dropped from them.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use lanlink::obico::linker::ObicoLinker;
    /// let linker = ObicoLinker::new("http://127.0.0.1:8080", "user-token")?;
    /// let devices = linker.discover().await?;
    /// // Only private addresses are ever shown.
    /// assert!(devices.iter().all(|d| lanlink::addr::is_announceable_private_ip(d.host_or_ip)));
    /// # Ok(()) }
    /// ```
    pub async fn discover(&self) -> Result<Vec<ObicoDevice>, TransportError> {
        let request = self.user(self.client.get(format!("{}{DISCOVERY_PATH}", self.server)));
        let Value::Array(items) = exchange(request).await? else {
            return Err(TransportError::Malformed);
        };
        Ok(items
            .iter()
            .filter_map(|item| {
                let device_id = parse_device_id(item.get("device_id")?.as_str()?)?;
                let host_or_ip: IpAddr = item.get("host_or_ip")?.as_str()?.parse().ok()?;
                if !crate::addr::is_announceable_private_ip(host_or_ip) {
                    return None;
                }
                let port = u16::try_from(item.get("port")?.as_u64()?).ok()?;
                // Bounded, hidden characters dropped, as the profile's server keeps them: an
                // Obico server may send any text.
                let text = |name: &str, max: usize| {
                    let raw = item.get(name).and_then(Value::as_str).unwrap_or_default();
                    crate::wire::sanitized(raw, max)
                };
                Some(ObicoDevice {
                    device_id,
                    host_or_ip,
                    port,
                    hostname: text("hostname", crate::wire::limits::HOSTNAME),
                    agent: text("agent", crate::wire::limits::AGENT),
                })
            })
            .collect())
    }

    /// Fetches `device`'s secret from the agent on the LAN.
    pub async fn fetch_secret(&self, device: &ObicoDevice) -> Result<LocalSecret, TransportError> {
        if !crate::addr::is_announceable_private_ip(device.host_or_ip) {
            return Err(TransportError::Refused {
                status: 403,
                code: WireCode::NotPrivateIp,
            });
        }
        let url = format!(
            "http://{}{SECRET_PATH}?device_id={}",
            std::net::SocketAddr::new(device.host_or_ip, device.port),
            device_id(&device.device_id)
        );
        // Never `self.client`: a caller's client may follow redirects.
        let request = self
            .device
            .get()?
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        let mut reply = exchange(request).await?;
        let secret = match reply.get_mut("device_secret") {
            Some(Value::String(text)) => {
                let secret = LocalSecret::from_hex(text);
                zeroize::Zeroize::zeroize(text);
                secret
            }
            _ => None,
        };
        secret.ok_or(TransportError::Malformed)
    }

    /// Asks the server to forward `secret` to `device_id` (`{"queued": true}` on success).
    pub async fn link(
        &self,
        device_id: &InstanceId,
        secret: &LocalSecret,
    ) -> Result<(), TransportError> {
        let hex = secret.to_hex();
        let body = Zeroizing::new(
            serde_json::to_vec(&json!({
                "device_id": super::device_id(device_id),
                "device_secret": hex.as_str(),
            }))
            .map_err(|_| TransportError::Malformed)?,
        );
        let request = self
            .user(self.client.post(format!("{}{DISCOVERY_PATH}", self.server)))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        exchange(request).await.map(drop)
    }

    /// Discovers, takes the first agent shown, fetches its secret and posts the link.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use lanlink::obico::linker::ObicoLinker;
    /// let linker = ObicoLinker::new("http://127.0.0.1:8080", "user-token")?;
    /// let device = linker.link_first().await?;
    /// assert!(lanlink::addr::is_announceable_private_ip(device.host_or_ip));
    /// # Ok(()) }
    /// ```
    pub async fn link_first(&self) -> Result<ObicoDevice, TransportError> {
        let device = self
            .discover()
            .await?
            .into_iter()
            .next()
            .ok_or(TransportError::Refused {
                status: 404,
                code: WireCode::AgentNotFound,
            })?;
        let secret = self.fetch_secret(&device).await?;
        self.link(&device.device_id, &secret).await?;
        Ok(device)
    }

    /// Claims the one-time passcode an agent shows, for this user.
    pub async fn claim_passcode(&self, passcode: &str) -> Result<(), TransportError> {
        let body = Zeroizing::new(
            serde_json::to_vec(&json!({ "one_time_passcode": passcode }))
                .map_err(|_| TransportError::Malformed)?,
        );
        let request = self
            .user(self.client.post(format!("{}{PASSCODES_PATH}", self.server)))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        exchange(request).await.map(drop)
    }
}

/// Sends `request`; a success's JSON body, or a refusal with the `detail` code.
async fn exchange(request: RequestBuilder) -> Result<Value, TransportError> {
    let mut response = request
        .send()
        .await
        .map_err(|err| TransportError::Unreachable(err.without_url().to_string()))?;
    let status = response.status();
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| TransportError::Unreachable(err.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(TransportError::Malformed);
        }
        body.extend_from_slice(&chunk);
    }
    let value = serde_json::from_slice::<Value>(&body).ok();
    if status.is_success() {
        return value.ok_or(TransportError::Malformed);
    }
    let code = value
        .as_ref()
        .and_then(|v| v.get("detail"))
        .and_then(Value::as_str)
        .and_then(WireCode::parse)
        .unwrap_or(WireCode::NoCode);
    Err(TransportError::Refused {
        status: status.as_u16(),
        code,
    })
}
