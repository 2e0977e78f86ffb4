//! Sync passes and verify-only jobs on a cluster (issue 12): a coordinator and two
//! `ferry-worker` processes over etcd, one of them SIGKILLed while it holds a chunk of
//! the job. The job still ends correctly: the sync leaves the target equal to the source
//! (checked with `psql`), the verify-only job finds exactly the injected difference.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::v1 as pb;
use ferry_tests::cluster::{
    Cluster, assert_done, assert_rerun_after_loss, binary, chunks, client, lift_rate_limit, submit,
    try_chunks, wait_done,
};
use ferry_tests::{psql, wait_until_async};

/// The rows of `table` on one side, as `psql` prints them: id, n, note, at.
fn rows_of(url: &str, table: &str) -> String {
    psql(
        url,
        &format!("SELECT id, n, note, at FROM {table} ORDER BY id"),
    )
}

/// The job whose name starts with `prefix`, once the cluster knows one.
async fn job_named(address: &str, prefix: &str) -> String {
    let found = Arc::new(Mutex::new(None::<String>));
    wait_until_async(Duration::from_secs(60), || {
        let found = found.clone();
        async move {
            let Ok(listed) = client(address)
                .await
                .list_jobs(pb::ListJobsRequest {})
                .await
            else {
                return false;
            };
            let job = listed
                .into_inner()
                .jobs
                .into_iter()
                .map(|job| job.job_id)
                .find(|job| job.starts_with(prefix));
            let seen = job.is_some();
            *found.lock().expect("found") = job;
            seen
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no job {prefix}* within 60 s"));
    let job = found.lock().expect("found").take();
    job.expect("found")
}

/// Waits until `worker` holds a chunk of `job` (assigned and running); returns its id.
async fn chunk_held_by(address: &str, job: &str, worker: &str) -> u32 {
    let held = Arc::new(Mutex::new(None::<u32>));
    wait_until_async(Duration::from_secs(60), || {
        let held = held.clone();
        async move {
            // Not planned yet: no chunks to hold.
            let chunk = try_chunks(address, job)
                .await
                .unwrap_or_default()
                .into_iter()
                .find(|chunk| {
                    chunk.worker == worker
                        && matches!(chunk.state.as_str(), "COPYING" | "VERIFYING")
                })
                .map(|chunk| chunk.id);
            let seen = chunk.is_some();
            *held.lock().expect("held") = chunk;
            seen
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{worker} held no chunk of {job} within 60 s"));
    let chunk = *held.lock().expect("held");
    chunk.expect("held")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_pass_on_a_cluster_survives_a_worker_killed_mid_pass() {
    let rows = 40_000;
    let mut cluster = Cluster::new(&[("orders", rows)]);
    let address = cluster.start_coordinator("coord-s");
    cluster.start_worker("victim", 1);
    cluster.start_worker("survivor", 1);
    let job = "csync";
    // 4,000-row chunks at 4,000 rows/s for the job: a chunk holds a worker about 2 s.
    let spec = format!(
        "{}watermark: {{ column: at, lag: 1s }}\n",
        cluster.spec(job, 4_000, 4_000, 2)
    );
    // The copy first, at full speed.
    submit(&address, &cluster.spec(job, 4_000, 10_000_000, 4)).await;
    assert_done(&wait_done(&address, job, Duration::from_secs(120)).await);
    cluster.assert_same(&["orders"]);

    // The source moves on: 1 % of the rows updated, some deleted, some inserted.
    psql(
        &cluster.source_url(),
        &format!(
            "UPDATE orders SET note = 'changed ' || id, at = now() WHERE id % 100 = 7;
             DELETE FROM orders WHERE id % 1000 = 3;
             INSERT INTO orders (id, n, amount, note, at)
                 SELECT g, 1, 1.5, 'new ' || g, now() FROM generate_series({}, {}) g;",
            rows + 1,
            rows + 250
        ),
    );
    let spec_path = cluster.dir.path().join("sync.yaml");
    std::fs::write(&spec_path, &spec).expect("spec");
    let state = cluster.dir.path().join("sync.json");
    let sync = ferryctl_sync(&cluster, &spec_path, &state, &address)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferryctl sync");

    // The pass is a job of the cluster: kill a worker while it holds one of its chunks.
    let pass = job_named(&address, "csync-sync-").await;
    let held = chunk_held_by(&address, &pass, "victim").await;
    cluster.signal("victim", "KILL");
    lift_rate_limit(&address, &pass).await;

    let output = sync.wait_with_output().expect("sync ends");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "ferryctl sync --endpoint\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().next().expect("a pass line")).expect("json");
    assert!(
        summary["deleted"].as_u64().expect("deleted") > 0,
        "{summary}"
    );
    assert!(
        summary["inserted"].as_u64().expect("inserted") > 0,
        "{summary}"
    );
    assert_done(&wait_done(&address, &pass, Duration::from_secs(10)).await);
    assert_rerun_after_loss(&address, &pass, held, "victim").await;

    // Equal row for row, by psql on both sides; nothing doubled.
    assert_eq!(
        rows_of(&cluster.source_url(), "orders"),
        rows_of(&cluster.target_url(), "orders"),
        "target equals source after the pass"
    );
    cluster.assert_same(&["orders"]);
    assert_eq!(
        psql(
            &cluster.target_url(),
            "SELECT count(*) = count(DISTINCT id), count(*) FILTER (WHERE id > 40000) FROM orders"
        ),
        "t|250",
        "no key twice; every inserted row there"
    );
    let expected_rows = psql(&cluster.source_url(), "SELECT count(*) FROM orders");
    assert_eq!(
        psql(&cluster.target_url(), "SELECT count(*) FROM orders"),
        expected_rows
    );

    // The cutover gate on the cluster: passes that find nothing, then a verify-only job
    // of the cluster that agrees.
    lift_rate_limit_in_spec(&spec_path);
    let gate = ferryctl_sync(&cluster, &spec_path, &state, &address)
        .args(["--until-quiet", "1s", "--pass-interval", "200ms"])
        .output()
        .expect("ferryctl sync --until-quiet");
    let stdout = String::from_utf8_lossy(&gate.stdout).into_owned();
    assert_eq!(
        gate.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&gate.stderr)
    );
    let verdict: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a verdict")).expect("json");
    assert_eq!(verdict["ready_to_cut_over"], true, "{verdict}");
    let verify = job_named(&address, "csync-verify-").await;
    assert_done(&wait_done(&address, &verify, Duration::from_secs(10)).await);
}

/// `ferryctl sync SPEC --state STATE --endpoint ADDRESS --json` with the cluster's database
/// variables.
fn ferryctl_sync(
    cluster: &Cluster,
    spec: &std::path::Path,
    state: &std::path::Path,
    address: &str,
) -> Command {
    let mut command = Command::new(binary("ferryctl"));
    command
        .arg("sync")
        .arg(spec)
        .arg("--state")
        .arg(state)
        .args(["--endpoint", address, "--json"])
        .envs(cluster.envs())
        .env_remove("RUST_LOG")
        .env_remove("FERRY_ENDPOINT");
    command
}

/// Rewrites the spec's rate limit to one no chunk reaches.
fn lift_rate_limit_in_spec(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).expect("spec");
    std::fs::write(
        path,
        text.replace("rows_per_sec: 4000", "rows_per_sec: 10000000"),
    )
    .expect("spec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_only_job_on_a_cluster_survives_a_worker_killed_mid_pass() {
    let mut cluster = Cluster::new(&[("orders", 40_000)]);
    let address = cluster.start_coordinator("coord-v");
    cluster.start_worker("victim", 1);
    cluster.start_worker("survivor", 1);
    let job = "cverify";
    submit(&address, &cluster.spec(job, 4_000, 10_000_000, 4)).await;
    assert_done(&wait_done(&address, job, Duration::from_secs(120)).await);
    cluster.assert_same(&["orders"]);
    // One difference, injected into the target: a changed column of row 20,001.
    psql(
        &cluster.target_url(),
        "UPDATE orders SET note = 'tampered' WHERE id = 20001",
    );

    let verify = "cverify-verify-1";
    let spec = format!(
        "{}mode: verify\n",
        cluster
            .spec(job, 4_000, 4_000, 2)
            .replace("name: cverify\n", &format!("name: {verify}\n"))
    );
    submit(&address, &spec).await;
    let held = chunk_held_by(&address, verify, "victim").await;
    cluster.signal("victim", "KILL");
    lift_rate_limit(&address, verify).await;
    let status = wait_done(&address, verify, Duration::from_secs(120)).await;
    assert_eq!(
        pb::JobState::try_from(status.state),
        Ok(pb::JobState::Failed),
        "a verify-only job that found a difference ends FAILED with the finding: {status:?}"
    );
    assert_rerun_after_loss(&address, verify, held, "victim").await;
    let all = chunks(&address, verify).await;
    let differing: Vec<&pb::ChunkInfo> = all
        .iter()
        .filter(|chunk| chunk.state != "VERIFIED")
        .collect();
    assert_eq!(differing.len(), 1, "exactly one chunk differs: {all:?}");
    assert_eq!(differing[0].state, "FAILED");
    let (low, high) = chunk_bounds(&differing[0].range);
    assert!(
        low <= 20_001 && 20_001 < high,
        "the differing chunk holds row 20,001: {:?}",
        differing[0]
    );
    // `ferryctl watch` says so with its own exit code (4: differences found).
    let watched = Command::new(binary("ferryctl"))
        .args(["watch", verify, "--endpoint", &address, "-o", "json"])
        .env_remove("FERRY_ENDPOINT")
        .output()
        .expect("ferryctl watch");
    assert_eq!(
        watched.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&watched.stderr)
    );
}

/// `[low, high)` of an integer chunk range as the Control API prints it (`[a, b)`,
/// `(-inf, b)`, `[a, +inf)`).
fn chunk_bounds(range: &str) -> (i64, i64) {
    let inner = range.trim_start_matches(['[', '(']).trim_end_matches(')');
    let mut parts = inner.split(',').map(str::trim);
    let low = parts
        .next()
        .and_then(|low| low.parse().ok())
        .unwrap_or(i64::MIN);
    let high = parts
        .next()
        .and_then(|high| high.parse().ok())
        .unwrap_or(i64::MAX);
    (low, high)
}
