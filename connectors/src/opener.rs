//! How the leader runtime and the worker agent turn a submitted job into its spec and
//! open connectors: [`JobOpener`]. A cluster parses the spec text the job was submitted
//! with ([`SpecOpener`]); `ferryctl local` hands over the connectors it opened itself
//! for its own job (so a test can wrap them) and parses the others.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use ferry_model::ids::JobId;
use ferry_model::spec::JobSpec;

use crate::registry::{open_sink, open_source, parse_spec};
use crate::traits::{Sink, Source};

/// A job's spec with its source and sink opened.
#[derive(Clone)]
pub struct OpenedJob {
    /// The validated spec.
    pub spec: JobSpec,
    /// The source.
    pub source: Arc<dyn Source>,
    /// The target.
    pub sink: Arc<dyn Sink>,
}

/// Why a job could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenJobError {
    /// The submitted spec does not validate here (e.g. a `url_env` variable is not
    /// set in this process's environment).
    #[error(
        "the spec of job {job} is invalid here (is every url_env variable set in this \
         process's environment?): {problems}"
    )]
    InvalidSpec {
        /// The job.
        job: JobId,
        /// Every problem found.
        problems: String,
    },
    /// A database could not be opened.
    #[error("job {job}: {source}")]
    Connector {
        /// The job.
        job: JobId,
        /// Why.
        #[source]
        source: crate::ConnectorError,
    },
}

impl OpenJobError {
    /// Whether opening again later may work (a database that is down).
    pub fn is_retryable(&self) -> bool {
        match self {
            OpenJobError::InvalidSpec { .. } => false,
            OpenJobError::Connector { source, .. } => source.is_retryable(),
        }
    }
}

/// Opens a submitted job.
#[async_trait]
pub trait JobOpener: Send + Sync {
    /// Parses `spec_yaml` (the text `job` was submitted with) and opens its source and
    /// sink.
    async fn open(&self, job: &JobId, spec_yaml: &str) -> Result<OpenedJob, OpenJobError>;
}

/// Opens a job from its spec text: `url_env` names are looked up in `env`, relative
/// paths are joined to `base_dir`.
pub struct SpecOpener {
    /// The environment `url_env` names are looked up in.
    pub env: HashMap<String, String>,
    /// The folder relative paths in specs are joined to.
    pub base_dir: PathBuf,
}

#[async_trait]
impl JobOpener for SpecOpener {
    async fn open(&self, job: &JobId, spec_yaml: &str) -> Result<OpenedJob, OpenJobError> {
        let spec = parse_spec(spec_yaml, &self.base_dir, &self.env).map_err(|errors| {
            OpenJobError::InvalidSpec {
                job: job.clone(),
                problems: errors.to_string(),
            }
        })?;
        let connector = |source| OpenJobError::Connector {
            job: job.clone(),
            source,
        };
        let source = open_source(&spec.source).await.map_err(connector)?;
        let sink = open_sink(&spec.target).await.map_err(connector)?;
        Ok(OpenedJob { spec, source, sink })
    }
}

/// One job opened already (`ferryctl local`'s own), other jobs through `fallback`.
pub struct PreparedOpener {
    /// The job opened already.
    pub job: JobId,
    /// Its spec and connectors.
    pub opened: OpenedJob,
    /// How every other job is opened.
    pub fallback: Arc<dyn JobOpener>,
}

#[async_trait]
impl JobOpener for PreparedOpener {
    async fn open(&self, job: &JobId, spec_yaml: &str) -> Result<OpenedJob, OpenJobError> {
        if job == &self.job {
            return Ok(self.opened.clone());
        }
        self.fallback.open(job, spec_yaml).await
    }
}
