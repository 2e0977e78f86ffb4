//! Drives a job's chunks through their life on a coordination store.
//!
//! At most `min(workers, max_concurrency)` chunks are in flight; the next chunk is the
//! largest planned one. A copy error or a checksum mismatch sends the chunk back to
//! PLANNED for another attempt with overwrite (after a short backoff), until
//! `max_attempts` failures make it FAILED with its reason kept. Cancelling stops new
//! assignments and cancels running attempts, which commit nothing; their chunks stay in
//! flight in the store and are re-copied when the job resumes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_common::coordination::{
    ChunkCompletion, ChunkRecord, ChunkState, Coordination, CoordinationError, JobRecord,
};
use std::sync::atomic::AtomicU32;

use ferry_common::execution::{Admission, ChunkExecutor, ChunkResult, ChunkTask, Unthrottled};
use ferry_common::ids::{Attempt, ChunkId, WorkerId};
use ferry_common::spec::{OnMismatch, VerifyMode};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How the scheduler runs a job.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Workers in the pool (chunks in flight are further capped by the throttle's gate).
    pub workers: usize,
    /// Failed attempts after which a chunk is FAILED.
    pub max_attempts: u32,
    /// What a checksum mismatch does.
    pub on_mismatch: OnMismatch,
    /// How chunks are verified.
    pub verify: VerifyMode,
    /// Delay before the first retry of a failed chunk; doubles per failure, up to 10 s.
    pub retry_backoff: Duration,
}

/// What the throttle allows right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// Chunks allowed in flight.
    pub concurrency: u32,
    /// No chunk may start (and running ones stop reading, through [`Admission`]).
    pub paused: bool,
    /// No new chunk may start, but running ones go on (the host's CPU is above
    /// `throttle.worker_cpu_max`).
    pub hold_new: bool,
}

/// How a run is paced: the gate the scheduler obeys, the admission running chunks pass
/// every batch through, and the in-flight count the scheduler publishes back.
#[derive(Clone)]
pub struct Pacing {
    /// The current gate; the scheduler re-reads it whenever it changes.
    pub gate: watch::Receiver<Gate>,
    /// Paces rows inside running chunks.
    pub admission: Arc<dyn Admission>,
    /// Chunks in flight, kept up to date by the scheduler.
    pub in_flight: Arc<AtomicU32>,
}

impl Pacing {
    /// A fixed concurrency, no pause, no rate limit.
    pub fn fixed(concurrency: u32) -> Self {
        let (_gate_tx, gate) = watch::channel(Gate {
            concurrency,
            paused: false,
            hold_new: false,
        });
        Self {
            gate,
            admission: Arc::new(Unthrottled),
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }
}

/// What happened, for progress display.
#[derive(Clone, Debug)]
pub enum JobEvent {
    /// An attempt started.
    ChunkStarted {
        /// The chunk's table.
        table_index: usize,
        /// The chunk.
        chunk: ChunkId,
        /// The attempt.
        attempt: Attempt,
    },
    /// Rows streamed into the target by a running attempt (not yet committed).
    RowsCopied {
        /// The chunk's table.
        table_index: usize,
        /// Rows in this increment.
        rows: u64,
    },
    /// An attempt ended.
    ChunkFinished {
        /// The chunk as now stored (VERIFIED, PLANNED for a retry, FAILED); `None` when
        /// the attempt was cancelled and the chunk stays in flight for the next run.
        record: Option<ChunkRecord>,
        /// The chunk's table.
        table_index: usize,
        /// Rows this attempt streamed (to take back from progress when it did not verify).
        rows_streamed: u64,
    },
}

/// How a run of the scheduler ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Every chunk of the job as stored at the end.
    pub chunks: Vec<ChunkRecord>,
    /// Whether the run was cancelled before every chunk ended.
    pub interrupted: bool,
    /// Wall time of this run.
    pub elapsed: Duration,
    /// Per table, time from its first chunk start to its last chunk end in this run.
    pub table_elapsed: Vec<Duration>,
    /// Chunks found in flight at start (left by an interrupted run) and re-queued.
    pub requeued: Vec<ChunkId>,
}

/// Why the scheduler stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The coordination store failed; the job stays resumable from its last good state.
    #[error("coordination store failed while running job: {0}")]
    Store(#[from] CoordinationError),
}

struct Finished {
    chunk: ChunkId,
    attempt: Attempt,
    worker: WorkerId,
    result: ChunkResult,
    rows_streamed: u64,
}

/// Runs a job's remaining chunks to the end (or until `cancel`).
pub async fn run_job(
    store: Arc<dyn Coordination>,
    job: &JobRecord,
    executor: Arc<dyn ChunkExecutor>,
    options: &SchedulerOptions,
    mut pacing: Pacing,
    events: UnboundedSender<JobEvent>,
    cancel: CancellationToken,
) -> Result<RunOutcome, SchedulerError> {
    let started = Instant::now();
    let requeued = store.requeue_in_flight(&job.id).await?;
    if !requeued.is_empty() {
        tracing::warn!(job = %job.id, chunks = ?requeued, "re-copying chunks left in flight by an earlier run, with overwrite");
    }
    let mut model = store.list_chunks(&job.id).await?;
    let tables: Vec<_> = job
        .tables
        .iter()
        .map(|table| (Arc::new(table.schema.clone()), Arc::new(table.key.clone())))
        .collect();

    let mut free_workers: VecDeque<WorkerId> = VecDeque::new();
    for index in 0..options.workers.max(1) {
        let worker = WorkerId(format!("local-{index}"));
        store.register_worker(&worker).await?;
        free_workers.push_back(worker);
    }

    let mut queue: Vec<ChunkId> = model
        .iter()
        .filter(|chunk| chunk.state == ChunkState::Planned)
        .map(|chunk| chunk.id)
        .collect();
    sort_largest_first(&mut queue, &model);
    let mut delayed: Vec<(Instant, ChunkId)> = Vec::new();
    let mut table_first_start: Vec<Option<Instant>> = vec![None; tables.len()];
    let mut table_last_end: Vec<Option<Instant>> = vec![None; tables.len()];
    let mut running: JoinSet<Finished> = JoinSet::new();

    loop {
        let now = Instant::now();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            delayed.into_iter().partition(|(at, _)| *at <= now);
        delayed = waiting;
        if !ready.is_empty() {
            queue.extend(ready.into_iter().map(|(_, chunk)| chunk));
            sort_largest_first(&mut queue, &model);
        }

        let gate = *pacing.gate.borrow_and_update();
        let limit = options.workers.max(1).min(gate.concurrency.max(1) as usize);
        while !cancel.is_cancelled()
            && !gate.paused
            && !gate.hold_new
            && running.len() < limit
            && !queue.is_empty()
        {
            let Some(worker) = free_workers.pop_front() else {
                break;
            };
            // The queue is sorted so that the largest chunk is last: popping is O(1).
            let Some(chunk_id) = queue.pop() else { break };
            let attempt = store.assign(&job.id, chunk_id, &worker).await?;
            store
                .report_state(&job.id, chunk_id, attempt, ChunkState::Copying)
                .await?;
            let record = &mut model[chunk_id.0 as usize];
            record.state = ChunkState::Copying;
            record.attempt = attempt;
            record.worker = Some(worker.clone());
            let table_index = record.table_index;
            table_first_start[table_index].get_or_insert_with(Instant::now);
            let _ = events.send(JobEvent::ChunkStarted {
                table_index,
                chunk: chunk_id,
                attempt,
            });

            let (table, key) = tables[table_index].clone();
            let streamed = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let progress_events = events.clone();
            let progress_streamed = streamed.clone();
            let verifying_store = store.clone();
            let verifying_job = job.id.clone();
            let task = ChunkTask {
                job: job.id.clone(),
                run_id: job.run_id.clone(),
                chunk: chunk_id,
                attempt,
                worker: worker.clone(),
                table,
                key,
                range: record.range.clone(),
                verify: options.verify,
                cancel: cancel.child_token(),
                progress: Arc::new(move |rows| {
                    progress_streamed.fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
                    let _ = progress_events.send(JobEvent::RowsCopied { table_index, rows });
                }),
                admission: pacing.admission.clone(),
                on_verifying: Arc::new(move || {
                    let store = verifying_store.clone();
                    let job = verifying_job.clone();
                    // A late report for an attempt that already ended is refused by the
                    // store's attempt check, so ordering does not matter.
                    tokio::spawn(async move {
                        let _ = store
                            .report_state(&job, chunk_id, attempt, ChunkState::Verifying)
                            .await;
                    });
                }),
            };
            let executor = executor.clone();
            pacing
                .in_flight
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            running.spawn(async move {
                let result = executor.execute(task).await;
                Finished {
                    chunk: chunk_id,
                    attempt,
                    worker,
                    result,
                    rows_streamed: streamed.load(std::sync::atomic::Ordering::Relaxed),
                }
            });
        }

        let nothing_left = queue.is_empty() && delayed.is_empty();
        if running.is_empty() && (nothing_left || cancel.is_cancelled()) {
            break;
        }

        let next_retry = delayed.iter().map(|(at, _)| *at).min();
        let finished = tokio::select! {
            joined = running.join_next(), if !running.is_empty() => joined,
            () = sleep_until_opt(next_retry) => continue,
            changed = pacing.gate.changed() => {
                if changed.is_err() {
                    // The throttle went away: keep the last gate.
                    pacing = Pacing { gate: watch::channel(gate).1, ..pacing };
                }
                continue;
            }
            () = cancel.cancelled(), if running.is_empty() => break,
        };
        let Some(joined) = finished else { continue };
        let finished = match joined {
            Ok(finished) => finished,
            Err(error) => {
                // A panicking executor is a bug; the chunk stays in flight and is re-copied
                // on the next run. Say so loudly.
                tracing::error!(%error, "chunk task panicked");
                continue;
            }
        };
        pacing
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        free_workers.push_back(finished.worker.clone());
        let chunk_id = finished.chunk;
        let table_index = model[chunk_id.0 as usize].table_index;
        table_last_end[table_index] = Some(Instant::now());
        let failures_before = model[chunk_id.0 as usize].failures;
        let completion = match classify(&finished.result, failures_before, options) {
            Some(completion) => completion,
            None => {
                let _ = events.send(JobEvent::ChunkFinished {
                    record: None,
                    table_index,
                    rows_streamed: finished.rows_streamed,
                });
                continue;
            }
        };
        let record = store
            .complete(&job.id, chunk_id, finished.attempt, &completion)
            .await?;
        match &completion {
            ChunkCompletion::Retry { reason, .. } => {
                tracing::warn!(chunk = %chunk_id, attempt = %finished.attempt, %reason, "chunk attempt failed; re-copying with overwrite");
                let backoff = options
                    .retry_backoff
                    .saturating_mul(1 << record.failures.saturating_sub(1).min(6))
                    .min(Duration::from_secs(10));
                delayed.push((Instant::now() + backoff, chunk_id));
            }
            ChunkCompletion::Requeue { reason } => {
                tracing::warn!(chunk = %chunk_id, attempt = %finished.attempt, %reason, "chunk stopped by the throttle; re-queued with overwrite");
                delayed.push((Instant::now() + options.retry_backoff, chunk_id));
            }
            ChunkCompletion::Failed { reason, .. } => {
                tracing::error!(chunk = %chunk_id, attempt = %finished.attempt, %reason, "chunk failed for good");
            }
            ChunkCompletion::Verified { .. } => {}
        }
        model[chunk_id.0 as usize] = record.clone();
        let _ = events.send(JobEvent::ChunkFinished {
            record: Some(record),
            table_index,
            rows_streamed: finished.rows_streamed,
        });
    }

    // Attempts still running were cancelled; wait for them so nothing commits after we
    // return (each checks its token before committing).
    while running.join_next().await.is_some() {}
    let chunks = store.list_chunks(&job.id).await?;
    let interrupted = chunks
        .iter()
        .any(|chunk| chunk.state != ChunkState::Verified && chunk.state != ChunkState::Failed);
    let table_elapsed = table_first_start
        .iter()
        .zip(&table_last_end)
        .map(|(start, end)| match (start, end) {
            (Some(start), Some(end)) => end.saturating_duration_since(*start),
            _ => Duration::ZERO,
        })
        .collect();
    Ok(RunOutcome {
        chunks,
        interrupted,
        elapsed: started.elapsed(),
        table_elapsed,
        requeued,
    })
}

/// Decides what an attempt's result means for the chunk; `None` when it was cancelled
/// (the chunk stays in flight and the next run re-copies it).
pub fn classify(
    result: &ChunkResult,
    failures_before: u32,
    options: &SchedulerOptions,
) -> Option<ChunkCompletion> {
    let out_of_attempts = failures_before + 1 >= options.max_attempts;
    match result {
        ChunkResult::Verified { rows, checksum } => Some(ChunkCompletion::Verified {
            rows: *rows,
            checksum: *checksum,
        }),
        ChunkResult::Mismatch { source, target } => {
            let reason = format!("checksum mismatch: source has {source}, target has {target}");
            let give_up = out_of_attempts || options.on_mismatch == OnMismatch::Fail;
            Some(if give_up {
                ChunkCompletion::Failed {
                    reason,
                    mismatch: true,
                }
            } else {
                ChunkCompletion::Retry {
                    reason,
                    mismatch: true,
                }
            })
        }
        ChunkResult::Error { message, retryable } => {
            let reason = message.clone();
            Some(if out_of_attempts || !retryable {
                ChunkCompletion::Failed {
                    reason,
                    mismatch: false,
                }
            } else {
                ChunkCompletion::Retry {
                    reason,
                    mismatch: false,
                }
            })
        }
        ChunkResult::Cancelled => None,
        ChunkResult::Requeued { reason } => Some(ChunkCompletion::Requeue {
            reason: reason.clone(),
        }),
    }
}

/// Orders the queue so that `pop()` yields the largest chunk first (lowest id on ties).
fn sort_largest_first(queue: &mut [ChunkId], model: &[ChunkRecord]) {
    queue.sort_by(|a, b| {
        let rows_a = model[a.0 as usize].estimated_rows;
        let rows_b = model[b.0 as usize].estimated_rows;
        rows_a.cmp(&rows_b).then(b.cmp(a))
    });
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use ferry_common::checksum::RangeChecksum;

    use super::*;

    fn options(max_attempts: u32, on_mismatch: OnMismatch) -> SchedulerOptions {
        SchedulerOptions {
            workers: 2,
            max_attempts,
            on_mismatch,
            verify: VerifyMode::Checksum,
            retry_backoff: Duration::ZERO,
        }
    }

    #[test]
    fn the_queue_pops_the_largest_chunk_first_and_the_lowest_id_on_ties() {
        use ferry_common::coordination::ChunkState;
        use ferry_common::key::ChunkRange;
        let model: Vec<ChunkRecord> = [5u64, 9, 9, 1]
            .iter()
            .enumerate()
            .map(|(index, rows)| ChunkRecord {
                id: ChunkId(index as u32),
                table_index: 0,
                range: ChunkRange::WholeTable,
                estimated_rows: *rows,
                state: ChunkState::Planned,
                attempt: Attempt(0),
                failures: 0,
                mismatches: 0,
                rows: 0,
                checksum: None,
                last_error: None,
                worker: None,
            })
            .collect();
        let mut queue: Vec<ChunkId> = (0..4).map(ChunkId).collect();
        sort_largest_first(&mut queue, &model);
        let popped: Vec<u32> = std::iter::from_fn(|| queue.pop()).map(|id| id.0).collect();
        assert_eq!(popped, vec![1, 2, 0, 3]);
    }

    #[test]
    fn mismatch_is_retried_until_the_last_attempt() {
        let mismatch = ChunkResult::Mismatch {
            source: RangeChecksum { rows: 2, sum: 1 },
            target: RangeChecksum { rows: 2, sum: 2 },
        };
        let opts = options(3, OnMismatch::Recopy);
        assert!(matches!(
            classify(&mismatch, 0, &opts),
            Some(ChunkCompletion::Retry { mismatch: true, .. })
        ));
        assert!(matches!(
            classify(&mismatch, 1, &opts),
            Some(ChunkCompletion::Retry { .. })
        ));
        assert!(matches!(
            classify(&mismatch, 2, &opts),
            Some(ChunkCompletion::Failed { .. })
        ));
        let fail_fast = options(3, OnMismatch::Fail);
        assert!(matches!(
            classify(&mismatch, 0, &fail_fast),
            Some(ChunkCompletion::Failed { .. })
        ));
    }

    #[test]
    fn permanent_errors_fail_at_once_and_cancellation_keeps_the_chunk_in_flight() {
        let opts = options(5, OnMismatch::Recopy);
        let permanent = ChunkResult::Error {
            message: "bad value".into(),
            retryable: false,
        };
        assert!(matches!(
            classify(&permanent, 0, &opts),
            Some(ChunkCompletion::Failed { .. })
        ));
        let transient = ChunkResult::Error {
            message: "busy".into(),
            retryable: true,
        };
        assert!(matches!(
            classify(&transient, 0, &opts),
            Some(ChunkCompletion::Retry { .. })
        ));
        assert_eq!(classify(&ChunkResult::Cancelled, 0, &opts), None);
    }
}
