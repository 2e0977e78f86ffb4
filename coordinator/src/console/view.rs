//! What the console's job page shows of a job's chunks, as pure functions: progress per
//! table, the chunk map (aggregated into at most [`MAX_MAP_CELLS`] cells, so a job of
//! 100,000 chunks is drawn from a few kilobytes), and failures grouped by reason.

use ferry_model::throttle::ThrottlePolicy;
use serde::Serialize;

use crate::control::ChunkView;

/// The most cells the chunk map has; beyond, each cell stands for several chunks.
pub const MAX_MAP_CELLS: usize = 4096;

/// The most failure groups listed, and chunk ids listed per group.
const MAX_FAILURE_GROUPS: usize = 50;
const MAX_IDS_PER_GROUP: usize = 20;

/// A table's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableProgress {
    /// Source table.
    pub table: String,
    /// Its partitions planned separately (empty when planned as one table).
    pub partitions: Vec<PartitionProgress>,
    /// Chunks planned.
    pub chunks: u32,
    /// Chunks verified.
    pub verified: u32,
    /// Chunks failed.
    pub failed: u32,
    /// Chunks held by a worker.
    pub running: u32,
    /// Rows in verified chunks.
    pub rows_verified: u64,
    /// Rows planned (estimates).
    pub rows_estimated: u64,
}

/// A partition's progress within its table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PartitionProgress {
    /// The leaf partition.
    pub partition: String,
    /// Chunks planned.
    pub chunks: u32,
    /// Chunks verified.
    pub verified: u32,
    /// Rows in verified chunks.
    pub rows_verified: u64,
    /// Rows planned (estimates).
    pub rows_estimated: u64,
}

/// The chunk map: one letter per cell, `P`lanned, `R`unning (assigned, copying,
/// verifying), `V`erified, `F`ailed. A cell of several chunks shows the one that most
/// needs attention: failed, then running, then planned, then verified.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChunkMap {
    /// Chunks per cell (the last cell may hold fewer).
    pub chunks_per_cell: usize,
    /// One letter per cell.
    pub cells: String,
    /// Chunks by state letter: `[P, R, V, F]`.
    pub counts: [u32; 4],
}

/// Failed chunks sharing a reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FailureGroup {
    /// The reason (the chunks' last error).
    pub reason: String,
    /// FAILED chunks with it.
    pub failed: u32,
    /// Chunks still being retried whose last attempt failed with it.
    pub retrying: u32,
    /// Some of their ids.
    pub chunk_ids: Vec<u32>,
}

/// What the job page shows of a job's chunks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ChunkSummary {
    /// Progress per table.
    pub tables: Vec<TableProgress>,
    /// The chunk map.
    pub map: ChunkMap,
    /// Failures by reason.
    pub failures: Vec<FailureGroup>,
}

impl ChunkSummary {
    /// Summarises `chunks` (in id order).
    pub fn of(chunks: &[ChunkView]) -> Self {
        ChunkSummary {
            tables: table_progress(chunks),
            map: chunk_map(chunks, MAX_MAP_CELLS),
            failures: failure_groups(chunks),
        }
    }
}

/// The map letter of a chunk state, and its urgency (higher shows first in a cell).
fn letter(state: &str) -> (u8, u8) {
    match state {
        "FAILED" => (b'F', 3),
        "ASSIGNED" | "COPYING" | "VERIFYING" => (b'R', 2),
        "VERIFIED" => (b'V', 0),
        _ => (b'P', 1),
    }
}

fn letter_index(letter: u8) -> usize {
    match letter {
        b'P' => 0,
        b'R' => 1,
        b'V' => 2,
        _ => 3,
    }
}

/// The chunk map of `chunks` (in id order) in at most `max_cells` cells.
pub fn chunk_map(chunks: &[ChunkView], max_cells: usize) -> ChunkMap {
    let chunks_per_cell = chunks.len().div_ceil(max_cells.max(1)).max(1);
    let mut counts = [0u32; 4];
    let mut cells = Vec::with_capacity(chunks.len().div_ceil(chunks_per_cell));
    for cell in chunks.chunks(chunks_per_cell) {
        let mut shown = (b'V', 0);
        for chunk in cell {
            let this = letter(&chunk.state);
            counts[letter_index(this.0)] += 1;
            if this.1 > shown.1 {
                shown = this;
            }
        }
        cells.push(shown.0);
    }
    ChunkMap {
        chunks_per_cell,
        // Only ASCII letters were pushed.
        cells: String::from_utf8_lossy(&cells).into_owned(),
        counts,
    }
}

/// Progress per table (and partition), in the order tables first appear.
pub fn table_progress(chunks: &[ChunkView]) -> Vec<TableProgress> {
    let mut tables: Vec<TableProgress> = Vec::new();
    for chunk in chunks {
        let index = match tables.iter().rposition(|table| table.table == chunk.table) {
            Some(index) => index,
            None => {
                tables.push(TableProgress {
                    table: chunk.table.clone(),
                    ..TableProgress::default()
                });
                tables.len() - 1
            }
        };
        let table = &mut tables[index];
        let (letter, _) = letter(&chunk.state);
        let verified = letter == b'V';
        table.chunks += 1;
        table.rows_estimated += chunk.estimated_rows;
        match letter {
            b'V' => {
                table.verified += 1;
                table.rows_verified += chunk.rows;
            }
            b'F' => table.failed += 1,
            b'R' => table.running += 1,
            _ => {}
        }
        if chunk.partition.is_empty() {
            continue;
        }
        let partition = match table
            .partitions
            .iter()
            .position(|partition| partition.partition == chunk.partition)
        {
            Some(index) => &mut table.partitions[index],
            None => {
                table.partitions.push(PartitionProgress {
                    partition: chunk.partition.clone(),
                    ..PartitionProgress::default()
                });
                let last = table.partitions.len() - 1;
                &mut table.partitions[last]
            }
        };
        partition.chunks += 1;
        partition.rows_estimated += chunk.estimated_rows;
        if verified {
            partition.verified += 1;
            partition.rows_verified += chunk.rows;
        }
    }
    tables
}

/// Failures grouped by reason, the most frequent first.
pub fn failure_groups(chunks: &[ChunkView]) -> Vec<FailureGroup> {
    let mut groups: Vec<FailureGroup> = Vec::new();
    for chunk in chunks {
        if chunk.last_error.is_empty() || chunk.state == "VERIFIED" {
            continue;
        }
        let index = match groups
            .iter()
            .position(|group| group.reason == chunk.last_error)
        {
            Some(index) => index,
            None => {
                groups.push(FailureGroup {
                    reason: chunk.last_error.clone(),
                    ..FailureGroup::default()
                });
                groups.len() - 1
            }
        };
        let group = &mut groups[index];
        if chunk.state == "FAILED" {
            group.failed += 1;
        } else {
            group.retrying += 1;
        }
        if group.chunk_ids.len() < MAX_IDS_PER_GROUP {
            group.chunk_ids.push(chunk.id);
        }
    }
    groups.sort_by_key(|group| std::cmp::Reverse(group.failed + group.retrying));
    groups.truncate(MAX_FAILURE_GROUPS);
    groups
}

/// The longest stretch [`schedule_spans`] looks back over: a day of minutes.
const MAX_SCHEDULE_LOOKBACK_MS: i64 = 24 * 60 * 60 * 1000;

/// A stretch of time during which one schedule window of the policy applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScheduleSpan {
    /// Start (Unix ms).
    pub from_unix_ms: i64,
    /// End (Unix ms, exclusive).
    pub to_unix_ms: i64,
    /// The window's index in the policy's schedule.
    pub window: usize,
    /// Its concurrency.
    pub max_concurrency: u32,
}

/// When schedule windows applied between `since_unix_ms` and `until_unix_ms` (at most a
/// day back), asking the policy itself ([`ThrottlePolicy::window_at`]) minute by minute:
/// windows are minute-grained. Consecutive minutes of one window make one span.
pub fn schedule_spans(
    policy: &ThrottlePolicy,
    since_unix_ms: i64,
    until_unix_ms: i64,
) -> Vec<ScheduleSpan> {
    const MINUTE_MS: i64 = 60_000;
    let mut spans: Vec<ScheduleSpan> = Vec::new();
    if policy.schedule.is_empty() || until_unix_ms <= since_unix_ms {
        return spans;
    }
    let start = since_unix_ms.max(until_unix_ms - MAX_SCHEDULE_LOOKBACK_MS);
    let mut minute = start - start.rem_euclid(MINUTE_MS);
    while minute < until_unix_ms {
        let next = minute + MINUTE_MS;
        let window_opt = jiff::Timestamp::from_millisecond(minute)
            .ok()
            .and_then(|instant| policy.window_at(instant).ok())
            .and_then(|limit| limit.window.map(|window| (window, limit.max_concurrency)));
        if let Some((window, max_concurrency)) = window_opt {
            match spans.last_mut() {
                Some(last) if last.window == window && last.to_unix_ms == minute.max(start) => {
                    last.to_unix_ms = next.min(until_unix_ms);
                }
                _ => spans.push(ScheduleSpan {
                    from_unix_ms: minute.max(start),
                    to_unix_ms: next.min(until_unix_ms),
                    window,
                    max_concurrency,
                }),
            }
        }
        minute = next;
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spans_follow_the_policy_windows() {
        use ferry_model::throttle::{DaySet, ScheduleWindow};
        let policy = ThrottlePolicy {
            timezone: "UTC".into(),
            schedule: vec![ScheduleWindow {
                days: DaySet::ALL,
                from_minute: 10 * 60,
                to_minute: 10 * 60 + 30,
                max_concurrency: 3,
            }],
            ..ThrottlePolicy::default()
        };
        // 2026-01-05 09:50 to 11:00 UTC.
        let nine_fifty = 1_767_606_600_000;
        let spans = schedule_spans(&policy, nine_fifty, nine_fifty + 70 * 60_000);
        assert_eq!(
            spans,
            vec![ScheduleSpan {
                from_unix_ms: nine_fifty + 10 * 60_000,
                to_unix_ms: nine_fifty + 40 * 60_000,
                window: 0,
                max_concurrency: 3,
            }]
        );
        assert!(schedule_spans(&ThrottlePolicy::default(), 0, 60_000).is_empty());
    }

    fn chunk(id: u32, table: &str, state: &str) -> ChunkView {
        ChunkView {
            id,
            table: table.into(),
            state: state.into(),
            estimated_rows: 10,
            rows: if state == "VERIFIED" { 10 } else { 0 },
            ..ChunkView::default()
        }
    }

    #[test]
    fn a_small_job_gets_one_cell_per_chunk() {
        let chunks = [
            chunk(0, "a", "VERIFIED"),
            chunk(1, "a", "COPYING"),
            chunk(2, "b", "FAILED"),
            chunk(3, "b", "PLANNED"),
        ];
        let map = chunk_map(&chunks, MAX_MAP_CELLS);
        assert_eq!(map.chunks_per_cell, 1);
        assert_eq!(map.cells, "VRFP");
        assert_eq!(map.counts, [1, 1, 1, 1]);
    }

    #[test]
    fn a_hundred_thousand_chunks_fit_the_cell_limit_and_a_failure_shows() {
        let mut chunks: Vec<ChunkView> =
            (0..100_000).map(|id| chunk(id, "t", "VERIFIED")).collect();
        chunks[77_777].state = "FAILED".into();
        let map = chunk_map(&chunks, MAX_MAP_CELLS);
        assert!(map.cells.len() <= MAX_MAP_CELLS, "{}", map.cells.len());
        assert_eq!(map.chunks_per_cell, 25);
        assert_eq!(map.cells.as_bytes()[77_777 / 25], b'F');
        assert_eq!(map.cells.matches('F').count(), 1);
        assert_eq!(map.counts, [0, 0, 99_999, 1]);
        assert!(chunk_map(&[], MAX_MAP_CELLS).cells.is_empty());
    }

    #[test]
    fn tables_and_partitions_are_counted_apart() {
        let mut chunks = vec![
            chunk(0, "a", "VERIFIED"),
            chunk(1, "a", "FAILED"),
            chunk(2, "b", "VERIFIED"),
            chunk(3, "b", "ASSIGNED"),
        ];
        chunks[2].partition = "b_2025".into();
        chunks[3].partition = "b_2026".into();
        let tables = table_progress(&chunks);
        assert_eq!(tables.len(), 2);
        assert_eq!(
            (tables[0].chunks, tables[0].verified, tables[0].failed),
            (2, 1, 1)
        );
        assert_eq!(tables[0].rows_verified, 10);
        assert_eq!(tables[1].running, 1);
        assert_eq!(tables[1].partitions.len(), 2);
        assert_eq!(tables[1].partitions[0].verified, 1);
        assert_eq!(tables[1].partitions[1].verified, 0);
    }

    #[test]
    fn failures_are_grouped_by_reason_most_frequent_first() {
        let mut chunks = vec![
            chunk(0, "a", "FAILED"),
            chunk(1, "a", "PLANNED"),
            chunk(2, "a", "FAILED"),
            chunk(3, "a", "VERIFIED"),
        ];
        chunks[0].last_error = "constraint".into();
        chunks[1].last_error = "timeout".into();
        chunks[2].last_error = "constraint".into();
        chunks[3].last_error = "an old error of a chunk verified since".into();
        let groups = failure_groups(&chunks);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].reason, "constraint");
        assert_eq!(
            (groups[0].failed, groups[0].chunk_ids.clone()),
            (2, vec![0, 2])
        );
        assert_eq!((groups[1].failed, groups[1].retrying), (0, 1));
    }
}
