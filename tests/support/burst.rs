//! Bursts of concurrent guesses over HTTP at servers sharing one store (two instances on one
//! Redis node or on a cluster), and the tally of what the budget let through.

use std::sync::Arc;
use std::time::Duration;

use lanlink::http::client::{HttpAgentClient, HttpLinkerClient};
use lanlink::http::DEFAULT_PREFIX;
use lanlink::transport::{AgentServerTransport, LinkerServerTransport, TransportError};
use lanlink::wire::{Announce, LinkRequest};
use lanlink::LocalSecret;

/// A refusal's status and code.
pub fn code_of(err: &TransportError) -> Option<(u16, &str)> {
    match err {
        TransportError::Refused { status, code } => Some((*status, code.as_str())),
        _ => None,
    }
}

/// A client that waits long (a burst queues on the servers).
pub fn patient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .no_proxy()
        .build()
        .expect("client")
}

/// What a burst's answers say.
#[derive(Debug, Default)]
pub struct Tally {
    /// Guesses the server checked: accepted, refused as wrong, or refused `already_linking`
    /// (admitted and charged after the right answer linked).
    pub checked: usize,
    /// Whether the right answer was accepted.
    pub right_ok: bool,
    /// Guesses refused unchecked: by the lockout, or by the `failures` mark it wrote (a guess
    /// admitted before the lockout and checked after it finds the network judged shared).
    pub unchecked: usize,
}

impl Tally {
    /// Prints the tally as `what`'s, then asserts that the budget admitted guesses and checked at
    /// most `threshold` wrong ones (the right answer, when admitted, is checked too, and refunded).
    pub fn assert_wrong_checked_at_most(&self, what: &str, threshold: usize) {
        let (checked, right) = (self.checked, self.right_ok);
        println!("{what}: {checked} checked, the right answer accepted: {right}");
        let wrong_checked = checked - usize::from(right);
        assert!(
            wrong_checked <= threshold,
            "{wrong_checked} wrong guesses checked"
        );
        assert!(checked >= 1, "the budget admits guesses");
    }
}

/// Sends `count` concurrent guesses (`guess(n, right)`), the right answer at a random place,
/// and tallies the answers; only the right answer may be accepted.
pub async fn burst<F, Fut>(count: usize, guess: F) -> Tally
where
    F: Fn(usize, bool) -> Fut,
    Fut: std::future::Future<Output = Result<(), TransportError>> + Send + 'static,
{
    let right_at = rand::Rng::random_range(&mut lanlink::os_rng(), 0..count);
    let tasks: Vec<_> = (0..count)
        .map(|n| tokio::spawn(guess(n, n == right_at)))
        .collect();
    let mut tally = Tally::default();
    for (n, task) in tasks.into_iter().enumerate() {
        let result = task.await.expect("task");
        match &result {
            Ok(()) => {
                assert_eq!(n, right_at, "only the right answer is accepted");
                tally.right_ok = true;
                tally.checked += 1;
            }
            Err(err) => match code_of(err) {
                Some((403 | 404, "invalid_code" | "wrong_secret"))
                | Some((409, "already_linking")) => tally.checked += 1,
                Some((429, "locked_out")) | Some((409, "shared_network")) => tally.unchecked += 1,
                Some((503, "store_contention")) => {}
                _ => panic!("unexpected {err:?}"),
            },
        }
    }
    tally
}

/// A linker's client to the server at `base`, waiting long, as `token`.
pub fn patient_linker(base: &str, token: &str) -> HttpLinkerClient {
    HttpLinkerClient::with_client(
        patient_client(),
        base,
        DEFAULT_PREFIX,
        DEFAULT_PREFIX,
        token,
    )
}

/// `announce` sent to the first of `bases`, then `count` concurrent link requests as `token`
/// guessing its secret, split over all `bases`, the right `secret` at a random place.
pub async fn link_burst(
    bases: &[String],
    token: &str,
    (announce, secret): (Announce, LocalSecret),
    count: usize,
) -> Tally {
    HttpAgentClient::new(&bases[0])
        .expect("client")
        .announce(&announce)
        .await
        .expect("announce");
    let linkers: Arc<Vec<HttpLinkerClient>> = Arc::new(
        bases
            .iter()
            .map(|base| patient_linker(base, token))
            .collect(),
    );
    let id = announce.instance_id;
    burst(count, |n, is_right| {
        let linkers = Arc::clone(&linkers);
        let local_secret = if is_right {
            secret.clone()
        } else {
            LocalSecret::from_bytes([(n % 250) as u8 + 3; 32])
        };
        async move {
            let guess = LinkRequest::new(id, local_secret);
            linkers[n % linkers.len()].link(&guess).await.map(|_| ())
        }
    })
    .await
}
