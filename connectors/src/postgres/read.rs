//! Reads a range of a table with `COPY (SELECT ...) TO STDOUT (FORMAT binary)` and decodes
//! the binary stream incrementally into Arrow batches of the carriers a
//! [`TableSchema`] asks for.
//!
//! The same reader serves the source (each column decoded into its own carrier) and the
//! sink's verification, where a target column is decoded into the *source* column's
//! carrier: directly when the binary format allows it (`numeric(20,0)` into `UInt64`,
//! `jsonb` into JSON text), otherwise after a cast in the SELECT (`text` into `uuid`).

use std::pin::Pin;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use bytes::{Buf, BytesMut};
use ferry_model::schema::{ColumnType, TableName, TableSchema};
use futures::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use super::array::array_to_json;
use super::binary::{
    PG_EPOCH_DAYS, PG_EPOCH_MICROS, fixed, format_interval, format_timetz, numeric_to_i128,
    numeric_to_text,
};
use super::catalog::CatalogTable;
use super::connect::query_error;
use super::sql::quote_ident;
use super::types::{Scalar, WireType, decodes_directly, read_cast_for};
use crate::error::{ConnectorError, Result};

/// Rows per batch; a batch is also cut once its values pass [`MAX_BATCH_BYTES`].
pub const MAX_BATCH_ROWS: usize = 8192;
/// Approximate bytes of values per batch.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// The 11-byte signature that opens a binary COPY stream, then flags and extension length.
pub const COPY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// How one column is read: the SELECT expression and how its binary values become the
/// wanted carrier.
#[derive(Clone, Debug)]
pub struct ReadColumn {
    /// The column's name (for messages).
    pub name: String,
    /// The SELECT expression: the quoted column, or a cast of it.
    pub select_expr: String,
    /// The binary format the expression produces.
    pub wire: WireType,
    /// The carrier to produce.
    pub wanted: ColumnType,
}

fn cast_scalar(cast: &str) -> Option<Scalar> {
    Some(match cast {
        "boolean" => Scalar::Bool,
        "smallint" => Scalar::Int2,
        "integer" => Scalar::Int4,
        "bigint" => Scalar::Int8,
        "numeric" => Scalar::Numeric,
        "real" => Scalar::Float4,
        "double precision" => Scalar::Float8,
        "text" => Scalar::Text,
        "bytea" => Scalar::Bytea,
        "date" => Scalar::Date,
        "time" => Scalar::Time,
        "timetz" => Scalar::TimeTz,
        "timestamp" => Scalar::Timestamp,
        "timestamptz" => Scalar::TimestampTz,
        "interval" => Scalar::Interval,
        "uuid" => Scalar::Uuid,
        "json" => Scalar::Json,
        _ => return None,
    })
}

/// How a column of `actual` type is read into the carrier of `wanted`: directly, or
/// through a cast; `Err` with the reason when neither works.
pub fn read_column(
    name: &str,
    declared_type: &str,
    actual: &WireType,
    wanted: &ColumnType,
) -> Result<ReadColumn, String> {
    if *actual == WireType::Unsupported {
        return Err(format!(
            "ferry cannot carry values of type {declared_type} (supported: integers, numeric, \
             floats, boolean, text types, bytea, dates and times, interval, uuid, json, jsonb, \
             enums and arrays of these)"
        ));
    }
    if decodes_directly(actual, wanted) {
        return Ok(ReadColumn {
            name: name.to_string(),
            select_expr: quote_ident(name),
            wire: actual.clone(),
            wanted: wanted.clone(),
        });
    }
    let cast = read_cast_for(wanted)
        .and_then(|cast| cast_scalar(cast).map(|scalar| (cast, scalar)))
        .filter(|_| !matches!(actual, WireType::Array { .. }));
    match cast {
        Some((cast, scalar)) => Ok(ReadColumn {
            name: name.to_string(),
            select_expr: format!("{}::{cast}", quote_ident(name)),
            wire: WireType::Scalar(scalar),
            wanted: wanted.clone(),
        }),
        None => Err(format!(
            "a {declared_type} column cannot be read back as {}",
            wanted.display_name()
        )),
    }
}

/// Plans reading `schema`'s columns from the catalog table `catalog` (the source itself,
/// or a target read back into the source's carriers).
pub fn plan_columns(
    schema: &TableSchema,
    catalog: &CatalogTable,
    role: &'static str,
) -> Result<Vec<ReadColumn>> {
    schema
        .columns
        .iter()
        .map(|column| {
            let Some(actual) = catalog.column(&column.name) else {
                return Err(ConnectorError::SchemaMismatch {
                    table: catalog.name.clone(),
                    detail: format!(
                        "column {} is missing in the {role} table; plan the job again, or fix \
                         the table",
                        column.name
                    ),
                });
            };
            read_column(
                &column.name,
                &actual.declared_type,
                &actual.wire,
                &column.column_type,
            )
            .map_err(|detail| ConnectorError::Unsupported {
                table: catalog.name.clone(),
                detail: format!("column {}: {detail}", column.name),
            })
        })
        .collect()
}

/// The `COPY ... TO STDOUT` statement reading `columns` of `table` where `predicate`
/// holds, ordered by `order_by` when given.
pub fn copy_out_sql(
    table: &TableName,
    columns: &[ReadColumn],
    predicate: &str,
    order_by: Option<&str>,
) -> String {
    let select_list: Vec<&str> = columns
        .iter()
        .map(|column| column.select_expr.as_str())
        .collect();
    let mut select = format!(
        "SELECT {} FROM {} WHERE {predicate}",
        if select_list.is_empty() {
            String::new()
        } else {
            select_list.join(", ")
        },
        super::sql::quote_table(table)
    );
    if let Some(order_by) = order_by.filter(|order| !order.is_empty()) {
        select.push_str(" ORDER BY ");
        select.push_str(order_by);
    }
    format!("COPY ({select}) TO STDOUT (FORMAT binary)")
}

/// One column of a batch being built (the carriers are shared by every connector).
type Builder = crate::carrier::CarrierBuilder;

/// One column being decoded: where its values come from and where they go.
struct ColumnDecoder {
    wire: WireType,
    wanted: ColumnType,
    builder: Builder,
    scratch: String,
}

fn integer_of(scalar: Scalar, value: &[u8]) -> Result<i128, String> {
    Ok(match scalar {
        Scalar::Int2 => i128::from(i16::from_be_bytes(fixed(value, "smallint")?)),
        Scalar::Int4 => i128::from(i32::from_be_bytes(fixed(value, "integer")?)),
        Scalar::Int8 => i128::from(i64::from_be_bytes(fixed(value, "bigint")?)),
        Scalar::Numeric => numeric_to_i128(value)?,
        other => return Err(format!("a {other:?} value where an integer is carried")),
    })
}

fn narrow<T: TryFrom<i128>>(value: i128, carrier: &str) -> Result<T, String> {
    T::try_from(value).map_err(|_| format!("the value {value} does not fit the {carrier} carrier"))
}

fn utf8(value: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(value).map_err(|_| "text that is not valid UTF-8".to_string())
}

impl ColumnDecoder {
    /// Appends one value; returns its size in bytes for batch cutting.
    fn append(&mut self, value: &[u8]) -> Result<usize, String> {
        let scalar = match &self.wire {
            WireType::Scalar(scalar) => *scalar,
            WireType::Array { element, .. } => {
                let Builder::Utf8(builder) = &mut self.builder else {
                    return Err("an array where a non-text carrier is wanted".to_string());
                };
                self.scratch.clear();
                array_to_json(value, *element, &mut self.scratch)?;
                builder.append_value(&self.scratch);
                return Ok(self.scratch.len());
            }
            WireType::Unsupported => return Err("a value of an unsupported type".to_string()),
        };
        match &mut self.builder {
            Builder::Bool(builder) => builder.append_value(fixed::<1>(value, "boolean")?[0] != 0),
            Builder::Int8(builder) => {
                builder.append_value(narrow(integer_of(scalar, value)?, "int8")?)
            }
            Builder::Int16(builder) => {
                builder.append_value(narrow(integer_of(scalar, value)?, "int16")?)
            }
            Builder::Int32(builder) => {
                builder.append_value(narrow(integer_of(scalar, value)?, "int32")?)
            }
            Builder::Int64(builder) => {
                builder.append_value(narrow(integer_of(scalar, value)?, "int64")?)
            }
            Builder::UInt8(builder) => {
                builder.append_value(narrow(integer_of(scalar, value)?, "uint8")?)
            }
            Builder::UInt16(builder) => {
                builder.append_value(narrow(integer_of(scalar, value)?, "uint16")?)
            }
            Builder::UInt32(builder) => {
                builder.append_value(narrow(integer_of(scalar, value)?, "uint32")?)
            }
            Builder::UInt64(builder) => {
                builder.append_value(narrow(integer_of(scalar, value)?, "uint64")?)
            }
            Builder::Float32(builder) => {
                let float = match scalar {
                    Scalar::Float4 => f32::from_be_bytes(fixed(value, "real")?),
                    _ => {
                        let double = f64::from_be_bytes(fixed(value, "double precision")?);
                        let single = double as f32;
                        if f64::from(single).to_bits() != double.to_bits() && !double.is_nan() {
                            return Err(format!(
                                "the double {double:?} is not exactly a single-precision float"
                            ));
                        }
                        single
                    }
                };
                builder.append_value(float);
            }
            Builder::Float64(builder) => {
                let float = match scalar {
                    Scalar::Float4 => f64::from(f32::from_be_bytes(fixed(value, "real")?)),
                    _ => f64::from_be_bytes(fixed(value, "double precision")?),
                };
                builder.append_value(float);
            }
            Builder::Utf8(builder) => {
                let text: &str = match scalar {
                    Scalar::Numeric => {
                        self.scratch = numeric_to_text(value)?;
                        &self.scratch
                    }
                    Scalar::Int2 | Scalar::Int4 | Scalar::Int8 => {
                        self.scratch = integer_of(scalar, value)?.to_string();
                        &self.scratch
                    }
                    Scalar::Text | Scalar::Enum | Scalar::Json => utf8(value)?,
                    Scalar::Jsonb => match value.split_first() {
                        Some((1, body)) => utf8(body)?,
                        _ => return Err("a jsonb value of unknown version".to_string()),
                    },
                    Scalar::TimeTz => {
                        let raw: [u8; 12] = fixed(value, "timetz")?;
                        let micros = i64::from_be_bytes([
                            raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
                        ]);
                        let zone = i32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]);
                        self.scratch = format_timetz(micros, zone);
                        &self.scratch
                    }
                    Scalar::Interval => {
                        let raw: [u8; 16] = fixed(value, "interval")?;
                        let micros = i64::from_be_bytes([
                            raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
                        ]);
                        let days = i32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]);
                        let months = i32::from_be_bytes([raw[12], raw[13], raw[14], raw[15]]);
                        self.scratch = format_interval(micros, days, months);
                        &self.scratch
                    }
                    other => {
                        return Err(format!(
                            "a {other:?} value where {} text is carried",
                            self.wanted.display_name()
                        ));
                    }
                };
                builder.append_value(text);
                return Ok(text.len());
            }
            Builder::Binary(builder) => {
                builder.append_value(value);
                return Ok(value.len());
            }
            Builder::Date32(builder) => {
                let days = i32::from_be_bytes(fixed(value, "date")?);
                if days == i32::MAX || days == i32::MIN {
                    return Err(format!(
                        "holds the date {}infinity, which ferry cannot carry; replace it with a \
                         real date, or copy the column as text with a `columns:` override",
                        if days == i32::MIN { "-" } else { "" }
                    ));
                }
                let unix_days = narrow(i128::from(days) + i128::from(PG_EPOCH_DAYS), "date32")?;
                builder.append_value(unix_days);
            }
            Builder::Time64(builder) => {
                builder.append_value(i64::from_be_bytes(fixed(value, "time")?));
            }
            Builder::Timestamp(builder) => {
                let micros = i64::from_be_bytes(fixed(value, "timestamp")?);
                if micros == i64::MAX || micros == i64::MIN {
                    return Err(format!(
                        "holds the timestamp {}infinity, which ferry cannot carry; replace it \
                         with a real timestamp, or copy the column as text with a `columns:` \
                         override",
                        if micros == i64::MIN { "-" } else { "" }
                    ));
                }
                let unix = micros
                    .checked_add(PG_EPOCH_MICROS)
                    .ok_or_else(|| "a timestamp out of range".to_string())?;
                builder.append_value(unix);
            }
            Builder::Uuid(builder) => {
                let bytes: [u8; 16] = fixed(value, "uuid")?;
                builder
                    .append_value(bytes)
                    .map_err(|error| format!("failed to carry a uuid: {error}"))?;
            }
        }
        Ok(8)
    }
}

/// Decodes a binary COPY stream, fed in arbitrary pieces, into batches.
pub struct CopyDecoder {
    table: TableName,
    schema: SchemaRef,
    names: Vec<String>,
    columns: Vec<ColumnDecoder>,
    pending: BytesMut,
    header_done: bool,
    trailer_seen: bool,
    batch_rows: usize,
    batch_bytes: usize,
    fields: Vec<(usize, i32)>,
}

impl CopyDecoder {
    /// A decoder producing batches of `schema` from the values of `columns`.
    pub fn new(table: &TableName, columns: &[ReadColumn], schema: SchemaRef) -> Result<Self> {
        let decoders = columns
            .iter()
            .map(|column| {
                let builder = Builder::new(&column.wanted, MAX_BATCH_ROWS).ok_or_else(|| {
                    ConnectorError::Unsupported {
                        table: table.clone(),
                        detail: format!(
                            "column {}: the postgres connector cannot produce {} values",
                            column.name,
                            column.wanted.display_name()
                        ),
                    }
                })?;
                Ok(ColumnDecoder {
                    wire: column.wire.clone(),
                    wanted: column.wanted.clone(),
                    builder,
                    scratch: String::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            table: table.clone(),
            schema,
            names: columns.iter().map(|column| column.name.clone()).collect(),
            columns: decoders,
            pending: BytesMut::new(),
            header_done: false,
            trailer_seen: false,
            batch_rows: 0,
            batch_bytes: 0,
            fields: Vec::with_capacity(columns.len()),
        })
    }

    fn protocol_error(&self, detail: &str) -> ConnectorError {
        ConnectorError::Task(format!(
            "malformed binary COPY stream from table {}: {detail}",
            self.table
        ))
    }

    /// Adds the next piece of the stream.
    pub fn push(&mut self, piece: &[u8]) {
        self.pending.extend_from_slice(piece);
    }

    fn flush(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|column| column.builder.finish())
            .collect();
        self.batch_rows = 0;
        self.batch_bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|error| ConnectorError::Task(format!("failed to build a batch: {error}")))
    }

    /// Decodes what has arrived; returns a batch once one is full, `None` when more of
    /// the stream is needed.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if !self.header_done {
            if self.pending.len() < 19 {
                return Ok(None);
            }
            if &self.pending[..11] != COPY_SIGNATURE {
                return Err(self.protocol_error("missing signature"));
            }
            let extension_len = u32::from_be_bytes([
                self.pending[15],
                self.pending[16],
                self.pending[17],
                self.pending[18],
            ]) as usize;
            if self.pending.len() < 19 + extension_len {
                return Ok(None);
            }
            self.pending.advance(19 + extension_len);
            self.header_done = true;
        }
        loop {
            if self.batch_rows >= MAX_BATCH_ROWS || self.batch_bytes >= MAX_BATCH_BYTES {
                return self.flush().map(Some);
            }
            if self.trailer_seen {
                if !self.pending.is_empty() {
                    return Err(self.protocol_error("data after the trailer"));
                }
                return Ok(None);
            }
            if self.pending.len() < 2 {
                return Ok(None);
            }
            let num_fields = i16::from_be_bytes([self.pending[0], self.pending[1]]);
            if num_fields == -1 {
                self.trailer_seen = true;
                self.pending.advance(2);
                continue;
            }
            if num_fields as usize != self.columns.len() {
                return Err(self.protocol_error("a row with an unexpected number of fields"));
            }
            // First check that the whole row has arrived, then decode it.
            self.fields.clear();
            let mut at = 2usize;
            for _ in 0..num_fields {
                if self.pending.len() < at + 4 {
                    return Ok(None);
                }
                let length = i32::from_be_bytes([
                    self.pending[at],
                    self.pending[at + 1],
                    self.pending[at + 2],
                    self.pending[at + 3],
                ]);
                at += 4;
                if length >= 0 {
                    if self.pending.len() < at + length as usize {
                        return Ok(None);
                    }
                    self.fields.push((at, length));
                    at += length as usize;
                } else {
                    self.fields.push((at, -1));
                }
            }
            // A row that would take the batch past its byte size starts the next batch:
            // a batch holds at most one row beyond the limit, its own.
            if self.batch_rows > 0 && self.batch_bytes + at > MAX_BATCH_BYTES {
                return self.flush().map(Some);
            }
            for (index, &(start, length)) in self.fields.iter().enumerate() {
                let column = &mut self.columns[index];
                if length < 0 {
                    column.builder.append_null();
                    continue;
                }
                let value = &self.pending[start..start + length as usize];
                match column.append(value) {
                    Ok(size) => self.batch_bytes += size,
                    Err(detail) => {
                        return Err(ConnectorError::ValueType {
                            table: self.table.clone(),
                            column: self.names[index].clone(),
                            detail,
                        });
                    }
                }
            }
            self.batch_rows += 1;
            self.pending.advance(at);
        }
    }

    /// Ends the stream: returns the last, partial batch.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if !self.trailer_seen || !self.pending.is_empty() {
            return Err(self.protocol_error("the stream ended before its trailer"));
        }
        if self.batch_rows == 0 {
            return Ok(None);
        }
        self.flush().map(Some)
    }
}

/// A running `COPY ... TO STDOUT` whose rows come out as batches.
pub struct CopyReader {
    stream: Pin<Box<CopyOutStream>>,
    decoder: CopyDecoder,
    ended: bool,
    /// The largest message (row) read so far.
    largest_piece: usize,
    table: TableName,
    operation: &'static str,
}

impl CopyReader {
    /// Starts `sql` (a binary `COPY ... TO STDOUT`) on `client`.
    pub async fn start(
        client: &Client,
        sql: &str,
        decoder: CopyDecoder,
        table: &TableName,
        operation: &'static str,
    ) -> Result<Self> {
        let stream = client
            .copy_out(sql)
            .await
            .map_err(query_error(operation, table))?;
        Ok(Self {
            stream: Box::pin(stream),
            decoder,
            ended: false,
            largest_piece: 0,
            table: table.clone(),
            operation,
        })
    }

    /// The largest message (row) read so far, for [`super::pool::Session::note_read`].
    pub fn largest_piece(&self) -> usize {
        self.largest_piece
    }

    /// The next batch, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(batch) = self.decoder.next_batch()? {
                return Ok(Some(batch));
            }
            if self.ended {
                return Ok(None);
            }
            match self.stream.next().await {
                Some(Ok(piece)) => {
                    self.largest_piece = self.largest_piece.max(piece.len());
                    self.decoder.push(&piece);
                }
                Some(Err(error)) => return Err(query_error(self.operation, &self.table)(error)),
                None => {
                    self.ended = true;
                    return self.decoder.finish();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::types::oid;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, UInt64Type};
    use ferry_model::schema::ColumnSchema;

    fn table(columns: Vec<(&str, ColumnType)>) -> TableSchema {
        TableSchema {
            name: TableName::bare("t"),
            columns: columns
                .into_iter()
                .map(|(name, column_type)| ColumnSchema {
                    name: name.to_string(),
                    declared_type: String::new(),
                    column_type,
                    nullable: true,
                })
                .collect(),
            primary_key: vec![],
            has_rowid: false,
            source_kind: "postgres".into(),
            native_ddl: None,
            partitioning: None,
            partition: None,
            split_columns: Vec::new(),
        }
    }

    fn stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut bytes = COPY_SIGNATURE.to_vec();
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        for row in rows {
            bytes.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for field in row {
                match field {
                    Some(value) => {
                        bytes.extend_from_slice(&(value.len() as i32).to_be_bytes());
                        bytes.extend_from_slice(value);
                    }
                    None => bytes.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        bytes.extend_from_slice(&(-1i16).to_be_bytes());
        bytes
    }

    #[test]
    fn a_stream_split_anywhere_decodes_to_the_same_rows() {
        let schema = table(vec![
            ("i", ColumnType::Int32),
            ("u", ColumnType::UInt64),
            ("t", ColumnType::Text),
        ]);
        let columns = vec![
            read_column(
                "i",
                "integer",
                &WireType::Scalar(Scalar::Int4),
                &ColumnType::Int32,
            )
            .unwrap(),
            read_column(
                "u",
                "numeric(20,0)",
                &WireType::Scalar(Scalar::Numeric),
                &ColumnType::UInt64,
            )
            .unwrap(),
            read_column(
                "t",
                "text",
                &WireType::Scalar(Scalar::Text),
                &ColumnType::Text,
            )
            .unwrap(),
        ];
        let mut big = Vec::new();
        super::super::binary::i128_to_numeric(i128::from(u64::MAX), &mut big);
        let bytes = stream(&[
            vec![
                Some(7i32.to_be_bytes().to_vec()),
                Some(big.clone()),
                Some(b"x".to_vec()),
            ],
            vec![None, None, None],
        ]);
        for split in 0..bytes.len() {
            let mut decoder =
                CopyDecoder::new(&schema.name, &columns, schema.arrow_schema(false)).unwrap();
            let mut batches = Vec::new();
            for piece in [&bytes[..split], &bytes[split..]] {
                decoder.push(piece);
                while let Some(batch) = decoder.next_batch().unwrap() {
                    batches.push(batch);
                }
            }
            batches.extend(decoder.finish().unwrap());
            assert_eq!(batches.len(), 1);
            let batch = &batches[0];
            assert_eq!(batch.num_rows(), 2);
            assert_eq!(batch.column(0).as_primitive::<Int32Type>().value(0), 7);
            assert_eq!(
                batch.column(1).as_primitive::<UInt64Type>().value(0),
                u64::MAX
            );
            assert!(batch.column(2).is_null(1));
        }
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let schema = table(vec![("i", ColumnType::Int32)]);
        let columns = vec![
            read_column(
                "i",
                "integer",
                &WireType::Scalar(Scalar::Int4),
                &ColumnType::Int32,
            )
            .unwrap(),
        ];
        let bytes = stream(&[vec![Some(1i32.to_be_bytes().to_vec())]]);
        let mut decoder =
            CopyDecoder::new(&schema.name, &columns, schema.arrow_schema(false)).unwrap();
        decoder.push(&bytes[..bytes.len() - 2]);
        assert!(decoder.next_batch().unwrap().is_none());
        assert!(decoder.finish().is_err());
    }

    #[test]
    fn columns_are_cast_when_no_binary_conversion_exists() {
        let uuid_in_text = read_column(
            "u",
            "text",
            &WireType::Scalar(Scalar::Text),
            &ColumnType::Uuid,
        )
        .unwrap();
        assert_eq!(uuid_in_text.select_expr, "\"u\"::uuid");
        assert_eq!(uuid_in_text.wire, WireType::Scalar(Scalar::Uuid));
        let array = WireType::Array {
            element: Scalar::Int4,
            element_oid: oid::INT4,
        };
        assert!(read_column("a", "integer[]", &array, &ColumnType::Text).is_err());
        let inet = read_column("n", "inet", &WireType::Unsupported, &ColumnType::Text);
        assert!(inet.unwrap_err().contains("inet"));
    }
}
