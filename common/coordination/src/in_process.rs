//! The cluster protocol inside one process, for `ferryctl local` and tests: the same
//! leader runtime and worker agents as a cluster, without etcd.
//!
//! What must survive the process lives in the state file ([`LocalStore`]): jobs,
//! chunks, throttle policies, submitted specs and job states. What hangs on leases in
//! etcd lives in memory (worker registrations, the election, claims, progress) together
//! with assignments, results, pace and drain requests: every lease dies with the
//! process, so [`InProcessCluster::open`] puts the chunks a killed process left in
//! flight back to PLANNED (re-copied with overwrite under a higher attempt) and says
//! which ([`InProcessCluster::requeued_at_open`]).
//!
//! Semantics are etcd's, checked by the same conformance suite: leader writes through
//! a [`ClusterProtocol::fenced`] store are refused once another term began; a result
//! counts only while its assignment stands with the revision the worker saw; revoking
//! or expiring a lease deletes everything on it. Leases are renewed by the process
//! itself, so they expire only when revoked, when their keep-alive is stopped (after
//! their TTL, as in etcd), or when a test calls [`InProcessCluster::expire_lease`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::{
    AssignedChunk, Assignment, AttemptResult, ChunkProgress, ClusterJob, ClusterProtocol, JobPace,
    JobPhase, LeaderInfo, LeaderTerm, LeaseSession, Mirror, WorkerInfo,
};
use crate::keys::KeyLayout;
use crate::{
    ChunkCompletion, ChunkRecord, ChunkState, Coordination, CoordinationError, JobRecord,
    LocalStore, PolicyChange, Result,
};
use ferry_model::execution::ChunkResult;
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};
use ferry_model::key::ChunkRange;

/// The cluster protocol in one process over a state file. Cheap to clone; clones share
/// everything.
#[derive(Clone)]
pub struct InProcessCluster {
    shared: Arc<Shared>,
    /// The term this handle's leader writes are fenced by.
    fence: Option<i64>,
}

struct Shared {
    store: LocalStore,
    keys: KeyLayout,
    state: Mutex<State>,
    workers: watch::Sender<Arc<BTreeMap<Vec<u8>, WorkerInfo>>>,
    assignments: watch::Sender<Arc<BTreeMap<Vec<u8>, Assignment>>>,
    progress: watch::Sender<Arc<BTreeMap<Vec<u8>, ChunkProgress>>>,
    results: watch::Sender<Arc<BTreeMap<Vec<u8>, AttemptResult>>>,
    pace: watch::Sender<Arc<BTreeMap<Vec<u8>, JobPace>>>,
    drains: watch::Sender<Arc<BTreeMap<Vec<u8>, ()>>>,
    /// Bumped whenever the election changes, for campaigners to look again.
    election: watch::Sender<u64>,
    requeued_at_open: Vec<(JobId, ChunkId)>,
    /// Tests: the next `create_job` fails as an etcd timeout would.
    fail_next_job_creation: AtomicBool,
}

#[derive(Default)]
struct State {
    /// The last revision handed out (terms and assignments).
    revision: i64,
    next_lease: i64,
    leases: HashMap<i64, LeaseEntry>,
    /// The election: its holder, lease and term.
    leader: Option<(LeaderInfo, i64, i64)>,
    /// Claims by claim key: the lease they hang on.
    claims: HashMap<Vec<u8>, i64>,
}

struct LeaseEntry {
    alive: watch::Sender<bool>,
    /// Worker and progress keys put on the lease.
    workers: Vec<Vec<u8>>,
    progress: Vec<Vec<u8>>,
}

impl InProcessCluster {
    /// Opens the state file (created when absent) and puts every chunk left in flight
    /// by an earlier process back to PLANNED: its worker died with that process.
    pub fn open(path: &Path) -> Result<Self> {
        Self::over(LocalStore::open(path)?)
    }

    /// A cluster whose state file lives in memory only (tests).
    pub fn in_memory() -> Result<Self> {
        Self::over(LocalStore::in_memory()?)
    }

    fn over(store: LocalStore) -> Result<Self> {
        let requeued_at_open = store.requeue_all_in_flight()?;
        Ok(Self {
            shared: Arc::new(Shared {
                store,
                keys: KeyLayout::new("/ferry/local/v1"),
                state: Mutex::new(State::default()),
                workers: watch::Sender::new(Arc::default()),
                assignments: watch::Sender::new(Arc::default()),
                progress: watch::Sender::new(Arc::default()),
                results: watch::Sender::new(Arc::default()),
                pace: watch::Sender::new(Arc::default()),
                drains: watch::Sender::new(Arc::default()),
                election: watch::Sender::new(0),
                requeued_at_open,
                fail_next_job_creation: AtomicBool::new(false),
            }),
            fence: None,
        })
    }

    /// The chunks of `job` that [`InProcessCluster::open`] found in flight and put back
    /// to PLANNED.
    pub fn requeued_at_open(&self, job: &JobId) -> Vec<ChunkId> {
        self.shared
            .requeued_at_open
            .iter()
            .filter(|(owner, _)| owner == job)
            .map(|(_, chunk)| *chunk)
            .collect()
    }

    /// Ends a lease as if it had expired (tests: a worker or coordinator cut off):
    /// its holder sees it not alive, and everything on it is deleted.
    pub fn expire_lease(&self, lease: i64) {
        self.end_lease(lease);
    }

    /// Makes the next job creation fail, retryably, without writing anything (tests: a
    /// store that stops answering between a submit's steps).
    pub fn fail_next_job_creation(&self) {
        self.shared
            .fail_next_job_creation
            .store(true, Ordering::SeqCst);
    }

    /// The lease a live worker registered on (tests: to expire it).
    pub fn lease_of_worker(&self, worker: &WorkerId) -> Option<i64> {
        let key = self.shared.keys.worker(worker);
        self.lock()
            .leases
            .iter()
            .find(|(_, entry)| entry.workers.contains(&key))
            .map(|(id, _)| *id)
    }

    /// Whether a worker holds a claim on `chunk` of `job` (tests: the attempt started).
    pub fn is_claimed(&self, job: &JobId, chunk: ChunkId) -> bool {
        let key = self.shared.keys.claim(job, chunk);
        self.lock().claims.contains_key(&key)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses a leader write when this handle is fenced by a term that ended.
    fn check_fence(&self) -> Result<()> {
        let Some(term) = self.fence else {
            return Ok(());
        };
        let holds = self
            .lock()
            .leader
            .as_ref()
            .is_some_and(|(_, _, revision)| *revision == term);
        if holds {
            Ok(())
        } else {
            Err(CoordinationError::NotLeader {
                leader_key: String::from_utf8_lossy(&self.shared.keys.election()).into_owned(),
                create_revision: term,
            })
        }
    }

    fn end_lease(&self, lease: i64) {
        let (entry, lost_election) = {
            let mut state = self.lock();
            let entry = state.leases.remove(&lease);
            let lost_election = state
                .leader
                .as_ref()
                .is_some_and(|(_, holder, _)| *holder == lease);
            if lost_election {
                state.leader = None;
            }
            state.claims.retain(|_, holder| *holder != lease);
            (entry, lost_election)
        };
        if let Some(entry) = entry {
            entry.alive.send_replace(false);
            remove_keys(&self.shared.workers, &entry.workers);
            remove_keys(&self.shared.progress, &entry.progress);
        }
        if lost_election {
            self.shared.election.send_modify(|version| *version += 1);
        }
    }

    /// Puts `key` on `lease` (in the family `keys` picks), so it goes with the lease;
    /// `NotFound` when the lease ended.
    fn attach(
        &self,
        lease: i64,
        keys: impl FnOnce(&mut LeaseEntry) -> &mut Vec<Vec<u8>>,
        key: &[u8],
    ) -> Result<()> {
        let mut state = self.lock();
        let entry = state
            .leases
            .get_mut(&lease)
            .ok_or_else(|| CoordinationError::NotFound {
                what: format!("lease {lease}"),
            })?;
        let attached = keys(entry);
        if !attached.iter().any(|existing| existing == key) {
            attached.push(key.to_vec());
        }
        Ok(())
    }

    fn lease_alive(&self, lease: i64) -> Result<()> {
        if self.lock().leases.contains_key(&lease) {
            Ok(())
        } else {
            Err(CoordinationError::NotFound {
                what: format!("lease {lease}"),
            })
        }
    }

    /// Whether `assignment` stands as the worker saw it (same revision).
    fn stands(&self, assignment: &Assignment) -> bool {
        let key =
            self.shared
                .keys
                .assignment(&assignment.worker, &assignment.job, assignment.chunk);
        self.shared
            .assignments
            .borrow()
            .get(&key)
            .is_some_and(|standing| standing.revision == assignment.revision)
    }

    /// Writes an assignment ([`ClusterProtocol::put_assignment`]), with the chunk it
    /// copies when the caller has it.
    #[allow(clippy::too_many_arguments)]
    fn assign(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        rate: (u64, u64),
        source_snapshot: Option<&str>,
        planned: Option<AssignedChunk>,
    ) -> Result<()> {
        self.check_fence()?;
        let key = self.shared.keys.assignment(worker, job, chunk);
        let adopted = self
            .shared
            .assignments
            .borrow()
            .get(&key)
            .is_some_and(|standing| standing.attempt == attempt);
        if adopted {
            return Ok(());
        }
        // A result left by an earlier run of this attempt must not count.
        remove_keys(
            &self.shared.results,
            &[self.shared.keys.result(job, chunk, attempt.0)],
        );
        let assignment = Assignment {
            worker: worker.clone(),
            job: job.clone(),
            chunk,
            attempt,
            revision: self.next_revision(),
            rows_per_sec: rate.0,
            bytes_per_sec: rate.1,
            source_snapshot: source_snapshot.map(str::to_owned),
            give_back: false,
            planned,
        };
        put_key(&self.shared.assignments, key, assignment);
        Ok(())
    }

    fn next_revision(&self) -> i64 {
        let mut state = self.lock();
        state.revision += 1;
        state.revision
    }

    /// Deletes what an attempt of `chunk` left: its assignment (`worker`'s, or whoever
    /// holds it when `None`), its result, progress and claim.
    fn clear_attempt(
        &self,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        worker: Option<&WorkerId>,
    ) {
        let keys = &self.shared.keys;
        let stale: Vec<Vec<u8>> = self
            .shared
            .assignments
            .borrow()
            .iter()
            .filter(|(_, standing)| {
                &standing.job == job
                    && standing.chunk == chunk
                    && worker.is_none_or(|worker| &standing.worker == worker)
            })
            .map(|(key, _)| key.clone())
            .collect();
        remove_keys(&self.shared.assignments, &stale);
        remove_keys(&self.shared.results, &[keys.result(job, chunk, attempt.0)]);
        remove_keys(&self.shared.progress, &[keys.progress(job, chunk)]);
        self.lock().claims.remove(&keys.claim(job, chunk));
    }
}

/// Removes `keys` from a mirror, publishing only when something went.
fn remove_keys<T>(sender: &watch::Sender<Arc<BTreeMap<Vec<u8>, T>>>, keys: &[Vec<u8>])
where
    T: Clone,
{
    sender.send_if_modified(|map| {
        if !keys.iter().any(|key| map.contains_key(key)) {
            return false;
        }
        let map = Arc::make_mut(map);
        for key in keys {
            map.remove(key);
        }
        true
    });
}

fn put_key<T: Clone>(sender: &watch::Sender<Arc<BTreeMap<Vec<u8>, T>>>, key: Vec<u8>, value: T) {
    sender.send_modify(|map| {
        Arc::make_mut(map).insert(key, value);
    });
}

/// A mirror of the entries of `source` under `prefix`, kept current until `cancel`.
fn filtered<T>(
    source: &watch::Sender<Arc<BTreeMap<Vec<u8>, T>>>,
    prefix: Vec<u8>,
    cancel: &CancellationToken,
) -> Mirror<T>
where
    T: Clone + PartialEq + Send + Sync + 'static,
{
    let select = move |map: &BTreeMap<Vec<u8>, T>| -> Arc<BTreeMap<Vec<u8>, T>> {
        Arc::new(
            map.range(prefix.clone()..)
                .take_while(|(key, _)| key.starts_with(&prefix))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        )
    };
    let mut input = source.subscribe();
    let (sender, receiver) = watch::channel(select(&input.borrow_and_update()));
    let cancel = cancel.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = sender.closed() => return,
                changed = input.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let next = select(&input.borrow_and_update());
                    sender.send_if_modified(|current| {
                        if **current == *next {
                            return false;
                        }
                        *current = next;
                        true
                    });
                }
            }
        }
    });
    receiver
}

#[async_trait]
impl Coordination for InProcessCluster {
    async fn load_job(&self, job: &JobId) -> Result<Option<(JobRecord, Vec<ChunkRecord>)>> {
        self.shared.store.load_job(job).await
    }

    async fn load_job_record(&self, job: &JobId) -> Result<Option<JobRecord>> {
        self.shared.store.load_job_record(job).await
    }

    async fn create_job(&self, job: &JobRecord, chunks: &[ChunkRecord]) -> Result<()> {
        self.check_fence()?;
        if self
            .shared
            .fail_next_job_creation
            .swap(false, Ordering::SeqCst)
        {
            return Err(CoordinationError::Etcd {
                operation: format!("create job {}", job.id),
                source: crate::EtcdFailure::Timeout(Duration::from_secs(5)),
            });
        }
        self.shared.store.create_job(job, chunks).await
    }

    async fn register_worker(&self, worker: &WorkerId) -> Result<()> {
        self.shared.store.register_worker(worker).await
    }

    async fn requeue_in_flight(&self, job: &JobId) -> Result<Vec<ChunkId>> {
        self.check_fence()?;
        self.shared.store.requeue_in_flight(job).await
    }

    async fn assign(&self, job: &JobId, chunk: ChunkId, worker: &WorkerId) -> Result<Attempt> {
        self.check_fence()?;
        self.shared.store.assign(job, chunk, worker).await
    }

    async fn start_attempt(
        &self,
        job: &JobId,
        chunk: ChunkId,
        worker: &WorkerId,
    ) -> Result<Attempt> {
        self.check_fence()?;
        self.shared.store.start_attempt(job, chunk, worker).await
    }

    async fn report_state(
        &self,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        state: ChunkState,
    ) -> Result<()> {
        self.check_fence()?;
        self.shared
            .store
            .report_state(job, chunk, attempt, state)
            .await
    }

    async fn complete(
        &self,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        completion: &ChunkCompletion,
    ) -> Result<ChunkRecord> {
        self.check_fence()?;
        let record = self
            .shared
            .store
            .complete(job, chunk, attempt, completion)
            .await?;
        // As on etcd: the end of an attempt withdraws its assignment in the same step,
        // so a late duplicate of its result is refused.
        self.clear_attempt(job, chunk, attempt, None);
        Ok(record)
    }

    async fn load_chunk(&self, job: &JobId, chunk: ChunkId) -> Result<Option<ChunkRecord>> {
        self.shared.store.load_chunk(job, chunk).await
    }

    async fn split_chunk(
        &self,
        job: &JobId,
        chunk: ChunkId,
        after: Attempt,
        pieces: &[(ChunkRange, u64)],
    ) -> Result<Vec<ChunkRecord>> {
        self.check_fence()?;
        self.shared
            .store
            .split_chunk(job, chunk, after, pieces)
            .await
    }

    async fn reset_failed(&self, job: &JobId) -> Result<Vec<ChunkId>> {
        self.check_fence()?;
        self.shared.store.reset_failed(job).await
    }

    async fn save_policy(
        &self,
        job: &JobId,
        policy_json: &str,
        change: &PolicyChange,
    ) -> Result<()> {
        self.check_fence()?;
        self.shared
            .store
            .save_policy(job, policy_json, change)
            .await
    }

    async fn load_policy(&self, job: &JobId) -> Result<Option<String>> {
        self.shared.store.load_policy(job).await
    }

    async fn policy_history(&self, job: &JobId) -> Result<Vec<PolicyChange>> {
        self.shared.store.policy_history(job).await
    }

    async fn record_event(&self, job: &JobId, event: &PolicyChange) -> Result<()> {
        self.check_fence()?;
        self.shared.store.record_event(job, event).await
    }
}

#[async_trait]
impl ClusterProtocol for InProcessCluster {
    fn keys(&self) -> &KeyLayout {
        &self.shared.keys
    }

    fn fenced(&self, term: &LeaderTerm) -> Arc<dyn ClusterProtocol> {
        Arc::new(Self {
            shared: self.shared.clone(),
            fence: Some(term.create_revision),
        })
    }

    async fn start_lease(&self, ttl: Duration, cancel: &CancellationToken) -> Result<LeaseSession> {
        let (alive_tx, alive) = watch::channel(true);
        let id = {
            let mut state = self.lock();
            state.next_lease += 1;
            let id = state.next_lease;
            state.leases.insert(
                id,
                LeaseEntry {
                    alive: alive_tx,
                    workers: Vec::new(),
                    progress: Vec::new(),
                },
            );
            id
        };
        let stop = cancel.child_token();
        // A lease whose keep-alive stopped expires after its TTL, as in etcd (unless
        // revoked first).
        let cluster = self.clone();
        let stopped = stop.clone();
        tokio::spawn(async move {
            stopped.cancelled().await;
            tokio::time::sleep(ttl).await;
            cluster.end_lease(id);
        });
        Ok(LeaseSession::new(id, ttl, alive, stop))
    }

    async fn revoke_lease(&self, lease: i64) -> Result<()> {
        self.end_lease(lease);
        Ok(())
    }

    async fn put_live_worker(&self, worker: &WorkerInfo, lease: i64) -> Result<()> {
        let key = self.shared.keys.worker(&worker.id);
        {
            // Checked and attached under one lock: two workers of one name cannot both pass.
            let mut state = self.lock();
            let held_elsewhere = state
                .leases
                .iter()
                .any(|(id, entry)| *id != lease && entry.workers.contains(&key));
            if held_elsewhere && let Some(holder) = self.shared.workers.borrow().get(&key) {
                return Err(holder.name_taken());
            }
            let entry =
                state
                    .leases
                    .get_mut(&lease)
                    .ok_or_else(|| CoordinationError::NotFound {
                        what: format!("lease {lease}"),
                    })?;
            if !entry.workers.contains(&key) {
                entry.workers.push(key.clone());
            }
        }
        put_key(&self.shared.workers, key, worker.clone());
        Ok(())
    }

    fn watch_workers(&self, _cancel: &CancellationToken) -> Mirror<WorkerInfo> {
        self.shared.workers.subscribe()
    }

    async fn live_workers(&self) -> Result<Vec<WorkerInfo>> {
        Ok(self.shared.workers.borrow().values().cloned().collect())
    }

    async fn request_drain(&self, worker: &WorkerId) -> Result<()> {
        self.check_fence()?;
        put_key(&self.shared.drains, self.shared.keys.drain(worker), ());
        Ok(())
    }

    fn watch_drain_requests(&self, worker: &WorkerId, cancel: &CancellationToken) -> Mirror<()> {
        filtered(
            &self.shared.drains,
            self.shared.keys.drain_root(worker),
            cancel,
        )
    }

    async fn take_drain_request(&self, worker: &WorkerId) -> Result<bool> {
        let key = self.shared.keys.drain(worker);
        let present = self.shared.drains.borrow().contains_key(&key);
        remove_keys(&self.shared.drains, &[key]);
        Ok(present)
    }

    async fn campaign(
        &self,
        leader: &LeaderInfo,
        lease: &LeaseSession,
        cancel: &CancellationToken,
    ) -> Result<Option<LeaderTerm>> {
        let mut changes = self.shared.election.subscribe();
        loop {
            changes.borrow_and_update();
            if lease.is_alive() {
                let won = {
                    let mut state = self.lock();
                    if state.leader.is_none() && state.leases.contains_key(&lease.id) {
                        state.revision += 1;
                        let term = state.revision;
                        state.leader = Some((leader.clone(), lease.id, term));
                        Some(term)
                    } else {
                        None
                    }
                };
                if let Some(create_revision) = won {
                    self.shared.election.send_modify(|version| *version += 1);
                    return Ok(Some(LeaderTerm {
                        key: self.shared.keys.election(),
                        create_revision,
                    }));
                }
            }
            let mut alive = lease.alive();
            tokio::select! {
                () = cancel.cancelled() => return Ok(None),
                _ = changes.changed() => {}
                _ = alive.changed() => {}
            }
        }
    }

    async fn holds(&self, term: &LeaderTerm) -> Result<bool> {
        Ok(self
            .lock()
            .leader
            .as_ref()
            .is_some_and(|(_, _, revision)| *revision == term.create_revision))
    }

    async fn resign(&self, term: &LeaderTerm) -> Result<()> {
        let resigned = {
            let mut state = self.lock();
            let holds = state
                .leader
                .as_ref()
                .is_some_and(|(_, _, revision)| *revision == term.create_revision);
            if holds {
                state.leader = None;
            }
            holds
        };
        if resigned {
            self.shared.election.send_modify(|version| *version += 1);
        }
        Ok(())
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        Ok(self.lock().leader.as_ref().map(|(info, _, _)| info.clone()))
    }

    async fn submit_job_spec(&self, job: &JobId, spec_yaml: &str) -> Result<()> {
        self.check_fence()?;
        self.shared
            .store
            .submit_job_spec(job, spec_yaml, jiff::Timestamp::now().as_millisecond())
    }

    async fn job_spec(&self, job: &JobId) -> Result<Option<String>> {
        self.shared.store.job_spec(job)
    }

    async fn cluster_job(&self, job: &JobId) -> Result<Option<ClusterJob>> {
        Ok(self
            .shared
            .store
            .submitted_jobs(Some(job))?
            .into_iter()
            .next())
    }

    async fn set_job_phase(&self, job: &JobId, phase: JobPhase, reason: &str) -> Result<()> {
        self.check_fence()?;
        self.shared.store.set_job_phase(job, phase, reason)
    }

    async fn list_cluster_jobs(&self) -> Result<Vec<ClusterJob>> {
        self.shared.store.submitted_jobs(None)
    }

    async fn recopy_chunks(&self, job: &JobId, chunks: &[ChunkId]) -> Result<Vec<ChunkId>> {
        self.check_fence()?;
        self.shared.store.recopy_chunks(job, chunks)
    }

    async fn put_assignment(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        rate: (u64, u64),
        source_snapshot: Option<&str>,
    ) -> Result<()> {
        self.assign(worker, job, chunk, attempt, rate, source_snapshot, None)
    }

    async fn start_assigned_attempt(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        rate: (u64, u64),
        source_snapshot: Option<&str>,
    ) -> Result<Attempt> {
        let attempt = self.start_attempt(job, chunk, worker).await?;
        // Read here, once, rather than by the worker.
        let planned = self
            .shared
            .store
            .load_chunk(job, chunk)
            .await?
            .map(|record| AssignedChunk::of(&record));
        self.assign(worker, job, chunk, attempt, rate, source_snapshot, planned)?;
        Ok(attempt)
    }

    async fn request_give_back(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
    ) -> Result<bool> {
        self.check_fence()?;
        let key = self.shared.keys.assignment(worker, job, chunk);
        let standing = self
            .shared
            .assignments
            .borrow()
            .get(&key)
            .filter(|standing| standing.attempt == attempt)
            .cloned();
        let Some(mut assignment) = standing else {
            return Ok(false);
        };
        assignment.give_back = true;
        put_key(&self.shared.assignments, key, assignment);
        Ok(true)
    }

    async fn withdraw_assignment(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
    ) -> Result<()> {
        self.check_fence()?;
        self.clear_attempt(job, chunk, attempt, Some(worker));
        Ok(())
    }

    fn watch_assignments(
        &self,
        worker: &WorkerId,
        cancel: &CancellationToken,
    ) -> Mirror<Assignment> {
        filtered(
            &self.shared.assignments,
            self.shared.keys.assignments_root(worker),
            cancel,
        )
    }

    async fn claim(&self, assignment: &Assignment, lease: i64) -> Result<bool> {
        self.lease_alive(lease)?;
        if !self.stands(assignment) {
            return Ok(false);
        }
        let key = self.shared.keys.claim(&assignment.job, assignment.chunk);
        self.lock().claims.insert(key, lease);
        Ok(true)
    }

    async fn put_progress(&self, progress: &ChunkProgress, lease: i64) -> Result<()> {
        let key = self.shared.keys.progress(&progress.job, progress.chunk);
        self.attach(lease, |entry| &mut entry.progress, &key)?;
        put_key(&self.shared.progress, key, progress.clone());
        Ok(())
    }

    fn watch_progress(&self, _cancel: &CancellationToken) -> Mirror<ChunkProgress> {
        self.shared.progress.subscribe()
    }

    async fn put_result(&self, assignment: &Assignment, result: &ChunkResult) -> Result<bool> {
        if !self.stands(assignment) {
            return Ok(false);
        }
        let key = self
            .shared
            .keys
            .result(&assignment.job, assignment.chunk, assignment.attempt.0);
        let result = AttemptResult {
            job: assignment.job.clone(),
            chunk: assignment.chunk,
            attempt: assignment.attempt,
            worker: assignment.worker.clone(),
            result: match result {
                // As on etcd: a stopped attempt is reported as given back.
                ChunkResult::Cancelled => ChunkResult::Requeued {
                    reason: format!("worker {} stopped the attempt", assignment.worker),
                },
                other => other.clone(),
            },
        };
        put_key(&self.shared.results, key, result);
        Ok(true)
    }

    fn watch_results(&self, _cancel: &CancellationToken) -> Mirror<AttemptResult> {
        self.shared.results.subscribe()
    }

    async fn put_pace(&self, pace: &JobPace) -> Result<()> {
        self.check_fence()?;
        put_key(
            &self.shared.pace,
            self.shared.keys.pace(&pace.job),
            pace.clone(),
        );
        Ok(())
    }

    async fn delete_pace(&self, job: &JobId) -> Result<()> {
        self.check_fence()?;
        remove_keys(&self.shared.pace, &[self.shared.keys.pace(job)]);
        Ok(())
    }

    fn watch_pace(&self, _cancel: &CancellationToken) -> Mirror<JobPace> {
        self.shared.pace.subscribe()
    }

    async fn compact_history(&self, _keep: u64) -> Result<Option<i64>> {
        // No history is kept in memory.
        Ok(None)
    }
}
