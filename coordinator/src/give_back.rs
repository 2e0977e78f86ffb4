//! No idle tail, second half: a running chunk far slower than the other chunks of its
//! table is handed back and cut, so that idle workers share what is left of it.
//!
//! The planner sizes chunks by rows; a chunk can still run far longer than its table's
//! others (its rows are much wider, its key range holds far more rows than the
//! statistics said, its source pages are cold). When the scheduler has free copy slots
//! and nothing left to start, [`choose_give_backs`] picks the running chunks that have
//! run [`SLOWER_THAN_MEDIAN`] times longer than their table's verified chunks did for as
//! many rows (the median time per estimated row, times the chunk's estimated rows: a
//! small partition's chunk does not make a big one look slow), and at least
//! [`MIN_RUNNING`], while they have streamed less than
//! [`MAX_DONE_FRACTION`] of their estimated rows. Each is asked to hand its chunk back
//! ([`ferry_model::execution::ChunkTask::give_back`]):
//!
//! - its attempt refuses its next batch before the batch reaches the target, so it ends
//!   `Requeued` with nothing committed (a request that comes after the copy committed
//!   changes nothing: the chunk ends as it would have);
//! - only a chunk's first attempt is handed back: no earlier attempt exists that could
//!   still write, so the store may cut it ([`ferry_coordination::Coordination::split_chunk`]
//!   at attempt 1), the chunk keeping the first piece and its attempt count;
//! - it is cut like a queued chunk ([`crate::idle_split::cut_range`]: single integer keys
//!   only), into one piece per free slot plus its own (at most
//!   [`crate::idle_split::MAX_PIECES`]).
//!
//! What the attempt had streamed is copied again by the pieces: the price of the cut,
//! paid only when the chunk had done less than half its work. A chunk is handed back at
//! most once: its pieces (as wide as it was) run to their end. Everything here is pure.

use std::time::Duration;

use ferry_model::ids::ChunkId;

use crate::idle_split::MAX_PIECES;

/// A running chunk is handed back when it has run this many times what its table's
/// median chunk took per row, for its rows.
pub const SLOWER_THAN_MEDIAN: u32 = 3;

/// Never sooner than this: a short chunk is cheaper to finish than to cut.
pub const MIN_RUNNING: Duration = Duration::from_secs(2);

/// Verified chunks of the table needed before its median counts.
pub const MIN_FINISHED: usize = 3;

/// Not once the chunk streamed this share of its estimated rows: cutting it would throw
/// away more than it saves.
pub const MAX_DONE_FRACTION: f64 = 0.5;

/// How often the scheduler looks for chunks to hand back while it could use them.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

/// A chunk's first attempt, copying (not verifying), as the scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunningCopy {
    /// The chunk.
    pub chunk: ChunkId,
    /// Its table.
    pub table_index: usize,
    /// How long the attempt has run.
    pub elapsed: Duration,
    /// Rows it streamed so far.
    pub rows_streamed: u64,
    /// Rows the planner expects in it.
    pub estimated_rows: u64,
}

/// How long a table's verified chunks took in this run, per estimated row.
#[derive(Clone, Debug, Default)]
pub struct TableDurations {
    /// Seconds per estimated row of each verified chunk, by table.
    per_table: Vec<Vec<f64>>,
}

impl TableDurations {
    /// Records a chunk of `table_index` of `estimated_rows` that ran `took` to its
    /// verified end.
    pub fn finished(&mut self, table_index: usize, took: Duration, estimated_rows: u64) {
        if self.per_table.len() <= table_index {
            self.per_table.resize_with(table_index + 1, Vec::new);
        }
        self.per_table[table_index].push(took.as_secs_f64() / estimated_rows.max(1) as f64);
    }

    /// What a chunk of `estimated_rows` of the table should take: the median time per
    /// row of its verified chunks, once [`MIN_FINISHED`] of them ended, times its rows.
    pub fn expected(&self, table_index: usize, estimated_rows: u64) -> Option<Duration> {
        let per_row = self.per_table.get(table_index)?;
        if per_row.len() < MIN_FINISHED {
            return None;
        }
        let mut sorted = per_row.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        Duration::try_from_secs_f64(median * estimated_rows.max(1) as f64).ok()
    }
}

/// Which running chunks to hand back, and into how many pieces each (its own slot plus
/// free ones), slowest against its median first, while `free_slots` last.
pub fn choose_give_backs(
    free_slots: usize,
    running: &[RunningCopy],
    durations: &TableDurations,
) -> Vec<(ChunkId, usize)> {
    let mut candidates: Vec<(f64, ChunkId)> = running
        .iter()
        .filter_map(|copy| {
            let expected = durations.expected(copy.table_index, copy.estimated_rows)?;
            let slow = copy.elapsed >= MIN_RUNNING
                && copy.elapsed > expected.saturating_mul(SLOWER_THAN_MEDIAN);
            let early =
                (copy.rows_streamed as f64) < MAX_DONE_FRACTION * copy.estimated_rows.max(1) as f64;
            (slow && early).then(|| {
                let behind = copy.elapsed.as_secs_f64() / expected.as_secs_f64().max(1e-3);
                (behind, copy.chunk)
            })
        })
        .collect();
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut free = free_slots;
    let mut chosen = Vec::new();
    for (_, chunk) in candidates {
        if free == 0 {
            break;
        }
        let pieces = (free + 1).min(MAX_PIECES);
        free -= pieces - 1;
        chosen.push((chunk, pieces));
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(value: f64) -> Duration {
        Duration::from_secs_f64(value)
    }

    /// Chunks of 10,000 rows that took `each` seconds.
    fn durations(table: usize, each: &[f64]) -> TableDurations {
        let mut durations = TableDurations::default();
        for took in each {
            durations.finished(table, secs(*took), 10_000);
        }
        durations
    }

    fn copy(chunk: u32, elapsed: f64, rows_streamed: u64) -> RunningCopy {
        RunningCopy {
            chunk: ChunkId(chunk),
            table_index: 0,
            elapsed: secs(elapsed),
            rows_streamed,
            estimated_rows: 10_000,
        }
    }

    #[test]
    fn a_chunk_far_slower_than_its_tables_median_is_cut_for_the_free_slots() {
        let durations = durations(0, &[1.0, 1.2, 0.9, 1.1]);
        let expected = durations.expected(0, 10_000).expect("a median");
        assert!((expected.as_secs_f64() - 1.1).abs() < 1e-9, "{expected:?}");
        let running = [copy(7, 4.0, 1_000), copy(8, 1.5, 1_000)];
        assert_eq!(
            choose_give_backs(3, &running, &durations),
            vec![(ChunkId(7), 4)]
        );
    }

    #[test]
    fn nothing_is_handed_back_without_free_slots_or_a_median() {
        let running = [copy(7, 10.0, 0)];
        let known = durations(0, &[1.0, 1.0, 1.0]);
        assert!(choose_give_backs(0, &running, &known).is_empty());
        let too_few = durations(0, &[1.0, 1.0]);
        assert!(choose_give_backs(3, &running, &too_few).is_empty());
        let other_table = durations(1, &[1.0, 1.0, 1.0]);
        assert!(choose_give_backs(3, &running, &other_table).is_empty());
    }

    #[test]
    fn a_chunk_is_slow_for_its_rows_not_against_smaller_chunks() {
        // A small partition's chunks of 1,000 rows took 0.2 s each: a chunk of 10,000
        // rows is expected to take 2 s, so 5 s is not three times too slow; 7 s is.
        let mut small = TableDurations::default();
        for _ in 0..3 {
            small.finished(0, secs(0.2), 1_000);
        }
        assert!(choose_give_backs(3, &[copy(1, 5.0, 0)], &small).is_empty());
        assert_eq!(
            choose_give_backs(3, &[copy(1, 7.0, 0)], &small),
            vec![(ChunkId(1), 4)]
        );
    }

    #[test]
    fn a_chunk_half_done_or_short_lived_runs_on() {
        let fast = durations(0, &[0.1, 0.1, 0.1]);
        // Far over the median, but under MIN_RUNNING.
        assert!(choose_give_backs(3, &[copy(1, 1.5, 0)], &fast).is_empty());
        // Slow, but half of its rows are through.
        assert!(choose_give_backs(3, &[copy(1, 9.0, 5_000)], &fast).is_empty());
        assert_eq!(
            choose_give_backs(3, &[copy(1, 9.0, 4_999)], &fast),
            vec![(ChunkId(1), 4)]
        );
    }

    #[test]
    fn the_slowest_against_its_median_goes_first_and_the_slots_are_shared() {
        let durations = durations(0, &[1.0, 1.0, 1.0]);
        let running = [copy(1, 4.0, 0), copy(2, 9.0, 0), copy(3, 5.0, 0)];
        // Two free slots: the slowest takes both (3 pieces), none are left for the others.
        assert_eq!(
            choose_give_backs(2, &running, &durations),
            vec![(ChunkId(2), 3)]
        );
        // Many free slots: each is cut, at most MAX_PIECES pieces.
        let chosen = choose_give_backs(40, &running, &durations);
        assert_eq!(
            chosen,
            vec![
                (ChunkId(2), MAX_PIECES),
                (ChunkId(3), MAX_PIECES),
                (ChunkId(1), 11)
            ]
        );
    }
}
