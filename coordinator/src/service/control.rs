//! `ferry.v1.Control` over a [`JobControl`] and, on a coordinator, a [`ClusterControl`]:
//! convert the request, call one domain method, convert the result. Errors map to status
//! codes in one place (`From<ControlError> for Status`).
//!
//! A coordinator and `ferryctl local` serve both ([`ControlService::with_cluster`] over
//! the same `ClusterRuntime`). A service over a [`JobControl`] alone
//! ([`ControlService::new`], for embedders and tests) answers the cluster RPCs
//! (SubmitJob, ListJobs, WatchJob, ListChunks, CancelJob, RecopyChunks, ListWorkers,
//! DrainWorker) UNIMPLEMENTED.

use std::sync::Arc;
use std::time::Duration;

use ferry_model::spec::MAX_JOB_NAME_CHARS;
use ferry_proto::v1 as pb;
use ferry_proto::v1::control_server::Control;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::control::{
    ChunkFilter, ChunkView, ClusterControl, ControlError, EffectiveView, JobControl, JobStateView,
    JobStatusView, JobSummaryView, PlanView, RecopySelector, ThrottleUpdate, WorkerView,
};
use crate::security::{Caller, ControlAccess, Role};

/// How often WatchJob polls the job's status. The proto promises at most two snapshots
/// a second; polling is cheap (a leader counts a running job's chunks in memory, and
/// counts read from etcd are shared by every watcher for two seconds).
const WATCH_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// ListChunks page size when the request says 0.
const DEFAULT_CHUNK_PAGE_SIZE: usize = 1000;

/// ListChunks page size cap, so one response stays a few MB at most.
const MAX_CHUNK_PAGE_SIZE: usize = 10_000;

/// Metadata key carrying the leader's address on a NotLeader refusal, so a client can
/// go there without parsing the message.
pub const LEADER_METADATA_KEY: &str = "ferry-leader";

/// The Control service.
pub struct ControlService {
    domain: Arc<dyn JobControl>,
    /// `None` for a lone job domain: the cluster RPCs answer UNIMPLEMENTED.
    cluster_opt: Option<Arc<dyn ClusterControl>>,
    /// Who may call what.
    access: ControlAccess,
}

impl ControlService {
    /// Serves `domain` alone: the cluster RPCs are refused.
    pub fn new(domain: Arc<dyn JobControl>) -> Self {
        Self {
            domain,
            cluster_opt: None,
            access: ControlAccess::open(),
        }
    }

    /// Serves `domain` and the cluster operations of a coordinator.
    pub fn with_cluster(domain: Arc<dyn JobControl>, cluster: Arc<dyn ClusterControl>) -> Self {
        Self {
            domain,
            cluster_opt: Some(cluster),
            access: ControlAccess::open(),
        }
    }

    /// Authenticates callers with `access` (default: open, for a loopback server).
    pub fn with_access(mut self, access: ControlAccess) -> Self {
        self.access = access;
        self
    }

    /// The caller of a read (`viewer`) or a change (`operator`) named `rpc`.
    fn caller<T>(&self, request: &Request<T>, rpc: &str, needed: Role) -> Result<Caller, Status> {
        let caller = self.access.authorize(request, rpc, needed)?;
        if needed == Role::Operator {
            tracing::info!(rpc, caller = %caller.identity, "control change");
        }
        Ok(caller)
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::control_server::ControlServer<Self> {
        pb::control_server::ControlServer::new(self)
    }

    /// The cluster domain, or the refusal `ferryctl local` gives for `rpc`.
    fn cluster(&self, rpc: &str) -> Result<&dyn ClusterControl, ControlError> {
        self.cluster_opt.as_deref().ok_or_else(|| {
            ControlError::Unsupported(format!(
                "this ferry runs a single job: only a ferry coordinator offers {rpc}; `ferryctl local` does not"
            ))
        })
    }
}

impl From<ControlError> for Status {
    fn from(error: ControlError) -> Self {
        let message = error.to_string();
        match &error {
            ControlError::UnknownJob(_) => Status::not_found(message),
            ControlError::UnknownWorker(_) => Status::not_found(message),
            ControlError::InvalidSpec(_)
            | ControlError::InvalidThrottle(_)
            | ControlError::InvalidArgument(_)
            | ControlError::BadPageToken(_) => Status::invalid_argument(message),
            ControlError::CorruptRecord(_) => {
                tracing::error!(%error, "a stored record cannot be read");
                Status::data_loss(message)
            }
            ControlError::Internal(_) => {
                tracing::error!(%error, "control request failed");
                Status::internal(message)
            }
            ControlError::NotLeader(leader_opt) => {
                let mut status = Status::failed_precondition(message);
                // A leader address that is not valid ASCII metadata stays in the message only.
                if let Some(value) = leader_opt.as_deref().and_then(|leader| leader.parse().ok()) {
                    status.metadata_mut().insert(LEADER_METADATA_KEY, value);
                }
                status
            }
            ControlError::Unsupported(_) => Status::unimplemented(message),
            ControlError::AlreadyExists(_) => Status::already_exists(message),
            ControlError::Unavailable(_) => {
                tracing::warn!(%error, "control request could not be served");
                Status::unavailable(message)
            }
        }
    }
}

fn effective_to_proto(view: EffectiveView) -> pb::EffectiveThrottle {
    pb::EffectiveThrottle {
        concurrency: view.concurrency,
        paused: view.paused,
        reasons: view.reasons,
        load: view.load,
        in_flight: view.in_flight,
        rows_per_sec: view.rows_per_sec,
        bytes_per_sec: view.bytes_per_sec,
    }
}

fn job_state_to_proto(state: JobStateView) -> pb::JobState {
    match state {
        JobStateView::Running => pb::JobState::Running,
        JobStateView::Paused => pb::JobState::Paused,
        JobStateView::Done => pb::JobState::Done,
        JobStateView::Failed => pb::JobState::Failed,
        JobStateView::Cancelled => pb::JobState::Cancelled,
    }
}

fn job_status_to_proto(job_id: String, status: JobStatusView) -> pb::GetJobResponse {
    pb::GetJobResponse {
        job_id,
        state: job_state_to_proto(status.state) as i32,
        rows_verified: status.rows_verified,
        rows_streamed: status.rows_streamed,
        chunks_total: status.chunks_total,
        chunks_verified: status.chunks_verified,
        chunks_failed: status.chunks_failed,
        chunks_running: status.chunks_running,
        waiting: status.waiting.unwrap_or_default(),
        eta_seconds: status.eta.map(|eta| eta.as_secs_f64()),
    }
}

/// Whether a job in `state` can change no more, so a watch ends after reporting it.
fn is_final(state: JobStateView) -> bool {
    matches!(
        state,
        JobStateView::Done | JobStateView::Failed | JobStateView::Cancelled
    )
}

fn plan_to_proto(plan: PlanView) -> pb::SubmitJobResponse {
    let chunks_total = plan.tables.iter().map(|table| table.chunks).sum();
    let estimated_rows = plan.tables.iter().map(|table| table.estimated_rows).sum();
    pb::SubmitJobResponse {
        job_id: plan.job,
        tables: plan
            .tables
            .into_iter()
            .map(|table| pb::PlannedTable {
                source: table.source,
                target: table.target,
                chunks: table.chunks,
                estimated_rows: table.estimated_rows,
                warnings: table.warnings,
            })
            .collect(),
        chunks_total,
        estimated_rows,
        submitted: plan.submitted,
    }
}

fn job_summary_to_proto(job: JobSummaryView) -> pb::JobSummary {
    pb::JobSummary {
        job_id: job.job,
        state: job_state_to_proto(job.state) as i32,
        reason: job.reason,
        submitted_at_unix_ms: job.submitted_at_unix_ms,
    }
}

fn chunk_to_proto(chunk: ChunkView) -> pb::ChunkInfo {
    pb::ChunkInfo {
        id: chunk.id,
        table: chunk.table,
        range: chunk.range,
        state: chunk.state,
        attempt: chunk.attempt,
        failures: chunk.failures,
        estimated_rows: chunk.estimated_rows,
        rows: chunk.rows,
        worker: chunk.worker,
        last_error: chunk.last_error,
        sync: chunk.sync.as_ref().map(pb::SyncChangesValue::from),
    }
}

fn worker_to_proto(worker: WorkerView) -> pb::WorkerInfo {
    pb::WorkerInfo {
        id: worker.id,
        slots: worker.slots,
        busy: worker.busy,
        draining: worker.draining,
        host: worker.host,
        pid: worker.pid,
        registered_at_unix_ms: worker.registered_at_unix_ms,
    }
}

/// The longest worker name a request may carry (a host name is at most 253).
const MAX_WORKER_ID_CHARS: usize = 256;

/// A request's `job_id`, refused when it cannot name a job (empty, or longer than any
/// job name): the message says so without echoing a huge value back.
fn checked_job_id(job_id: &str) -> Result<&str, ControlError> {
    checked_name(
        "job_id",
        job_id,
        MAX_JOB_NAME_CHARS,
        "job names",
        "ferryctl jobs",
    )
}

/// A request's `worker_id`, refused like [`checked_job_id`].
fn checked_worker_id(worker_id: &str) -> Result<&str, ControlError> {
    checked_name(
        "worker_id",
        worker_id,
        MAX_WORKER_ID_CHARS,
        "worker names",
        "ferryctl workers",
    )
}

fn checked_name<'a>(
    field: &str,
    value: &'a str,
    max_chars: usize,
    what: &str,
    lister: &str,
) -> Result<&'a str, ControlError> {
    if value.is_empty() {
        return Err(ControlError::InvalidArgument(format!(
            "{field} is empty: give one (`{lister}` lists them)"
        )));
    }
    let num_chars = value.chars().count();
    if num_chars > max_chars {
        return Err(ControlError::InvalidArgument(format!(
            "{field} is {num_chars} characters long; {what} have at most {max_chars} \
             (`{lister}` lists them)"
        )));
    }
    Ok(value)
}

/// An empty proto string means "no filter".
fn non_empty(text: String) -> Option<String> {
    if text.is_empty() { None } else { Some(text) }
}

/// Reads a ListChunks page: the token is the decimal offset of the page's first chunk
/// (opaque to clients), the size defaults to 1000 and is capped at 10,000.
fn chunk_page(page_token: &str, page_size: u32) -> Result<(usize, usize), ControlError> {
    let offset = if page_token.is_empty() {
        0
    } else {
        page_token
            .parse::<usize>()
            .map_err(|_| ControlError::BadPageToken(page_token.to_owned()))?
    };
    let limit = match usize::try_from(page_size) {
        Ok(0) => DEFAULT_CHUNK_PAGE_SIZE,
        Ok(size) => size.min(MAX_CHUNK_PAGE_SIZE),
        Err(_) => MAX_CHUNK_PAGE_SIZE,
    };
    Ok((offset, limit))
}

/// The one selector a RecopyChunks request must carry.
fn recopy_selector(request: &pb::RecopyChunksRequest) -> Result<RecopySelector, ControlError> {
    let has_ids = !request.chunk_ids.is_empty();
    let has_table = !request.table.is_empty();
    let has_state = !request.state.is_empty();
    match (has_ids, has_table, has_state) {
        (true, false, false) => Ok(RecopySelector::Ids(request.chunk_ids.clone())),
        (false, true, false) => Ok(RecopySelector::Table(request.table.clone())),
        (false, false, true) => Ok(RecopySelector::State(request.state.clone())),
        _ => Err(ControlError::InvalidArgument(
            "RecopyChunks needs exactly one selector: chunk_ids, table or state".to_owned(),
        )),
    }
}

/// Feeds `updates_tx` with the job's status: `first_status` at once, then a snapshot
/// whenever it changed, polled every [`WATCH_POLL_INTERVAL`]. Ends after a final state,
/// with the domain's error if the status cannot be read (e.g. this coordinator lost its
/// leadership), or as soon as the client is gone.
async fn feed_watch(
    domain: Arc<dyn JobControl>,
    job_id: String,
    first_status: JobStatusView,
    updates_tx: tokio::sync::mpsc::Sender<Result<pb::GetJobResponse, Status>>,
) {
    let mut status = first_status;
    let mut ticker = tokio::time::interval(WATCH_POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; the first snapshot is already in hand.
    ticker.tick().await;
    loop {
        let job_ended = is_final(status.state);
        let snapshot = job_status_to_proto(job_id.clone(), status.clone());
        if updates_tx.send(Ok(snapshot)).await.is_err() || job_ended {
            return;
        }
        let last_sent = status;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                // The client went away while we waited: stop polling.
                () = updates_tx.closed() => return,
            }
            status = match domain.job_status(&job_id).await {
                Ok(status) => status,
                Err(error) => {
                    let _ = updates_tx.send(Err(Status::from(error))).await;
                    return;
                }
            };
            if status != last_sent {
                break;
            }
        }
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        self.caller(&request, "GetJob", Role::Viewer)?;
        let request = request.into_inner();
        let status = self
            .domain
            .job_status(checked_job_id(&request.job_id)?)
            .await?;
        Ok(Response::new(job_status_to_proto(request.job_id, status)))
    }

    async fn pause_job(
        &self,
        request: Request<pb::PauseJobRequest>,
    ) -> Result<Response<pb::PauseJobResponse>, Status> {
        let caller = self.caller(&request, "PauseJob", Role::Operator)?;
        let effective = self
            .domain
            .pause(
                checked_job_id(&request.into_inner().job_id)?,
                &caller.identity,
            )
            .await?;
        Ok(Response::new(pb::PauseJobResponse {
            effective: Some(effective_to_proto(effective)),
        }))
    }

    async fn resume_job(
        &self,
        request: Request<pb::ResumeJobRequest>,
    ) -> Result<Response<pb::ResumeJobResponse>, Status> {
        let caller = self.caller(&request, "ResumeJob", Role::Operator)?;
        let effective = self
            .domain
            .resume(
                checked_job_id(&request.into_inner().job_id)?,
                &caller.identity,
            )
            .await?;
        Ok(Response::new(pb::ResumeJobResponse {
            effective: Some(effective_to_proto(effective)),
        }))
    }

    async fn update_throttle(
        &self,
        request: Request<pb::UpdateThrottleRequest>,
    ) -> Result<Response<pb::UpdateThrottleResponse>, Status> {
        let caller = self.caller(&request, "UpdateThrottle", Role::Operator)?;
        let request = request.into_inner();
        let update = ThrottleUpdate {
            max_concurrency: request.max_concurrency,
            clear_override: request.clear_override,
            rows_per_sec: request.rows_per_sec,
            bytes_per_sec: request.bytes_per_sec,
            load_max: request.load_max,
            load_critical: request.load_critical,
            schedule_yaml: request.schedule_yaml,
            priority: request.priority,
        };
        let (policy_json, effective) = self
            .domain
            .update_throttle(checked_job_id(&request.job_id)?, update, &caller.identity)
            .await?;
        Ok(Response::new(pb::UpdateThrottleResponse {
            policy_json,
            effective: Some(effective_to_proto(effective)),
        }))
    }

    async fn get_throttle(
        &self,
        request: Request<pb::GetThrottleRequest>,
    ) -> Result<Response<pb::GetThrottleResponse>, Status> {
        self.caller(&request, "GetThrottle", Role::Viewer)?;
        let request = request.into_inner();
        let at = match request.at_unix_ms {
            Some(millis) => Some(
                jiff::Timestamp::from_millisecond(millis)
                    .map_err(|error| Status::invalid_argument(format!("at_unix_ms: {error}")))?,
            ),
            None => None,
        };
        let (policy_json, effective) = self
            .domain
            .throttle(checked_job_id(&request.job_id)?, at)
            .await?;
        Ok(Response::new(pb::GetThrottleResponse {
            policy_json,
            effective: Some(effective_to_proto(effective)),
        }))
    }

    async fn list_throttle_history(
        &self,
        request: Request<pb::ListThrottleHistoryRequest>,
    ) -> Result<Response<pb::ListThrottleHistoryResponse>, Status> {
        self.caller(&request, "ListThrottleHistory", Role::Viewer)?;
        let changes = self
            .domain
            .history(checked_job_id(&request.into_inner().job_id)?)
            .await?;
        Ok(Response::new(pb::ListThrottleHistoryResponse {
            changes: changes
                .into_iter()
                .filter(|change| change.is_throttle())
                .map(|change| pb::ThrottleChange {
                    at_unix_ms: change.at_unix_ms,
                    origin: change.origin,
                    summary: change.summary,
                    actor: change.actor,
                })
                .collect(),
        }))
    }

    async fn list_job_history(
        &self,
        request: Request<pb::ListJobHistoryRequest>,
    ) -> Result<Response<pb::ListJobHistoryResponse>, Status> {
        self.caller(&request, "ListJobHistory", Role::Viewer)?;
        let entries = self
            .domain
            .history(checked_job_id(&request.into_inner().job_id)?)
            .await?;
        Ok(Response::new(pb::ListJobHistoryResponse {
            entries: entries
                .into_iter()
                .map(|entry| pb::HistoryEntry {
                    at_unix_ms: entry.at_unix_ms,
                    origin: entry.origin,
                    actor: entry.actor,
                    action: entry.action,
                    summary: entry.summary,
                })
                .collect(),
        }))
    }

    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        // A dry run changes nothing: a viewer may plan.
        let needed = if request.get_ref().dry_run {
            Role::Viewer
        } else {
            Role::Operator
        };
        let caller = self.caller(&request, "SubmitJob", needed)?;
        let cluster = self.cluster("SubmitJob")?;
        let request = request.into_inner();
        let plan = cluster
            .submit(&request.spec_yaml, request.dry_run, &caller.identity)
            .await?;
        Ok(Response::new(plan_to_proto(plan)))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.caller(&request, "ListJobs", Role::Viewer)?;
        let jobs = self.cluster("ListJobs")?.list_jobs().await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(job_summary_to_proto).collect(),
        }))
    }

    type WatchJobStream = ReceiverStream<Result<pb::GetJobResponse, Status>>;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        self.caller(&request, "WatchJob", Role::Viewer)?;
        // Only a coordinator outlives its jobs; `ferryctl local` exits when its job ends,
        // which would break every watch at the moment it matters.
        self.cluster("WatchJob")?;
        let job_id = request.into_inner().job_id;
        checked_job_id(&job_id)?;
        // Read once before answering, so an unknown job or a standby refuses the RPC
        // itself (and a client moves on to another coordinator) instead of opening a
        // stream that fails at once.
        let first_status = self.domain.job_status(&job_id).await?;
        // One snapshot of slack: the feeder waits on a slow client rather than buffering.
        let (updates_tx, updates_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(feed_watch(
            Arc::clone(&self.domain),
            job_id,
            first_status,
            updates_tx,
        ));
        Ok(Response::new(ReceiverStream::new(updates_rx)))
    }

    async fn list_chunks(
        &self,
        request: Request<pb::ListChunksRequest>,
    ) -> Result<Response<pb::ListChunksResponse>, Status> {
        self.caller(&request, "ListChunks", Role::Viewer)?;
        let cluster = self.cluster("ListChunks")?;
        let request = request.into_inner();
        let (offset, limit) = chunk_page(&request.page_token, request.page_size)?;
        let filter = ChunkFilter {
            state: non_empty(request.state),
            table: non_empty(request.table),
        };
        let (chunks, more) = cluster
            .list_chunks(checked_job_id(&request.job_id)?, &filter, offset, limit)
            .await?;
        let unfiltered = filter.state.is_none() && filter.table.is_none();
        if offset > 0 && chunks.is_empty() && unfiltered {
            // An issued token always has a chunk after it (chunks are never removed; a
            // filtered page may empty as chunks change state).
            return Err(ControlError::BadPageToken(request.page_token).into());
        }
        let next_page_token = if more {
            (offset + chunks.len()).to_string()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListChunksResponse {
            chunks: chunks.into_iter().map(chunk_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let caller = self.caller(&request, "CancelJob", Role::Operator)?;
        let cluster = self.cluster("CancelJob")?;
        cluster
            .cancel(
                checked_job_id(&request.into_inner().job_id)?,
                &caller.identity,
            )
            .await?;
        Ok(Response::new(pb::CancelJobResponse {}))
    }

    async fn recopy_chunks(
        &self,
        request: Request<pb::RecopyChunksRequest>,
    ) -> Result<Response<pb::RecopyChunksResponse>, Status> {
        let caller = self.caller(&request, "RecopyChunks", Role::Operator)?;
        let cluster = self.cluster("RecopyChunks")?;
        let request = request.into_inner();
        let selector = recopy_selector(&request)?;
        let chunk_ids = cluster
            .recopy(checked_job_id(&request.job_id)?, selector, &caller.identity)
            .await?;
        Ok(Response::new(pb::RecopyChunksResponse { chunk_ids }))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        self.caller(&request, "ListWorkers", Role::Viewer)?;
        let workers = self.cluster("ListWorkers")?.list_workers().await?;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: workers.into_iter().map(worker_to_proto).collect(),
        }))
    }

    async fn drain_worker(
        &self,
        request: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::DrainWorkerResponse>, Status> {
        let caller = self.caller(&request, "DrainWorker", Role::Operator)?;
        let cluster = self.cluster("DrainWorker")?;
        cluster
            .drain(
                checked_worker_id(&request.into_inner().worker_id)?,
                &caller.identity,
            )
            .await?;
        Ok(Response::new(pb::DrainWorkerResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ferry_coordination::PolicyChange;

    use super::*;

    /// A job whose status walks through `statuses`, one per call, then stays at the last.
    #[derive(Default)]
    struct ScriptedJob {
        statuses: Mutex<Vec<JobStatusView>>,
    }

    impl ScriptedJob {
        fn new(mut statuses: Vec<JobStatusView>) -> Self {
            statuses.reverse();
            Self {
                statuses: Mutex::new(statuses),
            }
        }
    }

    #[tonic::async_trait]
    impl JobControl for ScriptedJob {
        async fn job_status(&self, job: &str) -> Result<JobStatusView, ControlError> {
            if job != "orders" {
                return Err(ControlError::UnknownJob(job.to_owned()));
            }
            let mut statuses = self.statuses.lock().expect("statuses");
            if statuses.len() > 1 {
                Ok(statuses.pop().expect("one left"))
            } else {
                Ok(statuses.last().cloned().unwrap_or_default())
            }
        }
        async fn pause(&self, _job: &str, _actor: &str) -> Result<EffectiveView, ControlError> {
            Ok(EffectiveView::default())
        }
        async fn resume(&self, _job: &str, _actor: &str) -> Result<EffectiveView, ControlError> {
            Ok(EffectiveView::default())
        }
        async fn update_throttle(
            &self,
            _job: &str,
            _update: ThrottleUpdate,
            _actor: &str,
        ) -> Result<(String, EffectiveView), ControlError> {
            Ok((String::new(), EffectiveView::default()))
        }
        async fn throttle(
            &self,
            _job: &str,
            _at: Option<jiff::Timestamp>,
        ) -> Result<(String, EffectiveView), ControlError> {
            Ok((String::new(), EffectiveView::default()))
        }
        async fn history(&self, _job: &str) -> Result<Vec<PolicyChange>, ControlError> {
            Ok(Vec::new())
        }
    }

    /// A cluster of 25 chunks that records what it was asked.
    #[derive(Default)]
    struct RecordingCluster {
        pages_asked: Mutex<Vec<(usize, usize)>>,
        recopied: Mutex<Vec<RecopySelector>>,
        standby: bool,
    }

    const NUM_CHUNKS: usize = 25;

    #[tonic::async_trait]
    impl ClusterControl for RecordingCluster {
        async fn submit(
            &self,
            _spec_yaml: &str,
            dry_run: bool,
            _actor: &str,
        ) -> Result<PlanView, ControlError> {
            if self.standby {
                return Err(ControlError::NotLeader(Some("http://10.0.0.7:7878".into())));
            }
            Ok(PlanView {
                job: "orders".into(),
                tables: vec![
                    crate::control::PlannedTableView {
                        chunks: 3,
                        estimated_rows: 300,
                        ..Default::default()
                    },
                    crate::control::PlannedTableView {
                        chunks: 2,
                        estimated_rows: 20,
                        ..Default::default()
                    },
                ],
                submitted: !dry_run,
            })
        }
        async fn list_jobs(&self) -> Result<Vec<JobSummaryView>, ControlError> {
            Ok(Vec::new())
        }
        async fn list_chunks(
            &self,
            _job: &str,
            _filter: &ChunkFilter,
            offset: usize,
            limit: usize,
        ) -> Result<(Vec<ChunkView>, bool), ControlError> {
            self.pages_asked
                .lock()
                .expect("pages")
                .push((offset, limit));
            let end = (offset + limit).min(NUM_CHUNKS);
            let chunks = (offset..end)
                .map(|id| ChunkView {
                    id: id as u32,
                    ..Default::default()
                })
                .collect();
            Ok((chunks, end < NUM_CHUNKS))
        }
        async fn cancel(&self, _job: &str, _actor: &str) -> Result<(), ControlError> {
            Ok(())
        }
        async fn recopy(
            &self,
            _job: &str,
            selector: RecopySelector,
            _actor: &str,
        ) -> Result<Vec<u32>, ControlError> {
            self.recopied.lock().expect("recopied").push(selector);
            Ok(vec![1])
        }
        async fn list_workers(&self) -> Result<Vec<WorkerView>, ControlError> {
            Ok(Vec::new())
        }
        async fn drain(&self, _worker: &str, _actor: &str) -> Result<(), ControlError> {
            Ok(())
        }
    }

    fn running(chunks_verified: u32) -> JobStatusView {
        JobStatusView {
            chunks_total: 4,
            chunks_verified,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn cluster_rpcs_are_refused_without_a_cluster() {
        let service = ControlService::new(Arc::new(ScriptedJob::new(vec![running(0)])));
        let status = service
            .list_jobs(Request::new(pb::ListJobsRequest {}))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert!(
            status
                .message()
                .contains("only a ferry coordinator offers ListJobs; `ferryctl local` does not"),
            "{}",
            status.message()
        );
        let status = service
            .watch_job(Request::new(pb::WatchJobRequest {
                job_id: "orders".into(),
            }))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }

    #[tokio::test]
    async fn list_chunks_pages_by_offset_until_the_last_page() {
        let cluster = Arc::new(RecordingCluster::default());
        let service = ControlService::with_cluster(
            Arc::new(ScriptedJob::new(vec![running(0)])),
            cluster.clone(),
        );
        let mut page_token = String::new();
        let mut ids = Vec::new();
        loop {
            let page = service
                .list_chunks(Request::new(pb::ListChunksRequest {
                    job_id: "orders".into(),
                    page_size: 10,
                    page_token: page_token.clone(),
                    ..Default::default()
                }))
                .await
                .expect("page")
                .into_inner();
            ids.extend(page.chunks.iter().map(|chunk| chunk.id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        assert_eq!(ids, (0..NUM_CHUNKS as u32).collect::<Vec<_>>());
        assert_eq!(
            *cluster.pages_asked.lock().expect("pages"),
            vec![(0, 10), (10, 10), (20, 10)]
        );

        for (page_size, expected_limit) in [(0, 1000), (50_000, 10_000)] {
            service
                .list_chunks(Request::new(pb::ListChunksRequest {
                    job_id: "orders".into(),
                    page_size,
                    ..Default::default()
                }))
                .await
                .expect("page");
            assert_eq!(
                cluster.pages_asked.lock().expect("pages").last(),
                Some(&(0, expected_limit))
            );
        }
        let status = service
            .list_chunks(Request::new(pb::ListChunksRequest {
                job_id: "orders".into(),
                page_token: "next".into(),
                ..Default::default()
            }))
            .await
            .expect_err("invalid token");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn recopy_takes_exactly_one_selector() {
        let cluster = Arc::new(RecordingCluster::default());
        let service = ControlService::with_cluster(
            Arc::new(ScriptedJob::new(vec![running(0)])),
            cluster.clone(),
        );
        for request in [
            pb::RecopyChunksRequest {
                job_id: "orders".into(),
                ..Default::default()
            },
            pb::RecopyChunksRequest {
                job_id: "orders".into(),
                chunk_ids: vec![1],
                state: "FAILED".into(),
                ..Default::default()
            },
        ] {
            let status = service
                .recopy_chunks(Request::new(request))
                .await
                .expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains("exactly one selector"));
        }
        service
            .recopy_chunks(Request::new(pb::RecopyChunksRequest {
                job_id: "orders".into(),
                state: "FAILED".into(),
                ..Default::default()
            }))
            .await
            .expect("recopied");
        assert_eq!(
            *cluster.recopied.lock().expect("recopied"),
            vec![RecopySelector::State("FAILED".into())]
        );
    }

    #[tokio::test]
    async fn submit_sums_the_plan_and_a_standby_names_the_leader() {
        let service = ControlService::with_cluster(
            Arc::new(ScriptedJob::new(vec![running(0)])),
            Arc::new(RecordingCluster::default()),
        );
        let plan = service
            .submit_job(Request::new(pb::SubmitJobRequest {
                spec_yaml: String::new(),
                dry_run: true,
            }))
            .await
            .expect("planned")
            .into_inner();
        assert_eq!((plan.chunks_total, plan.estimated_rows), (5, 320));
        assert!(!plan.submitted);

        let standby = ControlService::with_cluster(
            Arc::new(ScriptedJob::new(vec![running(0)])),
            Arc::new(RecordingCluster {
                standby: true,
                ..Default::default()
            }),
        );
        let status = standby
            .submit_job(Request::new(pb::SubmitJobRequest::default()))
            .await
            .expect_err("standby");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("standby"), "{}", status.message());
        assert_eq!(
            status
                .metadata()
                .get(LEADER_METADATA_KEY)
                .and_then(|value| value.to_str().ok()),
            Some("http://10.0.0.7:7878")
        );
    }

    #[tokio::test]
    async fn watch_sends_each_change_once_and_ends_after_the_final_state() {
        let done = JobStatusView {
            state: JobStateView::Done,
            ..running(4)
        };
        let service = ControlService::with_cluster(
            Arc::new(ScriptedJob::new(vec![
                running(0),
                running(0),
                running(2),
                done,
            ])),
            Arc::new(RecordingCluster::default()),
        );
        let mut updates_rx = service
            .watch_job(Request::new(pb::WatchJobRequest {
                job_id: "orders".into(),
            }))
            .await
            .expect("stream")
            .into_inner()
            .into_inner();
        let mut verified = Vec::new();
        let deadline = Duration::from_secs(10);
        while let Some(update) = tokio::time::timeout(deadline, updates_rx.recv())
            .await
            .expect("a snapshot or the end within 10 s")
        {
            verified.push(update.expect("snapshot").chunks_verified);
        }
        assert_eq!(
            verified,
            vec![0, 2, 4],
            "the unchanged second poll is not sent"
        );
    }

    #[tokio::test]
    async fn watch_of_an_unknown_job_is_refused_with_not_found() {
        let service = ControlService::with_cluster(
            Arc::new(ScriptedJob::new(vec![running(0)])),
            Arc::new(RecordingCluster::default()),
        );
        let status = service
            .watch_job(Request::new(pb::WatchJobRequest {
                job_id: "nope".into(),
            }))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::NotFound);
    }

    /// Answers with `statuses`, then fails as a coordinator that lost its leadership.
    struct DemotedJob {
        inner: ScriptedJob,
        calls_left: Mutex<usize>,
    }

    #[tonic::async_trait]
    impl JobControl for DemotedJob {
        async fn job_status(&self, job: &str) -> Result<JobStatusView, ControlError> {
            {
                let mut calls_left = self.calls_left.lock().expect("calls");
                if *calls_left == 0 {
                    return Err(ControlError::NotLeader(None));
                }
                *calls_left -= 1;
            }
            self.inner.job_status(job).await
        }
        async fn pause(&self, job: &str, actor: &str) -> Result<EffectiveView, ControlError> {
            self.inner.pause(job, actor).await
        }
        async fn resume(&self, job: &str, actor: &str) -> Result<EffectiveView, ControlError> {
            self.inner.resume(job, actor).await
        }
        async fn update_throttle(
            &self,
            job: &str,
            update: ThrottleUpdate,
            actor: &str,
        ) -> Result<(String, EffectiveView), ControlError> {
            self.inner.update_throttle(job, update, actor).await
        }
        async fn throttle(
            &self,
            job: &str,
            at: Option<jiff::Timestamp>,
        ) -> Result<(String, EffectiveView), ControlError> {
            self.inner.throttle(job, at).await
        }
        async fn history(&self, job: &str) -> Result<Vec<PolicyChange>, ControlError> {
            self.inner.history(job).await
        }
    }

    #[tokio::test]
    async fn watch_ends_with_the_domain_error_when_the_status_fails_later() {
        let service = ControlService::with_cluster(
            Arc::new(DemotedJob {
                inner: ScriptedJob::new(vec![running(0), running(1)]),
                calls_left: Mutex::new(2),
            }),
            Arc::new(RecordingCluster::default()),
        );
        let mut updates_rx = service
            .watch_job(Request::new(pb::WatchJobRequest {
                job_id: "orders".into(),
            }))
            .await
            .expect("stream")
            .into_inner()
            .into_inner();
        let mut items = Vec::new();
        while let Some(item) = tokio::time::timeout(Duration::from_secs(10), updates_rx.recv())
            .await
            .expect("an item or the end within 10 s")
        {
            items.push(item);
        }
        assert_eq!(items.len(), 3, "two snapshots, then the error: {items:?}");
        let error = items
            .pop()
            .expect("three")
            .expect_err("the last is the error");
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
    }
}
