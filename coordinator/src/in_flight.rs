//! The attempts a job's scheduler has in flight, and how many more chunks it may start.
//!
//! A copy job's attempt has two phases: it **copies** (reads the source, writes the
//! target in one fenced transaction, commits) and then **verifies** (reads the committed
//! range back from the target; the source side was hashed while it streamed). Only the
//! copy reads the source, so the throttle's concurrency counts chunks copying: once an
//! attempt says it is verifying, its place goes to the next chunk, and the verification
//! runs alongside. Verifications are bounded too: at most as many as the concurrency
//! again, so that
//!
//! ```text
//! chunks copying                 ≤ concurrency
//! chunks copying + verifying     ≤ 2 × concurrency
//! ```
//!
//! A chunk verifying is not done: it becomes VERIFIED (or goes back for a re-copy on a
//! mismatch) when its verification ends, like any attempt.
//!
//! Verify-only and sync attempts keep their place to the end: what they do after saying
//! "verifying" still reads the source (a sync's keyed diff) or is nothing.

use std::collections::HashMap;

use ferry_model::ids::{ChunkId, WorkerId};

/// Identifies one attempt task of the scheduler (a chunk runs again under a new token),
/// so that a late "verifying" of an ended attempt is ignored.
pub type AttemptToken = u64;

struct Attempt {
    token: AttemptToken,
    worker: WorkerId,
    verifying: bool,
}

/// The scheduler's attempts in flight, copying or verifying.
#[derive(Default)]
pub struct InFlight {
    attempts: HashMap<ChunkId, Attempt>,
    verifying: usize,
}

impl InFlight {
    /// Counts an attempt of `chunk` on `worker` as copying.
    pub fn started(&mut self, chunk: ChunkId, token: AttemptToken, worker: WorkerId) {
        let replaced = self.attempts.insert(
            chunk,
            Attempt {
                token,
                worker,
                verifying: false,
            },
        );
        debug_assert!(
            replaced.is_none(),
            "chunk {chunk} started while an attempt of it is in flight"
        );
    }

    /// Moves the attempt `token` of `chunk` from copying to verifying; returns its worker
    /// when it moved (not when the attempt ended already or was verifying).
    pub fn verifying(&mut self, chunk: ChunkId, token: AttemptToken) -> Option<WorkerId> {
        let attempt = self.attempts.get_mut(&chunk)?;
        if attempt.token != token || attempt.verifying {
            return None;
        }
        attempt.verifying = true;
        self.verifying += 1;
        Some(attempt.worker.clone())
    }

    /// Forgets the attempt of `chunk`; returns whether it was verifying.
    pub fn ended(&mut self, chunk: ChunkId) -> bool {
        let verifying = self
            .attempts
            .remove(&chunk)
            .is_some_and(|attempt| attempt.verifying);
        if verifying {
            self.verifying -= 1;
        }
        verifying
    }

    /// Attempts copying.
    pub fn copying(&self) -> usize {
        self.attempts.len() - self.verifying
    }

    /// Attempts in flight, copying or verifying.
    pub fn total(&self) -> usize {
        self.attempts.len()
    }

    /// How many more chunks may start under a concurrency of `limit`.
    pub fn room(&self, limit: usize) -> usize {
        copies_room(limit, self.copying(), self.total())
    }
}

/// Chunks that may start: `limit` copies at most, and `2 × limit` attempts in flight at
/// most (the verifications behind the copies).
pub fn copies_room(limit: usize, copying: usize, in_flight: usize) -> usize {
    limit
        .saturating_sub(copying)
        .min(limit.saturating_mul(2).saturating_sub(in_flight))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str) -> WorkerId {
        WorkerId(name.into())
    }

    #[test]
    fn a_chunk_verifying_gives_its_place_to_the_next_copy_up_to_twice_the_limit() {
        let mut in_flight = InFlight::default();
        in_flight.started(ChunkId(0), 1, worker("a"));
        in_flight.started(ChunkId(1), 2, worker("b"));
        assert_eq!(in_flight.room(2), 0);
        assert_eq!(in_flight.verifying(ChunkId(0), 1), Some(worker("a")));
        assert_eq!(in_flight.room(2), 1);
        in_flight.started(ChunkId(2), 3, worker("c"));
        assert_eq!(in_flight.verifying(ChunkId(1), 2), Some(worker("b")));
        in_flight.started(ChunkId(3), 4, worker("d"));
        assert_eq!((in_flight.copying(), in_flight.total()), (2, 4));
        // Both copies verifying while two verifications run: nothing more may start.
        assert_eq!(in_flight.verifying(ChunkId(2), 3), Some(worker("c")));
        assert_eq!(in_flight.verifying(ChunkId(3), 4), Some(worker("d")));
        assert_eq!((in_flight.copying(), in_flight.total()), (0, 4));
        assert_eq!(in_flight.room(2), 0);
        assert!(in_flight.ended(ChunkId(0)));
        assert_eq!(in_flight.room(2), 1);
    }

    #[test]
    fn a_late_or_repeated_verifying_changes_nothing() {
        let mut in_flight = InFlight::default();
        in_flight.started(ChunkId(7), 1, worker("a"));
        assert!(!in_flight.ended(ChunkId(7)));
        // The attempt ended before its "verifying" was read; the chunk runs again.
        assert_eq!(in_flight.verifying(ChunkId(7), 1), None);
        in_flight.started(ChunkId(7), 2, worker("b"));
        assert_eq!(in_flight.verifying(ChunkId(7), 1), None);
        assert_eq!(in_flight.verifying(ChunkId(7), 2), Some(worker("b")));
        assert_eq!(in_flight.verifying(ChunkId(7), 2), None);
        assert_eq!((in_flight.copying(), in_flight.total()), (0, 1));
    }

    #[test]
    fn the_room_never_exceeds_the_limit_in_copies_nor_twice_it_in_flight() {
        for limit in 0..6 {
            for copying in 0..8 {
                for verifying in 0..12 {
                    let room = copies_room(limit, copying, copying + verifying);
                    assert!(room == 0 || copying + room <= limit);
                    assert!(room == 0 || copying + verifying + room <= 2 * limit);
                }
            }
        }
    }
}
