//! [`JobSpec::parse`]: the YAML document walked by hand, section by section. The
//! `source:`/`target:` and `throttle:` sections have their own modules; this one holds the
//! document and the small sections (`name`, `tables`, `schema`, `chunking`, `verify`,
//! `columns`).

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::endpoints::{check_distinct_databases, read_endpoint};
use super::fields::{
    describe, item_path, read_bool, read_choice, read_duration_ms, read_mapping,
    read_positive_integer, read_positive_u32, read_string,
};
use super::model::{
    ChunkingSpec, ColumnOverrides, Consistency, DEFAULT_OUTAGE_TIMEOUT_MS,
    DEFAULT_WATERMARK_LAG_MS, HashSplitSpec, JobMode, JobSpec, MAX_SPLIT_BUCKETS, OnMismatch,
    ResilienceSpec, SchemaMode, SyncPassSpec, TableSelection, VerifyMode, VerifySpec,
    WatermarkSpec,
};
use super::throttle::read_throttle;
use super::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, DEFAULT_TARGET_ROWS, MAX_JOB_NAME_CHARS,
    MAX_MAX_ATTEMPTS, MAX_PRIORITY, MAX_SPEC_BYTES, MAX_TARGET_ROWS, SpecContext,
};
use crate::glob::GlobPattern;
use crate::problems::Problems;
use crate::throttle::ThrottlePolicy;

const TOP_LEVEL_FIELDS: &[&str] = &[
    "name",
    "source",
    "target",
    "tables",
    "schema",
    "chunking",
    "verify",
    "resilience",
    "throttle",
    "columns",
    "mode",
    "sync",
    "watermark",
    "priority",
    "consistency",
];
const WATERMARK_FIELDS: &[&str] = &["column", "lag"];
const SYNC_FIELDS: &[&str] = &["since"];
const TOP_LEVEL_UNSUPPORTED: &[(&str, &str)] = &[];
const TABLES_FIELDS: &[&str] = &["include", "exclude", "split"];
const SPLIT_FIELDS: &[&str] = &["column", "buckets"];
const CHUNKING_FIELDS: &[&str] = &["target_rows", "split_idle", "defer_key"];
const VERIFY_FIELDS: &[&str] = &["mode", "on_mismatch", "max_attempts"];
const RESILIENCE_FIELDS: &[&str] = &["outage_timeout"];

impl JobSpec {
    /// Parses and validates a YAML job spec. On failure returns every problem found, each
    /// at its field path; a YAML syntax error is reported alone, with an empty path.
    pub fn parse(text: &str, context: &SpecContext<'_>) -> Result<JobSpec, Problems> {
        if text.len() > MAX_SPEC_BYTES {
            return Err(Problems::single(
                "",
                format!(
                    "the spec is {} bytes; ferry reads specs of at most {MAX_SPEC_BYTES} bytes \
                     (name tables by patterns in tables.include): is this the right file?",
                    text.len()
                ),
            ));
        }
        let root = serde_yaml_ng::from_str::<Value>(text)
            .map_err(|yaml_error| Problems::single("", describe_yaml_error(text, &yaml_error)))?;
        if root.is_null() {
            return Err(Problems::single(
                "",
                "the spec is empty: a job spec is a YAML mapping with at least name, source, \
                 target and tables (see `ferryctl validate` and the README's spec reference)",
            ));
        }
        let mut problems = Problems::new();
        let spec_opt = read_job_spec(&root, context, &mut problems);
        match spec_opt {
            Some(spec) if problems.is_empty() => Ok(spec),
            _ => {
                debug_assert!(
                    !problems.is_empty(),
                    "every rejected field reports a problem"
                );
                if problems.is_empty() {
                    problems.push("", "internal error: the spec was rejected without a reason");
                }
                Err(problems)
            }
        }
    }
}

/// A YAML error in words a spec author can act on: the parser's message, plus what it
/// means for the two cases it words badly (a tab used for indentation, nesting deeper
/// than the parser allows).
pub(crate) fn describe_yaml_error(text: &str, yaml_error: &serde_yaml_ng::Error) -> String {
    let message = yaml_error.to_string();
    if message.contains("recursion limit exceeded") {
        return format!(
            "the YAML is nested too deeply ({message}): a job spec is a few levels deep; \
             is this the right file?"
        );
    }
    if message.contains("as u128") || message.contains("as i128") {
        return format!(
            "a number is too large ({message}): ferry's numbers go up to \
             18446744073709551615, and every field has its own, smaller limit"
        );
    }
    let tab_at_error = yaml_error.location().is_some_and(|location| {
        text.lines()
            .nth(location.line().saturating_sub(1))
            .and_then(|line| line.chars().nth(location.column().saturating_sub(1)))
            == Some('\t')
    });
    if tab_at_error {
        return format!("{message} (a tab: YAML indents with spaces only)");
    }
    message
}

/// A user's text for a message, quoted: whole when short, else its start and its length
/// (a 100 kB value is never echoed back).
pub fn clipped(text: &str) -> String {
    const SHOWN: usize = 40;
    if text.chars().count() <= SHOWN {
        return format!("{text:?}");
    }
    let start: String = text.chars().take(SHOWN).collect();
    format!("{start:?}… ({} characters)", text.chars().count())
}

fn read_job_spec(
    root: &Value,
    context: &SpecContext<'_>,
    problems: &mut Problems,
) -> Option<JobSpec> {
    if !root.is_mapping() {
        problems.push("", "a job spec must be a YAML mapping");
        return None;
    }
    let fields = read_mapping(root, "", TOP_LEVEL_FIELDS, TOP_LEVEL_UNSUPPORTED, problems)?;

    let name_opt = fields
        .required("name", problems)
        .and_then(|value| read_job_name(value, &fields.path_of("name"), problems));
    let source_opt = fields
        .required("source", problems)
        .and_then(|value| read_endpoint(value, &fields.path_of("source"), context, problems));
    let target_opt = fields
        .required("target", problems)
        .and_then(|value| read_endpoint(value, &fields.path_of("target"), context, problems));
    let tables_opt = fields
        .required("tables", problems)
        .and_then(|value| read_tables(value, &fields.path_of("tables"), problems));
    let schema_opt = match fields.optional("schema") {
        Some(value) => read_schema_mode(value, &fields.path_of("schema"), problems),
        None => Some(SchemaMode::default()),
    };
    let chunking_opt = match fields.optional("chunking") {
        Some(value) => read_chunking(value, &fields.path_of("chunking"), problems),
        None => Some(ChunkingSpec::default()),
    };
    let verify_opt = match fields.optional("verify") {
        Some(value) => read_verify(value, &fields.path_of("verify"), problems),
        None => Some(VerifySpec::default()),
    };
    let resilience_opt = match fields.optional("resilience") {
        Some(value) => read_resilience(value, &fields.path_of("resilience"), problems),
        None => Some(ResilienceSpec::default()),
    };
    let throttle_opt = match fields.optional("throttle") {
        Some(value) => read_throttle(value, &fields.path_of("throttle"), problems),
        None => Some(ThrottlePolicy::default()),
    };
    // The job's weight among the cluster's jobs: kept in its throttle policy, where an
    // operator changes it at runtime like the other limits.
    let priority_opt = match fields.optional("priority") {
        Some(value) => {
            read_positive_u32(value, &fields.path_of("priority"), MAX_PRIORITY, problems)
        }
        None => Some(DEFAULT_PRIORITY),
    };

    let columns_opt = match fields.optional("columns") {
        Some(value) => read_column_overrides(value, &fields.path_of("columns"), problems),
        None => Some(ColumnOverrides::default()),
    };
    let mode_opt = match fields.optional("mode") {
        Some(value) => read_job_mode(value, &fields.path_of("mode"), problems),
        None => Some(JobMode::default()),
    };
    let sync_opt = match fields.optional("sync") {
        Some(value) => read_sync_pass(value, &fields.path_of("sync"), problems),
        None => Some(SyncPassSpec::default()),
    };
    let watermark_opt = match fields.optional("watermark") {
        Some(value) => read_watermark(value, &fields.path_of("watermark"), problems).map(Some),
        None => Some(None),
    };
    let consistency_opt = match fields.optional("consistency") {
        Some(value) => read_consistency(
            value,
            &fields.path_of("consistency"),
            source_opt.as_ref(),
            problems,
        ),
        None => Some(Consistency::default()),
    };
    if let (Some(source), Some(target)) = (&source_opt, &target_opt) {
        check_distinct_databases(source, target, problems);
    }

    Some(JobSpec {
        name: name_opt?,
        source: source_opt?,
        target: target_opt?,
        tables: tables_opt?,
        schema: schema_opt?,
        chunking: chunking_opt?,
        verify: verify_opt?,
        resilience: resilience_opt?,
        throttle: ThrottlePolicy {
            priority: priority_opt?,
            ..throttle_opt?
        },
        columns: columns_opt?,
        mode: mode_opt?,
        sync: sync_opt?,
        watermark: watermark_opt?,
        consistency: consistency_opt?,
    })
}

/// The connector kind whose sources can export a snapshot for `consistency: job_snapshot`.
const SNAPSHOT_SOURCE_KIND: &str = "postgres";

fn read_consistency(
    value: &Value,
    path: &str,
    source_opt: Option<&super::endpoints::EndpointSpec>,
    problems: &mut Problems,
) -> Option<Consistency> {
    let choices =
        [Consistency::Chunk, Consistency::JobSnapshot].map(|choice| (choice.as_str(), choice));
    let consistency = read_choice(value, path, &choices, problems)?;
    if consistency == Consistency::JobSnapshot
        && let Some(source) = source_opt
        && source.kind != SNAPSHOT_SOURCE_KIND
    {
        problems.push(
            path,
            format!(
                "job_snapshot needs a PostgreSQL source (one snapshot exported with \
                 pg_export_snapshot() and imported by every chunk read), but source.kind is \
                 {}; use consistency: chunk (each chunk read in a snapshot of its own), or \
                 stop the writers while the job runs",
                source.kind
            ),
        );
        return None;
    }
    Some(consistency)
}

fn read_watermark(value: &Value, path: &str, problems: &mut Problems) -> Option<WatermarkSpec> {
    let fields = read_mapping(value, path, WATERMARK_FIELDS, &[], problems)?;
    let column_opt = fields.required("column", problems).and_then(|column| {
        let column_path = fields.path_of("column");
        let name = read_string(column, &column_path, problems)?;
        if name.trim().is_empty() {
            problems.push(
                &column_path,
                "must name the timestamp column every insert and update sets, e.g. updated_at",
            );
            return None;
        }
        Some(name.to_owned())
    });
    let lag_ms_opt = match fields.optional("lag") {
        Some(lag) => read_duration_ms(lag, &fields.path_of("lag"), problems),
        None => Some(DEFAULT_WATERMARK_LAG_MS),
    };
    Some(WatermarkSpec {
        column: column_opt?,
        lag_ms: lag_ms_opt?,
    })
}

/// `sync: { since: { TABLE: MICROS } }`, written by `ferryctl sync` for each pass.
fn read_sync_pass(value: &Value, path: &str, problems: &mut Problems) -> Option<SyncPassSpec> {
    let fields = read_mapping(value, path, SYNC_FIELDS, &[], problems)?;
    let Some(since) = fields.optional("since") else {
        return Some(SyncPassSpec::default());
    };
    let since_path = fields.path_of("since");
    let Some(mapping) = since.as_mapping() else {
        problems.push(
            &since_path,
            format!(
                "expected a mapping of table to microseconds since 1970-01-01 UTC, found {}",
                describe(since)
            ),
        );
        return None;
    };
    let mut marks = std::collections::BTreeMap::new();
    let mut ok = true;
    for (table, micros) in mapping {
        let (Some(table), Some(micros)) = (table.as_str(), micros.as_i64()) else {
            problems.push(
                &since_path,
                format!(
                    "expected a table name and an integer (microseconds since 1970-01-01 \
                     UTC), found {} and {}",
                    describe(table),
                    describe(micros)
                ),
            );
            ok = false;
            continue;
        };
        marks.insert(table.to_owned(), micros);
    }
    ok.then_some(SyncPassSpec { since: marks })
}

fn read_job_mode(value: &Value, path: &str, problems: &mut Problems) -> Option<JobMode> {
    let choices = [JobMode::Copy, JobMode::Verify, JobMode::Sync].map(|mode| (mode.as_str(), mode));
    read_choice(value, path, &choices, problems)
}

fn read_column_overrides(
    value: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<ColumnOverrides> {
    if value.is_null() {
        return Some(ColumnOverrides::default());
    }
    let Some(mapping) = value.as_mapping() else {
        problems.push(
            path,
            format!(
                "expected a mapping of \"table.column\" to a target type, found {}",
                describe(value)
            ),
        );
        return None;
    };
    let mut overrides = std::collections::BTreeMap::new();
    let mut ok = true;
    for (key, target_type) in mapping {
        let Some(column) = key.as_str() else {
            problems.push(
                path,
                format!(
                    "keys must be strings like \"orders.amount\", found {}",
                    describe(key)
                ),
            );
            ok = false;
            continue;
        };
        let entry_path = format!("{path}.{column:?}");
        if !column.contains('.') || column.starts_with('.') || column.ends_with('.') {
            problems.push(
                &entry_path,
                "name a column as \"table.column\" or \"schema.table.column\"",
            );
            ok = false;
            continue;
        }
        match target_type.as_str() {
            Some(text) if !text.trim().is_empty() => {
                overrides.insert(column.to_string(), text.trim().to_string());
            }
            _ => {
                problems.push(
                    &entry_path,
                    format!(
                        "expected the target type as a string like \"DECIMAL(20,4)\", found {}",
                        describe(target_type)
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(ColumnOverrides(overrides))
}

fn is_valid_job_name(name: &str) -> bool {
    let starts_alphanumeric = name
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric());
    let allowed_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    starts_alphanumeric && allowed_chars && name.chars().count() <= MAX_JOB_NAME_CHARS
}

fn read_job_name(value: &Value, path: &str, problems: &mut Problems) -> Option<String> {
    let name = read_string(value, path, problems)?;
    if !is_valid_job_name(name) {
        problems.push(
            path,
            format!(
                "{} is not a valid job name; use 1 to {MAX_JOB_NAME_CHARS} characters \
                 among A-Z a-z 0-9 . _ -, starting with a letter or digit",
                clipped(name)
            ),
        );
        return None;
    }
    Some(name.to_owned())
}

fn read_tables(value: &Value, path: &str, problems: &mut Problems) -> Option<TableSelection> {
    let fields = read_mapping(value, path, TABLES_FIELDS, &[], problems)?;
    let include_opt = fields
        .required("include", problems)
        .and_then(|include| read_patterns(include, &fields.path_of("include"), true, problems));
    let exclude_opt = match fields.optional("exclude") {
        Some(exclude) => read_patterns(exclude, &fields.path_of("exclude"), false, problems),
        None => Some(Vec::new()),
    };
    let split_opt = match fields.optional("split") {
        Some(split) => read_split(split, &fields.path_of("split"), problems),
        None => Some(BTreeMap::new()),
    };
    Some(TableSelection {
        include: include_opt?,
        exclude: exclude_opt?,
        split: split_opt?,
    })
}

/// Reads `tables.split`: table name → `{ column, buckets }`, every problem reported.
fn read_split(
    value: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<BTreeMap<String, HashSplitSpec>> {
    let Value::Mapping(entries) = value else {
        problems.push(
            path,
            format!(
                "expected a mapping of table name to {{ column, buckets }}, found {}",
                describe(value)
            ),
        );
        return None;
    };
    let mut split = BTreeMap::new();
    let mut all_valid = true;
    for (table, entry) in entries {
        let Value::String(table) = table else {
            problems.push(
                path,
                format!("table names must be strings, found {}", describe(table)),
            );
            all_valid = false;
            continue;
        };
        let entry_path = format!("{path}.{table}");
        let Some(fields) = read_mapping(entry, &entry_path, SPLIT_FIELDS, &[], problems) else {
            all_valid = false;
            continue;
        };
        let column_opt = fields
            .required("column", problems)
            .and_then(|column| read_string(column, &fields.path_of("column"), problems));
        let buckets_opt = fields.required("buckets", problems).and_then(|buckets| {
            read_positive_u32(
                buckets,
                &fields.path_of("buckets"),
                MAX_SPLIT_BUCKETS,
                problems,
            )
        });
        if buckets_opt == Some(1) {
            problems.push(
                &fields.path_of("buckets"),
                "must be at least 2 (one bucket is the whole table, as without tables.split)",
            );
            all_valid = false;
            continue;
        }
        match (column_opt, buckets_opt) {
            (Some(column), Some(buckets)) => {
                split.insert(
                    table.clone(),
                    HashSplitSpec {
                        column: column.to_owned(),
                        buckets,
                    },
                );
            }
            _ => all_valid = false,
        }
    }
    all_valid.then_some(split)
}

/// Reads a list of glob patterns, reporting every invalid item.
fn read_patterns(
    value: &Value,
    path: &str,
    require_non_empty: bool,
    problems: &mut Problems,
) -> Option<Vec<GlobPattern>> {
    let Value::Sequence(items) = value else {
        problems.push(
            path,
            format!(
                "expected a list of table patterns, found {}",
                describe(value)
            ),
        );
        return None;
    };
    if require_non_empty && items.is_empty() {
        problems.push(path, "must list at least one table pattern");
        return None;
    }
    let mut patterns = Vec::with_capacity(items.len());
    let mut all_valid = true;
    for (index, item) in items.iter().enumerate() {
        let pattern_path = item_path(path, index);
        let Some(text) = read_string(item, &pattern_path, problems) else {
            all_valid = false;
            continue;
        };
        match GlobPattern::parse(text) {
            Ok(pattern) => patterns.push(pattern),
            Err(glob_error) => {
                all_valid = false;
                problems.push(
                    &pattern_path,
                    format!("{text:?} is not a valid pattern: {glob_error}"),
                );
            }
        }
    }
    all_valid.then_some(patterns)
}

fn read_schema_mode(value: &Value, path: &str, problems: &mut Problems) -> Option<SchemaMode> {
    let choices = [
        SchemaMode::CreateIfMissing,
        SchemaMode::RequireExisting,
        SchemaMode::Recreate,
    ]
    .map(|mode| (mode.as_str(), mode));
    read_choice(value, path, &choices, problems)
}

fn read_chunking(value: &Value, path: &str, problems: &mut Problems) -> Option<ChunkingSpec> {
    let fields = read_mapping(value, path, CHUNKING_FIELDS, &[], problems)?;
    let target_rows_opt = match fields.optional("target_rows") {
        Some(rows) => read_positive_integer(
            rows,
            &fields.path_of("target_rows"),
            MAX_TARGET_ROWS,
            problems,
        ),
        None => Some(DEFAULT_TARGET_ROWS),
    };
    let split_idle_opt = match fields.optional("split_idle") {
        Some(flag) => read_bool(flag, &fields.path_of("split_idle"), problems),
        None => Some(true),
    };
    let defer_key_opt = match fields.optional("defer_key") {
        Some(flag) => read_bool(flag, &fields.path_of("defer_key"), problems),
        None => Some(ChunkingSpec::default().defer_key),
    };
    Some(ChunkingSpec {
        target_rows: target_rows_opt?,
        split_idle: split_idle_opt?,
        defer_key: defer_key_opt?,
    })
}

fn read_resilience(value: &Value, path: &str, problems: &mut Problems) -> Option<ResilienceSpec> {
    let fields = read_mapping(value, path, RESILIENCE_FIELDS, &[], problems)?;
    let outage_timeout_ms = match fields.optional("outage_timeout") {
        Some(timeout) => {
            let timeout_path = fields.path_of("outage_timeout");
            let millis = read_duration_ms(timeout, &timeout_path, problems)?;
            if millis < 1000 {
                problems.push(
                    &timeout_path,
                    "must be at least 1s (the job pauses when a database stays away this long)",
                );
                return None;
            }
            millis
        }
        None => DEFAULT_OUTAGE_TIMEOUT_MS,
    };
    Some(ResilienceSpec { outage_timeout_ms })
}

fn read_verify(value: &Value, path: &str, problems: &mut Problems) -> Option<VerifySpec> {
    let fields = read_mapping(value, path, VERIFY_FIELDS, &[], problems)?;
    let mode_choices = [VerifyMode::Checksum, VerifyMode::Count, VerifyMode::None]
        .map(|mode| (mode.as_str(), mode));
    let mode_opt = match fields.optional("mode") {
        Some(mode) => read_choice(mode, &fields.path_of("mode"), &mode_choices, problems),
        None => Some(VerifyMode::default()),
    };
    let on_mismatch_choices =
        [OnMismatch::Recopy, OnMismatch::Fail].map(|action| (action.as_str(), action));
    let on_mismatch_opt = match fields.optional("on_mismatch") {
        Some(action) => read_choice(
            action,
            &fields.path_of("on_mismatch"),
            &on_mismatch_choices,
            problems,
        ),
        None => Some(OnMismatch::default()),
    };
    let max_attempts_opt = match fields.optional("max_attempts") {
        Some(attempts) => read_positive_u32(
            attempts,
            &fields.path_of("max_attempts"),
            MAX_MAX_ATTEMPTS,
            problems,
        ),
        None => Some(DEFAULT_MAX_ATTEMPTS),
    };
    Some(VerifySpec {
        mode: mode_opt?,
        on_mismatch: on_mismatch_opt?,
        max_attempts: max_attempts_opt?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::spec::test_support::*;
    use crate::spec::{Location, Secret};

    #[test]
    fn tables_split_is_read_and_every_bad_entry_reported() {
        let spec = parse(&spec_with(
            "  include: [orders]",
            "  include: [orders]\n  split: { public.log: { column: id, buckets: 16 } }",
        ))
        .unwrap();
        assert_eq!(
            spec.tables.split_of("public.log", "log"),
            Some(&HashSplitSpec {
                column: "id".into(),
                buckets: 16
            })
        );
        assert!(spec.tables.split_of("other", "other").is_none());
        // Buckets change the plan, so a resume with other buckets is another job.
        let unsplit = parse(&spec_with("", "")).unwrap();
        assert_ne!(spec.fingerprint(), unsplit.fingerprint());
        let errors = errors_of(&spec_with(
            "  include: [orders]",
            "  include: [orders]\n  split: { a: { column: id, buckets: 1 }, b: { buckets: 5000 }, c: { column: x, buckets: 2, extra: 1 } }",
        ));
        let paths: Vec<&str> = errors.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "tables.split.a.buckets",
                "tables.split.b.column",
                "tables.split.b.buckets",
                "tables.split.c.extra"
            ]
        );
    }

    #[test]
    fn full_spec_parses_every_field() {
        let yaml = "\
name: nightly-orders.v2
source:
  kind: sqlite
  path: data/src.db
target:
  kind: sqlite
  url_env: TARGET_DB
tables:
  include: [\"main.orders\", \"cust*\"]
  exclude: [\"*_tmp\"]
schema: recreate
chunking:
  target_rows: 10000
verify:
  mode: count
  on_mismatch: fail
  max_attempts: 5
throttle:
  default_concurrency: 8
";
        let spec = parse(yaml).unwrap();
        assert_eq!(spec.name, "nightly-orders.v2");
        assert_eq!(spec.source.kind, "sqlite");
        assert_eq!(
            spec.source.location,
            Location::Path(PathBuf::from("/jobs/data/src.db"))
        );
        assert_eq!(spec.target.kind, "sqlite");
        assert_eq!(
            spec.target.location,
            Location::Env {
                var: "TARGET_DB".to_owned(),
                value: Secret::new("/var/lib/ferry/target.db"),
            }
        );
        let include: Vec<&str> = spec.tables.include.iter().map(|p| p.as_str()).collect();
        let exclude: Vec<&str> = spec.tables.exclude.iter().map(|p| p.as_str()).collect();
        assert_eq!(include, ["main.orders", "cust*"]);
        assert_eq!(exclude, ["*_tmp"]);
        assert_eq!(spec.schema, SchemaMode::Recreate);
        assert_eq!(
            spec.chunking,
            ChunkingSpec {
                target_rows: 10_000,
                split_idle: true,
                defer_key: true,
            }
        );
        assert_eq!(
            spec.verify,
            VerifySpec {
                mode: VerifyMode::Count,
                on_mismatch: OnMismatch::Fail,
                max_attempts: 5,
            }
        );
        assert_eq!(
            spec.throttle,
            ThrottlePolicy {
                default_concurrency: 8,
                ..ThrottlePolicy::default()
            }
        );
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = parse(&spec_with("", "")).unwrap();
        assert_eq!(spec.name, "nightly");
        assert!(spec.tables.exclude.is_empty());
        assert_eq!(spec.schema, SchemaMode::CreateIfMissing);
        assert_eq!(spec.chunking.target_rows, 500_000);
        assert_eq!(spec.verify.mode, VerifyMode::Checksum);
        assert_eq!(spec.verify.on_mismatch, OnMismatch::Recopy);
        assert_eq!(spec.verify.max_attempts, 3);
        assert_eq!(spec.throttle.default_concurrency, 4);
    }

    #[test]
    fn priority_is_a_weight_from_1_to_1000_kept_in_the_throttle_policy() {
        assert_eq!(parse(&spec_with("", "")).unwrap().throttle.priority, 1);
        let spec = parse(&spec_with("", "priority: 3\n")).unwrap();
        assert_eq!(spec.throttle.priority, 3);
        // Not part of the plan: a job resumes whatever its weight.
        assert_eq!(
            spec.fingerprint(),
            parse(&spec_with("", "")).unwrap().fingerprint()
        );
        assert_eq!(
            single_error(&spec_with("", "priority: 0\n")),
            ("priority".to_owned(), "must be at least 1".to_owned())
        );
        assert_eq!(
            single_error(&spec_with("", "priority: 1001\n")),
            ("priority".to_owned(), "must be at most 1000".to_owned())
        );
    }

    #[test]
    fn watermark_reads_its_column_and_lag() {
        assert_eq!(parse(&spec_with("", "")).unwrap().watermark, None);
        let spec = parse(&spec_with("", "watermark: { column: updated_at }\n")).unwrap();
        assert_eq!(
            spec.watermark,
            Some(WatermarkSpec {
                column: "updated_at".into(),
                lag_ms: DEFAULT_WATERMARK_LAG_MS
            })
        );
        let spec = parse(&spec_with("", "watermark: { column: m, lag: 2m }\n")).unwrap();
        assert_eq!(
            spec.watermark.map(|watermark| watermark.lag_ms),
            Some(120_000)
        );
        let (path, message) = single_error(&spec_with("", "watermark: { lag: 5s }\n"));
        assert_eq!(
            (path.as_str(), message.as_str()),
            ("watermark.column", "missing required field")
        );
    }

    #[test]
    fn empty_optional_sections_get_defaults() {
        let spec = parse(&spec_with("", "chunking:\nverify: {}\nthrottle: {}\n")).unwrap();
        assert_eq!(spec.chunking, ChunkingSpec::default());
        assert_eq!(spec.verify, VerifySpec::default());
        assert_eq!(spec.throttle, ThrottlePolicy::default());
    }

    #[test]
    fn missing_name_is_reported() {
        let yaml = spec_with("name:", "");
        assert_eq!(
            single_error(&yaml),
            ("name".to_owned(), "missing required field".to_owned())
        );
    }

    #[test]
    fn bad_name_characters_are_reported() {
        for bad_name in ["\"my job!\"", "-leading-dash", "\"\"", &"a".repeat(65)] {
            let yaml = spec_with("name:", &format!("name: {bad_name}"));
            let (path, message) = single_error(&yaml);
            assert_eq!(path, "name");
            assert!(message.contains("not a valid job name"), "{message}");
        }
        assert!(parse(&spec_with("name:", &format!("name: {}", "a".repeat(64)))).is_ok());
    }

    #[test]
    fn name_of_wrong_type_is_reported() {
        let yaml = spec_with("name:", "name: 42");
        assert_eq!(
            single_error(&yaml),
            (
                "name".to_owned(),
                "expected a string, found integer 42".to_owned()
            )
        );
    }

    #[test]
    fn resilience_has_a_default_and_refuses_a_budget_under_a_second() {
        let spec = parse(&spec_with("", "")).unwrap();
        assert_eq!(spec.resilience.outage_timeout_ms, 30 * 60 * 1000);
        let spec = parse(&spec_with("", "resilience: { outage_timeout: 2m 30s }\n")).unwrap();
        assert_eq!(spec.resilience.outage_timeout_ms, 150_000);
        let (path, message) =
            single_error(&spec_with("", "resilience: { outage_timeout: 500ms }\n"));
        assert_eq!(path, "resilience.outage_timeout");
        assert!(message.contains("at least 1s"), "{message}");
        let (path, _) = single_error(&spec_with("", "resilience: { budget: 1m }\n"));
        assert_eq!(path, "resilience.budget");
    }

    #[test]
    fn unknown_top_level_field_is_reported() {
        let yaml = spec_with("", "chunk_size: 10\n");
        assert_eq!(
            single_error(&yaml),
            (
                "chunk_size".to_owned(),
                "unknown field; expected one of: name, source, target, tables, schema, \
                 chunking, verify, resilience, throttle, columns, mode, sync, watermark, \
                 priority, consistency"
                    .to_owned()
            )
        );
    }

    #[test]
    fn unknown_nested_field_is_reported_with_allowed_keys() {
        let yaml = spec_with("  include: [orders]", "  include: [orders]\n  inclde: [x]");
        assert_eq!(
            single_error(&yaml),
            (
                "tables.inclde".to_owned(),
                "unknown field; expected one of: include, exclude, split".to_owned()
            )
        );
    }

    #[test]
    fn include_not_a_list_is_reported() {
        let yaml = spec_with("  include: [orders]", "  include: orders");
        assert_eq!(
            single_error(&yaml),
            (
                "tables.include".to_owned(),
                "expected a list of table patterns, found string \"orders\"".to_owned()
            )
        );
    }

    #[test]
    fn missing_include_is_reported() {
        let yaml = spec_with("  include: [orders]", "  exclude: [x]");
        assert_eq!(paths_of(&yaml), ["tables.include"]);
    }

    #[test]
    fn invalid_include_pattern_is_reported_at_its_index() {
        let yaml = spec_with(
            "  include: [orders]",
            "  include: [orders, \"ord[\", items]",
        );
        assert_eq!(
            single_error(&yaml),
            (
                "tables.include[1]".to_owned(),
                "\"ord[\" is not a valid pattern: unclosed '[' at offset 3".to_owned()
            )
        );
    }

    #[test]
    fn every_invalid_pattern_is_reported() {
        let yaml = spec_with(
            "  include: [orders]",
            "  include: [\"a[]\", 7, ok]\n  exclude: [\"[z-a]\", \"x\\\\\"]",
        );
        assert_eq!(
            paths_of(&yaml),
            [
                "tables.include[0]",
                "tables.include[1]",
                "tables.exclude[0]",
                "tables.exclude[1]"
            ]
        );
    }

    #[test]
    fn invalid_exclude_pattern_is_reported() {
        let yaml = spec_with(
            "  include: [orders]",
            "  include: [orders]\n  exclude: [\"\"]",
        );
        assert_eq!(
            single_error(&yaml),
            (
                "tables.exclude[0]".to_owned(),
                "\"\" is not a valid pattern: empty pattern".to_owned()
            )
        );
    }

    #[test]
    fn empty_include_list_is_reported() {
        let yaml = spec_with("  include: [orders]", "  include: []");
        assert_eq!(
            single_error(&yaml),
            (
                "tables.include".to_owned(),
                "must list at least one table pattern".to_owned()
            )
        );
    }

    #[test]
    fn duplicate_include_patterns_are_fine() {
        let yaml = spec_with("  include: [orders]", "  include: [orders, orders]");
        assert_eq!(parse(&yaml).unwrap().tables.include.len(), 2);
    }

    #[test]
    fn split_idle_is_on_by_default_and_turned_off_by_false_only() {
        let default = parse(&spec_with("", "chunking:\n  target_rows: 10\n")).unwrap();
        assert!(default.chunking.split_idle);
        let off = parse(&spec_with("", "chunking:\n  split_idle: false\n")).unwrap();
        assert!(!off.chunking.split_idle);
        assert_eq!(
            single_error(&spec_with("", "chunking:\n  split_idle: \"no\"\n")),
            (
                "chunking.split_idle".to_owned(),
                "expected true or false, found string \"no\"".to_owned()
            )
        );
    }

    #[test]
    fn target_rows_as_string_is_a_type_error() {
        let yaml = spec_with("", "chunking:\n  target_rows: lots\n");
        assert_eq!(
            single_error(&yaml),
            (
                "chunking.target_rows".to_owned(),
                "expected a positive integer, found string \"lots\"".to_owned()
            )
        );
        let quoted_number = spec_with("", "chunking:\n  target_rows: \"1000\"\n");
        assert_eq!(paths_of(&quoted_number), ["chunking.target_rows"]);
    }

    #[test]
    fn target_rows_zero_and_negative_must_be_at_least_one() {
        for rows in ["0", "-5"] {
            let yaml = spec_with("", &format!("chunking:\n  target_rows: {rows}\n"));
            assert_eq!(
                single_error(&yaml),
                (
                    "chunking.target_rows".to_owned(),
                    "must be at least 1".to_owned()
                )
            );
        }
    }

    #[test]
    fn target_rows_float_and_too_large_are_reported() {
        let float = spec_with("", "chunking:\n  target_rows: 1.5\n");
        assert_eq!(
            single_error(&float),
            (
                "chunking.target_rows".to_owned(),
                "expected a positive integer, found float 1.5".to_owned()
            )
        );
        let too_large = spec_with("", "chunking:\n  target_rows: 1000000001\n");
        assert_eq!(
            single_error(&too_large),
            (
                "chunking.target_rows".to_owned(),
                "must be at most 1000000000".to_owned()
            )
        );
        let at_max = spec_with("", "chunking:\n  target_rows: 1000000000\n");
        assert_eq!(
            parse(&at_max).unwrap().chunking.target_rows,
            MAX_TARGET_ROWS
        );
    }

    #[test]
    fn max_attempts_zero_and_above_limit_are_reported() {
        let zero = spec_with("", "verify:\n  max_attempts: 0\n");
        assert_eq!(
            single_error(&zero),
            (
                "verify.max_attempts".to_owned(),
                "must be at least 1".to_owned()
            )
        );
        let above = spec_with("", "verify:\n  max_attempts: 101\n");
        assert_eq!(paths_of(&above), ["verify.max_attempts"]);
    }

    #[test]
    fn unknown_verify_mode_lists_choices() {
        let yaml = spec_with("", "verify:\n  mode: sha\n  on_mismatch: retry\n");
        assert_eq!(
            errors_of(&yaml),
            [
                (
                    "verify.mode".to_owned(),
                    "unknown value \"sha\"; expected one of: checksum, count, none".to_owned()
                ),
                (
                    "verify.on_mismatch".to_owned(),
                    "unknown value \"retry\"; expected one of: recopy, fail".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn mode_is_copy_by_default_and_verify_makes_another_job() {
        let copy = parse(&spec_with("", "")).expect("valid");
        assert_eq!(copy.mode, JobMode::Copy);
        let verify = parse(&spec_with("", "mode: verify\n")).expect("valid");
        assert_eq!(verify.mode, JobMode::Verify);
        assert_ne!(copy.fingerprint(), verify.fingerprint());
        assert_eq!(
            single_error(&spec_with("", "mode: merge\n")),
            (
                "mode".to_owned(),
                "unknown value \"merge\"; expected one of: copy, verify, sync".to_owned()
            )
        );
    }

    #[test]
    fn consistency_is_chunk_by_default_and_job_snapshot_needs_a_postgres_source() {
        use super::Consistency;
        assert_eq!(
            parse(&spec_with("", "")).unwrap().consistency,
            Consistency::Chunk
        );
        let chunk = parse(&spec_with("", "consistency: chunk\n")).unwrap();
        assert_eq!(chunk.consistency, Consistency::Chunk);
        let (path, message) = single_error(&spec_with("", "consistency: job_snapshot\n"));
        assert_eq!(path, "consistency");
        assert!(
            message.contains("needs a PostgreSQL source")
                && message.contains("source.kind is sqlite")
                && message.contains("consistency: chunk"),
            "{message}"
        );
        let (path, message) = single_error(&spec_with("", "consistency: snapshot\n"));
        assert_eq!(path, "consistency");
        assert!(message.contains("chunk, job_snapshot"), "{message}");
    }

    #[test]
    fn a_sync_pass_reads_its_marks_which_do_not_change_the_fingerprint() {
        let first = parse(&spec_with("", "mode: sync\n")).expect("valid");
        assert_eq!(first.mode, JobMode::Sync);
        assert!(first.sync.since.is_empty());
        let later = parse(&spec_with(
            "",
            "mode: sync\nsync: { since: { public.orders: 1765045200000000, items: -5 } }\n",
        ))
        .expect("valid");
        assert_eq!(
            later.sync.since.get("public.orders"),
            Some(&1_765_045_200_000_000)
        );
        assert_eq!(later.sync.since.get("items"), Some(&-5));
        assert_eq!(first.fingerprint(), later.fingerprint());
        let (path, message) = single_error(&spec_with("", "sync: { since: { t: soon } }\n"));
        assert_eq!(path, "sync.since");
        assert!(message.contains("microseconds"), "{message}");
    }

    #[test]
    fn unknown_schema_mode_lists_choices() {
        let yaml = spec_with("", "schema: replace\n");
        assert_eq!(
            single_error(&yaml),
            (
                "schema".to_owned(),
                "unknown value \"replace\"; expected one of: create_if_missing, \
                 require_existing, recreate"
                    .to_owned()
            )
        );
    }

    #[test]
    fn column_overrides_are_parsed_and_bad_ones_named() {
        let spec = parse(&spec_with(
            "",
            "columns:\n  orders.total: \"DECIMAL(20,4)\"\n  public.t.c: text\n",
        ))
        .expect("valid");
        assert_eq!(
            spec.columns.lookup("main.orders", "orders", "total"),
            Some("DECIMAL(20,4)")
        );
        assert_eq!(spec.columns.lookup("public.t", "t", "c"), Some("text"));
        assert_eq!(spec.columns.lookup("public.t", "t", "d"), None);
        let errors = errors_of(&spec_with(
            "",
            "columns:\n  total: numeric\n  orders.x: 5\n",
        ));
        assert_eq!(
            errors
                .iter()
                .map(|(path, _)| path.as_str())
                .collect::<Vec<_>>(),
            vec!["columns.\"total\"", "columns.\"orders.x\""]
        );
    }

    #[test]
    fn section_of_wrong_type_is_reported() {
        let yaml = spec_with("", "verify: checksum\n");
        assert_eq!(
            single_error(&yaml),
            (
                "verify".to_owned(),
                "expected a mapping, found string \"checksum\"".to_owned()
            )
        );
    }

    #[test]
    fn root_that_is_a_list_is_reported() {
        assert_eq!(
            single_error("- name: x\n- name: y\n"),
            (
                String::new(),
                "a job spec must be a YAML mapping".to_owned()
            )
        );
        assert_eq!(paths_of(""), [""]);
    }

    #[test]
    fn yaml_syntax_error_has_empty_path_and_location() {
        let (path, message) = single_error("name: x\nsource: [unclosed\n");
        assert_eq!(path, "");
        assert!(message.contains("line"), "{message}");
        assert!(message.contains("column"), "{message}");
    }

    #[test]
    fn independent_mistakes_are_all_reported() {
        let yaml = "\
name: bad name
source:
  kind: postgress
  path: src.db
target:
  kind: sqlite
  path: dst.db
tables:
  include: [orders]
chunking:
  target_rows: 0
";
        assert_eq!(
            paths_of(yaml),
            ["name", "source.kind", "chunking.target_rows"]
        );
    }

    #[test]
    fn missing_sections_are_all_reported() {
        assert_eq!(paths_of("name: n\n"), ["source", "target", "tables"]);
    }
}
