//! Connector errors, classified so the scheduler knows whether a retry can help.

use ferry_model::ids::{Attempt, ChunkId};
use ferry_model::schema::TableName;

/// How an engine error is classified (each connector has its table, tested).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The database is away or cannot take writes: [`ErrorKind::Unavailable`].
    Unavailable,
    /// Trouble in this chunk that may pass: [`ErrorKind::Transient`].
    Transient,
    /// Retrying cannot help: [`ErrorKind::Permanent`].
    Permanent,
}

/// A boxed engine error kept as the source of a [`ConnectorError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The database does not answer, or cannot take writes (down, restarting, failing
    /// over, too many connections, a read-only standby after a switch): the chunk waits
    /// for it without counting an attempt.
    Unavailable,
    /// The same operation may succeed later in this chunk (deadlock, lock wait timeout,
    /// serialization failure).
    Transient,
    /// Retrying cannot help (bad data, missing table).
    Permanent,
    /// The source and target schemas do not fit together.
    Schema,
    /// The operation was cancelled by ferry.
    Cancelled,
    /// The target refused a commit from an attempt older than one already committed.
    Fenced,
}

/// An error from a connector, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The database could not be opened.
    #[error("cannot open {role} database {location}: {reason}")]
    Open {
        /// `source` or `target`.
        role: &'static str,
        /// A display form of the location with any credentials removed.
        location: String,
        /// Why, with the fix where known.
        reason: String,
    },
    /// The database could not be opened and retrying cannot help: TLS or authentication
    /// refused, a certificate file unreadable.
    #[error("cannot open {role} database {location}: {reason}")]
    OpenRefused {
        /// `source` or `target`.
        role: &'static str,
        /// A display form of the location with any credentials removed.
        location: String,
        /// Why, with the fix.
        reason: String,
    },
    /// A table named in the job does not exist.
    #[error("table {table} not found in the {role} database")]
    TableNotFound {
        /// `source` or `target`.
        role: &'static str,
        /// The missing table.
        table: TableName,
    },
    /// A statement failed.
    #[error(
        "failed to {operation} on table {table}: {source}{}",
        privilege_hint(source)
    )]
    Query {
        /// What ferry was doing, e.g. `read chunk`.
        operation: &'static str,
        /// The table concerned.
        table: TableName,
        /// The engine's error.
        #[source]
        source: BoxError,
        /// What a retry can do.
        failure: Failure,
    },
    /// A stored value does not fit the type ferry carries its column as.
    #[error("table {table} column {column}: {detail}")]
    ValueType {
        /// The table concerned.
        table: TableName,
        /// The column concerned.
        column: String,
        /// What was found and how to fix it.
        detail: String,
    },
    /// The target table exists but does not match the source.
    #[error("target table {table} does not match the source: {detail}")]
    SchemaMismatch {
        /// The table concerned.
        table: TableName,
        /// The differences, and the fix.
        detail: String,
    },
    /// A source column's type has no lossless mapping to this target. Build it with
    /// [`ConnectorError::type_mapping`].
    #[error(
        "table {table} column {column}: {reason}; choose a target type with \
         `columns: {{\"{table}.{column}\": \"<{target_kind} type>\"}}` in the spec, or exclude the table"
    )]
    TypeMapping {
        /// The table concerned.
        table: TableName,
        /// The column concerned.
        column: String,
        /// The target connector kind.
        target_kind: &'static str,
        /// Both types and why, e.g. `numeric (source) has no lossless mysql type: ...`.
        reason: String,
    },
    /// The source table cannot be copied as it is.
    #[error("table {table}: {detail}")]
    Unsupported {
        /// The table concerned.
        table: TableName,
        /// What is not supported, and the way around it.
        detail: String,
    },
    /// A newer attempt of the chunk already committed to the target.
    #[error(
        "chunk {chunk} of table {table}: attempt {attempt} refused, attempt {committed} already committed"
    )]
    Fenced {
        /// The table concerned.
        table: TableName,
        /// The chunk.
        chunk: ChunkId,
        /// The refused attempt.
        attempt: Attempt,
        /// The attempt already committed.
        committed: Attempt,
    },
    /// ferry cancelled the operation (shutdown); nothing was committed.
    #[error("cancelled")]
    Cancelled,
    /// A background task of the connector died.
    #[error("connector task failed: {0}")]
    Task(String),
}

impl ConnectorError {
    /// A refused type mapping: `source_type` has no lossless `target_kind` type, because
    /// `why` (may be empty).
    pub fn type_mapping(
        table: &TableName,
        column: &str,
        source_type: &str,
        target_kind: &'static str,
        why: &str,
    ) -> Self {
        let reason = if why.is_empty() {
            format!("{source_type} (source) has no lossless {target_kind} type")
        } else {
            format!("{source_type} (source) has no lossless {target_kind} type: {why}")
        };
        ConnectorError::TypeMapping {
            table: table.clone(),
            column: column.to_string(),
            target_kind,
            reason,
        }
    }

    /// A target that answers but cannot take writes (a standby after a failover, a
    /// read-only mode): unavailable until it can, `why` says which setting shows it.
    pub fn read_only_target(table: TableName, why: &'static str) -> Self {
        ConnectorError::Query {
            operation: "check the target database",
            table,
            source: format!("the target is read-only ({why}): waiting until it takes writes")
                .into(),
            failure: Failure::Unavailable,
        }
    }

    /// Classifies the error for retry decisions.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectorError::Open { .. } => ErrorKind::Unavailable,
            ConnectorError::OpenRefused { .. } | ConnectorError::TableNotFound { .. } => {
                ErrorKind::Permanent
            }
            ConnectorError::Query { failure, .. } => match failure {
                Failure::Unavailable => ErrorKind::Unavailable,
                Failure::Transient => ErrorKind::Transient,
                Failure::Permanent => ErrorKind::Permanent,
            },
            ConnectorError::ValueType { .. } | ConnectorError::Unsupported { .. } => {
                ErrorKind::Permanent
            }
            ConnectorError::SchemaMismatch { .. } | ConnectorError::TypeMapping { .. } => {
                ErrorKind::Schema
            }
            ConnectorError::Fenced { .. } => ErrorKind::Fenced,
            ConnectorError::Cancelled => ErrorKind::Cancelled,
            ConnectorError::Task(_) => ErrorKind::Transient,
        }
    }

    /// Returns whether another attempt of the same chunk may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unavailable | ErrorKind::Transient | ErrorKind::Fenced
        )
    }
}

/// Shorthand for connector results.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

/// What to do about a statement the account may not run (PostgreSQL SQLSTATE 42501,
/// MySQL/MariaDB errors 1142 to 1144: "... command denied to user"); empty otherwise.
fn privilege_hint(source: &BoxError) -> &'static str {
    let text = source.to_string();
    if text.contains("SQLSTATE 42501") || text.contains("command denied to user") {
        "; grant ferry's account the privileges it needs (source: SELECT; target: SELECT, \
         INSERT, DELETE, and CREATE for new tables), then run the job again: chunks already \
         copied stay"
    } else {
        ""
    }
}
