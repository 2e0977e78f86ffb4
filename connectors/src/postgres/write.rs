//! Writes chunks with overwrite, fenced, in one transaction: fence check, `DELETE` of
//! the range, binary `COPY ... FROM STDIN`, fence upsert, commit. (Target tables are
//! created or checked in [`super::prepare`].)

use bytes::{Bytes, BytesMut};
use ferry_model::ids::Attempt;
use ferry_model::schema::{TableName, TableSchema};
use futures::{SinkExt, StreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};
use tokio_util::sync::CancellationToken;

use super::catalog::{CatalogTable, load_table};
use super::connect::query_error;
use super::encode::{ColumnWriter, Encoder, encoder_for, push_header, push_trailer};
use super::native::BINARY_COPY_FORMAT;
use super::pool::Session;
use super::prepare::{schema_of, target_name, target_relation};
use super::split::{PREFER_KEY_INDEX_LOCAL, key_columns, predicate};
use super::sql::{escaped_literal, quote_ident, quote_table};
use super::{FENCE_TABLE, KIND};
use crate::error::{ConnectorError, Result};
use crate::traits::{BatchStream, ChunkWrite, Fence, NativeStream, WriteSummary};

/// Encoded bytes are handed to the COPY once they pass this size.
const COPY_SEND_BYTES: usize = 1 << 20;

/// The fence table in `target`'s schema.
pub(super) fn fence_table(target: &TableName) -> TableName {
    TableName {
        schema: Some(schema_of(target).to_string()),
        name: FENCE_TABLE.to_string(),
    }
}

/// Creates the fence table if missing, tolerating a concurrent creator.
pub async fn ensure_fence_table(client: &Client, target: &TableName) -> Result<()> {
    let fence = fence_table(target);
    let exists = client
        .query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&quote_table(&fence), Type::TEXT)],
        )
        .await
        .and_then(|row| row.try_get::<_, bool>(0))
        .map_err(query_error("check fence table", &fence))?;
    if exists {
        return Ok(());
    }
    let created = client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (run_id text NOT NULL, chunk bigint NOT NULL, \
             table_name text NOT NULL, attempt bigint NOT NULL, committed_at timestamptz NOT NULL, \
             PRIMARY KEY (run_id, chunk))",
            quote_table(&fence)
        ))
        .await;
    match created {
        Ok(()) => Ok(()),
        // Two creators at once: one wins, the other sees a duplicate; the table exists.
        Err(error)
            if matches!(
                error.code(),
                Some(&SqlState::UNIQUE_VIOLATION | &SqlState::DUPLICATE_TABLE)
            ) =>
        {
            Ok(())
        }
        Err(error) => Err(query_error("create fence table", &fence)(error)),
    }
}

/// Waits for the next batch, or for cancellation.
pub(super) async fn next_batch(
    batches: &mut BatchStream,
    cancel: &CancellationToken,
) -> Result<Option<arrow_array::RecordBatch>> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(ConnectorError::Cancelled),
        item = batches.next() => item.transpose(),
    }
}

/// The encoders for `table`'s columns into the target table `catalog`.
pub(super) fn encoders(table: &TableSchema, catalog: &CatalogTable) -> Result<Vec<Encoder>> {
    table
        .columns
        .iter()
        .map(|column| {
            let target_column =
                catalog
                    .column(&column.name)
                    .ok_or_else(|| ConnectorError::SchemaMismatch {
                        table: catalog.name.clone(),
                        detail: format!(
                            "column {} is missing in the target table; prepare the table again",
                            column.name
                        ),
                    })?;
            encoder_for(&column.column_type, &target_column.wire).ok_or_else(|| {
                ConnectorError::type_mapping(
                    &table.name,
                    &column.name,
                    &column.declared_type,
                    KIND,
                    &format!(
                        "ferry cannot write {} values into a {} column",
                        column.column_type.display_name(),
                        target_column.declared_type
                    ),
                )
            })
        })
        .collect()
}

/// What a chunk's rows arrive as.
pub enum ChunkInput {
    /// Arrow batches, encoded here for the target columns' types.
    Batches(BatchStream),
    /// The source's own binary COPY stream, passed through untouched.
    Native(NativeStream),
}

/// The first piece of a chunk's input, taken before any lock.
enum FirstPiece {
    Batch(Option<arrow_array::RecordBatch>),
    Bytes(Option<Bytes>),
}

/// Waits for the next raw piece, or for cancellation.
async fn next_bytes(
    stream: &mut NativeStream,
    cancel: &CancellationToken,
) -> Result<Option<Bytes>> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(ConnectorError::Cancelled),
        item = stream.bytes.next() => item.transpose(),
    }
}

/// Names this session after the attempt (`ferry:{run}:{chunk}:{attempt}`) and ends the
/// sessions of older attempts of the same chunk. An older attempt still connected is a
/// worker that was cut off or stopped mid-chunk: its open transaction holds the fence
/// row's lock and would block this attempt until its TCP connection times out (hours).
/// Ended, it rolls back and can no longer commit. Best effort: without the privilege to
/// signal other sessions (`pg_signal_backend`) this attempt waits as before.
async fn end_older_attempts(client: &Client, fence: &Fence) {
    let prefix = fence.chunk_tag();
    let tag = fence.attempt_tag(fence.attempt);
    if let Err(error) = client
        .batch_execute(&format!("SET application_name = '{tag}'"))
        .await
    {
        tracing::warn!(%error, "cannot name the session after the attempt");
        return;
    }
    if fence.attempt.0 <= 1 {
        return;
    }
    let ended = client
        .query(
            "WITH older AS MATERIALIZED (SELECT pid FROM pg_catalog.pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND application_name LIKE $1 || '%' \
             AND split_part(application_name, ':', 4)::bigint < $2) \
             SELECT pid FROM older WHERE pg_terminate_backend(pid)",
            &[&prefix, &i64::from(fence.attempt.0)],
        )
        .await;
    match ended {
        Ok(rows) if !rows.is_empty() => tracing::warn!(
            chunk = %fence.chunk,
            attempt = %fence.attempt,
            sessions = rows.len(),
            "ended the target sessions of older attempts of this chunk"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot end older attempts' sessions"),
    }
}

/// Writes one chunk: fence, delete the range, COPY the rows in, record the fence,
/// commit. Any error or a cancellation drops the transaction, which rolls back.
pub async fn write_chunk(
    session: &mut Session,
    chunk: ChunkWrite<'_>,
    mut input: ChunkInput,
) -> Result<WriteSummary> {
    let ChunkWrite {
        table,
        key,
        range,
        fence,
        cancel,
        key_deferred,
    } = chunk;
    // Rows go to the chunk's partition table directly when it has one, so the delete
    // below can only reach that partition's rows; the fence stays with the table.
    let target = target_relation(table);
    let table_target = target_name(table);
    let on_error = query_error("write chunk", &target);
    if table.partition.is_some() && table.source_kind != KIND {
        return Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: "a partition of another engine's table cannot be written as a \
                     PostgreSQL partition"
                .to_string(),
        });
    }
    if let ChunkInput::Native(stream) = &input
        && stream.format != BINARY_COPY_FORMAT
    {
        return Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: format!(
                "the postgres sink cannot take the native format {:?}",
                stream.format
            ),
        });
    }
    // Read the catalog while the source starts its scan; it takes no lock.
    let catalog = load_table(&*session, &target)
        .await
        .map_err(&on_error)?
        .ok_or_else(|| ConnectorError::TableNotFound {
            role: "target",
            table: target.clone(),
        })?;
    let client: &mut Client = session;
    let column_encoders = match &input {
        ChunkInput::Batches(_) => encoders(table, &catalog)?,
        ChunkInput::Native(_) => Vec::new(),
    };
    let keys = key_columns(&catalog, key)?;
    let condition = predicate(&target, &keys, key, range)?;
    // A table of this job still without its key: the range's delete would scan the
    // whole table, and it is needed only when an earlier attempt of the chunk committed.
    let delete_when_refenced = key_deferred && catalog.primary_key.is_empty();
    // The fence table exists: the sink made sure of it before (`PostgresSink`).
    let fence_name = quote_table(&fence_table(&table_target));
    let chunk_number = i64::from(fence.chunk.0);
    let attempt_number = i64::from(fence.attempt.0);
    let table_label = table.name.to_string();
    // Wait for the first rows before locking anything, so a slow source scan does not
    // hold locks in the target.
    let first = match &mut input {
        ChunkInput::Batches(batches) => FirstPiece::Batch(next_batch(batches, cancel).await?),
        ChunkInput::Native(stream) => FirstPiece::Bytes(next_bytes(stream, cancel).await?),
    };

    if fence.attempt.0 > 1 {
        end_older_attempts(client, fence).await;
    }
    // One round trip for the statements before the COPY (they run in order): begin the
    // chunk's transaction, name the session after the attempt for as long as it lasts
    // (a later attempt of the chunk ends it if it hangs), then take the fence row's lock
    // and record this attempt in it unless a later one committed (a concurrent attempt
    // of the same chunk waits there until this one ends, then sees this attempt), then
    // clear the range. The fence row keeps this attempt only if the transaction commits.
    // Any error below drops the session unreleased: its connection closes, and the
    // server rolls the transaction back.
    let opening = format!(
        "BEGIN; SET LOCAL application_name = {tag}; {PREFER_KEY_INDEX_LOCAL}; \
         INSERT INTO {fence_name} AS f (run_id, chunk, table_name, attempt, committed_at) \
         VALUES ({run_id}, {chunk_number}, {table_text}, {attempt_number}, now()) \
         ON CONFLICT (run_id, chunk) DO UPDATE SET attempt = EXCLUDED.attempt, \
         table_name = EXCLUDED.table_name, committed_at = EXCLUDED.committed_at \
         WHERE f.attempt <= EXCLUDED.attempt RETURNING attempt, (xmax <> 0)::text; \
         {delete}",
        tag = escaped_literal(&fence.attempt_tag(fence.attempt)),
        run_id = escaped_literal(&fence.run_id),
        table_text = escaped_literal(&table_label),
        delete = if delete_when_refenced {
            String::new()
        } else {
            format!("DELETE FROM {} WHERE {condition}", quote_table(&target))
        },
    );
    let replies = client.simple_query(&opening).await.map_err(&on_error)?;
    // The fence row taken: `Some(true)` when it was there already (an earlier attempt
    // of the chunk committed: `xmax` is set on a row the upsert updated, 0 on a row it
    // inserted; the upsert waits for a concurrent attempt's transaction to end first).
    let fence_taken = replies.iter().find_map(|reply| match reply {
        SimpleQueryMessage::Row(row) => Some(row.get(1) == Some("true")),
        _ => None,
    });
    let earlier_attempt_committed = fence_taken.unwrap_or(true);
    let fence_taken = fence_taken.is_some();
    if !fence_taken {
        // A later attempt committed this chunk: this one must not overwrite it.
        let committed: i64 = client
            .query_typed_one(
                &format!("SELECT attempt FROM {fence_name} WHERE run_id = $1 AND chunk = $2"),
                &[(&fence.run_id, Type::TEXT), (&chunk_number, Type::INT8)],
            )
            .await
            .and_then(|row| row.try_get(0))
            .map_err(&on_error)?;
        return Err(ConnectorError::Fenced {
            table: table.name.clone(),
            chunk: fence.chunk,
            attempt: fence.attempt,
            committed: Attempt(u32::try_from(committed).unwrap_or(u32::MAX)),
        });
    }
    let rows_deleted = if !delete_when_refenced {
        replies
            .iter()
            .rev()
            .find_map(|reply| match reply {
                SimpleQueryMessage::CommandComplete(rows) => Some(*rows),
                _ => None,
            })
            .unwrap_or(0)
    } else if earlier_attempt_committed {
        // Rows of an earlier attempt may be in the range: delete them (a full scan of a
        // table without its key, but exact).
        tracing::info!(chunk = %fence.chunk, attempt = %fence.attempt, "an earlier attempt of the chunk committed into the table without its key: deleting its range by a scan");
        client
            .execute(
                &format!("DELETE FROM {} WHERE {condition}", quote_table(&target)),
                &[],
            )
            .await
            .map_err(&on_error)?
    } else {
        // No attempt of this chunk ever committed into this table, created by this job:
        // the range is empty.
        0
    };

    let column_list: Vec<String> = table
        .columns
        .iter()
        .map(|column| quote_ident(&column.name))
        .collect();
    let copy_sql = format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        quote_table(&target),
        column_list.join(", ")
    );
    let mut copy_in = Box::pin(
        client
            .copy_in::<_, Bytes>(&copy_sql)
            .await
            .map_err(&on_error)?,
    );
    match (first, &mut input) {
        (FirstPiece::Batch(mut pending), ChunkInput::Batches(batches)) => {
            let mut buffer = BytesMut::with_capacity(COPY_SEND_BYTES + (64 << 10));
            push_header(&mut buffer);
            let mut scratch = Vec::new();
            while let Some(batch) = pending {
                encode_batch(table, &column_encoders, &batch, &mut buffer, &mut scratch)?;
                if buffer.len() >= COPY_SEND_BYTES {
                    copy_in
                        .send(buffer.split().freeze())
                        .await
                        .map_err(&on_error)?;
                }
                pending = next_batch(batches, cancel).await?;
            }
            push_trailer(&mut buffer);
            copy_in.send(buffer.freeze()).await.map_err(&on_error)?;
        }
        (FirstPiece::Bytes(mut pending), ChunkInput::Native(stream)) => {
            while let Some(piece) = pending {
                copy_in.send(piece).await.map_err(&on_error)?;
                pending = next_bytes(stream, cancel).await?;
            }
        }
        _ => {
            return Err(ConnectorError::Task(
                "chunk input changed kind while writing".to_string(),
            ));
        }
    }
    let rows_written = copy_in.as_mut().finish().await.map_err(&on_error)?;

    if cancel.is_cancelled() {
        return Err(ConnectorError::Cancelled);
    }
    client.batch_execute("COMMIT").await.map_err(&on_error)?;
    Ok(WriteSummary {
        rows_written,
        rows_deleted,
        key_missing: catalog.primary_key.is_empty(),
    })
}

/// Appends the COPY tuples of one batch to `buffer`.
pub(super) fn encode_batch(
    table: &TableSchema,
    column_encoders: &[Encoder],
    batch: &arrow_array::RecordBatch,
    buffer: &mut BytesMut,
    scratch: &mut Vec<u8>,
) -> Result<()> {
    if batch.num_columns() != column_encoders.len() {
        return Err(ConnectorError::Task(format!(
            "a batch of table {} has {} columns, expected {}",
            table.name,
            batch.num_columns(),
            column_encoders.len()
        )));
    }
    let writers = column_encoders
        .iter()
        .zip(batch.columns())
        .zip(&table.columns)
        .map(|((encoder, array), column)| {
            ColumnWriter::new(encoder, &column.name, array.as_ref()).map_err(|detail| {
                ConnectorError::ValueType {
                    table: table.name.clone(),
                    column: column.name.clone(),
                    detail,
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let num_fields = i16::try_from(writers.len()).map_err(|_| ConnectorError::Unsupported {
        table: table.name.clone(),
        detail: "more than 32767 columns".to_string(),
    })?;
    for row in 0..batch.num_rows() {
        buffer.extend_from_slice(&num_fields.to_be_bytes());
        for (writer, column) in writers.iter().zip(&table.columns) {
            writer
                .write(row, buffer, scratch)
                .map_err(|detail| ConnectorError::ValueType {
                    table: table.name.clone(),
                    column: column.name.clone(),
                    detail,
                })?;
        }
    }
    Ok(())
}
