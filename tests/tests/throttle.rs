//! Throttling at runtime: rate limits changed on a running job, pauses, and policy changes
//! that survive a restart.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_coordinator::control::{JobControl, ThrottleUpdate};
use ferry_ctl::local::{LocalJob, load_spec};
use ferry_tests::write_spec;
use tokio_util::sync::CancellationToken;

fn create_source(path: &Path, rows: i64) {
    let connection = rusqlite::Connection::open(path).expect("source");
    connection
        .execute_batch(&format!(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO orders SELECT i, 'value ' || i FROM n;"
        ))
        .expect("fill");
}

async fn rows_streamed(control: &dyn JobControl) -> u64 {
    control
        .job_status("thr")
        .await
        .expect("status")
        .rows_streamed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_change_applies_to_the_running_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"), 400_000);
    let spec_path = write_spec(
        dir.path(),
        "name: thr\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: sqlite, path: target.db }\n\
         tables: { include: [orders] }\nchunking: { target_rows: 20000 }\n\
         throttle: { default_concurrency: 3, rate: { rows_per_sec: 60000 } }\n",
    );
    let spec = load_spec(&spec_path, &HashMap::new()).expect("spec");
    let job = Arc::new(
        LocalJob::open(spec, &dir.path().join("state.db"))
            .await
            .expect("open"),
    );
    let prepared = Arc::new(job.prepare().await.expect("prepare"));
    let cancel = CancellationToken::new();
    let pacer = job
        .start_pacer(&prepared, cancel.child_token())
        .await
        .expect("pacer");
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while events_rx.recv().await.is_some() {} });
    let run = {
        let job = job.clone();
        let prepared = prepared.clone();
        let pacer = pacer.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            job.run(&prepared, 3, None, Some(pacer), events_tx, cancel)
                .await
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let limit = 15_000u64;
    pacer
        .update_throttle(
            "thr",
            ThrottleUpdate {
                rows_per_sec: Some(limit),
                ..ThrottleUpdate::default()
            },
        )
        .await
        .expect("valid change");
    // Let batches admitted under the old limit drain, then measure a 3 s window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start_rows = rows_streamed(pacer.as_ref()).await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rows = rows_streamed(pacer.as_ref()).await - start_rows;
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    assert!(
        rate <= 1.2 * limit as f64,
        "{rate:.0} rows/s after the limit went down to {limit}"
    );
    assert!(
        rate >= 0.5 * limit as f64,
        "the job kept copying: {rate:.0} rows/s"
    );

    // An invalid change is refused and the policy stays.
    let refused = pacer
        .update_throttle(
            "thr",
            ThrottleUpdate {
                load_max: Some(5.0),
                load_critical: Some(1.0),
                ..ThrottleUpdate::default()
            },
        )
        .await;
    assert!(refused.is_err());
    let (policy_json, effective) = pacer.throttle("thr", None).await.expect("show");
    assert!(policy_json.contains("15000"), "{policy_json}");
    assert_eq!(effective.rows_per_sec, limit);

    // Lift the limit so the run ends quickly, and check it completed exactly.
    pacer
        .update_throttle(
            "thr",
            ThrottleUpdate {
                rows_per_sec: Some(0),
                ..ThrottleUpdate::default()
            },
        )
        .await
        .expect("valid change");
    let outcome = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("in time")
        .expect("join")
        .expect("run");
    assert!(!outcome.interrupted);
    ferry_tests::assert_same_table(
        &dir.path().join("source.db"),
        &dir.path().join("target.db"),
        "orders",
        false,
    );
    let history = pacer.throttle_history("thr").await.expect("history");
    let summaries: Vec<&str> = history
        .iter()
        .map(|change| change.summary.as_str())
        .collect();
    assert_eq!(history[0].origin, "spec");
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("rows_per_sec: 60000 → 15000")),
        "{summaries:?}"
    );
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("rows_per_sec: 15000 → none")),
        "{summaries:?}"
    );
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_copying_and_resume_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"), 200_000);
    let spec_path = write_spec(
        dir.path(),
        "name: thr\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: sqlite, path: target.db }\n\
         tables: { include: [orders] }\nchunking: { target_rows: 10000 }\n\
         throttle: { default_concurrency: 2, rate: { rows_per_sec: 40000 } }\n",
    );
    let spec = load_spec(&spec_path, &HashMap::new()).expect("spec");
    let job = Arc::new(
        LocalJob::open(spec, &dir.path().join("state.db"))
            .await
            .expect("open"),
    );
    let prepared = Arc::new(job.prepare().await.expect("prepare"));
    let cancel = CancellationToken::new();
    let pacer = job
        .start_pacer(&prepared, cancel.child_token())
        .await
        .expect("pacer");
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while events_rx.recv().await.is_some() {} });
    let run = {
        let (job, prepared, pacer, cancel) =
            (job.clone(), prepared.clone(), pacer.clone(), cancel.clone());
        tokio::spawn(async move {
            job.run(&prepared, 2, None, Some(pacer), events_tx, cancel)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let effective = pacer.pause("thr").await.expect("pause");
    assert!(effective.paused);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let paused_at = rows_streamed(pacer.as_ref()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rows_streamed(pacer.as_ref()).await,
        paused_at,
        "no rows move while paused"
    );
    assert!(paused_at < 200_000, "paused before the end");
    pacer.resume("thr").await.expect("resume");
    pacer
        .update_throttle(
            "thr",
            ThrottleUpdate {
                rows_per_sec: Some(0),
                ..ThrottleUpdate::default()
            },
        )
        .await
        .expect("lift the limit");
    let outcome = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("in time")
        .expect("join")
        .expect("run");
    assert!(!outcome.interrupted);
    ferry_tests::assert_same_table(
        &dir.path().join("source.db"),
        &dir.path().join("target.db"),
        "orders",
        false,
    );
    cancel.cancel();
}
