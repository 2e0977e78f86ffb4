//! The process's memory budget for rows in flight.
//!
//! A running chunk's memory follows the size of the rows it carries, not the chunk's: the
//! source driver's buffer for the row being read, the batch (or raw piece) passing
//! through ferry and the one read ahead, the sink's encoding and its driver's buffer, the
//! read-back that verifies it. With rows of many megabytes, slots × that is what a
//! process holds. The budget bounds how many chunks carry big rows at once, over every
//! slot of the process (all jobs, all worker agents of a `ferryctl local`): a chunk
//! reserves [`FOOTPRINT`] × the largest batch of its table seen so far *before it reads
//! anything* (the drivers' buffers grow before ferry sees a batch), waiting until that
//! much is free, and keeps it until the chunk is verified ([`ChunkMemory`]). The first
//! chunk of a table finds the size out while the table's other chunks wait for its first
//! batch (at most [`LEARN_WAIT`]).
//!
//! A chunk never holds more than the whole budget (its rows then travel alone), and a
//! chunk only waits while it holds nothing of the budget: nothing waits for ever.
//! Reservations are served first come, first served.
//!
//! What the budget cannot bound: a chunk that meets rows bigger than its table's so far
//! goes on with what it holds (plus what is free), so a table whose row sizes vary widely
//! can pass the budget until its largest rows have been seen; and memory the allocator
//! keeps after it is freed. The README's "Memory" gives the measured peaks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The budget when none is configured: 256 MiB.
pub const DEFAULT_BUDGET_BYTES: u64 = 256 << 20;

/// The smallest budget accepted: 16 MiB (a batch is cut at about 8 MiB).
pub const MIN_BUDGET_BYTES: u64 = 16 << 20;

/// Reservations are counted in units of this many bytes (the semaphore counts `u32`s).
const UNIT: u64 = 1 << 10;

/// A pool of bytes that readers reserve for the batches they hand on.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    semaphore: Arc<Semaphore>,
    units: u32,
    /// The largest batch seen per table.
    tables: Arc<Mutex<HashMap<String, TableSize>>>,
    /// Told when a table's first batch is seen (or its learner gave up).
    learned: Arc<Notify>,
}

impl MemoryBudget {
    /// A budget of `bytes` bytes (at least [`MIN_BUDGET_BYTES`]).
    pub fn new(bytes: u64) -> Self {
        let units = u32::try_from(bytes.max(MIN_BUDGET_BYTES) / UNIT).unwrap_or(u32::MAX);
        Self {
            semaphore: Arc::new(Semaphore::new(units as usize)),
            units,
            tables: Arc::default(),
            learned: Arc::default(),
        }
    }

    /// The budget's size in bytes.
    pub fn bytes(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> u64 {
        self.semaphore.available_permits() as u64 * UNIT
    }

    /// Reserves `bytes` (the whole budget when they exceed it), waiting until they are
    /// free. Reservations are served in the order they were asked for.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        let units = self.units_of(bytes);
        // The semaphore is never closed, so acquiring only fails if it were.
        match self.semaphore.clone().acquire_many_owned(units).await {
            Ok(permit) => Reservation {
                _permit: Some(permit),
            },
            Err(_) => Reservation { _permit: None },
        }
    }

    /// Reserves `bytes` if they are free now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        let units = self.units_of(bytes);
        self.semaphore
            .clone()
            .try_acquire_many_owned(units)
            .ok()
            .map(|permit| Reservation {
                _permit: Some(permit),
            })
    }

    fn units_of(&self, bytes: u64) -> u32 {
        let units = bytes.div_ceil(UNIT).max(1);
        u32::try_from(units).unwrap_or(u32::MAX).min(self.units)
    }
}

/// Reserved bytes, released when dropped.
#[derive(Debug)]
#[must_use = "the bytes are released when the reservation is dropped"]
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

/// How many times a batch's size a running chunk holds: the batch, the one read ahead,
/// the drivers' buffers for its rows and the sink's encoding of it.
pub const FOOTPRINT: u64 = 4;

/// How long a chunk waits, before it starts, for the first batch of another chunk of its
/// table to tell how big the table's batches are.
pub const LEARN_WAIT: Duration = Duration::from_secs(2);

/// What the process knows of a table's batches.
#[derive(Clone, Copy, Debug)]
enum TableSize {
    /// One chunk of the table runs to find out; the others wait for it (a while).
    Learning,
    /// The largest batch seen.
    Known(u64),
}

/// What one running chunk holds of a budget: [`FOOTPRINT`] × the largest batch of its
/// table seen in this process, from its start on (the drivers' buffers grow before ferry
/// sees a batch, so the reservation comes first), growing with bigger batches. The first
/// chunk of a table finds the size out while the others wait for it (at most
/// [`LEARN_WAIT`]). Released when dropped.
#[derive(Debug)]
pub struct ChunkMemory {
    budget: MemoryBudget,
    table: String,
    learner: bool,
    held: Vec<Reservation>,
    bytes: u64,
    /// The largest batch this chunk has carried.
    largest: u64,
}

impl ChunkMemory {
    /// Before a chunk of `table` reads anything: reserves for the table's largest batch
    /// seen so far, or finds it out.
    pub async fn start(budget: &MemoryBudget, table: &str) -> Self {
        let mut memory = Self {
            budget: budget.clone(),
            table: table.to_string(),
            learner: false,
            held: Vec::new(),
            bytes: 0,
            largest: 0,
        };
        let deadline = tokio::time::Instant::now() + LEARN_WAIT;
        loop {
            let learned = budget.learned.notified();
            tokio::pin!(learned);
            learned.as_mut().enable();
            let size = {
                let mut tables = lock(&budget.tables);
                match tables.get(table) {
                    Some(size) => Some(*size),
                    None => {
                        tables.insert(table.to_string(), TableSize::Learning);
                        None
                    }
                }
            };
            match size {
                None => {
                    memory.learner = true;
                    return memory;
                }
                Some(TableSize::Known(bytes)) => {
                    memory.cover(bytes).await;
                    return memory;
                }
                Some(TableSize::Learning) => {
                    if tokio::time::timeout_at(deadline, learned).await.is_err() {
                        // The first chunk is slow to its first batch: go on without.
                        return memory;
                    }
                }
            }
        }
    }

    /// Holds more for a batch of `batch_bytes` when it can without waiting. A chunk that
    /// meets a bigger batch than its table's so far goes on (it has read the rows
    /// already, and waiting would keep them and its read-ahead in memory): it holds what
    /// was free, and the table's next chunks reserve the new size before they start.
    pub async fn cover(&mut self, batch_bytes: u64) {
        self.learn(batch_bytes);
        let needed = batch_bytes
            .saturating_mul(FOOTPRINT)
            .min(self.budget.bytes());
        if needed <= self.bytes {
            return;
        }
        if self.bytes == 0 {
            // Nothing held yet (the table's first chunk, or one that started before the
            // size was known): wait for it, before the rows go on.
            self.held.push(self.budget.reserve(needed).await);
            self.bytes = needed;
            return;
        }
        let more = needed - self.bytes;
        if let Some(reservation) = self.budget.try_reserve(more) {
            self.held.push(reservation);
            self.bytes = needed;
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records the table's largest batch: the process-wide map is touched only when this
    /// chunk meets a bigger batch than it has seen (not for every batch).
    fn learn(&mut self, batch_bytes: u64) {
        if batch_bytes <= self.largest && !self.learner {
            return;
        }
        self.largest = self.largest.max(batch_bytes);
        {
            let mut tables = lock(&self.budget.tables);
            match tables.get_mut(&self.table) {
                Some(TableSize::Known(bytes)) => *bytes = (*bytes).max(batch_bytes),
                Some(size) => *size = TableSize::Known(batch_bytes),
                None => {
                    tables.insert(self.table.clone(), TableSize::Known(batch_bytes));
                }
            }
        }
        if std::mem::take(&mut self.learner) {
            self.budget.learned.notify_waiters();
        }
    }
}

impl Drop for ChunkMemory {
    fn drop(&mut self) {
        // A learner that saw no batch (an empty chunk, an error): another may learn.
        if self.learner {
            let mut tables = lock(&self.budget.tables);
            if matches!(tables.get(&self.table), Some(TableSize::Learning)) {
                tables.remove(&self.table);
            }
            drop(tables);
            self.budget.learned.notify_waiters();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

static PROCESS: OnceLock<MemoryBudget> = OnceLock::new();

/// Sets the process's budget, once, before any chunk runs (the binaries do it from their
/// configuration). Returns `false` when a budget was set or used already, which then
/// stays.
pub fn configure(bytes: u64) -> bool {
    PROCESS.set(MemoryBudget::new(bytes)).is_ok()
}

/// The process's budget (the default one when [`configure`] was not called).
pub fn process_budget() -> &'static MemoryBudget {
    PROCESS.get_or_init(|| MemoryBudget::new(DEFAULT_BUDGET_BYTES))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_reservation_waits_until_bytes_are_released() {
        let budget = MemoryBudget::new(MIN_BUDGET_BYTES);
        let first = budget.reserve(10 << 20).await;
        assert_eq!(budget.available(), 6 << 20);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), budget.reserve(10 << 20))
                .await
                .is_err(),
            "10 MiB more do not fit in 16 MiB while the first 10 are reserved"
        );
        assert_eq!(
            budget.available(),
            6 << 20,
            "a reservation given up holds nothing"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), budget.reserve(10 << 20))
            .await
            .expect("released bytes are handed to the next reservation");
        assert_eq!(budget.available(), 6 << 20);
        drop(second);
        assert_eq!(budget.available(), 16 << 20);
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_budget_takes_all_of_it_and_does_not_wait_for_ever() {
        let budget = MemoryBudget::new(MIN_BUDGET_BYTES);
        let huge = budget.reserve(1 << 30).await;
        assert_eq!(budget.available(), 0);
        drop(huge);
        assert_eq!(budget.available(), budget.bytes());
    }

    #[tokio::test]
    async fn a_chunk_grows_with_its_largest_batch_when_the_bytes_are_free() {
        let budget = MemoryBudget::new(64 << 20);
        let mut first = ChunkMemory::start(&budget, "t").await;
        first.cover(4 << 20).await;
        assert_eq!(first.bytes(), 16 << 20, "FOOTPRINT × the batch");
        first.cover(1 << 20).await;
        assert_eq!(
            first.bytes(),
            16 << 20,
            "a smaller batch keeps what is held"
        );
        let mut second = ChunkMemory::start(&budget, "u").await;
        second.cover(10 << 20).await;
        assert_eq!(second.bytes(), 40 << 20);
        assert_eq!(budget.available(), 8 << 20);
        // The first chunk now meets a batch needing 32 MiB: 16 more are not free, so it
        // goes on holding its 16 (it has the rows already); once they are, it takes them.
        first.cover(8 << 20).await;
        assert_eq!(first.bytes(), 16 << 20);
        drop(second);
        first.cover(8 << 20).await;
        assert_eq!(first.bytes(), 32 << 20);
        // A batch bigger than the budget: the whole budget, the rows travel alone.
        first.cover(1 << 30).await;
        assert_eq!(first.bytes(), 64 << 20);
        drop(first);
        assert_eq!(budget.available(), 64 << 20);
        // The table's next chunk reserves for its largest batch before it reads.
        let next = ChunkMemory::start(&budget, "t").await;
        assert_eq!(next.bytes(), 64 << 20);
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_of_a_table_wait_for_its_first_batch_then_reserve_before_reading() {
        let budget = MemoryBudget::new(64 << 20);
        let mut learner = ChunkMemory::start(&budget, "big").await;
        assert_eq!(learner.bytes(), 0, "the first chunk finds the size out");
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { ChunkMemory::start(&budget, "big").await })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "the second chunk waits for the first batch"
        );
        learner.cover(5 << 20).await;
        let second = waiting.await.expect("task");
        assert_eq!(second.bytes(), 20 << 20, "reserved before reading anything");
        assert_eq!(budget.available(), 24 << 20);
        // A learner that saw nothing lets the next chunk learn; a slow one is waited for
        // LEARN_WAIT at most.
        let empty = ChunkMemory::start(&budget, "other").await;
        drop(empty);
        let next = ChunkMemory::start(&budget, "other").await;
        let started = tokio::time::Instant::now();
        let late = ChunkMemory::start(&budget, "other").await;
        assert_eq!(started.elapsed(), LEARN_WAIT);
        assert_eq!((next.bytes(), late.bytes()), (0, 0));
    }

    #[test]
    fn a_budget_below_the_minimum_is_raised_to_it_and_bytes_round_up() {
        let budget = MemoryBudget::new(1);
        assert_eq!(budget.bytes(), MIN_BUDGET_BYTES);
        assert_eq!(budget.units_of(1), 1);
        assert_eq!(budget.units_of(1025), 2);
    }
}
