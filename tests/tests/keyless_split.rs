//! PostgreSQL → PostgreSQL, MariaDB → MariaDB and PostgreSQL ↔ MariaDB tables without a
//! primary key, cut into hash buckets of a column (`tables.split`), against the real
//! servers of `scripts/services.sh`: the table is copied in one chunk per bucket, and
//! re-copying one chunk rewrites exactly the rows of its bucket in the target: nothing
//! doubled, nothing lost, the other buckets left alone. Rows are compared with the
//! engines' own shells (`psql`, `mariadb`: counts and every row's text or md5 as
//! multisets, duplicates included: a keyless table may hold identical rows).

use std::collections::HashMap;

use ferry_coordination::ChunkState;
use ferry_tests::{
    Fault, env_url, mariadb, psql, run_local_with_env, unique_suffix, with_database, write_spec,
};
use tokio_util::sync::CancellationToken;

const BUCKETS: u32 = 8;
const ROWS: u64 = 20_000;

fn server_url() -> String {
    env_url("FERRY_TEST_PG_URL")
}

/// The bucket of a row, computed by the test as the documented formula, not by ferry.
fn bucket_of(column: &str) -> String {
    format!(
        "((hashtextextended(coalesce({column}::text, ''), 0) % {BUCKETS} + {BUCKETS}) % {BUCKETS})"
    )
}

/// The multiset of a table's rows (md5 of each row's text), sorted.
fn rows_of(url: &str, table: &str) -> Vec<String> {
    psql(
        url,
        &format!("SELECT md5(t::text) FROM {table} AS t ORDER BY 1"),
    )
    .lines()
    .map(String::from)
    .collect()
}

/// Rows only in `left` and only in `right`, duplicates counted (EXCEPT ALL both ways).
fn multiset_difference(left: &[String], right: &[String]) -> (Vec<String>, Vec<String>) {
    let mut right_rest: HashMap<&str, i64> = HashMap::new();
    for row in right {
        *right_rest.entry(row.as_str()).or_default() += 1;
    }
    let mut left_only = Vec::new();
    for row in left {
        match right_rest.get_mut(row.as_str()) {
            Some(count) if *count > 0 => *count -= 1,
            _ => left_only.push(row.clone()),
        }
    }
    let right_only = right_rest
        .into_iter()
        .flat_map(|(row, count)| std::iter::repeat_n(row.to_string(), count.max(0) as usize))
        .collect();
    (left_only, right_only)
}

/// A job copying `table` from the URL in `SRC` to the one in `DST`, cut into [`BUCKETS`]
/// buckets of `column` (`tables.split`), and the environment holding the two URLs.
fn bucket_job(
    dir: &std::path::Path,
    name: &str,
    (source_kind, source_url): (&str, &str),
    (target_kind, target_url): (&str, &str),
    table: &str,
    column: &str,
) -> (std::path::PathBuf, HashMap<String, String>) {
    let spec_path = write_spec(
        dir,
        &format!(
            "name: {name}\nsource: {{ kind: {source_kind}, url_env: SRC }}\n\
             target: {{ kind: {target_kind}, url_env: DST }}\n\
             tables:\n  include: [\"{table}\"]\n  split: {{ \"{table}\": {{ column: {column}, buckets: {BUCKETS} }} }}\n\
             chunking: {{ target_rows: 1000 }}\n"
        ),
    );
    let env = HashMap::from([
        ("SRC".to_string(), source_url.to_string()),
        ("DST".to_string(), target_url.to_string()),
    ]);
    (spec_path, env)
}

/// In MariaDB table `logs`: loses, doubles and changes rows of bucket 3, and adds a
/// `marker` row to bucket 5 (`in_bucket(b)`: the condition of bucket `b`).
fn damage_mariadb_bucket_3(target_url: &str, in_bucket: impl Fn(u32) -> String) {
    mariadb(
        target_url,
        &format!(
            "DELETE FROM logs WHERE {b3} LIMIT 5;
             CREATE TEMPORARY TABLE doubled AS SELECT * FROM logs WHERE {b3} LIMIT 4;
             INSERT INTO logs SELECT * FROM doubled;
             UPDATE logs SET kind = 'corrupt' WHERE {b3} LIMIT 1;
             CREATE TEMPORARY TABLE marker AS SELECT id, 'marker' AS kind, note FROM logs WHERE {b5} LIMIT 1;
             INSERT INTO logs SELECT * FROM marker;",
            b3 = in_bucket(3),
            b5 = in_bucket(5),
        ),
    );
}

/// Rows per bucket `0..BUCKETS` of PostgreSQL `table`, `bucket` the bucket's expression,
/// counted by psql (the test's own formula, not ferry's).
fn pg_bucket_counts(url: &str, table: &str, bucket: &str) -> Vec<u64> {
    psql(
        url,
        &format!(
            "SELECT count(kind) FROM generate_series(0, {}) AS b LEFT JOIN {table} ON {bucket} = b \
             GROUP BY b ORDER BY b",
            BUCKETS - 1
        ),
    )
    .lines()
    .map(|line| line.parse().expect("a count"))
    .collect()
}

/// [`pg_bucket_counts`] of MariaDB table `logs`, counted by the mariadb shell.
fn my_bucket_counts(url: &str, bucket: &str) -> Vec<u64> {
    mariadb(
        url,
        &format!(
            "SELECT COUNT(logs.kind) FROM seq_0_to_{} AS b LEFT JOIN logs ON {bucket} = b.seq \
             GROUP BY b.seq ORDER BY b.seq",
            BUCKETS - 1
        ),
    )
    .lines()
    .map(|line| line.trim().parse().expect("a count"))
    .collect()
}

/// Runs the job to its end (3 workers): one VERIFIED chunk per bucket, no warning.
/// Returns the rows each chunk copied, in chunk order.
async fn copy_in_buckets(
    spec_path: &std::path::Path,
    state: &std::path::Path,
    env: &HashMap<String, String>,
) -> Vec<u64> {
    let (prepared, outcome, _) =
        run_local_with_env(spec_path, state, 3, vec![], CancellationToken::new(), env).await;
    assert!(!outcome.interrupted);
    assert!(
        prepared.job.tables[0].warnings.is_empty(),
        "{:?}",
        prepared.job.tables[0].warnings
    );
    assert_eq!(
        outcome.chunks.len(),
        BUCKETS as usize,
        "one chunk per bucket"
    );
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
    }
    outcome.chunks.iter().map(|chunk| chunk.rows).collect()
}

/// Re-copies chunk 3 only, as `ferryctl recopy` does (the chunk back to PLANNED, copied
/// again with overwrite): only it is written, every chunk ends VERIFIED.
async fn recopy_bucket_3(
    spec_path: &std::path::Path,
    state: &std::path::Path,
    env: &HashMap<String, String>,
    faults: Vec<Fault>,
) {
    ferry_tests::sqlite3(state, "UPDATE chunks SET state = 'PLANNED' WHERE chunk = 3");
    let (_, again, again_sink) =
        run_local_with_env(spec_path, state, 2, faults, CancellationToken::new(), env).await;
    assert_eq!(
        again_sink.committed_writes(),
        1,
        "only chunk 3 was copied again"
    );
    for chunk in &again.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
    }
}

struct Cleanup {
    url: String,
    schema: Option<String>,
    target_database: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(schema) = &self.schema {
            let _ = std::process::Command::new("psql")
                .args(["-X", "-q", "-d", &self.url, "-c"])
                .arg(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .output();
        }
        if let Some(database) = &self.target_database {
            let _ = std::process::Command::new("psql")
                .args(["-X", "-q", "-d", &self.url, "-c"])
                .arg(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_table_is_split_by_hash_buckets_and_a_recopied_bucket_doubles_and_loses_nothing() {
    let url = server_url();
    let suffix = unique_suffix();
    let schema = format!("scale_ks_{suffix}");
    let target_database = format!("scale_ks_dst_{suffix}");
    let _cleanup = Cleanup {
        url: url.clone(),
        schema: Some(schema.clone()),
        target_database: Some(target_database.clone()),
    };
    let table = format!("{schema}.logs");
    // No key; duplicate rows (ids repeat, some rows exactly), NULL ids, text payloads.
    psql(
        &url,
        &format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {table} (id bigint, kind text, note text);
             INSERT INTO {table}
                 SELECT CASE WHEN i % 97 = 0 THEN NULL ELSE i % 15000 END,
                        'k' || (i % 7), CASE WHEN i % 5 = 0 THEN 'same' ELSE 'n' || i END
                 FROM generate_series(1, {ROWS}) AS i;
             INSERT INTO {table} VALUES (1, 'k1', 'same'), (1, 'k1', 'same');
             CREATE DATABASE {target_database};"
        ),
    );
    let source_rows = rows_of(&url, &table);
    assert_eq!(source_rows.len() as u64, ROWS + 2);
    let target_url = with_database(&url, &target_database);
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec_path, env) = bucket_job(
        dir.path(),
        "keyless",
        ("postgres", &url),
        ("postgres", &target_url),
        &table,
        "id",
    );
    let state = dir.path().join("state.db");
    let copied = copy_in_buckets(&spec_path, &state, &env).await;
    // Each chunk copied exactly its bucket's rows, as psql counts them.
    let per_bucket = pg_bucket_counts(&url, &table, &bucket_of("id"));
    assert_eq!(copied, per_bucket);
    let (source_only, target_only) =
        multiset_difference(&source_rows, &rows_of(&target_url, &table));
    assert_eq!((source_only.len(), target_only.len()), (0, 0));

    // Damage bucket 3 in the target (rows lost, rows doubled, a row changed) and mark
    // bucket 5 with an extra row; then re-copy chunk 3 only (as `ferryctl recopy` does:
    // the chunk back to PLANNED, copied again with overwrite).
    let in_bucket = |bucket: u32| format!("{} = {bucket}", bucket_of("id"));
    psql(
        &target_url,
        &format!(
            "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {b3} LIMIT 5);
             INSERT INTO {table} SELECT * FROM {table} WHERE {b3} LIMIT 4;
             UPDATE {table} SET note = 'corrupt' WHERE ctid IN (SELECT ctid FROM {table} WHERE {b3} LIMIT 1);
             INSERT INTO {table} SELECT id, 'marker', 'bucket 5' FROM {table} WHERE {b5} LIMIT 1;",
            b3 = in_bucket(3),
            b5 = in_bucket(5),
        ),
    );
    recopy_bucket_3(&spec_path, &state, &env, vec![Fault::ArrowOnly]).await;
    // Bucket 3 holds the source's rows again; the marker in bucket 5 was not touched.
    let (source_only, target_only) =
        multiset_difference(&source_rows, &rows_of(&target_url, &table));
    assert!(source_only.is_empty(), "rows lost: {source_only:?}");
    let marker = psql(
        &target_url,
        &format!("SELECT md5(t::text) FROM {table} AS t WHERE kind = 'marker'"),
    );
    assert_eq!(
        target_only,
        vec![marker],
        "only the bucket-5 marker is extra"
    );
    assert_eq!(
        psql(&target_url, &format!("SELECT count(*) FROM {table}")),
        (ROWS + 3).to_string()
    );
}

fn mysql_server_url() -> String {
    env_url("FERRY_TEST_MYSQL_URL")
}

/// The MariaDB bucket of a row, computed by the test as the documented formula.
fn mysql_bucket_of(column: &str) -> String {
    format!("(CRC32(COALESCE(CONVERT({column} USING utf8mb4), '')) % {BUCKETS})")
}

/// The multiset of a MariaDB table's rows (md5 of each row's text, NULL marked), sorted.
fn mysql_rows_of(url: &str, table: &str) -> Vec<String> {
    mariadb(
        url,
        &format!(
            "SELECT MD5(CONCAT_WS('|', IFNULL(id, '<null>'), kind, IFNULL(note, '<null>'))) \
             FROM {table} ORDER BY 1"
        ),
    )
    .lines()
    .map(String::from)
    .collect()
}

struct MysqlCleanup {
    url: String,
    databases: Vec<String>,
}

impl Drop for MysqlCleanup {
    fn drop(&mut self) {
        for database in &self.databases {
            let _ = std::panic::catch_unwind(|| {
                mariadb(&self.url, &format!("DROP DATABASE IF EXISTS {database}"))
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_mariadb_table_is_split_by_hash_buckets_and_a_recopied_bucket_is_exact() {
    let url = mysql_server_url();
    let suffix = unique_suffix();
    let source_database = format!("ks_src_{suffix}");
    let target_database = format!("ks_dst_{suffix}");
    let _cleanup = MysqlCleanup {
        url: url.clone(),
        databases: vec![source_database.clone(), target_database.clone()],
    };
    // No key; duplicate rows (ids repeat, some rows exactly), NULL ids, text payloads
    // with characters outside latin1 in a utf8mb4 table.
    mariadb(
        &url,
        &format!(
            "CREATE DATABASE {source_database}; CREATE DATABASE {target_database};
             CREATE TABLE {source_database}.logs (id bigint, kind varchar(20) NOT NULL,
                 note text) DEFAULT CHARSET=utf8mb4;
             INSERT INTO {source_database}.logs
                 SELECT CASE WHEN seq % 97 = 0 THEN NULL ELSE seq % 15000 END,
                        CONCAT('k', seq % 7),
                        CASE WHEN seq % 5 = 0 THEN 'same' ELSE CONCAT('n', seq, '·ü✓') END
                 FROM seq_1_to_{ROWS};
             INSERT INTO {source_database}.logs VALUES (1, 'k1', 'same'), (1, 'k1', 'same');"
        ),
    );
    let source_url = with_database(&url, &source_database);
    let target_url = with_database(&url, &target_database);
    let source_rows = mysql_rows_of(&source_url, "logs");
    assert_eq!(source_rows.len() as u64, ROWS + 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec_path, env) = bucket_job(
        dir.path(),
        "keyless_my",
        ("mysql", &source_url),
        ("mysql", &target_url),
        "logs",
        "note",
    );
    let state = dir.path().join("state.db");
    let copied = copy_in_buckets(&spec_path, &state, &env).await;
    // Each chunk copied exactly its bucket's rows, as the mariadb shell counts them.
    let per_bucket = my_bucket_counts(&source_url, &mysql_bucket_of("note"));
    assert_eq!(copied, per_bucket);
    assert!(
        per_bucket.iter().all(|&rows| rows > 0),
        "every bucket holds rows: {per_bucket:?}"
    );
    let (source_only, target_only) =
        multiset_difference(&source_rows, &mysql_rows_of(&target_url, "logs"));
    assert_eq!((source_only.len(), target_only.len()), (0, 0));

    // Damage bucket 3 in the target (rows lost, rows doubled, a row changed) and mark
    // bucket 5 with an extra row; then re-copy chunk 3 only.
    let in_bucket = |bucket: u32| format!("{} = {bucket}", mysql_bucket_of("note"));
    damage_mariadb_bucket_3(&target_url, in_bucket);
    recopy_bucket_3(&spec_path, &state, &env, vec![Fault::ArrowOnly]).await;
    // Bucket 3 holds the source's rows again; the marker in bucket 5 was not touched.
    let (source_only, target_only) =
        multiset_difference(&source_rows, &mysql_rows_of(&target_url, "logs"));
    assert!(source_only.is_empty(), "rows lost: {source_only:?}");
    let marker = mariadb(
        &target_url,
        "SELECT MD5(CONCAT_WS('|', IFNULL(id, '<null>'), kind, IFNULL(note, '<null>'))) \
         FROM logs WHERE kind = 'marker'",
    );
    assert_eq!(
        target_only,
        vec![marker.trim().to_string()],
        "only the bucket-5 marker is extra"
    );
    assert_eq!(
        mariadb(&target_url, "SELECT COUNT(*) FROM logs").trim(),
        (ROWS + 3).to_string()
    );
}

/// A row as text both shells print alike (ASCII only), NULL marked.
const PG_ROW_TEXT: &str =
    "coalesce(id::text, '<null>') || '|' || kind || '|' || coalesce(note, '<null>')";
const MY_ROW_TEXT: &str = "CONCAT_WS('|', IFNULL(id, '<null>'), kind, IFNULL(note, '<null>'))";

/// Between two engines a bucket is the integer column modulo the buckets, which both
/// compute alike (negative values and NULL included): PostgreSQL → MariaDB, one chunk per
/// bucket, and a re-copied bucket deletes in MariaDB exactly the rows PostgreSQL reads
/// for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_postgres_table_goes_to_mariadb_in_modulo_buckets_and_a_recopy_is_exact() {
    let pg_url = server_url();
    let my_url = mysql_server_url();
    let suffix = unique_suffix();
    let schema = format!("scale_km_{suffix}");
    let target_database = format!("km_dst_{suffix}");
    let _cleanup = Cleanup {
        url: pg_url.clone(),
        schema: Some(schema.clone()),
        target_database: None,
    };
    let _my_cleanup = MysqlCleanup {
        url: my_url.clone(),
        databases: vec![target_database.clone()],
    };
    let table = format!("{schema}.logs");
    psql(
        &pg_url,
        &format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {table} (id bigint, kind text NOT NULL, note text);
             INSERT INTO {table}
                 SELECT CASE WHEN i % 97 = 0 THEN NULL ELSE i % 15000 - 7000 END,
                        'k' || (i % 7), CASE WHEN i % 5 = 0 THEN 'same' ELSE 'n' || i END
                 FROM generate_series(1, {ROWS}) AS i;
             INSERT INTO {table} VALUES (-1, 'k1', 'same'), (-1, 'k1', 'same');"
        ),
    );
    mariadb(&my_url, &format!("CREATE DATABASE {target_database}"));
    let target_url = with_database(&my_url, &target_database);
    let source_rows: Vec<String> = psql(&pg_url, &format!("SELECT {PG_ROW_TEXT} FROM {table}"))
        .lines()
        .map(String::from)
        .collect();
    let target_rows = || -> Vec<String> {
        mariadb(&target_url, &format!("SELECT {MY_ROW_TEXT} FROM logs"))
            .lines()
            .map(String::from)
            .collect()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec_path, env) = bucket_job(
        dir.path(),
        "keyless_x",
        ("postgres", &pg_url),
        ("mysql", &target_url),
        &table,
        "id",
    );
    let state = dir.path().join("state.db");
    let copied = copy_in_buckets(&spec_path, &state, &env).await;
    // Each chunk copied exactly its bucket's rows, counted by psql with the formula.
    let pg_bucket = format!("((coalesce(id, 0) % {BUCKETS} + {BUCKETS}) % {BUCKETS})");
    let per_bucket = pg_bucket_counts(&pg_url, &table, &pg_bucket);
    assert_eq!(copied, per_bucket);
    let (source_only, target_only) = multiset_difference(&source_rows, &target_rows());
    assert_eq!((source_only.len(), target_only.len()), (0, 0));

    // Damage bucket 3 in MariaDB, mark bucket 5, re-copy chunk 3 only.
    let my_bucket =
        |bucket: u32| format!("((COALESCE(id, 0) % {BUCKETS} + {BUCKETS}) % {BUCKETS}) = {bucket}");
    damage_mariadb_bucket_3(&target_url, my_bucket);
    recopy_bucket_3(&spec_path, &state, &env, vec![]).await;
    let (source_only, target_only) = multiset_difference(&source_rows, &target_rows());
    assert!(source_only.is_empty(), "rows lost: {source_only:?}");
    assert_eq!(
        target_only.len(),
        1,
        "only the marker is extra: {target_only:?}"
    );
    assert!(target_only[0].contains("|marker|"), "{target_only:?}");
}

/// The other way: MariaDB → PostgreSQL in modulo buckets of an integer column; the
/// re-copied bucket deletes in PostgreSQL exactly the rows MariaDB reads for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_mariadb_table_goes_to_postgres_in_modulo_buckets_and_a_recopy_is_exact() {
    let pg_url = server_url();
    let my_url = mysql_server_url();
    let suffix = unique_suffix();
    let source_database = format!("kmp_src_{suffix}");
    let target_database = format!("kmp_dst_{suffix}");
    let _cleanup = Cleanup {
        url: pg_url.clone(),
        schema: None,
        target_database: Some(target_database.clone()),
    };
    let _my_cleanup = MysqlCleanup {
        url: my_url.clone(),
        databases: vec![source_database.clone()],
    };
    mariadb(
        &my_url,
        &format!(
            "CREATE DATABASE {source_database};
             CREATE TABLE {source_database}.logs (id int, kind varchar(20) NOT NULL, note text);
             INSERT INTO {source_database}.logs
                 SELECT CASE WHEN seq % 97 = 0 THEN NULL ELSE CAST(seq % 15000 AS SIGNED) - 7000 END,
                        CONCAT('k', seq % 7), CASE WHEN seq % 5 = 0 THEN 'same' ELSE CONCAT('n', seq) END
                 FROM seq_1_to_{ROWS};
             INSERT INTO {source_database}.logs VALUES (-1, 'k1', 'same'), (-1, 'k1', 'same');"
        ),
    );
    psql(&pg_url, &format!("CREATE DATABASE {target_database}"));
    let source_url = with_database(&my_url, &source_database);
    let target_url = with_database(&pg_url, &target_database);
    let source_rows: Vec<String> = mariadb(&source_url, &format!("SELECT {MY_ROW_TEXT} FROM logs"))
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(source_rows.len() as u64, ROWS + 2);
    let target_rows = || -> Vec<String> {
        psql(
            &target_url,
            &format!("SELECT {PG_ROW_TEXT} FROM public.logs"),
        )
        .lines()
        .map(String::from)
        .collect()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec_path, env) = bucket_job(
        dir.path(),
        "keyless_y",
        ("mysql", &source_url),
        ("postgres", &target_url),
        "logs",
        "id",
    );
    let state = dir.path().join("state.db");
    let copied = copy_in_buckets(&spec_path, &state, &env).await;
    let my_bucket = format!("((COALESCE(id, 0) % {BUCKETS} + {BUCKETS}) % {BUCKETS})");
    let per_bucket = my_bucket_counts(&source_url, &my_bucket);
    assert_eq!(copied, per_bucket);
    let (source_only, target_only) = multiset_difference(&source_rows, &target_rows());
    assert_eq!((source_only.len(), target_only.len()), (0, 0));

    // Damage bucket 3 in PostgreSQL, mark bucket 5, re-copy chunk 3 only.
    let in_bucket =
        |bucket: u32| format!("((coalesce(id, 0) % {BUCKETS} + {BUCKETS}) % {BUCKETS}) = {bucket}");
    psql(
        &target_url,
        &format!(
            "DELETE FROM public.logs WHERE ctid IN (SELECT ctid FROM public.logs WHERE {b3} LIMIT 5);
             INSERT INTO public.logs SELECT * FROM public.logs WHERE {b3} LIMIT 4;
             UPDATE public.logs SET kind = 'corrupt' WHERE ctid IN (SELECT ctid FROM public.logs WHERE {b3} LIMIT 1);
             INSERT INTO public.logs SELECT id, 'marker', note FROM public.logs WHERE {b5} LIMIT 1;",
            b3 = in_bucket(3),
            b5 = in_bucket(5),
        ),
    );
    recopy_bucket_3(&spec_path, &state, &env, vec![]).await;
    let (source_only, target_only) = multiset_difference(&source_rows, &target_rows());
    assert!(source_only.is_empty(), "rows lost: {source_only:?}");
    assert_eq!(
        target_only.len(),
        1,
        "only the marker is extra: {target_only:?}"
    );
    assert!(target_only[0].contains("|marker|"), "{target_only:?}");
}
