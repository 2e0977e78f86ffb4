//! Reads a range of a table into Arrow batches of the carriers, streaming: rows come off
//! the socket one by one (binary protocol) and leave as batches of at most
//! [`MAX_BATCH_ROWS`] rows or about [`MAX_BATCH_BYTES`] bytes.
//!
//! The wanted carrier of each column is the *source* column's type, whichever side is
//! read: the target's `tinyint(1)` is read back into `Bool`, its `binary(16)` into
//! `Uuid`, its `datetime(6)` into `TimestampTz` (as UTC), so verification compares the
//! values the source had.

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use ferry_model::key::{ChunkRange, KeyBound, SplitKey};
use ferry_model::schema::{ColumnType, TableSchema};
use mysql_async::Value;

use super::config::ZeroDates;
use super::sql::{
    STATEMENT_TAG, data_table, key_columns, key_value_from_mysql, order_by, quote_ident,
    range_predicate,
};
use super::values::{
    bits_value, days_of, format_date, format_datetime, format_time_of_day_or_span, is_zero_date,
    micros_of, parse_uuid, time_of_day_micros,
};
use crate::error::{ConnectorError, Result};

/// Rows per batch; a batch is also cut once its values pass [`MAX_BATCH_BYTES`].
pub const MAX_BATCH_ROWS: usize = 8192;
/// Approximate bytes of values per batch.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// The SELECT statement and parameters that read `range` of `database`.`table` in key
/// order.
pub fn select_range(
    database: &str,
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
) -> Result<(String, Vec<Value>)> {
    let columns = key_columns(table, key)?;
    let (predicate, params) = range_predicate(table, &columns, key, range)?;
    let select_list: Vec<String> = table
        .columns
        .iter()
        .map(|column| quote_ident(&column.name))
        .collect();
    let mut sql = format!(
        "{STATEMENT_TAG}SELECT {} FROM {} WHERE {predicate}",
        if select_list.is_empty() {
            "1".to_string()
        } else {
            select_list.join(", ")
        },
        data_table(database, table)
    );
    let order = order_by(&columns);
    if !order.is_empty() {
        sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    }
    Ok((sql, params))
}

/// Why a value could not be carried.
enum Problem {
    ZeroDate(String),
    Other(String),
}

/// One column of a batch being built (the carriers are shared by every connector).
type ColumnBuilder = crate::carrier::CarrierBuilder;

impl ColumnBuilder {
    /// Appends `value` converted to the carrier of `carrier`; returns its size in bytes.
    /// `scratch` is a buffer for values rewritten on the way (decimals).
    fn append(
        &mut self,
        carrier: &ColumnType,
        value: &Value,
        zero_dates: ZeroDates,
        scratch: &mut String,
    ) -> std::result::Result<usize, Problem> {
        if matches!(value, Value::NULL) {
            self.append_null();
            return Ok(1);
        }
        let mismatch = |value: &Value| {
            Problem::Other(format!(
                "holds {} where ferry reads {} values; check the column's type",
                describe_value(value),
                carrier.display_name()
            ))
        };
        let out_of_range = |value: &Value| {
            Problem::Other(format!(
                "holds {} which does not fit {}",
                describe_value(value),
                carrier.display_name()
            ))
        };
        macro_rules! integer {
            ($builder:expr, $target:ty) => {{
                let converted = match value {
                    Value::Int(v) => <$target>::try_from(*v).ok(),
                    Value::UInt(v) => <$target>::try_from(*v).ok(),
                    Value::Bytes(bytes) => match carrier {
                        ColumnType::Bit { .. } => {
                            bits_value(bytes).and_then(|v| <$target>::try_from(v).ok())
                        }
                        _ => return Err(mismatch(value)),
                    },
                    _ => return Err(mismatch(value)),
                };
                $builder.append_value(converted.ok_or_else(|| out_of_range(value))?);
                Ok(8)
            }};
        }
        match self {
            ColumnBuilder::Bool(builder) => {
                let flag = match value {
                    Value::Int(v) => Some(*v),
                    Value::UInt(v) => i64::try_from(*v).ok(),
                    Value::Bytes(bytes) => bits_value(bytes).and_then(|v| i64::try_from(v).ok()),
                    _ => return Err(mismatch(value)),
                };
                match flag {
                    Some(0) => builder.append_value(false),
                    Some(1) => builder.append_value(true),
                    _ => return Err(out_of_range(value)),
                }
                Ok(1)
            }
            ColumnBuilder::Int8(builder) => integer!(builder, i8),
            ColumnBuilder::Int16(builder) => integer!(builder, i16),
            ColumnBuilder::Int32(builder) => integer!(builder, i32),
            ColumnBuilder::Int64(builder) => integer!(builder, i64),
            ColumnBuilder::UInt8(builder) => integer!(builder, u8),
            ColumnBuilder::UInt16(builder) => integer!(builder, u16),
            ColumnBuilder::UInt32(builder) => integer!(builder, u32),
            ColumnBuilder::UInt64(builder) => integer!(builder, u64),
            ColumnBuilder::Float32(builder) => {
                match value {
                    Value::Float(v) => builder.append_value(*v),
                    Value::Double(v) if f64::from(*v as f32) == *v => {
                        builder.append_value(*v as f32)
                    }
                    Value::Double(_) => return Err(out_of_range(value)),
                    _ => return Err(mismatch(value)),
                }
                Ok(4)
            }
            ColumnBuilder::Float64(builder) => {
                match value {
                    Value::Double(v) => builder.append_value(*v),
                    Value::Float(v) => builder.append_value(f64::from(*v)),
                    _ => return Err(mismatch(value)),
                }
                Ok(8)
            }
            ColumnBuilder::Utf8(builder) => {
                let formatted;
                let text: &str = match value {
                    Value::Bytes(bytes) => std::str::from_utf8(bytes).map_err(|_| {
                        Problem::Other(
                            "holds bytes that are not valid UTF-8 text; read it as a blob \
                             (a binary column) or fix the value"
                                .to_string(),
                        )
                    })?,
                    Value::Int(v) => {
                        formatted = v.to_string();
                        &formatted
                    }
                    Value::UInt(v) => {
                        formatted = v.to_string();
                        &formatted
                    }
                    Value::Date(year, month, day, hour, minute, second, micros) => {
                        formatted =
                            format_datetime(*year, *month, *day, *hour, *minute, *second, *micros);
                        &formatted
                    }
                    Value::Time(negative, days, hours, minutes, seconds, micros) => {
                        formatted = format_time_of_day_or_span(
                            *negative, *days, *hours, *minutes, *seconds, *micros,
                        );
                        &formatted
                    }
                    Value::Float(_) | Value::Double(_) | Value::NULL => {
                        return Err(mismatch(value));
                    }
                };
                if matches!(carrier, ColumnType::Decimal { .. }) {
                    scratch.clear();
                    ferry_model::decimal::normalize_into(text, scratch).map_err(|_| {
                        Problem::Other(format!("holds {text:?}, which is not a decimal number"))
                    })?;
                    builder.append_value(&*scratch);
                } else {
                    builder.append_value(text);
                }
                Ok(text.len())
            }
            ColumnBuilder::Binary(builder) => match value {
                Value::Bytes(bytes) => {
                    builder.append_value(bytes);
                    Ok(bytes.len())
                }
                _ => Err(mismatch(value)),
            },
            ColumnBuilder::Uuid(builder) => {
                let uuid = match value {
                    Value::Bytes(bytes) if bytes.len() == 16 => {
                        let mut uuid = [0u8; 16];
                        uuid.copy_from_slice(bytes);
                        Some(uuid)
                    }
                    Value::Bytes(bytes) => std::str::from_utf8(bytes).ok().and_then(parse_uuid),
                    _ => return Err(mismatch(value)),
                };
                let uuid = uuid.ok_or_else(|| out_of_range(value))?;
                builder
                    .append_value(uuid)
                    .map_err(|error| Problem::Other(error.to_string()))?;
                Ok(16)
            }
            ColumnBuilder::Date32(builder) => match value {
                &Value::Date(year, month, day, hour, minute, second, micros) => {
                    if is_zero_date(month, day) {
                        if zero_dates == ZeroDates::Null {
                            builder.append_null();
                            return Ok(1);
                        }
                        return Err(Problem::ZeroDate(format_date(year, month, day)));
                    }
                    if (hour, minute, second, micros) != (0, 0, 0, 0) {
                        return Err(out_of_range(value));
                    }
                    builder.append_value(
                        days_of(year, month, day).ok_or_else(|| out_of_range(value))?,
                    );
                    Ok(4)
                }
                _ => Err(mismatch(value)),
            },
            ColumnBuilder::Timestamp(builder) => match value {
                &Value::Date(year, month, day, hour, minute, second, micros) => {
                    if is_zero_date(month, day) {
                        if zero_dates == ZeroDates::Null {
                            builder.append_null();
                            return Ok(1);
                        }
                        return Err(Problem::ZeroDate(format_datetime(
                            year, month, day, hour, minute, second, micros,
                        )));
                    }
                    builder.append_value(
                        micros_of(year, month, day, hour, minute, second, micros)
                            .ok_or_else(|| out_of_range(value))?,
                    );
                    Ok(8)
                }
                _ => Err(mismatch(value)),
            },
            ColumnBuilder::Time64(builder) => match value {
                &Value::Time(negative, days, hours, minutes, seconds, micros) => {
                    let micros_of_day =
                        time_of_day_micros(negative, days, hours, minutes, seconds, micros)
                            .ok_or_else(|| {
                                Problem::Other(format!(
                                    "holds the time {}, outside 00:00:00..23:59:59.999999 \
                                     (a MySQL TIME may be negative or span days; ferry carries \
                                     times of day); exclude the table or change the column",
                                    format_time_of_day_or_span(
                                        negative, days, hours, minutes, seconds, micros
                                    )
                                ))
                            })?;
                    builder.append_value(micros_of_day);
                    Ok(8)
                }
                _ => Err(mismatch(value)),
            },
        }
    }
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::NULL => "NULL".to_string(),
        Value::Bytes(bytes) if bytes.len() <= 32 => match std::str::from_utf8(bytes) {
            Ok(text) => format!("the text {text:?}"),
            Err(_) => format!("{} bytes", bytes.len()),
        },
        Value::Bytes(bytes) => format!("a {}-byte value", bytes.len()),
        Value::Int(v) => format!("the integer {v}"),
        Value::UInt(v) => format!("the integer {v}"),
        Value::Float(v) => format!("the float {v:e}"),
        Value::Double(v) => format!("the double {v:e}"),
        Value::Date(year, month, day, hour, minute, second, micros) => format!(
            "the datetime {}",
            format_datetime(*year, *month, *day, *hour, *minute, *second, *micros)
        ),
        Value::Time(negative, days, hours, minutes, seconds, micros) => format!(
            "the time {}",
            format_time_of_day_or_span(*negative, *days, *hours, *minutes, *seconds, *micros)
        ),
    }
}

/// Turns rows (values in the order of `table.columns`) into batches of the carriers.
pub struct BatchBuilder<'a> {
    table: &'a TableSchema,
    schema: SchemaRef,
    builders: Vec<ColumnBuilder>,
    /// Positions of the key columns in a row, and their types, to name a row in errors.
    key_positions: Vec<(usize, ColumnType)>,
    zero_dates: ZeroDates,
    rows: usize,
    bytes: usize,
    /// The most bytes a row has taken so far.
    largest_row: usize,
    /// Reused for values rewritten on the way in.
    scratch: String,
}

impl<'a> BatchBuilder<'a> {
    /// A builder for batches of `table` (its carriers, `table.arrow_schema(false)`).
    pub fn new(table: &'a TableSchema, key: &SplitKey, zero_dates: ZeroDates) -> Result<Self> {
        let key_positions = match key {
            SplitKey::Columns { names, .. } => names
                .iter()
                .filter_map(|name| {
                    table
                        .columns
                        .iter()
                        .position(|column| &column.name == name)
                        .map(|position| (position, table.columns[position].column_type.clone()))
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut builder = Self {
            table,
            schema: table.arrow_schema(false),
            builders: Vec::new(),
            key_positions,
            zero_dates,
            rows: 0,
            bytes: 0,
            largest_row: 0,
            scratch: String::new(),
        };
        builder.builders = builder.new_builders()?;
        Ok(builder)
    }

    fn new_builders(&self) -> Result<Vec<ColumnBuilder>> {
        self.table
            .columns
            .iter()
            .map(|column| {
                ColumnBuilder::new(&column.column_type, MAX_BATCH_ROWS).ok_or_else(|| {
                    ConnectorError::Unsupported {
                        table: self.table.name.clone(),
                        detail: format!(
                            "column {} is {}, which the MySQL connector cannot carry",
                            column.name,
                            column.column_type.display_name()
                        ),
                    }
                })
            })
            .collect()
    }

    /// Adds a row; returns a batch when one is full.
    pub fn push_row(&mut self, values: Vec<Value>) -> Result<Option<RecordBatch>> {
        if values.len() != self.builders.len() {
            return Err(ConnectorError::Task(format!(
                "table {}: a row has {} values for {} columns",
                self.table.name,
                values.len(),
                self.builders.len()
            )));
        }
        // A row that would take the batch past its byte size starts the next batch: a
        // batch holds at most one row beyond the limit, its own.
        let row_bytes: usize = values.iter().map(value_bytes).sum();
        self.largest_row = self.largest_row.max(row_bytes);
        let full = if self.rows > 0 && self.bytes + row_bytes > MAX_BATCH_BYTES {
            self.finish()?
        } else {
            None
        };
        for (index, value) in values.iter().enumerate() {
            let column = &self.table.columns[index];
            match self.builders[index].append(
                &column.column_type,
                value,
                self.zero_dates,
                &mut self.scratch,
            ) {
                Ok(size) => self.bytes += size,
                Err(problem) => {
                    let key_text = self.key_text(&values);
                    let detail = match problem {
                        Problem::ZeroDate(text) => format!(
                            "holds the zero date {text} at key {key_text}, which no other engine \
                             can hold; fix the value, or read zero dates as NULL with \
                             `zero_dates: null` on the spec's source"
                        ),
                        Problem::Other(text) => format!("{text} (at key {key_text})"),
                    };
                    return Err(ConnectorError::ValueType {
                        table: self.table.name.clone(),
                        column: column.name.clone(),
                        detail,
                    });
                }
            }
        }
        self.rows += 1;
        if full.is_some() {
            return Ok(full);
        }
        if self.rows >= MAX_BATCH_ROWS || self.bytes >= MAX_BATCH_BYTES {
            return self.finish();
        }
        Ok(None)
    }

    /// The most bytes one row has taken so far (what the driver's buffers grew to).
    pub fn largest_row(&self) -> usize {
        self.largest_row
    }

    /// Returns the rows added since the last batch, if any.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect();
        let rows = self.rows;
        self.rows = 0;
        self.bytes = 0;
        let batch = if arrays.is_empty() {
            RecordBatch::try_new_with_options(
                self.schema.clone(),
                arrays,
                &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
            )
        } else {
            RecordBatch::try_new(self.schema.clone(), arrays)
        };
        batch
            .map(Some)
            .map_err(|error| ConnectorError::Task(format!("failed to build a batch: {error}")))
    }

    /// The row's key, for messages.
    fn key_text(&self, values: &[Value]) -> String {
        if self.key_positions.is_empty() {
            return "(no key)".to_string();
        }
        let mut bound = Vec::with_capacity(self.key_positions.len());
        for (position, column_type) in &self.key_positions {
            match values
                .get(*position)
                .map(|value| key_value_from_mysql(column_type, value.clone()))
            {
                Some(Ok(Some(value))) => bound.push(value),
                _ => return "(unreadable key)".to_string(),
            }
        }
        KeyBound(bound).to_string()
    }
}

/// About what a value takes in a batch (its bytes, or a fixed-width slot).
fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Bytes(bytes) => bytes.len(),
        _ => 8,
    }
}
