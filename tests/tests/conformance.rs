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
