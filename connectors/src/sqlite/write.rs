//! Creates target tables and writes chunks with overwrite, fenced, in one transaction.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use ferry_model::checksum::{VariantValue, decode_variant};
use ferry_model::ids::Attempt;
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::{ColumnType, LOGICAL_METADATA_KEY, TableSchema, VARIANT_METADATA_KEY};
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

/// A batch column, typed once per batch.
enum ColumnValues<'a> {
    Bool(&'a arrow_array::BooleanArray),
    Int(Box<dyn Fn(usize) -> i64 + 'a>),
    UInt64(&'a arrow_array::UInt64Array),
    Float(Box<dyn Fn(usize) -> f64 + 'a>),
    Text(&'a arrow_array::StringArray),
    Decimal(&'a arrow_array::StringArray),
    Blob(&'a arrow_array::BinaryArray),
    FixedBlob(&'a arrow_array::FixedSizeBinaryArray),
    Variant(&'a arrow_array::BinaryArray),
    Date(&'a arrow_array::Date32Array),
    Time(&'a arrow_array::Time64MicrosecondArray),
    Timestamp(&'a arrow_array::TimestampMicrosecondArray),
}

fn column_values<'a>(
    field: &'a arrow_schema::Field,
    array: &'a dyn Array,
) -> Option<ColumnValues<'a>> {
    use arrow_array::types::{
        Float32Type, Int8Type, Int16Type, Int32Type, UInt8Type, UInt16Type, UInt32Type,
    };
    use arrow_schema::TimeUnit;
    let metadata = field.metadata();
    Some(match array.data_type() {
        DataType::Boolean => ColumnValues::Bool(array.as_boolean()),
        DataType::Int8 => {
            let typed = array.as_primitive::<Int8Type>();
            ColumnValues::Int(Box::new(move |row| i64::from(typed.value(row))))
        }
        DataType::Int16 => {
            let typed = array.as_primitive::<Int16Type>();
            ColumnValues::Int(Box::new(move |row| i64::from(typed.value(row))))
        }
        DataType::Int32 => {
            let typed = array.as_primitive::<Int32Type>();
            ColumnValues::Int(Box::new(move |row| i64::from(typed.value(row))))
        }
        DataType::Int64 => {
            let typed = array.as_primitive::<Int64Type>();
            ColumnValues::Int(Box::new(move |row| typed.value(row)))
        }
        DataType::UInt8 => {
            let typed = array.as_primitive::<UInt8Type>();
            ColumnValues::Int(Box::new(move |row| i64::from(typed.value(row))))
        }
        DataType::UInt16 => {
            let typed = array.as_primitive::<UInt16Type>();
            ColumnValues::Int(Box::new(move |row| i64::from(typed.value(row))))
        }
        DataType::UInt32 => {
            let typed = array.as_primitive::<UInt32Type>();
            ColumnValues::Int(Box::new(move |row| i64::from(typed.value(row))))
        }
        DataType::UInt64 => ColumnValues::UInt64(array.as_primitive()),
        DataType::Float32 => {
            let typed = array.as_primitive::<Float32Type>();
            ColumnValues::Float(Box::new(move |row| f64::from(typed.value(row))))
        }
        DataType::Float64 => {
            let typed = array.as_primitive::<Float64Type>();
            ColumnValues::Float(Box::new(move |row| typed.value(row)))
        }
        DataType::Utf8
            if metadata
                .get(LOGICAL_METADATA_KEY)
                .is_some_and(|l| l == "decimal") =>
        {
            ColumnValues::Decimal(array.as_string::<i32>())
        }
        DataType::Utf8 => ColumnValues::Text(array.as_string::<i32>()),
        DataType::Binary if metadata.contains_key(VARIANT_METADATA_KEY) => {
            ColumnValues::Variant(array.as_binary::<i32>())
        }
        DataType::Binary => ColumnValues::Blob(array.as_binary::<i32>()),
        DataType::FixedSizeBinary(_) => ColumnValues::FixedBlob(array.as_fixed_size_binary()),
        DataType::Date32 => ColumnValues::Date(array.as_primitive()),
        DataType::Time64(TimeUnit::Microsecond) => ColumnValues::Time(array.as_primitive()),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            ColumnValues::Timestamp(array.as_primitive())
        }
        _ => return None,
    })
}

fn insert_batch(
    insert: &mut rusqlite::Statement<'_>,
    table: &TableSchema,
    batch: &RecordBatch,
) -> Result<u64> {
    let schema = batch.schema();
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let Some(values) = column_values(field, array.as_ref()) else {
            return Err(ConnectorError::ValueType {
                table: table.name.clone(),
                column: field.name().clone(),
                detail: format!(
                    "the SQLite sink cannot store Arrow type {}",
                    field.data_type()
                ),
            });
        };
        columns.push((values, array.as_ref()));
    }
    let on_error = query_error("insert rows", &table.name);
    let value_error = |index: usize, detail: String| ConnectorError::ValueType {
        table: table.name.clone(),
        column: schema.field(index).name().clone(),
        detail,
    };
    for row in 0..batch.num_rows() {
        for (index, (values, array)) in columns.iter().enumerate() {
            let parameter = index + 1;
            if array.is_null(row) {
                insert
                    .raw_bind_parameter(parameter, rusqlite::types::Null)
                    .map_err(&on_error)?;
                continue;
            }
            let bound = match values {
                ColumnValues::Bool(array) => {
                    insert.raw_bind_parameter(parameter, i64::from(array.value(row)))
                }
                ColumnValues::Int(value) => insert.raw_bind_parameter(parameter, value(row)),
                // SQLite integers are signed 64-bit: unsigned values travel as decimal text
                // (the column is declared TEXT for them) so none is rounded.
                ColumnValues::UInt64(array) => {
                    insert.raw_bind_parameter(parameter, array.value(row).to_string())
                }
                ColumnValues::Float(value) => {
                    let number = value(row);
                    if number.is_nan() {
                        return Err(value_error(index, "holds NaN, which SQLite stores as NULL; exclude the table or map the column to TEXT".to_string()));
                    }
                    insert.raw_bind_parameter(parameter, number)
                }
                ColumnValues::Text(array) => insert.raw_bind_parameter(parameter, array.value(row)),
                ColumnValues::Decimal(array) => {
                    let canonical = ferry_model::decimal::normalize(array.value(row))
                        .map_err(|error| value_error(index, error.to_string()))?;
                    insert.raw_bind_parameter(parameter, canonical)
                }
                ColumnValues::Blob(array) => insert.raw_bind_parameter(parameter, array.value(row)),
                ColumnValues::FixedBlob(array) => {
                    insert.raw_bind_parameter(parameter, array.value(row))
                }
                ColumnValues::Variant(array) => {
                    let variant = decode_variant(array.value(row)).map_err(|error| {
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
                ColumnValues::Date(array) => insert.raw_bind_parameter(
                    parameter,
                    temporal::format_date(i64::from(array.value(row))),
                ),
                ColumnValues::Time(array) => {
                    insert.raw_bind_parameter(parameter, temporal::format_time(array.value(row)))
                }
                ColumnValues::Timestamp(array) => insert
                    .raw_bind_parameter(parameter, temporal::format_timestamp(array.value(row))),
            };
            bound.map_err(&on_error)?;
        }
        insert.raw_execute().map_err(&on_error)?;
    }
    Ok(batch.num_rows() as u64)
}
