//! Idle connections kept for reuse. Opening a PostgreSQL connection forks a backend and
//! authenticates (measured with `pgbench -C` on the 2-core development machine under
//! load: ~20 ms each), and every chunk needs three (read, write, verify): for small
//! chunks that was most of the chunk's time. A [`Session`] goes back to its endpoint's
//! pool only when its user says so ([`Session::release`]) after an operation that ended
//! cleanly (no transaction or COPY left open); `RESET ALL` then puts every setting the
//! operation changed (`application_name`, `enable_seqscan`) back to the connection's
//! own. Dropped without that, for instance when an attempt is cancelled mid-COPY or
//! fails, the connection is closed as before.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use tokio_postgres::Client;

/// Idle connections at most per endpoint (a worker's slots rarely exceed it; beyond
/// it a released connection is closed).
const MAX_IDLE: usize = 32;

/// An endpoint's idle connections, shared by its clones.
#[derive(Clone, Default)]
pub struct Idle(Arc<Mutex<Vec<Client>>>);

impl Idle {
    /// A live idle connection, if one is kept.
    pub fn take(&self) -> Option<Client> {
        let mut idle = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(client) = idle.pop() {
            if !client.is_closed() {
                return Some(client);
            }
        }
        None
    }

    fn give_back(&self, client: Client) {
        if client.is_closed() {
            return;
        }
        let mut idle = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(client);
        }
    }
}

/// A connection of an endpoint: a [`Client`] that returns to the pool on
/// [`Session::release`] and is closed when dropped.
pub struct Session {
    client: Client,
    idle: Idle,
}

impl Session {
    pub(super) fn new(client: Client, idle: Idle) -> Self {
        Self { client, idle }
    }

    /// Gives the connection back for the next operation, with its settings reset. Call
    /// it only when nothing is left open on it.
    pub async fn release(self) {
        if self.client.batch_execute("RESET ALL").await.is_ok() {
            self.idle.give_back(self.client);
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
