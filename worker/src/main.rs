//! `ferry-worker`: a stateless worker of a ferry cluster. Settings come in layers
//! (defaults < `--config` file < `FERRY_WORKER__*` environment < flags, see
//! `ferry_worker::config`); the worker itself is [`ferry_worker::server::serve`].

use std::collections::HashMap;

use anyhow::Context;
use clap::Parser;
use ferry_server::config::{self, for_log};
use ferry_server::process;
use ferry_worker::config::{RETIRED_ENV, WorkerArgs, WorkerConfig};
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    process::exec_with_memory_settings();
    let args = WorkerArgs::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    // Loaded before logging starts, for its log format; an error is reported once the
    // logger runs.
    let loaded = WorkerConfig::load(&args, &env);
    let format = loaded
        .as_ref()
        .map(|config| config.log.format)
        .unwrap_or_default();
    process::run_binary("ferry-worker", format, || run(loaded, env))
}

async fn run(
    loaded: Result<WorkerConfig, config::ConfigError>,
    env: HashMap<String, String>,
) -> anyhow::Result<()> {
    config::warn_retired_variables(&env, RETIRED_ENV);
    let config = loaded?;
    tracing::debug!(config = %for_log(&config), "effective configuration");
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
    let base_dir = std::env::current_dir().context("cannot read the current directory")?;
    ferry_worker::server::serve(config, env, base_dir, drain, kill).await?;
    Ok(())
}
