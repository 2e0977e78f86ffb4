//! `ferry-worker`: a stateless worker of a ferry cluster. Settings come in layers
//! (defaults < `--config` file < `FERRY_WORKER__*` environment < flags, see
//! `ferry_worker::config`). With `health.listen` set it serves the gRPC health service.

use std::collections::HashMap;

use anyhow::Context;
use clap::Parser;
use ferry_model::ids::WorkerId;
use ferry_server::config::{self, for_log};
use ferry_server::health::{
    HealthPublisher, SERVER_STOP_DEADLINE, WORKER_READINESS, publish_health,
};
use ferry_server::process;
use ferry_worker::agent::{AgentOptions, WorkerState, run_agent};
use ferry_worker::config::{RETIRED_ENV, WorkerArgs, WorkerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    let args = WorkerArgs::parse();
    process::run_binary("ferry-worker", || run(args))
}

async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    config::warn_retired_variables(&env, RETIRED_ENV);
    let config = WorkerConfig::load(&args, &env)?;
    tracing::debug!(config = %for_log(&config), "effective configuration");
    let (state_tx, state_rx) = watch::channel(WorkerState::Registering);
    let health = match &config.health.listen {
        Some(listen) => Some(HealthServer::start(listen, state_rx).await?),
        None => None,
    };
    let name = config
        .name
        .clone()
        .unwrap_or_else(process::default_process_name);
    let store: ferry_coordination::ClusterRef = std::sync::Arc::new(config.etcd.connect().await?);
    let drain = CancellationToken::new();
    let kill = CancellationToken::new();
    {
        let drain = drain.clone();
        let kill = kill.clone();
        tokio::spawn(async move {
            process::stop_signal().await;
            tracing::info!("signal received: draining (a second signal stops at once)");
            drain.cancel();
            process::stop_signal().await;
            kill.cancel();
        });
    }
    let options = AgentOptions {
        id: WorkerId(name),
        slots: config.slots,
        ttl: config.lease.ttl,
        drain_timeout: config.drain_timeout,
        env,
        base_dir: std::env::current_dir().context("cannot read the current directory")?,
        host: process::host_name(),
        progress_interval: std::time::Duration::from_secs(1),
    };
    let outcome = run_agent(store, options, drain, kill, state_tx).await;
    if let Some(health) = health {
        health.stop().await;
    }
    outcome?;
    Ok(())
}

/// The worker's gRPC health service on its own listener: `""` SERVING until the worker
/// exits (a draining worker is alive: a liveness probe must not kill it mid-drain),
/// [`WORKER_READINESS`] while registered and not draining.
struct HealthServer {
    publisher: HealthPublisher,
    stop: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl HealthServer {
    async fn start(listen: &str, state: watch::Receiver<WorkerState>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (health.listen)"))?;
        let local = listener
            .local_addr()
            .context("cannot read the health listen address")?;
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
