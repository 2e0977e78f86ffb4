//! Creates target tables and writes chunks with overwrite, fenced, in one transaction.

use arrow_array::RecordBatch;
use arrow_schema::{DataType, TimeUnit};
use ferry_model::checksum::{VariantValue, decode_variant};
use ferry_model::column::{CellRef, ColumnMeaning, ColumnView};
use ferry_model::ids::Attempt;
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::{ColumnType, TableSchema};
use ferry_model::spec::SchemaMode;
use ferry_model::temporal;
use futures::StreamExt;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tokio_util::sync::CancellationToken;

use super::sql::{key_exprs, quote_ident, quote_table, range_predicate, rowid_alias};
use super::{FENCE_TABLE, KIND, describe, query_error};
use crate::compat::{Differences, column_type_difference};
use crate::error::{ConnectorError, Result};
use crate::traits::{BatchStream, Fence, PrepareOptions, PrepareOutcome, WriteSummary};

/// Creates, checks or recreates the target table per `mode`.
pub fn prepare_table(
    connection: &Connection,
    table: &TableSchema,
    key: &SplitKey,
    options: &PrepareOptions,
) -> Result<PrepareOutcome> {
    let on_error = query_error("prepare table", &table.name);
    let existing = describe(connection, &table.name)?;
    let create_sql = create_table_sql(table, &options.type_overrides);
    match (options.mode, existing) {
        (SchemaMode::Recreate, existing) => {
            connection
                .execute_batch(&format!(
                    "DROP TABLE IF EXISTS {}",
                    quote_table(&table.name)
                ))
                .map_err(&on_error)?;
            connection.execute_batch(&create_sql).map_err(&on_error)?;
            Ok(if existing.is_some() {
                PrepareOutcome::Recreated
            } else {
                PrepareOutcome::Created
            })
        }
        (SchemaMode::RequireExisting, None) => Err(ConnectorError::SchemaMismatch {
            table: table.name.clone(),
            detail:
                "it does not exist in the target; create it, or set `schema: create_if_missing`"
                    .to_string(),
        }),
        (SchemaMode::CreateIfMissing, None) => {
            connection.execute_batch(&create_sql).map_err(&on_error)?;
            Ok(PrepareOutcome::Created)
        }
        (_, Some(existing)) => {
            check_compatible(table, &existing, key)?;
            Ok(PrepareOutcome::Existing)
        }
    }
}

/// The CREATE TABLE statement: the source's own when it is SQLite and no column type is
/// overridden, else one built from the described columns.
pub fn create_table_sql(
    table: &TableSchema,
    type_overrides: &std::collections::BTreeMap<String, String>,
) -> String {
    if table.source_kind == KIND
        && type_overrides.is_empty()
        && let Some(ddl) = &table.native_ddl
    {
        return ddl.clone();
    }
    let mut parts: Vec<String> = table
        .columns
        .iter()
        .map(|column| {
            let declared = type_overrides
                .get(&column.name)
                .cloned()
                .unwrap_or_else(|| {
                    if table.source_kind == KIND {
                        column.declared_type.clone()
                    } else {
                        sqlite_type_for(&column.column_type).to_string()
                    }
                });
            let mut part = format!("{} {}", quote_ident(&column.name), declared);
            if !column.nullable {
                part.push_str(" NOT NULL");
            }
            part
        })
        .collect();
    if !table.primary_key.is_empty() {
        let key: Vec<String> = table
            .primary_key
            .iter()
            .map(|name| quote_ident(name))
            .collect();
        parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    let mut sql = format!(
        "CREATE TABLE {} ({})",
        quote_table(&table.name),
        parts.join(", ")
    );
    if !table.has_rowid && !table.primary_key.is_empty() {
        sql.push_str(" WITHOUT ROWID");
    }
    sql
}

/// The declared type a column of another engine gets in SQLite: one whose affinity keeps
/// every value exactly (see `read.rs` for how each is read back). Dates and times are ISO
/// text; unsigned 64-bit integers and decimals are decimal text.
pub fn sqlite_type_for(column_type: &ColumnType) -> &'static str {
    match column_type {
        ColumnType::Bool => "BOOLEAN",
        ColumnType::Int8
        | ColumnType::Int16
        | ColumnType::Int32
        | ColumnType::Int64
        | ColumnType::UInt8
        | ColumnType::UInt16
        | ColumnType::UInt32
        | ColumnType::Year => "INTEGER",
        ColumnType::Bit { width } if *width < 64 => "INTEGER",
        ColumnType::UInt64 | ColumnType::Bit { .. } => "TEXT",
        ColumnType::Float32 | ColumnType::Float64 => "REAL",
        ColumnType::Decimal { .. }
        | ColumnType::Text
        | ColumnType::TimeTz
        | ColumnType::Interval
        | ColumnType::Json
        | ColumnType::Enum { .. }
        | ColumnType::Set { .. }
        | ColumnType::Array { .. }
        | ColumnType::Date
        | ColumnType::Time
        | ColumnType::Timestamp
        | ColumnType::TimestampTz => "TEXT",
        ColumnType::Blob | ColumnType::Uuid => "BLOB",
        ColumnType::Variant => "",
    }
}

fn check_compatible(source: &TableSchema, target: &TableSchema, key: &SplitKey) -> Result<()> {
    let mut differences = Differences::default();
    let source_names: Vec<&str> = source.columns.iter().map(|c| c.name.as_str()).collect();
    let target_names: Vec<&str> = target.columns.iter().map(|c| c.name.as_str()).collect();
    differences.columns(&source_names, &target_names, "", |index| {
        let (source_column, target_column) = (&source.columns[index], &target.columns[index]);
        let expected = if source.source_kind == KIND {
            source_column.column_type.clone()
        } else {
            super::column_type_for(sqlite_type_for(&source_column.column_type))
        };
        (expected != target_column.column_type).then(|| {
            column_type_difference(
                &source_column.name,
                &source_column.declared_type,
                &target_column.declared_type,
            )
        })
    });
    differences.primary_key(&source.primary_key, &target.primary_key);
    if matches!(key, SplitKey::Rowid) && !target.has_rowid {
        differences.push("the source is split on its rowid but the target has none");
    }
    differences.into_result(&source.name)
}

/// Writes one chunk: delete the range, insert the batches, check and record the fence,
/// commit. Any error or a cancellation drops the transaction, which rolls back.
pub fn write_chunk(
    connection: &mut Connection,
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
    fence: &Fence,
    cancel: &CancellationToken,
    mut batches: BatchStream,
) -> Result<WriteSummary> {
    let on_error = query_error("write chunk", &table.name);
    // Wait for the first batch before taking SQLite's single write lock, so a slow
    // source scan does not hold up other chunks' commits.
    let mut pending = next_batch(&mut batches, cancel)?;

    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&on_error)?;
    transaction
        .execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {FENCE_TABLE} (run_id TEXT NOT NULL, chunk INTEGER NOT NULL, \
             table_name TEXT NOT NULL, attempt INTEGER NOT NULL, committed_at TEXT NOT NULL, \
             PRIMARY KEY (run_id, chunk))"
        ))
        .map_err(&on_error)?;
    let committed: Option<i64> = transaction
        .query_row(
            &format!("SELECT attempt FROM {FENCE_TABLE} WHERE run_id = ?1 AND chunk = ?2"),
            rusqlite::params![fence.run_id, fence.chunk.0],
            |row| row.get(0),
        )
        .optional()
        .map_err(&on_error)?;
    if let Some(committed) = committed
        && committed > i64::from(fence.attempt.0)
    {
        return Err(ConnectorError::Fenced {
            table: table.name.clone(),
            chunk: fence.chunk,
            attempt: fence.attempt,
            committed: Attempt(u32::try_from(committed).unwrap_or(u32::MAX)),
        });
    }

    let exprs = key_exprs(table, key)?;
    let (predicate, params) = range_predicate(&exprs, key, range);
    let rows_deleted = transaction
        .execute(
            &format!("DELETE FROM {} WHERE {predicate}", quote_table(&table.name)),
            rusqlite::params_from_iter(params),
        )
        .map_err(&on_error)? as u64;

    let mut column_list = Vec::with_capacity(table.columns.len() + 1);
    if matches!(key, SplitKey::Rowid) {
        column_list.push(rowid_alias(table)?.to_string());
    }
    column_list.extend(table.columns.iter().map(|column| quote_ident(&column.name)));
    let placeholders = vec!["?"; column_list.len()].join(", ");
    let insert_sql = format!(
        "INSERT INTO {} ({}) VALUES ({placeholders})",
        quote_table(&table.name),
        column_list.join(", ")
    );
    let mut rows_written = 0u64;
    {
        let mut insert = transaction.prepare(&insert_sql).map_err(&on_error)?;
        while let Some(batch) = pending {
            rows_written += insert_batch(&mut insert, table, &batch)?;
            pending = next_batch(&mut batches, cancel)?;
        }
    }
    transaction
        .execute(
            &format!(
                "INSERT INTO {FENCE_TABLE} (run_id, chunk, table_name, attempt, committed_at) \
                 VALUES (?1, ?2, ?3, ?4, datetime('now')) ON CONFLICT (run_id, chunk) DO UPDATE \
                 SET attempt = excluded.attempt, committed_at = excluded.committed_at"
            ),
            rusqlite::params![
                fence.run_id,
                fence.chunk.0,
                table.name.to_string(),
                fence.attempt.0
            ],
        )
        .map_err(&on_error)?;
    if cancel.is_cancelled() {
        return Err(ConnectorError::Cancelled);
    }
    transaction.commit().map_err(&on_error)?;
    Ok(WriteSummary {
        rows_written,
        rows_deleted,
        key_missing: false,
    })
}

fn next_batch(
    batches: &mut BatchStream,
    cancel: &CancellationToken,
) -> Result<Option<RecordBatch>> {
    let next = futures::executor::block_on(async {
        tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            item = batches.next() => Some(item),
        }
    });
    match next {
        None => Err(ConnectorError::Cancelled),
        Some(None) => Ok(None),
        Some(Some(Ok(batch))) => Ok(Some(batch)),
        Some(Some(Err(error))) => Err(error),
    }
}

/// One column of a batch, viewed once.
struct BatchColumn<'a> {
    view: ColumnView<'a>,
    meaning: ColumnMeaning,
}

fn insert_batch(
    insert: &mut rusqlite::Statement<'_>,
    table: &TableSchema,
    batch: &RecordBatch,
) -> Result<u64> {
    let schema = batch.schema();
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let view = ColumnView::new(field.name(), array.as_ref())
            .map_err(|_| unsupported_type(table, field.name(), field.data_type()))?;
        columns.push(BatchColumn {
            view,
            meaning: ColumnMeaning::of_field(field),
        });
    }
    let on_error = query_error("insert rows", &table.name);
    let value_error = |index: usize, detail: String| ConnectorError::ValueType {
        table: table.name.clone(),
        column: schema.field(index).name().clone(),
        detail,
    };
    for row in 0..batch.num_rows() {
        for (index, column) in columns.iter().enumerate() {
            let parameter = index + 1;
            let bound = match column.view.cell(row) {
                CellRef::Null => insert.raw_bind_parameter(parameter, rusqlite::types::Null),
                CellRef::Bool(value) => insert.raw_bind_parameter(parameter, i64::from(value)),
                CellRef::Int(value) => insert.raw_bind_parameter(parameter, value),
                // SQLite integers are signed 64-bit: unsigned values travel as decimal text
                // (the column is declared TEXT for them) so none is rounded.
                CellRef::UInt64(value) => insert.raw_bind_parameter(parameter, value.to_string()),
                CellRef::Float(number) => {
                    if number.is_nan() {
                        return Err(value_error(index, "holds NaN, which SQLite stores as NULL; exclude the table or map the column to TEXT".to_string()));
                    }
                    insert.raw_bind_parameter(parameter, number)
                }
                CellRef::Utf8(text) if column.meaning == ColumnMeaning::DecimalText => {
                    let canonical = ferry_model::decimal::normalize(text)
                        .map_err(|error| value_error(index, error.to_string()))?;
                    insert.raw_bind_parameter(parameter, canonical)
                }
                CellRef::Utf8(text) => insert.raw_bind_parameter(parameter, text),
                CellRef::Binary(encoded) if column.meaning == ColumnMeaning::Variant => {
                    let variant = decode_variant(encoded).map_err(|error| {
                        value_error(index, format!("invalid variant value: {error}"))
                    })?;
                    match variant {
                        VariantValue::Null => {
                            insert.raw_bind_parameter(parameter, rusqlite::types::Null)
                        }
                        VariantValue::Int(v) => insert.raw_bind_parameter(parameter, v),
                        VariantValue::Real(v) => insert.raw_bind_parameter(parameter, v),
                        VariantValue::Text(v) => insert.raw_bind_parameter(parameter, v),
                        VariantValue::Blob(v) => insert.raw_bind_parameter(parameter, v),
                    }
                }
                CellRef::Binary(bytes) | CellRef::FixedSizeBinary(bytes) => {
                    insert.raw_bind_parameter(parameter, bytes)
                }
                CellRef::Date32(days) => {
                    insert.raw_bind_parameter(parameter, temporal::format_date(i64::from(days)))
                }
                CellRef::Time {
                    value: micros,
                    unit: TimeUnit::Microsecond,
                } => insert.raw_bind_parameter(parameter, temporal::format_time(micros)),
                CellRef::Timestamp {
                    value: micros,
                    unit: TimeUnit::Microsecond,
                    ..
                } => insert.raw_bind_parameter(parameter, temporal::format_timestamp(micros)),
                CellRef::Date64(_)
                | CellRef::Time { .. }
                | CellRef::Timestamp { .. }
                | CellRef::Decimal { .. }
                | CellRef::Decimal256 { .. } => {
                    let field = schema.field(index);
                    return Err(unsupported_type(table, field.name(), field.data_type()));
                }
            };
            bound.map_err(&on_error)?;
        }
        insert.raw_execute().map_err(&on_error)?;
    }
    Ok(batch.num_rows() as u64)
}

fn unsupported_type(table: &TableSchema, column: &str, data_type: &DataType) -> ConnectorError {
    ConnectorError::ValueType {
        table: table.name.clone(),
        column: column.to_string(),
        detail: format!("the SQLite sink cannot store Arrow type {data_type}"),
    }
}
