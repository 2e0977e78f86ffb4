//! A coordinator process's life as a library call: [`serve`] listens, connects to etcd,
//! campaigns and, while it leads, runs the jobs; the Control API and the gRPC health
//! service share one listener. `main.rs` only loads the configuration and maps signals
//! to `shutdown`, so tests and embedders start a whole coordinator in-process.
//!
//! Stopping (`shutdown`): readiness turns NOT_SERVING first, then the coordinator
//! resigns (a standby takes over at once), then the server stops after answering the
//! calls still open (at most [`SERVER_STOP_DEADLINE`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_coordination::ClusterRef;
use ferry_server::config::EtcdConnectError;
use ferry_server::health::{SERVER_STOP_DEADLINE, publish_health};
use ferry_server::process;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

use crate::cluster::runtime::{ClusterOptions, ClusterRuntime, CoordinatorRole};
use crate::config::CoordinatorConfig;
use crate::console::{Console, serve_console};
use crate::service::control::ControlService;

/// Why a coordinator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The Control API's listener could not be opened.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Listen {
        /// The setting that names it.
        key: &'static str,
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// etcd could not be reached at startup.
    #[error(transparent)]
    Etcd(#[from] EtcdConnectError),
    /// The Control API's security settings could not be used.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// The metrics port could not be opened.
    #[error(transparent)]
    Metrics(#[from] ferry_server::metrics_http::MetricsError),
    /// The web console could not start.
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    /// The Control API failed.
    #[error("the Control API failed: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// Runs a coordinator with `config` until `shutdown` (`env`: the environment `url_env`
/// names are looked up in; `base_dir`: where relative paths in specs start).
/// `on_listening` is told the bound address before anything else happens (port 0 picks
/// a free one).
pub async fn serve(
    config: CoordinatorConfig,
    env: HashMap<String, String>,
    base_dir: PathBuf,
    shutdown: CancellationToken,
    on_listening: impl FnOnce(&str, SocketAddr),
) -> Result<(), ServeError> {
    let listen_error = |source| ServeError::Listen {
        key: "server.listen",
        addr: config.server.listen.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    let mut secured = config.server.security().prepare(local)?;
    let mut builder = secured.server_builder()?;
    let health_listener_opt = match &config.server.health_listen {
        Some(addr) => {
            let health_error = |source| ServeError::Listen {
                key: "server.health_listen",
                addr: addr.clone(),
                source,
            };
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(health_error)?,
            )
        }
        None => None,
    };
    let advertise = config
        .server
        .advertise
        .clone()
        .unwrap_or_else(|| local.to_string());
    let name = config
        .name
        .clone()
        .unwrap_or_else(process::default_process_name);
    // Metrics first: what is described while connecting (etcd's) needs the recorder.
    let metrics_stop = CancellationToken::new();
    let _metrics_guard = metrics_stop.clone().drop_guard();
    if let Some(listen) = &config.metrics.listen {
        ferry_server::metrics_http::serve_metrics(listen, metrics_stop.clone()).await?;
    }
    let store: ClusterRef = Arc::new(config.etcd.connect().await?);
    let runtime = ClusterRuntime::new(
        store,
        ClusterOptions {
            id: name.clone(),
            address: advertise.clone(),
            lease_ttl: config.lease.ttl,
            worker_ttl: config.lease.worker_ttl,
            grace: config.lease.grace,
            compact_interval: config.history.compact_interval,
            keep_revisions: config.history.keep_revisions,
            env,
            base_dir,
            database_caps: config.database_caps(),
        },
    );
    let console_stop = CancellationToken::new();
    let _console_guard = console_stop.clone().drop_guard();
    if let Some(listen) = &config.console.listen {
        let console = Console::new(runtime.clone(), runtime.clone(), secured.access.clone());
        serve_console(
            listen,
            "console.listen",
            console,
            config.server.insecure,
            console_stop.clone(),
        )
        .await?;
    }
    let control = ControlService::with_cluster(runtime.clone(), runtime.clone() as Arc<_>)
        .with_access(secured.access)
        .into_server();
    // Ready while the coordinator holds its etcd lease, as leader or standby (a standby
    // answers reads and points writers to the leader).
    let (health, health_service) = publish_health(
        <ferry_proto::v1::control_server::ControlServer<ControlService> as NamedService>::NAME,
        runtime.watch_role(),
        |role| matches!(role, CoordinatorRole::Standby | CoordinatorRole::Leading),
    )
    .await;
    // Probes see NOT_SERVING before anything stops; then the runtime resigns.
    let resign = CancellationToken::new();
    {
        let (shutdown, resign) = (shutdown.clone(), resign.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            health.stop_serving().await;
            resign.cancel();
        });
    }
    // The server outlives the resignation, so that clients are answered (and pointed to
    // the new leader) until this coordinator is out of the election.
    let server_stop = CancellationToken::new();
    // Probes that speak no TLS (Kubernetes' gRPC probes) ask a plaintext port that
    // serves the health service alone.
    if let Some(health_listener) = health_listener_opt {
        let health_service = health_service.clone();
        let server_stop = server_stop.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(health_listener);
            if let Err(error) = tonic::transport::Server::builder()
                .add_service(health_service)
                .serve_with_incoming_shutdown(incoming, server_stop.cancelled_owned())
                .await
            {
                tracing::error!(%error, "the health port stopped");
            }
        });
    }
    let server = {
        let server_stop = server_stop.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            builder
                .add_service(health_service)
                .add_service(control)
                .serve_with_incoming_shutdown(incoming, server_stop.cancelled_owned())
                .await
        })
    };
    tracing::info!(coordinator = %name, listen = %local, advertise = %advertise, "{}", secured.description);
    on_listening(&name, local);
    runtime.run(resign.clone()).await;
    resign.cancel();
    server_stop.cancel();
    match process::join_within(server, SERVER_STOP_DEADLINE).await {
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(error))) => Err(ServeError::Server(error)),
        Some(Err(error)) => {
            tracing::error!(%error, "the Control API task failed");
            Ok(())
        }
        None => {
            tracing::warn!("calls still open after {SERVER_STOP_DEADLINE:?}; leaving them");
            Ok(())
        }
    }
}
