//! The store a cluster job's scheduler runs on: the leader's fenced store, whose
//! `start_attempt` also hands the attempt to its worker, writing the chunk's start
//! (ASSIGNED and COPYING) and the worker's assignment in one txn
//! ([`ClusterProtocol::start_assigned_attempt`]) instead of two. The executor then
//! finds the assignment written and only waits for the result.

use std::sync::Arc;

use async_trait::async_trait;
use ferry_coordination::{
    ChunkCompletion, ChunkRecord, ChunkState, Coordination, JobRecord, PolicyChange, Result,
};
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};
use ferry_model::key::ChunkRange;

use super::remote::RemoteExecutor;

/// Every call goes to the executor's store; `start_attempt` writes the assignment too.
pub struct HandoffStore {
    executor: Arc<RemoteExecutor>,
    /// The job's exported source snapshot, handed out with each assignment.
    source_snapshot: Option<String>,
}

impl HandoffStore {
    /// The store a job run by `executor` is scheduled on.
    pub fn new(executor: Arc<RemoteExecutor>, source_snapshot: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            executor,
            source_snapshot,
        })
    }
}

#[async_trait]
impl Coordination for HandoffStore {
    async fn load_job(&self, job: &JobId) -> Result<Option<(JobRecord, Vec<ChunkRecord>)>> {
        self.executor.store.load_job(job).await
    }

    async fn load_job_record(&self, job: &JobId) -> Result<Option<JobRecord>> {
        self.executor.store.load_job_record(job).await
    }

    async fn create_job(&self, job: &JobRecord, chunks: &[ChunkRecord]) -> Result<()> {
        self.executor.store.create_job(job, chunks).await
    }

    async fn register_worker(&self, worker: &WorkerId) -> Result<()> {
        self.executor.store.register_worker(worker).await
    }

    async fn requeue_in_flight(&self, job: &JobId) -> Result<Vec<ChunkId>> {
        self.executor.store.requeue_in_flight(job).await
    }

    async fn assign(&self, job: &JobId, chunk: ChunkId, worker: &WorkerId) -> Result<Attempt> {
        self.executor.store.assign(job, chunk, worker).await
    }

    async fn start_attempt(
        &self,
        job: &JobId,
        chunk: ChunkId,
        worker: &WorkerId,
    ) -> Result<Attempt> {
        self.executor
            .start_attempt(job, chunk, worker, self.source_snapshot.as_deref())
            .await
    }

    async fn report_state(
        &self,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        state: ChunkState,
    ) -> Result<()> {
        self.executor
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
        self.executor
            .store
            .complete(job, chunk, attempt, completion)
            .await
    }

    async fn split_chunk(
        &self,
        job: &JobId,
        chunk: ChunkId,
        after: Attempt,
        pieces: &[(ChunkRange, u64)],
    ) -> Result<Vec<ChunkRecord>> {
        self.executor
            .store
            .split_chunk(job, chunk, after, pieces)
            .await
    }

    async fn reset_failed(&self, job: &JobId) -> Result<Vec<ChunkId>> {
        self.executor.store.reset_failed(job).await
    }

    async fn list_chunks(&self, job: &JobId) -> Result<Vec<ChunkRecord>> {
        self.executor.store.list_chunks(job).await
    }

    async fn load_chunk(&self, job: &JobId, chunk: ChunkId) -> Result<Option<ChunkRecord>> {
        self.executor.store.load_chunk(job, chunk).await
    }

    async fn save_policy(
        &self,
        job: &JobId,
        policy_json: &str,
        change: &PolicyChange,
    ) -> Result<()> {
        self.executor
            .store
            .save_policy(job, policy_json, change)
            .await
    }

    async fn load_policy(&self, job: &JobId) -> Result<Option<String>> {
        self.executor.store.load_policy(job).await
    }

    async fn policy_history(&self, job: &JobId) -> Result<Vec<PolicyChange>> {
        self.executor.store.policy_history(job).await
    }

    async fn record_event(&self, job: &JobId, event: &PolicyChange) -> Result<()> {
        self.executor.store.record_event(job, event).await
    }
}
