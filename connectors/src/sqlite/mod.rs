//! SQLite, the embedded default: source and sink.
//!
//! Every operation opens its own connection on a blocking thread, so chunks read and
//! hash in parallel; SQLite serialises the writers itself (`busy_timeout`). The source
//! is opened read-only. Tables without a primary key are split on the rowid, which is
//! carried to the target so a range means the same rows on both sides.

mod read;
mod split;
mod sql;
mod write;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use ferry_model::checksum::RangeChecksum;
use ferry_model::key::{ChunkRange, KeyBound, KeyStats, SplitKey};
use ferry_model::schema::{ColumnSchema, ColumnType, TableName, TableSchema};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub use read::{MAX_BATCH_BYTES, MAX_BATCH_ROWS};
pub use sql::quote_ident;

use crate::error::{ConnectorError, Result};
use crate::traits::{
    BatchStream, ChunkWrite, PrepareOptions, PrepareOutcome, Sink, Source, WriteSummary,
};

/// The connector kind in specs.
pub const KIND: &str = "sqlite";
/// The table in the target that records the last committed attempt of each chunk.
pub const FENCE_TABLE: &str = "_ferry_fence";
/// How long a writer waits for SQLite's single write lock before giving up (transiently).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Maps a declared type to how ferry carries it, by SQLite's affinity rules (§3.1 of
/// "Datatypes In SQLite"). Columns whose affinity lets values keep any storage class
/// (NUMERIC, or no type) are carried as variants, so every value keeps its own type.
pub fn column_type_for(declared_type: &str) -> ColumnType {
    let upper = declared_type.to_ascii_uppercase();
    if upper.contains("INT") {
        ColumnType::Int64
    } else if upper.contains("CHAR") || upper.contains("CLOB") || upper.contains("TEXT") {
        ColumnType::Text
    } else if upper.contains("BLOB") {
        ColumnType::Blob
    } else if upper.trim().is_empty() {
        ColumnType::Variant
    } else if upper.contains("REAL") || upper.contains("FLOA") || upper.contains("DOUB") {
        ColumnType::Float64
    } else {
        ColumnType::Variant
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ConnectorError::Task(error.to_string()))?
}

fn query_error(
    operation: &'static str,
    table: &TableName,
) -> impl Fn(rusqlite::Error) -> ConnectorError {
    let table = table.clone();
    move |source| ConnectorError::Query {
        operation,
        table: table.clone(),
        failure: read::classify(&source),
        source: Box::new(source),
    }
}

fn open_error(role: &'static str, location: &str, reason: String) -> ConnectorError {
    ConnectorError::Open {
        role,
        location: location.to_string(),
        reason,
    }
}

/// How a database file is named in messages: its path when the spec gave a path, or the
/// environment variable that holds it (whose value ferry never prints).
#[derive(Clone, Debug)]
pub struct FileLabel {
    /// Shown as the location.
    pub location: String,
    /// The spec field to check, e.g. `source.path`.
    pub field: String,
}

fn open_read_only(role: &'static str, path: &Path, label: &FileLabel) -> Result<Connection> {
    let location = label.location.as_str();
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|error| open_error(role, location, error.to_string()))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|error| open_error(role, location, error.to_string()))?;
    // Opening is lazy: touch the schema so "file is not a database" shows up here.
    connection
        .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
        .map_err(|error| open_error(role, location, error.to_string()))?;
    Ok(connection)
}

fn open_read_write(path: &Path, label: &FileLabel) -> Result<Connection> {
    let location = label.location.as_str();
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|error| open_error("target", location, error.to_string()))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|error| open_error("target", location, error.to_string()))?;
    Ok(connection)
}

fn list_user_tables(connection: &Connection) -> rusqlite::Result<Vec<TableName>> {
    let mut statement = connection.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> ?1 ORDER BY name",
    )?;
    let names = statement
        .query_map([FENCE_TABLE], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(names.into_iter().map(TableName::bare).collect())
}

/// Describes a table; `Ok(None)` when it does not exist.
fn describe(connection: &Connection, table: &TableName) -> Result<Option<TableSchema>> {
    let on_error = query_error("describe table", table);
    let ddl: Option<String> = connection
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [&table.name],
            |row| row.get(0),
        )
        .optional()
        .map_err(&on_error)?;
    let Some(ddl) = ddl else {
        return Ok(None);
    };
    let mut statement = connection
        .prepare(
            "SELECT name, type, \"notnull\", pk, hidden FROM pragma_table_xinfo(?1) ORDER BY cid",
        )
        .map_err(&on_error)?;
    let rows = statement
        .query_map([&table.name], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, bool>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })
        .map_err(&on_error)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(&on_error)?;

    let has_rowid = !without_rowid(&ddl);
    let mut columns = Vec::with_capacity(rows.len());
    let mut key_parts: Vec<(i64, String)> = Vec::new();
    for (name, declared_type, not_null, pk_position, hidden) in rows {
        if hidden != 0 {
            return Err(ConnectorError::Unsupported {
                table: table.clone(),
                detail: format!(
                    "column {name} is a generated or hidden column, which ferry cannot copy yet; \
                     exclude the table and copy it another way"
                ),
            });
        }
        if pk_position > 0 {
            key_parts.push((pk_position, name.clone()));
        }
        columns.push(ColumnSchema {
            column_type: column_type_for(&declared_type),
            declared_type,
            nullable: !not_null,
            name,
        });
    }
    key_parts.sort();
    let primary_key: Vec<String> = key_parts.into_iter().map(|(_, name)| name).collect();
    // An INTEGER PRIMARY KEY is the rowid itself and never NULL; so is every key column
    // of a WITHOUT ROWID table. Other key columns of rowid tables may hold NULL.
    let rowid_alias = has_rowid
        && primary_key.len() == 1
        && columns.iter().any(|column| {
            column.name == primary_key[0] && column.declared_type.eq_ignore_ascii_case("INTEGER")
        });
    for column in &mut columns {
        if primary_key.contains(&column.name) && (rowid_alias || !has_rowid) {
            column.nullable = false;
        }
    }
    Ok(Some(TableSchema {
        name: table.clone(),
        columns,
        primary_key,
        has_rowid,
        source_kind: KIND.to_string(),
        native_ddl: Some(ddl),
        partitioning: None,
        partition: None,
        split_columns: Vec::new(),
    }))
}

/// Whether a CREATE TABLE statement ends with the `WITHOUT ROWID` table option.
fn without_rowid(ddl: &str) -> bool {
    let Some(close) = ddl.rfind(')') else {
        return false;
    };
    let options = ddl[close + 1..].to_ascii_uppercase();
    let words: Vec<&str> = options
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|word| !word.is_empty())
        .collect();
    words.windows(2).any(|pair| pair == ["WITHOUT", "ROWID"])
}

/// A SQLite database read as a source. Opened read-only: ferry never writes to it.
pub struct SqliteSource {
    path: PathBuf,
    label: FileLabel,
}

impl SqliteSource {
    /// Opens a source database, which must exist.
    pub async fn open(path: PathBuf, label: FileLabel) -> Result<Self> {
        if !path.is_file() {
            return Err(open_error(
                "source",
                &label.location,
                format!("no such file; check {} in the spec", label.field),
            ));
        }
        let probe_path = path.clone();
        let probe_label = label.clone();
        blocking(move || open_read_only("source", &probe_path, &probe_label).map(drop)).await?;
        Ok(Self { path, label })
    }

    fn connect(&self) -> Result<Connection> {
        open_read_only("source", &self.path, &self.label)
    }
}

#[async_trait]
impl Source for SqliteSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn list_tables(&self) -> Result<Vec<TableName>> {
        let connection = self.connect()?;
        blocking(move || {
            list_user_tables(&connection).map_err(|source| ConnectorError::Query {
                operation: "list tables",
                table: TableName::bare("sqlite_schema"),
                failure: read::classify(&source),
                source: Box::new(source),
            })
        })
        .await
    }

    async fn describe_table(&self, table: &TableName) -> Result<TableSchema> {
        let connection = self.connect()?;
        let table = table.clone();
        blocking(move || {
            describe(&connection, &table)?.ok_or(ConnectorError::TableNotFound {
                role: "source",
                table,
            })
        })
        .await
    }

    async fn key_stats(&self, table: &TableSchema, key: &SplitKey) -> Result<KeyStats> {
        let connection = self.connect()?;
        let table = table.clone();
        let key = key.clone();
        blocking(move || split::key_stats(&connection, &table, &key)).await
    }

    async fn key_boundaries(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        every_rows: u64,
    ) -> Result<Vec<KeyBound>> {
        let connection = self.connect()?;
        let table = table.clone();
        let key = key.clone();
        blocking(move || split::key_boundaries(&connection, &table, &key, every_rows)).await
    }

    async fn probe_load_sql(&self, sql: &str) -> Result<Option<f64>> {
        // The source is opened read-only, so a probe cannot write.
        let connection = self.connect()?;
        let sql = sql.to_string();
        blocking(move || {
            let value: rusqlite::types::Value = connection
                .query_row(&sql, [], |row| row.get(0))
                .map_err(|source| ConnectorError::Query {
                    operation: "run the load probe",
                    table: TableName::bare("load probe"),
                    failure: read::classify(&source),
                    source: Box::new(source),
                })?;
            match value {
                rusqlite::types::Value::Integer(number) => Ok(Some(number as f64)),
                rusqlite::types::Value::Real(number) if number.is_finite() => Ok(Some(number)),
                other => Err(ConnectorError::Task(format!(
                    "the load probe must return one number, got {other:?}"
                ))),
            }
        })
        .await
    }

    async fn read_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<BatchStream> {
        let connection = self.connect()?;
        let table = table.clone();
        let key = key.clone();
        let range = range.clone();
        // Two batches in flight: the reader stays one ahead of the writer, no more.
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            let error_tx = batch_tx.clone();
            let outcome = read::read_range(&connection, &table, &key, &range, |batch| {
                // A closed channel means the stream was dropped: stop reading.
                batch_tx.blocking_send(Ok(batch)).is_ok()
            });
            if let Err(error) = outcome {
                let _ = error_tx.blocking_send(Err(error));
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            batch_rx,
        )))
    }
}

/// The target table for a source table: the same name in SQLite's `main` database,
/// whatever schema the source had (a PostgreSQL `public.t` becomes `t`).
fn in_main(table: &TableSchema) -> TableSchema {
    let mut target = table.clone();
    target.name.schema = None;
    target
}

/// A SQLite database written as a target.
pub struct SqliteSink {
    path: PathBuf,
    label: FileLabel,
}

impl SqliteSink {
    /// Opens (creating if needed) a target database.
    pub async fn open(path: PathBuf, label: FileLabel) -> Result<Self> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.is_dir()
        {
            return Err(open_error(
                "target",
                &label.location,
                format!(
                    "its directory does not exist; create it first, or check {}",
                    label.field
                ),
            ));
        }
        let probe_path = path.clone();
        let probe_label = label.clone();
        blocking(move || {
            let connection = open_read_write(&probe_path, &probe_label)?;
            connection
                .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                .map_err(|error| open_error("target", &probe_label.location, error.to_string()))
        })
        .await?;
        Ok(Self { path, label })
    }
}

#[async_trait]
impl Sink for SqliteSink {
    async fn read_back(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<BatchStream> {
        let connection = open_read_only("target", &self.path, &self.label)?;
        let table = in_main(table);
        let key = key.clone();
        let range = range.clone();
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            let error_tx = batch_tx.clone();
            let outcome = read::read_range(&connection, &table, &key, &range, |batch| {
                batch_tx.blocking_send(Ok(batch)).is_ok()
            });
            if let Err(error) = outcome {
                let _ = error_tx.blocking_send(Err(error));
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            batch_rx,
        )))
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    async fn ping(&self) -> Result<()> {
        let path = self.path.clone();
        blocking(move || {
            Connection::open(&path)
                .and_then(|connection| connection.query_row("SELECT 1", [], |_| Ok(())))
                .map_err(|source| ConnectorError::Query {
                    operation: "check the target database",
                    table: TableName::bare("sqlite_schema"),
                    failure: read::classify(&source),
                    source: Box::new(source),
                })
        })
        .await
    }

    fn can_carry_rowid(&self) -> bool {
        true
    }

    fn target_table(&self, table: &TableSchema) -> TableName {
        in_main(table).name
    }

    async fn prepare_table(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        options: &PrepareOptions,
    ) -> Result<PrepareOutcome> {
        let connection = open_read_write(&self.path, &self.label)?;
        let table = in_main(table);
        let key = key.clone();
        let options = options.clone();
        blocking(move || write::prepare_table(&connection, &table, &key, &options)).await
    }

    async fn write_chunk(
        &self,
        chunk: ChunkWrite<'_>,
        batches: BatchStream,
    ) -> Result<WriteSummary> {
        let mut connection = open_read_write(&self.path, &self.label)?;
        let table = in_main(chunk.table);
        let key = chunk.key.clone();
        let range = chunk.range.clone();
        let fence = chunk.fence.clone();
        let cancel = chunk.cancel.clone();
        blocking(move || {
            write::write_chunk(
                &mut connection,
                &table,
                &key,
                &range,
                &fence,
                &cancel,
                batches,
            )
        })
        .await
    }

    async fn checksum_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<RangeChecksum> {
        let connection = open_read_only("target", &self.path, &self.label)?;
        let table = in_main(table);
        let key = key.clone();
        let range = range.clone();
        blocking(move || {
            let mut checksum = RangeChecksum::default();
            let mut failure = None;
            read::read_range(&connection, &table, &key, &range, |batch| {
                match checksum.add_batch(&batch) {
                    Ok(()) => true,
                    Err(error) => {
                        failure = Some(error);
                        false
                    }
                }
            })?;
            match failure {
                Some(error) => Err(ConnectorError::Task(format!(
                    "failed to checksum table {}: {error}",
                    table.name
                ))),
                None => Ok(checksum),
            }
        })
        .await
    }

    async fn count_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<u64> {
        let connection = open_read_only("target", &self.path, &self.label)?;
        let table = in_main(table);
        let key = key.clone();
        let range = range.clone();
        blocking(move || split::count_range(&connection, &table, &key, &range)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_rules_pick_the_carrier_type() {
        assert_eq!(column_type_for("INTEGER"), ColumnType::Int64);
        assert_eq!(column_type_for("bigint"), ColumnType::Int64);
        assert_eq!(column_type_for("VARCHAR(20)"), ColumnType::Text);
        assert_eq!(column_type_for("BLOB"), ColumnType::Blob);
        assert_eq!(column_type_for(""), ColumnType::Variant);
        assert_eq!(column_type_for("DOUBLE PRECISION"), ColumnType::Float64);
        assert_eq!(column_type_for("NUMERIC"), ColumnType::Variant);
        assert_eq!(column_type_for("DATETIME"), ColumnType::Variant);
        // "FLOATING POINT" has INT in it: SQLite says INTEGER affinity, and so do we.
        assert_eq!(column_type_for("FLOATING POINT"), ColumnType::Int64);
    }

    #[test]
    fn without_rowid_is_read_from_the_table_options() {
        assert!(without_rowid(
            "CREATE TABLE t (a PRIMARY KEY) WITHOUT ROWID"
        ));
        assert!(without_rowid(
            "CREATE TABLE t (a PRIMARY KEY) without  rowid, STRICT"
        ));
        assert!(!without_rowid("CREATE TABLE t (a, \"without rowid\")"));
        assert!(!without_rowid("CREATE TABLE t (a) STRICT"));
    }
}
