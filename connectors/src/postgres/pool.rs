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
//! A target's reads by key (a chunk's verification, count or read-back) prefer the key's
//! index (`SET enable_seqscan = off`, [`Session::prefer_key_index`]); a connection keeps
//! that setting in the pool, and the next such read on it sends nothing: every operation
//! of a target's pooled sessions reads or deletes by key range (the chunk's write sets it
//! for its own transaction anyway), so it is set once per connection rather than set and
//! reset around every verification (two round trips per chunk). [`Session::release`]
//! still resets everything, that setting included.
//!
//! A connection serves for [`MAX_AGE`] at most, and an idle one is closed then too (a
//! task per endpoint while any is kept): settings an operator changes for new
//! sessions (`ALTER DATABASE ... SET default_transaction_read_only = on` when a target
//! is switched to read-only, a new role setting) reach ferry within that time, and a
//! busy job still opens only about one connection per slot every five seconds (against
//! hundreds of operations a second with small chunks). It was 1 s: with 3,000 chunks of
//! 100 rows on a loaded 2-core machine that opened 600–1,100 backends per run (each one
//! forked, authenticated, its catalog caches filled and its statements prepared again),
//! a large part of PostgreSQL's CPU for the job.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Row, Statement};

use super::split::PREFER_KEY_INDEX;

/// Idle connections at most per endpoint (a worker's slots rarely exceed it; beyond
/// it a released connection is closed).
const MAX_IDLE: usize = 32;

/// How long a connection is used from its opening on.
pub const MAX_AGE: Duration = Duration::from_secs(5);

/// A connection that read a message (a row of a COPY) bigger than this is closed rather
/// than pooled: tokio-postgres's read buffer grows to hold a whole message and never
/// shrinks, so a pooled connection would keep that memory, outside the process's memory
/// budget, for as long as it lives (the MySQL connector does the same).
pub const BIG_ROW_BYTES: usize = 1 << 20;

/// Prepared statements kept at most per connection ([`Session::query_prepared`]); beyond
/// it the connection's statements are forgotten (closed) and prepared again.
const MAX_PREPARED: usize = 64;

/// A connection's prepared statements by their text.
type Prepared = HashMap<String, Statement>;

/// An idle connection and what it carries from earlier operations.
pub struct Kept {
    client: Client,
    opened: Instant,
    prepared: Prepared,
    /// `enable_seqscan = off` is set on it ([`Session::prefer_key_index`]).
    key_index_preferred: bool,
}

/// An endpoint's idle connections, shared by its clones.
#[derive(Clone, Default)]
pub struct Idle(Arc<IdleInner>);

#[derive(Default)]
struct IdleInner {
    kept: Mutex<Vec<Kept>>,
    /// A task closes the kept connections as they pass [`MAX_AGE`] ([`Idle::reap`]).
    reaping: AtomicBool,
}

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        self.0
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A live idle connection younger than [`MAX_AGE`], if one is kept.
    fn take(&self) -> Option<Kept> {
        let mut idle = self.lock();
        while let Some(kept) = idle.pop() {
            if !kept.client.is_closed() && kept.opened.elapsed() < MAX_AGE {
                return Some(kept);
            }
        }
        None
    }

    /// Keeps a released connection, and makes sure a task closes it once it is older
    /// than [`MAX_AGE`] (without it, a process left idle kept its backends open for
    /// ever: 40 idle worker processes held all of a server's connections, and a job
    /// that needed one new connection waited for ever).
    fn give_back(&self, kept: Kept) {
        if kept.client.is_closed() {
            return;
        }
        {
            let mut idle = self.lock();
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push(kept);
        }
        if !self.0.reaping.swap(true, Ordering::AcqRel)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(self.clone().reap());
        }
    }

    /// Closes kept connections as they pass [`MAX_AGE`]; ends once none is kept.
    async fn reap(self) {
        loop {
            let next = {
                let mut idle = self.lock();
                idle.retain(|kept| !kept.client.is_closed() && kept.opened.elapsed() < MAX_AGE);
                match idle.iter().map(|kept| kept.opened).min() {
                    Some(oldest) => oldest + MAX_AGE,
                    None => {
                        self.0.reaping.store(false, Ordering::Release);
                        return;
                    }
                }
            };
            tokio::time::sleep_until(next.into()).await;
        }
    }

    /// A kept connection as a session, or `client` (just opened) when none is kept.
    pub async fn session<E>(
        &self,
        open: impl std::future::Future<Output = Result<Client, E>>,
    ) -> Result<Session, E> {
        let kept = match self.take() {
            Some(kept) => kept,
            None => Kept {
                client: open.await?,
                opened: Instant::now(),
                prepared: Prepared::default(),
                key_index_preferred: false,
            },
        };
        Ok(Session {
            client: kept.client,
            opened: kept.opened,
            idle: self.clone(),
            prepared: Mutex::new(kept.prepared),
            transaction_open: false,
            key_index_preferred: kept.key_index_preferred,
            largest_read: 0,
        })
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
    /// `enable_seqscan = off` is set on the connection.
    key_index_preferred: bool,
    /// The largest message an operation read on it ([`Session::note_read`]).
    largest_read: usize,
}

impl Session {
    /// Makes the planner prefer the key's index over a sequential scan for the rest of
    /// the session (`SET enable_seqscan = off`): sent once per connection, kept in the
    /// pool with it (reads by key range of a freshly loaded target, whose statistics
    /// are stale, would otherwise scan the table). Only target sessions use it.
    pub async fn prefer_key_index(&mut self) -> Result<(), tokio_postgres::Error> {
        if !self.key_index_preferred {
            self.client.batch_execute(PREFER_KEY_INDEX).await?;
            self.key_index_preferred = true;
        }
        Ok(())
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

    /// Notes the size of a message (a COPY row) read on the connection: after one bigger
    /// than [`BIG_ROW_BYTES`], releasing it closes it instead of pooling it.
    pub fn note_read(&mut self, bytes: usize) {
        self.largest_read = self.largest_read.max(bytes);
    }

    /// Whether the connection read a message over [`BIG_ROW_BYTES`] and must not be
    /// pooled.
    fn grew_buffers(&self) -> bool {
        self.largest_read > BIG_ROW_BYTES
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
        if self.grew_buffers() {
            return;
        }
        if self.transaction_open && self.client.batch_execute("ROLLBACK").await.is_err() {
            return;
        }
        if self.client.batch_execute("RESET ALL").await.is_ok() {
            let prepared = self.prepared.into_inner().unwrap_or_default();
            self.idle.give_back(Kept {
                client: self.client,
                opened: self.opened,
                prepared,
                key_index_preferred: false,
            });
        }
    }
}

impl Session {
    /// [`Session::release`] for an operation that changed no setting of the session
    /// but [`Session::prefer_key_index`] (a source's chunk read: no `SET`, at most the
    /// transaction it marked open; a chunk's first write attempt: `SET LOCAL` only; a
    /// verification): no `RESET ALL`, one round trip less per chunk.
    pub async fn release_settings_unchanged(self) {
        if self.grew_buffers() {
            return;
        }
        if self.transaction_open && self.client.batch_execute("ROLLBACK").await.is_err() {
            return;
        }
        let prepared = self.prepared.into_inner().unwrap_or_default();
        self.idle.give_back(Kept {
            client: self.client,
            opened: self.opened,
            prepared,
            key_index_preferred: self.key_index_preferred,
        });
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
