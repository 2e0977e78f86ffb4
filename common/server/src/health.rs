//! The standard gRPC health service (`grpc.health.v1.Health`) of ferry's long-running
//! binaries, under two names:
//!
//! - `""`, the whole server (liveness): SERVING from the start, NOT_SERVING for good once
//!   [`HealthPublisher::stop_serving`] ran. It never depends on etcd: a process that
//!   lost etcd is still alive, and restarting it would not bring etcd back;
//! - a readiness name (`ferry.v1.Control` for a coordinator, [`WORKER_READINESS`] for a
//!   worker): follows the process's state (a coordinator holding its etcd lease, as
//!   leader or standby; a worker registered and not draining), and NOT_SERVING for good
//!   once stopping.
//!
//! A Kubernetes probe asks with `grpc: { port: ..., service: ... }`.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// The readiness name a worker publishes: SERVING while it is registered under a live
/// lease and not draining. (No gRPC service of that name exists: workers serve only
/// the health service.)
pub const WORKER_READINESS: &str = "ferry.v1.Worker";

/// How long a binary waits for its gRPC server to finish the calls in flight once told
/// to stop; streams still open then (`WatchJob`, health `Watch`) are dropped.
pub const SERVER_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// Keeps the health statuses in step with a process's state; see the module doc.
#[derive(Debug)]
pub struct HealthPublisher {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts publishing: `""` SERVING now, `readiness` following `is_ready(state)` (from
/// NOT_SERVING).
/// Returns the publisher and the `grpc.health.v1.Health` service to add to a server.
pub async fn publish_health<State>(
    readiness: &'static str,
    state: watch::Receiver<State>,
    is_ready: fn(&State) -> bool,
) -> (HealthPublisher, HealthServer<HealthService>)
where
    State: Send + Sync + 'static,
{
    let (publisher, service) = publish(readiness, state, is_ready).await;
    (publisher, HealthServer::new(service))
}

async fn publish<State>(
    readiness: &'static str,
    state: watch::Receiver<State>,
    is_ready: fn(&State) -> bool,
) -> (HealthPublisher, HealthService)
where
    State: Send + Sync + 'static,
{
    // `""` starts SERVING (the reporter's default); the readiness name is registered
    // before the service is handed out, so that a probe never finds it missing.
    let reporter = HealthReporter::new();
    reporter
        .set_service_status(readiness, ServingStatus::NotServing)
        .await;
    let service = HealthService::from_health_reporter(reporter.clone());
    let stop = CancellationToken::new();
    let task = tokio::spawn(follow_state(
        reporter,
        readiness,
        state,
        is_ready,
        stop.clone(),
    ));
    (HealthPublisher { stop, task }, service)
}

impl HealthPublisher {
    /// Marks `""` and the readiness name NOT_SERVING for good; returns once they are, so
    /// a caller can stop its server after this and be sure probes saw the change.
    pub async fn stop_serving(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "the health status task failed");
        }
    }
}

/// The only writer of the statuses, so that nothing can turn them SERVING again after
/// the stop.
async fn follow_state<State>(
    reporter: HealthReporter,
    readiness: &'static str,
    mut state: watch::Receiver<State>,
    is_ready: fn(&State) -> bool,
    stop: CancellationToken,
) {
    loop {
        let status = if is_ready(&state.borrow_and_update()) {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(readiness, status).await;
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            changed = state.changed() => {
                if changed.is_err() {
                    // The state's owner is gone: nothing is ready any more.
                    reporter.set_service_status(readiness, ServingStatus::NotServing).await;
                    stop.cancelled().await;
                    break;
                }
            }
        }
    }
    reporter
        .set_service_status(readiness, ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
}

#[cfg(test)]
mod tests {
    use tonic::Request;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_server::Health;

    use super::*;

    async fn status_of(server: &impl Health, service: &str) -> ServingStatus {
        let response = server
            .check(Request::new(HealthCheckRequest {
                service: service.to_owned(),
            }))
            .await
            .expect("a registered service");
        let status = response.into_inner().status;
        match Wire::try_from(status) {
            Ok(Wire::Serving) => ServingStatus::Serving,
            Ok(Wire::NotServing) => ServingStatus::NotServing,
            _ => panic!("unexpected status {status}"),
        }
    }

    async fn wait_for(server: &impl Health, service: &str, wanted: ServingStatus) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while status_of(server, service).await != wanted {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service:?} never became {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn readiness_follows_the_state_and_stopping_ends_both() {
        let (state_tx, state_rx) = watch::channel(false);
        let (publisher, service) = publish("test.Ready", state_rx, |ready| *ready).await;
        assert_eq!(status_of(&service, "").await, ServingStatus::Serving);
        wait_for(&service, "test.Ready", ServingStatus::NotServing).await;
        state_tx.send_replace(true);
        wait_for(&service, "test.Ready", ServingStatus::Serving).await;
        publisher.stop_serving().await;
        assert_eq!(status_of(&service, "").await, ServingStatus::NotServing);
        assert_eq!(
            status_of(&service, "test.Ready").await,
            ServingStatus::NotServing
        );
        // Nothing turns it back on.
        state_tx.send_replace(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            status_of(&service, "test.Ready").await,
            ServingStatus::NotServing
        );
    }
}
