//! `ferryctl sync` (issue 12): incremental catch-up by a watermark column, newer-wins,
//! deletes found by a keyed diff, checksum-and-repair for tables without the column, and
//! the `--until-quiet` cutover gate; end to end with the `ferryctl` binary against real
//! PostgreSQL and MariaDB while a writer (an independent client: `psql` / `mariadb`
//! processes) inserts, updates and deletes rows at the source. Each test ends by
//! comparing both sides with the engine's own client.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_tests::cluster::binary;
use ferry_tests::{PgPair, env_url, mariadb, psql, unique_suffix, with_database};

/// Runs `ferryctl` with `env`; returns its exit code, stdout and stderr.
fn ferryctl(args: &[&str], env: &HashMap<String, String>) -> (i32, String, String) {
    let output = Command::new(binary("ferryctl"))
        .args(args)
        .envs(env)
        .env_remove("RUST_LOG")
        .env_remove("FERRY_ENDPOINT")
        .output()
        .expect("run ferryctl");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn expect_code(what: &str, run: &(i32, String, String), code: i32) {
    assert_eq!(
        run.0, code,
        "{what}: exit {}, expected {code}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        run.0, run.1, run.2
    );
}

/// The JSON lines of `ferryctl sync --json`: the passes, then the verdict.
fn sync_lines(stdout: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let verdict = lines.pop().expect("a verdict line");
    (lines, verdict)
}

fn total(passes: &[serde_json::Value], field: &str) -> u64 {
    passes
        .iter()
        .map(|pass| pass[field].as_u64().expect(field))
        .sum()
}

/// A deterministic pseudo-random sequence (a 64-bit LCG), so a failing run replays.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// The writer's statements for round `round`: an insert, updates and a delete on the
/// watermark table, and an update on the table without one.
fn writer_round(random: &mut Seeded, round: u64, rows: u64, now: &str) -> String {
    let new_id = 1_000_000 + round;
    let updated = 1 + random.below(rows);
    let deleted = 1 + random.below(rows);
    let plain = 1 + random.below(500);
    format!(
        "INSERT INTO s_items (id, v, n, updated_at) VALUES ({new_id}, 'new {round}', {round}, {now});
         UPDATE s_items SET v = 'updated {round}', n = n + 1, updated_at = {now} WHERE id = {updated};
         UPDATE s_items SET n = n + 7, updated_at = {now} WHERE id = {new_id} - 1;
         DELETE FROM s_items WHERE id = {deleted};
         UPDATE s_plain SET v = 'plain {round}' WHERE id = {plain};"
    )
}

/// Runs `rounds` writer rounds through `run_sql` in a thread, pausing between rounds,
/// until done or `stop`.
fn start_writer(
    rounds: u64,
    rows: u64,
    now: &'static str,
    stop: Arc<AtomicBool>,
    run_sql: impl Fn(&str) + Send + 'static,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut random = Seeded(20_261_206);
        let mut done = 0;
        for round in 0..rounds {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            run_sql(&writer_round(&mut random, round, rows, now));
            done += 1;
            std::thread::sleep(Duration::from_millis(60));
        }
        done
    })
}

/// A table's every row in key order, as `psql` prints it: comparing two of these is an
/// `EXCEPT ALL` both ways (the databases differ, so one query cannot see both).
fn pg_rows(url: &str, table: &str) -> String {
    psql(url, &format!("SELECT * FROM {table} ORDER BY id"))
}

/// The first copy of the spec's tables (`ferryctl local`, its state in `copy.db`).
fn first_copy(dir: &std::path::Path, spec: &str, env: &HashMap<String, String>) {
    let copy_state = dir.join("copy.db").display().to_string();
    expect_code(
        "copy",
        &ferryctl(
            &[
                "local",
                spec,
                "--state",
                &copy_state,
                "--control-addr",
                "127.0.0.1:0",
            ],
            env,
        ),
        0,
    );
}

fn spec_file(dir: &std::path::Path, yaml: &str) -> String {
    let path = dir.join("job.yaml");
    std::fs::write(&path, yaml).expect("spec");
    path.display().to_string()
}

/// Starts `ferryctl sync SPEC --until-quiet 3s` (passes every 200 ms, JSON lines), its
/// output captured.
fn spawn_sync_until_quiet(
    spec: &str,
    state: &str,
    env: &HashMap<String, String>,
) -> std::process::Child {
    Command::new(binary("ferryctl"))
        .args([
            "sync",
            spec,
            "--state",
            state,
            "--until-quiet",
            "3s",
            "--pass-interval",
            "200ms",
            "--json",
        ])
        .envs(env)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferryctl sync")
}

#[test]
fn postgres_sync_catches_up_with_a_live_writer_until_quiet() {
    let pair = PgPair::new("s");
    let rows = 5000;
    psql(
        &pair.source(),
        &format!(
            "CREATE TABLE s_items (id bigint PRIMARY KEY, v text, n int,
                 updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
             INSERT INTO s_items (id, v, n) SELECT g, 'v' || g, g FROM generate_series(1, {rows}) g;
             CREATE TABLE s_plain (id int PRIMARY KEY, v text);
             INSERT INTO s_plain SELECT g, 'p' || g FROM generate_series(1, 500) g;"
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec_file(
        dir.path(),
        "name: pgsync\n\
         source: { kind: postgres, url_env: SSRC }\n\
         target: { kind: postgres, url_env: SDST }\n\
         tables: { include: [public.s_items, public.s_plain] }\n\
         chunking: { target_rows: 1000 }\n\
         watermark: { column: updated_at, lag: 1s }\n",
    );
    let env = HashMap::from([
        ("SSRC".to_owned(), pair.source()),
        ("SDST".to_owned(), pair.target()),
    ]);
    first_copy(dir.path(), &spec, &env);

    let sync_state = dir.path().join("sync.json").display().to_string();
    let sync = spawn_sync_until_quiet(&spec, &sync_state, &env);
    let stop = Arc::new(AtomicBool::new(false));
    let source = pair.source();
    let writer = start_writer(60, rows, "clock_timestamp()", stop.clone(), move |sql| {
        psql(&source, sql);
    });
    let rounds = writer.join().expect("writer");
    assert_eq!(rounds, 60, "the writer ran every round");
    let output = sync.wait_with_output().expect("sync ends");
    let run = (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    expect_code("sync --until-quiet", &run, 0);
    let (passes, verdict) = sync_lines(&run.1);
    assert_eq!(verdict["ready_to_cut_over"], true, "{verdict}");
    assert!(verdict["quiet_seconds"].as_f64().expect("quiet") >= 3.0);
    assert!(passes.len() >= 3, "several passes: {passes:?}");
    assert!(total(&passes, "inserted") >= 60, "every new row inserted");
    assert!(total(&passes, "updated") > 0, "updates applied");
    assert!(
        total(&passes, "deleted") > 0,
        "deletes found by the keyed diff"
    );
    assert!(
        total(&passes, "ranges_repaired") > 0,
        "the table without a watermark was repaired"
    );
    let last = passes.last().expect("a pass");
    assert_eq!(last["lag_rows"], 0, "the last pass found nothing");
    assert!(
        total(&passes, "tables_unchanged") > 0,
        "quiet passes leave out tables whose write statistics did not move: {passes:?}"
    );

    for table in ["s_items", "s_plain"] {
        let source_rows = pg_rows(&pair.source(), table);
        assert_eq!(
            source_rows,
            pg_rows(&pair.target(), table),
            "{table}: target equals source"
        );
    }
    assert_eq!(
        psql(
            &pair.target(),
            "SELECT count(*) FROM s_items WHERE id > 1000000"
        ),
        "59",
        "rows inserted during passes are in the target"
    );

    // A restarted sync continues from the stored high-water mark: it reads only the rows
    // within the lag of it, not the whole table.
    let again = ferryctl(&["sync", &spec, "--state", &sync_state, "--json"], &env);
    expect_code("one more pass", &again, 0);
    let pass: serde_json::Value =
        serde_json::from_str(again.1.lines().next().expect("a pass line")).expect("json");
    assert!(
        pass["pass"].as_u64().expect("pass") > passes.len() as u64,
        "pass numbers continue: {pass}"
    );
    assert!(
        pass["rows_read"].as_u64().expect("rows") < rows / 2,
        "only rows near the high-water mark are read again: {pass}"
    );
    assert_eq!(pass["lag_rows"], 0);
}

#[test]
fn postgres_sync_keeps_a_target_row_newer_than_the_source() {
    let pair = PgPair::new("s");
    psql(
        &pair.source(),
        "CREATE TABLE s_nw (id bigint PRIMARY KEY, v text,
             updated_at timestamp NOT NULL DEFAULT now());
         INSERT INTO s_nw (id, v, updated_at)
             SELECT g, 'v' || g, '2026-01-01 00:00:00' FROM generate_series(1, 100) g;
         CREATE TABLE s_bad (id bigint PRIMARY KEY, updated_at text);
         CREATE TABLE s_nokey (v text, updated_at timestamp);",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml_with = |tables: &str, column: &str| {
        format!(
            "name: pgnw\n\
             source: {{ kind: postgres, url_env: SSRC }}\n\
             target: {{ kind: postgres, url_env: SDST }}\n\
             tables: {{ include: [{tables}] }}\n\
             watermark: {{ column: {column}, lag: 0s }}\n"
        )
    };
    let yaml = |tables: &str| yaml_with(tables, "updated_at");
    let spec = spec_file(dir.path(), &yaml("public.s_nw"));
    let env = HashMap::from([
        ("SSRC".to_owned(), pair.source()),
        ("SDST".to_owned(), pair.target()),
    ]);
    first_copy(dir.path(), &spec, &env);
    // Row 2: the target's is newer than the source's change; row 3: the source's is newer.
    psql(
        &pair.target(),
        "UPDATE s_nw SET v = 'target newer', updated_at = '2026-06-01' WHERE id = 2;
         UPDATE s_nw SET v = 'target older', updated_at = '2026-02-01' WHERE id = 3;",
    );
    psql(
        &pair.source(),
        "UPDATE s_nw SET v = 'source change', updated_at = '2026-03-01' WHERE id IN (2, 3);
         DELETE FROM s_nw WHERE id = 50;",
    );
    let sync_state = dir.path().join("sync.json").display().to_string();
    let pass = ferryctl(&["sync", &spec, "--state", &sync_state, "--json"], &env);
    expect_code("one pass", &pass, 0);
    assert_eq!(
        psql(
            &pair.target(),
            "SELECT id, v FROM s_nw WHERE id IN (2, 3, 50) ORDER BY id"
        ),
        "2|target newer\n3|source change",
        "newer wins on both sides of the comparison; the deleted row is gone"
    );
    let summary: serde_json::Value =
        serde_json::from_str(pass.1.lines().next().expect("pass line")).expect("json");
    assert_eq!(summary["updated"], 1, "{summary}");
    assert_eq!(summary["deleted"], 1, "{summary}");
    assert_eq!(
        psql(&pair.source(), "SELECT v FROM s_nw WHERE id = 2"),
        "source change",
        "the source is never written"
    );

    // No write since: the table's write statistics did not move, the pass leaves it out.
    let pass_line = |run: &(i32, String, String)| -> serde_json::Value {
        serde_json::from_str(run.1.lines().next().expect("pass line")).expect("json")
    };
    let quiet = ferryctl(&["sync", &spec, "--state", &sync_state, "--json"], &env);
    expect_code("a pass with nothing written", &quiet, 0);
    let summary = pass_line(&quiet);
    assert_eq!(summary["tables_unchanged"], 1, "{summary}");
    assert_eq!(summary["chunks"], 0, "{summary}");
    // One write moves them: the next pass takes the table again and finds it.
    psql(
        &pair.source(),
        "UPDATE s_nw SET v = 'after quiet', updated_at = '2026-04-01' WHERE id = 4",
    );
    let moved = ferryctl(&["sync", &spec, "--state", &sync_state, "--json"], &env);
    expect_code("a pass after one write", &moved, 0);
    let summary = pass_line(&moved);
    assert_eq!(summary["tables_unchanged"], 0, "{summary}");
    assert_eq!(summary["updated"], 1, "{summary}");
    assert_eq!(
        psql(&pair.target(), "SELECT v FROM s_nw WHERE id = 4"),
        "after quiet"
    );

    // A watermark column that is not a timestamp is refused, naming table and column.
    let bad = spec_file(dir.path(), &yaml("public.s_bad"));
    let refused = ferryctl(&["sync", &bad, "--state", &sync_state], &env);
    expect_code("a text watermark", &refused, 2);
    assert!(
        refused.2.contains("public.s_bad") && refused.2.contains("not a timestamp"),
        "{}",
        refused.2
    );
    let no_key = spec_file(dir.path(), &yaml("public.s_nokey"));
    let refused = ferryctl(&["sync", &no_key, "--state", &sync_state], &env);
    expect_code("a watermark table without a key", &refused, 2);
    assert!(
        refused.2.contains("public.s_nokey") && refused.2.contains("no single integer primary key"),
        "{}",
        refused.2
    );
    let missing = spec_file(dir.path(), &yaml_with("public.s_nw", "changed_on"));
    let refused = ferryctl(&["sync", &missing, "--state", &sync_state], &env);
    expect_code("a watermark column no table has", &refused, 2);
    assert!(
        refused
            .2
            .contains("no selected table has the watermark column changed_on"),
        "{}",
        refused.2
    );
    assert_eq!(
        psql(&pair.target(), "SELECT v FROM s_nw WHERE id = 2"),
        "target newer",
        "a refused sync writes nothing"
    );
}

/// A table's every row in key order, from the `mariadb` client.
fn mariadb_rows(url: &str, table: &str) -> String {
    mariadb(url, &format!("SELECT * FROM {table} ORDER BY id"))
}

#[test]
fn mariadb_sync_catches_up_with_a_live_writer_until_quiet() {
    let server = env_url("FERRY_TEST_MYSQL_URL");
    let suffix = unique_suffix();
    let (source_db, target_db) = (
        format!("ferry_ssrc_{suffix}"),
        format!("ferry_sdst_{suffix}"),
    );
    mariadb(
        &server,
        &format!(
            "CREATE DATABASE {source_db} CHARACTER SET utf8mb4; \
             CREATE DATABASE {target_db} CHARACTER SET utf8mb4;"
        ),
    );
    struct Drop2(String, String, String);
    impl Drop for Drop2 {
        fn drop(&mut self) {
            mariadb(
                &self.0,
                &format!(
                    "DROP DATABASE IF EXISTS {}; DROP DATABASE IF EXISTS {};",
                    self.1, self.2
                ),
            );
        }
    }
    let _cleanup = Drop2(server.clone(), source_db.clone(), target_db.clone());
    let source = with_database(&server, &source_db);
    let target = with_database(&server, &target_db);
    let rows = 3000;
    mariadb(
        &source,
        &format!(
            "CREATE TABLE s_items (id bigint PRIMARY KEY, v varchar(100), n int,
                 updated_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));
             INSERT INTO s_items (id, v, n)
                 SELECT seq, CONCAT('v', seq), seq FROM seq_1_to_{rows};
             CREATE TABLE s_plain (id int PRIMARY KEY, v varchar(100));
             INSERT INTO s_plain SELECT seq, CONCAT('p', seq) FROM seq_1_to_500;"
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec_file(
        dir.path(),
        "name: mysync\n\
         source: { kind: mysql, url_env: SSRC }\n\
         target: { kind: mysql, url_env: SDST }\n\
         tables: { include: [s_items, s_plain] }\n\
         chunking: { target_rows: 1000 }\n\
         watermark: { column: updated_at, lag: 1s }\n",
    );
    let env = HashMap::from([
        ("SSRC".to_owned(), source.clone()),
        ("SDST".to_owned(), target.clone()),
    ]);
    first_copy(dir.path(), &spec, &env);
    let sync_state = dir.path().join("sync.json").display().to_string();
    let sync = spawn_sync_until_quiet(&spec, &sync_state, &env);
    let stop = Arc::new(AtomicBool::new(false));
    let writer_url = source.clone();
    let writer = start_writer(40, rows, "CURRENT_TIMESTAMP(6)", stop, move |sql| {
        mariadb(&writer_url, sql);
    });
    assert_eq!(writer.join().expect("writer"), 40);
    let output = sync.wait_with_output().expect("sync ends");
    let run = (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    expect_code("sync --until-quiet", &run, 0);
    let (passes, verdict) = sync_lines(&run.1);
    assert_eq!(verdict["ready_to_cut_over"], true, "{verdict}");
    assert!(total(&passes, "inserted") >= 40);
    assert!(total(&passes, "updated") > 0);
    assert!(total(&passes, "deleted") > 0);
    assert!(total(&passes, "ranges_repaired") > 0);
    for table in ["s_items", "s_plain"] {
        assert_eq!(
            mariadb_rows(&source, table),
            mariadb_rows(&target, table),
            "{table}: target equals source"
        );
    }
}

#[test]
fn postgres_sync_reverse_carries_rows_written_to_the_new_side_back_to_the_old_one() {
    let pair = PgPair::new("r");
    psql(
        &pair.source(),
        "CREATE TABLE s_rv (id bigint PRIMARY KEY, v text,
             updated_at timestamp NOT NULL DEFAULT now());
         INSERT INTO s_rv (id, v, updated_at)
             SELECT g, 'v' || g, '2026-01-01 00:00:00' FROM generate_series(1, 100) g;",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec_file(
        dir.path(),
        "name: pgrv\n\
         source: { kind: postgres, url_env: SSRC }\n\
         target: { kind: postgres, url_env: SDST }\n\
         tables: { include: [\"public.s_rv*\"] }\n\
         watermark: { column: updated_at, lag: 0s }\n",
    );
    let env = HashMap::from([
        ("SSRC".to_owned(), pair.source()),
        ("SDST".to_owned(), pair.target()),
    ]);
    first_copy(dir.path(), &spec, &env);
    // After the switch the application writes to the new side (the target); row 9 was
    // changed on the old side later than on the new one (newer-wins keeps the old's).
    psql(
        &pair.target(),
        "INSERT INTO s_rv VALUES (101, 'written after the switch', '2026-03-01');
         UPDATE s_rv SET v = 'new side', updated_at = '2026-03-01' WHERE id = 5;
         DELETE FROM s_rv WHERE id = 7;
         UPDATE s_rv SET v = 'new older', updated_at = '2026-02-01' WHERE id = 9;",
    );
    psql(
        &pair.source(),
        "UPDATE s_rv SET v = 'old newer', updated_at = '2026-09-01' WHERE id = 9;",
    );

    let reverse = ferryctl(&["sync", &spec, "--reverse", "--json"], &env);
    expect_code("sync --reverse", &reverse, 0);
    let (passes, _) = sync_lines(&format!("{}\n{{}}", reverse.1));
    assert_eq!(passes.len(), 1, "one pass: {passes:?}");
    assert_eq!(passes[0]["inserted"], 1, "{}", passes[0]);
    assert_eq!(passes[0]["updated"], 1, "row 5 only: {}", passes[0]);
    assert_eq!(passes[0]["deleted"], 1, "{}", passes[0]);
    assert!(
        dir.path().join("pgrv-reverse.ferry-sync.json").exists(),
        "the reverse sync keeps its own state file"
    );
    assert!(!dir.path().join("pgrv.ferry-sync.json").exists());

    let old = pair.source();
    assert_eq!(
        psql(
            &old,
            "SELECT v FROM s_rv WHERE id IN (5, 9, 101) ORDER BY id"
        ),
        "new side\nold newer\nwritten after the switch",
        "the new side's rows are back in the old one; the old side's newer row 9 is kept"
    );
    assert_eq!(psql(&old, "SELECT count(*) FROM s_rv WHERE id = 7"), "0");
    let except_row_9 = |url: &str| psql(url, "SELECT * FROM s_rv WHERE id <> 9 ORDER BY id");
    assert_eq!(except_row_9(&old), except_row_9(&pair.target()));

    // A table that exists only on the new side cannot be synced back: refused by name.
    psql(
        &pair.target(),
        "CREATE TABLE s_rv_new (id bigint PRIMARY KEY, updated_at timestamp NOT NULL);",
    );
    let refused = ferryctl(&["sync", &spec, "--reverse"], &env);
    expect_code(
        "sync --reverse with a table missing on the old side",
        &refused,
        2,
    );
    assert!(
        refused.2.contains("table public.s_rv_new")
            && refused.2.contains("does not exist there")
            && refused.2.contains("tables.exclude"),
        "{}",
        refused.2
    );
}
