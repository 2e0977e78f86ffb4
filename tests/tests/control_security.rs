//! The Control API's security on a real listener (a `ferryctl local` run served on
//! loopback, the same service a coordinator serves): bearer tokens and roles, server TLS
//! and mutual TLS, the identity recorded in the job's history, and the refusal to serve
//! a public address without authentication. Asked with tonic clients and with the
//! `ferryctl` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_coordinator::security::{ControlSecurity, SecurityError};
use ferry_ctl::local::{LocalError, LocalJob, LocalRun, LocalRunOptions, load_spec};
use ferry_proto::v1 as pb;
use ferry_proto::v1::control_client::ControlClient;
use ferry_tests::cluster::binary;
use ferry_tests::pki::TestPki;
use ferry_tests::{sqlite3, write_spec};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request};

const OPERATOR_TOKEN: &str = "ops-0123456789abcdef-operator";
const VIEWER_TOKEN: &str = "look-0123456789abcdef-viewer";
const JOB: &str = "sec";

/// A source of `rows` rows and a spec that copies them at 400 rows/s in chunks of 100.
fn prepare(dir: &Path, rows: u32) -> PathBuf {
    let connection = rusqlite::Connection::open(dir.join("source.db")).expect("source");
    connection
        .execute_batch(&format!(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO orders SELECT i, 'row ' || i FROM n;"
        ))
        .expect("fill");
    write_spec(
        dir,
        &format!(
            "name: {JOB}\nsource: {{ kind: sqlite, path: source.db }}\n\
             target: {{ kind: sqlite, path: target.db }}\ntables: {{ include: [orders] }}\n\
             chunking: {{ target_rows: 100 }}\n\
             throttle: {{ default_concurrency: 2, rate: {{ rows_per_sec: 400 }} }}\n"
        ),
    )
}

/// Starts a local run serving its Control API on loopback with `security`.
async fn start(spec: &Path, security: ControlSecurity) -> Result<LocalRun, LocalError> {
    let env = std::collections::HashMap::new();
    let job = LocalJob::open(
        load_spec(spec, &env).expect("spec"),
        &spec.with_extension("state.db"),
    )
    .await
    .expect("open");
    let prepared = job.prepare().await.expect("prepare");
    let mut options = LocalRunOptions::workers(2);
    options.control_addr = Some("127.0.0.1:0".into());
    options.security = security;
    job.start(&prepared, &options, CancellationToken::new())
        .await
}

async fn plain_client(addr: std::net::SocketAddr) -> ControlClient<Channel> {
    ControlClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

fn get(job: &str) -> pb::GetJobRequest {
    pb::GetJobRequest { job_id: job.into() }
}

fn refused<T: std::fmt::Debug>(outcome: Result<T, tonic::Status>, code: Code, needle: &str) {
    let status = outcome.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{needle:?} not in {:?}",
        status.message()
    );
}

/// Runs `ferryctl ARGS` and returns (exit code, stdout, stderr).
fn ferryctl(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary("ferryctl"))
        .args(args)
        .env_remove("FERRY_ENDPOINT")
        .output()
        .expect("run ferryctl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_may_call_what_and_the_history_names_the_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = prepare(dir.path(), 3_000);
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("# callers\nops operator {OPERATOR_TOKEN}\nlook viewer {VIEWER_TOKEN}\n"),
    )
    .expect("tokens");
    let run = start(
        &spec,
        ControlSecurity {
            tokens_file: Some(tokens.clone()),
            ..ControlSecurity::default()
        },
    )
    .await
    .expect("start");
    let addr = run.control_addr.expect("served");
    run.runtime
        .wait_running(&ferry_model::ids::JobId(JOB.into()))
        .await;
    let mut client = plain_client(addr).await;

    // Who is not known is not let in, whatever the call.
    refused(
        client.get_job(get(JOB)).await,
        Code::Unauthenticated,
        "--token-file",
    );
    refused(
        client
            .get_job(with_token(get(JOB), "guess-0123456789abcdef"))
            .await,
        Code::Unauthenticated,
        "not one of this server's tokens",
    );
    // A viewer reads, and is refused every change, naming the role needed.
    let status = client
        .get_job(with_token(get(JOB), VIEWER_TOKEN))
        .await
        .expect("a viewer reads")
        .into_inner();
    assert_eq!(status.job_id, JOB);
    let pause = pb::PauseJobRequest { job_id: JOB.into() };
    refused(
        client
            .pause_job(with_token(pause.clone(), VIEWER_TOKEN))
            .await,
        Code::PermissionDenied,
        "PauseJob needs the operator role; token:look has the viewer role",
    );
    refused(
        client
            .update_throttle(with_token(
                pb::UpdateThrottleRequest {
                    job_id: JOB.into(),
                    rows_per_sec: Some(0),
                    ..Default::default()
                },
                VIEWER_TOKEN,
            ))
            .await,
        Code::PermissionDenied,
        "UpdateThrottle needs the operator role",
    );
    refused(
        client
            .cancel_job(with_token(
                pb::CancelJobRequest { job_id: JOB.into() },
                VIEWER_TOKEN,
            ))
            .await,
        Code::PermissionDenied,
        "CancelJob needs the operator role",
    );
    refused(
        client
            .drain_worker(with_token(
                pb::DrainWorkerRequest {
                    worker_id: "local-1".into(),
                },
                VIEWER_TOKEN,
            ))
            .await,
        Code::PermissionDenied,
        "DrainWorker needs the operator role",
    );
    refused(
        client
            .recopy_chunks(with_token(
                pb::RecopyChunksRequest {
                    job_id: JOB.into(),
                    chunk_ids: vec![0],
                    ..Default::default()
                },
                VIEWER_TOKEN,
            ))
            .await,
        Code::PermissionDenied,
        "RecopyChunks needs the operator role",
    );
    // The refused calls changed nothing: the job still runs, unpaused.
    let status = client
        .get_job(with_token(get(JOB), VIEWER_TOKEN))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.state, pb::JobState::Running as i32, "{status:?}");

    // The operator pauses and resumes with ferryctl (the token from a file), then lifts
    // the rate limit so the job ends.
    let endpoint = format!("http://{addr}");
    let operator_file = dir.path().join("operator.token");
    std::fs::write(&operator_file, format!("{OPERATOR_TOKEN}\n")).expect("token file");
    let viewer_file = dir.path().join("viewer.token");
    std::fs::write(&viewer_file, VIEWER_TOKEN).expect("token file");
    let operator_file = operator_file.display().to_string();
    let viewer_file = viewer_file.display().to_string();
    let (code, _, stderr) = ferryctl(&[
        "pause",
        JOB,
        "--endpoint",
        &endpoint,
        "--token-file",
        &viewer_file,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("needs the operator role"), "{stderr}");
    let (code, _, stderr) = ferryctl(&["status", JOB, "--endpoint", &endpoint]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("needs a bearer token"), "{stderr}");
    for verb in ["pause", "resume"] {
        let (code, _, stderr) = ferryctl(&[
            verb,
            JOB,
            "--endpoint",
            &endpoint,
            "--token-file",
            &operator_file,
        ]);
        assert_eq!(code, 0, "{verb}: {stderr}");
    }
    let (code, _, stderr) = ferryctl(&[
        "throttle",
        JOB,
        "--rows-per-sec",
        "0",
        "--endpoint",
        &endpoint,
        "--token-file",
        &operator_file,
    ]);
    assert_eq!(code, 0, "{stderr}");

    // The history names who did what; a viewer may read it.
    let (code, stdout, stderr) = ferryctl(&[
        "history",
        JOB,
        "-o",
        "json",
        "--endpoint",
        &endpoint,
        "--token-file",
        &viewer_file,
    ]);
    assert_eq!(code, 0, "{stderr}");
    let entries: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let by_ops: Vec<&str> = entries
        .as_array()
        .expect("entries")
        .iter()
        .filter(|entry| entry["actor"] == "token:ops")
        .map(|entry| entry["summary"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        by_ops,
        [
            "paused: false → true",
            "paused: true → false",
            "rows_per_sec: 400 → none"
        ],
        "{entries}"
    );
    assert_eq!(entries[0]["origin"], "spec", "{entries}");
    assert_eq!(entries[0]["actor"], "", "{entries}");
    let (code, stdout, _) = ferryctl(&[
        "throttle",
        JOB,
        "--history",
        "--endpoint",
        &endpoint,
        "--token-file",
        &viewer_file,
    ]);
    assert_eq!(code, 0);
    assert!(stdout.contains("token:ops"), "{stdout}");

    let outcome = tokio::time::timeout(Duration::from_secs(60), run.finish())
        .await
        .expect("ends in time")
        .expect("run");
    assert!(
        outcome
            .chunks
            .iter()
            .all(|chunk| chunk.state.as_str() == "VERIFIED")
    );
    assert_eq!(
        sqlite3(&dir.path().join("target.db"), "SELECT count(*) FROM orders"),
        "3000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_certificates_of_its_ca_and_records_their_subject() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(dir.path());
    let spec = prepare(dir.path(), 2_000);
    let run = start(
        &spec,
        ControlSecurity {
            tls_cert: Some(pki.server_cert.clone()),
            tls_key: Some(pki.server_key.clone()),
            client_ca: Some(pki.ca.clone()),
            ..ControlSecurity::default()
        },
    )
    .await
    .expect("start");
    let addr = run.control_addr.expect("served");
    run.runtime
        .wait_running(&ferry_model::ids::JobId(JOB.into()))
        .await;
    let pem = |path: &Path| std::fs::read(path).expect("pem");

    let ca_only = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem(&pki.ca)));
    let with_cert = ca_only.clone().identity(Identity::from_pem(
        pem(&pki.client_cert),
        pem(&pki.client_key),
    ));
    let wrong_ca = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem(&pki.other_ca)))
        .identity(Identity::from_pem(
            pem(&pki.client_cert),
            pem(&pki.client_key),
        ));

    // With the client certificate: reads and changes, recorded as the certificate's subject.
    let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .expect("uri")
        .tls_config(with_cert)
        .expect("tls")
        .connect()
        .await
        .expect("a client certificate of the CA is admitted");
    let mut client = ControlClient::new(channel);
    client.get_job(get(JOB)).await.expect("read");
    client
        .pause_job(pb::PauseJobRequest { job_id: JOB.into() })
        .await
        .expect("pause");
    let history = client
        .list_job_history(pb::ListJobHistoryRequest { job_id: JOB.into() })
        .await
        .expect("history")
        .into_inner();
    let pause = history
        .entries
        .iter()
        .find(|entry| entry.summary == "paused: false → true")
        .expect("the pause is recorded");
    assert_eq!(pause.actor, "cert:CN=alice-ops");
    client
        .update_throttle(pb::UpdateThrottleRequest {
            job_id: JOB.into(),
            rows_per_sec: Some(0),
            ..Default::default()
        })
        .await
        .expect("lift the limit");
    client
        .resume_job(pb::ResumeJobRequest { job_id: JOB.into() })
        .await
        .expect("resume");

    // Without a client certificate, with a CA that did not sign the server, or in
    // plaintext: no call gets through.
    for (what, tls, scheme) in [
        ("no client certificate", Some(ca_only), "https"),
        ("the wrong CA", Some(wrong_ca), "https"),
        ("plaintext", None, "http"),
    ] {
        let mut endpoint =
            Channel::from_shared(format!("{scheme}://localhost:{}", addr.port())).expect("uri");
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).expect("tls");
        }
        let outcome = match endpoint.connect().await {
            Ok(channel) => ControlClient::new(channel)
                .get_job(get(JOB))
                .await
                .map(|_| ())
                .map_err(|status| status.to_string()),
            Err(error) => Err(error.to_string()),
        };
        assert!(outcome.is_err(), "{what}: the call got through");
    }

    // ferryctl with --ca/--cert/--key reads the status; without --cert it cannot.
    let endpoint = format!("localhost:{}", addr.port());
    let ca = pki.ca.display().to_string();
    let cert = pki.client_cert.display().to_string();
    let key = pki.client_key.display().to_string();
    let (code, stdout, stderr) = ferryctl(&[
        "status",
        JOB,
        "--endpoint",
        &endpoint,
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("job {JOB}")), "{stdout}");
    let (code, _, stderr) = ferryctl(&["status", JOB, "--endpoint", &endpoint, "--ca", &ca]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("requires a client certificate"), "{stderr}");

    let outcome = tokio::time::timeout(Duration::from_secs(60), run.finish())
        .await
        .expect("ends in time")
        .expect("run");
    assert!(
        outcome
            .chunks
            .iter()
            .all(|chunk| chunk.state.as_str() == "VERIFIED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_without_authentication_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = prepare(dir.path(), 100);
    let env = std::collections::HashMap::new();
    let job = LocalJob::open(
        load_spec(&spec, &env).expect("spec"),
        &spec.with_extension("state.db"),
    )
    .await
    .expect("open");
    let prepared = job.prepare().await.expect("prepare");
    let mut options = LocalRunOptions::workers(1);
    options.control_addr = Some("0.0.0.0:0".into());
    let error = job
        .start(&prepared, &options, CancellationToken::new())
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            error,
            LocalError::Security(SecurityError::Unauthenticated { .. })
        ),
        "{error}"
    );
    assert!(error.to_string().contains("--insecure"), "{error}");
    assert_eq!(error.exit_code(), 2);
    // Nothing was copied.
    let target = dir.path().join("target.db");
    if target.exists() {
        assert_eq!(
            sqlite3(
                &target,
                "SELECT coalesce((SELECT count(*) FROM orders), 0) WHERE EXISTS \
                 (SELECT 1 FROM sqlite_master WHERE name = 'orders') UNION ALL SELECT 0 LIMIT 1"
            ),
            "0"
        );
    }

    // The same through ferryctl, and a tokens file with a short token is named.
    let spec_text = spec.display().to_string();
    let (code, _, stderr) = ferryctl(&["local", &spec_text, "--control-addr", "0.0.0.0:0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("without authentication"), "{stderr}");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "ops operator short\n").expect("tokens");
    let (code, _, stderr) = ferryctl(&[
        "local",
        &spec_text,
        "--control-addr",
        "127.0.0.1:0",
        "--tokens-file",
        &tokens.display().to_string(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("line 1: the token of ops is shorter than 16 characters"),
        "{stderr}"
    );
}
