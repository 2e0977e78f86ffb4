//! `ferry-coordinator`: plans jobs and assigns their chunks to workers; one of several
//! replicas leads (etcd election), the others stand by and answer reads. Settings come
//! in layers (defaults < `--config` file < `FERRY_COORDINATOR__*` environment < flags,
//! see `ferry_coordinator::config`); the coordinator itself is
//! [`ferry_coordinator::server::serve`].

use std::collections::HashMap;

use anyhow::Context;
use clap::Parser;
use ferry_coordinator::config::{CoordinatorArgs, CoordinatorConfig, RETIRED_ENV};
use ferry_server::config::{self, for_log};
use ferry_server::process;
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    process::exec_with_memory_settings();
    let args = CoordinatorArgs::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    // Loaded before logging starts, for its log format; an error is reported once the
    // logger runs.
    let loaded = CoordinatorConfig::load(&args, &env);
    let format = loaded
        .as_ref()
        .map(|config| config.log.format)
        .unwrap_or_default();
    process::run_binary("ferry-coordinator", format, || run(loaded, env))
}

async fn run(
    loaded: Result<CoordinatorConfig, config::ConfigError>,
    env: HashMap<String, String>,
) -> anyhow::Result<()> {
    config::warn_retired_variables(&env, RETIRED_ENV);
    let config = loaded?;
    tracing::debug!(config = %for_log(&config), "effective configuration");
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            process::stop_signal().await;
            tracing::info!(
                "signal received: resigning and stopping (a second signal exits at once)"
            );
            shutdown.cancel();
            // A second signal: leave without waiting for the resignation or open calls
            // (the lease then expires by itself and a standby takes over after its TTL).
            process::stop_signal().await;
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        });
    }
    let base_dir = std::env::current_dir().context("cannot read the current directory")?;
    ferry_coordinator::server::serve(config, env, base_dir, shutdown, |name, local| {
        // Printed for scripts and tests that start a coordinator on port 0.
        println!("ferry-coordinator {name} listening on {local}");
    })
    .await?;
    Ok(())
}
