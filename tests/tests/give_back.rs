//! No idle tail, second half (`chunking.split_idle`): a running chunk far slower than
//! its table's others is asked back, cut, and its pieces shared by the idle workers,
//! with nothing lost or doubled. The table's chunks hold the same number of rows, but
//! one key range holds rows 400× wider, under a job-wide byte rate: that chunk runs for
//! seconds while the others take milliseconds. Rows are compared with the `sqlite3`
//! shell (counts and EXCEPT both ways).

use ferry_coordination::ChunkState;
use ferry_model::ids::Attempt;
use ferry_model::key::{ChunkRange, KeyValue};
use ferry_tests::{assert_same_table, run_local, sqlite3, write_spec};
use tokio_util::sync::CancellationToken;

const WORKERS: usize = 4;
const ROWS: i64 = 8_000;
/// Keys 6,000..7,000 carry 20 KB each (20 MB in all, ~5 s at the job's byte rate); the
/// others 50 bytes.
const WIDE: std::ops::Range<i64> = 6_000..7_000;

fn create_source(path: &std::path::Path) {
    let connection = rusqlite::Connection::open(path).expect("open source");
    connection
        .execute_batch(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);
             BEGIN;",
        )
        .expect("create");
    {
        let mut insert = connection
            .prepare("INSERT INTO events VALUES (?1, ?2)")
            .expect("prepare");
        for key in 0..ROWS {
            let width = if WIDE.contains(&key) { 20_000 } else { 50 };
            let payload: String = format!("{key:08}").repeat(width / 8);
            insert
                .execute(rusqlite::params![key, payload])
                .expect("insert");
        }
    }
    connection.execute_batch("COMMIT;").expect("commit");
}

fn int_bound(bound: &Option<ferry_model::key::KeyBound>) -> Option<i64> {
    bound.as_ref().map(|bound| match bound.0.as_slice() {
        [KeyValue::Int(value)] => *value,
        other => panic!("not an integer bound: {other:?}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_far_slower_than_its_tables_median_is_handed_back_and_cut_losing_and_doubling_nothing()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.db");
    create_source(&source);
    let spec_path = write_spec(
        dir.path(),
        "name: give-back\nsource: { kind: sqlite, path: source.db }\n\
         target: { kind: sqlite, path: target.db }\ntables: { include: [events] }\n\
         chunking: { target_rows: 1000 }\n\
         throttle: { default_concurrency: 4, rate: { bytes_per_sec: 4000000 } }\n",
    );
    let (_, outcome, _) = run_local(
        &spec_path,
        &dir.path().join("state.db"),
        WORKERS,
        vec![],
        CancellationToken::new(),
    )
    .await;
    assert!(!outcome.interrupted, "the job ended");
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
    }
    // Planned as 8 chunks of 1,000 rows; the wide one was cut into pieces afterwards.
    let planned = usize::try_from(ROWS / 1_000).expect("small");
    assert!(
        outcome.chunks.len() > planned,
        "a chunk was cut: {} chunks",
        outcome.chunks.len()
    );
    // The chunk that was handed back kept its first piece and went on to a second
    // attempt; its pieces hold the wide keys and meet end to end.
    let handed_back: Vec<_> = outcome
        .chunks
        .iter()
        .filter(|chunk| chunk.attempt == Attempt(2))
        .collect();
    assert_eq!(
        handed_back.len(),
        1,
        "one chunk handed back: {handed_back:?}"
    );
    let mut pieces: Vec<(Option<i64>, Option<i64>)> = outcome
        .chunks
        .iter()
        .filter(|chunk| chunk.id == handed_back[0].id || chunk.id.0 as usize >= planned)
        .map(|chunk| match &chunk.range {
            ChunkRange::Interval { lower, upper } => (int_bound(lower), int_bound(upper)),
            other => panic!("not an interval: {other}"),
        })
        .collect();
    pieces.sort();
    for pair in pieces.windows(2) {
        assert_eq!(pair[0].1, pair[1].0, "pieces meet end to end: {pieces:?}");
    }
    let (first, last) = (pieces[0].0, pieces[pieces.len() - 1].1);
    assert!(
        first.is_none_or(|low| low <= WIDE.start) && last.is_none_or(|high| high >= WIDE.end),
        "the pieces cover the wide keys: {pieces:?}"
    );
    // Independent of ferry: the target holds exactly the source's rows, once each.
    let target = dir.path().join("target.db");
    assert_same_table(&source, &target, "events", false);
    assert_eq!(
        sqlite3(&target, "SELECT count(*), count(DISTINCT id) FROM events"),
        format!("{ROWS}|{ROWS}")
    );
}
