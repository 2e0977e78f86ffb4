//! Two jobs on one cluster: the leader runtime and worker agents of `ferryctl local`
//! (the same runtime as a cluster's) on the in-process protocol, copying real PostgreSQL
//! databases. The jobs' chunk states are sampled through the Control API's domain
//! (`list_chunks`, as `ferryctl chunks` reads them) while both run: busy slots split by
//! the jobs' priorities, an operator's priority change applies at once and is recorded
//! in the job's history, and two jobs reading one database never have more chunks
//! copying than its cap. Slots and caps count chunks copying (ASSIGNED, COPYING): a chunk
//! VERIFYING has given its slot to the next copy (docs/throttling.md). The last test does the same with a `ferry-coordinator` process
//! (cap from its configuration file) and `ferry-worker` processes over etcd, sampling
//! through gRPC. Each test ends by comparing source and target with `psql`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_coordination::cluster::JobPhase;
use ferry_coordination::{ClusterProtocol, ClusterRef, InProcessCluster};
use ferry_coordinator::cluster::runtime::{ClusterOptions, ClusterRuntime, CoordinatorRole};
use ferry_coordinator::control::{ChunkFilter, ClusterControl, JobControl, ThrottleUpdate};
use ferry_model::ids::{JobId, WorkerId};
use ferry_model::spec::{EndpointSpec, Location, Secret};
use ferry_tests::{PgPair, psql, wait_until, wait_until_async};
use ferry_worker::agent::{AgentOptions, WorkerState, run_agent};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Workers in each test's cluster, and slots per worker: 8 slots.
const WORKERS: usize = 4;
const SLOTS_PER_WORKER: u32 = 2;

/// How long a test's jobs may take at most.
const JOBS_END_WITHIN: Duration = Duration::from_secs(180);

/// A leader runtime and its worker agents on one in-process cluster.
struct TestCluster {
    runtime: Arc<ClusterRuntime>,
    cluster: InProcessCluster,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl TestCluster {
    async fn start(env: HashMap<String, String>, database_caps: HashMap<String, u32>) -> Self {
        let cluster = InProcessCluster::in_memory().expect("in-memory cluster");
        let store: ClusterRef = Arc::new(cluster.clone());
        let base_dir = std::env::temp_dir();
        let runtime = ClusterRuntime::new(
            store.clone(),
            ClusterOptions {
                id: "fair".into(),
                address: "fair.invalid:1".into(),
                lease_ttl: Duration::from_secs(10),
                worker_ttl: Duration::from_secs(10),
                grace: Duration::from_secs(2),
                compact_interval: Duration::ZERO,
                keep_revisions: 0,
                env: env.clone(),
                base_dir: base_dir.clone(),
                database_caps,
            },
        );
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(runtime.clone().run(stop.clone()));
        for index in 0..WORKERS {
            let options = AgentOptions {
                id: WorkerId(format!("fair-{index}")),
                slots: SLOTS_PER_WORKER,
                ttl: Duration::from_secs(10),
                drain_timeout: Duration::from_secs(5),
                env: env.clone(),
                base_dir: base_dir.clone(),
                host: "test".into(),
                progress_interval: Duration::from_millis(200),
            };
            let (state, _) = tokio::sync::watch::channel(WorkerState::Registering);
            let (store, stop) = (store.clone(), stop.clone());
            tasks.spawn(async move {
                let _ = run_agent(store, options, stop.clone(), stop, state).await;
            });
        }
        let role = runtime.watch_role();
        wait_until(Duration::from_secs(30), || {
            *role.borrow() == CoordinatorRole::Leading
        })
        .await
        .expect("the runtime leads");
        wait_until_async(Duration::from_secs(30), || async {
            runtime
                .list_workers()
                .await
                .is_ok_and(|workers| workers.len() == WORKERS)
        })
        .await
        .expect("every worker registers");
        TestCluster {
            runtime,
            cluster,
            stop,
            tasks,
        }
    }

    async fn submit(&self, spec: &str) {
        self.runtime
            .submit(spec, false, "test")
            .await
            .unwrap_or_else(|error| panic!("submit refused: {error}"));
    }

    /// Chunks of `job` copying (ASSIGNED, COPYING) and still PLANNED.
    async fn in_flight_and_planned(&self, job: &str) -> (u32, u32) {
        let (in_flight, planned) = self.chunk_states(job).await;
        (in_flight.len() as u32, planned)
    }

    /// The chunks of `job` copying (id and attempt), and how many are still PLANNED.
    async fn chunk_states(&self, job: &str) -> (BTreeSet<(u32, u32)>, u32) {
        let (chunks, _) = self
            .runtime
            .list_chunks(job, &ChunkFilter::default(), 0, 10_000)
            .await
            .expect("list chunks");
        let in_flight = chunks
            .iter()
            .filter(|chunk| ["ASSIGNED", "COPYING"].contains(&chunk.state.as_str()))
            .map(|chunk| (chunk.id, chunk.attempt))
            .collect();
        let planned = chunks
            .iter()
            .filter(|chunk| chunk.state == "PLANNED")
            .count() as u32;
        (in_flight, planned)
    }

    async fn phase(&self, job: &str) -> Option<JobPhase> {
        self.cluster
            .cluster_job(&JobId(job.into()))
            .await
            .expect("job state")
            .map(|state| state.phase)
    }

    async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A table of `rows` rows in `url`.
fn create_table(url: &str, table: &str, rows: u64) {
    psql(
        url,
        &format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, note text);
             INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, {rows}) g;
             ANALYZE {table};"
        ),
    );
}

/// Source and target hold the same rows, compared by `psql`.
fn assert_same(source: &str, target: &str, table: &str) {
    let query =
        format!("SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} t");
    assert_eq!(
        psql(source, &query),
        psql(target, &query),
        "table {table}: source and target differ"
    );
}

/// A job copying `table` in chunks of `chunk_rows`, up to 8 chunks at once, each attempt
/// paced to about a second (the job's rows/s split among its 8 allowed attempts).
fn spec(name: &str, priority: u32, source_var: &str, target_var: &str, table: &str) -> String {
    format!(
        "name: {name}\n\
         priority: {priority}\n\
         source: {{ kind: postgres, url_env: {source_var} }}\n\
         target: {{ kind: postgres, url_env: {target_var} }}\n\
         tables: {{ include: [\"public.{table}\"] }}\n\
         chunking: {{ target_rows: 200 }}\n\
         throttle: {{ default_concurrency: 8, rate: {{ rows_per_sec: 1600 }} }}\n"
    )
}

/// One look at both jobs: chunks in flight and planned of each.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    in_flight: (u32, u32),
    planned: (u32, u32),
}

/// What the sampling of the first test saw.
#[derive(Default)]
struct Watch {
    samples: Vec<Sample>,
    both_running_since: Option<Instant>,
    changed_at: Option<Instant>,
}

/// The first job's mean share of the busy slots over `samples` taken while both jobs
/// still had chunks to start.
fn first_job_share(samples: &[Sample]) -> (f64, usize) {
    let competing: Vec<&Sample> = samples
        .iter()
        .filter(|sample| sample.planned.0 > 0 && sample.planned.1 > 0)
        .filter(|sample| sample.in_flight.0 + sample.in_flight.1 > 0)
        .collect();
    let total: f64 = competing
        .iter()
        .map(|sample| {
            f64::from(sample.in_flight.0) / f64::from(sample.in_flight.0 + sample.in_flight.1)
        })
        .sum();
    (total / competing.len().max(1) as f64, competing.len())
}

/// The identity of a PostgreSQL database reached through `url` (as the coordinator
/// computes it from a spec's `url_env`).
fn postgres_identity(var: &str, url: String) -> String {
    EndpointSpec {
        kind: "postgres".into(),
        location: Location::Env {
            var: var.into(),
            value: Secret::new(url),
        },
        zero_dates: None,
        clickhouse: None,
    }
    .database_identity()
    .expect("the database's identity")
}

/// The most chunks two jobs had in flight on their shared database, from consistent
/// samples, and whether both ever had some at once.
#[derive(Default)]
struct CapWatch {
    most_in_flight: u32,
    both_in_flight: bool,
}

impl CapWatch {
    /// Counts one sample. The two jobs are listed one after the other: the sample counts
    /// only when the first job's chunks in flight did not change meanwhile (else a chunk
    /// of one ending and one of the other starting in between would be counted twice).
    fn record(
        &mut self,
        first_before: &BTreeSet<(u32, u32)>,
        second: &BTreeSet<(u32, u32)>,
        first_after: &BTreeSet<(u32, u32)>,
    ) {
        if first_before != first_after {
            return;
        }
        self.most_in_flight = self
            .most_in_flight
            .max((first_after.len() + second.len()) as u32);
        self.both_in_flight |= !first_after.is_empty() && !second.is_empty();
    }

    /// The cap held, was reached (else the test proves nothing), and both jobs ran at once.
    fn assert_held(&self, cap: u32) {
        let most_in_flight = self.most_in_flight;
        eprintln!("most chunks in flight on the shared database: {most_in_flight} (cap {cap})");
        assert!(
            most_in_flight <= cap,
            "{most_in_flight} chunks were in flight on a database capped at {cap}"
        );
        assert_eq!(
            most_in_flight, cap,
            "the cap was never reached: the test proves nothing"
        );
        assert!(self.both_in_flight, "the jobs never ran at the same time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_slots_split_by_priority_while_two_jobs_run_and_follow_a_priority_change() {
    let (first, second) = (PgPair::new("fairw"), PgPair::new("fairw"));
    create_table(&first.source(), "heavy", 24_000);
    create_table(&second.source(), "light", 24_000);
    let env = HashMap::from([
        ("FAIR_A_SRC".to_owned(), first.source()),
        ("FAIR_A_DST".to_owned(), first.target()),
        ("FAIR_B_SRC".to_owned(), second.source()),
        ("FAIR_B_DST".to_owned(), second.target()),
    ]);
    let cluster = TestCluster::start(env, HashMap::new()).await;
    cluster
        .submit(&spec("fair-heavy", 3, "FAIR_A_SRC", "FAIR_A_DST", "heavy"))
        .await;
    cluster
        .submit(&spec("fair-light", 1, "FAIR_B_SRC", "FAIR_B_DST", "light"))
        .await;

    // Sample both jobs' chunk states until both ended; after a few seconds of 3:1, the
    // light job is raised to priority 3.
    let watch: Arc<Mutex<Watch>> = Arc::default();
    let cluster_ref = &cluster;
    wait_until_async(JOBS_END_WITHIN, || {
        let watch = watch.clone();
        async move {
            let due = watch
                .lock()
                .expect("watch")
                .samples
                .last()
                .is_none_or(|sample| sample.at.elapsed() >= Duration::from_millis(100));
            if !due {
                return false;
            }
            let heavy = cluster_ref.in_flight_and_planned("fair-heavy").await;
            let light = cluster_ref.in_flight_and_planned("fair-light").await;
            let change_now = {
                let mut watch = watch.lock().expect("watch");
                watch.samples.push(Sample {
                    at: Instant::now(),
                    in_flight: (heavy.0, light.0),
                    planned: (heavy.1, light.1),
                });
                if heavy.0 > 0 && light.0 > 0 {
                    watch.both_running_since.get_or_insert_with(Instant::now);
                }
                watch.changed_at.is_none()
                    && watch
                        .both_running_since
                        .is_some_and(|since| since.elapsed() >= Duration::from_secs(7))
            };
            if change_now {
                let update = ThrottleUpdate {
                    priority: Some(3),
                    ..ThrottleUpdate::default()
                };
                cluster_ref
                    .runtime
                    .update_throttle("fair-light", update, "operator-test")
                    .await
                    .expect("priority change");
                watch.lock().expect("watch").changed_at = Some(Instant::now());
            }
            let ended = |phase: Option<JobPhase>| {
                matches!(
                    phase,
                    Some(JobPhase::Done | JobPhase::Failed | JobPhase::Cancelled)
                )
            };
            ended(cluster_ref.phase("fair-heavy").await)
                && ended(cluster_ref.phase("fair-light").await)
        }
    })
    .await
    .expect("both jobs end");

    let Watch {
        samples,
        both_running_since,
        changed_at,
    } = std::mem::take(&mut *watch.lock().expect("watch"));
    let since = both_running_since.expect("both jobs ran at once");
    let changed = changed_at.expect("the priority was changed while both ran");
    // A second to settle after each change (slots are not taken back: running chunks end
    // first).
    let settle = Duration::from_secs(2);
    let before: Vec<Sample> = samples
        .iter()
        .filter(|sample| sample.at >= since + settle && sample.at < changed)
        .copied()
        .collect();
    let after: Vec<Sample> = samples
        .iter()
        .filter(|sample| sample.at >= changed + settle)
        .copied()
        .collect();
    let (share_before, counted_before) = first_job_share(&before);
    let (share_after, counted_after) = first_job_share(&after);
    eprintln!(
        "heavy job's share of busy slots: {share_before:.3} at 3:1 ({counted_before} samples), \
         {share_after:.3} at 3:3 ({counted_after} samples)"
    );
    assert!(counted_before >= 10, "too few samples at 3:1: {before:?}");
    assert!(
        (0.65..=0.85).contains(&share_before),
        "at priorities 3:1 the heavy job held {share_before:.3} of the busy slots: {before:?}"
    );
    assert!(counted_after >= 5, "too few samples at 3:3: {after:?}");
    assert!(
        (0.38..=0.62).contains(&share_after),
        "at priorities 3:3 the heavy job held {share_after:.3} of the busy slots: {after:?}"
    );
    // Work-conserving: while both competed, the slots were busy.
    let busy_mean: f64 = before
        .iter()
        .map(|sample| f64::from(sample.in_flight.0 + sample.in_flight.1))
        .sum::<f64>()
        / before.len().max(1) as f64;
    assert!(
        busy_mean >= 6.0,
        "slots sat idle: {busy_mean:.2} of 8 busy on average"
    );

    let history = cluster
        .runtime
        .history("fair-light")
        .await
        .expect("history");
    assert!(
        history
            .iter()
            .any(|change| change.summary == "priority: 1 → 3" && change.actor == "operator-test"),
        "the priority change is in the job's history: {history:?}"
    );
    assert_eq!(cluster.phase("fair-heavy").await, Some(JobPhase::Done));
    assert_eq!(cluster.phase("fair-light").await, Some(JobPhase::Done));
    cluster.stop().await;
    assert_same(&first.source(), &first.target(), "heavy");
    assert_same(&second.source(), &second.target(), "light");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_reading_one_database_never_exceed_its_shared_cap() {
    let (shared, other) = (PgPair::new("faircap"), PgPair::new("faircap"));
    create_table(&shared.source(), "left_side", 6_000);
    create_table(&shared.source(), "right_side", 6_000);
    // The two jobs name the same database through different variables.
    let env = HashMap::from([
        ("FAIR_SRC_ONE".to_owned(), shared.source()),
        ("FAIR_SRC_TWO".to_owned(), shared.source()),
        ("FAIR_DST_ONE".to_owned(), shared.target()),
        ("FAIR_DST_TWO".to_owned(), other.target()),
    ]);
    let source_identity = postgres_identity("FAIR_SRC_ONE", shared.source());
    assert!(!source_identity.contains('@'), "{source_identity}");
    const CAP: u32 = 3;
    let cluster = TestCluster::start(env, HashMap::from([(source_identity.clone(), CAP)])).await;
    cluster
        .submit(&spec(
            "fair-left",
            1,
            "FAIR_SRC_ONE",
            "FAIR_DST_ONE",
            "left_side",
        ))
        .await;
    cluster
        .submit(&spec(
            "fair-right",
            1,
            "FAIR_SRC_TWO",
            "FAIR_DST_TWO",
            "right_side",
        ))
        .await;

    let seen: Arc<Mutex<CapWatch>> = Arc::default();
    // What `ferryctl throttle fair-left` says while both jobs run.
    let explained: Arc<Mutex<Vec<String>>> = Arc::default();
    let cluster_ref = &cluster;
    wait_until_async(JOBS_END_WITHIN, || {
        let seen = seen.clone();
        let explained = explained.clone();
        async move {
            let (left_before, _) = cluster_ref.chunk_states("fair-left").await;
            let (right, _) = cluster_ref.chunk_states("fair-right").await;
            let (left_after, _) = cluster_ref.chunk_states("fair-left").await;
            seen.lock()
                .expect("seen")
                .record(&left_before, &right, &left_after);
            let both_run = !left_after.is_empty() && !right.is_empty();
            if both_run && explained.lock().expect("explained").is_empty() {
                let (_, view) = cluster_ref
                    .runtime
                    .throttle("fair-left", None)
                    .await
                    .expect("throttle view");
                *explained.lock().expect("explained") = view.reasons;
            }
            let ended = |phase: Option<JobPhase>| matches!(phase, Some(JobPhase::Done));
            ended(cluster_ref.phase("fair-left").await)
                && ended(cluster_ref.phase("fair-right").await)
        }
    })
    .await
    .expect("both jobs end");
    seen.lock().expect("seen").assert_held(CAP);
    let explained = explained.lock().expect("explained").clone();
    eprintln!("ferryctl throttle fair-left while both ran: {explained:#?}");
    assert!(
        explained.iter().any(|line| {
            line.starts_with("shares the workers' slots with 1 other job: priority 1 of 2")
        }),
        "{explained:?}"
    );
    let cap_line = format!("database {source_identity}: ");
    assert!(
        explained.iter().any(|line| line.starts_with(&cap_line)
            && line.ends_with(&format!("cap {CAP} (the cluster's [[endpoints]] cap)"))),
        "{explained:?}"
    );
    assert!(
        !explained.iter().any(|line| line.contains('@')),
        "{explained:?}"
    );
    cluster.stop().await;
    assert_same(&shared.source(), &shared.target(), "left_side");
    assert_same(&shared.source(), &other.target(), "right_side");
}

/// Chunks of `job` copying (id and attempt) as the coordinator's Control API lists them.
async fn remote_in_flight(address: &str, job: &str) -> BTreeSet<(u32, u32)> {
    ferry_tests::cluster::chunks(address, job)
        .await
        .into_iter()
        .filter(|chunk| ["ASSIGNED", "COPYING"].contains(&chunk.state.as_str()))
        .map(|chunk| (chunk.id, chunk.attempt))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_process_holds_two_jobs_on_one_database_under_its_configured_cap() {
    use ferry_tests::cluster::{Cluster, SOURCE_VAR, TARGET_VAR, submit, wait_done};

    let mut cluster = Cluster::new(&[("left_side", 4_000), ("right_side", 4_000)]);
    let source_identity = postgres_identity(SOURCE_VAR, cluster.source_url());
    const CAP: u32 = 2;
    // The cap comes from the coordinator's configuration file, as an operator sets it.
    let config = cluster.dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!("[[endpoints]]\nmatch = \"{source_identity}\"\nmax_concurrency = {CAP}\n"),
    )
    .expect("write the configuration");
    let config_path = config.display().to_string();
    let address = cluster.start_coordinator_with("coord-fair", &["--config", &config_path]);
    for worker in ["wf1", "wf2"] {
        cluster.start_worker(worker, 3);
    }
    let spec = |job: &str, table: &str| {
        format!(
            "name: {job}\n\
             source: {{ kind: postgres, url_env: {SOURCE_VAR} }}\n\
             target: {{ kind: postgres, url_env: {TARGET_VAR} }}\n\
             tables: {{ include: [\"public.{table}\"] }}\n\
             chunking: {{ target_rows: 200 }}\n\
             throttle: {{ default_concurrency: 6, rate: {{ rows_per_sec: 1200 }} }}\n"
        )
    };
    submit(&address, &spec("fair-left", "left_side")).await;
    submit(&address, &spec("fair-right", "right_side")).await;

    let seen: Arc<Mutex<CapWatch>> = Arc::default();
    let address_ref = address.as_str();
    wait_until_async(JOBS_END_WITHIN, || {
        let seen = seen.clone();
        async move {
            let left_before = remote_in_flight(address_ref, "fair-left").await;
            let right = remote_in_flight(address_ref, "fair-right").await;
            let left_after = remote_in_flight(address_ref, "fair-left").await;
            seen.lock()
                .expect("seen")
                .record(&left_before, &right, &left_after);
            let ended = |status: Option<ferry_proto::v1::GetJobResponse>| {
                status.is_some_and(|status| status.state == ferry_proto::v1::JobState::Done as i32)
            };
            ended(ferry_tests::cluster::status(address_ref, "fair-left").await)
                && ended(ferry_tests::cluster::status(address_ref, "fair-right").await)
        }
    })
    .await
    .expect("both jobs end");
    seen.lock().expect("seen").assert_held(CAP);
    for job in ["fair-left", "fair-right"] {
        let status = wait_done(&address, job, Duration::from_secs(10)).await;
        ferry_tests::cluster::assert_done(&status);
    }
    cluster.assert_same(&["left_side", "right_side"]);
}
