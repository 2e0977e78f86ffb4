//! Reads a range of a SQLite table into Arrow batches, in key order.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use ferry_common::checksum::{VariantValue, encode_variant};
use ferry_common::key::{ChunkRange, SplitKey};
use ferry_common::schema::{ColumnType, TableSchema};
use rusqlite::Connection;
use rusqlite::types::ValueRef;

use super::sql::{key_exprs, quote_ident, quote_table, range_predicate, rowid_alias};
use crate::error::{ConnectorError, Result};

/// Rows per batch; a batch is also cut once its values pass [`MAX_BATCH_BYTES`].
pub const MAX_BATCH_ROWS: usize = 8192;
/// Approximate bytes of values per batch.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

enum ColumnBuilder {
    Int(Int64Builder),
    Real(Float64Builder),
    Text(StringBuilder),
    Blob(BinaryBuilder),
    Variant(BinaryBuilder),
}

impl ColumnBuilder {
    /// A builder for the carrier of `column_type`; `None` for types SQLite does not
    /// produce (yet).
    fn new(column_type: &ColumnType) -> Option<Self> {
        Some(match column_type {
            ColumnType::Int64 => ColumnBuilder::Int(Int64Builder::with_capacity(MAX_BATCH_ROWS)),
            ColumnType::Float64 => {
                ColumnBuilder::Real(Float64Builder::with_capacity(MAX_BATCH_ROWS))
            }
            ColumnType::Text => ColumnBuilder::Text(StringBuilder::new()),
            ColumnType::Blob => ColumnBuilder::Blob(BinaryBuilder::new()),
            ColumnType::Variant => ColumnBuilder::Variant(BinaryBuilder::new()),
            _ => return None,
        })
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Real(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Text(builder) => Arc::new(builder.finish()),
            ColumnBuilder::Blob(builder) | ColumnBuilder::Variant(builder) => {
                Arc::new(builder.finish())
            }
        }
    }

    /// Appends a value; returns its size in bytes, or a description of the mismatch.
    fn append(&mut self, value: ValueRef<'_>, scratch: &mut Vec<u8>) -> Result<usize, String> {
        match (self, value) {
            (ColumnBuilder::Int(builder), ValueRef::Null) => builder.append_null(),
            (ColumnBuilder::Real(builder), ValueRef::Null) => builder.append_null(),
            (ColumnBuilder::Text(builder), ValueRef::Null) => builder.append_null(),
            (ColumnBuilder::Blob(builder), ValueRef::Null) => builder.append_null(),
            (ColumnBuilder::Int(builder), ValueRef::Integer(v)) => builder.append_value(v),
            (ColumnBuilder::Real(builder), ValueRef::Real(v)) => builder.append_value(v),
            (ColumnBuilder::Text(builder), ValueRef::Text(bytes)) => {
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| "holds text that is not valid UTF-8".to_string())?;
                builder.append_value(text);
                return Ok(bytes.len());
            }
            (ColumnBuilder::Blob(builder), ValueRef::Blob(bytes)) => {
                builder.append_value(bytes);
                return Ok(bytes.len());
            }
            (ColumnBuilder::Variant(builder), value) => {
                scratch.clear();
                let variant = match value {
                    ValueRef::Null => VariantValue::Null,
                    ValueRef::Integer(v) => VariantValue::Int(v),
                    ValueRef::Real(v) => VariantValue::Real(v),
                    ValueRef::Text(bytes) => VariantValue::Text(
                        std::str::from_utf8(bytes)
                            .map_err(|_| "holds text that is not valid UTF-8".to_string())?,
                    ),
                    ValueRef::Blob(bytes) => VariantValue::Blob(bytes),
                };
                encode_variant(&variant, scratch);
                builder.append_value(scratch.as_slice());
                return Ok(scratch.len());
            }
            (builder, value) => {
                let expected = match builder {
                    ColumnBuilder::Int(_) => "INTEGER",
                    ColumnBuilder::Real(_) => "REAL",
                    ColumnBuilder::Text(_) => "TEXT",
                    ColumnBuilder::Blob(_) => "BLOB",
                    ColumnBuilder::Variant(_) => "any",
                };
                return Err(format!(
                    "holds a {} value where ferry reads {expected} values; declare the column \
                     NUMERIC (or with no type) so each value keeps its own type, or fix the value",
                    storage_class(value)
                ));
            }
        }
        Ok(8)
    }
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
        transient: is_transient(&source),
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

/// Returns whether a SQLite error may go away on retry (busy or locked database).
pub fn is_transient(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
