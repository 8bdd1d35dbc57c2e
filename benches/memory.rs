//! Memory, measured (not estimated): bytes of heap per discoverable agent and per live manual
//! code in the in-memory store, counted by a global allocator (dhat's, in testing mode).
//!
//! ```text
//! cargo bench --bench memory
//! ```
//!
//! Hash tables grow by doubling, so the cost per entry depends on where N falls between two
//! powers of two: several N are measured. Target: at most 256 B per discoverable agent at 1 M (the table's own room included; dhat counts the bytes asked for, not the allocator's headers).

use std::net::IpAddr;

use chrono::DateTime;
use lanlink::event::RequestKind;
use lanlink::secret::PresenceKey;
use lanlink::server::{Budgets, Server, ServerConfig};
use lanlink::wire::{Announce, DeviceInfo};
use lanlink::{AccountId, ForwardedHeaders, LocalSecret};
use rand::SeedableRng;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn heap() -> u64 {
    dhat::HeapStats::get().curr_bytes as u64
}

fn public(i: usize) -> IpAddr {
    IpAddr::from([
        100 + (i >> 22) as u8 % 100,
        (i >> 16) as u8,
        (i >> 8) as u8,
        i as u8,
    ])
}

/// Polls a future of the in-memory server once: it is ready at once.
fn ready<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("the in-memory server's future was not ready"),
    }
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let now = DateTime::from_timestamp(1_800_000_000, 0).expect("valid time");
    // A fresh info per announcement, as decoding gives: no sharing between agents.
    let info =
        || DeviceInfo::new("voron.local", "Voron 2.4", "klipper-lanlink", "0.3.1").expect("info");
    println!("device info in each announcement: \"voron.local\", \"Voron 2.4\", \"klipper-lanlink\", \"0.3.1\"");
    for n in [100_000usize, 600_000, 1_000_000] {
        let server = Server::new(ServerConfig::default()).expect("config");
        let before = heap();
        for i in 0..n {
            let mut key = [9u8; 32];
            key[..16].copy_from_slice(&(i as u128).to_le_bytes());
            let key = PresenceKey::from_bytes(key);
            let id = key.instance_id();
            let secret = LocalSecret::from_bytes([7; 32]);
            let announce = Announce::new(
                id,
                IpAddr::from([192, 168, 1, 50]),
                8080,
                info(),
                secret.commitment(&id),
                key,
            );
            let network = server.caller(RequestKind::Announce, public(i), ForwardedHeaders::NONE);
            let _ = network.map(|network| ready(server.announce(now, network, &announce)));
            while server.poll_event().is_some() {}
        }
        let agents = heap() - before;
        println!(
            "{n:>9} discoverable agents (one per network): {:>6.1} B each (target <= 256 B at 1 M)",
            agents as f64 / n as f64
        );
        drop(server);
    }
    // Live codes over as many accounts as the per-account quota needs (5 each by default): the
    // first 1,000 in the short format, the rest in the fallback format.
    let per_account = 5u32;
    let config = ServerConfig::default().budgets(Budgets::default().codes_per_account(per_account));
    for n in [100_000usize, 400_000] {
        let server = Server::new(config.clone()).expect("config");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let accounts = n.div_ceil(per_account as usize);
        let before = heap();
        for i in 0..n {
            let account =
                AccountId::new(format!("user{}", i / per_account as usize)).expect("account");
            ready(server.mint_code(now, &mut rng, &account)).expect("a live code");
            while server.poll_event().is_some() {}
        }
        let codes = heap() - before;
        // Every code asked for is live: the line measures as many as it says.
        assert_eq!(server.store().codes(), n, "codes minted");
        println!(
            "{n:>9} live manual codes over {accounts} accounts: {:>6.1} B each (with the accounts' quota counters)",
            codes as f64 / n as f64,
        );
    }
}
