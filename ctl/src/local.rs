//! `ferryctl local`: an in-process cluster. One coordinator runtime and N worker agents
//! run in this process on the in-process coordination store ([`InProcessCluster`] over
//! the state file), exactly the code a cluster runs; only the backend differs. The job
//! is prepared with the shared lifecycle ([`ferry_coordinator::job`]), submitted to the
//! store, run by the runtime's leader over the agents, and followed through
//! [`ClusterRuntime::observe`] for the progress display and the report. The whole
//! Control API answers on `--control-addr`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_connectors::{
    ConnectorError, OpenedJob, PreparedOpener, Sink, Source, SpecOpener, open_sink, open_source,
    parse_spec,
};
use ferry_coordination::cluster::JobPhase;
use ferry_coordination::{ClusterProtocol, CoordinationError, InProcessCluster};
use ferry_coordinator::cluster::runtime::{ClusterOptions, ClusterRuntime, JobObserver};
use ferry_coordinator::console::{Console, serve_console};
pub use ferry_coordinator::job::PreparedJob;
use ferry_coordinator::job::{JobError, Resume, prepare_job};
use ferry_coordinator::plan::PlanError;
use ferry_coordinator::scheduler::{JobEvent, RunOutcome};
use ferry_coordinator::security::ControlSecurity;
use ferry_coordinator::service::control::ControlService;
use ferry_model::ids::{JobId, WorkerId};
use ferry_model::problems::Problems;
use ferry_model::spec::JobSpec;
use ferry_worker::agent::{AgentOptions, JobContexts, WorkerState, run_agent_with};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinSet;
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
    /// The spec file is larger than any spec (a wrong file, or a hostile one).
    #[error(
        "spec {path} is {bytes} bytes; ferry reads specs of at most {max} bytes \
         (name tables by patterns in tables.include): is this the right file?",
        max = ferry_model::spec::MAX_SPEC_BYTES
    )]
    SpecTooLarge {
        /// The spec file.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// The spec file is not UTF-8 text.
    #[error(
        "spec {path} is not UTF-8 text (invalid byte at offset {offset}): a job spec is a \
         YAML text file; is this the right file?"
    )]
    SpecNotText {
        /// The spec file.
        path: String,
        /// Where the first invalid byte is.
        offset: usize,
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
    /// A stored job cannot go on: its source changed, or cannot be checked now.
    #[error("{0}")]
    Prepare(String),
    /// The Control API could not listen.
    #[error("cannot serve the Control API on {addr}: {source}")]
    Serve {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The web console could not start.
    #[error(transparent)]
    Console(#[from] ferry_coordinator::console::ConsoleError),
    /// The Control API's security settings could not be used (exit 2).
    #[error(transparent)]
    Security(#[from] ferry_coordinator::security::SecurityError),
    /// The run could not go on (the job's connectors or its store failed).
    #[error("job {job} stopped: {message}")]
    Run {
        /// The job.
        job: String,
        /// Why.
        message: String,
    },
}

impl LocalError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            LocalError::ReadSpec { .. }
            | LocalError::SpecTooLarge { .. }
            | LocalError::SpecNotText { .. }
            | LocalError::InvalidSpec { .. }
            | LocalError::SpecChanged { .. }
            | LocalError::Security(_)
            | LocalError::Console(_) => exit_code::INVALID_INPUT,
            LocalError::Plan(
                PlanError::TableNotFound { .. }
                | PlanError::NoTables { .. }
                | PlanError::TargetCollision { .. }
                | PlanError::UnknownColumnOverride { .. }
                | PlanError::UnknownSplitTable { .. }
                | PlanError::HashSplitRefused { .. }
                | PlanError::Snapshot { .. },
            ) => exit_code::INVALID_INPUT,
            _ => exit_code::RUNTIME_ERROR,
        }
    }
}

/// Reads a spec file's text: refused when larger than any spec
/// ([`ferry_model::spec::MAX_SPEC_BYTES`], checked before reading) or not UTF-8.
pub fn read_spec_text(path: &Path) -> Result<String, LocalError> {
    let read_error = |source| LocalError::ReadSpec {
        path: path.display().to_string(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(read_error)?.len();
    if bytes > ferry_model::spec::MAX_SPEC_BYTES as u64 {
        return Err(LocalError::SpecTooLarge {
            path: path.display().to_string(),
            bytes,
        });
    }
    let raw = std::fs::read(path).map_err(read_error)?;
    String::from_utf8(raw).map_err(|error| LocalError::SpecNotText {
        path: path.display().to_string(),
        offset: error.utf8_error().valid_up_to(),
    })
}

/// Reads and validates a spec file; relative paths in it are relative to its folder.
pub fn load_spec(path: &Path, env: &HashMap<String, String>) -> Result<JobSpec, LocalError> {
    let text = read_spec_text(path)?;
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

/// Everything a local run needs, opened.
pub struct LocalJob {
    /// The validated spec.
    pub spec: JobSpec,
    /// The spec's text, stored with the job (informational: this process runs the job
    /// with the spec and connectors opened here).
    pub spec_text: String,
    /// The source.
    pub source: Arc<dyn Source>,
    /// The target.
    pub sink: Arc<dyn Sink>,
    /// The coordination store: the state file, and the cluster protocol in memory.
    pub store: InProcessCluster,
    /// A label for the state file in messages.
    pub state_label: String,
}

/// How a local run is set up beyond its spec.
#[derive(Clone, Debug)]
pub struct LocalRunOptions {
    /// Worker agents (one chunk each at a time).
    pub workers: usize,
    /// Where the Control API listens (`None`: not served).
    pub control_addr: Option<String>,
    /// Who may reach and call the Control API (default: loopback only, no authentication).
    pub security: ControlSecurity,
    /// How often each agent reports a running chunk's progress.
    pub progress_interval: Duration,
    /// Where the web console listens (`None`: not served).
    pub console_addr: Option<String>,
    /// Keep the console open after the run ends (until the process ends).
    pub console_stay: bool,
    /// Chunks in flight at most per database identity (`host:port/database`), across
    /// the jobs the runtime runs (`--endpoint-cap`).
    pub database_caps: HashMap<String, u32>,
}

impl LocalRunOptions {
    /// `workers` agents, no Control API, progress five times a second.
    pub fn workers(workers: usize) -> Self {
        Self {
            workers,
            control_addr: None,
            security: ControlSecurity::default(),
            progress_interval: Duration::from_millis(200),
            console_addr: None,
            console_stay: false,
            database_caps: HashMap::new(),
        }
    }
}

impl LocalJob {
    /// Opens the connectors and the state file named by a spec.
    pub async fn open(spec: JobSpec, state_path: &Path) -> Result<Self, LocalError> {
        let source = open_source(&spec.source).await?;
        let sink = open_sink(&spec.target).await?;
        let store = InProcessCluster::open(state_path)?;
        Ok(Self {
            spec_text: format!("# job {} run by ferryctl local\n", spec.name),
            spec,
            source,
            sink,
            store,
            state_label: state_path.display().to_string(),
        })
    }

    /// Loads the job from the state file (retrying its FAILED chunks), or plans it and
    /// prepares the target tables.
    pub async fn prepare(&self) -> Result<PreparedJob, LocalError> {
        prepare_job(
            &self.spec,
            self.source.as_ref(),
            self.sink.as_ref(),
            &self.store,
            Resume::RetryFailed,
        )
        .await
        .map_err(|error| match error {
            JobError::SpecChanged { job } => LocalError::SpecChanged {
                state: self.state_label.clone(),
                job,
            },
            JobError::Plan(error) => LocalError::Plan(error),
            JobError::Store(error) => LocalError::Store(error),
            other @ (JobError::SourceChanged { .. }
            | JobError::TargetChanged { .. }
            | JobError::SourceUnavailable { .. }) => LocalError::Prepare(other.to_string()),
        })
    }

    /// Starts the in-process cluster on a prepared job: submits it (or marks it
    /// RUNNING again), starts the coordinator runtime, serves the Control API when
    /// asked, and starts the worker agents. `cancel` stops the run: the agents stop
    /// first (running chunks roll back), then the coordinator.
    pub async fn start(
        &self,
        prepared: &PreparedJob,
        options: &LocalRunOptions,
        cancel: CancellationToken,
    ) -> Result<LocalRun, LocalError> {
        let job = prepared.job.id.clone();
        match self.store.cluster_job(&job).await? {
            None => self.store.submit_job_spec(&job, &self.spec_text).await?,
            Some(_) => {
                self.store
                    .set_job_phase(&job, JobPhase::Running, "")
                    .await?
            }
        }
        let env: HashMap<String, String> = std::env::vars().collect();
        let base_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let opener = Arc::new(PreparedOpener {
            job: job.clone(),
            opened: OpenedJob {
                spec: self.spec.clone(),
                source: self.source.clone(),
                sink: self.sink.clone(),
            },
            fallback: Arc::new(SpecOpener {
                env: env.clone(),
                base_dir: base_dir.clone(),
            }),
        });
        let store: ferry_coordination::ClusterRef = Arc::new(self.store.clone());
        let listener = match &options.control_addr {
            Some(addr) => Some(bind_control(addr).await?),
            None => None,
        };
        let control_addr = listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok());
        let mut secured_opt = match control_addr {
            Some(addr) => {
                let mut secured = options.security.prepare(addr)?;
                let builder = secured.server_builder()?;
                Some((builder, secured))
            }
            None => None,
        };
        let runtime = ClusterRuntime::with_opener(
            store.clone(),
            ClusterOptions {
                id: "local".into(),
                address: control_addr.map_or_else(|| "in-process".into(), |addr| addr.to_string()),
                lease_ttl: LOCAL_TTL,
                worker_ttl: LOCAL_TTL,
                grace: LOCAL_GRACE,
                compact_interval: Duration::ZERO,
                keep_revisions: 0,
                env: env.clone(),
                base_dir: base_dir.clone(),
                database_caps: options.database_caps.clone(),
            },
            opener.clone(),
        );
        let observer = runtime.observe(&job);
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        {
            let runtime = runtime.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { runtime.run(shutdown).await });
        }
        let server_stop = CancellationToken::new();
        let console_stop = CancellationToken::new();
        let console_addr = match &options.console_addr {
            Some(addr) => {
                let access = match &secured_opt {
                    Some((_, secured)) => secured.access.clone(),
                    None => options.security.prepare(LOOPBACK_ANY_PORT)?.access,
                };
                let console = Console::new(runtime.clone(), runtime.clone(), access);
                let bound = serve_console(
                    addr,
                    "--console-addr",
                    console,
                    options.security.insecure,
                    console_stop.clone(),
                )
                .await?;
                Some(bound)
            }
            None => None,
        };
        let mut server = None;
        if let (Some(listener), Some((mut builder, secured))) = (listener, secured_opt.take()) {
            tracing::info!("{}", secured.description);
            let service = ControlService::with_cluster(runtime.clone(), runtime.clone() as Arc<_>)
                .with_access(secured.access)
                .into_server();
            let server_stop = server_stop.clone();
            server = Some(tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                if let Err(error) = builder
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, server_stop.cancelled_owned())
                    .await
                {
                    tracing::error!(%error, "control API stopped");
                }
            }));
        }
        let drain = CancellationToken::new();
        // A child of `cancel`: Ctrl-C reaches every running attempt at once, so none
        // reports after the stop (an attempt that committed stays in flight and is
        // re-copied by the next run).
        let kill = cancel.child_token();
        let contexts = JobContexts::default();
        let mut agents = JoinSet::new();
        for index in 1..=options.workers.max(1) {
            let agent = AgentOptions {
                id: WorkerId(format!("local-{index}")),
                slots: 1,
                ttl: LOCAL_TTL,
                drain_timeout: Duration::from_secs(30),
                env: env.clone(),
                base_dir: base_dir.clone(),
                host: ferry_server::process::host_name(),
                progress_interval: options.progress_interval,
            };
            let (state, _) = tokio::sync::watch::channel(WorkerState::Registering);
            agents.spawn(run_agent_with(
                store.clone(),
                agent,
                opener.clone(),
                contexts.clone(),
                // Its own: `ferryctl drain local-2` drains that agent only.
                drain.child_token(),
                kill.clone(),
                state,
            ));
        }
        // Ctrl-C: the agents stop at once (running chunks roll back and stay in flight
        // for the next run), then the coordinator ends its term; the observer then gets
        // the interrupted run.
        let agents_done = CancellationToken::new();
        {
            let agents_done = agents_done.clone();
            tokio::spawn(async move {
                while agents.join_next().await.is_some() {}
                agents_done.cancel();
            });
        }
        let finished = CancellationToken::new();
        {
            let (kill, shutdown) = (kill.clone(), shutdown.clone());
            let (agents_done, finished) = (agents_done.clone(), finished.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = finished.cancelled() => return,
                }
                kill.cancel();
                agents_done.cancelled().await;
                shutdown.cancel();
            });
        }
        Ok(LocalRun {
            runtime,
            control_addr,
            console_addr,
            console_stop: (!options.console_stay).then_some(console_stop),
            job,
            observer,
            requeued_at_open: self.store.requeued_at_open(&prepared.job.id),
            shutdown,
            drain,
            kill,
            agents_done,
            finished,
            server_stop,
            server,
            tasks,
        })
    }

    /// Runs a prepared job to its end (or until `cancel`) with `options.workers` agents,
    /// sending the scheduler's events to `events`.
    pub async fn run(
        &self,
        prepared: &PreparedJob,
        options: &LocalRunOptions,
        events: UnboundedSender<JobEvent>,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, LocalError> {
        let mut run = self.start(prepared, options, cancel).await?;
        let mut receiver = run.take_events();
        let forward = tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                let _ = events.send(event);
            }
        });
        let outcome = run.finish().await;
        forward.abort();
        outcome
    }
}

/// Where the tokens are loaded for a console served without a Control API (the address
/// only decides the loopback rule, which the console checks on its own address).
const LOOPBACK_ANY_PORT: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Leases in one process are renewed by the process itself: the TTL only matters for
/// a lease whose keep-alive stopped.
const LOCAL_TTL: Duration = Duration::from_secs(10);

/// How long the leader waits before re-copying the chunk of an agent that stopped.
const LOCAL_GRACE: Duration = Duration::from_secs(2);

/// How long the agents get to drain after the job ended before they are stopped.
const AGENT_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// A local run in progress.
pub struct LocalRun {
    /// The coordinator runtime: what the Control API serves (operator controls, status).
    pub runtime: Arc<ClusterRuntime>,
    /// Where the Control API listens, when served.
    pub control_addr: Option<std::net::SocketAddr>,
    /// Where the web console listens, when served.
    pub console_addr: Option<std::net::SocketAddr>,
    /// Stops the console when the run is over (`None`: it stays open).
    console_stop: Option<CancellationToken>,
    job: JobId,
    observer: JobObserver,
    requeued_at_open: Vec<ferry_model::ids::ChunkId>,
    shutdown: CancellationToken,
    drain: CancellationToken,
    kill: CancellationToken,
    /// Fired once every agent has returned.
    agents_done: CancellationToken,
    /// Fired when the run is over (ends the Ctrl-C watcher).
    finished: CancellationToken,
    server_stop: CancellationToken,
    /// The Control API, when served.
    server: Option<tokio::task::JoinHandle<()>>,
    tasks: JoinSet<()>,
}

impl LocalRun {
    /// The job's scheduler events (once; later calls get a closed channel).
    pub fn take_events(&mut self) -> UnboundedReceiver<JobEvent> {
        let (_, closed) = tokio::sync::mpsc::unbounded_channel();
        std::mem::replace(&mut self.observer.events, closed)
    }

    /// Waits for the job's end (or the interrupted run after `cancel`), then stops the
    /// agents, the coordinator and the Control API.
    pub async fn finish(mut self) -> Result<RunOutcome, LocalError> {
        let outcome = (&mut self.observer.outcome).await;
        self.finished.cancel();
        // The agents first (nothing runs by now; a drain that hangs is cut short), then
        // the coordinator's term, then the Control API.
        self.drain.cancel();
        if tokio::time::timeout(AGENT_STOP_DEADLINE, self.agents_done.cancelled())
            .await
            .is_err()
        {
            self.kill.cancel();
            self.agents_done.cancelled().await;
        }
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        // Open calls (a `ferryctl watch` seeing the job end) are answered first.
        self.server_stop.cancel();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(ferry_server::health::SERVER_STOP_DEADLINE, server).await;
        }
        if let Some(console_stop) = &self.console_stop {
            console_stop.cancel();
        }
        let job = self.job.0.clone();
        let mut outcome = match outcome {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(message)) => return Err(LocalError::Run { job, message }),
            Err(_) => {
                return Err(LocalError::Run {
                    job,
                    message: "the coordinator stopped without an outcome".into(),
                });
            }
        };
        for chunk in self.requeued_at_open {
            if !outcome.requeued.contains(&chunk) {
                outcome.requeued.push(chunk);
            }
        }
        Ok(outcome)
    }
}

/// Binds the Control API's listener on `addr` (port 0 picks a free port).
async fn bind_control(addr: &str) -> Result<tokio::net::TcpListener, LocalError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| LocalError::Serve {
            addr: addr.to_string(),
            source,
        })
}
