//! Every refusal of the Control API, asked of a real coordinator runtime (in process,
//! on the in-process cluster protocol, through the gRPC service's own methods): each
//! names what is wrong, with the gRPC code a client acts on.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_coordination::{ClusterRef, InProcessCluster};
use ferry_coordinator::cluster::runtime::{ClusterOptions, ClusterRuntime, CoordinatorRole};
use ferry_coordinator::service::control::ControlService;
use ferry_proto::v1 as pb;
use ferry_proto::v1::control_server::Control;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status};

const SPEC: &str = "name: errs\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: sqlite, path: target.db }\n\
                    tables: { include: [orders] }\nchunking: { target_rows: 100 }\n\
                    throttle: { rate: { rows_per_sec: 1 } }\n";

/// A leading coordinator runtime over a fresh in-process cluster, with a running job
/// `errs` (held at 1 row/s) when `with_job`; and its Control service.
async fn leader(dir: &Path) -> (Arc<ClusterRuntime>, ControlService, CancellationToken) {
    leader_on(dir, InProcessCluster::in_memory().expect("cluster")).await
}

/// [`leader`] over the given cluster.
async fn leader_on(
    dir: &Path,
    cluster: InProcessCluster,
) -> (Arc<ClusterRuntime>, ControlService, CancellationToken) {
    let connection = rusqlite::Connection::open(dir.join("source.db")).expect("source");
    connection
        .execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO orders VALUES (1, 'a'), (2, 'b');",
        )
        .expect("fill");
    let store: ClusterRef = Arc::new(cluster);
    let runtime = ClusterRuntime::new(
        store,
        ClusterOptions {
            id: "errs".into(),
            address: "127.0.0.1:1".into(),
            lease_ttl: Duration::from_secs(10),
            worker_ttl: Duration::from_secs(10),
            grace: Duration::from_secs(2),
            compact_interval: Duration::ZERO,
            keep_revisions: 0,
            env: HashMap::new(),
            base_dir: dir.to_path_buf(),
            database_caps: Default::default(),
        },
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(runtime.clone().run(shutdown.clone()));
    let mut role = runtime.watch_role();
    tokio::time::timeout(
        Duration::from_secs(10),
        role.wait_for(|role| *role == CoordinatorRole::Leading),
    )
    .await
    .expect("leads in time")
    .expect("runtime alive");
    let service = ControlService::with_cluster(runtime.clone(), runtime.clone() as Arc<_>);
    (runtime, service, shutdown)
}

fn refused<T: std::fmt::Debug>(outcome: Result<T, Status>, code: Code, needles: &[&str]) {
    let status = outcome.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "{needle:?} missing from: {}",
            status.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_names_what_is_wrong_with_its_grpc_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (runtime, service, shutdown) = leader(dir.path()).await;

    // An invalid spec: every problem, with its field.
    let invalid = service
        .submit_job(Request::new(pb::SubmitJobRequest {
            spec_yaml:
                "name: errs\nsource: { kind: nosuch, path: a.db }\nchunking: { target_rows: 0 }\n"
                    .into(),
            ..Default::default()
        }))
        .await;
    refused(
        invalid,
        Code::InvalidArgument,
        &[
            "invalid spec",
            "source.kind",
            "chunking.target_rows",
            "target",
        ],
    );

    // A spec whose table does not exist is refused at planning, naming the table.
    let unplannable = service
        .submit_job(Request::new(pb::SubmitJobRequest {
            spec_yaml: SPEC.replace("[orders]", "[missing]"),
            ..Default::default()
        }))
        .await;
    refused(
        unplannable,
        Code::InvalidArgument,
        &["invalid spec", "missing"],
    );

    // Unknown job, for every job operation.
    let unknown_job = service
        .get_job(Request::new(pb::GetJobRequest {
            job_id: "nope".into(),
        }))
        .await;
    refused(unknown_job, Code::NotFound, &["job \"nope\" is not known"]);
    let unknown_chunks = service
        .list_chunks(Request::new(pb::ListChunksRequest {
            job_id: "nope".into(),
            ..Default::default()
        }))
        .await;
    refused(
        unknown_chunks,
        Code::NotFound,
        &["job \"nope\" is not known"],
    );

    // Unknown worker.
    let unknown_worker = service
        .drain_worker(Request::new(pb::DrainWorkerRequest {
            worker_id: "w9".into(),
        }))
        .await;
    refused(
        unknown_worker,
        Code::NotFound,
        &["worker \"w9\" is not live", "ferryctl workers"],
    );

    // A real job, then bad arguments about it.
    service
        .submit_job(Request::new(pb::SubmitJobRequest {
            spec_yaml: SPEC.into(),
            ..Default::default()
        }))
        .await
        .expect("submitted");
    let again = service
        .submit_job(Request::new(pb::SubmitJobRequest {
            spec_yaml: SPEC.into(),
            ..Default::default()
        }))
        .await;
    refused(again, Code::AlreadyExists, &["job errs exists already"]);
    let bad_token = service
        .list_chunks(Request::new(pb::ListChunksRequest {
            job_id: "errs".into(),
            page_token: "not-a-token".into(),
            ..Default::default()
        }))
        .await;
    refused(
        bad_token,
        Code::InvalidArgument,
        &["page_token \"not-a-token\" was not issued by ListChunks"],
    );
    let bad_state = service
        .list_chunks(Request::new(pb::ListChunksRequest {
            job_id: "errs".into(),
            state: "DONE".into(),
            ..Default::default()
        }))
        .await;
    refused(
        bad_state,
        Code::InvalidArgument,
        &["invalid request", "unknown chunk state \"DONE\""],
    );
    let bad_table = service
        .recopy_chunks(Request::new(pb::RecopyChunksRequest {
            job_id: "errs".into(),
            table: "nosuch".into(),
            ..Default::default()
        }))
        .await;
    refused(
        bad_table,
        Code::InvalidArgument,
        &["invalid request", "job errs has no table nosuch"],
    );
    let two_selectors = service
        .recopy_chunks(Request::new(pb::RecopyChunksRequest {
            job_id: "errs".into(),
            table: "orders".into(),
            state: "FAILED".into(),
            ..Default::default()
        }))
        .await;
    refused(
        two_selectors,
        Code::InvalidArgument,
        &["exactly one selector"],
    );
    // An invalid throttle change, once the job runs.
    ferry_tests::wait_until(Duration::from_secs(20), || {
        runtime
            .running_pacer(&ferry_model::ids::JobId("errs".into()))
            .is_some()
    })
    .await
    .expect("the job runs");
    let bad_throttle = service
        .update_throttle(Request::new(pb::UpdateThrottleRequest {
            job_id: "errs".into(),
            max_concurrency: Some(0),
            ..Default::default()
        }))
        .await;
    refused(
        bad_throttle,
        Code::InvalidArgument,
        &["invalid throttle change"],
    );
    shutdown.cancel();
}

/// A submit whose spec was stored but whose plan could not be (the store stopped
/// answering in between) is accepted, not refused: the leader plans the stored spec, the
/// job runs, and sending the spec again is then refused as a job that exists. Before,
/// the first answer was an error while the job ran anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_whose_plan_was_not_stored_is_accepted_and_the_job_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = InProcessCluster::in_memory().expect("cluster");
    let (runtime, service, shutdown) = leader_on(dir.path(), cluster.clone()).await;
    cluster.fail_next_job_creation();
    let spec = SPEC.replace("name: errs", "name: flaky");
    let answer = service
        .submit_job(Request::new(pb::SubmitJobRequest {
            spec_yaml: spec.clone(),
            dry_run: false,
        }))
        .await
        .expect("accepted although the plan was not stored");
    assert!(answer.into_inner().submitted);
    ferry_tests::wait_until(Duration::from_secs(20), || {
        runtime
            .running_pacer(&ferry_model::ids::JobId("flaky".into()))
            .is_some()
    })
    .await
    .expect("the leader plans the stored spec and runs the job");
    let again = service
        .submit_job(Request::new(pb::SubmitJobRequest {
            spec_yaml: spec,
            dry_run: false,
        }))
        .await;
    refused(again, Code::AlreadyExists, &["job flaky exists already"]);
    shutdown.cancel();
}
