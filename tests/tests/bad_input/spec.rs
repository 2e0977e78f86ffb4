//! Malformed and hostile job specs, given to `ferryctl local` (and `validate`): each
//! exits 2 naming the field and the fix, before any database is written; the source is
//! untouched, no target is created, and the fixed spec then runs to the end on the same
//! state file.

use crate::common::{
    Failures, create_sqlite_source, ferryctl, run, sqlite_fingerprint, target_is_empty,
};

const GOOD: &str = "name: spec\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: sqlite, path: target.db }\n\
                    tables: { include: [orders] }\nchunking: { target_rows: 100 }\n";

/// A spec's bytes: most are text, a few are not.
enum Body {
    Text(String),
    Bytes(Vec<u8>),
}

struct Case {
    name: &'static str,
    body: Body,
    code: i32,
    needles: Vec<&'static str>,
}

fn text(name: &'static str, body: impl Into<String>, needles: &[&'static str]) -> Case {
    Case {
        name,
        body: Body::Text(body.into()),
        code: 2,
        needles: needles.to_vec(),
    }
}

/// The good spec with one line replaced (`from` must occur in it).
fn edited(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} is not in the good spec");
    GOOD.replacen(from, to, 1)
}

fn cases() -> Vec<Case> {
    let deep_nesting = format!(
        "name: spec\nextra: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_mapping = format!(
        "{GOOD}throttle: {}1{}\n",
        "{a: ".repeat(5_000),
        "}".repeat(5_000)
    );
    let ten_megabytes = format!("{GOOD}# {}\n", "x".repeat(10 * 1024 * 1024));
    let billion_laughs = {
        let mut yaml = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut previous = "a";
        for name in names {
            yaml.push_str(&format!(
                "{name}: &{name} [*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous}]\n"
            ));
            previous = name;
        }
        format!("{GOOD}{yaml}")
    };
    let mut garbage = vec![0xff_u8, 0xfe, 0x00, 0x9c];
    garbage.extend((0..4096_u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    vec![
        text(
            "empty file",
            "",
            &["the spec is empty", "name", "source", "target", "tables"],
        ),
        text("only a comment", "# nothing here\n", &["the spec is empty"]),
        Case {
            name: "binary garbage",
            body: Body::Bytes(garbage),
            code: 2,
            needles: vec!["is not UTF-8 text", "offset 0", "a YAML text file"],
        },
        text(
            "a YAML list instead of a mapping",
            "- name: spec\n",
            &["a job spec must be a YAML mapping"],
        ),
        text(
            "YAML syntax error",
            "name: spec\nsource: { kind: sqlite\n",
            &["line 2"],
        ),
        text(
            "tab indentation",
            "name: spec\nsource:\n\tkind: sqlite\n",
            &["line 3", "tab"],
        ),
        text(
            "deeply nested list",
            deep_nesting,
            &["nested too deeply", "recursion limit"],
        ),
        text(
            "deeply nested mapping",
            deep_mapping,
            &["nested too deeply", "recursion limit"],
        ),
        text(
            "10 MB spec",
            ten_megabytes,
            &["is 10485", "bytes", "at most 1048576 bytes"],
        ),
        text(
            "billion laughs (alias expansion)",
            billion_laughs,
            &["repetition limit"],
        ),
        text(
            "duplicate key",
            format!("{GOOD}tables: {{ include: [orders] }}\n"),
            &["duplicate entry with key \"tables\""],
        ),
        text(
            "unknown top-level field",
            format!("{GOOD}chunk_size: 5\n"),
            &["chunk_size", "unknown field", "chunking"],
        ),
        text(
            "unknown nested field",
            edited("target_rows: 100", "target_row: 100"),
            &["chunking.target_row", "unknown field", "target_rows"],
        ),
        text(
            "missing name",
            GOOD.replacen("name: spec\n", "", 1),
            &["name", "missing"],
        ),
        text(
            "name of the wrong type",
            edited("name: spec", "name: [a, b]"),
            &["name", "string"],
        ),
        text(
            "name with a slash",
            edited("name: spec", "name: a/b"),
            &["name", "a/b"],
        ),
        text(
            "name too long",
            edited("name: spec", &format!("name: {}", "n".repeat(100_000))),
            &["name", "characters"],
        ),
        text(
            "name with a NUL",
            edited("name: spec", "name: \"a\\0b\""),
            &["name"],
        ),
        text(
            "unknown source kind",
            edited(
                "kind: sqlite, path: source.db",
                "kind: oracle, path: source.db",
            ),
            &["source.kind", "oracle", "sqlite", "postgres", "mysql"],
        ),
        text(
            "endpoint without a location",
            edited("kind: sqlite, path: target.db", "kind: sqlite"),
            &["target", "path", "url_env"],
        ),
        text(
            "url_env not set",
            edited(
                "kind: sqlite, path: target.db",
                "kind: postgres, url_env: FERRY_BAD_INPUT_UNSET",
            ),
            &["target.url_env", "FERRY_BAD_INPUT_UNSET", "not set"],
        ),
        text(
            "source and target the same file",
            edited("path: target.db", "path: source.db"),
            &["source", "target", "same"],
        ),
        text(
            "tables not a mapping",
            edited("tables: { include: [orders] }", "tables: orders"),
            &["tables", "mapping"],
        ),
        text(
            "include empty",
            edited("include: [orders]", "include: []"),
            &["tables.include"],
        ),
        text(
            "bad glob",
            edited("include: [orders]", "include: [\"ord[\"]"),
            &["tables.include[0]", "ord["],
        ),
        text(
            "glob of the wrong type",
            edited("include: [orders]", "include: [{ a: 1 }]"),
            &["tables.include[0]"],
        ),
        text(
            "pattern selects no table",
            edited("include: [orders]", "include: [\"zz*\"]"),
            &["select no table", "orders"],
        ),
        text(
            "target_rows a word",
            edited("target_rows: 100", "target_rows: lots"),
            &["chunking.target_rows", "lots"],
        ),
        text(
            "target_rows zero",
            edited("target_rows: 100", "target_rows: 0"),
            &["chunking.target_rows"],
        ),
        text(
            "target_rows negative",
            edited("target_rows: 100", "target_rows: -5"),
            &["chunking.target_rows: must be at least 1"],
        ),
        text(
            "target_rows beyond u64",
            edited(
                "target_rows: 100",
                "target_rows: 99999999999999999999999999",
            ),
            &["chunking.target_rows"],
        ),
        text(
            "target_rows u64::MAX",
            edited("target_rows: 100", "target_rows: 18446744073709551615"),
            &["chunking.target_rows", "at most"],
        ),
        text(
            "target_rows a float",
            edited("target_rows: 100", "target_rows: 1.5"),
            &["chunking.target_rows", "1.5"],
        ),
        text(
            "target_rows .inf",
            edited("target_rows: 100", "target_rows: .inf"),
            &["chunking.target_rows"],
        ),
        text(
            "max_attempts huge",
            format!("{GOOD}verify: {{ max_attempts: 4294967296 }}\n"),
            &["verify.max_attempts"],
        ),
        text(
            "verify mode unknown",
            format!("{GOOD}verify: {{ mode: maybe }}\n"),
            &["verify.mode", "maybe", "checksum"],
        ),
        text(
            "schema mode unknown",
            format!("{GOOD}schema: drop_everything\n"),
            &["schema", "drop_everything", "create_if_missing"],
        ),
        text(
            "negative duration",
            format!("{GOOD}resilience: {{ outage_timeout: -5s }}\n"),
            &["resilience.outage_timeout", "-5s"],
        ),
        text(
            "duration without a unit",
            format!("{GOOD}resilience: {{ outage_timeout: 300 }}\n"),
            &["resilience.outage_timeout"],
        ),
        text(
            "absurd duration",
            format!("{GOOD}resilience: {{ outage_timeout: 99999999999999999999h }}\n"),
            &["resilience.outage_timeout"],
        ),
        text(
            "concurrency zero",
            format!("{GOOD}throttle: {{ default_concurrency: 0 }}\n"),
            &["throttle.default_concurrency"],
        ),
        text(
            "concurrency huge",
            format!("{GOOD}throttle: {{ default_concurrency: 4294967296 }}\n"),
            &["throttle.default_concurrency"],
        ),
        text(
            "rate negative",
            format!("{GOOD}throttle: {{ rate: {{ rows_per_sec: -1 }} }}\n"),
            &["throttle.rate.rows_per_sec"],
        ),
        text(
            "unknown time zone",
            format!("{GOOD}throttle: {{ timezone: Mars/Olympus }}\n"),
            &["throttle.timezone", "Mars/Olympus"],
        ),
        text(
            "schedule hour 25",
            format!(
                "{GOOD}throttle: {{ schedule: [ {{ days: mon-fri, from: \"25:00\", to: \"26:00\", max_concurrency: 2 }} ] }}\n"
            ),
            &["throttle.schedule[0].from", "25:00"],
        ),
        text(
            "load critical below max",
            format!("{GOOD}throttle: {{ load: {{ probe: builtin, max: 50, critical: 10 }} }}\n"),
            &["throttle.load"],
        ),
        text(
            "column override for no column",
            format!("{GOOD}columns: {{ \"orders.nope\": \"TEXT\" }}\n"),
            &[
                "columns.\"orders.nope\"",
                "no selected table has this column",
            ],
        ),
        text(
            "split into one bucket",
            edited(
                "tables: { include: [orders] }",
                "tables: { include: [orders], split: { orders: { column: id, buckets: 1 } } }",
            ),
            &["tables.split.orders.buckets", "must be at least 2"],
        ),
        text(
            "split naming no table",
            edited(
                "tables: { include: [orders] }",
                "tables: { include: [orders], split: { nope: { column: id, buckets: 4 } } }",
            ),
            &["tables.split.nope", "no selected table has this name"],
        ),
        text(
            "split of a keyed table",
            edited(
                "tables: { include: [orders] }",
                "tables: { include: [orders], split: { orders: { column: id, buckets: 4 } } }",
            ),
            &[
                "tables.split.orders",
                "has a primary key",
                "remove the entry",
            ],
        ),
    ]
}

#[test]
fn malformed_and_hostile_specs_exit_2_naming_the_field_and_leave_everything_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.db");
    let target = dir.path().join("target.db");
    create_sqlite_source(&source, 500);
    let before = sqlite_fingerprint(&source, "orders");
    let spec_path = dir.path().join("job.yaml");
    let state = dir.path().join("state.db");
    let cases = cases();
    let mut failures = Failures::default();
    for case in &cases {
        match &case.body {
            Body::Text(text) => std::fs::write(&spec_path, text),
            Body::Bytes(bytes) => std::fs::write(&spec_path, bytes),
        }
        .expect("write spec");
        let (code, stdout, stderr) = run(ferryctl()
            .arg("local")
            .arg(&spec_path)
            .arg("--state")
            .arg(&state)
            .args(["--control-addr", "127.0.0.1:0"])
            .env_remove("FERRY_BAD_INPUT_UNSET"));
        crate::common::show(case.name, code, &stderr);
        failures.check(case.name, code == case.code, || {
            format!(
                "exit {code}, expected {}; stderr: {}",
                case.code,
                crate::common::clip(&stderr)
            )
        });
        failures.check(case.name, stdout.is_empty(), || {
            format!("stdout not empty: {stdout}")
        });
        failures.contains(case.name, "stderr", &stderr, &case.needles);
        failures.check(case.name, stderr.len() < 4096, || {
            format!(
                "the message is {} bytes long: the input was echoed",
                stderr.len()
            )
        });
        failures.check(case.name, target_is_empty(&target), || {
            "rows were written to the target".into()
        });
        failures.check(
            case.name,
            sqlite_fingerprint(&source, "orders") == before,
            || "the source changed".into(),
        );
        if case.code == 2 && matches!(case.body, Body::Text(_)) {
            // `validate` finds the same problems without running anything.
            let (validate_code, _, validate_stderr) = run(ferryctl()
                .arg("validate")
                .arg(&spec_path)
                .env_remove("FERRY_BAD_INPUT_UNSET"));
            let planning_only = case.name == "pattern selects no table"
                || case.name == "column override for no column"
                || case.name == "split naming no table"
                || case.name == "split of a keyed table";
            if !planning_only {
                failures.check(case.name, validate_code == 2, || {
                    format!(
                        "validate exits {validate_code}: {}",
                        crate::common::clip(&validate_stderr)
                    )
                });
            }
        }
    }
    // The fixed spec runs on the same state file, to the end.
    std::fs::write(&spec_path, GOOD).expect("write spec");
    let (code, _, stderr) = run(ferryctl()
        .arg("local")
        .arg(&spec_path)
        .arg("--state")
        .arg(&state)
        .args(["--control-addr", "127.0.0.1:0"]));
    failures.check("fixed spec", code == 0, || format!("exit {code}: {stderr}"));
    failures.check(
        "fixed spec",
        sqlite_fingerprint(&target, "orders") == before,
        || "the target does not hold the source's rows".into(),
    );
    failures.check(
        "fixed spec",
        sqlite_fingerprint(&source, "orders") == before,
        || "the source changed".into(),
    );
    failures.finish(cases.len());
}

/// A spec that cannot be read at all.
#[test]
fn a_spec_that_is_missing_or_a_folder_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Failures::default();
    let missing = dir.path().join("nope.yaml");
    let (code, _, stderr) = run(ferryctl().arg("validate").arg(&missing));
    failures.check("missing spec file", code == 2, || format!("exit {code}"));
    failures.contains(
        "missing spec file",
        "stderr",
        &stderr,
        &["nope.yaml", "No such file"],
    );
    let (code, _, stderr) = run(ferryctl().arg("local").arg(dir.path()));
    failures.check("spec path is a folder", code == 2, || {
        format!("exit {code}")
    });
    failures.contains(
        "spec path is a folder",
        "stderr",
        &stderr,
        &[&dir.path().display().to_string(), "Is a directory"],
    );
    failures.finish(2);
}
