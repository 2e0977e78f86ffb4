//! Streams a `SELECT ... FORMAT RowBinary` into Arrow batches, or passes its bytes on
//! with each row hashed (the native path between two ClickHouse servers).

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::{Bytes, BytesMut};
use ferry_model::checksum::RangeChecksum;
use ferry_model::schema::{ColumnType, TableName};
use futures::StreamExt;
use xxhash_rust::xxh3::xxh3_128;

use super::http::ByteStream;
use super::rowbinary::{append, decode, row_len};
use super::types::ChType;
use crate::carrier::CarrierBuilder;
use crate::error::{ConnectorError, Failure, Result};
use crate::traits::BatchStream;

/// Rows per batch at most.
pub const MAX_BATCH_ROWS: usize = 16_384;
/// The native checksum's method.
pub const CHECKSUM_METHOD: &str = "clickhouse-rowbinary-xxh3-v1";
/// The native format's name.
pub const NATIVE_FORMAT: &str = "clickhouse-rowbinary";

pub(super) fn read_error(
    table: &TableName,
    error: impl std::fmt::Display,
    failure: Failure,
) -> ConnectorError {
    ConnectorError::Query {
        operation: "read chunk",
        table: table.clone(),
        source: error.to_string().into(),
        failure,
    }
}

/// Decodes `bytes` (RowBinary over `columns`) into batches of `schema`, whose fields are
/// the carriers of `carriers`.
pub fn batches(
    table: TableName,
    names: Vec<String>,
    columns: Vec<ChType>,
    carriers: Vec<ColumnType>,
    schema: SchemaRef,
    mut bytes: ByteStream,
) -> BatchStream {
    let stream = async_stream_batches(table, names, columns, carriers, schema);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
    tokio::spawn(async move {
        let mut state = stream;
        let mut buffer = BytesMut::new();
        loop {
            let piece = tokio::select! {
                piece = bytes.next() => piece,
                () = tx.closed() => return,
            };
            match piece {
                Some(Ok(piece)) => {
                    buffer.extend_from_slice(&piece);
                    match state.consume(&mut buffer) {
                        Ok(ready) => {
                            for batch in ready {
                                if tx.send(Ok(batch)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(error) => {
                            let _ = tx.send(Err(error)).await;
                            return;
                        }
                    }
                }
                Some(Err(error)) => {
                    let failure = error.failure();
                    let _ = tx.send(Err(read_error(&state.table, error, failure))).await;
                    return;
                }
                None => {
                    if !buffer.is_empty() {
                        let text = String::from_utf8_lossy(&buffer).to_string();
                        let error = super::http::trailing_error(&text).map_or_else(
                            || {
                                read_error(
                                    &state.table,
                                    "the output ends inside a row",
                                    Failure::Transient,
                                )
                            },
                            |error| {
                                let failure = error.failure();
                                read_error(&state.table, error, failure)
                            },
                        );
                        let _ = tx.send(Err(error)).await;
                        return;
                    }
                    if let Some(batch) = state.finish_batch() {
                        match batch {
                            Ok(batch) => {
                                let _ = tx.send(Ok(batch)).await;
                            }
                            Err(error) => {
                                let _ = tx.send(Err(error)).await;
                            }
                        }
                    }
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// [`batches`] of `table`'s columns, in `columns` types, into its Arrow carriers.
pub fn table_batches(
    table: &ferry_model::schema::TableSchema,
    columns: Vec<ChType>,
    bytes: ByteStream,
) -> BatchStream {
    batches(
        table.name.clone(),
        table.columns.iter().map(|c| c.name.clone()).collect(),
        columns,
        table
            .columns
            .iter()
            .map(|c| c.column_type.clone())
            .collect(),
        table.arrow_schema(false),
        bytes,
    )
}

struct Decoder {
    table: TableName,
    names: Vec<String>,
    columns: Vec<ChType>,
    builders: Vec<CarrierBuilder>,
    schema: SchemaRef,
    rows: usize,
}

fn async_stream_batches(
    table: TableName,
    names: Vec<String>,
    columns: Vec<ChType>,
    carriers: Vec<ColumnType>,
    schema: SchemaRef,
) -> Decoder {
    let builders = carriers
        .iter()
        .map(|carrier| {
            CarrierBuilder::new(carrier, MAX_BATCH_ROWS).unwrap_or(CarrierBuilder::Utf8(
                arrow_array::builder::StringBuilder::new(),
            ))
        })
        .collect();
    Decoder {
        table,
        names,
        columns,
        builders,
        schema,
        rows: 0,
    }
}

impl Decoder {
    /// Decodes every whole row of `buffer` (the rest stays), returning full batches.
    fn consume(&mut self, buffer: &mut BytesMut) -> Result<Vec<RecordBatch>> {
        let mut ready = Vec::new();
        let mut offset = 0;
        while let Some(len) = row_len(&self.columns, &buffer[offset..]) {
            let mut cursor = &buffer[offset..offset + len];
            for (index, column) in self.columns.iter().enumerate() {
                let value = decode(column, &mut cursor)
                    .map_err(|detail| self.value_error(index, detail))?;
                append(&mut self.builders[index], value)
                    .map_err(|detail| self.value_error(index, detail))?;
            }
            offset += len;
            self.rows += 1;
            if self.rows >= MAX_BATCH_ROWS
                && let Some(batch) = self.finish_batch()
            {
                ready.push(batch?);
            }
        }
        let _ = buffer.split_to(offset);
        Ok(ready)
    }

    fn value_error(&self, index: usize, detail: String) -> ConnectorError {
        ConnectorError::ValueType {
            table: self.table.clone(),
            column: self.names[index].clone(),
            detail,
        }
    }

    fn finish_batch(&mut self) -> Option<Result<RecordBatch>> {
        if self.rows == 0 {
            return None;
        }
        self.rows = 0;
        let arrays = self
            .builders
            .iter_mut()
            .map(CarrierBuilder::finish)
            .collect();
        Some(
            RecordBatch::try_new(Arc::clone(&self.schema), arrays).map_err(|error| {
                ConnectorError::Task(format!("building a batch of {}: {error}", self.table))
            }),
        )
    }
}

/// Hashes RowBinary rows as they pass.
#[derive(Default)]
pub struct RowHasher {
    pending: BytesMut,
    /// What was hashed so far.
    pub checksum: RangeChecksum,
}

impl RowHasher {
    /// Hashes every whole row of `piece` (with what was pending), keeping the rest.
    pub fn feed(&mut self, columns: &[ChType], piece: &[u8]) {
        if self.pending.is_empty() {
            // The usual case: hash the piece in place, keep only its unfinished row.
            let used = self.hash_rows(columns, piece);
            self.pending.extend_from_slice(&piece[used..]);
            return;
        }
        self.pending.extend_from_slice(piece);
        let pending = std::mem::take(&mut self.pending);
        let used = self.hash_rows(columns, &pending);
        self.pending = pending;
        let _ = self.pending.split_to(used);
    }

    /// Hashes the whole rows at the start of `bytes`; returns how many bytes they span.
    fn hash_rows(&mut self, columns: &[ChType], bytes: &[u8]) -> usize {
        let mut offset = 0;
        while let Some(len) = row_len(columns, &bytes[offset..]) {
            self.checksum.rows += 1;
            self.checksum.sum = self
                .checksum
                .sum
                .wrapping_add(xxh3_128(&bytes[offset..offset + len]));
            offset += len;
        }
        offset
    }

    /// Whether bytes of an unfinished row remain.
    pub fn has_partial_row(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Hashes a whole RowBinary output.
pub async fn hash_rows(
    table: &TableName,
    columns: &[ChType],
    mut bytes: ByteStream,
) -> Result<RangeChecksum> {
    let mut hasher = RowHasher::default();
    while let Some(piece) = bytes.next().await {
        let piece: Bytes = piece.map_err(|error| {
            let failure = error.failure();
            read_error(table, error, failure)
        })?;
        hasher.feed(columns, &piece);
    }
    if hasher.has_partial_row() {
        return Err(read_error(
            table,
            "the output ends inside a row",
            Failure::Transient,
        ));
    }
    Ok(hasher.checksum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_hash_alike_however_the_bytes_are_cut() {
        let columns = [ChType::String, ChType::UInt16];
        let mut bytes = Vec::new();
        for index in 0..50u16 {
            let text = "x".repeat(usize::from(index % 7));
            bytes.push(text.len() as u8);
            bytes.extend_from_slice(text.as_bytes());
            bytes.extend_from_slice(&index.to_le_bytes());
        }
        let mut whole = RowHasher::default();
        whole.feed(&columns, &bytes);
        assert_eq!(whole.checksum.rows, 50);
        assert!(!whole.has_partial_row());
        for cut in [1, 2, 3, 5, 17] {
            let mut pieces = RowHasher::default();
            for piece in bytes.chunks(cut) {
                pieces.feed(&columns, piece);
            }
            assert_eq!(pieces.checksum, whole.checksum, "pieces of {cut} bytes");
            assert!(!pieces.has_partial_row());
        }
    }
}
