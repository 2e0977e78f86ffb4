//! `ferry-coordinator`: plans jobs and assigns their chunks to workers; one of several
//! replicas leads (etcd election), the others stand by and answer reads. Settings come
//! in layers (defaults < `--config` file < `FERRY_COORDINATOR__*` environment < flags,
//! see `ferry_coordinator::config`). The Control API and the gRPC health service share
//! one listener.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use ferry_coordinator::cluster::runtime::{ClusterOptions, ClusterRuntime, CoordinatorRole};
use ferry_coordinator::config::{CoordinatorArgs, CoordinatorConfig, RETIRED_ENV};
use ferry_coordinator::service::control::ControlService;
use ferry_server::config::{self, for_log};
use ferry_server::health::{SERVER_STOP_DEADLINE, publish_health};
use ferry_server::process;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

fn main() -> std::process::ExitCode {
    let args = CoordinatorArgs::parse();
    process::run_binary("ferry-coordinator", || run(args))
}

async fn run(args: CoordinatorArgs) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    config::warn_retired_variables(&env, RETIRED_ENV);
    let config = CoordinatorConfig::load(&args, &env)?;
    tracing::debug!(config = %for_log(&config), "effective configuration");
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let local = listener
        .local_addr()
        .context("cannot read the listen address")?;
    let advertise = config
        .server
        .advertise
        .clone()
        .unwrap_or_else(|| local.to_string());
    let name = config
        .name
        .clone()
        .unwrap_or_else(process::default_process_name);
    let store: ferry_coordination::ClusterRef = std::sync::Arc::new(config.etcd.connect().await?);
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
            base_dir: std::env::current_dir().context("cannot read the current directory")?,
        },
    );
    let control =
        ControlService::with_cluster(runtime.clone(), runtime.clone() as Arc<_>).into_server();
    // Ready while the coordinator holds its etcd lease, as leader or standby (a standby
    // answers reads and points writers to the leader).
    let (health, health_service) = publish_health(
        <ferry_proto::v1::control_server::ControlServer<ControlService> as NamedService>::NAME,
        runtime.watch_role(),
        |role| matches!(role, CoordinatorRole::Standby | CoordinatorRole::Leading),
    )
    .await;
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            process::stop_signal().await;
            tracing::info!(
                "signal received: resigning and stopping (a second signal exits at once)"
            );
            // Probes see NOT_SERVING before anything stops.
            health.stop_serving().await;
            shutdown.cancel();
            // A second signal: leave without waiting for the resignation or open calls
            // (the lease then expires by itself and a standby takes over after its TTL).
            process::stop_signal().await;
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        });
    }
    // The server outlives the resignation, so that clients are answered (and pointed to
    // the new leader) until this coordinator is out of the election.
    let server_stop = CancellationToken::new();
    let server = {
        let server_stop = server_stop.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(control)
                .serve_with_incoming_shutdown(incoming, server_stop.cancelled_owned())
                .await
        })
    };
    tracing::info!(coordinator = %name, listen = %local, advertise = %advertise, "Control API listening");
    // Printed for scripts and tests that start a coordinator on port 0.
    println!("ferry-coordinator {name} listening on {local}");
    runtime.run(shutdown.clone()).await;
    shutdown.cancel();
    server_stop.cancel();
    match process::join_within(server, SERVER_STOP_DEADLINE).await {
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(error))) => Err(error).context("the Control API failed"),
        Some(Err(error)) => Err(error).context("the Control API task failed"),
        None => {
            tracing::warn!("calls still open after {SERVER_STOP_DEADLINE:?}; leaving them");
            Ok(())
        }
    }
}
