//! Control API requests with empty, oversized or out-of-range fields, asked of a real
//! coordinator runtime (in process, through the gRPC service's own methods). Each is
//! refused with its gRPC code and a message naming the field and the fix, never
//! echoing a huge input; the job they were aimed at then runs to the end untouched.

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

use crate::common::{Failures, clip, create_sqlite_source, sqlite_fingerprint};

const SPEC: &str = "name: api\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: sqlite, path: target.db }\n\
                    tables: { include: [orders] }\nchunking: { target_rows: 100 }\n\
                    throttle: { default_concurrency: 1, rate: { rows_per_sec: 5 } }\n";

async fn leader(dir: &Path) -> (Arc<ClusterRuntime>, ControlService, CancellationToken) {
    let store: ClusterRef = Arc::new(InProcessCluster::in_memory().expect("cluster"));
    let runtime = ClusterRuntime::new(
        store.clone(),
        ClusterOptions {
            id: "api".into(),
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
    // One worker agent, so that the job runs.
    let options = ferry_worker::agent::AgentOptions {
        id: ferry_model::ids::WorkerId("w1".into()),
        slots: 1,
        ttl: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(10),
        env: HashMap::new(),
        base_dir: dir.to_path_buf(),
        host: "test".into(),
        progress_interval: Duration::from_millis(200),
    };
    let (state_tx, _state_rx) =
        tokio::sync::watch::channel(ferry_worker::agent::WorkerState::Registering);
    let (drain, kill) = (CancellationToken::new(), shutdown.child_token());
    tokio::spawn(async move {
        let _ = ferry_worker::agent::run_agent(store, options, drain, kill, state_tx).await;
    });
    let service = ControlService::with_cluster(runtime.clone(), runtime.clone() as Arc<_>);
    (runtime, service, shutdown)
}

fn expect<T: std::fmt::Debug>(
    failures: &mut Failures,
    cases: &mut usize,
    name: &str,
    outcome: Result<T, Status>,
    code: Code,
    needles: &[&str],
) {
    *cases += 1;
    match outcome {
        Ok(answer) => failures.check(name, false, || {
            format!("accepted: {}", clip(&format!("{answer:?}")))
        }),
        Err(status) => {
            crate::common::show(name, format!("{:?}", status.code()), status.message());
            failures.check(name, status.code() == code, || {
                format!(
                    "code {:?}, expected {code:?}: {}",
                    status.code(),
                    clip(status.message())
                )
            });
            failures.contains(name, "message", status.message(), needles);
            failures.check(name, status.message().len() < 2048, || {
                format!(
                    "the message is {} bytes long: the input was echoed",
                    status.message().len()
                )
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_requests_are_refused_with_their_code_and_the_job_still_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.db");
    create_sqlite_source(&source, 300);
    let before = sqlite_fingerprint(&source, "orders");
    let (runtime, service, shutdown) = leader(dir.path()).await;
    let mut failures = Failures::default();
    let mut cases = 0;
    let huge_name = "j".repeat(100 * 1024);

    service
        .submit_job(Request::new(pb::SubmitJobRequest {
            spec_yaml: SPEC.into(),
            ..Default::default()
        }))
        .await
        .expect("submitted");
    ferry_tests::wait_until(Duration::from_secs(20), || {
        runtime
            .running_pacer(&ferry_model::ids::JobId("api".into()))
            .is_some()
    })
    .await
    .expect("the job runs");

    let outcome = service
        .get_job(Request::new(pb::GetJobRequest {
            job_id: String::new(),
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "GetJob with an empty job_id",
        outcome,
        Code::InvalidArgument,
        &["job_id is empty", "ferryctl jobs"],
    );
    let outcome = service
        .get_job(Request::new(pb::GetJobRequest {
            job_id: huge_name.clone(),
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "GetJob with a 100 kB job_id",
        outcome,
        Code::InvalidArgument,
        &["job_id is 102400 characters long", "at most 64"],
    );
    let outcome = service
        .pause_job(Request::new(pb::PauseJobRequest {
            job_id: huge_name.clone(),
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "PauseJob with a 100 kB job_id",
        outcome,
        Code::InvalidArgument,
        &["job_id is 102400 characters long"],
    );
    let outcome = service
        .cancel_job(Request::new(pb::CancelJobRequest {
            job_id: String::new(),
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "CancelJob with an empty job_id",
        outcome,
        Code::InvalidArgument,
        &["job_id is empty"],
    );
    let outcome = service
        .watch_job(Request::new(pb::WatchJobRequest {
            job_id: huge_name.clone(),
        }))
        .await
        .map(|_| ());
    expect(
        &mut failures,
        &mut cases,
        "WatchJob with a 100 kB job_id",
        outcome,
        Code::InvalidArgument,
        &["job_id is 102400 characters long"],
    );
    let outcome = service
        .drain_worker(Request::new(pb::DrainWorkerRequest {
            worker_id: String::new(),
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "DrainWorker with an empty worker_id",
        outcome,
        Code::InvalidArgument,
        &["worker_id is empty", "ferryctl workers"],
    );
    let outcome = service
        .drain_worker(Request::new(pb::DrainWorkerRequest {
            worker_id: huge_name.clone(),
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "DrainWorker with a 100 kB worker_id",
        outcome,
        Code::InvalidArgument,
        &["worker_id is 102400 characters long"],
    );

    let outcome = service
        .submit_job(Request::new(pb::SubmitJobRequest {
            spec_yaml: String::new(),
            ..Default::default()
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "SubmitJob with an empty spec",
        outcome,
        Code::InvalidArgument,
        &["invalid spec", "the spec is empty"],
    );
    let outcome = service
        .submit_job(Request::new(pb::SubmitJobRequest {
            spec_yaml: SPEC.replace("name: api", &format!("name: {huge_name}")),
            ..Default::default()
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "SubmitJob with a 100 kB job name",
        outcome,
        Code::InvalidArgument,
        &["invalid spec", "name:", "1 to 64 characters"],
    );
    let outcome = service
        .submit_job(Request::new(pb::SubmitJobRequest {
            spec_yaml: format!("{SPEC}# {}\n", "x".repeat(10 << 20)),
            ..Default::default()
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "SubmitJob with a 10 MB spec",
        outcome,
        Code::InvalidArgument,
        &["at most 1048576 bytes"],
    );
    let outcome = service
        .submit_job(Request::new(pb::SubmitJobRequest {
            spec_yaml: SPEC.into(),
            ..Default::default()
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "SubmitJob of a job that exists",
        outcome,
        Code::AlreadyExists,
        &["job api exists already"],
    );

    let list = |page_size: u32, page_token: &str| pb::ListChunksRequest {
        job_id: "api".into(),
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    };
    let outcome = service.list_chunks(Request::new(list(0, "-5"))).await;
    expect(
        &mut failures,
        &mut cases,
        "ListChunks with a negative page token",
        outcome,
        Code::InvalidArgument,
        &[
            "page_token \"-5\" was not issued by ListChunks",
            "empty page_token",
        ],
    );
    let outcome = service.list_chunks(Request::new(list(0, &huge_name))).await;
    expect(
        &mut failures,
        &mut cases,
        "ListChunks with a 100 kB page token",
        outcome,
        Code::InvalidArgument,
        &["page_token", "was not issued by ListChunks"],
    );
    let outcome = service.list_chunks(Request::new(list(0, "99999999"))).await;
    expect(
        &mut failures,
        &mut cases,
        "ListChunks with a token past the end",
        outcome,
        Code::InvalidArgument,
        &["page_token \"99999999\" was not issued by ListChunks"],
    );
    cases += 1;
    match service.list_chunks(Request::new(list(u32::MAX, ""))).await {
        Ok(page) => failures.check(
            "ListChunks with page_size u32::MAX (capped, answered)",
            page.get_ref().chunks.len() == 3,
            || format!("{} chunks", page.get_ref().chunks.len()),
        ),
        Err(status) => failures.check(
            "ListChunks with page_size u32::MAX (capped, answered)",
            false,
            || format!("{status:?}"),
        ),
    }

    let recopy = |chunk_ids: Vec<u32>| pb::RecopyChunksRequest {
        job_id: "api".into(),
        chunk_ids,
        ..Default::default()
    };
    let outcome = service
        .recopy_chunks(Request::new(recopy(vec![999_999])))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "RecopyChunks of a chunk that does not exist",
        outcome,
        Code::InvalidArgument,
        &[
            "job api has no chunk 999999",
            "0 to 2",
            "ferryctl chunks api",
        ],
    );
    let outcome = service
        .recopy_chunks(Request::new(recopy(vec![u32::MAX])))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "RecopyChunks of chunk u32::MAX",
        outcome,
        Code::InvalidArgument,
        &["job api has no chunk 4294967295"],
    );
    let outcome = service
        .recopy_chunks(Request::new(recopy((0..100_000).collect())))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "RecopyChunks of 100,000 ids",
        outcome,
        Code::InvalidArgument,
        &["job api has no chunk 3"],
    );

    let throttle = || pb::UpdateThrottleRequest {
        job_id: "api".into(),
        ..Default::default()
    };
    let outcome = service
        .update_throttle(Request::new(pb::UpdateThrottleRequest {
            max_concurrency: Some(u32::MAX),
            ..throttle()
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "UpdateThrottle with max_concurrency u32::MAX",
        outcome,
        Code::InvalidArgument,
        &[
            "invalid throttle change",
            "max_concurrency",
            "must be at most 1024",
        ],
    );
    let outcome = service
        .update_throttle(Request::new(pb::UpdateThrottleRequest {
            rows_per_sec: Some(u64::MAX),
            ..throttle()
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "UpdateThrottle with rows_per_sec u64::MAX",
        outcome,
        Code::InvalidArgument,
        &[
            "invalid throttle change",
            "rows_per_sec",
            "must be at most 1000000000000",
        ],
    );
    let outcome = service
        .update_throttle(Request::new(pb::UpdateThrottleRequest {
            bytes_per_sec: Some(u64::MAX),
            ..throttle()
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "UpdateThrottle with bytes_per_sec u64::MAX",
        outcome,
        Code::InvalidArgument,
        &["invalid throttle change", "bytes_per_sec"],
    );
    let outcome = service
        .update_throttle(Request::new(pb::UpdateThrottleRequest {
            load_max: Some(f64::NAN),
            load_critical: Some(5.0),
            ..throttle()
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "UpdateThrottle with a NaN load_max",
        outcome,
        Code::InvalidArgument,
        &["invalid throttle change", "load"],
    );
    let outcome = service
        .update_throttle(Request::new(pb::UpdateThrottleRequest {
            load_max: Some(-1.0),
            load_critical: Some(-0.5),
            ..throttle()
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "UpdateThrottle with a negative load_max",
        outcome,
        Code::InvalidArgument,
        &["invalid throttle change", "load"],
    );
    let outcome = service
        .update_throttle(Request::new(pb::UpdateThrottleRequest {
            schedule_yaml: Some("[ { days: someday } ]".into()),
            ..throttle()
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "UpdateThrottle with a garbage schedule",
        outcome,
        Code::InvalidArgument,
        &["invalid throttle change", "someday"],
    );
    let outcome = service
        .update_throttle(Request::new(pb::UpdateThrottleRequest {
            schedule_yaml: Some(format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000))),
            ..throttle()
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "UpdateThrottle with a deeply nested schedule",
        outcome,
        Code::InvalidArgument,
        &["invalid throttle change", "nested too deeply"],
    );
    let outcome = service
        .get_throttle(Request::new(pb::GetThrottleRequest {
            job_id: "api".into(),
            at_unix_ms: Some(i64::MAX),
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "GetThrottle at i64::MAX",
        outcome,
        Code::InvalidArgument,
        &["at_unix_ms"],
    );
    let outcome = service
        .get_throttle(Request::new(pb::GetThrottleRequest {
            job_id: "api".into(),
            at_unix_ms: Some(i64::MIN),
        }))
        .await;
    expect(
        &mut failures,
        &mut cases,
        "GetThrottle at i64::MIN",
        outcome,
        Code::InvalidArgument,
        &["at_unix_ms"],
    );

    // Nothing above touched the job: lift the rate limit and it completes.
    let lifted = service
        .update_throttle(Request::new(pb::UpdateThrottleRequest {
            rows_per_sec: Some(0),
            ..throttle()
        }))
        .await;
    if let Err(status) = lifted {
        let job = service
            .get_job(Request::new(pb::GetJobRequest {
                job_id: "api".into(),
            }))
            .await;
        let chunks = service.list_chunks(Request::new(list(0, ""))).await;
        panic!(
            "the rate limit cannot be lifted ({status:?}): the job is {job:?}, chunks {chunks:?}"
        );
    }
    let done = ferry_tests::wait_until_async(Duration::from_secs(60), || async {
        matches!(
            service.get_job(Request::new(pb::GetJobRequest { job_id: "api".into() })).await,
            Ok(answer) if answer.get_ref().state == pb::JobState::Done as i32
        )
    })
    .await;
    failures.check("the job after the bad requests", done.is_ok(), || {
        "not DONE within 60 s".into()
    });
    failures.check(
        "the job after the bad requests",
        sqlite_fingerprint(&dir.path().join("target.db"), "orders") == before,
        || "the target does not hold the source's rows".into(),
    );
    failures.check(
        "the job after the bad requests",
        sqlite_fingerprint(&source, "orders") == before,
        || "the source changed".into(),
    );
    shutdown.cancel();
    failures.finish(cases);
}
