//! Plans a job: selects the tables, prepares the target tables, and cuts each table into
//! chunks with the pure decisions of [`crate::planner`]: a partitioned table (same engine
//! on both sides) partition by partition, each leaf cut on its key like a table of its own.

use ferry_connectors::{ConnectorError, PrepareOptions, PrepareOutcome, Sink, Source};
use ferry_coordination::{ChunkRecord, PlannedKeySpan, TableRecord};
use ferry_model::ids::ChunkId;
use ferry_model::key::{KeyBound, KeyStats, SplitKey};
use ferry_model::schema::{TableName, TableSchema};
use ferry_model::spec::JobSpec;

use crate::planner::{
    HashSplitRefusal, SplitChoice, boundaries_from_sample, choose_plan_units, choose_split,
    choose_split_key, hash_split_key, plan_table, split_hint,
};

/// Why a job could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An include pattern without wildcards names a table the source does not have.
    #[error(
        "tables.include[{index}]: table {name:?} not found in the source; available: {available}"
    )]
    TableNotFound {
        /// The pattern's index in `tables.include`.
        index: usize,
        /// The pattern.
        name: String,
        /// The source's tables.
        available: String,
    },
    /// The patterns select no table at all.
    #[error(
        "tables: the include and exclude patterns select no table of the source; available: {available}"
    )]
    NoTables {
        /// The source's tables.
        available: String,
    },
    /// Two source tables would be written to the same target table.
    #[error(
        "tables {first} and {second} would both be written to target table {target}; \
         exclude one of them in tables.exclude"
    )]
    TargetCollision {
        /// The first source table.
        first: Box<TableName>,
        /// The second source table.
        second: Box<TableName>,
        /// Their common target.
        target: Box<TableName>,
    },
    /// A `columns:` override names no column of the selected tables.
    #[error(
        "columns.{key:?}: no selected table has this column; name it as \"table.column\" or \
         \"schema.table.column\" of a table in tables.include"
    )]
    UnknownColumnOverride {
        /// The override's key.
        key: String,
    },
    /// A `tables.split` entry names no selected table.
    #[error(
        "tables.split.{key}: no selected table has this name; name a table of tables.include \
         as \"schema.table\" or \"table\""
    )]
    UnknownSplitTable {
        /// The entry's key.
        key: String,
    },
    /// A `tables.split` entry cannot be used for its table.
    #[error("tables.split.{key}: {refusal}")]
    HashSplitRefused {
        /// The entry's key.
        key: String,
        /// Why, and what to do (boxed: the largest refusal would make every
        /// `PlanError` large).
        refusal: Box<HashSplitRefusal>,
    },
    /// `consistency: job_snapshot` cannot be used with this source (a standby that
    /// cannot export snapshots, or a source without them).
    #[error("{detail}")]
    Snapshot {
        /// Why, and what to do.
        detail: String,
    },
    /// A connector failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
}

/// A planned job: its tables and chunks, ready for the coordination store.
#[derive(Debug)]
pub struct JobPlan {
    /// The tables, in plan order.
    pub tables: Vec<TableRecord>,
    /// The chunks, ids dense from 0.
    pub chunks: Vec<ChunkRecord>,
    /// What preparing each target table did.
    pub prepared: Vec<(TableName, PrepareOutcome)>,
}

/// Selects tables by the spec's patterns, in the source's order.
pub async fn select_tables(
    spec: &JobSpec,
    source: &dyn Source,
) -> Result<Vec<TableName>, PlanError> {
    let all = source.list_tables().await?;
    let available = || {
        let names: Vec<String> = all.iter().map(ToString::to_string).collect();
        if names.is_empty() {
            "(none)".to_string()
        } else {
            names.join(", ")
        }
    };
    for (index, pattern) in spec.tables.include.iter().enumerate() {
        if pattern.is_literal()
            && !all
                .iter()
                .any(|table| pattern.matches(&table.to_string()) || pattern.matches(&table.name))
        {
            return Err(PlanError::TableNotFound {
                index,
                name: pattern.as_str().to_string(),
                available: available(),
            });
        }
    }
    let selected: Vec<TableName> = all
        .iter()
        .filter(|table| spec.tables.selects(&table.to_string(), &table.name))
        .cloned()
        .collect();
    if selected.is_empty() {
        return Err(PlanError::NoTables {
            available: available(),
        });
    }
    Ok(selected)
}

/// Plans the job and prepares the target tables per `spec.schema`.
pub async fn plan_job(
    spec: &JobSpec,
    source: &dyn Source,
    sink: &dyn Sink,
) -> Result<JobPlan, PlanError> {
    plan_job_with(spec, source, sink, true).await
}

/// Plans a job; `prepare_targets: false` (a dry run) leaves the target untouched: its
/// tables are neither created nor checked.
pub async fn plan_job_with(
    spec: &JobSpec,
    source: &dyn Source,
    sink: &dyn Sink,
    prepare_targets: bool,
) -> Result<JobPlan, PlanError> {
    let selected = select_tables(spec, source).await?;
    if spec.consistency == ferry_model::spec::Consistency::JobSnapshot {
        // Refused now rather than when the run starts: a snapshot is exported and let go.
        match source.export_snapshot().await {
            Ok(probe) => drop(probe),
            Err(error) if error.kind() == ferry_connectors::ErrorKind::Unavailable => {
                return Err(PlanError::Connector(error));
            }
            Err(ConnectorError::Unsupported { detail, .. }) => {
                return Err(PlanError::Snapshot { detail });
            }
            Err(error) => {
                return Err(PlanError::Snapshot {
                    detail: format!(
                        "consistency: job_snapshot: cannot export a snapshot of the source \
                         ({error}); use consistency: chunk if it cannot be fixed"
                    ),
                });
            }
        }
    }
    let mut described = Vec::with_capacity(selected.len());
    let mut targets: std::collections::HashMap<TableName, TableName> =
        std::collections::HashMap::new();
    for name in &selected {
        let schema = source.describe_table(name).await?;
        let target = sink.target_table(&schema);
        if let Some(first) = targets.insert(target.clone(), name.clone()) {
            return Err(PlanError::TargetCollision {
                first: Box::new(first),
                second: Box::new(name.clone()),
                target: Box::new(target),
            });
        }
        described.push(schema);
    }
    for key in spec.columns.0.keys() {
        let known = described.iter().any(|table| {
            table.columns.iter().any(|column| {
                *key == format!("{}.{}", table.name, column.name)
                    || *key == format!("{}.{}", table.name.name, column.name)
            })
        });
        if !known {
            return Err(PlanError::UnknownColumnOverride { key: key.clone() });
        }
    }
    for key in spec.tables.split.keys() {
        let known = described
            .iter()
            .any(|table| *key == table.name.to_string() || *key == table.name.name);
        if !known {
            return Err(PlanError::UnknownSplitTable { key: key.clone() });
        }
    }
    let mut tables = Vec::with_capacity(selected.len());
    let mut chunks = Vec::new();
    let mut prepared = Vec::with_capacity(selected.len());
    for schema in described {
        let name = schema.name.clone();
        let same_engine = source.kind() == sink.kind();
        let (key, warning) = match spec.tables.split_of(&name.to_string(), &name.name) {
            Some(split) => {
                let key = hash_split_key(&schema, split, source.kind(), sink.kind()).map_err(
                    |refusal| PlanError::HashSplitRefused {
                        key: if spec.tables.split.contains_key(&name.to_string()) {
                            name.to_string()
                        } else {
                            name.name.clone()
                        },
                        refusal: Box::new(refusal),
                    },
                )?;
                (key, None)
            }
            None => {
                let (key, warning) = choose_split_key(&schema, sink.can_carry_rowid(), same_engine);
                // A table copied as one chunk for want of a key: say how to cut it.
                let hint = (key == SplitKey::None)
                    .then(|| split_hint(&schema, source.kind(), sink.kind()))
                    .flatten();
                let warning = match (warning, hint) {
                    (Some(warning), Some(hint)) => Some(format!("{warning}; {hint}")),
                    (warning, _) => warning,
                };
                (key, warning)
            }
        };
        // Prepare before counting: a target that cannot take the table fails the job
        // when it is submitted, not half-way through.
        // A sync pass runs after a copy: its target tables must exist (checked, and given
        // the fence table a re-copied range needs), never created or recreated.
        let options = PrepareOptions {
            mode: if spec.mode == ferry_model::spec::JobMode::Sync {
                ferry_model::spec::SchemaMode::RequireExisting
            } else {
                spec.schema
            },
            type_overrides: crate::job::type_overrides(spec, &schema),
            // Created by this job (a missing table, or `schema: recreate`): loaded
            // without its key where the target gains from it.
            defer_primary_key: spec.chunking.defer_key
                && spec.mode == ferry_model::spec::JobMode::Copy
                && spec.schema != ferry_model::spec::SchemaMode::RequireExisting
                && sink.defers_primary_key()
                && !schema.primary_key.is_empty(),
        };
        if source.kind() != sink.kind() {
            source.check_readable(&schema, sink.kind()).await?;
        }
        let (partitions, partition_warning) =
            choose_plan_units(&schema, same_engine, !options.type_overrides.is_empty());
        // A sink sees `partitioning` only when chunks go by partition: it then creates the
        // target partitioned alike, or refuses an existing target whose partitions differ.
        let schema = if partitions.is_some() {
            schema
        } else {
            TableSchema {
                partitioning: None,
                ..schema
            }
        };
        let mut key_deferred = false;
        if prepare_targets {
            let outcome = sink.prepare_table(&schema, &key, &options).await?;
            prepared.push((name.clone(), outcome));
            // The sink creates a partitioned table with its key (it spans the partitions).
            key_deferred = options.defer_primary_key
                && schema.partitioning.is_none()
                && outcome != ferry_connectors::PrepareOutcome::Existing;
        }
        let table_index = tables.len();
        let units: Vec<Option<String>> = match &partitions {
            Some(leaves) => leaves.iter().cloned().map(Some).collect(),
            None => vec![None],
        };
        let mut table_rows = 0u64;
        let mut key_spans = Vec::new();
        for partition in units {
            let scoped = match &partition {
                Some(leaf) => schema.for_partition(leaf),
                None => schema.clone(),
            };
            let stats = source.key_stats(&scoped, &key).await?;
            let (choice, boundaries) =
                split_boundaries(source, &scoped, &key, &stats, spec.chunking.target_rows).await?;
            table_rows = table_rows.saturating_add(stats.rows);
            if let Some((min, max)) = stats.int_min_max.filter(|_| key.single_integer()) {
                key_spans.push(PlannedKeySpan {
                    partition: partition.clone(),
                    min,
                    max,
                });
            }
            tracing::info!(table = %name, partition = partition.as_deref(), ?choice, rows = stats.rows, "planned");
            for planned in plan_table(&key, &stats, choice, &boundaries) {
                chunks.push(ChunkRecord::planned(
                    ChunkId(chunks.len() as u32),
                    table_index,
                    partition.clone(),
                    planned.range,
                    planned.estimated_rows,
                ));
            }
        }
        tracing::info!(table = %name, rows = table_rows, partitions = partitions.as_ref().map(Vec::len), "planned table");
        tables.push(TableRecord {
            schema,
            key,
            warnings: warning.into_iter().chain(partition_warning).collect(),
            key_spans,
            key_deferred,
        });
    }
    Ok(JobPlan {
        tables,
        chunks,
        prepared,
    })
}

/// Chooses how to cut one table (or partition) and reads the boundaries the choice needs:
/// exact ones from a key scan, or ones cut from a sample of a big table's keys. A source
/// that cannot sample, or whose sample came back empty, is scanned exactly.
async fn split_boundaries(
    source: &dyn Source,
    table: &TableSchema,
    key: &SplitKey,
    stats: &KeyStats,
    target_rows: u64,
) -> Result<(SplitChoice, Vec<KeyBound>), PlanError> {
    let choice = choose_split(key, stats, target_rows);
    match choice {
        SplitChoice::Boundaries { every_rows } => {
            Ok((choice, source.key_boundaries(table, key, every_rows).await?))
        }
        SplitChoice::Sample { every_rows, points } => {
            let keyed_rows = stats.rows.saturating_sub(stats.null_key_rows);
            let started = std::time::Instant::now();
            match source.key_sample(table, key, points, keyed_rows).await? {
                Some(sample) if !sample.keys.is_empty() => {
                    tracing::info!(
                        table = %table.name,
                        points = sample.keys.len(),
                        sampled_rows = sample.rows,
                        seconds = started.elapsed().as_secs_f64(),
                        "key boundaries cut from a sample"
                    );
                    Ok((choice, boundaries_from_sample(&sample, every_rows)))
                }
                _ => {
                    let exact = SplitChoice::Boundaries { every_rows };
                    Ok((exact, source.key_boundaries(table, key, every_rows).await?))
                }
            }
        }
        SplitChoice::Single | SplitChoice::Even { .. } => Ok((choice, Vec::new())),
    }
}
