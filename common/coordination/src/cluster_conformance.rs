//! The conformance suite of [`ClusterProtocol`]: `async fn check_*` functions that panic
//! with a message on a violation, run against [`InProcessCluster`](crate::InProcessCluster)
//! and [`EtcdStore`](crate::EtcdStore) on a real etcd by
//! `tests/tests/coordination_store.rs`. Each check uses its own job and worker names, so
//! checks may share a backend; the election checks need a backend nobody else campaigns
//! on (a fresh in-process cluster, or a fresh etcd prefix).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cluster::{
    AssignedChunk, Assignment, ChunkProgress, ClusterProtocol, JobPace, JobPhase, LeaderInfo,
    Mirror, WorkerInfo,
};
use crate::conformance::{sample_job, unique_suffix};
use crate::{ChunkCompletion, ChunkState, CoordinationError};
use ferry_model::checksum::RangeChecksum;
use ferry_model::execution::ChunkResult;
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};

/// How long a check waits for a mirror to show a change.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

fn unique(base: &str) -> String {
    format!("{base}-{}", unique_suffix())
}

fn worker_info(id: &WorkerId) -> WorkerInfo {
    WorkerInfo {
        id: id.clone(),
        slots: 2,
        draining: false,
        host: "conformance".into(),
        pid: 1,
        registered_at_unix_ms: 1,
    }
}

/// Waits until `mirror` satisfies `condition`, or panics naming `what`.
async fn wait_for<T>(
    mirror: &Mirror<T>,
    what: &str,
    condition: impl Fn(&std::collections::BTreeMap<Vec<u8>, T>) -> bool,
) {
    let mut mirror = mirror.clone();
    let waited = tokio::time::timeout(MIRROR_TIMEOUT, mirror.wait_for(|map| condition(map))).await;
    match waited {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => panic!("{what}: the mirror closed"),
        Err(_) => panic!("{what}: not seen within {MIRROR_TIMEOUT:?}"),
    }
}

/// A registration hangs on its lease: listed while the lease lives, gone (from the
/// list and the mirror) once it is revoked; the session then says not alive.
pub async fn check_registration_vanishes_with_its_lease(cluster: &dyn ClusterProtocol) {
    let cancel = CancellationToken::new();
    let id = WorkerId(unique("lease-worker"));
    let lease = cluster
        .start_lease(Duration::from_secs(10), &cancel)
        .await
        .expect("grant a lease");
    assert!(lease.is_alive(), "a fresh lease is alive");
    cluster
        .put_live_worker(&worker_info(&id), lease.id)
        .await
        .expect("register");
    let workers = cluster.watch_workers(&cancel);
    let key = cluster.keys().worker(&id);
    wait_for(&workers, "registration in the mirror", |map| {
        map.get(&key).is_some_and(|info| info.slots == 2)
    })
    .await;
    let live = cluster.live_workers().await.expect("list workers");
    assert!(live.iter().any(|info| info.id == id), "{live:?}");
    cluster.revoke_lease(lease.id).await.expect("revoke");
    wait_for(&workers, "registration gone with the lease", |map| {
        !map.contains_key(&key)
    })
    .await;
    let live = cluster.live_workers().await.expect("list workers");
    assert!(!live.iter().any(|info| info.id == id), "{live:?}");
    cancel.cancel();
}

/// A name belongs to one live worker: a second registration of it on another lease is
/// refused naming the holder, and changes nothing; the holder may re-register on its own
/// lease (draining); once the holder's lease is revoked, the name is free.
pub async fn check_a_live_worker_name_is_not_taken_over(cluster: &dyn ClusterProtocol) {
    let cancel = CancellationToken::new();
    let id = WorkerId(unique("one-name"));
    let first_lease = cluster
        .start_lease(Duration::from_secs(10), &cancel)
        .await
        .expect("lease");
    let second_lease = cluster
        .start_lease(Duration::from_secs(10), &cancel)
        .await
        .expect("lease");
    let first = WorkerInfo {
        host: "first-host".into(),
        pid: 111,
        ..worker_info(&id)
    };
    let second = WorkerInfo {
        host: "second-host".into(),
        pid: 222,
        slots: 7,
        ..worker_info(&id)
    };
    cluster
        .put_live_worker(&first, first_lease.id)
        .await
        .expect("register the first");
    let refused = cluster.put_live_worker(&second, second_lease.id).await;
    match &refused {
        Err(
            error @ CoordinationError::WorkerNameTaken {
                worker, host, pid, ..
            },
        ) => {
            assert_eq!((worker, host.as_str(), *pid), (&id, "first-host", 111));
            let message = error.to_string();
            assert!(
                message.contains("pid 111 on host first-host") && message.contains("--name"),
                "{message}"
            );
            assert!(!error.is_retryable());
        }
        other => panic!("a second worker of one name must be refused: {other:?}"),
    }
    let live = cluster.live_workers().await.expect("list");
    let holder = live
        .iter()
        .find(|info| info.id == id)
        .expect("the first stays");
    assert_eq!((holder.host.as_str(), holder.slots), ("first-host", 2));
    // The holder re-registers on its own lease (e.g. draining).
    cluster
        .put_live_worker(
            &WorkerInfo {
                draining: true,
                ..first.clone()
            },
            first_lease.id,
        )
        .await
        .expect("the holder re-registers");
    cluster.revoke_lease(first_lease.id).await.expect("revoke");
    cluster
        .put_live_worker(&second, second_lease.id)
        .await
        .expect("the name is free once the holder's lease ended");
    let live = cluster.live_workers().await.expect("list");
    let holder = live.iter().find(|info| info.id == id).expect("the second");
    assert_eq!(holder.host, "second-host");
    cluster.revoke_lease(second_lease.id).await.expect("revoke");
    cancel.cancel();
}

/// One leader at a time: the first campaign wins, a second waits until the first
/// resigns; the first term's fenced store is refused (`NotLeader`) from then on, and
/// the second term's is not.
pub async fn check_one_leader_and_fenced_writes(cluster: &dyn ClusterProtocol) {
    let cancel = CancellationToken::new();
    let first_lease = cluster
        .start_lease(Duration::from_secs(10), &cancel)
        .await
        .expect("lease");
    let second_lease = cluster
        .start_lease(Duration::from_secs(10), &cancel)
        .await
        .expect("lease");
    let first = LeaderInfo {
        id: "first".into(),
        address: "127.0.0.1:1".into(),
    };
    let second = LeaderInfo {
        id: "second".into(),
        address: "127.0.0.1:2".into(),
    };
    let first_term = cluster
        .campaign(&first, &first_lease, &cancel)
        .await
        .expect("campaign")
        .expect("won");
    assert_eq!(cluster.leader().await.expect("leader"), Some(first.clone()));
    assert!(cluster.holds(&first_term).await.expect("holds"));

    let waiting = CancellationToken::new();
    let lost = tokio::time::timeout(
        Duration::from_millis(700),
        cluster.campaign(&second, &second_lease, &waiting),
    )
    .await;
    assert!(
        lost.is_err(),
        "a second campaign waits while the first term holds"
    );

    let job = JobId(unique("fenced-job"));
    let fenced = cluster.fenced(&first_term);
    fenced
        .submit_job_spec(&job, "name: fenced\n")
        .await
        .expect("the leader writes");
    cluster.resign(&first_term).await.expect("resign");
    assert!(!cluster.holds(&first_term).await.expect("holds"));
    let second_term = cluster
        .campaign(&second, &second_lease, &cancel)
        .await
        .expect("campaign")
        .expect("won after the resignation");
    assert_ne!(second_term.create_revision, first_term.create_revision);
    let refused = fenced.set_job_phase(&job, JobPhase::Done, "").await;
    assert!(
        matches!(refused, Err(CoordinationError::NotLeader { .. })),
        "an old term's write is refused: {refused:?}"
    );
    let state = cluster.cluster_job(&job).await.expect("read").expect("job");
    assert_eq!(
        state.phase,
        JobPhase::Running,
        "nothing of the refused write"
    );
    cluster
        .fenced(&second_term)
        .set_job_phase(&job, JobPhase::Done, "")
        .await
        .expect("the new leader writes");
    cluster.resign(&second_term).await.expect("resign");
    cancel.cancel();
}

/// An attempt's start with its assignment: the chunk COPYING under the next attempt
/// and the assignment (with its rate, snapshot and the chunk's range) both written; an
/// assignment an earlier run left behind is replaced; a chunk not PLANNED is refused with nothing
/// written; after the attempt's completion the next start assigns attempt + 1.
pub async fn check_start_assigned_attempt_writes_both(cluster: &dyn ClusterProtocol) {
    let cancel = CancellationToken::new();
    let job = JobId(unique("start-job"));
    let id = WorkerId(unique("start-worker"));
    let (record, chunks) = sample_job(&job, 2);
    cluster.create_job(&record, &chunks).await.expect("create");
    let assignments = cluster.watch_assignments(&id, &cancel);
    let chunk = ChunkId(0);
    let attempt = cluster
        .start_assigned_attempt(&id, &job, chunk, (7, 9), Some("snap-1"))
        .await
        .expect("start");
    assert_eq!(attempt.0, 1);
    let stored = cluster
        .load_chunk(&job, chunk)
        .await
        .expect("load")
        .expect("chunk");
    assert_eq!(
        (stored.state, stored.attempt, stored.worker.clone()),
        (ChunkState::Copying, attempt, Some(id.clone()))
    );
    let key = cluster.keys().assignment(&id, &job, chunk);
    // It carries what the worker copies, so the worker does not read the record.
    let planned = AssignedChunk::of(&stored);
    assert_ne!(planned.range, chunks[1].range, "the sample's chunks differ");
    wait_for(&assignments, "the started attempt's assignment", |map| {
        map.get(&key).is_some_and(|assignment| {
            assignment.attempt == attempt
                && (assignment.rows_per_sec, assignment.bytes_per_sec) == (7, 9)
                && assignment.source_snapshot.as_deref() == Some("snap-1")
                && assignment.planned.as_ref() == Some(&planned)
        })
    })
    .await;
    let refused = cluster
        .start_assigned_attempt(&id, &job, chunk, (0, 0), None)
        .await;
    assert!(
        matches!(refused, Err(CoordinationError::InvalidTransition { .. })),
        "a chunk in flight is not started again: {refused:?}"
    );
    let after_refusal = cluster.load_chunk(&job, chunk).await.expect("load");
    assert_eq!(after_refusal.map(|chunk| chunk.attempt), Some(attempt));
    cluster
        .complete(
            &job,
            chunk,
            attempt,
            &ChunkCompletion::Retry {
                reason: "again".into(),
                mismatch: false,
            },
        )
        .await
        .expect("complete");
    let next = cluster
        .start_assigned_attempt(&id, &job, chunk, (0, 0), None)
        .await
        .expect("start again");
    assert_eq!(next.0, 2);
    wait_for(&assignments, "the next attempt's assignment", |map| {
        map.get(&key)
            .is_some_and(|assignment| assignment.attempt == next)
    })
    .await;

    // An assignment of chunk 1 left by an earlier run (attempt 5): replaced.
    let left = ChunkId(1);
    cluster
        .put_assignment(&id, &job, left, ferry_model::ids::Attempt(5), (0, 0), None)
        .await
        .expect("leftover");
    let fresh = cluster
        .start_assigned_attempt(&id, &job, left, (0, 0), None)
        .await
        .expect("start over a leftover");
    let left_key = cluster.keys().assignment(&id, &job, left);
    wait_for(&assignments, "the leftover replaced", |map| {
        map.get(&left_key)
            .is_some_and(|assignment| assignment.attempt == fresh)
    })
    .await;
    cancel.cancel();
}

/// A worker's result counts only while its assignment stands: claimed and reported
/// while assigned; refused once withdrawn; a new attempt's assignment replaces an old
/// one; completing the attempt withdraws it.
pub async fn check_results_count_only_while_assigned(cluster: &dyn ClusterProtocol) {
    let cancel = CancellationToken::new();
    let job = JobId(unique("assigned-job"));
    let id = WorkerId(unique("assigned-worker"));
    let (record, chunks) = sample_job(&job, 3);
    cluster.create_job(&record, &chunks).await.expect("create");
    let lease = cluster
        .start_lease(Duration::from_secs(10), &cancel)
        .await
        .expect("lease");
    cluster
        .put_live_worker(&worker_info(&id), lease.id)
        .await
        .expect("register");
    let assignments = cluster.watch_assignments(&id, &cancel);
    let results = cluster.watch_results(&cancel);
    let chunk = ChunkId(0);
    let attempt = cluster.assign(&job, chunk, &id).await.expect("assign");
    // The job's source snapshot (`consistency: job_snapshot`) travels with the attempt.
    // Written, then the same attempt again: adopted, not written anew.
    for what in ["put assignment", "adopt assignment"] {
        cluster
            .put_assignment(
                &id,
                &job,
                chunk,
                attempt,
                (100, 0),
                Some("00000003-0000001B-1"),
            )
            .await
            .expect(what);
    }
    let key = cluster.keys().assignment(&id, &job, chunk);
    wait_for(&assignments, "assignment seen by its worker", |map| {
        map.get(&key).is_some_and(|assignment| {
            assignment.attempt == attempt
                && assignment.rows_per_sec == 100
                && assignment.source_snapshot.as_deref() == Some("00000003-0000001B-1")
        })
    })
    .await;
    let seen: Assignment = assignments.borrow().get(&key).cloned().expect("assignment");
    assert!(cluster.claim(&seen, lease.id).await.expect("claim"));
    let progress = ChunkProgress {
        job: job.clone(),
        chunk,
        attempt,
        worker: id.clone(),
        rows: 42,
        verifying: false,
    };
    cluster
        .put_progress(&progress, lease.id)
        .await
        .expect("progress");
    let progress_mirror = cluster.watch_progress(&cancel);
    let progress_key = cluster.keys().progress(&job, chunk);
    wait_for(&progress_mirror, "progress", |map| {
        map.get(&progress_key).is_some_and(|seen| seen.rows == 42)
    })
    .await;

    // Withdrawn: the worker's late result is refused.
    cluster
        .withdraw_assignment(&id, &job, chunk, attempt)
        .await
        .expect("withdraw");
    let verified = ChunkResult::Verified {
        rows: 42,
        checksum: RangeChecksum { rows: 42, sum: 7 },
        sync: None,
    };
    assert!(
        !cluster.put_result(&seen, &verified).await.expect("report"),
        "a withdrawn assignment's result is refused"
    );
    wait_for(&assignments, "withdrawn assignment gone", |map| {
        !map.contains_key(&key)
    })
    .await;

    // A new attempt: its result counts; completing it withdraws the assignment, and a
    // late duplicate is refused.
    let other = ChunkId(1);
    let next = cluster.assign(&job, other, &id).await.expect("assign");
    cluster
        .put_assignment(&id, &job, other, next, (0, 0), None)
        .await
        .expect("put assignment");
    let other_key = cluster.keys().assignment(&id, &job, other);
    wait_for(&assignments, "second assignment", |map| {
        map.contains_key(&other_key)
    })
    .await;
    let standing = assignments
        .borrow()
        .get(&other_key)
        .cloned()
        .expect("assignment");
    assert_eq!(standing.source_snapshot, None, "no snapshot: none carried");
    assert!(!standing.give_back, "nobody asked for it back yet");
    // Asked back: the assignment is rewritten in place (same revision, so its worker's
    // result still counts); another attempt or a withdrawn assignment is not asked.
    assert!(
        cluster
            .request_give_back(&id, &job, other, next)
            .await
            .expect("ask it back")
    );
    assert!(
        !cluster
            .request_give_back(&id, &job, other, Attempt(next.0 + 1))
            .await
            .expect("ask another attempt back")
    );
    assert!(
        !cluster
            .request_give_back(&id, &job, chunk, attempt)
            .await
            .expect("ask a withdrawn assignment back")
    );
    wait_for(&assignments, "the request seen by its worker", |map| {
        map.get(&other_key).is_some_and(|seen| seen.give_back)
    })
    .await;
    let asked = assignments
        .borrow()
        .get(&other_key)
        .cloned()
        .expect("assignment");
    assert_eq!(asked.revision, standing.revision, "rewritten in place");
    assert!(cluster.claim(&standing, lease.id).await.expect("claim"));
    assert!(
        cluster
            .put_result(&standing, &verified)
            .await
            .expect("report")
    );
    let result_key = cluster.keys().result(&job, other, next.0);
    wait_for(&results, "result", |map| {
        map.get(&result_key)
            .is_some_and(|result| result.result == verified && result.worker == id)
    })
    .await;
    cluster
        .report_state(&job, other, next, ChunkState::Copying)
        .await
        .expect("copying");
    cluster
        .complete(
            &job,
            other,
            next,
            &ChunkCompletion::Verified {
                rows: 42,
                checksum: RangeChecksum { rows: 42, sum: 7 },
                sync: None,
            },
        )
        .await
        .expect("complete");
    wait_for(&assignments, "completion withdraws the assignment", |map| {
        !map.contains_key(&other_key)
    })
    .await;
    assert!(
        !cluster
            .put_result(&standing, &verified)
            .await
            .expect("report"),
        "a completed attempt's late result is refused"
    );
    cluster.revoke_lease(lease.id).await.expect("revoke");
    cancel.cancel();
}

/// Drain requests reach their worker only, and are consumed once; a job's pace is
/// published and removed; submitted jobs are listed, refused twice, and their state
/// changes; an unknown job's state cannot be set; only ended chunks are re-copied.
pub async fn check_drain_pace_jobs_and_recopy(cluster: &dyn ClusterProtocol) {
    let cancel = CancellationToken::new();
    let draining = WorkerId(unique("drain-me"));
    let bystander = WorkerId(unique("drain-not-me"));
    let requests = cluster.watch_drain_requests(&draining, &cancel);
    let others = cluster.watch_drain_requests(&bystander, &cancel);
    cluster.request_drain(&draining).await.expect("request");
    wait_for(&requests, "drain request", |map| !map.is_empty()).await;
    assert!(others.borrow().is_empty(), "another worker's request");
    assert!(cluster.take_drain_request(&draining).await.expect("take"));
    assert!(
        !cluster
            .take_drain_request(&draining)
            .await
            .expect("take again")
    );
    wait_for(&requests, "drain request consumed", |map| map.is_empty()).await;

    let job = JobId(unique("pace-job"));
    let paces = cluster.watch_pace(&cancel);
    let pace = JobPace {
        job: job.clone(),
        paused: true,
        rows_per_sec: 10,
        bytes_per_sec: 0,
        pause_timeout: Duration::from_secs(30),
    };
    cluster.put_pace(&pace).await.expect("pace");
    let pace_key = cluster.keys().pace(&job);
    wait_for(&paces, "pace", |map| map.get(&pace_key) == Some(&pace)).await;
    cluster.delete_pace(&job).await.expect("delete pace");
    wait_for(&paces, "pace removed", |map| !map.contains_key(&pace_key)).await;

    cluster
        .submit_job_spec(&job, "name: pace\n")
        .await
        .expect("submit");
    let again = cluster.submit_job_spec(&job, "name: pace\n").await;
    assert!(
        matches!(again, Err(CoordinationError::AlreadyExists { .. })),
        "{again:?}"
    );
    assert_eq!(
        cluster.job_spec(&job).await.expect("spec").as_deref(),
        Some("name: pace\n")
    );
    cluster
        .set_job_phase(&job, JobPhase::Failed, "two chunks failed")
        .await
        .expect("phase");
    let listed = cluster.list_cluster_jobs().await.expect("list");
    let state = listed.iter().find(|state| state.id == job).expect("listed");
    assert_eq!(
        (state.phase, state.reason.as_str()),
        (JobPhase::Failed, "two chunks failed")
    );
    let unknown = cluster
        .set_job_phase(&JobId(unique("never")), JobPhase::Done, "")
        .await;
    assert!(
        matches!(unknown, Err(CoordinationError::NotFound { .. })),
        "{unknown:?}"
    );

    let (record, chunks) = sample_job(&job, 3);
    cluster.create_job(&record, &chunks).await.expect("create");
    let id = WorkerId(unique("recopy-worker"));
    for chunk in [ChunkId(0), ChunkId(1)] {
        let attempt = cluster.assign(&job, chunk, &id).await.expect("assign");
        cluster
            .complete(
                &job,
                chunk,
                attempt,
                &ChunkCompletion::Verified {
                    rows: 5,
                    checksum: RangeChecksum { rows: 5, sum: 1 },
                    sync: None,
                },
            )
            .await
            .expect("complete");
    }
    let in_flight = cluster.assign(&job, ChunkId(2), &id).await.expect("assign");
    let changed = cluster
        .recopy_chunks(&job, &[ChunkId(0), ChunkId(2)])
        .await
        .expect("recopy");
    assert_eq!(
        changed,
        vec![ChunkId(0)],
        "only an ended chunk is re-copied"
    );
    let stored = cluster.list_chunks(&job).await.expect("chunks");
    assert_eq!(stored[0].state, ChunkState::Planned);
    assert_eq!((stored[0].rows, stored[0].checksum), (0, None));
    assert_eq!(stored[1].state, ChunkState::Verified);
    assert_eq!(
        (stored[2].state, stored[2].attempt),
        (ChunkState::Assigned, in_flight)
    );
    cancel.cancel();
}
