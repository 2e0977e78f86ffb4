//! Reads a range of a SQLite table into Arrow batches, in key order.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, FixedSizeBinaryBuilder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder, UInt8Builder, UInt16Builder,
    UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use ferry_model::checksum::{VariantValue, encode_variant};
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::{ColumnType, TableSchema};
use ferry_model::temporal;
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::sql::{key_exprs, quote_ident, quote_table, range_predicate, rowid_alias};
use crate::error::{ConnectorError, Failure, Result};

/// Rows per batch; a batch is also cut once its values pass [`MAX_BATCH_BYTES`].
pub const MAX_BATCH_ROWS: usize = 8192;
/// Approximate bytes of values per batch.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// Builds one column's carrier from SQLite values. The typed carriers of SQLite's own
/// columns (Int64, Float64, Text, Blob, Variant) are read strictly; the others are the
/// forms the SQLite sink stores other engines' values in (see `write.rs`), read back
/// exactly when the target is verified.
enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int(Int64Builder),
    UInt8(UInt8Builder),
    UInt16(UInt16Builder),
    UInt32(UInt32Builder),
    UInt64(UInt64Builder),
    Float32(Float32Builder),
    Real(Float64Builder),
    Text(StringBuilder),
    Decimal(StringBuilder),
    Blob(BinaryBuilder),
    Uuid(FixedSizeBinaryBuilder),
    Variant(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    TimestampUtc(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    /// A builder for the carrier of `column_type`.
    fn new(column_type: &ColumnType) -> Option<Self> {
        Some(match column_type {
            ColumnType::Bool => ColumnBuilder::Bool(BooleanBuilder::new()),
            ColumnType::Int8 => ColumnBuilder::Int8(Int8Builder::new()),
            ColumnType::Int16 | ColumnType::Year => ColumnBuilder::Int16(Int16Builder::new()),
            ColumnType::Int32 => ColumnBuilder::Int32(Int32Builder::new()),
            ColumnType::Int64 => ColumnBuilder::Int(Int64Builder::with_capacity(MAX_BATCH_ROWS)),
            ColumnType::UInt8 => ColumnBuilder::UInt8(UInt8Builder::new()),
            ColumnType::UInt16 => ColumnBuilder::UInt16(UInt16Builder::new()),
            ColumnType::UInt32 => ColumnBuilder::UInt32(UInt32Builder::new()),
            ColumnType::UInt64 | ColumnType::Bit { .. } => {
                ColumnBuilder::UInt64(UInt64Builder::new())
            }
            ColumnType::Float32 => ColumnBuilder::Float32(Float32Builder::new()),
            ColumnType::Float64 => {
                ColumnBuilder::Real(Float64Builder::with_capacity(MAX_BATCH_ROWS))
            }
            ColumnType::Text
            | ColumnType::TimeTz
            | ColumnType::Interval
            | ColumnType::Json
            | ColumnType::Enum { .. }
            | ColumnType::Set { .. }
            | ColumnType::Array { .. } => ColumnBuilder::Text(StringBuilder::new()),
            ColumnType::Decimal { .. } => ColumnBuilder::Decimal(StringBuilder::new()),
            ColumnType::Blob => ColumnBuilder::Blob(BinaryBuilder::new()),
            ColumnType::Uuid => ColumnBuilder::Uuid(FixedSizeBinaryBuilder::new(16)),
            ColumnType::Variant => ColumnBuilder::Variant(BinaryBuilder::new()),
            ColumnType::Date => ColumnBuilder::Date(Date32Builder::new()),
            ColumnType::Time => ColumnBuilder::Time(Time64MicrosecondBuilder::new()),
            ColumnType::Timestamp => ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::new()),
            ColumnType::TimestampTz => {
                ColumnBuilder::TimestampUtc(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
        })
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Int8(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Int16(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Int32(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Int(builder) => Arc::new(builder.finish()),
            ColumnBuilder::UInt8(builder) => Arc::new(builder.finish()),
            ColumnBuilder::UInt16(builder) => Arc::new(builder.finish()),
            ColumnBuilder::UInt32(builder) => Arc::new(builder.finish()),
            ColumnBuilder::UInt64(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Float32(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Real(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Text(builder) | ColumnBuilder::Decimal(builder) => {
                Arc::new(builder.finish())
            }
            ColumnBuilder::Blob(builder) | ColumnBuilder::Variant(builder) => {
                Arc::new(builder.finish())
            }
            ColumnBuilder::Uuid(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Date(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Time(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Timestamp(builder) | ColumnBuilder::TimestampUtc(builder) => {
                Arc::new(builder.finish())
            }
        }
    }

    fn expected(&self) -> &'static str {
        match self {
            ColumnBuilder::Bool(_) => "boolean (INTEGER 0 or 1)",
            ColumnBuilder::Int8(_)
            | ColumnBuilder::Int16(_)
            | ColumnBuilder::Int32(_)
            | ColumnBuilder::Int(_)
            | ColumnBuilder::UInt8(_)
            | ColumnBuilder::UInt16(_)
            | ColumnBuilder::UInt32(_) => "INTEGER",
            ColumnBuilder::UInt64(_) => "unsigned 64-bit (INTEGER or decimal TEXT)",
            ColumnBuilder::Float32(_) => "single-precision REAL",
            ColumnBuilder::Real(_) => "REAL",
            ColumnBuilder::Text(_) => "TEXT",
            ColumnBuilder::Decimal(_) => "decimal TEXT",
            ColumnBuilder::Blob(_) => "BLOB",
            ColumnBuilder::Uuid(_) => "16-byte BLOB",
            ColumnBuilder::Variant(_) => "any",
            ColumnBuilder::Date(_) => "date TEXT (YYYY-MM-DD)",
            ColumnBuilder::Time(_) => "time TEXT (HH:MM:SS.ffffff)",
            ColumnBuilder::Timestamp(_) | ColumnBuilder::TimestampUtc(_) => {
                "timestamp TEXT (YYYY-MM-DD HH:MM:SS.ffffff)"
            }
        }
    }

    /// Appends a value; returns its size in bytes, or a description of the mismatch.
    fn append(&mut self, value: ValueRef<'_>, scratch: &mut Vec<u8>) -> Result<usize, String> {
        if let ColumnBuilder::Variant(builder) = self {
            scratch.clear();
            let variant = match value {
                ValueRef::Null => VariantValue::Null,
                ValueRef::Integer(v) => VariantValue::Int(v),
                ValueRef::Real(v) => VariantValue::Real(v),
                ValueRef::Text(bytes) => VariantValue::Text(utf8(bytes)?),
                ValueRef::Blob(bytes) => VariantValue::Blob(bytes),
            };
            encode_variant(&variant, scratch);
            builder.append_value(scratch.as_slice());
            return Ok(scratch.len());
        }
        if matches!(value, ValueRef::Null) {
            self.append_null();
            return Ok(1);
        }
        let mismatch = |builder: &ColumnBuilder| {
            format!(
                "holds a {} value where ferry reads {} values; declare the column NUMERIC (or \
                 with no type) so each value keeps its own type, or fix the value",
                storage_class(value),
                builder.expected()
            )
        };
        match (&mut *self, value) {
            (ColumnBuilder::Int(builder), ValueRef::Integer(v)) => builder.append_value(v),
            (ColumnBuilder::Real(builder), ValueRef::Real(v)) => builder.append_value(v),
            (ColumnBuilder::Text(builder), ValueRef::Text(bytes)) => {
                builder.append_value(utf8(bytes)?);
                return Ok(bytes.len());
            }
            (ColumnBuilder::Blob(builder), ValueRef::Blob(bytes)) => {
                builder.append_value(bytes);
                return Ok(bytes.len());
            }
            (ColumnBuilder::Bool(builder), ValueRef::Integer(v @ (0 | 1))) => {
                builder.append_value(v == 1)
            }
            (ColumnBuilder::Int8(builder), ValueRef::Integer(v)) => builder.append_value(
                i8::try_from(v)
                    .map_err(|_| "holds an integer out of range for int8".to_string())?,
            ),
            (ColumnBuilder::Int16(builder), ValueRef::Integer(v)) => builder.append_value(
                i16::try_from(v)
                    .map_err(|_| "holds an integer out of range for int16".to_string())?,
            ),
            (ColumnBuilder::Int32(builder), ValueRef::Integer(v)) => builder.append_value(
                i32::try_from(v)
                    .map_err(|_| "holds an integer out of range for int32".to_string())?,
            ),
            (ColumnBuilder::UInt8(builder), ValueRef::Integer(v)) => builder.append_value(
                u8::try_from(v)
                    .map_err(|_| "holds an integer out of range for uint8".to_string())?,
            ),
            (ColumnBuilder::UInt16(builder), ValueRef::Integer(v)) => builder.append_value(
                u16::try_from(v)
                    .map_err(|_| "holds an integer out of range for uint16".to_string())?,
            ),
            (ColumnBuilder::UInt32(builder), ValueRef::Integer(v)) => builder.append_value(
                u32::try_from(v)
                    .map_err(|_| "holds an integer out of range for uint32".to_string())?,
            ),
            (ColumnBuilder::UInt64(builder), ValueRef::Integer(v)) => builder.append_value(
                u64::try_from(v).map_err(|_| "holds a negative integer for uint64".to_string())?,
            ),
            (ColumnBuilder::UInt64(builder), ValueRef::Text(bytes)) => builder.append_value(
                utf8(bytes)?
                    .parse::<u64>()
                    .map_err(|_| "holds text that is not an unsigned 64-bit integer".to_string())?,
            ),
            (ColumnBuilder::Float32(builder), ValueRef::Real(v)) => {
                let narrow = v as f32;
                if f64::from(narrow) != v && !v.is_nan() {
                    return Err("holds a REAL that is not a single-precision value".to_string());
                }
                builder.append_value(narrow);
            }
            (ColumnBuilder::Decimal(builder), ValueRef::Text(bytes)) => {
                let canonical = ferry_model::decimal::normalize(utf8(bytes)?)
                    .map_err(|error| error.to_string())?;
                builder.append_value(canonical);
                return Ok(bytes.len());
            }
            (ColumnBuilder::Decimal(builder), ValueRef::Integer(v)) => {
                builder.append_value(v.to_string())
            }
            (ColumnBuilder::Uuid(builder), ValueRef::Blob(bytes)) if bytes.len() == 16 => {
                builder
                    .append_value(bytes)
                    .map_err(|error| error.to_string())?;
            }
            (ColumnBuilder::Date(builder), ValueRef::Text(bytes)) => {
                let days = temporal::parse_date(utf8(bytes)?)
                    .and_then(|days| i32::try_from(days).ok())
                    .ok_or_else(|| "holds text that is not a date (YYYY-MM-DD)".to_string())?;
                builder.append_value(days);
            }
            (ColumnBuilder::Time(builder), ValueRef::Text(bytes)) => {
                let micros = temporal::parse_time(utf8(bytes)?)
                    .ok_or_else(|| "holds text that is not a time (HH:MM:SS.ffffff)".to_string())?;
                builder.append_value(micros);
            }
            (
                ColumnBuilder::Timestamp(builder) | ColumnBuilder::TimestampUtc(builder),
                ValueRef::Text(bytes),
            ) => {
                let micros = temporal::parse_timestamp(utf8(bytes)?).ok_or_else(|| {
                    "holds text that is not a timestamp (YYYY-MM-DD HH:MM:SS.ffffff)".to_string()
                })?;
                builder.append_value(micros);
            }
            (builder, _) => return Err(mismatch(builder)),
        }
        Ok(8)
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(builder) => builder.append_null(),
            ColumnBuilder::Int8(builder) => builder.append_null(),
            ColumnBuilder::Int16(builder) => builder.append_null(),
            ColumnBuilder::Int32(builder) => builder.append_null(),
            ColumnBuilder::Int(builder) => builder.append_null(),
            ColumnBuilder::UInt8(builder) => builder.append_null(),
            ColumnBuilder::UInt16(builder) => builder.append_null(),
            ColumnBuilder::UInt32(builder) => builder.append_null(),
            ColumnBuilder::UInt64(builder) => builder.append_null(),
            ColumnBuilder::Float32(builder) => builder.append_null(),
            ColumnBuilder::Real(builder) => builder.append_null(),
            ColumnBuilder::Text(builder) | ColumnBuilder::Decimal(builder) => builder.append_null(),
            ColumnBuilder::Blob(builder) | ColumnBuilder::Variant(builder) => builder.append_null(),
            ColumnBuilder::Uuid(builder) => builder.append_null(),
            ColumnBuilder::Date(builder) => builder.append_null(),
            ColumnBuilder::Time(builder) => builder.append_null(),
            ColumnBuilder::Timestamp(builder) | ColumnBuilder::TimestampUtc(builder) => {
                builder.append_null()
            }
        }
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| "holds text that is not valid UTF-8".to_string())
}

fn storage_class(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "INTEGER",
        ValueRef::Real(_) => "REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "BLOB",
    }
}

/// The SELECT statement and parameters that read `range` of `table` in key order.
pub fn select_range(
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
) -> Result<(String, Vec<rusqlite::types::Value>)> {
    let mut select_list = Vec::with_capacity(table.columns.len() + 1);
    if matches!(key, SplitKey::Rowid) {
        select_list.push(rowid_alias(table)?.to_string());
    }
    select_list.extend(table.columns.iter().map(|column| quote_ident(&column.name)));
    let exprs = key_exprs(table, key)?;
    let (predicate, params) = range_predicate(&exprs, key, range);
    let mut sql = format!(
        "SELECT {} FROM {} WHERE {predicate}",
        select_list.join(", "),
        quote_table(&table.name)
    );
    if !exprs.is_empty() {
        sql.push_str(&format!(" ORDER BY {}", exprs.join(", ")));
    }
    Ok((sql, params))
}

/// Reads `range` and hands each batch to `on_batch`, which returns `false` to stop early.
pub fn read_range(
    connection: &Connection,
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
    mut on_batch: impl FnMut(RecordBatch) -> bool,
) -> Result<()> {
    let carry_rowid = matches!(key, SplitKey::Rowid);
    let schema = table.arrow_schema(carry_rowid);
    let (sql, params) = select_range(table, key, range)?;
    let query_error = |source: rusqlite::Error| ConnectorError::Query {
        operation: "read chunk",
        table: table.name.clone(),
        failure: classify(&source),
        source: Box::new(source),
    };
    let mut statement = connection.prepare(&sql).map_err(query_error)?;
    let mut rows = statement
        .query(rusqlite::params_from_iter(params))
        .map_err(query_error)?;

    let mut column_types: Vec<ColumnType> = Vec::with_capacity(schema.fields().len());
    if carry_rowid {
        column_types.push(ColumnType::Int64);
    }
    column_types.extend(
        table
            .columns
            .iter()
            .map(|column| column.column_type.clone()),
    );
    let new_builders = || -> Result<Vec<ColumnBuilder>> {
        column_types
            .iter()
            .enumerate()
            .map(|(index, column_type)| {
                ColumnBuilder::new(column_type).ok_or_else(|| ConnectorError::Unsupported {
                    table: table.name.clone(),
                    detail: format!(
                        "column {} is {}, which the SQLite connector cannot read yet",
                        schema.field(index).name(),
                        column_type.display_name()
                    ),
                })
            })
            .collect()
    };
    let mut builders = new_builders()?;
    let mut scratch = Vec::new();
    let mut batch_rows = 0usize;
    let mut batch_bytes = 0usize;

    let flush = |builders: &mut Vec<ColumnBuilder>| -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = builders.iter_mut().map(ColumnBuilder::finish).collect();
        RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|error| ConnectorError::Task(format!("failed to build a batch: {error}")))
    };

    while let Some(row) = rows.next().map_err(query_error)? {
        for (index, builder) in builders.iter_mut().enumerate() {
            let value = row.get_ref(index).map_err(query_error)?;
            match builder.append(value, &mut scratch) {
                Ok(size) => batch_bytes += size,
                Err(detail) => {
                    let column = if carry_rowid && index == 0 {
                        "rowid".to_string()
                    } else {
                        table.columns[index - usize::from(carry_rowid)].name.clone()
                    };
                    return Err(ConnectorError::ValueType {
                        table: table.name.clone(),
                        column,
                        detail,
                    });
                }
            }
        }
        batch_rows += 1;
        if batch_rows >= MAX_BATCH_ROWS || batch_bytes >= MAX_BATCH_BYTES {
            let batch = flush(&mut builders)?;
            builders = new_builders()?;
            batch_rows = 0;
            batch_bytes = 0;
            if !on_batch(batch) {
                return Ok(());
            }
        }
    }
    if batch_rows > 0 {
        let batch = flush(&mut builders)?;
        on_batch(batch);
    }
    Ok(())
}

/// Classifies a SQLite error: a busy or locked database may pass (transient); a file
/// that cannot be opened is unavailable; everything else is permanent.
pub fn classify(error: &rusqlite::Error) -> Failure {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            Failure::Transient
        }
        Some(rusqlite::ErrorCode::CannotOpen) => Failure::Unavailable,
        _ => Failure::Permanent,
    }
}
