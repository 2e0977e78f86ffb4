//! Helpers shared by the spec's unit tests: a context, a valid spec to vary, and
//! shorthands for the problems a spec is refused with.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::collections::HashMap;
use std::path::Path;

use super::{JobSpec, SpecContext};
use crate::problems::Problems;

pub(super) const SOURCE_SECRET: &str = "postgres://alice:hunter2@db.internal/src";

pub(super) fn test_env() -> HashMap<String, String> {
    HashMap::from([
        ("SRC_URL".to_owned(), SOURCE_SECRET.to_owned()),
        (
            "TARGET_DB".to_owned(),
            "/var/lib/ferry/target.db".to_owned(),
        ),
        ("EMPTY_URL".to_owned(), String::new()),
    ])
}

pub(super) fn parse_with_env(
    yaml: &str,
    env: &HashMap<String, String>,
) -> Result<JobSpec, Problems> {
    let context = SpecContext {
        base_dir: Path::new("/jobs"),
        env,
        known_kinds: &["sqlite"],
    };
    JobSpec::parse(yaml, &context)
}

pub(super) fn parse(yaml: &str) -> Result<JobSpec, Problems> {
    parse_with_env(yaml, &test_env())
}

pub(super) fn errors_of(yaml: &str) -> Vec<(String, String)> {
    match parse(yaml) {
        Ok(spec) => panic!("expected errors, got {spec:?}"),
        Err(problems) => problems
            .into_iter()
            .map(|error| (error.path, error.message))
            .collect(),
    }
}

pub(super) fn paths_of(yaml: &str) -> Vec<String> {
    errors_of(yaml).into_iter().map(|(path, _)| path).collect()
}

/// A valid spec with `replacement` substituted for the first line starting with
/// `key_line`, or appended when `key_line` is empty.
pub(super) fn spec_with(key_line: &str, replacement: &str) -> String {
    let base = "\
name: nightly
source:
  kind: sqlite
  path: src.db
target:
  kind: sqlite
  path: dst.db
tables:
  include: [orders]
";
    if key_line.is_empty() {
        return format!("{base}{replacement}");
    }
    let mut found = false;
    let lines: Vec<String> = base
        .lines()
        .map(|line| {
            if !found && line.starts_with(key_line) {
                found = true;
                replacement.to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(found, "no line starts with {key_line:?}");
    format!("{}\n", lines.join("\n"))
}

pub(super) fn single_error(yaml: &str) -> (String, String) {
    let errors = errors_of(yaml);
    assert_eq!(errors.len(), 1, "expected exactly one error: {errors:?}");
    errors.into_iter().next().unwrap()
}
