//! A third-party store: lanlink's records in one SQLite file, written only against lanlink's
//! public API (`store.rs`, the whole store). Two server instances, each with its own connection
//! to the file (as two processes would have), link one device with every step on the other
//! instance, and print what happened.
//!
//! ```text
//! cargo run --example sqlite_store --features shared-store,tokio [-- PATH]
//! ```
//!
//! `tests/store_suite.rs` runs the store suite (`lanlink::conformance::store`) on `SqliteStore`,
//! and links devices through two instances sharing a file while guesses race through both.

mod store;

use lanlink::chrono::Utc;
use lanlink::secret::PresenceKey;
use lanlink::server::{Events, Records, RecordsConfig, Server, ServerConfig, StoreKey, User};
use lanlink::wire::{AgentMessage, Announce, LinkRequest, RedeemRequest};
use lanlink::{AccountId, DeviceInfo, LocalSecret, PublicNetwork};
use store::SqliteStore;

type Instance = Server<Records<SqliteStore>>;

/// A server instance with its own connection to the file. Every instance shares the store key
/// (in a deployment it comes from the configuration, like a database password).
fn instance(path: &str, key: &StoreKey) -> Result<Instance, Box<dyn std::error::Error>> {
    let records = Records::new(SqliteStore::open(path)?, RecordsConfig::new(key.clone()));
    Ok(Server::with_store(
        ServerConfig::default(),
        records,
        Events::discard(),
    )?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let default = std::env::temp_dir().join("lanlink-sqlite-demo.db");
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| default.display().to_string());
    let mut rng = lanlink::os_rng();
    let key = StoreKey::generate(&mut rng);
    let (a, b) = (instance(&path, &key)?, instance(&path, &key)?);
    println!("instances A and B, each with its own connection to {path}");

    // The device, on a home network behind one public address.
    let home = PublicNetwork::from_ip("203.0.113.7".parse()?, 64);
    let presence = PresenceKey::generate(&mut rng);
    let secret = LocalSecret::generate(&mut rng);
    let id = presence.instance_id();
    let private = "192.168.1.50".parse()?;
    let commitment = secret.commitment(&id);
    let announce = Announce::new(
        id,
        private,
        8080,
        DeviceInfo::default(),
        commitment,
        presence,
    );
    let alice = User::new(AccountId::new("alice").ok_or("account")?);
    let now = Utc::now();

    a.announce(now, home, &announce).await?;
    println!("A: the device {id} announced itself");
    let found = b.discover(now, home, &alice).await?;
    println!(
        "B: alice discovers {} device(s) on her network",
        found.agents.len()
    );
    let link = LinkRequest::new(id, secret);
    let pending = a.link(now, &mut rng, home, &alice, link).await?;
    println!(
        "A: alice links it with the secret read from the LAN: {:?}",
        pending.state
    );
    let reply = b.announce(now, home, &announce).await?;
    let Some(AgentMessage::VerifyAndRedeem { code, .. }) = reply.messages.first() else {
        return Err("the device's poll carried no link".into());
    };
    println!("B: the device's next poll carries the link and its one-time code");
    let redeemed = a
        .redeem(now, &mut rng, home, &RedeemRequest::new(id, code.clone()))
        .await?;
    println!(
        "A: the device redeems its code: linked to {}",
        redeemed.account
    );
    let status = b.link_status(now, home, &alice.account, &id).await?;
    println!("B: alice's page asks the link's state: {:?}", status.state);
    let again = a
        .redeem(now, &mut rng, home, &RedeemRequest::new(id, code.clone()))
        .await;
    println!(
        "A: the code again: {}",
        again.err().map_or("accepted?!".into(), |e| e.to_string())
    );

    // What the file holds: opaque names (keyed hashes) and sealed values.
    let conn = rusqlite::Connection::open(&path)?;
    let rows: i64 = conn.query_row("SELECT count(*) FROM lanlink", [], |row| row.get(0))?;
    println!("{path} holds {rows} rows, e.g.:");
    let mut names = conn.prepare("SELECT key, length(value) FROM lanlink LIMIT 3")?;
    let rows = names.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (name, len) = row?;
        println!("  {name}  ({len} sealed bytes)");
    }
    Ok(())
}
