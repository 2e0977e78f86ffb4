//! The operator-facing operations on a running job, as plain Rust: what the Control API
//! (`service::control`) exposes over gRPC. Implemented by the job runtime that owns the
//! scheduler and the throttle ([`crate::pacer::JobPacer`] for `ferryctl local`).

use async_trait::async_trait;
use ferry_common::coordination::PolicyChange;

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such job here.
    #[error("job {0:?} is not known to this ferry")]
    UnknownJob(String),
    /// The change is invalid; the old policy stays.
    #[error("invalid throttle change: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Storing or applying failed.
    #[error("{0}")]
    Internal(String),
}

/// A job's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobStatusView {
    /// `RUNNING`, `PAUSED`, `DONE`, `FAILED`.
    pub state: JobStateView,
    /// Rows in verified chunks.
    pub rows_verified: u64,
    /// Rows streamed into the target by this run (including attempts later re-copied).
    pub rows_streamed: u64,
    /// Chunks planned.
    pub chunks_total: u32,
    /// Chunks verified.
    pub chunks_verified: u32,
    /// Chunks failed.
    pub chunks_failed: u32,
    /// Chunks running.
    pub chunks_running: u32,
}

/// A job's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JobStateView {
    /// Copying.
    #[default]
    Running,
    /// Paused by an operator or by load.
    Paused,
    /// Every chunk verified.
    Done,
    /// Ended with failed chunks.
    Failed,
}

/// What the throttle allows, and why.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EffectiveView {
    /// Chunks allowed in flight.
    pub concurrency: u32,
    /// Whether the job is paused.
    pub paused: bool,
    /// One line per cap or pause.
    pub reasons: Vec<String>,
    /// The last load reading.
    pub load: Option<f64>,
    /// Chunks running now.
    pub in_flight: u32,
    /// Rows per second allowed, 0 = unlimited.
    pub rows_per_sec: u64,
    /// Bytes per second allowed, 0 = unlimited.
    pub bytes_per_sec: u64,
}

/// A runtime change of the throttle policy; `None` fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThrottleUpdate {
    /// New operator cap on concurrency.
    pub max_concurrency: Option<u32>,
    /// Remove the operator cap.
    pub clear_override: bool,
    /// New rows/s limit (0 removes it).
    pub rows_per_sec: Option<u64>,
    /// New bytes/s limit (0 removes it).
    pub bytes_per_sec: Option<u64>,
    /// New load `max`.
    pub load_max: Option<f64>,
    /// New load `critical`.
    pub load_critical: Option<f64>,
    /// A replacement schedule, as YAML (the spec's `throttle.schedule` list).
    pub schedule_yaml: Option<String>,
}

/// Operations an operator can run against a job.
#[async_trait]
pub trait JobControl: Send + Sync {
    /// The job's progress.
    async fn job_status(&self, job: &str) -> Result<JobStatusView, ControlError>;
    /// Pauses the job (stored, so it stays paused across restarts).
    async fn pause(&self, job: &str) -> Result<EffectiveView, ControlError>;
    /// Resumes a paused job.
    async fn resume(&self, job: &str) -> Result<EffectiveView, ControlError>;
    /// Validates, stores and applies a throttle change; returns the new policy (JSON).
    async fn update_throttle(
        &self,
        job: &str,
        update: ThrottleUpdate,
    ) -> Result<(String, EffectiveView), ControlError>;
    /// The policy (JSON) and what it gives now, or at `at` (schedule only).
    async fn throttle(
        &self,
        job: &str,
        at: Option<jiff::Timestamp>,
    ) -> Result<(String, EffectiveView), ControlError>;
    /// Every policy change, oldest first.
    async fn throttle_history(&self, job: &str) -> Result<Vec<PolicyChange>, ControlError>;
}
