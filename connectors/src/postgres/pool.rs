//! Idle connections kept for reuse. Opening a PostgreSQL connection forks a backend and
//! authenticates (measured with `pgbench -C` on the 2-core development machine under
//! load: ~20 ms each), and every chunk needs three (read, write, verify): for small
//! chunks that was most of the chunk's time. A [`Session`] goes back to its endpoint's
//! pool only when its user says so ([`Session::release`]) after an operation that ended
//! cleanly (no transaction or COPY left open); `RESET ALL` then puts every setting the
//! operation changed (`application_name`, `enable_seqscan`) back to the connection's
//! own. Dropped without that, for instance when an attempt is cancelled mid-COPY or
//! fails, the connection is closed as before.
//!
//! A session that opened a transaction for its operation (a chunk read inside the job's
//! exported snapshot, see [`super::snapshot`]) says so ([`Session::mark_transaction_open`]):
//! [`Session::release`] then ends the transaction before anything else, so a pooled
//! connection never hands an open transaction or an imported snapshot to the next
//! operation; if ending it fails, the connection is closed instead of kept.
//!
//! A connection serves for [`MAX_AGE`] at most: settings an operator changes for new
//! sessions (`ALTER DATABASE ... SET default_transaction_read_only = on` when a target
//! is switched to read-only, a new role setting) reach ferry within that time, and a
//! busy job still opens only about one connection per slot and second (against hundreds
//! of operations a second with small chunks).

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

/// Idle connections at most per endpoint (a worker's slots rarely exceed it; beyond
/// it a released connection is closed).
const MAX_IDLE: usize = 32;

/// How long a connection is used from its opening on.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// An endpoint's idle connections (each with the instant it was opened), shared by its
/// clones.
#[derive(Clone, Default)]
pub struct Idle(Arc<Mutex<Vec<(Client, Instant)>>>);

impl Idle {
    /// A live idle connection younger than [`MAX_AGE`], if one is kept.
    pub fn take(&self) -> Option<(Client, Instant)> {
        let mut idle = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((client, opened)) = idle.pop() {
            if !client.is_closed() && opened.elapsed() < MAX_AGE {
                return Some((client, opened));
            }
        }
        None
    }

    /// Keeps a released connection (an old one is closed by the next [`Idle::take`]).
    fn give_back(&self, client: Client, opened: Instant) {
        if client.is_closed() {
            return;
        }
        let mut idle = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((client, opened));
        }
    }
}

/// A connection of an endpoint: a [`Client`] that returns to the pool on
/// [`Session::release`] and is closed when dropped.
pub struct Session {
    client: Client,
    opened: Instant,
    idle: Idle,
    /// The operation began a transaction that [`Session::release`] must end.
    transaction_open: bool,
}

impl Session {
    pub(super) fn new(client: Client, opened: Instant, idle: Idle) -> Self {
        Self {
            client,
            opened,
            idle,
            transaction_open: false,
        }
    }

    /// Notes that the operation begins a transaction on this connection (before it
    /// sends `BEGIN`): [`Session::release`] rolls it back before pooling the connection.
    pub fn mark_transaction_open(&mut self) {
        self.transaction_open = true;
    }

    /// Gives the connection back for the next operation, with its transaction (if it
    /// began one) rolled back and its settings reset. Call it only when no COPY or
    /// query is left running on it.
    pub async fn release(self) {
        if self.transaction_open && self.client.batch_execute("ROLLBACK").await.is_err() {
            return;
        }
        if self.client.batch_execute("RESET ALL").await.is_ok() {
            self.idle.give_back(self.client, self.opened);
        }
    }
}

impl Deref for Session {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}
