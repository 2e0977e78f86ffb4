//! The job spec: the YAML document a user writes to describe one migration.
//!
//! [`JobSpec::parse`] reads the YAML into a generic value tree and walks it by hand instead
//! of deriving `Deserialize`, so that it can report every problem at once, each with the
//! path of the offending field (`tables.include[1]`, `chunking.target_rows`), rather than
//! stopping at the first one. A spec that parses is also valid: names, kinds, patterns,
//! ranges and environment variables have all been checked against a [`SpecContext`].
//!
//! ```yaml
//! name: nightly-orders            # 1..=64 of [A-Za-z0-9._-], first alphanumeric
//! source: { kind: sqlite, path: data/src.db }       # path is relative to the spec's folder
//! target: { kind: sqlite, url_env: FERRY_TARGET }   # or an environment variable's name
//! tables:
//!   include: ["public.orders", "cust*"]  # with a '.', matches schema.table; without, the table
//!   exclude: ["*_tmp"]                 # optional
//! schema: create_if_missing            # | require_existing | recreate
//! chunking: { target_rows: 500000 }
//! verify: { mode: checksum, on_mismatch: recopy, max_attempts: 3 }
//! throttle:
//!   timezone: America/New_York         # IANA name; default UTC
//!   default_concurrency: 4             # chunks at once outside every window, 1..=1024
//!   schedule:                          # first matching window wins
//!     - { days: mon-fri, from: "08:00", to: "20:00", max_concurrency: 2 }
//!     - { days: "sat,sun", from: "22:00", to: "06:00", max_concurrency: 32 }
//!   load: { probe: builtin, interval: 5s, max: 25, critical: 60, pause_timeout: 10m }
//!   rate: { rows_per_sec: 200000, bytes_per_sec: 50000000 }
//!   worker_cpu_max: 85                 # percent
//! ```
//!
//! The `throttle:` block becomes the job's initial [`ThrottlePolicy`]; its meaning is
//! described in [`crate::throttle`].
//!
//! Secrets never appear in errors, `Debug` output or the [fingerprint](JobSpec::fingerprint):
//! a connection URL is only ever named through its environment variable.

use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};

use crate::glob::GlobPattern;
use crate::throttle::{
    self, DEFAULT_LOAD_INTERVAL_MS, DEFAULT_PAUSE_TIMEOUT_MS, DaySet, LoadPolicy, LoadProbe,
    RateLimits, ScheduleWindow, ThrottlePolicy,
};

/// Rows per chunk when the spec does not say.
pub const DEFAULT_TARGET_ROWS: u64 = 500_000;
/// Largest accepted `chunking.target_rows`.
pub const MAX_TARGET_ROWS: u64 = 1_000_000_000;
/// Copy attempts per chunk when the spec does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Largest accepted `verify.max_attempts`.
pub const MAX_MAX_ATTEMPTS: u32 = 100;
/// Chunks copied at once when the spec does not say.
pub const DEFAULT_CONCURRENCY: u32 = 4;
/// Largest accepted `throttle.default_concurrency`.
pub const MAX_CONCURRENCY: u32 = 1024;
/// Longest accepted job name, in characters.
pub const MAX_JOB_NAME_CHARS: usize = 64;

const TOP_LEVEL_FIELDS: &[&str] = &[
    "name", "source", "target", "tables", "schema", "chunking", "verify", "throttle", "columns",
];
const TOP_LEVEL_UNSUPPORTED: &[(&str, &str)] = &[];
const ENDPOINT_FIELDS: &[&str] = &["kind", "path", "url_env", "zero_dates"];
const TABLES_FIELDS: &[&str] = &["include", "exclude"];
const CHUNKING_FIELDS: &[&str] = &["target_rows"];
const VERIFY_FIELDS: &[&str] = &["mode", "on_mismatch", "max_attempts"];
const THROTTLE_FIELDS: &[&str] = &[
    "timezone",
    "default_concurrency",
    "schedule",
    "load",
    "rate",
    "worker_cpu_max",
];
const SCHEDULE_WINDOW_FIELDS: &[&str] = &["days", "from", "to", "max_concurrency"];
const LOAD_FIELDS: &[&str] = &["probe", "interval", "max", "critical", "pause_timeout"];
const LOAD_SQL_PROBE_FIELDS: &[&str] = &["sql"];
const RATE_FIELDS: &[&str] = &["rows_per_sec", "bytes_per_sec"];

/// What a spec is checked against: where relative paths start, which environment
/// variables exist, and which connector kinds this build offers.
#[derive(Clone, Copy)]
pub struct SpecContext<'a> {
    /// Folder that relative `path`s are joined to, usually the spec file's folder.
    pub base_dir: &'a Path,
    /// Environment variables that `url_env` names are looked up in.
    pub env: &'a HashMap<String, String>,
    /// Connector kinds accepted in `source.kind` and `target.kind`.
    pub known_kinds: &'a [&'a str],
}

impl fmt::Debug for SpecContext<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Environment values may hold credentials: show the names only.
        let mut env_names: Vec<&str> = self.env.keys().map(String::as_str).collect();
        env_names.sort_unstable();
        formatter
            .debug_struct("SpecContext")
            .field("base_dir", &self.base_dir)
            .field("env_names", &env_names)
            .field("known_kinds", &self.known_kinds)
            .finish()
    }
}

/// One problem in a spec, located by the dotted path of its field (empty for the document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Field path such as `tables.include[1]`; empty when the problem is the whole document.
    pub path: String,
    /// Lowercase description of the problem, never containing a secret.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            formatter.write_str(&self.message)
        } else {
            write!(formatter, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for SpecError {}

/// Every problem found in a spec, in a stable order; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str("\n")?;
            }
            write!(formatter, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// A parsed and validated job spec.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Job name: 1 to 64 characters of `[A-Za-z0-9._-]`, starting with a letter or digit.
    pub name: String,
    /// Where rows are read from.
    pub source: EndpointSpec,
    /// Where rows are written to; never the same database as the source.
    pub target: EndpointSpec,
    /// Which tables are copied.
    pub tables: TableSelection,
    /// How target tables are prepared.
    pub schema: SchemaMode,
    /// How tables are cut into chunks.
    pub chunking: ChunkingSpec,
    /// How copied chunks are checked.
    pub verify: VerifySpec,
    /// How much work runs at once, and when: the job's initial throttle policy.
    pub throttle: ThrottlePolicy,
    /// Target column types chosen by the user, by source column: `"orders.amount"` or
    /// `"public.orders.amount"` → the target's type, e.g. `DECIMAL(20,4)`.
    pub columns: ColumnOverrides,
}

/// Per-column target type overrides (`columns:` in the spec).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnOverrides(pub std::collections::BTreeMap<String, String>);

impl ColumnOverrides {
    /// Returns the override for a column of a table, matched as `schema.table.column` or
    /// `table.column`.
    pub fn lookup(&self, qualified_table: &str, bare_table: &str, column: &str) -> Option<&str> {
        self.0
            .get(&format!("{qualified_table}.{column}"))
            .or_else(|| self.0.get(&format!("{bare_table}.{column}")))
            .map(String::as_str)
    }
}

/// One side of a migration: a connector kind and where its database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Connector kind, one of [`SpecContext::known_kinds`].
    pub kind: String,
    /// Where the database is.
    pub location: Location,
    /// MySQL sources: what a zero date (`0000-00-00`, `2024-00-10`) becomes: an error
    /// naming table, column and key (the default), or NULL. Never a silent change.
    pub zero_dates: Option<ZeroDates>,
}

/// What a MySQL zero date becomes when read (`source.zero_dates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroDates {
    /// The chunk fails, naming table, column and key.
    Error,
    /// The value is read as NULL.
    Null,
}

/// Where an endpoint's database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A database file, already joined to [`SpecContext::base_dir`] when given relative.
    Path(PathBuf),
    /// A connection string read from an environment variable (a file path for `sqlite`).
    Env {
        /// Name of the environment variable; safe to show.
        var: String,
        /// The variable's value at parse time; may hold credentials.
        value: Secret,
    },
}

/// A value that must not be shown: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value` so that it is not printed by accident.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Returns the secret value itself, for handing to a connector.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

/// Which tables a job copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSelection {
    /// Patterns selecting tables; at least one.
    pub include: Vec<GlobPattern>,
    /// Patterns removing tables from the selection.
    pub exclude: Vec<GlobPattern>,
}

impl TableSelection {
    /// Returns whether a table is selected: some include pattern matches it and no exclude
    /// pattern does. A pattern containing `.` is matched against `qualified` (`main.orders`),
    /// any other against `bare` (`orders`).
    pub fn selects(&self, qualified: &str, bare: &str) -> bool {
        let pattern_matches = |pattern: &GlobPattern| {
            if pattern.as_str().contains('.') {
                pattern.matches(qualified)
            } else {
                pattern.matches(bare)
            }
        };
        self.include.iter().any(pattern_matches) && !self.exclude.iter().any(pattern_matches)
    }
}

/// How target tables are prepared before copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaMode {
    /// Creates missing tables and checks existing ones for compatibility.
    #[default]
    CreateIfMissing,
    /// Fails unless every target table already exists and is compatible.
    RequireExisting,
    /// Drops and creates every target table.
    Recreate,
}

impl SchemaMode {
    /// Returns the spelling used in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaMode::CreateIfMissing => "create_if_missing",
            SchemaMode::RequireExisting => "require_existing",
            SchemaMode::Recreate => "recreate",
        }
    }
}

/// How tables are cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkingSpec {
    /// Rows the planner aims for per chunk, 1 to [`MAX_TARGET_ROWS`].
    pub target_rows: u64,
}

impl Default for ChunkingSpec {
    fn default() -> Self {
        ChunkingSpec {
            target_rows: DEFAULT_TARGET_ROWS,
        }
    }
}

/// How a copied chunk is compared with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyMode {
    /// Compares row counts and order-independent row checksums.
    #[default]
    Checksum,
    /// Compares row counts only.
    Count,
    /// Does not verify.
    None,
}

impl VerifyMode {
    /// Returns the spelling used in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::Checksum => "checksum",
            VerifyMode::Count => "count",
            VerifyMode::None => "none",
        }
    }
}

/// What happens when a chunk fails verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMismatch {
    /// Overwrites the chunk's range and copies it again, up to `max_attempts`.
    #[default]
    Recopy,
    /// Fails the job.
    Fail,
}

impl OnMismatch {
    /// Returns the spelling used in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            OnMismatch::Recopy => "recopy",
            OnMismatch::Fail => "fail",
        }
    }
}

/// How copied chunks are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifySpec {
    /// What is compared.
    pub mode: VerifyMode,
    /// What a mismatch leads to.
    pub on_mismatch: OnMismatch,
    /// Copy attempts per chunk, 1 to [`MAX_MAX_ATTEMPTS`].
    pub max_attempts: u32,
}

impl Default for VerifySpec {
    fn default() -> Self {
        VerifySpec {
            mode: VerifyMode::default(),
            on_mismatch: OnMismatch::default(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

impl JobSpec {
    /// Parses and validates a YAML job spec. On failure returns every problem found, each
    /// with its field path; a YAML syntax error is reported alone, with an empty path.
    pub fn parse(text: &str, context: &SpecContext<'_>) -> Result<JobSpec, SpecErrors> {
        let root = match serde_yaml_ng::from_str::<Value>(text) {
            Ok(root) => root,
            Err(yaml_error) => {
                return Err(SpecErrors(vec![SpecError {
                    path: String::new(),
                    message: yaml_error.to_string(),
                }]));
            }
        };
        let mut problems = Problems::default();
        let spec_opt = read_job_spec(&root, context, &mut problems);
        match spec_opt {
            Some(spec) if problems.errors.is_empty() => Ok(spec),
            _ => {
                debug_assert!(
                    !problems.errors.is_empty(),
                    "every rejected field reports a problem"
                );
                if problems.errors.is_empty() {
                    problems.report("", "internal error: the spec was rejected without a reason");
                }
                Err(SpecErrors(problems.errors))
            }
        }
    }

    /// Returns a stable 16-digit hex hash of everything that shapes the copy plan: source and
    /// target kind and location (a path, or the environment variable's name, never its
    /// value), the table patterns and the chunk size. It is FNV-1a 64 over canonical JSON, so
    /// it does not change across Rust versions or runs.
    pub fn fingerprint(&self) -> String {
        let view = PlanFingerprintView {
            format: 1,
            source: EndpointFingerprintView::of(&self.source),
            target: EndpointFingerprintView::of(&self.target),
            include: self
                .tables
                .include
                .iter()
                .map(GlobPattern::as_str)
                .collect(),
            exclude: self
                .tables
                .exclude
                .iter()
                .map(GlobPattern::as_str)
                .collect(),
            target_rows: self.chunking.target_rows,
        };
        // Cannot fail: the view holds only strings, integers, options and lists of strings,
        // which serde_json always serializes.
        let canonical_json =
            serde_json::to_vec(&view).expect("a fingerprint view always serializes to json");
        format!("{:016x}", fnv1a_64(&canonical_json))
    }
}

/// The part of a spec that [`JobSpec::fingerprint`] hashes. Field order is part of the
/// format: changing it changes every fingerprint, so bump `format` along with it.
#[derive(Serialize)]
struct PlanFingerprintView<'a> {
    format: u32,
    source: EndpointFingerprintView<'a>,
    target: EndpointFingerprintView<'a>,
    include: Vec<&'a str>,
    exclude: Vec<&'a str>,
    target_rows: u64,
}

#[derive(Serialize)]
struct EndpointFingerprintView<'a> {
    kind: &'a str,
    path: Option<String>,
    url_env: Option<&'a str>,
    /// Where the variable points, without any password: pointing the variable at another
    /// database between runs makes a different job, not a resumed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    url_target: Option<String>,
}

/// A location value with the password of a URL's userinfo removed
/// (`postgres://u:secret@h/db` → `postgres://u@h/db`); other values unchanged.
pub fn without_password(value: &str) -> String {
    let Some(scheme_end) = value.find("://").map(|at| at + 3) else {
        return value.to_string();
    };
    let authority_end = value[scheme_end..]
        .find(['/', '?'])
        .map_or(value.len(), |at| scheme_end + at);
    let authority = &value[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else {
        return value.to_string();
    };
    let user = authority[..at].split(':').next().unwrap_or_default();
    format!(
        "{}{user}@{}{}",
        &value[..scheme_end],
        &authority[at + 1..],
        &value[authority_end..]
    )
}

impl<'a> EndpointFingerprintView<'a> {
    fn of(endpoint: &'a EndpointSpec) -> Self {
        let (path, url_env, url_target) = match &endpoint.location {
            Location::Path(path) => (Some(path.to_string_lossy().into_owned()), None, None),
            Location::Env { var, value } => (
                None,
                Some(var.as_str()),
                Some(without_password(value.expose())),
            ),
        };
        EndpointFingerprintView {
            kind: &endpoint.kind,
            path,
            url_env,
            url_target,
        }
    }
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// Collects every problem found while walking a spec.
#[derive(Default)]
struct Problems {
    errors: Vec<SpecError>,
}

impl Problems {
    fn report(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(SpecError {
            path: path.to_owned(),
            message: message.into(),
        });
    }
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn item_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Describes a value for "found ..." in type errors.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(boolean) => format!("boolean {boolean}"),
        Value::Number(number) if number.is_f64() => format!("float {number}"),
        Value::Number(number) => format!("integer {number}"),
        Value::String(string) => format!("string {string:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

/// Describes a value like [`describe`] but without the text of a string, for places where a
/// user may have pasted a connection URL with its password.
fn describe_without_text(value: &Value) -> String {
    match value {
        Value::String(_) => "a string".to_owned(),
        other => describe(other),
    }
}

/// A mapping whose keys have been checked against the allowed ones.
struct Fields<'a> {
    path: String,
    mapping: &'a Mapping,
}

impl<'a> Fields<'a> {
    /// Returns the field's value, or `None` when it is absent or null.
    fn optional(&self, key: &str) -> Option<&'a Value> {
        self.mapping.get(key).filter(|value| !value.is_null())
    }

    /// Returns the field's value, reporting it as missing when absent.
    fn required(&self, key: &str, problems: &mut Problems) -> Option<&'a Value> {
        let value_opt = self.mapping.get(key);
        if value_opt.is_none() {
            problems.report(&self.path_of(key), "missing required field");
        }
        value_opt
    }

    fn path_of(&self, key: &str) -> String {
        child_path(&self.path, key)
    }
}

/// Checks that `value` is a mapping whose keys are all strings among `allowed`, reporting
/// keys that are recognised but not supported yet (`unsupported`: key and why) apart from
/// unknown ones. Returns `None` only when `value` is not a mapping.
fn read_mapping<'a>(
    value: &'a Value,
    path: &str,
    allowed: &[&str],
    unsupported: &[(&str, &str)],
    problems: &mut Problems,
) -> Option<Fields<'a>> {
    let Value::Mapping(mapping) = value else {
        problems.report(
            path,
            format!("expected a mapping, found {}", describe(value)),
        );
        return None;
    };
    for key in mapping.keys() {
        let Value::String(key_name) = key else {
            problems.report(
                path,
                format!("field names must be strings, found {}", describe(key)),
            );
            continue;
        };
        if allowed.contains(&key_name.as_str()) {
            continue;
        }
        let key_path = child_path(path, key_name);
        let unsupported_reason_opt = unsupported
            .iter()
            .find(|(unsupported_key, _)| unsupported_key == key_name)
            .map(|(_, reason)| reason);
        match unsupported_reason_opt {
            Some(reason) => problems.report(
                &key_path,
                format!("not supported yet by this version of ferry; remove it ({reason})"),
            ),
            None => problems.report(
                &key_path,
                format!("unknown field; expected one of: {}", allowed.join(", ")),
            ),
        }
    }
    Some(Fields {
        path: path.to_owned(),
        mapping,
    })
}

fn read_string<'a>(value: &'a Value, path: &str, problems: &mut Problems) -> Option<&'a str> {
    match value {
        Value::String(string) => Some(string),
        other => {
            problems.report(
                path,
                format!("expected a string, found {}", describe(other)),
            );
            None
        }
    }
}

/// Reads an integer in `1..=max`. Strings and floats are type errors, even when they look
/// like numbers, so that `"500000"` and `5e5` do not silently mean something else.
fn read_positive_integer(
    value: &Value,
    path: &str,
    max: u64,
    problems: &mut Problems,
) -> Option<u64> {
    debug_assert!(max >= 1);
    let Value::Number(number) = value else {
        problems.report(
            path,
            format!("expected a positive integer, found {}", describe(value)),
        );
        return None;
    };
    if number.is_f64() {
        problems.report(
            path,
            format!("expected a positive integer, found {}", describe(value)),
        );
        return None;
    }
    match number.as_u64() {
        Some(0) | None => {
            problems.report(path, "must be at least 1");
            None
        }
        Some(too_large) if too_large > max => {
            problems.report(path, format!("must be at most {max}"));
            None
        }
        Some(in_range) => Some(in_range),
    }
}

fn read_positive_u32(value: &Value, path: &str, max: u32, problems: &mut Problems) -> Option<u32> {
    let in_range = read_positive_integer(value, path, u64::from(max), problems)?;
    // Cannot fail after the range check; reporting keeps it free of panics all the same.
    match u32::try_from(in_range) {
        Ok(narrowed) => Some(narrowed),
        Err(_) => {
            problems.report(path, format!("must be at most {max}"));
            None
        }
    }
}

/// Reads a string that must be one of `choices` (spelling and meaning).
fn read_choice<T: Copy>(
    value: &Value,
    path: &str,
    choices: &[(&str, T)],
    problems: &mut Problems,
) -> Option<T> {
    let chosen = read_string(value, path, problems)?;
    let found_opt = choices
        .iter()
        .find(|(spelling, _)| *spelling == chosen)
        .map(|(_, meaning)| *meaning);
    if found_opt.is_none() {
        let spellings: Vec<&str> = choices.iter().map(|(spelling, _)| *spelling).collect();
        problems.report(
            path,
            format!(
                "unknown value {chosen:?}; expected one of: {}",
                spellings.join(", ")
            ),
        );
    }
    found_opt
}

fn read_job_spec(
    root: &Value,
    context: &SpecContext<'_>,
    problems: &mut Problems,
) -> Option<JobSpec> {
    if !root.is_mapping() {
        problems.report("", "a job spec must be a YAML mapping");
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
    let throttle_opt = match fields.optional("throttle") {
        Some(value) => read_throttle(value, &fields.path_of("throttle"), problems),
        None => Some(ThrottlePolicy::default()),
    };
    let columns_opt = match fields.optional("columns") {
        Some(value) => read_column_overrides(value, &fields.path_of("columns"), problems),
        None => Some(ColumnOverrides::default()),
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
        throttle: throttle_opt?,
        columns: columns_opt?,
    })
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
        problems.report(
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
            problems.report(
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
            problems.report(
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
                problems.report(
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
        problems.report(
            path,
            format!(
                "{name:?} is not a valid job name; use 1 to {MAX_JOB_NAME_CHARS} characters \
                 among A-Z a-z 0-9 . _ -, starting with a letter or digit"
            ),
        );
        return None;
    }
    Some(name.to_owned())
}

fn read_endpoint(
    value: &Value,
    path: &str,
    context: &SpecContext<'_>,
    problems: &mut Problems,
) -> Option<EndpointSpec> {
    if !value.is_mapping() {
        // A user may have written the connection URL right here: do not echo it.
        problems.report(
            path,
            format!(
                "expected a mapping with kind and path or url_env, found {}",
                describe_without_text(value)
            ),
        );
        return None;
    }
    let fields = read_mapping(value, path, ENDPOINT_FIELDS, &[], problems)?;
    let kind_opt = fields
        .required("kind", problems)
        .and_then(|kind_value| read_kind(kind_value, &fields.path_of("kind"), context, problems));
    let location_opt = match (fields.optional("path"), fields.optional("url_env")) {
        (Some(_), Some(_)) => {
            problems.report(path, "set exactly one of path or url_env, not both");
            None
        }
        (None, None) => {
            problems.report(
                path,
                "missing location; set path (a database file) or url_env (the name of an \
                 environment variable holding the connection URL)",
            );
            None
        }
        (Some(path_value), None) => {
            read_path_location(path_value, &fields.path_of("path"), context, problems)
        }
        (None, Some(var_value)) => {
            read_env_location(var_value, &fields.path_of("url_env"), context, problems)
        }
    };
    // `zero_dates: null` is YAML's null, not an empty field: it means "read them as NULL".
    let zero_dates_raw = value.get("zero_dates");
    let zero_dates_opt = match zero_dates_raw {
        None => Some(None),
        Some(zero_value) => {
            let field_path = fields.path_of("zero_dates");
            let mode = match zero_value.as_str() {
                Some("error") => Some(ZeroDates::Error),
                Some("null") => Some(ZeroDates::Null),
                None if zero_value.is_null() => Some(ZeroDates::Null),
                _ => {
                    problems.report(
                        &field_path,
                        format!("expected error or null, found {}", describe(zero_value)),
                    );
                    None
                }
            };
            let applies = path == "source" && kind_opt.as_deref() == Some("mysql");
            if mode.is_some() && !applies {
                problems.report(&field_path, "only applies to a source of kind mysql");
                None
            } else {
                mode.map(Some)
            }
        }
    };
    Some(EndpointSpec {
        kind: kind_opt?,
        location: location_opt?,
        zero_dates: zero_dates_opt?,
    })
}

fn read_kind(
    value: &Value,
    path: &str,
    context: &SpecContext<'_>,
    problems: &mut Problems,
) -> Option<String> {
    let kind = read_string(value, path, problems)?;
    if !context.known_kinds.contains(&kind) {
        let available = if context.known_kinds.is_empty() {
            "none in this build".to_owned()
        } else {
            context.known_kinds.join(", ")
        };
        problems.report(
            path,
            format!("unknown connector kind {kind:?}; available: {available}"),
        );
        return None;
    }
    Some(kind.to_owned())
}

fn read_path_location(
    value: &Value,
    path: &str,
    context: &SpecContext<'_>,
    problems: &mut Problems,
) -> Option<Location> {
    let file = read_string(value, path, problems)?;
    if file.is_empty() {
        problems.report(path, "must not be empty");
        return None;
    }
    // `join` keeps an absolute `file` as it is.
    Some(Location::Path(context.base_dir.join(file)))
}

fn is_env_var_name(name: &str) -> bool {
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_');
    starts_well && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn read_env_location(
    value: &Value,
    path: &str,
    context: &SpecContext<'_>,
    problems: &mut Problems,
) -> Option<Location> {
    let Value::String(var) = value else {
        problems.report(
            path,
            format!(
                "expected the name of an environment variable, found {}",
                describe(value)
            ),
        );
        return None;
    };
    if !is_env_var_name(var) {
        // Most likely the URL itself was pasted here; never echo it.
        problems.report(
            path,
            "expected the name of an environment variable (letters, digits and '_', not \
             starting with a digit); put the connection URL in that variable, not in the spec",
        );
        return None;
    }
    match context.env.get(var.as_str()) {
        Some(env_value) if !env_value.is_empty() => Some(Location::Env {
            var: var.clone(),
            value: Secret::new(env_value.as_str()),
        }),
        Some(_) => {
            problems.report(
                path,
                format!("environment variable {var} is empty; export it with the connection URL"),
            );
            None
        }
        None => {
            problems.report(
                path,
                format!("environment variable {var} is not set; export it with the connection URL"),
            );
            None
        }
    }
}

/// Resolves `.` and `..` without touching the file system, so `a/../src.db` and `src.db`
/// compare equal even when the file does not exist yet.
fn normalize_lexically(path: &Path) -> PathBuf {
    let mut normalized = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped = matches!(
                    normalized.components().next_back(),
                    Some(Component::Normal(_))
                ) && normalized.pop();
                if !popped && !normalized.has_root() {
                    normalized.push(Component::ParentDir);
                }
            }
            other => normalized.push(other),
        }
    }
    normalized
}

/// Reports a target that is the same database as the source. Paths are compared after
/// resolving `.` and `..`; environment endpoints by variable name or value.
fn check_distinct_databases(source: &EndpointSpec, target: &EndpointSpec, problems: &mut Problems) {
    match (&source.location, &target.location) {
        (Location::Path(source_path), Location::Path(target_path))
            if normalize_lexically(source_path) == normalize_lexically(target_path) =>
        {
            problems.report(
                "target.path",
                "same database as source.path; ferry never writes to its source",
            );
        }
        (
            Location::Env {
                var: source_var,
                value: source_value,
            },
            Location::Env {
                var: target_var,
                value: target_value,
            },
        ) if source_var == target_var || source_value == target_value => {
            problems.report(
                "target.url_env",
                "same database as source.url_env; ferry never writes to its source",
            );
        }
        _ => {}
    }
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
    Some(TableSelection {
        include: include_opt?,
        exclude: exclude_opt?,
    })
}

/// Reads a list of glob patterns, reporting every invalid item.
fn read_patterns(
    value: &Value,
    path: &str,
    require_non_empty: bool,
    problems: &mut Problems,
) -> Option<Vec<GlobPattern>> {
    let Value::Sequence(items) = value else {
        problems.report(
            path,
            format!(
                "expected a list of table patterns, found {}",
                describe(value)
            ),
        );
        return None;
    };
    if require_non_empty && items.is_empty() {
        problems.report(path, "must list at least one table pattern");
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
                problems.report(
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
    Some(ChunkingSpec {
        target_rows: target_rows_opt?,
    })
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

/// Parses a YAML list of schedule windows, written as in a spec's `throttle.schedule`, for
/// runtime changes of the schedule. On failure returns every problem, with paths such as
/// `throttle.schedule[1].days`; a YAML syntax error is reported alone, with an empty path.
pub fn parse_throttle_schedule(text: &str) -> Result<Vec<ScheduleWindow>, SpecErrors> {
    let root = serde_yaml_ng::from_str::<Value>(text).map_err(|yaml_error| {
        SpecErrors(vec![SpecError {
            path: String::new(),
            message: yaml_error.to_string(),
        }])
    })?;
    let mut problems = Problems::default();
    let schedule_opt = read_schedule(&root, "throttle.schedule", &mut problems);
    match schedule_opt {
        Some(schedule) if problems.errors.is_empty() => Ok(schedule),
        _ => {
            if problems.errors.is_empty() {
                problems.report(
                    "",
                    "internal error: the schedule was rejected without a reason",
                );
            }
            Err(SpecErrors(problems.errors))
        }
    }
}

fn read_throttle(value: &Value, path: &str, problems: &mut Problems) -> Option<ThrottlePolicy> {
    let fields = read_mapping(value, path, THROTTLE_FIELDS, &[], problems)?;
    let timezone_opt = match fields.optional("timezone") {
        Some(zone) => read_time_zone(zone, &fields.path_of("timezone"), problems),
        None => Some(throttle::DEFAULT_TIME_ZONE.to_owned()),
    };
    let concurrency_opt = match fields.optional("default_concurrency") {
        Some(concurrency) => read_positive_u32(
            concurrency,
            &fields.path_of("default_concurrency"),
            MAX_CONCURRENCY,
            problems,
        ),
        None => Some(DEFAULT_CONCURRENCY),
    };
    let schedule_opt = match fields.optional("schedule") {
        Some(schedule) => read_schedule(schedule, &fields.path_of("schedule"), problems),
        None => Some(Vec::new()),
    };
    let load_opt = match fields.optional("load") {
        Some(load) => read_load(load, &fields.path_of("load"), problems).map(Some),
        None => Some(None),
    };
    let rate_opt = match fields.optional("rate") {
        Some(rate) => read_rate(rate, &fields.path_of("rate"), problems),
        None => Some(RateLimits::default()),
    };
    let worker_cpu_max_opt = match fields.optional("worker_cpu_max") {
        Some(percent) => {
            let percent_path = fields.path_of("worker_cpu_max");
            read_number(percent, &percent_path, problems)
                .filter(|percent| {
                    passes(
                        throttle::check_worker_cpu_max(*percent),
                        &percent_path,
                        problems,
                    )
                })
                .map(Some)
        }
        None => Some(None),
    };
    Some(ThrottlePolicy {
        timezone: timezone_opt?,
        default_concurrency: concurrency_opt?,
        schedule: schedule_opt?,
        load: load_opt?,
        rate: rate_opt?,
        worker_cpu_max: worker_cpu_max_opt?,
        // Runtime settings: the operator's, never the spec's.
        max_concurrency_override: None,
        paused: false,
    })
}

/// Reports the outcome of one of [`crate::throttle`]'s rules at `path`; returns whether the
/// value passed.
fn passes(outcome: Result<(), String>, path: &str, problems: &mut Problems) -> bool {
    match outcome {
        Ok(()) => true,
        Err(message) => {
            problems.report(path, message);
            false
        }
    }
}

/// Reads an integer or a float. Strings are type errors, like in [`read_positive_integer`].
fn read_number(value: &Value, path: &str, problems: &mut Problems) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        other => {
            problems.report(
                path,
                format!("expected a number, found {}", describe(other)),
            );
            None
        }
    }
}

fn read_duration_ms(value: &Value, path: &str, problems: &mut Problems) -> Option<u64> {
    let Value::String(text) = value else {
        problems.report(
            path,
            format!(
                "expected a duration such as \"5s\" or \"500ms\", found {}",
                describe(value)
            ),
        );
        return None;
    };
    match throttle::parse_duration_ms(text) {
        Ok(duration_ms) => Some(duration_ms),
        Err(error) => {
            problems.report(path, error.to_string());
            None
        }
    }
}

fn read_time_zone(value: &Value, path: &str, problems: &mut Problems) -> Option<String> {
    let name = read_string(value, path, problems)?;
    match throttle::canonical_time_zone_name(name) {
        Ok(canonical) => Some(canonical),
        Err(error) => {
            problems.report(path, error.to_string());
            None
        }
    }
}

fn read_schedule(
    value: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<Vec<ScheduleWindow>> {
    let Value::Sequence(items) = value else {
        problems.report(
            path,
            format!(
                "expected a list of windows such as {{ days: mon-fri, from: \"08:00\", \
                 to: \"20:00\", max_concurrency: 2 }}, found {}",
                describe(value)
            ),
        );
        return None;
    };
    let mut windows = Vec::with_capacity(items.len());
    let mut all_valid = true;
    for (index, item) in items.iter().enumerate() {
        match read_schedule_window(item, &item_path(path, index), problems) {
            Some(window) => windows.push(window),
            None => all_valid = false,
        }
    }
    all_valid.then_some(windows)
}

fn read_schedule_window(
    value: &Value,
    path: &str,
    problems: &mut Problems,
) -> Option<ScheduleWindow> {
    let fields = read_mapping(value, path, SCHEDULE_WINDOW_FIELDS, &[], problems)?;
    let days_opt = match fields.optional("days") {
        Some(days) => read_days(days, &fields.path_of("days"), problems),
        None => Some(DaySet::ALL),
    };
    let from_path = fields.path_of("from");
    let to_path = fields.path_of("to");
    let from_opt = fields
        .required("from", problems)
        .and_then(|from| read_clock_minute(from, &from_path, problems));
    let to_opt = fields
        .required("to", problems)
        .and_then(|to| read_clock_minute(to, &to_path, problems));
    let max_concurrency_opt =
        fields
            .required("max_concurrency", problems)
            .and_then(|concurrency| {
                read_positive_u32(
                    concurrency,
                    &fields.path_of("max_concurrency"),
                    MAX_CONCURRENCY,
                    problems,
                )
            });
    let (from_minute, to_minute) = (from_opt?, to_opt?);
    let not_empty = throttle::check_window_not_empty(from_minute, to_minute, &from_path);
    if !passes(not_empty, &to_path, problems) {
        return None;
    }
    Some(ScheduleWindow {
        days: days_opt?,
        from_minute,
        to_minute,
        max_concurrency: max_concurrency_opt?,
    })
}

/// Reads `days`: a string such as `mon-fri`, `"sat,sun"` or `daily`, or a list of them.
fn read_days(value: &Value, path: &str, problems: &mut Problems) -> Option<DaySet> {
    let parse_days =
        |text: &str, text_path: &str, problems: &mut Problems| match text.parse::<DaySet>() {
            Ok(days) => Some(days),
            Err(error) => {
                problems.report(text_path, error.to_string());
                None
            }
        };
    match value {
        Value::String(text) => parse_days(text, path, problems),
        Value::Sequence(items) => {
            let mut union = DaySet(0);
            let mut all_valid = true;
            for (index, item) in items.iter().enumerate() {
                let day_path = item_path(path, index);
                let days_opt = read_string(item, &day_path, problems)
                    .and_then(|text| parse_days(text, &day_path, problems));
                match days_opt {
                    Some(days) => union = DaySet(union.0 | days.0),
                    None => all_valid = false,
                }
            }
            if !all_valid {
                return None;
            }
            passes(throttle::check_days(union), path, problems).then_some(union)
        }
        other => {
            problems.report(
                path,
                format!(
                    "expected days such as \"mon-fri\", \"sat,sun\" or \"daily\", found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

fn read_clock_minute(value: &Value, path: &str, problems: &mut Problems) -> Option<u16> {
    let Value::String(text) = value else {
        problems.report(
            path,
            format!(
                "expected a time such as \"08:00\" (quoted), found {}",
                describe(value)
            ),
        );
        return None;
    };
    match throttle::parse_clock_minute(text) {
        Ok(minute_of_day) => Some(minute_of_day),
        Err(error) => {
            problems.report(path, error.to_string());
            None
        }
    }
}

fn read_load(value: &Value, path: &str, problems: &mut Problems) -> Option<LoadPolicy> {
    let fields = read_mapping(value, path, LOAD_FIELDS, &[], problems)?;
    let probe_opt = match fields.optional("probe") {
        Some(probe) => read_load_probe(probe, &fields.path_of("probe"), problems),
        None => Some(LoadProbe::Builtin),
    };
    let interval_path = fields.path_of("interval");
    let interval_ms_opt = match fields.optional("interval") {
        Some(interval) => {
            read_duration_ms(interval, &interval_path, problems).filter(|interval_ms| {
                passes(
                    throttle::check_load_interval(*interval_ms),
                    &interval_path,
                    problems,
                )
            })
        }
        None => Some(DEFAULT_LOAD_INTERVAL_MS),
    };
    let max_path = fields.path_of("max");
    let max_opt = fields
        .required("max", problems)
        .and_then(|max| read_number(max, &max_path, problems))
        .filter(|max| passes(throttle::check_load_max(*max), &max_path, problems));
    let critical_path = fields.path_of("critical");
    let critical_opt = fields
        .required("critical", problems)
        .and_then(|critical| read_number(critical, &critical_path, problems))
        .filter(|critical| {
            let outcome = throttle::check_load_critical(max_opt, *critical, &max_path);
            passes(outcome, &critical_path, problems)
        });
    let pause_timeout_path = fields.path_of("pause_timeout");
    let pause_timeout_ms_opt = match fields.optional("pause_timeout") {
        Some(timeout) => read_duration_ms(timeout, &pause_timeout_path, problems),
        None => Some(DEFAULT_PAUSE_TIMEOUT_MS),
    };
    if let (Some(interval_ms), Some(pause_timeout_ms)) = (interval_ms_opt, pause_timeout_ms_opt) {
        let outcome = throttle::check_pause_timeout(interval_ms, pause_timeout_ms, &interval_path);
        if !passes(outcome, &pause_timeout_path, problems) {
            return None;
        }
    }
    Some(LoadPolicy {
        probe: probe_opt?,
        interval_ms: interval_ms_opt?,
        max: max_opt?,
        critical: critical_opt?,
        pause_timeout_ms: pause_timeout_ms_opt?,
    })
}

/// Reads `probe`: `builtin`, or `{ sql: "SELECT ..." }`.
fn read_load_probe(value: &Value, path: &str, problems: &mut Problems) -> Option<LoadProbe> {
    match value {
        Value::String(name) if name == "builtin" => Some(LoadProbe::Builtin),
        Value::Mapping(_) => {
            let fields = read_mapping(value, path, LOAD_SQL_PROBE_FIELDS, &[], problems)?;
            let sql_path = fields.path_of("sql");
            let query = fields
                .required("sql", problems)
                .and_then(|query| read_string(query, &sql_path, problems))?;
            passes(throttle::check_sql_probe(query), &sql_path, problems)
                .then(|| LoadProbe::Sql(query.to_owned()))
        }
        other => {
            problems.report(
                path,
                format!(
                    "expected builtin or {{ sql: \"SELECT ...\" }}, found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

fn read_rate(value: &Value, path: &str, problems: &mut Problems) -> Option<RateLimits> {
    let fields = read_mapping(value, path, RATE_FIELDS, &[], problems)?;
    let mut read_rate_field = |key: &str| match fields.optional(key) {
        Some(per_sec) => {
            read_positive_integer(per_sec, &fields.path_of(key), u64::MAX, problems).map(Some)
        }
        None => Some(None),
    };
    let rows_per_sec_opt = read_rate_field("rows_per_sec");
    let bytes_per_sec_opt = read_rate_field("bytes_per_sec");
    Some(RateLimits {
        rows_per_sec: rows_per_sec_opt?,
        bytes_per_sec: bytes_per_sec_opt?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    const SOURCE_SECRET: &str = "postgres://alice:hunter2@db.internal/src";

    fn test_env() -> HashMap<String, String> {
        HashMap::from([
            ("SRC_URL".to_owned(), SOURCE_SECRET.to_owned()),
            (
                "TARGET_DB".to_owned(),
                "/var/lib/ferry/target.db".to_owned(),
            ),
            ("EMPTY_URL".to_owned(), String::new()),
        ])
    }

    fn parse_with_env(yaml: &str, env: &HashMap<String, String>) -> Result<JobSpec, SpecErrors> {
        let context = SpecContext {
            base_dir: Path::new("/jobs"),
            env,
            known_kinds: &["sqlite"],
        };
        JobSpec::parse(yaml, &context)
    }

    fn parse(yaml: &str) -> Result<JobSpec, SpecErrors> {
        parse_with_env(yaml, &test_env())
    }

    fn errors_of(yaml: &str) -> Vec<(String, String)> {
        match parse(yaml) {
            Ok(spec) => panic!("expected errors, got {spec:?}"),
            Err(SpecErrors(errors)) => errors
                .into_iter()
                .map(|error| (error.path, error.message))
                .collect(),
        }
    }

    fn paths_of(yaml: &str) -> Vec<String> {
        errors_of(yaml).into_iter().map(|(path, _)| path).collect()
    }

    /// A valid spec with `replacement` substituted for the first line starting with
    /// `key_line`, or appended when `key_line` is empty.
    fn spec_with(key_line: &str, replacement: &str) -> String {
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

    fn single_error(yaml: &str) -> (String, String) {
        let errors = errors_of(yaml);
        assert_eq!(errors.len(), 1, "expected exactly one error: {errors:?}");
        errors.into_iter().next().unwrap()
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
                target_rows: 10_000
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
    fn empty_optional_sections_get_defaults() {
        let spec = parse(&spec_with("", "chunking:\nverify: {}\nthrottle: {}\n")).unwrap();
        assert_eq!(spec.chunking, ChunkingSpec::default());
        assert_eq!(spec.verify, VerifySpec::default());
        assert_eq!(spec.throttle, ThrottlePolicy::default());
    }

    #[test]
    fn relative_paths_are_joined_to_base_dir_and_absolute_ones_kept() {
        let yaml = spec_with("  path: dst.db", "  path: /srv/data/dst.db");
        let spec = parse(&yaml).unwrap();
        assert_eq!(
            spec.source.location,
            Location::Path(PathBuf::from("/jobs/src.db"))
        );
        assert_eq!(
            spec.target.location,
            Location::Path(PathBuf::from("/srv/data/dst.db"))
        );
    }

    #[test]
    fn env_location_keeps_the_value_secret() {
        let yaml = spec_with("  path: src.db", "  url_env: SRC_URL");
        let spec = parse(&yaml).unwrap();
        let Location::Env { var, value } = &spec.source.location else {
            panic!("expected an env location: {:?}", spec.source.location);
        };
        assert_eq!(var, "SRC_URL");
        assert_eq!(value.expose(), SOURCE_SECRET);
        assert_eq!(format!("{value}"), "<redacted>");
        assert_eq!(format!("{value:?}"), "<redacted>");
        let spec_debug = format!("{spec:?}");
        assert!(!spec_debug.contains("hunter2"), "{spec_debug}");
        assert!(spec_debug.contains("<redacted>"));
    }

    #[test]
    fn context_debug_shows_env_names_but_not_values() {
        let env = test_env();
        let context = SpecContext {
            base_dir: Path::new("/jobs"),
            env: &env,
            known_kinds: &["sqlite"],
        };
        let context_debug = format!("{context:?}");
        assert!(context_debug.contains("SRC_URL"));
        assert!(!context_debug.contains("hunter2"));
    }

    #[test]
    fn selection_matches_qualified_or_bare_names() {
        let yaml = spec_with(
            "  include: [orders]",
            "  include: [\"main.ord*\", \"cust*\"]\n  exclude: [\"*_tmp\", \"audit.*\"]",
        );
        let tables = parse(&yaml).unwrap().tables;
        assert!(tables.selects("main.orders", "orders"));
        assert!(!tables.selects("archive.orders", "orders"));
        assert!(tables.selects("anything.customers", "customers"));
        assert!(!tables.selects("main.customers_tmp", "customers_tmp"));
        assert!(!tables.selects("audit.customers", "customers"));
        assert!(!tables.selects("main.items", "items"));
    }

    #[test]
    fn fingerprint_is_stable_and_tracks_only_the_plan() {
        let base = parse(&spec_with("", "")).unwrap();
        let fingerprint = base.fingerprint();
        assert_eq!(fingerprint.len(), 16);
        assert!(fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            fingerprint,
            parse(&spec_with("", "")).unwrap().fingerprint()
        );
        // Pinned: a change here breaks resuming jobs planned by an earlier build.
        assert_eq!(fingerprint, "a50128172aa57f49");

        let renamed = parse(&spec_with("name:", "name: other\nverify: {mode: none}")).unwrap();
        assert_eq!(renamed.fingerprint(), fingerprint);

        let rechunked = parse(&spec_with("", "chunking: {target_rows: 1000}\n")).unwrap();
        assert_ne!(rechunked.fingerprint(), fingerprint);
        let retabled = parse(&spec_with("  include: [orders]", "  include: [items]")).unwrap();
        assert_ne!(retabled.fingerprint(), fingerprint);
    }

    #[test]
    fn fingerprint_follows_where_the_env_var_points_but_not_its_password() {
        let yaml = spec_with("  path: src.db", "  url_env: SRC_URL");
        let first = parse(&yaml).unwrap();
        let mut env = test_env();
        let original = env["SRC_URL"].clone();
        // Another password for the same database: the same job.
        let at = original.rfind('@').unwrap();
        let scheme_end = original.find("://").unwrap() + 3;
        let user = original[scheme_end..at]
            .split(':')
            .next()
            .unwrap()
            .to_owned();
        let same_database = format!(
            "{}{user}:another@{}",
            &original[..scheme_end],
            &original[at + 1..]
        );
        env.insert("SRC_URL".to_owned(), same_database);
        assert_eq!(
            first.fingerprint(),
            parse_with_env(&yaml, &env).unwrap().fingerprint()
        );
        // Another database: another job, and the state file refuses to resume it.
        env.insert(
            "SRC_URL".to_owned(),
            "postgres://bob:other@db/src".to_owned(),
        );
        assert_ne!(
            first.fingerprint(),
            parse_with_env(&yaml, &env).unwrap().fingerprint()
        );
        assert!(!format!("{:?}", first.fingerprint()).contains("other"));
    }

    #[test]
    fn errors_display_one_per_line() {
        let errors = SpecErrors(vec![
            SpecError {
                path: String::new(),
                message: "whole document".to_owned(),
            },
            SpecError {
                path: "name".to_owned(),
                message: "missing required field".to_owned(),
            },
        ]);
        assert_eq!(
            errors.to_string(),
            "whole document\nname: missing required field"
        );
    }

    // Bad specs: each asserts the exact field path(s) reported.

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
    fn missing_source_is_reported() {
        let yaml = "name: n\ntarget: {kind: sqlite, path: dst.db}\ntables: {include: [t]}\n";
        assert_eq!(
            single_error(yaml),
            ("source".to_owned(), "missing required field".to_owned())
        );
    }

    #[test]
    fn source_given_as_url_is_reported_without_echoing_it() {
        let yaml = "name: n\nsource: postgres://u:pw@h/db\ntarget: {kind: sqlite, path: dst.db}\n\
                    tables: {include: [t]}\n";
        assert_eq!(
            single_error(yaml),
            (
                "source".to_owned(),
                "expected a mapping with kind and path or url_env, found a string".to_owned()
            )
        );
    }

    #[test]
    fn unknown_kind_lists_available_kinds() {
        let yaml = spec_with("  kind: sqlite", "  kind: postgress");
        assert_eq!(
            single_error(&yaml),
            (
                "source.kind".to_owned(),
                "unknown connector kind \"postgress\"; available: sqlite".to_owned()
            )
        );
    }

    #[test]
    fn missing_kind_is_reported() {
        let yaml = spec_with("  kind: sqlite", "");
        assert_eq!(paths_of(&yaml), ["source.kind"]);
    }

    #[test]
    fn both_path_and_url_env_is_reported_on_the_endpoint() {
        let yaml = spec_with("  path: src.db", "  path: src.db\n  url_env: SRC_URL");
        let (path, message) = single_error(&yaml);
        assert_eq!(path, "source");
        assert!(
            message.contains("exactly one of path or url_env"),
            "{message}"
        );
    }

    #[test]
    fn neither_path_nor_url_env_is_reported_on_the_endpoint() {
        let yaml = spec_with("  path: dst.db", "");
        let (path, message) = single_error(&yaml);
        assert_eq!(path, "target");
        assert!(message.starts_with("missing location"), "{message}");
    }

    #[test]
    fn missing_env_var_is_named_without_leaking_other_values() {
        let yaml = spec_with("  path: dst.db", "  url_env: TGT_URL");
        let (path, message) = single_error(&yaml);
        assert_eq!(path, "target.url_env");
        assert_eq!(
            message,
            "environment variable TGT_URL is not set; export it with the connection URL"
        );
        let all_text = format!("{}", parse(&yaml).unwrap_err());
        assert!(!all_text.contains("hunter2"), "{all_text}");
        assert!(!all_text.contains(SOURCE_SECRET));
    }

    #[test]
    fn empty_env_var_is_reported() {
        let yaml = spec_with("  path: dst.db", "  url_env: EMPTY_URL");
        let (path, message) = single_error(&yaml);
        assert_eq!(path, "target.url_env");
        assert!(message.contains("EMPTY_URL is empty"), "{message}");
    }

    #[test]
    fn url_pasted_into_url_env_is_not_echoed() {
        let yaml = spec_with("  path: dst.db", "  url_env: \"postgres://u:pw@h/db\"");
        let (path, message) = single_error(&yaml);
        assert_eq!(path, "target.url_env");
        assert!(!message.contains("pw@h"), "{message}");
    }

    #[test]
    fn unknown_top_level_field_is_reported() {
        let yaml = spec_with("", "chunk_size: 10\n");
        assert_eq!(
            single_error(&yaml),
            (
                "chunk_size".to_owned(),
                "unknown field; expected one of: name, source, target, tables, schema, \
                 chunking, verify, throttle, columns"
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
                "unknown field; expected one of: include, exclude".to_owned()
            )
        );
    }

    #[test]
    fn unknown_endpoint_field_is_reported() {
        let yaml = spec_with("  path: src.db", "  path: src.db\n  url: x");
        assert_eq!(paths_of(&yaml), ["source.url"]);
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

    const FULL_THROTTLE: &str = "\
throttle:
  timezone: America/New_York
  default_concurrency: 16
  schedule:
    - { days: mon-fri, from: \"08:00\", to: \"20:00\", max_concurrency: 2 }
    - { days: \"sat,sun\", from: \"22:00\", to: \"06:00\", max_concurrency: 32 }
    - days: [mon, Wed-thu]
      from: 12:00
      to: \"24:00\"
      max_concurrency: 3
  load:
    probe: builtin
    interval: 5s
    max: 25
    critical: 60.5
    pause_timeout: 10m
  rate: { rows_per_sec: 200000, bytes_per_sec: 50000000 }
  worker_cpu_max: 85
";

    /// [`FULL_THROTTLE`] with one line replaced: `old` must occur exactly once.
    fn throttle_with(old: &str, new: &str) -> String {
        assert_eq!(FULL_THROTTLE.matches(old).count(), 1, "{old:?}");
        spec_with("", &FULL_THROTTLE.replace(old, new))
    }

    fn throttle_error(old: &str, new: &str) -> (String, String) {
        single_error(&throttle_with(old, new))
    }

    #[test]
    fn full_throttle_block_parses_every_field() {
        let throttle = parse(&spec_with("", FULL_THROTTLE)).unwrap().throttle;
        assert_eq!(
            throttle,
            ThrottlePolicy {
                timezone: "America/New_York".to_owned(),
                default_concurrency: 16,
                schedule: vec![
                    ScheduleWindow {
                        days: DaySet(0b001_1111),
                        from_minute: 8 * 60,
                        to_minute: 20 * 60,
                        max_concurrency: 2,
                    },
                    ScheduleWindow {
                        days: DaySet(0b110_0000),
                        from_minute: 22 * 60,
                        to_minute: 6 * 60,
                        max_concurrency: 32,
                    },
                    ScheduleWindow {
                        days: DaySet(0b000_1101),
                        from_minute: 12 * 60,
                        to_minute: 24 * 60,
                        max_concurrency: 3,
                    },
                ],
                load: Some(LoadPolicy {
                    probe: LoadProbe::Builtin,
                    interval_ms: 5_000,
                    max: 25.0,
                    critical: 60.5,
                    pause_timeout_ms: 600_000,
                }),
                rate: RateLimits {
                    rows_per_sec: Some(200_000),
                    bytes_per_sec: Some(50_000_000),
                },
                worker_cpu_max: Some(85.0),
                max_concurrency_override: None,
                paused: false,
            }
        );
        assert_eq!(throttle.validate(), Ok(()));
    }

    #[test]
    fn throttle_defaults_and_sql_probe() {
        let yaml = spec_with(
            "",
            "throttle:\n  timezone: europe/paris\n  schedule:\n    \
             - { from: \"01:00\", to: \"05:00\", max_concurrency: 8 }\n  \
             load: { probe: { sql: \"SELECT count(*) FROM pg_stat_activity\" }, max: 0.5, \
             critical: 1 }\n",
        );
        let throttle = parse(&yaml).unwrap().throttle;
        assert_eq!(throttle.timezone, "Europe/Paris");
        assert_eq!(throttle.default_concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(throttle.schedule[0].days, DaySet::ALL);
        assert_eq!(
            throttle.load,
            Some(LoadPolicy {
                probe: LoadProbe::Sql("SELECT count(*) FROM pg_stat_activity".to_owned()),
                interval_ms: DEFAULT_LOAD_INTERVAL_MS,
                max: 0.5,
                critical: 1.0,
                pause_timeout_ms: DEFAULT_PAUSE_TIMEOUT_MS,
            })
        );
        assert_eq!(throttle.rate, RateLimits::default());
        assert_eq!(throttle.worker_cpu_max, None);
        let minimal = parse(&spec_with("", "")).unwrap().throttle;
        assert_eq!(minimal.timezone, "UTC");
        assert!(minimal.schedule.is_empty() && minimal.load.is_none());
    }

    #[test]
    fn unknown_time_zone_is_reported() {
        assert_eq!(
            throttle_error("timezone: America/New_York", "timezone: Mars/Base"),
            (
                "throttle.timezone".to_owned(),
                "unknown time zone \"Mars/Base\"; use an IANA name such as America/New_York \
                 or UTC"
                    .to_owned()
            )
        );
    }

    #[test]
    fn bad_days_are_reported_at_their_window() {
        assert_eq!(
            throttle_error("days: \"sat,sun\"", "days: \"sat,sunday\""),
            (
                "throttle.schedule[1].days".to_owned(),
                "invalid days \"sat,sunday\": unknown day \"sunday\"; use mon, tue, wed, thu, \
                 fri, sat, sun, a range such as mon-fri, a list such as sat,sun, or daily"
                    .to_owned()
            )
        );
        let (path, message) = throttle_error("days: [mon, Wed-thu]", "days: [mon, 3]");
        assert_eq!(path, "throttle.schedule[2].days[1]");
        assert_eq!(message, "expected a string, found integer 3");
        assert_eq!(
            throttle_error("days: [mon, Wed-thu]", "days: []"),
            (
                "throttle.schedule[2].days".to_owned(),
                "must name at least one day; use mon, tue, wed, thu, fri, sat, sun, a range \
                 such as mon-fri, a list such as sat,sun, or daily"
                    .to_owned()
            )
        );
    }

    #[test]
    fn bad_clock_times_are_reported() {
        assert_eq!(
            throttle_error("from: \"08:00\"", "from: \"8am\""),
            (
                "throttle.schedule[0].from".to_owned(),
                "invalid time \"8am\"; expected \"HH:MM\" from 00:00 to 24:00".to_owned()
            )
        );
        assert_eq!(
            throttle_error("to: \"24:00\"", "to: \"24:30\""),
            (
                "throttle.schedule[2].to".to_owned(),
                "invalid time \"24:30\"; expected \"HH:MM\" from 00:00 to 24:00".to_owned()
            )
        );
        assert_eq!(
            throttle_error("from: 12:00", "from: 1200"),
            (
                "throttle.schedule[2].from".to_owned(),
                "expected a time such as \"08:00\" (quoted), found integer 1200".to_owned()
            )
        );
    }

    #[test]
    fn empty_window_is_reported_on_its_end() {
        assert_eq!(
            throttle_error("to: \"06:00\"", "to: \"22:00\""),
            (
                "throttle.schedule[1].to".to_owned(),
                "must differ from throttle.schedule[1].from (22:00); for a whole day use 00:00 \
                 to 24:00"
                    .to_owned()
            )
        );
    }

    #[test]
    fn missing_window_fields_and_bad_window_concurrency_are_reported() {
        let yaml = spec_with(
            "",
            "throttle:\n  schedule:\n    - { days: mon }\n    \
             - { from: \"01:00\", to: \"02:00\", max_concurrency: 2000, size: 1 }\n",
        );
        assert_eq!(
            paths_of(&yaml),
            [
                "throttle.schedule[0].from",
                "throttle.schedule[0].to",
                "throttle.schedule[0].max_concurrency",
                "throttle.schedule[1].size",
                "throttle.schedule[1].max_concurrency",
            ]
        );
        let not_a_list = spec_with("", "throttle:\n  schedule: \"0 2 * * *\"\n");
        assert_eq!(paths_of(&not_a_list), ["throttle.schedule"]);
    }

    #[test]
    fn critical_not_above_max_is_reported() {
        assert_eq!(
            throttle_error("critical: 60.5", "critical: 25"),
            (
                "throttle.load.critical".to_owned(),
                "must be greater than throttle.load.max".to_owned()
            )
        );
    }

    #[test]
    fn bad_load_max_and_probe_are_reported() {
        assert_eq!(
            throttle_error("max: 25", "max: 0"),
            (
                "throttle.load.max".to_owned(),
                "must be greater than 0".to_owned()
            )
        );
        assert_eq!(
            throttle_error("max: 25", "max: \"25\""),
            (
                "throttle.load.max".to_owned(),
                "expected a number, found string \"25\"".to_owned()
            )
        );
        assert_eq!(
            throttle_error("probe: builtin", "probe: threads_running"),
            (
                "throttle.load.probe".to_owned(),
                "expected builtin or { sql: \"SELECT ...\" }, found string \"threads_running\""
                    .to_owned()
            )
        );
        assert_eq!(
            throttle_error("probe: builtin", "probe: { sql: \" \" }"),
            (
                "throttle.load.probe.sql".to_owned(),
                "must not be empty".to_owned()
            )
        );
        let missing = throttle_with("    max: 25\n    critical: 60.5\n", "");
        assert_eq!(
            paths_of(&missing),
            ["throttle.load.max", "throttle.load.critical"]
        );
    }

    #[test]
    fn bad_durations_are_reported() {
        assert_eq!(
            throttle_error("interval: 5s", "interval: 5"),
            (
                "throttle.load.interval".to_owned(),
                "expected a duration such as \"5s\" or \"500ms\", found integer 5".to_owned()
            )
        );
        assert_eq!(
            throttle_error("interval: 5s", "interval: 5 parsecs"),
            (
                "throttle.load.interval".to_owned(),
                "invalid duration \"5 parsecs\": unknown unit \"parsecs\"; use ms, s, m or h"
                    .to_owned()
            )
        );
        assert_eq!(
            throttle_error("interval: 5s", "interval: 50ms"),
            (
                "throttle.load.interval".to_owned(),
                "must be at least 100ms".to_owned()
            )
        );
        assert_eq!(
            throttle_error("pause_timeout: 10m", "pause_timeout: 2s"),
            (
                "throttle.load.pause_timeout".to_owned(),
                "must be at least throttle.load.interval (5s)".to_owned()
            )
        );
        assert_eq!(
            throttle_error("pause_timeout: 10m", "pause_timeout: 10"),
            (
                "throttle.load.pause_timeout".to_owned(),
                "expected a duration such as \"5s\" or \"500ms\", found integer 10".to_owned()
            )
        );
    }

    #[test]
    fn bad_rates_are_reported() {
        assert_eq!(
            throttle_error("rows_per_sec: 200000", "rows_per_sec: 0"),
            (
                "throttle.rate.rows_per_sec".to_owned(),
                "must be at least 1".to_owned()
            )
        );
        assert_eq!(
            throttle_error("bytes_per_sec: 50000000", "bytes_per_sec: 5e7"),
            (
                "throttle.rate.bytes_per_sec".to_owned(),
                "expected a positive integer, found float 50000000.0".to_owned()
            )
        );
        assert_eq!(
            paths_of(&throttle_with("rows_per_sec: 200000", "rows: 1")),
            ["throttle.rate.rows"]
        );
    }

    #[test]
    fn bad_worker_cpu_max_is_reported() {
        for bad in ["0", "100.5", "-5"] {
            assert_eq!(
                throttle_error("worker_cpu_max: 85", &format!("worker_cpu_max: {bad}")),
                (
                    "throttle.worker_cpu_max".to_owned(),
                    "must be a percentage from 1 to 100".to_owned()
                ),
                "{bad}"
            );
        }
        let percent = parse(&throttle_with("worker_cpu_max: 85", "worker_cpu_max: 99.5"));
        assert_eq!(percent.unwrap().throttle.worker_cpu_max, Some(99.5));
    }

    #[test]
    fn runtime_schedule_parses_alone_with_spec_paths() {
        let schedule = parse_throttle_schedule(
            "- { days: mon-fri, from: \"08:00\", to: \"20:00\", max_concurrency: 2 }\n",
        )
        .unwrap();
        assert_eq!(schedule.len(), 1);
        assert_eq!(schedule[0].to_string(), "mon-fri 08:00-20:00");
        assert_eq!(parse_throttle_schedule("[]\n").unwrap(), []);
        let errors = parse_throttle_schedule(
            "- { days: mon, from: \"08:00\", to: \"20:00\", max_concurrency: 2 }\n\
             - { days: moon, from: \"08:00\", to: \"20:00\", max_concurrency: 2 }\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = errors.0.iter().map(|error| error.path.as_str()).collect();
        assert_eq!(paths, ["throttle.schedule[1].days"]);
        let syntax = parse_throttle_schedule("- {unclosed\n").unwrap_err();
        assert_eq!(syntax.0[0].path, "");
    }

    #[test]
    fn runtime_only_throttle_fields_are_unknown_in_a_spec() {
        let yaml = spec_with("", "throttle:\n  paused: true\n");
        assert_eq!(
            single_error(&yaml),
            (
                "throttle.paused".to_owned(),
                "unknown field; expected one of: timezone, default_concurrency, schedule, load, \
                 rate, worker_cpu_max"
                    .to_owned()
            )
        );
    }

    #[test]
    fn every_throttle_mistake_is_reported_at_once() {
        let yaml = spec_with(
            "",
            "throttle:\n  timezone: Nowhere\n  default_concurrency: 2000\n  schedule:\n    \
             - { days: someday, from: \"25:00\", to: \"01:00\", max_concurrency: 0 }\n  \
             load: { interval: 1x, max: -1, critical: .inf }\n  worker_cpu_max: high\n",
        );
        assert_eq!(
            paths_of(&yaml),
            [
                "throttle.timezone",
                "throttle.default_concurrency",
                "throttle.schedule[0].days",
                "throttle.schedule[0].from",
                "throttle.schedule[0].max_concurrency",
                "throttle.load.interval",
                "throttle.load.max",
                "throttle.load.critical",
                "throttle.worker_cpu_max",
            ]
        );
    }

    #[test]
    fn passwords_are_removed_from_fingerprinted_locations() {
        assert_eq!(
            without_password("postgres://u:s3cret@h:5432/db?x=1"),
            "postgres://u@h:5432/db?x=1"
        );
        assert_eq!(without_password("mysql://root@h/db"), "mysql://root@h/db");
        assert_eq!(without_password("/var/lib/t.db"), "/var/lib/t.db");
        assert_eq!(
            without_password("postgres://u:p@ss@h/db"),
            "postgres://u@h/db"
        );
    }

    #[test]
    fn zero_dates_applies_to_mysql_sources_only() {
        let context_kinds = ["sqlite", "mysql"];
        let env = test_env();
        let base = Path::new("/jobs");
        let context = SpecContext {
            base_dir: base,
            env: &env,
            known_kinds: &context_kinds,
        };
        let spec = JobSpec::parse(
            "name: z\nsource: { kind: mysql, url_env: SRC_URL, zero_dates: null }\ntarget: { kind: sqlite, path: t.db }\ntables: { include: [t] }\n",
            &context,
        )
        .expect("valid");
        assert_eq!(spec.source.zero_dates, Some(ZeroDates::Null));
        let errors = JobSpec::parse(
            "name: z\nsource: { kind: sqlite, path: s.db, zero_dates: null }\ntarget: { kind: mysql, url_env: SRC_URL, zero_dates: maybe }\ntables: { include: [t] }\n",
            &context,
        )
        .expect_err("invalid");
        let paths: Vec<&str> = errors.0.iter().map(|error| error.path.as_str()).collect();
        assert_eq!(paths, vec!["source.zero_dates", "target.zero_dates"]);
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
    fn default_concurrency_zero_is_reported() {
        let yaml = spec_with("", "throttle:\n  default_concurrency: 0\n");
        assert_eq!(
            single_error(&yaml),
            (
                "throttle.default_concurrency".to_owned(),
                "must be at least 1".to_owned()
            )
        );
    }

    #[test]
    fn same_path_for_source_and_target_is_reported() {
        let yaml = spec_with("  path: dst.db", "  path: ./sub/../src.db");
        assert_eq!(
            single_error(&yaml),
            (
                "target.path".to_owned(),
                "same database as source.path; ferry never writes to its source".to_owned()
            )
        );
    }

    #[test]
    fn same_env_var_for_source_and_target_is_reported() {
        let yaml = spec_with("  path: src.db", "  url_env: SRC_URL");
        let yaml = yaml.replace("  path: dst.db", "  url_env: SRC_URL");
        assert_eq!(paths_of(&yaml), ["target.url_env"]);
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
