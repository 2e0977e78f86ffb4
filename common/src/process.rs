//! What ferry's long-running binaries (coordinator, worker) share at their edge: how a
//! process names itself and how it learns it should stop.

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
