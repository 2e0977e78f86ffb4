//! A worker process's life as a library call: [`serve`] connects to etcd, serves the
//! optional gRPC health service and runs the agent until it has drained (after `drain`)
//! or `kill` fires. `main.rs` only loads the configuration and maps signals to the two
//! tokens, so tests and embedders start a whole worker in-process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_coordination::ClusterRef;
use ferry_model::ids::WorkerId;
use ferry_server::config::EtcdConnectError;
use ferry_server::health::{
    HealthPublisher, SERVER_STOP_DEADLINE, WORKER_READINESS, publish_health,
};
use ferry_server::process;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::agent::{AgentError, AgentOptions, WorkerState, run_agent};
use crate::config::WorkerConfig;

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The health listener could not be opened.
    #[error("cannot listen on {addr} (health.listen): {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// etcd could not be reached at startup.
    #[error(transparent)]
    Etcd(#[from] EtcdConnectError),
    /// The metrics port could not be opened.
    #[error(transparent)]
    Metrics(#[from] ferry_server::metrics_http::MetricsError),
    /// The agent stopped on an error etcd gave for good.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// Runs a worker with `config` (`env`: the environment `url_env` names are looked up
/// in; `base_dir`: where relative paths in specs start) until it has drained after
/// `drain` fired, or `kill` fired.
pub async fn serve(
    config: WorkerConfig,
    env: HashMap<String, String>,
    base_dir: PathBuf,
    drain: CancellationToken,
    kill: CancellationToken,
) -> Result<(), ServeError> {
    // One budget for every slot of this process, set before any chunk runs.
    ferry_model::memory::configure(config.memory_budget_mb << 20);
    let (state_tx, state_rx) = watch::channel(WorkerState::Registering);
    let metrics_stop = CancellationToken::new();
    let _metrics_guard = metrics_stop.clone().drop_guard();
    if let Some(listen) = &config.metrics.listen {
        ferry_server::metrics_http::serve_metrics(listen, metrics_stop.clone()).await?;
    }
    let health = match &config.health.listen {
        Some(listen) => Some(HealthServer::start(listen, state_rx).await?),
        None => None,
    };
    let name = config
        .name
        .clone()
        .unwrap_or_else(process::default_process_name);
    let store: ClusterRef = Arc::new(config.etcd.connect().await?);
    let options = AgentOptions {
        id: WorkerId(name),
        slots: config.slots,
        ttl: config.lease.ttl,
        drain_timeout: config.drain_timeout,
        env,
        base_dir,
        host: process::host_name(),
        progress_interval: PROGRESS_INTERVAL,
    };
    let outcome = run_agent(store, options, drain, kill, state_tx).await;
    if let Some(health) = health {
        health.stop().await;
    }
    Ok(outcome?)
}

/// How often a running chunk's progress goes to etcd (one small write per attempt).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The worker's gRPC health service on its own listener: `""` SERVING until the worker
/// exits (a draining worker is alive: a liveness probe must not kill it mid-drain),
/// [`WORKER_READINESS`] while registered and not draining.
struct HealthServer {
    publisher: HealthPublisher,
    stop: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl HealthServer {
    async fn start(listen: &str, state: watch::Receiver<WorkerState>) -> Result<Self, ServeError> {
        let listen_error = |source| ServeError::Listen {
            addr: listen.to_owned(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(listen_error)?;
        let local = listener.local_addr().map_err(listen_error)?;
        let (publisher, service) = publish_health(WORKER_READINESS, state, |state| {
            *state == WorkerState::Ready
        })
        .await;
        let stop = CancellationToken::new();
        let server = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        stop.cancelled_owned(),
                    )
                    .await
            })
        };
        tracing::info!(listen = %local, "health service listening");
        Ok(HealthServer {
            publisher,
            stop,
            server,
        })
    }

    /// NOT_SERVING first, then the server stops.
    async fn stop(self) {
        self.publisher.stop_serving().await;
        self.stop.cancel();
        match process::join_within(self.server, SERVER_STOP_DEADLINE).await {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(error))) => tracing::warn!(%error, "the health service failed"),
            Some(Err(error)) => tracing::warn!(%error, "the health service task failed"),
            None => tracing::warn!("health calls still open at exit; leaving them"),
        }
    }
}
