//! The connector conformance suite: checks of the Source/Sink contract
//! (`docs/connector-spec.md`) that every connector must pass against a real database.
//! Each check panics with a message naming the broken rule; `tests/tests/conformance.rs`
//! runs them for every engine.

use ferry_model::checksum::RangeChecksum;
use ferry_model::ids::{Attempt, ChunkId};
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::TableSchema;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::traits::{ChunkWrite, Fence, PrepareOptions, Sink, Source};

/// The split key a table is checked with: its primary key (the planner's choice for a
/// table with one), or no key.
pub fn primary_key_of(table: &TableSchema) -> SplitKey {
    table.primary_split_key().unwrap_or(SplitKey::None)
}

/// The intervals between boundaries, plus the NULL-key chunk when keys may be NULL.
fn ranges_from(boundaries: &[ferry_model::key::KeyBound], key: &SplitKey) -> Vec<ChunkRange> {
    let mut ranges = Vec::new();
    let mut lower = None;
    for bound in boundaries {
        ranges.push(ChunkRange::Interval {
            lower: lower.take(),
            upper: Some(bound.clone()),
        });
        lower = Some(bound.clone());
    }
    ranges.push(ChunkRange::Interval { lower, upper: None });
    if key.nullable() {
        ranges.push(ChunkRange::NullKeys);
    }
    ranges
}

async fn read_all(
    source: &dyn Source,
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
) -> (RangeChecksum, usize) {
    let mut stream = source
        .read_chunk(table, key, range)
        .await
        .expect("read_chunk starts");
    let mut checksum = RangeChecksum::default();
    let mut batches = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.expect("read_chunk yields batches");
        assert_eq!(
            batch.schema(),
            table.arrow_schema(false),
            "batches carry the table's Arrow schema"
        );
        checksum
            .add_batch(&batch)
            .expect("batches can be checksummed");
        batches += 1;
    }
    (checksum, batches)
}

/// Boundaries `every_rows` apart cut the table into ranges that together hold every row
/// exactly once (the whole-table checksum equals the merged range checksums), and each
/// range holds at most `every_rows` rows.
pub async fn check_split_covers_table(source: &dyn Source, table: &TableSchema, every_rows: u64) {
    let key = primary_key_of(table);
    let stats = source.key_stats(table, &key).await.expect("key_stats");
    let boundaries = source
        .key_boundaries(table, &key, every_rows)
        .await
        .expect("key_boundaries");
    let expected_boundaries = stats
        .rows
        .saturating_sub(stats.null_key_rows)
        .saturating_sub(1)
        / every_rows.max(1);
    assert_eq!(
        boundaries.len() as u64,
        expected_boundaries,
        "one boundary every {every_rows} keys"
    );
    let mut merged = RangeChecksum::default();
    for range in ranges_from(&boundaries, &key) {
        let (checksum, _) = read_all(source, table, &key, &range).await;
        if !matches!(range, ChunkRange::NullKeys) {
            assert!(
                checksum.rows <= every_rows,
                "range {range} holds {} rows, more than {every_rows}",
                checksum.rows
            );
        }
        merged.merge(checksum);
    }
    let (whole, _) = read_all(source, table, &SplitKey::None, &ChunkRange::WholeTable).await;
    assert_eq!(merged, whole, "the ranges cover the table exactly once");
    assert_eq!(whole.rows, stats.rows, "key_stats counts every row");
}

/// Prepares the target table and returns its primary key and the range of all its keys.
async fn prepare_whole_table(sink: &dyn Sink, table: &TableSchema) -> (SplitKey, ChunkRange) {
    let key = primary_key_of(table);
    sink.prepare_table(table, &key, &PrepareOptions::default())
        .await
        .expect("prepare_table");
    let range = ChunkRange::Interval {
        lower: None,
        upper: None,
    };
    (key, range)
}

/// Writing a range twice (attempt 1, then attempt 2 with overwrite) leaves exactly the
/// source's rows; the sink's checksum of the range equals the source's; an attempt
/// older than a committed one is refused and changes nothing.
pub async fn check_overwrite_is_idempotent_and_fenced(
    source: &dyn Source,
    sink: &dyn Sink,
    table: &TableSchema,
    run_id: &str,
) {
    let (key, range) = prepare_whole_table(sink, table).await;
    let (source_checksum, _) = read_all(source, table, &key, &range).await;
    let cancel = CancellationToken::new();
    for attempt in [1, 2] {
        let fence = Fence {
            run_id: run_id.to_string(),
            chunk: ChunkId(0),
            attempt: Attempt(attempt),
        };
        let batches = source
            .read_chunk(table, &key, &range)
            .await
            .expect("read_chunk");
        let chunk = ChunkWrite {
            table,
            key: &key,
            range: &range,
            fence: &fence,
            cancel: &cancel,
            key_deferred: false,
        };
        let summary = sink.write_chunk(chunk, batches).await.expect("write_chunk");
        assert_eq!(
            summary.rows_written, source_checksum.rows,
            "attempt {attempt} writes every row"
        );
        if attempt == 2 {
            assert_eq!(
                summary.rows_deleted, source_checksum.rows,
                "the re-copy first deletes the range"
            );
        }
        let target = sink
            .checksum_chunk(table, &key, &range)
            .await
            .expect("checksum_chunk");
        assert_eq!(
            target, source_checksum,
            "after attempt {attempt} the target range equals the source"
        );
        assert_eq!(
            sink.count_chunk(table, &key, &range)
                .await
                .expect("count_chunk"),
            source_checksum.rows
        );
    }
    let stale = Fence {
        run_id: run_id.to_string(),
        chunk: ChunkId(0),
        attempt: Attempt(1),
    };
    let batches = source
        .read_chunk(table, &key, &range)
        .await
        .expect("read_chunk");
    let chunk = ChunkWrite {
        table,
        key: &key,
        range: &range,
        fence: &stale,
        cancel: &cancel,
        key_deferred: false,
    };
    let refused = sink.write_chunk(chunk, batches.take(1).boxed()).await;
    assert!(
        matches!(refused, Err(crate::ConnectorError::Fenced { .. })),
        "a stale attempt is refused: {refused:?}"
    );
    let target = sink
        .checksum_chunk(table, &key, &range)
        .await
        .expect("checksum_chunk");
    assert_eq!(target, source_checksum, "a refused attempt changes nothing");
}

/// A write whose row stream fails half-way commits nothing; dropping a read stream early
/// releases it (a following write of the same range does not block).
pub async fn check_failed_write_commits_nothing(
    source: &dyn Source,
    sink: &dyn Sink,
    table: &TableSchema,
    run_id: &str,
) {
    let (key, range) = prepare_whole_table(sink, table).await;
    let before = sink
        .checksum_chunk(table, &key, &range)
        .await
        .expect("checksum_chunk");
    let cancel = CancellationToken::new();
    let fence = Fence {
        run_id: run_id.to_string(),
        chunk: ChunkId(1),
        attempt: Attempt(1),
    };
    let batches = source
        .read_chunk(table, &key, &range)
        .await
        .expect("read_chunk");
    let failing = batches
        .take(1)
        .chain(futures::stream::once(async {
            Err(crate::ConnectorError::Task("injected".into()))
        }))
        .boxed();
    let chunk = ChunkWrite {
        table,
        key: &key,
        range: &range,
        fence: &fence,
        cancel: &cancel,
        key_deferred: false,
    };
    assert!(
        sink.write_chunk(chunk, failing).await.is_err(),
        "the failed stream fails the write"
    );
    let after = sink
        .checksum_chunk(table, &key, &range)
        .await
        .expect("checksum_chunk");
    assert_eq!(before, after, "a failed write commits nothing");

    let mut early = source
        .read_chunk(table, &key, &range)
        .await
        .expect("read_chunk");
    let _first = early.next().await;
    drop(early);
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let batches = source
        .read_chunk(table, &key, &range)
        .await
        .expect("read_chunk");
    let chunk = ChunkWrite {
        table,
        key: &key,
        range: &range,
        fence: &fence,
        cancel: &cancelled,
        key_deferred: false,
    };
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        sink.write_chunk(chunk, batches),
    )
    .await
    .expect("a cancelled write returns promptly");
    assert!(
        matches!(outcome, Err(crate::ConnectorError::Cancelled)),
        "cancelled before commit: {outcome:?}"
    );
    assert_eq!(
        sink.checksum_chunk(table, &key, &range)
            .await
            .expect("checksum_chunk"),
        before,
        "a cancelled write commits nothing"
    );
}
