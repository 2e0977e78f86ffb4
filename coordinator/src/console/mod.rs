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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::control::{ClusterControl, JobControl};
use crate::security::ControlAccess;

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

/// What the console serves: the domain of the Control API and who may call it.
#[derive(Clone)]
pub struct Console {
    /// A job's progress and controls.
    pub jobs: Arc<dyn JobControl>,
    /// Jobs, chunks, workers.
    pub cluster: Arc<dyn ClusterControl>,
    /// Who may read and act (the Control API's).
    pub access: ControlAccess,
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
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let console = console.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let console = console.clone();
                    async move { Ok::<_, Infallible>(api::answer(&console, request).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let connection =
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service);
                tokio::select! {
                    result = connection => {
                        if let Err(error) = result {
                            tracing::debug!(%error, "console connection ended");
                        }
                    }
                    () = stop.cancelled() => {}
                }
            });
        }
    });
    tracing::info!(%bound, "console on http://{bound}");
    Ok(bound)
}
