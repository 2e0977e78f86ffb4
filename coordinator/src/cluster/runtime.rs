//! A coordinator in a cluster: campaigns for leadership; while it leads, runs every
//! RUNNING job with the shared scheduler over etcd and remote workers; always answers
//! the read operations from etcd, and points writers to the leader when it is a standby.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferry_connectors::{JobOpener, OpenedJob, SpecOpener};
use ferry_coordination::cluster::{
    JobPace, JobPhase, LeaderInfo, LeaderTerm, LeaseSession, Mirror, WorkerInfo,
};
use ferry_coordination::{
    ChunkRecord, ChunkState, ClusterRef, Coordination, CoordinationError, JobRecord,
};
use ferry_model::ids::JobId;
use ferry_model::spec::JobSpec;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::handoff::HandoffStore;
use super::pool::SlotBoard;
use super::remote::{AttemptRouter, RemoteExecutor};
use super::tally::ChunkTally;
use crate::control::{ChunkCounts, ControlError};
use crate::job::{JobError, Resume, prepare_job};
use crate::metrics::JobMetrics;
use crate::pacer::JobPacer;
use crate::scheduler::{JobEvent, RunOutcome, SchedulerOptions, run_job_on};
use crate::snapshot::{SnapshotPlan, plan_snapshot};

/// How a coordinator runs.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// This coordinator's name.
    pub id: String,
    /// Where its Control API listens (host:port), published when it leads.
    pub address: String,
    /// TTL of the coordinator's own lease (leadership is lost this long after it dies).
    pub lease_ttl: Duration,
    /// The workers' lease TTL (what a new leader gives chunks in flight before reaping).
    pub worker_ttl: Duration,
    /// Extra wait after a worker's lease vanished before its chunks are reassigned.
    pub grace: Duration,
    /// How often the leader compacts etcd's history (zero: never).
    pub compact_interval: Duration,
    /// Revisions kept behind the newest one when compacting.
    pub keep_revisions: u64,
    /// The environment `url_env` names are looked up in.
    pub env: HashMap<String, String>,
    /// Folder relative paths in specs are joined to.
    pub base_dir: PathBuf,
    /// The most chunks in flight per database (`host:port/database`) across all jobs,
    /// from the `[[endpoints]]` configuration; a database not listed is capped at the
    /// smallest concurrency among the jobs that share it.
    pub database_caps: HashMap<String, u32>,
}

/// Where a coordinator stands in its cluster (what its readiness reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinatorRole {
    /// Without a live etcd lease: starting, or etcd was lost and it reconnects.
    Connecting,
    /// Holding a lease and campaigning: answers reads, points writers to the leader.
    Standby,
    /// Leading.
    Leading,
}

/// A coordinator: the Control API's domain in distributed mode.
pub struct ClusterRuntime {
    store: ClusterRef,
    options: ClusterOptions,
    leading: Mutex<Option<Arc<Leadership>>>,
    /// Chunk counts read from etcd lately, by job (see `stored_counts`).
    stored_counts: Mutex<HashMap<JobId, (Instant, JobPhase, ChunkCounts)>>,
    role: watch::Sender<CoordinatorRole>,
    /// Turns a submitted job into its spec and connectors.
    opener: Arc<dyn JobOpener>,
    /// Who follows which job ([`ClusterRuntime::observe`]).
    observers: Mutex<HashMap<JobId, ObserverSlot>>,
    /// Bumped whenever a job starts running on this leader (its pacer is up).
    jobs_started: watch::Sender<u64>,
}

/// How long chunk counts read from etcd are reused.
const STORED_COUNTS_FOR: Duration = Duration::from_secs(2);

/// What a coordinator holds while it leads.
struct Leadership {
    /// Fenced by the term: every write fails once another coordinator leads.
    store: ClusterRef,
    board: Arc<SlotBoard>,
    workers: Mirror<WorkerInfo>,
    router: Arc<AttemptRouter>,
    jobs: Mutex<HashMap<JobId, Arc<RunningJob>>>,
    wake: Notify,
    cancel: CancellationToken,
}

/// A job this leader runs.
struct RunningJob {
    pacer: Mutex<Option<Arc<JobPacer>>>,
    stop: CancellationToken,
    operator_cancel: CancellationToken,
    rows_streamed: AtomicU64,
    finished: CancellationToken,
    /// The job's chunk counts, once its run has loaded them.
    tally: Mutex<Option<ChunkTally>>,
}

impl ClusterRuntime {
    /// A coordinator over `store` (not fenced: the runtime fences its own writes) that
    /// opens jobs from their submitted spec, with `options.env` and `options.base_dir`.
    pub fn new(store: ClusterRef, options: ClusterOptions) -> Arc<Self> {
        let opener = Arc::new(SpecOpener {
            env: options.env.clone(),
            base_dir: options.base_dir.clone(),
        });
        Self::with_opener(store, options, opener)
    }

    /// A coordinator that opens jobs with `opener`.
    pub fn with_opener(
        store: ClusterRef,
        options: ClusterOptions,
        opener: Arc<dyn JobOpener>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            options,
            leading: Mutex::new(None),
            stored_counts: Mutex::new(HashMap::new()),
            role: watch::Sender::new(CoordinatorRole::Connecting),
            opener,
            observers: Mutex::new(HashMap::new()),
            jobs_started: watch::Sender::new(0),
        })
    }

    /// Returns once `job` runs on this coordinator (its operator controls answer), or
    /// is no longer RUNNING in the store (it ended, or never started).
    pub async fn wait_running(&self, job: &JobId) {
        let mut started = self.jobs_started.subscribe();
        loop {
            if self.running_pacer(job).is_some() {
                return;
            }
            match self.store.cluster_job(job).await {
                Ok(Some(state)) if state.phase == JobPhase::Running => {}
                Ok(_) => return,
                Err(error) => tracing::debug!(%job, %error, "cannot read the job's state"),
            }
            tokio::select! {
                _ = started.changed() => {}
                // The job may end before it is seen running.
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Follows `job`'s runs on this coordinator from now on: its scheduler events, and
    /// its outcome once it ends (or cannot start, or this coordinator stops leading).
    /// One observer per job; a second call replaces the first.
    pub fn observe(&self, job: &JobId) -> JobObserver {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (outcome_tx, outcome) = oneshot::channel();
        lock(&self.observers).insert(
            job.clone(),
            ObserverSlot {
                events: events_tx,
                outcome: outcome_tx,
            },
        );
        JobObserver { events, outcome }
    }

    fn observer_events(&self, job: &JobId) -> Option<mpsc::UnboundedSender<JobEvent>> {
        lock(&self.observers)
            .get(job)
            .map(|slot| slot.events.clone())
    }

    fn finish_observer(&self, job: &JobId, outcome: Result<RunOutcome, String>) {
        if let Some(slot) = lock(&self.observers).remove(job) {
            let _ = slot.outcome.send(outcome);
        }
    }

    /// Follows this coordinator's role as [`ClusterRuntime::run`] changes it.
    pub fn watch_role(&self) -> watch::Receiver<CoordinatorRole> {
        self.role.subscribe()
    }

    /// Campaigns, leads while it can, campaigns again when it loses the lead; returns
    /// on `shutdown` after resigning (the standbys take over at once).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let info = LeaderInfo {
            id: self.options.id.clone(),
            address: self.options.address.clone(),
        };
        // The term (and its lease) this coordinator stepped down from without resigning.
        let mut lost: Option<(LeaderTerm, i64)> = None;
        while !shutdown.is_cancelled() {
            self.role.send_replace(CoordinatorRole::Connecting);
            let Some(lease) = self
                .store
                .start_lease_retrying(self.options.lease_ttl, &shutdown)
                .await
            else {
                break;
            };
            if let Some((term, old_lease)) = lost.take() {
                self.end_lost_term(&term, old_lease).await;
            }
            let Some(campaign) = self.stand_by(&info, &lease, &shutdown).await else {
                if shutdown.is_cancelled() {
                    let _ = self.store.revoke_lease(lease.id).await;
                    break;
                }
                tracing::warn!(
                    "the coordinator's lease expired while standing by; taking a new one"
                );
                lease.stop();
                continue;
            };
            let term = match campaign {
                Ok(Some(term)) => term,
                Ok(None) => {
                    let _ = self.store.revoke_lease(lease.id).await;
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "campaign failed; retrying");
                    lease.stop();
                    continue;
                }
            };
            tracing::info!(coordinator = %info.id, revision = term.create_revision, "leading");
            metrics::gauge!(crate::metrics::LEADER).set(1.0);
            metrics::counter!(crate::metrics::TERMS).increment(1);
            let leadership = self.start_leading(&term);
            *lock(&self.leading) = Some(leadership.clone());
            self.role.send_replace(CoordinatorRole::Leading);
            self.lead(&leadership, &lease, &term, &shutdown).await;
            *lock(&self.leading) = None;
            leadership.cancel.cancel();
            // Let the jobs' schedulers wind down (attempts stay in flight for the next
            // leader, which adopts them).
            let running: Vec<_> = lock(&leadership.jobs).values().cloned().collect();
            for job in running {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), job.finished.cancelled()).await;
            }
            metrics::gauge!(crate::metrics::LEADER).set(0.0);
            if shutdown.is_cancelled() {
                if let Err(error) = self.store.resign(&term).await {
                    tracing::warn!(%error, "cannot resign; the lease will expire instead");
                }
                let _ = self.store.revoke_lease(lease.id).await;
                tracing::info!("resigned");
                break;
            }
            tracing::warn!("lost the lead; campaigning again");
            lease.stop();
            lost = Some((term, lease.id));
        }
    }

    /// Once etcd answers again after a lost lead: deletes the term's election key if it
    /// is still this term's, and revokes its lease, so the next campaign (this
    /// coordinator's or a standby's) wins at once instead of waiting for the old lease to
    /// expire (`lease_ttl`, 10 s by default). Both are guarded (the key by its create
    /// revision; the lease is this coordinator's own), so a term another coordinator won
    /// meanwhile is untouched. Best effort: failing, the lease expires as before.
    async fn end_lost_term(&self, term: &LeaderTerm, old_lease: i64) {
        let resigned = self.store.resign(term).await;
        let revoked = self.store.revoke_lease(old_lease).await;
        match (resigned, revoked) {
            (Ok(()), Ok(())) => {
                metrics::counter!(crate::metrics::LOST_TERMS_ENDED).increment(1);
                tracing::info!(
                    revision = term.create_revision,
                    "ended the lost term: its election key and lease are gone"
                );
            }
            (Err(error), _) | (_, Err(error)) => tracing::warn!(
                %error,
                "cannot end the lost term; its lease will expire instead"
            ),
        }
    }

    /// Campaigns while keeping the role in step with the lease (a standby whose lease is
    /// not renewed is not ready). `None` when the lease ended for good (it expired while
    /// etcd was away, or shutdown stopped its keep-alive): a new one is needed.
    async fn stand_by(
        &self,
        info: &LeaderInfo,
        lease: &LeaseSession,
        shutdown: &CancellationToken,
    ) -> Option<Result<Option<LeaderTerm>, CoordinationError>> {
        let campaign = self.store.campaign(info, lease, shutdown);
        tokio::pin!(campaign);
        let mut alive = lease.alive();
        loop {
            let role = if *alive.borrow_and_update() {
                CoordinatorRole::Standby
            } else {
                CoordinatorRole::Connecting
            };
            self.role.send_replace(role);
            tokio::select! {
                outcome = &mut campaign => return Some(outcome),
                changed = alive.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    fn start_leading(&self, term: &LeaderTerm) -> Arc<Leadership> {
        let cancel = CancellationToken::new();
        let workers = self.store.watch_workers(&cancel);
        if !self.options.compact_interval.is_zero() {
            tokio::spawn(compact_history(
                self.store.clone(),
                self.options.compact_interval,
                self.options.keep_revisions,
                cancel.clone(),
            ));
        }
        Arc::new(Leadership {
            store: self.store.fenced(term),
            board: SlotBoard::with_database_caps(
                workers.clone(),
                self.options.database_caps.clone(),
            ),
            router: AttemptRouter::start(
                self.store.watch_results(&cancel),
                self.store.watch_progress(&cancel),
                &cancel,
            ),
            workers,
            jobs: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            cancel,
        })
    }

    /// Starts the RUNNING jobs and watches the term until it ends.
    async fn lead(
        self: &Arc<Self>,
        leadership: &Arc<Leadership>,
        lease: &LeaseSession,
        term: &LeaderTerm,
        shutdown: &CancellationToken,
    ) {
        let mut alive = lease.alive();
        loop {
            if !*alive.borrow_and_update() {
                tracing::error!("the coordinator's lease is not renewed: stepping down");
                return;
            }
            match self.store.holds(term).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!("another coordinator leads now: stepping down");
                    return;
                }
                Err(error) => tracing::warn!(%error, "cannot check leadership (etcd unavailable?)"),
            }
            match self.store.list_cluster_jobs().await {
                Ok(jobs) => {
                    for job in jobs
                        .into_iter()
                        .filter(|job| job.phase == JobPhase::Running)
                    {
                        let fresh = !lock(&leadership.jobs).contains_key(&job.id);
                        if fresh {
                            self.spawn_job(leadership, job.id);
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot list jobs (etcd unavailable?)"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = alive.changed() => {}
                () = leadership.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn spawn_job(self: &Arc<Self>, leadership: &Arc<Leadership>, job: JobId) {
        let running = Arc::new(RunningJob {
            pacer: Mutex::new(None),
            stop: leadership.cancel.child_token(),
            operator_cancel: CancellationToken::new(),
            rows_streamed: AtomicU64::new(0),
            finished: CancellationToken::new(),
            tally: Mutex::new(None),
        });
        lock(&leadership.jobs).insert(job.clone(), running.clone());
        let runtime = self.clone();
        let leadership = leadership.clone();
        tokio::spawn(async move {
            let outcome = runtime.run_job(&leadership, &job, &running).await;
            match outcome {
                Ok(JobRunEnd {
                    phase: Some(phase),
                    outcome,
                }) => {
                    tracing::info!(%job, phase = phase.as_str(), "job ended");
                    let reason = end_reason(phase, &outcome.chunks);
                    if let Err(error) = leadership.store.set_job_phase(&job, phase, &reason).await {
                        tracing::error!(%job, %error, "cannot record the job's end");
                    }
                    if let Err(error) = leadership.store.delete_pace(&job).await {
                        tracing::warn!(%job, %error, "cannot remove the job's pace");
                    }
                    runtime.finish_observer(&job, Ok(outcome));
                }
                Ok(JobRunEnd {
                    phase: None,
                    outcome,
                }) => {
                    // Stopped: the term ended (observers see the run interrupted), or a
                    // re-copy restarts it (they wait for the restarted run).
                    if leadership.cancel.is_cancelled() {
                        runtime.finish_observer(&job, Ok(outcome));
                    }
                }
                Err(JobRunError::Retry(message)) => {
                    tracing::warn!(%job, %message, "job interrupted; it will be resumed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(JobRunError::Fatal(message)) => {
                    tracing::error!(%job, %message, "job failed");
                    let _ = leadership
                        .store
                        .set_job_phase(&job, JobPhase::Failed, &message)
                        .await;
                    runtime.finish_observer(&job, Err(message));
                }
            }
            running.finished.cancel();
            lock(&leadership.jobs).remove(&job);
            leadership.wake.notify_one();
        });
    }

    /// Runs one job until it ends (`Some(phase)`), or until stopped (`None`).
    async fn run_job(
        &self,
        leadership: &Arc<Leadership>,
        job: &JobId,
        running: &Arc<RunningJob>,
    ) -> Result<JobRunEnd, JobRunError> {
        let spec_yaml = self
            .store
            .job_spec(job)
            .await
            .map_err(JobRunError::from_store)?
            .ok_or_else(|| JobRunError::Fatal(format!("job {job} has no spec")))?;
        let opened = self.opener.open(job, &spec_yaml).await.map_err(|error| {
            if error.is_retryable() {
                JobRunError::Retry(error.to_string())
            } else {
                JobRunError::Fatal(error.to_string())
            }
        })?;
        let OpenedJob { spec, source, sink } = opened;
        // Submitted, but maybe not planned yet (the leader stopped in between): the
        // lifecycle plans it then.
        let prepared = prepare_job(
            &spec,
            source.as_ref(),
            sink.as_ref(),
            leadership.store.as_ref(),
            Resume::AsStored,
        )
        .await
        .map_err(|error| match error {
            JobError::Store(error) => JobRunError::from_store(error),
            JobError::SourceUnavailable { .. } => JobRunError::Retry(error.to_string()),
            other => JobRunError::Fatal(other.to_string()),
        })?;
        // `consistency: job_snapshot`: held until this run ends (dropped with it).
        let snapshot_opt = match plan_snapshot(
            &job.0,
            spec.consistency,
            prepared.chunks_open,
            prepared.chunks_started_before,
        ) {
            SnapshotPlan::NotNeeded => None,
            SnapshotPlan::Refuse(message) => return Err(JobRunError::Fatal(message)),
            SnapshotPlan::Export => Some(source.export_snapshot().await.map_err(|error| {
                let message = format!("cannot export the job's source snapshot: {error}");
                if error.kind() == ferry_connectors::ErrorKind::Unavailable {
                    JobRunError::Retry(message)
                } else {
                    JobRunError::Fatal(message)
                }
            })?),
        };
        let record = prepared.job;
        let store: Arc<dyn Coordination> = leadership.store.clone();
        let pacer = JobPacer::start(
            job.clone(),
            spec.throttle.clone(),
            store.clone(),
            source.clone(),
            sink.clone(),
            Duration::from_millis(spec.resilience.outage_timeout_ms),
            running.stop.clone(),
        )
        .await
        .map_err(|error| JobRunError::Fatal(error.to_string()))?;
        *lock(&running.pacer) = Some(pacer.clone());
        self.jobs_started.send_modify(|count| *count += 1);
        let executor = Arc::new(RemoteExecutor {
            store: leadership.store.clone(),
            workers: leadership.workers.clone(),
            router: leadership.router.clone(),
            worker_ttl: self.options.worker_ttl,
            grace: self.options.grace,
            job_cancelled: running.operator_cancel.clone(),
            pacer: Some(pacer.clone()),
            started: Default::default(),
        });
        tokio::spawn(publish_pace(
            leadership.store.clone(),
            job.clone(),
            pacer.clone(),
            running.stop.clone(),
        ));
        let options = SchedulerOptions {
            source_snapshot: snapshot_opt.as_ref().map(|snapshot| snapshot.id.clone()),
            // Tables loaded without their key get it here, where they were created.
            target_keys: Some(crate::deferred_key::TargetKeysRef(Arc::new(
                crate::deferred_key::SinkKeys { sink: sink.clone() },
            ))),
            ..SchedulerOptions::for_spec(&spec, usize::MAX)
        };
        let (events, mut receiver) = mpsc::unbounded_channel::<JobEvent>();
        let counter = running.clone();
        let observer_events = self.observer_events(job);
        let mut job_metrics = JobMetrics::new(
            &job.0,
            record
                .tables
                .iter()
                .map(|table| table.schema.name.to_string())
                .collect(),
        );
        tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                if let Some(observer) = &observer_events {
                    let _ = observer.send(event.clone());
                }
                if let JobEvent::RowsCopied { rows, .. } = event {
                    counter.rows_streamed.fetch_add(rows, Ordering::Relaxed);
                }
                let mut tally = lock(&counter.tally);
                match (&event, tally.as_mut()) {
                    // The scheduler's own load seeds the counts: no second read.
                    (JobEvent::Loaded { chunks }, _) => *tally = Some(ChunkTally::new(chunks)),
                    (_, Some(tally)) => tally.apply(&event),
                    (_, None) => {}
                }
                if let Some(tally) = tally.as_ref() {
                    job_metrics.observe(&event, tally);
                }
            }
        });
        // The databases the job touches: jobs sharing one share its cap.
        let databases = [&spec.source, &spec.target]
            .into_iter()
            .filter_map(ferry_model::spec::EndpointSpec::database_identity)
            .collect();
        let mut pool = leadership.board.pool(job.clone(), databases);
        // Each attempt's start and its assignment in one write.
        let scheduling_store: Arc<dyn Coordination> =
            HandoffStore::new(executor.clone(), options.source_snapshot.clone());
        let outcome = run_job_on(
            scheduling_store,
            &record,
            executor,
            &options,
            &mut pool,
            pacer.pacing(),
            events,
            running.stop.clone(),
        )
        .await
        .map_err(|error| match error {
            crate::scheduler::SchedulerError::Store(error) => JobRunError::from_store(error),
        })?;
        pacer.finish();
        // Every attempt of the run has ended: the snapshot is let go.
        drop(snapshot_opt);
        let phase = if running.operator_cancel.is_cancelled() {
            Some(JobPhase::Cancelled)
        } else if outcome.interrupted {
            None
        } else if outcome
            .chunks
            .iter()
            .any(|chunk| chunk.state == ChunkState::Failed)
        {
            Some(JobPhase::Failed)
        } else {
            Some(JobPhase::Done)
        };
        Ok(JobRunEnd { phase, outcome })
    }

    fn parse_spec(&self, text: &str) -> Result<JobSpec, Vec<String>> {
        ferry_connectors::parse_spec(text, &self.options.base_dir, &self.options.env)
            .map_err(|problems| problems.to_lines())
    }

    /// The leadership, or the error that sends writers to the leader.
    async fn require_leader(&self) -> Result<Arc<Leadership>, ControlError> {
        if let Some(leadership) = lock(&self.leading).clone() {
            return Ok(leadership);
        }
        let leader = self.store.leader().await.ok().flatten();
        Err(ControlError::NotLeader(leader.map(|leader| leader.address)))
    }

    fn running_job(&self, job: &JobId) -> Option<Arc<RunningJob>> {
        let leadership = lock(&self.leading).clone()?;
        lock(&leadership.jobs).get(job).cloned()
    }

    /// The pacer of a job this coordinator runs now (its throttle gate, for tests and
    /// tools in the same process).
    pub fn running_pacer(&self, job: &JobId) -> Option<Arc<JobPacer>> {
        self.running_job(job)
            .and_then(|running| lock(&running.pacer).clone())
    }

    async fn pacer_of(&self, job: &str) -> Result<Arc<JobPacer>, ControlError> {
        self.require_leader().await?;
        let id = JobId(job.to_owned());
        match self.running_pacer(&id) {
            Some(pacer) => Ok(pacer),
            None => {
                self.load(&id).await?;
                Err(ControlError::Unsupported(format!(
                    "job {job} is not running (it ended, or is still starting): its throttle \
                     cannot change now"
                )))
            }
        }
    }

    async fn load(&self, job: &JobId) -> Result<(JobRecord, Vec<ChunkRecord>), ControlError> {
        self.store
            .load_job(job)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ControlError::UnknownJob(job.0.clone()))
    }

    /// A job's chunk counts from etcd. Shared for [`STORED_COUNTS_FOR`] by every
    /// watcher of the job: counting reads every chunk.
    async fn stored_counts(
        &self,
        job: &JobId,
        phase: JobPhase,
    ) -> Result<ChunkCounts, ControlError> {
        // Counts read while the job was in another phase are stale: a job that ended
        // within the caching time would otherwise report its counts from before.
        if let Some((at, cached_phase, counts)) = lock(&self.stored_counts).get(job)
            && at.elapsed() < STORED_COUNTS_FOR
            && *cached_phase == phase
        {
            return Ok(*counts);
        }
        let chunks = self.store.list_chunks(job).await.map_err(store_error)?;
        let counts = ChunkCounts::of_records(&chunks);
        let mut cache = lock(&self.stored_counts);
        cache.retain(|_, (at, _, _)| at.elapsed() < STORED_COUNTS_FOR);
        cache.insert(job.clone(), (Instant::now(), phase, counts));
        Ok(counts)
    }

    async fn phase(&self, job: &JobId) -> Result<Option<(JobPhase, String)>, ControlError> {
        let state = self.store.cluster_job(job).await.map_err(store_error)?;
        Ok(state.map(|state| (state.phase, state.reason)))
    }

    /// Stops a running job's scheduler and waits until it is gone.
    async fn stop_job(&self, leadership: &Leadership, job: &JobId, operator: bool) {
        let running = lock(&leadership.jobs).get(job).cloned();
        if let Some(running) = running {
            if operator {
                running.operator_cancel.cancel();
            }
            running.stop.cancel();
            let _ =
                tokio::time::timeout(Duration::from_secs(30), running.finished.cancelled()).await;
        }
    }
}

/// How a run of a job ended.
struct JobRunEnd {
    /// The job's end (`None`: stopped before it ended, it runs again later).
    phase: Option<JobPhase>,
    /// The scheduler's account of the run.
    outcome: RunOutcome,
}

/// Follows one job's runs on this coordinator ([`ClusterRuntime::observe`]):
/// `ferryctl local` draws its progress and writes its report from it.
pub struct JobObserver {
    /// The scheduler's events, from every run of the job on this coordinator.
    pub events: mpsc::UnboundedReceiver<JobEvent>,
    /// The last run's outcome, once the job ended, failed to start, or the term ended.
    pub outcome: oneshot::Receiver<Result<RunOutcome, String>>,
}

struct ObserverSlot {
    events: mpsc::UnboundedSender<JobEvent>,
    outcome: oneshot::Sender<Result<RunOutcome, String>>,
}

enum JobRunError {
    /// Try again later (etcd or a database unavailable).
    Retry(String),
    /// The job cannot run: it is marked FAILED with this reason.
    Fatal(String),
}

impl JobRunError {
    fn from_store(error: CoordinationError) -> Self {
        // AlreadyExists: the submit that stored the spec created the job while this run
        // planned it too; the next round loads it.
        if error.is_retryable()
            || matches!(
                error,
                CoordinationError::NotLeader { .. } | CoordinationError::AlreadyExists { .. }
            )
        {
            JobRunError::Retry(error.to_string())
        } else {
            JobRunError::Fatal(error.to_string())
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn store_error(error: CoordinationError) -> ControlError {
    if matches!(
        error,
        CoordinationError::CorruptValue { .. }
            | CoordinationError::Corrupt { .. }
            | CoordinationError::StateFileDamaged { .. }
            | CoordinationError::StateFileTooNew { .. }
    ) {
        return ControlError::CorruptRecord(error.to_string());
    }
    if error.is_retryable() {
        ControlError::Unavailable(error.to_string())
    } else {
        ControlError::Internal(error.to_string())
    }
}

/// While leading: compacts etcd's history at once (what earlier runs left goes too) and
/// then every `interval`, keeping `keep` revisions, until `cancel`.
pub async fn compact_history(
    store: ClusterRef,
    interval: Duration,
    keep: u64,
    cancel: CancellationToken,
) {
    loop {
        match store.compact_history(keep).await {
            Ok(Some(revision)) => tracing::debug!(revision, "etcd history compacted"),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot compact the etcd history"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// How often a running job's pace is compared with what workers were last told.
const PACE_CHECK: Duration = Duration::from_millis(250);

/// Keeps `pace/{job}` equal to the pacer's pause state and rate shares while the job
/// runs, so workers pause, resume and re-pace the attempts they are running.
async fn publish_pace(
    store: ClusterRef,
    job: JobId,
    pacer: Arc<JobPacer>,
    stop: CancellationToken,
) {
    let mut published: Option<JobPace> = None;
    let mut gate = pacer.pacing().gate;
    loop {
        let (rows_per_sec, bytes_per_sec) = pacer.attempt_share();
        let pace = JobPace {
            job: job.clone(),
            paused: pacer.is_paused(),
            rows_per_sec,
            bytes_per_sec,
            pause_timeout: pacer.pause_timeout(),
        };
        if published.as_ref() != Some(&pace) {
            match store.put_pace(&pace).await {
                Ok(()) => {
                    tracing::debug!(%job, paused = pace.paused, rows_per_sec, bytes_per_sec, "pace published");
                    published = Some(pace);
                }
                Err(error) => tracing::warn!(%job, %error, "cannot publish the job's pace"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            // A pause or resume goes out at once; rate shares at the next check.
            _ = gate.changed() => {}
            () = tokio::time::sleep(PACE_CHECK) => {}
        }
    }
}

mod control;

/// Why a job ended as it did, for its stored state: a verify-only job whose every FAILED
/// chunk differs (no error) says so with [`DIFFERENCES_FOUND`], which `ferryctl watch`
/// turns into its own exit code.
fn end_reason(phase: JobPhase, chunks: &[ferry_coordination::ChunkRecord]) -> String {
    if phase != JobPhase::Failed {
        return String::new();
    }
    let failed: Vec<_> = chunks
        .iter()
        .filter(|chunk| chunk.state == ChunkState::Failed)
        .collect();
    if !failed.is_empty() && failed.iter().all(|chunk| chunk.differs()) {
        return format!(
            "{DIFFERENCES_FOUND}: {} chunks differ between source and target: see \
             `ferryctl chunks JOB --state FAILED`",
            failed.len()
        );
    }
    "some chunks FAILED: see `ferryctl chunks JOB --state FAILED`".to_owned()
}

/// How the stored reason of a verify-only job that found differences (and no error)
/// begins.
pub const DIFFERENCES_FOUND: &str = "differences found";
