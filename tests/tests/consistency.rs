//! `consistency: chunk | job_snapshot` (issue 12): with `job_snapshot` a PostgreSQL
//! source is read at one point in time, however long the job runs and whatever is
//! written meanwhile; with `chunk` (the default) each chunk is read when its turn comes,
//! so rows changed before a chunk is read are copied as changed. Each job is run by the
//! `ferryctl` binary (`ferryctl local`), slowed by a rows/s throttle, while `psql`
//! inserts, updates and deletes rows of the range the job has not read yet; the target
//! is then compared with `psql` against the source as it was when the job started (a
//! copy taken before it) and as it is now. The same on a cluster (coordinators and a
//! worker as processes over etcd), where a leader failover ends the snapshot's holder
//! and the job fails naming the fix; a killed `ferryctl local` likewise; and the
//! connector itself: a snapshot read leaves no transaction on its pooled connection.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_tests::cluster::{binary, wait_leading};
use ferry_tests::{PgPair, env_url, psql, wait_until, write_spec};

/// Rows of the table: ids 2, 4, …, 2 × ROWS (odd ids are free for inserts).
const ROWS: u64 = 4000;
/// The writes all touch ids past this one: the last quarter of the table's chunks.
const CHANGED_FROM: u64 = 6000;

fn spec_yaml(consistency: &str) -> String {
    format!(
        "name: snapjob\n\
         source: {{ kind: postgres, url_env: CSRC }}\n\
         target: {{ kind: postgres, url_env: CDST }}\n\
         tables: {{ include: [public.items] }}\n\
         chunking: {{ target_rows: 400 }}\n\
         consistency: {consistency}\n\
         throttle: {{ default_concurrency: 1, rate: {{ rows_per_sec: 1000 }} }}\n"
    )
}

/// Creates the source table (and its copy `items_at_start`, the source as it is before
/// the job starts) and the same table, empty, in the target (so its rows can be counted
/// from the first moment).
fn make_tables(pair: &PgPair) {
    let ddl = "CREATE TABLE items (id bigint PRIMARY KEY, v text NOT NULL, n int NOT NULL);";
    psql(
        &pair.source(),
        &format!(
            "{ddl}
             INSERT INTO items SELECT 2 * g, 'v' || g, g FROM generate_series(1, {ROWS}) g;
             CREATE TABLE items_at_start AS SELECT * FROM items;"
        ),
    );
    psql(&pair.target(), ddl);
}

/// Inserts, updates and deletes rows past [`CHANGED_FROM`] at the source.
fn write_changes(source: &str) {
    psql(
        source,
        &format!(
            "INSERT INTO items SELECT g, 'inserted ' || g, -1
                 FROM generate_series({first_odd}, {first_odd} + 38, 2) g;
             UPDATE items SET v = 'updated', n = n + 1000 WHERE id BETWEEN {from} AND {from} + 100;
             DELETE FROM items WHERE id BETWEEN 7002 AND 7040;",
            first_odd = CHANGED_FROM + 1,
            from = CHANGED_FROM + 2,
        ),
    );
}

fn rows_of(url: &str, table: &str) -> String {
    psql(url, &format!("SELECT id, v, n FROM {table} ORDER BY id"))
}

fn count(url: &str, sql: &str) -> u64 {
    psql(url, sql).parse().expect("a count")
}

struct Run {
    env: HashMap<String, String>,
    spec: String,
    state: String,
    _dir: tempfile::TempDir,
}

impl Run {
    fn new(pair: &PgPair, consistency: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = write_spec(dir.path(), &spec_yaml(consistency));
        Self {
            env: HashMap::from([
                ("CSRC".to_owned(), pair.source()),
                ("CDST".to_owned(), pair.target()),
            ]),
            spec: spec.display().to_string(),
            state: dir.path().join("state.db").display().to_string(),
            _dir: dir,
        }
    }

    fn set_consistency(&self, consistency: &str) {
        std::fs::write(&self.spec, spec_yaml(consistency)).expect("spec");
    }

    fn start(&self) -> Child {
        Command::new(binary("ferryctl"))
            .args(["local", &self.spec, "--state", &self.state])
            .envs(&self.env)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferryctl local")
    }
}

fn finish(child: Child) -> (i32, String) {
    let output = child.wait_with_output().expect("ferryctl ends");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Starts the job, waits until it has copied its first chunk, then writes the changes
/// and checks that the job has not read the changed range yet; returns the running job.
async fn start_then_change(pair: &PgPair, run: &Run) -> Child {
    let child = run.start();
    let target = pair.target();
    wait_until(Duration::from_secs(60), || {
        count(&target, "SELECT count(*) FROM items") > 0
    })
    .await
    .expect("the job copies its first chunk");
    write_changes(&pair.source());
    assert_eq!(
        count(
            &target,
            &format!("SELECT count(*) FROM items WHERE id > {CHANGED_FROM}")
        ),
        0,
        "the changes were written before the job read their range (else this test \
         shows nothing: slow the job down)"
    );
    child
}

/// The source's rows in three states after a job of `consistency` ran while the source
/// changed: as the job started, as they are now, and as copied into the target.
struct Outcome {
    at_start: String,
    now: String,
    copied: String,
}

async fn copy_while_changing(tag: &str, consistency: &str) -> Outcome {
    let pair = PgPair::new(tag);
    make_tables(&pair);
    let run = Run::new(&pair, consistency);
    let child = start_then_change(&pair, &run).await;
    let (code, output) = finish(child);
    assert_eq!(code, 0, "the job succeeds\n{output}");
    let outcome = Outcome {
        at_start: rows_of(&pair.source(), "items_at_start"),
        now: rows_of(&pair.source(), "items"),
        copied: rows_of(&pair.target(), "items"),
    };
    assert_ne!(
        outcome.at_start, outcome.now,
        "the source changed while the job ran"
    );
    outcome
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_snapshot_copies_the_source_as_it_was_when_the_job_started() {
    let outcome = copy_while_changing("cs", "job_snapshot").await;
    assert_eq!(
        outcome.copied, outcome.at_start,
        "the target holds the source as of the job's start, not the later changes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chunk_consistency_copies_rows_changed_before_their_chunk_is_read() {
    let outcome = copy_while_changing("cc", "chunk").await;
    assert_ne!(
        outcome.copied, outcome.at_start,
        "the later changes were copied"
    );
    assert_eq!(
        outcome.copied, outcome.now,
        "every change was in a chunk read after it was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_snapshot_job_killed_midway_is_refused_on_resume_with_the_fix() {
    let pair = PgPair::new("ck");
    make_tables(&pair);
    let run = Run::new(&pair, "job_snapshot");
    let mut child = run.start();
    let target = pair.target();
    wait_until(Duration::from_secs(60), || {
        count(&target, "SELECT count(*) FROM items") > 0
    })
    .await
    .expect("the job copies its first chunk");
    child.kill().expect("kill ferryctl local");
    let _ = child.wait();
    assert!(
        count(&target, "SELECT count(*) FROM items") < ROWS,
        "killed before the end"
    );

    // The snapshot died with the process: the rest cannot be read at the same point.
    let (code, output) = finish(run.start());
    assert_eq!(code, 3, "a resumed job_snapshot job is refused\n{output}");
    assert!(
        output.contains("consistency: job_snapshot")
            && output.contains("Start the job over")
            && output.contains("consistency: chunk"),
        "the refusal names the fixes\n{output}"
    );

    // One fix: finish the remaining chunks at their own time.
    run.set_consistency("chunk");
    let (code, output) = finish(run.start());
    assert_eq!(code, 0, "resumed with consistency: chunk\n{output}");
    assert_eq!(
        rows_of(&pair.target(), "items"),
        rows_of(&pair.source(), "items")
    );
}

/// Rows of a chunk read's stream.
async fn rows_read(stream: ferry_connectors::BatchStream) -> usize {
    use futures::StreamExt;
    let batches: Vec<_> = stream.collect().await;
    batches
        .into_iter()
        .map(|batch| batch.expect("a batch").num_rows())
        .sum()
}

/// The PostgreSQL connector itself: a read in the exported snapshot does not see a row
/// inserted after the export, its pooled connection goes back idle (not inside the
/// snapshot's transaction: the next read on it sees the new row), and once the holder
/// is dropped a read in that snapshot fails with the error naming the fix.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_read_sees_the_export_point_and_leaves_no_transaction_in_the_pool() {
    use ferry_model::key::{ChunkRange, SplitKey};
    let pair = PgPair::new("cp");
    make_tables(&pair);
    let env = HashMap::from([
        ("CSRC".to_owned(), pair.source()),
        ("CDST".to_owned(), pair.target()),
    ]);
    let spec =
        ferry_connectors::parse_spec(&spec_yaml("job_snapshot"), std::path::Path::new("."), &env)
            .expect("valid spec");
    let source = ferry_connectors::open_source(&spec.source)
        .await
        .expect("open the source");
    let name = source
        .list_tables()
        .await
        .expect("tables")
        .into_iter()
        .find(|table| table.name == "items")
        .expect("items");
    let table = source.describe_table(&name).await.expect("describe");
    let key = SplitKey::Columns {
        names: vec!["id".into()],
        nullable: false,
        single_integer: true,
    };
    let every_row = ChunkRange::Interval {
        lower: None,
        upper: None,
    };
    let in_transaction = || {
        count(
            &pair.server,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
                 AND state = 'idle in transaction'",
                pair.source_db
            ),
        )
    };

    let snapshot = source.export_snapshot().await.expect("export a snapshot");
    assert_eq!(in_transaction(), 1, "the holder's transaction is open");
    psql(
        &pair.source(),
        "INSERT INTO items VALUES (1, 'after the export', 0)",
    );
    let in_snapshot = source.in_snapshot(&snapshot.id).expect("a snapshot reader");
    let seen = rows_read(
        in_snapshot
            .read_chunk(&table, &key, &every_row)
            .await
            .expect("read in the snapshot"),
    )
    .await;
    assert_eq!(
        seen as u64, ROWS,
        "the row inserted after the export is not seen"
    );
    assert_eq!(
        in_transaction(),
        1,
        "only the holder: the read's pooled connection went back without its transaction"
    );
    let seen_now = rows_read(
        source
            .read_chunk(&table, &key, &every_row)
            .await
            .expect("read outside the snapshot"),
    )
    .await;
    assert_eq!(seen_now as u64, ROWS + 1, "a plain read sees the new row");

    drop(snapshot);
    wait_until(Duration::from_secs(10), || in_transaction() == 0)
        .await
        .expect("dropping the snapshot ends its transaction");
    let Err(error) = in_snapshot.read_chunk(&table, &key, &every_row).await else {
        panic!("a read in a snapshot whose holder ended must fail");
    };
    let message = error.to_string();
    assert!(
        message.contains("is gone") && message.contains("consistency: chunk"),
        "{message}"
    );
    assert_eq!(error.kind(), ferry_connectors::ErrorKind::Permanent);
}

#[test]
fn job_snapshot_on_a_mysql_source_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write_spec(
        dir.path(),
        "name: mysnap\n\
         source: { kind: mysql, url_env: MSRC }\n\
         target: { kind: postgres, url_env: MDST }\n\
         tables: { include: [items] }\n\
         consistency: job_snapshot\n",
    );
    let output = Command::new(binary("ferryctl"))
        .args(["local", &spec.display().to_string()])
        .env("MSRC", env_url("FERRY_TEST_MYSQL_URL"))
        .env("MDST", env_url("FERRY_TEST_PG_URL"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run ferryctl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "invalid input\n{stderr}");
    assert!(
        stderr.contains("consistency")
            && stderr.contains("job_snapshot needs a PostgreSQL source")
            && stderr.contains("source.kind is mysql"),
        "{stderr}"
    );
}

/// A cluster (coordinators and a worker as processes over etcd): the leader holds the
/// snapshot and its id reaches the worker through etcd; the copy is the source as of the
/// job's start although rows changed while it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_leader_holds_the_snapshot_and_workers_read_in_it() {
    use ferry_tests::cluster::{Cluster, assert_done, submit, wait_copying_on, wait_done};
    let mut cluster = Cluster::new(&[("orders", 20_000)]);
    psql(
        &cluster.source_url(),
        "CREATE TABLE orders_at_start AS SELECT * FROM orders",
    );
    let (leader, metrics) = cluster.start_coordinator_metered("coord-s1", &[]);
    wait_leading(&metrics, Duration::from_secs(20)).await;
    cluster.start_worker("w1", 1);
    let job = "snap-cluster";
    let spec = format!(
        "{}consistency: job_snapshot\n",
        cluster.spec(job, 2_000, 8_000, 1)
    );
    submit(&leader, &spec).await;
    wait_copying_on(&leader, job, "w1").await;
    psql(
        &cluster.source_url(),
        "UPDATE orders SET note = 'changed' WHERE id > 15000;
         DELETE FROM orders WHERE id BETWEEN 19000 AND 19100;",
    );
    assert_eq!(
        count(
            &cluster.target_url(),
            "SELECT count(*) FROM orders WHERE id > 15000"
        ),
        0,
        "the changes were written before the job read their range"
    );
    let status = wait_done(&leader, job, Duration::from_secs(120)).await;
    assert_done(&status);
    let rows = |url: &str, table: &str| psql(url, &format!("SELECT * FROM {table} ORDER BY id"));
    let at_start = rows(&cluster.source_url(), "orders_at_start");
    assert_ne!(at_start, rows(&cluster.source_url(), "orders"));
    assert_eq!(
        rows(&cluster.target_url(), "orders"),
        at_start,
        "the worker read every chunk in the leader's snapshot"
    );
}

/// A leader failover ends the snapshot's holder: the new leader refuses to go on at
/// another point in time, and the job FAILS naming the fixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_failover_fails_a_job_snapshot_job_naming_the_fix() {
    use ferry_tests::cluster::{Cluster, submit, wait_copying_on, wait_done};
    let mut cluster = Cluster::new(&[("orders", 20_000)]);
    let (leader, leader_metrics) = cluster.start_coordinator_metered("coord-f1", &[]);
    wait_leading(&leader_metrics, Duration::from_secs(20)).await;
    let (standby, standby_metrics) = cluster.start_coordinator_metered("coord-f2", &[]);
    cluster.start_worker("w1", 1);
    let job = "snap-failover";
    let spec = format!(
        "{}consistency: job_snapshot\n",
        cluster.spec(job, 2_000, 4_000, 1)
    );
    submit(&leader, &spec).await;
    wait_copying_on(&leader, job, "w1").await;
    cluster.signal("coord-f1", "KILL");
    wait_leading(&standby_metrics, Duration::from_secs(20)).await;
    let status = wait_done(&standby, job, Duration::from_secs(60)).await;
    assert_eq!(
        ferry_proto::v1::JobState::try_from(status.state),
        Ok(ferry_proto::v1::JobState::Failed),
        "{status:?}"
    );
    // The job's reason (the Control API's ListJobs) names the fix.
    let jobs = ferry_tests::cluster::client(&standby)
        .await
        .list_jobs(ferry_proto::v1::ListJobsRequest {})
        .await
        .expect("list the jobs")
        .into_inner()
        .jobs;
    let reason = jobs
        .iter()
        .find(|summary| summary.job_id == job)
        .map(|summary| summary.reason.clone())
        .unwrap_or_default();
    assert!(
        reason.contains("consistency: job_snapshot") && reason.contains("Start the job over"),
        "the new leader names the fix: {reason:?}"
    );
}
