//! A running job's chunk counts for GetJob/WatchJob. A leader keeps them in memory for the
//! jobs it runs (from the scheduler's events), so watchers never make it read every
//! chunk of a big job from etcd; other reads count a snapshot from etcd.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_coordination::ChunkState;
use ferry_model::ids::ChunkId;

use crate::control::ChunkCounts;
use crate::scheduler::JobEvent;

/// A running job's chunks as the leader's scheduler reports them.
#[derive(Debug)]
pub struct ChunkTally {
    chunks: HashMap<ChunkId, (ChunkState, u64)>,
    /// The counts of `chunks`, kept as they change: every event publishes them, and
    /// counting the whole map each time cost time in the number of chunks per event.
    counts: ChunkCounts,
    /// Chunks COPIED into a table loaded without its key, waiting for the key and their
    /// verification: progress for the ETA, as VERIFIED chunks are.
    copied: u32,
    /// When this run loaded the chunks, and how many were copied or verified then: the
    /// pace of this run gives the ETA.
    started: Instant,
    done_at_start: u32,
}

/// 1 for a chunk COPIED (copied, verified later), else 0.
fn copied(state: ChunkState) -> u32 {
    u32::from(state == ChunkState::Copied)
}

impl ChunkTally {
    /// Starts from the chunks as the run loaded them ([`JobEvent::Loaded`]).
    pub fn new(chunks: &[(ChunkId, ChunkState, u64)]) -> Self {
        Self::new_at(chunks, Instant::now())
    }

    /// [`ChunkTally::new`] with the run's start given (tests).
    pub fn new_at(chunks: &[(ChunkId, ChunkState, u64)], started: Instant) -> Self {
        let chunks: HashMap<ChunkId, (ChunkState, u64)> = chunks
            .iter()
            .map(|(id, state, rows)| (*id, (*state, *rows)))
            .collect();
        let counts = ChunkCounts::of(chunks.values().copied());
        let copied = chunks.values().map(|(state, _)| copied(*state)).sum();
        Self {
            chunks,
            counts,
            copied,
            started,
            done_at_start: counts.verified + copied,
        }
    }

    /// Sets `chunk`'s entry, keeping the counts in step.
    fn set(&mut self, chunk: ChunkId, entry: (ChunkState, u64)) {
        let before = self.chunks.insert(chunk, entry);
        self.copied += copied(entry.0);
        let mut counts = self.counts;
        if let Some(before) = before {
            self.copied -= copied(before.0);
            let gone = ChunkCounts::of(std::iter::once(before));
            counts.total -= gone.total;
            counts.verified -= gone.verified;
            counts.failed -= gone.failed;
            counts.running -= gone.running;
            counts.rows_verified -= gone.rows_verified;
        }
        let added = ChunkCounts::of(std::iter::once(entry));
        counts.total += added.total;
        counts.verified += added.verified;
        counts.failed += added.failed;
        counts.running += added.running;
        counts.rows_verified += added.rows_verified;
        self.counts = counts;
    }

    /// Estimated time until every chunk is copied or verified, at the pace this run did
    /// so far (time since start per chunk done, times the chunks left, those running
    /// included); `None` before the run finished a chunk. A chunk COPIED into a table
    /// loaded without its key counts as done: its table's chunks are verified together,
    /// after the key is built, so counting only VERIFIED chunks left such a job without
    /// an ETA until its last moments. The key build and those verifications are not in
    /// the estimate.
    pub fn eta(&self) -> Option<Duration> {
        self.eta_at(Instant::now())
    }

    /// [`ChunkTally::eta`] at `now`.
    pub fn eta_at(&self, now: Instant) -> Option<Duration> {
        let counts = self.counts();
        let done = counts.verified + self.copied;
        let done_this_run = done.saturating_sub(self.done_at_start);
        let left = counts.total.saturating_sub(done + counts.failed);
        if left == 0 {
            return Some(Duration::ZERO);
        }
        if done_this_run == 0 {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.started);
        Some(elapsed.mul_f64(f64::from(left) / f64::from(done_this_run)))
    }

    /// Follows one scheduler event.
    pub fn apply(&mut self, event: &JobEvent) {
        match event {
            JobEvent::ChunkStarted { chunk, .. } => {
                if self.chunks.contains_key(chunk) {
                    self.set(*chunk, (ChunkState::Assigned, 0));
                }
            }
            JobEvent::ChunkFinished {
                record: Some(record),
                ..
            } => {
                self.set(record.id, (record.state, record.rows));
            }
            JobEvent::ChunkSplit { added, .. } => {
                for (id, _) in added {
                    self.set(*id, (ChunkState::Planned, 0));
                }
            }
            // A cancelled attempt leaves its chunk in flight.
            JobEvent::ChunkFinished { record: None, .. }
            | JobEvent::RowsCopied { .. }
            | JobEvent::Loaded { .. } => {}
        }
    }

    /// The counts now.
    pub fn counts(&self) -> ChunkCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_coordination::ChunkRecord;
    use ferry_coordination::conformance::sample_job;
    use ferry_model::ids::{Attempt, JobId};

    /// The event of `chunk`'s attempt ending with it in `state`, holding `rows`.
    fn ended(chunk: &ChunkRecord, state: ChunkState, rows: u64) -> JobEvent {
        let mut record = chunk.clone();
        record.state = state;
        record.rows = rows;
        JobEvent::ChunkFinished {
            record: Some(Box::new(record)),
            table_index: 0,
            rows_streamed: rows,
        }
    }

    #[test]
    fn the_eta_is_this_runs_pace_times_the_chunks_left() {
        let start = Instant::now();
        let loaded: Vec<_> = (0..10)
            .map(|id| {
                let state = if id < 2 {
                    ChunkState::Verified
                } else {
                    ChunkState::Planned
                };
                (ChunkId(id), state, 0)
            })
            .collect();
        let mut tally = ChunkTally::new_at(&loaded, start);
        let (_, chunks) = sample_job(&JobId("eta".into()), 10);
        assert_eq!(
            tally.eta_at(start + Duration::from_secs(5)),
            None,
            "nothing verified yet"
        );
        for chunk in &chunks[2..4] {
            tally.apply(&ended(chunk, ChunkState::Verified, 0));
        }
        assert_eq!(
            tally.counts(),
            ChunkCounts::of(tally.chunks.values().copied()),
            "the counts kept as events come are the counts of the chunks"
        );
        // 2 chunks in 10 s this run, 6 left: 30 s.
        assert_eq!(
            tally.eta_at(start + Duration::from_secs(10)),
            Some(Duration::from_secs(30))
        );
        // Chunks copied into a table whose key is deferred count as done: 4 in 10 s,
        // 4 left.
        for chunk in &chunks[4..6] {
            tally.apply(&ended(chunk, ChunkState::Copied, 0));
        }
        assert_eq!(
            tally.eta_at(start + Duration::from_secs(10)),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn a_job_whose_chunks_end_copied_has_an_eta_before_any_is_verified() {
        let start = Instant::now();
        let (_, chunks) = sample_job(&JobId("eta-copied".into()), 4);
        let loaded: Vec<_> = chunks
            .iter()
            .map(|chunk| (chunk.id, chunk.state, chunk.rows))
            .collect();
        let mut tally = ChunkTally::new_at(&loaded, start);
        assert_eq!(tally.eta_at(start + Duration::from_secs(1)), None);
        tally.apply(&ended(&chunks[0], ChunkState::Copied, 0));
        // 1 chunk in 3 s, 3 left: 9 s.
        assert_eq!(
            tally.eta_at(start + Duration::from_secs(3)),
            Some(Duration::from_secs(9))
        );
        // Verified later: still one chunk done, not two.
        tally.apply(&ended(&chunks[0], ChunkState::Verified, 0));
        assert_eq!(
            tally.eta_at(start + Duration::from_secs(3)),
            Some(Duration::from_secs(9))
        );
    }

    #[test]
    fn the_tally_follows_starts_and_ends_of_attempts() {
        let (_, mut chunks) = sample_job(&JobId("tally".into()), 4);
        chunks[3].state = ChunkState::Verified;
        chunks[3].rows = 7;
        let loaded: Vec<_> = chunks
            .iter()
            .map(|chunk| (chunk.id, chunk.state, chunk.rows))
            .collect();
        let mut tally = ChunkTally::new(&loaded);
        assert_eq!(
            tally.counts(),
            ChunkCounts {
                total: 4,
                verified: 1,
                failed: 0,
                running: 0,
                rows_verified: 7
            }
        );
        for chunk in [0, 1, 2] {
            tally.apply(&JobEvent::ChunkStarted {
                table_index: 0,
                chunk: ChunkId(chunk),
                attempt: Attempt(1),
            });
        }
        assert_eq!(tally.counts().running, 3);
        tally.apply(&ended(&chunks[0], ChunkState::Verified, 10));
        tally.apply(&ended(&chunks[1], ChunkState::Failed, 0));
        // Chunk 2's attempt is cancelled: it stays in flight.
        tally.apply(&JobEvent::ChunkFinished {
            record: None,
            table_index: 0,
            rows_streamed: 3,
        });
        assert_eq!(
            tally.counts(),
            ChunkCounts {
                total: 4,
                verified: 2,
                failed: 1,
                running: 1,
                rows_verified: 17
            }
        );
        // A retry sends a chunk back to PLANNED.
        tally.apply(&ended(&chunks[1], ChunkState::Planned, 0));
        assert_eq!(tally.counts().failed, 0);
        // A queued chunk cut into three adds two PLANNED chunks to the counts.
        tally.apply(&JobEvent::ChunkSplit {
            table_index: 0,
            chunk: ChunkId(1),
            added: vec![(ChunkId(4), 10), (ChunkId(5), 10)],
        });
        let counts = tally.counts();
        assert_eq!((counts.total, counts.verified, counts.running), (6, 2, 1));
    }
}
