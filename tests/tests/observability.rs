//! Metrics and logs as an operator's tools see them: a real Prometheus (Debian's, started
//! here) scrapes a cluster's coordinator and worker and a `ferryctl local` run; every
//! PromQL expression of the shipped Grafana dashboard returns data; the copied-rows
//! counter equals the job's rows; chunks by state add up; `promtool check metrics`
//! accepts each scrape; JSON log lines parse and carry the chunk attempt's fields.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::cluster::{Cluster, assert_done, binary, status, submit, wait_done};
use ferry_tests::free_port;

/// `curl`'s body of `url` (with `--data-urlencode` pairs as a GET query), if it answers.
fn curl(url: &str, query: &[(&str, &str)]) -> Option<String> {
    let mut command = Command::new("curl");
    command.args(["-fsS", "--max-time", "5", "-G", url]);
    for (key, value) in query {
        command.args(["--data-urlencode", &format!("{key}={value}")]);
    }
    let output = command.output().expect("curl");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A Prometheus scraping `targets` every second, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[String]) -> Prometheus {
        let port = free_port();
        let config = dir.join("prometheus.yml");
        // Each target with a `pod` label, as Kubernetes service discovery gives it (the
        // chart's KEDA query joins on it).
        let static_configs: String = targets
            .iter()
            .enumerate()
            .map(|(index, target)| {
                format!("      - {{ targets: ['{target}'], labels: {{ pod: 'ferry-{index}' }} }}\n")
            })
            .collect();
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 scrape_configs:\n  - job_name: ferry\n    static_configs:\n{static_configs}"
            ),
        )
        .expect("config");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
            .spawn()
            .expect("prometheus is installed by scripts/services.sh (Debian package prometheus)");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while curl(&format!("{}/-/ready", prometheus.url), &[]).is_none() {
            assert!(Instant::now() < deadline, "prometheus not ready in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Target discovery reaches the scrape manager some seconds after start: wait
        // until every target is scraped, so a short run is not missed.
        loop {
            let active = curl(&format!("{}/api/v1/targets", prometheus.url), &[])
                .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
                .and_then(|answer| answer["data"]["activeTargets"].as_array().map(Vec::len))
                .unwrap_or(0);
            if active == targets.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus has {active} targets after 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    /// The result vector of an instant query.
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let body = curl(&format!("{}/api/v1/query", self.url), &[("query", expr)])
            .unwrap_or_else(|| panic!("prometheus refused {expr}"));
        let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of an instant query, once it satisfies `done` (waits for scrapes).
    fn value_when(&self, expr: &str, done: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let value = self.query(expr).first().and_then(|sample| {
                sample["value"][1]
                    .as_str()
                    .and_then(|text| text.parse::<f64>().ok())
            });
            if let Some(value) = value
                && done(value)
            {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{expr} did not reach the expected value: {value:?}; targets: {:?}",
                self.query("up")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every PromQL expression of the shipped dashboard, with `$job` matching every job.
fn dashboard_expressions() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/ferry/dashboards/ferry.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("expr").replace("$job", ".*"))
        .collect()
}

/// Every line of a JSON log parses; returns the chunk attempts' lines.
fn chunk_attempt_lines(log: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(log).expect("log");
    assert!(!text.trim().is_empty(), "{} is empty", log.display());
    let mut lines = Vec::new();
    for line in text.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        if value["span"]["name"] == "chunk_attempt" {
            lines.push(value);
        }
    }
    lines
}

fn scrape(port: u16) -> String {
    curl(&format!("http://127.0.0.1:{port}/metrics"), &[]).expect("a scrape")
}

fn promtool_accepts(scrape: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), scrape.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_cluster_and_a_local_run_and_the_dashboard_has_data() {
    let rows = 30_000;
    let mut cluster = Cluster::new(&[("orders", rows)]);
    let (coordinator_port, worker_port, local_port) = (free_port(), free_port(), free_port());
    let address = cluster.start_coordinator_with(
        "coord-obs",
        &[
            "--metrics-listen",
            &format!("127.0.0.1:{coordinator_port}"),
            "--log-format",
            "json",
        ],
    );
    cluster.start_worker_with(
        "worker-obs",
        2,
        &[
            "--metrics-listen",
            &format!("127.0.0.1:{worker_port}"),
            "--log-format",
            "json",
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let prometheus = Prometheus::start(
        dir.path(),
        &[coordinator_port, worker_port, local_port].map(|port| format!("127.0.0.1:{port}")),
    );

    // A cluster job with a load probe, slowed to a few seconds so it is scraped running.
    let spec = cluster.spec("obs", 5_000, 6_000, 2).replace(
        "throttle: {",
        "throttle: { load: { probe: builtin, interval: 1s, max: 1000, critical: 2000 },",
    );
    submit(&address, &spec).await;
    // A local run scraped at the same time.
    let local_dir = dir.path().join("local");
    std::fs::create_dir_all(&local_dir).expect("dir");
    let connection = rusqlite::Connection::open(local_dir.join("source.db")).expect("source");
    connection
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
             INSERT INTO items SELECT i, 'item ' || i FROM n;",
        )
        .expect("fill");
    let local_spec = local_dir.join("job.yaml");
    std::fs::write(
        &local_spec,
        "name: obs-local\nsource: { kind: sqlite, path: source.db }\n\
         target: { kind: sqlite, path: target.db }\ntables: { include: [items] }\n\
         chunking: { target_rows: 500 }\nthrottle: { rate: { rows_per_sec: 1000 } }\n",
    )
    .expect("spec");
    let local = Command::new(binary("ferryctl"))
        .arg("local")
        .arg(&local_spec)
        .args([
            "--control-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            &format!("127.0.0.1:{local_port}"),
            "--json",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(local_dir.join("stderr.log")).expect("log"))
        .spawn()
        .expect("ferryctl local");

    // While it runs, once a chunk is verified, the status carries the ETA the metric has.
    let deadline = Instant::now() + Duration::from_secs(60);
    let eta = loop {
        let running = status(&address, "obs").await;
        if let Some(eta) = running.as_ref().and_then(|status| status.eta_seconds) {
            break eta;
        }
        assert!(
            Instant::now() < deadline,
            "no ETA while running: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!((0.0..600.0).contains(&eta), "ETA {eta} s");
    let final_status = wait_done(&address, "obs", Duration::from_secs(90)).await;
    assert_done(&final_status);
    cluster.assert_same(&["orders"]);
    let local_output = local.wait_with_output().expect("local run");
    assert!(local_output.status.success(), "the local run failed");

    // The copied-rows counter equals the job's rows; chunks by state add up to the job's.
    let verified = prometheus.value_when(
        "sum(ferry_job_rows_verified_total{ferry_job=\"obs\"})",
        |value| value >= rows as f64,
    );
    assert_eq!(verified, rows as f64);
    let chunks = prometheus.value_when(
        "sum(ferry_job_chunks{ferry_job=\"obs\", state=\"verified\"})",
        |value| value >= f64::from(final_status.chunks_total),
    );
    assert_eq!(chunks, f64::from(final_status.chunks_total));
    assert_eq!(
        prometheus.value_when("sum(ferry_job_chunks{ferry_job=\"obs\"})", |_| true),
        f64::from(final_status.chunks_total)
    );
    // The local run was scraped while it ran.
    prometheus.value_when(
        "max(max_over_time(ferry_job_attempts_total{ferry_job=\"obs-local\"}[5m]))",
        |value| value > 0.0,
    );
    // The worker autoscaler's metric, and the chart's KEDA query (its selector aside).
    assert!(
        !prometheus
            .query("sum(ferry_coordinator_chunks_pending)")
            .is_empty()
    );
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/ferry/templates/worker.yaml"),
    )
    .expect("worker template");
    let keda_template = "sum(sum by (pod) (ferry_coordinator_chunks_pending{%s}) * on (pod) \
                         max by (pod) (ferry_coordinator_leader{%s}))";
    assert!(
        template.contains(keda_template),
        "the chart's KEDA query changed: update this test"
    );
    let keda = keda_template.replace("%s", "");
    assert!(!prometheus.query(&keda).is_empty(), "{keda} has no data");
    // Assignment latency was measured for every attempt.
    prometheus.value_when("sum(ferry_coordinator_assignment_seconds_count)", |count| {
        count >= f64::from(final_status.chunks_total)
    });
    // Every dashboard expression returns data.
    let mut empty = Vec::new();
    for expr in dashboard_expressions() {
        if prometheus.query(&expr).is_empty() {
            empty.push(expr);
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard expressions without data: {empty:#?}"
    );
    // The scrapes pass promtool's checks.
    promtool_accepts(&scrape(coordinator_port));
    promtool_accepts(&scrape(worker_port));
    // `ferryctl status` showed an ETA while running; done, the status has none.
    let done = status(&address, "obs").await.expect("status");
    assert_eq!(done.eta_seconds, None);

    // JSON logs: every line parses; chunk attempts carry job, table, partition, chunk
    // and attempt on both sides.
    for process in ["coord-obs", "worker-obs"] {
        let lines = chunk_attempt_lines(&cluster.log(process));
        assert!(!lines.is_empty(), "{process} logged no chunk attempt");
        for line in &lines {
            for field in ["job", "table", "partition", "chunk", "attempt"] {
                assert!(
                    line["span"].get(field).is_some(),
                    "{process}: {field} missing in {line}"
                );
            }
            assert_eq!(line["span"]["job"], "obs", "{line}");
        }
    }
}
