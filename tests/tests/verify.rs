//! Verify-only jobs, diff, repair and the evidence record (issue 12), end to end with the
//! `ferryctl` binary against real PostgreSQL, MariaDB and SQLite, and on a cluster of
//! real processes. Differences are injected into a copied target with each engine's own
//! client; the verify must find exactly those keys, write nothing, and `--repair` must
//! fix them without touching the source or target rows outside the differing ranges.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_tests::cluster::{Cluster, binary, submit, wait_done};
use ferry_tests::{PgPair, env_url, mariadb, psql, sqlite3, unique_suffix, with_database};

/// Exit code of a verify that found differences (README "Exit codes").
const DIFFERENCES: i32 = 4;

/// `(table, key, kind, columns)` of one differing key.
type DiffKey = (String, String, String, String);

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

/// `(table, key, kind, columns)` of every line of a `--output` file.
fn diff_lines(path: &Path) -> (BTreeSet<DiffKey>, Vec<serde_json::Value>) {
    let text = std::fs::read_to_string(path).expect("diff file");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let keys = lines
        .iter()
        .map(|line| {
            let columns: Vec<&str> = line["columns"]
                .as_array()
                .map(|columns| columns.iter().filter_map(|c| c.as_str()).collect())
                .unwrap_or_default();
            (
                line["table"].as_str().expect("table").to_owned(),
                line["key"].to_string(),
                line["kind"].as_str().expect("kind").to_owned(),
                columns.join(","),
            )
        })
        .collect();
    (keys, lines)
}

/// The fields of one CSV line (RFC 4180 quoting).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().expect("field").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().expect("field").push(c),
        }
    }
    fields
}

fn expected(rows: &[(&str, &str, &str, &str)]) -> BTreeSet<DiffKey> {
    rows.iter()
        .map(|(table, key, kind, columns)| {
            (
                (*table).to_owned(),
                (*key).to_owned(),
                (*kind).to_owned(),
                (*columns).to_owned(),
            )
        })
        .collect()
}

fn pg_fingerprint(url: &str, table: &str) -> String {
    psql(
        url,
        &format!(
            "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) FROM {table} t"
        ),
    )
}

#[test]
fn postgres_verify_finds_exactly_the_injected_differences_and_repair_fixes_only_them() {
    let pair = PgPair::new("v");
    psql(
        &pair.source(),
        "CREATE TABLE v_items (id bigint PRIMARY KEY, name text, note text, price double precision);
         INSERT INTO v_items SELECT g, 'name ' || g,
             CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || g END, g * 0.5
         FROM generate_series(1, 20000) g;
         UPDATE v_items SET price = 0.1 WHERE id = 4004;
         CREATE TABLE v_events (id bigint PRIMARY KEY, region text, v int) PARTITION BY RANGE (id);
         CREATE TABLE v_events_a PARTITION OF v_events FOR VALUES FROM (MINVALUE) TO (5000);
         CREATE TABLE v_events_b PARTITION OF v_events FOR VALUES FROM (5000) TO (MAXVALUE);
         INSERT INTO v_events SELECT g, 'r' || (g % 7), g FROM generate_series(1, 10000) g;
         CREATE TABLE v_skipped (id bigint PRIMARY KEY, v text);
         INSERT INTO v_skipped SELECT g, 'v' || g FROM generate_series(1, 100) g;
         ANALYZE;",
    );
    // A table outside the job, in the target too: the verify must not look at it, and
    // repair must not touch it.
    psql(
        &pair.target(),
        "CREATE TABLE v_skipped (id bigint PRIMARY KEY, v text);
         INSERT INTO v_skipped SELECT g, 'v' || g FROM generate_series(1, 100) g;
         UPDATE v_skipped SET v = 'target only' WHERE id = 5;",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("job.yaml");
    std::fs::write(
        &spec,
        "name: pgv\n\
         source: { kind: postgres, url_env: VSRC }\n\
         target: { kind: postgres, url_env: VDST }\n\
         tables: { include: [public.v_items, public.v_events] }\n\
         chunking: { target_rows: 4000 }\n",
    )
    .expect("spec");
    let env = HashMap::from([
        ("VSRC".to_owned(), pair.source()),
        ("VDST".to_owned(), pair.target()),
    ]);
    let spec = spec.display().to_string();
    let state = |name: &str| dir.path().join(name).display().to_string();
    let copy_state = state("copy.db");
    let copied = ferryctl(
        &[
            "local",
            &spec,
            "--state",
            &copy_state,
            "--control-addr",
            "127.0.0.1:0",
        ],
        &env,
    );
    expect_code("copy", &copied, 0);
    let source_before: Vec<String> = ["v_items", "v_events", "v_skipped"]
        .iter()
        .map(|table| pg_fingerprint(&pair.source(), table))
        .collect();

    psql(
        &pair.target(),
        "DELETE FROM v_items WHERE id = 101;
         INSERT INTO v_items VALUES (9000000, 'ghost', NULL, 1);
         UPDATE v_items SET name = 'changed' WHERE id = 2002;
         UPDATE v_items SET note = '' WHERE id = 3000;
         UPDATE v_items SET price = '0.10000000000000002'::float8 WHERE id = 4004;
         UPDATE v_events SET v = -1 WHERE id = 7777;",
    );
    assert_eq!(
        psql(
            &pair.target(),
            "SELECT price = 0.1::float8, price > 0.1::float8 FROM v_items WHERE id = 4004"
        ),
        "f|t",
        "the target's float differs from the source's in its last bit only"
    );
    let target_before: Vec<String> = ["v_items", "v_events", "v_skipped"]
        .iter()
        .map(|table| pg_fingerprint(&pair.target(), table))
        .collect();
    let verify_state = state("verify.db");
    let diff = dir.path().join("diff.jsonl");
    let diff_text = diff.display().to_string();
    let common = [
        "verify",
        spec.as_str(),
        "--state",
        verify_state.as_str(),
        "--control-addr",
        "127.0.0.1:0",
        "--recheck-after",
        "0s",
        "--leaf-rows",
        "64",
    ];

    let found = ferryctl(
        &[&common[..], &["--json", "--output", &diff_text]].concat(),
        &env,
    );
    expect_code("verify of the damaged target", &found, DIFFERENCES);
    let (keys, lines) = diff_lines(&diff);
    assert_eq!(
        keys,
        expected(&[
            ("public.v_events", "7777", "changed", "v"),
            ("public.v_items", "101", "missing", ""),
            ("public.v_items", "2002", "changed", "name"),
            ("public.v_items", "3000", "changed", "note"),
            ("public.v_items", "4004", "changed", "price"),
            ("public.v_items", "9000000", "extra", ""),
        ]),
        "exactly the injected keys"
    );
    assert!(
        lines
            .iter()
            .all(|line| line.get("source").is_none() && line.get("target").is_none()),
        "no column values without --show-values: {lines:?}"
    );
    // The report, per table and partition: only v_events_b differs.
    let report: serde_json::Value =
        serde_json::from_str(found.1.lines().next().expect("report line")).expect("json report");
    let events = report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|table| table["table"] == "public.v_events")
        .expect("v_events in the report");
    let partitions: BTreeSet<(String, u64)> = events["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|part| {
            (
                part["partition"].as_str().expect("name").to_owned(),
                part["differing"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(
        partitions,
        BTreeSet::from([("v_events_a".to_owned(), 0), ("v_events_b".to_owned(), 1)])
    );
    let after_verify: Vec<String> = ["v_items", "v_events", "v_skipped"]
        .iter()
        .map(|table| pg_fingerprint(&pair.target(), table))
        .collect();
    assert_eq!(
        after_verify, target_before,
        "a verify writes nothing to the target"
    );

    // --repair --dry-run lists, changes nothing; --show-values shows the values.
    let diff_values = dir.path().join("values.jsonl");
    let dry = ferryctl(
        &[
            &common[..],
            &[
                "--repair",
                "--dry-run",
                "--show-values",
                "--output",
                &diff_values.display().to_string(),
            ],
        ]
        .concat(),
        &env,
    );
    expect_code("repair --dry-run", &dry, DIFFERENCES);
    let (_, value_lines) = diff_lines(&diff_values);
    let changed = value_lines
        .iter()
        .find(|line| line["key"] == 2002)
        .expect("key 2002");
    assert_eq!(changed["source"]["name"], "name 2002");
    assert_eq!(changed["target"]["name"], "changed");
    let null_vs_empty = value_lines
        .iter()
        .find(|line| line["key"] == 3000)
        .expect("key 3000");
    assert_eq!(null_vs_empty["source"]["note"], serde_json::Value::Null);
    assert_eq!(null_vs_empty["target"]["note"], "");
    let after_dry: Vec<String> = ["v_items", "v_events", "v_skipped"]
        .iter()
        .map(|table| pg_fingerprint(&pair.target(), table))
        .collect();
    assert_eq!(after_dry, target_before, "a dry run changes nothing");

    // --repair: only the differing ranges are re-copied.
    let xmin_query = "SELECT id || ':' || xmin FROM v_items ORDER BY id";
    let xmin_before: BTreeSet<String> = psql(&pair.target(), xmin_query)
        .lines()
        .map(str::to_owned)
        .collect();
    let repaired = ferryctl(&[&common[..], &["--repair"]].concat(), &env);
    expect_code("repair", &repaired, 0);
    for table in ["v_items", "v_events"] {
        assert_eq!(
            pg_fingerprint(&pair.target(), table),
            pg_fingerprint(&pair.source(), table),
            "{table} repaired"
        );
    }
    assert_eq!(
        psql(&pair.target(), "SELECT v FROM v_skipped WHERE id = 5"),
        "target only",
        "a table outside the job is not touched"
    );
    let xmin_after: BTreeSet<String> = psql(&pair.target(), xmin_query)
        .lines()
        .map(str::to_owned)
        .collect();
    let rewritten = xmin_after.difference(&xmin_before).count();
    assert!(
        rewritten > 0 && rewritten <= 5 * 64 * 2,
        "only rows of the small differing ranges were re-written, not whole chunks: {rewritten}"
    );
    let source_after: Vec<String> = ["v_items", "v_events", "v_skipped"]
        .iter()
        .map(|table| pg_fingerprint(&pair.source(), table))
        .collect();
    assert_eq!(source_after, source_before, "the source is never modified");

    let again = ferryctl(&common, &env);
    expect_code("verify after repair", &again, 0);

    // The evidence record of that last verify: every chunk, both sides, who and when.
    let csv = ferryctl(
        &[
            "report",
            "pgv-verify",
            "--state",
            &verify_state,
            "--format",
            "csv",
        ],
        &env,
    );
    expect_code("report csv", &csv, 0);
    let mut rows = csv.1.lines();
    let header: Vec<&str> = rows.next().expect("header").split(',').collect();
    let column = |name: &str| header.iter().position(|c| *c == name).expect(name);
    let records: Vec<Vec<String>> = rows.map(csv_fields).collect();
    assert!(records.len() >= 7, "every chunk: {}", csv.1);
    for record in &records {
        assert_eq!(record[column("state")], "VERIFIED");
        assert_eq!(
            record[column("source_checksum")],
            record[column("target_checksum")]
        );
        assert_eq!(record[column("source_rows")], record[column("target_rows")]);
        assert!(record[column("worker")].starts_with("local-"));
        assert!(!record[column("verified_at")].is_empty());
    }
    let json = ferryctl(&["report", "pgv-verify", "--state", &verify_state], &env);
    expect_code("report json", &json, 0);
    let partitions: BTreeSet<String> = json
        .1
        .lines()
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("json line");
            value["partition"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(
        partitions,
        BTreeSet::from(["v_events_a".to_owned(), "v_events_b".to_owned()])
    );
}

#[test]
fn postgres_to_mariadb_verify_across_engines_finds_and_repairs() {
    let pair = PgPair::new("v");
    let server = env_url("FERRY_TEST_MYSQL_URL");
    let target_db = format!("ferry_vmy_{}", unique_suffix());
    mariadb(
        &server,
        &format!("CREATE DATABASE {target_db} CHARACTER SET utf8mb4"),
    );
    let target_url = with_database(&server, &target_db);
    psql(
        &pair.source(),
        "CREATE TABLE v_cross (id bigint PRIMARY KEY, name text, note text, price double precision);
         INSERT INTO v_cross SELECT g, 'name ' || g,
             CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || g END, g * 0.25
         FROM generate_series(1, 5000) g;",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("job.yaml");
    std::fs::write(
        &spec,
        "name: crossv\n\
         source: { kind: postgres, url_env: VSRC }\n\
         target: { kind: mysql, url_env: VDST }\n\
         tables: { include: [public.v_cross] }\n\
         chunking: { target_rows: 1000 }\n",
    )
    .expect("spec");
    let env = HashMap::from([
        ("VSRC".to_owned(), pair.source()),
        ("VDST".to_owned(), target_url.clone()),
    ]);
    let spec = spec.display().to_string();
    let copy_state = dir.path().join("copy.db").display().to_string();
    let copied = ferryctl(
        &[
            "local",
            &spec,
            "--state",
            &copy_state,
            "--control-addr",
            "127.0.0.1:0",
        ],
        &env,
    );
    expect_code("copy", &copied, 0);
    let source_before = pg_fingerprint(&pair.source(), "v_cross");
    mariadb(
        &target_url,
        "DELETE FROM v_cross WHERE id = 42;
         UPDATE v_cross SET note = '' WHERE id = 1230;
         UPDATE v_cross SET name = 'other' WHERE id = 4321;",
    );
    let verify_state = dir.path().join("verify.db").display().to_string();
    let diff = dir.path().join("diff.jsonl");
    let common = [
        "verify",
        spec.as_str(),
        "--state",
        verify_state.as_str(),
        "--control-addr",
        "127.0.0.1:0",
        "--recheck-after",
        "0s",
    ];
    let found = ferryctl(
        &[&common[..], &["--output", &diff.display().to_string()]].concat(),
        &env,
    );
    expect_code("verify", &found, DIFFERENCES);
    assert_eq!(
        diff_lines(&diff).0,
        expected(&[
            ("public.v_cross", "1230", "changed", "note"),
            ("public.v_cross", "42", "missing", ""),
            ("public.v_cross", "4321", "changed", "name"),
        ])
    );
    let repaired = ferryctl(&[&common[..], &["--repair"]].concat(), &env);
    expect_code("repair", &repaired, 0);
    assert_eq!(
        mariadb(
            &target_url,
            "SELECT count(*), sum(note IS NULL), (SELECT name FROM v_cross WHERE id = 4321), \
             (SELECT note IS NULL FROM v_cross WHERE id = 1230), (SELECT count(*) FROM v_cross WHERE id = 42) \
             FROM v_cross"
        )
        .trim(),
        "5000|500|name 4321|1|1"
    );
    expect_code("verify after repair", &ferryctl(&common, &env), 0);
    assert_eq!(pg_fingerprint(&pair.source(), "v_cross"), source_before);
    mariadb(&server, &format!("DROP DATABASE {target_db}"));
}

#[test]
fn sqlite_verify_tells_null_from_empty_and_a_float_by_its_last_bit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.db");
    let target = dir.path().join("target.db");
    sqlite3(
        &source,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, note TEXT, price REAL);
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 3000)
         INSERT INTO items SELECT n, CASE WHEN n % 5 = 0 THEN NULL ELSE 'n' || n END, n * 0.1 FROM g;",
    );
    std::fs::write(
        dir.path().join("job.yaml"),
        "name: litev\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: sqlite, path: target.db }\n\
         tables: { include: [items] }\nchunking: { target_rows: 1000 }\n",
    )
    .expect("spec");
    let spec = dir.path().join("job.yaml").display().to_string();
    let env = HashMap::new();
    expect_code(
        "copy",
        &ferryctl(&["local", &spec, "--control-addr", "127.0.0.1:0"], &env),
        0,
    );
    let fingerprint = |path: &Path| {
        sqlite3(
            path,
            "SELECT count(*), group_concat(quote(id) || quote(note) || quote(price), ',') FROM (SELECT * FROM items ORDER BY id)",
        )
    };
    let source_before = fingerprint(&source);
    // 0.30000000000000004 is 3 * 0.1's double; its neighbour below is 0.3.
    assert_eq!(
        sqlite3(
            &source,
            "SELECT price = 0.30000000000000004 FROM items WHERE id = 3"
        ),
        "1"
    );
    sqlite3(
        &target,
        "UPDATE items SET note = '' WHERE id = 10;
         UPDATE items SET price = 0.3 WHERE id = 3;
         INSERT INTO items VALUES (2500000, 'extra', 1.0);",
    );
    let diff = dir.path().join("diff.jsonl");
    let common = [
        "verify",
        spec.as_str(),
        "--control-addr",
        "127.0.0.1:0",
        "--recheck-after",
        "0s",
    ];
    let found = ferryctl(
        &[&common[..], &["--output", &diff.display().to_string()]].concat(),
        &env,
    );
    expect_code("verify", &found, DIFFERENCES);
    assert_eq!(
        diff_lines(&diff).0,
        expected(&[
            ("items", "10", "changed", "note"),
            ("items", "2500000", "extra", ""),
            ("items", "3", "changed", "price"),
        ])
    );
    expect_code(
        "repair",
        &ferryctl(&[&common[..], &["--repair"]].concat(), &env),
        0,
    );
    assert_eq!(fingerprint(&target), source_before, "target repaired");
    assert_eq!(fingerprint(&source), source_before, "source untouched");
    expect_code("verify after repair", &ferryctl(&common, &env), 0);
}

#[test]
fn a_verify_only_job_on_a_cluster_completes_with_the_right_answer() {
    let mut cluster = Cluster::new(&[("orders", 6000)]);
    let address = cluster.start_coordinator("c1");
    cluster.start_worker("w1", 2);
    cluster.start_worker("w2", 2);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let spec_text = cluster.spec("orders-copy", 1000, 10_000_000, 4);
    runtime.block_on(async {
        submit(&address, &spec_text).await;
        let status = wait_done(&address, "orders-copy", Duration::from_secs(120)).await;
        ferry_tests::cluster::assert_done(&status);
    });
    cluster.assert_same(&["orders"]);
    psql(
        &cluster.target_url(),
        "UPDATE orders SET note = 'drifted' WHERE id = 4321",
    );
    let target_before = pg_fingerprint(&cluster.target_url(), "orders");
    let spec = cluster.dir.path().join("job.yaml");
    std::fs::write(&spec, &spec_text).expect("spec");
    let spec = spec.display().to_string();
    let endpoint = format!("http://{address}");
    let env: HashMap<String, String> = cluster.envs();
    let verify = |what: &str, code: i32| {
        let run = ferryctl(
            &[
                "submit",
                &spec,
                "--verify-only",
                "--wait",
                "--endpoint",
                &endpoint,
                "-o",
                "json",
            ],
            &env,
        );
        expect_code(what, &run, code);
    };
    verify("verify-only job on the drifted target", DIFFERENCES);
    assert_eq!(
        pg_fingerprint(&cluster.target_url(), "orders"),
        target_before,
        "a verify-only job writes nothing to the target"
    );
    let note = psql(
        &cluster.source_url(),
        "SELECT note FROM orders WHERE id = 4321",
    );
    psql(
        &cluster.target_url(),
        &format!("UPDATE orders SET note = '{note}' WHERE id = 4321"),
    );
    verify("verify-only job once the row is fixed", 0);
}
