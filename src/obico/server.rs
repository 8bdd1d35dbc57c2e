//! The Obico profile's axum routes, over a [`Server`] on any store ([`router`],
//! [`router_with_tokens`]), such as one over Redis shared by several processes: a thin
//! shell over the profile's wire function, [`obico::endpoint`](super::endpoint), which holds
//! every rule (routes and their table, statuses, Obico's shapes, body limits, the cross-site
//! rule, the redeem around the hook).
//! It must not decide a status, a limit or a header rule: the profile's wire function does.
//!
//! The routes hand each request's method, target, header lines, socket peer
//! ([`Peer`](crate::http::Peer)) and the state of its body (read only for the routes that take
//! one, within the body limit and [`serve()`](crate::http::serve())'s request deadline) to
//! [`endpoint::handle`], and write its answer as it is. Where a route
//! needs a user, the [`Authenticator`] answers: its account, or its
//! [`Rejection`](crate::http::Rejection) (Obico's `401 {"detail": "unauthorized"}`, or the
//! host's own response). Another HTTP stack that calls the same function answers byte for byte
//! alike (`tests/obico_wire.rs`).
//!
//! The routes cover `/api/v1/` and every path under it (any other is Obico's `404`), and set no
//! router-wide fallback, so they merge with the core's ([`crate::http::server::router`]) to serve
//! both profiles on one server.

use std::future::Future;
use std::sync::Arc;

use axum::routing::any;
use axum::Router;
use chrono::{DateTime, Utc};
use rand::{CryptoRng, RngCore};

use super::endpoint::{self, Profile};
use super::tokens::{MemoryTokens, PrinterTokens};
use super::ObicoConfig;
use crate::http::server::{answer, log_events, Wire};
use crate::http::Authenticator;
use crate::server::endpoint::{Handled, Held, HttpRequest, RequestBody, ServerResponse, User};
use crate::server::{Backend, Server};

pub use super::endpoint::{
    DISCOVERY_PATH, LEGACY_VERIFY_PATH, PASSCODES_PATH, PRINTER_PATH, UNLINKED_PATH, VERIFY_PATH,
};

struct App<S> {
    server: Arc<Server<S>>,
    auth: Arc<dyn Authenticator>,
    tokens: Arc<dyn PrinterTokens>,
    obico: ObicoConfig,
}

/// The Obico routes over `server` (on any store), recognising linked printers in memory
/// ([`MemoryTokens`]). Refuses an invalid `obico` configuration.
///
/// ```
/// use std::sync::Arc;
/// use lanlink::http::BearerTokens;
/// use lanlink::obico::{server::router, ObicoConfig};
/// use lanlink::server::{Server, ServerConfig};
/// let server = Arc::new(Server::new(ServerConfig::default()).unwrap());
/// let app = router(server, Arc::new(BearerTokens::default()), ObicoConfig::default()).unwrap();
/// # let _ = app;
/// ```
pub fn router<S: Backend + 'static>(
    server: Arc<Server<S>>,
    auth: Arc<dyn Authenticator>,
    obico: ObicoConfig,
) -> Result<Router, crate::ConfigError> {
    router_with_tokens(server, auth, obico, Arc::new(MemoryTokens::default()))
}

/// The Obico routes over `server` (on any store: over a
/// [`RedisStore`](crate::server::redis::RedisStore) several processes act as one server),
/// recognising linked printers in `tokens`. Events the server
/// [queues](crate::server::Events::queue) are logged after each request; give a server over a
/// shared store [`Events::sink`](crate::server::Events::sink)`(`[`log_event`](crate::http::server::log_event)`)`.
///
/// ```
/// use std::sync::Arc;
/// use lanlink::http::{server::log_event, BearerTokens};
/// use lanlink::obico::{server::router_with_tokens, tokens::MemoryTokens, ObicoConfig};
/// use lanlink::server::{Events, MemoryStore, Server, ServerConfig};
/// let store = Arc::new(MemoryStore::default());
/// let server = Server::with_store(ServerConfig::default(), store, Events::sink(log_event)).unwrap();
/// let tokens = Arc::new(MemoryTokens::default());
/// let app = router_with_tokens(Arc::new(server), Arc::new(BearerTokens::default()), ObicoConfig::default(), tokens);
/// assert!(app.is_ok());
/// ```
pub fn router_with_tokens<S: Backend + 'static>(
    server: Arc<Server<S>>,
    auth: Arc<dyn Authenticator>,
    obico: ObicoConfig,
    tokens: Arc<dyn PrinterTokens>,
) -> Result<Router, crate::ConfigError> {
    obico.validate()?;
    let app = Arc::new(App {
        server,
        auth,
        tokens,
        obico,
    });
    // Every method of every path under Obico's API goes to the wire function (which answers 405
    // with `Allow`, and 404).
    Ok(Router::new()
        .route("/api/v1/", any(answer::<App<S>>))
        .route("/api/v1/{*rest}", any(answer::<App<S>>))
        .with_state(app))
}

impl<S: Backend + 'static> Wire for App<S> {
    fn reads_body(&self, request: &HttpRequest<'_>) -> bool {
        endpoint::reads_body(request.method, request.path)
    }

    fn handle<'a, R: CryptoRng + RngCore + Send>(
        &'a self,
        now: DateTime<Utc>,
        rng: &'a mut R,
        request: &'a HttpRequest<'a>,
        body: RequestBody<'a>,
        user: Option<&'a User>,
    ) -> impl Future<Output = Handled> + Send + 'a {
        let profile = Profile::new(&*self.server, &*self.tokens, &self.obico);
        endpoint::handle(profile, now, rng, request, body, user)
    }

    fn resume<'a>(
        &'a self,
        now: DateTime<Utc>,
        held: &'a Held,
    ) -> impl Future<Output = Option<ServerResponse>> + Send + 'a {
        crate::server::endpoint::resume(&*self.server, now, held)
    }

    fn unauthorized(&self) -> ServerResponse {
        endpoint::unauthorized()
    }

    fn authenticator(&self) -> &dyn Authenticator {
        &*self.auth
    }

    fn answered(&self) {
        log_events(&self.server, "lanlink::obico");
    }
}
