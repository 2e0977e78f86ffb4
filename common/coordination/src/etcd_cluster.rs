//! The cluster protocol on etcd ([`ClusterProtocol`] for [`EtcdStore`]); keys stay in
//! [`crate::keys`], values are `ferry.v1` protobuf messages.
//!
//! - a worker's lease is an etcd lease with keep-alive; its `workers/{id}` record, its
//!   claims and its progress are put on the lease and vanish with it;
//! - the election is the `election` key, created on the candidate's lease by a txn
//!   comparing its create revision with 0; a term is that create revision, and every
//!   write of a fenced store compares it ([`EtcdStore::fenced_by`]);
//! - a fresh attempt's start (its chunk PLANNED → COPYING) and its assignment are one
//!   txn of the leader ([`ClusterProtocol::start_assigned_attempt`]);
//! - a claim and a result are written by a txn comparing the assignment key's create
//!   revision with the one the worker saw, so a withdrawn (or replaced) assignment
//!   refuses them. A worker's claims, progress and results go through its group commit
//!   ([`crate::coalesce`]): the claims of assignments seen together share one txn.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, TxnOp, WatchOptions,
};
use prost::Message;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::{
    AssignedChunk, Assignment, AttemptResult, ChunkProgress, ClusterJob, ClusterProtocol, JobPace,
    JobPhase, LeaderInfo, LeaderTerm, LeaseSession, Mirror, WorkerInfo,
};
use crate::coalesce::{Guard, SmallTxn, Write};
use crate::etcd::{
    ChunkUpdate, TxnOutcome, bounded, checksum_from_proto, checksum_to_proto, decode, key_text,
    now_unix_ms,
};
use crate::keys::{KeyLayout, prefix_range_end};
use crate::transitions::{assign_transition, report_transition};
use crate::{
    ChunkRecord, ChunkState, Coordination, CoordinationError, EtcdFailure, EtcdStore, Result,
};
use ferry_model::backoff::Backoff;
use ferry_model::checksum::RangeChecksum;
use ferry_model::execution::ChunkResult;
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};
use ferry_model::key::ChunkRange;
use ferry_proto::v1 as pb;

#[async_trait]
impl ClusterProtocol for EtcdStore {
    fn keys(&self) -> &KeyLayout {
        EtcdStore::keys(self)
    }

    fn fenced(&self, term: &LeaderTerm) -> Arc<dyn ClusterProtocol> {
        Arc::new(self.fenced_by(term.key.clone(), term.create_revision))
    }

    async fn recopy_chunks(&self, job: &JobId, chunks: &[ChunkId]) -> Result<Vec<ChunkId>> {
        EtcdStore::recopy_chunks(self, job, |record| chunks.contains(&record.id)).await
    }

    async fn start_lease(&self, ttl: Duration, cancel: &CancellationToken) -> Result<LeaseSession> {
        let ttl_secs = i64::try_from(ttl.as_secs().max(2)).unwrap_or(i64::MAX);
        let operation = format!("grant a {ttl_secs} s lease");
        let mut lease = self.client.lease_client();
        let granted = self.call(&operation, lease.grant(ttl_secs, None)).await?;
        let id = granted.id();
        let ttl = Duration::from_secs(ttl_secs.unsigned_abs());
        let (alive_tx, alive) = watch::channel(true);
        let stop = cancel.child_token();
        let store = self.clone();
        let task_stop = stop.clone();
        tokio::spawn(async move {
            keep_lease_alive(store, id, ttl, alive_tx, task_stop).await;
        });
        Ok(LeaseSession::new(id, ttl, alive, stop))
    }

    async fn revoke_lease(&self, lease: i64) -> Result<()> {
        let mut client = self.client.lease_client();
        match self.call("revoke a lease", client.revoke(lease)).await {
            Ok(_) => Ok(()),
            // Expired or revoked already: what revoking it was for.
            Err(CoordinationError::Etcd {
                source: EtcdFailure::Client(etcd_client::Error::GRpcStatus(status)),
                ..
            }) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn put_live_worker(&self, worker: &WorkerInfo, lease: i64) -> Result<()> {
        let operation = format!("register worker {}", worker.id);
        let value = pb::WorkerRecordValue {
            id: worker.id.0.clone(),
            registered_at_unix_ms: worker.registered_at_unix_ms,
            slots: worker.slots,
            draining: worker.draining,
            host: worker.host.clone(),
            pid: worker.pid,
            lease_id: lease,
        }
        .encode_to_vec();
        let key = self.keys.worker(&worker.id);
        let put = TxnOp::put(
            key.clone(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        );
        let mut kv = self.client.kv_client();
        const ROUNDS: u32 = 3;
        for _ in 0..ROUNDS {
            // Put when the name is free; otherwise read the holder.
            let txn = etcd_client::Txn::new()
                .when(vec![Compare::create_revision(
                    key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![put.clone()])
                .or_else(vec![TxnOp::get(key.clone(), None)]);
            let response = self.call(&operation, kv.txn(txn)).await?;
            if response.succeeded() {
                return Ok(());
            }
            let holder = response.op_responses().into_iter().find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                _ => None,
            });
            let Some(holder) = holder else {
                continue; // deleted in between: the name is free now
            };
            if holder.lease() != lease {
                let info = decode_worker(&holder).unwrap_or_else(|| WorkerInfo {
                    id: worker.id.clone(),
                    slots: 0,
                    draining: false,
                    host: "(an unreadable registration)".to_owned(),
                    pid: 0,
                    registered_at_unix_ms: 0,
                });
                return Err(info.name_taken());
            }
            // Ours already (same lease): a re-registration, e.g. draining.
            let txn = etcd_client::Txn::new()
                .when(vec![Compare::lease(key.clone(), CompareOp::Equal, lease)])
                .and_then(vec![put.clone()]);
            if self.call(&operation, kv.txn(txn)).await?.succeeded() {
                return Ok(());
            }
        }
        Err(CoordinationError::Etcd {
            operation,
            source: crate::EtcdFailure::CompareFailed { attempts: ROUNDS },
        })
    }

    fn watch_workers(&self, cancel: &CancellationToken) -> Mirror<WorkerInfo> {
        self.mirror(self.keys.workers_root(), decode_worker, cancel)
    }

    async fn live_workers(&self) -> Result<Vec<WorkerInfo>> {
        let entries = self
            .list("list workers", &self.keys.workers_root(), 0)
            .await?;
        Ok(entries.iter().filter_map(decode_worker).collect())
    }

    async fn request_drain(&self, worker: &WorkerId) -> Result<()> {
        let operation = format!("ask worker {worker} to drain");
        let value = pb::DrainValue {
            requested_at_unix_ms: now_unix_ms(),
        }
        .encode_to_vec();
        let put = TxnOp::put(self.keys.drain(worker), value, None);
        match self.commit(&operation, Vec::new(), vec![put]).await? {
            TxnOutcome::Applied => Ok(()),
            TxnOutcome::CompareFailed => Err(self.contention(&operation)),
        }
    }

    fn watch_drain_requests(&self, worker: &WorkerId, cancel: &CancellationToken) -> Mirror<()> {
        self.mirror(self.keys.drain_root(worker), |_| Some(()), cancel)
    }

    async fn take_drain_request(&self, worker: &WorkerId) -> Result<bool> {
        let operation = format!("read the drain request of worker {worker}");
        let mut kv = self.client.kv_client();
        let deleted = self
            .call(&operation, kv.delete(self.keys.drain(worker), None))
            .await?;
        Ok(deleted.deleted() > 0)
    }

    async fn campaign(
        &self,
        leader: &LeaderInfo,
        lease: &LeaseSession,
        cancel: &CancellationToken,
    ) -> Result<Option<LeaderTerm>> {
        let key = self.keys.election();
        let value = pb::LeaderValue {
            id: leader.id.clone(),
            address: leader.address.clone(),
            elected_at_unix_ms: now_unix_ms(),
        }
        .encode_to_vec();
        loop {
            if cancel.is_cancelled() {
                return Ok(None);
            }
            if lease.is_alive() {
                let txn = etcd_client::Txn::new()
                    .when(vec![Compare::create_revision(
                        key.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then(vec![TxnOp::put(
                        key.clone(),
                        value.clone(),
                        Some(PutOptions::new().with_lease(lease.id)),
                    )]);
                let mut kv = self.client.kv_client();
                match self.call("campaign for leadership", kv.txn(txn)).await {
                    Ok(response) if response.succeeded() => {
                        let create_revision =
                            response.header().map_or(0, |header| header.revision());
                        return Ok(Some(LeaderTerm {
                            key,
                            create_revision,
                        }));
                    }
                    Ok(_) => {}
                    Err(error) if error.is_retryable() => {
                        tracing::warn!(%error, "campaign: etcd unavailable; retrying");
                    }
                    Err(error) => return Err(error),
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(None),
                () = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    }

    async fn holds(&self, term: &LeaderTerm) -> Result<bool> {
        let (entry, _) = self.get("check leadership", term.key.clone()).await?;
        Ok(entry.is_some_and(|entry| entry.create_revision() == term.create_revision))
    }

    async fn resign(&self, term: &LeaderTerm) -> Result<()> {
        let txn = etcd_client::Txn::new()
            .when(vec![Compare::create_revision(
                term.key.clone(),
                CompareOp::Equal,
                term.create_revision,
            )])
            .and_then(vec![TxnOp::delete(term.key.clone(), None)]);
        let mut kv = self.client.kv_client();
        self.call("resign leadership", kv.txn(txn)).await?;
        Ok(())
    }

    async fn leader(&self) -> Result<Option<LeaderInfo>> {
        let (entry, _) = self.get("read the leader", self.keys.election()).await?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let value: pb::LeaderValue = decode(&entry)?;
        Ok(Some(LeaderInfo {
            id: value.id,
            address: value.address,
        }))
    }

    async fn submit_job_spec(&self, job: &JobId, spec_yaml: &str) -> Result<()> {
        let operation = format!("submit job {job}");
        let submitted_at_unix_ms = now_unix_ms();
        let spec = pb::JobSpecValue {
            spec_yaml: spec_yaml.to_owned(),
            submitted_at_unix_ms,
        }
        .encode_to_vec();
        let state_key = self.keys.job_state(job);
        let state = ClusterJob {
            id: job.clone(),
            phase: JobPhase::Running,
            reason: String::new(),
            submitted_at_unix_ms,
        };
        let compares = vec![Compare::create_revision(
            state_key.clone(),
            CompareOp::Equal,
            0,
        )];
        let puts = vec![
            TxnOp::put(self.keys.job_spec(job), spec, None),
            TxnOp::put(state_key, state_value(&state), None),
        ];
        match self.commit(&operation, compares, puts).await? {
            TxnOutcome::Applied => Ok(()),
            TxnOutcome::CompareFailed => Err(CoordinationError::AlreadyExists {
                what: format!("job {job}"),
            }),
        }
    }

    async fn job_spec(&self, job: &JobId) -> Result<Option<String>> {
        let (entry, _) = self
            .get(
                &format!("read the spec of job {job}"),
                self.keys.job_spec(job),
            )
            .await?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let value: pb::JobSpecValue = decode(&entry)?;
        Ok(Some(value.spec_yaml))
    }

    async fn cluster_job(&self, job: &JobId) -> Result<Option<ClusterJob>> {
        let operation = format!("read the state of job {job}");
        let (entry, _) = self.get(&operation, self.keys.job_state(job)).await?;
        Ok(entry.map(|entry| decode_job_state_or_failed(&entry)))
    }

    async fn set_job_phase(&self, job: &JobId, phase: JobPhase, reason: &str) -> Result<()> {
        let operation = format!("mark job {job} {}", phase.as_str());
        let current = self
            .cluster_job(job)
            .await?
            .ok_or_else(|| CoordinationError::NotFound {
                what: format!("job {job}"),
            })?;
        let next = ClusterJob {
            phase,
            reason: reason.to_owned(),
            ..current
        };
        let put = TxnOp::put(self.keys.job_state(job), state_value(&next), None);
        match self.commit(&operation, Vec::new(), vec![put]).await? {
            TxnOutcome::Applied => Ok(()),
            TxnOutcome::CompareFailed => Err(self.contention(&operation)),
        }
    }

    async fn list_cluster_jobs(&self) -> Result<Vec<ClusterJob>> {
        let entries = self
            .list("list jobs", &self.keys.job_states_root(), 0)
            .await?;
        // One unreadable job must not hide (or stop) the others: it is listed FAILED,
        // with the key and what to do.
        Ok(entries.iter().map(decode_job_state_or_failed).collect())
    }

    async fn start_assigned_attempt(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        rate: (u64, u64),
        source_snapshot: Option<&str>,
    ) -> Result<Attempt> {
        let operation = format!("start chunk {chunk} of job {job} on worker {worker}");
        let assignment_key = self.keys.assignment(worker, job, chunk);
        let started = self
            .update_chunk_guarded(
                &operation,
                job,
                chunk,
                |record| {
                    let (assigned, attempt) =
                        assign_transition(record, worker, crate::now_unix_ms())?;
                    let started = report_transition(assigned, attempt, ChunkState::Copying)?;
                    Ok(Some((started, attempt)))
                },
                |current| {
                    // The attempt the transition gives it; its range, partition and
                    // table stay as they are while it is assigned.
                    let attempt = Attempt(current.attempt.0 + 1);
                    SmallTxn {
                        // No assignment stands (the last attempt's completion withdrew
                        // it), and a stale result of an earlier run must not count.
                        guards: vec![Guard::CreateRevision(assignment_key.clone(), 0)],
                        writes: vec![
                            Write::Put(
                                assignment_key.clone(),
                                assignment_value(
                                    job,
                                    chunk,
                                    attempt,
                                    rate,
                                    source_snapshot,
                                    Some(current),
                                ),
                            ),
                            Write::Delete(self.keys.result(job, chunk, attempt.0)),
                        ],
                    }
                },
            )
            .await?;
        match started {
            ChunkUpdate::Applied(attempt) => Ok(attempt),
            ChunkUpdate::Unchanged => Err(self.contention(&operation)),
            ChunkUpdate::GuardFailed => {
                // An assignment left behind (an earlier run's), or the chunk changed
                // meanwhile: the careful way, in two writes.
                let attempt = self.start_attempt(job, chunk, worker).await?;
                self.put_assignment(worker, job, chunk, attempt, rate, source_snapshot)
                    .await?;
                Ok(attempt)
            }
        }
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
        let operation =
            format!("assign attempt {attempt} of chunk {chunk} of job {job} to {worker}");
        let key = self.keys.assignment(worker, job, chunk);
        let value = assignment_value(job, chunk, attempt, rate, source_snapshot, None);
        for _ in 0..=self.options.max_compare_retries {
            // Absent, and a stale result of an earlier run of this attempt must not count.
            let txn = SmallTxn {
                guards: vec![Guard::CreateRevision(key.clone(), 0)],
                writes: vec![
                    Write::Put(key.clone(), value.clone()),
                    Write::Delete(self.keys.result(job, chunk, attempt.0)),
                ],
            };
            if self.commit_coalesced(&operation, txn).await?.0 == TxnOutcome::Applied {
                return Ok(());
            }
            let (entry, _) = self.get(&operation, key.clone()).await?;
            let Some(entry) = entry else { continue };
            let standing: pb::AssignmentValue = decode(&entry)?;
            if standing.attempt == attempt.0 {
                return Ok(());
            }
            let stale = vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                entry.mod_revision(),
            )];
            self.commit(&operation, stale, vec![TxnOp::delete(key.clone(), None)])
                .await?;
        }
        Err(self.contention(&operation))
    }

    async fn withdraw_assignment(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
    ) -> Result<()> {
        let operation = format!("withdraw attempt {attempt} of chunk {chunk} of job {job}");
        let deletes = self
            .attempt_cleanup(worker, job, chunk, attempt)
            .iter()
            .map(Write::to_op)
            .collect();
        match self.commit(&operation, Vec::new(), deletes).await? {
            TxnOutcome::Applied => Ok(()),
            TxnOutcome::CompareFailed => Err(self.contention(&operation)),
        }
    }

    async fn request_give_back(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
    ) -> Result<bool> {
        let operation =
            format!("ask {worker} to hand back attempt {attempt} of chunk {chunk} of job {job}");
        let key = self.keys.assignment(worker, job, chunk);
        let (entry, _) = self.get(&operation, key.clone()).await?;
        let Some(entry) = entry else {
            return Ok(false);
        };
        let mut value: pb::AssignmentValue = decode(&entry)?;
        if value.attempt != attempt.0 {
            return Ok(false);
        }
        value.give_back = true;
        // Rewritten in place: its create revision, which the worker's result must match,
        // stays.
        let unchanged = vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            entry.mod_revision(),
        )];
        let put = vec![TxnOp::put(key, value.encode_to_vec(), None)];
        Ok(self.commit(&operation, unchanged, put).await? == TxnOutcome::Applied)
    }

    fn watch_assignments(
        &self,
        worker: &WorkerId,
        cancel: &CancellationToken,
    ) -> Mirror<Assignment> {
        let owner = worker.clone();
        self.mirror(
            self.keys.assignments_root(worker),
            move |entry| decode_assignment(&owner, entry),
            cancel,
        )
    }

    async fn claim(&self, assignment: &Assignment, lease: i64) -> Result<bool> {
        let operation = format!("claim chunk {} of job {}", assignment.chunk, assignment.job);
        let claim = Write::PutOnLease(
            self.keys.claim(&assignment.job, assignment.chunk),
            assignment.worker.0.clone().into_bytes(),
            lease,
        );
        self.while_assigned(&operation, assignment, claim).await
    }

    async fn put_progress(&self, progress: &ChunkProgress, lease: i64) -> Result<()> {
        let operation = format!("report progress of chunk {}", progress.chunk);
        let value = pb::ProgressValue {
            attempt: progress.attempt.0,
            worker: progress.worker.0.clone(),
            rows: progress.rows,
            verifying: progress.verifying,
            job: progress.job.0.clone(),
            chunk: progress.chunk.0,
        }
        .encode_to_vec();
        let put = Write::PutOnLease(
            self.keys.progress(&progress.job, progress.chunk),
            value,
            lease,
        );
        let txn = SmallTxn {
            guards: Vec::new(),
            writes: vec![put],
        };
        self.commit_coalesced(&operation, txn).await?;
        Ok(())
    }

    async fn put_pace(&self, pace: &JobPace) -> Result<()> {
        let operation = format!("publish the pace of job {}", pace.job);
        let value = pb::PaceValue {
            job: pace.job.0.clone(),
            paused: pace.paused,
            rows_per_sec: pace.rows_per_sec,
            bytes_per_sec: pace.bytes_per_sec,
            pause_timeout_ms: u64::try_from(pace.pause_timeout.as_millis()).unwrap_or(u64::MAX),
        }
        .encode_to_vec();
        let put = TxnOp::put(self.keys.pace(&pace.job), value, None);
        match self.commit(&operation, Vec::new(), vec![put]).await? {
            TxnOutcome::Applied => Ok(()),
            TxnOutcome::CompareFailed => Err(self.contention(&operation)),
        }
    }

    async fn compact_history(&self, keep: u64) -> Result<Option<i64>> {
        let operation = "compact the etcd history";
        let (_, newest) = self.get(operation, self.keys.root()).await?;
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let Some(to) = newest.checked_sub(keep).filter(|to| *to > 0) else {
            return Ok(None);
        };
        let mut kv = self.client.kv_client();
        match self.call(operation, kv.compact(to, None)).await {
            Ok(_) => {
                metrics::counter!("ferry_etcd_compactions_total").increment(1);
                Ok(Some(to))
            }
            // Someone compacted further already (etcd's own auto-compaction).
            Err(CoordinationError::Etcd {
                source: crate::etcd::EtcdFailure::Client(etcd_client::Error::GRpcStatus(status)),
                ..
            }) if status.message().contains("compacted") => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn delete_pace(&self, job: &JobId) -> Result<()> {
        let operation = format!("remove the pace of job {job}");
        let delete = TxnOp::delete(self.keys.pace(job), None);
        match self.commit(&operation, Vec::new(), vec![delete]).await? {
            TxnOutcome::Applied => Ok(()),
            TxnOutcome::CompareFailed => Err(self.contention(&operation)),
        }
    }

    fn watch_pace(&self, cancel: &CancellationToken) -> Mirror<JobPace> {
        self.mirror(self.keys.pace_root(), decode_pace, cancel)
    }

    fn watch_progress(&self, cancel: &CancellationToken) -> Mirror<ChunkProgress> {
        self.mirror(self.keys.progress_root(), decode_progress, cancel)
    }

    async fn put_result(&self, assignment: &Assignment, result: &ChunkResult) -> Result<bool> {
        let operation = format!(
            "report the result of attempt {} of chunk {} of job {}",
            assignment.attempt, assignment.chunk, assignment.job
        );
        let put = Write::Put(
            self.keys
                .result(&assignment.job, assignment.chunk, assignment.attempt.0),
            result_value(assignment, result).encode_to_vec(),
        );
        self.while_assigned(&operation, assignment, put).await
    }

    fn watch_results(&self, cancel: &CancellationToken) -> Mirror<AttemptResult> {
        self.mirror(self.keys.results_root(), decode_result, cancel)
    }
}

impl EtcdStore {
    /// The deletes that withdraw an attempt: its assignment, result, progress and claim.
    pub(super) fn attempt_cleanup(
        &self,
        worker: &WorkerId,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
    ) -> Vec<Write> {
        vec![
            Write::Delete(self.keys.assignment(worker, job, chunk)),
            Write::Delete(self.keys.result(job, chunk, attempt.0)),
            Write::Delete(self.keys.progress(job, chunk)),
            Write::Delete(self.keys.claim(job, chunk)),
        ]
    }

    /// Applies `write` only while `assignment` stands with the create revision the
    /// worker saw; false when it was withdrawn (or replaced) meanwhile. Through the
    /// group commit: a worker's writes of several attempts share a txn.
    async fn while_assigned(
        &self,
        operation: &str,
        assignment: &Assignment,
        write: Write,
    ) -> Result<bool> {
        let assign_key =
            self.keys
                .assignment(&assignment.worker, &assignment.job, assignment.chunk);
        let txn = SmallTxn {
            guards: vec![Guard::CreateRevision(assign_key, assignment.revision)],
            writes: vec![write],
        };
        let (outcome, _) = self.commit_coalesced(operation, txn).await?;
        Ok(outcome == TxnOutcome::Applied)
    }

    /// Mirrors every key under `prefix` decoded by `decode` (undecodable values are
    /// logged and left out).
    pub fn mirror<T, F>(&self, prefix: Vec<u8>, decode: F, cancel: &CancellationToken) -> Mirror<T>
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(&KeyValue) -> Option<T> + Send + Sync + 'static,
    {
        let (sender, receiver) = watch::channel(Arc::new(BTreeMap::new()));
        let store = self.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100));
            loop {
                let outcome = tokio::select! {
                    () = cancel.cancelled() => return,
                    outcome = store.mirror_once(&prefix, &decode, &sender) => outcome,
                };
                if sender.is_closed() {
                    return;
                }
                match outcome {
                    Ok(()) => backoff.reset(),
                    Err(error) => {
                        tracing::warn!(prefix = %key_text(&prefix), %error, "watch broke; re-reading");
                    }
                }
                if !backoff.wait(&cancel).await {
                    return;
                }
            }
        });
        receiver
    }

    /// Reads the prefix, publishes it, then applies watch events until the watch ends.
    async fn mirror_once<T, F>(
        &self,
        prefix: &[u8],
        decode: &F,
        sender: &watch::Sender<Arc<BTreeMap<Vec<u8>, T>>>,
    ) -> Result<()>
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(&KeyValue) -> Option<T> + Send + Sync + 'static,
    {
        let operation = format!("watch {}", key_text(prefix));
        let end = prefix_range_end(prefix);
        let mut kv = self.client.kv_client();
        let response = self
            .call(
                &operation,
                kv.get(
                    prefix.to_vec(),
                    Some(GetOptions::new().with_range(end.clone())),
                ),
            )
            .await?;
        let revision = response.header().map_or(0, |header| header.revision());
        let mut map = BTreeMap::new();
        for entry in response.kvs() {
            if let Some(value) = decode(entry) {
                map.insert(entry.key().to_vec(), value);
            }
        }
        sender.send_replace(Arc::new(map));
        let mut watcher = self.client.watch_client();
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(revision + 1);
        let mut stream = self
            .call(&operation, watcher.watch(prefix.to_vec(), Some(options)))
            .await?;
        loop {
            let message = stream
                .message()
                .await
                .map_err(|error| CoordinationError::Etcd {
                    operation: operation.clone(),
                    source: error.into(),
                })?;
            let Some(message) = message else {
                return Ok(());
            };
            if message.canceled() {
                return Ok(());
            }
            if message.events().is_empty() {
                continue;
            }
            // One publication per message, changed in place: the map is copied only
            // while a reader still holds the previous snapshot.
            sender.send_modify(|snapshot| {
                let map = Arc::make_mut(snapshot);
                for event in message.events() {
                    let Some(entry) = event.kv() else { continue };
                    let value = match event.event_type() {
                        EventType::Put => decode(entry),
                        EventType::Delete => None,
                    };
                    match value {
                        Some(value) => map.insert(entry.key().to_vec(), value),
                        None => map.remove(entry.key()),
                    };
                }
            });
        }
    }
}

/// Publishes that writing is no longer safe, and counts it once per fencing (not again
/// while already fenced).
fn stop_writes(alive: &watch::Sender<bool>) {
    if alive.send_replace(false) {
        metrics::counter!(crate::etcd::LEASE_FENCED).increment(1);
    }
}

/// Renews the lease every third of its TTL; publishes whether it is safe to write.
async fn keep_lease_alive(
    store: EtcdStore,
    id: i64,
    ttl: Duration,
    alive: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let every = ttl / 3;
    let safe_for = ttl * 2 / 3;
    let mut last_renewed = Instant::now();
    let mut keeper: Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)> = None;
    loop {
        if keeper.is_none() {
            let mut client = store.client.lease_client();
            match bounded(
                "keep a lease alive",
                store.options.request_timeout,
                client.keep_alive(id),
            )
            .await
            {
                Ok(pair) => keeper = Some(pair),
                Err(error) => tracing::warn!(lease = id, %error, "cannot open lease keep-alive"),
            }
        }
        if let Some((sender, stream)) = keeper.as_mut() {
            let renewed = async {
                sender.keep_alive().await?;
                stream.message().await
            };
            match tokio::time::timeout(every.max(Duration::from_millis(500)), renewed).await {
                Ok(Ok(Some(response))) if response.ttl() > 0 => {
                    last_renewed = Instant::now();
                    alive.send_if_modified(|value| !std::mem::replace(value, true));
                }
                Ok(Ok(Some(_))) => {
                    tracing::error!(lease = id, "lease expired");
                    stop_writes(&alive);
                    return;
                }
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    keeper = None;
                }
            }
        }
        if last_renewed.elapsed() >= safe_for && *alive.borrow() {
            tracing::error!(
                lease = id,
                "lease not renewed in time: stopping writes (self-fencing)"
            );
            stop_writes(&alive);
        }
        let pause = if keeper.is_some() {
            every
        } else {
            Duration::from_millis(300)
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

fn state_value(job: &ClusterJob) -> Vec<u8> {
    pb::JobStateValue {
        state: job.phase.as_str().to_owned(),
        reason: job.reason.clone(),
        updated_at_unix_ms: now_unix_ms(),
        submitted_at_unix_ms: job.submitted_at_unix_ms,
        job: job.id.0.clone(),
    }
    .encode_to_vec()
}

/// A job state as stored, or, when it cannot be read, the job as FAILED with the key
/// and the fix in its reason (its id from the key).
fn decode_job_state_or_failed(entry: &KeyValue) -> ClusterJob {
    decode_job_state(entry).unwrap_or_else(|error| {
        let key = key_text(entry.key());
        let id = key
            .rsplit('/')
            .next()
            .map(crate::keys::unescape_segment)
            .unwrap_or_default();
        tracing::debug!(%error, "a job state cannot be read");
        ClusterJob {
            id: JobId(id),
            phase: JobPhase::Failed,
            reason: format!(
                "its state cannot be read ({error}): it was written by another program or a \
                 newer ferry; run that ferry, or remove the job with `etcdctl del {key}` and \
                 submit it again"
            ),
            submitted_at_unix_ms: 0,
        }
    })
}

fn decode_job_state(entry: &KeyValue) -> Result<ClusterJob> {
    let value: pb::JobStateValue = decode(entry)?;
    let phase = JobPhase::parse(&value.state).ok_or_else(|| CoordinationError::CorruptValue {
        key: key_text(entry.key()),
        detail: format!(
            "unknown job state {:?} (written by a newer ferry?)",
            value.state
        ),
    })?;
    Ok(ClusterJob {
        id: JobId(value.job),
        phase,
        reason: value.reason,
        submitted_at_unix_ms: value.submitted_at_unix_ms,
    })
}

fn decode_logged<M: Message + Default>(entry: &KeyValue) -> Option<M> {
    match decode::<M>(entry) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(
                %error,
                "skipping an undecodable value: written by another program or a newer ferry \
                 (if it is garbage, remove it with `etcdctl del KEY`)"
            );
            None
        }
    }
}

fn decode_worker(entry: &KeyValue) -> Option<WorkerInfo> {
    let value: pb::WorkerRecordValue = decode_logged(entry)?;
    Some(WorkerInfo {
        id: WorkerId(value.id),
        slots: value.slots,
        draining: value.draining,
        host: value.host,
        pid: value.pid,
        registered_at_unix_ms: value.registered_at_unix_ms,
    })
}

/// An assignment's value; `planned`, the chunk's record when the leader has it at hand,
/// spares the worker reading it.
fn assignment_value(
    job: &JobId,
    chunk: ChunkId,
    attempt: Attempt,
    rate: (u64, u64),
    source_snapshot: Option<&str>,
    planned: Option<&ChunkRecord>,
) -> Vec<u8> {
    pb::AssignmentValue {
        job: job.0.clone(),
        chunk: chunk.0,
        attempt: attempt.0,
        rows_per_sec: rate.0,
        bytes_per_sec: rate.1,
        source_snapshot: source_snapshot.unwrap_or_default().to_owned(),
        give_back: false,
        chunk_plan: planned.and_then(|record| {
            Some(pb::AssignedChunk {
                table_index: u32::try_from(record.table_index).ok()?,
                range: Some(pb::ChunkRange::from(&record.range)),
                partition: record.partition.clone(),
            })
        }),
    }
    .encode_to_vec()
}

/// The chunk an assignment carries; `None` (the worker then reads the chunk's record)
/// when it carries none or one this build cannot read.
fn decode_assigned_chunk(plan: pb::AssignedChunk) -> Option<AssignedChunk> {
    Some(AssignedChunk {
        table_index: plan.table_index as usize,
        range: ChunkRange::try_from(plan.range?).ok()?,
        partition: plan.partition,
    })
}

fn decode_assignment(worker: &WorkerId, entry: &KeyValue) -> Option<Assignment> {
    let value: pb::AssignmentValue = decode_logged(entry)?;
    Some(Assignment {
        worker: worker.clone(),
        job: JobId(value.job),
        chunk: ChunkId(value.chunk),
        attempt: Attempt(value.attempt),
        revision: entry.create_revision(),
        rows_per_sec: value.rows_per_sec,
        bytes_per_sec: value.bytes_per_sec,
        source_snapshot: (!value.source_snapshot.is_empty()).then_some(value.source_snapshot),
        give_back: value.give_back,
        planned: value.chunk_plan.and_then(decode_assigned_chunk),
    })
}

fn decode_pace(entry: &KeyValue) -> Option<JobPace> {
    let value: pb::PaceValue = decode_logged(entry)?;
    Some(JobPace {
        job: JobId(value.job),
        paused: value.paused,
        rows_per_sec: value.rows_per_sec,
        bytes_per_sec: value.bytes_per_sec,
        pause_timeout: Duration::from_millis(value.pause_timeout_ms),
    })
}

fn decode_progress(entry: &KeyValue) -> Option<ChunkProgress> {
    let value: pb::ProgressValue = decode_logged(entry)?;
    Some(ChunkProgress {
        job: JobId(value.job),
        chunk: ChunkId(value.chunk),
        attempt: Attempt(value.attempt),
        worker: WorkerId(value.worker),
        rows: value.rows,
        verifying: value.verifying,
    })
}

fn result_value(assignment: &Assignment, result: &ChunkResult) -> pb::ResultValue {
    let mut value = pb::ResultValue {
        attempt: assignment.attempt.0,
        worker: assignment.worker.0.clone(),
        job: assignment.job.0.clone(),
        chunk: assignment.chunk.0,
        ..Default::default()
    };
    match result {
        ChunkResult::Verified {
            rows,
            checksum,
            sync,
        } => {
            value.kind = pb::OutcomeKind::Verified as i32;
            value.rows = *rows;
            value.checksum = Some(checksum_to_proto(*checksum));
            value.sync = sync.as_ref().map(pb::SyncChangesValue::from);
        }
        ChunkResult::Copied { rows, checksum } => {
            value.kind = pb::OutcomeKind::Copied as i32;
            value.rows = *rows;
            value.checksum = Some(checksum_to_proto(*checksum));
        }
        ChunkResult::Mismatch { source, target } => {
            value.kind = pb::OutcomeKind::Mismatch as i32;
            value.checksum = Some(checksum_to_proto(*source));
            value.target_checksum = Some(checksum_to_proto(*target));
        }
        ChunkResult::Error { message, retryable } => {
            value.kind = pb::OutcomeKind::Error as i32;
            value.message = message.clone();
            value.retryable = *retryable;
        }
        ChunkResult::Requeued { reason } => {
            value.kind = pb::OutcomeKind::Requeued as i32;
            value.message = reason.clone();
        }
        ChunkResult::Unavailable { message } => {
            value.kind = pb::OutcomeKind::Unavailable as i32;
            value.message = message.clone();
        }
        ChunkResult::Cancelled => {
            value.kind = pb::OutcomeKind::Requeued as i32;
            value.message = format!("worker {} stopped the attempt", assignment.worker);
        }
    }
    value
}

fn decode_result(entry: &KeyValue) -> Option<AttemptResult> {
    let value: pb::ResultValue = decode_logged(entry)?;
    let empty = RangeChecksum { rows: 0, sum: 0 };
    let checksum = value.checksum.map_or(empty, checksum_from_proto);
    let result = match pb::OutcomeKind::try_from(value.kind) {
        Ok(pb::OutcomeKind::Verified) => ChunkResult::Verified {
            rows: value.rows,
            checksum,
            sync: value.sync.map(Into::into),
        },
        Ok(pb::OutcomeKind::Copied) => ChunkResult::Copied {
            rows: value.rows,
            checksum,
        },
        Ok(pb::OutcomeKind::Mismatch) => ChunkResult::Mismatch {
            source: checksum,
            target: value.target_checksum.map_or(empty, checksum_from_proto),
        },
        Ok(pb::OutcomeKind::Error) => ChunkResult::Error {
            message: value.message,
            retryable: value.retryable,
        },
        Ok(pb::OutcomeKind::Requeued) => ChunkResult::Requeued {
            reason: value.message,
        },
        Ok(pb::OutcomeKind::Unavailable) => ChunkResult::Unavailable {
            message: value.message,
        },
        Ok(pb::OutcomeKind::Unspecified) | Err(_) => {
            tracing::error!(key = %key_text(entry.key()), "result without an outcome");
            return None;
        }
    };
    Some(AttemptResult {
        job: JobId(value.job),
        chunk: ChunkId(value.chunk),
        attempt: Attempt(value.attempt),
        worker: WorkerId(value.worker),
        result,
    })
}
