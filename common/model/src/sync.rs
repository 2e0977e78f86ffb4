//! How a sync pass catches up one table (the pure choice shared by `ferryctl sync`, which
//! checks it before the first pass, and the chunk runner, which follows it).

use crate::key::SplitKey;
use crate::schema::{ColumnType, TableSchema};
use crate::spec::WatermarkSpec;

/// How a table is synced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableMethod {
    /// By its watermark column (a timestamp) and its single integer key: changed rows
    /// newer-wins, deletes by a keyed diff.
    Watermark {
        /// The column.
        column: String,
        /// The key column.
        key_column: String,
    },
    /// By checksum-and-repair: the range is checksummed on both sides and re-copied
    /// when they differ.
    ChecksumRepair,
}

/// Why a table with the watermark column cannot be synced by it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    /// The watermark column is not a timestamp.
    #[error(
        "the watermark column {column} of table {table} is {declared_type}, not a timestamp: ferry compares it with the high-water mark minus the lag; name a timestamp column set by every insert and update"
    )]
    WatermarkNotTimestamp {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Its declared type.
        declared_type: String,
    },
    /// A table with the watermark column has no single integer key.
    #[error(
        "table {table} has the watermark column {column} but no single integer primary key: a newer-wins upsert and the keyed diff for deletes need one; give the table such a key or exclude it from the job"
    )]
    NoIntegerKey {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
}

/// Chooses how `table` (split on `key`) is synced: by the watermark column when the
/// spec names one and the table has it, else by checksum-and-repair (pure).
pub fn choose_method(
    table: &TableSchema,
    key: &SplitKey,
    watermark: Option<&WatermarkSpec>,
) -> Result<TableMethod, MethodError> {
    let Some(watermark) = watermark else {
        return Ok(TableMethod::ChecksumRepair);
    };
    let Some(column) = table
        .columns
        .iter()
        .find(|column| column.name == watermark.column)
    else {
        return Ok(TableMethod::ChecksumRepair);
    };
    if !matches!(
        column.column_type,
        ColumnType::Timestamp | ColumnType::TimestampTz
    ) {
        return Err(MethodError::WatermarkNotTimestamp {
            table: table.name.to_string(),
            column: column.name.clone(),
            declared_type: column.declared_type.clone(),
        });
    }
    match key {
        SplitKey::Columns {
            names,
            single_integer: true,
            ..
        } if names.len() == 1 => Ok(TableMethod::Watermark {
            column: column.name.clone(),
            key_column: names[0].clone(),
        }),
        _ => Err(MethodError::NoIntegerKey {
            table: table.name.to_string(),
            column: column.name.clone(),
        }),
    }
}
