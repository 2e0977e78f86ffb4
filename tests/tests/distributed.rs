//! Distributed mode with real processes: `ferry-coordinator` and `ferry-worker` started
//! as children, the etcd of `scripts/services.sh` (each test in a cluster prefix of its
//! own), and PostgreSQL databases of their own. Every test ends with an independent
//! comparison of source and target through `psql` (row counts and an md5 over every
//! row's text, in key order), not ferry's checksum.
//!
//! Chunks are slowed to a known pace with the job's rate limit (each attempt carries its
//! share), so that a process can be killed while it holds a chunk.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_coordination::keys::KeyLayout;
use ferry_proto::v1 as pb;
use ferry_tests::cluster::*;
use ferry_tests::free_port;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_and_three_workers_copy_a_multi_table_job() {
    let tables = [
        ("orders", 120_000),
        ("customers", 40_000),
        ("events", 20_000),
    ];
    let mut cluster = Cluster::new(&tables);
    let address = cluster.start_coordinator("coord-a");
    let metrics: Vec<_> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|worker| (worker, cluster.start_worker_metered(worker, 2)))
        .collect();
    let job = "dist-a";
    submit(&address, &cluster.spec(job, 10_000, 60_000, 6)).await;
    let status = wait_done(&address, job, Duration::from_secs(120)).await;
    assert_done(&status);
    assert!(status.chunks_total >= 18, "planned {status:?}");
    cluster.assert_same(&["orders", "customers", "events"]);
    assert_each_streamed_rows(&metrics);
}

/// Every worker took part: each streamed rows into the target (its own
/// `ferry_worker_rows_total`), and together they streamed at least the job's rows.
fn assert_each_streamed_rows(workers: &[(&str, String)]) {
    for (worker, metrics) in workers {
        let rows = metric(metrics, "ferry_worker_rows_total");
        assert!(
            rows.is_some_and(|rows| rows > 0.0),
            "worker {worker} streamed no rows: {rows:?}"
        );
    }
}

/// Waits until `count` workers are registered with the coordinator at `address`.
async fn wait_workers(address: &str, count: usize) {
    ferry_tests::wait_until_async(Duration::from_secs(60), || async {
        client(address)
            .await
            .list_workers(pb::ListWorkersRequest {})
            .await
            .is_ok_and(|answer| answer.into_inner().workers.len() == count)
    })
    .await
    .unwrap_or_else(|_| panic!("{count} workers registered within 60 s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_a_worker_killed_mid_chunk_has_its_chunk_recopied_by_another() {
    let mut cluster = Cluster::new(&[("orders", 80_000)]);
    let address = cluster.start_coordinator("coord-b");
    cluster.start_worker("victim", 1);
    let job = "dist-b";
    // One chunk at a time at 5,000 rows/s: a 10,000-row chunk takes 2 s.
    submit(&address, &cluster.spec(job, 10_000, 5_000, 1)).await;
    let chunk = wait_copying_on(&address, job, "victim").await;
    cluster.start_worker("survivor", 2);
    wait_workers(&address, 2).await;
    cluster.signal("victim", "KILL");
    // Speed up the rest once the kill is done.
    lift_rate_limit(&address, job).await;
    let status = wait_done(&address, job, Duration::from_secs(90)).await;
    assert_done(&status);
    assert_rerun_after_loss(&address, job, chunk, "victim").await;
    cluster.assert_same(&["orders"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_a_worker_added_mid_job_gets_chunks_and_a_drained_worker_exits_cleanly() {
    let mut cluster = Cluster::new(&[("orders", 60_000)]);
    let address = cluster.start_coordinator("coord-e");
    cluster.start_worker("first", 1);
    let job = "dist-e";
    submit(&address, &cluster.spec(job, 6_000, 6_000, 2)).await;
    let held = wait_copying_on(&address, job, "first").await;
    cluster.start_worker("late", 1);
    wait_copying_on(&address, job, "late").await;
    // SIGTERM: drain. The chunk `first` holds is finished (or handed back), not lost.
    cluster.signal("first", "TERM");
    let code = cluster.wait_exit("first", Duration::from_secs(40));
    assert_eq!(code, Some(0), "a drained worker exits 0");
    let status = wait_done(&address, job, Duration::from_secs(120)).await;
    assert_done(&status);
    let record = chunks(&address, job)
        .await
        .into_iter()
        .find(|c| c.id == held)
        .expect("the drained chunk");
    assert_eq!(record.state, "VERIFIED");
    cluster.assert_same(&["orders"]);
    // An operator's drain request (`ferryctl drain`) reaches an idle worker too.
    client(&address)
        .await
        .drain_worker(pb::DrainWorkerRequest {
            worker_id: "late".to_owned(),
        })
        .await
        .expect("drain the late worker");
    let code = cluster.wait_exit("late", Duration::from_secs(20));
    assert_eq!(code, Some(0), "a drained worker exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g_every_coordinator_stopped_then_one_started_resumes_without_recopying() {
    let mut cluster = Cluster::new(&[("orders", 60_000)]);
    let address = cluster.start_coordinator("coord-g1");
    cluster.start_worker("w1", 2);
    let job = "dist-g";
    submit(&address, &cluster.spec(job, 5_000, 10_000, 2)).await;
    // Let a few chunks end their copy (COPIED: the key is deferred, so they are verified
    // only once the table's last chunk is copied), then stop the only coordinator while
    // the job still runs.
    let copied = || async {
        chunks(&address, job)
            .await
            .into_iter()
            .filter(|c| c.state == "COPIED" || c.state == "VERIFIED")
            .collect::<Vec<_>>()
    };
    ferry_tests::wait_until_async(Duration::from_secs(60), || async {
        copied().await.len() >= 2
    })
    .await
    .expect("two chunks copied within 60 s");
    let verified_before = copied().await;
    let running = status(&address, job).await.expect("status");
    assert_eq!(
        pb::JobState::try_from(running.state),
        Ok(pb::JobState::Running),
        "the job must still run when its coordinator is killed: {running:?}"
    );
    cluster.signal("coord-g1", "KILL");
    cluster.wait_exit("coord-g1", Duration::from_secs(10));
    // The cluster runs without any coordinator for a while (the scenario, not a wait for
    // a condition): the worker keeps its attempts until their leases say otherwise.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let address = cluster.start_coordinator("coord-g2");
    // Faster from here on (the policy is kept in etcd; an operator lifts the limit),
    // once the new coordinator leads (a standby refuses the change).
    let lifted = ferry_tests::wait_until_async(Duration::from_secs(30), || async {
        client(&address)
            .await
            .update_throttle(pb::UpdateThrottleRequest {
                job_id: job.to_owned(),
                rows_per_sec: Some(0),
                ..Default::default()
            })
            .await
            .is_ok()
    })
    .await;
    assert!(lifted.is_ok(), "the new coordinator never led");
    let status = wait_done(&address, job, Duration::from_secs(120)).await;
    assert_done(&status);
    let after = chunks(&address, job).await;
    for before in &verified_before {
        let now = after.iter().find(|c| c.id == before.id).expect("chunk");
        assert_eq!(
            now.attempt, before.attempt,
            "chunk {} was copied before the restart and copied again",
            before.id
        );
    }
    cluster.assert_same(&["orders"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_the_standby_takes_over_when_the_leader_is_killed() {
    let mut cluster = Cluster::new(&[("orders", 60_000)]);
    let (leader, leader_metrics) = cluster.start_coordinator_metered("coord-c1", &[]);
    // Let the first one win the election before the standby starts.
    wait_leading(&leader_metrics, Duration::from_secs(10)).await;
    let (standby, standby_metrics) = cluster.start_coordinator_metered("coord-c2", &[]);
    cluster.start_worker("w1", 2);
    let job = "dist-c";
    submit(&leader, &cluster.spec(job, 5_000, 8_000, 2)).await;
    wait_copying_on(&leader, job, "w1").await;
    // A standby answers reads, and refuses writes naming the leader.
    assert!(
        status(&standby, job).await.is_some(),
        "the standby answers GetJob"
    );
    let mut control = client(&standby).await;
    let refused = control
        .cancel_job(pb::CancelJobRequest {
            job_id: job.to_owned(),
        })
        .await
        .expect_err("a standby refuses writes");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains(&leader), "{refused:?}");

    let killed = Instant::now();
    cluster.signal("coord-c1", "KILL");
    wait_leading(&standby_metrics, Duration::from_secs(2 * TTL + 2)).await;
    let took_over = killed.elapsed();
    assert!(
        took_over <= Duration::from_secs(2 * TTL),
        "the standby led {took_over:?} after the kill (limit 2 x TTL)"
    );
    let status = wait_done(&standby, job, Duration::from_secs(120)).await;
    assert_done(&status);
    cluster.assert_same(&["orders"]);
}

/// An etcd of the test's own (so it can be stopped without disturbing other tests), on
/// free loopback ports, restartable on the same data directory.
struct PrivateEtcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl PrivateEtcd {
    fn start() -> PrivateEtcd {
        let mut etcd = PrivateEtcd {
            dir: tempfile::tempdir().expect("tempdir"),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        etcd.restart();
        etcd
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn restart(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let child = Command::new("etcd")
            .args([
                "--name",
                "ferry-test",
                "--data-dir",
                &self.dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("ferry-test={peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian package etcd-server; scripts/services.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_etcd_restarted_mid_job_the_cluster_reconnects_and_completes() {
    let mut etcd = PrivateEtcd::start();
    let mut cluster = Cluster::with_etcd(&[("orders", 60_000)], etcd.endpoint());
    let (address, coordinator_metrics) = cluster.start_coordinator_metered("coord-f", &[]);
    let workers = [
        ("w1", cluster.start_worker_metered("w1", 2)),
        ("w2", cluster.start_worker_metered("w2", 2)),
    ];
    let job = "dist-f";
    submit(&address, &cluster.spec(job, 5_000, 10_000, 4)).await;
    // Mid-job: a chunk copied (with the key deferred, chunks are VERIFIED only once the
    // table's last one is copied), the job still running (12 chunks at 10,000 rows/s
    // take 6 s at least).
    ferry_tests::wait_until_async(Duration::from_secs(60), || async {
        chunks(&address, job)
            .await
            .iter()
            .any(|c| c.state == "COPIED" || c.state == "VERIFIED")
    })
    .await
    .expect("no chunk copied in 60 s");
    let running = status(&address, job).await.expect("status");
    assert_eq!(
        pb::JobState::try_from(running.state),
        Ok(pb::JobState::Running),
        "the job must still run when etcd stops: {running:?}"
    );
    // Longer than the self-fencing margin (2/3 of the TTL): workers stop their attempts,
    // the coordinator steps down; all of them must come back on their own.
    etcd.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    etcd.restart();
    let status = wait_done(&address, job, Duration::from_secs(120)).await;
    assert_done(&status);
    // Every process went through the outage and came back by itself (their own
    // metrics): the workers stopped writing (self-fencing); the coordinator stepped
    // down, ended its lost term itself once etcd answered (election key and lease gone,
    // instead of waiting for the old lease to expire) and led again. The job's status can
    // be answered before the second term begins: wait for it.
    for (worker, metrics) in &workers {
        let fenced = metric(metrics, "ferry_etcd_lease_fenced_total");
        assert!(
            fenced.is_some_and(|times| times >= 1.0),
            "{worker} did not fence itself during the outage ({fenced:?}):\n{}",
            tail(&cluster.read_log(worker))
        );
    }
    let relead = || {
        metric(&coordinator_metrics, "ferry_coordinator_terms_total").is_some_and(|n| n >= 2.0)
            && metric(
                &coordinator_metrics,
                "ferry_coordinator_lost_terms_ended_total",
            )
            .is_some_and(|n| n >= 1.0)
            && metric(&coordinator_metrics, "ferry_coordinator_leader") == Some(1.0)
    };
    if ferry_tests::wait_until(Duration::from_secs(30), relead)
        .await
        .is_err()
    {
        panic!(
            "the coordinator did not step down, end its lost term and lead again \
             (terms {:?}, lost terms ended {:?}):\n{}",
            metric(&coordinator_metrics, "ferry_coordinator_terms_total"),
            metric(
                &coordinator_metrics,
                "ferry_coordinator_lost_terms_ended_total"
            ),
            tail(&cluster.read_log("coord-f"))
        );
    }
    cluster.assert_same(&["orders"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_a_stopped_worker_past_its_ttl_is_replaced_and_its_late_write_refused() {
    let mut cluster = Cluster::new(&[("orders", 40_000)]);
    let address = cluster.start_coordinator("coord-d");
    let zombie_metrics = cluster.start_worker_metered("zombie", 1);
    let job = "dist-d";
    // 20,000-row chunks at 4,000 rows/s: 5 s each, one at a time.
    submit(&address, &cluster.spec(job, 20_000, 4_000, 1)).await;
    let chunk = wait_copying_on(&address, job, "zombie").await;
    // Stopped inside its target transaction (holding the chunk's fence row): once it
    // has reported rows streamed into the target.
    ferry_tests::wait_until_async(Duration::from_secs(30), || async {
        rows_streamed(&address, job).await > 0
    })
    .await
    .expect("the zombie streamed rows within 30 s");
    assert_eq!(
        target_sessions_before(&cluster, chunk, 2),
        "1",
        "the zombie's first attempt has its named session on the target"
    );
    cluster.signal("zombie", "STOP");
    cluster.start_worker("healthy", 1);
    // Reassigned after TTL + grace, and finished while the zombie is still stopped.
    let record = || async {
        chunks(&address, job)
            .await
            .into_iter()
            .find(|c| c.id == chunk)
            .expect("chunk")
    };
    let finished = ferry_tests::wait_until_async(Duration::from_secs(60), || async {
        record().await.state == "VERIFIED"
    })
    .await;
    let replaced = record().await;
    assert!(
        finished.is_ok(),
        "the stopped worker's chunk was not finished by another: {replaced:?}"
    );
    assert!(replaced.attempt >= 2, "{replaced:?}");
    // The new attempt ended the zombie's target session (PostgreSQL's own view, while
    // the zombie is still stopped and would otherwise keep it open).
    assert_eq!(
        target_sessions_before(&cluster, chunk, replaced.attempt),
        "0",
        "the zombie's target session is still open"
    );
    cluster.signal("zombie", "CONT");
    let status = wait_done(&address, job, Duration::from_secs(90)).await;
    assert_done(&status);
    // The zombie lets go of its attempt (its late write refused, or stopped by its own
    // fencing) and changed nothing.
    let idle = ferry_tests::wait_until(Duration::from_secs(30), || {
        metric(&zombie_metrics, "ferry_worker_slots_busy") == Some(0.0)
    })
    .await;
    assert!(
        idle.is_ok(),
        "the zombie still holds its attempt ({:?} slots busy):\n{}",
        metric(&zombie_metrics, "ferry_worker_slots_busy"),
        tail(&cluster.read_log("zombie"))
    );
    let final_record = chunks(&address, job)
        .await
        .into_iter()
        .find(|c| c.id == chunk)
        .expect("chunk");
    assert_eq!(
        final_record.attempt, replaced.attempt,
        "the zombie changed the chunk"
    );
    cluster.assert_same(&["orders"]);
}

/// How many target sessions (PostgreSQL's `pg_stat_activity`) are named after attempts
/// of `chunk` older than `attempt` (`ferry:{run}:{chunk}:{attempt}`).
fn target_sessions_before(cluster: &Cluster, chunk: u32, attempt: u32) -> String {
    ferry_tests::psql(
        &cluster.target_url(),
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name LIKE 'ferry:%' \
             AND split_part(application_name, ':', 3) = '{chunk}' \
             AND split_part(application_name, ':', 4)::bigint < {attempt}"
        ),
    )
    .trim()
    .to_owned()
}

/// Rows streamed so far by the job's running attempts, as the leader reports them.
async fn rows_streamed(address: &str, job: &str) -> u64 {
    status(address, job)
        .await
        .map_or(0, |status| status.rows_streamed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h_a_pause_reaches_the_chunk_running_on_a_worker_and_resume_finishes_it() {
    let mut cluster = Cluster::new(&[("orders", 40_000)]);
    let address = cluster.start_coordinator("coord-h");
    cluster.start_worker("solo", 1);
    let job = "dist-h";
    // One 40,000-row chunk at 1,000 rows/s: 40 s when nothing stops it or lifts the limit.
    submit(&address, &cluster.spec(job, 40_000, 1_000, 1)).await;
    let chunk = wait_copying_on(&address, job, "solo").await;
    ferry_tests::wait_until_async(Duration::from_secs(20), || async {
        rows_streamed(&address, job).await > 0
    })
    .await
    .expect("rows streamed within 20 s");
    let mut control = client(&address).await;
    control
        .pause_job(pb::PauseJobRequest {
            job_id: job.to_owned(),
        })
        .await
        .expect("pause");
    // The batch already admitted and the last progress report (once a second) settle.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let paused_at = rows_streamed(&address, job).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = rows_streamed(&address, job).await;
    assert_eq!(
        paused_at, later,
        "the running chunk kept streaming while the job was paused"
    );
    assert!(
        paused_at < 40_000,
        "the chunk was not mid-way when paused ({paused_at} rows)"
    );
    // A new limit reaches the running attempt too: lift it, then resume.
    control
        .update_throttle(pb::UpdateThrottleRequest {
            job_id: job.to_owned(),
            rows_per_sec: Some(0),
            ..Default::default()
        })
        .await
        .expect("lift the rate limit");
    let resumed = Instant::now();
    control
        .resume_job(pb::ResumeJobRequest {
            job_id: job.to_owned(),
        })
        .await
        .expect("resume");
    let status = wait_done(&address, job, Duration::from_secs(90)).await;
    assert_done(&status);
    // At the old limit the rest would take (40,000 - paused_at) / 1,000 s; lifted, it
    // takes at most the slot of the batch already admitted (≤ 8.2 s) plus the copy.
    let at_old_limit = Duration::from_secs_f64((40_000 - paused_at) as f64 / 1_000.0);
    assert!(
        resumed.elapsed() < at_old_limit.mul_f64(0.75),
        "the rest of the chunk ran at the old limit: {:?} after resume ({at_old_limit:?} at the old limit)",
        resumed.elapsed()
    );
    let record = chunks(&address, job)
        .await
        .into_iter()
        .find(|c| c.id == chunk)
        .expect("the paused chunk");
    assert_eq!(
        record.attempt, 1,
        "the paused chunk was re-copied: {record:?}"
    );
    cluster.assert_same(&["orders"]);
}

type HealthClient = tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>;

async fn health_client(address: &str) -> HealthClient {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{address}")).expect("a URI");
        match endpoint.connect().await {
            Ok(channel) => return HealthClient::new(channel),
            Err(error) => assert!(
                Instant::now() < deadline,
                "cannot reach the health service at {address}: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `grpc.health.v1.Health/Check` of `service`; `None` while it is not registered.
async fn health_status(client: &mut HealthClient, service: &str) -> Option<ServingStatus> {
    let response = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await;
    match response {
        Ok(response) => Some(
            ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown),
        ),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => panic!("health check of {service:?} failed: {status}"),
    }
}

async fn wait_health(client: &mut HealthClient, service: &str, wanted: ServingStatus) {
    let reached = ferry_tests::wait_until_async(Duration::from_secs(20), || {
        let mut client = client.clone();
        async move { health_status(&mut client, service).await == Some(wanted) }
    })
    .await;
    if reached.is_err() {
        let status = health_status(client, service).await;
        panic!("{service:?} is {status:?}, not {wanted:?}, after 20 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i_health_is_serving_on_the_control_port_and_not_serving_once_sigterm_stops_it() {
    let mut cluster = Cluster::new(&[]);
    let address = cluster.start_coordinator("coord-h");
    let mut health = health_client(&address).await;
    // Liveness, and readiness: the coordinator holds its etcd lease (it leads here).
    wait_health(&mut health, "", ServingStatus::Serving).await;
    wait_health(&mut health, "ferry.v1.Control", ServingStatus::Serving).await;
    assert_eq!(
        health_status(&mut health, "no.such.Service").await,
        None,
        "an unknown service is NOT_FOUND"
    );
    // A worker serves the same health service on its own port when asked to.
    let worker_health = format!("127.0.0.1:{}", free_port());
    cluster.start_worker_with("w-h", 1, &["--health-listen", &worker_health]);
    let mut worker = health_client(&worker_health).await;
    wait_health(&mut worker, "", ServingStatus::Serving).await;
    wait_health(&mut worker, "ferry.v1.Worker", ServingStatus::Serving).await;

    // The coordinator's statuses turn NOT_SERVING when shutdown begins, seen on a Watch
    // opened before the signal; then it resigns and exits 0.
    let mut watch = watch_readiness(&mut health).await;
    assert!(
        !election_keys(&cluster).is_empty(),
        "the leading coordinator holds no election key"
    );
    cluster.signal("coord-h", "TERM");
    wait_not_serving(&mut watch).await;
    // Closed by the client: the server's graceful stop does not wait for it.
    drop(watch);
    let code = cluster.wait_exit("coord-h", Duration::from_secs(20));
    assert_eq!(code, Some(0), "a coordinator stopped by SIGTERM exits 0");
    // It resigned: its election key (held while it led) is gone from etcd (etcd's own
    // client), so a standby would lead at once instead of after the lease's TTL.
    let election = election_keys(&cluster);
    assert!(
        election.is_empty(),
        "the election key of the stopped coordinator is still in etcd: {election}\n{}",
        tail(&cluster.read_log("coord-h"))
    );

    // The worker drains (it is idle) and exits 0.
    cluster.signal("w-h", "TERM");
    let code = cluster.wait_exit("w-h", Duration::from_secs(40));
    assert_eq!(code, Some(0), "a drained worker exits 0");
}

type HealthWatch = tonic::Streaming<tonic_health::pb::HealthCheckResponse>;

/// A Watch of the coordinator's readiness (`ferry.v1.Control`), past its first status
/// (SERVING).
async fn watch_readiness(health: &mut HealthClient) -> HealthWatch {
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: "ferry.v1.Control".to_owned(),
        })
        .await
        .expect("watch the readiness")
        .into_inner();
    let first = watch.message().await.expect("a first status");
    assert_eq!(first.map(|m| m.status), Some(ServingStatus::Serving as i32));
    watch
}

/// Waits (10 s at most) for the watched readiness to turn NOT_SERVING: shutdown began.
async fn wait_not_serving(watch: &mut HealthWatch) {
    let next = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("a status change within 10 s")
        .expect("the watch stream stays open")
        .expect("a status before the server stops");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
}

/// The cluster's election keys in etcd, one per line, read with `etcdctl`.
fn election_keys(cluster: &Cluster) -> String {
    let election = format!("{}/election", KeyLayout::default_prefix(&cluster.name));
    let answer = Command::new("etcdctl")
        .args([
            "--endpoints",
            &cluster.etcd,
            "get",
            "--prefix",
            "--keys-only",
        ])
        .arg(&election)
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl (Debian package etcd-client; scripts/services.sh installs it)");
    assert!(
        answer.status.success(),
        "etcdctl get {election}: {}",
        String::from_utf8_lossy(&answer.stderr)
    );
    String::from_utf8_lossy(&answer.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j_a_second_signal_stops_a_coordinator_at_once() {
    let mut cluster = Cluster::new(&[("orders", 40_000)]);
    let address = cluster.start_coordinator("coord-j");
    cluster.start_worker("w-j", 1);
    let job = "dist-j";
    submit(&address, &cluster.spec(job, 40_000, 2_000, 1)).await;
    // An open WatchJob stream keeps a gracefully stopping server busy for its whole
    // stop deadline (5 s).
    let mut control = client(&address).await;
    let mut watch = control
        .watch_job(pb::WatchJobRequest {
            job_id: job.to_owned(),
        })
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("a first snapshot");
    // The first signal is handled once the readiness turns NOT_SERVING (seen on a
    // health Watch opened before it).
    let mut readiness = watch_readiness(&mut health_client(&address).await).await;
    cluster.signal("coord-j", "TERM");
    wait_not_serving(&mut readiness).await;
    let second = Instant::now();
    cluster.signal("coord-j", "TERM");
    let code = cluster.wait_exit("coord-j", Duration::from_secs(10));
    assert_eq!(
        code,
        Some(130),
        "a second signal must stop the coordinator at once (log:\n{})",
        tail(&cluster.read_log("coord-j"))
    );
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "the second signal took {:?}",
        second.elapsed()
    );
}

/// No idle tail on a cluster: a table planned into one chunk (a large `target_rows`) and
/// four one-slot worker processes registered before the job. The leader cuts the chunk on
/// etcd before it starts (the job record's chunk count in the same txn), each worker reads
/// the piece it is given as it is now and copies it, and the target equals the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i_a_big_planned_chunk_is_split_before_it_starts_so_every_worker_copies_a_piece() {
    let mut cluster = Cluster::new(&[("events", 40_000)]);
    let address = cluster.start_coordinator("coord-i");
    let workers = ["w1", "w2", "w3", "w4"];
    let metrics: Vec<_> = workers
        .into_iter()
        .map(|worker| (worker, cluster.start_worker_metered(worker, 1)))
        .collect();
    wait_workers(&address, workers.len()).await;
    let job = "dist-i";
    submit(&address, &cluster.spec(job, 1_000_000, 1_000_000, 4)).await;
    let status = wait_done(&address, job, Duration::from_secs(120)).await;
    assert_done(&status);
    let listed = chunks(&address, job).await;
    assert_eq!(
        listed.len(),
        workers.len(),
        "one chunk planned, cut in 4: {listed:?}"
    );
    for chunk in &listed {
        assert_eq!(chunk.state, "VERIFIED", "{chunk:?}");
        assert_eq!(chunk.attempt, 1, "each piece copied once: {chunk:?}");
    }
    assert_eq!(
        listed.iter().map(|chunk| chunk.rows).sum::<u64>(),
        40_000,
        "{listed:?}"
    );
    cluster.assert_same(&["events"]);
    assert_each_streamed_rows(&metrics);
}

/// No idle tail on a cluster, second half: a running chunk far slower than its table's
/// others (its rows 400× wider, under a job-wide byte rate) is asked back through its
/// worker's assignment; the worker hands it back before writing, the leader cuts it on
/// etcd and the idle workers copy the pieces. The target equals the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k_a_chunk_far_slower_than_its_table_is_handed_back_and_cut_for_idle_workers() {
    let mut cluster = Cluster::new(&[("events", 8_000)]);
    ferry_tests::psql(
        &cluster.source_url(),
        "UPDATE events SET note = repeat(md5(id::text), 625) WHERE id > 6000 AND id <= 7000",
    );
    let address = cluster.start_coordinator("coord-k");
    let workers = ["w1", "w2", "w3", "w4"];
    for worker in workers {
        cluster.start_worker(worker, 1);
    }
    let job = "dist-k";
    let spec = cluster
        .spec(job, 1_000, 1, 4)
        .replace("rows_per_sec: 1", "bytes_per_sec: 4000000");
    submit(&address, &spec).await;
    let status = wait_done(&address, job, Duration::from_secs(120)).await;
    assert_done(&status);
    let listed = chunks(&address, job).await;
    assert!(listed.len() > 8, "a chunk was cut: {listed:?}");
    for chunk in &listed {
        assert_eq!(chunk.state, "VERIFIED", "{chunk:?}");
    }
    let handed_back: Vec<_> = listed.iter().filter(|chunk| chunk.attempt == 2).collect();
    assert_eq!(handed_back.len(), 1, "one chunk handed back: {listed:?}");
    assert_eq!(
        listed.iter().map(|chunk| chunk.rows).sum::<u64>(),
        8_000,
        "{listed:?}"
    );
    cluster.assert_same(&["events"]);
}

/// The environment of process `pid` as `NAME=value` entries (`/proc/{pid}/environ`).
fn environment(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|byte| *byte == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

/// The coordinator and worker binaries run themselves again, in the same process, with
/// the memory settings of the libraries below them (`ferry_server::process::
/// MEMORY_ENVIRONMENT`: glibc's mmap threshold, the MySQL driver's buffer cap), and a
/// value the operator set is kept; the processes then serve as usual (a job runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l_processes_run_with_the_memory_settings_and_keep_an_operators_value() {
    let mut cluster = Cluster::new(&[("orders", 20_000)]);
    let address = cluster.start_coordinator("coord-l");
    cluster.start_worker("w-default", 1);
    cluster
        .extra_env
        .insert("MALLOC_MMAP_THRESHOLD_".to_owned(), "4194304".to_owned());
    cluster.start_worker("w-operator", 1);
    let wanted = [
        ("coord-l", "MALLOC_MMAP_THRESHOLD_=1048576"),
        ("w-default", "MALLOC_MMAP_THRESHOLD_=1048576"),
        ("w-operator", "MALLOC_MMAP_THRESHOLD_=4194304"),
    ];
    for (process, threshold) in wanted {
        let pid = cluster.pid(process);
        let found = ferry_model::testing::wait_until(Duration::from_secs(10), || {
            let environment = environment(pid);
            environment.iter().any(|entry| entry == threshold)
                && environment
                    .iter()
                    .any(|entry| entry == "MYSQL_ASYNC_BUFFER_SIZE_CAP=65536")
        })
        .await;
        assert!(
            found.is_ok(),
            "process {process} (pid {pid}) runs without {threshold} and the MySQL buffer cap: {:?}",
            environment(pid)
                .into_iter()
                .filter(|entry| entry.starts_with("MALLOC") || entry.starts_with("MYSQL"))
                .collect::<Vec<_>>()
        );
    }
    let job = "dist-l";
    submit(&address, &cluster.spec(job, 5_000, 60_000, 2)).await;
    let status = wait_done(&address, job, Duration::from_secs(120)).await;
    assert_done(&status);
    cluster.assert_same(&["orders"]);
}
