//! `ferryctl sync`: incremental catch-up passes after a copy, and the cutover gate.
//!
//! Each pass is a job of its own ([`JobMode::Sync`](ferry_model::spec::JobMode::Sync)),
//! planned into chunks and run by the same runtime and worker agents as a copy: in this
//! process, or on a cluster (`--endpoint`), where a worker lost mid-pass only costs its
//! chunks a re-run (each chunk is idempotent; see `ferry_worker`'s `sync_chunk`). This
//! module keeps what spans passes:
//! 1. before a pass, each watermark table's largest watermark at the source
//!    ([`Source::watermark_stats`] over the whole table): the pass's new high-water mark;
//! 2. the pass's job reads, per table, from the stored mark minus `watermark.lag`
//!    (`sync.since` in its spec; every row on the first pass);
//! 3. after it, the marks read in 1 are stored with the pass's summary (the sum of what
//!    its chunks changed) in the sync state file. A row written after 1 has a watermark at
//!    or past that mark (give or take the lag, for late commits and clock skew), so the
//!    next pass reads it.
//!
//! With `--until-quiet D` passes repeat until they have found nothing to change for `D`,
//! then a verify-only job of every table must agree: then the target is ready to cut
//! over. The decisions are the pure [`QuietGate`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_connectors::{ConnectorError, Source};
use ferry_coordination::TableRecord;
use ferry_model::execution::SyncChanges;
use ferry_model::key::ChunkRange;
use ferry_model::spec::{JobMode, JobSpec, WatermarkSpec};
pub use ferry_model::sync::TableMethod;
use ferry_model::sync::{MethodError, choose_method};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::sync_jobs::{ChunkOutcome, SyncJobs, job_spec_yaml, pass_spec};

/// Passes kept in the state file's history.
const MAX_HISTORY: usize = 1000;

/// Why a sync cannot start: each names the table and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No selected table has the watermark column.
    #[error(
        "no selected table has the watermark column {column}: fix watermark.column (tables without it are synced by checksum-and-repair; leave out watermark: to sync every table that way)"
    )]
    WatermarkMissing {
        /// The column.
        column: String,
    },
    /// A table with the watermark column cannot be synced by it.
    #[error(transparent)]
    Method(#[from] MethodError),
    /// The state file belongs to another job or cannot be read.
    #[error("sync state file {path}: {detail}")]
    State {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A database operation failed.
    #[error("table {table}: {source}")]
    Connector {
        /// The table.
        table: String,
        /// The error.
        #[source]
        source: Box<ConnectorError>,
    },
    /// A pass's job could not run, or some of its chunks FAILED.
    #[error("{0}")]
    Job(String),
}

/// Chooses how each table is synced, or refuses (pure).
pub fn choose_methods(
    tables: &[TableRecord],
    watermark: Option<&WatermarkSpec>,
) -> Result<Vec<TableMethod>, SyncError> {
    let methods = tables
        .iter()
        .map(|table| choose_method(&table.schema, &table.key, watermark))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(watermark) = watermark
        && !methods
            .iter()
            .any(|method| matches!(method, TableMethod::Watermark { .. }))
    {
        return Err(SyncError::WatermarkMissing {
            column: watermark.column.clone(),
        });
    }
    Ok(methods)
}

/// The sync state file: high-water marks and pass history, so a restarted sync continues.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SyncState {
    /// The job (the spec's name).
    pub job: String,
    /// Per table (qualified name): the largest watermark copied, in microseconds since
    /// the epoch.
    pub high_water_marks: BTreeMap<String, i64>,
    /// The last passes, oldest first.
    pub passes: Vec<PassSummary>,
    /// Per table (qualified name): the source's write statistics
    /// ([`Source::change_signature`]) read before the last pass that synced it; a pass
    /// leaves out a table whose signature is still the same.
    #[serde(default)]
    pub change_signatures: BTreeMap<String, String>,
}

impl SyncState {
    /// Loads the state of `job`, or a fresh one when the file does not exist.
    pub fn load(path: &Path, job: &str) -> Result<Self, SyncError> {
        let state_error = |detail: String| SyncError::State {
            path: path.display().to_string(),
            detail,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    job: job.to_owned(),
                    ..Self::default()
                });
            }
            Err(error) => return Err(state_error(error.to_string())),
        };
        let state: Self = serde_json::from_str(&text)
            .map_err(|error| state_error(format!("not a sync state file: {error}")))?;
        if state.job != job {
            return Err(state_error(format!(
                "holds job {}, not {job}: give another --state",
                state.job
            )));
        }
        Ok(state)
    }

    /// Writes the state atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), SyncError> {
        let state_error = |error: std::io::Error| SyncError::State {
            path: path.display().to_string(),
            detail: error.to_string(),
        };
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other);
        std::fs::write(&temporary, text.map_err(state_error)?).map_err(state_error)?;
        std::fs::rename(&temporary, path).map_err(state_error)
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PassSummary {
    /// The pass's number, from 1, counted across restarts.
    pub pass: u64,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_unix_ms: i64,
    /// How long it took.
    pub seconds: f64,
    /// Source rows read past the watermarks.
    pub rows_read: u64,
    /// Rows inserted into the target.
    pub inserted: u64,
    /// Target rows replaced by newer source rows.
    pub updated: u64,
    /// Target rows deleted (deleted at the source).
    pub deleted: u64,
    /// Ranges (chunks) re-copied in tables without a watermark.
    pub ranges_repaired: u64,
    /// Chunks of watermark tables whose keyed diff ran (their row counts differed after
    /// the upsert); the others skipped it.
    #[serde(default)]
    pub keyed_diffs: u64,
    /// Chunks in the pass.
    #[serde(default)]
    pub chunks: u64,
    /// Tables left out because the source's write statistics show no write since the
    /// last pass that synced them.
    #[serde(default)]
    pub tables_unchanged: u64,
    /// Rows the target was behind by: inserted + updated + deleted, plus the rows of the
    /// repaired ranges.
    pub lag_rows: u64,
    /// Seconds the target was behind by: 0 when the pass found nothing, else the time
    /// from the start of the previous pass (when the target last matched what a pass
    /// read) to the end of this one.
    pub lag_seconds: f64,
    /// How long passes have found nothing, at the end of this pass.
    pub quiet_seconds: f64,
}

impl PassSummary {
    /// Whether the pass changed anything in the target.
    pub fn found_something(&self) -> bool {
        self.lag_rows > 0 || self.ranges_repaired > 0
    }
}

/// The cutover gate: quiet once passes have found nothing for the quiet period (pure).
#[derive(Clone, Debug, Default)]
pub struct QuietGate {
    quiet_since: Option<Duration>,
}

impl QuietGate {
    /// Records a pass that ended at `now` (any monotonic origin); returns how long passes
    /// have found nothing.
    pub fn record(&mut self, found_something: bool, now: Duration) -> Duration {
        if found_something {
            self.quiet_since = None;
            return Duration::ZERO;
        }
        let since = *self.quiet_since.get_or_insert(now);
        now.saturating_sub(since)
    }

    /// Starts over (a final verify disagreed).
    pub fn reset(&mut self) {
        self.quiet_since = None;
    }
}

/// How `ferryctl sync` runs.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Repeat passes until they found nothing for this long, then verify; `None`: one pass.
    pub until_quiet: Option<Duration>,
    /// Pause between passes.
    pub pass_interval: Duration,
    /// One JSON object per pass on stdout.
    pub json: bool,
}

/// The final line of a sync, for `--json`.
#[derive(Serialize)]
struct Verdict<'a> {
    ready_to_cut_over: bool,
    passes: u64,
    quiet_seconds: f64,
    detail: &'a str,
}

/// One sync run over planned tables.
pub struct SyncRun<'a> {
    /// The spec.
    pub spec: &'a JobSpec,
    /// The spec's text, from which each job's spec is written for a cluster.
    pub spec_yaml: String,
    /// The tables as planned (no target preparation).
    pub tables: Vec<TableRecord>,
    /// The source, for the high-water marks.
    pub source: Arc<dyn Source>,
    /// Where the passes' and the final verify's jobs run.
    pub jobs: Box<dyn SyncJobs>,
    /// Where the state lives.
    pub state_path: PathBuf,
}

impl SyncRun<'_> {
    /// Runs passes per `options`; returns the exit code.
    pub async fn run(&self, options: &SyncOptions, cancel: CancellationToken) -> i32 {
        let methods = match choose_methods(&self.tables, self.spec.watermark.as_ref()) {
            Ok(methods) => methods,
            Err(error) => {
                eprintln!("error: {error}");
                return crate::exit_code::INVALID_INPUT;
            }
        };
        let mut state = match SyncState::load(&self.state_path, &self.spec.name) {
            Ok(state) => state,
            Err(error) => {
                eprintln!("error: {error}");
                return crate::exit_code::INVALID_INPUT;
            }
        };
        for (table, method) in self.tables.iter().zip(&methods) {
            let how = match method {
                TableMethod::Watermark { column, .. } => format!(
                    "watermark {column} (high-water mark {})",
                    state
                        .high_water_marks
                        .get(&table.schema.name.to_string())
                        .map_or("none: the first pass reads every row".to_string(), |hwm| {
                            format_micros(*hwm)
                        })
                ),
                TableMethod::ChecksumRepair => "checksum-and-repair".to_string(),
            };
            eprintln!("table {}: synced by {how}", table.schema.name);
        }
        let origin = Instant::now();
        let mut gate = QuietGate::default();
        let mut previous_start: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let mut summary = PassSummary {
                pass: state.passes.last().map_or(1, |last| last.pass + 1),
                started_at_unix_ms: unix_ms(),
                ..PassSummary::default()
            };
            if let Err(error) = self.pass(&methods, &mut state, &mut summary).await {
                if cancel.is_cancelled() {
                    eprintln!(
                        "stopped: run the same command to continue from the stored high-water marks"
                    );
                    return crate::exit_code::INTERRUPTED;
                }
                eprintln!("error: pass {} failed: {error}", summary.pass);
                return crate::exit_code::RUNTIME_ERROR;
            }
            summary.seconds = started.elapsed().as_secs_f64();
            if summary.found_something() {
                summary.lag_seconds = previous_start.unwrap_or(started).elapsed().as_secs_f64();
            }
            let quiet = gate.record(summary.found_something(), origin.elapsed());
            summary.quiet_seconds = quiet.as_secs_f64();
            previous_start = Some(started);
            self.print_pass(&summary, options);
            state.passes.push(summary.clone());
            if state.passes.len() > MAX_HISTORY {
                state.passes.remove(0);
            }
            if let Err(error) = state.save(&self.state_path) {
                eprintln!("error: {error}");
                return crate::exit_code::RUNTIME_ERROR;
            }
            let Some(until_quiet) = options.until_quiet else {
                return crate::exit_code::OK;
            };
            if quiet >= until_quiet {
                match self.full_verify().await {
                    Ok(true) => {
                        self.print_verdict(options, &summary, "ready to cut over");
                        return crate::exit_code::OK;
                    }
                    Ok(false) => {
                        eprintln!(
                            "quiet for {:.0} s but the full verify found differences: passes go on, every table taken again",
                            quiet.as_secs_f64()
                        );
                        gate.reset();
                        // The statistics may have missed a write (a lost statistics
                        // message, a reset): the next pass trusts none of them.
                        state.change_signatures.clear();
                    }
                    Err(error) => {
                        eprintln!("error: the full verify failed: {error}");
                        return crate::exit_code::RUNTIME_ERROR;
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => {
                    eprintln!("stopped: run the same command to continue from the stored high-water marks");
                    return crate::exit_code::INTERRUPTED;
                }
                () = tokio::time::sleep(options.pass_interval) => {}
            }
        }
    }

    fn print_pass(&self, summary: &PassSummary, options: &SyncOptions) {
        if options.json {
            if let Ok(line) = serde_json::to_string(summary) {
                println!("{line}");
            }
            return;
        }
        let quiet = options.until_quiet.map_or(String::new(), |until| {
            format!(
                "; quiet {:.0} s of {:.0} s",
                summary.quiet_seconds,
                until.as_secs_f64()
            )
        });
        println!(
            "pass {}: {} rows read, {} inserted, {} updated, {} deleted, {} ranges repaired, keyed diff in {} of {} chunks, {} tables unchanged, in {:.2} s; lag {} rows, {:.1} s{quiet}",
            summary.pass,
            summary.rows_read,
            summary.inserted,
            summary.updated,
            summary.deleted,
            summary.ranges_repaired,
            summary.keyed_diffs,
            summary.chunks,
            summary.tables_unchanged,
            summary.seconds,
            summary.lag_rows,
            summary.lag_seconds,
        );
    }

    fn print_verdict(&self, options: &SyncOptions, last: &PassSummary, detail: &str) {
        if options.json {
            let verdict = Verdict {
                ready_to_cut_over: true,
                passes: last.pass,
                quiet_seconds: last.quiet_seconds,
                detail,
            };
            if let Ok(line) = serde_json::to_string(&verdict) {
                println!("{line}");
            }
        } else {
            println!(
                "{detail}: passes found nothing for {:.0} s and a full verify of every table agrees",
                last.quiet_seconds
            );
        }
    }

    /// One pass: the new marks read, the pass's job run from the stored ones, its
    /// chunks' changes summed into `summary`, the new marks stored in `state`.
    async fn pass(
        &self,
        methods: &[TableMethod],
        state: &mut SyncState,
        summary: &mut PassSummary,
    ) -> Result<(), SyncError> {
        let lag_micros = self.spec.watermark.as_ref().map_or(0, |watermark| {
            (watermark.lag_ms as i64).saturating_mul(1000)
        });
        let mut since = BTreeMap::new();
        let mut next_marks = BTreeMap::new();
        let mut skip = Vec::new();
        let mut signatures = BTreeMap::new();
        for (table, method) in self.tables.iter().zip(methods) {
            let name = table.schema.name.to_string();
            // Read before the pass, like the marks: a write after it changes the
            // signature, so the next pass takes the table again.
            let signature =
                self.source
                    .change_signature(&table.schema)
                    .await
                    .map_err(|source| SyncError::Connector {
                        table: name.clone(),
                        source: Box::new(source),
                    })?;
            if let Some(signature) = signature {
                if state.change_signatures.get(&name) == Some(&signature) {
                    skip.push(name);
                    continue;
                }
                signatures.insert(name.clone(), signature);
            }
            let TableMethod::Watermark { column, .. } = method else {
                continue;
            };
            if let Some(mark) = state.high_water_marks.get(&name) {
                since.insert(name.clone(), mark.saturating_sub(lag_micros));
            }
            // Read before the pass: whatever is written from now on has a watermark at
            // or past it (within the lag), so the next pass reads it.
            let extent = self
                .source
                .watermark_stats(&table.schema, &table.key, &ChunkRange::WholeTable, column)
                .await
                .map_err(|source| SyncError::Connector {
                    table: name.clone(),
                    source: Box::new(source),
                })?;
            if let Some(newest) = extent.newest {
                next_marks.insert(name, newest);
            }
        }
        summary.tables_unchanged = skip.len() as u64;
        if skip.len() == self.tables.len() {
            // Nothing was written to any table since the last pass: no job to run.
            return Ok(());
        }
        let name = self.jobs.job_name(self.spec, "sync");
        let spec = pass_spec(self.spec, &name, &since, &skip).map_err(SyncError::Job)?;
        let yaml = job_spec_yaml(&self.spec_yaml, &name, JobMode::Sync, &since, &skip)
            .map_err(SyncError::Job)?;
        let chunks = self
            .jobs
            .run_job(&spec, &yaml)
            .await
            .map_err(|error| SyncError::Job(format!("sync job {name}: {error}")))?;
        let failed: Vec<String> = chunks
            .iter()
            .filter(|chunk| !chunk.verified)
            .map(|chunk| format!("{}: {}", chunk.table, chunk.error))
            .collect();
        if !failed.is_empty() {
            return Err(SyncError::Job(format!(
                "sync job {name}: {} chunks FAILED ({}); the next pass runs them again",
                failed.len(),
                failed.join("; ")
            )));
        }
        add_changes(summary, &chunks);
        for (table, newest) in next_marks {
            let stored = state.high_water_marks.entry(table).or_insert(newest);
            *stored = (*stored).max(newest);
        }
        state.change_signatures.extend(signatures);
        Ok(())
    }

    /// A verify-only job of every table; `true` when every chunk agrees.
    async fn full_verify(&self) -> Result<bool, SyncError> {
        let name = self.jobs.job_name(self.spec, "verify");
        let mut spec = self.spec.clone();
        spec.name = name.clone();
        spec.mode = JobMode::Verify;
        spec.sync = Default::default();
        let yaml = job_spec_yaml(
            &self.spec_yaml,
            &name,
            JobMode::Verify,
            &BTreeMap::new(),
            &[],
        )
        .map_err(SyncError::Job)?;
        let chunks = self
            .jobs
            .run_job(&spec, &yaml)
            .await
            .map_err(|error| SyncError::Job(format!("verify job {name}: {error}")))?;
        let errors: Vec<String> = chunks
            .iter()
            .filter(|chunk| !chunk.verified && !chunk.differs)
            .map(|chunk| format!("{}: {}", chunk.table, chunk.error))
            .collect();
        if !errors.is_empty() {
            return Err(SyncError::Job(format!(
                "verify job {name}: {}",
                errors.join("; ")
            )));
        }
        let differing: std::collections::BTreeSet<&str> = chunks
            .iter()
            .filter(|chunk| chunk.differs)
            .map(|chunk| chunk.table.as_str())
            .collect();
        for table in &differing {
            eprintln!("full verify: table {table} differs");
        }
        Ok(differing.is_empty())
    }
}

/// Adds what a pass's chunks changed to its summary.
fn add_changes(summary: &mut PassSummary, chunks: &[ChunkOutcome]) {
    let mut total = SyncChanges::default();
    for chunk in chunks {
        summary.chunks += 1;
        let Some(changes) = &chunk.sync else {
            continue;
        };
        total.add(changes);
        summary.ranges_repaired += u64::from(changes.repaired);
        summary.keyed_diffs += u64::from(changes.keys_compared);
    }
    summary.rows_read += total.rows_read;
    summary.inserted += total.inserted;
    summary.updated += total.updated;
    summary.deleted += total.deleted;
    summary.lag_rows += total.changed_rows();
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Microseconds since the epoch as `YYYY-MM-DD HH:MM:SS.ffffff UTC`.
fn format_micros(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = ferry_model::temporal::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{fraction:06} UTC",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The default sync state file: `<spec folder>/<job name>.ferry-sync.json`.
pub fn default_state_path(spec_path: &Path, spec: &JobSpec) -> PathBuf {
    let dir = spec_path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(format!("{}.ferry-sync.json", spec.name))
}

/// Opens the source and plans the tables (the target is neither created nor checked
/// here: each pass's job checks it).
pub async fn open(spec: &JobSpec) -> Result<(Vec<TableRecord>, Arc<dyn Source>), String> {
    let source: Arc<dyn Source> = ferry_connectors::registry::open_source(&spec.source)
        .await
        .map_err(|error| error.to_string())?;
    let sink = ferry_connectors::registry::open_sink(&spec.target)
        .await
        .map_err(|error| error.to_string())?;
    let plan = ferry_coordinator::plan::plan_job_with(spec, source.as_ref(), sink.as_ref(), false)
        .await
        .map_err(|error| error.to_string())?;
    Ok((plan.tables, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::key::SplitKey;
    use ferry_model::schema::ColumnType;

    #[test]
    fn quiet_counts_from_the_first_pass_that_found_nothing() {
        let mut gate = QuietGate::default();
        let at = Duration::from_secs;
        assert_eq!(gate.record(true, at(0)), Duration::ZERO);
        assert_eq!(gate.record(false, at(5)), Duration::ZERO);
        assert_eq!(gate.record(false, at(9)), at(4));
        assert_eq!(
            gate.record(true, at(10)),
            Duration::ZERO,
            "found: starts over"
        );
        assert_eq!(gate.record(false, at(12)), Duration::ZERO);
        assert_eq!(gate.record(false, at(20)), at(8));
        gate.reset();
        assert_eq!(gate.record(false, at(21)), Duration::ZERO);
    }

    fn table(name: &str, columns: &[(&str, ColumnType)], key: SplitKey) -> TableRecord {
        TableRecord {
            schema: ferry_model::schema::TableSchema {
                name: ferry_model::schema::TableName::bare(name),
                columns: columns
                    .iter()
                    .map(|(column, column_type)| ferry_model::schema::ColumnSchema {
                        name: (*column).to_owned(),
                        declared_type: format!("{column_type:?}"),
                        column_type: column_type.clone(),
                        nullable: true,
                    })
                    .collect(),
                primary_key: Vec::new(),
                has_rowid: false,
                source_kind: "postgres".into(),
                native_ddl: None,
                partitioning: None,
                partition: None,
                split_columns: Vec::new(),
            },
            key,
            warnings: Vec::new(),
            key_spans: Vec::new(),
            key_deferred: false,
        }
    }

    fn int_key() -> SplitKey {
        SplitKey::Columns {
            names: vec!["id".into()],
            nullable: false,
            single_integer: true,
        }
    }

    #[test]
    fn tables_with_the_watermark_sync_by_it_and_others_by_checksum() {
        let watermark = WatermarkSpec {
            column: "updated_at".into(),
            lag_ms: 30_000,
        };
        let with = table(
            "a",
            &[
                ("id", ColumnType::Int64),
                ("updated_at", ColumnType::TimestampTz),
            ],
            int_key(),
        );
        let without = table("b", &[("id", ColumnType::Int64)], int_key());
        let methods =
            choose_methods(&[with.clone(), without.clone()], Some(&watermark)).expect("chosen");
        assert_eq!(
            methods,
            vec![
                TableMethod::Watermark {
                    column: "updated_at".into(),
                    key_column: "id".into()
                },
                TableMethod::ChecksumRepair
            ]
        );
        assert_eq!(
            choose_methods(std::slice::from_ref(&with), None).expect("no watermark"),
            vec![TableMethod::ChecksumRepair]
        );
        assert!(matches!(
            choose_methods(&[without], Some(&watermark)),
            Err(SyncError::WatermarkMissing { .. })
        ));
        let text = table(
            "c",
            &[("id", ColumnType::Int64), ("updated_at", ColumnType::Text)],
            int_key(),
        );
        assert!(matches!(
            choose_methods(&[text], Some(&watermark)),
            Err(SyncError::Method(MethodError::WatermarkNotTimestamp { .. }))
        ));
        let mut keyless = with;
        keyless.key = SplitKey::None;
        assert!(matches!(
            choose_methods(&[keyless], Some(&watermark)),
            Err(SyncError::Method(MethodError::NoIntegerKey { .. }))
        ));
    }

    #[test]
    fn micros_format_as_utc() {
        assert_eq!(format_micros(0), "1970-01-01 00:00:00.000000 UTC");
        assert_eq!(
            format_micros(1_733_480_000_123_456),
            "2024-12-06 10:13:20.123456 UTC"
        );
    }

    #[test]
    fn state_refuses_another_jobs_file_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        let mut state = SyncState::load(&path, "a").expect("fresh");
        state.high_water_marks.insert("public.t".into(), 42);
        state.passes.push(PassSummary {
            pass: 1,
            ..PassSummary::default()
        });
        state.save(&path).expect("saved");
        let again = SyncState::load(&path, "a").expect("loaded");
        assert_eq!(again.high_water_marks.get("public.t"), Some(&42));
        assert_eq!(again.passes.len(), 1);
        assert!(matches!(
            SyncState::load(&path, "b"),
            Err(SyncError::State { .. })
        ));
    }
}
