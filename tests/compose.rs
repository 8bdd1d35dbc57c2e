//! The crate's routers compose with a host app that has its own routes and fallback: merged
//! beside it or nested inside it, lanlink answers its own paths (and its JSON 404 only under its
//! own prefix), and the host answers everything else.
#![cfg(feature = "http")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use lanlink::agent::{Agent, AgentConfig};
use lanlink::http::{self, BearerTokens, Peer, DEFAULT_PREFIX};
use lanlink::server::{Server, ServerConfig};
use lanlink::DeviceInfo;
use tower::ServiceExt;

fn lanlink_server() -> Router {
    let server = Arc::new(Server::new(ServerConfig::default()).unwrap());
    http::server::router(server, Arc::new(BearerTokens::default()), DEFAULT_PREFIX)
        .merge(http::web::router(DEFAULT_PREFIX))
}

fn lanlink_agent() -> Router {
    let config = AgentConfig::new("192.168.1.50".parse().unwrap(), 8080, DeviceInfo::default());
    let agent = Agent::new(config, Instant::now(), &mut lanlink::os_rng()).unwrap();
    http::agent::router(Arc::new(Mutex::new(agent)), DEFAULT_PREFIX)
}

fn host() -> Router {
    Router::new()
        .route("/account", get(|| async { "host account page" }))
        .fallback(|| async { (StatusCode::IM_A_TEAPOT, "host fallback") })
}

async fn call(app: &Router, method: &str, path: &str) -> (StatusCode, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .body(Body::empty())
        .unwrap();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    request.extensions_mut().insert(Peer(peer));
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn merged_beside_a_host_app_with_its_own_fallback() {
    let app = host().merge(lanlink_server());
    assert_eq!(
        call(&app, "GET", "/account").await,
        (StatusCode::OK, "host account page".into())
    );
    assert_eq!(
        call(&app, "GET", "/elsewhere").await.0,
        StatusCode::IM_A_TEAPOT
    );
    // lanlink's own routes, and its JSON answers under its prefix.
    let (status, body) = call(&app, "GET", &format!("{DEFAULT_PREFIX}/discover")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = call(&app, "GET", &format!("{DEFAULT_PREFIX}/no-such-route")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#)
    );
    let (status, body) = call(&app, "DELETE", &format!("{DEFAULT_PREFIX}/codes")).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"method_not_allowed"}"#
        )
    );
    assert_eq!(call(&app, "GET", "/lanlink.js").await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_agent_endpoint_merges_beside_a_host_app_too() {
    let app = host().merge(lanlink_agent());
    assert_eq!(
        call(&app, "GET", "/elsewhere").await.0,
        StatusCode::IM_A_TEAPOT
    );
    let (status, body) = call(&app, "GET", &format!("{DEFAULT_PREFIX}/nope")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#)
    );
    // Its own route answers (a wrong instance here).
    let (status, _) = call(
        &app,
        "GET",
        &format!("{DEFAULT_PREFIX}/secret?instance_id=x"),
    )
    .await;
    assert_ne!(status, StatusCode::IM_A_TEAPOT);
}

#[tokio::test]
async fn nested_inside_a_host_app_with_its_own_fallback() {
    let app = host().nest("/cloud", lanlink_server());
    assert_eq!(call(&app, "GET", "/account").await.0, StatusCode::OK);
    let (status, body) = call(
        &app,
        "GET",
        &format!("/cloud{DEFAULT_PREFIX}/no-such-route"),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#)
    );
    assert_eq!(
        call(&app, "GET", &format!("/cloud{DEFAULT_PREFIX}/discover"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // Paths under the nest but outside lanlink's prefix are the host's.
    assert_eq!(
        call(&app, "GET", "/cloud/other").await.0,
        StatusCode::IM_A_TEAPOT
    );
    assert_eq!(
        call(&app, "GET", "/elsewhere").await.0,
        StatusCode::IM_A_TEAPOT
    );
}

/// What the host's own session layer (a middleware) puts in each request's extensions.
#[derive(Clone)]
struct SignedIn(lanlink::AccountId);

/// Authenticates from the host's session, and answers with the host's own redirect when there
/// is none: no header parsed by hand.
struct HostSessions;

#[async_trait::async_trait]
impl lanlink::http::Authenticator for HostSessions {
    async fn authenticate(
        &self,
        parts: &axum::http::request::Parts,
    ) -> Result<lanlink::AccountId, lanlink::http::Rejection> {
        match parts.extensions.get::<SignedIn>() {
            Some(SignedIn(account)) => Ok(account.clone()),
            None => {
                let mut redirect = axum::http::Response::new(Body::empty());
                *redirect.status_mut() = StatusCode::SEE_OTHER;
                redirect
                    .headers_mut()
                    .insert("location", "/sign-in".parse().unwrap());
                Err(lanlink::http::Rejection::Response(redirect))
            }
        }
    }
}

#[tokio::test]
async fn the_authenticator_reuses_the_hosts_session_layer_and_rejection() {
    let server = Arc::new(Server::new(ServerConfig::default()).unwrap());
    let lanlink = http::server::router(server, Arc::new(HostSessions), DEFAULT_PREFIX);
    // The host's session middleware: a cookie `session=alice` signs alice in.
    let app = host().merge(lanlink).layer(axum::middleware::from_fn(
        |mut request: Request<Body>, next: axum::middleware::Next| async move {
            let signed_in = request
                .headers()
                .get("cookie")
                .is_some_and(|c| c.as_bytes() == b"session=alice");
            if signed_in {
                let alice = lanlink::AccountId::new("alice").unwrap();
                request.extensions_mut().insert(SignedIn(alice));
            }
            next.run(request).await
        },
    ));
    let discover = format!("{DEFAULT_PREFIX}/discover");
    // Not signed in: the host's own answer.
    let (status, _) = call(&app, "GET", &discover).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // Signed in through the host's session: served.
    let mut request = Request::builder()
        .uri(&discover)
        .header("cookie", "session=alice")
        .body(Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(Peer("203.0.113.7:4000".parse().unwrap()));
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// The linker client with a session cookie instead of a bearer token, against the host's
/// session layer over real loopback HTTP: discovery is served with the cookie, and without it
/// the host's redirect comes back as a refusal.
#[tokio::test]
async fn the_linker_client_takes_a_cookie_credential() {
    use lanlink::http::client::{Credential, HttpLinkerClient};
    use lanlink::transport::{LinkerServerTransport, TransportError};
    let server = Arc::new(Server::new(ServerConfig::default()).unwrap());
    let app = http::server::router(server, Arc::new(HostSessions), DEFAULT_PREFIX).layer(
        axum::middleware::from_fn(
            |mut request: Request<Body>, next: axum::middleware::Next| async move {
                if request
                    .headers()
                    .get("cookie")
                    .is_some_and(|c| c.as_bytes() == b"session=alice")
                {
                    let alice = lanlink::AccountId::new("alice").unwrap();
                    request.extensions_mut().insert(SignedIn(alice));
                }
                next.run(request).await
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(http::serve(
        listener,
        app,
        http::ServeConfig::default(),
        std::future::pending(),
    ));
    let client = || {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    let cookie = Credential::Cookie("session=alice".to_owned().into());
    let signed_in =
        HttpLinkerClient::with_credential(client(), &base, DEFAULT_PREFIX, DEFAULT_PREFIX, cookie);
    assert!(signed_in.discover().await.unwrap().agents.is_empty());
    let anonymous = HttpLinkerClient::with_credential(
        client(),
        &base,
        DEFAULT_PREFIX,
        DEFAULT_PREFIX,
        Credential::None,
    );
    assert_eq!(
        anonymous.discover().await.unwrap_err(),
        TransportError::Refused {
            status: 303,
            code: lanlink::WireCode::NoCode
        }
    );
}
