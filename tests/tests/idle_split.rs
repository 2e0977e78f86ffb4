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

/// The bench's shape on PostgreSQL → PostgreSQL: four partitions of 1,000 rows and one
/// of 20,000, one chunk each (a large `target_rows`). The big partition's chunk is cut
/// within its partition; the other partitions keep theirs; every worker gets work; the
/// target's partitions hold the source's rows (psql: counts per partition and the md5 of
/// every row, EXCEPT both ways).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_twenty_times_the_others_is_split_within_its_partition() {
    // Source and target databases, dropped at the end (also when the test fails).
    let pair = ferry_tests::PgPair::new("idletail_");
    let url = pair.source();
    let target_url = pair.target();
    let schema = "app";
    let table = format!("{schema}.events");
    let mut ddl = format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {table} (id bigint PRIMARY KEY, payload text NOT NULL)
             PARTITION BY RANGE (id);"
    );
    for part in 0..5 {
        let low = part * 100_000;
        let rows = if part == 4 { 20_000 } else { 1_000 };
        ddl.push_str(&format!(
            "CREATE TABLE {schema}.p{part} PARTITION OF {table}
                 FOR VALUES FROM ({low}) TO ({high});
             INSERT INTO {table} SELECT {low} + i * 3, 'row ' || i
                 FROM generate_series(0, {last}) AS i;",
            high = low + 100_000,
            last = rows - 1,
        ));
    }
    ferry_tests::psql(&url, &ddl);
    let env = std::collections::HashMap::from([
        ("SRC".to_string(), url.clone()),
        ("DST".to_string(), target_url.clone()),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(
        dir.path(),
        &format!(
            "name: idle-split-parts\nsource: {{ kind: postgres, url_env: SRC }}\n\
             target: {{ kind: postgres, url_env: DST }}\n\
             tables: {{ include: [\"{table}\"] }}\nchunking: {{ target_rows: 1000000 }}\n"
        ),
    );
    let (_, outcome, _) = ferry_tests::run_local_with_env(
        &spec_path,
        &dir.path().join("state.db"),
        WORKERS,
        vec![],
        CancellationToken::new(),
        &env,
    )
    .await;
    assert!(!outcome.interrupted);
    let mut per_partition: std::collections::BTreeMap<String, (usize, u64)> =
        std::collections::BTreeMap::new();
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
        let partition = chunk.partition.clone().expect("planned by partition");
        let entry = per_partition.entry(partition).or_default();
        entry.0 += 1;
        entry.1 += chunk.rows;
    }
    let summary: Vec<(usize, u64)> = per_partition.values().copied().collect();
    // 20,000 + 4 × 1,000 rows over 4 slots: fair pieces of 6,000, so the big one in 4.
    assert_eq!(
        summary,
        vec![(1, 1_000), (1, 1_000), (1, 1_000), (1, 1_000), (4, 20_000)],
        "chunks and rows per partition: {per_partition:?}"
    );
    let workers: HashSet<_> = outcome
        .chunks
        .iter()
        .filter_map(|chunk| chunk.evidence.worker.clone())
        .collect();
    assert_eq!(workers.len(), WORKERS, "every worker got work: {workers:?}");
    for part in 0..5 {
        let count = |database_url: &str| {
            ferry_tests::psql(
                database_url,
                &format!("SELECT count(*) FROM {schema}.p{part}"),
            )
        };
        assert_eq!(count(&target_url), count(&url), "rows of partition p{part}");
    }
    let rows_only_in = |left: &str, right: &str| {
        ferry_tests::psql(
            &url,
            &format!(
                "SELECT count(*) FROM (SELECT md5(t::text) FROM {left} AS t \
                 EXCEPT ALL SELECT * FROM {right}) AS d"
            ),
        )
    };
    let target_md5 = ferry_tests::psql(
        &target_url,
        &format!("SELECT string_agg(md5(t::text), ',') FROM {table} AS t"),
    );
    psql_values_table(&url, schema, &target_md5);
    assert_eq!(
        rows_only_in(&table, &format!("{schema}.target_md5")),
        "0",
        "source rows missing in the target"
    );
    assert_eq!(
        ferry_tests::psql(
            &url,
            &format!(
                "SELECT count(*) FROM (SELECT md5 FROM {schema}.target_md5 \
                 EXCEPT ALL SELECT md5(t::text) FROM {table} AS t) AS d"
            )
        ),
        "0",
        "target rows not in the source (or doubled)"
    );
}

/// Stores the target's row hashes (comma-separated) in `{schema}.target_md5` of the
/// source database, so that psql can compare them with the source's rows both ways.
fn psql_values_table(url: &str, schema: &str, hashes_csv: &str) {
    ferry_tests::psql(
        url,
        &format!(
            "CREATE TABLE {schema}.target_md5 AS \
             SELECT unnest(string_to_array('{hashes_csv}', ',')) AS md5"
        ),
    );
}
