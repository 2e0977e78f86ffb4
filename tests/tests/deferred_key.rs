//! Target tables loaded without their primary key (`chunking.defer_key`, PostgreSQL):
//! a table ferry creates is loaded keyless, its key is built once every chunk is copied,
//! and the chunks are verified after it. Against the test PostgreSQL server
//! (`FERRY_TEST_PG_URL`); rows and the key are checked with `psql`, independent of ferry.

use std::collections::HashMap;

use ferry_coordination::ChunkState;
use ferry_model::ids::ChunkId;
use ferry_model::key::{ChunkRange, KeyBound, KeyValue, SplitKey};
use ferry_model::schema::TableName;
use ferry_tests::{Fault, PgPair, psql, run_local_with_env, write_spec};
use tokio_util::sync::CancellationToken;

const SOURCE_VAR: &str = "FERRY_DEFER_SRC";
const TARGET_VAR: &str = "FERRY_DEFER_DST";
const ROWS: u64 = 12_000;

/// A source `orders` table of [`ROWS`] rows and the spec copying it in chunks of 1,000.
fn fixture(tag: &str, chunking_extra: &str) -> (PgPair, HashMap<String, String>, String) {
    let pair = PgPair::new(tag);
    psql(
        &pair.source(),
        &format!(
            "CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, \
             amount numeric(12,2) NOT NULL, note text, created timestamp NOT NULL); \
             INSERT INTO orders SELECT i, i % 97, (i * 7919 % 100000) / 100.0, \
             CASE WHEN i % 11 = 0 THEN NULL ELSE 'note ' || i END, \
             timestamp '2024-01-01' + i * interval '13 seconds' \
             FROM generate_series(1, {ROWS}) AS i"
        ),
    );
    let env = HashMap::from([
        (SOURCE_VAR.to_owned(), pair.source()),
        (TARGET_VAR.to_owned(), pair.target()),
    ]);
    let spec = format!(
        "name: defer-key\nsource: {{ kind: postgres, url_env: {SOURCE_VAR} }}\n\
         target: {{ kind: postgres, url_env: {TARGET_VAR} }}\n\
         tables: {{ include: [\"orders\"] }}\n\
         chunking: {{ target_rows: 1000{chunking_extra} }}\n"
    );
    (pair, env, spec)
}

/// The source's `orders` table without its primary key (as ferry creates it, keyless).
const KEYLESS_ORDERS: &str = "CREATE TABLE orders (id bigint NOT NULL, customer int NOT NULL, \
     amount numeric(12,2) NOT NULL, note text, created timestamp NOT NULL)";

/// The target's primary key columns of `orders`, as PostgreSQL's catalog has them.
fn target_key(pair: &PgPair) -> String {
    psql(
        &pair.target(),
        "SELECT coalesce(string_agg(a.attname, ','), '') FROM pg_constraint c \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) \
         WHERE c.conrelid = 'public.orders'::regclass AND c.contype = 'p'",
    )
}

/// Rows, distinct keys and an order-independent digest of every row, by `psql`.
fn digest(url: &str) -> String {
    psql(
        url,
        "SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || \
         coalesce(sum(hashtext(o::text)::bigint), 0) FROM orders o",
    )
}

async fn run(
    spec_path: &std::path::Path,
    state: &std::path::Path,
    faults: Vec<Fault>,
    cancel: CancellationToken,
    env: &HashMap<String, String>,
) -> (
    ferry_coordinator::job::PreparedJob,
    ferry_coordinator::scheduler::RunOutcome,
) {
    let (prepared, outcome, _sink) =
        run_local_with_env(spec_path, state, 2, faults, cancel, env).await;
    (prepared, outcome)
}

/// [`run`] without faults, not cancelled.
async fn run_to_end(
    spec_path: &std::path::Path,
    state: &std::path::Path,
    env: &HashMap<String, String>,
) -> (
    ferry_coordinator::job::PreparedJob,
    ferry_coordinator::scheduler::RunOutcome,
) {
    run(spec_path, state, Vec::new(), CancellationToken::new(), env).await
}

/// Runs `spec` to its end in a fresh directory on two workers with `faults`, and
/// returns the sink that counted what was read back.
async fn run_with_faults(
    spec: &str,
    env: &HashMap<String, String>,
    faults: Vec<Fault>,
) -> (
    ferry_coordinator::job::PreparedJob,
    ferry_coordinator::scheduler::RunOutcome,
    std::sync::Arc<ferry_tests::FaultySink>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), spec);
    let state = dir.path().join("state.db");
    run_local_with_env(&spec_path, &state, 2, faults, CancellationToken::new(), env).await
}

/// The source's `orders` table as ferry describes it, and the spec's target.
async fn source_orders_and_sink(
    spec: &str,
    env: &HashMap<String, String>,
) -> (
    ferry_model::schema::TableSchema,
    std::sync::Arc<dyn ferry_connectors::Sink>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = ferry_ctl::local::load_spec(&write_spec(dir.path(), spec), env).expect("spec");
    let (source, sink) = ferry_tests::open_connectors(&spec).await;
    let schema = source
        .describe_table(&TableName {
            schema: Some("public".to_owned()),
            name: "orders".to_owned(),
        })
        .await
        .expect("describe");
    (schema, sink)
}

/// Every chunk verified, the target keyed on `id` and equal to the source (psql).
fn assert_keyed_and_equal(pair: &PgPair, outcome: &ferry_coordinator::scheduler::RunOutcome) {
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "{chunk:?}");
    }
    assert_eq!(target_key(pair), "id");
    assert_eq!(digest(&pair.target()), digest(&pair.source()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_created_table_is_loaded_without_its_key_then_keyed_and_verified() {
    let (pair, env, spec) = fixture("defer", ", defer_key: true");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), &spec);
    let state = dir.path().join("state.db");
    // Chunk 3's first attempt fails mid-stream (rolled back): its second attempt finds no
    // committed attempt in the fence and skips the delete; nothing may double.
    let faults = vec![Fault::FailStream {
        chunk: ChunkId(3),
        times: 1,
    }];
    let (prepared, outcome) = run(&spec_path, &state, faults, CancellationToken::new(), &env).await;
    assert!(
        prepared.job.tables[0].key_deferred,
        "{:?}",
        prepared.job.tables[0]
    );
    assert!(!outcome.interrupted);
    assert_eq!(outcome.chunks.len(), 12);
    assert_keyed_and_equal(&pair, &outcome);
}

/// The chunks of a table loaded keyless are read back in one pass while its key builds,
/// not one by one after; a row changed before the build is found there, its chunk is
/// checked again through the key, found different and copied again, and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_copied_chunks_are_read_back_in_one_pass_and_a_changed_row_is_found() {
    let (pair, env, spec) = fixture("deferpass", ", defer_key: true");
    // A relation already holds the name PostgreSQL gives the key: the key takes the next.
    psql(&pair.target(), "CREATE TABLE orders_pkey (x int)");
    let faults = vec![Fault::BeforeKeyBuild {
        url: pair.target(),
        sql: "UPDATE orders SET note = 'changed' WHERE id = 4321".to_owned(),
    }];
    let (prepared, outcome, sink) = run_with_faults(&spec, &env, faults).await;
    assert!(prepared.job.tables[0].key_deferred);
    assert!(!outcome.interrupted);
    assert_eq!(outcome.chunks.len(), 12);
    assert_keyed_and_equal(&pair, &outcome);
    // Rows 4001..=5000 are the fifth chunk's (ids from 1, 1,000 a chunk).
    let recopied: Vec<u32> = outcome
        .chunks
        .iter()
        .filter(|chunk| chunk.attempt.0 > 1)
        .map(|chunk| chunk.id.0)
        .collect();
    assert_eq!(recopied.len(), 1, "{:?}", outcome.chunks);
    assert_eq!(sink.one_pass_checksums(), 1);
    // Ranges read one by one: the changed chunk's, through the key (natively, then
    // canonically, as its rows may have passed either way), and again by its keyed
    // re-copy. One by one, every chunk would have been read.
    assert_eq!(sink.range_checksums(), 3);
    assert_eq!(
        psql(
            &pair.target(),
            "SELECT conname FROM pg_constraint WHERE conrelid = 'public.orders'::regclass \
             AND contype = 'p'"
        ),
        "orders_pkey1"
    );
}

/// The same for rows that passed as Arrow batches (as from another engine): the one
/// pass hashes them canonically, and finds the changed row there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunks_copied_as_arrow_batches_are_read_back_canonically_in_one_pass() {
    let (pair, env, spec) = fixture("deferarrow", ", defer_key: true");
    let faults = vec![
        Fault::ArrowOnly,
        Fault::BeforeKeyBuild {
            url: pair.target(),
            sql: "UPDATE orders SET amount = amount + 1 WHERE id = 7777".to_owned(),
        },
    ];
    let (_, outcome, sink) = run_with_faults(&spec, &env, faults).await;
    assert!(!outcome.interrupted);
    assert_keyed_and_equal(&pair, &outcome);
    let recopied = outcome
        .chunks
        .iter()
        .filter(|chunk| chunk.attempt.0 > 1)
        .count();
    assert_eq!(recopied, 1, "{:?}", outcome.chunks);
    assert_eq!(sink.native_writes(), 0);
    assert_eq!(sink.one_pass_checksums(), 1);
    // The changed chunk's range through the key, then by its keyed re-copy.
    assert_eq!(sink.range_checksums(), 2);
}

/// A keyless table big enough to be read in several block ranges at once gives each
/// chunk the checksum a read of that chunk alone gives, natively and canonically, in
/// one stream or four.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_big_keyless_table_read_in_parts_gives_each_chunk_its_own_checksum() {
    let (pair, env, spec) = fixture("deferparts", "");
    // The target's copy, keyless as ferry loads it, of a table of ~28 MB (> 2 parts of
    // 1,024 blocks); one row changed so that sums over whole parts would not hide a
    // misplaced row.
    let rows = "INSERT INTO orders SELECT i, i % 97, i / 100.0, repeat('x', 100) || i, \
                timestamp '2024-01-01' + i * interval '1 second' \
                FROM generate_series(1, 200000) AS i";
    psql(
        &pair.target(),
        &format!("{KEYLESS_ORDERS}; {rows}; UPDATE orders SET note = NULL WHERE id = 123456"),
    );
    let blocks: i64 = psql(
        &pair.target(),
        "SELECT pg_relation_size('orders') / current_setting('block_size')::int",
    )
    .parse()
    .expect("blocks");
    assert!(blocks > 2 * 1024, "{blocks} blocks");
    let (schema, sink) = source_orders_and_sink(&spec, &env).await;
    let key = SplitKey::Columns {
        names: vec!["id".to_owned()],
        nullable: false,
        single_integer: true,
    };
    let bound = |id: i64| Some(KeyBound(vec![KeyValue::Int(id)]));
    let mut ranges: Vec<ChunkRange> = (0..7)
        .map(|part| ChunkRange::Interval {
            lower: (part > 0).then(|| bound(part * 30_000)).flatten(),
            upper: (part < 6).then(|| bound((part + 1) * 30_000)).flatten(),
        })
        .collect();
    // In any order.
    ranges.swap(0, 5);
    let native = |streams| sink.native_checksums(&schema, &key, &ranges, streams);
    let one = native(1).await.expect("one stream").expect("native");
    let four = native(4).await.expect("four streams").expect("native");
    assert_eq!(one, four);
    let canonical = sink
        .checksum_chunks(&schema, &key, &ranges, 4)
        .await
        .expect("canonical")
        .expect("tiled");
    let mut rows = 0;
    for (index, range) in ranges.iter().enumerate() {
        let alone = sink
            .native_checksum(&schema, &key, range)
            .await
            .expect("range")
            .expect("native");
        assert_eq!(four[index], alone, "{range}");
        let alone = sink
            .checksum_chunk(&schema, &key, range)
            .await
            .expect("canonical range");
        assert_eq!(canonical[index], alone, "{range}");
        rows += alone.rows;
    }
    assert_eq!(rows, 200_000);
}

/// Sessions ever started on the target database, as PostgreSQL counts them.
fn target_sessions(pair: &PgPair) -> u64 {
    psql(
        &pair.target(),
        "SELECT sessions FROM pg_stat_database WHERE datname = current_database()",
    )
    .parse()
    .expect("a session count")
}

/// Each chunk of a keyless table asks whether the key is built yet; the question goes
/// over the pool's sessions, not a new connection per chunk (a new backend per chunk held
/// small-chunk jobs at the rate PostgreSQL starts backends, ~190 chunks/s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chunks_of_a_keyless_table_do_not_open_a_connection_each() {
    let (pair, env, spec) = fixture("deferconn", ", defer_key: true");
    let spec = spec.replace("target_rows: 1000", "target_rows: 100");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), &spec);
    let state = dir.path().join("state.db");
    let before = target_sessions(&pair);
    let (prepared, outcome) = run_to_end(&spec_path, &state, &env).await;
    assert!(prepared.job.tables[0].key_deferred);
    assert_eq!(outcome.chunks.len(), 120);
    assert_keyed_and_equal(&pair, &outcome);
    // The pools' and the checks' own sessions, far fewer than the chunks.
    let opened = target_sessions(&pair) - before;
    assert!(
        opened < 60,
        "{opened} sessions were started on the target for 120 chunks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_run_leaves_the_table_keyless_and_the_resumed_run_keys_it_exactly() {
    let (pair, env, spec) = fixture("deferres", ", defer_key: true");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), &spec);
    let state = dir.path().join("state.db");
    // Stopped right after the fourth commit: that chunk committed but is not recorded as
    // copied, so the resumed run copies it again over its own rows (the fence shows the
    // earlier commit: its range is deleted first, by a scan).
    let stop = CancellationToken::new();
    let faults = vec![Fault::CancelAfterWrites {
        writes: 4,
        token: stop.clone(),
    }];
    let (_, first) = run(&spec_path, &state, faults, stop, &env).await;
    assert!(first.interrupted);
    assert!(
        first
            .chunks
            .iter()
            .any(|chunk| chunk.state == ChunkState::Copied),
        "{:?}",
        first.chunks
    );
    // Loaded so far without the key: PostgreSQL's catalog says so, with rows in it.
    assert_eq!(target_key(&pair), "");
    let copied_rows: u64 = psql(&pair.target(), "SELECT count(*) FROM orders")
        .parse()
        .expect("a count");
    assert!(
        copied_rows >= 4_000,
        "{copied_rows} rows after four commits"
    );

    let (_, resumed) = run_to_end(&spec_path, &state, &env).await;
    assert!(!resumed.interrupted);
    assert_keyed_and_equal(&pair, &resumed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn defer_key_false_loads_the_keyed_table_as_before() {
    let (pair, env, spec) = fixture("deferoff", ", defer_key: false");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), &spec);
    let state = dir.path().join("state.db");
    let stop = CancellationToken::new();
    let faults = vec![Fault::CancelAfterWrites {
        writes: 3,
        token: stop.clone(),
    }];
    let (prepared, first) = run(&spec_path, &state, faults, stop, &env).await;
    assert!(!prepared.job.tables[0].key_deferred);
    assert!(first.interrupted);
    // Keyed from the start.
    assert_eq!(target_key(&pair), "id");
    assert!(
        first
            .chunks
            .iter()
            .all(|chunk| chunk.state != ChunkState::Copied)
    );
    let (_, resumed) = run_to_end(&spec_path, &state, &env).await;
    assert!(!resumed.interrupted);
    assert_eq!(digest(&pair.target()), digest(&pair.source()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_that_cannot_be_built_names_the_table_and_the_fix() {
    let (pair, env, spec) = fixture("deferdup", ", defer_key: true");
    // The target holds two rows with one key (as if the source had held them).
    psql(
        &pair.target(),
        &format!(
            "{KEYLESS_ORDERS}; INSERT INTO orders VALUES (1, 1, 1, 'a', now()), (1, 2, 2, 'b', now())"
        ),
    );
    let (schema, sink) = source_orders_and_sink(&spec, &env).await;
    assert_eq!(target_key(&pair), "", "the target starts without its key");
    let error = sink
        .build_primary_key(&schema)
        .await
        .expect_err("duplicate keys refuse the key")
        .to_string();
    assert!(error.contains("orders"), "{error}");
    assert!(error.contains("equal keys"), "{error}");
    assert!(error.contains("defer_key: false"), "{error}");
    assert_eq!(target_key(&pair), "");
}

/// The same on a cluster of real processes (etcd, a coordinator, two workers): the
/// workers copy into the keyless table and report COPIED, the leader builds the key and
/// verifies the chunks.
#[test]
fn a_cluster_job_loads_without_the_key_and_the_leader_builds_it() {
    let mut cluster = ferry_tests::cluster::Cluster::new(&[("orders", 6000)]);
    let address = cluster.start_coordinator("c1");
    cluster.start_worker("w1", 2);
    cluster.start_worker("w2", 2);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let spec_text = cluster.spec("orders-defer", 1000, 10_000_000, 4).replace(
        "chunking: { target_rows: 1000 }",
        "chunking: { target_rows: 1000, defer_key: true }",
    );
    runtime.block_on(async {
        ferry_tests::cluster::submit(&address, &spec_text).await;
        let status = ferry_tests::cluster::wait_done(
            &address,
            "orders-defer",
            std::time::Duration::from_secs(120),
        )
        .await;
        ferry_tests::cluster::assert_done(&status);
    });
    cluster.assert_same(&["orders"]);
    let key = psql(
        &cluster.target_url(),
        "SELECT coalesce(string_agg(a.attname, ','), '') FROM pg_constraint c \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) \
         WHERE c.conrelid = 'public.orders'::regclass AND c.contype = 'p'",
    );
    assert_eq!(key, "id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_keyless_table_left_by_an_interrupted_try_is_loaded_and_keyed() {
    let (pair, env, spec) = fixture("deferleft", ", defer_key: true");
    // What a submit whose store write failed leaves behind: the table created without its
    // key, nothing in it (a sent-again submit was refused as "primary key () in the target").
    psql(&pair.target(), KEYLESS_ORDERS);
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), &spec);
    let state = dir.path().join("state.db");
    let (prepared, outcome) = run_to_end(&spec_path, &state, &env).await;
    assert!(
        prepared.job.tables[0].key_deferred,
        "{:?}",
        prepared.job.tables[0]
    );
    assert!(!outcome.interrupted);
    assert_keyed_and_equal(&pair, &outcome);
}
