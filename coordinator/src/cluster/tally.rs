//! A running job's chunk counts for GetJob/WatchJob. A leader keeps them in memory for the
//! jobs it runs (from the scheduler's events), so watchers never make it read every
//! chunk of a big job from etcd; other reads count a snapshot from etcd.

use std::collections::HashMap;

use ferry_coordination::ChunkState;
use ferry_model::ids::ChunkId;

use crate::control::ChunkCounts;
use crate::scheduler::JobEvent;

/// A running job's chunks as the leader's scheduler reports them.
#[derive(Debug, Default)]
pub struct ChunkTally {
    chunks: HashMap<ChunkId, (ChunkState, u64)>,
}

impl ChunkTally {
    /// Starts from the chunks as the run loaded them ([`JobEvent::Loaded`]).
    pub fn new(chunks: &[(ChunkId, ChunkState, u64)]) -> Self {
        Self {
            chunks: chunks
                .iter()
                .map(|(id, state, rows)| (*id, (*state, *rows)))
                .collect(),
        }
    }

    /// Follows one scheduler event.
    pub fn apply(&mut self, event: &JobEvent) {
        match event {
            JobEvent::ChunkStarted { chunk, .. } => {
                if let Some(entry) = self.chunks.get_mut(chunk) {
                    *entry = (ChunkState::Assigned, 0);
                }
            }
            JobEvent::ChunkFinished {
                record: Some(record),
                ..
            } => {
                self.chunks.insert(record.id, (record.state, record.rows));
            }
            // A cancelled attempt leaves its chunk in flight.
            JobEvent::ChunkFinished { record: None, .. }
            | JobEvent::RowsCopied { .. }
            | JobEvent::Loaded { .. } => {}
        }
    }

    /// The counts now.
    pub fn counts(&self) -> ChunkCounts {
        ChunkCounts::of(self.chunks.values().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_coordination::conformance::sample_job;
    use ferry_model::ids::{Attempt, JobId};

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
        let ended = |id: u32, state: ChunkState, rows: u64| {
            let mut record = chunks[id as usize].clone();
            record.state = state;
            record.rows = rows;
            JobEvent::ChunkFinished {
                record: Some(Box::new(record)),
                table_index: 0,
                rows_streamed: rows,
            }
        };
        tally.apply(&ended(0, ChunkState::Verified, 10));
        tally.apply(&ended(1, ChunkState::Failed, 0));
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
        tally.apply(&ended(1, ChunkState::Planned, 0));
        assert_eq!(tally.counts().failed, 0);
    }
}
