//! A `lanlink::server::Store` in one SQLite file, written as a third party would: only lanlink's
//! public API, over rusqlite (its `bundled` SQLite). Server instances that open the same file,
//! in one process or several, share their records. One table:
//! `lanlink (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at INTEGER NOT NULL)`, expiry in
//! Unix milliseconds. A swap is one `BEGIN IMMEDIATE` transaction: it takes the file's write
//! lock first, then compares every value whole and writes, so it is atomic across connections
//! and processes. WAL mode lets readers go on beside the writer; a busy timeout makes a writer
//! wait for the lock rather than fail. SQLite's calls block: each runs on Tokio's blocking pool
//! (`spawn_blocking`), one at a time per connection.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanlink::async_trait;
use lanlink::chrono::{DateTime, Utc};
use lanlink::server::{Key, Store, StoreError, Write};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// One connection to a SQLite file holding lanlink's records.
#[derive(Clone)]
pub struct SqliteStore(Arc<Mutex<Connection>>);

impl SqliteStore {
    /// Opens (creating if need be) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS lanlink (
                 key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS lanlink_expiry ON lanlink (expires_at);",
        )?;
        Ok(Self(Arc::new(Mutex::new(conn))))
    }

    /// Runs `f` on the connection, on Tokio's blocking pool. Any SQLite error (a busy file past
    /// the timeout, a full disk) is `Unavailable`: a failed transaction wrote nothing.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = Arc::clone(&self.0);
        let task = tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        });
        match task.await {
            Ok(Ok(value)) => Ok(value),
            _ => Err(StoreError::Unavailable),
        }
    }
}

fn load(conn: &Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.query_row("SELECT value FROM lanlink WHERE key = ?1", [key], |row| {
        row.get(0)
    })
    .optional()
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.as_str().to_owned();
        self.run(move |conn| load(conn, &key)).await
    }

    async fn swap(&self, writes: &[Write<'_>]) -> Result<bool, StoreError> {
        // Owned copies for the blocking pool: (key, expected, new value and expiry).
        type Owned = (String, Option<Vec<u8>>, Option<(Vec<u8>, i64)>);
        let writes: Vec<Owned> = writes
            .iter()
            .map(|w| {
                let new = w.value().zip(w.expires_at());
                let new = new.map(|(value, at)| (value.to_vec(), at.timestamp_millis()));
                (
                    w.key().as_str().to_owned(),
                    w.expected().map(<[u8]>::to_vec),
                    new,
                )
            })
            .collect();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (key, expected, _) in &writes {
                if load(&tx, key)? != *expected {
                    return Ok(false); // Dropping `tx` rolls back: nothing was written.
                }
            }
            for (key, _, new) in &writes {
                match new {
                    Some((value, at)) => tx.execute(
                        "INSERT OR REPLACE INTO lanlink (key, value, expires_at) VALUES (?1, ?2, ?3)",
                        params![key, value, at],
                    )?,
                    None => tx.execute("DELETE FROM lanlink WHERE key = ?1", [key])?,
                };
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn purge(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let now = now.timestamp_millis();
        self.run(move |conn| conn.execute("DELETE FROM lanlink WHERE expires_at <= ?1", [now]))
            .await
            .map(|_| ())
    }

    async fn pause(&self, attempt: u32) {
        // Colliding writers spread out: 200 µs, doubling, at most about 50 ms.
        tokio::time::sleep(Duration::from_micros(200 << attempt.min(8))).await;
    }
}
