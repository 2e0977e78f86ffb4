//! `ferry-coordinator`: plans jobs and assigns their chunks to workers; one of several
//! replicas leads (etcd election), the others stand by and answer reads. Settings come
//! from flags, or from the environment (`FERRY_*`, named under each flag in `--help`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ferry_common::coordination::keys::KeyLayout;
use ferry_common::coordination::{EtcdStore, EtcdStoreOptions};
use ferry_common::process;
use ferry_coordinator::cluster::runtime::{ClusterOptions, ClusterRuntime};
use ferry_coordinator::service::control::ControlService;
use tokio_util::sync::CancellationToken;

/// A ferry coordinator.
#[derive(Debug, Parser)]
#[command(name = "ferry-coordinator", version)]
struct Args {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "FERRY_ETCD_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    etcd_endpoints: Vec<String>,
    /// Cluster name: the etcd prefix is /ferry/{cluster}/v1.
    #[arg(long, env = "FERRY_CLUSTER", default_value = "default")]
    cluster: String,
    /// Where the Control API listens.
    #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:7979")]
    listen: String,
    /// The address other processes reach this coordinator at (default: --listen).
    #[arg(long, env = "FERRY_ADVERTISE")]
    advertise: Option<String>,
    /// This coordinator's name (default: host-pid).
    #[arg(long, env = "FERRY_COORDINATOR_NAME")]
    name: Option<String>,
    /// The coordinator's lease TTL in seconds: a standby takes over this long after the
    /// leader dies.
    #[arg(long, env = "FERRY_LEASE_TTL", default_value_t = 10)]
    lease_ttl: u64,
    /// The workers' lease TTL in seconds (as given to the workers).
    #[arg(long, env = "FERRY_WORKER_TTL", default_value_t = 10)]
    worker_ttl: u64,
    /// Seconds to wait after a worker's lease vanished before its chunks are reassigned.
    #[arg(long, env = "FERRY_GRACE", default_value_t = 2)]
    grace: u64,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs usually go to files or a collector.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferry-coordinator: cannot start the runtime: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ferry-coordinator: {error:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    let local = listener
        .local_addr()
        .context("cannot read the listen address")?;
    let advertise = args.advertise.unwrap_or_else(|| local.to_string());
    let name = args.name.unwrap_or_else(process::default_process_name);
    let store = connect(&args.etcd_endpoints, &args.cluster).await?;
    let runtime = ClusterRuntime::new(
        store,
        ClusterOptions {
            id: name.clone(),
            address: advertise.clone(),
            lease_ttl: Duration::from_secs(args.lease_ttl.max(2)),
            worker_ttl: Duration::from_secs(args.worker_ttl.max(2)),
            grace: Duration::from_secs(args.grace),
            env: std::env::vars().collect(),
            base_dir: std::env::current_dir().context("cannot read the current directory")?,
        },
    );
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            process::stop_signal().await;
            tracing::info!("signal received: resigning and stopping");
            shutdown.cancel();
        });
    }
    let service =
        ControlService::with_cluster(runtime.clone(), runtime.clone() as Arc<_>).into_server();
    let server_stop = shutdown.clone();
    let server = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, server_stop.cancelled_owned())
            .await
    });
    tracing::info!(coordinator = %name, listen = %local, advertise = %advertise, "Control API listening");
    // Printed for scripts and tests that start a coordinator on port 0.
    println!("ferry-coordinator {name} listening on {local}");
    runtime.run(shutdown.clone()).await;
    shutdown.cancel();
    match server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error).context("the Control API failed"),
        Err(error) => Err(error).context("the Control API task failed"),
    }
}

/// Connects to etcd, waiting up to about a minute for it to come up.
async fn connect(endpoints: &[String], cluster: &str) -> anyhow::Result<EtcdStore> {
    EtcdStore::connect_retrying(
        endpoints,
        KeyLayout::default_prefix(cluster),
        EtcdStoreOptions::default(),
        30,
    )
    .await
    .with_context(|| {
        format!(
            "cannot reach etcd at {} (check --etcd-endpoints / FERRY_ETCD_ENDPOINTS)",
            endpoints.join(",")
        )
    })
}
