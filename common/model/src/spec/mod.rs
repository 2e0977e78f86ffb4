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
//! consistency: chunk                   # | job_snapshot (PostgreSQL sources)
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
//! The `throttle:` block becomes the job's initial
//! [`ThrottlePolicy`](crate::throttle::ThrottlePolicy); its meaning is described in
//! [`crate::throttle`]. Its durations (`interval`, `pause_timeout`) are written as described
//! in [`crate::duration`], the syntax the configuration of ferry's binaries uses too.
//!
//! The problems are a [`Problems`](crate::problems::Problems) list, the one the
//! configuration loader reports too: each at its field path, one per line when displayed.
//!
//! Secrets never appear in errors, `Debug` output or the [fingerprint](JobSpec::fingerprint):
//! a connection URL is only ever named through its environment variable.
//!
//! The code follows the document: `reader` walks the document and its small sections,
//! `endpoints` reads `source:` and `target:`, `throttle` reads `throttle:`, `fields` holds
//! the typed readers they share, `model` the types a spec becomes, and `fingerprint` the
//! hash that tells a resumed job from a new one.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

mod clickhouse;
mod endpoints;
mod fields;
mod fingerprint;
mod identity;
mod model;
mod reader;
#[cfg(test)]
mod test_support;
mod throttle;

pub use clickhouse::{ClickhouseOptions, EngineRule, engine_name};
pub use endpoints::{EndpointSpec, Location, Secret, ZeroDates, without_password};
pub use identity::normalize_database_identity;
pub use model::{
    ChunkingSpec, ColumnOverrides, Consistency, DEFAULT_OUTAGE_TIMEOUT_MS,
    DEFAULT_WATERMARK_LAG_MS, HashSplitSpec, JobMode, JobSpec, MAX_SPLIT_BUCKETS, OnMismatch,
    ResilienceSpec, SchemaMode, SyncPassSpec, TableSelection, VerifyMode, VerifySpec,
    WatermarkSpec,
};
pub use reader::clipped;
pub use throttle::parse_throttle_schedule;

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
/// A job's weight in the sharing of worker slots when the spec does not say.
pub const DEFAULT_PRIORITY: u32 = 1;
/// Largest accepted `priority`.
pub const MAX_PRIORITY: u32 = 1000;
/// Longest accepted job name, in characters.
pub const MAX_JOB_NAME_CHARS: usize = 64;
/// The largest spec ferry reads, in bytes: a spec names tables by patterns, so even a
/// job of thousands of tables fits in a few kilobytes; anything larger is a wrong file.
pub const MAX_SPEC_BYTES: usize = 1024 * 1024;

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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;
    use crate::spec::test_support::*;

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
}
