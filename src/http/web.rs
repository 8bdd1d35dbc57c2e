//! The linking page for browsers (feature `http`): `GET /` and `GET /link` serve a page that
//! lists the devices in linking mode on the user's network, links one with a click, and falls
//! back to a manual code; `GET /lanlink.js` serves the browser linker module it is built on (with
//! its TypeScript types at `/lanlink.d.ts`). Everything is embedded in the crate.
//! It serves embedded files only: it must not hold a credential or reach the server's state, and
//! the page talks to the server's routes like any other client.
//!
//! No router of the crate has a router-wide fallback, so they merge into one another and into a
//! host app that has its own:
//!
//! ```
//! use std::sync::Arc;
//! use lanlink::http::{server, web, BearerTokens, DEFAULT_PREFIX};
//! use lanlink::server::{Server, ServerConfig};
//! let shared = Arc::new(Server::new(ServerConfig::default()).unwrap());
//! let app = server::router(shared, Arc::new(BearerTokens::default()), DEFAULT_PREFIX)
//!     .merge(web::router(DEFAULT_PREFIX));
//! # let _ = app;
//! ```
//!
//! The page talks to the server's user routes under `prefix` on its own origin, with the account
//! credential it is given (the demo page asks for a bearer token and keeps it in memory; see
//! `web/app.js`). Agents must allow the page's origin (`AgentConfig::allow_origin`) for the direct
//! fetch and for their popup page.
//!
//! Every response carries `X-Content-Type-Options: nosniff`; the page also a Content Security
//! Policy (scripts and styles from its own origin only, no frames, connections to its origin and
//! to agents), `Cross-Origin-Opener-Policy: same-origin-allow-popups` (the agent's popup keeps its
//! `window.opener`, other sites' windows do not get one) and `Referrer-Policy: no-referrer`.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode};
use axum::routing::get;
use axum::Router;

/// The browser linker module (`web/lanlink.js`): a dependency-free ES module.
pub const LANLINK_JS: &str = include_str!("../../web/lanlink.js");
/// TypeScript types for [`LANLINK_JS`] (`web/lanlink.d.ts`).
pub const LANLINK_D_TS: &str = include_str!("../../web/lanlink.d.ts");
/// The linking page's template (`web/link.html`); `{{PREFIX}}` stands for the route prefix.
pub const LINK_HTML: &str = include_str!("../../web/link.html");
/// The linking page's controller (`web/app.js`).
pub const APP_JS: &str = include_str!("../../web/app.js");
/// The linking page's styles (`web/link.css`).
pub const LINK_CSS: &str = include_str!("../../web/link.css");

/// The paths the linking page is served at.
pub const PAGE_PATHS: [&str; 2] = ["/", "/link"];

/// The linking page and its assets, for a server whose routes live under `prefix`.
///
/// | route | what |
/// | --- | --- |
/// | `GET /`, `GET /link` | the linking page |
/// | `GET /lanlink.js` | the browser linker module |
/// | `GET /lanlink.d.ts` | its TypeScript types |
/// | `GET /app.js`, `GET /link.css` | the page's controller and styles |
pub fn router(prefix: &str) -> Router {
    let page = page_html(prefix);
    let page_response = move || {
        let page = page.clone();
        async move { page_response(&page) }
    };
    Router::new()
        .route(PAGE_PATHS[0], get(page_response.clone()))
        .route(PAGE_PATHS[1], get(page_response))
        .route(
            "/lanlink.js",
            get(|| async { asset(LANLINK_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/lanlink.d.ts",
            get(|| async { asset(LANLINK_D_TS, "text/plain; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/link.css",
            get(|| async { asset(LINK_CSS, "text/css; charset=utf-8") }),
        )
}

/// The linking page with `prefix` filled in (HTML-escaped).
///
/// ```
/// let page = lanlink::http::web::page_html("/lanlink/v1");
/// assert!(page.contains(r#"<meta name="lanlink-prefix" content="/lanlink/v1">"#));
/// ```
pub fn page_html(prefix: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    let escaped: String = prefix
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect();
    LINK_HTML.replace("{{PREFIX}}", &escaped)
}

/// The Content Security Policy of the linking page: its own scripts and styles only, fetches to
/// its own origin and to agents (plain http on private addresses), never framed.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self' http: https:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn page_response(page: &str) -> Response<Body> {
    let mut response = asset(page, "text/html; charset=utf-8");
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin-allow-popups"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

fn asset(body: &str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_owned()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}
