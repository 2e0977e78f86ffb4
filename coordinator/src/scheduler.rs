//! Drives a job's chunks through their life on a coordination store.
//!
//! At most `min(workers, max_concurrency)` chunks copy at once, and as many again may be
//! verifying behind them: a copy job's chunk gives its place to the next one once its
//! copy has committed and it only reads the target back ([`crate::in_flight`]). The next
//! chunk is the largest planned one. Before taking slots the scheduler tells its pool how many it
//! wants ([`WorkerPool::want`]): a pool shared by several jobs (a cluster's) hands its
//! free slots out by the jobs' weights and per-database caps. A copy error or a checksum
//! mismatch sends the chunk back to PLANNED for another attempt with overwrite (after a
//! short backoff), until `max_attempts` failures make it FAILED with its reason kept.
//! Cancelling stops new assignments and cancels running attempts, which commit nothing;
//! their chunks stay in flight in the store and are re-copied when the job resumes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use ferry_coordination::{
    ChunkCompletion, ChunkRecord, ChunkState, Coordination, CoordinationError, JobRecord,
};
use std::sync::atomic::AtomicU32;

use ferry_model::execution::{Admission, ChunkExecutor, Unthrottled};
use ferry_model::ids::{Attempt, ChunkId, WorkerId};
use ferry_model::spec::{JobMode, OnMismatch, VerifyMode};

use crate::cutting::{Cutter, LiveAttempts};
use crate::deferred_key::DeferredKeys;
use crate::give_back::{CHECK_EVERY, TableDurations};
use crate::idle_split::SplitInputs;

mod attempts;
use crate::in_flight::{AttemptToken, InFlight};
pub use attempts::classify;
pub(crate) use attempts::{AttemptOutcome, Finished};
use attempts::{AttemptStarter, Start};
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
    /// Copy, verify only (a mismatch is then a finding, never re-copied), or a sync pass.
    pub mode: JobMode,
    /// Whether queued chunks far bigger than their share are cut before they start
    /// (`chunking.split_idle`; see [`crate::idle_split`]).
    pub split_idle: bool,
    /// The spec's `chunking.target_rows`: no piece cut is bigger.
    pub target_rows: u64,
    /// The exported source snapshot every attempt reads in (`consistency:
    /// job_snapshot`), set by the run that holds it.
    pub source_snapshot: Option<String>,
    /// What a sync pass reads by; `None` unless `mode` is [`JobMode::Sync`].
    pub sync: Option<std::sync::Arc<ferry_model::execution::SyncPass>>,
    /// Where the keys of tables loaded without them are built and their copied chunks
    /// verified ([`crate::deferred_key`]); `None`: every table is loaded keyed.
    pub target_keys: Option<crate::deferred_key::TargetKeysRef>,
}

impl SchedulerOptions {
    /// The options a spec asks for, with `workers` slots (`usize::MAX` when the pool
    /// decides, as in distributed mode).
    pub fn for_spec(spec: &ferry_model::spec::JobSpec, workers: usize) -> Self {
        Self {
            workers,
            max_attempts: spec.verify.max_attempts,
            on_mismatch: spec.verify.on_mismatch,
            verify: spec.verify.mode,
            retry_backoff: Duration::from_millis(200),
            mode: spec.mode,
            split_idle: spec.chunking.split_idle,
            target_rows: spec.chunking.target_rows,
            source_snapshot: None,
            sync: ferry_model::execution::SyncPass::of(spec),
            target_keys: None,
        }
    }
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
    /// The job's weight when it shares worker slots with other jobs (its `priority`).
    pub priority: u32,
}

/// How a run is paced: the gate the scheduler obeys, the admission running chunks pass
/// every batch through, and the in-flight count the scheduler publishes back.
#[derive(Clone)]
pub struct Pacing {
    /// The current gate; the scheduler re-reads it whenever it changes.
    pub gate: watch::Receiver<Gate>,
    /// Paces rows inside running chunks.
    pub admission: Arc<dyn Admission>,
    /// Chunks copying (what the concurrency limits; chunks verifying behind them are not
    /// counted), kept up to date by the scheduler.
    pub in_flight: Arc<AtomicU32>,
    /// Told when an attempt found a database unavailable, before its chunk is
    /// re-queued: the pacer then holds new chunks until the databases answer again.
    pub on_unavailable: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Pacing {
    /// A fixed concurrency, no pause, no rate limit.
    pub fn fixed(concurrency: u32) -> Self {
        let (_gate_tx, gate) = watch::channel(Gate {
            concurrency,
            paused: false,
            hold_new: false,
            priority: ferry_model::spec::DEFAULT_PRIORITY,
        });
        Self {
            gate,
            admission: Arc::new(Unthrottled),
            in_flight: Arc::new(AtomicU32::new(0)),
            // No pacer to hold chunks: an unavailable database's chunks are re-queued
            // after the retry backoff only.
            on_unavailable: Arc::new(|_| {}),
        }
    }
}

/// Where chunks run: the workers and their free slots. The in-process pool is a fixed
/// set of named slots; in distributed mode the slots are those of the live workers.
pub trait WorkerPool: Send {
    /// Says how many more slots the job would take now (0: none), under `gate`; a pool
    /// shared by several jobs gives its free slots out by the jobs' wants and weights.
    /// Called before every round of [`WorkerPool::acquire`].
    fn want(&mut self, slots: usize, gate: &Gate) {
        let _ = (slots, gate);
    }
    /// Slots the job could run chunks on now, busy and free (before other jobs' shares
    /// and the throttle): what the scheduler shares the remaining work over when it
    /// decides to cut a big queued chunk. `None` (no cut) when the pool cannot tell.
    fn capacity(&self) -> Option<usize> {
        None
    }
    /// Takes a free slot: the worker to give the next chunk to (`None` when all are busy).
    fn acquire(&mut self) -> Option<WorkerId>;
    /// Counts a slot of `worker` as taken by a chunk adopted in flight.
    fn adopt(&mut self, worker: &WorkerId);
    /// Gives a slot back (`verifying`: the slot's chunk was verifying, see
    /// [`WorkerPool::verifying`]).
    fn release(&mut self, worker: &WorkerId, verifying: bool);
    /// Says that a chunk on `worker` is verifying: a pool that lets a worker copy the
    /// next chunk meanwhile frees the slot for a copy and counts the verification apart
    /// (at most one per slot); the slot is given back with `release(worker, true)`. The
    /// fixed pool keeps the slot until the chunk ends.
    fn verifying(&mut self, worker: &WorkerId) {
        let _ = worker;
    }
    /// Resolves when a slot may have become free (a worker joined, another job released
    /// one); never, for a fixed pool.
    fn changed(&mut self) -> futures::future::BoxFuture<'_, ()>;
    /// Whether chunks found in flight are still running elsewhere and are to be adopted
    /// (waited for) rather than re-queued: true when workers outlive the scheduler.
    fn adopts_in_flight(&self) -> bool;
}

/// A fixed set of in-process workers, one slot each.
pub struct FixedPool {
    free: VecDeque<WorkerId>,
    count: usize,
}

impl FixedPool {
    /// `count` workers named `local-0`, `local-1`, ...
    pub fn new(count: usize) -> Self {
        Self {
            free: (0..count.max(1))
                .map(|index| WorkerId(format!("local-{index}")))
                .collect(),
            count: count.max(1),
        }
    }

    /// The workers' names.
    pub fn workers(&self) -> Vec<WorkerId> {
        self.free.iter().cloned().collect()
    }
}

impl WorkerPool for FixedPool {
    fn capacity(&self) -> Option<usize> {
        Some(self.count)
    }

    fn acquire(&mut self) -> Option<WorkerId> {
        self.free.pop_front()
    }

    fn adopt(&mut self, worker: &WorkerId) {
        self.free.retain(|free| free != worker);
    }

    fn release(&mut self, worker: &WorkerId, _verifying: bool) {
        self.free.push_back(worker.clone());
    }

    fn changed(&mut self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    fn adopts_in_flight(&self) -> bool {
        false
    }
}

/// What happened, for progress display.
#[derive(Clone, Debug)]
pub enum JobEvent {
    /// The run loaded the job's chunks (before any attempt starts): each chunk's id,
    /// state and verified rows, for consumers that keep counts.
    Loaded {
        /// Every chunk as stored when the run began.
        chunks: Vec<(ChunkId, ChunkState, u64)>,
    },
    /// A chunk that wrote nothing was cut into pieces: a queued one that never started
    /// ([`crate::idle_split`]) or a running one handed back ([`crate::give_back`]). It
    /// keeps the first, and `added` are new PLANNED chunks of its table.
    ChunkSplit {
        /// The chunks' table.
        table_index: usize,
        /// The chunk cut.
        chunk: ChunkId,
        /// The new chunks: id and estimated rows.
        added: Vec<(ChunkId, u64)>,
    },
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
        /// Boxed: a record is far larger than the other events.
        record: Option<Box<ChunkRecord>>,
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

/// Runs a job's remaining chunks to the end (or until `cancel`) on `options.workers`
/// in-process workers.
pub async fn run_job(
    store: Arc<dyn Coordination>,
    job: &JobRecord,
    executor: Arc<dyn ChunkExecutor>,
    options: &SchedulerOptions,
    pacing: Pacing,
    events: UnboundedSender<JobEvent>,
    cancel: CancellationToken,
) -> Result<RunOutcome, SchedulerError> {
    let mut pool = FixedPool::new(options.workers);
    for worker in pool.workers() {
        store.register_worker(&worker).await?;
    }
    run_job_on(
        store, job, executor, options, &mut pool, pacing, events, cancel,
    )
    .await
}

/// Runs a job's remaining chunks to the end (or until `cancel`) on the slots of `pool`.
#[allow(clippy::too_many_arguments)]
pub async fn run_job_on(
    store: Arc<dyn Coordination>,
    job: &JobRecord,
    executor: Arc<dyn ChunkExecutor>,
    options: &SchedulerOptions,
    pool: &mut dyn WorkerPool,
    mut pacing: Pacing,
    events: UnboundedSender<JobEvent>,
    cancel: CancellationToken,
) -> Result<RunOutcome, SchedulerError> {
    let started = Instant::now();
    let adopt = pool.adopts_in_flight();
    let requeued = if adopt {
        Vec::new()
    } else {
        store.requeue_in_flight(&job.id).await?
    };
    if !requeued.is_empty() {
        tracing::warn!(job = %job.id, chunks = ?requeued, "re-copying chunks left in flight by an earlier run, with overwrite");
    }
    let mut model = store.list_chunks(&job.id).await?;
    let _ = events.send(JobEvent::Loaded {
        chunks: model
            .iter()
            .map(|chunk| (chunk.id, chunk.state, chunk.rows))
            .collect(),
    });
    let tables: Vec<_> = job
        .tables
        .iter()
        .map(|table| (Arc::new(table.schema.clone()), Arc::new(table.key.clone())))
        .collect();
    let (verifying_tx, mut verifying_rx) =
        tokio::sync::mpsc::unbounded_channel::<(ChunkId, AttemptToken)>();
    let attempts = AttemptStarter {
        store: store.clone(),
        job,
        tables: &tables,
        executor: executor.clone(),
        options: options.clone(),
        events: events.clone(),
        admission: pacing.admission.clone(),
        in_flight: pacing.in_flight.clone(),
        on_unavailable: pacing.on_unavailable.clone(),
        cancel: cancel.clone(),
        // Only a copy's verification reads nothing but the target (a sync pass's keyed
        // diff reads the source after it says "verifying").
        verifying_tx: (options.mode == JobMode::Copy && options.verify != VerifyMode::None)
            .then(|| verifying_tx.clone()),
        next_token: std::cell::Cell::new(0),
    };
    let mut running: JoinSet<Finished> = JoinSet::new();
    // Running attempts, and how long each table's chunks took: to hand slow ones back.
    let mut live = LiveAttempts::default();
    let mut durations = TableDurations::default();
    let give_backs = options.split_idle && options.mode == JobMode::Copy;
    let mut in_flight = InFlight::default();
    let mut keys = DeferredKeys::new(job.tables.iter().map(|table| table.key_deferred), options);
    let mut table_first_start: Vec<Option<Instant>> = vec![None; tables.len()];
    let mut table_last_end: Vec<Option<Instant>> = vec![None; tables.len()];
    if adopt {
        for record in model.iter().filter(|chunk| chunk.state.in_flight()) {
            let Some(worker) = record.worker.clone() else {
                continue;
            };
            tracing::info!(job = %job.id, chunk = %record.id, attempt = %record.attempt, %worker, "adopting a chunk in flight");
            pool.adopt(&worker);
            table_first_start[record.table_index].get_or_insert_with(Instant::now);
            let spawned = attempts.spawn(
                &mut running,
                record,
                worker.clone(),
                Start::Adopted(record.attempt),
                keys.is_deferred(record.table_index),
            );
            live.started(
                record.id,
                record.table_index,
                false,
                spawned.streamed,
                spawned.give_back,
            );
            in_flight.started(record.id, spawned.token, worker);
        }
    }

    let mut queue: Vec<ChunkId> = model
        .iter()
        .filter(|chunk| chunk.state == ChunkState::Planned)
        .map(|chunk| chunk.id)
        .collect();
    sort_largest_first(&mut queue, &model);
    let mut delayed: Vec<(Instant, ChunkId)> = Vec::new();
    // The estimated work not yet done, which a cut shares over the slots.
    let mut remaining_rows: u64 = model
        .iter()
        .filter(|chunk| !matches!(chunk.state, ChunkState::Verified | ChunkState::Failed))
        .map(|chunk| chunk.estimated_rows)
        .sum();
    let mut cutter = Cutter {
        store: store.as_ref(),
        job,
        events: &events,
        refused: std::collections::HashSet::new(),
        handed_back: std::collections::HashSet::new(),
    };

    let mut gate_open = true;
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
        let may_start = !cancel.is_cancelled() && !gate.paused && !gate.hold_new;
        if options.split_idle
            && may_start
            && !queue.is_empty()
            && let Some(capacity) = pool.capacity()
        {
            let inputs = SplitInputs {
                slots: capacity.min(limit),
                remaining_rows,
                target_rows: options.target_rows,
            };
            cutter
                .split_queued(&mut model, &mut queue, &inputs, in_flight.copying())
                .await?;
        }
        if give_backs
            && may_start
            && queue.is_empty()
            && delayed.is_empty()
            && let Some(capacity) = pool.capacity()
        {
            let free = capacity.min(limit).saturating_sub(in_flight.copying());
            if free > 0 {
                cutter.ask_give_backs(free, &mut live, &durations, &model);
            }
        }
        let wanted = if may_start {
            in_flight.room(limit).min(queue.len())
        } else {
            0
        };
        pool.want(wanted, &gate);
        if may_start {
            keys.start_builds(&model, &tables, limit, &cancel);
            keys.start_verifications(
                &store,
                &job.id,
                &model,
                &tables,
                &mut in_flight,
                limit,
                || attempts.next_token(),
                options,
                &cancel,
            );
        }
        while may_start && in_flight.room(limit) > 0 && !queue.is_empty() {
            let Some(worker) = pool.acquire() else {
                break;
            };
            // The queue is sorted so that the largest chunk is last: popping is O(1).
            let Some(chunk_id) = queue.pop() else {
                pool.release(&worker, false);
                break;
            };
            let record = &mut model[chunk_id.0 as usize];
            record.state = ChunkState::Assigned;
            record.worker = Some(worker.clone());
            table_first_start[record.table_index].get_or_insert_with(Instant::now);
            // A first attempt, not of a piece of a chunk handed back: may be handed back.
            let first = record.attempt == Attempt(0) && !cutter.handed_back.contains(&chunk_id);
            let key_deferred = keys.is_deferred(record.table_index);
            let spawned = attempts.spawn(
                &mut running,
                record,
                worker.clone(),
                Start::Fresh,
                key_deferred,
            );
            live.started(
                chunk_id,
                record.table_index,
                first,
                spawned.streamed,
                spawned.give_back,
            );
            in_flight.started(chunk_id, spawned.token, worker);
        }

        let nothing_left = queue.is_empty() && delayed.is_empty() && keys.idle();
        let keys_running = !keys.builds.is_empty() || !keys.verifications.is_empty();
        if running.is_empty() && !keys_running && (nothing_left || cancel.is_cancelled()) {
            break;
        }

        let next_retry = delayed
            .iter()
            .map(|(at, _)| *at)
            .chain(keys.next_retry())
            .min();
        // While a slow chunk could be handed back, look again now and then.
        let next_give_back = (give_backs && queue.is_empty() && live.any_candidate())
            .then(|| Instant::now() + CHECK_EVERY);
        let finished = tokio::select! {
            joined = running.join_next(), if !running.is_empty() => joined,
            joined = keys.verifications.join_next(), if !keys.verifications.is_empty() => joined,
            Some(built) = keys.builds.join_next(), if !keys.builds.is_empty() => {
                let built = match built {
                    Ok(built) => built,
                    Err(error) => {
                        tracing::error!(%error, "key build task panicked");
                        continue;
                    }
                };
                let table_index = built.0;
                let broken = keys.built(built, &model, options.retry_backoff, cancel.is_cancelled());
                if let Some(reason) = broken {
                    fail_copied_chunks(store.as_ref(), job, &mut model, table_index, &reason, &events).await?;
                }
                continue;
            }
            Some((chunk_id, token)) = verifying_rx.recv() => {
                // The copy committed and only the target is read now: the next chunk
                // may copy while this one verifies.
                live.verifying(chunk_id);
                if let Some(worker) = in_flight.verifying(chunk_id, token) {
                    pool.verifying(&worker);
                    pacing
                        .in_flight
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
                continue;
            }
            () = sleep_until_opt(next_retry) => continue,
            () = sleep_until_opt(next_give_back) => continue,
            () = pool.changed(), if !queue.is_empty() => continue,
            changed = pacing.gate.changed(), if gate_open => {
                // Without a sender (a fixed gate, or the throttle went away) the last
                // gate stays; waiting on it again would return at once, for ever.
                gate_open = changed.is_ok();
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
        let chunk_id = finished.chunk;
        let (took, mut requested_cut) = match live.ended(chunk_id) {
            Some(ended) => (Some(ended.took()), ended.into_cut()),
            None => (None, None),
        };
        let worker = model[chunk_id.0 as usize].worker.clone();
        let was_verifying = in_flight.ended(chunk_id);
        if !was_verifying {
            pacing
                .in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(worker) = &worker {
            pool.release(worker, was_verifying);
        }
        let table_index = model[chunk_id.0 as usize].table_index;
        table_last_end[table_index] = Some(Instant::now());
        let (attempt, completion, record) = match finished.outcome {
            AttemptOutcome::Completed {
                attempt,
                completion,
                record,
            } => (attempt, completion, *record),
            AttemptOutcome::NotStarted => {
                model[chunk_id.0 as usize].state = ChunkState::Planned;
                queue.push(chunk_id);
                sort_largest_first(&mut queue, &model);
                continue;
            }
            AttemptOutcome::Cancelled => {
                let _ = events.send(JobEvent::ChunkFinished {
                    record: None,
                    table_index,
                    rows_streamed: finished.rows_streamed,
                });
                continue;
            }
            AttemptOutcome::Store(error) => return Err(error.into()),
        };
        let mut hand_back = None;
        match &completion {
            ChunkCompletion::Requeue { reason } if requested_cut.is_some() => {
                tracing::info!(chunk = %chunk_id, %attempt, %reason, "chunk handed back; cutting it");
                hand_back = requested_cut.take();
            }
            ChunkCompletion::Retry { reason, .. } => {
                tracing::warn!(chunk = %chunk_id, %attempt, %reason, "chunk attempt failed; re-copying with overwrite");
                let backoff = options
                    .retry_backoff
                    .saturating_mul(1 << record.failures.saturating_sub(1).min(6))
                    .min(Duration::from_secs(10));
                delayed.push((Instant::now() + backoff, chunk_id));
            }
            ChunkCompletion::Requeue { reason } => {
                tracing::warn!(chunk = %chunk_id, %attempt, %reason, "chunk stopped by the throttle; re-queued with overwrite");
                delayed.push((Instant::now() + options.retry_backoff, chunk_id));
            }
            ChunkCompletion::Failed { reason, .. } => {
                tracing::error!(chunk = %chunk_id, %attempt, %reason, "chunk failed for good");
            }
            ChunkCompletion::Differs { source, target } => {
                tracing::warn!(chunk = %chunk_id, %source, %target, "source and target differ");
            }
            ChunkCompletion::Verified { .. } => {
                if let Some(took) = took {
                    durations.finished(table_index, took, record.estimated_rows);
                }
            }
            ChunkCompletion::Copied { .. } => {
                tracing::debug!(chunk = %chunk_id, %attempt, "chunk copied; verified once its table's key is built");
                keys.copied(&record);
                if let Some(took) = took {
                    durations.finished(table_index, took, record.estimated_rows);
                }
            }
        }
        if matches!(record.state, ChunkState::Verified | ChunkState::Failed) {
            remaining_rows = remaining_rows.saturating_sub(record.estimated_rows);
        }
        model[chunk_id.0 as usize] = record.clone();
        let _ = events.send(JobEvent::ChunkFinished {
            record: Some(Box::new(record)),
            table_index,
            rows_streamed: finished.rows_streamed,
        });
        if let Some(cut) = hand_back {
            cutter
                .cut_handed_back(&mut model, &mut queue, chunk_id, &cut)
                .await?;
        }
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

/// Fails the COPIED chunks of a table whose key cannot be built (rows with equal keys):
/// the reason names the table and the fix.
async fn fail_copied_chunks(
    store: &dyn Coordination,
    job: &JobRecord,
    model: &mut [ChunkRecord],
    table_index: usize,
    reason: &str,
    events: &UnboundedSender<JobEvent>,
) -> Result<(), SchedulerError> {
    tracing::error!(%reason, "the table's chunks fail");
    for chunk in model.iter_mut() {
        if chunk.table_index != table_index || chunk.state != ChunkState::Copied {
            continue;
        }
        let completion = ChunkCompletion::Failed {
            reason: reason.to_owned(),
            mismatch: false,
        };
        let record = store
            .complete(&job.id, chunk.id, chunk.attempt, &completion)
            .await?;
        let rows_streamed = chunk.rows;
        *chunk = record.clone();
        let _ = events.send(JobEvent::ChunkFinished {
            record: Some(Box::new(record)),
            table_index,
            rows_streamed,
        });
    }
    Ok(())
}

/// Orders the queue so that `pop()` yields the largest chunk first (lowest id on ties).
pub(crate) fn sort_largest_first(queue: &mut [ChunkId], model: &[ChunkRecord]) {
    queue.sort_by(|a, b| {
        let rows_a = model[a.0 as usize].estimated_rows;
        let rows_b = model[b.0 as usize].estimated_rows;
        rows_a.cmp(&rows_b).then(b.cmp(a))
    });
}

/// Sleeps until `at`, or forever without one.
pub(crate) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use ferry_model::checksum::RangeChecksum;
    use ferry_model::execution::ChunkResult;

    use super::*;

    fn options(max_attempts: u32, on_mismatch: OnMismatch) -> SchedulerOptions {
        SchedulerOptions {
            workers: 2,
            max_attempts,
            on_mismatch,
            verify: VerifyMode::Checksum,
            retry_backoff: Duration::ZERO,
            mode: JobMode::Copy,
            split_idle: false,
            target_rows: 500_000,
            source_snapshot: None,
            sync: None,
            target_keys: None,
        }
    }

    #[test]
    fn the_queue_pops_the_largest_chunk_first_and_the_lowest_id_on_ties() {
        use ferry_model::key::ChunkRange;
        let model: Vec<ChunkRecord> = [5u64, 9, 9, 1]
            .iter()
            .enumerate()
            .map(|(index, rows)| {
                ChunkRecord::planned(
                    ChunkId(index as u32),
                    0,
                    None,
                    ChunkRange::WholeTable,
                    *rows,
                )
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
    fn a_verify_only_mismatch_is_a_final_finding_with_both_sides() {
        let source = RangeChecksum { rows: 2, sum: 1 };
        let target = RangeChecksum { rows: 1, sum: 2 };
        let opts = SchedulerOptions {
            mode: JobMode::Verify,
            sync: None,
            ..options(3, OnMismatch::Recopy)
        };
        assert_eq!(
            classify(&ChunkResult::Mismatch { source, target }, 0, &opts),
            Some(ChunkCompletion::Differs { source, target })
        );
        // Errors are retried as in a copy: a verify that could not compare has no finding.
        let transient = ChunkResult::Error {
            message: "busy".into(),
            retryable: true,
        };
        assert!(matches!(
            classify(&transient, 0, &opts),
            Some(ChunkCompletion::Retry {
                mismatch: false,
                ..
            })
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
