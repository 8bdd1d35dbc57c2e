// (937 lines, 486 of them docs and doc examples: one concern, because it is the kit's shared report, targets and credentials; each kit is a file of its own.)
//! A conformance kit (feature `conformance`): checks a lanlink server, or an agent's local
//! endpoint, against `PROTOCOL.md` over the network, as a black-box client, and reports one
//! line per check.
//! It must not reach behind the interface it checks: it speaks HTTP over the network, hands
//! requests to an MQTT consumer, and calls a store through the [`Store`](crate::server::Store)
//! trait, never the crate's functions behind them, so that its verdict holds for any stack.
//!
//! For embedders who serve the server's routes or the agent's endpoint on another stack (their
//! own web framework, another language): point the kit at it and it says, check by check, where
//! the answers differ from `PROTOCOL.md`. The crate's own adapters pass every check
//! (`tests/conformance.rs`), and deliberately wrong ones fail the checks they break.
//!
//! - [`check_server`] plays an agent (fresh presence keys and secrets, made with the crate's own
//!   types) and a linker (with an account's [`Credential`]) against a server: every route, the
//!   refusals a client can provoke, the body limits, the JSON and `Cache-Control` rules, the
//!   lockout, and the held requests of revision 1.6 (`server.hold.*`: timed, so they take a few
//!   seconds; skipped, never failed, for a server whose announce reply states an older
//!   revision). See [`SERVER_CHECKS`].
//! - [`check_agent_endpoint`] talks raw HTTP/1.1 to an agent's local endpoint (repeated and
//!   missing headers, odd `Host` values, `HEAD`, CORS preflights, the popup page). See
//!   [`ENDPOINT_CHECKS`].
//! - [`check_mqtt`] plays agents against a server's MQTT consumer, through any
//!   [`MqttConsumer`] (one request's topic and payload in, the reply it publishes out): tickets
//!   it signs with the servers' key (good, forged, expired, another instance's), topics, sizes,
//!   strict decoding, correlation ids, and a redemption of a code the caller minted. See
//!   [`MQTT_CHECKS`]. The core's consumer function ([`crate::server::mqtt::handle_up`]) is
//!   checked with no broker at all.
//!
//! - [`store::check_store`] checks a [`Store`](crate::server::Store) (the opaque keys and
//!   bytes a database holds for a server) against its contract, in process, as a caller: loads,
//!   the all-or-nothing compare-and-swap, races of concurrent callers, expiry. See
//!   [`store::STORE_CHECKS`].
//!
//! Each returns a [`Report`]: a [`Check`] per entry of its catalog, in catalog order, each
//! [passed, failed or skipped](Outcome), printed one per line by its `Display`:
//!
//! ```text
//! PASS server.link.wrong_secret  403 wrong_secret
//! FAIL endpoint.secret.head  expected 405 (HEAD refused); got 200
//! SKIP server.link_status.other_account  no second account given
//! ```
//!
//! The example `examples/conformance.rs` is the command-line front end
//! (`cargo run --example conformance --features conformance -- --help`).
//!
//! # What running it does to the target
//!
//! Against a **server**, the kit announces about twenty short-lived agents from its own public
//! network (each gone one presence lifetime, 6 s by default, after its last announcement), links
//! one of them to the account and redeems its code (one linked device on the account, with a
//! token the kit throws away; two against a server of revision 1.6, whose held announcement a
//! second link answers), redeems one manual code the same way, and fills its network's
//! record to `network_full` as the very last check. It makes five wrong guesses (a wrong
//! secret, an instance not present, the used secret again, the used code again, an unknown
//! code; more if the lockout threshold it is given is higher), so **its network is locked out
//! for the lockout duration (10 minutes by default) afterwards**, and the last guess check
//! confirms it. A second run from the same network within that time finds the lockout and
//! reports the guess checks as skipped, not failed. With a second account's credential, that
//! account is left holding its most live manual codes (the mint quota) until they expire
//! (10 minutes). The cross-site checks send link requests the server must refuse before reading
//! them (their bodies are malformed anyway, so a server that lets them through changes nothing),
//! and one mint with another site's `Origin`: a server that fails that check mints one code for
//! the account. Run it against a test deployment, not a production one.
//!
//! Against an **MQTT consumer**, the kit announces a few short-lived agents on its ticket
//! network ([`MqttTarget::network`]), redeems the code it is given (one linked device on that
//! code's account, with a token the kit throws away), and makes two wrong guesses there (the
//! used code again, an unknown code), which count toward that network's lockout.
//!
//! Against an **agent's endpoint**, the kit fetches the secret three times (as any caller on
//! the LAN could; it never sends it anywhere), so the agent records `SecretServed` events, and
//! every refused request records a `SecretRefused` event. Nothing else changes: serving the
//! secret ends neither the window nor discovery (`Agent::handle_secret_request`), so the order
//! of the endpoint checks does not matter to the agent.
//!
//! # What it cannot check
//!
//! Refusals a client on one network cannot provoke in a test run are not in the catalogs:
//! `unresolvable_client` (needs a trusted proxy that names no client), `window_over` (an
//! announcement older than 10 minutes), `codes_suspended` (1,000 wrong guesses from all
//! networks), `code_space_exhausted`, `store_unavailable` and `store_contention` (server faults),
//! and at the agent `not_discovering`, `window_expired` and `not_local` (the kit calls from the
//! agent's own LAN while it discovers). `408 request_timeout` is checked only when told the
//! server's request deadline ([`ServerTarget::request_timeout`]), as it takes that long. Over
//! MQTT, the kit checks what a consumer answers, not how it is connected: the broker's ACL,
//! QoS 1, the shared subscription and the `wake` after an HTTP link are not in [`MQTT_CHECKS`]
//! (`tests/mqtt.rs` runs those against a real broker).

#![allow(clippy::result_large_err)]

mod endpoint;
mod mqtt;
mod raw;
mod reply;
mod server;
pub mod store;
mod store_records;

use std::fmt;
use std::time::Duration;

use crate::addr::PublicNetwork;
use crate::code::LinkCode;
use crate::http::client::Credential;
use crate::http::DEFAULT_PREFIX;
use crate::id::InstanceId;
use crate::server::mqtt::DEFAULT_TOPIC_PREFIX;
use crate::ticket::TicketKey;

pub use self::endpoint::ENDPOINT_CHECKS;
pub use self::mqtt::MQTT_CHECKS;
pub use self::server::SERVER_CHECKS;

/// One entry of a catalog ([`SERVER_CHECKS`], [`ENDPOINT_CHECKS`]): what is checked and what
/// `PROTOCOL.md` says the answer is.
///
/// ```
/// use lanlink::conformance::store::STORE_CHECKS;
/// let spec = STORE_CHECKS.iter().find(|c| c.id == "store.value.empty").unwrap();
/// assert!(spec.expects.contains("Some, not None"));
/// // Names are unique within a catalog.
/// assert!(STORE_CHECKS.iter().filter(|c| c.id == spec.id).count() == 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSpec {
    /// The stable name of the check, e.g. `"server.link.wrong_secret"`.
    pub id: &'static str,
    /// The `PROTOCOL.md` section the expectation comes from, e.g. ``"`POST {prefix}/link`"``.
    pub section: &'static str,
    /// The expected answer, in words, e.g. `"403 wrong_secret"`.
    pub expects: &'static str,
}

/// How one check went.
///
/// ```
/// # use std::sync::Arc;
/// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
/// # use lanlink::server::MemoryBytes;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let now = lanlink::chrono::Utc::now();
/// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
/// // The in-memory store keeps the whole contract: every check passed.
/// for check in report.checks() {
///     assert!(matches!(check.outcome, lanlink::conformance::Outcome::Pass { .. }), "{check}");
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The answer was as `PROTOCOL.md` says.
    Pass {
        /// What was seen, in short (`"403 wrong_secret"`).
        got: String,
    },
    /// The answer was not as `PROTOCOL.md` says.
    Fail {
        /// What was seen instead, and where it differs.
        got: String,
    },
    /// The check could not be made.
    Skipped {
        /// Why not (a missing option, a lockout the kit provoked, a step it depends on that did
        /// not pass).
        why: String,
    },
}

/// One check of a [`Report`].
///
/// ```
/// # use std::sync::Arc;
/// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
/// # use lanlink::server::MemoryBytes;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// # let now = lanlink::chrono::Utc::now();
/// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
/// let check = report.get("store.value.large").unwrap();
/// assert_eq!(check.id, "store.value.large");
/// assert!(check.to_string().starts_with("PASS store.value.large  "));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The stable name of the check (see [`CheckSpec::id`]).
    pub id: &'static str,
    /// The `PROTOCOL.md` section it checks.
    pub section: &'static str,
    /// The expected answer, in words.
    pub expects: &'static str,
    /// How it went.
    pub outcome: Outcome,
}

impl Check {
    /// Whether the check passed.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
    /// # use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let now = lanlink::chrono::Utc::now();
    /// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
    /// assert!(report.checks().iter().all(|c| c.passed() && !c.failed() && !c.skipped()));
    /// # }
    /// ```
    pub fn passed(&self) -> bool {
        matches!(self.outcome, Outcome::Pass { .. })
    }

    /// Whether the check failed.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
    /// # use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let now = lanlink::chrono::Utc::now();
    /// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
    /// assert!(!report.checks().iter().any(|c| c.failed()));
    /// # }
    /// ```
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Fail { .. })
    }

    /// Whether the check was skipped.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
    /// # use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let now = lanlink::chrono::Utc::now();
    /// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
    /// assert_eq!(report.checks().iter().filter(|c| c.skipped()).count(), 0);
    /// # }
    /// ```
    pub fn skipped(&self) -> bool {
        matches!(self.outcome, Outcome::Skipped { .. })
    }
}

impl fmt::Display for Check {
    /// One line: `PASS id  got`, `FAIL id  expected …; got …` or `SKIP id  why`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Pass { got } => write!(f, "PASS {}  {got}", self.id),
            Outcome::Fail { got } => {
                write!(f, "FAIL {}  expected {}; got {got}", self.id, self.expects)
            }
            Outcome::Skipped { why } => write!(f, "SKIP {}  {why}", self.id),
        }
    }
}

/// The checks of one run, in catalog order. `Display` prints one line per check.
///
/// ```
/// use lanlink::conformance::Report;
/// let report = Report::default();
/// assert!(report.passed() && report.complete());
/// assert_eq!(report.to_string(), "");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    checks: Vec<Check>,
}

impl Report {
    /// Every check, in catalog order.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
    /// # use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let now = lanlink::chrono::Utc::now();
    /// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
    /// // One check per catalog entry, in catalog order.
    /// let ids: Vec<&str> = report.checks().iter().map(|c| c.id).collect();
    /// let catalog: Vec<&str> = STORE_CHECKS.iter().map(|c| c.id).collect();
    /// assert_eq!(ids, catalog);
    /// # }
    /// ```
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// The check named `id`, if the report holds it.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
    /// # use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let now = lanlink::chrono::Utc::now();
    /// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
    /// assert!(report.get("store.expiry.kept").is_some_and(|c| c.passed()));
    /// assert!(report.get("no.such.check").is_none());
    /// # }
    /// ```
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// Whether no check failed. A check the kit could not make fails, unless the caller opted
    /// out of it by name ([`ServerTarget::opt_out`], [`EndpointTarget::opt_out`],
    /// [`MqttTarget::opt_out`]): only those
    /// are skipped (see [`Report::complete`]).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
    /// # use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let now = lanlink::chrono::Utc::now();
    /// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
    /// assert!(report.passed());
    /// # }
    /// ```
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(Check::failed)
    }

    /// Whether every check passed: none failed and none was skipped.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
    /// # use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let now = lanlink::chrono::Utc::now();
    /// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
    /// assert!(report.complete(), "{report}");
    /// # }
    /// ```
    pub fn complete(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    /// The names of the failed checks, in order.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
    /// # use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let now = lanlink::chrono::Utc::now();
    /// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
    /// assert!(report.failed_ids().is_empty());
    /// # }
    /// ```
    pub fn failed_ids(&self) -> Vec<&'static str> {
        self.ids_where(Check::failed)
    }

    /// The names of the skipped checks, in order.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
    /// # use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let now = lanlink::chrono::Utc::now();
    /// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
    /// assert!(report.skipped_ids().is_empty());
    /// # }
    /// ```
    pub fn skipped_ids(&self) -> Vec<&'static str> {
        self.ids_where(Check::skipped)
    }

    fn ids_where(&self, which: impl Fn(&Check) -> bool) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| which(c))
            .map(|c| c.id)
            .collect()
    }

    /// `"N passed, N failed, N skipped"`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
    /// # use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let now = lanlink::chrono::Utc::now();
    /// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
    /// assert_eq!(report.summary(), format!("{} passed, 0 failed, 0 skipped", STORE_CHECKS.len()));
    /// # }
    /// ```
    pub fn summary(&self) -> String {
        let count = |which: fn(&Check) -> bool| self.checks.iter().filter(|c| which(c)).count();
        format!(
            "{} passed, {} failed, {} skipped",
            count(Check::passed),
            count(Check::failed),
            count(Check::skipped)
        )
    }

    /// This report followed by `other`'s checks (a server and an endpoint run as one).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lanlink::conformance::store::{StoreSuite, STORE_CHECKS};
    /// # use lanlink::server::MemoryBytes;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let now = lanlink::chrono::Utc::now();
    /// # let report = StoreSuite::new().racers(2).rounds(1).run(Arc::new(MemoryBytes::default()), now).await;
    /// let both = report.clone().merge(report.clone());
    /// assert_eq!(both.checks().len(), 2 * report.checks().len());
    /// assert_eq!(report.clone().merge(lanlink::conformance::Report::default()), report);
    /// # }
    /// ```
    pub fn merge(mut self, other: Report) -> Report {
        self.checks.extend(other.checks);
        self
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(f, "{check}")?;
        }
        Ok(())
    }
}

/// Collects outcomes by check name, and builds the report in catalog order.
struct Recorder {
    catalog: &'static [CheckSpec],
    outcomes: Vec<(&'static str, Outcome)>,
    /// The checks the caller opted out of by name: the only ones a report may leave unrun.
    opted_out: Vec<String>,
    /// The checks of a revision newer than the target states ([`Recorder::not_applicable`]):
    /// skipped, not failed.
    not_applicable: Vec<&'static str>,
}

/// A check's verdict before it is recorded: what was seen, as a pass or a failure.
type Verdict = Result<String, String>;

impl Recorder {
    fn new(catalog: &'static [CheckSpec], opted_out: &[String]) -> Self {
        Self {
            catalog,
            outcomes: Vec::new(),
            opted_out: opted_out.to_vec(),
            not_applicable: Vec::new(),
        }
    }

    /// Skips check `id` because the target states a revision older than the one that brought
    /// what it checks: the target keeps to its own revision, so the check stays skipped in the
    /// report (never a failure), and the report is not [complete](Report::complete).
    fn not_applicable(&mut self, id: &'static str, why: impl Into<String>) {
        if !self.has(id) {
            self.not_applicable.push(id);
        }
        self.skip(id, why);
    }

    /// Whether the caller opted out of check `id` (it is then not run where it would cost time
    /// or state, and an unrun one is not a failure).
    fn opted_out(&self, id: &str) -> bool {
        self.opted_out.iter().any(|out| out == id)
    }

    /// Records `outcome` for `id` (the first outcome recorded for a check stands).
    fn set(&mut self, id: &'static str, outcome: Outcome) {
        debug_assert!(
            self.catalog.iter().any(|c| c.id == id),
            "{id} is not in the catalog"
        );
        if !self.has(id) {
            self.outcomes.push((id, outcome));
        }
    }

    fn has(&self, id: &str) -> bool {
        self.outcomes.iter().any(|(i, _)| *i == id)
    }

    fn verdict(&mut self, id: &'static str, verdict: Verdict) -> bool {
        let passed = verdict.is_ok();
        self.set(
            id,
            match verdict {
                Ok(got) => Outcome::Pass { got },
                Err(got) => Outcome::Fail { got },
            },
        );
        passed
    }

    fn skip(&mut self, id: &'static str, why: impl Into<String>) {
        self.set(id, Outcome::Skipped { why: why.into() });
    }

    fn skip_all(&mut self, ids: &[&'static str], why: &str) {
        for id in ids {
            self.skip(id, why);
        }
    }

    /// The report, in catalog order. A check that could not be made is a failure, unless the
    /// caller opted out of it by name: then it is skipped.
    fn finish(mut self) -> Report {
        let checks = self
            .catalog
            .iter()
            .map(|spec| {
                let outcome = match self.outcomes.iter().position(|(id, _)| *id == spec.id) {
                    Some(at) => self.outcomes.swap_remove(at).1,
                    None => Outcome::Skipped {
                        why: "not run: a step it depends on did not pass".to_owned(),
                    },
                };
                let outcome = match outcome {
                    Outcome::Skipped { why } if self.not_applicable.contains(&spec.id) => {
                        Outcome::Skipped { why }
                    }
                    Outcome::Skipped { why } if self.opted_out(spec.id) => Outcome::Skipped {
                        why: format!("opted out ({why})"),
                    },
                    Outcome::Skipped { why } => Outcome::Fail {
                        got: format!("not run: {why} (opt out of it by name to accept that)"),
                    },
                    outcome => outcome,
                };
                Check {
                    id: spec.id,
                    section: spec.section,
                    expects: spec.expects,
                    outcome,
                }
            })
            .collect();
        Report { checks }
    }
}

/// A server to check: its base URL, the route prefix, and the accounts the kit links with.
///
/// The defaults are `PROTOCOL.md`'s (and the reference server's): prefix `/lanlink/v1`, a
/// lockout after 5 wrong guesses, `max_visible` 1, 16 agents per network, 5 live manual codes
/// per account. Give the deployment's own values where it differs.
///
/// ```
/// use lanlink::conformance::ServerTarget;
/// use lanlink::http::client::Credential;
/// let target = ServerTarget::new("http://127.0.0.1:8080", Credential::Bearer("alice-token".to_owned().into()))
///     .second_account(Credential::Bearer("bob-token".to_owned().into()))
///     .lockout_threshold(5);
/// # let _ = target;
/// ```
#[derive(Debug, Clone)]
pub struct ServerTarget {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) credential: Credential,
    pub(crate) second: Option<Credential>,
    pub(crate) client: Option<reqwest::Client>,
    pub(crate) lockout_threshold: u32,
    pub(crate) max_visible: usize,
    pub(crate) max_agents_per_network: usize,
    pub(crate) codes_per_account: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) own_rejection: bool,
    pub(crate) timeout: Duration,
    pub(crate) opted_out: Vec<String>,
}

impl ServerTarget {
    /// The server at `url` (e.g. `http://127.0.0.1:8080`), whose user routes accept
    /// `credential` for an account.
    pub fn new(url: &str, credential: Credential) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            credential,
            second: None,
            client: None,
            lockout_threshold: 5,
            max_visible: 1,
            max_agents_per_network: 16,
            codes_per_account: 5,
            request_timeout: Duration::from_secs(10),
            own_rejection: false,
            timeout: Duration::from_secs(10),
            opted_out: Vec::new(),
        }
    }

    /// Accepts that check `id` (of [`SERVER_CHECKS`]) is not made: it is skipped, where without
    /// this a check the kit cannot make is a failure. The kit does not run an opted-out check
    /// that would cost time or leave state (`server.body.request_timeout` waits for the request
    /// deadline; the second account's checks need [`second_account`](Self::second_account)).
    /// An opted-out check that does run still passes or fails.
    ///
    /// ```
    /// use lanlink::conformance::ServerTarget;
    /// use lanlink::http::client::Credential;
    /// let target = ServerTarget::new("http://127.0.0.1:8080", Credential::Bearer("alice-token".to_owned().into()))
    ///     .opt_out("server.body.request_timeout")
    ///     .opt_out("server.link_status.other_account")
    ///     .opt_out("server.codes.mint_quota");
    /// # let _ = target;
    /// ```
    pub fn opt_out(mut self, id: &str) -> Self {
        self.opted_out.push(id.to_owned());
        self
    }

    /// The route prefix (default `/lanlink/v1`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = normalize_prefix(prefix);
        self
    }

    /// A second account: checks that it does not see the first account's link, and its mint
    /// quota (it is left holding its most live codes until they expire).
    pub fn second_account(mut self, credential: Credential) -> Self {
        self.second = Some(credential);
        self
    }

    /// The reqwest client to call the server with (for HTTPS, one built with a TLS feature).
    /// It should not follow redirects. Default: [`crate::http::client::default_client`].
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The server's lockout threshold: wrong guesses from one address per window before it is
    /// locked out (default 5). The kit makes exactly this many.
    pub fn lockout_threshold(mut self, threshold: u32) -> Self {
        self.lockout_threshold = threshold.max(1);
        self
    }

    /// The server's `max_visible` (default 1).
    pub fn max_visible(mut self, max: usize) -> Self {
        self.max_visible = max.max(1);
        self
    }

    /// The most agents one network's record holds (default 16).
    pub fn max_agents_per_network(mut self, max: usize) -> Self {
        self.max_agents_per_network = max.max(1);
        self
    }

    /// The most live manual codes an account may hold (default 5).
    pub fn codes_per_account(mut self, max: usize) -> Self {
        self.codes_per_account = max.max(1);
        self
    }

    /// The server's request deadline (default 10 s, `PROTOCOL.md`'s): the kit checks that a
    /// body that does not arrive in time is answered `408 request_timeout`, which takes that
    /// long. Opt out of `server.body.request_timeout` not to wait.
    pub fn request_timeout(mut self, deadline: Duration) -> Self {
        self.request_timeout = deadline;
        self
    }

    /// Whether the server's `Authenticator` answers a request without an account with its own
    /// response (a redirect, a 403) instead of `401 unauthorized`; then any non-2xx answer
    /// passes the unauthenticated checks. Default false.
    pub fn own_rejection(mut self, own: bool) -> Self {
        self.own_rejection = own;
        self
    }

    /// The most any one request may take (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// An agent's local endpoint to check: its URL, the instance id it is discovering as, and one
/// origin it is configured to allow.
///
/// ```
/// use lanlink::conformance::EndpointTarget;
/// let id = lanlink::InstanceId::generate(&mut lanlink::os_rng());
/// let target = EndpointTarget::new("http://192.168.1.50:8080", id, "https://cloud.example")
///     .host_name("printer.local");
/// # let _ = target;
/// ```
#[derive(Debug, Clone)]
pub struct EndpointTarget {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) instance_id: InstanceId,
    pub(crate) origin: String,
    pub(crate) host_name: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) opted_out: Vec<String>,
}

impl EndpointTarget {
    /// The endpoint at `url` (plain `http://host:port`), of the agent discovering as
    /// `instance_id`, which allows `origin` (e.g. `https://cloud.example`).
    pub fn new(url: &str, instance_id: InstanceId, origin: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            instance_id,
            origin: origin.to_owned(),
            host_name: None,
            timeout: Duration::from_secs(10),
            opted_out: Vec::new(),
        }
    }

    /// Accepts that check `id` (of [`ENDPOINT_CHECKS`]) is not made: it is skipped, where
    /// without this a check the kit cannot make is a failure (e.g.
    /// `endpoint.secret.host_name` without a [`host_name`](Self::host_name)).
    pub fn opt_out(mut self, id: &str) -> Self {
        self.opted_out.push(id.to_owned());
        self
    }

    /// The route prefix (default `/lanlink/v1`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = normalize_prefix(prefix);
        self
    }

    /// A host name the agent is configured to accept in `Host` (checked to be answered);
    /// without one that check cannot be made (a failure, unless opted out).
    pub fn host_name(mut self, name: &str) -> Self {
        self.host_name = Some(name.to_owned());
        self
    }

    /// The most any one request may take (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// A server's MQTT consumer, as the kit drives it: hand it one request published on `topic`,
/// get back the reply it publishes (`(topic, payload)`), or `None` when it publishes none.
///
/// The core's consumer is a function ([`crate::server::mqtt::handle_up`]), so it is checked as
/// one, with no broker:
///
/// ```
/// use lanlink::conformance::MqttConsumer;
/// use lanlink::server::{mqtt, Server, ServerConfig};
/// use lanlink::ticket::TicketKey;
///
/// struct Core { server: Server, key: TicketKey }
///
/// #[lanlink::async_trait]
/// impl MqttConsumer for Core {
///     async fn request(&self, topic: String, payload: Vec<u8>) -> Option<(String, Vec<u8>)> {
///         let now = lanlink::chrono::Utc::now();
///         let prefix = mqtt::DEFAULT_TOPIC_PREFIX;
///         let mut rng = lanlink::os_rng();
///         let reply = mqtt::handle_up(&self.server, now, &mut rng, &self.key, prefix, &topic, &payload);
///         reply.await.ok().map(|reply| (reply.topic, reply.payload.to_vec()))
///     }
/// }
/// # let _ = Core { server: Server::new(ServerConfig::default()).unwrap(), key: TicketKey::from_bytes([1; 32]) };
/// ```
///
/// A consumer behind a broker is driven by a client that publishes the request on `topic`
/// (connected with the client id the topic names) and waits, a few seconds, for a publish on
/// the down topic; `None` when none comes.
#[async_trait::async_trait]
pub trait MqttConsumer: Send + Sync {
    /// The reply to a request published on `topic` with `payload`, as `(topic, payload)`; `None`
    /// when the consumer publishes none (it dropped the request).
    async fn request(&self, topic: String, payload: Vec<u8>) -> Option<(String, Vec<u8>)>;
}

/// An MQTT consumer to check: the servers' ticket key (the kit signs its own tickets with it),
/// the topic prefix, the network its tickets name, and a live code to redeem.
///
/// The kit signs tickets at the wall clock: the consumer must read the same clock (within a
/// minute). `Debug` shows neither the key nor the code.
///
/// ```
/// use lanlink::conformance::MqttTarget;
/// use lanlink::ticket::TicketKey;
/// use lanlink::{LinkCode, PublicNetwork};
/// let key = TicketKey::generate(&mut lanlink::os_rng());
/// let target = MqttTarget::new(key)
///     .prefix("acme/lanlink")
///     .network(PublicNetwork::from_ip("198.51.100.7".parse().unwrap(), 64))
///     .code(LinkCode::parse("123456").unwrap());
/// # let _ = target;
/// ```
#[derive(Debug, Clone)]
pub struct MqttTarget {
    pub(crate) key: TicketKey,
    pub(crate) prefix: String,
    pub(crate) network: PublicNetwork,
    pub(crate) code: Option<LinkCode>,
    pub(crate) opted_out: Vec<String>,
}

impl MqttTarget {
    /// A consumer that checks tickets with `key`, under the topic prefix
    /// [`DEFAULT_TOPIC_PREFIX`], the kit's tickets naming a random address of `198.18.0.0/15`
    /// (the benchmarking range, so that the kit's wrong guesses lock out no one's network), and
    /// no code (the redemption checks then fail, unless opted out).
    pub fn new(key: TicketKey) -> Self {
        let mut bytes = [0u8; 3];
        rand::RngCore::fill_bytes(&mut crate::os_rng(), &mut bytes);
        let ip = std::net::IpAddr::from([198, 18 | (bytes[0] & 1), bytes[1], bytes[2]]);
        Self {
            key,
            prefix: DEFAULT_TOPIC_PREFIX.to_owned(),
            network: PublicNetwork::from_ip(ip, 64),
            code: None,
            opted_out: Vec::new(),
        }
    }

    /// The topic prefix (default [`DEFAULT_TOPIC_PREFIX`]), as the consumer is configured.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.trim_end_matches('/').to_owned();
        self
    }

    /// The network the kit's tickets name: its agents announce there, and its two wrong guesses
    /// are charged to it.
    pub fn network(mut self, network: PublicNetwork) -> Self {
        self.network = network;
        self
    }

    /// A live code the kit redeems (`mqtt.redeem.ok`, then again from another instance,
    /// `mqtt.redeem.used_code`): a manual code minted for a test account, e.g. by the server's
    /// `POST {prefix}/codes` or [`Server::mint_code`](crate::server::Server::mint_code).
    pub fn code(mut self, code: LinkCode) -> Self {
        self.code = Some(code);
        self
    }

    /// Accepts that check `id` (of [`MQTT_CHECKS`]) is not made: it is skipped, where without
    /// this a check the kit cannot make (the redemptions without a [`code`](Self::code)) is a
    /// failure.
    pub fn opt_out(mut self, id: &str) -> Self {
        self.opted_out.push(id.to_owned());
        self
    }
}

fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

/// Checks the server at `target` against `PROTOCOL.md` (every check of [`SERVER_CHECKS`]).
///
/// It plays an agent and a linker; read "What running it does to the target" in the
/// [module docs](self) first: it leaves its network locked out for the lockout duration.
///
/// ```no_run
/// # async fn demo() {
/// use lanlink::conformance::{check_server, ServerTarget};
/// use lanlink::http::client::Credential;
/// let target = ServerTarget::new("http://127.0.0.1:8080", Credential::Bearer("alice-token".to_owned().into()));
/// let report = check_server(&target).await;
/// print!("{report}");
/// assert!(report.passed(), "{}", report.summary());
/// # }
/// ```
pub async fn check_server(target: &ServerTarget) -> Report {
    server::run(target).await
}

/// Checks the agent's local endpoint at `target` against `PROTOCOL.md` (every check of
/// [`ENDPOINT_CHECKS`]), over raw HTTP/1.1. The agent must be discovering as
/// `target`'s instance id, and the kit must call from a local address (its LAN, or loopback
/// for an agent on the same machine).
///
/// ```no_run
/// # async fn demo() {
/// use lanlink::conformance::{check_agent_endpoint, EndpointTarget};
/// let id = "7c1f0a52-3b8e-4d5a-9c2e-1f0b6a7d8e90".parse().unwrap();
/// let target = EndpointTarget::new("http://192.168.1.50:8080", id, "https://cloud.example");
/// let report = check_agent_endpoint(&target).await;
/// print!("{report}");
/// assert!(report.passed(), "{}", report.summary());
/// # }
/// ```
pub async fn check_agent_endpoint(target: &EndpointTarget) -> Report {
    endpoint::run(target).await
}

/// Checks a server's MQTT consumer against `PROTOCOL.md` (every check of [`MQTT_CHECKS`]),
/// through `consumer` (see [`MqttConsumer`] for the core's own function, checked with no
/// broker). Read "What running it does to the target" in the [module docs](self).
///
/// ```no_run
/// # async fn demo(consumer: &dyn lanlink::conformance::MqttConsumer, key: lanlink::ticket::TicketKey, code: lanlink::LinkCode) {
/// use lanlink::conformance::{check_mqtt, MqttTarget};
/// let report = check_mqtt(&MqttTarget::new(key).code(code), consumer).await;
/// print!("{report}");
/// assert!(report.complete(), "{}", report.summary());
/// # }
/// ```
pub async fn check_mqtt<C: MqttConsumer + ?Sized>(target: &MqttTarget, consumer: &C) -> Report {
    mqtt::run(target, consumer).await
}
