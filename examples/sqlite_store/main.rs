//! A third-party store: lanlink's records in one SQLite file, shared by two connections (as by
//! two server instances, or two processes), written only against lanlink's public API.
//!
//! ```text
//! cargo run --example sqlite_store --features shared-store,tokio [-- PATH]
//! ```
//!
//! `store.rs` is the whole store; `tests/store_suite.rs` runs the store suite
//! (`lanlink::conformance::store`) on it.

mod store;

use lanlink::chrono::{TimeDelta, Utc};
use lanlink::server::{Key, Store, Write};
use store::SqliteStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        std::env::temp_dir()
            .join("lanlink-sqlite-demo.db")
            .display()
            .to_string()
    });
    let (a, b) = (SqliteStore::open(&path)?, SqliteStore::open(&path)?);
    println!("two connections to {path}");
    let key = Key::new("ctr", "0123abcd").ok_or("key")?;
    let until = Utc::now() + TimeDelta::minutes(1);
    let held = a.load(&key).await?;
    let applied = a
        .swap(&[Write::new(&key, held.as_deref(), Some((b"one", until)))])
        .await?;
    println!("A writes \"one\": {applied}");
    println!("B reads: {:?}", b.load(&key).await?.map(String::from_utf8));
    let stale = b
        .swap(&[Write::new(&key, held.as_deref(), Some((b"two", until)))])
        .await?;
    println!("B swaps from what A read before its write: {stale} (the value changed)");
    Ok(())
}
