//! The `ferryctl` binary as a user runs it: exit codes, messages, JSON report, Ctrl-C
//! and resume.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ferryctl() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferryctl"));
    command.env_remove("RUST_LOG");
    command
}

fn run(command: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run ferryctl");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn create_source(path: &Path, rows: i64) {
    let mut connection = rusqlite::Connection::open(path).expect("source");
    connection
        .execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount REAL, note BLOB);",
        )
        .expect("create");
    let transaction = connection.transaction().expect("tx");
    {
        let mut insert = transaction
            .prepare("INSERT INTO orders VALUES (?1, ?2, ?3, ?4)")
            .expect("prepare");
        for id in 1..=rows {
            insert
                .execute(rusqlite::params![
                    id,
                    format!("customer {}", id % 977),
                    id as f64 * 0.25,
                    vec![(id % 256) as u8; 16]
                ])
                .expect("insert");
        }
    }
    transaction.commit().expect("commit");
}

fn write_spec(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("job.yaml");
    std::fs::write(&path, body).expect("spec");
    path
}

const SPEC: &str = "name: cli\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: sqlite, path: target.db }\n\
                    tables: { include: [orders] }\nchunking: { target_rows: 5000 }\n";

fn count_rows(path: &Path) -> i64 {
    let connection = rusqlite::Connection::open(path).expect("open");
    connection
        .query_row("SELECT count(*) FROM orders", [], |row| row.get(0))
        .expect("count")
}

#[test]
fn local_prints_a_json_report_and_a_rerun_copies_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"), 20_000);
    let spec = write_spec(dir.path(), SPEC);
    let (code, stdout, stderr) = run(ferryctl()
        .args(["local", "--json", "--workers", "2"])
        .arg(&spec));
    assert_eq!(code, 0, "stderr: {stderr}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("one JSON object on stdout");
    assert_eq!(report["ok"], true);
    assert_eq!(report["rows"], 20_000);
    assert_eq!(report["tables"][0]["table"], "orders");
    assert_eq!(report["tables"][0]["chunks"], 4);
    assert_eq!(report["tables"][0]["verified"], 4);
    assert_eq!(count_rows(&dir.path().join("target.db")), 20_000);

    let (code, stdout, stderr) = run(ferryctl().args(["local", "--json"]).arg(&spec));
    assert_eq!(code, 0, "stderr: {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(report["resumed"], true);
    assert_eq!(report["rows_this_run"], 0);
    assert_eq!(
        report["tables"][0]["attempts"], 4,
        "no chunk was copied again"
    );
}

#[test]
fn invalid_spec_exits_2_naming_every_bad_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write_spec(
        dir.path(),
        "name: bad\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: postgress, url_env: FERRY_CLI_TEST_UNSET }\n\
         tables: { include: [orders, \"ord[\"] }\nchunking: { target_rows: lots }\n",
    );
    let (code, stdout, stderr) = run(ferryctl()
        .arg("local")
        .arg(&spec)
        .env_remove("FERRY_CLI_TEST_UNSET"));
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stdout.is_empty());
    for expected in [
        "target.kind",
        "postgress",
        "target.url_env",
        "FERRY_CLI_TEST_UNSET",
        "tables.include[1]",
        "chunking.target_rows",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in: {stderr}"
        );
    }
    let (code, _, stderr) = run(ferryctl().arg("validate").arg(&spec));
    assert_eq!(code, 2);
    assert!(stderr.contains("tables.include[1]"), "{stderr}");
}

#[test]
fn unknown_table_and_missing_database_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write_spec(dir.path(), &SPEC.replace("[orders]", "[ordrs]"));
    let (code, _, stderr) = run(ferryctl().arg("local").arg(&spec));
    assert_eq!(
        code, 3,
        "a missing source file is a runtime error: {stderr}"
    );
    assert!(
        stderr.contains("source.db") && stderr.contains("source.path"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("source.db").exists(),
        "ferry never creates its source"
    );

    create_source(&dir.path().join("source.db"), 10);
    let (code, _, stderr) = run(ferryctl().arg("local").arg(&spec));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "tables.include[0]: table \"ordrs\" not found in the source; available: orders"
        ),
        "{stderr}"
    );

    // A type override for a column that does not exist is a mistake, not a no-op.
    let spec = write_spec(
        dir.path(),
        &format!("{SPEC}columns: {{ \"orders.totl\": \"REAL\" }}\n"),
    );
    let (code, _, stderr) = run(ferryctl().arg("local").arg(&spec));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("columns.\"orders.totl\": no selected table has this column"),
        "{stderr}"
    );
}

#[test]
fn a_value_that_does_not_fit_fails_its_chunk_with_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"), 12_000);
    let connection = rusqlite::Connection::open(dir.path().join("source.db")).expect("open");
    connection
        .execute("UPDATE orders SET note = 'not a blob' WHERE id = 11000", [])
        .expect("update");
    let spec = write_spec(dir.path(), SPEC);
    let (code, stdout, stderr) = run(ferryctl().arg("local").arg(&spec));
    assert_eq!(code, 1, "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.contains("FAILED chunk 2 of orders"), "{stdout}");
    assert!(
        stdout.contains("column note: holds a TEXT value where ferry reads BLOB values"),
        "{stdout}"
    );

    // Fixing the value and running again retries the FAILED chunk only.
    connection
        .execute("UPDATE orders SET note = x'00' WHERE id = 11000", [])
        .expect("fix");
    let (code, stdout, stderr) = run(ferryctl().args(["local", "--json"]).arg(&spec));
    assert_eq!(code, 0, "stdout: {stdout} stderr: {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(report["rows"], 12_000);
    assert_eq!(report["rows_this_run"], 12_000 - 8_000);
    assert_eq!(count_rows(&dir.path().join("target.db")), 12_000);
}

#[test]
fn ctrl_c_stops_cleanly_and_the_same_command_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"), 300_000);
    let spec = write_spec(dir.path(), SPEC);
    let state = dir.path().join("cli.ferry-state.db");
    let child = ferryctl()
        .args(["local", "--workers", "1"])
        .arg(&spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");

    // Wait until a few chunks are verified, then interrupt as Ctrl-C would.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no chunk verified within 60 s");
        let verified: i64 = rusqlite::Connection::open(&state)
            .ok()
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM chunks WHERE state = 'VERIFIED'",
                    [],
                    |r| r.get(0),
                )
                .ok()
            })
            .unwrap_or(0);
        if verified >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "stderr: {stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    let copied = count_rows(&dir.path().join("target.db"));
    assert!(
        copied < 300_000,
        "interrupted before the end ({copied} rows)"
    );

    let (code, stdout, stderr) = run(ferryctl().args(["local", "--json"]).arg(&spec));
    assert_eq!(code, 0, "stderr: {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(report["resumed"], true);
    assert_eq!(report["rows"], 300_000);
    assert_eq!(count_rows(&dir.path().join("target.db")), 300_000);
    let differences: i64 = {
        let connection = rusqlite::Connection::open(dir.path().join("source.db")).expect("open");
        connection
            .execute(
                &format!("ATTACH '{}' AS t", dir.path().join("target.db").display()),
                [],
            )
            .expect("attach");
        connection
            .query_row(
                "SELECT (SELECT count(*) FROM (SELECT * FROM main.orders EXCEPT SELECT * FROM t.orders)) + \
                 (SELECT count(*) FROM (SELECT * FROM t.orders EXCEPT SELECT * FROM main.orders))",
                [],
                |row| row.get(0),
            )
            .expect("compare")
    };
    assert_eq!(differences, 0);
}

#[test]
fn demo_runs_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo_dir = dir.path().join("demo");
    let (code, stdout, stderr) = run(ferryctl()
        .args(["demo", "--rows", "20000", "--dir"])
        .arg(&demo_dir));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("every chunk VERIFIED"), "{stdout}");
    for table in ["orders", "events", "audit log", "order_items"] {
        assert!(stdout.contains(table), "{table} in {stdout}");
    }
    let (code, _, stderr) = run(ferryctl()
        .args(["demo", "--rows", "100", "--dir"])
        .arg(&demo_dir));
    assert_eq!(code, 2);
    assert!(stderr.contains("already exists"), "{stderr}");
}

/// Starts `ferryctl local` in the background and returns it with its Control endpoint,
/// read from the line it prints at start.
#[test]
fn remote_commands_say_when_nothing_listens() {
    // A port nothing listens on: the reserved port 9 on loopback.
    let (code, _, stderr) =
        run(ferryctl().args(["status", "job", "--endpoint", "http://127.0.0.1:9"]));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("cannot reach ferry at http://127.0.0.1:9"),
        "{stderr}"
    );
    let (code, _, stderr) = run(ferryctl().args(["throttle", "job", "--max-concurrency", "0"]));
    assert_eq!(code, 2, "clap refuses an out-of-range value: {stderr}");
}

#[allow(clippy::zombie_processes, reason = "the caller waits for the child")]
fn start_local(
    spec: &Path,
) -> (
    std::process::Child,
    String,
    std::sync::mpsc::Receiver<String>,
) {
    use std::io::BufRead;
    let mut child = ferryctl()
        .args(["local", "--workers", "2", "--control-addr", "127.0.0.1:0"])
        .arg(spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = line_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = line_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("ferryctl local prints its control endpoint");
        if let Some(start) = line.find("http://") {
            let endpoint: String = line[start..]
                .split_whitespace()
                .next()
                .expect("endpoint")
                .to_string();
            return (child, endpoint, line_rx);
        }
    }
}

#[test]
fn throttle_changes_survive_a_restart_and_are_in_the_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"), 100_000);
    let spec = write_spec(
        dir.path(),
        &format!("{SPEC}throttle: {{ default_concurrency: 4, rate: {{ rows_per_sec: 5000 }} }}\n"),
    );
    let (child, endpoint, _lines) = start_local(&spec);
    let (code, stdout, stderr) = run(ferryctl().args([
        "throttle",
        "cli",
        "--max-concurrency",
        "2",
        "--endpoint",
        &endpoint,
    ]));
    assert_eq!(code, 0, "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.contains("operator override 2"), "{stdout}");
    // An invalid change is refused with a clear error, and the policy stays.
    let (code, _, stderr) = run(ferryctl().args([
        "throttle",
        "cli",
        "--load-max",
        "5",
        "--load-critical",
        "9",
        "--endpoint",
        &endpoint,
    ]));
    assert_eq!(code, 2);
    assert!(stderr.contains("no load probe"), "{stderr}");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(130));

    // The same command again: the operator's override is still in force.
    let (child, endpoint, _lines) = start_local(&spec);
    let (code, stdout, stderr) = run(ferryctl().args([
        "throttle",
        "cli",
        "--show",
        "-o",
        "json",
        "--endpoint",
        &endpoint,
    ]));
    assert_eq!(code, 0, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(shown["concurrency"], 2, "{shown}");
    assert_eq!(shown["policy"]["max_concurrency_override"], 2, "{shown}");
    let (code, stdout, _) =
        run(ferryctl().args(["throttle", "cli", "--history", "--endpoint", &endpoint]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("spec") && stdout.contains("operator"),
        "{stdout}"
    );
    assert!(
        stdout.contains("max_concurrency override: none → 2"),
        "{stdout}"
    );
    let (code, stdout, _) = run(ferryctl().args(["status", "cli", "--endpoint", &endpoint]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("RUNNING") || stdout.contains("DONE"),
        "{stdout}"
    );
    // Lift the rate limit: the job finishes, exact.
    let (code, _, _) = run(ferryctl().args([
        "throttle",
        "cli",
        "--rows-per-sec",
        "0",
        "--endpoint",
        &endpoint,
    ]));
    assert_eq!(code, 0);
    let output = child.wait_with_output().expect("wait");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(count_rows(&dir.path().join("target.db")), 100_000);
}

#[test]
fn recopy_needs_exactly_one_selector() {
    let (code, _, stderr) = run(ferryctl().args(["recopy", "job"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("required arguments were not provided")
            && stderr.contains("--chunk <ID>|--table <TABLE>|--state <STATE>"),
        "{stderr}"
    );
    let (code, _, stderr) =
        run(ferryctl().args(["recopy", "job", "--chunk", "3", "--state", "failed"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("the argument '--chunk <ID>' cannot be used with '--state <STATE>'"),
        "{stderr}"
    );
    let (code, _, stderr) = run(ferryctl().args(["recopy", "job", "--state", "broken"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid value 'broken'"), "{stderr}");
}

#[test]
fn cluster_commands_exit_3_when_no_endpoint_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write_spec(dir.path(), SPEC);
    let spec = spec.to_str().expect("utf-8 path");
    // Reserved port 9 on loopback: nothing listens there.
    for args in [
        vec!["submit", spec],
        vec!["jobs"],
        vec!["chunks", "cli"],
        vec!["workers"],
        vec!["watch", "cli"],
    ] {
        let (code, stdout, stderr) = run(ferryctl()
            .args(&args)
            .env("FERRY_ENDPOINT", "http://127.0.0.1:9"));
        assert_eq!(code, 3, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(
            stderr.contains("cannot reach ferry at http://127.0.0.1:9"),
            "{args:?}: {stderr}"
        );
    }
    // A list: each endpoint is tried, and the error names them all.
    let (code, _, stderr) =
        run(ferryctl().args(["jobs", "--endpoint", "http://127.0.0.1:9,127.0.0.1:9"]));
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("cannot reach ferry at any of http://127.0.0.1:9, http://127.0.0.1:9"),
        "{stderr}"
    );
}

#[test]
fn submit_of_a_missing_spec_file_exits_2_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.yaml");
    let (code, stdout, stderr) = run(ferryctl()
        .arg("submit")
        .arg(&missing)
        .args(["--endpoint", "http://127.0.0.1:9"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(&format!("cannot read spec {}", missing.display())),
        "{stderr}"
    );
    let (code, _, stderr) = run(ferryctl().args(["submit", "x.yaml", "--dry-run", "--wait"]));
    assert_eq!(code, 2, "{stderr}");
}

/// Runs `ferryctl ARGS --endpoint ENDPOINT -o json` and parses its output.
fn json_of(args: &[&str], endpoint: &str) -> serde_json::Value {
    let (code, stdout, stderr) =
        run(ferryctl()
            .args(args)
            .args(["-o", "json", "--endpoint", endpoint]));
    assert_eq!(code, 0, "{args:?}: {stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("{args:?}: {error}: {stdout}"))
}

/// Waits (up to 30 s) until `condition` holds for `ferryctl ARGS -o json`; on timeout
/// the panic shows what the local run printed (`log`).
fn wait_for_json(
    args: &[&str],
    endpoint: &str,
    log: &std::sync::mpsc::Receiver<String>,
    condition: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = json_of(args, endpoint);
        if condition(&value) {
            return;
        }
        if Instant::now() >= deadline {
            let printed: Vec<String> = log.try_iter().collect();
            panic!(
                "{args:?} never satisfied: {value}\nferryctl local printed:\n{}",
                printed.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cluster_commands_work_against_a_local_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    create_source(&dir.path().join("source.db"), 50_000);
    // Slow enough to still run while the commands below ask.
    let spec = write_spec(
        dir.path(),
        &format!("{SPEC}throttle: {{ default_concurrency: 2, rate: {{ rows_per_sec: 4000 }} }}\n"),
    );
    let (child, endpoint, lines) = start_local(&spec);

    let jobs = json_of(&["jobs"], &endpoint);
    let job = jobs
        .as_array()
        .and_then(|jobs| jobs.iter().find(|job| job["job"] == "cli"))
        .unwrap_or_else(|| panic!("job cli listed: {jobs}"));
    assert_eq!(job["state"], "RUNNING", "{jobs}");

    let chunks = json_of(&["chunks", "cli"], &endpoint);
    assert_eq!(
        chunks.as_array().map(Vec::len),
        Some(10),
        "50,000 rows in chunks of 5,000: {chunks}"
    );

    // Both agents are live workers; drain the second: it takes nothing new and leaves.
    wait_for_json(&["workers"], &endpoint, &lines, |workers| {
        workers.as_array().is_some_and(|workers| workers.len() == 2)
    });
    let drained = json_of(&["drain", "local-2"], &endpoint);
    assert_eq!(drained["draining"], true, "{drained}");
    wait_for_json(&["workers"], &endpoint, &lines, |workers| {
        workers
            .as_array()
            .is_some_and(|workers| workers.len() == 1 && workers[0]["id"] == "local-1")
    });
    // An unknown worker is named as such.
    let (code, _, stderr) = run(ferryctl().args(["drain", "local-9", "--endpoint", &endpoint]));
    assert_ne!(code, 0);
    assert!(
        stderr.contains("worker \"local-9\" is not live"),
        "{stderr}"
    );

    // Re-copy the first verified chunk: it goes back to PLANNED and is copied again.
    wait_for_json(
        &["chunks", "cli", "--state", "VERIFIED"],
        &endpoint,
        &lines,
        |chunks| chunks.as_array().is_some_and(|chunks| !chunks.is_empty()),
    );
    let verified = json_of(&["chunks", "cli", "--state", "VERIFIED"], &endpoint);
    let first = verified[0]["id"].as_u64().expect("chunk id").to_string();
    let recopied = json_of(&["recopy", "cli", "--chunk", &first], &endpoint);
    assert_eq!(
        recopied["chunk_ids"][0].as_u64().map(|id| id.to_string()),
        Some(first.clone()),
        "{recopied}"
    );

    // A second job's plan, without submitting it.
    let other = dir.path().join("other.yaml");
    // Paths in a submitted spec are the coordinator's (here: the local run's working
    // folder), so this one names its files absolutely.
    let absolute = SPEC
        .replace("name: cli", "name: other")
        .replace(
            "source.db",
            &dir.path().join("source.db").display().to_string(),
        )
        .replace(
            "target.db",
            &dir.path().join("other.db").display().to_string(),
        );
    std::fs::write(&other, absolute).expect("write spec");
    let (code, stdout, stderr) =
        run(ferryctl()
            .arg("submit")
            .arg(&other)
            .args(["--dry-run", "--endpoint", &endpoint]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("plan of job other (dry run"), "{stdout}");

    // Lift the limit, and follow the job to its end.
    let (code, _, stderr) = run(ferryctl().args([
        "throttle",
        "cli",
        "--rows-per-sec",
        "0",
        "--endpoint",
        &endpoint,
    ]));
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(ferryctl().args(["watch", "cli", "--endpoint", &endpoint]));
    assert_eq!(code, 0, "watch ends with the job: {stderr}");

    let output = child.wait_with_output().expect("wait");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("job cli: 50000 rows verified") && report.contains("every chunk VERIFIED"),
        "{report}"
    );
    assert_eq!(count_rows(&dir.path().join("target.db")), 50_000);
    let source = dir.path().join("source.db");
    let target = dir.path().join("target.db");
    let difference = Command::new("sqlite3")
        .arg(&source)
        .arg(format!(
            "ATTACH '{}' AS t; SELECT count(*) FROM (SELECT * FROM orders EXCEPT SELECT * FROM t.orders);",
            target.display()
        ))
        .output()
        .expect("sqlite3");
    assert_eq!(String::from_utf8_lossy(&difference.stdout).trim(), "0");
    // The re-copied chunk was copied twice: its attempt is 2.
    let state = dir.path().join("cli.ferry-state.db");
    let attempt = Command::new("sqlite3")
        .arg(&state)
        .arg(format!(
            "SELECT attempt FROM chunks WHERE job = 'cli' AND chunk = {first}"
        ))
        .output()
        .expect("sqlite3");
    assert_eq!(String::from_utf8_lossy(&attempt.stdout).trim(), "2");
}

/// A coordinator's Control API in this test process, over fake domains: enough to drive
/// the cluster commands end to end without etcd, workers or a coordinator binary.
mod fake_coordinator {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use ferry_coordination::PolicyChange;
    use ferry_coordinator::control::{
        ChunkFilter, ChunkView, ClusterControl, ControlError, EffectiveView, JobControl,
        JobStateView, JobStatusView, JobSummaryView, PlanView, PlannedTableView, RecopySelector,
        ThrottleUpdate, WorkerView,
    };
    use ferry_coordinator::service::control::ControlService;

    /// Job `orders`: each status read verifies one more of its 4 chunks, so a watch sees
    /// it progress and end DONE. After `leads_for` reads it answers as a standby.
    pub struct FakeJob {
        pub reads: AtomicUsize,
        pub leads_for: usize,
    }

    #[tonic::async_trait]
    impl JobControl for FakeJob {
        async fn job_status(&self, job: &str) -> Result<JobStatusView, ControlError> {
            if job != "orders" {
                return Err(ControlError::UnknownJob(job.to_owned()));
            }
            let read = self.reads.fetch_add(1, Ordering::SeqCst);
            if read >= self.leads_for {
                return Err(ControlError::NotLeader(None));
            }
            let chunks_verified = read.min(4) as u32;
            Ok(JobStatusView {
                state: if chunks_verified == 4 {
                    JobStateView::Done
                } else {
                    JobStateView::Running
                },
                rows_verified: u64::from(chunks_verified) * 100,
                chunks_total: 4,
                chunks_verified,
                ..Default::default()
            })
        }
        async fn pause(&self, _job: &str, _actor: &str) -> Result<EffectiveView, ControlError> {
            Err(ControlError::Unsupported("not in this fake".into()))
        }
        async fn resume(&self, _job: &str, _actor: &str) -> Result<EffectiveView, ControlError> {
            Err(ControlError::Unsupported("not in this fake".into()))
        }
        async fn update_throttle(
            &self,
            _job: &str,
            _update: ThrottleUpdate,
            _actor: &str,
        ) -> Result<(String, EffectiveView), ControlError> {
            Err(ControlError::Unsupported("not in this fake".into()))
        }
        async fn throttle(
            &self,
            _job: &str,
            _at: Option<jiff::Timestamp>,
        ) -> Result<(String, EffectiveView), ControlError> {
            Err(ControlError::Unsupported("not in this fake".into()))
        }
        async fn history(&self, _job: &str) -> Result<Vec<PolicyChange>, ControlError> {
            Ok(Vec::new())
        }
    }

    /// 2,500 chunks of `orders` (ids 0..2500, every 1000th FAILED), two workers.
    #[derive(Default)]
    pub struct FakeCluster {
        pub recopied: Mutex<Vec<RecopySelector>>,
    }

    pub const NUM_CHUNKS: u32 = 2500;

    #[tonic::async_trait]
    impl ClusterControl for FakeCluster {
        async fn submit(
            &self,
            _spec_yaml: &str,
            dry_run: bool,
            _actor: &str,
        ) -> Result<PlanView, ControlError> {
            Ok(PlanView {
                job: "orders".into(),
                tables: vec![PlannedTableView {
                    source: "public.orders".into(),
                    target: "orders".into(),
                    chunks: 4,
                    estimated_rows: 400,
                    warnings: vec!["copied as one chunk: no integer key".into()],
                }],
                submitted: !dry_run,
            })
        }
        async fn list_jobs(&self) -> Result<Vec<JobSummaryView>, ControlError> {
            Ok(vec![JobSummaryView {
                job: "orders".into(),
                state: JobStateView::Cancelled,
                reason: "cancelled by an operator".into(),
                submitted_at_unix_ms: 1_700_000_000_000,
            }])
        }
        async fn list_chunks(
            &self,
            _job: &str,
            filter: &ChunkFilter,
            offset: usize,
            limit: usize,
        ) -> Result<(Vec<ChunkView>, bool), ControlError> {
            let matching: Vec<ChunkView> = (0..NUM_CHUNKS)
                .map(|id| ChunkView {
                    id,
                    table: "public.orders".into(),
                    range: format!("[{id}, {})", id + 1),
                    state: if id % 1000 == 0 { "FAILED" } else { "VERIFIED" }.into(),
                    ..Default::default()
                })
                .filter(|chunk| {
                    filter
                        .state
                        .as_deref()
                        .is_none_or(|state| state == chunk.state)
                })
                .collect();
            let page: Vec<ChunkView> = matching.iter().skip(offset).take(limit).cloned().collect();
            let more = offset + page.len() < matching.len();
            Ok((page, more))
        }
        async fn cancel(&self, _job: &str, _actor: &str) -> Result<(), ControlError> {
            Ok(())
        }
        async fn recopy(
            &self,
            _job: &str,
            selector: RecopySelector,
            _actor: &str,
        ) -> Result<Vec<u32>, ControlError> {
            self.recopied.lock().expect("recopied").push(selector);
            Ok(vec![0, 1000, 2000])
        }
        async fn list_workers(&self) -> Result<Vec<WorkerView>, ControlError> {
            Ok(vec![WorkerView {
                id: "worker-a".into(),
                slots: 4,
                busy: 1,
                host: "node-1".into(),
                pid: 42,
                ..Default::default()
            }])
        }
        async fn drain(&self, worker: &str, _actor: &str) -> Result<(), ControlError> {
            Err(ControlError::UnknownWorker(worker.to_owned()))
        }
    }

    /// Serves `job` and `cluster` on a free loopback port; returns its endpoint.
    pub fn serve(
        runtime: &tokio::runtime::Runtime,
        job: Arc<FakeJob>,
        cluster: Arc<FakeCluster>,
    ) -> String {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = ControlService::with_cluster(job, cluster).into_server();
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }
}

#[test]
fn cluster_commands_against_a_fake_coordinator() {
    use fake_coordinator::{FakeCluster, FakeJob, NUM_CHUNKS, serve};
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = Arc::new(FakeCluster::default());
    let leader = serve(
        &runtime,
        Arc::new(FakeJob {
            reads: AtomicUsize::new(0),
            leads_for: usize::MAX,
        }),
        cluster.clone(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write_spec(dir.path(), SPEC);

    let (code, stdout, stderr) =
        run(ferryctl()
            .arg("submit")
            .arg(&spec)
            .args(["--dry-run", "--endpoint", &leader]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("plan of job orders (dry run"), "{stdout}");
    assert!(stdout.contains("public.orders"), "{stdout}");
    assert!(
        stdout.contains("total: 1 tables, 4 chunks, ~400 rows"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: table public.orders: copied as one chunk"),
        "{stdout}"
    );

    // Pages of 1000: all 2500 chunks arrive, in order.
    let (code, stdout, stderr) =
        run(ferryctl().args(["chunks", "orders", "-o", "json", "--endpoint", &leader]));
    assert_eq!(code, 0, "{stderr}");
    let chunks: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON array");
    let ids: Vec<u64> = chunks
        .as_array()
        .expect("array")
        .iter()
        .map(|chunk| chunk["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, (0..u64::from(NUM_CHUNKS)).collect::<Vec<_>>());
    let (code, stdout, _) = run(ferryctl().args([
        "chunks",
        "orders",
        "--state",
        "failed",
        "--endpoint",
        &leader,
    ]));
    assert_eq!(code, 0);
    assert_eq!(
        stdout.lines().count(),
        4,
        "header and 3 FAILED chunks: {stdout}"
    );
    assert!(stdout.starts_with("ID"), "{stdout}");

    let (code, stdout, _) = run(ferryctl().args(["jobs", "--endpoint", &leader]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("orders")
            && stdout.contains("CANCELLED")
            && stdout.contains("2023-11-14T22:13:20Z"),
        "{stdout}"
    );
    let (code, stdout, _) = run(ferryctl().args(["workers", "-o", "json", "--endpoint", &leader]));
    assert_eq!(code, 0);
    let workers: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(workers[0]["id"], "worker-a");
    let (code, stdout, _) = run(ferryctl().args([
        "recopy",
        "orders",
        "--state",
        "failed",
        "--endpoint",
        &leader,
    ]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains("copying 3 chunks again with overwrite: 0, 1000, 2000"),
        "{stdout}"
    );
    assert_eq!(
        *cluster.recopied.lock().expect("recopied"),
        vec![ferry_coordinator::control::RecopySelector::State(
            "FAILED".into()
        )]
    );
    let (code, _, stderr) = run(ferryctl().args(["drain", "worker-z", "--endpoint", &leader]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("worker \"worker-z\" is not live in this ferry"),
        "{stderr}"
    );
    let (code, _, stderr) = run(ferryctl().args(["watch", "nope", "--endpoint", &leader]));
    assert_eq!(code, 2, "an unknown job is refused: {stderr}");
    assert!(stderr.contains("\"nope\" is not known"), "{stderr}");
}

#[test]
fn watch_follows_the_job_to_a_new_leader_after_a_failover() {
    use fake_coordinator::{FakeCluster, FakeJob, serve};
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // The first coordinator answers twice, then steps down; the second leads throughout.
    let old_leader = serve(
        &runtime,
        Arc::new(FakeJob {
            reads: AtomicUsize::new(0),
            leads_for: 2,
        }),
        Arc::new(FakeCluster::default()),
    );
    let new_leader = serve(
        &runtime,
        Arc::new(FakeJob {
            reads: AtomicUsize::new(0),
            leads_for: usize::MAX,
        }),
        Arc::new(FakeCluster::default()),
    );
    let started = Instant::now();
    let (code, stdout, stderr) = run(ferryctl().args([
        "watch",
        "orders",
        "--endpoint",
        &format!("{old_leader},{new_leader}"),
    ]));
    assert_eq!(code, 0, "DONE: stdout {stdout} stderr {stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(stderr.contains("lost the watch"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 3, "a line per snapshot: {stdout}");
    assert!(
        lines.last().expect("lines").contains("DONE")
            && lines.last().expect("lines").contains("chunks 4/4 verified"),
        "{stdout}"
    );
    // JSON: one object per snapshot, the last DONE.
    let (code, stdout, stderr) =
        run(ferryctl().args(["watch", "orders", "-o", "json", "--endpoint", &new_leader]));
    assert_eq!(code, 0, "{stderr}");
    let last: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a line")).expect("JSON");
    assert_eq!(last["state"], "DONE");
}
