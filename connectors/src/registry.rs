//! Opens a connector from a job spec endpoint by its `kind`.

use std::path::PathBuf;
use std::sync::Arc;

use ferry_model::problems::Problems;
use ferry_model::spec::{EndpointSpec, JobSpec, Location, SpecContext};

use crate::error::{ConnectorError, Result};
use crate::traits::{Sink, Source};

/// Parses and validates a spec's text for this build's connectors: relative paths are
/// joined to `base_dir`, `url_env` names are looked up in `env`.
pub fn parse_spec(
    text: &str,
    base_dir: &std::path::Path,
    env: &std::collections::HashMap<String, String>,
) -> std::result::Result<JobSpec, Problems> {
    let context = SpecContext {
        base_dir,
        env,
        known_kinds: available_kinds(),
    };
    JobSpec::parse(text, &context)
}

/// The connector kinds this build can open, for spec validation and error messages.
pub fn available_kinds() -> &'static [&'static str] {
    &[
        #[cfg(feature = "sqlite")]
        "sqlite",
        #[cfg(feature = "mysql")]
        "mysql",
        #[cfg(feature = "postgres")]
        "postgres",
        #[cfg(feature = "clickhouse")]
        "clickhouse",
    ]
}

/// Opens the source of a job. The source is only ever read.
pub async fn open_source(endpoint: &EndpointSpec) -> Result<Arc<dyn Source>> {
    match endpoint.kind.as_str() {
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let (path, label) = file_path(endpoint, "source");
            let source = crate::sqlite::SqliteSource::open(path, label).await?;
            Ok(Arc::new(source))
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            let source = crate::postgres::PostgresSource::open(&endpoint.location).await?;
            Ok(Arc::new(source))
        }
        #[cfg(feature = "mysql")]
        "mysql" => {
            let zero_dates = endpoint.zero_dates.map(|mode| match mode {
                ferry_model::spec::ZeroDates::Error => crate::mysql::ZeroDates::Error,
                ferry_model::spec::ZeroDates::Null => crate::mysql::ZeroDates::Null,
            });
            let source =
                crate::mysql::MysqlSource::open_with_zero_dates(&endpoint.location, zero_dates)
                    .await?;
            Ok(Arc::new(source))
        }
        #[cfg(feature = "clickhouse")]
        "clickhouse" => {
            let source = crate::clickhouse::ClickhouseSource::open(
                &endpoint.location,
                endpoint.clickhouse.as_ref(),
            )
            .await?;
            Ok(Arc::new(source))
        }
        other => Err(unknown_kind("source", other)),
    }
}

/// Opens the target of a job.
pub async fn open_sink(endpoint: &EndpointSpec) -> Result<Arc<dyn Sink>> {
    match endpoint.kind.as_str() {
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let (path, label) = file_path(endpoint, "target");
            let sink = crate::sqlite::SqliteSink::open(path, label).await?;
            Ok(Arc::new(sink))
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            let sink = crate::postgres::PostgresSink::open(&endpoint.location).await?;
            Ok(Arc::new(sink))
        }
        #[cfg(feature = "mysql")]
        "mysql" => {
            let sink = crate::mysql::MysqlSink::open(&endpoint.location).await?;
            Ok(Arc::new(sink))
        }
        #[cfg(feature = "clickhouse")]
        "clickhouse" => {
            let sink = crate::clickhouse::ClickhouseSink::open(
                &endpoint.location,
                endpoint.clickhouse.as_ref(),
            )
            .await?;
            Ok(Arc::new(sink))
        }
        other => Err(unknown_kind("target", other)),
    }
}

/// The file a SQLite endpoint names, and how to name it in messages without printing an
/// environment variable's value.
#[cfg(feature = "sqlite")]
fn file_path(endpoint: &EndpointSpec, role: &str) -> (PathBuf, crate::sqlite::FileLabel) {
    match &endpoint.location {
        Location::Path(path) => (
            path.clone(),
            crate::sqlite::FileLabel {
                location: path.display().to_string(),
                field: format!("{role}.path"),
            },
        ),
        Location::Env { var, value } => (
            PathBuf::from(value.expose()),
            crate::sqlite::FileLabel {
                location: format!("(the file named by ${var})"),
                field: format!("{role}.url_env"),
            },
        ),
    }
}

fn unknown_kind(role: &'static str, kind: &str) -> ConnectorError {
    ConnectorError::Open {
        role,
        location: format!("of kind {kind:?}"),
        reason: format!(
            "this build has no {kind:?} connector; available: {}",
            available_kinds().join(", ")
        ),
    }
}
