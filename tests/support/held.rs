//! A store that holds back one of its calls until the test lets it go on: a way to land another
//! request's (or another instance's) write between two steps of a request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lanlink::code::CodeKey;
use lanlink::server::{
    Backend, CodeFn, CodeRecord, CounterFn, CounterKey, NetworkFn, ReadFn, ServerConfig, StoreError,
};
use lanlink::PublicNetwork;
use tokio::sync::oneshot;

/// `inner`, one of whose calls (numbered from 0 from [`Held::pause_in`]) waits.
pub struct Held<S> {
    pub inner: S,
    calls: AtomicUsize,
    pause: Mutex<Option<HeldCall>>,
}

/// The held call: it says so on `paused`, then waits for `resume`.
struct HeldCall {
    at: usize,
    paused: oneshot::Sender<()>,
    resume: oneshot::Receiver<()>,
}

impl<S> Held<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            calls: AtomicUsize::new(0),
            pause: Mutex::new(None),
        }
    }

    /// Holds back the `n`th call from now: the first channel says when it waits, the second
    /// lets it go on.
    pub fn pause_in(&self, n: usize) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (paused, on_pause) = oneshot::channel();
        let (go, resume) = oneshot::channel();
        let at = self.calls.load(Ordering::SeqCst) + n;
        *self.pause.lock().expect("lock") = Some(HeldCall { at, paused, resume });
        (on_pause, go)
    }

    async fn gate(&self) {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let held = {
            let mut pause = self.pause.lock().expect("lock");
            match pause.as_ref() {
                Some(held) if held.at == call => pause.take(),
                _ => None,
            }
        };
        if let Some(HeldCall { paused, resume, .. }) = held {
            let _ = paused.send(());
            let _ = resume.await;
        }
    }
}

#[async_trait]
impl<S: Backend> Backend for Held<S> {
    async fn update_network(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        create: bool,
        f: &mut NetworkFn<'_>,
    ) -> Result<bool, StoreError> {
        self.gate().await;
        self.inner
            .update_network(network, now, config, create, f)
            .await
    }

    async fn read_network(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        f: &mut ReadFn<'_>,
    ) -> Result<bool, StoreError> {
        self.gate().await;
        self.inner.read_network(network, now, config, f).await
    }

    async fn create_code(
        &self,
        key: &CodeKey,
        record: &CodeRecord,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.gate().await;
        self.inner.create_code(key, record, now).await
    }

    async fn update_code(
        &self,
        key: &CodeKey,
        now: DateTime<Utc>,
        f: &mut CodeFn<'_>,
    ) -> Result<bool, StoreError> {
        self.gate().await;
        self.inner.update_code(key, now, f).await
    }

    async fn delete_code(&self, key: &CodeKey) -> Result<(), StoreError> {
        self.gate().await;
        self.inner.delete_code(key).await
    }

    async fn update_counter(
        &self,
        key: &CounterKey,
        now: DateTime<Utc>,
        f: &mut CounterFn<'_>,
    ) -> Result<(), StoreError> {
        self.gate().await;
        self.inner.update_counter(key, now, f).await
    }

    async fn purge(&self, now: DateTime<Utc>, config: &ServerConfig) -> Result<(), StoreError> {
        self.gate().await;
        self.inner.purge(now, config).await
    }
}
