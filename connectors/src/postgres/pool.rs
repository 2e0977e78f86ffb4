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

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Row, Statement};

/// Idle connections at most per endpoint (a worker's slots rarely exceed it; beyond
/// it a released connection is closed).
const MAX_IDLE: usize = 32;

/// How long a connection is used from its opening on.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Prepared statements kept at most per connection ([`Session::query_prepared`]); beyond
/// it the connection's statements are forgotten (closed) and prepared again.
const MAX_PREPARED: usize = 64;

/// A connection's prepared statements by their text.
type Prepared = HashMap<String, Statement>;

/// An endpoint's idle connections (each with the instant it was opened), shared by its
/// clones.
#[derive(Clone, Default)]
pub struct Idle(Arc<Mutex<Vec<(Client, Instant, Prepared)>>>);

impl Idle {
    /// A live idle connection younger than [`MAX_AGE`], if one is kept.
    pub fn take(&self) -> Option<(Client, Instant, Prepared)> {
        let mut idle = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((client, opened, prepared)) = idle.pop() {
            if !client.is_closed() && opened.elapsed() < MAX_AGE {
                return Some((client, opened, prepared));
            }
        }
        None
    }

    /// Keeps a released connection (an old one is closed by the next [`Idle::take`]).
    fn give_back(&self, client: Client, opened: Instant, prepared: Prepared) {
        if client.is_closed() {
            return;
        }
        let mut idle = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((client, opened, prepared));
        }
    }
}

/// A connection of an endpoint: a [`Client`] that returns to the pool on
/// [`Session::release`] and is closed when dropped.
pub struct Session {
    client: Client,
    opened: Instant,
    idle: Idle,
    /// Statements prepared on this connection, kept with it in the pool.
    prepared: Mutex<Prepared>,
    /// The operation began a transaction that [`Session::release`] must end.
    transaction_open: bool,
}

impl Session {
    pub(super) fn new(client: Client, opened: Instant, prepared: Prepared, idle: Idle) -> Self {
        Self {
            client,
            opened,
            idle,
            prepared: Mutex::new(prepared),
            transaction_open: false,
        }
    }

    /// Runs `sql` (no parameters: values written in it) as a statement prepared once per
    /// connection. A statement without parameters is planned once, when prepared, and
    /// that plan serves every later run on the connection (PostgreSQL plans it again by
    /// itself when a table it reads changes): for the catalog reads every chunk's read,
    /// write and verification make, planning them was the largest part of PostgreSQL's
    /// work per chunk.
    pub async fn query_prepared(&self, sql: &str) -> Result<Vec<Row>, tokio_postgres::Error> {
        let kept = self.lock_prepared().get(sql).cloned();
        let statement = match kept {
            Some(statement) => statement,
            None => {
                let statement = self.client.prepare(sql).await?;
                let mut prepared = self.lock_prepared();
                if prepared.len() >= MAX_PREPARED {
                    prepared.clear();
                }
                prepared.insert(sql.to_owned(), statement.clone());
                statement
            }
        };
        self.client.query(&statement, &[]).await
    }

    fn lock_prepared(&self) -> std::sync::MutexGuard<'_, Prepared> {
        self.prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            let prepared = self.prepared.into_inner().unwrap_or_default();
            self.idle.give_back(self.client, self.opened, prepared);
        }
    }
}

impl Session {
    /// [`Session::release`] for an operation that changed no setting of the session
    /// (a source's chunk read: no `SET`, at most the transaction it marked open): no
    /// `RESET ALL`, one round trip less per chunk.
    pub async fn release_settings_unchanged(self) {
        if self.transaction_open && self.client.batch_execute("ROLLBACK").await.is_err() {
            return;
        }
        let prepared = self.prepared.into_inner().unwrap_or_default();
        self.idle.give_back(self.client, self.opened, prepared);
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
