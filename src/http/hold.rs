//! Held requests over tokio (revision 1.6): the bells that wake them, and the wait.
//! It must not decide when to answer: the core's [`resume`](crate::server::endpoint::resume)
//! does, every time it is called; this module only keeps the request waiting until a bell rings
//! for its instance or the core's next check is due.
//!
//! A [`Bell`] carries "something happened to instance X" from the request that made it happen
//! (a link accepted, a redemption) to every request held for X:
//!
//! - [`LinkBell`]: within one process (the default of [`router`](super::server::router)).
//! - `RedisBell` (feature `redis`): across server instances sharing one Redis, on one node or
//!   a cluster, through Redis pub/sub; each instance rings its own holds and publishes for the
//!   others.
//!
//! Any other pub/sub (NATS, PostgreSQL `LISTEN`) joins by implementing [`Bell`] over a
//! [`LinkBell`] the same way. A ring is a hint to look again, never a message: a lost one costs
//! at most one recheck (the server's announce interval), never a link.

#[cfg(feature = "redis")]
mod redis;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::id::InstanceId;

#[cfg(feature = "redis")]
pub use self::redis::{RedisBell, RedisBellError};

/// What a bell rings for: a hash of the instance id (so a shared pub/sub channel never carries
/// an id in the clear).
pub(crate) type Tag = [u8; 16];

/// The tag of `instance_id`'s bell: the first 16 bytes of
/// `SHA-256("lanlink/v1/bell\0" ‖ instance_id)`.
pub(crate) fn tag_of(instance_id: &InstanceId) -> Tag {
    let digest = Sha256::new()
        .chain_update(b"lanlink/v1/bell\0")
        .chain_update(instance_id.as_bytes())
        .finalize();
    let mut tag = [0; 16];
    tag.copy_from_slice(&digest[..16]);
    tag
}

/// Carries rings to held requests. [`listen`](Self::listen) before each check of the store,
/// never after (the order that loses no wake-up); [`ring`](Self::ring) after a change that may
/// answer a held request.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use lanlink::http::hold::{Bell, LinkBell};
/// use lanlink::InstanceId;
/// let bell: &dyn Bell = &LinkBell::default();
/// let (a, b) = (InstanceId::from_bytes([1; 16]), InstanceId::from_bytes([2; 16]));
/// let mut listener = bell.listen(&a);
/// bell.ring(&b); // another instance's bell: not heard
/// assert!(tokio::time::timeout(Duration::from_millis(50), listener.rung()).await.is_err());
/// # });
/// ```
pub trait Bell: Send + Sync {
    /// Rings `instance_id`'s bell: every request held for it looks again.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use lanlink::http::hold::{Bell, LinkBell};
    /// let bell = LinkBell::default();
    /// let id = lanlink::InstanceId::from_bytes([7; 16]);
    /// // Two requests held for one instance: one ring wakes both.
    /// let (mut first, mut second) = (bell.listen(&id), bell.listen(&id));
    /// bell.ring(&id);
    /// assert!(tokio::time::timeout(Duration::from_secs(1), first.rung()).await.is_ok());
    /// assert!(tokio::time::timeout(Duration::from_secs(1), second.rung()).await.is_ok());
    /// # });
    /// ```
    fn ring(&self, instance_id: &InstanceId);

    /// Starts listening for `instance_id`'s bell: every ring from now on is heard by the
    /// returned [`Listener`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use lanlink::http::hold::{Bell, LinkBell};
    /// let bell = LinkBell::default();
    /// let id = lanlink::InstanceId::from_bytes([7; 16]);
    /// bell.ring(&id); // before anyone listens: lost, by design (listen, then check the store)
    /// let mut listener = bell.listen(&id);
    /// assert!(tokio::time::timeout(Duration::from_millis(50), listener.rung()).await.is_err());
    /// # });
    /// ```
    fn listen(&self, instance_id: &InstanceId) -> Listener;
}

/// The in-process bell: one [`watch`] channel per instance with listeners, dropped with its
/// last listener. Cheap to clone (a handle).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use lanlink::http::hold::{Bell, LinkBell};
/// use lanlink::InstanceId;
/// let bell = LinkBell::default();
/// let id = InstanceId::from_bytes([7; 16]);
/// let mut listener = bell.listen(&id);
/// bell.ring(&id);
/// // Heard, even though the ring came before the wait.
/// tokio::time::timeout(std::time::Duration::from_secs(1), listener.rung()).await.unwrap();
/// # });
/// ```
#[derive(Clone, Default)]
pub struct LinkBell {
    inner: Arc<Mutex<HashMap<Tag, Channel>>>,
}

struct Channel {
    sender: watch::Sender<u64>,
    listeners: usize,
}

impl std::fmt::Debug for LinkBell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkBell")
            .field("instances", &self.channels().len())
            .finish()
    }
}

impl LinkBell {
    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<Tag, Channel>> {
        crate::lock_unpoisoned(&self.inner)
    }

    /// Rings the bell of `tag` in this process.
    pub(crate) fn ring_tag(&self, tag: &Tag) {
        if let Some(channel) = self.channels().get(tag) {
            channel
                .sender
                .send_modify(|rung| *rung = rung.wrapping_add(1));
        }
    }

    /// Rings every bell in this process: what a bell over another pub/sub does when it may
    /// have missed rings (its subscription was lost and is back), so that every held request
    /// looks at the store again.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use lanlink::http::hold::{Bell, LinkBell};
    /// let bell = LinkBell::default();
    /// let mut listener = bell.listen(&lanlink::InstanceId::from_bytes([2; 16]));
    /// bell.ring_all();
    /// tokio::time::timeout(std::time::Duration::from_secs(1), listener.rung()).await.unwrap();
    /// # });
    /// ```
    pub fn ring_all(&self) {
        for channel in self.channels().values() {
            channel
                .sender
                .send_modify(|rung| *rung = rung.wrapping_add(1));
        }
    }

    /// How many instances have listeners now.
    ///
    /// ```
    /// use lanlink::http::hold::{Bell, LinkBell};
    /// let bell = LinkBell::default();
    /// let listener = bell.listen(&lanlink::InstanceId::from_bytes([1; 16]));
    /// assert_eq!(bell.listened(), 1);
    /// drop(listener);
    /// assert_eq!(bell.listened(), 0);
    /// ```
    pub fn listened(&self) -> usize {
        self.channels().len()
    }
}

impl Bell for LinkBell {
    fn ring(&self, instance_id: &InstanceId) {
        self.ring_tag(&tag_of(instance_id));
    }

    fn listen(&self, instance_id: &InstanceId) -> Listener {
        let tag = tag_of(instance_id);
        let receiver = {
            let mut channels = self.channels();
            let channel = channels.entry(tag).or_insert_with(|| Channel {
                sender: watch::channel(0).0,
                listeners: 0,
            });
            channel.listeners += 1;
            // Marks the current value seen: only rings from now on are heard.
            channel.sender.subscribe()
        };
        Listener {
            receiver,
            bell: self.clone(),
            tag,
        }
    }
}

/// A listener of one instance's bell ([`Bell::listen`]): every ring since it was made, or since
/// [`rung`](Self::rung) last returned, is heard once.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use lanlink::http::hold::{Bell, LinkBell};
/// let bell = LinkBell::default();
/// let id = lanlink::InstanceId::from_bytes([7; 16]);
/// let mut listener = bell.listen(&id);
/// bell.ring(&id);
/// tokio::time::timeout(Duration::from_secs(1), listener.rung()).await.unwrap();
/// // Each ring is heard once: the next wait waits for the next ring.
/// assert!(tokio::time::timeout(Duration::from_millis(50), listener.rung()).await.is_err());
/// # });
/// ```
pub struct Listener {
    receiver: watch::Receiver<u64>,
    bell: LinkBell,
    tag: Tag,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Listener {
    /// Returns once the bell rang since this listener was made or last returned.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use lanlink::http::hold::{Bell, LinkBell};
    /// let bell = LinkBell::default();
    /// let id = lanlink::InstanceId::from_bytes([7; 16]);
    /// let mut listener = bell.listen(&id);
    /// let ringer = bell.clone();
    /// tokio::spawn(async move { tokio::time::sleep(Duration::from_millis(10)).await; ringer.ring(&id) });
    /// assert!(tokio::time::timeout(Duration::from_secs(1), listener.rung()).await.is_ok());
    /// # });
    /// ```
    pub async fn rung(&mut self) {
        // The channel lives while this listener does (it counts as one), so `changed` fails
        // only if the bell itself is gone: then never return (the hold ends on its timer).
        if self.receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut channels = self.bell.channels();
        if let Some(channel) = channels.get_mut(&self.tag) {
            channel.listeners = channel.listeners.saturating_sub(1);
            if channel.listeners == 0 {
                channels.remove(&self.tag);
            }
        }
    }
}

/// Waits out a held request: listens for `instance_id`'s bell **first**, then asks `check`
/// (the core's [`resume`](crate::server::endpoint::resume), at the wall clock's now) for an
/// answer, and while it has none waits for a ring or for the time `check` names, and asks again.
///
/// The order is the point: a ring between a check and a subscription would be lost, and the
/// request would wait for its next check. Here every ring after `listen` is heard.
pub(crate) async fn wait_out<T, F, Fut>(
    bell: &dyn Bell,
    instance_id: &InstanceId,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, std::time::Duration>>,
{
    let mut listener = bell.listen(instance_id);
    loop {
        // Boxed: the check's future takes memory only while it runs, not for the whole wait.
        match Box::pin(check()).await {
            Ok(answer) => return answer,
            Err(wait) => {
                tokio::select! {
                    () = listener.rung() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
