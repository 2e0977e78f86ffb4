//! ClickHouse end to end on two real 18.16 servers (replicas of one shard, cluster
//! `ferry_test`, scripts/services.sh): CH→CH into ReplicatedMergeTree ON CLUSTER with a
//! split partition, PG→CH→PG and MySQL→CH, a corrupted partition replaced, a killed
//! attempt re-copied without doubles or leftover staging, and the load probe. Every
//! check reads the servers independently with `clickhouse-client` or `psql`.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use ferry_connectors::{ChunkWrite, ErrorKind, Fence, Sink, Source};
use ferry_coordination::ChunkState;
use ferry_model::ids::{Attempt, ChunkId};
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::spec::{ClickhouseOptions, Location, Secret};
use ferry_proto::v1 as pb;
use ferry_tests::cluster::{Cluster, assert_done, chunks, client, submit, wait_done};
use ferry_tests::{
    env_url, mariadb, psql, run_local_with_env, unique_suffix, wait_until, with_database,
    write_spec,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use ferry_tests::clickhouse as ch;

fn env_of(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect()
}

async fn run(
    dir: &std::path::Path,
    spec: &str,
    env: &HashMap<String, String>,
) -> ferry_coordinator::scheduler::RunOutcome {
    let path = write_spec(dir, spec);
    let (_, outcome, _) = run_local_with_env(
        &path,
        &dir.join("state.db"),
        3,
        vec![],
        CancellationToken::new(),
        env,
    )
    .await;
    assert!(!outcome.interrupted);
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "{chunk:?}");
    }
    outcome
}

const EVENTS: &str = "(id UInt64, d Date, at DateTime('Europe/Berlin'), n Nullable(Int32), amount Decimal(18, 4),
    big Decimal(38, 10), f Float64, s String, fs FixedString(4), u UUID, e Enum8('a' = 1, 'b' = -2, 'c''q' = 3),
    tags Array(UInt16), ns Nullable(String), lc LowCardinality(String),
    tp Tuple(UInt8, String))";

fn fill_events(url: &str, database: &str) {
    ch(
        url,
        &format!(
            "CREATE TABLE {database}.events {EVENTS} ENGINE = MergeTree PARTITION BY toYYYYMM(d) ORDER BY id;
             INSERT INTO {database}.events SELECT number, toDate('2024-01-01') + (number % 31),
               toDateTime('2024-01-01 00:00:00', 'Europe/Berlin') + number * 61,
               if(number % 7 = 0, NULL, toInt32(number) - 1000), toDecimal64(number, 4) / 3,
               toDecimal128(number, 10) * 1000000, number / 7, if(number % 5 = 0, '', concat('naïve ✓ ', toString(number))),
               toFixedString(substring(reinterpretAsString(number), 1, 4), 4), generateUUIDv4(),
               ['a', 'b', 'c\\'q'][number % 3 + 1], range(number % 4), if(number % 3 = 0, NULL, unhex('00ff80')),
               toString(number % 5), (toUInt8(number % 200), toString(number))
             FROM system.numbers LIMIT 3000;
             INSERT INTO {database}.events SELECT 100000 + number, toDate('2024-02-01') + number % 28 + 31 * intDiv(number, 100),
               toDateTime('2024-03-31 02:30:00', 'Europe/Berlin') + number, NULL, toDecimal64('-99999999999999.9999', 4),
               toDecimal128('9999999999999999999999999999.9999999999', 10), -0.0, unhex('00c328ff'), '\\0\\0\\0\\0',
               toUUID('00000000-0000-0000-0000-000000000000'), 'b', [65535, 0], '', '', (255, '')
             FROM system.numbers LIMIT 300;"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clickhouse_to_replicated_clickhouse_on_cluster_with_a_split_partition() {
    let url = env_url("FERRY_TEST_CLICKHOUSE_URL");
    let url2 = env_url("FERRY_TEST_CLICKHOUSE_URL_2");
    let suffix = unique_suffix();
    let (src, dst) = (format!("src_{suffix}"), format!("dst_{suffix}"));
    ch(
        &url,
        &format!("CREATE DATABASE {src}; CREATE DATABASE {dst} ON CLUSTER ferry_test"),
    );
    fill_events(&url, &src);
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_of(&[
        ("SRC", with_database(&url, &src)),
        ("DST", with_database(&url, &dst)),
    ]);
    let outcome = run(
        dir.path(),
        "name: chch\nsource: {kind: clickhouse, url_env: SRC}\ntarget:\n  kind: clickhouse\n  url_env: DST\n  clickhouse:\n    on_cluster: ferry_test\n    engines:\n      MergeTree: \"ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')\"\ntables: {include: [events]}\nchunking: {target_rows: 1000}\n",
        &env,
    )
    .await;
    // January (3000 rows) is cut on id into ranges; February and March are whole.
    let january = outcome
        .chunks
        .iter()
        .filter(|c| c.partition.as_deref() == Some("202401"))
        .count();
    assert!(january >= 3, "the big partition is split: {january} chunks");
    assert!(outcome.chunks.len() > january, "{:?}", outcome.chunks.len());
    let engine = ch(
        &url2,
        &format!("SELECT engine FROM system.tables WHERE database = '{dst}' AND name = 'events'"),
    );
    assert_eq!(
        engine, "ReplicatedMergeTree",
        "created ON CLUSTER on the other replica too"
    );
    ch(&url2, &format!("SYSTEM SYNC REPLICA {dst}.events"));
    let counts = |server: &str, db: &str| {
        ch(
            server,
            &format!(
                "SELECT _partition_id, count() FROM {db}.events GROUP BY _partition_id ORDER BY 1 FORMAT TSV"
            ),
        )
    };
    let expected = counts(&url, &src);
    assert_eq!(
        counts(&url, &dst),
        expected,
        "per-partition counts on replica 1"
    );
    assert_eq!(
        counts(&url2, &dst),
        expected,
        "per-partition counts on replica 2"
    );
    let rows = |server: &str, db: &str| {
        ch(
            server,
            &format!("SELECT * FROM {db}.events ORDER BY id FORMAT TSV"),
        )
    };
    let source_rows = rows(&url, &src);
    assert_eq!(rows(&url, &dst), source_rows, "every value on replica 1");
    assert_eq!(rows(&url2, &dst), source_rows, "every value on replica 2");
    let leftovers = ch(
        &url,
        &format!(
            "SELECT count() FROM system.tables WHERE database = '{dst}' AND name LIKE '\\\\_ferry\\\\_stg%'"
        ),
    );
    assert_eq!(leftovers, "0");
    ch(
        &url,
        &format!("DROP DATABASE {src}; DROP DATABASE {dst} ON CLUSTER ferry_test"),
    );
}

/// A ClickHouse source and sink (default options) on the databases of two URLs.
async fn open_pair(
    source_url: &str,
    target_url: &str,
) -> (
    ferry_connectors::clickhouse::ClickhouseSource,
    ferry_connectors::clickhouse::ClickhouseSink,
) {
    let source = ferry_connectors::clickhouse::ClickhouseSource::open(
        &location(source_url.to_owned()),
        None,
    )
    .await
    .expect("open source");
    let sink = ferry_connectors::clickhouse::ClickhouseSink::open(
        &location(target_url.to_owned()),
        Some(&ClickhouseOptions::default()),
    )
    .await
    .expect("open sink");
    (source, sink)
}

fn location(url: String) -> Location {
    Location::Env {
        var: "CH".into(),
        value: Secret::new(url),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_partition_is_detected_and_replaced_and_a_killed_attempt_leaves_nothing() {
    let url = env_url("FERRY_TEST_CLICKHOUSE_URL");
    let suffix = unique_suffix();
    let (src, dst) = (format!("srck_{suffix}"), format!("dstk_{suffix}"));
    ch(
        &url,
        &format!("CREATE DATABASE {src}; CREATE DATABASE {dst}"),
    );
    fill_events(&url, &src);
    let (source, sink) = open_pair(&with_database(&url, &src), &with_database(&url, &dst)).await;
    let table = source
        .describe_table(&ferry_model::schema::TableName::bare("events"))
        .await
        .expect("describe");
    let key = SplitKey::None;
    sink.prepare_table(&table, &key, &Default::default())
        .await
        .expect("prepare");
    let partitions: Vec<String> = table
        .partitioning
        .as_ref()
        .expect("partitioned")
        .leaves()
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(partitions, ["202401", "202402", "202403", "202404"]);
    let range = ChunkRange::WholeTable;
    let cancel = CancellationToken::new();
    let run_id = format!("run-{suffix}");
    let write = |partition: &str, attempt: u32, chunk: u32| {
        let scoped = table.for_partition(partition);
        let run_id = run_id.clone();
        let source = &source;
        let sink = &sink;
        let cancel = cancel.clone();
        let range = range.clone();
        async move {
            let fence = Fence {
                run_id,
                chunk: ChunkId(chunk),
                attempt: Attempt(attempt),
            };
            // As the runner does between two ClickHouse servers: RowBinary passed through.
            let format = sink
                .native_format(&scoped)
                .await
                .expect("native format")
                .expect("offered");
            let read = source
                .read_native(&scoped, &SplitKey::None, &range, format)
                .await
                .expect("read")
                .expect("native");
            sink.write_native(
                ChunkWrite {
                    table: &scoped,
                    key: &SplitKey::None,
                    range: &range,
                    fence: &fence,
                    cancel: &cancel,
                    key_deferred: false,
                },
                read.stream,
            )
            .await
        }
    };
    for (index, partition) in partitions.iter().enumerate() {
        write(partition, 1, index as u32)
            .await
            .expect("write partition");
    }
    let checksums = |partition: &str| {
        let scoped = table.for_partition(partition);
        let (source, sink) = (&source, &sink);
        async move {
            let read = source
                .read_native(
                    &scoped,
                    &SplitKey::None,
                    &ChunkRange::WholeTable,
                    ferry_connectors::clickhouse::NATIVE_FORMAT,
                )
                .await
                .expect("read")
                .expect("native");
            let _drained: Vec<_> = read.stream.bytes.collect().await;
            let expected = read.checksum.await.expect("source checksum").checksum;
            let actual = sink
                .native_checksum(&scoped, &SplitKey::None, &ChunkRange::WholeTable)
                .await
                .expect("target checksum");
            (expected, actual.expect("native checksum").checksum)
        }
    };
    for partition in &partitions {
        let (expected, actual) = checksums(partition).await;
        assert_eq!(actual, expected, "partition {partition} verified");
    }
    // Corrupt February outside ferry; keep the other partitions' parts as markers.
    let parts = |db: &str| {
        ch(
            &url,
            &format!(
                "SELECT name FROM system.parts WHERE database = '{db}' AND table = 'events' AND active AND partition_id != '202402' ORDER BY name"
            ),
        )
    };
    let markers = parts(&dst);
    ch(
        &url,
        &format!(
            "INSERT INTO {dst}.events (id, d, at, amount, big, f, s, fs, u, e, tags) VALUES (999999, '2024-02-10', now(), 1, 1, 1, 'x', 'abcd', '00000000-0000-0000-0000-000000000001', 'a', [])"
        ),
    );
    let (expected, actual) = checksums("202402").await;
    assert_ne!(actual, expected, "the corruption is detected");
    write("202402", 2, 1).await.expect("re-copy the partition");
    let (expected, actual) = checksums("202402").await;
    assert_eq!(actual, expected, "the partition is replaced");
    assert_eq!(parts(&dst), markers, "the other partitions are untouched");
    // A stale attempt is refused once a newer one started.
    let stale = write("202402", 1, 1)
        .await
        .expect_err("attempt 1 after attempt 2");
    assert_eq!(stale.kind(), ErrorKind::Fenced, "{stale}");

    // A worker killed mid-partition: its write stops inside the staging insert.
    let scoped = table.for_partition("202401");
    let fence = Fence {
        run_id: format!("run-{suffix}"),
        chunk: ChunkId(0),
        attempt: Attempt(3),
    };
    let read = source
        .read_native(
            &scoped,
            &SplitKey::None,
            &range,
            ferry_connectors::clickhouse::NATIVE_FORMAT,
        )
        .await
        .expect("read")
        .expect("native");
    let hanging = ferry_connectors::NativeStream {
        format: read.stream.format,
        bytes: read
            .stream
            .bytes
            .take(1)
            .chain(futures::stream::pending())
            .boxed(),
    };
    let killed = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        sink.write_native(
            ChunkWrite {
                table: &scoped,
                key: &SplitKey::None,
                range: &range,
                fence: &fence,
                cancel: &cancel,
                key_deferred: false,
            },
            hanging,
        ),
    )
    .await;
    assert!(killed.is_err(), "the write was still inside its insert");
    let staging = || {
        ch(
            &url,
            &format!(
                "SELECT count() FROM system.tables WHERE database = '{dst}' AND name LIKE '\\\\_ferry\\\\_stg%'"
            ),
        )
    };
    assert_eq!(staging(), "1", "the killed attempt left its staging table");
    write("202401", 4, 0).await.expect("re-copy after the kill");
    assert_eq!(staging(), "0", "no staging table is left");
    let keys = |db: &str| {
        ch(
            &url,
            &format!(
                "SELECT _partition_id, count(), sum(cityHash64(id)) FROM {db}.events GROUP BY _partition_id ORDER BY 1"
            ),
        )
    };
    assert_eq!(
        keys(&dst),
        keys(&src),
        "per-partition counts and key multisets: no doubles"
    );
    // A range of a partition swaps under the table's lock; a lock left by a killed older
    // attempt of the same chunk is broken at once (not after its 10-minute lease).
    let lock = ferry_connectors::clickhouse::lock_table_name(&dst, "events");
    let older = Fence {
        run_id: format!("run-{suffix}"),
        chunk: ChunkId(0),
        attempt: Attempt(5),
    };
    ch(
        &url,
        &format!(
            "CREATE TABLE {dst}.{lock} (holder String) ENGINE = Memory; INSERT INTO {dst}.{lock} VALUES ('{}')",
            older.attempt_tag(Attempt(5))
        ),
    );
    let id_key = SplitKey::Columns {
        names: vec!["id".into()],
        nullable: false,
        single_integer: false,
    };
    let first_ids = ChunkRange::Interval {
        lower: None,
        upper: Some(ferry_model::key::KeyBound(vec![
            ferry_model::key::KeyValue::Int(1000),
        ])),
    };
    let newer = Fence {
        attempt: Attempt(6),
        ..older.clone()
    };
    let read = source
        .read_native(
            &scoped,
            &id_key,
            &first_ids,
            ferry_connectors::clickhouse::NATIVE_FORMAT,
        )
        .await
        .expect("read")
        .expect("native");
    let summary = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        sink.write_native(
            ChunkWrite {
                table: &scoped,
                key: &id_key,
                range: &first_ids,
                fence: &newer,
                cancel: &cancel,
                key_deferred: false,
            },
            read.stream,
        ),
    )
    .await
    .expect("the older attempt's lock does not hold the newer one back")
    .expect("range written");
    assert_eq!(summary.rows_written, 1000);
    // A range of a split partition waits in its staging table until the partition's
    // ranges are all staged: the target's partition is untouched meanwhile.
    assert_eq!(summary.rows_deleted, 0, "nothing swapped in yet");
    assert_eq!(staging(), "1", "the range waits in staging");
    assert_eq!(keys(&dst), keys(&src));
    assert_eq!(
        ch(
            &url,
            &format!(
                "SELECT count() FROM system.tables WHERE database = '{dst}' AND name = '{lock}'"
            )
        ),
        "0",
        "the lock is released"
    );
    // The partition's other range completes it: the partition is swapped in once, whole.
    let rest_ids = ChunkRange::Interval {
        lower: Some(ferry_model::key::KeyBound(vec![
            ferry_model::key::KeyValue::Int(1000),
        ])),
        upper: None,
    };
    let read = source
        .read_native(
            &scoped,
            &id_key,
            &rest_ids,
            ferry_connectors::clickhouse::NATIVE_FORMAT,
        )
        .await
        .expect("read")
        .expect("native");
    let rest = Fence {
        run_id: format!("run-{suffix}"),
        chunk: ChunkId(7),
        attempt: Attempt(1),
    };
    let summary = sink
        .write_native(
            ChunkWrite {
                table: &scoped,
                key: &id_key,
                range: &rest_ids,
                fence: &rest,
                cancel: &cancel,
                key_deferred: false,
            },
            read.stream,
        )
        .await
        .expect("range written");
    assert_eq!(summary.rows_written, 2000);
    assert_eq!(
        summary.rows_deleted, 3000,
        "the partition is replaced, not added to"
    );
    assert_eq!(staging(), "0", "both ranges' staging tables are gone");
    assert_eq!(
        keys(&dst),
        keys(&src),
        "no doubles after the partition swap"
    );
    // The load probe reads the server's running queries.
    assert!(source.probe_load().await.expect("probe").is_some());
    ch(&url, &format!("DROP DATABASE {src}; DROP DATABASE {dst}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_to_clickhouse_and_back_and_mysql_to_clickhouse() {
    let pg = env_url("FERRY_TEST_PG_URL");
    let my = env_url("FERRY_TEST_MYSQL_URL");
    let url = env_url("FERRY_TEST_CLICKHOUSE_URL");
    let suffix = unique_suffix();
    let (pg_src, pg_back, chdb) = (
        format!("pgsrc_{suffix}"),
        format!("pgback_{suffix}"),
        format!("pgch_{suffix}"),
    );
    psql(
        &pg,
        &format!("CREATE DATABASE {pg_src}; CREATE DATABASE {pg_back}"),
    );
    let pg_src_url = with_database(&pg, &pg_src);
    psql(
        &pg_src_url,
        "CREATE TABLE items (id bigint PRIMARY KEY, i integer, s smallint, amount numeric(20, 4), name text,
           d date, u uuid, f double precision, r real, b boolean, ts timestamptz);
         INSERT INTO items SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE g * 7919 % 100000 - 50000 END, (g % 200)::smallint,
           g / 3.0, CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'naïve ✓ 名前 ' || g END,
           DATE '1970-01-01' + g * 3, md5(g::text)::uuid, g / 7.0, g / 8.0, g % 2 = 0,
           TIMESTAMPTZ '1970-01-01 00:00:00+00' + g * INTERVAL '1 day 1 hour 1 second' FROM generate_series(1, 2400) g;
         INSERT INTO items VALUES (-9223372036854775808, -2147483648, -32768, -9999999999999999.9999, 'é''\"\\', '2149-06-06', NULL, -0.0, 'Infinity', NULL, NULL);",
    );
    ch(&url, &format!("CREATE DATABASE {chdb}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_of(&[
        ("PG_SRC", pg_src_url.clone()),
        ("PG_BACK", with_database(&pg, &pg_back)),
        ("CH", with_database(&url, &chdb)),
    ]);
    let outcome = run(
        dir.path(),
        // 18.16 has no DateTime64: whole seconds kept by choice (the 18.16 fallback).
        "name: pgch\nsource: {kind: postgres, url_env: PG_SRC}\ntarget: {kind: clickhouse, url_env: CH}\ntables: {include: [items]}\nchunking: {target_rows: 500}\ncolumns: {\"items.ts\": \"Nullable(DateTime)\"}\n",
        &env,
    )
    .await;
    assert!(
        outcome.chunks.len() >= 4,
        "ranges of the integer key: {}",
        outcome.chunks.len()
    );
    let ch_count = ch(
        &url,
        &format!("SELECT count(), countIf(isNull(i)), sum(id) FROM {chdb}.items"),
    );
    let pg_count = psql(
        &pg_src_url,
        "SELECT count(*), count(*) - count(i), sum(id) FROM items",
    );
    assert_eq!(ch_count.replace('\t', "|"), pg_count.trim_end());
    let back_dir = tempfile::tempdir().expect("tempdir");
    run(
        back_dir.path(),
        "name: chpg\nsource: {kind: clickhouse, url_env: CH}\ntarget: {kind: postgres, url_env: PG_BACK}\ntables: {include: [items]}\nchunking: {target_rows: 500}\n",
        &env,
    )
    .await;
    let canonical =
        "SELECT id, i, s, amount::numeric, name, d, u, f, r, b::int, ts FROM items ORDER BY id";
    let back_url = with_database(&pg, &pg_back);
    let back = psql(
        &back_url,
        &canonical.replace("FROM items", "FROM public.items"),
    );
    assert_eq!(
        back,
        psql(&pg_src_url, canonical),
        "pg -> ch -> pg keeps every value"
    );

    // MySQL → ClickHouse (analytics offload).
    let my_db = format!("mych_{suffix}");
    mariadb(&my, &format!("CREATE DATABASE {my_db}"));
    let my_url = with_database(&my, &my_db);
    mariadb(
        &my_url,
        "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40), amount DECIMAL(12,2), placed DATE);
         INSERT INTO orders WITH RECURSIVE n(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM n WHERE g < 900)
           SELECT g, CONCAT('c', g % 97), g * 1.25, DATE_ADD('2020-01-01', INTERVAL g DAY) FROM n;",
    );
    let my_dir = tempfile::tempdir().expect("tempdir");
    let env = env_of(&[("MY", my_url.clone()), ("CH", with_database(&url, &chdb))]);
    run(
        my_dir.path(),
        "name: mych\nsource: {kind: mysql, url_env: MY}\ntarget: {kind: clickhouse, url_env: CH}\ntables: {include: [orders]}\nchunking: {target_rows: 300}\n",
        &env,
    )
    .await;
    let ch_sum = ch(
        &url,
        &format!(
            "SELECT count(), sum(amount), max(placed), uniqExact(customer) FROM {chdb}.orders"
        ),
    );
    let my_sum = mariadb(
        &my_url,
        "SELECT COUNT(*), SUM(amount), MAX(placed), COUNT(DISTINCT customer) FROM orders",
    );
    assert_eq!(ch_sum.replace('\t', "|"), my_sum.trim_end());
    ch(&url, &format!("DROP DATABASE {chdb}"));
    mariadb(&my, &format!("DROP DATABASE {my_db}"));
    psql(
        &pg,
        &format!("DROP DATABASE {pg_src}; DROP DATABASE {pg_back}"),
    );
}

/// Holds `count` queries busy on the server (`sleep` once per one-row block: no CPU).
fn busy_queries(url: &str, count: usize, tag: &str) -> Vec<std::process::Child> {
    (0..count)
        .map(|_| {
            Command::new("clickhouse-client")
                .args([
                    "--port",
                    &ferry_tests::clickhouse_native_port(url).to_string(),
                    "--max_block_size",
                    "1",
                    "--query",
                    &format!(
                        "SELECT sleep(1) /* {tag} */ FROM system.numbers LIMIT 60 FORMAT Null"
                    ),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("clickhouse-client")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_load_probe_and_a_rate_limit_on_a_clickhouse_source() {
    use ferry_coordinator::pacer::JobPacer;
    use ferry_model::throttle::{LoadPolicy, LoadProbe, ThrottlePolicy};
    use std::time::{Duration, Instant};
    let url = env_url("FERRY_TEST_CLICKHOUSE_URL");
    let suffix = unique_suffix();
    let tag = format!("ferry_ch_load_{suffix}");
    let source: std::sync::Arc<dyn Source> = std::sync::Arc::new(
        ferry_connectors::clickhouse::ClickhouseSource::open(&location(url.clone()), None)
            .await
            .expect("source"),
    );
    let quiet = source
        .probe_load()
        .await
        .expect("probe")
        .expect("a builtin probe");
    let mut busy = busy_queries(&url, 4, &tag);
    let counted = ferry_model::testing::wait_until_async(Duration::from_secs(10), || {
        let source = source.clone();
        async move {
            source
                .probe_load()
                .await
                .ok()
                .flatten()
                // Our four queries at least: the quiet reading may have counted queries
                // of this file's other tests, which run at the same time and end.
                .is_some_and(|load| load >= 4.0)
        }
    })
    .await;
    assert!(counted.is_ok(), "the probe counts the running queries");
    let sink: std::sync::Arc<dyn Sink> = std::sync::Arc::new(
        ferry_connectors::clickhouse::ClickhouseSink::open(&location(url.clone()), None)
            .await
            .expect("sink"),
    );
    let store: std::sync::Arc<dyn ferry_coordination::Coordination> =
        std::sync::Arc::new(ferry_coordination::LocalStore::in_memory().expect("store"));
    let interval = Duration::from_millis(300);
    let cancel = CancellationToken::new();
    let policy = ThrottlePolicy {
        default_concurrency: 8,
        load: Some(LoadPolicy {
            probe: LoadProbe::Builtin,
            interval_ms: interval.as_millis() as u64,
            max: quiet + 1.0,
            critical: quiet + 3.0,
            pause_timeout_ms: 60_000,
        }),
        ..ThrottlePolicy::default()
    };
    let pacer = JobPacer::start(
        ferry_model::ids::JobId("chload".into()),
        policy,
        store,
        source.clone(),
        sink,
        Duration::from_secs(1800),
        cancel.clone(),
    )
    .await
    .expect("pacer");
    let mut gate = pacer.pacing().gate;
    tokio::time::timeout(Duration::from_secs(5), gate.wait_for(|g| g.paused))
        .await
        .expect("paused above critical")
        .expect("pacer alive");
    ch(&url, &format!("KILL QUERY WHERE query LIKE '%{tag}%' SYNC"));
    for child in &mut busy {
        let _ = child.wait();
    }
    tokio::time::timeout(Duration::from_secs(5), gate.wait_for(|g| !g.paused))
        .await
        .expect("resumes once the queries end")
        .expect("pacer alive");
    cancel.cancel();

    // A rows/s limit paces a ClickHouse -> ClickHouse job (rows then travel as batches).
    let (src, dst) = (format!("srcr_{suffix}"), format!("dstr_{suffix}"));
    ch(
        &url,
        &format!(
            "CREATE DATABASE {src}; CREATE DATABASE {dst};
             CREATE TABLE {src}.t (id UInt64, s String) ENGINE = MergeTree PARTITION BY id % 4 ORDER BY id;
             INSERT INTO {src}.t SELECT number, toString(number) FROM system.numbers LIMIT 40000;"
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_of(&[
        ("SRC", with_database(&url, &src)),
        ("DST", with_database(&url, &dst)),
    ]);
    let started = Instant::now();
    run(
        dir.path(),
        "name: chrate\nsource: {kind: clickhouse, url_env: SRC}\ntarget: {kind: clickhouse, url_env: DST}\ntables: {include: [t]}\nthrottle: {default_concurrency: 4, rate: {rows_per_sec: 20000}}\n",
        &env,
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "40,000 rows at 20,000 rows/s took {took:?}"
    );
    assert_eq!(ch(&url, &format!("SELECT count() FROM {dst}.t")), "40000");
    ch(&url, &format!("DROP DATABASE {src}; DROP DATABASE {dst}"));
}

/// `read_replica`: the catalog comes from the URL's server, every chunk read from the
/// replica named. The two servers hold different rows under one name here, so the
/// target shows which one was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_are_read_from_the_read_replica() {
    let url = env_url("FERRY_TEST_CLICKHOUSE_URL");
    let url2 = env_url("FERRY_TEST_CLICKHOUSE_URL_2");
    let suffix = unique_suffix();
    let (src, dst) = (format!("srcrr_{suffix}"), format!("dstrr_{suffix}"));
    for (server, label) in [(&url, "one"), (&url2, "two")] {
        ch(
            server,
            &format!(
                "CREATE DATABASE {src}; CREATE TABLE {src}.t (id UInt64, s String) ENGINE = MergeTree PARTITION BY id % 2 ORDER BY id;
                 INSERT INTO {src}.t SELECT number, '{label}' FROM system.numbers LIMIT 100;"
            ),
        );
    }
    ch(&url, &format!("CREATE DATABASE {dst}"));
    let replica = url2
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("host:port")
        .to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_of(&[
        ("SRC", with_database(&url, &src)),
        ("DST", with_database(&url, &dst)),
    ]);
    run(
        dir.path(),
        &format!(
            "name: chrr\nsource: {{kind: clickhouse, url_env: SRC, clickhouse: {{read_replica: \"{replica}\", max_execution_time: 60}}}}\ntarget: {{kind: clickhouse, url_env: DST}}\ntables: {{include: [t]}}\n"
        ),
        &env,
    )
    .await;
    assert_eq!(ch(&url, &format!("SELECT DISTINCT s FROM {dst}.t")), "two");
    assert_eq!(ch(&url, &format!("SELECT count() FROM {dst}.t")), "100");
    ch(&url, &format!("DROP DATABASE {src}; DROP DATABASE {dst}"));
    ch(&url2, &format!("DROP DATABASE {src}"));
}

/// A real worker process killed (SIGKILL) while it writes a partition into its staging
/// table: the coordinator gives the partition to the other worker, whose attempt drops
/// the dead attempt's staging table and swaps the partition in once. Checked with
/// `clickhouse-client`: per-partition counts and key multisets equal, no staging or lock
/// table left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_killed_mid_partition_leaves_no_doubles_and_no_staging() {
    let src_url = env_url("FERRY_TEST_CLICKHOUSE_URL");
    let dst_url = env_url("FERRY_TEST_CLICKHOUSE_URL_2");
    let suffix = unique_suffix();
    let (src, dst) = (format!("srcw_{suffix}"), format!("dstw_{suffix}"));
    ch(&src_url, &format!("CREATE DATABASE {src}"));
    ch(&dst_url, &format!("CREATE DATABASE {dst}"));
    fill_events(&src_url, &src);
    let mut cluster = Cluster::new(&[]);
    cluster
        .extra_env
        .insert("CH_SRC".into(), with_database(&src_url, &src));
    cluster
        .extra_env
        .insert("CH_DST".into(), with_database(&dst_url, &dst));
    let address = cluster.start_coordinator("coord-ch");
    cluster.start_worker("victim", 1);
    let job = format!("chkill-{suffix}");
    // One partition at a time at 40 kB/s: January's ~300 kB take several seconds. (A
    // rows/s limit would send the chunk down the Arrow path, which cannot carry this
    // table's Tuple column and non-UTF-8 strings; bytes/s paces the passthrough.)
    submit(
        &address,
        &format!(
            "name: {job}\nsource: {{kind: clickhouse, url_env: CH_SRC}}\n\
             target: {{kind: clickhouse, url_env: CH_DST}}\ntables: {{include: [events]}}\n\
             throttle: {{default_concurrency: 1, rate: {{bytes_per_sec: 40000}}}}\n"
        ),
    )
    .await;
    let staging = || {
        ch(
            &dst_url,
            &format!(
                "SELECT count() FROM system.tables WHERE database = '{dst}' AND (name LIKE '\\\\_ferry\\\\_stg%' OR name LIKE '\\\\_ferry\\\\_lock%')"
            ),
        )
    };
    wait_until(Duration::from_secs(30), || staging() != "0")
        .await
        .expect("the victim never started writing into a staging table");
    let copying = chunks(&address, &job)
        .await
        .into_iter()
        .find(|chunk| chunk.worker == "victim" && chunk.state == "COPYING")
        .expect("the victim holds a COPYING chunk while its staging table fills");
    cluster.signal("victim", "KILL");
    cluster.start_worker("survivor", 2);
    let mut control = client(&address).await;
    control
        .update_throttle(pb::UpdateThrottleRequest {
            job_id: job.clone(),
            bytes_per_sec: Some(0),
            max_concurrency: Some(2),
            ..Default::default()
        })
        .await
        .expect("lift the rate limit");
    let status = wait_done(&address, &job, Duration::from_secs(90)).await;
    assert_done(&status);
    let record = chunks(&address, &job)
        .await
        .into_iter()
        .find(|chunk| chunk.id == copying.id)
        .expect("the killed chunk");
    assert!(
        record.attempt >= 2 && record.last_error.contains("victim was lost"),
        "the killed partition was not re-copied after the loss: {record:?}"
    );
    let keys = |url: &str, db: &str| {
        ch(
            url,
            &format!(
                "SELECT _partition_id, count(), sum(cityHash64(id)) FROM {db}.events GROUP BY _partition_id ORDER BY 1"
            ),
        )
    };
    assert_eq!(
        keys(&dst_url, &dst),
        keys(&src_url, &src),
        "per-partition counts and key multisets: no doubles, nothing lost"
    );
    assert_eq!(staging(), "0", "a staging or lock table was left behind");
    ch(&src_url, &format!("DROP DATABASE {src}"));
    ch(&dst_url, &format!("DROP DATABASE {dst}"));
}

/// Between two servers a table whose columns all have a version-stable form is checked
/// inside the servers (`count()` and `sum(cityHash64(...))` on each side): equal after
/// the copy, and different when one Decimal's last digit or one NULL (made 0) changed in
/// the target with the row count unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_server_checksum_agrees_after_a_copy_and_sees_a_one_digit_change() {
    let (src_url, dst_url) = (
        env_url("FERRY_TEST_CLICKHOUSE_URL"),
        env_url("FERRY_TEST_CLICKHOUSE_URL_2"),
    );
    let suffix = unique_suffix();
    let (src, dst) = (format!("srcs_{suffix}"), format!("dsts_{suffix}"));
    ch(&src_url, &format!("CREATE DATABASE {src}"));
    ch(&dst_url, &format!("CREATE DATABASE {dst}"));
    ch(
        &src_url,
        &format!(
            "CREATE TABLE {src}.plain (id UInt64, d Date, amount Decimal(12, 2), n Nullable(Int32),
               s String, u UUID, e Enum8('a' = 1, 'b' = -2), lc LowCardinality(String), tags Array(UInt16))
               ENGINE = MergeTree PARTITION BY toYYYYMM(d) ORDER BY id;
             INSERT INTO {src}.plain SELECT number, toDate('2024-01-01') + number % 75, toDecimal64(number, 2) / 7,
               if(number % 4 = 0, NULL, toInt32(number)), concat('s', toString(number)), generateUUIDv4(),
               ['a', 'b'][number % 2 + 1], toString(number % 3), range(number % 5)
             FROM system.numbers LIMIT 5000"
        ),
    );
    let (source, sink) = open_pair(
        &with_database(&src_url, &src),
        &with_database(&dst_url, &dst),
    )
    .await;
    let table = source
        .describe_table(&ferry_model::schema::TableName::bare("plain"))
        .await
        .expect("describe");
    sink.prepare_table(&table, &SplitKey::None, &Default::default())
        .await
        .expect("prepare");
    let cancel = CancellationToken::new();
    let range = ChunkRange::WholeTable;
    let mut copied = Vec::new();
    for (index, partition) in ["202401", "202402", "202403"].into_iter().enumerate() {
        let scoped = table.for_partition(partition);
        let read = source
            .read_native(
                &scoped,
                &SplitKey::None,
                &range,
                ferry_connectors::clickhouse::NATIVE_FORMAT,
            )
            .await
            .expect("read")
            .expect("native");
        let fence = Fence {
            run_id: format!("run-{suffix}"),
            chunk: ChunkId(index as u32),
            attempt: Attempt(1),
        };
        sink.write_native(
            ChunkWrite {
                table: &scoped,
                key: &SplitKey::None,
                range: &range,
                fence: &fence,
                cancel: &cancel,
                key_deferred: false,
            },
            read.stream,
        )
        .await
        .expect("write");
        let expected = read.checksum.await.expect("source checksum");
        assert_eq!(
            expected.method,
            ferry_connectors::clickhouse::SQL_CHECKSUM_METHOD
        );
        let actual = sink
            .native_checksum(&scoped, &SplitKey::None, &range)
            .await
            .expect("target checksum")
            .expect("native checksum");
        assert_eq!(
            actual, expected,
            "partition {partition} agrees after the copy"
        );
        copied.push((partition, expected));
    }
    // Rebuild a partition in the target with one value changed, same row count.
    let corrupt = |partition: &str, change: &str| {
        ch(
            &dst_url,
            &format!(
                "DROP TABLE IF EXISTS {dst}.tmp; CREATE TABLE {dst}.tmp AS {dst}.plain;
                 INSERT INTO {dst}.tmp SELECT id, d, {change}, s, u, e, lc, tags FROM {dst}.plain
                   WHERE toYYYYMM(d) = {partition};
                 ALTER TABLE {dst}.plain REPLACE PARTITION {partition} FROM {dst}.tmp;
                 DROP TABLE {dst}.tmp"
            ),
        );
    };
    corrupt(
        "202401",
        "if(id = 7, amount + toDecimal64(0.01, 2), amount), n",
    );
    corrupt("202402", "amount, if(id = 32, 0, n)");
    assert_eq!(
        ch(&dst_url, &format!("SELECT count() FROM {dst}.plain")),
        "5000",
        "the row count is unchanged"
    );
    for (partition, expected) in &copied {
        let actual = sink
            .native_checksum(&table.for_partition(partition), &SplitKey::None, &range)
            .await
            .expect("target checksum")
            .expect("native checksum");
        assert_eq!(actual.checksum.rows, expected.checksum.rows);
        if *partition == "202403" {
            assert_eq!(actual, *expected, "the untouched partition still agrees");
        } else {
            assert_ne!(
                actual.checksum.sum, expected.checksum.sum,
                "the change in {partition} is seen"
            );
        }
    }
    ch(&src_url, &format!("DROP DATABASE {src}"));
    ch(&dst_url, &format!("DROP DATABASE {dst}"));
}
