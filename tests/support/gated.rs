//! A backend that passes each call through a gate first: the one wrapper behind every test
//! store that yields, holds back or fails a chosen call (`Held` here, the model checker's
//! store, `tests/store.rs`'s and `tests/budgets.rs`'s). The gate decides; this file only
//! delegates.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lanlink::code::CodeKey;
use lanlink::server::{
    Backend, CodeFn, CodeRecord, CounterFn, CounterKey, NetworkFn, ReadFn, ServerConfig, StoreError,
};
use lanlink::PublicNetwork;

/// What runs before each call of a [`Gated`] backend.
pub trait Gate: Send + Sync {
    /// Runs before a call; an error fails the call without running it.
    fn before(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>;
}

/// `inner`, each of whose calls passes `gate` first.
#[derive(Clone, Default)]
pub struct Gated<S, G> {
    pub inner: S,
    pub gate: G,
}

#[async_trait]
impl<S: Backend, G: Gate> Backend for Gated<S, G> {
    async fn update_network(
        &self,
        network: PublicNetwork,
        now: DateTime<Utc>,
        config: &ServerConfig,
        create: bool,
        f: &mut NetworkFn<'_>,
    ) -> Result<bool, StoreError> {
        self.gate.before().await?;
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
        self.gate.before().await?;
        self.inner.read_network(network, now, config, f).await
    }

    async fn create_code(
        &self,
        key: &CodeKey,
        record: &CodeRecord,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.gate.before().await?;
        self.inner.create_code(key, record, now).await
    }

    async fn update_code(
        &self,
        key: &CodeKey,
        now: DateTime<Utc>,
        f: &mut CodeFn<'_>,
    ) -> Result<bool, StoreError> {
        self.gate.before().await?;
        self.inner.update_code(key, now, f).await
    }

    async fn delete_code(&self, key: &CodeKey) -> Result<(), StoreError> {
        self.gate.before().await?;
        self.inner.delete_code(key).await
    }

    async fn update_counter(
        &self,
        key: &CounterKey,
        now: DateTime<Utc>,
        f: &mut CounterFn<'_>,
    ) -> Result<(), StoreError> {
        self.gate.before().await?;
        self.inner.update_counter(key, now, f).await
    }

    async fn purge(&self, now: DateTime<Utc>, config: &ServerConfig) -> Result<(), StoreError> {
        self.gate.before().await?;
        self.inner.purge(now, config).await
    }
}

/// A future that is pending once, then ready; waking its task first if `wake` (a runtime
/// polls it again), or not (a test that polls by hand, such as the model checker, decides).
pub struct YieldOnce {
    done: bool,
    wake: bool,
}

impl YieldOnce {
    pub fn new(wake: bool) -> Self {
        Self { done: false, wake }
    }
}

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.done {
            std::task::Poll::Ready(())
        } else {
            self.done = true;
            if self.wake {
                cx.waker().wake_by_ref();
            }
            std::task::Poll::Pending
        }
    }
}

/// Polls `futures` one step at a time in the order `schedule` picks (cycling through it, each
/// entry choosing among the unfinished ones), until all are done: their store calls, each a
/// step behind a yielding gate, interleave as the schedule says.
pub fn interleave<'a, T>(
    mut futures: Vec<Pin<Box<dyn Future<Output = T> + 'a>>>,
    schedule: &[usize],
) -> Vec<T> {
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut turn = 0;
    loop {
        let open: Vec<usize> = (0..futures.len())
            .filter(|i| results[*i].is_none())
            .collect();
        if open.is_empty() {
            break;
        }
        let pick = open[schedule[turn % schedule.len().max(1)] % open.len()];
        turn += 1;
        if let std::task::Poll::Ready(result) = futures[pick].as_mut().poll(&mut cx) {
            results[pick] = Some(result);
        }
    }
    results.into_iter().map(|r| r.expect("done")).collect()
}

/// Polls `future` until it is done: a future whose store calls yield (and wake) behind a gate,
/// but never wait on IO.
pub fn run<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
}
