//! Writes Arrow batches as the bytes MySQL loads: tab-separated lines for `LOAD DATA
//! LOCAL INFILE`, and SQL literals for the multi-row INSERT fallback.
//!
//! `LOAD DATA` reads the lines with `FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES
//! TERMINATED BY '\n'` and `CHARACTER SET utf8mb4`: NULL is `\N`; in text, backslash,
//! tab, newline and NUL are escaped (`\\`, `\t`, `\n`, `\0`), every other byte is sent as
//! it is. Bytes (blobs, UUIDs) travel as hex into a variable, stored with `UNHEX(@v)`, so
//! no byte is ever interpreted as text; bits and booleans travel as decimal into a
//! variable stored with `CAST(@v AS UNSIGNED)`, since `LOAD DATA` would store the digits'
//! characters into a `BIT` column. Floats are written in the shortest form that reads
//! back to the same bits.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    Time64MicrosecondType, TimestampMicrosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use ferry_model::schema::{ColumnType, TableSchema, VARIANT_METADATA_KEY};
use ferry_model::temporal::{push_date, push_time, push_timestamp};

use super::sql::quote_ident;
use super::values::{format_f64, push_hex};
use crate::error::{ConnectorError, Result};

/// How `LOAD DATA` receives a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadAs {
    /// Straight into the column.
    Plain,
    /// Hex digits into a variable, stored with `UNHEX`.
    Hex,
    /// Decimal digits into a variable, stored with `CAST(... AS UNSIGNED)`.
    Unsigned,
}

/// How `LOAD DATA` receives a column of this carried type.
pub fn load_as(column_type: &ColumnType) -> LoadAs {
    match column_type {
        ColumnType::Blob | ColumnType::Uuid => LoadAs::Hex,
        ColumnType::Bit { .. } | ColumnType::Bool => LoadAs::Unsigned,
        _ => LoadAs::Plain,
    }
}

/// The column list and SET clause of a `LOAD DATA` statement for `table`'s columns.
pub fn load_data_columns(table: &TableSchema) -> String {
    let mut targets = Vec::with_capacity(table.columns.len());
    let mut assignments = Vec::new();
    for (index, column) in table.columns.iter().enumerate() {
        let quoted = quote_ident(&column.name);
        match load_as(&column.column_type) {
            LoadAs::Plain => targets.push(quoted),
            LoadAs::Hex => {
                targets.push(format!("@ferry{index}"));
                assignments.push(format!("{quoted} = UNHEX(@ferry{index})"));
            }
            LoadAs::Unsigned => {
                targets.push(format!("@ferry{index}"));
                assignments.push(format!("{quoted} = CAST(@ferry{index} AS UNSIGNED)"));
            }
        }
    }
    let mut clause = format!("({})", targets.join(", "));
    if !assignments.is_empty() {
        clause.push_str(" SET ");
        clause.push_str(&assignments.join(", "));
    }
    clause
}

/// One column of a batch, downcast once.
enum Values<'a> {
    Bool(&'a arrow_array::BooleanArray),
    Int8(&'a arrow_array::Int8Array),
    Int16(&'a arrow_array::Int16Array),
    Int32(&'a arrow_array::Int32Array),
    Int64(&'a arrow_array::Int64Array),
    UInt8(&'a arrow_array::UInt8Array),
    UInt16(&'a arrow_array::UInt16Array),
    UInt32(&'a arrow_array::UInt32Array),
    UInt64(&'a arrow_array::UInt64Array),
    Float32(&'a arrow_array::Float32Array),
    Float64(&'a arrow_array::Float64Array),
    Text(&'a arrow_array::StringArray),
    Binary(&'a arrow_array::BinaryArray),
    FixedBinary(&'a arrow_array::FixedSizeBinaryArray),
    Date(&'a arrow_array::Date32Array),
    Time(&'a arrow_array::Time64MicrosecondArray),
    Timestamp(&'a arrow_array::TimestampMicrosecondArray),
}

/// A value ready to be written, borrowed from the batch where it can be.
enum Cell<'a> {
    Null,
    /// A signed integer.
    Signed(i64),
    /// An unsigned integer.
    Unsigned(u64),
    /// Digits or a number: written as they are.
    Number(String),
    /// Text: escaped (TSV) or quoted (SQL).
    Text(&'a str),
    /// Text built here.
    OwnedText(String),
    /// A date (days since 1970-01-01), written `YYYY-MM-DD`.
    Date(i64),
    /// A time of day (microseconds), written `HH:MM:SS[.ffffff]`.
    Time(i64),
    /// A datetime (microseconds since 1970-01-01), written `YYYY-MM-DD HH:MM:SS[.ffffff]`.
    Timestamp(i64),
    /// Bytes: hex.
    Bytes(&'a [u8]),
}

/// The columns of a batch, checked against the table and downcast.
pub struct BatchColumns<'a> {
    table: &'a TableSchema,
    columns: Vec<(&'a ArrayRef, Values<'a>)>,
    rows: usize,
}

impl<'a> BatchColumns<'a> {
    /// Checks that `batch` carries `table`'s columns and downcasts them.
    pub fn new(table: &'a TableSchema, batch: &'a RecordBatch) -> Result<Self> {
        let schema = batch.schema_ref();
        if schema.fields().len() != table.columns.len() {
            return Err(ConnectorError::Task(format!(
                "table {}: a batch has {} columns where the table has {}",
                table.name,
                schema.fields().len(),
                table.columns.len()
            )));
        }
        let mut columns = Vec::with_capacity(batch.num_columns());
        for ((field, array), column) in schema
            .fields()
            .iter()
            .zip(batch.columns())
            .zip(&table.columns)
        {
            let unsupported = || ConnectorError::ValueType {
                table: table.name.clone(),
                column: column.name.clone(),
                detail: format!(
                    "the MySQL sink cannot store Arrow type {}{}",
                    field.data_type(),
                    if field.metadata().contains_key(VARIANT_METADATA_KEY) {
                        " of dynamically typed values; choose a target type with `columns:`"
                    } else {
                        ""
                    }
                ),
            };
            if field.metadata().contains_key(VARIANT_METADATA_KEY) {
                return Err(unsupported());
            }
            let values = match field.data_type() {
                DataType::Boolean => Values::Bool(array.as_boolean()),
                DataType::Int8 => Values::Int8(array.as_primitive::<Int8Type>()),
                DataType::Int16 => Values::Int16(array.as_primitive::<Int16Type>()),
                DataType::Int32 => Values::Int32(array.as_primitive::<Int32Type>()),
                DataType::Int64 => Values::Int64(array.as_primitive::<Int64Type>()),
                DataType::UInt8 => Values::UInt8(array.as_primitive::<UInt8Type>()),
                DataType::UInt16 => Values::UInt16(array.as_primitive::<UInt16Type>()),
                DataType::UInt32 => Values::UInt32(array.as_primitive::<UInt32Type>()),
                DataType::UInt64 => Values::UInt64(array.as_primitive::<UInt64Type>()),
                DataType::Float32 => Values::Float32(array.as_primitive::<Float32Type>()),
                DataType::Float64 => Values::Float64(array.as_primitive::<Float64Type>()),
                DataType::Utf8 => Values::Text(array.as_string::<i32>()),
                DataType::Binary => Values::Binary(array.as_binary::<i32>()),
                DataType::FixedSizeBinary(_) => Values::FixedBinary(array.as_fixed_size_binary()),
                DataType::Date32 => Values::Date(array.as_primitive::<Date32Type>()),
                DataType::Time64(TimeUnit::Microsecond) => {
                    Values::Time(array.as_primitive::<Time64MicrosecondType>())
                }
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    Values::Timestamp(array.as_primitive::<TimestampMicrosecondType>())
                }
                _ => return Err(unsupported()),
            };
            columns.push((array, values));
        }
        Ok(Self {
            table,
            columns,
            rows: batch.num_rows(),
        })
    }

    /// Rows in the batch.
    pub fn num_rows(&self) -> usize {
        self.rows
    }

    fn cell(&self, index: usize, row: usize) -> Result<Cell<'a>> {
        let (array, values) = &self.columns[index];
        if array.is_null(row) {
            return Ok(Cell::Null);
        }
        let not_finite = |value: f64| ConnectorError::ValueType {
            table: self.table.name.clone(),
            column: self.table.columns[index].name.clone(),
            detail: format!(
                "holds {value}, which MySQL cannot store in a float column; choose a target \
                 type with `columns:` (e.g. a varchar) or fix the value"
            ),
        };
        Ok(match values {
            Values::Bool(array) => Cell::Unsigned(u64::from(array.value(row))),
            Values::Int8(array) => Cell::Signed(i64::from(array.value(row))),
            // A YEAR takes `0` as 2000 when it comes as text (LOAD DATA): four digits
            // keep year 0 (`0000`) what it is.
            Values::Int16(array) if self.table.columns[index].column_type == ColumnType::Year => {
                Cell::OwnedText(format!("{:04}", array.value(row)))
            }
            Values::Int16(array) => Cell::Signed(i64::from(array.value(row))),
            Values::Int32(array) => Cell::Signed(i64::from(array.value(row))),
            Values::Int64(array) => Cell::Signed(array.value(row)),
            Values::UInt8(array) => Cell::Unsigned(u64::from(array.value(row))),
            Values::UInt16(array) => Cell::Unsigned(u64::from(array.value(row))),
            Values::UInt32(array) => Cell::Unsigned(u64::from(array.value(row))),
            Values::UInt64(array) => Cell::Unsigned(array.value(row)),
            // Widened exactly, so the shortest double text reads back to the same float.
            Values::Float32(array) => {
                let value = f64::from(array.value(row));
                Cell::Number(format_f64(value).ok_or_else(|| not_finite(value))?)
            }
            Values::Float64(array) => {
                let value = array.value(row);
                Cell::Number(format_f64(value).ok_or_else(|| not_finite(value))?)
            }
            Values::Text(array) => Cell::Text(array.value(row)),
            Values::Binary(array) => Cell::Bytes(array.value(row)),
            Values::FixedBinary(array) => Cell::Bytes(array.value(row)),
            Values::Date(array) => Cell::Date(i64::from(array.value(row))),
            Values::Time(array) => Cell::Time(array.value(row)),
            Values::Timestamp(array) => Cell::Timestamp(array.value(row)),
        })
    }

    /// Appends row `row` as one `LOAD DATA` line (see the module documentation).
    pub fn push_tsv_row(&self, row: usize, out: &mut Vec<u8>) -> Result<()> {
        for index in 0..self.columns.len() {
            if index > 0 {
                out.push(b'\t');
            }
            match self.cell(index, row)? {
                Cell::Null => out.extend_from_slice(b"\\N"),
                Cell::Signed(value) => push_signed(value, out),
                Cell::Unsigned(value) => push_unsigned(value, out),
                Cell::Number(text) | Cell::OwnedText(text) => push_escaped(text.as_bytes(), out),
                Cell::Text(text) => push_escaped(text.as_bytes(), out),
                Cell::Bytes(bytes) => push_hex(bytes, out),
                // Digits and separators: nothing to escape.
                Cell::Date(days) => push_date(days, out),
                Cell::Time(micros) => push_time(micros, out),
                Cell::Timestamp(micros) => push_timestamp(micros, out),
            }
        }
        out.push(b'\n');
        Ok(())
    }

    /// Appends row `row` as a parenthesized list of SQL literals.
    pub fn push_sql_row(&self, row: usize, out: &mut Vec<u8>) -> Result<()> {
        out.push(b'(');
        for index in 0..self.columns.len() {
            if index > 0 {
                out.push(b',');
            }
            match self.cell(index, row)? {
                Cell::Null => out.extend_from_slice(b"NULL"),
                Cell::Signed(value) => push_signed(value, out),
                Cell::Unsigned(value) => push_unsigned(value, out),
                Cell::Number(text) => out.extend_from_slice(text.as_bytes()),
                Cell::Text(text) => push_quoted(text.as_bytes(), out),
                Cell::OwnedText(text) => push_quoted(text.as_bytes(), out),
                Cell::Date(days) => {
                    out.push(b'\'');
                    push_date(days, out);
                    out.push(b'\'');
                }
                Cell::Time(micros) => {
                    out.push(b'\'');
                    push_time(micros, out);
                    out.push(b'\'');
                }
                Cell::Timestamp(micros) => {
                    out.push(b'\'');
                    push_timestamp(micros, out);
                    out.push(b'\'');
                }
                Cell::Bytes(bytes) => {
                    out.extend_from_slice(b"X'");
                    push_hex(bytes, out);
                    out.push(b'\'');
                }
            }
        }
        out.push(b')');
        Ok(())
    }
}

/// Appends the decimal digits of `value` (without the formatting machinery: this runs
/// for every integer of every row).
fn push_unsigned(value: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

fn push_signed(value: i64, out: &mut Vec<u8>) {
    if value < 0 {
        out.push(b'-');
    }
    push_unsigned(value.unsigned_abs(), out);
}

/// Appends text for a `LOAD DATA` field: backslash, tab, newline and NUL escaped.
fn push_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len());
    let mut start = 0;
    for (index, byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0 => b"\\0",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        out.extend_from_slice(escaped);
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends a quoted SQL string literal (backslash escapes on: ferry sets `sql_mode`).
fn push_quoted(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    out.push(b'\'');
    let mut start = 0;
    for (index, byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\'' => b"\\'",
            0 => b"\\0",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0x1a => b"\\Z",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        out.extend_from_slice(escaped);
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'\'');
}

#[cfg(test)]
mod tests {
    #[test]
    fn integers_are_written_as_display_writes_them() {
        for value in [0, 1, -1, 9, 10, -10, 12_345, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            push_signed(value, &mut out);
            assert_eq!(out, value.to_string().into_bytes());
        }
        for value in [0, 7, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            push_unsigned(value, &mut out);
            assert_eq!(out, value.to_string().into_bytes());
        }
    }

    use std::sync::Arc;

    use arrow_array::{BinaryArray, Float32Array, StringArray, UInt64Array};
    use ferry_model::schema::{ColumnSchema, TableName};

    use super::*;

    fn table(columns: &[(&str, ColumnType)]) -> TableSchema {
        TableSchema {
            name: TableName::bare("t"),
            columns: columns
                .iter()
                .map(|(name, column_type)| ColumnSchema {
                    name: (*name).to_string(),
                    declared_type: String::new(),
                    column_type: column_type.clone(),
                    nullable: true,
                })
                .collect(),
            primary_key: Vec::new(),
            has_rowid: false,
            source_kind: "test".into(),
            native_ddl: None,
            partitioning: None,
            partition: None,
        }
    }

    #[test]
    fn tsv_escapes_exactly_what_load_data_interprets() {
        let schema = table(&[
            ("t", ColumnType::Text),
            ("b", ColumnType::Blob),
            ("u", ColumnType::Bit { width: 64 }),
            ("f", ColumnType::Float32),
        ]);
        let batch = RecordBatch::try_new(
            schema.arrow_schema(false),
            vec![
                Arc::new(StringArray::from(vec![Some("a\tb\nc\\d\0é🦀 \\N"), None])),
                Arc::new(BinaryArray::from(vec![
                    Some(&[0u8, 9, 10, 92, 255][..]),
                    Some(&[][..]),
                ])),
                Arc::new(UInt64Array::from(vec![Some(u64::MAX), None])),
                Arc::new(Float32Array::from(vec![Some(0.1f32), Some(-0.0)])),
            ],
        )
        .expect("batch");
        let columns = BatchColumns::new(&schema, &batch).expect("columns");
        let mut out = Vec::new();
        columns.push_tsv_row(0, &mut out).expect("row 0");
        columns.push_tsv_row(1, &mut out).expect("row 1");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "a\\tb\\nc\\\\d\\0é🦀 \\\\N\t00090a5cff\t18446744073709551615\t1.0000000149011612e-1\n\
             \\N\t\t\\N\t-0e0\n"
        );
        assert_eq!(
            load_data_columns(&schema),
            "(`t`, @ferry1, @ferry2, `f`) SET `b` = UNHEX(@ferry1), `u` = CAST(@ferry2 AS UNSIGNED)"
        );
    }

    #[test]
    fn sql_literals_quote_text_and_hex_bytes() {
        let schema = table(&[("t", ColumnType::Text), ("b", ColumnType::Blob)]);
        let batch = RecordBatch::try_new(
            schema.arrow_schema(false),
            vec![
                Arc::new(StringArray::from(vec![Some("it's \\ \u{1a}"), None])),
                Arc::new(BinaryArray::from(vec![Some(&[0u8, 39][..]), None])),
            ],
        )
        .expect("batch");
        let columns = BatchColumns::new(&schema, &batch).expect("columns");
        let mut out = Vec::new();
        columns.push_sql_row(0, &mut out).expect("row 0");
        columns.push_sql_row(1, &mut out).expect("row 1");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "('it\\'s \\\\ \\Z',X'0027')(NULL,NULL)"
        );
    }

    #[test]
    fn nan_is_refused_with_the_column_named() {
        let schema = table(&[("f", ColumnType::Float32)]);
        let batch = RecordBatch::try_new(
            schema.arrow_schema(false),
            vec![Arc::new(Float32Array::from(vec![f32::NAN]))],
        )
        .expect("batch");
        let columns = BatchColumns::new(&schema, &batch).expect("columns");
        let error = columns.push_tsv_row(0, &mut Vec::new()).expect_err("nan");
        assert!(error.to_string().contains("column f"), "{error}");
    }
}
