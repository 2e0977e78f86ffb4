//! What every area of the catalogue shares: the binaries, a SQLite source with a
//! fingerprint (count + checksum) to prove it untouched, and a collector that reports
//! every failing case of a table at once.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A binary of the workspace, next to this test's executable (`make test` builds them).
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

/// `ferryctl`, without the caller's `RUST_LOG`.
pub fn ferryctl() -> Command {
    let mut command = Command::new(binary("ferryctl"));
    command.env_remove("RUST_LOG");
    command.env_remove("FERRY_ENDPOINT");
    command
}

/// Runs a command to its end: exit code (-1 when killed), stdout, stderr.
pub fn run(command: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run the command");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Creates `orders (id INTEGER PRIMARY KEY, v TEXT)` with `rows` rows in a SQLite file.
pub fn create_sqlite_source(path: &Path, rows: i64) {
    let mut connection = rusqlite::Connection::open(path).expect("source");
    connection
        .execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, v TEXT);")
        .expect("create");
    let transaction = connection.transaction().expect("tx");
    {
        let mut insert = transaction
            .prepare("INSERT INTO orders VALUES (?1, ?2)")
            .expect("prepare");
        for id in 1..=rows {
            insert
                .execute(rusqlite::params![id, format!("row {id}")])
                .expect("insert");
        }
    }
    transaction.commit().expect("commit");
}

/// A table's row count and a checksum over every row in key order, read with rusqlite
/// (not through ferry). `None` when the file or the table does not exist.
pub fn sqlite_fingerprint(path: &Path, table: &str) -> Option<(i64, u64)> {
    if !path.exists() {
        return None;
    }
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    let mut statement = connection
        .prepare(&format!(
            "SELECT quote(id) || ',' || quote(v) FROM \"{table}\" ORDER BY id"
        ))
        .ok()?;
    let rows = statement
        .query_map([], |row| row.get::<_, String>(0))
        .ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut count = 0;
    for row in rows {
        row.ok()?.hash(&mut hasher);
        count += 1;
    }
    Some((count, hasher.finish()))
}

/// Whether a SQLite target holds no `orders` row (absent, or created but empty: a run
/// refused before copying may have opened it).
pub fn target_is_empty(path: &Path) -> bool {
    sqlite_fingerprint(path, "orders").is_none_or(|(rows, _)| rows == 0)
}

/// Prints a case's outcome on one line (`cargo test -- --nocapture` shows the whole
/// catalogue, as docs/errors.md lists it).
pub fn show(case: &str, code: impl std::fmt::Display, message: &str) {
    let one_line: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let clipped: String = one_line.chars().take(600).collect();
    println!("CATALOGUE|{case}|{code}|{clipped}");
}

/// Collects the failures of a table of cases; [`Failures::finish`] panics listing all.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    /// Records a failure of `case` unless `ok`.
    pub fn check(&mut self, case: &str, ok: bool, detail: impl FnOnce() -> String) {
        if !ok {
            self.0.push(format!("[{case}] {}", detail()));
        }
    }

    /// Records a failure of `case` unless `haystack` contains every needle.
    pub fn contains(&mut self, case: &str, what: &str, haystack: &str, needles: &[&str]) {
        for needle in needles {
            if !haystack.contains(needle) {
                self.0.push(format!(
                    "[{case}] {needle:?} missing from {what}: {}",
                    clip(haystack)
                ));
            }
        }
    }

    /// Panics listing every failure, if any.
    pub fn finish(self, cases: usize) {
        println!("CASES|{cases}");
        assert!(
            self.0.is_empty(),
            "{} of {cases} cases failed:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// The start of a long text (messages must never echo a 100 kB input back).
pub fn clip(text: &str) -> String {
    if text.len() <= 2000 {
        return text.to_owned();
    }
    let mut end = 2000;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}
