//! The same-engine fast path: a chunk leaves the source as the raw bytes of
//! `COPY (SELECT ...) TO STDOUT (FORMAT binary)` and enters the target untouched through
//! `COPY ... FROM STDIN (FORMAT binary)`, inside the same fenced overwrite transaction as
//! the Arrow path; both sides are verified by a checksum computed in SQL.
//!
//! The passthrough is only offered when every target column has exactly the source
//! column's type (binary formats are per type), and the SQL checksum hashes each row's
//! text form (`ROW(cols)::text`), which every ferry session prints alike (UTC, ISO
//! dates, shortest exact floats, hex `bytea`).

use bytes::{Bytes, BytesMut};
use ferry_common::key::{ChunkRange, SplitKey};
use ferry_common::schema::TableSchema;
use futures::StreamExt;
use tokio_postgres::Client;

use super::KIND;
use super::catalog::CatalogTable;
use super::connect::query_error;
use super::split::{key_columns, predicate};
use super::sql::{order_by, quote_ident, quote_table};
use crate::error::{ConnectorError, Result};
use crate::traits::{NativeChecksum, NativeStream};

/// The binary COPY format's name in [`NativeStream::format`].
pub const BINARY_COPY_FORMAT: &str = "postgres-binary-copy";
/// The SQL checksum's method name in [`NativeChecksum::method`].
pub const CHECKSUM_METHOD: &str = "postgres-md5-sum-v1";

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
            let is_enum = |column_type: &ferry_common::schema::ColumnType| match column_type {
                ferry_common::schema::ColumnType::Enum { .. } => true,
                ferry_common::schema::ColumnType::Array { element } => {
                    matches!(
                        element.as_ref(),
                        ferry_common::schema::ColumnType::Enum { .. }
                    )
                }
                _ => false,
            };
            is_enum(&source_column.column_type)
                || source_column.declared_type == target_column.declared_type
        })
}

fn column_list(table: &TableSchema) -> String {
    table
        .columns
        .iter()
        .map(|column| quote_ident(&column.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Starts the raw binary COPY of a range; the connection lives as long as the stream.
pub async fn read_native(
    client: Client,
    table: &TableSchema,
    catalog: &CatalogTable,
    key: &SplitKey,
    range: &ChunkRange,
) -> Result<NativeStream> {
    let keys = key_columns(catalog, key)?;
    let condition = predicate(&catalog.name, &keys, key, range)?;
    let mut select = format!(
        "SELECT {} FROM {} WHERE {condition}",
        column_list(table),
        quote_table(&catalog.name)
    );
    if !keys.is_empty() {
        select.push_str(" ORDER BY ");
        select.push_str(&order_by(&keys));
    }
    let sql = format!("COPY ({select}) TO STDOUT (FORMAT binary)");
    let on_error = query_error("read chunk", &catalog.name);
    let copy_out = client.copy_out(&sql).await.map_err(&on_error)?;
    let (bytes_tx, bytes_rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(2);
    tokio::spawn(async move {
        let cancel_token = client.cancel_token();
        let mut copy_out = Box::pin(copy_out);
        let mut piece = BytesMut::with_capacity(PIECE_BYTES + (64 << 10));
        loop {
            let next = tokio::select! {
                () = bytes_tx.closed() => {
                    let _ = cancel_token.cancel_query(tokio_postgres::NoTls).await;
                    return;
                }
                next = copy_out.next() => next,
            };
            match next {
                Some(Ok(data)) => {
                    piece.extend_from_slice(&data);
                    if piece.len() >= PIECE_BYTES
                        && bytes_tx.send(Ok(piece.split().freeze())).await.is_err()
                    {
                        let _ = cancel_token.cancel_query(tokio_postgres::NoTls).await;
                        return;
                    }
                }
                Some(Err(error)) => {
                    let _ = bytes_tx.send(Err(on_error(error))).await;
                    return;
                }
                None => {
                    if !piece.is_empty() {
                        let _ = bytes_tx.send(Ok(piece.freeze())).await;
                    }
                    // The client (and with it the connection) ends here.
                    drop(client);
                    return;
                }
            }
        }
    });
    Ok(NativeStream {
        format: BINARY_COPY_FORMAT,
        bytes: Box::pin(tokio_stream::wrappers::ReceiverStream::new(bytes_rx)),
    })
}

/// Counts and hashes a range in SQL: the number of rows, and two sums of 64-bit slices
/// of each row's `md5(ROW(cols)::text)`, combined into a 128-bit digest (hex) modulo
/// 2^64 each. Order-independent; a sum, not an XOR, so duplicate rows do not cancel.
pub async fn native_checksum(
    client: &Client,
    table: &TableSchema,
    catalog: &CatalogTable,
    key: &SplitKey,
    range: &ChunkRange,
) -> Result<NativeChecksum> {
    let keys = key_columns(catalog, key)?;
    let condition = predicate(&catalog.name, &keys, key, range)?;
    let row_hash = if table.columns.is_empty() {
        "md5('')".to_string()
    } else {
        format!("md5(ROW({})::text)", column_list(table))
    };
    let sql = format!(
        "SELECT count(*), \
                coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text, \
                coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text \
         FROM (SELECT {row_hash} AS h FROM {} WHERE {condition}) AS hashed",
        quote_table(&catalog.name)
    );
    let on_error = query_error("checksum chunk", &catalog.name);
    let row = client.query_one(&sql, &[]).await.map_err(&on_error)?;
    let rows: i64 = row.try_get(0).map_err(&on_error)?;
    let high: String = row.try_get(1).map_err(&on_error)?;
    let low: String = row.try_get(2).map_err(&on_error)?;
    let digest = combine_sums(&high, &low).ok_or_else(|| {
        ConnectorError::Task(format!(
            "the SQL checksum of table {} returned sums that are not integers",
            catalog.name
        ))
    })?;
    Ok(NativeChecksum {
        method: CHECKSUM_METHOD,
        rows: rows.max(0) as u64,
        digest,
    })
}

/// Reduces two signed decimal sums modulo 2^64 and joins them as 32 hex digits.
fn combine_sums(high: &str, low: &str) -> Option<String> {
    let reduce = |text: &str| -> Option<u64> {
        let value: i128 = text.trim().parse().ok()?;
        Some(value.rem_euclid(1i128 << 64) as u64)
    };
    Some(format!("{:016x}{:016x}", reduce(high)?, reduce(low)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_combine_into_a_128_bit_digest() {
        assert_eq!(
            combine_sums("0", "0").as_deref(),
            Some("00000000000000000000000000000000")
        );
        assert_eq!(
            combine_sums("-1", "1").as_deref(),
            Some("ffffffffffffffff0000000000000001")
        );
        // 2^64 + 5 reduces to 5.
        assert_eq!(
            combine_sums("18446744073709551621", "0").as_deref(),
            Some("00000000000000050000000000000000")
        );
        assert!(combine_sums("1.5", "0").is_none());
    }
}
