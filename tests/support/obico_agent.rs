//! An Obico agent written from the wire description (HTTP polling of `/api/v1/octo/unlinked/`, a
//! 32-hex `device_id`, the `grab-discovery-secret` endpoint, `verify_code` handling as the agents
//! do it, and the `/api/v1/octo/verify/` call), shared by the Obico test files.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Response, StatusCode};
use axum::routing::get;
use axum::Router;
use lanlink::http::{serve, Peer, ServeConfig};
use lanlink::obico;
use lanlink::InstanceId;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The trusted proxy every emulated client connects from.
pub const PROXY: &str = "127.0.0.2";
/// How often the test agents poll (the real ones: 2 s or 5 s; the sans-IO tests use those); more
/// than the server's minimum poll gap (1 s).
pub const POLL: Duration = Duration::from_millis(1100);
/// How long a test waits for anything.
pub const LIMIT: Duration = Duration::from_secs(10);
/// How long one request may take: longer than [`LIMIT`], because a burst of hundreds of
/// requests on a loaded 2-core machine (the whole suite running) can keep one queued that long,
/// and a slow answer is not what the burst tests check.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(60);

/// An IP address literal.
pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// An HTTP client whose requests come from `from` and, if `network` is given, name it in
/// `X-Forwarded-For`.
pub fn client(from: &str, network: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(network) = network {
        headers.insert("x-forwarded-for", network.parse().unwrap());
    }
    reqwest::Client::builder()
        .local_address(ip(from))
        .default_headers(headers)
        .no_proxy()
        .timeout(REQUEST_LIMIT)
        .build()
        .unwrap()
}

/// A request with a JSON body.
pub fn with_json(request: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    request
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
}

/// A response body as JSON.
pub async fn json_of(response: reqwest::Response) -> Result<Value, ()> {
    let bytes = response.bytes().await.map_err(drop)?;
    serde_json::from_slice(&bytes).map_err(drop)
}

// ───────────────────────── the Obico agent, from the wire description ─────────────────────────

/// Which agent to play.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// OctoPrint-Obico: no passcode; acts on every message; any 4xx on a poll ends discovery.
    OctoPrint,
    /// moonraker-obico: sends `one_time_passcode`; acts only when exactly one message arrives.
    Moonraker,
}

#[derive(Default)]
/// What an agent did.
pub struct AgentState {
    pub discovering: bool,
    pub stopped: Option<String>,
    pub auth_token: Option<String>,
    pub verified: Option<Value>,
    pub passcode: String,
    pub polls: usize,
    /// While set, the agent does not poll.
    pub paused: bool,
    /// The `host_or_ip` it reports (default 127.0.0.1, where its secret endpoint listens).
    pub host_or_ip: Option<String>,
}

#[derive(Clone)]
/// An Obico agent (OctoPrint-Obico or moonraker-obico), as the tests play it.
pub struct ObicoAgent {
    pub device_id: String,
    pub secret: String,
    pub flavour: Flavour,
    pub server: String,
    pub http: reqwest::Client,
    pub port: u16,
    pub state: Arc<Mutex<AgentState>>,
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ObicoAgent {
    /// Starts the agent's secret endpoint on 127.0.0.1 and its poll loop from `network`.
    pub async fn start(server: &str, network: &str, flavour: Flavour) -> Self {
        let mut rng = lanlink::os_rng();
        let device_id = obico::device_id(&InstanceId::generate(&mut rng));
        Self::start_as(server, network, flavour, device_id).await
    }

    pub async fn start_as(
        server: &str,
        network: &str,
        flavour: Flavour,
        device_id: String,
    ) -> Self {
        Self::start_from(server, Some(network), flavour, device_id).await
    }

    /// Starts an agent whose polls name `network` in `X-Forwarded-For`, or name none.
    pub async fn start_from(
        server: &str,
        network: Option<&str>,
        flavour: Flavour,
        device_id: String,
    ) -> Self {
        Self::start_full(server, network, flavour, device_id, "127.0.0.1").await
    }

    /// Starts an agent on another private host: its secret endpoint listens on `host` (a
    /// loopback address such as 127.0.0.3) and its polls report it as `host_or_ip`.
    pub async fn start_on(server: &str, network: &str, flavour: Flavour, host: &str) -> Self {
        let device_id = obico::device_id(&InstanceId::generate(&mut lanlink::os_rng()));
        Self::start_full(server, Some(network), flavour, device_id, host).await
    }

    async fn start_full(
        server: &str,
        network: Option<&str>,
        flavour: Flavour,
        device_id: String,
        host: &str,
    ) -> Self {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut lanlink::os_rng(), &mut bytes);
        let listener = TcpListener::bind((ip(host), 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let agent = Self {
            device_id,
            secret: hex(&bytes),
            flavour,
            server: server.to_owned(),
            http: client(PROXY, network),
            port,
            state: Arc::new(Mutex::new(AgentState {
                discovering: true,
                host_or_ip: Some(host.to_owned()),
                ..AgentState::default()
            })),
        };
        let app = Router::new()
            .route("/plugin/obico/grab-discovery-secret", get(grab_secret))
            .with_state(agent.clone());
        tokio::spawn(serve(
            listener,
            app,
            ServeConfig::default(),
            std::future::pending(),
        ));
        let poller = agent.clone();
        tokio::spawn(async move { poller.poll_loop().await });
        agent
    }

    pub fn state<T>(&self, f: impl FnOnce(&mut AgentState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn stop(&self, why: &str) {
        self.state(|s| {
            s.discovering = false;
            s.stopped.get_or_insert_with(|| why.to_owned());
        });
    }

    pub fn body(&self) -> Value {
        let mut body = json!({
            "device_id": self.device_id,
            "hostname": "voron",
            "host_or_ip": self.state(|s| s.host_or_ip.clone()).unwrap_or_else(|| "127.0.0.1".into()),
            "port": self.port,
            "os": "Linux",
            "arch": "aarch64",
            "rpi_model": "Raspberry Pi 4 Model B Rev 1.4",
            "plugin_version": "2.5.0",
            "agent": if self.flavour == Flavour::OctoPrint { "Obico for OctoPrint" } else { "moonraker_obico" },
            "printerprofile": "Unknown",
            "machine_type": "Klipper",
        });
        if self.flavour == Flavour::Moonraker {
            body["one_time_passcode"] = self.state(|s| s.passcode.clone()).into();
            body["meta"] = json!({"k": "v"});
        }
        body
    }

    pub async fn poll_loop(&self) {
        while self.state(|s| s.discovering) {
            if !self.state(|s| s.paused) {
                self.poll_once().await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn poll_once(&self) {
        let url = format!("{}/api/v1/octo/unlinked/", self.server);
        let Ok(response) = with_json(self.http.post(url), &self.body()).send().await else {
            return;
        };
        self.state(|s| s.polls += 1);
        let status = response.status();
        if status.is_client_error() {
            if self.flavour == Flavour::OctoPrint {
                self.stop(&format!("poll refused {status}"));
            }
            return;
        }
        let Ok(data) = json_of(response).await else {
            return;
        };
        if self.flavour == Flavour::Moonraker {
            if let (Some(Value::String(passcode)), Some(Value::String(verification))) =
                (data.get("one_time_passcode"), data.get("verification_code"))
            {
                if !verification.is_empty() {
                    self.verify(&verification.clone()).await;
                    self.stop("verified by passcode");
                    return;
                }
                self.state(|s| s.passcode = passcode.clone());
            }
        }
        let messages = data["messages"].as_array().cloned().unwrap_or_default();
        if self.flavour == Flavour::Moonraker && messages.len() != 1 {
            return;
        }
        for message in messages {
            if message["type"] != "verify_code" {
                continue;
            }
            if message["data"]["secret"].as_str() != Some(self.secret.as_str()) {
                self.stop("unmatching secret");
                return;
            }
            if message["device_id"].as_str() != Some(self.device_id.as_str()) {
                self.stop("unmatching device_id");
                return;
            }
            let code = message["data"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            self.verify(&code).await;
            self.stop("verified");
            return;
        }
    }

    /// `POST /api/v1/octo/verify/?code=…`: stores `printer.auth_token` on success.
    pub async fn verify(&self, code: &str) -> (StatusCode, Value) {
        let encoded: String = code
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let url = format!("{}/api/v1/octo/verify/?code={encoded}", self.server);
        let response = self.http.post(url).send().await.unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let body: Value = json_of(response).await.unwrap_or(Value::Null);
        if status == StatusCode::OK {
            let token = body["printer"]["auth_token"].as_str().map(str::to_owned);
            self.state(|s| {
                s.auth_token = token;
                s.verified = Some(body.clone());
            });
        }
        (status, body)
    }

    pub fn token(&self) -> Option<String> {
        self.state(|s| s.auth_token.clone())
    }

    pub fn stopped(&self) -> Option<String> {
        self.state(|s| s.stopped.clone())
    }

    pub fn instance(&self) -> InstanceId {
        obico::parse_device_id(&self.device_id).unwrap()
    }
}

/// The agents' secret page: 403 unless discovering, the caller is local (the socket peer; this
/// agent does not read `X-Forwarded-For`), and `device_id` matches; JSON for `Accept: application/json`.
pub async fn grab_secret(State(agent): State<ObicoAgent>, request: Request) -> Response<Body> {
    let peer = request.extensions().get::<Peer>().map(|p| p.0.ip());
    let local = peer.is_some_and(|p| p.is_loopback());
    let query = request.uri().query().unwrap_or_default().to_owned();
    let wanted = format!("device_id={}", agent.device_id);
    let json = request
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if !(agent.state(|s| s.discovering) && local && query == wanted && json) {
        return Response::builder()
            .status(StatusCode::FORBIDDEN)
            .body(Body::empty())
            .unwrap();
    }
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(
            json!({ "device_secret": agent.secret }).to_string(),
        ))
        .unwrap()
}
