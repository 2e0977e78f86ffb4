//! `ferryctl sync`: incremental catch-up passes after a copy, and the cutover gate.
//!
//! Each pass, for every table with the spec's watermark column (a timestamp) and a single
//! integer key:
//! 1. reads the source rows whose watermark is at or past the last pass's high-water mark
//!    minus `watermark.lag` ([`Source::read_changed`]; every row on the first pass) and
//!    writes them newer-wins ([`Sink::upsert_newer`]: a target row newer than the
//!    source's is kept);
//! 2. finds rows deleted at the source by a keyed diff: per planned chunk range, the key
//!    column alone is read from both sides and the key sets compared; keys only in the
//!    target are deleted ([`Sink::delete_keys`]);
//! 3. stores the new high-water mark (the largest watermark read) in the sync state file.
//!
//! Tables without the column are synced by checksum-and-repair: a whole-table checksum
//! on both sides, and when it differs the `ferryctl verify --repair` path
//! ([`crate::verify::after_run`]: bisect, compare rows, re-copy only the differing ranges
//! through the fenced overwrite).
//!
//! With `--until-quiet D` passes repeat until they have found nothing to change for `D`,
//! then a full verify (every table checksummed on both sides) must agree: then the
//! target is ready to cut over. The decisions are the pure [`QuietGate`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_connectors::{BatchStream, ConnectorError, Sink, Source};
use ferry_coordination::{ChunkRecord, ChunkState, JobRecord, TableRecord};
use ferry_model::checksum::RangeChecksum;
use ferry_model::column::{CellRef, ColumnView};
use ferry_model::ids::ChunkId;
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::ColumnType;
use ferry_model::spec::{JobSpec, WatermarkSpec};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::verify::{ConnectorProbe, JobConnectors, VerifyOptions};

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
    /// The watermark column is not a timestamp.
    #[error(
        "the watermark column {column} of table {table} is {declared_type}, not a timestamp: ferry compares it with the high-water mark minus the lag; name a timestamp column set by every insert and update"
    )]
    WatermarkNotTimestamp {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Its declared type.
        declared_type: String,
    },
    /// A table with the watermark column has no single integer key.
    #[error(
        "table {table} has the watermark column {column} but no single integer primary key: a newer-wins upsert and the keyed diff for deletes need one; give the table such a key or exclude it from the job"
    )]
    NoIntegerKey {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
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
}

/// How a table is synced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableMethod {
    /// By its watermark column and integer key.
    Watermark {
        /// The column.
        column: String,
        /// The key column.
        key_column: String,
    },
    /// By checksum-and-repair passes.
    ChecksumRepair,
}

/// Chooses how each table is synced, or refuses (pure).
pub fn choose_methods(
    tables: &[TableRecord],
    watermark: Option<&WatermarkSpec>,
) -> Result<Vec<TableMethod>, SyncError> {
    let Some(watermark) = watermark else {
        return Ok(vec![TableMethod::ChecksumRepair; tables.len()]);
    };
    let mut methods = Vec::with_capacity(tables.len());
    for table in tables {
        let Some(column) = table
            .schema
            .columns
            .iter()
            .find(|column| column.name == watermark.column)
        else {
            methods.push(TableMethod::ChecksumRepair);
            continue;
        };
        if !matches!(
            column.column_type,
            ColumnType::Timestamp | ColumnType::TimestampTz
        ) {
            return Err(SyncError::WatermarkNotTimestamp {
                table: table.schema.name.to_string(),
                column: column.name.clone(),
                declared_type: column.declared_type.clone(),
            });
        }
        let key_column = match &table.key {
            SplitKey::Columns {
                names,
                single_integer: true,
                ..
            } if names.len() == 1 => names[0].clone(),
            _ => {
                return Err(SyncError::NoIntegerKey {
                    table: table.schema.name.to_string(),
                    column: column.name.clone(),
                });
            }
        };
        methods.push(TableMethod::Watermark {
            column: column.name.clone(),
            key_column,
        });
    }
    if !methods
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
    /// Ranges re-copied in tables without a watermark.
    pub ranges_repaired: u64,
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
    /// Bisect a differing key range down to this many rows.
    pub leaf_rows: u64,
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
    /// The tables as planned (no target preparation).
    pub tables: Vec<TableRecord>,
    /// Their chunk ranges as planned: the keyed diff compares keys range by range.
    pub chunks: Vec<ChunkRecord>,
    /// The connectors.
    pub connectors: JobConnectors,
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
            if let Err(error) = self
                .pass(&methods, &mut state, &mut summary, options, &cancel)
                .await
            {
                eprintln!("error: pass {} failed: {error}", summary.pass);
                return crate::exit_code::RUNTIME_ERROR;
            }
            summary.seconds = started.elapsed().as_secs_f64();
            summary.lag_rows = summary.inserted + summary.updated + summary.deleted;
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
                            "quiet for {:.0} s but the full verify found differences: passes go on",
                            quiet.as_secs_f64()
                        );
                        gate.reset();
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
            "pass {}: {} rows read, {} inserted, {} updated, {} deleted, {} ranges repaired in {:.2} s; lag {} rows, {:.1} s{quiet}",
            summary.pass,
            summary.rows_read,
            summary.inserted,
            summary.updated,
            summary.deleted,
            summary.ranges_repaired,
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

    async fn pass(
        &self,
        methods: &[TableMethod],
        state: &mut SyncState,
        summary: &mut PassSummary,
        options: &SyncOptions,
        cancel: &CancellationToken,
    ) -> Result<(), SyncError> {
        let lag_micros = self.spec.watermark.as_ref().map_or(0, |watermark| {
            (watermark.lag_ms as i64).saturating_mul(1000)
        });
        for (index, (table, method)) in self.tables.iter().zip(methods).enumerate() {
            let name = table.schema.name.to_string();
            let wrap = |source| SyncError::Connector {
                table: name.clone(),
                source: Box::new(source),
            };
            match method {
                TableMethod::Watermark { column, key_column } => {
                    let since = state
                        .high_water_marks
                        .get(&name)
                        .map(|hwm| hwm.saturating_sub(lag_micros));
                    let newest = self
                        .catch_up(table, column, since, summary, cancel)
                        .await
                        .map_err(wrap)?;
                    summary.deleted += self
                        .delete_missing(index, table, key_column)
                        .await
                        .map_err(wrap)?;
                    if let Some(newest) = newest {
                        let stored = state.high_water_marks.entry(name.clone()).or_insert(newest);
                        *stored = (*stored).max(newest);
                    }
                }
                TableMethod::ChecksumRepair => {
                    summary.ranges_repaired += self
                        .check_and_repair(index, table, options.leaf_rows)
                        .await
                        .map_err(wrap)?;
                }
            }
        }
        Ok(())
    }

    /// Copies the rows past `since` newer-wins; returns the largest watermark read.
    async fn catch_up(
        &self,
        table: &TableRecord,
        column: &str,
        since: Option<i64>,
        summary: &mut PassSummary,
        cancel: &CancellationToken,
    ) -> Result<Option<i64>, ConnectorError> {
        let rows = self
            .connectors
            .source
            .read_changed(&table.schema, column, since)
            .await?;
        let newest = Arc::new(std::sync::Mutex::new(None::<i64>));
        let tracked = track_newest(rows, column.to_owned(), newest.clone());
        let upserted = self
            .connectors
            .sink
            .upsert_newer(&table.schema, &table.key, column, tracked, cancel)
            .await?;
        summary.rows_read += upserted.rows_read;
        summary.inserted += upserted.inserted;
        summary.updated += upserted.updated;
        let newest = *newest
            .lock()
            .map_err(|_| ConnectorError::Task("watermark tracker poisoned".into()))?;
        Ok(newest)
    }

    /// The keyed diff: per planned chunk range, the key column alone is read from both
    /// sides and compared; keys only in the target (deleted at the source) are deleted.
    /// Memory: the keys of one chunk range (8 bytes each per side).
    async fn delete_missing(
        &self,
        index: usize,
        table: &TableRecord,
        key_column: &str,
    ) -> Result<u64, ConnectorError> {
        let mut keys_only = table.schema.clone();
        keys_only.columns.retain(|column| column.name == key_column);
        let mut deleted = 0;
        for chunk in self
            .chunks
            .iter()
            .filter(|chunk| chunk.table_index == index)
        {
            let chunk_table = match &chunk.partition {
                Some(partition) => keys_only.for_partition(partition),
                None => keys_only.clone(),
            };
            let source = self
                .connectors
                .source
                .read_chunk(&chunk_table, &table.key, &chunk.range);
            let target = self
                .connectors
                .sink
                .read_back(&chunk_table, &table.key, &chunk.range);
            let (source, target) = tokio::try_join!(source, target)?;
            let (source, target) =
                tokio::try_join!(keys_of(source, key_column), keys_of(target, key_column))?;
            let extra = keys_only_in(&target, &source);
            for part in extra.chunks(10_000) {
                deleted += self
                    .connectors
                    .sink
                    .delete_keys(&table.schema, &table.key, part)
                    .await?;
            }
        }
        Ok(deleted)
    }

    /// Checksums a table without a watermark on both sides and repairs what differs
    /// through `ferryctl verify --repair`'s path; returns the ranges re-copied.
    async fn check_and_repair(
        &self,
        index: usize,
        table: &TableRecord,
        leaf_rows: u64,
    ) -> Result<u64, ConnectorError> {
        let Some((job, chunks)) = self.differing_table(index, table).await? else {
            return Ok(0);
        };
        let options = VerifyOptions {
            leaf_rows,
            show_values: false,
            output: None,
            repair: true,
            dry_run: false,
            recheck_after: Duration::ZERO,
        };
        let (localised, code) =
            crate::verify::after_run(self.spec, &job, &chunks, &self.connectors, &options).await;
        if code != crate::exit_code::OK {
            return Err(ConnectorError::Task(format!(
                "repairing table {} failed: {}",
                table.schema.name,
                localised.repair_failures.join("; ")
            )));
        }
        Ok(localised.repaired as u64)
    }

    /// A one-chunk job of `table` whose chunk records the differing checksums, when both
    /// sides of the whole table differ.
    async fn differing_table(
        &self,
        index: usize,
        table: &TableRecord,
    ) -> Result<Option<(JobRecord, Vec<ChunkRecord>)>, ConnectorError> {
        let (source, target) = self.table_checksums(table).await?;
        if source == target {
            return Ok(None);
        }
        let mut job = JobRecord::new(self.spec, self.tables.clone());
        job.id = ferry_model::ids::JobId(format!("{}-sync", self.spec.name));
        let mut chunk = ChunkRecord::planned(
            ChunkId(index as u32),
            index,
            None,
            ChunkRange::WholeTable,
            source.rows,
        );
        chunk.state = ChunkState::Failed;
        chunk.checksum = Some(source);
        chunk.evidence.target_checksum = Some(target);
        Ok(Some((job, vec![chunk])))
    }

    async fn table_checksums(
        &self,
        table: &TableRecord,
    ) -> Result<(RangeChecksum, RangeChecksum), ConnectorError> {
        let probe = ConnectorProbe {
            connectors: &self.connectors,
            table: table.schema.clone(),
            key: table.key.clone(),
            key_column: None,
        };
        let sides = probe.sides_of(&ChunkRange::WholeTable).await?;
        Ok((sides.source, sides.target))
    }

    /// Every table checksummed on both sides; `true` when all agree.
    async fn full_verify(&self) -> Result<bool, SyncError> {
        let mut agree = true;
        for table in &self.tables {
            let (source, target) =
                self.table_checksums(table)
                    .await
                    .map_err(|source| SyncError::Connector {
                        table: table.schema.name.to_string(),
                        source: Box::new(source),
                    })?;
            if source != target {
                eprintln!(
                    "full verify: table {} differs (source {} rows, target {} rows)",
                    table.schema.name, source.rows, target.rows
                );
                agree = false;
            }
        }
        Ok(agree)
    }
}

/// Passes the batches through, keeping the largest value of the timestamp `column`.
fn track_newest(
    batches: BatchStream,
    column: String,
    newest: Arc<std::sync::Mutex<Option<i64>>>,
) -> BatchStream {
    Box::pin(batches.inspect(move |batch| {
        let Ok(batch) = batch else { return };
        let Ok(index) = batch.schema().index_of(&column) else {
            return;
        };
        let Ok(view) = ColumnView::new(&column, batch.column(index).as_ref()) else {
            return;
        };
        let mut largest = None::<i64>;
        for row in 0..batch.num_rows() {
            if let CellRef::Timestamp { value, .. } = view.cell(row) {
                largest = Some(largest.map_or(value, |seen| seen.max(value)));
            }
        }
        if let (Some(largest), Ok(mut newest)) = (largest, newest.lock()) {
            *newest = Some(newest.map_or(largest, |seen| seen.max(largest)));
        }
    }))
}

/// The integer keys of a key-only stream, sorted.
async fn keys_of(mut batches: BatchStream, key_column: &str) -> Result<Vec<i64>, ConnectorError> {
    let mut keys = Vec::new();
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let index = batch.schema().index_of(key_column).map_err(|error| {
            ConnectorError::Task(format!("key column {key_column} not read: {error}"))
        })?;
        let view = ColumnView::new(key_column, batch.column(index).as_ref())
            .map_err(|error| ConnectorError::Task(format!("key column {key_column}: {error}")))?;
        for row in 0..batch.num_rows() {
            if let CellRef::Int(key) = view.cell(row) {
                keys.push(key);
            }
        }
    }
    keys.sort_unstable();
    Ok(keys)
}

/// The keys of sorted `target` that sorted `source` lacks (a merge, pure).
fn keys_only_in(target: &[i64], source: &[i64]) -> Vec<i64> {
    let mut extra = Vec::new();
    let mut source_keys = source.iter().peekable();
    for key in target {
        while source_keys.next_if(|candidate| *candidate < key).is_some() {}
        if source_keys.peek() != Some(&key) {
            extra.push(*key);
        }
    }
    extra
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
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
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

/// Opens the connectors and plans the tables (the target is neither created nor
/// checked: sync runs after a copy).
pub async fn open(
    spec: &JobSpec,
) -> Result<(Vec<TableRecord>, Vec<ChunkRecord>, JobConnectors), String> {
    let source: Arc<dyn Source> = ferry_connectors::registry::open_source(&spec.source)
        .await
        .map_err(|error| error.to_string())?;
    let sink: Arc<dyn Sink> = ferry_connectors::registry::open_sink(&spec.target)
        .await
        .map_err(|error| error.to_string())?;
    let plan = ferry_coordinator::plan::plan_job_with(spec, source.as_ref(), sink.as_ref(), false)
        .await
        .map_err(|error| error.to_string())?;
    Ok((plan.tables, plan.chunks, JobConnectors { source, sink }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(SyncError::WatermarkNotTimestamp { .. })
        ));
        let mut keyless = with;
        keyless.key = SplitKey::None;
        assert!(matches!(
            choose_methods(&[keyless], Some(&watermark)),
            Err(SyncError::NoIntegerKey { .. })
        ));
    }

    #[test]
    fn keys_only_in_the_target_are_found_by_a_merge() {
        assert_eq!(keys_only_in(&[1, 2, 5, 9, 10], &[2, 3, 9]), vec![1, 5, 10]);
        assert_eq!(keys_only_in(&[], &[1]), Vec::<i64>::new());
        assert_eq!(keys_only_in(&[4], &[]), vec![4]);
        assert_eq!(keys_only_in(&[-3, 7], &[-3, 7]), Vec::<i64>::new());
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
