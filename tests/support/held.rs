//! A store that holds back one of its calls until the test lets it go on: a way to land another
//! request's (or another instance's) write between two steps of a request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use lanlink::server::StoreError;
use tokio::sync::oneshot;

use super::gated::{Gate, Gated};

/// `inner`, one of whose calls (numbered from 0 from [`Held::pause_in`]) waits.
pub type Held<S> = Gated<S, Pause>;

/// The gate of [`Held`]: counts calls, and holds back the chosen one.
#[derive(Default)]
pub struct Pause {
    calls: AtomicUsize,
    held: Mutex<Option<HeldCall>>,
}

/// The held call: it says so on `paused`, then waits for `resume`.
struct HeldCall {
    at: usize,
    paused: oneshot::Sender<()>,
    resume: oneshot::Receiver<()>,
}

impl<S> Gated<S, Pause> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            gate: Pause::default(),
        }
    }

    /// Holds back the `n`th call from now: the first channel says when it waits, the second
    /// lets it go on.
    pub fn pause_in(&self, n: usize) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (paused, on_pause) = oneshot::channel();
        let (go, resume) = oneshot::channel();
        let at = self.gate.calls.load(Ordering::SeqCst) + n;
        *self.gate.held.lock().expect("lock") = Some(HeldCall { at, paused, resume });
        (on_pause, go)
    }
}

impl Gate for Pause {
    fn before(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let held = {
                let mut held = self.held.lock().expect("lock");
                match held.as_ref() {
                    Some(call_held) if call_held.at == call => held.take(),
                    _ => None,
                }
            };
            if let Some(HeldCall { paused, resume, .. }) = held {
                let _ = paused.send(());
                let _ = resume.await;
            }
            Ok(())
        })
    }
}
