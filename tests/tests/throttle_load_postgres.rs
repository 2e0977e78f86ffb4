//! The load controller against a real PostgreSQL source: sessions held busy with
//! `pg_sleep` push the built-in probe (active backends, ferry's own excluded) above `max`
//! (concurrency halves) and above `critical` (the job pauses: no chunk starts and rows stop
//! moving); ending them lets the job recover.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_coordination::{Coordination, LocalStore};
use ferry_coordinator::pacer::JobPacer;
use ferry_coordinator::scheduler::Gate;
use ferry_model::execution::Admission;
use ferry_model::ids::JobId;
use ferry_model::spec::{EndpointSpec, Location, Secret};
use ferry_model::throttle::{LoadPolicy, LoadProbe, ThrottlePolicy};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Holds `count` sessions busy in `pg_sleep` (they count as active backends).
async fn busy_sessions(url: &str, count: usize, tag: &str) -> Vec<tokio::task::JoinHandle<()>> {
    let mut sessions = Vec::new();
    for _ in 0..count {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let sql = format!("SELECT pg_sleep(60) /* {tag} */");
        sessions.push(tokio::spawn(async move {
            let _ = client.simple_query(&sql).await;
        }));
    }
    sessions
}

async fn end_sessions(url: &str, tag: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .simple_query(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%{tag}%' AND pid <> pg_backend_pid()"
        ))
        .await
        .expect("terminate");
}

async fn wait_for_gate(
    gate: &mut watch::Receiver<Gate>,
    within: Duration,
    what: &str,
    predicate: impl Fn(&Gate) -> bool,
) -> Duration {
    let started = Instant::now();
    let waited = tokio::time::timeout(within, gate.wait_for(|gate| predicate(gate)))
        .await
        .map(|result| result.map(|_| ()));
    match waited {
        Ok(result) => result.expect("pacer alive"),
        Err(_) => panic!("{what} within {within:?}; gate is {:?}", *gate.borrow()),
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_load_halves_concurrency_pauses_at_critical_and_recovers() {
    let url = ferry_tests::env_url("FERRY_TEST_PG_URL");
    let endpoint = EndpointSpec {
        kind: "postgres".to_string(),
        location: Location::Env {
            var: "FERRY_TEST_PG_URL".to_string(),
            value: Secret::new(url.clone()),
        },
        zero_dates: None,
        clickhouse: None,
    };
    let source = ferry_connectors::open_source(&endpoint)
        .await
        .expect("source");
    let store: Arc<dyn Coordination> = Arc::new(LocalStore::in_memory().expect("store"));
    let interval = Duration::from_millis(400);
    let policy = ThrottlePolicy {
        default_concurrency: 8,
        load: Some(LoadPolicy {
            probe: LoadProbe::Builtin,
            interval_ms: interval.as_millis() as u64,
            max: 3.0,
            critical: 6.0,
            pause_timeout_ms: 60_000,
        }),
        ..ThrottlePolicy::default()
    };
    let tag = format!("ferry_load_test_{}", std::process::id());
    // Sessions of other tests may be active on the shared server; start from a quiet one.
    end_sessions(&url, &tag).await;
    let cancel = CancellationToken::new();
    // The same server as the target: only the outage checks would use it.
    let sink = ferry_connectors::open_sink(&endpoint).await.expect("sink");
    let pacer = JobPacer::start(
        JobId("load".into()),
        policy,
        store,
        source,
        sink,
        Duration::from_secs(1800),
        cancel.clone(),
    )
    .await
    .expect("pacer");
    let mut gate = pacer.pacing().gate;
    wait_for_gate(
        &mut gate,
        3 * interval,
        "full concurrency while the source is quiet",
        |g| g.concurrency == 8 && !g.paused,
    )
    .await;

    let first = busy_sessions(&url, 4, &tag).await;
    let took = wait_for_gate(
        &mut gate,
        2 * interval + Duration::from_millis(300),
        "concurrency halves above max",
        |g| g.concurrency <= 4,
    )
    .await;
    eprintln!("halved after {took:?}");
    wait_for_gate(
        &mut gate,
        10 * interval,
        "keeps halving while load stays above max",
        |g| g.concurrency == 1,
    )
    .await;

    let second = busy_sessions(&url, 4, &tag).await;
    wait_for_gate(
        &mut gate,
        2 * interval + Duration::from_millis(300),
        "paused above critical",
        |g| g.paused,
    )
    .await;
    // Copying pauses: a running chunk's next batch is held back.
    let held = tokio::time::timeout(Duration::from_millis(600), pacer.admit(100, 1000)).await;
    assert!(
        held.is_err(),
        "a batch was admitted while the source was above critical"
    );

    end_sessions(&url, &tag).await;
    for session in first.into_iter().chain(second) {
        let _ = session.await;
    }
    wait_for_gate(&mut gate, 3 * interval, "resumes below max", |g| !g.paused).await;
    wait_for_gate(
        &mut gate,
        6 * interval,
        "grows back by one per interval",
        |g| g.concurrency >= 3,
    )
    .await;
    tokio::time::timeout(Duration::from_secs(2), pacer.admit(100, 1000))
        .await
        .expect("admitted again")
        .expect("not timed out");
    cancel.cancel();
}
