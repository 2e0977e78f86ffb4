//! The cluster protocol: what the coordinators and the workers say to each other
//! through the coordination backend, at the level of the domain (leases, leadership,
//! assignments, claims, progress, results, pace, drain requests, job specs and states).
//! [`ClusterProtocol`] is the trait the leader runtime and the worker agent are written
//! against; two implementations:
//! - [`EtcdStore`](crate::EtcdStore) (`etcd_cluster.rs`), for a cluster of processes;
//! - [`InProcessCluster`](crate::InProcessCluster) (`in_process.rs`), for `ferryctl local`
//!   and tests: leases, assignments and results in memory, jobs and chunks in the
//!   state file.
//!
//! One conformance suite (`conformance::cluster`, feature `testing`) runs on both.
//!
//! The protocol (DESIGN §3–4):
//! - a worker holds a lease with keep-alive; its registration, its claims and its
//!   progress hang on the lease and vanish with it;
//! - the leader (one coordinator, elected with [`ClusterProtocol::campaign`]) writes an
//!   assignment per attempt; every leader write goes through the store returned by
//!   [`ClusterProtocol::fenced`], which refuses it once another term began;
//! - the worker writes its result only while its assignment stands with the revision it
//!   saw: once the leader withdrew an assignment (worker lost, attempt re-queued), a
//!   late result of that attempt is refused;
//! - a worker that cannot renew its lease stops writing before the lease can expire
//!   ([`LeaseSession::alive`] turns false), and the leader waits the lease's TTL plus a
//!   grace before it withdraws the assignments of a vanished worker.
//!
//! Mirrors ([`Mirror`]) are keyed by the backend's keys ([`KeyLayout`]): opaque to the
//! domain, which only looks an entry up by the key of the same family
//! ([`ClusterProtocol::keys`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::keys::KeyLayout;
use super::{Coordination, Result};
use ferry_model::backoff::Backoff;
use ferry_model::execution::ChunkResult;
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};

/// A live worker as registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its name.
    pub id: WorkerId,
    /// Chunks it runs at once.
    pub slots: u32,
    /// Takes nothing new.
    pub draining: bool,
    /// Host name, for operators.
    pub host: String,
    /// Process id, for operators.
    pub pid: u32,
    /// When it registered, in milliseconds since the Unix epoch.
    pub registered_at_unix_ms: i64,
}

impl WorkerInfo {
    /// The refusal a worker gets when it registers under this live worker's name.
    pub fn name_taken(&self) -> crate::CoordinationError {
        let registered_at = jiff::Timestamp::from_millisecond(self.registered_at_unix_ms)
            .map_or_else(
                |_| format!("{} ms since the epoch", self.registered_at_unix_ms),
                |at| at.to_string(),
            );
        crate::CoordinationError::WorkerNameTaken {
            worker: self.id.clone(),
            host: self.host.clone(),
            pid: self.pid,
            registered_at,
        }
    }
}

/// One attempt of one chunk given to a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// The worker.
    pub worker: WorkerId,
    /// The job.
    pub job: JobId,
    /// The chunk.
    pub chunk: ChunkId,
    /// The attempt.
    pub attempt: Attempt,
    /// The assignment's create revision: the worker's result counts only while the
    /// assignment still has it.
    pub revision: i64,
    /// This attempt's share of the job's rate limits, rows per second (0 = none).
    pub rows_per_sec: u64,
    /// This attempt's share of the job's rate limits, bytes per second (0 = none).
    pub bytes_per_sec: u64,
    /// The exported source snapshot the attempt's reads import (`consistency:
    /// job_snapshot`), handed out by the leader run that holds it.
    pub source_snapshot: Option<String>,
    /// The leader asks the worker to hand the chunk back before it writes (its attempt
    /// then ends `Requeued` with nothing committed), to cut it for idle workers.
    pub give_back: bool,
    /// The chunk as it stood when assigned (a chunk cannot change while assigned), so
    /// the worker need not read its record; `None` when the assignment was written
    /// without it ([`ClusterProtocol::put_assignment`]): the worker reads the record.
    pub planned: Option<AssignedChunk>,
}

/// What an attempt copies: its chunk's table, range and partition when assigned.
#[derive(Clone, Debug, PartialEq)]
pub struct AssignedChunk {
    /// Index of its table in the job's tables.
    pub table_index: usize,
    /// The rows it owns.
    pub range: ferry_model::key::ChunkRange,
    /// Its leaf partition, for a table planned by native partitions.
    pub partition: Option<String>,
}

impl AssignedChunk {
    /// The part of `record` an attempt copies.
    pub fn of(record: &crate::ChunkRecord) -> Self {
        Self {
            table_index: record.table_index,
            range: record.range.clone(),
            partition: record.partition.clone(),
        }
    }
}

/// A running attempt's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkProgress {
    /// The job.
    pub job: JobId,
    /// The chunk.
    pub chunk: ChunkId,
    /// The attempt.
    pub attempt: Attempt,
    /// The worker running it.
    pub worker: WorkerId,
    /// Rows streamed into the target so far.
    pub rows: u64,
    /// Committed; being verified.
    pub verifying: bool,
}

/// How a job's running attempts go now (`pace/{job}`): the leader writes it when the
/// job is paused or resumed or its limits change; workers apply it to the attempts
/// they are running, not only to the next ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobPace {
    /// The job.
    pub job: JobId,
    /// Paused: attempts stop admitting rows until resumed.
    pub paused: bool,
    /// Each attempt's share of the job's rows/s limit (0: none).
    pub rows_per_sec: u64,
    /// Each attempt's share of the job's bytes/s limit (0: none).
    pub bytes_per_sec: u64,
    /// How long an attempt may stay paused before it gives its chunk back.
    pub pause_timeout: Duration,
}

/// A worker's outcome of one attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptResult {
    /// The job.
    pub job: JobId,
    /// The chunk.
    pub chunk: ChunkId,
    /// The attempt.
    pub attempt: Attempt,
    /// The worker that ran it.
    pub worker: WorkerId,
    /// How it ended.
    pub result: ChunkResult,
}

/// A cluster job's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobPhase {
    /// Submitted and not ended: the leader runs it.
    Running,
    /// Every chunk verified.
    Done,
    /// Ended with failed chunks.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

impl JobPhase {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Running => "RUNNING",
            JobPhase::Done => "DONE",
            JobPhase::Failed => "FAILED",
            JobPhase::Cancelled => "CANCELLED",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            JobPhase::Running,
            JobPhase::Done,
            JobPhase::Failed,
            JobPhase::Cancelled,
        ]
        .into_iter()
        .find(|phase| phase.as_str() == text)
    }
}

/// A cluster job as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterJob {
    /// The job.
    pub id: JobId,
    /// Its state.
    pub phase: JobPhase,
    /// Why it ended, when not DONE.
    pub reason: String,
    /// When it was submitted, in milliseconds since the Unix epoch.
    pub submitted_at_unix_ms: i64,
}

/// The coordinator that leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// Its name.
    pub id: String,
    /// Where its Control API listens.
    pub address: String,
}

/// A won election: every write of the term is fenced by it
/// ([`ClusterProtocol::fenced`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderTerm {
    /// The election key.
    pub key: Vec<u8>,
    /// Its create revision in this term.
    pub create_revision: i64,
}

/// A lease kept alive in the background.
#[derive(Clone)]
pub struct LeaseSession {
    /// The lease.
    pub id: i64,
    /// Its time to live.
    pub ttl: Duration,
    alive: watch::Receiver<bool>,
    stop: CancellationToken,
}

impl LeaseSession {
    /// A session whose liveness `alive` publishes; `stop` ends its keep-alive.
    pub(crate) fn new(
        id: i64,
        ttl: Duration,
        alive: watch::Receiver<bool>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            id,
            ttl,
            alive,
            stop,
        }
    }

    /// True while the lease was renewed recently enough that it cannot have expired
    /// (renewed within `ttl - margin`); false when the holder must stop writing. Turns
    /// false for good once etcd says the lease expired.
    pub fn alive(&self) -> watch::Receiver<bool> {
        self.alive.clone()
    }

    /// Whether the lease is alive now.
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Stops keeping the lease alive (it then expires after its TTL unless revoked).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// A mirror of every key under a prefix, kept current by a watch that reconnects (with
/// a fresh read) whenever it breaks.
pub type Mirror<T> = watch::Receiver<Arc<BTreeMap<Vec<u8>, T>>>;

/// The cluster protocol: every call the leader runtime, the worker agent and the
/// Control API make to their coordination backend beyond the job store
/// ([`Coordination`]). Calls are atomic; a failed call changed nothing (a retryable
/// error from a write may still have been applied: see
/// [`CoordinationError::is_retryable`](crate::CoordinationError::is_retryable)).
/// Mirrors are kept current until their `cancel` fires.
#[async_trait]
pub trait ClusterProtocol: Coordination {
    /// The key layout mirror entries are keyed by.
    fn keys(&self) -> &KeyLayout;

    /// The same backend with every write of the leader fenced by `term`: once another
    /// term began, each write is refused whole with
    /// [`CoordinationError::NotLeader`](crate::CoordinationError::NotLeader).
    fn fenced(&self, term: &LeaderTerm) -> Arc<dyn ClusterProtocol>;

    // ------------------------------------------------------------ leases

    /// Grants a lease of `ttl` and keeps it alive until `cancel` (or
    /// [`LeaseSession::stop`]). The session reports not alive once the lease may have
    /// expired (self-fencing margin: a third of the TTL).
    async fn start_lease(&self, ttl: Duration, cancel: &CancellationToken) -> Result<LeaseSession>;

    /// [`ClusterProtocol::start_lease`], retrying while the backend is unavailable;
    /// `None` when `cancel` fired first.
    async fn start_lease_retrying(
        &self,
        ttl: Duration,
        cancel: &CancellationToken,
    ) -> Option<LeaseSession> {
        let mut backoff = Backoff::new(Duration::from_millis(200));
        loop {
            match self.start_lease(ttl, cancel).await {
                Ok(lease) => return Some(lease),
                Err(error) => tracing::warn!(%error, "cannot get a lease; retrying"),
            }
            if !backoff.wait(cancel).await {
                return None;
            }
        }
    }

    /// Revokes a lease: everything on it (registration, claims, progress, the
    /// election key) is deleted now.
    async fn revoke_lease(&self, lease: i64) -> Result<()>;

    // ------------------------------------------------------------ workers

    /// Puts the worker's record on its lease (registering, or re-registering with
    /// `draining`). Refused with [`CoordinationError::WorkerNameTaken`](crate::CoordinationError::WorkerNameTaken)
    /// while a record of that name hangs on another live lease: a second worker of one
    /// name never replaces the first.
    async fn put_live_worker(&self, worker: &WorkerInfo, lease: i64) -> Result<()>;

    /// Mirrors the live workers.
    fn watch_workers(&self, cancel: &CancellationToken) -> Mirror<WorkerInfo>;

    /// Lists the live workers now.
    async fn live_workers(&self) -> Result<Vec<WorkerInfo>>;

    /// Asks a worker to drain (it takes nothing new, finishes or releases its chunks,
    /// and exits). Fenced when the store is.
    async fn request_drain(&self, worker: &WorkerId) -> Result<()>;

    /// Mirrors the worker's drain requests (empty while none is pending).
    fn watch_drain_requests(&self, worker: &WorkerId, cancel: &CancellationToken) -> Mirror<()>;

    /// Whether an operator asked the worker to drain; the request is consumed.
    async fn take_drain_request(&self, worker: &WorkerId) -> Result<bool>;

    // ------------------------------------------------------------ election

    /// Campaigns for leadership until won (or `cancel`): takes the election on `lease`
    /// when nobody holds it, otherwise waits for it to be free. `None` when cancelled.
    async fn campaign(
        &self,
        leader: &LeaderInfo,
        lease: &LeaseSession,
        cancel: &CancellationToken,
    ) -> Result<Option<LeaderTerm>>;

    /// Whether `term` still holds.
    async fn holds(&self, term: &LeaderTerm) -> Result<bool>;

    /// Gives up leadership (if `term` still holds).
    async fn resign(&self, term: &LeaderTerm) -> Result<()>;

    /// The coordinator that leads now, if any.
    async fn leader(&self) -> Result<Option<LeaderInfo>>;

    // ------------------------------------------------------------ jobs

    /// Stores a submitted job's spec and marks it RUNNING (refused with
    /// `AlreadyExists` when the job exists).
    async fn submit_job_spec(&self, job: &JobId, spec_yaml: &str) -> Result<()>;

    /// The job's spec as submitted.
    async fn job_spec(&self, job: &JobId) -> Result<Option<String>>;

    /// A cluster job's state, if it was submitted.
    async fn cluster_job(&self, job: &JobId) -> Result<Option<ClusterJob>>;

    /// Sets a cluster job's state (`NotFound` for a job never submitted).
    async fn set_job_phase(&self, job: &JobId, phase: JobPhase, reason: &str) -> Result<()>;

    /// Every cluster job, by name.
    async fn list_cluster_jobs(&self) -> Result<Vec<ClusterJob>>;

    /// Puts the given chunks that have ended (VERIFIED or FAILED) back to PLANNED, their failure count reset, so the next run copies them again
    /// with overwrite under a higher attempt. Chunks in flight are left alone. Returns
    /// the changed ids.
    async fn recopy_chunks(&self, job: &JobId, chunks: &[ChunkId]) -> Result<Vec<ChunkId>>;

    // ------------------------------------------------------------ assignments

    /// Makes sure `worker` holds the assignment of this attempt (leader; fenced):
    /// writes it, or adopts it when it stands already (a new leader taking over chunks
    /// in flight). An assignment of another attempt left behind is replaced, and a
    /// result left by an earlier run of this attempt is cleared. `rate` is the attempt's
    /// share of the job's limits (rows/s, bytes/s); `source_snapshot` the snapshot its
    /// reads import.
    async fn put_assignment(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        rate: (u64, u64),
        source_snapshot: Option<&str>,
    ) -> Result<()>;

    /// Starts a fresh attempt of a PLANNED chunk on `worker` (leader; fenced): records it
    /// ASSIGNED and COPYING under the next attempt, as [`Coordination::start_attempt`],
    /// and writes its assignment, as [`ClusterProtocol::put_assignment`], in one write
    /// where the backend can (one etcd txn). The assignment carries the chunk
    /// ([`Assignment::planned`]). Returns the attempt.
    async fn start_assigned_attempt(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        rate: (u64, u64),
        source_snapshot: Option<&str>,
    ) -> Result<Attempt>;

    /// Withdraws an assignment and clears what its attempt left (result, progress,
    /// claim). A late result of the attempt is refused from now on. Fenced.
    async fn withdraw_assignment(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
    ) -> Result<()>;

    /// Asks the worker of an assignment to hand its chunk back before it writes
    /// ([`Assignment::give_back`]); the assignment stays (its result still counts).
    /// False when the assignment no longer stands at `attempt`. Fenced.
    async fn request_give_back(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
    ) -> Result<bool>;

    /// Mirrors a worker's assignments.
    fn watch_assignments(
        &self,
        worker: &WorkerId,
        cancel: &CancellationToken,
    ) -> Mirror<Assignment>;

    /// Claims an assignment for the worker (on its lease). False when the assignment
    /// was withdrawn meanwhile. The worker agent claims an attempt once it has run for
    /// its first progress interval: a shorter one is accounted for by its result alone.
    async fn claim(&self, assignment: &Assignment, lease: i64) -> Result<bool>;

    /// Writes a running attempt's progress (on the worker's lease).
    async fn put_progress(&self, progress: &ChunkProgress, lease: i64) -> Result<()>;

    /// Mirrors the progress of every running attempt.
    fn watch_progress(&self, cancel: &CancellationToken) -> Mirror<ChunkProgress>;

    /// Writes a worker's result, only while its assignment stands. False when the
    /// assignment was withdrawn (the result is then dropped: a newer attempt owns the
    /// chunk).
    async fn put_result(&self, assignment: &Assignment, result: &ChunkResult) -> Result<bool>;

    /// Mirrors the results not yet consumed by the leader.
    fn watch_results(&self, cancel: &CancellationToken) -> Mirror<AttemptResult>;

    // ------------------------------------------------------------ pace

    /// Publishes a job's pace (leader; fenced).
    async fn put_pace(&self, pace: &JobPace) -> Result<()>;

    /// Removes a job's pace once the job has ended (leader; fenced).
    async fn delete_pace(&self, job: &JobId) -> Result<()>;

    /// Mirrors the pace of every job.
    fn watch_pace(&self, cancel: &CancellationToken) -> Mirror<JobPace>;

    // ------------------------------------------------------------ upkeep

    /// Drops history older than `keep` revisions behind the newest one, where the
    /// backend keeps history (etcd); returns the revision compacted to, `None` when
    /// nothing was old enough or the backend keeps no history.
    async fn compact_history(&self, keep: u64) -> Result<Option<i64>>;
}

/// Shorthand for a shared cluster backend.
pub type ClusterRef = Arc<dyn ClusterProtocol>;
