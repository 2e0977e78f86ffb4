//! The job spec's types: what a parsed and validated spec says.

use std::collections::BTreeMap;

use crate::glob::GlobPattern;
use crate::throttle::ThrottlePolicy;

use super::endpoints::EndpointSpec;
use super::{DEFAULT_MAX_ATTEMPTS, DEFAULT_TARGET_ROWS};

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
    /// How the job rides out an unavailable database.
    pub resilience: ResilienceSpec,
    /// How much work runs at once, and when: the job's initial throttle policy.
    pub throttle: ThrottlePolicy,
    /// Target column types chosen by the user, by source column: `"orders.amount"` or
    /// `"public.orders.amount"` → the target's type, e.g. `DECIMAL(20,4)`.
    pub columns: ColumnOverrides,
    /// What the job does with each chunk: copy it (the default), only compare both
    /// sides (`ferryctl verify`, `ferryctl submit --verify-only`), or catch it up (one
    /// pass of `ferryctl sync`).
    pub mode: JobMode,
    /// The parameters of one sync pass (`sync:`), set by `ferryctl sync` on each pass's
    /// job; empty otherwise. Not part of the fingerprint.
    pub sync: SyncPassSpec,
    /// The watermark column `ferryctl sync` catches up by (`watermark:` in the spec);
    /// `None`: every table is synced by checksum-and-repair passes.
    pub watermark: Option<WatermarkSpec>,
    /// Which point in time of the source the job's chunks read (`consistency:`).
    pub consistency: Consistency,
}

/// Which point in time of the source a job reads (`consistency:` in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Each chunk is read in one consistent snapshot of its own (one statement): rows
    /// written while the job runs are in the chunks read after them.
    #[default]
    Chunk,
    /// The whole job reads one snapshot of the source, exported when its run starts and
    /// imported by every chunk read (PostgreSQL sources only).
    JobSnapshot,
}

impl Consistency {
    /// Returns the spelling used in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Chunk => "chunk",
            Consistency::JobSnapshot => "job_snapshot",
        }
    }
}

/// `watermark: { column: updated_at, lag: 30s }`: the column (a timestamp, set by every
/// insert and update) that `ferryctl sync` reads changed rows by, in every table that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// The column's name.
    pub column: String,
    /// How far behind the last pass's high-water mark each pass reads again, for
    /// transactions that commit late and for clock skew between writers.
    pub lag_ms: u64,
}

/// The default `watermark.lag`.
pub const DEFAULT_WATERMARK_LAG_MS: u64 = 30_000;

/// `sync: { since: { public.orders: 1765045200000000 } }`: what one sync pass reads, set
/// by `ferryctl sync` on the spec of each pass's job (a user does not write it): per table
/// (qualified name, as the source names it), the watermark from which the pass reads
/// changed rows, in microseconds since 1970-01-01 UTC: the last pass's high-water mark
/// minus `watermark.lag`. A table not listed has no mark yet: its every row is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPassSpec {
    /// Per qualified table name: read rows whose watermark is at or past this.
    pub since: BTreeMap<String, i64>,
}

/// What a job does with each chunk (`mode:` in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobMode {
    /// Copy with overwrite, then verify.
    #[default]
    Copy,
    /// Count and checksum both sides; write nothing to the target.
    Verify,
    /// One sync pass: catch the chunk's range up (a watermark table: changed rows
    /// newer-wins, then deletes by a keyed diff; any other: checksum both sides and
    /// re-copy the range when they differ). Idempotent, so a lost attempt runs again.
    Sync,
}

impl JobMode {
    /// Returns the spelling used in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            JobMode::Copy => "copy",
            JobMode::Verify => "verify",
            JobMode::Sync => "sync",
        }
    }
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

/// Which tables a job copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSelection {
    /// Patterns selecting tables; at least one.
    pub include: Vec<GlobPattern>,
    /// Patterns removing tables from the selection.
    pub exclude: Vec<GlobPattern>,
    /// Tables without a usable key cut into hash buckets of a column (`tables.split`),
    /// by table name as written (`schema.table` or `table`).
    pub split: BTreeMap<String, HashSplitSpec>,
}

/// Most buckets a `tables.split` entry may ask for.
pub const MAX_SPLIT_BUCKETS: u32 = 4096;

/// One `tables.split` entry: the column whose hash cuts a keyless table into buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashSplitSpec {
    /// The column hashed.
    pub column: String,
    /// How many buckets (and chunks), 2 to [`MAX_SPLIT_BUCKETS`].
    pub buckets: u32,
}

impl TableSelection {
    /// Returns the `tables.split` entry of a table, written as `schema.table` or `table`.
    pub fn split_of(&self, qualified: &str, bare: &str) -> Option<&HashSplitSpec> {
        self.split.get(qualified).or_else(|| self.split.get(bare))
    }

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
    /// Rows the planner aims for per chunk, 1 to [`MAX_TARGET_ROWS`](super::MAX_TARGET_ROWS).
    pub target_rows: u64,
    /// Whether the scheduler cuts a planned chunk that never started into pieces on its
    /// key when it is far bigger than its share of the work left, so that workers do not
    /// sit idle while it runs (`chunking.split_idle`, on by default).
    pub split_idle: bool,
    /// Whether a target table ferry creates in the job (missing, or `schema: recreate`)
    /// is loaded without its primary key, the key built once every chunk of the table is
    /// copied and the chunks verified after it (`chunking.defer_key`, on by default). It
    /// applies only where the target engine gains from it (PostgreSQL: B-tree inserts
    /// cost more than one sorted build); elsewhere tables are loaded keyed as before.
    pub defer_key: bool,
}

impl Default for ChunkingSpec {
    fn default() -> Self {
        ChunkingSpec {
            target_rows: DEFAULT_TARGET_ROWS,
            split_idle: true,
            defer_key: true,
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

/// How a job rides out a database that does not answer (`resilience:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResilienceSpec {
    /// How long the job waits for an unavailable database before it pauses (not fails)
    /// with the reason, for an operator to resume later. Milliseconds.
    pub outage_timeout_ms: u64,
}

/// The default `resilience.outage_timeout`: 30 minutes (a managed failover takes
/// 30–120 s, a restart or a minor upgrade a few minutes).
pub const DEFAULT_OUTAGE_TIMEOUT_MS: u64 = 30 * 60 * 1000;

impl Default for ResilienceSpec {
    fn default() -> Self {
        Self {
            outage_timeout_ms: DEFAULT_OUTAGE_TIMEOUT_MS,
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
    /// Copy attempts per chunk, 1 to [`MAX_MAX_ATTEMPTS`](super::MAX_MAX_ATTEMPTS).
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use crate::spec::test_support::*;

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
}
