//! A damaged `ferryctl local` state file: truncated, random bytes, written by a future
//! ferry, a corrupt chunk record. Each run stops with exit 3 naming the file and how to
//! start over; the source is untouched, the target rows already copied stay; and after
//! the fix (the file moved away) the same command completes.

use std::path::Path;

use crate::common::{Failures, clip, create_sqlite_source, ferryctl, run, sqlite_fingerprint};

const SPEC: &str = "name: state\nsource: { kind: sqlite, path: source.db }\ntarget: { kind: sqlite, path: target.db }\n\
                    tables: { include: [orders] }\nchunking: { target_rows: 100 }\n";

struct Case {
    name: &'static str,
    damage: fn(&Path),
    code: i32,
    needles: &'static [&'static str],
}

fn truncate(path: &Path) {
    let bytes = std::fs::read(path).expect("read state");
    std::fs::write(path, &bytes[..bytes.len().min(1500)]).expect("truncate");
}

fn random_bytes(path: &Path) {
    let bytes: Vec<u8> = (0..16_384_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(path, bytes).expect("write");
}

fn future_version(path: &Path) {
    let connection = rusqlite::Connection::open(path).expect("open");
    connection
        .pragma_update(None, "user_version", 99)
        .expect("set version");
}

fn corrupt_chunk_range(path: &Path) {
    let connection = rusqlite::Connection::open(path).expect("open");
    connection
        .execute("UPDATE chunks SET range = x'00ff13' WHERE chunk = 1", [])
        .expect("corrupt");
}

fn corrupt_tables(path: &Path) {
    let connection = rusqlite::Connection::open(path).expect("open");
    connection
        .execute("UPDATE jobs SET tables_json = '{not json'", [])
        .expect("corrupt");
}

fn unknown_chunk_state(path: &Path) {
    let connection = rusqlite::Connection::open(path).expect("open");
    connection
        .execute("UPDATE chunks SET state = 'EXPLODED' WHERE chunk = 2", [])
        .expect("corrupt");
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "truncated state file",
            damage: truncate,
            code: 3,
            needles: &[
                "is damaged or not a ferry state file",
                "move it away",
                "--state",
            ],
        },
        Case {
            name: "random bytes",
            damage: random_bytes,
            code: 3,
            needles: &[
                "is damaged or not a ferry state file",
                "move it away",
                "--state",
            ],
        },
        Case {
            name: "written by a future ferry",
            damage: future_version,
            code: 3,
            needles: &[
                "state file",
                "format version 99",
                "this ferry reads version 1",
                "newer ferryctl",
            ],
        },
        Case {
            name: "corrupt chunk range",
            damage: corrupt_chunk_range,
            code: 3,
            needles: &["state file", "chunk 1", "corrupt", "--state"],
        },
        Case {
            name: "corrupt table list",
            damage: corrupt_tables,
            code: 3,
            needles: &["state file", "corrupt", "tables", "--state"],
        },
        Case {
            name: "unknown chunk state",
            damage: unknown_chunk_state,
            code: 3,
            needles: &["state file", "EXPLODED", "--state"],
        },
    ]
}

#[test]
fn a_damaged_state_file_is_named_and_a_fresh_one_completes_the_job() {
    let cases = cases();
    let mut failures = Failures::default();
    for case in &cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("source.db");
        let target = dir.path().join("target.db");
        create_sqlite_source(&source, 300);
        let before = sqlite_fingerprint(&source, "orders");
        let spec = dir.path().join("job.yaml");
        std::fs::write(&spec, SPEC).expect("spec");
        let state = dir.path().join("state.db");
        let local = || {
            let mut command = ferryctl();
            command
                .arg("local")
                .arg(&spec)
                .arg("--state")
                .arg(&state)
                .args(["--control-addr", "127.0.0.1:0"]);
            command
        };
        let (code, _, stderr) = run(&mut local());
        assert_eq!(code, 0, "first run: {stderr}");
        // Fold the WAL into the file, so the damage hits the data.
        rusqlite::Connection::open(&state)
            .expect("open")
            .pragma_update(None, "wal_checkpoint", "TRUNCATE")
            .expect("checkpoint");
        let target_before = sqlite_fingerprint(&target, "orders");
        (case.damage)(&state);
        let (code, stdout, stderr) = run(&mut local());
        crate::common::show(case.name, code, &stderr);
        failures.check(case.name, code == case.code, || {
            format!(
                "exit {code}, expected {}; stdout {} stderr: {}",
                case.code,
                clip(&stdout),
                clip(&stderr)
            )
        });
        failures.contains(case.name, "stderr", &stderr, case.needles);
        failures.contains(
            case.name,
            "stderr",
            &stderr,
            &[&state.display().to_string()],
        );
        failures.check(case.name, !stderr.contains("panicked"), || {
            format!("panic: {stderr}")
        });
        failures.check(
            case.name,
            sqlite_fingerprint(&source, "orders") == before,
            || "the source changed".into(),
        );
        failures.check(
            case.name,
            sqlite_fingerprint(&target, "orders") == target_before,
            || "the target changed".into(),
        );
        // The fix the message names: move the file away and run again.
        for suffix in ["", "-wal", "-shm"] {
            let path = format!("{}{suffix}", state.display());
            let _ = std::fs::rename(&path, format!("{path}.damaged"));
        }
        let (code, _, stderr) = run(&mut local());
        failures.check(case.name, code == 0, || {
            format!("the run on a fresh state file exits {code}: {stderr}")
        });
        failures.check(
            case.name,
            sqlite_fingerprint(&target, "orders") == before,
            || "the target does not hold the source's rows".into(),
        );
    }
    failures.finish(cases.len());
}
