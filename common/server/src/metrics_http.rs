//! Prometheus metrics over HTTP: the process-wide recorder of the `metrics` facade
//! rendered in the text exposition format at `GET /metrics`, with the process's own
//! figures (CPU, memory, file descriptors, start time) read from `/proc` at each scrape.
//! The same for a coordinator, a worker and `ferryctl local` (`metrics.listen`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The `[metrics]` section of a configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` serving `GET /metrics` (Prometheus text format). Default: not served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// Why metrics could not be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The port could not be opened.
    #[error("cannot serve metrics on {addr} (metrics.listen): {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder, once; later
/// calls return the same handle. `None` when another recorder was installed first.
pub fn recorder() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                ])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .clone()
}

/// Serves `GET /metrics` on `listen` until `stop`; returns the bound address (port 0
/// picks a free one).
pub async fn serve_metrics(
    listen: &str,
    stop: CancellationToken,
) -> Result<SocketAddr, MetricsError> {
    let listen_error = |source| MetricsError::Listen {
        addr: listen.to_owned(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    let handle = recorder();
    spawn_http(listener, stop, "metrics", move |request| {
        let handle = handle.clone();
        async move { answer(&request, handle.as_ref()) }
    });
    tracing::info!(%bound, "metrics on http://{bound}/metrics");
    Ok(bound)
}

/// Serves HTTP/1 on `listener` until `stop` (open connections end with it), each request
/// answered by `handler`; `what` names the server in connection errors. The one accept
/// loop of ferry's HTTP servers (metrics, the web console).
pub fn spawn_http<H, F>(
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
    what: &'static str,
    handler: H,
) where
    H: Fn(Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let handler = handler.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let answered = handler(request);
                    async move { Ok::<_, Infallible>(answered.await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let connection =
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service);
                tokio::select! {
                    result = connection => {
                        if let Err(error) = result {
                            tracing::debug!(%error, server = what, "connection ended");
                        }
                    }
                    () = stop.cancelled() => {}
                }
            });
        }
    });
}

fn answer<B>(request: &Request<B>, handle: Option<&PrometheusHandle>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    };
    if request.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "ferry serves its metrics at /metrics\n".to_owned(),
        );
    }
    let Some(handle) = handle else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "another metrics recorder was installed in this process\n".to_owned(),
        );
    };
    handle.run_upkeep();
    let mut body = handle.render();
    body.push_str(&process_metrics());
    text(StatusCode::OK, body)
}

/// `process_*` metrics as Prometheus' own client libraries name them, from `/proc`.
fn process_metrics() -> String {
    let mut out = String::new();
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return out;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some(after) = stat.rfind(')').map(|index| &stat[index + 2..]) else {
        return out;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let number = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
    // man proc(5): utime 14, stime 15, starttime 22, vsize 23, rss 24 (1-based, from pid).
    let ticks = 100.0;
    let page = 4096.0;
    if let (Some(user), Some(system)) = (number(11), number(12)) {
        out.push_str(&format!(
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}\n",
            (user + system) / ticks
        ));
    }
    if let Some(rss) = number(21) {
        out.push_str(&format!(
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n",
            rss * page
        ));
    }
    if let Some(vsize) = number(20) {
        out.push_str(&format!(
            "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n\
             # TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes {vsize}\n"
        ));
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|value| value.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, number(19)) {
        out.push_str(&format!(
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
             # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}\n",
            boot + start / ticks
        ));
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        out.push_str(&format!(
            "# HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds {}\n",
            entries.count()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_read_from_proc() {
        let text = process_metrics();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
        let rss: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
            .and_then(|value| value.parse().ok())
            .expect("rss");
        assert!(
            rss > 1_000_000.0,
            "a test process uses more than 1 MB: {rss}"
        );
    }
}
