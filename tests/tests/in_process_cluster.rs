//! The leader runtime and the worker agent on the in-process cluster protocol, each
//! against the other side played by the test through the protocol itself: election and
//! failover, adoption of chunks in flight by a new leader, re-assignment of a lost
//! worker's chunk, a verifying chunk's slot copying the next one (runtime); claim and
//! copy, self-fencing on a lost lease, drain (agent).
//! Tokio's clock is paused where it can be (leases, grace periods and backoffs pass in
//! virtual time); the agent tests that hold a chunk paused run in real time. Data is real
//! (SQLite files), checked with the `sqlite3` shell.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_coordination::cluster::{
    Assignment, ChunkProgress, JobPace, JobPhase, LeaseSession, WorkerInfo,
};
use ferry_coordination::{ChunkState, ClusterProtocol, ClusterRef, Coordination, InProcessCluster};
use ferry_coordinator::cluster::runtime::{ClusterOptions, ClusterRuntime, CoordinatorRole};
use ferry_coordinator::control::ClusterControl;
use ferry_coordinator::job::{Resume, prepare_job};
use ferry_model::checksum::RangeChecksum;
use ferry_model::execution::ChunkResult;
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};
use ferry_tests::{sqlite3, wait_until, wait_until_async};

use ferry_worker::agent::{AgentOptions, WorkerState, run_agent};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// 1,000 rows in chunks of 100: ten chunks.
const SPEC: &str = "name: rt\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: sqlite, path: target.db }\n\
                    tables: { include: [orders] }\nchunking: { target_rows: 100 }\n";

/// Every wait of these tests, in virtual time.
const WAIT: Duration = Duration::from_secs(120);

fn job() -> JobId {
    JobId("rt".into())
}

fn create_source(dir: &Path) {
    let connection = rusqlite::Connection::open(dir.join("source.db")).expect("source");
    connection
        .execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
             INSERT INTO orders SELECT i, 'value ' || i FROM n;",
        )
        .expect("fill");
}

fn coordinator_options(id: &str, dir: &Path) -> ClusterOptions {
    ClusterOptions {
        id: id.into(),
        address: format!("{id}.invalid:1"),
        lease_ttl: Duration::from_secs(6),
        worker_ttl: Duration::from_secs(6),
        grace: Duration::from_secs(3),
        compact_interval: Duration::ZERO,
        keep_revisions: 0,
        env: HashMap::new(),
        base_dir: dir.to_path_buf(),
        database_caps: Default::default(),
    }
}

/// A coordinator running on `cluster`, stopped by `shutdown`.
struct Coordinator {
    runtime: Arc<ClusterRuntime>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn start_coordinator(cluster: &InProcessCluster, id: &str, dir: &Path) -> Coordinator {
    let store: ClusterRef = Arc::new(cluster.clone());
    let runtime = ClusterRuntime::new(store, coordinator_options(id, dir));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runtime.clone().run(shutdown.clone()));
    Coordinator {
        runtime,
        shutdown,
        task,
    }
}

async fn wait_for_role(coordinator: &Coordinator, role: CoordinatorRole) {
    let mut roles = coordinator.runtime.watch_role();
    tokio::time::timeout(WAIT, roles.wait_for(|now| *now == role))
        .await
        .unwrap_or_else(|_| panic!("never {role:?}"))
        .expect("runtime alive");
}

async fn chunk_states(cluster: &InProcessCluster) -> Vec<(ChunkState, Attempt)> {
    cluster
        .list_chunks(&job())
        .await
        .expect("chunks")
        .iter()
        .map(|chunk| (chunk.state, chunk.attempt))
        .collect()
}

async fn job_phase(cluster: &InProcessCluster) -> Option<JobPhase> {
    cluster
        .cluster_job(&job())
        .await
        .expect("job state")
        .map(|state| state.phase)
}

/// A worker played by the test: registers on its own lease and claims what it is
/// assigned; reports each attempt verified unless `hold` is set (then it keeps it).
struct SimulatedWorker {
    lease: LeaseSession,
    hold: Arc<AtomicBool>,
    stop: CancellationToken,
}

async fn simulated_worker(
    cluster: &InProcessCluster,
    name: &str,
    slots: u32,
    hold: bool,
) -> SimulatedWorker {
    let store: ClusterRef = Arc::new(cluster.clone());
    let stop = CancellationToken::new();
    let lease = store
        .start_lease(Duration::from_secs(6), &stop)
        .await
        .expect("lease");
    let id = WorkerId(name.into());
    store
        .put_live_worker(
            &WorkerInfo {
                id: id.clone(),
                slots,
                draining: false,
                host: "test".into(),
                pid: 1,
                registered_at_unix_ms: 1,
            },
            lease.id,
        )
        .await
        .expect("register");
    let hold = Arc::new(AtomicBool::new(hold));
    let (holding, token, lease_id) = (hold.clone(), stop.clone(), lease.id);
    tokio::spawn(async move {
        let mut assignments = store.watch_assignments(&id, &token);
        let mut claimed: Vec<Assignment> = Vec::new();
        loop {
            let current: Vec<Assignment> =
                assignments.borrow_and_update().values().cloned().collect();
            for assignment in current {
                if !claimed.contains(&assignment)
                    && store.claim(&assignment, lease_id).await.unwrap_or(false)
                {
                    claimed.push(assignment);
                }
            }
            if !holding.load(Ordering::SeqCst) {
                for assignment in claimed.drain(..) {
                    let result = ChunkResult::Verified {
                        rows: 100,
                        checksum: RangeChecksum { rows: 100, sum: 1 },
                        sync: None,
                    };
                    let _ = store.put_result(&assignment, &result).await;
                }
            }
            tokio::select! {
                () = token.cancelled() => return,
                changed = assignments.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    SimulatedWorker { lease, hold, stop }
}

#[tokio::test(start_paused = true)]
async fn a_standby_leads_once_the_leader_resigns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = InProcessCluster::in_memory().expect("cluster");
    let first = start_coordinator(&cluster, "first", dir.path());
    wait_for_role(&first, CoordinatorRole::Leading).await;
    let second = start_coordinator(&cluster, "second", dir.path());
    wait_for_role(&second, CoordinatorRole::Standby).await;
    // A standby points writers to the leader.
    let refused = second.runtime.cancel("rt", "test").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|error| error.to_string().contains("first.invalid:1")),
        "{refused:?}"
    );
    first.shutdown.cancel();
    first.task.await.expect("first stops");
    wait_for_role(&second, CoordinatorRole::Leading).await;
    let leader = cluster.leader().await.expect("leader").expect("elected");
    assert_eq!(leader.id, "second");
    second.shutdown.cancel();
    second.task.await.expect("second stops");
    assert_eq!(cluster.leader().await.expect("leader"), None, "resigned");
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_adopts_the_chunks_in_flight_instead_of_copying_them_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(dir.path());
    let cluster = InProcessCluster::in_memory().expect("cluster");
    let first = start_coordinator(&cluster, "first", dir.path());
    wait_for_role(&first, CoordinatorRole::Leading).await;
    let second = start_coordinator(&cluster, "second", dir.path());
    wait_for_role(&second, CoordinatorRole::Standby).await;
    let worker = simulated_worker(&cluster, "w1", 2, true).await;
    first
        .runtime
        .submit(SPEC, false, "test")
        .await
        .expect("submit");
    // Two chunks assigned and claimed, held by the worker.
    wait_until_async(WAIT, || async {
        chunk_states(&cluster)
            .await
            .iter()
            .filter(|(state, _)| state.in_flight())
            .count()
            == 2
    })
    .await
    .expect("two chunks in flight");

    first.shutdown.cancel();
    first.task.await.expect("first stops");
    wait_for_role(&second, CoordinatorRole::Leading).await;
    // The worker now reports what it held, and everything after.
    worker.hold.store(false, Ordering::SeqCst);
    wait_until_async(WAIT, || async {
        job_phase(&cluster).await == Some(JobPhase::Done)
    })
    .await
    .expect("the job ends under the new leader");
    let chunks = cluster.list_chunks(&job()).await.expect("chunks");
    assert_eq!(chunks.len(), 10);
    for chunk in &chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "{chunk:?}");
        assert_eq!(
            chunk.attempt.0, 1,
            "chunk {} was copied once: adopted, not re-assigned",
            chunk.id
        );
    }
    second.shutdown.cancel();
    worker.stop.cancel();
}

/// The chunks assigned to `worker` now, by id.
fn assigned(cluster: &InProcessCluster, worker: &str) -> Vec<Assignment> {
    let mut assignments: Vec<Assignment> = cluster
        .watch_assignments(&WorkerId(worker.into()), &CancellationToken::new())
        .borrow()
        .values()
        .cloned()
        .collect();
    assignments.sort_by_key(|assignment| assignment.chunk);
    assignments
}

async fn report_verifying(cluster: &InProcessCluster, worker: &SimulatedWorker, of: &Assignment) {
    let progress = ChunkProgress {
        job: of.job.clone(),
        chunk: of.chunk,
        attempt: of.attempt,
        worker: of.worker.clone(),
        rows: 100,
        verifying: true,
    };
    cluster
        .put_progress(&progress, worker.lease.id)
        .await
        .expect("progress");
}

#[tokio::test(start_paused = true)]
async fn a_verifying_chunk_frees_its_slot_for_the_next_copy_and_ends_with_its_verification() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(dir.path());
    let cluster = InProcessCluster::in_memory().expect("cluster");
    let leader = start_coordinator(&cluster, "first", dir.path());
    wait_for_role(&leader, CoordinatorRole::Leading).await;
    // One slot; the test says when each attempt verifies and how it ends.
    let worker = simulated_worker(&cluster, "w1", 1, true).await;
    leader
        .runtime
        .submit(SPEC, false, "test")
        .await
        .expect("submit");
    wait_until(WAIT, || assigned(&cluster, "w1").len() == 1)
        .await
        .expect("a first chunk");
    let first = assigned(&cluster, "w1")[0].clone();
    report_verifying(&cluster, &worker, &first).await;
    // Its copy committed: the slot copies the next chunk while it verifies.
    wait_until(WAIT, || assigned(&cluster, "w1").len() == 2)
        .await
        .expect("a second chunk while the first verifies");
    let second = assigned(&cluster, "w1")
        .into_iter()
        .find(|assignment| assignment.chunk != first.chunk)
        .expect("second");
    let record_of = |chunk: ChunkId| {
        let cluster = cluster.clone();
        async move {
            cluster
                .list_chunks(&job())
                .await
                .expect("chunks")
                .into_iter()
                .find(|record| record.id == chunk)
                .expect("chunk")
        }
    };
    wait_until_async(WAIT, || async {
        record_of(first.chunk).await.state == ChunkState::Verifying
    })
    .await
    .expect("the first chunk is verifying, not done");
    // Both verifying on one slot: two in flight is all it takes (one copy and one
    // verification per slot), so nothing more is assigned. Virtual time: no real wait.
    report_verifying(&cluster, &worker, &second).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(assigned(&cluster, "w1").len(), 2);
    // The first mismatches: that chunk alone is copied again, under a new attempt.
    let mismatch = ChunkResult::Mismatch {
        source: RangeChecksum { rows: 100, sum: 1 },
        target: RangeChecksum { rows: 100, sum: 2 },
    };
    assert!(cluster.put_result(&first, &mismatch).await.expect("result"));
    let verified = ChunkResult::Verified {
        rows: 100,
        checksum: RangeChecksum { rows: 100, sum: 1 },
        sync: None,
    };
    assert!(
        cluster
            .put_result(&second, &verified)
            .await
            .expect("result")
    );
    wait_until_async(WAIT, || async {
        record_of(first.chunk).await.failures == 1
            && record_of(second.chunk).await.state == ChunkState::Verified
    })
    .await
    .expect("the leader read both results");
    worker.hold.store(false, Ordering::SeqCst);
    wait_until_async(WAIT, || async {
        job_phase(&cluster).await == Some(JobPhase::Done)
    })
    .await
    .expect("the job ends");
    for chunk in cluster.list_chunks(&job()).await.expect("chunks") {
        assert_eq!(chunk.state, ChunkState::Verified, "{chunk:?}");
        let copies = if chunk.id == first.chunk { 2 } else { 1 };
        assert_eq!(chunk.attempt.0, copies, "chunk {}", chunk.id);
    }
    leader.shutdown.cancel();
    worker.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_lost_workers_chunk_is_copied_again_by_another_after_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(dir.path());
    let cluster = InProcessCluster::in_memory().expect("cluster");
    let leader = start_coordinator(&cluster, "leader", dir.path());
    wait_for_role(&leader, CoordinatorRole::Leading).await;
    let lost = simulated_worker(&cluster, "lost", 1, true).await;
    leader
        .runtime
        .submit(SPEC, false, "test")
        .await
        .expect("submit");
    wait_until_async(WAIT, || async {
        chunk_states(&cluster)
            .await
            .iter()
            .any(|(state, _)| state.in_flight())
    })
    .await
    .expect("a chunk in flight on the worker that will be lost");
    let held = cluster
        .list_chunks(&job())
        .await
        .expect("chunks")
        .into_iter()
        .find(|chunk| chunk.state.in_flight())
        .expect("held chunk");
    let stale: Assignment = cluster
        .watch_assignments(&WorkerId("lost".into()), &CancellationToken::new())
        .borrow()
        .values()
        .find(|assignment| assignment.chunk == held.id)
        .cloned()
        .expect("the lost worker's assignment");
    // The worker vanishes (its lease expires) without a word.
    lost.stop.cancel();
    cluster.expire_lease(lost.lease.id);
    let before = tokio::time::Instant::now();
    let helper = simulated_worker(&cluster, "helper", 2, false).await;
    wait_until_async(WAIT, || async {
        job_phase(&cluster).await == Some(JobPhase::Done)
    })
    .await
    .expect("the job ends on the other worker");
    assert!(
        before.elapsed() >= Duration::from_secs(3),
        "not re-assigned before the grace: {:?}",
        before.elapsed()
    );
    let chunks = cluster.list_chunks(&job()).await.expect("chunks");
    let recopied = &chunks[held.id.0 as usize];
    assert_eq!(recopied.state, ChunkState::Verified);
    assert_eq!(
        recopied.attempt.0,
        held.attempt.0 + 1,
        "re-copied under a new attempt"
    );
    // The lost worker's late result is refused.
    let late = cluster
        .put_result(&stale, &ChunkResult::Cancelled)
        .await
        .expect("report");
    assert!(!late);
    leader.shutdown.cancel();
    helper.stop.cancel();
}

/// The leader's side played by the test: the job planned and stored, its spec
/// submitted, chunk `chunk` assigned to `worker` (attempt returned).
async fn assign(cluster: &InProcessCluster, worker: &str, chunk: u32) -> Attempt {
    let id = WorkerId(worker.into());
    let attempt = cluster
        .assign(&job(), ChunkId(chunk), &id)
        .await
        .expect("assign");
    cluster
        .put_assignment(&id, &job(), ChunkId(chunk), attempt, (0, 0), None)
        .await
        .expect("put assignment");
    attempt
}

async fn plan(cluster: &InProcessCluster, dir: &Path) {
    let spec = ferry_ctl::local::load_spec(&ferry_tests::write_spec(dir, SPEC), &HashMap::new())
        .expect("spec");
    let (source, sink) = ferry_tests::open_connectors(&spec).await;
    prepare_job(
        &spec,
        source.as_ref(),
        sink.as_ref(),
        cluster,
        Resume::AsStored,
    )
    .await
    .expect("plan");
    cluster.submit_job_spec(&job(), SPEC).await.expect("submit");
}

struct Agent {
    drain: CancellationToken,
    kill: CancellationToken,
    task: JoinHandle<()>,
}

fn start_agent(cluster: &InProcessCluster, name: &str, dir: &Path) -> Agent {
    let store: ClusterRef = Arc::new(cluster.clone());
    let options = AgentOptions {
        id: WorkerId(name.into()),
        slots: 2,
        ttl: Duration::from_secs(6),
        drain_timeout: Duration::from_secs(60),
        env: HashMap::new(),
        base_dir: dir.to_path_buf(),
        host: "test".into(),
        progress_interval: Duration::from_millis(100),
    };
    let (drain, kill) = (CancellationToken::new(), CancellationToken::new());
    let (state, _) = tokio::sync::watch::channel(WorkerState::Registering);
    let task = tokio::spawn({
        let (drain, kill) = (drain.clone(), kill.clone());
        async move {
            run_agent(store, options, drain, kill, state)
                .await
                .expect("agent ends cleanly");
        }
    });
    Agent { drain, kill, task }
}

fn target_rows(dir: &Path, range: &str) -> String {
    sqlite3(
        &dir.join("target.db"),
        &format!("SELECT count(*) FROM orders WHERE {range}"),
    )
}

fn result_of(cluster: &InProcessCluster, chunk: u32, attempt: Attempt) -> Option<ChunkResult> {
    let key = cluster.keys().result(&job(), ChunkId(chunk), attempt.0);
    cluster
        .watch_results(&CancellationToken::new())
        .borrow()
        .get(&key)
        .map(|result| result.result.clone())
}

#[tokio::test(start_paused = true)]
async fn an_agent_claims_copies_verifies_and_reports_its_assignment() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(dir.path());
    let cluster = InProcessCluster::in_memory().expect("cluster");
    plan(&cluster, dir.path()).await;
    let agent = start_agent(&cluster, "a1", dir.path());
    let attempt = assign(&cluster, "a1", 3).await;
    wait_until(WAIT, || result_of(&cluster, 3, attempt).is_some())
        .await
        .expect("a result");
    let result = result_of(&cluster, 3, attempt).expect("result");
    assert!(
        matches!(result, ChunkResult::Verified { rows: 100, .. }),
        "{result:?}"
    );
    assert!(
        cluster
            .live_workers()
            .await
            .expect("workers")
            .iter()
            .any(|w| w.id.0 == "a1")
    );
    // Chunk 3 owns ids 301..=400 (chunks of 100 from id 1); nothing else was written.
    assert_eq!(target_rows(dir.path(), "id BETWEEN 301 AND 400"), "100");
    assert_eq!(target_rows(dir.path(), "1"), "100");
    agent.kill.cancel();
    agent.task.await.expect("agent task");
}

// Real time: a paused job keeps the SQLite reader blocked, and tokio does not advance a
// paused clock while a blocking task runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_loses_its_lease_stops_writing_and_registers_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(dir.path());
    let cluster = InProcessCluster::in_memory().expect("cluster");
    plan(&cluster, dir.path()).await;
    // The job is paused: a started attempt waits before writing anything.
    set_pace(&cluster, true).await;
    let agent = start_agent(&cluster, "a1", dir.path());
    wait_until(WAIT, || {
        cluster.lease_of_worker(&WorkerId("a1".into())).is_some()
    })
    .await
    .expect("registered");
    let first_lease = cluster
        .lease_of_worker(&WorkerId("a1".into()))
        .expect("lease");
    let attempt = assign(&cluster, "a1", 0).await;
    wait_until(WAIT, || cluster.is_claimed(&job(), ChunkId(0)))
        .await
        .expect("the attempt started");
    cluster.expire_lease(first_lease);
    assert!(
        !cluster.is_claimed(&job(), ChunkId(0)),
        "the claim hung on the lease"
    );
    // What the leader does once the worker's lease is gone past the grace.
    cluster
        .withdraw_assignment(&WorkerId("a1".into()), &job(), ChunkId(0), attempt)
        .await
        .expect("withdraw");
    // It registers again under a new lease...
    wait_until(WAIT, || {
        cluster
            .lease_of_worker(&WorkerId("a1".into()))
            .is_some_and(|lease| lease != first_lease)
    })
    .await
    .expect("registered again");
    // ...and the fenced attempt neither reports nor commits once the job resumes.
    set_pace(&cluster, false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(result_of(&cluster, 0, attempt), None);
    assert_eq!(target_rows(dir.path(), "1"), "0", "the attempt rolled back");
    agent.kill.cancel();
    agent.task.await.expect("agent task");
}

async fn set_pace(cluster: &InProcessCluster, paused: bool) {
    cluster
        .put_pace(&JobPace {
            job: job(),
            paused,
            rows_per_sec: 0,
            bytes_per_sec: 0,
            pause_timeout: Duration::from_secs(600),
        })
        .await
        .expect("pace");
}

// Real time: a paused job keeps the SQLite reader blocked, and tokio does not advance a
// paused clock while a blocking task runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_agent_finishes_its_chunk_then_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(dir.path());
    let cluster = InProcessCluster::in_memory().expect("cluster");
    plan(&cluster, dir.path()).await;
    set_pace(&cluster, true).await;
    let agent = start_agent(&cluster, "a1", dir.path());
    let attempt = assign(&cluster, "a1", 5).await;
    wait_until(WAIT, || cluster.is_claimed(&job(), ChunkId(5)))
        .await
        .expect("the attempt started");
    cluster
        .request_drain(&WorkerId("a1".into()))
        .await
        .expect("drain");
    wait_until_async(WAIT, || async {
        cluster
            .live_workers()
            .await
            .expect("workers")
            .iter()
            .any(|worker| worker.id.0 == "a1" && worker.draining)
    })
    .await
    .expect("draining");
    // A new assignment during the drain is handed straight back; the running one ends.
    let refused = assign(&cluster, "a1", 6).await;
    wait_until(WAIT, || result_of(&cluster, 6, refused).is_some())
        .await
        .expect("handed back");
    set_pace(&cluster, false).await;
    tokio::time::timeout(WAIT, agent.task)
        .await
        .expect("the agent leaves")
        .expect("agent task");
    assert!(
        matches!(
            result_of(&cluster, 5, attempt),
            Some(ChunkResult::Verified { rows: 100, .. })
        ),
        "the running chunk was finished"
    );
    assert!(
        matches!(
            result_of(&cluster, 6, refused),
            Some(ChunkResult::Requeued { .. })
        ),
        "{:?}",
        result_of(&cluster, 6, refused)
    );
    assert!(cluster.live_workers().await.expect("workers").is_empty());
    assert_eq!(target_rows(dir.path(), "1"), "100");
    drop(agent.drain);
}
