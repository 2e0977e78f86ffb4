//! No idle tail, first half (`chunking.split_idle`): a table planned into one chunk far
//! bigger than its share (a large `target_rows`, keys with one range 20× denser than the
//! rest) is cut into pieces before it starts, so every worker of `ferryctl local` gets
//! work, and the target equals the source: nothing lost, nothing doubled. The same job
//! with `split_idle: false` keeps its one chunk. Rows are compared with the `sqlite3`
//! shell (counts and EXCEPT both ways); chunks are read from the state file with it too.

use std::collections::HashSet;
use std::path::Path;

use ferry_coordination::ChunkState;
use ferry_model::key::ChunkRange;
use ferry_tests::{assert_same_table, run_local, sqlite3, write_spec};
use tokio_util::sync::CancellationToken;

const WORKERS: usize = 4;
/// Keys 0..20,000 all present, then every 20th key up to 420,000: the first range is
/// 20× denser than the rest.
const DENSE_ROWS: i64 = 20_000;
const SPARSE_ROWS: i64 = 20_000;
const SPARSE_STEP: i64 = 20;

fn create_source(path: &Path) {
    let connection = rusqlite::Connection::open(path).expect("open source");
    connection
        .execute_batch(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL, amount REAL);
             BEGIN;",
        )
        .expect("create");
    {
        let mut insert = connection
            .prepare("INSERT INTO events VALUES (?1, ?2, ?3)")
            .expect("prepare");
        let dense = 0..DENSE_ROWS;
        let sparse = (0..SPARSE_ROWS).map(|index| DENSE_ROWS + index * SPARSE_STEP);
        for key in dense.chain(sparse) {
            insert
                .execute(rusqlite::params![
                    key,
                    format!("event {key}"),
                    key as f64 / 7.0
                ])
                .expect("insert");
        }
    }
    connection.execute_batch("COMMIT;").expect("commit");
}

fn spec(split_idle: bool) -> String {
    format!(
        "name: idle-split\nsource: {{ kind: sqlite, path: source.db }}\n\
         target: {{ kind: sqlite, path: target.db }}\ntables: {{ include: [events] }}\n\
         chunking: {{ target_rows: 1000000, split_idle: {split_idle} }}\n"
    )
}

/// Runs the job with `split_idle` in a fresh directory; returns the directory.
async fn run(split_idle: bool) -> (tempfile::TempDir, ferry_coordinator::scheduler::RunOutcome) {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"));
    let spec_path = write_spec(dir.path(), &spec(split_idle));
    let state = dir.path().join("state.db");
    let (_, outcome, _) = run_local(
        &spec_path,
        &state,
        WORKERS,
        vec![],
        CancellationToken::new(),
    )
    .await;
    assert!(!outcome.interrupted, "the job ended");
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
    }
    // Independent of ferry: the target holds exactly the source's rows, once each.
    let source = dir.path().join("source.db");
    let target = dir.path().join("target.db");
    assert_same_table(&source, &target, "events", false);
    assert_eq!(
        sqlite3(&target, "SELECT count(*), count(DISTINCT id) FROM events"),
        format!("{}|{}", DENSE_ROWS + SPARSE_ROWS, DENSE_ROWS + SPARSE_ROWS)
    );
    (dir, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_far_bigger_than_its_share_is_split_before_it_starts_and_every_worker_gets_work() {
    let (dir, outcome) = run(true).await;
    let chunks = &outcome.chunks;
    assert_eq!(
        chunks.len(),
        WORKERS,
        "the one planned chunk was cut in {WORKERS}"
    );
    // The pieces cover the key space in order, the outer ones still unbounded.
    let mut ranges: Vec<&ChunkRange> = chunks.iter().map(|chunk| &chunk.range).collect();
    ranges.sort_by_key(|range| match range {
        ChunkRange::Interval { lower: None, .. } => i64::MIN,
        ChunkRange::Interval {
            lower: Some(bound), ..
        } => match bound.0.as_slice() {
            [ferry_model::key::KeyValue::Int(value)] => *value,
            other => panic!("not an integer bound: {other:?}"),
        },
        other => panic!("not an interval: {other}"),
    });
    for pair in ranges.windows(2) {
        let (ChunkRange::Interval { upper, .. }, ChunkRange::Interval { lower, .. }) =
            (pair[0], pair[1])
        else {
            unreachable!("intervals, checked above");
        };
        assert_eq!(
            upper, lower,
            "adjacent pieces meet: {} then {}",
            pair[0], pair[1]
        );
    }
    assert!(matches!(
        ranges[0],
        ChunkRange::Interval { lower: None, .. }
    ));
    assert!(matches!(
        ranges[ranges.len() - 1],
        ChunkRange::Interval { upper: None, .. }
    ));
    let copied: u64 = chunks.iter().map(|chunk| chunk.rows).sum();
    assert_eq!(copied, (DENSE_ROWS + SPARSE_ROWS) as u64);
    let workers: HashSet<_> = chunks
        .iter()
        .map(|chunk| chunk.evidence.worker.clone().expect("a worker ran it"))
        .collect();
    assert_eq!(
        workers.len(),
        WORKERS,
        "every worker got a piece: {workers:?}"
    );
    // The state file says the same, read with sqlite3.
    let state = dir.path().join("state.db");
    assert_eq!(
        sqlite3(
            &state,
            "SELECT count(*), count(DISTINCT json_extract(evidence, '$.worker')), \
             sum(rows), max(attempt) FROM chunks WHERE state = 'VERIFIED'"
        ),
        format!("{WORKERS}|{WORKERS}|{}|1", DENSE_ROWS + SPARSE_ROWS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_split_idle_off_the_planned_chunk_stays_whole() {
    let (_dir, outcome) = run(false).await;
    assert_eq!(outcome.chunks.len(), 1, "one chunk, as planned");
    assert_eq!(
        outcome.chunks[0].range,
        ChunkRange::Interval {
            lower: None,
            upper: None
        }
    );
}
