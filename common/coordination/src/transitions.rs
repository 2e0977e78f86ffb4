//! The chunk state machine as pure functions over records, applied by every store
//! (LocalStore and EtcdStore; the conformance suite holds both to it): a store reads a
//! record, applies one transition, and writes the result atomically.

use super::{ChunkCompletion, ChunkEvidence, ChunkRecord, ChunkState, CoordinationError, Result};
use ferry_model::ids::{Attempt, ChunkId, WorkerId};
use ferry_model::key::ChunkRange;

pub(super) fn check_attempt(record: &ChunkRecord, attempt: Attempt) -> Result<()> {
    if record.attempt != attempt || !record.state.in_flight() {
        return Err(CoordinationError::StaleAttempt {
            chunk: record.id,
            attempt,
            current: record.attempt,
        });
    }
    Ok(())
}

/// A chunk as `create_job` stores it: its plan only (as LocalStore does).
pub(super) fn planned(chunk: &ChunkRecord) -> ChunkRecord {
    ChunkRecord {
        state: chunk.state,
        attempt: chunk.attempt,
        ..ChunkRecord::planned(
            chunk.id,
            chunk.table_index,
            chunk.partition.clone(),
            chunk.range.clone(),
            chunk.estimated_rows,
        )
    }
}

pub(super) fn assign_transition(
    record: ChunkRecord,
    worker: &WorkerId,
    now_unix_ms: i64,
) -> Result<(ChunkRecord, Attempt)> {
    if record.state != ChunkState::Planned {
        return Err(CoordinationError::InvalidTransition {
            chunk: record.id,
            from: record.state,
            to: ChunkState::Assigned,
        });
    }
    let attempt = Attempt(record.attempt.0 + 1);
    let evidence = ChunkEvidence {
        worker: Some(worker.clone()),
        started_at_unix_ms: Some(now_unix_ms),
        ended_at_unix_ms: None,
        target_checksum: None,
        sync: None,
    };
    let next = ChunkRecord {
        state: ChunkState::Assigned,
        attempt,
        worker: Some(worker.clone()),
        evidence,
        ..record
    };
    Ok((next, attempt))
}

pub(super) fn report_transition(
    record: ChunkRecord,
    attempt: Attempt,
    state: ChunkState,
) -> Result<ChunkRecord> {
    check_attempt(&record, attempt)?;
    if !matches!(state, ChunkState::Copying | ChunkState::Verifying) {
        return Err(CoordinationError::InvalidTransition {
            chunk: record.id,
            from: record.state,
            to: state,
        });
    }
    Ok(ChunkRecord { state, ..record })
}

/// Ends `attempt` of the chunk. A COPIED chunk (its attempt committed into a table
/// without its key) is ended a second time by its verification once the key is built,
/// under the same attempt: VERIFIED, or back to PLANNED (or FAILED) on a mismatch.
pub(super) fn complete_transition(
    mut record: ChunkRecord,
    attempt: Attempt,
    completion: &ChunkCompletion,
    now_unix_ms: i64,
) -> Result<ChunkRecord> {
    let verifying_copied = record.state == ChunkState::Copied
        && record.attempt == attempt
        && !matches!(completion, ChunkCompletion::Copied { .. });
    if !verifying_copied {
        check_attempt(&record, attempt)?;
    }
    record.worker = None;
    record.evidence.ended_at_unix_ms = Some(now_unix_ms);
    match completion {
        ChunkCompletion::Verified {
            rows,
            checksum,
            sync,
        } => {
            record.state = ChunkState::Verified;
            record.evidence.sync = *sync;
            record.rows = *rows;
            record.checksum = Some(*checksum);
            record.evidence.target_checksum = Some(*checksum);
        }
        ChunkCompletion::Copied { rows, checksum } => {
            record.state = ChunkState::Copied;
            record.rows = *rows;
            record.checksum = Some(*checksum);
        }
        ChunkCompletion::Differs { source, target } => {
            record.state = ChunkState::Failed;
            record.failures += 1;
            record.mismatches += 1;
            record.rows = source.rows;
            record.checksum = Some(*source);
            record.evidence.target_checksum = Some(*target);
            record.last_error = Some(format!(
                "source and target differ: source has {source}, target has {target}"
            ));
        }
        ChunkCompletion::Requeue { reason } => {
            record.state = ChunkState::Planned;
            record.last_error = Some(reason.clone());
        }
        ChunkCompletion::Retry { reason, mismatch } => {
            record.state = ChunkState::Planned;
            record.failures += 1;
            record.mismatches += u32::from(*mismatch);
            record.last_error = Some(reason.clone());
        }
        ChunkCompletion::Failed { reason, mismatch } => {
            record.state = ChunkState::Failed;
            record.failures += 1;
            record.mismatches += u32::from(*mismatch);
            record.last_error = Some(reason.clone());
        }
    }
    Ok(record)
}

/// Splits a chunk none of whose attempts wrote into `pieces`: the chunk keeps the first
/// (and its attempt count, so its next attempt fences out any earlier one), the others get
/// ids from `first_new_id` on. `after` is the last attempt the caller knows ended without
/// writing: `Attempt(0)` for a chunk that never started, `Attempt(1)` for one whose first
/// attempt was handed back before it wrote ([`crate::Coordination::split_chunk`]). Only a
/// PLANNED chunk at exactly that attempt, never failed nor mismatched, is split, so its
/// rows are neither lost nor doubled.
pub(super) fn split_transition(
    record: ChunkRecord,
    after: Attempt,
    pieces: &[(ChunkRange, u64)],
    first_new_id: u32,
) -> Result<Vec<ChunkRecord>> {
    let refuse = |reason: String| CoordinationError::SplitRefused {
        chunk: record.id,
        reason,
    };
    if after > Attempt(1) {
        return Err(refuse(format!(
            "attempt {after} is not its first: an earlier attempt may still write"
        )));
    }
    if record.state != ChunkState::Planned
        || record.attempt != after
        || record.failures > 0
        || record.mismatches > 0
    {
        return Err(refuse(format!(
            "it is {} at attempt {} ({} failure(s), {} mismatch(es)); only a chunk that never \
             started, or whose only attempt was handed back before writing, is split",
            record.state, record.attempt, record.failures, record.mismatches
        )));
    }
    if pieces.len() < 2 {
        return Err(refuse(format!(
            "{} piece(s) given, at least 2 needed",
            pieces.len()
        )));
    }
    let mut split = Vec::with_capacity(pieces.len());
    for (index, (range, estimated_rows)) in pieces.iter().enumerate() {
        let id = if index == 0 {
            record.id
        } else {
            let offset = u32::try_from(index - 1).unwrap_or(u32::MAX);
            ChunkId(
                first_new_id
                    .checked_add(offset)
                    .ok_or_else(|| refuse("the job has no chunk ids left".to_owned()))?,
            )
        };
        let mut piece = ChunkRecord::planned(
            id,
            record.table_index,
            record.partition.clone(),
            range.clone(),
            *estimated_rows,
        );
        if index == 0 {
            piece.attempt = record.attempt;
            piece.last_error.clone_from(&record.last_error);
        }
        split.push(piece);
    }
    Ok(split)
}
