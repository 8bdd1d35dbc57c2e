//! The lanlink server over HTTP, on an in-memory store.
//!
//! ```text
//! cargo run --example server -- --listen 127.0.0.1:8080 --user alice=TOKEN [--trusted-proxy CIDR]...
//! ```
//!
//! Prints one JSON line on stdout once listening
//! (`{"listening":"127.0.0.1:8080","page":"http://127.0.0.1:8080/link"}`); logs go to stderr.
//!
//! It also serves the linking page for browsers (`lanlink::http::web`) at `/` and `/link`: open
//! it, paste a user's token, and link an agent started with
//! `--allow-origin http://127.0.0.1:8080` (the page's origin).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use clap::Parser;
use ipnet::IpNet;
use lanlink::http::{self, server::router, BearerTokens, ServeConfig, DEFAULT_PREFIX};
use lanlink::server::{Server, ServerConfig};
use lanlink::AccountId;

/// Runs a lanlink server.
#[derive(Parser, Debug)]
#[command(about = "Runs a lanlink server over HTTP on an in-memory store")]
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
    /// IPv6 prefix length that groups addresses into one network.
    #[arg(long, default_value_t = 64)]
    ipv6_prefix: u8,
    /// Route prefix.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
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
    let config = ServerConfig::default()
        .trusted_proxies(args.trusted_proxies)
        .max_visible(args.max_visible)
        .ipv6_prefix(args.ipv6_prefix);
    let server = Arc::new(Mutex::new(Server::new(config)?));
    http::server::spawn_purge(Arc::clone(&server), std::time::Duration::from_secs(10));
    let auth = Arc::new(BearerTokens::new(args.users));
    let app = router(server, auth, &args.prefix).merge(http::web::router(&args.prefix));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    println!(
        "{}",
        serde_json::json!({ "listening": addr.to_string(), "page": format!("http://{addr}/link") })
    );
    http::serve(listener, app, ServeConfig::default(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
