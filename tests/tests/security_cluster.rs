//! Security with real processes: a cluster whose coordinators and workers reach etcd over
//! TLS with client certificates and an etcd user (the TLS etcd of `scripts/services.sh`),
//! clear start-up errors for a wrong password or CA, and the leak test: secrets with
//! unique marker values, everything logged at `trace`, failures provoked, then every log,
//! output, report, state file, etcd value and read answer searched for the markers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_proto::v1 as pb;
use ferry_proto::v1::control_client::ControlClient;
use ferry_tests::cluster::{Cluster, SOURCE_VAR, assert_done, binary, env_var, submit, wait_done};
use ferry_tests::pki::TestPki;
use ferry_tests::{mariadb, unique_suffix, with_database};
use tonic::Request;
use tonic::transport::Channel;

const PG_MARK: &str = "pgSECRETmark7731";
const MY_MARK: &str = "mySECRETmark4410";
const TOKEN_MARK: &str = "tokSECRETmark9902abcdef";
const ETCD_MARK: &str = "etcdSECRETmark5521";

fn certs() -> PathBuf {
    PathBuf::from(env_var("FERRY_TEST_ETCD_TLS_DIR"))
}

/// `--etcd-*` flags for the TLS etcd as `user` with the password in `password_file`.
fn etcd_flags(ca: &Path, user: &str, password_file: &Path) -> Vec<String> {
    let certs = certs();
    [
        "--etcd-ca",
        &ca.display().to_string(),
        "--etcd-cert",
        &certs.join("client.crt").display().to_string(),
        "--etcd-key",
        &certs.join("client.key").display().to_string(),
        "--etcd-user",
        user,
        "--etcd-password-file",
        &password_file.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// etcdctl against the TLS etcd as root.
fn etcdctl(args: &[&str]) -> Vec<u8> {
    let certs = certs();
    let root = std::fs::read_to_string(certs.join("root.password")).expect("root password");
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints={}",
            env_var("FERRY_TEST_ETCD_TLS_ENDPOINTS")
        ))
        .arg(format!("--cacert={}", certs.join("ca.crt").display()))
        .arg(format!("--cert={}", certs.join("client.crt").display()))
        .arg(format!("--key={}", certs.join("client.key").display()))
        .arg(format!("--user=root:{}", root.trim()))
        .args(args)
        .output()
        .expect("etcdctl");
    assert!(
        output.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs a coordinator that must fail at start; returns its stderr.
fn failed_start(cluster: &Cluster, extra: &[String]) -> String {
    let output = Command::new(binary("ferry-coordinator"))
        .args([
            "--etcd-endpoints",
            &env_var("FERRY_TEST_ETCD_TLS_ENDPOINTS"),
            "--cluster",
            &cluster.name,
            "--listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .output()
        .expect("run ferry-coordinator");
    assert!(!output.status.success(), "it started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_over_etcd_with_tls_client_certificates_and_a_user() {
    let mut cluster = Cluster::with_etcd(
        &[("orders", 20_000)],
        env_var("FERRY_TEST_ETCD_TLS_ENDPOINTS"),
    );
    let password = certs().join("ferry.password");
    cluster.etcd_args = etcd_flags(&certs().join("ca.crt"), "ferry", &password);
    let address = cluster.start_coordinator("coord-tls");
    cluster.start_worker("worker-tls", 2);
    submit(&address, &cluster.spec("tls", 5_000, 1_000_000, 2)).await;
    assert_done(&wait_done(&address, "tls", Duration::from_secs(90)).await);
    cluster.assert_same(&["orders"]);

    // A wrong password, and a CA that did not sign etcd's certificate: each a start-up
    // error naming what etcd refused and what to check, at once (not after retries).
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    let started = Instant::now();
    let stderr = failed_start(
        &cluster,
        &etcd_flags(&certs().join("ca.crt"), "ferry", &wrong),
    );
    assert!(
        stderr.contains(
            "refused the user ferry: check etcd.user and the password in etcd.password_file"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");
    let pki = TestPki::new(dir.path());
    let stderr = failed_start(&cluster, &etcd_flags(&pki.other_ca, "ferry", &password));
    assert!(
        stderr.contains("refused the TLS handshake: check etcd.ca"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refusals are final, not retried: {:?}",
        started.elapsed()
    );
    // Plaintext to a TLS endpoint is a configuration error before any connection.
    let endpoint = env_var("FERRY_TEST_ETCD_TLS_ENDPOINTS").replace("https://", "http://");
    let output = Command::new(binary("ferry-worker"))
        .args(["--etcd-endpoints", &endpoint, "--etcd-ca"])
        .arg(certs().join("ca.crt"))
        .output()
        .expect("run ferry-worker");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("is plaintext but etcd.ca/etcd.cert ask for TLS: write https://"),
        "{stderr}"
    );
}

/// A Control API client that sends `token`.
struct Client {
    inner: ControlClient<Channel>,
    token: String,
}

impl Client {
    async fn connect(address: &str, token: &str) -> Client {
        Client {
            inner: ControlClient::connect(format!("http://{address}"))
                .await
                .expect("connect"),
            token: token.to_owned(),
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().expect("ascii"),
        );
        request
    }
}

/// `url` with its port replaced by `port`.
fn with_port(url: &str, port: u16) -> String {
    let at = url.rfind('@').expect("a user in the URL");
    let colon = at + url[at..].find(':').expect("a port");
    let slash = colon + url[colon..].find('/').expect("a database");
    format!("{}:{port}{}", &url[..colon], &url[slash..])
}

/// Every place a secret could end up, by name, searched for every marker.
fn assert_no_marker(places: &[(String, Vec<u8>)]) {
    let mut found = Vec::new();
    for (place, bytes) in places {
        for marker in [PG_MARK, MY_MARK, TOKEN_MARK, ETCD_MARK] {
            if bytes
                .windows(marker.len())
                .any(|window| window == marker.as_bytes())
            {
                found.push(format!("{marker} in {place}"));
            }
        }
    }
    assert!(found.is_empty(), "secrets leaked: {found:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_log_output_report_state_or_answer() {
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");

    // An etcd user whose password is a marker.
    let user = format!("leak{}", unique_suffix());
    etcdctl(&["user", "add", &format!("{user}:{ETCD_MARK}")]);
    etcdctl(&["user", "grant-role", &user, "ferry-rw"]);
    let password_file = dir.path().join("etcd.password");
    std::fs::write(&password_file, ETCD_MARK).expect("write");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("ops operator {TOKEN_MARK}\n")).expect("write");

    // The cluster: PostgreSQL URLs with a marker password (trust authentication lets it
    // in), etcd as the marker user, a coordinator checking the marker token, all at trace.
    let mut cluster = Cluster::with_etcd(
        &[("orders", 2_000)],
        env_var("FERRY_TEST_ETCD_TLS_ENDPOINTS"),
    );
    cluster.server = cluster
        .server
        .replacen("postgres@", &format!("postgres:{PG_MARK}@"), 1);
    cluster.etcd_args = etcd_flags(&certs().join("ca.crt"), &user, &password_file);
    cluster.extra_env = HashMap::from([
        ("RUST_LOG".to_owned(), "trace".to_owned()),
        (
            "FERRY_LEAK_UNREACHABLE".to_owned(),
            format!("postgres://postgres:{PG_MARK}@127.0.0.1:1/nowhere"),
        ),
    ]);
    let address = cluster.start_coordinator_with(
        "coord-leak",
        &["--tokens-file", &tokens.display().to_string()],
    );
    cluster.start_worker("worker-leak", 2);
    let mut client = Client::connect(&address, TOKEN_MARK).await;
    let job = "leak";
    let spec = cluster.spec(job, 500, 1_000_000, 2);
    // Submitted once a leader is elected.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = client.request(pb::SubmitJobRequest {
            spec_yaml: spec.clone(),
            dry_run: false,
        });
        match client.inner.submit_job(request).await {
            Ok(_) => break,
            Err(status)
                if status.code() == tonic::Code::FailedPrecondition
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("submit: {status}"),
        }
    }
    // Failures: a wrong token, a bad spec, a source that cannot be reached.
    let mut answers = Vec::new();
    let mut stranger = Client::connect(&address, "wrong-token-0123456789").await;
    let request = stranger.request(pb::GetJobRequest { job_id: job.into() });
    answers.push(format!("{:?}", stranger.inner.get_job(request).await));
    let request = client.request(pb::SubmitJobRequest {
        spec_yaml: "name: [unclosed".into(),
        dry_run: false,
    });
    answers.push(format!("{:?}", client.inner.submit_job(request).await));
    let unreachable = spec
        .replace(&format!("name: {job}"), "name: leak-unreachable")
        .replace(SOURCE_VAR, "FERRY_LEAK_UNREACHABLE");
    let request = client.request(pb::SubmitJobRequest {
        spec_yaml: unreachable,
        dry_run: false,
    });
    let refused = client.inner.submit_job(request).await;
    assert!(refused.is_err(), "an unreachable source is refused");
    answers.push(format!("{refused:?}"));

    // The job completes, so every secret was used.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let request = client.request(pb::GetJobRequest { job_id: job.into() });
        let status = client
            .inner
            .get_job(request)
            .await
            .expect("status")
            .into_inner();
        answers.push(format!("{status:?}"));
        if status.state == pb::JobState::Done as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "job did not finish: {status:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cluster.assert_same(&["orders"]);
    // Every read answer.
    let request = client.request(pb::ListJobsRequest {});
    answers.push(format!("{:?}", client.inner.list_jobs(request).await));
    let request = client.request(pb::ListChunksRequest {
        job_id: job.into(),
        page_size: 10_000,
        ..Default::default()
    });
    answers.push(format!("{:?}", client.inner.list_chunks(request).await));
    let request = client.request(pb::ListWorkersRequest {});
    answers.push(format!("{:?}", client.inner.list_workers(request).await));
    let request = client.request(pb::GetThrottleRequest {
        job_id: job.into(),
        at_unix_ms: None,
    });
    answers.push(format!("{:?}", client.inner.get_throttle(request).await));
    let request = client.request(pb::ListThrottleHistoryRequest { job_id: job.into() });
    answers.push(format!(
        "{:?}",
        client.inner.list_throttle_history(request).await
    ));
    let request = client.request(pb::ListJobHistoryRequest { job_id: job.into() });
    answers.push(format!(
        "{:?}",
        client.inner.list_job_history(request).await
    ));
    let request = client.request(pb::WatchJobRequest { job_id: job.into() });
    let mut stream = client
        .inner
        .watch_job(request)
        .await
        .expect("watch")
        .into_inner();
    answers.push(format!("{:?}", stream.message().await));
    places.push(("read answers".into(), answers.join("\n").into_bytes()));

    // Every etcd value of the cluster.
    let prefix = format!("/ferry/{}/", cluster.name);
    let values = etcdctl(&["get", "--prefix", &prefix]);
    assert!(!values.is_empty(), "the cluster wrote to etcd");
    places.push((format!("etcd under {prefix}"), values));

    // A local run to MariaDB as a user whose password is a marker, with a report and a
    // state file; then a wrong password and an unreachable host.
    let mysql = env_var("FERRY_TEST_MYSQL_URL");
    let target_db = format!("ferry_leak_{}", unique_suffix());
    mariadb(
        &mysql,
        &format!(
            "CREATE DATABASE {target_db}; CREATE USER '{user}'@'%' IDENTIFIED BY '{MY_MARK}'; \
             GRANT ALL ON {target_db}.* TO '{user}'@'%';"
        ),
    );
    let my_url =
        with_database(&mysql, &target_db).replacen("root@", &format!("{user}:{MY_MARK}@"), 1);
    let local_spec = dir.path().join("local.yaml");
    std::fs::write(
        &local_spec,
        "name: leak-local\nsource: { kind: postgres, url_env: LEAK_SOURCE }\n\
         target: { kind: mysql, url_env: LEAK_TARGET }\ntables: { include: [\"public.*\"] }\n\
         chunking: { target_rows: 500 }\n",
    )
    .expect("spec");
    let runs = [
        ("local run", my_url.clone()),
        (
            "wrong password",
            my_url.replace(MY_MARK, &format!("{MY_MARK}x")),
        ),
        ("unreachable host", with_port(&my_url, 1)),
    ];
    for (what, target_url) in &runs {
        let output = Command::new(binary("ferryctl"))
            .arg("local")
            .arg(&local_spec)
            .args(["--json", "--control-addr", "127.0.0.1:0", "--state"])
            .arg(dir.path().join("local.state.db"))
            .env("RUST_LOG", "trace")
            .env("LEAK_SOURCE", cluster.source_url())
            .env("LEAK_TARGET", target_url)
            .output()
            .expect("ferryctl local");
        if *what == "local run" {
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let report: serde_json::Value =
                serde_json::from_slice(&output.stdout).expect("a JSON report");
            assert!(report.is_object(), "{report}");
        } else {
            assert!(!output.status.success(), "{what} must fail");
        }
        places.push((format!("ferryctl local stdout ({what})"), output.stdout));
        places.push((format!("ferryctl local stderr ({what})"), output.stderr));
    }
    let state = std::fs::read(dir.path().join("local.state.db")).expect("state file");
    places.push(("the local state file".into(), state));
    assert_eq!(
        mariadb(&mysql, &format!("SELECT count(*) FROM {target_db}.orders")).trim(),
        "2000"
    );

    // Every log of the cluster's processes, which did log at trace.
    for process in ["coord-leak", "worker-leak"] {
        let log = std::fs::read(cluster.log(process)).expect("log");
        assert!(
            String::from_utf8_lossy(&log).contains("TRACE"),
            "{process} logged at trace"
        );
        places.push((format!("{process}'s log"), log));
    }
    mariadb(
        &mysql,
        &format!("DROP DATABASE {target_db}; DROP USER '{user}'@'%';"),
    );
    etcdctl(&["user", "delete", &user]);
    assert_no_marker(&places);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_serving_tls_answers_plaintext_probes_on_its_health_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let health_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port");
    let mut cluster = Cluster::new(&[]);
    let address = cluster.start_coordinator_with(
        "coord-probed",
        &[
            "--tls-cert",
            &pki.server_cert.display().to_string(),
            "--tls-key",
            &pki.server_key.display().to_string(),
            "--client-ca",
            &pki.ca.display().to_string(),
            "--health-listen",
            &format!("127.0.0.1:{health_port}"),
        ],
    );
    // The probe's view: plaintext, no certificate, the readiness name SERVING once the
    // coordinator holds its lease.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = async {
            let channel = Channel::from_shared(format!("http://127.0.0.1:{health_port}"))
                .expect("uri")
                .connect()
                .await
                .ok()?;
            let response = tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "ferry.v1.Control".into(),
                })
                .await
                .ok()?;
            Some(response.into_inner().status)
        }
        .await;
        if status == Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not SERVING on the health port: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The Control API itself takes no plaintext.
    let plaintext = async {
        let channel = Channel::from_shared(format!("http://{address}"))
            .expect("uri")
            .connect()
            .await
            .map_err(|error| error.to_string())?;
        ControlClient::new(channel)
            .list_jobs(pb::ListJobsRequest {})
            .await
            .map_err(|status| status.to_string())
    }
    .await;
    assert!(plaintext.is_err(), "the Control API answered plaintext");
}
