//! `ferry.v1.Control` over a [`JobControl`]: convert the request, call one domain method,
//! convert the result. Errors map to status codes in one place.

use std::sync::Arc;

use ferry_common::proto::v1 as pb;
use ferry_common::proto::v1::control_server::Control;
use tonic::{Request, Response, Status};

use crate::control::{ControlError, EffectiveView, JobControl, JobStateView, ThrottleUpdate};

/// The Control service.
pub struct ControlService {
    domain: Arc<dyn JobControl>,
}

impl ControlService {
    /// Serves `domain`.
    pub fn new(domain: Arc<dyn JobControl>) -> Self {
        Self { domain }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::control_server::ControlServer<Self> {
        pb::control_server::ControlServer::new(self)
    }
}

impl From<ControlError> for Status {
    fn from(error: ControlError) -> Self {
        match &error {
            ControlError::UnknownJob(_) => Status::not_found(error.to_string()),
            ControlError::Invalid(_) => Status::invalid_argument(error.to_string()),
            ControlError::Internal(_) => {
                tracing::error!(%error, "control request failed");
                Status::internal(error.to_string())
            }
        }
    }
}

fn effective_to_proto(view: EffectiveView) -> pb::EffectiveThrottle {
    pb::EffectiveThrottle {
        concurrency: view.concurrency,
        paused: view.paused,
        reasons: view.reasons,
        load: view.load,
        in_flight: view.in_flight,
        rows_per_sec: view.rows_per_sec,
        bytes_per_sec: view.bytes_per_sec,
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let request = request.into_inner();
        let status = self.domain.job_status(&request.job_id).await?;
        let state = match status.state {
            JobStateView::Running => pb::JobState::Running,
            JobStateView::Paused => pb::JobState::Paused,
            JobStateView::Done => pb::JobState::Done,
            JobStateView::Failed => pb::JobState::Failed,
        };
        Ok(Response::new(pb::GetJobResponse {
            job_id: request.job_id,
            state: state as i32,
            rows_verified: status.rows_verified,
            rows_streamed: status.rows_streamed,
            chunks_total: status.chunks_total,
            chunks_verified: status.chunks_verified,
            chunks_failed: status.chunks_failed,
            chunks_running: status.chunks_running,
        }))
    }

    async fn pause_job(
        &self,
        request: Request<pb::PauseJobRequest>,
    ) -> Result<Response<pb::PauseJobResponse>, Status> {
        let effective = self.domain.pause(&request.into_inner().job_id).await?;
        Ok(Response::new(pb::PauseJobResponse {
            effective: Some(effective_to_proto(effective)),
        }))
    }

    async fn resume_job(
        &self,
        request: Request<pb::ResumeJobRequest>,
    ) -> Result<Response<pb::ResumeJobResponse>, Status> {
        let effective = self.domain.resume(&request.into_inner().job_id).await?;
        Ok(Response::new(pb::ResumeJobResponse {
            effective: Some(effective_to_proto(effective)),
        }))
    }

    async fn update_throttle(
        &self,
        request: Request<pb::UpdateThrottleRequest>,
    ) -> Result<Response<pb::UpdateThrottleResponse>, Status> {
        let request = request.into_inner();
        let update = ThrottleUpdate {
            max_concurrency: request.max_concurrency,
            clear_override: request.clear_override,
            rows_per_sec: request.rows_per_sec,
            bytes_per_sec: request.bytes_per_sec,
            load_max: request.load_max,
            load_critical: request.load_critical,
            schedule_yaml: request.schedule_yaml,
        };
        let (policy_json, effective) = self.domain.update_throttle(&request.job_id, update).await?;
        Ok(Response::new(pb::UpdateThrottleResponse {
            policy_json,
            effective: Some(effective_to_proto(effective)),
        }))
    }

    async fn get_throttle(
        &self,
        request: Request<pb::GetThrottleRequest>,
    ) -> Result<Response<pb::GetThrottleResponse>, Status> {
        let request = request.into_inner();
        let at = match request.at_unix_ms {
            Some(millis) => Some(
                jiff::Timestamp::from_millisecond(millis)
                    .map_err(|error| Status::invalid_argument(format!("at_unix_ms: {error}")))?,
            ),
            None => None,
        };
        let (policy_json, effective) = self.domain.throttle(&request.job_id, at).await?;
        Ok(Response::new(pb::GetThrottleResponse {
            policy_json,
            effective: Some(effective_to_proto(effective)),
        }))
    }

    async fn list_throttle_history(
        &self,
        request: Request<pb::ListThrottleHistoryRequest>,
    ) -> Result<Response<pb::ListThrottleHistoryResponse>, Status> {
        let changes = self
            .domain
            .throttle_history(&request.into_inner().job_id)
            .await?;
        Ok(Response::new(pb::ListThrottleHistoryResponse {
            changes: changes
                .into_iter()
                .map(|change| pb::ThrottleChange {
                    at_unix_ms: change.at_unix_ms,
                    origin: change.origin,
                    summary: change.summary,
                })
                .collect(),
        }))
    }
}
