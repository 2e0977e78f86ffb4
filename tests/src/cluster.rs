//! A ferry cluster of real processes for the tests: `ferry-coordinator` and
//! `ferry-worker` started as children against the etcd of `scripts/services.sh` (each
//! cluster in a prefix of its own) and PostgreSQL databases of its own, and the Control
//! API calls the tests make of it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_proto::v1 as pb;
use ferry_proto::v1::control_client::ControlClient;

use crate::{psql, unique_suffix, with_database};

pub const SOURCE_VAR: &str = "FERRY_DIST_SOURCE";
pub const TARGET_VAR: &str = "FERRY_DIST_TARGET";
/// Lease TTL of workers and coordinators in these tests (seconds).
pub const TTL: u64 = 3;

pub fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the test services with \
             `scripts/services.sh up && eval \"$(scripts/services.sh env)\"`"
        )
    })
}

/// A binary of the workspace, next to this test's executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`; `make test` does it)",
        path.display()
    );
    path
}

/// A source and a target database and a cluster prefix, with the processes started
/// in it; everything is stopped and dropped on drop.
pub struct Cluster {
    pub name: String,
    pub etcd: String,
    pub server: String,
    pub source_db: String,
    pub target_db: String,
    pub dir: tempfile::TempDir,
    pub coordinators: Vec<(String, Child, String)>,
    pub workers: Vec<(String, Child)>,
    /// Flags every process gets after the usual ones (etcd TLS and user, say).
    pub etcd_args: Vec<String>,
    /// Environment every process gets on top of the usual (RUST_LOG overrides `info`).
    pub extra_env: HashMap<String, String>,
}

impl Cluster {
    pub fn new(tables: &[(&str, u64)]) -> Cluster {
        Cluster::with_etcd(tables, env_var("FERRY_TEST_ETCD_ENDPOINTS"))
    }

    pub fn with_etcd(tables: &[(&str, u64)], etcd: String) -> Cluster {
        let server = env_var("FERRY_TEST_PG_URL");
        let suffix = unique_suffix();
        let source_db = format!("ferry_dsrc_{suffix}");
        let target_db = format!("ferry_ddst_{suffix}");
        psql(&server, &format!("CREATE DATABASE {source_db}"));
        psql(&server, &format!("CREATE DATABASE {target_db}"));
        let cluster = Cluster {
            name: format!("test-{suffix}"),
            etcd,
            source_db,
            target_db,
            server,
            dir: tempfile::tempdir().expect("tempdir"),
            coordinators: Vec::new(),
            workers: Vec::new(),
            etcd_args: Vec::new(),
            extra_env: HashMap::new(),
        };
        for (table, rows) in tables {
            psql(
                &cluster.source_url(),
                &format!(
                    "CREATE TABLE {table} (id bigint PRIMARY KEY, n int, amount numeric(12,2), \
                     note text, at timestamptz);
                     INSERT INTO {table} SELECT g, g % 1000, g * 1.25, 'row ' || g || repeat('x', g % 50), \
                     timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second' \
                     FROM generate_series(1, {rows}) g;
                     ANALYZE {table};"
                ),
            );
        }
        cluster
    }

    pub fn source_url(&self) -> String {
        with_database(&self.server, &self.source_db)
    }

    pub fn target_url(&self) -> String {
        with_database(&self.server, &self.target_db)
    }

    pub fn envs(&self) -> HashMap<String, String> {
        let mut envs = HashMap::from([
            (SOURCE_VAR.to_owned(), self.source_url()),
            (TARGET_VAR.to_owned(), self.target_url()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ]);
        envs.extend(self.extra_env.clone());
        envs
    }

    pub fn log(&self, process: &str) -> PathBuf {
        self.dir.path().join(format!("{process}.log"))
    }

    /// Starts a coordinator; returns its Control API address once it listens.
    pub fn start_coordinator(&mut self, name: &str) -> String {
        self.start_coordinator_with(name, &[])
    }

    /// Starts a coordinator with more flags after the usual ones; returns its Control
    /// API address once it listens.
    pub fn start_coordinator_with(&mut self, name: &str, extra: &[&str]) -> String {
        let log = std::fs::File::create(self.log(name)).expect("log file");
        let mut child = Command::new(binary("ferry-coordinator"))
            .args([
                "--etcd-endpoints",
                &self.etcd,
                "--cluster",
                &self.name,
                "--listen",
                "127.0.0.1:0",
                "--name",
                name,
                "--lease-ttl",
                &format!("{TTL}s"),
                "--worker-ttl",
                &format!("{TTL}s"),
                "--grace",
                "1s",
            ])
            .args(&self.etcd_args)
            .args(extra)
            .envs(self.envs())
            // Compact etcd's history all the time (the etcd is shared by the tests that
            // run at once): watches must survive compactions, as they must in a long job.
            .env("FERRY_COORDINATOR__HISTORY__COMPACT_INTERVAL", "1s")
            .env("FERRY_COORDINATOR__HISTORY__KEEP_REVISIONS", "1000")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start ferry-coordinator");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the coordinator's address");
        let address = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            address.contains(':'),
            "coordinator {name} did not print its address: {line:?}; log:\n{}",
            self.read_log(name)
        );
        self.coordinators
            .push((name.to_owned(), child, address.clone()));
        address
    }

    /// Starts a coordinator serving its metrics on a free loopback port, with more flags
    /// after the usual ones; returns its Control API address and its metrics address
    /// (for [`metric`] and [`wait_leading`]).
    pub fn start_coordinator_metered(&mut self, name: &str, extra: &[&str]) -> (String, String) {
        let metrics = format!("127.0.0.1:{}", crate::free_port());
        let mut flags = vec!["--metrics-listen", metrics.as_str()];
        flags.extend_from_slice(extra);
        let control = self.start_coordinator_with(name, &flags);
        (control, metrics)
    }

    /// Starts a worker serving its metrics on a free loopback port; returns the metrics
    /// address (for [`metric`]).
    pub fn start_worker_metered(&mut self, name: &str, slots: u32) -> String {
        let metrics = format!("127.0.0.1:{}", crate::free_port());
        self.start_worker_with(name, slots, &["--metrics-listen", &metrics]);
        metrics
    }

    pub fn start_worker(&mut self, name: &str, slots: u32) {
        self.start_worker_with(name, slots, &[]);
    }

    /// Starts a worker with more flags after the usual ones.
    pub fn start_worker_with(&mut self, name: &str, slots: u32, extra: &[&str]) {
        let log = std::fs::File::create(self.log(name)).expect("log file");
        let child = Command::new(binary("ferry-worker"))
            .args([
                "--etcd-endpoints",
                &self.etcd,
                "--cluster",
                &self.name,
                "--name",
                name,
                "--slots",
                &slots.to_string(),
                "--ttl",
                &format!("{TTL}s"),
                "--drain-timeout",
                "30s",
            ])
            .args(&self.etcd_args)
            .args(extra)
            .envs(self.envs())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start ferry-worker");
        self.workers.push((name.to_owned(), child));
    }

    pub fn read_log(&self, process: &str) -> String {
        std::fs::read_to_string(self.log(process)).unwrap_or_default()
    }

    pub fn pid(&self, process: &str) -> u32 {
        self.workers
            .iter()
            .map(|(name, child)| (name, child))
            .chain(
                self.coordinators
                    .iter()
                    .map(|(name, child, _)| (name, child)),
            )
            .find(|(name, _)| name.as_str() == process)
            .map(|(_, child)| child.id())
            .unwrap_or_else(|| panic!("no process {process}"))
    }

    pub fn signal(&self, process: &str, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid(process).to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {process}");
    }

    /// Waits for a process to exit; returns its exit code.
    pub fn wait_exit(&mut self, process: &str, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self
            .workers
            .iter_mut()
            .map(|(name, child)| (name, child))
            .chain(
                self.coordinators
                    .iter_mut()
                    .map(|(name, child, _)| (name, child)),
            )
            .find(|(name, _)| name.as_str() == process)
            .map(|(_, child)| child)
            .unwrap_or_else(|| panic!("no process {process}"));
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{process} did not exit within {limit:?}");
    }

    pub fn spec(&self, job: &str, target_rows: u64, rows_per_sec: u64, concurrency: u32) -> String {
        format!(
            "name: {job}\n\
             source: {{ kind: postgres, url_env: {SOURCE_VAR} }}\n\
             target: {{ kind: postgres, url_env: {TARGET_VAR} }}\n\
             tables: {{ include: [\"public.*\"] }}\n\
             chunking: {{ target_rows: {target_rows} }}\n\
             throttle: {{ default_concurrency: {concurrency}, rate: {{ rows_per_sec: {rows_per_sec} }} }}\n"
        )
    }

    /// Source and target hold the same rows, compared by `psql`.
    pub fn assert_same(&self, tables: &[&str]) {
        for table in tables {
            let query = format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY id)), '') FROM {table} t"
            );
            let source = psql(&self.source_url(), &query);
            let target = psql(&self.target_url(), &query);
            assert_eq!(source, target, "table {table}: source and target differ");
            assert!(!source.starts_with("0|"), "table {table} is empty");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (_, child, _) in &mut self.coordinators {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, ..) in &self.coordinators {
                eprintln!("---- {name} ----\n{}", tail(&self.read_log(name)));
            }
            for (name, _) in &self.workers {
                eprintln!("---- {name} ----\n{}", tail(&self.read_log(name)));
            }
        }
        psql(
            &self.server,
            &format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE); DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.source_db, self.target_db
            ),
        );
    }
}

/// The last 40 lines of a process's log, after any panic it logged (its message and
/// where; a backtrace would push the message out of the tail).
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let panics = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.contains("panicked at"))
        .flat_map(|(at, _)| lines[at..(at + 3).min(lines.len())].iter().copied());
    let last = lines[lines.len().saturating_sub(40)..].iter().copied();
    panics.chain(last).collect::<Vec<_>>().join("\n")
}

/// The value of metric `name` scraped from the Prometheus endpoint at `address`
/// (`host:port`, a process's `--metrics-listen`), summed over its label sets; `None`
/// when the endpoint does not answer or does not list it.
pub fn metric(address: &str, name: &str) -> Option<f64> {
    let answer = crate::browser::http_request(address, "GET", "/metrics", &[], None).ok()?;
    let mut found = None;
    for line in answer.body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.chars().next() {
            Some(' ') => rest,
            Some('{') => rest.rsplit_once('}').map_or("", |(_, value)| value),
            _ => continue,
        };
        if let Ok(value) = value.trim().parse::<f64>() {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// Waits until the coordinator whose metrics are at `metrics` leads (its
/// `ferry_coordinator_leader` gauge is 1); panics after `limit`.
pub async fn wait_leading(metrics: &str, limit: Duration) {
    let leading = || metric(metrics, "ferry_coordinator_leader") == Some(1.0);
    if crate::wait_until(limit, leading).await.is_err() {
        panic!("the coordinator with metrics at {metrics} did not lead within {limit:?}");
    }
}

pub async fn client(address: &str) -> ControlClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ControlClient::connect(format!("http://{address}")).await {
            Ok(client) => return client,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot reach coordinator at {address}: {error}"),
        }
    }
}

/// Submits a spec, retrying while no coordinator leads yet.
pub async fn submit(address: &str, spec: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut control = client(address).await;
    loop {
        let request = pb::SubmitJobRequest {
            spec_yaml: spec.to_owned(),
            dry_run: false,
        };
        match control.submit_job(request).await {
            Ok(response) => {
                assert!(response.into_inner().submitted);
                return;
            }
            // No leader yet, or a coordinator that cannot serve this moment.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::Unavailable
                ) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(status) => panic!("submit refused: {status}"),
        }
    }
}

pub async fn status(address: &str, job: &str) -> Option<pb::GetJobResponse> {
    let mut control = ControlClient::connect(format!("http://{address}"))
        .await
        .ok()?;
    let request = pb::GetJobRequest {
        job_id: job.to_owned(),
    };
    control.get_job(request).await.ok().map(|r| r.into_inner())
}

pub async fn chunks(address: &str, job: &str) -> Vec<pb::ChunkInfo> {
    try_chunks(address, job).await.expect("list chunks")
}

/// A job's chunks, or the Control API's refusal (a job submitted but not planned yet
/// is listed among the cluster's jobs before its chunks can be).
pub async fn try_chunks(address: &str, job: &str) -> Result<Vec<pb::ChunkInfo>, tonic::Status> {
    let mut control = client(address).await;
    let request = pb::ListChunksRequest {
        job_id: job.to_owned(),
        page_size: 10_000,
        ..Default::default()
    };
    Ok(control.list_chunks(request).await?.into_inner().chunks)
}

/// Waits until the job ends; returns its final state.
pub async fn wait_done(address: &str, job: &str, limit: Duration) -> pb::GetJobResponse {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = status(address, job).await {
            let state = pb::JobState::try_from(status.state).unwrap_or(pb::JobState::Unspecified);
            if matches!(
                state,
                pb::JobState::Done | pb::JobState::Failed | pb::JobState::Cancelled
            ) {
                return status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {job} did not end within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until some chunk is COPYING on `worker` with rows already streamed; returns its id.
pub async fn wait_copying_on(address: &str, job: &str, worker: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let copying = chunks(address, job)
            .await
            .into_iter()
            .find(|chunk| chunk.worker == worker && chunk.state == "COPYING");
        if let Some(chunk) = copying {
            return chunk.id;
        }
        assert!(
            Instant::now() < deadline,
            "no chunk ran on {worker} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lifts a job's rate limit and lets 4 chunks run at once (a kill is done; the rest may
/// go fast).
pub async fn lift_rate_limit(address: &str, job: &str) {
    client(address)
        .await
        .update_throttle(pb::UpdateThrottleRequest {
            job_id: job.to_owned(),
            rows_per_sec: Some(0),
            max_concurrency: Some(4),
            ..Default::default()
        })
        .await
        .expect("lift the rate limit");
}

/// Checks that the chunk a killed `worker` held was run again by another worker, and says
/// why.
pub async fn assert_rerun_after_loss(address: &str, job: &str, chunk: u32, worker: &str) {
    let record = chunks(address, job)
        .await
        .into_iter()
        .find(|record| record.id == chunk)
        .expect("the killed worker's chunk");
    assert!(
        record.attempt >= 2,
        "the killed worker's chunk was not run again: {record:?}"
    );
    assert!(
        record.last_error.contains(worker) && record.last_error.contains("lost"),
        "the chunk does not say why it ran again: {record:?}"
    );
    assert_ne!(record.worker, worker, "{record:?}");
}

pub fn assert_done(status: &pb::GetJobResponse) {
    assert_eq!(
        pb::JobState::try_from(status.state),
        Ok(pb::JobState::Done),
        "job ended {status:?}"
    );
    assert_eq!(status.chunks_verified, status.chunks_total);
}
