//! Creates target tables and writes chunks with overwrite, fenced, in one transaction.
//!
//! A chunk is written in one InnoDB transaction:
//! 1. before it, on the write connection: once per sink `CREATE TABLE IF NOT EXISTS
//!    _ferry_fence`; the attempt's named lock `GET_LOCK('ferry:{run}:{chunk}:{attempt}',
//!    0)` (see [`Fence::attempt_tag`]); `KILL CONNECTION` of every session holding the
//!    lock of an older attempt of the same run and chunk (found with `IS_USED_LOCK` in
//!    one statement): a worker stopped or cut off mid-chunk, whose open transaction holds
//!    the fence row and would block this attempt until its TCP connection times out.
//!    Best effort: killing another user's session needs `CONNECTION ADMIN` (MySQL:
//!    `CONNECTION_ADMIN`) or `SUPER`, the same user needs nothing; without it this
//!    attempt logs a warning and waits as before. Then a placeholder
//!    fence row `(run_id, chunk, attempt 0)` so the lock below is a record lock rather
//!    than a gap lock two attempts could both take;
//! 2. `SELECT attempt ... FOR UPDATE`: a higher committed attempt refuses this one;
//! 3. `DELETE` the chunk's range, when a consistent read finds a row in it (on an empty
//!    range a DELETE would only wait for a neighbouring chunk's uncommitted rows);
//! 4. `LOAD DATA LOCAL INFILE` fed from the batch stream through an infile handler (no
//!    temporary file), or multi-row INSERTs under `max_allowed_packet` when LOCAL INFILE
//!    is refused (or `ferry_write_method=insert`);
//! 5. record the attempt in the fence row, check for cancellation, `COMMIT`;
//! 6. (after `COMMIT` or `ROLLBACK`) `RELEASE_LOCK` of the attempt's lock: named locks
//!    belong to the session, not the transaction, and the connection goes back to the
//!    pool.
//!
//! `LOAD DATA LOCAL` turns data errors into warnings and skips duplicate keys (the
//! server cannot stop the client's stream half-way), so any warning, or fewer rows loaded
//! than sent, fails the chunk with the server's own words.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use ferry_model::ids::Attempt;
use ferry_model::key::SplitKey;
use ferry_model::schema::{ColumnSchema, ColumnType, TableName, TableSchema};
use ferry_model::spec::SchemaMode;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use tokio_util::sync::CancellationToken;

use super::config::WriteMethod;
use super::describe::{self, describe};
use super::encode::{BatchColumns, load_data_columns};
use super::infile::tsv_stream;
use super::sql::{
    STATEMENT_TAG, data_table, key_columns, quote_ident, quote_string, quote_table, range_predicate,
};
use super::{FENCE_TABLE, KIND, Shared, query_error};
use crate::compat::{Differences, column_type_difference};
use crate::error::{ConnectorError, Failure, Result};
use crate::traits::{BatchStream, ChunkWrite, Fence, PrepareOptions, PrepareOutcome, WriteSummary};

/// The most an index key may hold in InnoDB (DYNAMIC rows), in bytes.
const MAX_KEY_BYTES: u32 = 3072;
/// `ER_NO_SUCH_THREAD`: `KILL` of a connection that is gone.
const ER_NO_SUCH_THREAD: u16 = 1094;
/// Bytes per character of utf8mb4.
const UTF8MB4_BYTES: u32 = 4;
/// Cap on one INSERT statement of the fallback, below `max_allowed_packet`.
const MAX_INSERT_BYTES: usize = 16 << 20;
/// Room left in a packet for the statement's head.
const PACKET_MARGIN_BYTES: usize = 64 << 10;
/// `sql_mode` for running a MySQL source's own DDL: strict, but accepting the zero-date
/// defaults old schemas carry.
const DDL_SQL_MODE: &str =
    "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO";

/// A statement the server answered in an unexpected way (warnings, missing rows).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadRefused(pub String);

/// The MySQL type a column is created with (`None` when it has no lossless one).
fn mysql_type_for(
    table: &TableName,
    column: &ColumnSchema,
    key_share_bytes: Option<u32>,
    nopad_collation: Option<&str>,
) -> Result<String> {
    let refuse = |why: &str| {
        ConnectorError::type_mapping(table, &column.name, &column.declared_type, KIND, why)
    };
    let labels = |labels: &[String], kind: &str, max: usize| -> Result<String> {
        if labels.is_empty() || labels.len() > max {
            return Err(refuse(&format!("a MySQL {kind} holds 1 to {max} labels")));
        }
        if kind == "set" && labels.iter().any(|label| label.contains(',')) {
            return Err(refuse("a MySQL set label cannot contain a comma"));
        }
        let quoted: Vec<String> = labels.iter().map(|label| quote_string(label)).collect();
        Ok(format!("{kind}({})", quoted.join(",")))
    };
    Ok(match &column.column_type {
        ColumnType::Bool => "tinyint(1)".to_string(),
        ColumnType::Int8 => "tinyint".to_string(),
        ColumnType::Int16 => "smallint".to_string(),
        ColumnType::Int32 => "int".to_string(),
        ColumnType::Int64 => "bigint".to_string(),
        ColumnType::UInt8 => "tinyint unsigned".to_string(),
        ColumnType::UInt16 => "smallint unsigned".to_string(),
        ColumnType::UInt32 => "int unsigned".to_string(),
        ColumnType::UInt64 => "bigint unsigned".to_string(),
        ColumnType::Float32 => "float".to_string(),
        ColumnType::Float64 => "double".to_string(),
        ColumnType::Decimal {
            precision: Some(precision),
            scale,
        } => {
            let scale = scale.unwrap_or(0);
            if *precision > 65 || !(0..=30).contains(&scale) || scale as u32 > *precision {
                return Err(refuse(
                    "MySQL decimals hold at most 65 digits, 30 after the point",
                ));
            }
            format!("decimal({precision},{scale})")
        }
        ColumnType::Decimal {
            precision: None, ..
        } => {
            return Err(refuse(
                "an unconstrained decimal may exceed MySQL's 65 digits (30 after the point) \
                 and hold NaN or infinities, e.g. choose \"decimal(65,30)\" if the values fit",
            ));
        }
        ColumnType::Text => match key_share_bytes {
            Some(bytes) => {
                let characters = (bytes / UTF8MB4_BYTES).max(1);
                let collation = nopad_collation.unwrap_or("utf8mb4_bin");
                format!("varchar({characters}) COLLATE {collation}")
            }
            None => "longtext".to_string(),
        },
        ColumnType::Blob => match key_share_bytes {
            Some(bytes) => format!("varbinary({})", bytes.max(1)),
            None => "longblob".to_string(),
        },
        ColumnType::Date => "date".to_string(),
        ColumnType::Time => "time(6)".to_string(),
        ColumnType::Timestamp | ColumnType::TimestampTz => "datetime(6)".to_string(),
        ColumnType::Uuid => "binary(16)".to_string(),
        ColumnType::Json | ColumnType::Array { .. } => "json".to_string(),
        ColumnType::Enum { labels: values } => labels(values, "enum", 65_535)?,
        ColumnType::Set { labels: values } => labels(values, "set", 64)?,
        ColumnType::Bit { width } if (1..=64).contains(width) => format!("bit({width})"),
        ColumnType::Bit { .. } => return Err(refuse("a MySQL bit holds 1 to 64 bits")),
        ColumnType::Year => "year".to_string(),
        ColumnType::TimeTz => {
            return Err(refuse("MySQL has no time with a time zone offset"));
        }
        ColumnType::Interval => return Err(refuse("MySQL has no interval type")),
        ColumnType::Variant => {
            return Err(refuse(
                "its values have no fixed type, while every MySQL column has one",
            ));
        }
    })
}

/// The bytes a key column of a fixed-width type takes in an index.
fn fixed_key_bytes(column_type: &ColumnType) -> Option<u32> {
    Some(match column_type {
        ColumnType::Text | ColumnType::Blob => return None,
        ColumnType::Decimal { .. } => 30,
        ColumnType::Uuid => 16,
        _ => 8,
    })
}

/// The type `describe` reports for a column created from `source` by [`mysql_type_for`].
fn created_type(source: &ColumnType) -> ColumnType {
    match source {
        ColumnType::Bool => ColumnType::Int8,
        ColumnType::Uuid => ColumnType::Blob,
        ColumnType::TimestampTz => ColumnType::Timestamp,
        ColumnType::Array { .. } => ColumnType::Json,
        other => other.clone(),
    }
}

/// The CREATE TABLE statement for `table` in `database`: the source's own statement when
/// the source is MySQL and no type is overridden, else one built from the columns (with
/// a MySQL source's declared types for the columns not overridden; its generated columns
/// are then left out).
pub fn create_table_sql(
    database: &str,
    table: &TableSchema,
    type_overrides: &BTreeMap<String, String>,
    nopad_collation: Option<&str>,
) -> Result<(String, bool)> {
    let same_engine = table.source_kind == KIND;
    if same_engine
        && type_overrides.is_empty()
        && let Some(ddl) = &table.native_ddl
    {
        return Ok((ddl.clone(), true));
    }
    let key_types: Vec<&ColumnType> = table
        .primary_key
        .iter()
        .filter_map(|name| table.column(name))
        .filter(|column| !type_overrides.contains_key(&column.name))
        .map(|column| &column.column_type)
        .collect();
    let fixed: u32 = key_types.iter().filter_map(|t| fixed_key_bytes(t)).sum();
    let variable = key_types
        .iter()
        .filter(|t| fixed_key_bytes(t).is_none())
        .count() as u32;
    let key_share_bytes = MAX_KEY_BYTES.saturating_sub(fixed) / variable.max(1);

    let mut parts = Vec::with_capacity(table.columns.len() + 1);
    for column in &table.columns {
        let declared = match type_overrides.get(&column.name) {
            Some(target_type) => target_type.clone(),
            // A MySQL source's own column types, when some column is overridden.
            None if same_engine => column.declared_type.clone(),
            None => {
                let in_key = table.primary_key.contains(&column.name);
                let mapped = mysql_type_for(
                    &table.name,
                    column,
                    in_key.then_some(key_share_bytes),
                    nopad_collation,
                )?;
                if in_key && matches!(column.column_type, ColumnType::Text | ColumnType::Blob) {
                    tracing::warn!(
                        table = %table.name,
                        column = %column.name,
                        target_type = %mapped,
                        "a key column becomes {mapped} (MySQL cannot index long text); longer \
                         values fail the chunk: choose a type with `columns:` if needed"
                    );
                }
                mapped
            }
        };
        let mut part = format!("{} {declared}", quote_ident(&column.name));
        if !column.nullable {
            part.push_str(" NOT NULL");
        }
        parts.push(part);
    }
    if !table.primary_key.is_empty() {
        let key: Vec<String> = table
            .primary_key
            .iter()
            .map(|name| quote_ident(name))
            .collect();
        parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    Ok((
        format!(
            "CREATE TABLE {} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            quote_table(database, &table.name.name),
            parts.join(", ")
        ),
        false,
    ))
}

/// Creates, checks or recreates the target table per `options.mode`.
pub async fn prepare_table(
    shared: &Shared,
    table: &TableSchema,
    key: &SplitKey,
    options: &PrepareOptions,
) -> Result<PrepareOutcome> {
    let database = shared.config.database.as_str();
    {
        let mut prepared = shared
            .prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let claimed = prepared
            .entry(table.name.name.clone())
            .or_insert_with(|| table.name.clone());
        if *claimed != table.name {
            return Err(ConnectorError::SchemaMismatch {
                table: table.name.clone(),
                detail: format!(
                    "source tables {claimed} and {} would both be written to {}.{} in the \
                     target; exclude one of them with `tables.exclude`",
                    table.name, database, table.name.name
                ),
            });
        }
    }
    let mut conn = shared.conn("target", &table.name).await?;
    let on_error = query_error("prepare table", &table.name);
    let existing = describe(&mut conn, database, &table.name.name, shared.is_mariadb).await?;
    let (create_sql, native) = create_table_sql(
        database,
        table,
        &options.type_overrides,
        shared.nopad_collation.as_deref(),
    )?;
    match (options.mode, existing) {
        (SchemaMode::Recreate, existing) => {
            conn.query_drop(format!(
                "{STATEMENT_TAG}DROP TABLE IF EXISTS {}",
                quote_table(database, &table.name.name)
            ))
            .await
            .map_err(&on_error)?;
            run_create(&mut conn, &table.name, &create_sql, native).await?;
            Ok(if existing.is_some() {
                PrepareOutcome::Recreated
            } else {
                PrepareOutcome::Created
            })
        }
        (SchemaMode::RequireExisting, None) => Err(ConnectorError::SchemaMismatch {
            table: table.name.clone(),
            detail: format!(
                "it does not exist in the target database {database}; create it, or set \
                 `schema: create_if_missing`"
            ),
        }),
        (SchemaMode::CreateIfMissing, None) => {
            run_create(&mut conn, &table.name, &create_sql, native).await?;
            Ok(PrepareOutcome::Created)
        }
        (_, Some(existing)) => {
            check_compatible(table, &existing, key, &options.type_overrides)?;
            // Partition chunks write with `PARTITION (p)`: the target must have the
            // source's partitions, or a chunk would fail, or miss rows of its range.
            if let Some(partitioning) = &table.partitioning {
                let differences = partitioning.differences(existing.partitioning.as_ref());
                if !differences.is_empty() {
                    return Err(ConnectorError::SchemaMismatch {
                        table: table.name.clone(),
                        detail: format!(
                            "its partitions differ from the source's: {}; ferry copies a \
                             partitioned table partition by partition, so fix the target's \
                             partitions or set `schema: recreate`",
                            differences.join("; ")
                        ),
                    });
                }
            }
            Ok(PrepareOutcome::Existing)
        }
    }
}

/// Runs a CREATE TABLE statement. The source's own statement is unqualified: it runs in
/// the URL's database, the connection's default, with zero-date defaults allowed.
async fn run_create(
    conn: &mut Conn,
    table: &TableName,
    create_sql: &str,
    native: bool,
) -> Result<()> {
    let on_error = query_error("create table", table);
    if native {
        conn.query_drop(format!("SET SESSION sql_mode = '{DDL_SQL_MODE}'"))
            .await
            .map_err(&on_error)?;
    }
    let created = conn
        .query_drop(format!("{STATEMENT_TAG}{create_sql}"))
        .await;
    if native {
        conn.query_drop(format!(
            "SET SESSION sql_mode = '{}'",
            super::SESSION_SQL_MODE
        ))
        .await
        .map_err(&on_error)?;
    }
    created.map_err(&on_error)
}

fn check_compatible(
    source: &TableSchema,
    target: &TableSchema,
    key: &SplitKey,
    type_overrides: &BTreeMap<String, String>,
) -> Result<()> {
    let mut differences = Differences::default();
    let source_names: Vec<&str> = source.columns.iter().map(|c| c.name.as_str()).collect();
    let target_names: Vec<&str> = target.columns.iter().map(|c| c.name.as_str()).collect();
    differences.columns(
        &source_names,
        &target_names,
        " (generated columns not counted)",
        |index| {
            let (source_column, target_column) = (&source.columns[index], &target.columns[index]);
            let fits = type_overrides.contains_key(&source_column.name)
                || target_column.column_type == source_column.column_type
                || target_column.column_type == created_type(&source_column.column_type);
            (!fits).then(|| {
                column_type_difference(
                    &source_column.name,
                    &source_column.declared_type,
                    &target_column.declared_type,
                )
            })
        },
    );
    differences.primary_key(&source.primary_key, &target.primary_key);
    if matches!(key, SplitKey::Rowid) {
        differences.push("the source is split on a SQLite rowid, which MySQL cannot hold");
    }
    differences.into_result(&source.name)
}

pub(super) async fn next_batch(
    batches: &mut BatchStream,
    cancel: &CancellationToken,
) -> Result<Option<RecordBatch>> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(ConnectorError::Cancelled),
        item = batches.next() => item.transpose(),
    }
}

/// Writes one chunk (see the module documentation).
pub async fn write_chunk(
    shared: &Shared,
    chunk: ChunkWrite<'_>,
    mut batches: BatchStream,
) -> Result<WriteSummary> {
    let table = chunk.table;
    let on_error = query_error("write chunk", &table.name);
    // Wait for the first batch before taking locks, so a slow source scan does not hold
    // locks in the target.
    let first = next_batch(&mut batches, chunk.cancel).await?;
    let mut conn = shared.conn("target", &table.name).await?;
    let fence_table = quote_table(&shared.config.database, FENCE_TABLE);
    if !shared.fence_ready.load(Ordering::Acquire) {
        conn.query_drop(format!(
            "{STATEMENT_TAG}CREATE TABLE IF NOT EXISTS {fence_table} (\
             run_id VARCHAR(255) NOT NULL, chunk BIGINT UNSIGNED NOT NULL, \
             table_name TEXT NOT NULL, attempt BIGINT UNSIGNED NOT NULL, \
             committed_at DATETIME(6) NOT NULL, PRIMARY KEY (run_id, chunk)) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ))
        .await
        .map_err(&on_error)?;
        shared.fence_ready.store(true, Ordering::Release);
    }
    // Before touching the fence row, which a stopped older attempt may hold locked.
    let lock = AttemptLock::take(&mut conn, chunk.fence).await;
    let outcome: Result<WriteSummary> = async {
        let fence = chunk.fence;
        conn.exec_drop(
            format!(
                "{STATEMENT_TAG}INSERT INTO {fence_table} (run_id, chunk, table_name, attempt, committed_at) \
                 VALUES (?, ?, ?, 0, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE run_id = run_id"
            ),
            (fence.run_id.as_str(), fence.chunk.0, table.name.to_string()),
        )
        .await
        .map_err(&on_error)?;
        if shared.read_committed {
            conn.query_drop("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .await
                .map_err(&on_error)?;
        }
        conn.query_drop("START TRANSACTION")
            .await
            .map_err(&on_error)?;
        let outcome = write_in_transaction(shared, &mut conn, &chunk, first, batches).await;
        match outcome {
            Ok(summary) => {
                conn.query_drop("COMMIT").await.map_err(&on_error)?;
                Ok(summary)
            }
            Err(error) => {
                // A broken connection rolls back by itself; the pool discards it.
                if let Err(rollback_error) = conn.query_drop("ROLLBACK").await {
                    tracing::debug!(error = %rollback_error, "rollback after a failed write failed");
                }
                Err(error)
            }
        }
    }
    .await;
    // Named locks outlive transactions: a pooled connection that kept it would be killed
    // by a later attempt of this chunk while writing another one. (The pool's
    // COM_RESET_CONNECTION releases it too, but only once the connection is back.)
    lock.release(&mut conn).await;
    outcome
}

/// The named lock (`GET_LOCK`) an attempt holds on its write connection from before it
/// touches the fence row until after its `COMMIT` or `ROLLBACK`, so that a newer attempt
/// of the chunk can find the session by the lock's name ([`Fence::attempt_tag`]) and end
/// it. An older attempt still connected is a worker that was cut off or stopped
/// mid-chunk: its open transaction holds the fence row's lock and would block the newer
/// attempt (`innodb_lock_wait_timeout`, then a retry that waits again) until its TCP
/// connection times out (hours). Killed, its transaction rolls back and can no longer
/// commit.
struct AttemptLock {
    /// The lock's name, when this session holds it.
    held: Option<String>,
}

impl AttemptLock {
    /// Takes this attempt's lock, then kills the sessions holding an older attempt's
    /// lock of the same run and chunk. Best effort: without the privilege to kill
    /// another user's session (MariaDB `CONNECTION ADMIN`, MySQL `CONNECTION_ADMIN`, or
    /// `SUPER`) this attempt waits as before, with a warning.
    async fn take(conn: &mut Conn, fence: &Fence) -> Self {
        let name = fence.attempt_tag(fence.attempt);
        let taken: std::result::Result<Option<Value>, _> = conn
            .query_first(format!(
                "{STATEMENT_TAG}SELECT GET_LOCK({}, 0)",
                quote_string(&name)
            ))
            .await;
        let held = match taken.map(|value| value.and_then(describe::text_of)) {
            Ok(Some(answer)) if answer == "1" => Some(name),
            Ok(_) => {
                // Only another session of this very attempt could hold it.
                tracing::debug!(lock = %name, "the attempt's lock is held by another session");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "cannot take the attempt's lock");
                None
            }
        };
        if let Some(statement) = older_sessions_sql(fence) {
            end_older_attempts(conn, fence, &statement).await;
        }
        Self { held }
    }

    /// Releases the lock; a broken connection has lost it already.
    async fn release(self, conn: &mut Conn) {
        if let Some(name) = self.held
            && let Err(error) = conn
                .query_drop(format!(
                    "{STATEMENT_TAG}DO RELEASE_LOCK({})",
                    quote_string(&name)
                ))
                .await
        {
            tracing::debug!(%error, lock = %name, "releasing the attempt's lock failed");
        }
    }
}

/// One statement listing the connection ids holding the lock of an older attempt of
/// `fence`'s chunk (other than this session), or `None` for a first attempt.
fn older_sessions_sql(fence: &Fence) -> Option<String> {
    let holders: Vec<String> = (1..fence.attempt.0)
        .map(|older| {
            format!(
                "SELECT IS_USED_LOCK({}) AS id",
                quote_string(&fence.attempt_tag(Attempt(older)))
            )
        })
        .collect();
    if holders.is_empty() {
        return None;
    }
    Some(format!(
        "{STATEMENT_TAG}SELECT DISTINCT id FROM ({}) AS older \
         WHERE id IS NOT NULL AND id <> CONNECTION_ID()",
        holders.join(" UNION ALL ")
    ))
}

/// Kills the sessions `statement` lists (see [`AttemptLock::take`]).
async fn end_older_attempts(conn: &mut Conn, fence: &Fence, statement: &str) {
    let holders: Vec<u64> = match conn.query::<Value, _>(statement).await {
        Ok(values) => values
            .into_iter()
            .filter_map(|value| describe::text_of(value)?.parse().ok())
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "cannot find older attempts' sessions");
            return;
        }
    };
    let mut ended = 0_usize;
    for id in holders {
        match conn
            .query_drop(format!("{STATEMENT_TAG}KILL CONNECTION {id}"))
            .await
        {
            Ok(()) => ended += 1,
            // Gone meanwhile.
            Err(mysql_async::Error::Server(error)) if error.code == ER_NO_SUCH_THREAD => {}
            Err(error) => tracing::warn!(
                %error,
                connection = id,
                "cannot end an older attempt's session (killing another user's session \
                 needs CONNECTION ADMIN, CONNECTION_ADMIN on MySQL, or SUPER): waiting for it"
            ),
        }
    }
    if ended > 0 {
        tracing::warn!(
            chunk = %fence.chunk,
            attempt = %fence.attempt,
            sessions = ended,
            "ended the target sessions of older attempts of this chunk"
        );
    }
}

async fn write_in_transaction(
    shared: &Shared,
    conn: &mut Conn,
    chunk: &ChunkWrite<'_>,
    first: Option<RecordBatch>,
    batches: BatchStream,
) -> Result<WriteSummary> {
    let table = chunk.table;
    let fence = chunk.fence;
    let on_error = query_error("write chunk", &table.name);
    let fence_table = quote_table(&shared.config.database, FENCE_TABLE);
    let committed: Option<Value> = conn
        .exec_first(
            format!(
                "{STATEMENT_TAG}SELECT attempt FROM {fence_table} WHERE run_id = ? AND chunk = ? FOR UPDATE"
            ),
            (fence.run_id.as_str(), fence.chunk.0),
        )
        .await
        .map_err(&on_error)?;
    let committed = match committed {
        Some(Value::Int(v)) => u64::try_from(v).unwrap_or(0),
        Some(Value::UInt(v)) => v,
        _ => 0,
    };
    if committed > u64::from(fence.attempt.0) {
        return Err(ConnectorError::Fenced {
            table: table.name.clone(),
            chunk: fence.chunk,
            attempt: fence.attempt,
            committed: Attempt(u32::try_from(committed).unwrap_or(u32::MAX)),
        });
    }

    let database = shared.config.database.as_str();
    let key_columns = key_columns(table, chunk.key)?;
    let (predicate, params) = range_predicate(table, &key_columns, chunk.key, chunk.range)?;
    // A consistent (non-locking) read first: it waits for no one, and sees every
    // committed earlier attempt (its snapshot starts after the fence lock above). When
    // the range holds nothing, the DELETE is skipped: InnoDB's range DELETE locks the
    // first row past the range even at READ COMMITTED, so on an empty range it would
    // only wait for the neighbouring chunk's uncommitted rows.
    let occupied: Option<u8> = conn
        .exec_first(
            format!(
                "{STATEMENT_TAG}SELECT 1 FROM {} WHERE {predicate} LIMIT 1",
                data_table(database, table)
            ),
            params.clone(),
        )
        .await
        .map_err(&on_error)?;
    let rows_deleted = if occupied.is_some() {
        conn.exec_drop(
            format!(
                "{STATEMENT_TAG}DELETE FROM {} WHERE {predicate}",
                data_table(database, table)
            ),
            params,
        )
        .await
        .map_err(&on_error)?;
        conn.affected_rows()
    } else {
        0
    };

    let use_load_data = shared.config.write_method == WriteMethod::Auto
        && !shared.local_infile_refused.load(Ordering::Acquire);
    let rows_written = if first.is_none() {
        // The stream ended before its first batch: nothing to insert.
        0
    } else if use_load_data {
        match load_data(conn, database, chunk, first, batches).await? {
            LoadOutcome::Loaded(rows) => rows,
            LoadOutcome::Refused {
                first,
                batches,
                code,
            } => {
                if !shared.local_infile_refused.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        target_database = %shared.config.label,
                        code,
                        "the target refuses LOAD DATA LOCAL INFILE: writing with multi-row INSERTs \
                         (slower); enable local_infile on the server to load faster"
                    );
                }
                insert_rows(shared, conn, chunk, first, batches).await?
            }
        }
    } else {
        insert_rows(shared, conn, chunk, first, batches).await?
    };

    conn.exec_drop(
        format!(
            "{STATEMENT_TAG}UPDATE {fence_table} SET attempt = ?, table_name = ?, \
             committed_at = UTC_TIMESTAMP(6) WHERE run_id = ? AND chunk = ?"
        ),
        (
            fence.attempt.0,
            table.name.to_string(),
            fence.run_id.as_str(),
            fence.chunk.0,
        ),
    )
    .await
    .map_err(&on_error)?;
    if chunk.cancel.is_cancelled() {
        return Err(ConnectorError::Cancelled);
    }
    Ok(WriteSummary {
        rows_written,
        rows_deleted,
        key_missing: false,
    })
}

enum LoadOutcome {
    Loaded(u64),
    /// The server refused LOCAL INFILE before reading anything: the rows are handed back.
    Refused {
        first: Option<RecordBatch>,
        batches: BatchStream,
        code: u16,
    },
}

/// Whether a server error means LOCAL INFILE is disabled (server or account).
pub fn is_local_infile_refusal(code: u16) -> bool {
    // 1148 ER_NOT_ALLOWED_COMMAND, 3948 ER_CLIENT_LOCAL_FILES_DISABLED (MySQL 8),
    // 4166 ER_LOAD_INFILE_CAPABILITY_DISABLED (MariaDB).
    matches!(code, 1148 | 3948 | 4166)
}

type Ingredients = (Option<RecordBatch>, BatchStream);

async fn load_data(
    conn: &mut Conn,
    database: &str,
    chunk: &ChunkWrite<'_>,
    first: Option<RecordBatch>,
    batches: BatchStream,
) -> Result<LoadOutcome> {
    let table = chunk.table;
    // The handler must be Sync; the stream is only Send, so it waits in a mutex until the
    // server asks for the file (or is taken back when the server refuses).
    let ingredients: Arc<Mutex<Option<Ingredients>>> = Arc::new(Mutex::new(Some((first, batches))));
    let failure: Arc<Mutex<Option<ConnectorError>>> = Arc::new(Mutex::new(None));
    let rows_sent = Arc::new(AtomicU64::new(0));
    let handler_ingredients = ingredients.clone();
    let handler_failure = failure.clone();
    let handler_rows = rows_sent.clone();
    let handler_table = table.clone();
    let handler_cancel = chunk.cancel.clone();
    conn.set_infile_handler(async move {
        let taken = handler_ingredients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some((first, batches)) = taken else {
            return Err(mysql_async::LocalInfileError::NoHandler.into());
        };
        Ok(tsv_stream(
            handler_table,
            first,
            batches,
            handler_cancel,
            handler_failure,
            handler_rows,
        ))
    });
    let statement = format!(
        "{STATEMENT_TAG}LOAD DATA LOCAL INFILE 'ferry-chunk' INTO TABLE {} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' {}",
        data_table(database, table),
        load_data_columns(table)
    );
    let outcome = conn.query_drop(statement).await;
    let stream_failure = failure
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(error) = stream_failure {
        return Err(error);
    }
    if let Err(mysql_async::Error::Server(server_error)) = &outcome
        && is_local_infile_refusal(server_error.code)
    {
        let taken = ingredients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((first, batches)) = taken {
            return Ok(LoadOutcome::Refused {
                first,
                batches,
                code: server_error.code,
            });
        }
    }
    outcome.map_err(query_error("load rows", &table.name))?;
    let rows_loaded = conn.affected_rows();
    let warnings = conn.get_warnings();
    let rows_sent = rows_sent.load(Ordering::Acquire);
    if warnings > 0 || rows_loaded != rows_sent {
        let shown: Vec<(Value, Value, Value)> = conn
            .query("SHOW WARNINGS LIMIT 5")
            .await
            .unwrap_or_default();
        let messages: Vec<String> = shown
            .into_iter()
            .map(|(level, code, message)| {
                format!(
                    "{} {}: {}",
                    super::describe::text_of(level).unwrap_or_default(),
                    super::describe::text_of(code).unwrap_or_default(),
                    super::describe::text_of(message).unwrap_or_default()
                )
            })
            .collect();
        return Err(ConnectorError::Query {
            operation: "load rows",
            table: table.name.clone(),
            failure: Failure::Permanent,
            source: Box::new(LoadRefused(format!(
                "the server loaded {rows_loaded} of {rows_sent} rows with {warnings} warnings \
                 (LOAD DATA LOCAL turns data errors into warnings): {}",
                if messages.is_empty() {
                    "(no warning text)".to_string()
                } else {
                    messages.join("; ")
                }
            ))),
        });
    }
    Ok(LoadOutcome::Loaded(rows_loaded))
}

/// Writes the batches with multi-row INSERTs, each under `max_allowed_packet`.
async fn insert_rows(
    shared: &Shared,
    conn: &mut Conn,
    chunk: &ChunkWrite<'_>,
    first: Option<RecordBatch>,
    mut batches: BatchStream,
) -> Result<u64> {
    let table = chunk.table;
    let on_error = query_error("insert rows", &table.name);
    let column_list: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let head = format!(
        "{STATEMENT_TAG}INSERT INTO {} ({}) VALUES ",
        data_table(&shared.config.database, table),
        column_list.join(", ")
    );
    let limit = shared
        .max_allowed_packet
        .saturating_sub(PACKET_MARGIN_BYTES)
        .clamp(64 << 10, MAX_INSERT_BYTES);
    let mut statement: Vec<u8> = Vec::with_capacity(limit.min(1 << 20));
    let mut rows_in_statement = 0u64;
    let mut rows_written = 0u64;
    let mut row_text: Vec<u8> = Vec::new();
    let mut pending = first;
    loop {
        let batch = match pending.take() {
            Some(batch) => batch,
            None => match next_batch(&mut batches, chunk.cancel).await? {
                Some(batch) => batch,
                None => break,
            },
        };
        let columns = BatchColumns::new(table, &batch)?;
        for row in 0..columns.num_rows() {
            row_text.clear();
            columns.push_sql_row(row, &mut row_text)?;
            if head.len() + row_text.len() > shared.max_allowed_packet.saturating_sub(1024) {
                return Err(ConnectorError::Unsupported {
                    table: table.name.clone(),
                    detail: format!(
                        "a row needs a {}-byte INSERT, more than the target's max_allowed_packet \
                         ({} bytes); raise max_allowed_packet or enable local_infile",
                        head.len() + row_text.len(),
                        shared.max_allowed_packet
                    ),
                });
            }
            if rows_in_statement > 0 && statement.len() + 1 + row_text.len() > limit {
                rows_written += execute_insert(conn, &statement, &on_error).await?;
                statement.clear();
                rows_in_statement = 0;
            }
            if rows_in_statement == 0 {
                statement.extend_from_slice(head.as_bytes());
            } else {
                statement.push(b',');
            }
            statement.extend_from_slice(&row_text);
            rows_in_statement += 1;
        }
    }
    if rows_in_statement > 0 {
        rows_written += execute_insert(conn, &statement, &on_error).await?;
    }
    Ok(rows_written)
}

async fn execute_insert(
    conn: &mut Conn,
    statement: &[u8],
    on_error: &impl Fn(mysql_async::Error) -> ConnectorError,
) -> Result<u64> {
    // Text comes from UTF-8 arrays and bytes travel as hex, so the statement is UTF-8.
    let text = std::str::from_utf8(statement)
        .map_err(|error| ConnectorError::Task(format!("an INSERT is not UTF-8: {error}")))?;
    conn.query_drop(text).await.map_err(on_error)?;
    Ok(conn.affected_rows())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, column_type: ColumnType, nullable: bool) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            declared_type: column_type.display_name(),
            column_type,
            nullable,
        }
    }

    fn table(columns: Vec<ColumnSchema>, key: &[&str]) -> TableSchema {
        TableSchema {
            name: TableName {
                schema: Some("public".into()),
                name: "t".into(),
            },
            columns,
            primary_key: key.iter().map(|name| (*name).to_string()).collect(),
            has_rowid: false,
            source_kind: "postgres".into(),
            native_ddl: Some("CREATE TABLE t (...)".into()),
            partitioning: None,
            partition: None,
            split_columns: Vec::new(),
        }
    }

    #[test]
    fn mapped_ddl_sizes_text_keys_to_fit_an_index() {
        let schema = table(
            vec![
                column("id", ColumnType::Int64, false),
                column("name", ColumnType::Text, false),
                column("flag", ColumnType::Bool, true),
                column("id2", ColumnType::Uuid, true),
                column("at", ColumnType::TimestampTz, true),
                column(
                    "amount",
                    ColumnType::Decimal {
                        precision: Some(12),
                        scale: Some(2),
                    },
                    true,
                ),
                column(
                    "tags",
                    ColumnType::Array {
                        element: Box::new(ColumnType::Text),
                    },
                    true,
                ),
                column(
                    "mood",
                    ColumnType::Enum {
                        labels: vec!["o'k".into(), "sad".into()],
                    },
                    true,
                ),
            ],
            &["id", "name"],
        );
        let (sql, native) =
            create_table_sql("dst", &schema, &BTreeMap::new(), Some("utf8mb4_nopad_bin"))
                .expect("maps");
        assert!(!native);
        assert_eq!(
            sql,
            "CREATE TABLE `dst`.`t` (`id` bigint NOT NULL, `name` varchar(766) COLLATE utf8mb4_nopad_bin NOT NULL, \
             `flag` tinyint(1), `id2` binary(16), `at` datetime(6), `amount` decimal(12,2), `tags` json, \
             `mood` enum('o\\'k','sad'), PRIMARY KEY (`id`, `name`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        );
    }

    #[test]
    fn lossy_types_are_refused_naming_the_override() {
        for column_type in [
            ColumnType::Decimal {
                precision: None,
                scale: None,
            },
            ColumnType::Decimal {
                precision: Some(70),
                scale: Some(2),
            },
            ColumnType::TimeTz,
            ColumnType::Interval,
            ColumnType::Variant,
        ] {
            let schema = table(vec![column("v", column_type.clone(), true)], &[]);
            let error =
                create_table_sql("dst", &schema, &BTreeMap::new(), None).expect_err("refused");
            assert!(
                matches!(error, ConnectorError::TypeMapping { .. }),
                "{column_type:?}: {error}"
            );
            assert!(error.to_string().contains("columns:"), "{error}");
        }
        let schema = table(vec![column("v", ColumnType::TimeTz, true)], &[]);
        let overrides = BTreeMap::from([("v".to_string(), "varchar(40)".to_string())]);
        let (sql, _) = create_table_sql("dst", &schema, &overrides, None).expect("override");
        assert!(sql.contains("`v` varchar(40)"), "{sql}");
    }

    #[test]
    fn mysql_sources_keep_their_own_ddl() {
        let mut schema = table(vec![column("id", ColumnType::Int32, false)], &["id"]);
        schema.source_kind = KIND.into();
        schema.native_ddl = Some("CREATE TABLE `t` (`id` int NOT NULL)".into());
        let (sql, native) =
            create_table_sql("dst", &schema, &BTreeMap::new(), None).expect("native");
        assert!(native);
        assert_eq!(sql, "CREATE TABLE `t` (`id` int NOT NULL)");
    }

    #[test]
    fn local_infile_refusals_are_recognised() {
        assert!(is_local_infile_refusal(1148));
        assert!(is_local_infile_refusal(3948));
        assert!(is_local_infile_refusal(4166));
        assert!(!is_local_infile_refusal(1062));
    }

    #[test]
    fn only_older_attempts_of_the_same_run_and_chunk_are_looked_up() {
        let fence = |attempt| Fence {
            run_id: "run-a".into(),
            chunk: ferry_model::ids::ChunkId(7),
            attempt: Attempt(attempt),
        };
        assert_eq!(older_sessions_sql(&fence(1)), None);
        let Some(statement) = older_sessions_sql(&fence(3)) else {
            panic!("attempt 3 has older attempts");
        };
        let tag = fence(3).chunk_tag();
        for older in [1, 2] {
            assert!(
                statement.contains(&format!("IS_USED_LOCK('{tag}{older}')")),
                "{statement}"
            );
        }
        assert_eq!(statement.matches("IS_USED_LOCK(").count(), 2, "{statement}");
        assert!(statement.contains("id <> CONNECTION_ID()"), "{statement}");
    }
}
