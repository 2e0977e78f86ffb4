//! The web console: an HTTP/1 port (`console.listen`, `ferryctl local --console-addr`)
//! serving a page (plain HTML, CSS and JS embedded in the binary, nothing fetched from
//! elsewhere) and the JSON endpoints it polls. The handlers ([`api`]) are thin: each
//! authorizes the caller with the Control API's [`ControlAccess`] (bearer tokens with
//! roles; a viewer reads, an operator also acts) and calls the same domain the gRPC
//! Control service calls ([`JobControl`], [`ClusterControl`]), so every action is
//! recorded in the job's history with the caller's identity.
//!
//! The server is the hyper HTTP/1 stack of `ferry_server::metrics_http`. It speaks
//! plaintext: like the Control API, it refuses a non-loopback address without
//! authentication unless told `insecure`.

pub mod api;
pub mod assets;
pub mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::control::{ChunkFilter, ClusterControl, ControlError, JobControl};
use crate::security::ControlAccess;
use view::ChunkSummary;

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The port could not be opened.
    #[error("cannot serve the console on {addr} ({key}): {source}")]
    Listen {
        /// The setting that names it.
        key: &'static str,
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A non-loopback address without authentication.
    #[error(
        "refusing to serve the console on {addr} without authentication: anyone who \
         reaches it could pause jobs or drain workers. Give the server a tokens file \
         (server.tokens_file, --tokens-file), or listen on 127.0.0.1, or, if a network \
         policy already guards the port, pass --insecure"
    )]
    Unauthenticated {
        /// The address it would listen on.
        addr: SocketAddr,
    },
}

/// How long a job's chunk summary is shared by every page polling it: listing a job's
/// chunks reads every chunk record (from etcd on a coordinator), so many open pages of a
/// big job cost one listing a second, not one each.
const SUMMARY_TTL: Duration = Duration::from_secs(1);

/// Chunk summaries by job, with when each was made.
type Summaries = HashMap<String, (Instant, Arc<ChunkSummary>)>;

/// What the console serves: the domain of the Control API and who may call it.
#[derive(Clone)]
pub struct Console {
    /// A job's progress and controls.
    pub jobs: Arc<dyn JobControl>,
    /// Jobs, chunks, workers.
    pub cluster: Arc<dyn ClusterControl>,
    /// Who may read and act (the Control API's).
    pub access: ControlAccess,
    /// Recent chunk summaries by job.
    summaries: Arc<Mutex<Summaries>>,
}

impl Console {
    /// A console over the Control API's domain, callers checked by `access`.
    pub fn new(
        jobs: Arc<dyn JobControl>,
        cluster: Arc<dyn ClusterControl>,
        access: ControlAccess,
    ) -> Self {
        Console {
            jobs,
            cluster,
            access,
            summaries: Arc::default(),
        }
    }

    /// A job's chunks as the job page shows them, listed at most once per
    /// [`SUMMARY_TTL`].
    pub async fn chunk_summary(&self, job: &str) -> Result<Arc<ChunkSummary>, ControlError> {
        let fresh = |entry: &(Instant, Arc<ChunkSummary>)| entry.0.elapsed() < SUMMARY_TTL;
        if let Some(entry) = self.lock_summaries().get(job).filter(|entry| fresh(entry)) {
            return Ok(entry.1.clone());
        }
        let (chunks, _) = self
            .cluster
            .list_chunks(job, &ChunkFilter::default(), 0, u32::MAX as usize)
            .await?;
        let summary = Arc::new(ChunkSummary::of(&chunks));
        let mut summaries = self.lock_summaries();
        summaries.retain(|_, entry| fresh(entry));
        summaries.insert(job.to_owned(), (Instant::now(), summary.clone()));
        Ok(summary)
    }

    fn lock_summaries(&self) -> std::sync::MutexGuard<'_, Summaries> {
        // A panic while holding it leaves a map of whole entries: still usable.
        self.summaries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Binds `listen` (`key`: the setting naming it, for errors), refuses a non-loopback
/// address without authentication unless `insecure`, and serves `console` until `stop`.
/// Returns the bound address (port 0 picks a free one).
pub async fn serve_console(
    listen: &str,
    key: &'static str,
    console: Console,
    insecure: bool,
    stop: CancellationToken,
) -> Result<SocketAddr, ConsoleError> {
    let listen_error = |source| ConsoleError::Listen {
        key,
        addr: listen.to_owned(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    if !console.access.authenticates() && !bound.ip().is_loopback() && !insecure {
        return Err(ConsoleError::Unauthenticated { addr: bound });
    }
    let console = Arc::new(console);
    ferry_server::metrics_http::spawn_http(listener, stop, "console", move |request| {
        let console = console.clone();
        async move { api::answer(&console, request).await }
    });
    tracing::info!(%bound, "console on http://{bound}");
    Ok(bound)
}
