//! `ferry-worker`: a stateless worker of a ferry cluster. Settings come from flags, or
//! from the environment (`FERRY_*`, named under each flag in `--help`).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ferry_common::coordination::keys::KeyLayout;
use ferry_common::coordination::{EtcdStore, EtcdStoreOptions};
use ferry_common::ids::WorkerId;
use ferry_common::process;
use ferry_worker::agent::{AgentOptions, run_agent};
use tokio_util::sync::CancellationToken;

/// A ferry worker: takes chunks assigned through etcd, copies and verifies them.
#[derive(Debug, Parser)]
#[command(name = "ferry-worker", version)]
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
    /// This worker's name, unique in the cluster (default: host-pid).
    #[arg(long, env = "FERRY_WORKER_NAME")]
    name: Option<String>,
    /// Chunks copied at once.
    #[arg(long, env = "FERRY_WORKER_SLOTS", default_value_t = 2)]
    slots: u32,
    /// Lease TTL in seconds: the leader reassigns this worker's chunks this long (plus
    /// its grace) after the worker stops renewing.
    #[arg(long, env = "FERRY_WORKER_TTL", default_value_t = 10)]
    ttl: u64,
    /// Seconds a drain (SIGTERM, `ferryctl drain`) lets running chunks finish.
    #[arg(long, env = "FERRY_DRAIN_TIMEOUT", default_value_t = 60)]
    drain_timeout: u64,
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
            eprintln!("ferry-worker: cannot start the runtime: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ferry-worker: {error:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let name = args.name.unwrap_or_else(process::default_process_name);
    let store = connect(&args.etcd_endpoints, &args.cluster).await?;
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
        slots: args.slots.max(1),
        ttl: Duration::from_secs(args.ttl.max(2)),
        drain_timeout: Duration::from_secs(args.drain_timeout),
        env: std::env::vars().collect(),
        base_dir: std::env::current_dir().context("cannot read the current directory")?,
        host: process::host_name(),
    };
    run_agent(store, options, drain, kill).await?;
    Ok(())
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
