//! The Control API's domain on a [`ClusterRuntime`]: the cluster operations (submit,
//! cancel, re-copy, drain, listings) and each job's controls, which go to the job's
//! pacer on the leader. Every change an operator makes is recorded in the job's history
//! with the caller's identity.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use ferry_connectors::OpenedJob;
use ferry_coordination::cluster::{ClusterProtocol, JobPhase};
use ferry_coordination::{ChunkRecord, ChunkState, CoordinationError, JobRecord, PolicyChange};
use ferry_model::ids::{ChunkId, JobId, WorkerId};

use super::{ClusterRuntime, lock, store_error};
use crate::control::{
    ChunkFilter, ChunkView, ClusterControl, ControlError, EffectiveView, JobControl, JobStateView,
    JobStatusView, JobSummaryView, PlanView, PlannedTableView, RecopySelector, ThrottleUpdate,
    WorkerView,
};
use crate::pacer::unix_ms;
use crate::plan::plan_job_with;

fn phase_view(phase: JobPhase) -> JobStateView {
    match phase {
        JobPhase::Running => JobStateView::Running,
        JobPhase::Done => JobStateView::Done,
        JobPhase::Failed => JobStateView::Failed,
        JobPhase::Cancelled => JobStateView::Cancelled,
    }
}

fn table_name(record: &JobRecord, chunk: &ChunkRecord) -> String {
    record
        .tables
        .get(chunk.table_index)
        .map(|table| table.schema.name.to_string())
        .unwrap_or_default()
}

#[async_trait]
impl ClusterControl for ClusterRuntime {
    async fn submit(
        &self,
        spec_yaml: &str,
        dry_run: bool,
        actor: &str,
    ) -> Result<PlanView, ControlError> {
        let spec = self
            .parse_spec(spec_yaml)
            .map_err(ControlError::InvalidSpec)?;
        let leadership = if dry_run {
            None
        } else {
            Some(self.require_leader().await?)
        };
        let job = JobId(spec.name.clone());
        if let Some((phase, _)) = self.phase(&job).await? {
            return Err(ControlError::AlreadyExists(format!(
                "job {job} exists already ({}): give the spec another `name`, or act on the \
                 existing job (`ferryctl status|recopy|cancel {job}`)",
                phase.as_str()
            )));
        }
        let invalid =
            |error: &dyn std::fmt::Display| ControlError::InvalidSpec(vec![error.to_string()]);
        let OpenedJob { source, sink, .. } = self
            .opener
            .open(&job, spec_yaml)
            .await
            .map_err(|e| invalid(&e))?;
        // A verify-only job writes nothing to the target, not even at planning; a sync
        // pass checks that its target tables exist.
        let prepare_targets = !dry_run && spec.mode != ferry_model::spec::JobMode::Verify;
        let plan = plan_job_with(&spec, source.as_ref(), sink.as_ref(), prepare_targets)
            .await
            .map_err(|e| invalid(&e))?;
        let tables = plan
            .tables
            .iter()
            .enumerate()
            .map(|(index, table)| {
                let chunks: Vec<_> = plan
                    .chunks
                    .iter()
                    .filter(|chunk| chunk.table_index == index)
                    .collect();
                PlannedTableView {
                    source: table.schema.name.to_string(),
                    target: sink.target_table(&table.schema).to_string(),
                    chunks: chunks.len() as u32,
                    estimated_rows: chunks.iter().map(|chunk| chunk.estimated_rows).sum(),
                    warnings: table.warnings.clone(),
                }
            })
            .collect();
        let Some(leadership) = leadership else {
            return Ok(PlanView {
                job: job.0,
                tables,
                submitted: false,
            });
        };
        leadership
            .store
            .submit_job_spec(&job, spec_yaml)
            .await
            .map_err(|error| match error {
                CoordinationError::AlreadyExists { what } => {
                    ControlError::AlreadyExists(format!("{what}: give the spec another `name`"))
                }
                other => store_error(other),
            })?;
        // From here the job is accepted: the spec is stored, and a leader's lifecycle
        // plans a stored spec that has no job yet. A failure below (etcd briefly away, a
        // lost term) therefore must not be answered as a refusal: the job runs anyway,
        // and a client sending the spec again would be told it exists.
        let record = JobRecord::new(&spec, plan.tables);
        match leadership.store.create_job(&record, &plan.chunks).await {
            // The leader's lifecycle saw the spec stored and planned the job first.
            Ok(()) | Err(CoordinationError::AlreadyExists { .. }) => {}
            Err(error) => {
                tracing::warn!(%job, %error, "job stored, its plan not: the leader plans it again");
            }
        }
        let summary = format!(
            "submitted: {} tables, {} chunks",
            tables.len(),
            plan.chunks.len(),
        );
        if let Err(error) =
            record_event(leadership.store.as_ref(), &job, "submit", actor, summary).await
        {
            tracing::warn!(%job, %error, "job submitted; its submit event was not recorded");
        }
        leadership.wake.notify_one();
        tracing::info!(%job, chunks = plan.chunks.len(), %actor, "job submitted");
        Ok(PlanView {
            job: job.0,
            tables,
            submitted: true,
        })
    }

    async fn list_jobs(&self) -> Result<Vec<JobSummaryView>, ControlError> {
        let jobs = self.store.list_cluster_jobs().await.map_err(store_error)?;
        Ok(jobs
            .into_iter()
            .map(|job| JobSummaryView {
                job: job.id.0,
                state: phase_view(job.phase),
                reason: job.reason,
                submitted_at_unix_ms: job.submitted_at_unix_ms,
            })
            .collect())
    }

    async fn list_chunks(
        &self,
        job: &str,
        filter: &ChunkFilter,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<ChunkView>, bool), ControlError> {
        let (record, chunks) = self.load(&JobId(job.to_owned())).await?;
        if let Some(state) = &filter.state
            && ChunkState::parse(state).is_none()
        {
            return Err(ControlError::InvalidArgument(format!(
                "unknown chunk state {state:?}: use PLANNED, ASSIGNED, COPYING, VERIFYING, \
                 VERIFIED or FAILED"
            )));
        }
        let selected: Vec<ChunkView> = chunks
            .iter()
            .filter(|chunk| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|state| chunk.state.as_str() == state)
            })
            .filter(|chunk| {
                filter
                    .table
                    .as_ref()
                    .is_none_or(|table| &table_name(&record, chunk) == table)
            })
            .skip(offset)
            .take(limit + 1)
            .map(|chunk| ChunkView {
                id: chunk.id.0,
                table: table_name(&record, chunk),
                range: chunk.range.to_string(),
                state: chunk.state.as_str().to_owned(),
                attempt: chunk.attempt.0,
                failures: chunk.failures,
                estimated_rows: chunk.estimated_rows,
                rows: chunk.rows,
                worker: chunk
                    .worker
                    .as_ref()
                    .map(|w| w.0.clone())
                    .unwrap_or_default(),
                last_error: chunk.last_error.clone().unwrap_or_default(),
                partition: chunk.partition.clone().unwrap_or_default(),
                checksum: chunk
                    .checksum
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                sync: chunk.evidence.sync,
            })
            .collect();
        let more = selected.len() > limit;
        Ok((selected.into_iter().take(limit).collect(), more))
    }

    async fn cancel(&self, job: &str, actor: &str) -> Result<(), ControlError> {
        let leadership = self.require_leader().await?;
        let id = JobId(job.to_owned());
        match self.phase(&id).await? {
            None => return Err(ControlError::UnknownJob(job.to_owned())),
            Some((JobPhase::Running, _)) => {}
            Some((phase, _)) => {
                return Err(ControlError::Unsupported(format!(
                    "job {job} has ended ({}); nothing to cancel",
                    phase.as_str()
                )));
            }
        }
        leadership
            .store
            .set_job_phase(&id, JobPhase::Cancelled, "cancelled by an operator")
            .await
            .map_err(store_error)?;
        record_event(
            leadership.store.as_ref(),
            &id,
            "cancel",
            actor,
            "cancelled".to_owned(),
        )
        .await?;
        self.stop_job(&leadership, &id, true).await;
        Ok(())
    }

    async fn recopy(
        &self,
        job: &str,
        selector: RecopySelector,
        actor: &str,
    ) -> Result<Vec<u32>, ControlError> {
        let leadership = self.require_leader().await?;
        let id = JobId(job.to_owned());
        let (record, chunks) = self.load(&id).await?;
        if let RecopySelector::State(state) = &selector
            && !matches!(state.as_str(), "VERIFIED" | "FAILED")
        {
            return Err(ControlError::InvalidArgument(format!(
                "--state {state}: only VERIFIED or FAILED chunks can be re-copied"
            )));
        }
        if let RecopySelector::Table(table) = &selector
            && !record
                .tables
                .iter()
                .any(|t| &t.schema.name.to_string() == table)
        {
            return Err(ControlError::InvalidArgument(format!(
                "job {job} has no table {table}; `ferryctl chunks {job}` lists its tables"
            )));
        }
        if let RecopySelector::Ids(ids) = &selector
            && let Some(unknown) = ids
                .iter()
                .find(|id| !chunks.iter().any(|chunk| chunk.id.0 == **id))
        {
            return Err(ControlError::InvalidArgument(unknown_chunk_message(
                job,
                *unknown,
                chunks.len(),
            )));
        }
        let selected: Vec<ChunkId> = chunks
            .iter()
            .filter(|chunk| match &selector {
                RecopySelector::Ids(ids) => ids.contains(&chunk.id.0),
                RecopySelector::Table(table) => &table_name(&record, chunk) == table,
                RecopySelector::State(state) => chunk.state.as_str() == state,
            })
            .map(|chunk| chunk.id)
            .collect();
        if selected.is_empty() {
            // Nothing to re-copy: the running job is left alone.
            return Ok(Vec::new());
        }
        self.stop_job(&leadership, &id, false).await;
        let changed = leadership
            .store
            .recopy_chunks(&id, &selected)
            .await
            .map_err(store_error)?;
        let summary = format!(
            "re-copy {}: {} chunks",
            describe_selector(&selector),
            changed.len()
        );
        record_event(leadership.store.as_ref(), &id, "recopy", actor, summary).await?;
        leadership
            .store
            .set_job_phase(&id, JobPhase::Running, "")
            .await
            .map_err(store_error)?;
        leadership.wake.notify_one();
        Ok(changed.into_iter().map(|chunk| chunk.0).collect())
    }

    async fn list_workers(&self) -> Result<Vec<WorkerView>, ControlError> {
        let workers = self.store.live_workers().await.map_err(store_error)?;
        let board = lock(&self.leading).as_ref().map(|l| l.board.clone());
        Ok(workers
            .into_iter()
            .map(|worker| WorkerView {
                busy: board.as_ref().map_or(0, |board| board.busy(&worker.id)),
                id: worker.id.0,
                slots: worker.slots,
                draining: worker.draining,
                host: worker.host,
                pid: worker.pid,
                registered_at_unix_ms: worker.registered_at_unix_ms,
            })
            .collect())
    }

    async fn drain(&self, worker: &str, actor: &str) -> Result<(), ControlError> {
        let leadership = self.require_leader().await?;
        let id = WorkerId(worker.to_owned());
        let live = self.store.live_workers().await.map_err(store_error)?;
        if !live.iter().any(|live| live.id == id) {
            return Err(ControlError::UnknownWorker(worker.to_owned()));
        }
        leadership
            .store
            .request_drain(&id)
            .await
            .map_err(store_error)?;
        // A drain concerns every running job (their chunks on that worker move on).
        let jobs = self.store.list_cluster_jobs().await.map_err(store_error)?;
        for running in jobs.iter().filter(|job| job.phase == JobPhase::Running) {
            let summary = format!("asked worker {worker} to drain");
            record_event(
                leadership.store.as_ref(),
                &running.id,
                "drain",
                actor,
                summary,
            )
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl JobControl for ClusterRuntime {
    async fn job_status(&self, job: &str) -> Result<JobStatusView, ControlError> {
        let id = JobId(job.to_owned());
        let (phase, _) = self
            .phase(&id)
            .await?
            .ok_or_else(|| ControlError::UnknownJob(job.to_owned()))?;
        let running = self.running_job(&id);
        let tallied = running.as_ref().and_then(|running| {
            lock(&running.tally)
                .as_ref()
                .map(|tally| (tally.counts(), tally.eta()))
        });
        let eta = tallied.and_then(|(_, eta)| eta);
        let tallied = tallied.map(|(counts, _)| counts);
        let counts = match tallied {
            Some(counts) => counts,
            None => self.stored_counts(&id, phase).await?,
        };
        let pacer = running
            .as_ref()
            .and_then(|running| lock(&running.pacer).clone());
        let paused = pacer.as_ref().is_some_and(|pacer| pacer.is_paused());
        let state = match phase_view(phase) {
            JobStateView::Running if paused => JobStateView::Paused,
            other => other,
        };
        Ok(JobStatusView {
            state,
            rows_verified: counts.rows_verified,
            rows_streamed: running.as_ref().map_or(counts.rows_verified, |running| {
                running.rows_streamed.load(Ordering::Relaxed)
            }),
            chunks_total: counts.total,
            chunks_verified: counts.verified,
            chunks_failed: counts.failed,
            chunks_running: counts.running,
            waiting: pacer.and_then(|pacer| pacer.waiting_for()),
            eta: match phase {
                JobPhase::Running => eta,
                _ => None,
            },
        })
    }

    async fn pause(&self, job: &str, actor: &str) -> Result<EffectiveView, ControlError> {
        self.pacer_of(job).await?.pause(job, actor).await
    }

    async fn resume(&self, job: &str, actor: &str) -> Result<EffectiveView, ControlError> {
        self.pacer_of(job).await?.resume(job, actor).await
    }

    async fn update_throttle(
        &self,
        job: &str,
        update: ThrottleUpdate,
        actor: &str,
    ) -> Result<(String, EffectiveView), ControlError> {
        self.pacer_of(job)
            .await?
            .update_throttle(job, update, actor)
            .await
    }

    async fn throttle(
        &self,
        job: &str,
        at: Option<jiff::Timestamp>,
    ) -> Result<(String, EffectiveView), ControlError> {
        let (policy, mut view) = self.pacer_of(job).await?.throttle(job, at).await?;
        // Now (not at another instant): how the job shares the cluster with other jobs.
        if at.is_none()
            && let Some(leadership) = lock(&self.leading).clone()
        {
            view.reasons
                .extend(leadership.board.sharing_lines(&JobId(job.to_owned())));
        }
        Ok((policy, view))
    }

    async fn history(&self, job: &str) -> Result<Vec<PolicyChange>, ControlError> {
        let id = JobId(job.to_owned());
        self.load(&id).await?;
        self.store.policy_history(&id).await.map_err(store_error)
    }
}

/// Appends an operator's `action` by `actor` to the job's history, stamped now.
async fn record_event(
    store: &dyn ClusterProtocol,
    job: &JobId,
    action: &str,
    actor: &str,
    summary: String,
) -> Result<(), ControlError> {
    let event = PolicyChange::operator_action(unix_ms(), action, actor, summary);
    store.record_event(job, &event).await.map_err(store_error)
}

/// The chunks a re-copy selected, in words.
fn describe_selector(selector: &RecopySelector) -> String {
    match selector {
        RecopySelector::Ids(ids) => format!(
            "chunks {}",
            ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        ),
        RecopySelector::Table(table) => format!("table {table}"),
        RecopySelector::State(state) => format!("{state} chunks"),
    }
}

/// A re-copy's refusal of a chunk id the job does not have.
fn unknown_chunk_message(job: &str, unknown: u32, num_chunks: usize) -> String {
    let range = match num_chunks {
        0 => "it has no chunks".to_owned(),
        1 => "its only chunk is 0".to_owned(),
        _ => format!("its chunks are 0 to {}", num_chunks - 1),
    };
    format!("job {job} has no chunk {unknown}: {range}; `ferryctl chunks {job}` lists them")
}
