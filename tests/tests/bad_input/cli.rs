//! `ferryctl` misused: unknown verbs and flags, missing arguments, conflicting flags,
//! out-of-range numbers, addresses that are not addresses. Each exits with its
//! documented code and a message naming the argument; nothing is touched.

use crate::common::{
    Failures, clip, create_sqlite_source, ferryctl, run, sqlite_fingerprint, target_is_empty,
};

struct Case {
    name: &'static str,
    args: Vec<String>,
    code: i32,
    needles: Vec<&'static str>,
}

fn case(name: &'static str, args: &[&str], code: i32, needles: &[&'static str]) -> Case {
    Case {
        name,
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        code,
        needles: needles.to_vec(),
    }
}

fn cases(spec: &str, dir: &str) -> Vec<Case> {
    let state_dir = dir.to_owned();
    let missing_state_dir = format!("{dir}/no/such/folder/state.db");
    let mut list = vec![
        case("no verb", &[], 2, &["Usage: ferryctl"]),
        case(
            "unknown verb",
            &["frobnicate"],
            2,
            &["unrecognized subcommand 'frobnicate'"],
        ),
        case(
            "unknown flag",
            &["local", spec, "--wrkers", "3"],
            2,
            &["unexpected argument '--wrkers'", "--workers"],
        ),
        case("missing spec argument", &["local"], 2, &["<SPEC>"]),
        case("missing job argument", &["status"], 2, &["<JOB>"]),
        case(
            "workers zero",
            &["local", spec, "--workers", "0"],
            2,
            &["--workers", "0 is not in 1..=1024"],
        ),
        case(
            "workers not a number",
            &["local", spec, "--workers", "many"],
            2,
            &["--workers", "many"],
        ),
        case(
            "workers beyond u16",
            &["local", spec, "--workers", "70000"],
            2,
            &["--workers", "70000"],
        ),
        case(
            "conflicting flags",
            &["submit", spec, "--dry-run", "--wait"],
            2,
            &["--dry-run", "--wait", "cannot be used with"],
        ),
        case(
            "recopy without a selector",
            &["recopy", "job"],
            2,
            &["--chunk", "--table", "--state"],
        ),
        case(
            "recopy with two selectors",
            &["recopy", "job", "--table", "t", "--chunk", "1"],
            2,
            &["cannot be used with"],
        ),
        case(
            "recopy with a negative chunk id",
            &["recopy", "job", "--chunk", "-1"],
            2,
            &["--chunk"],
        ),
        case(
            "throttle concurrency zero",
            &["throttle", "job", "--max-concurrency", "0"],
            2,
            &["--max-concurrency", "0 is not in 1..=1024"],
        ),
        case(
            "throttle load max without critical",
            &["throttle", "job", "--load-max", "5"],
            2,
            &["--load-critical"],
        ),
        case(
            "throttle rate negative",
            &["throttle", "job", "--rows-per-sec", "-5"],
            2,
            &["--rows-per-sec"],
        ),
        case(
            "throttle schedule file missing",
            &["throttle", "job", "--schedule", "/nonexistent/s.yaml"],
            2,
            &["--schedule", "/nonexistent/s.yaml"],
        ),
        case(
            "throttle at without show",
            &["throttle", "job", "--at", "2026-01-01T00:00:00Z"],
            2,
            &["--show"],
        ),
        case(
            "throttle at not a time",
            &["throttle", "job", "--show", "--at", "noon"],
            2,
            &["--at", "noon"],
        ),
        case(
            "unknown output format",
            &["jobs", "-o", "yaml"],
            2,
            &["'yaml'", "table", "json"],
        ),
        case(
            "chunks with an unknown state",
            &["chunks", "job", "--state", "DONE"],
            2,
            &["'DONE'", "verified"],
        ),
        case(
            "endpoint not a URL",
            &["status", "job", "--endpoint", "not a url"],
            2,
            &["--endpoint", "not a url"],
        ),
        case(
            "endpoint with an unknown scheme",
            &["jobs", "--endpoint", "ftp://127.0.0.1:1"],
            2,
            &["--endpoint", "ftp://127.0.0.1:1", "http://"],
        ),
        case(
            "endpoint that refuses",
            &["status", "job", "--endpoint", "http://127.0.0.1:1"],
            3,
            &["127.0.0.1:1", "ferryctl local"],
        ),
        case(
            "control address not an address",
            &["local", spec, "--control-addr", "here"],
            2,
            &["--control-addr", "here", "127.0.0.1:7878"],
        ),
        case(
            "control address cannot be bound",
            &["local", spec, "--control-addr", "192.0.2.1:7878"],
            3,
            &["192.0.2.1:7878"],
        ),
        case(
            "state path is a folder",
            &["local", spec, "--state", &state_dir],
            3,
            &["state file", "--state"],
        ),
        case(
            "state path in a missing folder",
            &["local", spec, "--state", &missing_state_dir],
            3,
            &["state file", "no/such/folder"],
        ),
    ];
    list.extend([
        case(
            "verify --dry-run without --repair",
            &["verify", spec, "--dry-run"],
            2,
            &["--dry-run", "--repair"],
        ),
        case(
            "verify --recheck-after not a duration",
            &["verify", spec, "--recheck-after", "soon"],
            2,
            &["--recheck-after", "\"soon\" is not a duration", "30s"],
        ),
        case(
            "verify --leaf-rows zero",
            &["verify", spec, "--leaf-rows", "0"],
            2,
            &["--leaf-rows", "0 is not in 1..=1000000"],
        ),
        case(
            "report of a state file that does not exist",
            &["report", "cli", "--state", &missing_state_dir],
            2,
            &["state file", "does not exist", "--state"],
        ),
    ]);
    let demo_dir = format!("{dir}/demo");
    list.push(case(
        "demo with zero rows",
        &["demo", "--rows", "0", "--dir", &demo_dir],
        2,
        &["--rows", "0 is not in 1.."],
    ));
    list
}

#[test]
fn command_line_misuse_exits_with_its_code_naming_the_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source.db");
    create_sqlite_source(&source, 50);
    let before = sqlite_fingerprint(&source, "orders");
    let spec = dir.path().join("job.yaml");
    std::fs::write(
        &spec,
        "name: cli\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: sqlite, path: target.db }\n\
         tables: { include: [orders] }\n",
    )
    .expect("spec");
    let spec_text = spec.display().to_string();
    let dir_text = dir.path().display().to_string();
    let cases = cases(&spec_text, &dir_text);
    let mut failures = Failures::default();
    for case in &cases {
        let (code, stdout, stderr) = run(ferryctl().args(&case.args));
        crate::common::show(case.name, code, &format!("{stdout}{stderr}"));
        failures.check(case.name, code == case.code, || {
            format!(
                "exit {code}, expected {}; stderr: {}",
                case.code,
                clip(&stderr)
            )
        });
        let output = format!("{stdout}{stderr}");
        failures.contains(case.name, "output", &output, &case.needles);
        failures.check(
            case.name,
            target_is_empty(&dir.path().join("target.db")),
            || "rows were written to the target".into(),
        );
        failures.check(
            case.name,
            sqlite_fingerprint(&source, "orders") == before,
            || "the source changed".into(),
        );
    }
    failures.finish(cases.len());
}
