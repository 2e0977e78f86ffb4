//! A worker process in a cluster: registers under its own etcd lease, watches its
//! assignments, claims and runs them with [`ChunkRunner`], reports progress and results.
//!
//! Self-fencing: when the lease cannot be renewed in time every running attempt is
//! cancelled (its target transaction rolls back) and nothing more is written; the
//! worker then registers again under a new lease. A leader that reassigned the chunk
//! meanwhile withdrew the old assignment, so a late result is refused by etcd, and the
//! target's fence refuses a late commit.
//!
//! Draining (SIGTERM or `ferryctl drain`): takes nothing new, lets running attempts
//! finish within `drain_timeout`, else cancels them and reports them re-queued, then
//! revokes its lease and returns.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ferry_connectors::{JobOpener, OpenedJob, SpecOpener};
use ferry_coordination::ClusterRef;
use ferry_coordination::cluster::{
    AssignedChunk, Assignment, ChunkProgress, JobPace, LeaseSession, Mirror, WorkerInfo,
};
use ferry_model::backoff::Backoff;
use ferry_model::execution::{ChunkExecutor, ChunkResult, ChunkTask};
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};
use ferry_model::key::SplitKey;
use ferry_model::schema::TableSchema;
use ferry_model::spec::VerifyMode;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::runner::ChunkRunner;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Its name (unique in the cluster).
    pub id: WorkerId,
    /// Chunks at once.
    pub slots: u32,
    /// Lease TTL.
    pub ttl: Duration,
    /// How long a drain lets running chunks finish.
    pub drain_timeout: Duration,
    /// The environment `url_env` names are looked up in.
    pub env: HashMap<String, String>,
    /// Folder relative paths in specs are joined to.
    pub base_dir: PathBuf,
    /// Host name, for operators.
    pub host: String,
    /// How often a running attempt's progress is written (at most).
    pub progress_interval: Duration,
}

/// Where a worker stands (what its readiness reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Getting a lease and registering: at start, and after a lease was lost.
    Registering,
    /// Registered under a live lease, taking chunks.
    Ready,
    /// Draining: takes nothing new.
    Draining,
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// etcd refused something for good.
    #[error(transparent)]
    Store(#[from] ferry_coordination::CoordinationError),
}

/// What a worker shares between its sessions: the opened jobs and how to open one.
#[derive(Clone)]
struct Agent {
    contexts: JobContexts,
    opener: Arc<dyn JobOpener>,
}

/// One job's context on this worker.
struct JobContext {
    run_id: String,
    tables: Vec<(Arc<TableSchema>, Arc<SplitKey>)>,
    /// Per table, whether the job created its target without the primary key
    /// ([`ferry_model::execution::ChunkTask::key_deferred`]).
    keys_deferred: Vec<bool>,
    verify: VerifyMode,
    /// Copy, verify only or a sync pass: from the job's spec, so every worker runs the
    /// job alike.
    mode: ferry_model::spec::JobMode,
    /// What a sync pass reads by (its marks come with the pass's spec).
    sync: Option<Arc<ferry_model::execution::SyncPass>>,
    runner: Arc<ChunkRunner>,
}

/// The jobs a worker has opened (spec, connectors, plan), loaded once per job and
/// shared by every attempt; agents of one process may share one.
#[derive(Clone, Default)]
pub struct JobContexts(Arc<tokio::sync::Mutex<HashMap<JobId, Arc<JobContext>>>>);

struct Running {
    attempt: Attempt,
    cancel: CancellationToken,
    /// Fired when the leader asks for the chunk back ([`Assignment::give_back`]).
    give_back: CancellationToken,
}

/// Runs the worker until it has drained (after `drain` fires) or `kill` fires; keeps
/// `state` current. Jobs are opened from their submitted spec, with `options.env` and
/// `options.base_dir`.
pub async fn run_agent(
    store: ClusterRef,
    options: AgentOptions,
    drain: CancellationToken,
    kill: CancellationToken,
    state: watch::Sender<WorkerState>,
) -> Result<(), AgentError> {
    let opener = Arc::new(SpecOpener {
        env: options.env.clone(),
        base_dir: options.base_dir.clone(),
    });
    run_agent_with(
        store,
        options,
        opener,
        JobContexts::default(),
        drain,
        kill,
        state,
    )
    .await
}

/// [`run_agent`] opening jobs with `opener`, caching them in `contexts`.
pub async fn run_agent_with(
    store: ClusterRef,
    options: AgentOptions,
    opener: Arc<dyn JobOpener>,
    contexts: JobContexts,
    drain: CancellationToken,
    kill: CancellationToken,
    state: watch::Sender<WorkerState>,
) -> Result<(), AgentError> {
    let agent = Agent { contexts, opener };
    loop {
        if kill.is_cancelled() {
            return Ok(());
        }
        if !drain.is_cancelled() {
            state.send_replace(WorkerState::Registering);
        }
        let session = kill.child_token();
        let Some(lease) = store.start_lease_retrying(options.ttl, &session).await else {
            return Ok(());
        };
        let drained = run_session(&store, &options, &lease, &agent, &drain, &session, &state).await;
        session.cancel();
        match drained {
            Ok(true) => {
                if let Err(error) = store.revoke_lease(lease.id).await {
                    tracing::warn!(%error, "cannot revoke the lease; it expires by itself");
                }
                tracing::info!(worker = %options.id, "drained; leaving");
                return Ok(());
            }
            Ok(false) => {
                tracing::warn!(worker = %options.id, "lease lost; registering again");
            }
            Err(error) if error.is_retryable() => {
                tracing::warn!(%error, "etcd unavailable; registering again");
            }
            Err(ferry_coordination::CoordinationError::WorkerNameTaken { pid, host, .. })
                if pid == std::process::id() && host == options.host =>
            {
                // This process's own registration, on the lease it lost: etcd frees
                // the name when that lease expires (at most one TTL).
                tracing::warn!(worker = %options.id, "the registration of the lost lease still stands; registering again once it expires");
                if let Err(error) = store.revoke_lease(lease.id).await {
                    tracing::debug!(%error, "cannot revoke the unused lease; it expires by itself");
                }
                tokio::select! {
                    () = kill.cancelled() => return Ok(()),
                    () = tokio::time::sleep(options.ttl / 4) => {}
                }
            }
            Err(error) => {
                if let Err(revoke_error) = store.revoke_lease(lease.id).await {
                    tracing::debug!(error = %revoke_error, "cannot revoke the lease; it expires by itself");
                }
                return Err(error.into());
            }
        }
    }
}

/// One lease's life. `Ok(true)` when drained, `Ok(false)` when the lease was lost.
async fn run_session(
    store: &ClusterRef,
    options: &AgentOptions,
    lease: &LeaseSession,
    agent: &Agent,
    drain: &CancellationToken,
    session: &CancellationToken,
    state: &watch::Sender<WorkerState>,
) -> ferry_coordination::Result<bool> {
    let mut info = WorkerInfo {
        id: options.id.clone(),
        slots: options.slots,
        draining: drain.is_cancelled(),
        host: options.host.clone(),
        pid: std::process::id(),
        registered_at_unix_ms: jiff::Timestamp::now().as_millisecond(),
    };
    store.put_live_worker(&info, lease.id).await?;
    tracing::info!(worker = %options.id, lease = lease.id, slots = options.slots, "registered");
    // Counted while this session lives: agents of one process (ferryctl local) add up.
    let _slots = crate::metrics::SlotsGauge::register(options.slots);
    state.send_replace(if info.draining {
        WorkerState::Draining
    } else {
        WorkerState::Ready
    });
    let mut assignments = store.watch_assignments(&options.id, session);
    let mut alive = lease.alive();
    let mut running: HashMap<(JobId, ChunkId), Running> = HashMap::new();
    let mut tasks: JoinSet<(JobId, ChunkId, Attempt)> = JoinSet::new();
    // Attempts this session ran to the end: their assignment stands until the leader
    // has read the result, and must not start them again meanwhile.
    let mut finished: std::collections::HashSet<(JobId, ChunkId, Attempt)> = Default::default();
    let draining = Arc::new(AtomicBool::new(info.draining));
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut drain_requests = store.watch_drain_requests(&options.id, session);
    let pace = store.watch_pace(session);
    loop {
        if !*alive.borrow_and_update() {
            // Self-fencing: stop every attempt before the lease can expire.
            for entry in running.values() {
                entry.cancel.cancel();
            }
            while tasks.join_next().await.is_some() {}
            return Ok(false);
        }
        let draining_now = draining.load(Ordering::Relaxed);
        if draining_now && running.is_empty() {
            return Ok(true);
        }
        let current = assignments.borrow_and_update().clone();
        // Withdrawn assignments: stop their attempts. Asked back: hand them back.
        for ((job, chunk), entry) in &running {
            let standing = current.values().find(|assignment| {
                &assignment.job == job
                    && assignment.chunk == *chunk
                    && assignment.attempt == entry.attempt
            });
            match standing {
                None => entry.cancel.cancel(),
                Some(assignment) if assignment.give_back => entry.give_back.cancel(),
                Some(_) => {}
            }
        }
        finished.retain(|(job, chunk, attempt)| {
            current.values().any(|assignment| {
                &assignment.job == job
                    && assignment.chunk == *chunk
                    && assignment.attempt == *attempt
            })
        });
        for assignment in current.values() {
            let key = (assignment.job.clone(), assignment.chunk);
            if running.contains_key(&key)
                || finished.contains(&(key.0.clone(), key.1, assignment.attempt))
            {
                continue;
            }
            if draining_now {
                // Give it straight back: the leader re-queues it for another worker.
                let result = ChunkResult::Requeued {
                    reason: format!("worker {} is draining", options.id),
                };
                if let Err(error) = store.put_result(assignment, &result).await {
                    tracing::warn!(%error, "cannot hand back an assignment");
                }
                continue;
            }
            let cancel = session.child_token();
            let give_back = CancellationToken::new();
            if assignment.give_back {
                give_back.cancel();
            }
            running.insert(
                key.clone(),
                Running {
                    attempt: assignment.attempt,
                    cancel: cancel.clone(),
                    give_back: give_back.clone(),
                },
            );
            let attempt = AttemptRun {
                store: store.clone(),
                assignment: assignment.clone(),
                lease: lease.clone(),
                agent: agent.clone(),
                options: options.clone(),
                cancel,
                give_back,
                draining: draining.clone(),
                pace: pace.clone(),
            };
            let attempt_number = assignment.attempt;
            tasks.spawn(async move {
                attempt.run().await;
                (key.0, key.1, attempt_number)
            });
        }
        let deadline = drain_deadline;
        tokio::select! {
            biased;
            () = session.cancelled() => {
                // Stopped at once (a second signal): running attempts roll back and are
                // reported re-queued when draining; leave like a drained worker.
                for entry in running.values() {
                    entry.cancel.cancel();
                }
                while tasks.join_next().await.is_some() {}
                return Ok(true);
            }
            _ = assignments.changed() => {}
            _ = alive.changed() => {}
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok((job, chunk, attempt)) = joined {
                    running.remove(&(job.clone(), chunk));
                    finished.insert((job, chunk, attempt));
                }
            }
            () = drain.cancelled(), if !draining_now => {
                start_drain(store, &mut info, lease, &draining, &mut drain_deadline, options, state).await;
            }
            _ = drain_requests.changed(), if !draining_now => {
                let requested = !drain_requests.borrow_and_update().is_empty();
                // Consumed, so that a worker started later under this name does not drain.
                if requested && store.take_drain_request(&options.id).await.unwrap_or(false) {
                    // Through the worker-wide token, as a signal does: the drain then
                    // outlives a lost lease (the next registration is draining too).
                    drain.cancel();
                }
            }
            () = sleep_until(deadline), if deadline.is_some() => {
                tracing::warn!(worker = %options.id, "drain timeout: releasing the chunks still running");
                for entry in running.values() {
                    entry.cancel.cancel();
                }
                drain_deadline = None;
            }
        }
    }
}

async fn start_drain(
    store: &ClusterRef,
    info: &mut WorkerInfo,
    lease: &LeaseSession,
    draining: &AtomicBool,
    deadline: &mut Option<tokio::time::Instant>,
    options: &AgentOptions,
    state: &watch::Sender<WorkerState>,
) {
    tracing::info!(worker = %options.id, timeout = ?options.drain_timeout, "draining");
    state.send_replace(WorkerState::Draining);
    draining.store(true, Ordering::Relaxed);
    info.draining = true;
    *deadline = Some(tokio::time::Instant::now() + options.drain_timeout);
    if let Err(error) = store.put_live_worker(info, lease.id).await {
        tracing::warn!(%error, "cannot mark the worker draining");
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One attempt on this worker.
struct AttemptRun {
    store: ClusterRef,
    assignment: Assignment,
    lease: LeaseSession,
    agent: Agent,
    options: AgentOptions,
    cancel: CancellationToken,
    /// Fired when the leader asks for the chunk back.
    give_back: CancellationToken,
    draining: Arc<AtomicBool>,
    /// Every job's live pace.
    pace: Mirror<JobPace>,
}

impl AttemptRun {
    async fn run(self) {
        // The claim is not waited for before the copy, and an attempt that ends before
        // its first progress is due writes none: the copy's target fence and the
        // result's guard (the assignment as seen) keep a withdrawn attempt from
        // counting, so a small chunk costs one worker write (its result), not two. A
        // refused claim stops the copy; the result waits for a claim in flight.
        let ended = CancellationToken::new();
        let claimed = self.spawn_claim(ended.clone());
        let result_opt = self.attempt().await;
        ended.cancel();
        let claimed = claimed.await.unwrap_or(false);
        if let (Some(result), true) = (result_opt, claimed) {
            self.report(&result).await;
        }
    }

    /// Claims the assignment in the background once the attempt's first progress is
    /// due (`progress_interval`), unless `ended` fired first; a refused or failed claim
    /// cancels the attempt. The task answers whether the result may be reported
    /// (claimed, or ended before a claim was due).
    fn spawn_claim(&self, ended: CancellationToken) -> tokio::task::JoinHandle<bool> {
        let store = self.store.clone();
        let assignment = self.assignment.clone();
        let lease = self.lease.id;
        let cancel = self.cancel.clone();
        let due = self.options.progress_interval;
        tokio::spawn(async move {
            tokio::select! {
                () = ended.cancelled() => return true,
                () = tokio::time::sleep(due) => {}
            }
            match store.claim(&assignment, lease).await {
                Ok(true) => true,
                Ok(false) => {
                    cancel.cancel();
                    false
                }
                Err(error) => {
                    tracing::warn!(%error, chunk = %assignment.chunk, "cannot claim; leaving it to the leader");
                    cancel.cancel();
                    false
                }
            }
        })
    }

    /// Runs the attempt; its result, or `None` when there is nothing to say (withdrawn,
    /// self-fenced).
    async fn attempt(&self) -> Option<ChunkResult> {
        let assignment = &self.assignment;
        let context = match self.context().await {
            Ok(context) => context,
            Err(result) => return Some(result),
        };
        let planned = match &assignment.planned {
            Some(chunk) => Some(chunk.clone()),
            // Assigned without its chunk (an assignment that replaced one left behind):
            // read as it is now (it cannot change once assigned).
            None => match self
                .store
                .load_chunk(&assignment.job, assignment.chunk)
                .await
            {
                Ok(record) => record.map(|record| AssignedChunk::of(&record)),
                Err(error) => {
                    return Some(ChunkResult::Error {
                        message: format!(
                            "cannot read chunk {} of job {}: {error}",
                            assignment.chunk, assignment.job
                        ),
                        retryable: true,
                    });
                }
            },
        };
        let Some(AssignedChunk {
            table_index,
            range,
            partition,
        }) = planned
        else {
            return Some(ChunkResult::Error {
                message: format!("job {} has no chunk {}", assignment.job, assignment.chunk),
                retryable: false,
            });
        };
        let (table, key) = context.tables.get(table_index).cloned()?;
        let rows = Arc::new(AtomicU64::new(0));
        let verifying = Arc::new(AtomicBool::new(false));
        let verifying_started = Arc::new(tokio::sync::Notify::new());
        let task = ChunkTask {
            job: assignment.job.clone(),
            run_id: context.run_id.clone(),
            chunk: assignment.chunk,
            attempt: assignment.attempt,
            worker: assignment.worker.clone(),
            table,
            key,
            partition,
            range,
            key_deferred: context
                .keys_deferred
                .get(table_index)
                .copied()
                .unwrap_or(false),
            verify: context.verify,
            mode: context.mode,
            source_snapshot: assignment.source_snapshot.clone(),
            sync: context.sync.clone(),
            cancel: self.cancel.clone(),
            give_back: self.give_back.clone(),
            progress: {
                let rows = rows.clone();
                // Looked up once per attempt; the callback runs per batch.
                let rows_counter = metrics::counter!(crate::metrics::ROWS);
                Arc::new(move |added| {
                    rows.fetch_add(added, Ordering::Relaxed);
                    rows_counter.increment(added);
                })
            },
            on_verifying: {
                let verifying = verifying.clone();
                let verifying_started = verifying_started.clone();
                Arc::new(move || {
                    verifying.store(true, Ordering::Relaxed);
                    verifying_started.notify_one();
                })
            },
            admission: Arc::new(LivePace::new(
                self.pace.clone(),
                self.store.keys().pace(&assignment.job),
                (assignment.rows_per_sec, assignment.bytes_per_sec),
            )),
        };
        let reporter = self.report_progress(rows, verifying, verifying_started);
        // One span per attempt, with the fields the leader's span of the same attempt
        // carries: one chunk's life can be followed across both processes' logs.
        let span = tracing::info_span!(
            "chunk_attempt",
            job = %assignment.job,
            table = %task.table.name,
            partition = task.partition.as_deref().unwrap_or(""),
            chunk = %assignment.chunk,
            attempt = %assignment.attempt,
        );
        let started = std::time::Instant::now();
        metrics::gauge!(crate::metrics::SLOTS_BUSY).increment(1.0);
        let result = async {
            tracing::info!("copying");
            context.runner.execute(task).await
        }
        .instrument(span)
        .await;
        metrics::gauge!(crate::metrics::SLOTS_BUSY).decrement(1.0);
        metrics::histogram!(crate::metrics::CHUNK_SECONDS, "outcome" => result.kind())
            .record(started.elapsed().as_secs_f64());
        reporter.cancel();
        let result = match result {
            ChunkResult::Cancelled if self.draining.load(Ordering::Relaxed) => {
                ChunkResult::Requeued {
                    reason: format!(
                        "worker {} drained before the chunk ended",
                        assignment.worker
                    ),
                }
            }
            // Withdrawn or self-fenced: nothing to say.
            ChunkResult::Cancelled => return None,
            other => other,
        };
        Some(result)
    }

    /// Writes progress every `progress_interval` while the attempt runs, and at once when
    /// it starts verifying: the leader then lets the next chunk copy on the slot
    /// (`ferry_coordinator::in_flight`).
    fn report_progress(
        &self,
        rows: Arc<AtomicU64>,
        verifying: Arc<AtomicBool>,
        verifying_started: Arc<tokio::sync::Notify>,
    ) -> CancellationToken {
        let stop = self.cancel.child_token();
        let store = self.store.clone();
        let lease = self.lease.clone();
        let assignment = self.assignment.clone();
        let interval = self.options.progress_interval;
        let token = stop.clone();
        tokio::spawn(async move {
            let mut last = (u64::MAX, false);
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                    () = verifying_started.notified() => {}
                }
                let now = (
                    rows.load(Ordering::Relaxed),
                    verifying.load(Ordering::Relaxed),
                );
                if now == last || !lease.is_alive() {
                    continue;
                }
                last = now;
                let progress = ChunkProgress {
                    job: assignment.job.clone(),
                    chunk: assignment.chunk,
                    attempt: assignment.attempt,
                    worker: assignment.worker.clone(),
                    rows: now.0,
                    verifying: now.1,
                };
                if let Err(error) = store.put_progress(&progress, lease.id).await {
                    tracing::debug!(%error, "cannot report progress");
                }
            }
        });
        stop
    }

    /// Writes the result while the lease is alive, retrying while etcd is unavailable.
    async fn report(&self, result: &ChunkResult) {
        let assignment = &self.assignment;
        let mut backoff = Backoff::new(Duration::from_millis(100));
        loop {
            if !self.lease.is_alive() {
                tracing::warn!(chunk = %assignment.chunk, "lease not alive: the result is not reported (self-fencing)");
                return;
            }
            match self.store.put_result(assignment, result).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(job = %assignment.job, chunk = %assignment.chunk, attempt = %assignment.attempt, "result refused: the assignment was withdrawn");
                    return;
                }
                Err(error) if error.is_retryable() => {
                    tracing::warn!(%error, "cannot report a result yet; retrying");
                }
                Err(error) => {
                    tracing::error!(%error, "cannot report a result");
                    return;
                }
            }
            tokio::time::sleep(backoff.next_pause()).await;
        }
    }

    /// The job's context, loaded once per job.
    /// A failure is the attempt's result: a database that cannot be opened now is
    /// unavailable (the chunk waits without counting an attempt).
    async fn context(&self) -> Result<Arc<JobContext>, ChunkResult> {
        let failed = |message: String| ChunkResult::Error {
            message,
            retryable: true,
        };
        let job = &self.assignment.job;
        let mut contexts = self.agent.contexts.0.lock().await;
        if let Some(context) = contexts.get(job) {
            return Ok(context.clone());
        }
        let spec_yaml = self
            .store
            .job_spec(job)
            .await
            .map_err(|error| failed(error.to_string()))?
            .ok_or_else(|| failed(format!("job {job} has no spec in the coordination store")))?;
        let OpenedJob { spec, source, sink } = self
            .agent
            .opener
            .open(job, &spec_yaml)
            .await
            .map_err(|error| {
                let message = format!("worker {}: {error}", self.options.id);
                if error.is_retryable() {
                    ChunkResult::Unavailable { message }
                } else {
                    failed(message)
                }
            })?;
        let record = self
            .store
            .load_job_record(job)
            .await
            .map_err(|error| failed(error.to_string()))?
            .ok_or_else(|| failed(format!("job {job} has no plan in the coordination store")))?;
        let loaded = Arc::new(JobContext {
            run_id: record.run_id.clone(),
            tables: record
                .tables
                .iter()
                .map(|table| (Arc::new(table.schema.clone()), Arc::new(table.key.clone())))
                .collect(),
            keys_deferred: record
                .tables
                .iter()
                .map(|table| table.key_deferred)
                .collect(),
            verify: spec.verify.mode,
            mode: spec.mode,
            sync: ferry_model::execution::SyncPass::of(&spec),
            runner: Arc::new(ChunkRunner::new(source, sink)),
        });
        contexts.insert(job.clone(), loaded.clone());
        Ok(loaded)
    }
}

/// Paces one attempt by its job's live pace (`pace/{job}`): waits while the job is
/// paused (up to the pause timeout, then the chunk is given back) and spaces batches
/// by the attempt's current share of the job's rate limits, so a pause, a resume or a
/// new limit reaches attempts already running. Until the leader has published a pace,
/// the share carried by the assignment applies.
struct LivePace {
    pace: Mirror<JobPace>,
    key: Vec<u8>,
    assigned: (u64, u64),
    /// When the next batch may go: the previous one's slot end.
    next: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl LivePace {
    fn new(pace: Mirror<JobPace>, key: Vec<u8>, assigned: (u64, u64)) -> Self {
        Self {
            pace,
            key,
            assigned,
            next: std::sync::Mutex::new(None),
        }
    }

    fn current(&self) -> Option<JobPace> {
        self.pace.borrow().get(&self.key).cloned()
    }

    fn rates(&self) -> (u64, u64) {
        self.current().map_or(self.assigned, |pace| {
            (pace.rows_per_sec, pace.bytes_per_sec)
        })
    }

    async fn wait_while_paused(&self) -> Result<(), String> {
        let mut pace = self.pace.clone();
        let Some(timeout) = self
            .current()
            .filter(|pace| pace.paused)
            .map(|pace| pace.pause_timeout)
        else {
            return Ok(());
        };
        tracing::info!("job paused: this attempt waits");
        let key = self.key.clone();
        let resumed = pace.wait_for(move |paces| !paces.get(&key).is_some_and(|pace| pace.paused));
        ferry_model::execution::wait_out_pause(timeout, resumed).await
    }
}

#[async_trait::async_trait]
impl ferry_model::execution::Admission for LivePace {
    async fn admit(&self, rows: u64, bytes: u64) -> Result<(), String> {
        self.wait_while_paused().await?;
        let (rows_per_sec, bytes_per_sec) = self.rates();
        let cost = |amount: u64, rate: u64| {
            if rate == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(amount as f64 / rate as f64)
            }
        };
        let slot = cost(rows, rows_per_sec).max(cost(bytes, bytes_per_sec));
        if !slot.is_zero() {
            let until = {
                let mut next = self
                    .next
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = tokio::time::Instant::now();
                let until = next.map_or(now, |next| next.max(now)) + slot;
                *next = Some(until);
                until
            };
            tokio::time::sleep_until(until).await;
        }
        // A pause may have come while the batch waited for its slot.
        self.wait_while_paused().await
    }

    fn limits_rows(&self) -> bool {
        self.rates().0 > 0
    }

    fn limits_bytes(&self) -> bool {
        self.rates().1 > 0
    }
}
