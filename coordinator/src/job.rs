//! A job's lifecycle up to its run, written once for `ferryctl local` and the cluster
//! leader: load the job from the store or plan it (preparing the target tables) and
//! store it; refuse a stored job planned from another spec (its fingerprint); on an
//! operator's re-run, put FAILED chunks back to PLANNED. What follows (the pacer, the
//! scheduler over the workers, recording the end) is the leader runtime's
//! ([`crate::cluster::runtime`]), the same in both modes.

use ferry_connectors::{Sink, Source};
use ferry_coordination::{ChunkState, Coordination, CoordinationError, JobRecord};
use ferry_model::ids::JobId;
use ferry_model::spec::JobSpec;

use crate::plan::{PlanError, plan_job};

/// Why a job could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The store holds the job planned from a different spec.
    #[error(
        "job {job:?} was planned from a different spec (tables, chunking or endpoints \
         changed); run it with the original spec, or give the new spec another `name`"
    )]
    SpecChanged {
        /// The job.
        job: String,
    },
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] CoordinationError),
}

/// What to do with a stored job's FAILED chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// An operator ran the job again: FAILED chunks go back to PLANNED, their failure
    /// count reset (`ferryctl local` run twice).
    RetryFailed,
    /// A leader taking the job over: chunks stay as stored.
    AsStored,
}

/// A job ready to run: loaded from the store (a resume) or planned and stored.
#[derive(Clone, Debug)]
pub struct PreparedJob {
    /// The stored job.
    pub job: JobRecord,
    /// Whether it was found in the store.
    pub resumed: bool,
    /// Rows already verified before this run.
    pub rows_verified_before: u64,
    /// Chunks already verified before this run.
    pub chunks_verified_before: usize,
}

/// Loads `spec`'s job from `store` (refused when it was planned from another spec), or
/// plans it against `source` and `sink` (creating or checking the target tables) and
/// stores it.
pub async fn prepare_job(
    spec: &JobSpec,
    source: &dyn Source,
    sink: &dyn Sink,
    store: &dyn Coordination,
    resume: Resume,
) -> Result<PreparedJob, JobError> {
    let job_id = JobId(spec.name.clone());
    if let Some((job, chunks)) = store.load_job(&job_id).await? {
        if job.fingerprint != spec.fingerprint() {
            return Err(JobError::SpecChanged {
                job: spec.name.clone(),
            });
        }
        if resume == Resume::RetryFailed {
            let reset = store.reset_failed(&job.id).await?;
            if !reset.is_empty() {
                tracing::warn!(job = %job.id, chunks = ?reset, "retrying chunks that FAILED in an earlier run");
            }
        }
        let verified: Vec<_> = chunks
            .iter()
            .filter(|chunk| chunk.state == ChunkState::Verified)
            .collect();
        return Ok(PreparedJob {
            rows_verified_before: verified.iter().map(|chunk| chunk.rows).sum(),
            chunks_verified_before: verified.len(),
            job,
            resumed: true,
        });
    }
    let plan = plan_job(spec, source, sink).await?;
    let job = JobRecord::new(spec, plan.tables);
    store.create_job(&job, &plan.chunks).await?;
    Ok(PreparedJob {
        job,
        resumed: false,
        rows_verified_before: 0,
        chunks_verified_before: 0,
    })
}
