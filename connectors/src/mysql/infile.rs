//! The rows of a `LOAD DATA LOCAL INFILE` as the driver reads them: the batches'
//! rows as tab-separated lines ([`super::encode`]), encoded as the driver asks for
//! them, a piece of about [`INFILE_PIECE_BYTES`] at a time (a bigger row alone), and
//! handed on in slices of at most that size. The driver copies each slice into a packet
//! buffer of its own, so with rows of many megabytes what a load holds beyond the
//! batch is about one row's line, not one batch's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use bytes::Bytes;
use ferry_model::schema::TableSchema;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::encode::BatchColumns;
use super::write::next_batch;
use crate::error::{ConnectorError, Result};
use crate::traits::BatchStream;

/// The bytes of the batches as `LOAD DATA` lines, in pieces of about
/// [`INFILE_PIECE_BYTES`] (rows are encoded as the driver asks for them, so at most a
/// piece, or one bigger row, is held encoded). A batch error or cancellation is kept in
/// `failure` and ends the stream with an I/O error, which makes the driver abort the load.
pub(super) fn tsv_stream(
    table: TableSchema,
    first: Option<RecordBatch>,
    batches: BatchStream,
    cancel: CancellationToken,
    failure: Arc<Mutex<Option<ConnectorError>>>,
    rows_sent: Arc<AtomicU64>,
) -> mysql_async::InfileData {
    let state = TsvLines {
        table,
        pending: first,
        current: None,
        batches,
        cancel,
        failure,
        rows_sent,
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        match state.next_piece().await {
            Ok(None) => None,
            Ok(Some((bytes, rows))) => {
                state.rows_sent.fetch_add(rows, Ordering::AcqRel);
                Some((Ok(bytes), state))
            }
            Err(error) => {
                let message = error.to_string();
                *state
                    .failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
                state.done = true;
                Some((Err(std::io::Error::other(message)), state))
            }
        }
    });
    // The driver copies each item into a packet buffer of its own (kept in its pool):
    // slices of at most `INFILE_PIECE_BYTES` keep that copy small however big the row.
    stream
        .flat_map(|item| {
            let pieces = match item {
                Ok(bytes) => infile_pieces(bytes).into_iter().map(Ok).collect(),
                Err(error) => vec![Err(error)],
            };
            futures::stream::iter(pieces)
        })
        .boxed()
}

/// What [`tsv_stream`] encodes from: the batches, and where it is in the current one.
struct TsvLines {
    table: TableSchema,
    pending: Option<RecordBatch>,
    /// The batch being encoded and its next row.
    current: Option<(RecordBatch, usize)>,
    batches: BatchStream,
    cancel: CancellationToken,
    failure: Arc<Mutex<Option<ConnectorError>>>,
    rows_sent: Arc<AtomicU64>,
    done: bool,
}

impl TsvLines {
    /// The next rows as `LOAD DATA` lines: rows of the current batch until about
    /// [`INFILE_PIECE_BYTES`] are encoded (at least one row), with their row count.
    async fn next_piece(&mut self) -> Result<Option<(Bytes, u64)>> {
        loop {
            if self.current.is_none() {
                let batch = match self.pending.take() {
                    Some(batch) => Some(batch),
                    None => next_batch(&mut self.batches, &self.cancel).await?,
                };
                match batch {
                    Some(batch) => self.current = Some((batch, 0)),
                    None => return Ok(None),
                }
            }
            let Some((batch, start)) = &self.current else {
                continue;
            };
            let start = *start;
            let (out, end, total) = {
                let columns = BatchColumns::new(&self.table, batch)?;
                let total = columns.num_rows();
                let mut out: Vec<u8> = Vec::new();
                let mut row = start;
                while row < total && out.len() < INFILE_PIECE_BYTES {
                    // A huge row gets its room at once: grown by doubling, its line's
                    // buffer could take twice its size.
                    let hint = columns.row_bytes_hint(row);
                    if hint >= INFILE_PIECE_BYTES {
                        out.reserve_exact(hint + hint / 64 + 64);
                    } else {
                        out.reserve(hint);
                    }
                    columns.push_tsv_row(row, &mut out)?;
                    row += 1;
                }
                (out, row, total)
            };
            if end >= total {
                self.current = None;
            } else if let Some((_, next)) = &mut self.current {
                *next = end;
            }
            if end > start {
                return Ok(Some((Bytes::from(out), (end - start) as u64)));
            }
        }
    }
}

/// The largest slice of `LOAD DATA` bytes handed to the driver at once, and about the
/// most rows' lines encoded ahead of it.
const INFILE_PIECE_BYTES: usize = 1 << 20;

/// `bytes` as slices of at most [`INFILE_PIECE_BYTES`] (no copy).
fn infile_pieces(bytes: Bytes) -> Vec<Bytes> {
    (0..bytes.len())
        .step_by(INFILE_PIECE_BYTES)
        .map(|start| bytes.slice(start..bytes.len().min(start + INFILE_PIECE_BYTES)))
        .collect()
}

#[cfg(test)]
mod tests {
    use ferry_model::schema::ColumnType;

    use crate::mysql::encode::tests::table;

    use super::*;

    /// Lines of `rows` text values of the given sizes, with their ids, as `LOAD DATA`
    /// reads them.
    fn lines_of(sizes: &[usize]) -> (TableSchema, RecordBatch, Vec<u8>) {
        let schema = table(&[("id", ColumnType::Int64), ("v", ColumnType::Text)]);
        let values: Vec<String> = sizes.iter().map(|size| "x".repeat(*size)).collect();
        let batch = RecordBatch::try_new(
            schema.arrow_schema(false),
            vec![
                Arc::new(arrow_array::Int64Array::from_iter_values(
                    (0..sizes.len()).map(|id| id as i64),
                )),
                Arc::new(arrow_array::StringArray::from_iter_values(&values)),
            ],
        )
        .expect("batch");
        let expected: Vec<u8> = values
            .iter()
            .enumerate()
            .flat_map(|(id, value)| format!("{id}\t{value}\n").into_bytes())
            .collect();
        (schema, batch, expected)
    }

    #[tokio::test]
    async fn load_data_lines_are_encoded_a_piece_at_a_time() {
        // Small rows, a row of 3 MiB (bigger than a piece), small rows again.
        let mut sizes = vec![10_000; 300];
        sizes.push(3 << 20);
        sizes.extend([10_000; 300]);
        let (schema, batch, expected) = lines_of(&sizes);
        let second = batch.slice(200, batch.num_rows() - 200);
        let first = batch.slice(0, 200);
        let rest: BatchStream = Box::pin(futures::stream::iter([Ok(second)]));
        let mut lines = TsvLines {
            table: schema.clone(),
            pending: Some(first),
            current: None,
            batches: rest,
            cancel: CancellationToken::new(),
            failure: Arc::default(),
            rows_sent: Arc::default(),
            done: false,
        };
        let mut encoded = Vec::new();
        let mut rows = 0;
        while let Some((piece, piece_rows)) = lines.next_piece().await.expect("piece") {
            // A piece holds its rows until about INFILE_PIECE_BYTES are encoded: all but
            // its last line fit in a piece (the last may be a big row's).
            let last_line = piece[..piece.len() - 1]
                .iter()
                .rposition(|byte| *byte == b'\n')
                .map_or(0, |end| end + 1);
            assert!(
                last_line < INFILE_PIECE_BYTES,
                "{last_line} bytes before the last row"
            );
            assert!(piece.ends_with(b"\n"), "a piece ends with a whole row");
            encoded.extend_from_slice(&piece);
            rows += piece_rows;
        }
        assert_eq!(rows, sizes.len() as u64);
        assert!(
            encoded == expected,
            "the pieces are the rows' lines in order"
        );
        // What the driver is handed: slices of at most a piece.
        let rest: BatchStream = Box::pin(futures::stream::empty());
        let sent = Arc::new(AtomicU64::new(0));
        let slices: Vec<Bytes> = tsv_stream(
            schema,
            Some(batch),
            rest,
            CancellationToken::new(),
            Arc::default(),
            sent.clone(),
        )
        .map(|slice| slice.expect("slice"))
        .collect()
        .await;
        assert!(slices.iter().all(|slice| slice.len() <= INFILE_PIECE_BYTES));
        assert!(slices.concat() == expected);
        assert_eq!(sent.load(Ordering::Acquire), sizes.len() as u64);
    }

    #[test]
    fn a_row_is_given_room_for_its_line() {
        let (schema, batch, expected) = lines_of(&[5 << 20]);
        let columns = BatchColumns::new(&schema, &batch).expect("columns");
        assert!(columns.row_bytes_hint(0) >= expected.len());
    }
}
