//! Riding out database outages: the test PostgreSQL or MariaDB of `scripts/services.sh`
//! goes away mid-job and is started again (`services.sh kill|stop|start`); the job waits
//! instead of failing, and ends with every row copied exactly once. Data is checked with
//! the engines' own clients.
//!
//! A source is killed with SIGKILL. A target is stopped cleanly instead: the test servers
//! run with relaxed durability for speed (`innodb_flush_log_at_trx_commit=0`,
//! `synchronous_commit=off`), so a killed target loses its last commits, and no copier can
//! keep a commit the database itself threw away.
//!
//! The tests of this binary take turns (they stop the shared servers); cargo runs test
//! binaries one after another, so no other test sees the outage.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_coordination::ChunkState;
use ferry_coordinator::control::{JobControl, JobStateView};
use ferry_ctl::local::{LocalJob, LocalRunOptions, load_spec};
use ferry_tests::{env_url, mariadb, psql, sqlite3, unique_suffix, wait_until_async, write_spec};
use tokio_util::sync::CancellationToken;

/// One outage at a time.
static SERVERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long each outage lasts.
const OUTAGE: Duration = Duration::from_secs(4);

fn services(action: &str, service: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new("bash")
        .arg(root.join("scripts/services.sh"))
        .args([action, service])
        .status()
        .expect("run scripts/services.sh");
    assert!(status.success(), "services.sh {action} {service} failed");
}

/// Starts `service` again when dropped, so a failing test leaves the servers up.
struct Restart(&'static str);

impl Drop for Restart {
    fn drop(&mut self) {
        services("start", self.0);
    }
}

/// A PostgreSQL source table `{schema}.orders` of 20,000 rows in a fresh schema; returns
/// the server's URL and the schema.
fn postgres_source() -> (String, String) {
    let pg = env_url("FERRY_TEST_PG_URL");
    let schema = format!("outage_{}", unique_suffix());
    psql(
        &pg,
        &format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.orders (id bigint PRIMARY KEY, v text);
             INSERT INTO {schema}.orders SELECT i, 'value ' || i FROM generate_series(1, 20000) i;"
        ),
    );
    (pg, schema)
}

/// A SQLite source `source.db` in `dir` with a table `table` of 20,000 rows.
fn sqlite_source(dir: &Path, table: &str) {
    let connection = rusqlite::Connection::open(dir.join("source.db")).expect("source");
    connection
        .execute_batch(&format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT INTO {table} SELECT i, 'value ' || i FROM n;"
        ))
        .expect("fill");
}

/// Runs `spec` in process with two workers: calls `during` once `ready_chunks` chunks are
/// verified, then returns the outcome and whether the job reported waiting.
async fn run_with_outage(
    dir: &Path,
    spec: &str,
    env: &HashMap<String, String>,
    during: impl AsyncFnOnce(&ferry_coordinator::cluster::runtime::ClusterRuntime),
) -> ferry_coordinator::scheduler::RunOutcome {
    let spec = load_spec(&write_spec(dir, spec), env).expect("spec");
    let job = LocalJob::open(spec, &dir.join("state.db"))
        .await
        .expect("open");
    let prepared = job.prepare().await.expect("prepare");
    let mut local = job
        .start(
            &prepared,
            &LocalRunOptions::workers(2),
            CancellationToken::new(),
        )
        .await
        .expect("start");
    let mut events = local.take_events();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let runtime = local.runtime.clone();
    let run = tokio::spawn(local.finish());
    wait_until_async(Duration::from_secs(60), || async {
        runtime
            .job_status("outage")
            .await
            .is_ok_and(|status| status.chunks_verified >= 2)
    })
    .await
    .expect("two chunks verified before the outage");
    during(&runtime).await;
    tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the job ends")
        .expect("join")
        .expect("run")
}

/// Waits until the job says it waits for a database, naming `side`.
async fn wait_for_waiting(
    runtime: &ferry_coordinator::cluster::runtime::ClusterRuntime,
    side: &str,
) {
    wait_until_async(Duration::from_secs(30), || async {
        runtime
            .job_status("outage")
            .await
            .ok()
            .and_then(|status| status.waiting)
            .is_some_and(|waiting| waiting.contains(side))
    })
    .await
    .unwrap_or_else(|_| panic!("the job never said it waits for the {side}"));
}

/// Waits until the job no longer waits for a database; returns how long that took.
async fn wait_until_back(
    runtime: &ferry_coordinator::cluster::runtime::ClusterRuntime,
) -> Duration {
    let since = Instant::now();
    wait_until_async(Duration::from_secs(60), || async {
        runtime
            .job_status("outage")
            .await
            .is_ok_and(|status| status.waiting.is_none())
    })
    .await
    .expect("the job notices the database is back");
    since.elapsed()
}

/// Copies a SQLite table `table` of 20,000 rows to a `kind` target at `url` while
/// `service` (the target's server) is stopped cleanly for [`OUTAGE`] mid-job.
async fn copy_while_the_target_stops(
    kind: &str,
    url: &str,
    service: &'static str,
    table: &str,
) -> ferry_coordinator::scheduler::RunOutcome {
    let dir = tempfile::tempdir().expect("tempdir");
    sqlite_source(dir.path(), table);
    let env = HashMap::from([("DST".to_string(), url.to_string())]);
    // Chunks of 1,000 rows at 2,000 rows/s each (two at once): half a second a chunk.
    // Keyed from the start (`defer_key: false`): the outage falls while chunks copy and
    // verify one by one. With the key deferred, a PostgreSQL target's chunks are only
    // verified at the end, and an outage then is not reported as waiting (known gap).
    let spec = format!(
        "name: outage\nsource: {{ kind: sqlite, path: source.db }}\ntarget: {{ kind: {kind}, url_env: DST }}\n\
         tables: {{ include: [{table}] }}\nchunking: {{ target_rows: 1000, defer_key: false }}\n\
         throttle: {{ default_concurrency: 2, rate: {{ rows_per_sec: 4000 }} }}\n"
    );
    run_with_outage(dir.path(), &spec, &env, async |runtime| {
        let restart = Restart(service);
        services("stop", service);
        wait_for_waiting(runtime, "target database").await;
        tokio::time::sleep(OUTAGE).await;
        drop(restart);
    })
    .await
}

fn assert_exact_without_failures(outcome: &ferry_coordinator::scheduler::RunOutcome) {
    assert!(!outcome.interrupted);
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "{chunk:?}");
        assert_eq!(
            chunk.failures, 0,
            "the outage counted as a failure of chunk {}: {:?}",
            chunk.id, chunk.last_error
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_postgres_killed_mid_job_is_waited_for_and_the_copy_is_exact() {
    let _turn = SERVERS.lock().await;
    let (pg, schema) = postgres_source();
    let dir = tempfile::tempdir().expect("tempdir");
    let env = HashMap::from([("SRC".to_string(), pg.clone())]);
    let spec = format!(
        "name: outage\nsource: {{ kind: postgres, url_env: SRC }}\ntarget: {{ kind: sqlite, path: target.db }}\n\
         tables: {{ include: [\"{schema}.orders\"] }}\nchunking: {{ target_rows: 1000 }}\n\
         throttle: {{ default_concurrency: 2, rate: {{ rows_per_sec: 4000 }} }}\n"
    );
    let mut noticed_after = Duration::ZERO;
    let outcome = run_with_outage(dir.path(), &spec, &env, async |runtime| {
        let restart = Restart("pg");
        services("kill", "pg");
        wait_for_waiting(runtime, "source database").await;
        tokio::time::sleep(OUTAGE).await;
        drop(restart);
        noticed_after = wait_until_back(runtime).await;
    })
    .await;
    println!("source outage {OUTAGE:?}; noticed the source back after {noticed_after:?}");
    assert_exact_without_failures(&outcome);
    let target = dir.path().join("target.db");
    assert_eq!(
        sqlite3(
            &target,
            "SELECT count(*), count(DISTINCT id), sum(id) FROM orders"
        ),
        "20000|20000|200010000"
    );
    assert_eq!(
        psql(&pg, &format!("SELECT count(*) FROM {schema}.orders")),
        "20000",
        "the source is untouched"
    );
    psql(&pg, &format!("DROP SCHEMA {schema} CASCADE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_mariadb_stopped_mid_job_is_waited_for_and_the_copy_is_exact() {
    let _turn = SERVERS.lock().await;
    let my = env_url("FERRY_TEST_MYSQL_URL");
    let table = format!("outage_{}", unique_suffix());
    let outcome = copy_while_the_target_stops("mysql", &my, "mysql", &table).await;
    assert_exact_without_failures(&outcome);
    assert_eq!(
        mariadb(
            &my,
            &format!("SELECT count(*), count(DISTINCT id), sum(id) FROM {table}")
        )
        .trim(),
        "20000|20000|200010000"
    );
    mariadb(&my, &format!("DROP TABLE {table}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_outage_budget_the_job_pauses_and_an_operator_resumes_it() {
    let _turn = SERVERS.lock().await;
    let (pg, schema) = postgres_source();
    let dir = tempfile::tempdir().expect("tempdir");
    let env = HashMap::from([("SRC".to_string(), pg.clone())]);
    let spec = format!(
        "name: outage\nsource: {{ kind: postgres, url_env: SRC }}\ntarget: {{ kind: sqlite, path: target.db }}\n\
         tables: {{ include: [\"{schema}.orders\"] }}\nchunking: {{ target_rows: 1000 }}\n\
         resilience: {{ outage_timeout: 2s }}\n\
         throttle: {{ default_concurrency: 2, rate: {{ rows_per_sec: 4000 }} }}\n"
    );
    let outcome = run_with_outage(dir.path(), &spec, &env, async |runtime| {
        let restart = Restart("pg");
        services("kill", "pg");
        wait_until_async(Duration::from_secs(30), || async {
            runtime
                .job_status("outage")
                .await
                .is_ok_and(|status| status.state == JobStateView::Paused)
        })
        .await
        .expect("paused past the outage budget");
        let history = runtime.history("outage").await.expect("history");
        let last = history.last().expect("a change");
        assert_eq!(last.origin, "outage");
        assert!(
            last.summary.contains("outage budget of 2s used up")
                && last.summary.contains("source database"),
            "{}",
            last.summary
        );
        drop(restart);
        // The database is back, but the job stays paused until an operator resumes it.
        wait_until_back(runtime).await;
        let status = runtime.job_status("outage").await.expect("status");
        assert_eq!(status.state, JobStateView::Paused);
        runtime.resume("outage", "test").await.expect("resume");
    })
    .await;
    assert_exact_without_failures(&outcome);
    assert_eq!(
        sqlite3(
            &dir.path().join("target.db"),
            "SELECT count(*), count(DISTINCT id), sum(id) FROM orders"
        ),
        "20000|20000|200010000"
    );
    psql(&pg, &format!("DROP SCHEMA {schema} CASCADE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_switched_to_read_only_is_waited_for_until_it_takes_writes_again() {
    let _turn = SERVERS.lock().await;
    let pg = env_url("FERRY_TEST_PG_URL");
    let database = format!("outage_ro_{}", unique_suffix());
    psql(&pg, &format!("CREATE DATABASE {database}"));
    let target = ferry_tests::with_database(&pg, &database);
    let dir = tempfile::tempdir().expect("tempdir");
    sqlite_source(dir.path(), "orders");
    let env = HashMap::from([("DST".to_string(), target.clone())]);
    let spec = "name: outage\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: postgres, url_env: DST }\n\
                tables: { include: [orders] }\nchunking: { target_rows: 1000, defer_key: false }\n\
                throttle: { default_concurrency: 2, rate: { rows_per_sec: 1500 } }\n";
    let outcome = run_with_outage(dir.path(), spec, &env, async |runtime| {
        // A failover that brings back a standby: every new session is read-only. Pooled
        // connections serve up to 5 s (postgres/pool.rs MAX_AGE), so the copy must still
        // have more than that to go when the switch comes (20,000 rows at 1,500 rows/s).
        psql(
            &pg,
            &format!("ALTER DATABASE {database} SET default_transaction_read_only = on"),
        );
        wait_for_waiting(runtime, "read-only").await;
        tokio::time::sleep(OUTAGE).await;
        psql(
            &pg,
            &format!("ALTER DATABASE {database} RESET default_transaction_read_only"),
        );
    })
    .await;
    assert_exact_without_failures(&outcome);
    assert_eq!(
        psql(
            &target,
            "SELECT count(*), count(DISTINCT id), sum(id) FROM public.orders"
        ),
        "20000|20000|200010000"
    );
    psql(&pg, &format!("DROP DATABASE {database} WITH (FORCE)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_postgres_stopped_longer_than_a_chunk_is_waited_for_and_the_copy_is_exact() {
    let _turn = SERVERS.lock().await;
    let pg = env_url("FERRY_TEST_PG_URL");
    let table = format!("outage_{}", unique_suffix());
    let outcome = copy_while_the_target_stops("postgres", &pg, "pg", &table).await;
    assert_exact_without_failures(&outcome);
    assert_eq!(
        psql(
            &pg,
            &format!("SELECT count(*), count(DISTINCT id), sum(id) FROM public.{table}")
        ),
        "20000|20000|200010000"
    );
    psql(&pg, &format!("DROP TABLE public.{table}"));
}
