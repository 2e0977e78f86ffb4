//! Garbage and wrong-version values under a cluster's etcd prefix (written with
//! `etcdctl` into a prefix of the test's own), then a real `ferry-coordinator` and
//! `ferry-worker` started on it: each bad value is named with its key and the fix, the
//! cluster keeps serving, and a good job beside them runs to the end; two workers of
//! one name: the second refuses to start while the first's lease lives, naming it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_proto::v1 as pb;
use ferry_proto::v1::control_client::ControlClient;
use ferry_tests::{env_url, unique_suffix};

use crate::common::{Failures, binary, clip, create_sqlite_source, sqlite_fingerprint};

/// Lease TTL of the processes in these tests (seconds).
const TTL: u64 = 3;

fn etcdctl(endpoints: &str, args: &[&str], input: Option<&[u8]>) -> String {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl (scripts/services.sh installs etcd-client)");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input).expect("write to etcdctl");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("etcdctl");
    assert!(
        output.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Processes on one cluster prefix; killed, and the prefix deleted, on drop.
struct Cluster {
    etcd: String,
    name: String,
    dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            etcd: env_url("FERRY_TEST_ETCD_ENDPOINTS"),
            name: format!("bad-{}", unique_suffix()),
            dir: tempfile::tempdir().expect("tempdir"),
            children: Vec::new(),
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("/ferry/{}/v1/{rest}", self.name)
    }

    fn put(&self, rest: &str, value: &[u8]) {
        etcdctl(&self.etcd, &["put", &self.key(rest)], Some(value));
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name)).unwrap_or_default()
    }

    fn start_coordinator(&mut self) -> String {
        let log = std::fs::File::create(self.log("coordinator")).expect("log");
        let mut child = Command::new(binary("ferry-coordinator"))
            .args([
                "--etcd-endpoints",
                &self.etcd,
                "--cluster",
                &self.name,
                "--listen",
                "127.0.0.1:0",
            ])
            .args([
                "--name",
                "c1",
                "--lease-ttl",
                &format!("{TTL}s"),
                "--worker-ttl",
                &format!("{TTL}s"),
                "--grace",
                "1s",
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start ferry-coordinator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the address");
        let address = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            address.contains(':'),
            "no address: {line:?}; log: {}",
            self.read_log("coordinator")
        );
        self.children.push(("coordinator".into(), child));
        format!("http://{address}")
    }

    fn worker_command(&self, name: &str, log_name: &str) -> Command {
        let log = std::fs::File::create(self.log(log_name)).expect("log");
        let mut command = Command::new(binary("ferry-worker"));
        command
            .args([
                "--etcd-endpoints",
                &self.etcd,
                "--cluster",
                &self.name,
                "--name",
                name,
            ])
            .args([
                "--slots",
                "2",
                "--ttl",
                &format!("{TTL}s"),
                "--drain-timeout",
                "5s",
            ])
            .env("RUST_LOG", "info")
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log);
        command
    }

    fn start_worker(&mut self, name: &str, log_name: &str) -> u32 {
        let child = self
            .worker_command(name, log_name)
            .spawn()
            .expect("start ferry-worker");
        let pid = child.id();
        self.children.push((log_name.to_owned(), child));
        pid
    }

    fn kill(&mut self, name: &str) {
        if let Some((_, child)) = self
            .children
            .iter_mut()
            .find(|(child_name, _)| child_name == name)
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                eprintln!("---- {name} ----\n{}", clip(&self.read_log(name)));
            }
        }
        let _ = Command::new("etcdctl")
            .arg(format!("--endpoints={}", self.etcd))
            .args(["del", "--prefix", &format!("/ferry/{}/", self.name)])
            .output();
    }
}

fn sqlite_spec(name: &str, dir: &Path) -> String {
    format!(
        "name: {name}\nsource: {{ kind: sqlite, path: {} }}\ntarget: {{ kind: sqlite, path: {} }}\n\
         tables: {{ include: [orders] }}\nchunking: {{ target_rows: 100 }}\n",
        dir.join(format!("{name}-source.db")).display(),
        dir.join(format!("{name}-target.db")).display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_the_etcd_prefix_is_named_and_the_cluster_keeps_working() {
    let mut cluster = Cluster::new();
    let dir = cluster.dir.path().to_path_buf();
    let mut failures = Failures::default();
    let mut cases = 0;

    // A good job's records, submitted through the API later; bad values beside it.
    create_sqlite_source(&dir.join("good-source.db"), 300);
    let before = sqlite_fingerprint(&dir.join("good-source.db"), "orders");
    // A job state that is not protobuf at all.
    cluster.put("job_states/junk", b"\xff\xfe not protobuf \x00\x01");
    // A job state of a newer ferry: a state name this ferry does not know.
    let future_state = pb::JobStateValue {
        job: "future".into(),
        state: "MIGRATING_V9".into(),
        reason: String::new(),
        submitted_at_unix_ms: 1,
        updated_at_unix_ms: 1,
    };
    cluster.put(
        "job_states/future",
        &prost::Message::encode_to_vec(&future_state),
    );
    // A JSON value where protobuf is expected (an older or foreign writer).
    cluster.put(
        "job_states/jsonjob",
        br#"{"job":"jsonjob","state":"RUNNING"}"#,
    );
    // A worker registration that is garbage.
    cluster.put("workers/ghost", b"\x08\x96\x01garbage");
    // A running job whose spec is not a spec, and one whose chunks are garbage.
    let running = |job: &str| pb::JobStateValue {
        job: job.into(),
        state: "RUNNING".into(),
        reason: String::new(),
        submitted_at_unix_ms: 1,
        updated_at_unix_ms: 1,
    };
    cluster.put(
        "job_states/badspec",
        &prost::Message::encode_to_vec(&running("badspec")),
    );
    cluster.put(
        "jobs/badspec/spec",
        &prost::Message::encode_to_vec(&pb::JobSpecValue {
            spec_yaml: "name: [".into(),
            submitted_at_unix_ms: 1,
        }),
    );

    let endpoint = cluster.start_coordinator();
    cluster.start_worker("w1", "w1");
    let mut client = ControlClient::connect(endpoint.clone())
        .await
        .expect("connect");

    // The good job runs to the end despite the garbage.
    // The coordinator prints its address before it leads: a standby's refusal is retried.
    let answer = std::sync::Arc::new(std::sync::Mutex::new(None));
    let _ = ferry_tests::wait_until_async(Duration::from_secs(20), || {
        let mut client = client.clone();
        let answer = answer.clone();
        let spec_yaml = sqlite_spec("good", &dir);
        async move {
            let outcome = client
                .submit_job(pb::SubmitJobRequest {
                    spec_yaml,
                    dry_run: false,
                })
                .await;
            let standby =
                matches!(&outcome, Err(status) if status.code() == tonic::Code::FailedPrecondition);
            *answer.lock().expect("lock") = Some(outcome.map(|_| ()));
            !standby
        }
    })
    .await;
    let submitted = answer.lock().expect("lock").take().expect("tried");
    cases += 1;
    failures.check(
        "a good job beside garbage: submitted",
        submitted.is_ok(),
        || format!("{submitted:?}"),
    );
    let done = ferry_tests::wait_until_async(Duration::from_secs(60), || {
        let mut client = client.clone();
        async move {
            matches!(client.get_job(pb::GetJobRequest { job_id: "good".into() }).await,
                Ok(answer) if answer.get_ref().state == pb::JobState::Done as i32)
        }
    })
    .await;
    failures.check("a good job beside garbage: DONE", done.is_ok(), || {
        format!(
            "not DONE; coordinator log: {}",
            clip(&cluster.read_log("coordinator"))
        )
    });
    failures.check(
        "a good job beside garbage: copied",
        sqlite_fingerprint(&dir.join("good-target.db"), "orders") == before,
        || "the good job's target does not hold its source's rows".into(),
    );

    // ListJobs answers, naming each bad value with its key and the fix.
    cases += 1;
    match client.list_jobs(pb::ListJobsRequest {}).await {
        Err(status) => failures.check("ListJobs with garbage job states", false, || {
            format!("refused: {status:?}")
        }),
        Ok(answer) => {
            let jobs = &answer.get_ref().jobs;
            let find = |id: &str| jobs.iter().find(|job| job.job_id == id);
            failures.check(
                "ListJobs with garbage job states",
                find("good").is_some(),
                || format!("{jobs:?}"),
            );
            for (case, id, needles) in [
                (
                    "job state that is not protobuf",
                    "junk",
                    &["cannot be read", "job_states/junk", "etcdctl del"][..],
                ),
                (
                    "job state of a newer ferry",
                    "future",
                    &["MIGRATING_V9", "newer ferry", "job_states/future"][..],
                ),
                (
                    "job state in JSON",
                    "jsonjob",
                    &["cannot be read", "job_states/jsonjob"][..],
                ),
                (
                    "running job whose spec is not YAML",
                    "badspec",
                    &["spec", "badspec"][..],
                ),
            ] {
                cases += 1;
                match find(id) {
                    None => {
                        failures.check(case, false, || format!("job {id} not listed: {jobs:?}"))
                    }
                    Some(job) => {
                        crate::common::show(case, "FAILED", &job.reason);
                        failures.check(case, job.state == pb::JobState::Failed as i32, || {
                            format!("{job:?}")
                        });
                        failures.contains(case, "reason", &job.reason, needles);
                    }
                }
            }
        }
    }
    cases += 1;
    let answer = client
        .get_job(pb::GetJobRequest {
            job_id: "junk".into(),
        })
        .await;
    match answer {
        Ok(answer) => failures.check(
            "GetJob of a garbage job",
            answer.get_ref().state == pb::JobState::Failed as i32,
            || format!("{answer:?}"),
        ),
        Err(status) => {
            failures.check(
                "GetJob of a garbage job",
                status.code() == tonic::Code::DataLoss
                    || status.code() == tonic::Code::FailedPrecondition,
                || format!("{status:?}"),
            );
            failures.contains(
                "GetJob of a garbage job",
                "message",
                status.message(),
                &["job_states/junk"],
            );
        }
    }
    cases += 1;
    match client.list_workers(pb::ListWorkersRequest {}).await {
        Ok(answer) => failures.check(
            "ListWorkers with a garbage registration",
            answer
                .get_ref()
                .workers
                .iter()
                .any(|worker| worker.id == "w1"),
            || format!("{answer:?}"),
        ),
        Err(status) => failures.check("ListWorkers with a garbage registration", false, || {
            format!("{status:?}")
        }),
    }
    // A chunk record of the finished good job overwritten with garbage: reading the
    // job's chunks names the key; the rows already copied stay.
    cluster.put("jobs/good/chunks/00000001", b"\xff\xff\xff garbage");
    cases += 1;
    let chunks = client
        .list_chunks(pb::ListChunksRequest {
            job_id: "good".into(),
            ..Default::default()
        })
        .await;
    match chunks {
        Ok(answer) => failures.check("ListChunks with a garbage chunk record", false, || {
            format!("accepted: {answer:?}")
        }),
        Err(status) => {
            crate::common::show(
                "ListChunks with a garbage chunk record",
                format!("{:?}", status.code()),
                status.message(),
            );
            failures.check(
                "ListChunks with a garbage chunk record",
                status.code() == tonic::Code::DataLoss,
                || format!("{status:?}"),
            );
            failures.contains(
                "ListChunks with a garbage chunk record",
                "message",
                status.message(),
                &["jobs/good/chunks/00000001", "corrupt value", "newer ferry"],
            );
        }
    }
    failures.check(
        "ListChunks with a garbage chunk record",
        sqlite_fingerprint(&dir.join("good-target.db"), "orders") == before,
        || "the good job's target changed".into(),
    );
    // A 10 MB spec over the wire: refused by ferryctl before sending, and by the
    // coordinator if sent anyway (tonic's 4 MiB message limit).
    let huge = dir.join("huge.yaml");
    std::fs::write(
        &huge,
        format!("{}# {}\n", sqlite_spec("huge", &dir), "x".repeat(10 << 20)),
    )
    .expect("spec");
    let (code, _, stderr) = crate::common::run(
        crate::common::ferryctl()
            .arg("submit")
            .arg(&huge)
            .args(["--endpoint", &endpoint]),
    );
    cases += 1;
    crate::common::show("ferryctl submit of a 10 MB spec", code, &stderr);
    failures.check("ferryctl submit of a 10 MB spec", code == 2, || {
        format!("exit {code}: {stderr}")
    });
    failures.contains(
        "ferryctl submit of a 10 MB spec",
        "stderr",
        &stderr,
        &["at most 1048576 bytes"],
    );
    cases += 1;
    let oversized = client
        .submit_job(pb::SubmitJobRequest {
            spec_yaml: "x".repeat(10 << 20),
            dry_run: true,
        })
        .await;
    match oversized {
        Ok(answer) => failures.check("SubmitJob of 10 MB over the wire", false, || {
            format!("accepted: {:?}", answer.get_ref().job_id)
        }),
        Err(status) => {
            crate::common::show(
                "SubmitJob of 10 MB over the wire",
                format!("{:?}", status.code()),
                status.message(),
            );
            failures.check(
                "SubmitJob of 10 MB over the wire",
                matches!(
                    status.code(),
                    tonic::Code::OutOfRange
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::InvalidArgument
                ),
                || format!("{status:?}"),
            );
        }
    }
    let log = cluster.read_log("coordinator");
    failures.contains(
        "coordinator log",
        "log",
        &log,
        &["workers/ghost", "etcdctl del"],
    );
    failures.check(
        "coordinator log",
        !log.contains("etcd unavailable?"),
        || "a corrupt value is reported as etcd unavailable".into(),
    );
    cluster.kill("w1");
    failures.finish(cases);
}

#[test]
fn a_second_worker_of_one_name_refuses_to_start_while_the_first_lives() {
    let mut cluster = Cluster::new();
    let first_pid = cluster.start_worker("twin", "first");
    // The first registers (its key appears), then the second starts.
    let key = cluster.key("workers/twin");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while etcdctl(&cluster.etcd, &["get", "--keys-only", &key], None)
        .trim()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first worker did not register: {}",
            cluster.read_log("first")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = cluster
        .worker_command("twin", "second")
        .output()
        .expect("run the second worker");
    let log = cluster.read_log("second");
    crate::common::show(
        "second worker of one name",
        format!("{:?}", second.status.code()),
        &log,
    );
    let mut failures = Failures::default();
    failures.check(
        "second worker of one name",
        second.status.code() == Some(1),
        || format!("exit {:?}: {log}", second.status.code()),
    );
    failures.contains(
        "second worker of one name",
        "its log",
        &log,
        &[
            "worker name twin is taken",
            &format!("pid {first_pid} on host"),
            "give this worker another --name",
        ],
    );
    // The first still holds its registration.
    let record = etcdctl(&cluster.etcd, &["get", "--print-value-only", &key], None);
    failures.check(
        "second worker of one name",
        !record.trim().is_empty(),
        || "the first's registration is gone".into(),
    );
    // The fix: stop the first; once its lease ends (at most one TTL), the name is free.
    cluster.kill("first");
    let deadline = std::time::Instant::now() + Duration::from_secs(TTL * 5);
    while !etcdctl(&cluster.etcd, &["get", "--keys-only", &key], None)
        .trim()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed worker's lease did not end"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let third_pid = cluster.start_worker("twin", "third");
    let deadline = std::time::Instant::now() + Duration::from_secs(TTL * 5);
    let mut registered = false;
    while std::time::Instant::now() < deadline {
        if cluster.read_log("third").contains("registered") {
            registered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    failures.check("the name once the first stopped", registered, || {
        format!(
            "pid {third_pid} did not register: {}",
            cluster.read_log("third")
        )
    });
    failures.finish(2);
}

/// A worker whose own earlier registration (a lease it lost, from this very process)
/// still stands waits for it to expire instead of refusing itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_its_own_stale_registration_instead_of_refusing() {
    use ferry_coordination::{
        ClusterProtocol, ClusterRef, EtcdStore, EtcdStoreOptions, cluster::WorkerInfo,
    };
    use ferry_model::ids::WorkerId;
    use ferry_worker::agent::{AgentOptions, WorkerState, run_agent};

    let endpoints = vec![env_url("FERRY_TEST_ETCD_ENDPOINTS")];
    let prefix = format!("/ferry/bad-self-{}/v1", unique_suffix());
    let store = EtcdStore::connect(&endpoints, prefix.clone(), EtcdStoreOptions::default())
        .await
        .expect("etcd");
    let cancel = tokio_util::sync::CancellationToken::new();
    let stale = store
        .start_lease(Duration::from_secs(10), &cancel)
        .await
        .expect("lease");
    let me = WorkerInfo {
        id: WorkerId("self".into()),
        slots: 1,
        draining: false,
        host: "this-host".into(),
        pid: std::process::id(),
        registered_at_unix_ms: 1,
    };
    store
        .put_live_worker(&me, stale.id)
        .await
        .expect("the stale registration");
    let store: ClusterRef = std::sync::Arc::new(store);
    let options = AgentOptions {
        id: me.id.clone(),
        slots: 1,
        ttl: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(1),
        env: std::collections::HashMap::new(),
        base_dir: std::env::temp_dir(),
        host: "this-host".into(),
        progress_interval: Duration::from_secs(1),
    };
    let (state_tx, mut state_rx) = tokio::sync::watch::channel(WorkerState::Registering);
    let kill = cancel.child_token();
    let agent = tokio::spawn(run_agent(
        store.clone(),
        options,
        cancel.child_token(),
        kill.clone(),
        state_tx,
    ));
    let early = tokio::time::timeout(
        Duration::from_secs(2),
        state_rx.wait_for(|state| *state == WorkerState::Ready),
    )
    .await
    .map(|ready| ready.is_ok());
    assert!(early.is_err(), "registered over its own live registration");
    assert!(
        !agent.is_finished(),
        "the agent refused its own stale registration"
    );
    store
        .revoke_lease(stale.id)
        .await
        .expect("the stale lease ends");
    tokio::time::timeout(
        Duration::from_secs(10),
        state_rx.wait_for(|state| *state == WorkerState::Ready),
    )
    .await
    .expect("registered once its stale registration expired")
    .expect("agent alive");
    kill.cancel();
    cancel.cancel();
    let _ = agent.await;
    let _ = Command::new("etcdctl")
        .arg(format!("--endpoints={}", endpoints[0]))
        .args(["del", "--prefix", &prefix])
        .output();
}
