//! The conformance kit (`lanlink::conformance`) from the command line: checks a lanlink server,
//! an agent's local endpoint, or both, against `PROTOCOL.md`.
//!
//! ```text
//! cargo run --example conformance --features conformance -- \
//!     --server http://127.0.0.1:8080 --token alice-token-1 [--second-token bob-token-1]
//! cargo run --example conformance --features conformance -- \
//!     --endpoint http://192.168.1.50:8080 --instance-id 7c1f0a52-… --origin https://cloud.example
//! ```
//!
//! Prints one line per check on stdout (`PASS id  what was seen`, `FAIL id  expected …; got …`,
//! `SKIP id  why`) and a summary on stderr; exits 1 if any check failed (or, with `--strict`,
//! was skipped). A check the kit cannot make (no second account given, a lockout from an
//! earlier run) fails unless named with `--opt-out ID`; only opted-out checks are skipped. The server run leaves the caller's network locked out for the lockout duration
//! (10 minutes by default): see the module docs of `lanlink::conformance`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lanlink::conformance::{
    check_agent_endpoint, check_server, EndpointTarget, Report, ServerTarget,
};
use lanlink::http::client::Credential;
use lanlink::http::DEFAULT_PREFIX;
use lanlink::InstanceId;

/// Checks a lanlink server and/or an agent's local endpoint against PROTOCOL.md.
#[derive(Parser, Debug)]
#[command(about = "Checks a lanlink server and/or an agent's local endpoint against PROTOCOL.md")]
struct Args {
    /// The server's base URL (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    server: Option<String>,
    /// A bearer token for an account on the server (`Authorization: Bearer TOKEN`).
    #[arg(long, conflicts_with = "cookie")]
    token: Option<String>,
    /// A session cookie for an account on the server (`Cookie: VALUE`), instead of a token.
    #[arg(long)]
    cookie: Option<String>,
    /// A bearer token for a second account (checks link isolation and the mint quota; that
    /// account is left holding its most live codes for 10 minutes).
    #[arg(long)]
    second_token: Option<String>,
    /// The server's lockout threshold (wrong guesses per address before a lockout).
    #[arg(long, default_value_t = 5)]
    lockout_threshold: u32,
    /// The server's max_visible.
    #[arg(long, default_value_t = 1)]
    max_visible: usize,
    /// The most agents one network's record holds.
    #[arg(long, default_value_t = 16)]
    max_agents_per_network: usize,
    /// The most live manual codes per account.
    #[arg(long, default_value_t = 5)]
    codes_per_account: usize,
    /// The server's request deadline in seconds, to check `408 request_timeout` (waits that
    /// long; `--opt-out server.body.request_timeout` not to).
    #[arg(long, default_value_t = 10)]
    request_timeout: u64,
    /// The server's Authenticator answers requests without an account with its own response
    /// (a redirect, a 403) rather than 401.
    #[arg(long)]
    own_rejection: bool,
    /// The agent's local endpoint (e.g. http://192.168.1.50:8080).
    #[arg(long, requires_all = ["instance_id", "origin"])]
    endpoint: Option<String>,
    /// The instance id the agent is discovering as.
    #[arg(long)]
    instance_id: Option<InstanceId>,
    /// An origin the agent allows (its --allow-origin).
    #[arg(long)]
    origin: Option<String>,
    /// A host name the agent allows in Host (its --host-name), to check it is answered.
    #[arg(long)]
    host_name: Option<String>,
    /// The route prefix, on the server and the endpoint.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
    /// Seconds any one request may take.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Exit 1 if any check was skipped, too.
    #[arg(long)]
    strict: bool,
    /// A check (by its id, e.g. server.codes.mint_quota) that may go unmade: skipped rather
    /// than failed when the kit cannot make it. Repeatable.
    #[arg(long = "opt-out", value_name = "ID")]
    opt_out: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.server.is_none() && args.endpoint.is_none() {
        eprintln!("nothing to check: give --server, --endpoint, or both (see --help)");
        return ExitCode::from(2);
    }
    let timeout = Duration::from_secs(args.timeout);
    let mut report = Report::default();
    if let Some(url) = &args.server {
        let credential = match (&args.token, &args.cookie) {
            (Some(token), _) => Credential::Bearer(token.clone().into()),
            (None, Some(cookie)) => Credential::Cookie(cookie.clone().into()),
            (None, None) => {
                eprintln!("--server needs --token or --cookie");
                return ExitCode::from(2);
            }
        };
        let mut target = ServerTarget::new(url, credential)
            .prefix(&args.prefix)
            .lockout_threshold(args.lockout_threshold)
            .max_visible(args.max_visible)
            .max_agents_per_network(args.max_agents_per_network)
            .codes_per_account(args.codes_per_account)
            .own_rejection(args.own_rejection)
            .request_timeout(Duration::from_secs(args.request_timeout))
            .timeout(timeout);
        for id in &args.opt_out {
            target = target.opt_out(id);
        }
        if let Some(token) = &args.second_token {
            target = target.second_account(Credential::Bearer(token.clone().into()));
        }
        let server = check_server(&target).await;
        eprintln!("server {url}: {}", server.summary());
        print!("{server}");
        report = report.merge(server);
    }
    if let (Some(url), Some(id), Some(origin)) = (&args.endpoint, args.instance_id, &args.origin) {
        let mut target = EndpointTarget::new(url, id, origin)
            .prefix(&args.prefix)
            .timeout(timeout);
        for id in &args.opt_out {
            target = target.opt_out(id);
        }
        if let Some(name) = &args.host_name {
            target = target.host_name(name);
        }
        let endpoint = check_agent_endpoint(&target).await;
        eprintln!("endpoint {url}: {}", endpoint.summary());
        print!("{endpoint}");
        report = report.merge(endpoint);
    }
    let ok = if args.strict {
        report.complete()
    } else {
        report.passed()
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
