//! `ferryctl verify`: after a verify-only job (run by the same runtime and agents as a
//! copy, see [`ferry_model::spec::JobMode::Verify`]), the differing chunks are
//! re-checked after a delay (a live source settles), localised (bisected on their
//! integer key with [`ferry_coordinator::diff::bisect`], then compared row by row by
//! key) and, with `--repair`, re-copied range by range through the worker's own copy
//! path ([`ChunkRunner`]: one fenced overwrite transaction per range, verified again).
//!
//! This module is the IO shell: the decisions are [`ferry_coordinator::diff`]'s.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use async_trait::async_trait;
use ferry_connectors::{ConnectorError, Sink, Source};
use ferry_coordination::{ChunkRecord, JobRecord, TableRecord};
use ferry_coordinator::diff::{
    IntRange, RangeProbe, RowDifference, SideRow, Sides, bisect, compare_rows,
};
use ferry_model::checksum::{RangeChecksum, canonical_cells};
use ferry_model::column::{CellRef, ColumnView};
use ferry_model::execution::{ChunkExecutor, ChunkResult, ChunkTask, Unthrottled};
use ferry_model::ids::{Attempt, WorkerId};
use ferry_model::key::{ChunkRange, KeyBound, KeyValue, SplitKey};
use ferry_model::schema::TableSchema;
use ferry_model::spec::{JobMode, JobSpec, VerifyMode};
use ferry_worker::runner::ChunkRunner;
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::exit_code;

/// Rows at most in a range compared row by row, unless told otherwise.
pub const DEFAULT_LEAF_ROWS: u64 = 256;

/// How `ferryctl verify` treats the differences it finds.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Bisect down to ranges of at most this many rows on either side.
    pub leaf_rows: u64,
    /// Show column values in the diff (they may be personal data).
    pub show_values: bool,
    /// Write one JSON line per differing key here.
    pub output: Option<PathBuf>,
    /// Re-copy the differing ranges.
    pub repair: bool,
    /// With `repair`: only list what would be re-copied.
    pub dry_run: bool,
    /// Check a differing chunk again after this long before reporting it.
    pub recheck_after: Duration,
}

/// The spec of the verify-only job of a copy job's spec: mode `verify`, named
/// `<name>-verify` (a job of its own, with its own state file and fence run).
pub fn verify_spec(mut spec: JobSpec) -> JobSpec {
    if spec.mode != JobMode::Verify {
        spec.name = suffixed_name(&spec.name, "-verify");
        spec.mode = JobMode::Verify;
    }
    spec
}

/// `name` followed by `suffix`, the name cut so that the whole stays within a job name's
/// 64 characters.
pub fn suffixed_name(name: &str, suffix: &str) -> String {
    let keep = name
        .chars()
        .count()
        .min(64usize.saturating_sub(suffix.len()));
    let base: String = name.chars().take(keep).collect();
    format!("{base}{suffix}")
}

/// The YAML of a spec with `mode: verify` and the job named `name`, for
/// `ferryctl submit --verify-only` (the cluster's workers read the job's mode from it).
pub fn verify_spec_yaml(spec_yaml: &str, name: &str) -> Result<String, String> {
    let mut document: serde_yaml_ng::Value = serde_yaml_ng::from_str(spec_yaml)
        .map_err(|error| format!("the spec is not YAML: {error}"))?;
    let Some(mapping) = document.as_mapping_mut() else {
        return Err("a job spec must be a YAML mapping".into());
    };
    mapping.insert("mode".into(), "verify".into());
    mapping.insert("name".into(), name.into());
    serde_yaml_ng::to_string(&document).map_err(|error| error.to_string())
}

/// A verify state file left by a finished run of `job` is removed, so that each
/// `ferryctl verify` compares everything again; one left by an interrupted run is kept
/// and resumed, and a file that holds any other job (a copy's state file given as
/// `--state`) is never removed.
pub fn start_over_if_finished(state: &Path, job: &str) -> Result<bool, String> {
    if !state.exists() {
        return Ok(false);
    }
    let connection =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|error| format!("state file {}: {error}", state.display()))?;
    let counts: rusqlite::Result<(i64, i64, i64)> = connection.query_row(
        "SELECT (SELECT count(*) FROM jobs WHERE id <> ?1), count(*), \
                count(*) FILTER (WHERE state NOT IN ('VERIFIED', 'FAILED')) \
         FROM chunks WHERE job = ?1",
        [job],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    );
    drop(connection);
    let finished = matches!(counts, Ok((other_jobs, total, open)) if other_jobs == 0 && total > 0 && open == 0);
    if finished {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = state.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(path));
        }
    }
    Ok(finished)
}

/// One differing range, localised.
#[derive(Clone, Debug)]
pub struct DifferingRange {
    /// The table.
    pub table: String,
    /// The leaf partition, when planned by partition.
    pub partition: Option<String>,
    /// The chunk it lies in.
    pub chunk: u32,
    /// The range.
    pub range: ChunkRange,
    /// Both sides of the range.
    pub source: RangeChecksum,
    /// What the target held.
    pub target: RangeChecksum,
    /// The keys that differ.
    pub rows: Vec<RowDifference>,
    /// Column names, for the report.
    pub columns: Arc<Vec<String>>,
}

/// One line of `--output diff.jsonl`.
#[derive(Serialize)]
struct DiffLine<'a> {
    table: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<&'a str>,
    chunk: u32,
    range: String,
    key: &'a serde_json::Value,
    kind: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    columns: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What the localisation after a verify-only run found and did.
#[derive(Debug, Default)]
pub struct Localised {
    /// Chunks that agreed when checked again after `recheck_after`.
    pub settled: Vec<u32>,
    /// The differing ranges.
    pub ranges: Vec<DifferingRange>,
    /// Ranges probed by the bisection.
    pub probes: usize,
    /// Time the localisation took.
    pub elapsed: Duration,
    /// Ranges re-copied and verified (`--repair`).
    pub repaired: usize,
    /// Ranges whose repair failed, with why.
    pub repair_failures: Vec<String>,
}

/// The connectors of a job, for probing and repairing one table's ranges.
pub struct JobConnectors {
    /// The source.
    pub source: Arc<dyn Source>,
    /// The target.
    pub sink: Arc<dyn Sink>,
}

/// Re-checks, localises, reports and (with `--repair`) repairs every chunk the
/// verify-only run found different. Returns the exit code.
pub async fn after_run(
    spec: &JobSpec,
    job: &JobRecord,
    chunks: &[ChunkRecord],
    connectors: &JobConnectors,
    options: &VerifyOptions,
) -> (Localised, i32) {
    let mut localised = Localised::default();
    let differing: Vec<&ChunkRecord> = chunks.iter().filter(|chunk| chunk.differs()).collect();
    if differing.is_empty() {
        return (localised, exit_code::OK);
    }
    if !options.recheck_after.is_zero() {
        eprintln!(
            "{} chunks differ: checking them again in {} s (a live source may settle)",
            differing.len(),
            options.recheck_after.as_secs()
        );
        tokio::time::sleep(options.recheck_after).await;
    }
    let started = Instant::now();
    let mut failed = false;
    for chunk in differing {
        let Some(table) = job.tables.get(chunk.table_index) else {
            continue;
        };
        match localise_chunk(table, chunk, connectors, options.leaf_rows).await {
            Ok(None) => localised.settled.push(chunk.id.0),
            Ok(Some((ranges, probes))) => {
                localised.probes += probes;
                localised.ranges.extend(ranges);
            }
            Err(error) => {
                eprintln!(
                    "error: cannot localise the difference in chunk {} of {}: {error}",
                    chunk.id, table.schema.name
                );
                failed = true;
            }
        }
    }
    localised.elapsed = started.elapsed();
    print_diff(&localised, options.show_values);
    if let Some(path) = &options.output
        && let Err(error) = write_jsonl(path, &localised, options.show_values)
    {
        eprintln!("error: cannot write {}: {error}", path.display());
        failed = true;
    }
    if options.repair {
        repair(spec, job, chunks, connectors, options, &mut localised).await;
        failed |= !localised.repair_failures.is_empty();
    }
    let code = if failed {
        exit_code::FAILED_CHUNKS
    } else if localised.ranges.is_empty() || (options.repair && !options.dry_run) {
        exit_code::OK
    } else {
        exit_code::DIFFERENCES
    };
    (localised, code)
}

/// The table as the connectors see a chunk of it: restricted to its partition.
fn chunk_table(table: &TableRecord, chunk: &ChunkRecord) -> TableSchema {
    match &chunk.partition {
        Some(partition) => table.schema.for_partition(partition),
        None => table.schema.clone(),
    }
}

/// Probes ranges of one chunk's table on both sides.
pub(crate) struct ConnectorProbe<'a> {
    pub(crate) connectors: &'a JobConnectors,
    pub(crate) table: TableSchema,
    pub(crate) key: SplitKey,
    /// The integer key column, when the key is one.
    pub(crate) key_column: Option<String>,
}

impl ConnectorProbe<'_> {
    pub(crate) async fn sides_of(&self, range: &ChunkRange) -> Result<Sides, ConnectorError> {
        let source = self
            .connectors
            .source
            .read_chunk(&self.table, &self.key, range);
        let target = self
            .connectors
            .sink
            .read_back(&self.table, &self.key, range);
        let (source, target) = tokio::try_join!(source, target)?;
        let column = self.key_column.as_deref();
        let (source, target) =
            tokio::try_join!(hash_side(source, column), hash_side(target, column))?;
        Ok(Sides {
            source: source.0,
            target: target.0,
            min_key: [source.1, target.1].into_iter().flatten().min(),
            max_key: [source.2, target.2].into_iter().flatten().max(),
        })
    }
}

#[async_trait]
impl RangeProbe for ConnectorProbe<'_> {
    type Error = ConnectorError;

    async fn probe(&self, range: IntRange) -> Result<Sides, ConnectorError> {
        self.sides_of(&chunk_range(range)).await
    }
}

fn chunk_range(range: IntRange) -> ChunkRange {
    let bound = |value: Option<i64>| value.map(|value| KeyBound(vec![KeyValue::Int(value)]));
    ChunkRange::Interval {
        lower: bound(range.lower),
        upper: bound(range.upper),
    }
}

/// A chunk range as an integer range, when it is one.
fn int_range(range: &ChunkRange) -> Option<IntRange> {
    let int = |bound: &Option<KeyBound>| match bound {
        None => Some(None),
        Some(KeyBound(values)) => match values.as_slice() {
            [KeyValue::Int(value)] => Some(Some(*value)),
            _ => None,
        },
    };
    match range {
        ChunkRange::WholeTable => Some(IntRange {
            lower: None,
            upper: None,
        }),
        ChunkRange::Interval { lower, upper } => Some(IntRange {
            lower: int(lower)?,
            upper: int(upper)?,
        }),
        ChunkRange::NullKeys => None,
    }
}

/// Hashes a stream of batches; with `key_column`, also its smallest and largest key.
async fn hash_side(
    mut batches: ferry_connectors::BatchStream,
    key_column: Option<&str>,
) -> Result<(RangeChecksum, Option<i64>, Option<i64>), ConnectorError> {
    let mut checksum = RangeChecksum::default();
    let (mut min_key, mut max_key) = (None::<i64>, None::<i64>);
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        checksum
            .add_batch(&batch)
            .map_err(|error| ConnectorError::Task(format!("cannot checksum rows: {error}")))?;
        if let Some(name) = key_column
            && let Ok(index) = batch.schema().index_of(name)
            && let Ok(view) = ColumnView::new(name, batch.column(index).as_ref())
        {
            for row in 0..batch.num_rows() {
                if let CellRef::Int(key) = view.cell(row) {
                    min_key = Some(min_key.map_or(key, |min| min.min(key)));
                    max_key = Some(max_key.map_or(key, |max| max.max(key)));
                }
            }
        }
    }
    Ok((checksum, min_key, max_key))
}

/// Localises one differing chunk: `None` when it agrees now (checked again), else its
/// smallest differing ranges with their rows compared, and the probes it took.
async fn localise_chunk(
    table: &TableRecord,
    chunk: &ChunkRecord,
    connectors: &JobConnectors,
    leaf_rows: u64,
) -> Result<Option<(Vec<DifferingRange>, usize)>, ConnectorError> {
    let key_column = match &table.key {
        SplitKey::Columns {
            names,
            single_integer: true,
            ..
        } => names.first().cloned(),
        _ => None,
    };
    let probe = ConnectorProbe {
        connectors,
        table: chunk_table(table, chunk),
        key: table.key.clone(),
        key_column: key_column.clone(),
    };
    let whole = probe.sides_of(&chunk.range).await?;
    if whole.agree() {
        return Ok(None);
    }
    let (leaves, probes) = match (key_column.is_some(), int_range(&chunk.range)) {
        (true, Some(range)) => {
            let found = bisect(&probe, range, whole, leaf_rows).await?;
            let leaves = found
                .differing
                .into_iter()
                .map(|(range, sides)| (chunk_range(range), sides))
                .collect();
            (leaves, found.probes)
        }
        // Not an integer key: the chunk is compared row by row as a whole.
        _ => (vec![(chunk.range.clone(), whole)], 1),
    };
    let columns: Arc<Vec<String>> = Arc::new(
        probe
            .table
            .columns
            .iter()
            .map(|column| column.name.clone())
            .collect(),
    );
    let key_names: Vec<String> = match &table.key {
        SplitKey::Columns { names, .. } => names.clone(),
        _ => Vec::new(),
    };
    let mut ranges = Vec::new();
    for (range, sides) in leaves {
        let source = connectors
            .source
            .read_chunk(&probe.table, &probe.key, &range)
            .await?;
        let target = connectors
            .sink
            .read_back(&probe.table, &probe.key, &range)
            .await?;
        let (source, target) = tokio::try_join!(
            rows_by_key(source, &key_names),
            rows_by_key(target, &key_names)
        )?;
        ranges.push(DifferingRange {
            table: table.schema.name.to_string(),
            partition: chunk.partition.clone(),
            chunk: chunk.id.0,
            range,
            source: sides.source,
            target: sides.target,
            rows: compare_rows(source, target),
            columns: columns.clone(),
        });
    }
    Ok(Some((ranges, probes)))
}

/// Reads a range's rows, keyed by their key columns' canonical encodings (all columns
/// when the table has no key).
async fn rows_by_key(
    mut batches: ferry_connectors::BatchStream,
    key_names: &[String],
) -> Result<BTreeMap<Vec<u8>, SideRow>, ConnectorError> {
    let mut rows = BTreeMap::new();
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        add_rows(&batch, key_names, &mut rows)?;
    }
    Ok(rows)
}

fn add_rows(
    batch: &RecordBatch,
    key_names: &[String],
    rows: &mut BTreeMap<Vec<u8>, SideRow>,
) -> Result<(), ConnectorError> {
    let cells = canonical_cells(batch)
        .map_err(|error| ConnectorError::Task(format!("cannot encode rows: {error}")))?;
    let schema = batch.schema();
    let key_indexes: Vec<usize> = key_names
        .iter()
        .filter_map(|name| schema.index_of(name).ok())
        .collect();
    let views: Vec<Option<ColumnView<'_>>> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, array)| ColumnView::new(field.name(), array.as_ref()).ok())
        .collect();
    for (row, row_cells) in cells.into_iter().enumerate() {
        let values: Vec<serde_json::Value> = views
            .iter()
            .map(|view| {
                view.as_ref()
                    .map_or(serde_json::Value::Null, |view| json_of(view.cell(row)))
            })
            .collect();
        let key_columns: Vec<usize> = if key_indexes.is_empty() {
            (0..row_cells.len()).collect()
        } else {
            key_indexes.clone()
        };
        let key_bytes: Vec<u8> = key_columns
            .iter()
            .flat_map(|index| row_cells[*index].iter().copied())
            .collect();
        let key = match key_columns.as_slice() {
            [only] => values[*only].clone(),
            many => {
                serde_json::Value::Array(many.iter().map(|index| values[*index].clone()).collect())
            }
        };
        rows.insert(
            key_bytes,
            SideRow {
                key,
                cells: row_cells,
                values,
            },
        );
    }
    Ok(())
}

/// A cell as JSON: numbers as numbers, text as text, anything else in its exact text.
fn json_of(cell: CellRef<'_>) -> serde_json::Value {
    use serde_json::Value;
    match cell {
        CellRef::Null => Value::Null,
        CellRef::Bool(value) => Value::Bool(value),
        CellRef::Int(value) => Value::from(value),
        CellRef::UInt64(value) => Value::from(value),
        // `{:?}` keeps every bit of a float (the shortest text that reads back alike).
        CellRef::Float(value) => Value::String(format!("{value:?}")),
        CellRef::Utf8(text) => Value::String(text.to_owned()),
        CellRef::Binary(bytes) | CellRef::FixedSizeBinary(bytes) => Value::String(format!(
            "x'{}'",
            bytes
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>()
        )),
        other => Value::String(format!("{other:?}")),
    }
}

fn differing_columns<'a>(difference: &RowDifference, columns: &'a [String]) -> Vec<&'a str> {
    match difference {
        RowDifference::Changed {
            columns: changed, ..
        } => changed
            .iter()
            .filter_map(|index| columns.get(*index).map(String::as_str))
            .collect(),
        _ => Vec::new(),
    }
}

fn print_diff(localised: &Localised, show_values: bool) {
    if !localised.settled.is_empty() {
        println!(
            "chunks that agree when checked again (the source changed meanwhile): {:?}",
            localised.settled
        );
    }
    if localised.ranges.is_empty() {
        return;
    }
    let keys: usize = localised.ranges.iter().map(|range| range.rows.len()).sum();
    println!(
        "{keys} differing keys in {} ranges (localised with {} range probes in {:.2} s):",
        localised.ranges.len(),
        localised.probes,
        localised.elapsed.as_secs_f64()
    );
    println!(
        "{:<24}  {:<12}  {:>6}  {:<20}  {:<8}  columns",
        "table", "partition", "chunk", "key", "kind"
    );
    for range in &localised.ranges {
        for difference in &range.rows {
            let mut columns = differing_columns(difference, &range.columns).join(",");
            if show_values
                && let RowDifference::Changed {
                    columns: changed,
                    source,
                    target,
                    ..
                } = difference
            {
                let values: Vec<String> = changed
                    .iter()
                    .map(|index| {
                        format!(
                            "{}: {} -> {}",
                            range.columns.get(*index).map_or("?", String::as_str),
                            source.get(*index).cloned().unwrap_or_default(),
                            target.get(*index).cloned().unwrap_or_default()
                        )
                    })
                    .collect();
                columns = values.join("; ");
            }
            println!(
                "{:<24}  {:<12}  {:>6}  {:<20}  {:<8}  {columns}",
                range.table,
                range.partition.as_deref().unwrap_or("-"),
                range.chunk,
                difference.key().to_string(),
                difference.kind()
            );
        }
    }
}

fn write_jsonl(path: &Path, localised: &Localised, show_values: bool) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for range in &localised.ranges {
        for difference in &range.rows {
            let named = |values: &[serde_json::Value]| {
                show_values.then(|| {
                    range
                        .columns
                        .iter()
                        .cloned()
                        .zip(values.iter().cloned())
                        .collect::<serde_json::Map<_, _>>()
                })
            };
            let (source, target) = match difference {
                RowDifference::MissingInTarget { source, .. } => (named(source), None),
                RowDifference::ExtraInTarget { target, .. } => (None, named(target)),
                RowDifference::Changed { source, target, .. } => (named(source), named(target)),
            };
            let line = DiffLine {
                table: &range.table,
                partition: range.partition.as_deref(),
                chunk: range.chunk,
                range: range.range.to_string(),
                key: difference.key(),
                kind: difference.kind(),
                columns: differing_columns(difference, &range.columns),
                source,
                target,
            };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}

/// Re-copies each differing range with the copy path (one fenced overwrite transaction,
/// then verified), or with `dry_run` lists them.
async fn repair(
    spec: &JobSpec,
    job: &JobRecord,
    chunks: &[ChunkRecord],
    connectors: &JobConnectors,
    options: &VerifyOptions,
    localised: &mut Localised,
) {
    if options.dry_run {
        for range in &localised.ranges {
            println!(
                "would re-copy {}{} {} (chunk {}): {} keys differ; target rows outside it are not touched",
                range.table,
                range
                    .partition
                    .as_ref()
                    .map(|partition| format!(" partition {partition}"))
                    .unwrap_or_default(),
                range.range,
                range.chunk,
                range.rows.len()
            );
        }
        return;
    }
    let runner = ChunkRunner::new(connectors.source.clone(), connectors.sink.clone());
    let run_id = format!("{}-repair", job.run_id);
    let mut prepared_tables = std::collections::HashSet::new();
    for (index, range) in localised.ranges.iter().enumerate() {
        let Some(chunk) = chunks.iter().find(|chunk| chunk.id.0 == range.chunk) else {
            continue;
        };
        let Some(table) = job.tables.get(chunk.table_index) else {
            continue;
        };
        // The target's fence table (a verify-only run never writes, so may not have it).
        if prepared_tables.insert(chunk.table_index)
            && let Err(error) = connectors
                .sink
                .prepare_table(
                    &table.schema,
                    &table.key,
                    &ferry_coordinator::job::require_existing_options(spec, table),
                )
                .await
        {
            localised
                .repair_failures
                .push(format!("{}: {error}", table.schema.name));
            continue;
        }
        let task = ChunkTask {
            job: job.id.clone(),
            run_id: run_id.clone(),
            chunk: chunk.id,
            // Grows with every range of the run: the fence accepts each in turn.
            attempt: Attempt(index as u32 + 1),
            worker: WorkerId("ferryctl-verify".into()),
            table: Arc::new(table.schema.clone()),
            key: Arc::new(table.key.clone()),
            partition: chunk.partition.clone(),
            range: range.range.clone(),
            // A repair runs after the job: the table has its key.
            key_deferred: false,
            verify: VerifyMode::Checksum,
            mode: JobMode::Copy,
            source_snapshot: None,
            sync: None,
            cancel: CancellationToken::new(),
            progress: Arc::new(|_| {}),
            on_verifying: Arc::new(|| {}),
            admission: Arc::new(Unthrottled),
            give_back: CancellationToken::new(),
        };
        match runner.execute(task).await {
            ChunkResult::Verified { rows, .. } => {
                println!(
                    "repaired {} {} (chunk {}): {rows} rows re-copied and verified",
                    range.table, range.range, range.chunk
                );
                localised.repaired += 1;
            }
            other => localised.repair_failures.push(format!(
                "{} {} (chunk {}): {other:?}",
                range.table, range.range, range.chunk
            )),
        }
    }
    for failure in &localised.repair_failures {
        eprintln!("error: repair failed: {failure}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitted_verify_spec_names_the_mode_and_the_job() {
        let yaml =
            "name: orders\nsource: {kind: sqlite, path: a.db}\n# note\ntables: {include: ['*']}\n";
        let rewritten = verify_spec_yaml(yaml, "orders-verify").expect("rewritten");
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rewritten).expect("yaml");
        assert_eq!(value["mode"].as_str(), Some("verify"));
        assert_eq!(value["name"].as_str(), Some("orders-verify"));
        assert_eq!(value["source"]["kind"].as_str(), Some("sqlite"));
        assert!(verify_spec_yaml("- a\n- b\n", "x").is_err());
    }

    #[test]
    fn only_a_finished_verify_of_its_own_file_starts_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("v.db");
        let make = |jobs: &[&str], states: &[&str]| {
            let _ = std::fs::remove_file(&state);
            let connection = rusqlite::Connection::open(&state).expect("open");
            connection
                .execute_batch(
                    "CREATE TABLE jobs (id TEXT); CREATE TABLE chunks (job TEXT, state TEXT);",
                )
                .expect("schema");
            for job in jobs {
                connection
                    .execute("INSERT INTO jobs VALUES (?1)", [job])
                    .expect("job");
            }
            for chunk_state in states {
                connection
                    .execute("INSERT INTO chunks VALUES ('a-verify', ?1)", [chunk_state])
                    .expect("chunk");
            }
        };
        make(&["a-verify"], &["VERIFIED", "FAILED"]);
        assert_eq!(start_over_if_finished(&state, "a-verify"), Ok(true));
        assert!(!state.exists());
        make(&["a-verify"], &["VERIFIED", "PLANNED"]);
        assert_eq!(
            start_over_if_finished(&state, "a-verify"),
            Ok(false),
            "resumed"
        );
        assert!(state.exists());
        make(&["a", "a-verify"], &["VERIFIED"]);
        assert_eq!(
            start_over_if_finished(&state, "a-verify"),
            Ok(false),
            "a copy's state file is never removed"
        );
        assert!(state.exists());
    }

    #[test]
    fn integer_chunk_ranges_convert_and_others_do_not() {
        let range = ChunkRange::Interval {
            lower: Some(KeyBound(vec![KeyValue::Int(10)])),
            upper: None,
        };
        assert_eq!(
            int_range(&range),
            Some(IntRange {
                lower: Some(10),
                upper: None
            })
        );
        assert_eq!(chunk_range(int_range(&range).expect("int")), range);
        let text = ChunkRange::Interval {
            lower: Some(KeyBound(vec![KeyValue::Text("a".into())])),
            upper: None,
        };
        assert_eq!(int_range(&text), None);
        assert_eq!(int_range(&ChunkRange::NullKeys), None);
    }
}
