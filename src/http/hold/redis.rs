//! [`RedisBell`]: rings across server instances through Redis pub/sub (features `redis` and
//! `http-server`). It must not carry anything but a bell's tag: no instance id, no message.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::{tag_of, Bell, LinkBell, Listener, Tag};
use crate::id::InstanceId;

/// Rings queued for publication at most; past it a ring is dropped (its held requests answer at
/// their next check instead).
const PUBLISH_QUEUE: usize = 4096;

/// The longest pause between two attempts to (re)connect to Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(3);

/// Why [`RedisBell::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisBellError {
    /// No node URL was given, or one does not parse.
    #[error("bad Redis URL")]
    Url,
    /// No node could be subscribed to before the timeout.
    #[error("no Redis node answered the subscription")]
    Unreachable,
}

/// A [`Bell`] shared by every server instance on one Redis (one node or a cluster): a ring is
/// heard by this instance's held requests at once and published on `channel` (the 16-byte tag
/// of the instance id, never the id) for the other instances, each of which subscribes to the
/// channel once, on one connection, and rings its own.
///
/// Nothing is lost for good: when the subscription drops, the bell resubscribes with back-off
/// (100 ms doubling to 3 s, trying each node in turn) and then rings every local hold once, so
/// each looks again at the store for what it may have missed; a ring published while no
/// instance listened costs its held requests one recheck (the server's announce interval).
/// Classic `PUBLISH` reaches subscribers on every node of a cluster.
///
/// ```no_run
/// # async fn demo() -> Result<(), lanlink::http::hold::RedisBellError> {
/// use lanlink::http::hold::RedisBell;
/// let bell = RedisBell::connect(&["redis://127.0.0.1:6379/".to_owned()], "lanlink:bell").await?;
/// // Give it to the router of each instance: `router_with_bell(server, auth, prefix, Arc::new(bell))`.
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBell {
    local: LinkBell,
    publish: mpsc::Sender<Tag>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for RedisBell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBell")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// The bell's two tasks, stopped when the last handle drops.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl RedisBell {
    /// Subscribes to `channel` on the first of `nodes` that answers (each a `redis://` URL; for
    /// a cluster, any of its nodes) and returns once the subscription is confirmed, so that no
    /// ring published after this returns is missed. Fails if none answers within 5 s.
    pub async fn connect(nodes: &[String], channel: &str) -> Result<Self, RedisBellError> {
        let clients = nodes
            .iter()
            .map(|url| redis::Client::open(url.as_str()).map_err(|_| RedisBellError::Url))
            .collect::<Result<Vec<_>, _>>()?;
        if clients.is_empty() {
            return Err(RedisBellError::Url);
        }
        let clients = Arc::new(clients);
        let local = LinkBell::default();
        let (ready_tx, ready_rx) = oneshot::channel();
        let subscriber = tokio::spawn(subscribe(
            Arc::clone(&clients),
            channel.to_owned(),
            local.clone(),
            ready_tx,
        ));
        let (publish, queue) = mpsc::channel(PUBLISH_QUEUE);
        let publisher = tokio::spawn(publish_rings(clients, channel.to_owned(), queue));
        let tasks = Arc::new(Tasks(vec![subscriber, publisher]));
        match tokio::time::timeout(Duration::from_secs(5), ready_rx).await {
            Ok(Ok(())) => Ok(Self {
                local,
                publish,
                _tasks: tasks,
            }),
            _ => Err(RedisBellError::Unreachable),
        }
    }
}

impl RedisBell {
    /// How many instances have listeners in this process ([`LinkBell::listened`]).
    pub fn listened(&self) -> usize {
        self.local.listened()
    }
}

impl Bell for RedisBell {
    fn ring(&self, instance_id: &InstanceId) {
        let tag = tag_of(instance_id);
        self.local.ring_tag(&tag);
        if self.publish.try_send(tag).is_err() {
            tracing::debug!("bell publish queue full: a ring waits for its next check");
        }
    }

    fn listen(&self, instance_id: &InstanceId) -> Listener {
        self.local.listen(instance_id)
    }
}

/// Next node and back-off after a failed connection.
fn next_attempt(node: &mut usize, nodes: usize, backoff: &mut Duration) {
    *node = (*node + 1) % nodes;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

/// The subscription: rings the local holds of every tag published on `channel`, and all of
/// them after each (re)subscription.
async fn subscribe(
    clients: Arc<Vec<redis::Client>>,
    channel: String,
    local: LinkBell,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let (mut node, mut backoff) = (0, Duration::from_millis(100));
    loop {
        let subscribed = async {
            let mut pubsub = clients[node].get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                backoff = Duration::from_millis(100);
                match ready.take() {
                    Some(ready) => {
                        let _ = ready.send(());
                    }
                    // Back after a gap: every hold looks again for what it may have missed.
                    None => local.ring_all(),
                }
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    if let Ok(tag) = Tag::try_from(message.get_payload_bytes()) {
                        local.ring_tag(&tag);
                    }
                }
                tracing::warn!("bell subscription lost; resubscribing");
                local.ring_all();
            }
            Err(err) => tracing::warn!(error = %err, "bell subscription failed"),
        }
        tokio::time::sleep(backoff).await;
        next_attempt(&mut node, clients.len(), &mut backoff);
    }
}

/// Publishes each queued tag on `channel`, reconnecting as needed (a tag whose publication
/// fails is dropped: its holds answer at their next check).
async fn publish_rings(
    clients: Arc<Vec<redis::Client>>,
    channel: String,
    mut queue: mpsc::Receiver<Tag>,
) {
    let (mut node, mut backoff) = (0, Duration::from_millis(100));
    let mut connection = None;
    while let Some(tag) = queue.recv().await {
        if connection.is_none() {
            match clients[node].get_multiplexed_async_connection().await {
                Ok(made) => {
                    connection = Some(made);
                    backoff = Duration::from_millis(100);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "bell publisher cannot connect");
                    tokio::time::sleep(backoff).await;
                    next_attempt(&mut node, clients.len(), &mut backoff);
                    continue;
                }
            }
        }
        if let Some(made) = connection.as_mut() {
            let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&tag[..])
                .query_async(made)
                .await;
            if let Err(err) = published {
                tracing::warn!(error = %err, "bell publish failed");
                connection = None;
            }
        }
    }
}
