//! `ferryctl local`: loads or plans the job on the local state file and runs it with an
//! in-process worker pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_connectors::{ConnectorError, Sink, Source, open_sink, open_source, parse_spec};
use ferry_coordination::{ChunkState, Coordination, CoordinationError, JobRecord, LocalStore};
use ferry_coordinator::pacer::{JobPacer, PacerError};
use ferry_coordinator::plan::{PlanError, plan_job};
use ferry_coordinator::scheduler::{
    JobEvent, Pacing, RunOutcome, SchedulerError, SchedulerOptions, run_job,
};
use ferry_model::execution::ChunkExecutor;
use ferry_model::ids::JobId;
use ferry_model::problems::Problems;
use ferry_model::spec::JobSpec;
use ferry_worker::runner::ChunkRunner;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::exit_code;

/// Why a local run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The spec file could not be read.
    #[error("cannot read spec {path}: {source}")]
    ReadSpec {
        /// The spec file.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The spec is invalid.
    #[error("invalid spec {path}:\n{errors}")]
    InvalidSpec {
        /// The spec file.
        path: String,
        /// Every problem found.
        errors: Problems,
    },
    /// The state file belongs to another spec.
    #[error(
        "state file {state} holds job {job:?} planned from a different spec (tables, chunking or \
         endpoints changed); resume with the original spec, or start over with another --state \
         (or delete the file)"
    )]
    SpecChanged {
        /// The state file.
        state: String,
        /// The job.
        job: String,
    },
    /// A connector failed before the run started.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The state file failed.
    #[error(transparent)]
    Store(#[from] CoordinationError),
    /// The throttle could not start.
    #[error(transparent)]
    Pacer(#[from] PacerError),
    /// The Control API could not listen.
    #[error("cannot serve the Control API on {addr}: {source}")]
    Serve {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The scheduler stopped on a store failure.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
}

impl LocalError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            LocalError::ReadSpec { .. }
            | LocalError::InvalidSpec { .. }
            | LocalError::SpecChanged { .. } => exit_code::INVALID_INPUT,
            LocalError::Plan(
                PlanError::TableNotFound { .. }
                | PlanError::NoTables { .. }
                | PlanError::TargetCollision { .. }
                | PlanError::UnknownColumnOverride { .. },
            ) => exit_code::INVALID_INPUT,
            _ => exit_code::RUNTIME_ERROR,
        }
    }
}

/// Reads and validates a spec file; relative paths in it are relative to its folder.
pub fn load_spec(path: &Path, env: &HashMap<String, String>) -> Result<JobSpec, LocalError> {
    let text = std::fs::read_to_string(path).map_err(|source| LocalError::ReadSpec {
        path: path.display().to_string(),
        source,
    })?;
    // Resolve the spec's folder to an absolute path, so that relative paths in the spec
    // mean the same files (and give the same fingerprint) whatever the current directory.
    let spec_dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base_dir = std::fs::canonicalize(spec_dir).unwrap_or_else(|_| spec_dir.to_path_buf());
    parse_spec(&text, &base_dir, env).map_err(|errors| LocalError::InvalidSpec {
        path: path.display().to_string(),
        errors,
    })
}

/// The default state file: `<spec folder>/<job name>.ferry-state.db`.
pub fn default_state_path(spec_path: &Path, spec: &JobSpec) -> PathBuf {
    let dir = spec_path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(format!("{}.ferry-state.db", spec.name))
}

/// A job ready to run: loaded from the store (resume) or planned and stored.
pub struct PreparedJob {
    /// The stored job.
    pub job: JobRecord,
    /// Whether it was found in the store (a resume).
    pub resumed: bool,
    /// Rows already verified before this run.
    pub rows_verified_before: u64,
    /// Chunks already verified before this run.
    pub chunks_verified_before: usize,
}

/// Loads the job from the store, or plans it (preparing target tables) and stores it.
pub async fn prepare_job(
    spec: &JobSpec,
    source: &dyn Source,
    sink: &dyn Sink,
    store: &dyn Coordination,
    state_label: &str,
) -> Result<PreparedJob, LocalError> {
    let job_id = JobId(spec.name.clone());
    if let Some((job, chunks)) = store.load_job(&job_id).await? {
        if job.fingerprint != spec.fingerprint() {
            return Err(LocalError::SpecChanged {
                state: state_label.to_string(),
                job: spec.name.clone(),
            });
        }
        // Running the job again is an operator's decision to retry what failed.
        let reset = store.reset_failed(&job.id).await?;
        if !reset.is_empty() {
            tracing::warn!(job = %job.id, chunks = ?reset, "retrying chunks that FAILED in an earlier run");
        }
        let verified: Vec<_> = chunks
            .iter()
            .filter(|chunk| chunk.state == ChunkState::Verified)
            .collect();
        return Ok(PreparedJob {
            rows_verified_before: verified.iter().map(|chunk| chunk.rows).sum(),
            chunks_verified_before: verified.len(),
            job,
            resumed: true,
        });
    }
    let plan = plan_job(spec, source, sink).await?;
    let job = JobRecord::new(spec, plan.tables);
    store.create_job(&job, &plan.chunks).await?;
    Ok(PreparedJob {
        job,
        resumed: false,
        rows_verified_before: 0,
        chunks_verified_before: 0,
    })
}

/// Everything a local run needs, opened.
pub struct LocalJob {
    /// The validated spec.
    pub spec: JobSpec,
    /// The source.
    pub source: Arc<dyn Source>,
    /// The target.
    pub sink: Arc<dyn Sink>,
    /// The state store.
    pub store: Arc<dyn Coordination>,
    /// A label for the state file in messages.
    pub state_label: String,
}

impl LocalJob {
    /// Opens the connectors and the state file named by a spec.
    pub async fn open(spec: JobSpec, state_path: &Path) -> Result<Self, LocalError> {
        let source = open_source(&spec.source).await?;
        let sink = open_sink(&spec.target).await?;
        let store = Arc::new(LocalStore::open(state_path)?);
        Ok(Self {
            spec,
            source,
            sink,
            store,
            state_label: state_path.display().to_string(),
        })
    }

    /// Loads the job from the state file, or plans it and prepares the target tables.
    pub async fn prepare(&self) -> Result<PreparedJob, LocalError> {
        prepare_job(
            &self.spec,
            self.source.as_ref(),
            self.sink.as_ref(),
            self.store.as_ref(),
            &self.state_label,
        )
        .await
    }

    /// Starts the job's pacer: its throttle policy (stored, or the spec's), load probes,
    /// the gate and admission the run obeys, and the operator controls.
    pub async fn start_pacer(
        &self,
        prepared: &PreparedJob,
        cancel: CancellationToken,
    ) -> Result<Arc<JobPacer>, LocalError> {
        Ok(JobPacer::start(
            prepared.job.id.clone(),
            self.spec.throttle.clone(),
            self.store.clone(),
            self.source.clone(),
            cancel,
        )
        .await?)
    }

    /// Runs a prepared job with `workers` in-process workers, using `executor` to run
    /// chunks (a [`ChunkRunner`] over this job's source and sink when `None`), paced by
    /// `pacer` (the spec's default concurrency, unthrottled, when `None`).
    pub async fn run(
        &self,
        prepared: &PreparedJob,
        workers: usize,
        executor: Option<Arc<dyn ChunkExecutor>>,
        pacer: Option<Arc<JobPacer>>,
        events: UnboundedSender<JobEvent>,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, LocalError> {
        let executor = executor
            .unwrap_or_else(|| Arc::new(ChunkRunner::new(self.source.clone(), self.sink.clone())));
        let options = SchedulerOptions::for_spec(&self.spec, workers);
        let pacing = match &pacer {
            Some(pacer) => pacer.pacing(),
            None => Pacing::fixed(self.spec.throttle.default_concurrency),
        };
        Ok(run_job(
            self.store.clone(),
            &prepared.job,
            executor,
            &options,
            pacing,
            events,
            cancel,
        )
        .await?)
    }
}

/// Serves the Control API for `pacer` on `addr` (port 0 picks a free port) until `cancel`;
/// returns the address it listens on.
pub async fn serve_control(
    addr: &str,
    pacer: Arc<JobPacer>,
    cancel: CancellationToken,
) -> Result<std::net::SocketAddr, LocalError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| LocalError::Serve {
            addr: addr.to_string(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| LocalError::Serve {
        addr: addr.to_string(),
        source,
    })?;
    let service = ferry_coordinator::service::control::ControlService::new(pacer).into_server();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if let Err(error) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
            .await
        {
            tracing::error!(%error, "control API stopped");
        }
    });
    Ok(local_addr)
}
