//! SQLite → SQLite end to end: every value kind SQLite stores, awkward identifiers, every
//! kind of key; then resume, mismatch repair and write failures. Each test ends with an
//! independent comparison through the `sqlite3` shell, not ferry's own checksum.

use std::path::Path;

use ferry_coordination::ChunkState;
use ferry_model::ids::ChunkId;
use ferry_model::key::ChunkRange;
use ferry_tests::{Fault, assert_same_table, run_local, sqlite3, write_spec};
use tokio_util::sync::CancellationToken;

/// Builds a source with every kind of table and value ferry must carry.
fn create_source(path: &Path) {
    let connection = rusqlite::Connection::open(path).expect("create source");
    connection
        .execute_batch(
            r#"
            CREATE TABLE "Mixed ""Quoted"" Table" (
                "select" INTEGER PRIMARY KEY,
                "from" TEXT,
                "Weird col" REAL,
                "group" BLOB,
                "order" NUMERIC,
                untyped,
                "when" DATETIME
            );
            CREATE TABLE composite (a TEXT NOT NULL, b INTEGER NOT NULL, v TEXT, PRIMARY KEY (a, b)) WITHOUT ROWID;
            CREATE TABLE nullable_key (k TEXT PRIMARY KEY, v INTEGER);
            CREATE TABLE "no key" (x TEXT, y INTEGER);
            CREATE TABLE empty (id INTEGER PRIMARY KEY, v TEXT);
            CREATE TABLE sparse (id INTEGER PRIMARY KEY, v TEXT);
            "#,
        )
        .expect("create tables");
    let big_text = "é".repeat(512 * 1024); // 1 MiB of UTF-8
    let big_blob: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut insert = connection
        .prepare(r#"INSERT INTO "Mixed ""Quoted"" Table" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"#)
        .expect("prepare");
    use rusqlite::types::Value;
    let rows: Vec<[Value; 7]> = vec![
        [
            Value::Integer(i64::MIN),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
        ],
        [
            Value::Integer(i64::MAX),
            Value::Text(String::new()),
            Value::Real(0.0),
            Value::Blob(vec![]),
            Value::Integer(0),
            Value::Text(String::new()),
            Value::Text("2038-01-19 03:14:08".into()),
        ],
        [
            Value::Integer(0),
            Value::Text("日本語 ✓ 🚀 \"quoted\" 'single' \n\t".into()),
            Value::Real(f64::MAX),
            Value::Blob(vec![0, 0, 0]),
            Value::Real(1.5),
            Value::Integer(42),
            Value::Integer(-1),
        ],
        [
            Value::Integer(-1),
            Value::Text(big_text),
            Value::Real(f64::MIN_POSITIVE),
            Value::Blob(big_blob),
            Value::Text("12.50".into()),
            Value::Blob(vec![1, 2, 3]),
            Value::Real(2440587.5),
        ],
        [
            Value::Integer(1),
            Value::Text("x0".into()),
            Value::Real(f64::INFINITY),
            Value::Blob(b"y".to_vec()),
            Value::Text("abc".into()),
            Value::Real(-0.25),
            Value::Text("1969-12-31 23:59:59".into()),
        ],
        [
            Value::Integer(2),
            Value::Text("x".into()),
            Value::Real(f64::NEG_INFINITY),
            Value::Blob(b"0y".to_vec()),
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Null,
        ],
        [
            Value::Integer(3),
            Value::Text("NULL".into()),
            Value::Real(-1e-300),
            Value::Null,
            Value::Real(1e300),
            Value::Text("0".into()),
            Value::Text("".into()),
        ],
    ];
    for row in &rows {
        insert
            .execute(rusqlite::params_from_iter(row.iter()))
            .expect("insert edge row");
    }
    for id in 10..400i64 {
        insert
            .execute(rusqlite::params![
                id,
                format!("row {id}"),
                id as f64 / 7.0,
                vec![id as u8; (id % 5) as usize],
                id * 3,
                format!("u{id}"),
                id
            ])
            .expect("insert row");
    }
    drop(insert);
    let texts = [
        "", "A", "a", "Ä", "ä", "z", "🦀", "a b", "\"", "'", "10", "9",
    ];
    for (index, text) in texts.iter().enumerate() {
        for b in [i64::MIN, -1, 0, 1, i64::MAX] {
            connection
                .execute(
                    "INSERT INTO composite VALUES (?1, ?2, ?3)",
                    rusqlite::params![text, b, format!("{index}/{b}")],
                )
                .expect("insert composite");
        }
    }
    for index in 0..150i64 {
        connection
            .execute(
                "INSERT INTO nullable_key VALUES (?1, ?2)",
                rusqlite::params![format!("k{index:03}"), index],
            )
            .expect("insert keyed");
    }
    for index in 0..7i64 {
        // SQLite lets a non-INTEGER primary key of a rowid table hold NULL, many times.
        connection
            .execute("INSERT INTO nullable_key VALUES (NULL, ?1)", [index])
            .expect("insert null key");
    }
    for index in 0..300i64 {
        let duplicate = index % 10 == 0;
        connection
            .execute(
                r#"INSERT INTO "no key" VALUES (?1, ?2)"#,
                rusqlite::params![
                    if duplicate {
                        "dup".to_string()
                    } else {
                        format!("x{index}")
                    },
                    if duplicate { 0 } else { index }
                ],
            )
            .expect("insert no key");
    }
    let mut sparse_keys: Vec<i64> = (0..200).map(|i| 1_000_000 + i).collect();
    sparse_keys.extend([
        i64::MIN,
        i64::MIN + 1,
        -5_000_000_000_000,
        7,
        i64::MAX - 1,
        i64::MAX,
    ]);
    for key in sparse_keys {
        connection
            .execute(
                "INSERT INTO sparse VALUES (?1, ?2)",
                rusqlite::params![key, format!("s{key}")],
            )
            .expect("insert sparse");
    }
}

fn spec(target_rows: u64, extra: &str) -> String {
    format!(
        "name: e2e\nsource: {{ kind: sqlite, path: source.db }}\ntarget: {{ kind: sqlite, path: target.db }}\n\
         tables: {{ include: [\"*\"] }}\nchunking: {{ target_rows: {target_rows} }}\n{extra}"
    )
}

const TABLES: [(&str, bool); 6] = [
    ("Mixed \"Quoted\" Table", false),
    ("composite", false),
    ("nullable_key", false),
    ("no key", true),
    ("empty", false),
    ("sparse", false),
];

fn assert_all_tables_equal(dir: &Path) {
    for (table, with_rowid) in TABLES {
        assert_same_table(
            &dir.join("source.db"),
            &dir.join("target.db"),
            table,
            with_rowid,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_key_and_identifier_is_copied_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"));
    let spec_path = write_spec(dir.path(), &spec(40, ""));
    let (prepared, outcome, sink) = run_local(
        &spec_path,
        &dir.path().join("state.db"),
        3,
        vec![],
        CancellationToken::new(),
    )
    .await;

    assert!(!outcome.interrupted);
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
        assert_eq!(
            chunk.attempt.0, 1,
            "no chunk needed a second attempt: {chunk:?}"
        );
    }
    assert_eq!(sink.committed_writes(), outcome.chunks.len() as u64);
    // Every kind of key was exercised: several chunks for the integer, composite and
    // text keys, a NULL-key chunk, and a rowid split for the table without a key.
    let tables = &prepared.job.tables;
    let chunks_of = |name: &str| {
        let index = tables
            .iter()
            .position(|t| t.schema.name.name == name)
            .expect("table planned");
        outcome
            .chunks
            .iter()
            .filter(|c| c.table_index == index)
            .collect::<Vec<_>>()
    };
    assert!(chunks_of("Mixed \"Quoted\" Table").len() >= 5);
    assert!(chunks_of("composite").len() >= 2);
    assert!(
        chunks_of("nullable_key")
            .iter()
            .any(|c| c.range == ChunkRange::NullKeys && c.rows == 7)
    );
    assert!(chunks_of("no key").len() >= 5, "rowid split");
    assert_eq!(chunks_of("empty").iter().map(|c| c.rows).sum::<u64>(), 0);
    assert!(chunks_of("sparse").len() >= 3);
    assert_all_tables_equal(dir.path());
    // The target tables were created with the source's own statements.
    let ddl = sqlite3(
        &dir.path().join("target.db"),
        "SELECT sql FROM sqlite_schema WHERE name = 'composite'",
    );
    assert!(ddl.contains("WITHOUT ROWID"), "{ddl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_run_resumes_without_recopying_verified_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"));
    let spec_path = write_spec(dir.path(), &spec(40, ""));
    let state = dir.path().join("state.db");

    // Stop right after the 6th commit: that chunk is in the target but not yet
    // recorded as verified, so the resume must overwrite it, not add to it.
    let cancel = CancellationToken::new();
    let faults = vec![Fault::CancelAfterWrites {
        writes: 6,
        token: cancel.clone(),
    }];
    let (_, first, first_sink) = run_local(&spec_path, &state, 1, faults, cancel).await;
    assert!(first.interrupted);
    let verified_first: Vec<ChunkId> = first
        .chunks
        .iter()
        .filter(|c| c.state == ChunkState::Verified)
        .map(|c| c.id)
        .collect();
    assert_eq!(
        verified_first.len(),
        5,
        "one worker: five verified, the sixth committed but in flight"
    );
    assert_eq!(first_sink.committed_writes(), 6);

    let (prepared, second, second_sink) =
        run_local(&spec_path, &state, 2, vec![], CancellationToken::new()).await;
    assert!(prepared.resumed);
    assert_eq!(second.requeued.len(), 1, "the stopped chunk was re-queued");
    assert!(
        second
            .chunks
            .iter()
            .all(|c| c.state == ChunkState::Verified)
    );
    let rewritten = second_sink.committed_by_chunk();
    for id in &verified_first {
        assert!(
            !rewritten.contains_key(id),
            "verified chunk {id} was copied again"
        );
    }
    assert_eq!(
        second_sink.committed_writes() as usize,
        second.chunks.len() - verified_first.len()
    );
    let requeued = second.requeued[0];
    assert_eq!(
        second.chunks[requeued.0 as usize].attempt.0, 2,
        "the re-copy is a new attempt"
    );
    assert_all_tables_equal(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_chunk_is_detected_and_repaired_by_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"));
    let spec_path = write_spec(dir.path(), &spec(40, ""));
    // Chunk 0 is the first range of the first table; corrupt one of its rows, changing
    // nothing else (a value a wrong copy might produce).
    let corrupt = Fault::CorruptAfterWrite {
        chunk: ChunkId(0),
        target: dir.path().join("target.db"),
        sql: r#"UPDATE "Mixed ""Quoted"" Table" SET "from" = 'corrupted' WHERE "select" = (SELECT min("select") FROM "Mixed ""Quoted"" Table")"#.into(),
    };
    let (_, outcome, sink) = run_local(
        &spec_path,
        &dir.path().join("state.db"),
        2,
        vec![corrupt],
        CancellationToken::new(),
    )
    .await;
    let repaired = &outcome.chunks[0];
    assert_eq!(repaired.state, ChunkState::Verified);
    assert_eq!(repaired.mismatches, 1);
    assert_eq!(repaired.attempt.0, 2);
    assert_eq!(sink.committed_by_chunk()[&ChunkId(0)], 2);
    assert!(
        outcome
            .chunks
            .iter()
            .all(|c| c.state == ChunkState::Verified)
    );
    assert_all_tables_equal(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_rolls_back_and_the_retry_is_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"));
    // Big chunks so that a chunk streams several batches before the injected failure.
    // The failure is transient: chunk 0 fails once and is run again within its attempt;
    // chunk 1 fails on every run of its first attempt (three), which then counts, and its
    // second attempt succeeds.
    let spec_path = write_spec(dir.path(), &spec(100_000, ""));
    let (_, outcome, sink) = run_local(
        &spec_path,
        &dir.path().join("state.db"),
        2,
        vec![
            Fault::FailStream {
                chunk: ChunkId(0),
                times: 1,
            },
            Fault::FailStream {
                chunk: ChunkId(1),
                times: 3,
            },
        ],
        CancellationToken::new(),
    )
    .await;
    let retried_within = &outcome.chunks[0];
    assert_eq!(retried_within.state, ChunkState::Verified);
    assert_eq!(
        (
            retried_within.attempt.0,
            retried_within.failures,
            retried_within.mismatches
        ),
        (1, 0, 0),
        "a transient error that passes does not count an attempt"
    );
    let retried = &outcome.chunks[1];
    assert_eq!(retried.state, ChunkState::Verified);
    assert_eq!(
        (retried.attempt.0, retried.failures, retried.mismatches),
        (2, 1, 0)
    );
    assert!(
        retried
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("injected failure"))
    );
    for chunk in [ChunkId(0), ChunkId(1)] {
        assert_eq!(
            sink.committed_by_chunk()[&chunk],
            1,
            "the failed runs of chunk {chunk} committed nothing"
        );
    }
    assert_all_tables_equal(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_that_keeps_failing_ends_failed_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"));
    let spec_path = write_spec(dir.path(), &spec(40, "verify: { max_attempts: 2 }\n"));
    let (_, outcome, _) = run_local(
        &spec_path,
        &dir.path().join("state.db"),
        2,
        vec![Fault::FailStream {
            chunk: ChunkId(1),
            times: 99,
        }],
        CancellationToken::new(),
    )
    .await;
    let failed = &outcome.chunks[1];
    assert_eq!(failed.state, ChunkState::Failed);
    assert_eq!((failed.attempt.0, failed.failures), (2, 2));
    assert!(
        failed
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("injected failure"))
    );
    let others_verified = outcome
        .chunks
        .iter()
        .filter(|c| c.id != ChunkId(1))
        .all(|c| c.state == ChunkState::Verified);
    assert!(
        others_verified,
        "one failing chunk does not stop the others"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_attempt_cannot_commit_over_a_newer_one() {
    use std::collections::HashMap;

    use ferry_connectors::{ConnectorError, Fence, PrepareOptions};
    use ferry_model::ids::Attempt;
    use futures::StreamExt;

    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"));
    let spec_path = write_spec(dir.path(), &spec(1000, ""));
    let spec = ferry_ctl::local::load_spec(&spec_path, &HashMap::new()).expect("spec");
    let (source, sink) = ferry_tests::open_connectors(&spec).await;
    let table = source
        .describe_table(&ferry_model::schema::TableName::bare("sparse"))
        .await
        .expect("describe");
    let key = ferry_model::key::SplitKey::Columns {
        names: vec!["id".into()],
        nullable: false,
        single_integer: true,
    };
    sink.prepare_table(&table, &key, &PrepareOptions::default())
        .await
        .expect("prepare");
    let range = ChunkRange::Interval {
        lower: None,
        upper: None,
    };
    let write = |attempt: u32| {
        let fence = Fence {
            run_id: "run-1".into(),
            chunk: ChunkId(7),
            attempt: Attempt(attempt),
        };
        let source = source.clone();
        let sink = sink.clone();
        let table = table.clone();
        let key = key.clone();
        let range = range.clone();
        async move {
            let batches = source.read_chunk(&table, &key, &range).await.expect("read");
            // A later attempt of the zombie writes only its first batch: any commit of it
            // would show up as fewer rows.
            let batches = if attempt == 1 {
                batches.take(1).boxed()
            } else {
                batches
            };
            ferry_tests::write_chunk(sink.as_ref(), &table, &key, &range, &fence, batches).await
        }
    };
    let newer = write(2).await.expect("attempt 2 commits");
    assert_eq!(newer.rows_written, 206);
    let stale = write(1).await;
    assert!(
        matches!(
            stale,
            Err(ConnectorError::Fenced {
                committed: Attempt(2),
                attempt: Attempt(1),
                ..
            })
        ),
        "{stale:?}"
    );
    assert_same_table(
        &dir.path().join("source.db"),
        &dir.path().join("target.db"),
        "sparse",
        false,
    );
}
