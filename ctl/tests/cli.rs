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
