//! Test support shared by every crate's tests (feature `testing`): the one way a test
//! waits for a condition instead of sleeping.

use std::future::Future;
use std::time::Duration;

/// How often a condition is checked again.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// The condition did not hold within the timeout.
#[derive(Debug, thiserror::Error)]
#[error("condition not met within {timeout:?}")]
pub struct TimedOut {
    /// How long was waited.
    pub timeout: Duration,
}

/// Waits until `condition` holds, checking it every 20 ms (on tokio's clock, so a test
/// with paused time advances instead of sleeping), for at most `timeout`.
pub async fn wait_until(
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<(), TimedOut> {
    wait_until_async(timeout, move || std::future::ready(condition())).await
}

/// [`wait_until`] for a condition that must await (a store read, an RPC).
pub async fn wait_until_async<F, Fut>(timeout: Duration, mut condition: F) -> Result<(), TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TimedOut { timeout });
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
