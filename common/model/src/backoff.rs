//! One policy for the pauses between tries of something that failed (reconnecting to
//! etcd, renewing a registration, re-opening a watch, re-sending a result): doubling
//! from a first pause up to 2 s, so every loop behaves alike.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Pauses between tries: `first`, then doubling up to [`Backoff::CAP`].
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    next: Duration,
}

impl Backoff {
    /// The longest pause.
    pub const CAP: Duration = Duration::from_secs(2);

    /// Pauses starting at `first`.
    pub fn new(first: Duration) -> Self {
        Self { first, next: first }
    }

    /// The pause before the next try; the one after is twice as long, up to the cap.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(Self::CAP);
        pause
    }

    /// Starts again from the first pause (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps for the next pause; false when `cancel` fired first.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let pause = self.next_pause();
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(pause) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(300));
        let pauses: Vec<u128> = (0..5).map(|_| backoff.next_pause().as_millis()).collect();
        assert_eq!(pauses, vec![300, 600, 1200, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), Duration::from_millis(300));
    }
}
