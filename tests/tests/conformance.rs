//! The connector conformance suite (`ferry_connectors::conformance`) against real
//! databases.

use std::collections::HashMap;

use ferry_connectors::conformance::{
    check_failed_write_commits_nothing, check_overwrite_is_idempotent_and_fenced,
    check_split_covers_table,
};
use ferry_model::schema::TableName;
use ferry_tests::write_spec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let connection = rusqlite::Connection::open(dir.path().join("source.db")).expect("source");
    connection
        .execute_batch(
            "CREATE TABLE t (a TEXT, b INTEGER, v BLOB, PRIMARY KEY (a, b));
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO t SELECT CASE WHEN i % 97 = 0 THEN NULL ELSE 'k' || (i % 50) END, i, randomblob(i % 9) FROM n;",
        )
        .expect("fill");
    let spec = write_spec(
        dir.path(),
        "name: c\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: sqlite, path: target.db }\ntables: { include: [t] }\n",
    );
    let spec = ferry_ctl::local::load_spec(&spec, &HashMap::new()).expect("spec");
    let (source, sink) = ferry_tests::open_connectors(&spec).await;
    let table = source
        .describe_table(&TableName::bare("t"))
        .await
        .expect("describe");
    check_split_covers_table(source.as_ref(), &table, 1500).await;
    check_overwrite_is_idempotent_and_fenced(source.as_ref(), sink.as_ref(), &table, "run-a").await;
    check_failed_write_commits_nothing(source.as_ref(), sink.as_ref(), &table, "run-a").await;
}

/// ClickHouse has no unique key, so the split check (which cuts on a primary key) does
/// not apply; the overwrite, fence and failure rules do, on the Arrow path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_conforms() {
    let url = ferry_tests::env_url("FERRY_TEST_CLICKHOUSE_URL");
    let suffix = ferry_tests::unique_suffix();
    let (src, dst) = (format!("confsrc_{suffix}"), format!("confdst_{suffix}"));
    let client = |sql: &str| {
        let mut command = std::process::Command::new("clickhouse-client");
        let port = ferry_tests::clickhouse_native_port(&url).to_string();
        command.args(["--port", &port, "--multiquery", "--query", sql]);
        ferry_tests::run_shell(command, "")
    };
    client(&format!(
        "CREATE DATABASE {src}; CREATE DATABASE {dst};
         CREATE TABLE {src}.t (a String, b Int64, v Nullable(Float64)) ENGINE = MergeTree
           PARTITION BY b % 3 ORDER BY (a, b);
         INSERT INTO {src}.t SELECT concat('k', toString(number % 50)), number, if(number % 9 = 0, NULL, number / 3)
           FROM system.numbers LIMIT 20000;"
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let env = HashMap::from([
        ("SRC".to_string(), ferry_tests::with_database(&url, &src)),
        ("DST".to_string(), ferry_tests::with_database(&url, &dst)),
    ]);
    let spec = write_spec(
        dir.path(),
        "name: c\nsource: { kind: clickhouse, url_env: SRC }\ntarget: { kind: clickhouse, url_env: DST }\ntables: { include: [t] }\n",
    );
    let spec = ferry_ctl::local::load_spec(&spec, &env).expect("spec");
    let (source, sink) = ferry_tests::open_connectors(&spec).await;
    let table = source
        .describe_table(&TableName::bare("t"))
        .await
        .expect("describe");
    check_overwrite_is_idempotent_and_fenced(source.as_ref(), sink.as_ref(), &table, "run-a").await;
    check_failed_write_commits_nothing(source.as_ref(), sink.as_ref(), &table, "run-a").await;
    client(&format!("DROP DATABASE {src}; DROP DATABASE {dst}"));
}
