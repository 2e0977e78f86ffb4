//! What ferry's long-running binaries (coordinator, worker) share at their edge: how a
//! process names itself, how it learns it should stop, and the setup of its `main`
//! (logging, runtime, exit code).

/// Settings read from the environment, once, by libraries below ferry, which bound the
/// memory a process keeps after copying big rows (the README's "Memory"):
/// glibc keeps a freed buffer of up to 32 MiB in its heap for reuse unless its mmap
/// threshold is fixed (then a buffer of 1 MiB or more is unmapped when freed); the
/// MySQL driver pools up to 128 read buffers and shrinks one it takes back to
/// 4 MiB unless told a smaller cap.
pub const MEMORY_ENVIRONMENT: [(&str, &str); 2] = [
    ("MALLOC_MMAP_THRESHOLD_", "1048576"),
    ("MYSQL_ASYNC_BUFFER_SIZE_CAP", "65536"),
];

/// Set to `off`, ferry leaves [`MEMORY_ENVIRONMENT`] to the libraries' defaults.
pub const MEMORY_SETTINGS_SWITCH: &str = "FERRY_MEMORY_SETTINGS";

/// The [`MEMORY_ENVIRONMENT`] settings to add to an environment (`var`: a variable's
/// value): those it lacks, none when [`MEMORY_SETTINGS_SWITCH`] is `off`. A variable
/// the operator set is kept as it is.
pub fn missing_memory_settings(
    var: impl Fn(&str) -> Option<String>,
) -> Vec<(&'static str, &'static str)> {
    if var(MEMORY_SETTINGS_SWITCH).is_some_and(|switch| switch.eq_ignore_ascii_case("off")) {
        return Vec::new();
    }
    MEMORY_ENVIRONMENT
        .into_iter()
        .filter(|(name, _)| var(name).is_none())
        .collect()
}

/// Runs this program again, in this process, with the [`MEMORY_ENVIRONMENT`] settings
/// its environment lacks; returns when none is missing, or when the program cannot be
/// run again (then it goes on with the libraries' defaults). Called first thing in
/// `main`, before any thread starts: glibc reads its settings before `main`, so only a
/// new program image sees them, and ferry sets no variable in its own process (ferry
/// has no `unsafe` code). The process keeps its id, arguments and open descriptors.
pub fn exec_with_memory_settings() {
    use std::os::unix::process::CommandExt;
    let missing = missing_memory_settings(|name| {
        std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
    });
    if missing.is_empty() {
        return;
    }
    let Ok(program) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let name = args
        .next()
        .unwrap_or_else(|| program.clone().into_os_string());
    // Only returns when the program could not be run again.
    let _error = std::process::Command::new(&program)
        .arg0(name)
        .args(args)
        .envs(missing)
        .exec();
}

/// The machine's host name (Linux `/proc`), or `host` when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

/// A name unique among this cluster's processes when none is configured: `{host}-{pid}`.
pub fn default_process_name() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// Resolves at the next SIGTERM or Ctrl-C (SIGINT). Call it again to wait for another.
pub async fn stop_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` or else by `default_filter` (`info`, `warn`).
pub fn init_logging(default_filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        // Colours only on a terminal: logs usually go to files or a collector.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One JSON object per line, with the fields of every enclosing span (a chunk
        // attempt's job, table, partition, chunk and attempt) for log collectors.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// How logs are written: `text` for people, `json` (one object per line) for
/// collectors. The `[log] format` key, `--log-format`, `FERRY_*__LOG__FORMAT`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `[log]` section of a configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

/// Runs a long-running binary's `main`: logs to stderr filtered by `RUST_LOG` (default
/// `info`), runs `run` on a multi-threaded runtime, and turns its outcome into the exit
/// code: 0, or 1 with the error (and its causes, `{:#}`) on stderr.
pub fn run_binary<Run, Fut, E>(binary: &str, format: LogFormat, run: Run) -> std::process::ExitCode
where
    Run: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    init_logging("info", format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{binary}: cannot start the runtime: {error}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{binary}: {error:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Awaits a task for at most `deadline`; `None` when it was still running then (it is
/// left to end with the runtime).
pub async fn join_within<T>(
    task: tokio::task::JoinHandle<T>,
    deadline: std::time::Duration,
) -> Option<Result<T, tokio::task::JoinError>> {
    tokio::time::timeout(deadline, task).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_memory_settings_the_environment_lacks_are_added() {
        let environment = |set: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                set.iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        assert_eq!(
            missing_memory_settings(environment(&[])),
            MEMORY_ENVIRONMENT.to_vec()
        );
        assert_eq!(
            missing_memory_settings(environment(&[("MALLOC_MMAP_THRESHOLD_", "4194304")])),
            vec![("MYSQL_ASYNC_BUFFER_SIZE_CAP", "65536")]
        );
        assert!(missing_memory_settings(environment(&MEMORY_ENVIRONMENT)).is_empty());
        assert!(
            missing_memory_settings(environment(&[("FERRY_MEMORY_SETTINGS", "off")])).is_empty()
        );
        assert_eq!(
            missing_memory_settings(environment(&[("FERRY_MEMORY_SETTINGS", "on")])),
            MEMORY_ENVIRONMENT.to_vec()
        );
    }
}
