//! The same-engine fast path: a chunk leaves the source as the raw bytes of
//! `COPY (SELECT ...) TO STDOUT (FORMAT binary)` and enters the target untouched through
//! `COPY ... FROM STDIN (FORMAT binary)`, inside the same fenced overwrite transaction as
//! the Arrow path.
//!
//! The passthrough is only offered when every target column has exactly the source
//! column's type: binary formats are per type, so the same values are the same bytes on
//! both sides. It is verified on those bytes ([`CHECKSUM_METHOD`]): each tuple of the
//! binary stream (its field count, and each field's length and bytes) is hashed with
//! XXH3-128 and the hashes are summed like the canonical checksum's
//! ([`RangeChecksum`]). The source's tuples are hashed as they pass; the target's range
//! is read back with the same `COPY (SELECT same columns ...)` and hashed alike. The one
//! part of a value that names a database object, the element type OID in the header of
//! an array of enums (enum types get their own OID in each database), is hashed as zero.

use bytes::{Bytes, BytesMut};
use ferry_model::checksum::RangeChecksum;
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::{ColumnType, TableName, TableSchema};
use futures::StreamExt;
use tokio_postgres_rustls::MakeRustlsConnect;
use xxhash_rust::xxh3::xxh3_128;

use super::KIND;
use super::catalog::CatalogTable;
use super::connect::query_error;
use super::pool::Session;
use super::read::COPY_SIGNATURE;
use super::split::{key_columns, predicate};
use super::sql::{order_by, quote_ident, quote_table};
use crate::error::{ConnectorError, Result};
use crate::traits::{NativeChecksum, NativeRead, NativeStream};

/// The binary COPY format's name in [`NativeStream::format`].
pub const BINARY_COPY_FORMAT: &str = "postgres-binary-copy";
/// The checksum's method name in [`NativeChecksum::method`].
pub const CHECKSUM_METHOD: &str = "postgres-copy-binary-xxh3-v1";

/// Raw COPY data is handed on in pieces of about this size (PostgreSQL sends one
/// message per row; coalescing them spares the target a message per row).
const PIECE_BYTES: usize = 256 << 10;

/// Whether `target` holds `table`'s columns, in order, with exactly the same types, so
/// the source's binary COPY data can go in untouched.
pub fn same_column_types(table: &TableSchema, target: &CatalogTable) -> bool {
    if table.source_kind != KIND || table.columns.len() != target.columns.len() {
        return false;
    }
    let target_schema = target.to_schema(KIND);
    table
        .columns
        .iter()
        .zip(&target_schema.columns)
        .all(|(source_column, target_column)| {
            if source_column.name != target_column.name
                || source_column.column_type != target_column.column_type
            {
                return false;
            }
            // Enum types may live in another schema of the target (same labels, same
            // binary form: the label); every other type must print the same.
            enum_element(&source_column.column_type).is_some()
                || source_column.declared_type == target_column.declared_type
        })
}

/// The enum a column holds, directly or as the elements of an array.
fn enum_element(column_type: &ColumnType) -> Option<&ColumnType> {
    match column_type {
        ColumnType::Enum { .. } => Some(column_type),
        ColumnType::Array { element } => enum_element(element),
        _ => None,
    }
}

/// The `COPY (SELECT the columns of table ...) TO STDOUT (FORMAT binary)` of a range of
/// `catalog`, in key order when `ordered`.
fn copy_out_sql(
    table: &TableSchema,
    catalog: &CatalogTable,
    key: &SplitKey,
    range: &ChunkRange,
    ordered: bool,
) -> Result<String> {
    let keys = key_columns(catalog, key)?;
    let condition = predicate(&catalog.name, &keys, key, range)?;
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|column| quote_ident(&column.name))
        .collect();
    let mut select = format!(
        "SELECT {} FROM {} WHERE {condition}",
        columns.join(", "),
        quote_table(&catalog.name)
    );
    let order = order_by(&keys);
    if ordered && !order.is_empty() {
        select.push_str(" ORDER BY ");
        select.push_str(&order);
    }
    Ok(format!("COPY ({select}) TO STDOUT (FORMAT binary)"))
}

/// Starts the raw binary COPY of a range, hashing its tuples as they pass; the
/// connection lives as long as the stream.
pub async fn read_native(
    mut client: Session,
    tls: MakeRustlsConnect,
    table: &TableSchema,
    catalog: &CatalogTable,
    key: &SplitKey,
    range: &ChunkRange,
) -> Result<NativeRead> {
    let sql = copy_out_sql(table, catalog, key, range, true)?;
    let on_error = query_error("read chunk", &catalog.name);
    let copy_out = client.copy_out(&sql).await.map_err(&on_error)?;
    let mut hasher = TupleHasher::new(table);
    let name = catalog.name.clone();
    let (bytes_tx, bytes_rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(2);
    let (checksum_tx, checksum_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let cancel_token = client.cancel_token();
        let mut copy_out = Box::pin(copy_out);
        let mut piece = BytesMut::with_capacity(PIECE_BYTES + (64 << 10));
        loop {
            // The next row first: PostgreSQL sends a message per row, and most are
            // already buffered, so watching for a dropped stream (which registers a
            // waiter) only happens when the source makes us wait.
            let next = tokio::select! {
                biased;
                next = copy_out.next() => next,
                () = bytes_tx.closed() => {
                    let _ = cancel_token.cancel_query(tls.clone()).await;
                    return;
                }
            };
            match next {
                Some(Ok(data)) => {
                    client.note_read(data.len());
                    if let Err(detail) = hasher.push(&data) {
                        let _ = bytes_tx.send(Err(malformed(&name, &detail))).await;
                        let _ = cancel_token.cancel_query(tls.clone()).await;
                        return;
                    }
                    piece.extend_from_slice(&data);
                    if piece.len() >= PIECE_BYTES
                        && bytes_tx.send(Ok(piece.split().freeze())).await.is_err()
                    {
                        let _ = cancel_token.cancel_query(tls.clone()).await;
                        return;
                    }
                }
                Some(Err(error)) => {
                    let _ = bytes_tx.send(Err(on_error(error))).await;
                    return;
                }
                None => {
                    match hasher.finish() {
                        Ok(checksum) => {
                            let _ = checksum_tx.send(checksum);
                        }
                        Err(detail) => {
                            let _ = bytes_tx.send(Err(malformed(&name, &detail))).await;
                            return;
                        }
                    }
                    if !piece.is_empty() {
                        let _ = bytes_tx.send(Ok(piece.freeze())).await;
                    }
                    // Every row is read: the connection is free for the next chunk (a
                    // source read sets nothing on its session).
                    drop(copy_out);
                    client.release_settings_unchanged().await;
                    return;
                }
            }
        }
    });
    let table_name = catalog.name.clone();
    Ok(NativeRead {
        stream: NativeStream {
            format: BINARY_COPY_FORMAT,
            bytes: Box::pin(tokio_stream::wrappers::ReceiverStream::new(bytes_rx)),
        },
        checksum: Box::pin(async move {
            let checksum = checksum_rx.await.map_err(|_| {
                ConnectorError::Task(format!(
                    "the binary COPY of table {table_name} ended before all its rows were read"
                ))
            })?;
            Ok(NativeChecksum {
                method: CHECKSUM_METHOD,
                checksum,
            })
        }),
    })
}

/// Reads a range back in binary COPY (in any order) and hashes it like the source's
/// stream.
pub async fn checksum_range(
    client: &mut Session,
    table: &TableSchema,
    catalog: &CatalogTable,
    key: &SplitKey,
    range: &ChunkRange,
) -> Result<NativeChecksum> {
    let sql = copy_out_sql(table, catalog, key, range, false)?;
    client
        .prefer_key_index()
        .await
        .map_err(query_error("checksum chunk", &catalog.name))?;
    let checksum = hash_copy_out(client, &sql, TupleHasher::new(table), &catalog.name)
        .await?
        .finish()
        .map_err(|detail| malformed(&catalog.name, &detail))?;
    Ok(NativeChecksum {
        method: CHECKSUM_METHOD,
        checksum,
    })
}

/// Runs the binary `COPY ... TO STDOUT` `sql` and feeds its data to `hasher`.
pub(super) async fn hash_copy_out(
    client: &mut Session,
    sql: &str,
    mut hasher: TupleHasher,
    table: &TableName,
) -> Result<TupleHasher> {
    let on_error = query_error("checksum chunk", table);
    let mut copy_out = Box::pin(client.copy_out(sql).await.map_err(&on_error)?);
    let mut largest = 0;
    while let Some(data) = copy_out.next().await {
        let data = data.map_err(&on_error)?;
        largest = largest.max(data.len());
        hasher
            .push(&data)
            .map_err(|detail| malformed(table, &detail))?;
    }
    drop(copy_out);
    client.note_read(largest);
    Ok(hasher)
}

pub(super) fn malformed(table: &TableName, detail: &str) -> ConnectorError {
    ConnectorError::Task(format!(
        "malformed binary COPY stream from table {table}: {detail}"
    ))
}

/// Where a binary COPY stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Header,
    Tuples,
    Trailer,
}

/// Hashes the tuples of a binary COPY stream fed in arbitrary pieces: the row count and
/// the wrapping sum of each tuple's XXH3-128.
pub struct TupleHasher {
    /// Per column: whether it holds arrays of enums (element OID hashed as zero).
    enum_arrays: Vec<bool>,
    part: Part,
    /// The start of an incomplete header or tuple, waiting for the next piece.
    pending: Vec<u8>,
    /// Where the current tuple's enum array element OIDs are.
    oid_offsets: Vec<usize>,
    /// A tuple with those OIDs zeroed (or without its range index).
    scratch: Vec<u8>,
    /// Whether each tuple starts with the index of its range, left out of its hash
    /// ([`super::one_pass::native_checksums`]); otherwise every tuple is in range 0.
    indexed: bool,
    /// Each range's checksum (one range for a stream that is not indexed).
    sums: Vec<RangeChecksum>,
    /// Tuples whose index names no range (a row in no chunk: counted, never hashed).
    outside: u64,
}

impl TupleHasher {
    /// A hasher for the stream of `table`'s columns.
    pub fn new(table: &TableSchema) -> Self {
        Self {
            enum_arrays: table
                .columns
                .iter()
                .map(|column| {
                    matches!(column.column_type, ColumnType::Array { .. })
                        && enum_element(&column.column_type).is_some()
                })
                .collect(),
            part: Part::Header,
            pending: Vec::new(),
            oid_offsets: Vec::new(),
            scratch: Vec::new(),
            indexed: false,
            sums: vec![RangeChecksum::default()],
            outside: 0,
        }
    }

    /// A hasher for the stream of a range index (`int4`) followed by `table`'s columns,
    /// each tuple hashed, without the index, into its range's checksum (as
    /// [`TupleHasher::new`] would hash it in a stream of that range alone).
    pub(super) fn per_range(table: &TableSchema, ranges: usize) -> Self {
        Self {
            indexed: true,
            sums: vec![RangeChecksum::default(); ranges],
            ..Self::new(table)
        }
    }

    /// [`TupleHasher::finish`] of a [`TupleHasher::per_range`] stream: each range's
    /// checksum, and the number of tuples outside every range.
    pub(super) fn finish_ranges(self) -> Result<(Vec<RangeChecksum>, u64), String> {
        if self.part != Part::Trailer || !self.pending.is_empty() {
            return Err("the stream ended before its trailer".to_string());
        }
        Ok((self.sums, self.outside))
    }

    /// Hashes the complete tuples of the stream's next piece.
    pub fn push(&mut self, piece: &[u8]) -> Result<(), String> {
        if self.pending.is_empty() {
            let used = self.consume(piece)?;
            self.pending.extend_from_slice(&piece[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(piece);
            let used = self.consume(&pending)?;
            pending.drain(..used);
            self.pending = pending;
        }
        Ok(())
    }

    /// The checksum of the whole stream; an error unless it ended with its trailer.
    pub fn finish(self) -> Result<RangeChecksum, String> {
        let (sums, _) = self.finish_ranges()?;
        Ok(sums.first().copied().unwrap_or_default())
    }

    /// Hashes what `data` holds in full; returns the bytes used.
    fn consume(&mut self, data: &[u8]) -> Result<usize, String> {
        let mut at = 0;
        loop {
            match self.part {
                Part::Header => {
                    // Signature, flags, extension length, extension.
                    let Some(extension) = data.get(15..19) else {
                        return Ok(at);
                    };
                    if &data[..11] != COPY_SIGNATURE {
                        return Err("missing signature".to_string());
                    }
                    let extension = u32::from_be_bytes([
                        extension[0],
                        extension[1],
                        extension[2],
                        extension[3],
                    ]);
                    let end = 19 + extension as usize;
                    if data.len() < end {
                        return Ok(at);
                    }
                    at = end;
                    self.part = Part::Tuples;
                }
                Part::Tuples => match self.tuple(&data[at..])? {
                    Some(used) => at += used,
                    None => return Ok(at),
                },
                Part::Trailer => {
                    if at < data.len() {
                        return Err("data after the trailer".to_string());
                    }
                    return Ok(at);
                }
            }
        }
    }

    /// Hashes the tuple `data` starts with; `None` when it is incomplete.
    fn tuple(&mut self, data: &[u8]) -> Result<Option<usize>, String> {
        let Some(count) = data.get(..2) else {
            return Ok(None);
        };
        let fields = i16::from_be_bytes([count[0], count[1]]);
        if fields == -1 {
            self.part = Part::Trailer;
            return Ok(Some(2));
        }
        let fields = usize::try_from(fields).map_err(|_| "a negative field count".to_string())?;
        // A per-range stream's first field is the range index, which is not hashed.
        let skipped = usize::from(self.indexed);
        if fields < skipped {
            return Err("a tuple without its range index".to_string());
        }
        self.oid_offsets.clear();
        let mut at = 2;
        // A tuple of a stream that is not indexed is in range 0; an indexed one in the
        // range its index names (none for a NULL index).
        let mut range = (!self.indexed).then_some(0);
        // Where the hashed part of the tuple's fields starts.
        let mut hashed_from = 2;
        for field in 0..fields {
            let Some(length) = data.get(at..at + 4) else {
                return Ok(None);
            };
            let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
            at += 4;
            // -1 is NULL: no bytes follow.
            if let Ok(length) = usize::try_from(length) {
                if data.len() < at + length {
                    return Ok(None);
                }
                if field < skipped {
                    let index = data[at..at + length]
                        .try_into()
                        .map_err(|_| "a range index that is not an int4".to_string())?;
                    range = usize::try_from(i32::from_be_bytes(index)).ok();
                } else if length >= 12 && self.enum_arrays.get(field - skipped) == Some(&true) {
                    // An array starts with its dimensions, flags and element type OID.
                    self.oid_offsets.push(at + 8);
                }
                at += length;
            }
            if field < skipped {
                hashed_from = at;
            }
        }
        let hash = if skipped == 0 && self.oid_offsets.is_empty() {
            xxh3_128(&data[..at])
        } else {
            // The tuple as a stream of the table's columns alone holds it: one field
            // fewer, the range index's eight bytes left out.
            let start = if skipped == 0 { 0 } else { hashed_from };
            self.scratch.clear();
            if skipped == 1 {
                let count = i16::try_from(fields - 1).unwrap_or(i16::MAX);
                self.scratch.extend_from_slice(&count.to_be_bytes());
            }
            let shift = start - self.scratch.len();
            self.scratch
                .extend_from_slice(data.get(start..at).unwrap_or_default());
            for &offset in &self.oid_offsets {
                self.scratch[offset - shift..offset - shift + 4].fill(0);
            }
            xxh3_128(&self.scratch)
        };
        match range.and_then(|range| self.sums.get_mut(range)) {
            Some(checksum) => {
                checksum.rows = checksum.rows.wrapping_add(1);
                checksum.sum = checksum.sum.wrapping_add(hash);
            }
            None => self.outside += 1,
        }
        Ok(Some(at))
    }
}

#[cfg(test)]
mod tests {
    use ferry_model::schema::ColumnSchema;

    use super::*;

    fn table(columns: Vec<ColumnType>) -> TableSchema {
        TableSchema {
            name: TableName::bare("t"),
            columns: columns
                .into_iter()
                .enumerate()
                .map(|(index, column_type)| ColumnSchema {
                    name: format!("c{index}"),
                    declared_type: String::new(),
                    column_type,
                    nullable: true,
                })
                .collect(),
            primary_key: vec![],
            has_rowid: false,
            source_kind: KIND.into(),
            native_ddl: None,
            partitioning: None,
            partition: None,
            split_columns: Vec::new(),
        }
    }

    fn stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut bytes = COPY_SIGNATURE.to_vec();
        bytes.extend_from_slice(&0u32.to_be_bytes());
        // A header extension, which is skipped.
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(b"ext");
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

    fn hash(table: &TableSchema, pieces: &[&[u8]]) -> Result<RangeChecksum, String> {
        let mut hasher = TupleHasher::new(table);
        for piece in pieces {
            hasher.push(piece)?;
        }
        hasher.finish()
    }

    /// A one-dimensional array of one enum label, with the element type `oid`.
    fn enum_array(oid: u32, label: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [1u32, 0, oid, 1, 1] {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        bytes.extend_from_slice(&(label.len() as i32).to_be_bytes());
        bytes.extend_from_slice(label);
        bytes
    }

    #[test]
    fn tuples_hash_alike_however_the_stream_is_split_and_ordered() {
        let schema = table(vec![ColumnType::Int32, ColumnType::Text]);
        let first = vec![Some(7i32.to_be_bytes().to_vec()), Some(b"x".to_vec())];
        let second = vec![None, Some(Vec::new())];
        let bytes = stream(&[first.clone(), second.clone()]);
        let whole = hash(&schema, &[&bytes]).expect("hashes");
        assert_eq!(whole.rows, 2);
        let tuple = |row: &[Option<Vec<u8>>]| {
            let framed = stream(&[row.to_vec()]);
            xxh3_128(&framed[22..framed.len() - 2])
        };
        assert_eq!(whole.sum, tuple(&first).wrapping_add(tuple(&second)));
        for split in 0..bytes.len() {
            assert_eq!(
                hash(&schema, &[&bytes[..split], &bytes[split..]]),
                Ok(whole)
            );
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(hash(&schema, &bytewise), Ok(whole));
        let reordered = stream(&[second, first]);
        assert_eq!(hash(&schema, &[&reordered]), Ok(whole));
        // A NULL is not an empty value.
        let other = stream(&[vec![None, None]]);
        assert_ne!(hash(&schema, &[&other]).expect("hashes").sum, 0);
        assert_ne!(
            hash(&schema, &[&other]),
            hash(&schema, &[&stream(&[vec![None, Some(Vec::new())]])])
        );
    }

    #[test]
    fn enum_array_element_oids_are_not_hashed() {
        let labels = ColumnType::Enum {
            labels: vec!["a".into()],
        };
        let arrays = table(vec![ColumnType::Array {
            element: Box::new(labels),
        }]);
        let source = stream(&[vec![Some(enum_array(20399, b"a"))]]);
        let target = stream(&[vec![Some(enum_array(20389, b"a"))]]);
        assert_eq!(hash(&arrays, &[&source]), hash(&arrays, &[&target]));
        let changed = stream(&[vec![Some(enum_array(20389, b"b"))]]);
        assert_ne!(hash(&arrays, &[&source]), hash(&arrays, &[&changed]));
        // Other arrays keep their OID.
        let ints = table(vec![ColumnType::Array {
            element: Box::new(ColumnType::Int32),
        }]);
        assert_ne!(hash(&ints, &[&source]), hash(&ints, &[&target]));
    }

    #[test]
    fn a_truncated_or_malformed_stream_is_an_error() {
        let schema = table(vec![ColumnType::Int32]);
        let bytes = stream(&[vec![Some(1i32.to_be_bytes().to_vec())]]);
        assert!(hash(&schema, &[&bytes[..bytes.len() - 2]]).is_err());
        assert!(hash(&schema, &[&bytes[..10]]).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(hash(&schema, &[&trailing]).is_err());
        let mut unsigned = bytes;
        unsigned[0] = b'X';
        assert!(hash(&schema, &[&unsigned]).is_err());
    }

    #[test]
    fn a_per_range_stream_sums_each_range_as_its_own_stream_would() {
        let labels = ColumnType::Enum {
            labels: vec!["a".into()],
        };
        let schema = table(vec![
            ColumnType::Int32,
            ColumnType::Text,
            ColumnType::Array {
                element: Box::new(labels),
            },
        ]);
        let rows: Vec<Vec<Option<Vec<u8>>>> = (0..7i32)
            .map(|i| {
                vec![
                    Some(i.to_be_bytes().to_vec()),
                    (i % 3 != 0).then(|| format!("row {i}").into_bytes()),
                    Some(enum_array(20_000 + i as u32, b"a")),
                ]
            })
            .collect();
        // Rows 0, 3, 6 in range 1; the others in range 0; one more row in no range (-1)
        // and one with a NULL index.
        let range_of = |i: usize| usize::from(i.is_multiple_of(3));
        let mut indexed: Vec<Vec<Option<Vec<u8>>>> = rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let mut tuple = vec![Some((range_of(i) as i32).to_be_bytes().to_vec())];
                tuple.extend(row.iter().cloned());
                tuple
            })
            .collect();
        let mut outside = vec![Some((-1i32).to_be_bytes().to_vec())];
        outside.extend(rows[1].iter().cloned());
        indexed.push(outside);
        let mut no_index = vec![None];
        no_index.extend(rows[2].iter().cloned());
        indexed.push(no_index);
        let bytes = stream(&indexed);
        let mut hasher = TupleHasher::per_range(&schema, 2);
        for piece in bytes.chunks(5) {
            hasher.push(piece).expect("push");
        }
        let (sums, outside) = hasher.finish_ranges().expect("finish");
        assert_eq!(outside, 2);
        for (range, sum) in sums.iter().enumerate() {
            let alone: Vec<_> = rows
                .iter()
                .enumerate()
                .filter(|(i, _)| range_of(*i) == range)
                .map(|(_, row)| {
                    // The target's enum type has another OID: the sums agree.
                    let mut row = row.clone();
                    row[2] = Some(enum_array(1, b"a"));
                    row
                })
                .collect();
            assert_eq!(Ok(*sum), hash(&schema, &[&stream(&alone)]));
        }
        // A tuple without its index field is refused.
        let mut hasher = TupleHasher::per_range(&schema, 2);
        assert!(hasher.push(&stream(&[vec![]])).is_err());
    }
}
