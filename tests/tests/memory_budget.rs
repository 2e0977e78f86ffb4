//! The process's memory budget for rows in flight (`--memory-budget-mb`,
//! `ferry_model::memory`): with a budget of 16 MiB (the smallest), rows of 1–20 MB
//! (several bigger than the whole budget, which then travel alone) are copied by 8
//! workers PostgreSQL → PostgreSQL (the binary COPY passthrough) and PostgreSQL →
//! MariaDB (Arrow batches into `LOAD DATA`): every chunk verified, every value equal as
//! psql and the mariadb shell compute its md5, and every reserved byte given back at the
//! end (nothing leaks, nothing waits for ever).
//!
//! Each test file is its own process, so the budget set here applies to these tests only.

use std::collections::HashMap;

use ferry_coordination::ChunkState;
use ferry_model::memory;
use ferry_tests::{
    env_url, mariadb, psql, run_local_with_env, unique_suffix, with_database, write_spec,
};
use tokio_util::sync::CancellationToken;

const BUDGET: u64 = memory::MIN_BUDGET_BYTES;
const ROWS: u32 = 12;
const WORKERS: usize = 8;

/// Row `i` holds `size_mb(i)` MB: 1–20, four of them above the 16 MiB budget.
fn size_mb(row: u32) -> u32 {
    1 + (row * 7) % 20
}

/// The test's databases (and its source table in the server's test database), dropped
/// however the test ends.
struct Databases {
    pg_url: String,
    my_url: String,
    name: String,
}

impl Drop for Databases {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args(["-X", "-q", "-d", &self.pg_url, "-c"])
            .arg(format!("DROP TABLE IF EXISTS public.{}", self.name))
            .output();
        let _ = std::process::Command::new("psql")
            .args(["-X", "-q", "-d", &self.pg_url, "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.name))
            .output();
        let _ = std::panic::catch_unwind(|| {
            mariadb(
                &self.my_url,
                &format!("DROP DATABASE IF EXISTS {}", self.name),
            )
        });
    }
}

/// The source table in the test database (values `md5(row)` repeated to `size_mb` MB,
/// stored out of line uncompressed so that they are as big in memory as on disk).
fn create_source(url: &str, table: &str) {
    let rows: Vec<String> = (1..=ROWS)
        .map(|row| format!("({row}, repeat(md5('{row}'), {} * 32768))", size_mb(row)))
        .collect();
    psql(
        url,
        &format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (id bigint PRIMARY KEY, v text);
             ALTER TABLE {table} ALTER COLUMN v SET STORAGE EXTERNAL;
             INSERT INTO {table} VALUES {};",
            rows.join(", ")
        ),
    );
}

fn digests(lines: &str) -> Vec<String> {
    lines.lines().map(str::to_string).collect()
}

/// `id:length:md5` of every row, as psql computes them.
fn pg_digests(url: &str, table: &str) -> Vec<String> {
    digests(&psql(
        url,
        &format!("SELECT id || ':' || length(v) || ':' || md5(v) FROM {table} ORDER BY id"),
    ))
}

async fn copy(kind: &str, target_url: &str, source_url: &str, table: &str) {
    let env = HashMap::from([
        ("SRC".to_string(), source_url.to_string()),
        ("DST".to_string(), target_url.to_string()),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(
        dir.path(),
        &format!(
            "name: budget-{kind}\nsource: {{ kind: postgres, url_env: SRC }}\n\
             target: {{ kind: {kind}, url_env: DST }}\ntables: {{ include: [\"{table}\"] }}\n\
             chunking: {{ target_rows: 2 }}\nthrottle: {{ default_concurrency: {WORKERS} }}\n"
        ),
    );
    let (_, outcome, _) = run_local_with_env(
        &spec_path,
        &dir.path().join("state.db"),
        WORKERS,
        vec![],
        CancellationToken::new(),
        &env,
    )
    .await;
    assert!(!outcome.interrupted, "the job ended");
    assert!(outcome.chunks.len() >= 6, "{} chunks", outcome.chunks.len());
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
    }
    let budget = memory::process_budget();
    assert_eq!(budget.bytes(), BUDGET, "the budget this test set");
    assert_eq!(
        budget.available(),
        budget.bytes(),
        "every reservation was released when its batch was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_bigger_than_the_budget_are_copied_to_postgres_and_mariadb_and_the_budget_is_given_back()
 {
    // Set before any reader of this process reserves (the only test of this file).
    assert!(memory::configure(BUDGET), "no budget was set before");
    let server = env_url("FERRY_TEST_PG_URL");
    let my_server = env_url("FERRY_TEST_MYSQL_URL");
    let name = format!("budget_{}", unique_suffix());
    psql(&server, &format!("CREATE DATABASE {name}"));
    mariadb(&my_server, &format!("CREATE DATABASE {name}"));
    let databases = Databases {
        pg_url: server.clone(),
        my_url: my_server.clone(),
        name: name.clone(),
    };
    let source_url = server.clone();
    let source_table = format!("public.{name}");
    create_source(&source_url, &source_table);
    let source = pg_digests(&source_url, &source_table);
    assert_eq!(source.len(), ROWS as usize);

    let pg_target = with_database(&server, &name);
    copy("postgres", &pg_target, &source_url, &source_table).await;
    let copied = pg_digests(&pg_target, &source_table);
    assert_eq!(copied, source, "PostgreSQL target: every value equal");

    let my_target = with_database(&my_server, &name);
    copy("mysql", &my_target, &source_url, &source_table).await;
    let copied = digests(&mariadb(
        &my_target,
        &format!("SELECT CONCAT(id, ':', length(v), ':', md5(v)) FROM {name} ORDER BY id"),
    ));
    assert_eq!(copied, source, "MariaDB target: every value equal");
    drop(databases);
}
