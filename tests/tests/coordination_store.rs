//! The coordination store conformance suite (`ferry_coordination::conformance`)
//! against `LocalStore` (in memory and on a file) and `EtcdStore` on a real etcd.
//!
//! The etcd tests need `FERRY_TEST_ETCD_ENDPOINTS` and fail without it:
//! `bash scripts/services.sh up && eval "$(bash scripts/services.sh env)"`.
//! Each etcd test works under its own prefix `/ferry-test/{random}/v1/` and deletes it
//! at the end, also when it fails.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use ferry_coordination::cluster_conformance::{
    check_a_live_worker_name_is_not_taken_over, check_drain_pace_jobs_and_recopy,
    check_one_leader_and_fenced_writes, check_registration_vanishes_with_its_lease,
    check_results_count_only_while_assigned, check_start_assigned_attempt_writes_both,
};
use ferry_coordination::conformance::{
    check_assign_bumps_attempt_and_refuses_non_planned, check_concurrent_assign_gives_one_winner,
    check_copied_waits_out_of_flight_for_its_verification, check_create_load_round_trip,
    check_etcd_batch_with_a_failed_compare_applies_the_rest,
    check_etcd_concurrent_changes_share_txns, check_etcd_corrupt_value_is_an_error,
    check_etcd_fenced_store_refuses_writes_after_leader_loss,
    check_etcd_interrupted_create_is_invisible, check_etcd_large_job_is_split_into_txns,
    check_policy_history_is_ordered, check_requeue_in_flight_and_reset_failed,
    check_split_chunk_only_before_it_starts, check_stale_attempt_cannot_complete, unique_suffix,
};
use ferry_coordination::{
    ClusterProtocol, Coordination, CoordinationError, EtcdStore, EtcdStoreOptions,
    InProcessCluster, LocalStore,
};
use futures::FutureExt;

/// Bound on one whole test (the machine has two cores; etcd runs beside the tests).
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Every check that both stores must pass.
async fn check_all(store: Arc<dyn Coordination>) {
    check_create_load_round_trip(store.as_ref()).await;
    check_assign_bumps_attempt_and_refuses_non_planned(store.as_ref()).await;
    check_stale_attempt_cannot_complete(store.as_ref()).await;
    check_copied_waits_out_of_flight_for_its_verification(store.as_ref()).await;
    check_requeue_in_flight_and_reset_failed(store.as_ref()).await;
    check_policy_history_is_ordered(store.as_ref()).await;
    check_split_chunk_only_before_it_starts(store.as_ref()).await;
    check_concurrent_assign_gives_one_winner(store, 20).await;
}

/// Every check of the cluster protocol; the backend must have no other campaigner.
async fn check_cluster(cluster: &dyn ClusterProtocol) {
    check_registration_vanishes_with_its_lease(cluster).await;
    check_a_live_worker_name_is_not_taken_over(cluster).await;
    check_one_leader_and_fenced_writes(cluster).await;
    check_results_count_only_while_assigned(cluster).await;
    check_start_assigned_attempt_writes_both(cluster).await;
    check_drain_pace_jobs_and_recopy(cluster).await;
}

async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {TEST_TIMEOUT:?}"));
}

fn etcd_endpoints() -> Vec<String> {
    match std::env::var("FERRY_TEST_ETCD_ENDPOINTS") {
        Ok(endpoints) if !endpoints.trim().is_empty() => endpoints
            .split(',')
            .map(|endpoint| endpoint.trim().to_owned())
            .collect(),
        _ => panic!(
            "FERRY_TEST_ETCD_ENDPOINTS is not set: the etcd coordination tests need a real etcd. \
             Start one with `bash scripts/services.sh up && eval \"$(bash scripts/services.sh env)\"` \
             (or `make test`), then run the tests again"
        ),
    }
}

/// Connects to the test etcd under a fresh prefix, runs `body`, then deletes the prefix
/// whether `body` passed, panicked or timed out.
async fn with_etcd_store<F, Fut>(options: EtcdStoreOptions, body: F)
where
    F: FnOnce(EtcdStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let endpoints = etcd_endpoints();
    let prefix = format!("/ferry-test/{}/v1", unique_suffix());
    let store = EtcdStore::connect(&endpoints, prefix.clone(), options)
        .await
        .unwrap_or_else(|error| panic!("connect to etcd at {endpoints:?}: {error}"));
    let outcome = AssertUnwindSafe(tokio::time::timeout(TEST_TIMEOUT, body(store.clone())))
        .catch_unwind()
        .await;
    let cleanup = store.delete_prefix().await;
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(_elapsed)) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
        Ok(Ok(())) => {}
    }
    let deleted = cleanup.unwrap_or_else(|error| panic!("delete test prefix {prefix}: {error}"));
    assert!(deleted > 0, "the test wrote under {prefix}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_in_memory_conforms() {
    let store = LocalStore::in_memory().expect("in-memory store");
    bounded(check_all(Arc::new(store))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_on_a_file_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let store = LocalStore::open(&path).expect("file store");
    bounded(check_all(Arc::new(store))).await;
    // What was written survives reopening the file.
    let reopened = LocalStore::open(&path).expect("reopen");
    bounded(check_create_load_round_trip(&reopened)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    with_etcd_store(EtcdStoreOptions::default(), |store| async move {
        check_all(Arc::new(store)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_cluster_conforms_as_a_store_and_a_cluster_protocol() {
    let cluster = InProcessCluster::in_memory().expect("in-memory cluster");
    bounded(check_all(Arc::new(cluster.clone()))).await;
    bounded(check_cluster(&cluster)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_cluster_on_a_file_keeps_jobs_and_requeues_what_was_in_flight() {
    use ferry_coordination::ChunkState;
    use ferry_coordination::conformance::sample_job;
    use ferry_model::ids::{ChunkId, JobId, WorkerId};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let job = JobId(format!("resume-{}", unique_suffix()));
    {
        let cluster = InProcessCluster::open(&path).expect("open");
        bounded(check_cluster(&cluster)).await;
        let (record, chunks) = sample_job(&job, 3);
        cluster.create_job(&record, &chunks).await.expect("create");
        cluster
            .submit_job_spec(&job, "name: resume\n")
            .await
            .expect("submit");
        cluster
            .assign(&job, ChunkId(1), &WorkerId("gone".into()))
            .await
            .expect("assign");
    }
    // A new process: the job and its spec are still there; the chunk that was in flight
    // (its worker died with the old process) is PLANNED again, and said so.
    let reopened = InProcessCluster::open(&path).expect("reopen");
    assert_eq!(reopened.requeued_at_open(&job), vec![ChunkId(1)]);
    let chunks = reopened.list_chunks(&job).await.expect("chunks");
    assert_eq!(chunks[1].state, ChunkState::Planned);
    assert_eq!(chunks[1].attempt.0, 1, "the next assignment is attempt 2");
    assert_eq!(
        reopened.job_spec(&job).await.expect("spec").as_deref(),
        Some("name: resume\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_protocol_conforms() {
    with_etcd_store(EtcdStoreOptions::default(), |store| async move {
        check_cluster(&store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_create_job_with_1000_chunks_is_split_into_txns_and_paged() {
    // Small pages so that listing the job takes several range requests.
    let options = EtcdStoreOptions {
        list_page_size: 300,
        ..EtcdStoreOptions::default()
    };
    with_etcd_store(options, |store| async move {
        check_etcd_large_job_is_split_into_txns(&store, 1_000).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_concurrent_chunk_changes_share_txns_and_a_stale_cache_is_not_trusted() {
    with_etcd_store(EtcdStoreOptions::default(), |store| async move {
        let other = EtcdStore::connect(
            &etcd_endpoints(),
            store.keys().prefix().to_owned(),
            EtcdStoreOptions::default(),
        )
        .await
        .expect("a second store on the same prefix");
        check_etcd_concurrent_changes_share_txns(&store, &other).await;
        check_etcd_batch_with_a_failed_compare_applies_the_rest(&store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_fenced_store_refuses_writes_after_leader_loss() {
    with_etcd_store(EtcdStoreOptions::default(), |store| async move {
        check_etcd_fenced_store_refuses_writes_after_leader_loss(&store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_interrupted_create_job_is_invisible_and_replaced() {
    with_etcd_store(EtcdStoreOptions::default(), |store| async move {
        check_etcd_interrupted_create_is_invisible(&store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_corrupt_value_is_an_error_not_a_panic() {
    with_etcd_store(EtcdStoreOptions::default(), |store| async move {
        check_etcd_corrupt_value_is_an_error(&store).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unreachable_is_a_retryable_error_within_the_timeout() {
    let options = EtcdStoreOptions {
        request_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        ..EtcdStoreOptions::default()
    };
    // Port 1 on loopback: nothing listens there.
    let endpoints = vec!["http://127.0.0.1:1".to_owned()];
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        EtcdStore::connect(&endpoints, "/ferry-test/unreachable/v1".into(), options),
    )
    .await
    .expect("connect gives up within its timeouts");
    match result {
        Err(error @ CoordinationError::Etcd { .. }) => {
            assert!(
                error.is_retryable(),
                "unreachable etcd is retryable: {error}"
            );
            assert!(
                error.to_string().contains("127.0.0.1:1"),
                "the error names the endpoint: {error}"
            );
        }
        Err(other) => panic!("unreachable etcd must be an Etcd error: {other}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A state file written before chunks kept their evidence (no `chunks.evidence` column)
/// opens, gains the column, and its chunks read with no evidence; new attempts keep it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_from_before_chunk_evidence_opens_and_keeps_it_from_then_on() {
    use ferry_coordination::conformance::sample_job;
    use ferry_coordination::{ChunkCompletion, ChunkEvidence};
    use ferry_model::checksum::RangeChecksum;
    use ferry_model::ids::{ChunkId, JobId, WorkerId};

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    let job = JobId("before-evidence".into());
    {
        let store = LocalStore::open(&path).expect("file store");
        let (record, chunks) = sample_job(&job, 2);
        store.create_job(&record, &chunks).await.expect("create");
    }
    // What an older ferry left: the table without the column (sqlite3, not ferry).
    let connection = rusqlite::Connection::open(&path).expect("open with rusqlite");
    connection
        .execute_batch("ALTER TABLE chunks DROP COLUMN evidence")
        .expect("drop the column");
    drop(connection);
    let store = LocalStore::open(&path).expect("an older state file opens");
    let (_, chunks) = store.load_job(&job).await.expect("load").expect("job");
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk.evidence == ChunkEvidence::default())
    );
    let worker = WorkerId("w-old".into());
    let attempt = store
        .assign(&job, ChunkId(0), &worker)
        .await
        .expect("assign");
    let checksum = RangeChecksum { rows: 3, sum: 7 };
    let record = store
        .complete(
            &job,
            ChunkId(0),
            attempt,
            &ChunkCompletion::Differs {
                source: checksum,
                target: RangeChecksum { rows: 2, sum: 5 },
            },
        )
        .await
        .expect("complete");
    assert!(record.differs());
    assert_eq!(record.evidence.worker, Some(worker));
    let (_, reread) = store.load_job(&job).await.expect("load").expect("job");
    assert_eq!(reread[0], record, "kept in the state file");
}
