//! One attempt of one chunk, as the scheduler starts it: the task that assigns it (or
//! adopts it), runs it on the executor and records how it ended, and what its result
//! means for the chunk ([`classify`]).

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use ferry_coordination::{
    ChunkCompletion, ChunkRecord, ChunkState, Coordination, CoordinationError, JobRecord,
};
use ferry_model::execution::{Admission, ChunkExecutor, ChunkResult, ChunkTask};
use ferry_model::ids::{Attempt, ChunkId, WorkerId};
use ferry_model::spec::{JobMode, OnMismatch};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{JobEvent, SchedulerOptions};
use crate::in_flight::AttemptToken;

/// An attempt task's end, as the scheduler's loop receives it.
pub(crate) struct Finished {
    pub(crate) chunk: ChunkId,
    pub(crate) rows_streamed: u64,
    pub(crate) outcome: AttemptOutcome,
}

/// What an attempt task did. The task does the attempt's store writes itself (assign,
/// COPYING, the completion), so that many attempts' writes are in flight at once
/// instead of one after another in the scheduler's loop.
pub(crate) enum AttemptOutcome {
    /// Cancelled before it was assigned: the chunk is still PLANNED.
    NotStarted,
    /// Cancelled while running: the chunk stays in flight for the next run.
    Cancelled,
    /// Ended and recorded: what it meant and the chunk as now stored.
    Completed {
        attempt: Attempt,
        completion: ChunkCompletion,
        record: Box<ChunkRecord>,
    },
    /// The store failed; the run stops (the job stays resumable).
    Store(CoordinationError),
}

/// How an attempt begins.
#[derive(Clone, Copy)]
pub(super) enum Start {
    /// Assign the chunk (a new attempt).
    Fresh,
    /// The attempt is in flight already (left by an earlier leader): wait for it.
    Adopted(Attempt),
}

/// Starts attempts: builds the task and runs it on the executor.
pub(super) struct AttemptStarter<'a> {
    pub(super) store: Arc<dyn Coordination>,
    pub(super) job: &'a JobRecord,
    pub(super) tables: &'a [(
        Arc<ferry_model::schema::TableSchema>,
        Arc<ferry_model::key::SplitKey>,
    )],
    pub(super) executor: Arc<dyn ChunkExecutor>,
    pub(super) options: SchedulerOptions,
    pub(super) events: UnboundedSender<JobEvent>,
    pub(super) admission: Arc<dyn Admission>,
    pub(super) in_flight: Arc<AtomicU32>,
    pub(super) on_unavailable: Arc<dyn Fn(&str) + Send + Sync>,
    pub(super) cancel: CancellationToken,
    /// Where an attempt says it is verifying (its token), when the scheduler lets the
    /// next chunk copy meanwhile.
    pub(super) verifying_tx: Option<UnboundedSender<(ChunkId, AttemptToken)>>,
    /// The next attempt's token.
    pub(super) next_token: std::cell::Cell<AttemptToken>,
}

impl AttemptStarter<'_> {
    /// A token for an attempt (or a verification run by the scheduler).
    pub(super) fn next_token(&self) -> AttemptToken {
        let token = self.next_token.get() + 1;
        self.next_token.set(token);
        token
    }

    /// Runs one attempt in its own task: assigns it (unless adopted), runs it on the
    /// executor, and records how it ended. Returns what the scheduler follows of it.
    pub(super) fn spawn(
        &self,
        running: &mut JoinSet<Finished>,
        record: &ChunkRecord,
        worker: WorkerId,
        start: Start,
        key_deferred: bool,
    ) -> Spawned {
        let token = self.next_token();
        let verifying_tx = self.verifying_tx.clone();
        let chunk_id = record.id;
        let table_index = record.table_index;
        let failures_before = record.failures;
        let (table, key) = self.tables[table_index].clone();
        let (partition, range) = (record.partition.clone(), record.range.clone());
        let streamed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let store = self.store.clone();
        let job = self.job.id.clone();
        let run_id = self.job.run_id.clone();
        let executor = self.executor.clone();
        let options = self.options.clone();
        let events = self.events.clone();
        let admission = self.admission.clone();
        let on_unavailable = self.on_unavailable.clone();
        let cancel = self.cancel.child_token();
        let give_back = CancellationToken::new();
        let spawned = Spawned {
            token,
            streamed: streamed.clone(),
            give_back: give_back.clone(),
        };
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        running.spawn(async move {
            let finished = |outcome| Finished {
                chunk: chunk_id,
                rows_streamed: streamed.load(std::sync::atomic::Ordering::Relaxed),
                outcome,
            };
            let attempt = match start {
                Start::Adopted(attempt) => attempt,
                Start::Fresh if cancel.is_cancelled() => {
                    return finished(AttemptOutcome::NotStarted);
                }
                Start::Fresh => {
                    // Assigned and COPYING in one write.
                    match store.start_attempt(&job, chunk_id, &worker).await {
                        Ok(attempt) => attempt,
                        Err(error) => return finished(AttemptOutcome::Store(error)),
                    }
                }
            };
            let _ = events.send(JobEvent::ChunkStarted {
                table_index,
                chunk: chunk_id,
                attempt,
            });
            let progress_events = events.clone();
            let progress_streamed = streamed.clone();
            let verifying_store = store.clone();
            let verifying_job = job.clone();
            let task = ChunkTask {
                job: job.clone(),
                run_id,
                chunk: chunk_id,
                attempt,
                worker: worker.clone(),
                table,
                key,
                partition,
                range,
                key_deferred,
                verify: options.verify,
                mode: options.mode,
                source_snapshot: options.source_snapshot.clone(),
                sync: options.sync.clone(),
                cancel,
                give_back,
                progress: Arc::new(move |rows| {
                    progress_streamed.fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
                    let _ = progress_events.send(JobEvent::RowsCopied { table_index, rows });
                }),
                admission,
                on_verifying: Arc::new(move || {
                    let store = verifying_store.clone();
                    let job = verifying_job.clone();
                    let verifying_tx = verifying_tx.clone();
                    // A late report for an attempt that already ended is refused by the
                    // store's attempt check, so ordering does not matter. The scheduler
                    // hears of it once it is stored: a chunk stays COPYING, and counted
                    // as copying, until the state says otherwise.
                    tokio::spawn(async move {
                        let stored = store
                            .report_state(&job, chunk_id, attempt, ChunkState::Verifying)
                            .await;
                        if let (Ok(()), Some(verifying_tx)) = (stored, verifying_tx) {
                            let _ = verifying_tx.send((chunk_id, token));
                        }
                    });
                }),
            };
            // The same fields as the worker's span of this attempt.
            let span = tracing::info_span!(
                "chunk_attempt",
                job = %task.job,
                table = %task.table.name,
                partition = task.partition.as_deref().unwrap_or(""),
                chunk = %task.chunk,
                attempt = %task.attempt,
                worker = %task.worker,
            );
            let result = async {
                tracing::info!("assigned");
                let result = executor.execute(task).await;
                tracing::info!(outcome = result.kind(), "attempt ended");
                result
            }
            .instrument(span)
            .await;
            if let ChunkResult::Unavailable { message } = &result {
                // Hold new chunks before this one is re-queued.
                (on_unavailable)(message);
            }
            let Some(completion) = classify(&result, failures_before, &options) else {
                return finished(AttemptOutcome::Cancelled);
            };
            match store.complete(&job, chunk_id, attempt, &completion).await {
                Ok(record) => finished(AttemptOutcome::Completed {
                    attempt,
                    completion,
                    record: Box::new(record),
                }),
                Err(error) => finished(AttemptOutcome::Store(error)),
            }
        });
        spawned
    }
}

/// What the scheduler keeps of an attempt it started.
pub(super) struct Spawned {
    pub(super) token: AttemptToken,
    /// Rows it streamed so far.
    pub(super) streamed: Arc<std::sync::atomic::AtomicU64>,
    /// Asks it to hand its chunk back before writing.
    pub(super) give_back: CancellationToken,
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
        ChunkResult::Verified {
            rows,
            checksum,
            sync,
        } => Some(ChunkCompletion::Verified {
            rows: *rows,
            checksum: *checksum,
            sync: *sync,
        }),
        ChunkResult::Copied { rows, checksum } => Some(ChunkCompletion::Copied {
            rows: *rows,
            checksum: *checksum,
        }),
        ChunkResult::Mismatch { source, target } if options.mode == JobMode::Verify => {
            // A verify-only job writes nothing: a difference is its finding, recorded
            // at once with both sides (no attempt could change it).
            Some(ChunkCompletion::Differs {
                source: *source,
                target: *target,
            })
        }
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
        // The database is away: not the chunk's fault, no attempt is counted.
        ChunkResult::Unavailable { message } => Some(ChunkCompletion::Requeue {
            reason: format!("database unavailable: {message}"),
        }),
    }
}
