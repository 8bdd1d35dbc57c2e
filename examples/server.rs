//! The lanlink server over HTTP, on an in-memory store, or on Redis shared with other instances.
//!
//! ```text
//! cargo run --example server --features redis -- --listen 127.0.0.1:8080 --user alice=TOKEN [--trusted-proxy CIDR]...
//! cargo run --example server --features redis,obico -- --profile obico ...   # Obico agents too
//! LANLINK_STORE_KEY=$(openssl rand -hex 32) \
//!   cargo run --example server --features redis -- --redis redis://127.0.0.1:6379 --user alice=TOKEN
//! ```
//!
//! With `--redis`, every instance given the same Redis, `--redis-prefix` and store key
//! (`LANLINK_STORE_KEY`, 64 hex characters: it encrypts and names the records at rest) acts as
//! one server. `--redis-cluster redis://10.0.0.1:7000,redis://10.0.0.2:7000` does the same on a
//! Redis Cluster or Valkey cluster, and `--redis-wait-replicas 1` makes budget counters and
//! codes wait for a replica before a write is acknowledged (see `SECURITY.md`).
//!
//! `--profile lanlink` (the default) serves the lanlink routes; `--profile obico` (feature `obico`)
//! serves both the lanlink routes and the Obico profile's routes (`/api/v1/...`) over one server
//! (in memory or on Redis), so lanlink and unmodified Obico agents link side by side.
//!
//! Prints one JSON line on stdout once listening
//! (`{"listening":"127.0.0.1:8080","page":"http://127.0.0.1:8080/link"}`); logs go to stderr.
//!
//! It also serves the linking page for browsers (`lanlink::http::web`) at `/` and `/link`: open
//! it, paste a user's token, and link an agent started with
//! `--allow-origin http://127.0.0.1:8080` (the page's origin).

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use ipnet::IpNet;
use lanlink::http::server::{log_event, router};
use lanlink::http::{self, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::server::redis::{RedisStore, RedisStoreConfig};
use lanlink::server::{Events, Records, RecordsConfig, Server, ServerConfig, StoreKey};
use lanlink::AccountId;

/// Runs a lanlink server.
#[derive(Parser, Debug)]
#[command(about = "Runs a lanlink server over HTTP on an in-memory store or on Redis")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A user as NAME=TOKEN: requests with `Authorization: Bearer TOKEN` act as NAME. Repeatable.
    #[arg(long = "user", value_parser = parse_user)]
    users: Vec<(String, AccountId)>,
    /// A proxy network whose forwarding headers are trusted. Repeatable; default none.
    #[arg(long = "trusted-proxy")]
    trusted_proxies: Vec<IpNet>,
    /// Most agents shown per network; with more present none is shown.
    #[arg(long, default_value_t = 1)]
    max_visible: usize,
    /// Most Obico agents shown per network when all poll from one private host (one Raspberry
    /// Pi running two printers); 1 turns the exception off.
    #[arg(long, default_value_t = 2)]
    max_visible_one_host: usize,
    /// Failures from one network (in 10 minutes) that lock it out for 10 minutes.
    #[arg(long, default_value_t = 5)]
    lockout_threshold: u32,
    /// IPv6 prefix length that groups addresses into one network.
    #[arg(long, default_value_t = 64)]
    ipv6_prefix: u8,
    /// Connections one client address may hold at once (default: `http::serve`'s, 32; the
    /// total cap when a proxy is trusted). Coarser prefixes (an IPv4 /24, an IPv6 /56, /48,
    /// /32) share `http::serve`'s default slots, never fewer than this.
    #[arg(long)]
    max_connections_per_client: Option<usize>,
    /// A NAT64/SIIT prefix (/32, /40, /48, /56, /64 or /96) whose clients stand for the IPv4
    /// address they embed, besides the well-known 64:ff9b::/96. Repeatable.
    #[arg(long = "nat64-prefix")]
    nat64_prefixes: Vec<ipnet::Ipv6Net>,
    /// A web origin (`https://cloud.example`) whose pages may send the state-changing user
    /// requests (link, mint a code). Repeatable; default: only the origin of the request's own
    /// `Host`. Give the page's origin when a proxy rewrites `Host`.
    #[arg(long = "allow-origin")]
    allowed_origins: Vec<String>,
    /// Route prefix.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
    /// Keep the records in Redis at this URL (shared with other instances) instead of memory.
    /// Needs the store key in `LANLINK_STORE_KEY`.
    #[arg(long, conflicts_with = "redis_cluster")]
    redis: Option<String>,
    /// Keep the records in a Redis Cluster (or Valkey cluster) reached through these nodes
    /// (comma-separated `redis://host:port` URLs; the others are learned from them). Needs the
    /// store key in `LANLINK_STORE_KEY`.
    #[arg(long, value_delimiter = ',')]
    redis_cluster: Vec<String>,
    /// Replicas each security-critical write (budget counters, redeemed codes) waits for
    /// (`WAIT`), on Redis or a cluster; 0 (the default) waits for none.
    #[arg(long, default_value_t = 0)]
    redis_wait_replicas: u32,
    /// How long such a write waits for its replicas, in milliseconds, before it is acknowledged
    /// unreplicated (counted, and lost if its master fails before a replica copies it).
    #[arg(long, default_value_t = 100)]
    redis_wait_timeout_ms: u64,
    /// The Redis key prefix.
    #[arg(long, default_value = "lanlink")]
    redis_prefix: String,
    /// `lanlink`, or `obico` to also serve the Obico profile's routes (feature `obico`).
    #[arg(long, default_value = "lanlink")]
    profile: String,
}

fn parse_user(text: &str) -> Result<(String, AccountId), String> {
    let (name, token) = text.split_once('=').ok_or("expected NAME=TOKEN")?;
    let account = AccountId::new(name).ok_or("invalid account name")?;
    if token.len() < 8 {
        return Err("the token must be at least 8 characters".into());
    }
    Ok((token.to_owned(), account))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // `http::serve` counts connections per socket peer: behind a proxy every connection comes
    // from the proxy, so the per-client cap is left to it.
    let mut serve_config = ServeConfig::default();
    if !args.trusted_proxies.is_empty() {
        serve_config.max_connections_per_client = serve_config.max_connections;
    }
    if let Some(max) = args.max_connections_per_client {
        serve_config.max_connections_per_client = max;
    }
    let config = args
        .allowed_origins
        .iter()
        .fold(ServerConfig::default(), |config, origin| {
            config.allow_origin(origin)
        })
        .trusted_proxies(args.trusted_proxies)
        .max_visible(args.max_visible)
        .max_visible_one_host(args.max_visible_one_host)
        .lockout_threshold(args.lockout_threshold)
        .ipv6_prefix(args.ipv6_prefix)
        .nat64_prefixes(args.nat64_prefixes);
    let auth = Arc::new(BearerTokens::new(args.users));
    let redis = match (&args.redis, args.redis_cluster.is_empty()) {
        (Some(url), _) => Some(vec![url.clone()]),
        (None, false) => Some(args.redis_cluster.clone()),
        (None, true) => None,
    };
    let cluster = !args.redis_cluster.is_empty();
    let app = match (&redis, args.profile.as_str()) {
        (None, profile) => {
            let server = Arc::new(Server::new(config)?.with_events(Events::sink(log_event)));
            http::server::spawn_purge(Arc::clone(&server), std::time::Duration::from_secs(10));
            match profile {
                "lanlink" => router(server, auth, &args.prefix),
                #[cfg(feature = "obico")]
                "obico" => {
                    let obico = lanlink::obico::server::router(
                        Arc::clone(&server),
                        auth.clone(),
                        lanlink::obico::ObicoConfig::default(),
                    )?;
                    router(server, auth, &args.prefix).merge(obico)
                }
                other => {
                    return Err(
                        format!("unknown profile {other:?} (built with feature obico?)").into(),
                    )
                }
            }
        }
        (Some(urls), profile) => {
            let key = std::env::var("LANLINK_STORE_KEY")
                .ok()
                .and_then(|hex| StoreKey::from_hex(&hex))
                .ok_or("--redis needs LANLINK_STORE_KEY: 64 hex characters")?;
            let store_config = if cluster {
                RedisStoreConfig::cluster(urls.iter().cloned())
            } else {
                RedisStoreConfig::new(urls[0].as_str())
            };
            let store_config = store_config
                .prefix(&args.redis_prefix)
                .wait_replicas(args.redis_wait_replicas)
                .wait_timeout(std::time::Duration::from_millis(args.redis_wait_timeout_ms));
            let store = RedisStore::connect(store_config).await?;
            // The records sealed and named under the store key, in Redis (one set of records
            // for the server and, with the Obico profile, the printers' tokens). They expire by
            // themselves in Redis: no purge task.
            let records = Arc::new(Records::new(store, RecordsConfig::new(key)));
            let service = Arc::new(Server::with_store(
                config,
                Arc::clone(&records),
                Events::sink(log_event),
            )?);
            // Held requests (revision 1.6) are woken across instances through Redis pub/sub:
            // a link accepted on one instance answers the agent held on another at once.
            let channel = format!("{}:bell", args.redis_prefix);
            let bell = Arc::new(lanlink::http::hold::RedisBell::connect(urls, &channel).await?);
            let router = |service, auth, prefix: &str| {
                http::server::router_with_bell(service, auth, prefix, bell.clone())
            };
            match profile {
                "lanlink" => router(service, auth, &args.prefix),
                #[cfg(feature = "obico")]
                "obico" => {
                    // Linked printers' tokens in Redis too: a printer's post-link calls are
                    // recognised by every instance.
                    let obico = lanlink::obico::server::router_with_tokens(
                        Arc::clone(&service),
                        auth.clone(),
                        lanlink::obico::ObicoConfig::default(),
                        records,
                    )?;
                    router(service, auth, &args.prefix).merge(obico)
                }
                other => {
                    return Err(
                        format!("unknown profile {other:?} (built with feature obico?)").into(),
                    )
                }
            }
        }
    };
    let app = app
        .merge(http::web::router(&args.prefix))
        .fallback(http::server::not_found);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    println!(
        "{}",
        serde_json::json!({ "listening": addr.to_string(), "page": format!("http://{addr}/link") })
    );
    http::serve(listener, app, serve_config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
