//! The Helm chart (`helm/ferry`) against the binaries it deploys.
//!
//! - `helm lint --strict` and `helm template` pass with the default values and every
//!   `ci/*-values.yaml` (TLS, KEDA, evaluation etcd, CPU autoscaling), and the
//!   renderings hold what each file turns on;
//! - `values.schema.json` and the templates refuse wrong values;
//! - the chart contract: the rendered coordinator and worker containers (command, args,
//!   environment, mounted ConfigMaps and Secrets) are started for real against the test
//!   etcd and PostgreSQL; the rendered probe ports and the Service answer the gRPC health
//!   protocol SERVING; a job runs to the end; a worker sent SIGTERM with a chunk in
//!   flight exits 0 within the rendered `terminationGracePeriodSeconds` and the chunk
//!   ends verified. A flag or configuration key the chart does not follow fails here.
//!
//! helm comes from `scripts/tools.sh` (`make test` runs it) in `.tools/bin`, or from
//! `FERRY_HELM`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_proto::v1 as pb;
use ferry_proto::v1::control_client::ControlClient;
use ferry_tests::cluster::{Cluster, SOURCE_VAR, TARGET_VAR};
use ferry_tests::free_port;
use ferry_tests::helm::{
    PodWorld, chart_dir, ci_values, container, container_port, find, grpc_probe, kinds,
    materialise, objects, render, run_helm,
};
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

#[test]
fn chart_lints_and_renders_with_default_and_ci_values() {
    let files = [
        None,
        Some("tls-values.yaml"),
        Some("keda-values.yaml"),
        Some("evaluation-etcd-values.yaml"),
        Some("cpu-autoscaling-values.yaml"),
    ];
    for file in files {
        let path = file.map(ci_values);
        let mut lint = vec!["lint", "--strict", "."];
        let path_text = path.as_ref().map(|path| path.display().to_string());
        if let Some(path_text) = &path_text {
            lint.extend(["-f", path_text.as_str()]);
        }
        if let Err(output) = run_helm(&lint) {
            panic!("helm lint --strict with {file:?} failed:\n{output}");
        }
        let rendered = render(path.as_deref().into_iter().collect::<Vec<_>>().as_slice())
            .unwrap_or_else(|output| panic!("helm template with {file:?} failed:\n{output}"));
        let objects = objects(&rendered);
        let kinds = kinds(&objects);
        // The chart never carries a secret: every credential is an existing Secret's.
        assert!(
            !kinds.contains(&"Secret".to_owned()),
            "{file:?} renders a Secret"
        );
        let coordinator = find(&objects, "Deployment", "ferry-coordinator");
        let worker = find(&objects, "Deployment", "ferry-worker");
        find(&objects, "PodDisruptionBudget", "ferry-coordinator");
        find(&objects, "PodDisruptionBudget", "ferry-worker");
        for deployment in [coordinator, worker] {
            let pod = &deployment["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
            assert_eq!(
                container(deployment)["securityContext"]["readOnlyRootFilesystem"],
                true
            );
            for variable in container(deployment)["env"].as_array().expect("env") {
                let name = variable["name"].as_str().unwrap_or_default();
                if name.ends_with("_URL") {
                    assert!(
                        variable["valueFrom"]["secretKeyRef"].is_object(),
                        "{name} is not taken from a Secret: {variable}"
                    );
                }
            }
        }
        let coordinator_toml =
            find(&objects, "ConfigMap", "ferry-coordinator")["data"]["coordinator.toml"]
                .as_str()
                .expect("coordinator.toml")
                .to_owned();
        // Every dashboards/*.json of the chart, shipped in one ConfigMap.
        let dashboards: Vec<String> = std::fs::read_dir(chart_dir().join("dashboards"))
            .expect("helm/ferry/dashboards")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".json"))
            .collect();
        if dashboards.is_empty() {
            assert!(
                !objects
                    .iter()
                    .any(|object| object["metadata"]["name"] == "ferry-dashboards")
            );
        } else {
            let config_map = find(&objects, "ConfigMap", "ferry-dashboards");
            for dashboard in &dashboards {
                let text = config_map["data"][dashboard.as_str()]
                    .as_str()
                    .unwrap_or_else(|| panic!("{dashboard} is not in ferry-dashboards"));
                serde_json::from_str::<Value>(text)
                    .unwrap_or_else(|error| panic!("{dashboard} is not JSON: {error}"));
            }
        }
        match file {
            None => {
                assert_eq!(coordinator["spec"]["replicas"], 2);
                assert_eq!(worker["spec"]["replicas"], 3);
                // Big freed buffers go back to the system (the memory bound).
                let threshold = container(worker)["env"]
                    .as_array()
                    .expect("env")
                    .iter()
                    .find(|variable| variable["name"] == "MALLOC_MMAP_THRESHOLD_")
                    .map(|variable| variable["value"].clone());
                assert_eq!(threshold, Some(Value::from("1048576")));
                assert!(coordinator_toml.contains("tokens_file = \"/etc/ferry/tokens/tokens\""));
                assert_eq!(
                    worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], 90,
                    "drain_timeout 60s + 30s margin"
                );
            }
            Some("tls-values.yaml") => {
                assert!(coordinator_toml.contains("tls_cert = \"/etc/ferry/tls/tls.crt\""));
                assert!(coordinator_toml.contains("client_ca = \"/etc/ferry/tls/ca.crt\""));
                // `[[endpoints]]` as an array of inline tables (the coordinator started
                // from these values in the test below reads it).
                assert!(
                    coordinator_toml.contains(
                        "endpoints = [{ match = \"orders-db.prod:5432/orders\", max_concurrency = 8 }]"
                    ),
                    "{coordinator_toml}"
                );
                assert!(coordinator_toml.contains("ca = \"/etc/ferry/etcd-tls/ca.crt\""));
                assert!(
                    coordinator_toml
                        .contains("password_file = \"/etc/ferry/etcd-password/password\"")
                );
                // Probes on the plaintext health-only port, not on the TLS port.
                let probe_port = &container(coordinator)["readinessProbe"]["grpc"]["port"];
                assert_eq!(probe_port, 7980, "{coordinator_toml}");
            }
            Some("keda-values.yaml") => {
                let scaled = find(&objects, "ScaledObject", "ferry-worker");
                let query = scaled["spec"]["triggers"][0]["metadata"]["query"]
                    .as_str()
                    .unwrap_or_default();
                assert!(
                    query.contains("ferry_coordinator_chunks_pending")
                        && query.contains("namespace=\"migrations\""),
                    "{query}"
                );
                find(&objects, "ServiceMonitor", "ferry");
                assert!(!kinds.contains(&"HorizontalPodAutoscaler".to_owned()));
                assert!(worker["spec"]["replicas"].is_null(), "KEDA owns replicas");
            }
            Some("evaluation-etcd-values.yaml") => {
                find(&objects, "StatefulSet", "ferry-etcd");
                find(&objects, "Service", "ferry-etcd");
                find(&objects, "NetworkPolicy", "ferry-coordinator");
                assert!(
                    coordinator_toml.contains("endpoints = [\"http://ferry-etcd:2379\"]"),
                    "{coordinator_toml}"
                );
                assert!(coordinator_toml.contains("insecure = true"));
            }
            Some("cpu-autoscaling-values.yaml") => {
                let autoscaler = find(&objects, "HorizontalPodAutoscaler", "ferry-worker");
                assert_eq!(autoscaler["spec"]["maxReplicas"], 12);
                assert_eq!(
                    worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"], 330,
                    "drain_timeout 5m + 30s margin"
                );
            }
            Some(other) => panic!("no expectations for {other}"),
        }
    }
}

/// `worker.mallocMmapThreshold: 0` leaves the worker's memory settings to the libraries'
/// defaults: no threshold, and the binary told not to set its own.
#[test]
fn a_zero_mmap_threshold_leaves_the_workers_memory_settings_to_the_libraries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "worker: { mallocMmapThreshold: 0 }\n").expect("values file");
    let rendered = render(&[values.as_path()])
        .unwrap_or_else(|output| panic!("helm template failed:\n{output}"));
    let objects = objects(&rendered);
    let worker = find(&objects, "Deployment", "ferry-worker");
    let env = container(worker)["env"].as_array().expect("env");
    assert!(
        env.iter()
            .all(|variable| variable["name"] != "MALLOC_MMAP_THRESHOLD_"),
        "{env:?}"
    );
    assert!(
        env.iter()
            .any(|variable| variable["name"] == "FERRY_MEMORY_SETTINGS"
                && variable["value"] == "off"),
        "{env:?}"
    );
}

#[test]
fn schema_and_templates_refuse_wrong_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &str); 11] = [
        ("coordinator: { replicas: -1 }", "/coordinator/replicas"),
        (
            "worker: { mallocMmapThreshold: -1 }",
            "/worker/mallocMmapThreshold",
        ),
        ("worker: { replicas: -2 }", "/worker/replicas"),
        ("worker: { slotz: 4 }", "slotz"),
        ("worker: { config: { lease: { grace: 2s } } }", "grace"),
        (
            "coordinator: { config: { lease: { ttl: 10 } } }",
            "/coordinator/config/lease/ttl",
        ),
        (
            "worker: { config: { drain_timeout: 1h 30m } }",
            "drain_timeout",
        ),
        (
            "coordinator: { tokens: { existingSecret: \"\" } }",
            "without authentication",
        ),
        ("etcd: { endpoints: [] }", "etcd.endpoints is empty"),
        (
            "coordinator: { config: { endpoints: [{ match: \"db/orders\", max_concurrency: 8 }] } }",
            "/coordinator/config/endpoints/0/match",
        ),
        (
            "coordinator: { config: { endpoints: [{ match: \"db:5432/orders\", max_concurrency: 0 }] } }",
            "/coordinator/config/endpoints/0/max_concurrency",
        ),
    ];
    for (index, (values, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("wrong-{index}.yaml"));
        std::fs::write(&path, values).expect("write values");
        match render(&[&path]) {
            Ok(_) => panic!("helm template accepted {values}"),
            Err(output) => assert!(
                output.contains(needle),
                "refusing {values} should name {needle:?}:\n{output}"
            ),
        }
    }
}

/// Waits until `service` on `port` answers SERVING; fails at once when `process` (of
/// `cluster`) has exited.
async fn wait_serving(
    cluster: &mut Cluster,
    process: &str,
    port: u16,
    service: &str,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        let child = cluster
            .coordinators
            .iter_mut()
            .map(|(name, child, _)| (name, child))
            .chain(
                cluster
                    .workers
                    .iter_mut()
                    .map(|(name, child)| (name, child)),
            )
            .find(|(name, _)| name.as_str() == process)
            .map(|(_, child)| child)
            .unwrap_or_else(|| panic!("no process {process}"));
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "{process} exited ({status}) before its health {service:?} on port {port} answered; log:\n{}",
                cluster.read_log(process)
            );
        }
        let endpoint = Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri");
        if let Ok(channel) = endpoint.connect().await {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            let request = tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            };
            match client.check(request).await {
                Ok(response) => {
                    let status = response.into_inner().status;
                    if status == ServingStatus::Serving as i32 {
                        return;
                    }
                    last = format!("status {status}");
                }
                Err(status) => last = status.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("health {service:?} on port {port} not SERVING within {limit:?}: {last}");
}

/// `GET path` over HTTP/1.0 on a local port (with a bearer token): the status line and
/// the body.
fn http_get(port: u16, path: &str, token: Option<&str>) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|error| panic!("port {port}: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{authorization}\r\n").as_bytes(),
        )
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// `GET /metrics` answers 200 with Prometheus text.
fn assert_metrics(port: u16) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|error| panic!("metrics port {port}: {error}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
        "GET /metrics on {port}: {}",
        response.lines().next().unwrap_or_default()
    );
}

type AuthedClient = ControlClient<
    InterceptedService<
        Channel,
        Box<dyn FnMut(tonic::Request<()>) -> tonic::Result<tonic::Request<()>> + Send>,
    >,
>;

async fn plaintext_channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the coordinator")
}

fn authed_client(channel: Channel, token: &str) -> AuthedClient {
    let header: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("ascii");
    let interceptor: Box<
        dyn FnMut(tonic::Request<()>) -> tonic::Result<tonic::Request<()>> + Send,
    > = Box::new(move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", header.clone());
        Ok(request)
    });
    ControlClient::with_interceptor(channel, interceptor)
}

async fn list_chunks(client: &mut AuthedClient, job: &str) -> Vec<pb::ChunkInfo> {
    client
        .list_chunks(pb::ListChunksRequest {
            job_id: job.to_owned(),
            page_size: 10_000,
            ..Default::default()
        })
        .await
        .expect("list chunks")
        .into_inner()
        .chunks
}

/// Waits until the job ends; returns its final state.
async fn wait_job_end(client: &mut AuthedClient, job: &str) -> pb::GetJobResponse {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = client
            .get_job(pb::GetJobRequest {
                job_id: job.to_owned(),
            })
            .await
            .expect("get job")
            .into_inner();
        let state = pb::JobState::try_from(status.state).unwrap_or(pb::JobState::Unspecified);
        if matches!(
            state,
            pb::JobState::Done | pb::JobState::Failed | pb::JobState::Cancelled
        ) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} did not end: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_coordinator_and_worker_run_a_job_and_a_sigterm_drains_within_the_grace_period() {
    let mut cluster = Cluster::new(&[("orders", 6_000)]);
    let token = format!("helm-contract-{}", ferry_tests::unique_suffix());
    let ports = [
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    ];
    let [
        control,
        coordinator_health,
        coordinator_metrics,
        coordinator_console,
        worker_health,
        worker_metrics,
    ] = ports;
    let endpoints: Vec<String> = cluster.etcd.split(',').map(str::to_owned).collect();
    // Only what a user would put in a values file: ports, etcd, short leases for a fast
    // test, the drain timeout, the database Secrets. Everything else is the default.
    let values = json!({
        "etcd": { "endpoints": endpoints, "cluster": cluster.name },
        "databaseEnv": [
            { "name": SOURCE_VAR, "secretKeyRef": { "name": "ferry-databases", "key": "source-url" } },
            { "name": TARGET_VAR, "secretKeyRef": { "name": "ferry-databases", "key": "target-url" } },
        ],
        "coordinator": { "config": {
            "server": {
                "listen": format!("0.0.0.0:{control}"),
                "health_listen": format!("0.0.0.0:{coordinator_health}"),
            },
            "lease": { "ttl": "3s", "worker_ttl": "3s", "grace": "1s" },
            "metrics": { "listen": format!("0.0.0.0:{coordinator_metrics}") },
            "console": { "listen": format!("0.0.0.0:{coordinator_console}") },
        }},
        "worker": { "config": {
            "drain_timeout": "20s",
            "lease": { "ttl": "3s" },
            "health": { "listen": format!("0.0.0.0:{worker_health}") },
            "metrics": { "listen": format!("0.0.0.0:{worker_metrics}") },
        }},
    });
    let values_path = cluster.dir.path().join("values.json");
    std::fs::write(&values_path, values.to_string()).expect("write values");
    let rendered = render(&[&values_path]).unwrap_or_else(|output| panic!("{output}"));
    let objects = objects(&rendered);
    let coordinator = find(&objects, "Deployment", "ferry-coordinator");
    let worker = find(&objects, "Deployment", "ferry-worker");
    let secrets = HashMap::from([
        (
            ("ferry-tokens".to_owned(), "tokens".to_owned()),
            format!("helm-test operator {token}\n"),
        ),
        (
            ("ferry-databases".to_owned(), "source-url".to_owned()),
            cluster.source_url(),
        ),
        (
            ("ferry-databases".to_owned(), "target-url".to_owned()),
            cluster.target_url(),
        ),
    ]);
    let pod_world = |pod_name: &str| PodWorld {
        secrets: secrets.clone(),
        pod_name: pod_name.to_owned(),
        pod_ip: "127.0.0.1".to_owned(),
    };

    // The coordinator, as its container runs.
    let coordinator_root = cluster.dir.path().join("ferry-coordinator-0");
    let process = materialise(
        &objects,
        coordinator,
        &pod_world("ferry-coordinator-0"),
        &coordinator_root,
    );
    let child = process.spawn(&cluster.log("ferry-coordinator-0"));
    cluster.coordinators.push((
        "ferry-coordinator-0".to_owned(),
        child,
        format!("127.0.0.1:{control}"),
    ));
    let (port, service) = grpc_probe(coordinator, "livenessProbe");
    wait_serving(
        &mut cluster,
        "ferry-coordinator-0",
        port,
        &service,
        Duration::from_secs(30),
    )
    .await;
    let (port, service) = grpc_probe(coordinator, "readinessProbe");
    assert_eq!(service, "ferry.v1.Control");
    wait_serving(
        &mut cluster,
        "ferry-coordinator-0",
        port,
        &service,
        Duration::from_secs(30),
    )
    .await;
    // The Service's port leads to the Control API's container port.
    let service_object = find(&objects, "Service", "ferry-coordinator");
    let target = service_object["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|port| port["name"] == "control")
        .map(|port| port["targetPort"].as_str().expect("a named targetPort"))
        .expect("a control port");
    wait_serving(
        &mut cluster,
        "ferry-coordinator-0",
        container_port(coordinator, target),
        "ferry.v1.Control",
        Duration::from_secs(10),
    )
    .await;
    assert_metrics(container_port(coordinator, "metrics"));
    // The console on the port the chart names: its page, and its API behind the tokens.
    let console = container_port(coordinator, "console");
    assert_eq!(console, coordinator_console);
    let (status, body) = http_get(console, "/", None);
    assert!(
        status.contains("200") && body.contains("<title>ferry console</title>"),
        "{status}"
    );
    let (status, _) = http_get(console, "/api/jobs", None);
    assert!(
        status.contains("401"),
        "the console's API without a token: {status}"
    );
    let (status, body) = http_get(console, "/api/jobs", Some(&token));
    assert!(
        status.contains("200") && body.starts_with('{'),
        "{status} {body}"
    );

    // A worker, as its container runs.
    let pods_dir = cluster.dir.path().to_owned();
    let worker_process =
        |pod: &str| materialise(&objects, worker, &pod_world(pod), &pods_dir.join(pod));
    let first = worker_process("ferry-worker-a");
    let child = first.spawn(&cluster.log("ferry-worker-a"));
    cluster.workers.push(("ferry-worker-a".to_owned(), child));
    let (port, service) = grpc_probe(worker, "livenessProbe");
    wait_serving(
        &mut cluster,
        "ferry-worker-a",
        port,
        &service,
        Duration::from_secs(30),
    )
    .await;
    let (port, service) = grpc_probe(worker, "readinessProbe");
    assert_eq!(service, "ferry.v1.Worker");
    wait_serving(
        &mut cluster,
        "ferry-worker-a",
        port,
        &service,
        Duration::from_secs(30),
    )
    .await;
    assert_metrics(container_port(worker, "metrics"));

    // A job, slowed down so that chunks are in flight when the worker is told to stop.
    let mut client = authed_client(plaintext_channel(control).await, &token);
    let spec = cluster.spec("helm-contract", 1_000, 1_000, 2);
    client
        .submit_job(pb::SubmitJobRequest {
            spec_yaml: spec,
            dry_run: false,
        })
        .await
        .expect("submit through the rendered Control API with the token");
    let deadline = Instant::now() + Duration::from_secs(30);
    let in_flight = loop {
        let copying = list_chunks(&mut client, "helm-contract")
            .await
            .into_iter()
            .find(|chunk| chunk.worker == "ferry-worker-a" && chunk.state == "COPYING");
        if let Some(chunk) = copying {
            break chunk;
        }
        assert!(Instant::now() < deadline, "no chunk ran on ferry-worker-a");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // SIGTERM: exit 0 within the rendered grace period, the chunk not lost.
    let grace_secs = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace_secs > 20,
        "grace {grace_secs}s is not above drain_timeout 20s"
    );
    cluster.signal("ferry-worker-a", "TERM");
    let started = Instant::now();
    let code = tokio::task::block_in_place(|| {
        cluster.wait_exit("ferry-worker-a", Duration::from_secs(grace_secs))
    });
    assert_eq!(code, Some(0), "a drained worker exits 0");
    eprintln!("ferry-worker-a drained in {:?}", started.elapsed());

    // The same rendering again (a new pod of the Deployment) finishes the job.
    let second = worker_process("ferry-worker-b");
    let child = second.spawn(&cluster.log("ferry-worker-b"));
    cluster.workers.push(("ferry-worker-b".to_owned(), child));
    let status = wait_job_end(&mut client, "helm-contract").await;
    ferry_tests::cluster::assert_done(&status);
    let drained = list_chunks(&mut client, "helm-contract")
        .await
        .into_iter()
        .find(|chunk| chunk.id == in_flight.id)
        .expect("the chunk in flight at SIGTERM");
    assert_eq!(drained.state, "VERIFIED", "{drained:?}");
    // A chunk of about two seconds fits in the rendered drain_timeout (20s): the draining
    // worker finished it itself, in the attempt it held, instead of handing it back.
    assert_eq!(
        (drained.attempt, drained.last_error.as_str()),
        (in_flight.attempt, ""),
        "the draining worker did not finish its chunk within drain_timeout: {drained:?}"
    );
    cluster.assert_same(&["orders"]);

    // A coordinator on SIGTERM stops within its grace period, with code 0.
    let coordinator_grace =
        coordinator["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
    cluster.signal("ferry-coordinator-0", "TERM");
    let code = tokio::task::block_in_place(|| {
        cluster.wait_exit(
            "ferry-coordinator-0",
            Duration::from_secs(coordinator_grace),
        )
    });
    assert_eq!(code, Some(0), "a coordinator stopped by SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_tls_values_serve_mutual_tls_and_reach_etcd_over_tls_as_a_user() {
    let etcd_certs = PathBuf::from(ferry_tests::cluster::env_var("FERRY_TEST_ETCD_TLS_DIR"));
    let mut cluster = Cluster::with_etcd(
        &[("orders", 3_000)],
        ferry_tests::cluster::env_var("FERRY_TEST_ETCD_TLS_ENDPOINTS"),
    );
    let pki = ferry_tests::pki::TestPki::new(cluster.dir.path());
    let token = format!("helm-tls-{}", ferry_tests::unique_suffix());
    let [control, coordinator_health, worker_health] = [free_port(), free_port(), free_port()];
    let endpoints: Vec<String> = cluster.etcd.split(',').map(str::to_owned).collect();
    // ci/tls-values.yaml, with this machine's ports and etcd on top.
    let values = json!({
        "etcd": { "endpoints": endpoints, "cluster": cluster.name },
        "coordinator": { "config": {
            "server": {
                "listen": format!("0.0.0.0:{control}"),
                "health_listen": format!("0.0.0.0:{coordinator_health}"),
            },
            "lease": { "ttl": "3s", "worker_ttl": "3s", "grace": "1s" },
            "metrics": null,
        }},
        "worker": { "config": {
            "lease": { "ttl": "3s" },
            "health": { "listen": format!("0.0.0.0:{worker_health}") },
            "metrics": null,
        }},
    });
    let values_path = cluster.dir.path().join("values.json");
    std::fs::write(&values_path, values.to_string()).expect("write values");
    let rendered = render(&[&ci_values("tls-values.yaml"), &values_path])
        .unwrap_or_else(|output| panic!("{output}"));
    let objects = objects(&rendered);
    let coordinator = find(&objects, "Deployment", "ferry-coordinator");
    let worker = find(&objects, "Deployment", "ferry-worker");
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
    };
    let secret =
        |name: &str, key: &str, content: String| ((name.to_owned(), key.to_owned()), content);
    let secrets = HashMap::from([
        secret(
            "ferry-tokens",
            "tokens",
            format!("helm-test operator {token}\n"),
        ),
        secret("ferry-control-tls", "tls.crt", read(&pki.server_cert)),
        secret("ferry-control-tls", "tls.key", read(&pki.server_key)),
        secret("ferry-control-tls", "ca.crt", read(&pki.ca)),
        secret("ferry-etcd-tls", "ca.crt", read(&etcd_certs.join("ca.crt"))),
        secret(
            "ferry-etcd-tls",
            "tls.crt",
            read(&etcd_certs.join("client.crt")),
        ),
        secret(
            "ferry-etcd-tls",
            "tls.key",
            read(&etcd_certs.join("client.key")),
        ),
        secret(
            "ferry-etcd-password",
            "password",
            read(&etcd_certs.join("ferry.password")),
        ),
        secret("ferry-databases", "source-url", cluster.source_url()),
        secret("ferry-databases", "target-url", cluster.target_url()),
    ]);
    let pod_world = |pod_name: &str| PodWorld {
        secrets: secrets.clone(),
        pod_name: pod_name.to_owned(),
        pod_ip: "127.0.0.1".to_owned(),
    };
    let pods_dir = cluster.dir.path().to_owned();

    let process = materialise(
        &objects,
        coordinator,
        &pod_world("ferry-coordinator-tls"),
        &pods_dir.join("ferry-coordinator-tls"),
    );
    let child = process.spawn(&cluster.log("ferry-coordinator-tls"));
    cluster.coordinators.push((
        "ferry-coordinator-tls".to_owned(),
        child,
        format!("127.0.0.1:{control}"),
    ));
    // The probes speak plaintext gRPC to the health-only port while the Control API
    // serves TLS.
    for probe in ["livenessProbe", "readinessProbe"] {
        let (port, service) = grpc_probe(coordinator, probe);
        wait_serving(
            &mut cluster,
            "ferry-coordinator-tls",
            port,
            &service,
            Duration::from_secs(30),
        )
        .await;
    }
    let process = materialise(
        &objects,
        worker,
        &pod_world("ferry-worker-tls"),
        &pods_dir.join("ferry-worker-tls"),
    );
    let child = process.spawn(&cluster.log("ferry-worker-tls"));
    cluster.workers.push(("ferry-worker-tls".to_owned(), child));
    for probe in ["livenessProbe", "readinessProbe"] {
        let (port, service) = grpc_probe(worker, probe);
        wait_serving(
            &mut cluster,
            "ferry-worker-tls",
            port,
            &service,
            Duration::from_secs(30),
        )
        .await;
    }

    // The Control API: TLS with the client certificate, and the token.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(&pki.ca)))
        .identity(tonic::transport::Identity::from_pem(
            read(&pki.client_cert),
            read(&pki.client_key),
        ));
    let channel = Channel::from_shared(format!("https://localhost:{control}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("the rendered Control API serves TLS to a client certificate of its CA");
    let mut client = authed_client(channel, &token);
    let spec = "name: helm-tls\n\
                source: { kind: postgres, url_env: FERRY_SOURCE_URL }\n\
                target: { kind: postgres, url_env: FERRY_TARGET_URL }\n\
                tables: { include: [\"public.*\"] }\n\
                chunking: { target_rows: 1000 }\n";
    client
        .submit_job(pb::SubmitJobRequest {
            spec_yaml: spec.to_owned(),
            dry_run: false,
        })
        .await
        .expect("submit over TLS with the token");
    let status = wait_job_end(&mut client, "helm-tls").await;
    ferry_tests::cluster::assert_done(&status);
    cluster.assert_same(&["orders"]);
}
