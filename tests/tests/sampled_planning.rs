//! Planning big tables by sampling, against the real PostgreSQL and MariaDB of
//! `scripts/services.sh`: a 2,000,000-row table whose keys are skewed (squares: dense low
//! keys, sparse high ones) with a huge gap is planned from a sample of its keys
//! (`TABLESAMPLE SYSTEM`; `RAND() <` on MariaDB), and every chunk, counted with the
//! engine's own client, holds at most twice the target, while the chunks together hold
//! every row exactly once. Rows are stored in key order, the hard case for page
//! sampling (a page's rows have neighbouring keys). A big table with a composite key is
//! planned from a sample too.

use std::collections::HashMap;

use ferry_connectors::registry::{open_sink, open_source};
use ferry_coordinator::plan::plan_job_with;
use ferry_coordinator::planner::{
    SAMPLE_FROM_ROWS, boundaries_from_sample, choose_split_key, intervals, sample_points,
};
use ferry_ctl::local::load_spec;
use ferry_model::key::{ChunkRange, KeyValue};
use ferry_tests::{mariadb, psql, unique_suffix, write_spec};

const ROWS: u64 = 2_000_000;
const TARGET_ROWS: u64 = 100_000;

/// The key of row `i` (SQL over a column `i`): 70 % of rows on squares, the rest past a
/// gap of 2.5·10^15.
const SKEWED_KEY: &str = "CASE WHEN i % 10 < 7 THEN i * i ELSE 5000000000000000 + i * 1000 END";

fn env_url(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the test services with \
             `scripts/services.sh up && eval \"$(scripts/services.sh env)\"`"
        )
    })
}

/// The SQL condition of one planned range over the single integer key `id`.
fn range_condition(range: &ChunkRange) -> String {
    let ChunkRange::Interval { lower, upper } = range else {
        panic!("a non-NULL integer key plans intervals only, got {range}");
    };
    let value = |bound: &ferry_model::key::KeyBound| match bound.0.as_slice() {
        [KeyValue::Int(value)] => *value,
        other => panic!("not an integer bound: {other:?}"),
    };
    let mut parts = vec!["TRUE".to_string()];
    if let Some(lower) = lower {
        parts.push(format!("id >= {}", value(lower)));
    }
    if let Some(upper) = upper {
        parts.push(format!("id < {}", value(upper)));
    }
    parts.join(" AND ")
}

/// Plans `table` of the source `source_yaml` (a SQLite target: a dry run touches
/// nothing), checks that the plan was cut from the source's sample, and returns the
/// planned ranges.
async fn plan_sampled(
    source_yaml: &str,
    table: &str,
    env: &HashMap<String, String>,
) -> Vec<ChunkRange> {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec_path = write_spec(
        dir.path(),
        &format!(
            "name: sampled\nsource: {source_yaml}\ntarget: {{ kind: sqlite, path: target.db }}\n\
             tables: {{ include: [\"{table}\"] }}\nchunking: {{ target_rows: {TARGET_ROWS} }}\n"
        ),
    );
    let spec = load_spec(&spec_path, env).expect("spec loads");
    let source = open_source(&spec.source).await.expect("source opens");
    let sink = open_sink(&spec.target).await.expect("sink opens");
    let started = std::time::Instant::now();
    let plan = plan_job_with(&spec, source.as_ref(), sink.as_ref(), false)
        .await
        .expect("job plans");
    eprintln!(
        "planned {table} in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let ranges: Vec<ChunkRange> = plan
        .chunks
        .iter()
        .map(|chunk| chunk.range.clone())
        .collect();

    // The plan is the one cut from the source's (seeded, so repeatable) sample.
    let schema = &plan.tables[0].schema;
    let (key, _) = choose_split_key(schema, false, false);
    let stats = source.key_stats(schema, &key).await.expect("key stats");
    assert!(
        stats.rows >= SAMPLE_FROM_ROWS,
        "estimate {} rows",
        stats.rows
    );
    let sample = source
        .key_sample(
            schema,
            &key,
            sample_points(stats.rows, TARGET_ROWS),
            stats.rows,
        )
        .await
        .expect("sample")
        .expect("a big table is sampled");
    assert!(
        sample.keys.len() as u64 <= sample_points(stats.rows, TARGET_ROWS) * 2,
        "{} sampled keys cross the network",
        sample.keys.len()
    );
    assert_eq!(
        ranges,
        intervals(&boundaries_from_sample(&sample, TARGET_ROWS))
    );
    ranges
}

/// Checks chunk counts (one per range, from the engine's own client) and the total.
fn assert_even_exact_cover(counts: &[u64], total: u64, ranges: &[ChunkRange]) {
    assert_eq!(counts.len(), ranges.len());
    assert!(
        ranges.len() as u64 >= ROWS / TARGET_ROWS / 2,
        "{} chunks for {ROWS} rows",
        ranges.len()
    );
    for (range, count) in ranges.iter().zip(counts) {
        assert!(
            *count <= 2 * TARGET_ROWS,
            "chunk {range} holds {count} rows, more than twice the target {TARGET_ROWS}"
        );
    }
    assert_eq!(total, ROWS);
    assert_eq!(counts.iter().sum::<u64>(), total, "chunks {counts:?}");
}

struct DropOnExit(Box<dyn Fn()>);

impl Drop for DropOnExit {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// Drops the PostgreSQL table when the test ends, however it ends.
fn drop_pg_table_on_exit(url: &str, table: &str) -> DropOnExit {
    let (url, table) = (url.to_string(), table.to_string());
    DropOnExit(Box::new(move || {
        psql(&url, &format!("DROP TABLE IF EXISTS {table}"));
    }))
}

/// The ranges the planner cuts `public.{table}` into, from a key sample.
async fn plan_pg_sampled(url: &str, table: &str) -> Vec<ChunkRange> {
    let env = HashMap::from([("SRC".to_string(), url.to_string())]);
    plan_sampled(
        "{ kind: postgres, url_env: SRC }",
        &format!("public.{table}"),
        &env,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_postgres_table_with_skewed_keys_is_planned_from_a_sample_in_even_chunks() {
    let url = env_url("FERRY_TEST_PG_URL");
    let table = format!("scale_sample_{}", unique_suffix());
    psql(
        &url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, note text);
             INSERT INTO {table} SELECT {SKEWED_KEY}, 'n' || i
               FROM generate_series(1::bigint, {ROWS}) AS i ORDER BY 1;
             VACUUM ANALYZE {table};"
        ),
    );
    let _guard = drop_pg_table_on_exit(&url, &table);
    let ranges = plan_pg_sampled(&url, &table).await;

    let filters: Vec<String> = ranges
        .iter()
        .map(|range| format!("count(*) FILTER (WHERE {})", range_condition(range)))
        .collect();
    let answer = psql(
        &url,
        &format!("SELECT count(*), {} FROM {table}", filters.join(", ")),
    );
    let numbers: Vec<u64> = answer
        .trim()
        .split('|')
        .map(|field| field.parse().expect("a count"))
        .collect();
    assert_even_exact_cover(&numbers[1..], numbers[0], &ranges);
}

// A big table whose key is not a single integer (TPC-H's lineitem) once failed here:
// its key statistics asked PostgreSQL for a row per table row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_postgres_table_with_a_composite_key_is_planned_from_a_sample() {
    let url = env_url("FERRY_TEST_PG_URL");
    let table = format!("scale_composite_{}", unique_suffix());
    let rows = SAMPLE_FROM_ROWS + SAMPLE_FROM_ROWS / 5;
    psql(
        &url,
        &format!(
            "CREATE TABLE {table} (order_key bigint, line int, note text, PRIMARY KEY (order_key, line));
             INSERT INTO {table} SELECT i / 4, i % 4, 'n' FROM generate_series(0::bigint, {rows} - 1) AS i;
             VACUUM ANALYZE {table};"
        ),
    );
    let _guard = drop_pg_table_on_exit(&url, &table);
    let ranges = plan_pg_sampled(&url, &table).await;
    let expected = rows / TARGET_ROWS;
    assert!(
        (expected / 2..=expected * 2).contains(&(ranges.len() as u64)),
        "{} chunks for {rows} rows",
        ranges.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_mariadb_table_with_skewed_keys_is_planned_from_a_sample_in_even_chunks() {
    let url = env_url("FERRY_TEST_MYSQL_URL");
    let table = format!("scale_sample_{}", unique_suffix());
    mariadb(
        &url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, note varchar(20)) ENGINE=InnoDB;
             INSERT INTO {table} SELECT {key}, CONCAT('n', seq) FROM seq_1_to_{ROWS};
             ANALYZE TABLE {table};",
            key = SKEWED_KEY.replace('i', "seq"),
        ),
    );
    let drop_url = url.clone();
    let drop_table = table.clone();
    let _guard = DropOnExit(Box::new(move || {
        mariadb(&drop_url, &format!("DROP TABLE IF EXISTS {drop_table}"));
    }));
    let env = HashMap::from([("SRC".to_string(), url.clone())]);
    let database = url
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .expect("the URL names a database");
    let ranges = plan_sampled(
        "{ kind: mysql, url_env: SRC }",
        &format!("{database}.{table}"),
        &env,
    )
    .await;

    let sums: Vec<String> = ranges
        .iter()
        .map(|range| format!("SUM({})", range_condition(range)))
        .collect();
    let answer = mariadb(
        &url,
        &format!("SELECT COUNT(*), {} FROM {table}", sums.join(", ")),
    );
    let numbers: Vec<u64> = answer
        .split(|c: char| c == '|' || c.is_whitespace())
        .filter(|field| !field.is_empty())
        .map(|field| {
            field
                .parse()
                .unwrap_or_else(|_| panic!("a count: {answer:?}"))
        })
        .collect();
    assert_even_exact_cover(&numbers[1..], numbers[0], &ranges);
}
