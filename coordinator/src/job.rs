//! A job's lifecycle up to its run, written once for `ferryctl local` and the cluster
//! leader: load the job from the store or plan it (preparing the target tables) and
//! store it; refuse a stored job planned from another spec (its fingerprint); on an
//! operator's re-run, put FAILED chunks back to PLANNED. What follows (the pacer, the
//! scheduler over the workers, recording the end) is the leader runtime's
//! ([`crate::cluster::runtime`]), the same in both modes.

use ferry_connectors::{Sink, Source};
use ferry_coordination::{ChunkState, Coordination, CoordinationError, JobRecord};
use ferry_model::ids::JobId;
use ferry_model::spec::{JobMode, JobSpec};

use crate::plan::{PlanError, plan_job_with};

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
    /// A source table of a stored job is gone or has other columns than when the job
    /// was planned: copying on would drop or mangle the new columns' values.
    #[error(
        "source table {table} changed since job {job} was planned ({changes}): the chunks \
         copied so far hold the planned columns; restore the table as it was, or start the \
         job over (another --state or job name, with the target table dropped or \
         `schema: recreate`)"
    )]
    SourceChanged {
        /// The job.
        job: String,
        /// The table.
        table: String,
        /// What differs, e.g. "column note added".
        changes: String,
    },
    /// A target table of a stored job is gone or cannot take the rest of the job: the
    /// chunks recorded as copied are not (all) there any more.
    #[error(
        "target table {table} of job {job} {problem}, yet {verified} of its chunks are \
         recorded as copied: if it was dropped or replaced, start the job over with another \
         --state (or job name) so that every chunk is copied again; otherwise restore it"
    )]
    TargetChanged {
        /// The job.
        job: String,
        /// The target table.
        table: String,
        /// What is wrong with it.
        problem: String,
        /// Its chunks recorded VERIFIED.
        verified: usize,
    },
    /// The source or target could not be reached to check a stored job's tables
    /// (retryable).
    #[error("cannot check the {side} tables of job {job}: {source}")]
    SourceUnavailable {
        /// The job.
        job: String,
        /// `source` or `target`.
        side: &'static str,
        /// Why.
        #[source]
        source: ferry_connectors::ConnectorError,
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
    /// Chunks still to be read: neither VERIFIED nor FAILED.
    pub chunks_open: usize,
    /// Chunks attempted (assigned at least once) before this run.
    pub chunks_started_before: usize,
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
        check_source_unchanged(&job, &chunks, source).await?;
        // A verify-only job touches nothing in the target, not even to check its tables
        // (preparing one writes the fence table): a missing table fails its chunks.
        if spec.mode != JobMode::Verify {
            check_targets_present(spec, &job, &chunks, sink).await?;
        }
        let verified: Vec<_> = chunks
            .iter()
            .filter(|chunk| chunk.state == ChunkState::Verified)
            .collect();
        return Ok(PreparedJob {
            rows_verified_before: verified.iter().map(|chunk| chunk.rows).sum(),
            chunks_verified_before: verified.len(),
            chunks_open: chunks
                .iter()
                .filter(|chunk| !matches!(chunk.state, ChunkState::Verified | ChunkState::Failed))
                .count(),
            chunks_started_before: chunks.iter().filter(|chunk| chunk.attempt.0 > 0).count(),
            job,
            resumed: true,
        });
    }
    let plan = plan_job_with(spec, source, sink, spec.mode != JobMode::Verify).await?;
    let job = JobRecord::new(spec, plan.tables);
    store.create_job(&job, &plan.chunks).await?;
    Ok(PreparedJob {
        job,
        resumed: false,
        rows_verified_before: 0,
        chunks_verified_before: 0,
        chunks_open: plan.chunks.len(),
        chunks_started_before: 0,
    })
}

/// Refuses to go on with a stored job whose source tables (those with chunks still to
/// copy) are gone or have other columns than planned.
async fn check_source_unchanged(
    job: &JobRecord,
    chunks: &[ferry_coordination::ChunkRecord],
    source: &dyn Source,
) -> Result<(), JobError> {
    for (index, table) in job.tables.iter().enumerate() {
        let unfinished = chunks
            .iter()
            .any(|chunk| chunk.table_index == index && chunk.state != ChunkState::Verified);
        if !unfinished {
            continue;
        }
        let changed = |changes: String| JobError::SourceChanged {
            job: job.id.0.clone(),
            table: table.schema.name.to_string(),
            changes,
        };
        let described = match source.describe_table(&table.schema.name).await {
            Ok(described) => described,
            Err(error @ ferry_connectors::ConnectorError::TableNotFound { .. }) => {
                return Err(changed(format!("{error}: dropped or renamed")));
            }
            Err(error) if error.kind() == ferry_connectors::ErrorKind::Unavailable => {
                return Err(JobError::SourceUnavailable {
                    job: job.id.0.clone(),
                    side: "source",
                    source: error,
                });
            }
            Err(error) => return Err(changed(format!("it cannot be described: {error}"))),
        };
        let changes = column_changes(&table.schema.columns, &described.columns);
        if !changes.is_empty() {
            return Err(changed(changes.join(", ")));
        }
    }
    Ok(())
}

/// What differs between the planned and the current columns, in words.
fn column_changes(
    planned: &[ferry_model::schema::ColumnSchema],
    current: &[ferry_model::schema::ColumnSchema],
) -> Vec<String> {
    let mut changes = Vec::new();
    for column in planned {
        match current.iter().find(|now| now.name == column.name) {
            None => changes.push(format!("column {} removed", column.name)),
            Some(now)
                if now.column_type != column.column_type
                    || !now
                        .declared_type
                        .eq_ignore_ascii_case(&column.declared_type) =>
            {
                changes.push(format!(
                    "column {}: type {}, was {}",
                    column.name, now.declared_type, column.declared_type
                ));
            }
            Some(_) => {}
        }
    }
    for now in current {
        if !planned.iter().any(|column| column.name == now.name) {
            changes.push(format!("column {} added", now.name));
        }
    }
    changes
}

/// Refuses to go on with a stored job whose target tables (those with chunks still to
/// copy) are gone or no longer match: the chunks recorded as copied would be missing.
async fn check_targets_present(
    spec: &JobSpec,
    job: &JobRecord,
    chunks: &[ferry_coordination::ChunkRecord],
    sink: &dyn Sink,
) -> Result<(), JobError> {
    for (index, table) in job.tables.iter().enumerate() {
        let of_table = || chunks.iter().filter(|chunk| chunk.table_index == index);
        if of_table().all(|chunk| chunk.state == ChunkState::Verified) {
            continue;
        }
        let options = require_existing_options(spec, table);
        let problem = match sink
            .prepare_table(&table.schema, &table.key, &options)
            .await
        {
            Ok(_) => continue,
            Err(error) if error.kind() == ferry_connectors::ErrorKind::Unavailable => {
                return Err(JobError::SourceUnavailable {
                    job: job.id.0.clone(),
                    side: "target",
                    source: error,
                });
            }
            Err(ferry_connectors::ConnectorError::SchemaMismatch { detail, .. })
                if detail.starts_with("it does not exist") =>
            {
                "does not exist any more".to_owned()
            }
            Err(error) => format!("cannot take the rest of the job ({error})"),
        };
        return Err(JobError::TargetChanged {
            job: job.id.0.clone(),
            table: sink.target_table(&table.schema).to_string(),
            problem,
            verified: of_table()
                .filter(|chunk| chunk.state == ChunkState::Verified)
                .count(),
        });
    }
    Ok(())
}

/// How a stored table's target is checked again (resume, verify): it must exist as
/// planned, with the spec's `columns:` overrides for its columns.
pub fn require_existing_options(
    spec: &ferry_model::spec::JobSpec,
    table: &ferry_coordination::TableRecord,
) -> ferry_connectors::PrepareOptions {
    ferry_connectors::PrepareOptions {
        mode: ferry_model::spec::SchemaMode::RequireExisting,
        type_overrides: type_overrides(spec, &table.schema),
        // A table loaded without its key may still lack it (built once it is copied).
        defer_primary_key: table.key_deferred,
    }
}

/// The spec's `columns:` overrides for `schema`'s columns (column → target type).
pub fn type_overrides(
    spec: &ferry_model::spec::JobSpec,
    schema: &ferry_model::schema::TableSchema,
) -> std::collections::BTreeMap<String, String> {
    let name = &schema.name;
    schema
        .columns
        .iter()
        .filter_map(|column| {
            spec.columns
                .lookup(&name.to_string(), &name.name, &column.name)
                .map(|target_type| (column.name.clone(), target_type.to_string()))
        })
        .collect()
}
