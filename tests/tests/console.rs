//! The web console in headless Chromium (driven over WebDriver, `ferry_tests::browser`)
//! against a real `ferryctl local` run, SQLite → SQLite, throttled so that it runs
//! long enough to watch: the job page shows each table, progress advances, a chunk made
//! to fail (a CHECK constraint of the target) shows its reason, pausing from the page
//! stops rows moving (checked through the Control API with `ferryctl status`) and
//! resuming moves them again, the chunk map ends all verified but the failed chunk, a
//! viewer sees no action buttons and a forged action with a viewer token is refused.
//! The browser's console must stay free of errors. Screenshots go to
//! `target/console-screenshots/`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferry_proto::v1 as pb;
use ferry_tests::browser::{Browser, browser, http_request};
use ferry_tests::cluster::{Cluster, binary, chunks, client, submit, wait_leading};
use ferry_tests::{free_port, sqlite3, wait_until, wait_until_async};
use serde_json::{Value, json};

const OPERATOR_TOKEN: &str = "ops-token-0123456789abcdef";
const VIEWER_TOKEN: &str = "look-token-0123456789abcdef";
const JOB: &str = "console-local";

/// A `ferryctl local` child process, killed when dropped.
struct LocalProcess {
    child: Child,
    log: PathBuf,
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalProcess {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address printed after `prefix` (`console on http://`).
    fn address_after(&self, prefix: &str) -> Option<String> {
        let text = self.log_text();
        let start = text.find(prefix)? + prefix.len();
        let address: String = text[start..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        Some(address)
    }
}

/// A source of two tables, `orders` (3,000 rows, one with a negative amount) and
/// `customers` (600 rows), and a target whose `orders` refuses negative amounts.
fn make_databases(dir: &Path) -> (PathBuf, PathBuf) {
    let source = dir.join("source.db");
    let target = dir.join("target.db");
    sqlite3(
        &source,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO orders SELECT i, CASE WHEN i = 2345 THEN -5 ELSE i % 97 END FROM n;
         CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600)
         INSERT INTO customers SELECT i, 'customer ' || i FROM n;",
    );
    sqlite3(
        &target,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL CHECK (amount >= 0));",
    );
    (source, target)
}

fn start_local(dir: &Path) -> LocalProcess {
    let (source, target) = make_databases(dir);
    let spec = dir.join("job.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: {JOB}\n\
             source: {{ kind: sqlite, path: {} }}\n\
             target: {{ kind: sqlite, path: {} }}\n\
             tables: {{ include: [\"*\"] }}\n\
             chunking: {{ target_rows: 100 }}\n\
             verify: {{ mode: checksum, on_mismatch: recopy, max_attempts: 2 }}\n\
             throttle:\n  default_concurrency: 2\n  rate: {{ rows_per_sec: 250 }}\n  schedule:\n    - {{ days: daily, from: \"00:00\", to: \"12:00\", max_concurrency: 2 }}\n    - {{ days: daily, from: \"12:00\", to: \"00:00\", max_concurrency: 2 }}\n",
            source.display(),
            target.display()
        ),
    )
    .expect("spec");
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!("ops operator {OPERATOR_TOKEN}\nlook viewer {VIEWER_TOKEN}\n"),
    )
    .expect("tokens");
    std::fs::write(dir.join("ops.token"), OPERATOR_TOKEN).expect("token file");
    let log = dir.join("ferryctl.log");
    let child = Command::new(binary("ferryctl"))
        .arg("local")
        .arg(&spec)
        .args(["--workers", "2", "--control-addr", "127.0.0.1:0"])
        .args(["--console-addr", "127.0.0.1:0", "--console-stay"])
        .arg("--tokens-file")
        .arg(&tokens)
        .arg("--state")
        .arg(dir.join("state.db"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start ferryctl local");
    LocalProcess { child, log }
}

/// `ferryctl status JOB -o json` through the Control API, as the operator.
fn control_status(dir: &Path, control: &str) -> Value {
    let output = Command::new(binary("ferryctl"))
        .args(["status", JOB, "--output", "json", "--endpoint"])
        .arg(format!("http://{control}"))
        .arg("--token-file")
        .arg(dir.join("ops.token"))
        .output()
        .expect("ferryctl status");
    assert!(
        output.status.success(),
        "ferryctl status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("status JSON")
}

fn number(text: Option<String>) -> u64 {
    text.unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

/// Waits (at most `limit`) until `condition` holds in the browser, polling it.
async fn wait_for(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    wait_until(limit, &mut condition)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn sign_in(page: &Browser, token: &str) {
    page.type_into("token", token);
    page.click("token-submit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_and_controls_a_local_run() {
    // The browser is this test's until it ends (the tests of this binary take turns).
    let page = browser().await;
    page.reset();
    let dir = tempfile::tempdir().expect("temp dir");
    let local = start_local(dir.path());
    wait_until(Duration::from_secs(60), || {
        local.address_after("console on http://").is_some()
    })
    .await
    .unwrap_or_else(|_| panic!("no console address; log:\n{}", local.log_text()));
    let console = local.address_after("console on http://").expect("console");
    let control = local
        .address_after("control API on http://")
        .expect("control API");
    let first_render = std::time::Instant::now();
    page.open(&format!("http://{console}/#/job/{JOB}"));
    // The token is asked for once; then the job page shows each table.
    wait_for(Duration::from_secs(20), "the sign-in form", || {
        page.count_visible("#token") == 1
    })
    .await;
    sign_in(&page, OPERATOR_TOKEN);
    wait_for(Duration::from_secs(20), "both tables", || {
        page.text_of("table-orders").is_some() && page.text_of("table-customers").is_some()
    })
    .await;
    eprintln!(
        "job page rendered {:.2} s after opening",
        first_render.elapsed().as_secs_f64()
    );
    let who = page.text_of("who").unwrap_or_default();
    assert_eq!(who, "token:ops (operator)");
    // Progress advances while the job runs.
    let streamed_before = number(page.text_of("rows-streamed"));
    wait_for(
        Duration::from_secs(30),
        "rows to advance on the page",
        || number(page.text_of("rows-streamed")) > streamed_before,
    )
    .await;
    page.screenshot("job");

    // Workers page: the two local agents, busy.
    page.open(&format!("http://{console}/#/workers"));
    wait_for(Duration::from_secs(20), "the workers", || {
        page.count_visible("tr.worker") == 2
    })
    .await;
    page.screenshot("workers");
    page.open(&format!("http://{console}/#/jobs"));
    wait_for(Duration::from_secs(20), "the job list", || {
        page.text_of(&format!("job-{JOB}")).is_some()
    })
    .await;
    page.screenshot("jobs");
    page.open(&format!("http://{console}/#/job/{JOB}"));
    wait_for(Duration::from_secs(20), "the pause button", || {
        page.count_visible("#action-pause") == 1
    })
    .await;

    // The schedule's windows for the throttle chart, from the policy itself.
    let since_ms = jiff_now_ms() - 120_000;
    let job_json = http_request(
        &console,
        "GET",
        &format!("/api/jobs/{JOB}?since={since_ms}"),
        &[("Authorization", &format!("Bearer {VIEWER_TOKEN}"))],
        None,
    )
    .expect("job JSON");
    let job_value: Value = serde_json::from_str(&job_json.body).expect("JSON");
    let spans = job_value["throttle"]["schedule_spans"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !spans.is_empty(),
        "no schedule window shaded: {}",
        job_json.body
    );
    assert!(
        spans[0]["from_unix_ms"].as_i64() >= Some(since_ms),
        "{spans:?}"
    );

    // Pause from the page: confirmed, then rows stop moving (seen through the Control API).
    page.click("action-pause");
    assert!(page.dialog_open(), "pausing asks for confirmation");
    page.accept_dialog();
    let dir_path = dir.path().to_path_buf();
    wait_for(
        Duration::from_secs(20),
        "PAUSED from the Control API",
        || control_status(&dir_path, &control)["state"] == "PAUSED",
    )
    .await;
    let paused_rows = control_status(&dir_path, &control)["rows_streamed"].clone();
    // An observation window, not a synchronisation: nothing may move during it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        control_status(&dir_path, &control)["rows_streamed"],
        paused_rows,
        "rows moved while paused"
    );
    wait_for(Duration::from_secs(10), "the page to say PAUSED", || {
        page.text_of("job-state").as_deref() == Some("PAUSED")
    })
    .await;
    page.screenshot("job-paused");
    page.click("action-resume");
    page.accept_dialog();
    wait_for(Duration::from_secs(30), "rows moving again", || {
        control_status(&dir_path, &control)["rows_streamed"].as_u64() > paused_rows.as_u64()
    })
    .await;

    // The chunk map ends all verified but the chunk holding the negative amount.
    wait_for(
        Duration::from_secs(90),
        "every chunk verified or failed",
        || {
            number(page.text_of("count-failed")) == 1
                && number(page.text_of("count-planned")) == 0
                && number(page.text_of("count-running")) == 0
        },
    )
    .await;
    let verified = number(page.text_of("count-verified"));
    assert_eq!(verified, 30 + 6 - 1, "verified chunks on the map");
    let failures = page
        .run(
            "return document.getElementById('failures').textContent;",
            json!([]),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(failures.contains("CHECK constraint"), "{failures}");
    // A click on the failed cell shows the chunk: its range, attempts and error.
    page.run(
        "const canvas = document.getElementById('map');
         const index = mapState.cells.indexOf('F');
         const perRow = Math.floor(canvas.width / CELL);
         const rect = canvas.getBoundingClientRect();
         const scale = rect.width / canvas.width;
         canvas.dispatchEvent(new MouseEvent('click', {
           clientX: rect.left + ((index % perRow) * CELL + 3) * scale,
           clientY: rect.top + (Math.floor(index / perRow) * CELL + 3) * scale }));",
        json!([]),
    );
    wait_for(
        Duration::from_secs(10),
        "the failed chunk's details",
        || {
            page.text_of("chunk-detail")
                .is_some_and(|text| text.contains("CHECK constraint") && text.contains("FAILED"))
        },
    )
    .await;
    wait_for(Duration::from_secs(30), "the job to end FAILED", || {
        page.text_of("job-state").as_deref() == Some("FAILED")
    })
    .await;
    let history = page.text_of("history").unwrap_or_default();
    assert!(
        history.contains("pause") && history.contains("token:ops"),
        "the pause is in the history with who: {history}"
    );
    page.screenshot("job-done");
    page.assert_no_console_errors();
    // The target holds every row but the failed chunk's, checked with sqlite3.
    assert_eq!(
        sqlite3(
            &dir.path().join("target.db"),
            "SELECT count(*) FROM customers"
        ),
        "600"
    );

    // A viewer: no buttons, and a forged action is refused.
    page.click("sign-out");
    wait_for(Duration::from_secs(10), "the sign-in form", || {
        page.count_visible("#token") == 1
    })
    .await;
    sign_in(&page, VIEWER_TOKEN);
    page.open(&format!("http://{console}/#/job/{JOB}"));
    wait_for(Duration::from_secs(20), "the job page as a viewer", || {
        page.text_of("table-orders").is_some()
    })
    .await;
    assert_eq!(page.text_of("who").as_deref(), Some("token:look (viewer)"));
    assert_eq!(
        page.count_visible("button.action"),
        0,
        "a viewer sees no action"
    );
    page.screenshot("job-viewer");
    page.assert_no_console_errors();
    let forged = http_request(
        &console,
        "POST",
        &format!("/api/jobs/{JOB}/recopy"),
        &[("Authorization", &format!("Bearer {VIEWER_TOKEN}"))],
        Some(r#"{"table":"orders"}"#),
    )
    .expect("forged request");
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.body.contains("operator role"), "{}", forged.body);
    let anonymous = http_request(
        &console,
        "POST",
        &format!("/api/jobs/{JOB}/pause"),
        &[],
        Some("{}"),
    )
    .expect("anonymous request");
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let mut log = String::new();
    let _ = std::fs::File::open(&local.log).and_then(|mut file| file.read_to_string(&mut log));
    assert!(
        !log.contains(OPERATOR_TOKEN) && !log.contains(VIEWER_TOKEN),
        "a token in the log"
    );
}

/// The same page against a cluster of processes: two coordinators, each serving a
/// console, and two workers copying PostgreSQL → PostgreSQL. The page is opened on the
/// standby (a standby answers reads); the leader is killed mid-job, and the page goes on
/// showing the job to its end, every chunk verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_of_a_cluster_shows_the_job_through_a_leader_kill() {
    let page = browser().await;
    page.reset();
    let mut cluster = Cluster::new(&[("orders", 40_000), ("items", 10_000)]);
    let leader_console = format!("127.0.0.1:{}", free_port());
    let standby_console = format!("127.0.0.1:{}", free_port());
    let (leader, leader_metrics) =
        cluster.start_coordinator_metered("console-c1", &["--console-listen", &leader_console]);
    wait_leading(&leader_metrics, Duration::from_secs(15)).await;
    cluster.start_coordinator_with("console-c2", &["--console-listen", &standby_console]);
    cluster.start_worker("console-w1", 2);
    cluster.start_worker("console-w2", 2);
    let job = "console-cluster";
    submit(&leader, &cluster.spec(job, 2_500, 6_000, 2)).await;

    // The leader's console: the job and both workers, busy.
    page.open(&format!("http://{leader_console}/#/job/{job}"));
    wait_for(
        Duration::from_secs(20),
        "both tables on the leader's console",
        || {
            page.text_of("table-public.orders").is_some()
                && page.text_of("table-public.items").is_some()
        },
    )
    .await;
    // A throttle change from the page reaches the job's policy (read through gRPC), once
    // the job runs on the leader (its throttle is shown).
    wait_for(Duration::from_secs(30), "the job's throttle", || {
        page.text_of("throttle-effective").is_some()
    })
    .await;
    page.type_into("throttle-concurrency", "1");
    page.click("action-throttle");
    page.accept_dialog();
    wait_for(Duration::from_secs(30), "the override on the page", || {
        page.text_of("throttle-effective")
            .is_some_and(|text| text.contains("operator override 1"))
    })
    .await;
    let throttle = client(&leader)
        .await
        .get_throttle(pb::GetThrottleRequest {
            job_id: job.to_owned(),
            at_unix_ms: None,
        })
        .await
        .expect("GetThrottle")
        .into_inner();
    assert!(
        throttle
            .policy_json
            .contains("\"max_concurrency_override\":1"),
        "{}",
        throttle.policy_json
    );
    page.screenshot("cluster-job");
    page.open(&format!("http://{leader_console}/#/workers"));
    wait_for(Duration::from_secs(20), "both workers", || {
        page.text_of("worker-console-w1").is_some() && page.text_of("worker-console-w2").is_some()
    })
    .await;
    wait_for(Duration::from_secs(20), "a worker holding a chunk", || {
        page.text_of("worker-console-w1").is_some_and(|row| {
            row.contains("COPYING") || row.contains("VERIFYING") || row.contains("ASSIGNED")
        }) || page.text_of("worker-console-w2").is_some_and(|row| {
            row.contains("COPYING") || row.contains("VERIFYING") || row.contains("ASSIGNED")
        })
    })
    .await;
    page.screenshot("cluster-workers");
    // Drain a worker from the page: the coordinator lists it draining (or it is gone).
    page.click("drain-console-w2");
    page.accept_dialog();
    wait_until_async(Duration::from_secs(30), || {
        let leader = leader.clone();
        async move {
            let workers = client(&leader)
                .await
                .list_workers(pb::ListWorkersRequest {})
                .await
                .expect("ListWorkers")
                .into_inner()
                .workers;
            workers
                .iter()
                .find(|worker| worker.id == "console-w2")
                .is_none_or(|worker| worker.draining)
        }
    })
    .await
    .expect("console-w2 drains");
    page.assert_no_console_errors();

    // The standby's console, then the leader killed: the page follows the job to its end.
    page.open(&format!("http://{standby_console}/#/job/{job}"));
    wait_for(
        Duration::from_secs(20),
        "the job on the standby's console",
        || page.text_of("table-public.orders").is_some(),
    )
    .await;
    // A standby refuses an action, naming the leader.
    let refused = http_request(
        &standby_console,
        "POST",
        &format!("/api/jobs/{job}/pause"),
        &[],
        Some("{}"),
    )
    .expect("pause on the standby");
    assert_eq!(refused.status, 421, "{}", refused.body);
    assert!(refused.body.contains(&leader), "{}", refused.body);
    let verified_before = number(page.text_of("count-verified"));
    cluster.signal("console-c1", "KILL");
    wait_for(
        Duration::from_secs(120),
        "every chunk verified after the leader kill",
        || {
            let verified = number(page.text_of("count-verified"));
            verified > verified_before
                && number(page.text_of("count-planned")) == 0
                && number(page.text_of("count-running")) == 0
                && number(page.text_of("count-failed")) == 0
                && page.text_of("job-state").as_deref() == Some("DONE")
        },
    )
    .await;
    assert_eq!(number(page.text_of("count-verified")), 16 + 4);
    page.screenshot("cluster-done");
    page.assert_no_console_errors();
    cluster.assert_same(&["orders", "items"]);

    // The former standby leads now: re-copy a table from its page; its chunks run again.
    let new_leader = cluster.coordinators[1].2.clone();
    page.click("recopy-public.items");
    page.accept_dialog();
    wait_until_async(Duration::from_secs(60), || {
        let new_leader = new_leader.clone();
        async move {
            let listed = chunks(&new_leader, job).await;
            let items: Vec<_> = listed
                .iter()
                .filter(|chunk| chunk.table == "public.items")
                .collect();
            !items.is_empty()
                && items
                    .iter()
                    .all(|chunk| chunk.attempt >= 2 && chunk.state == "VERIFIED")
        }
    })
    .await
    .expect("the re-copied table verified again");
    wait_for(
        Duration::from_secs(30),
        "the re-copy in the history",
        || {
            page.text_of("history").is_some_and(|text| {
                text.contains("re-copy table public.items") && text.contains("anonymous")
            })
        },
    )
    .await;
    cluster.assert_same(&["orders", "items"]);
    page.assert_no_console_errors();
}

/// A job of 100,000 chunks: the page loads a few tens of kilobytes (the chunk map is
/// aggregated server-side into at most 4,096 cells drawn on a canvas, not 100,000 DOM
/// nodes) and renders the job within seconds. Prints the page weight and the time to
/// first render.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_100000_chunks_renders_from_a_few_kilobytes() {
    let page = browser().await;
    page.reset();
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("source.db");
    sqlite3(
        &source,
        "CREATE TABLE wide (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
         INSERT INTO wide SELECT i, 'v' FROM n;",
    );
    let spec = dir.path().join("job.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: console-100k\n\
             source: {{ kind: sqlite, path: {} }}\n\
             target: {{ kind: sqlite, path: {} }}\n\
             tables: {{ include: [\"*\"] }}\n\
             chunking: {{ target_rows: 1 }}\n\
             throttle: {{ default_concurrency: 1, rate: {{ rows_per_sec: 10 }} }}\n",
            source.display(),
            dir.path().join("target.db").display()
        ),
    )
    .expect("spec");
    let log = dir.path().join("ferryctl.log");
    let local = LocalProcess {
        child: Command::new(binary("ferryctl"))
            .arg("local")
            .arg(&spec)
            .args(["--workers", "1", "--control-addr", "127.0.0.1:0"])
            .args(["--console-addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start ferryctl local"),
        log,
    };
    wait_until(Duration::from_secs(120), || {
        local.address_after("console on http://").is_some()
    })
    .await
    .unwrap_or_else(|_| panic!("no console address; log:\n{}", local.log_text()));
    let console = local.address_after("console on http://").expect("console");
    let mut weight = 0;
    for path in [
        "/",
        "/console.js",
        "/console.css",
        "/api/session",
        "/api/jobs/console-100k",
    ] {
        let answer = http_request(&console, "GET", path, &[], None).expect("GET");
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        weight += answer.body.len();
    }
    let opened = std::time::Instant::now();
    page.open(&format!("http://{console}/#/job/console-100k"));
    wait_for(Duration::from_secs(60), "the 100,000-chunk map", || {
        ["planned", "running", "verified", "failed"]
            .iter()
            .map(|state| number(page.text_of(&format!("count-{state}"))))
            .sum::<u64>()
            == 100_000
    })
    .await;
    let render = opened.elapsed();
    eprintln!(
        "100,000 chunks: page weight {:.1} KB (HTML, JS, CSS, session, job JSON), first render {:.2} s",
        weight as f64 / 1024.0,
        render.as_secs_f64()
    );
    // The render time is printed, not asserted (a timed figure belongs in a benchmark);
    // the wait above is only a hang guard.
    assert!(weight < 64 * 1024, "page weight {weight} bytes");
    let nodes = page.run(
        "return document.getElementsByTagName('*').length;",
        json!([]),
    );
    assert!(
        nodes.as_u64().is_some_and(|n| n < 1000),
        "{nodes} DOM nodes"
    );
    page.screenshot("job-100k");
    page.assert_no_console_errors();
}

fn jiff_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
