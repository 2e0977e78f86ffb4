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

use arrow_array::RecordBatch;
use arrow_schema::{DataType, TimeUnit};
use ferry_model::column::{CellRef, ColumnMeaning, ColumnView};
use ferry_model::schema::{ColumnType, TableSchema};
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

/// The two textual forms MySQL reads rows in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowSyntax {
    /// A `LOAD DATA` line: `\N` for NULL, text escaped, bytes as bare hex.
    LoadData,
    /// SQL literals: `NULL`, text quoted, bytes as `X'…'`, dates and times quoted.
    SqlLiterals,
}

/// One column of a batch, viewed once.
struct BatchColumn<'a> {
    view: ColumnView<'a>,
    /// A YEAR carried as `Int16`: written with four digits, since `LOAD DATA` takes the
    /// text `0` as 2000 and `0000` as year 0.
    four_digit_year: bool,
}

/// The columns of a batch, checked against the table and viewed.
pub struct BatchColumns<'a> {
    table: &'a TableSchema,
    columns: Vec<BatchColumn<'a>>,
    rows: usize,
}

impl<'a> BatchColumns<'a> {
    /// Checks that `batch` carries `table`'s columns and views them.
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
            let is_variant = ColumnMeaning::of_field(field) == ColumnMeaning::Variant;
            let view = match ColumnView::new(&column.name, array.as_ref()) {
                Ok(view) if !is_variant => view,
                _ => {
                    return Err(ConnectorError::ValueType {
                        table: table.name.clone(),
                        column: column.name.clone(),
                        detail: format!(
                            "the MySQL sink cannot store Arrow type {}{}",
                            field.data_type(),
                            if is_variant {
                                " of dynamically typed values; choose a target type with `columns:`"
                            } else {
                                ""
                            }
                        ),
                    });
                }
            };
            columns.push(BatchColumn {
                view,
                four_digit_year: column.column_type == ColumnType::Year
                    && *field.data_type() == DataType::Int16,
            });
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

    /// About how many bytes row `row` takes as a `LOAD DATA` line (its text and binary
    /// values' lengths, a few bytes for any other value), so a line of a huge row is
    /// given its room at once rather than by doubling a buffer.
    pub fn row_bytes_hint(&self, row: usize) -> usize {
        self.columns
            .iter()
            .map(|column| match column.view.cell(row) {
                CellRef::Utf8(text) => text.len() + 1,
                // Bytes travel as hex (`UNHEX`).
                CellRef::Binary(bytes) | CellRef::FixedSizeBinary(bytes) => 2 * bytes.len() + 1,
                _ => 24,
            })
            .sum()
    }

    /// Appends row `row` as one `LOAD DATA` line (see the module documentation).
    pub fn push_tsv_row(&self, row: usize, out: &mut Vec<u8>) -> Result<()> {
        for index in 0..self.columns.len() {
            if index > 0 {
                out.push(b'\t');
            }
            self.push_value(index, row, RowSyntax::LoadData, out)?;
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
            self.push_value(index, row, RowSyntax::SqlLiterals, out)?;
        }
        out.push(b')');
        Ok(())
    }

    /// Appends the value of column `index` at `row` in `syntax`.
    fn push_value(
        &self,
        index: usize,
        row: usize,
        syntax: RowSyntax,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let column = &self.columns[index];
        let in_sql = syntax == RowSyntax::SqlLiterals;
        let push_text = |text: &[u8], out: &mut Vec<u8>| {
            if in_sql {
                push_quoted(text, out);
            } else {
                push_escaped(text, out);
            }
        };
        match column.view.cell(row) {
            CellRef::Null if in_sql => out.extend_from_slice(b"NULL"),
            CellRef::Null => out.extend_from_slice(b"\\N"),
            CellRef::Bool(value) => push_unsigned(u64::from(value), out),
            CellRef::Int(year) if column.four_digit_year => {
                push_text(format!("{year:04}").as_bytes(), out);
            }
            CellRef::Int(value) => push_signed(value, out),
            CellRef::UInt64(value) => push_unsigned(value, out),
            // Widened exactly, so the shortest double text reads back to the same float;
            // digits, point, sign and exponent: nothing to escape.
            CellRef::Float(value) => {
                let text = format_f64(value).ok_or_else(|| ConnectorError::ValueType {
                    table: self.table.name.clone(),
                    column: self.table.columns[index].name.clone(),
                    detail: format!(
                        "holds {value}, which MySQL cannot store in a float column; choose a \
                         target type with `columns:` (e.g. a varchar) or fix the value"
                    ),
                })?;
                out.extend_from_slice(text.as_bytes());
            }
            CellRef::Utf8(text) => push_text(text.as_bytes(), out),
            CellRef::Binary(bytes) | CellRef::FixedSizeBinary(bytes) if in_sql => {
                out.extend_from_slice(b"X'");
                push_hex(bytes, out);
                out.push(b'\'');
            }
            CellRef::Binary(bytes) | CellRef::FixedSizeBinary(bytes) => push_hex(bytes, out),
            CellRef::Date32(days) => {
                push_quoted_in_sql(in_sql, out, |out| push_date(i64::from(days), out));
            }
            CellRef::Time {
                value: micros,
                unit: TimeUnit::Microsecond,
            } => push_quoted_in_sql(in_sql, out, |out| push_time(micros, out)),
            CellRef::Timestamp {
                value: micros,
                unit: TimeUnit::Microsecond,
                ..
            } => push_quoted_in_sql(in_sql, out, |out| push_timestamp(micros, out)),
            CellRef::Date64(_)
            | CellRef::Time { .. }
            | CellRef::Timestamp { .. }
            | CellRef::Decimal { .. }
            | CellRef::Decimal256 { .. } => {
                return Err(ConnectorError::ValueType {
                    table: self.table.name.clone(),
                    column: self.table.columns[index].name.clone(),
                    detail: format!(
                        "the MySQL sink cannot store Arrow type {}",
                        column.view.data_type()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Appends what `push` writes (a date or time: digits and separators, nothing to escape),
/// between single quotes when `in_sql`.
fn push_quoted_in_sql(in_sql: bool, out: &mut Vec<u8>, push: impl FnOnce(&mut Vec<u8>)) {
    if in_sql {
        out.push(b'\'');
        push(out);
        out.push(b'\'');
    } else {
        push(out);
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
pub(super) mod tests {
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

    /// A table `t` of nullable columns, no key (also for the module's other tests).
    pub(in crate::mysql) fn table(columns: &[(&str, ColumnType)]) -> TableSchema {
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
            split_columns: Vec::new(),
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
