//! Target tables loaded without their primary key (`chunking.defer_key`).
//!
//! A table ferry creates in the job (missing, or `schema: recreate`) on a target that
//! gains from it ([`ferry_connectors::Sink::defers_primary_key`]) is created without its
//! primary key ([`ferry_coordination::TableRecord::key_deferred`]). Its chunks copy
//! without B-tree inserts and end COPIED (the source checksum kept, nothing read back:
//! reading a range of a table without its key scans the whole table). Once every chunk of
//! the table is COPIED (or ended for good), the key is built once, here, by the scheduler
//! (which runs where the target tables are created: `ferryctl local`, or the cluster's
//! leader); then each COPIED chunk is verified against its kept source checksum, VERIFIED
//! or sent back to PLANNED for a re-copy, which takes the normal keyed path.
//!
//! The verifications count as chunks verifying in [`crate::in_flight`], so that chunks
//! copying + verifying stay ≤ 2 × concurrency; a COPIED chunk holds no slot while it
//! waits for the key, so a table of any number of chunks cannot stall the job.
//!
//! The key build is idempotent (it checks whether the key exists): a run resumed after a
//! crash builds it, or finds it built, and verifies the COPIED chunks it finds.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_connectors::{ErrorKind, Sink};
use ferry_coordination::{ChunkRecord, ChunkState, Coordination};
use ferry_model::checksum::RangeChecksum;
use ferry_model::execution::ChunkResult;
use ferry_model::ids::{ChunkId, JobId, WorkerId};
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::TableSchema;
use ferry_model::spec::{JobMode, VerifyMode};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::in_flight::{AttemptToken, InFlight};
use crate::scheduler::{AttemptOutcome, Finished, SchedulerOptions, classify};

/// Why a table's key could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct KeyBuildError {
    /// What went wrong, naming the table (and the fix, for rows with equal keys).
    pub message: String,
    /// Whether building it again may succeed (the database was away).
    pub retryable: bool,
}

/// Builds the keys of target tables and verifies their copied chunks: the target as the
/// scheduler reaches it.
#[async_trait]
pub trait TargetKeys: Send + Sync {
    /// Builds `table`'s primary key in the target unless it has it.
    async fn build_key(&self, table: &TableSchema) -> Result<(), KeyBuildError>;

    /// Verifies a chunk copied into `table` (its key built) against the source side
    /// its copy kept, as far as `verify` looks.
    async fn verify_copied(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
        source: RangeChecksum,
        verify: VerifyMode,
    ) -> ChunkResult;

    /// The target's checksums of `ranges` of `table` (its key not built yet), in their
    /// order, read in one pass over the table (in up to `streams` parts at once), the
    /// way the copy hashed the source (in
    /// the engine's bulk format when the target offers it for the table, else
    /// canonically); `None` (the default) when the target cannot (the chunks are then
    /// verified one by one once the key is built).
    async fn checksum_unkeyed(
        &self,
        _table: &TableSchema,
        _key: &SplitKey,
        _ranges: &[ChunkRange],
        _streams: usize,
    ) -> Option<Vec<RangeChecksum>> {
        None
    }
}

/// [`TargetKeys`] over the job's sink.
pub struct SinkKeys {
    /// The job's target.
    pub sink: Arc<dyn Sink>,
}

#[async_trait]
impl TargetKeys for SinkKeys {
    async fn build_key(&self, table: &TableSchema) -> Result<(), KeyBuildError> {
        let target = self.sink.target_table(table);
        self.sink
            .build_primary_key(table)
            .await
            .map_err(|error| KeyBuildError {
                retryable: matches!(error.kind(), ErrorKind::Transient | ErrorKind::Unavailable),
                message: format!("cannot build the primary key of target table {target}: {error}"),
            })
    }

    async fn verify_copied(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
        source: RangeChecksum,
        verify: VerifyMode,
    ) -> ChunkResult {
        let target = match verify {
            VerifyMode::None => Ok(source),
            VerifyMode::Count => self
                .sink
                .count_chunk(table, key, range)
                .await
                .map(|rows| RangeChecksum { rows, sum: 0 }),
            VerifyMode::Checksum => self.checksum_either_way(table, key, range, source).await,
        };
        match target {
            Ok(target) if agrees(source, target, verify) => ChunkResult::Verified {
                rows: source.rows,
                checksum: source,
                sync: None,
            },
            Ok(target) => ChunkResult::Mismatch { source, target },
            Err(error) if error.kind() == ErrorKind::Unavailable => ChunkResult::Unavailable {
                message: error.to_string(),
            },
            Err(error) => ChunkResult::Error {
                message: format!(
                    "cannot verify the copied chunk of table {}: {error}",
                    table.name
                ),
                retryable: error.is_retryable(),
            },
        }
    }

    async fn checksum_unkeyed(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        ranges: &[ChunkRange],
        streams: usize,
    ) -> Option<Vec<RangeChecksum>> {
        // The way the rows passed: in the engine's bulk format when the target offers it
        // for the table (the same engine, the same column types), else as Arrow batches.
        let read = async {
            if self.sink.native_format(table).await?.is_none() {
                return self.sink.checksum_chunks(table, key, ranges, streams).await;
            }
            let native = self
                .sink
                .native_checksums(table, key, ranges, streams)
                .await?;
            Ok(native.map(|checksums| checksums.iter().map(|native| native.checksum).collect()))
        };
        match read.await {
            Ok(checksums) => checksums,
            Err(error) => {
                // The chunks are verified one by one once the key is built.
                tracing::warn!(table = %table.name, %error, "cannot read the copied table back in one pass");
                None
            }
        }
    }
}

impl SinkKeys {
    /// The target's checksum of the range in the way the copy hashed the source: the
    /// native one when the rows passed in the engine's bulk format, else the canonical
    /// one. Which way the copy went is not kept, so the native checksum is tried first
    /// (the copy's usual way between two databases of one engine), then the canonical.
    async fn checksum_either_way(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
        source: RangeChecksum,
    ) -> Result<RangeChecksum, ferry_connectors::ConnectorError> {
        if self.sink.native_format(table).await?.is_some()
            && let Some(native) = self.sink.native_checksum(table, key, range).await?
            && native.checksum == source
        {
            return Ok(native.checksum);
        }
        self.sink.checksum_chunk(table, key, range).await
    }
}

/// Where a deferred table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Loaded with its key (not deferred).
    Keyed,
    /// Chunks still copying; the key is built when they are all copied.
    Pending,
    /// The key is being built.
    Building,
    /// The key exists; the copied chunks are verified.
    Built,
    /// The key cannot be built; the table's copied chunks failed.
    Broken,
}

/// The scheduler's deferred tables: key builds and the verifications of copied chunks.
pub(crate) struct DeferredKeys {
    targets: Option<Arc<dyn TargetKeys>>,
    phases: Vec<Phase>,
    retry_at: Vec<Option<Instant>>,
    to_verify: VecDeque<ChunkId>,
    /// How far the copied chunks are verified.
    verify: VerifyMode,
    /// The target's checksums of copied chunks read while their table's key was built.
    read_while_building: HashMap<ChunkId, RangeChecksum>,
    /// Key builds running: the table and how it ended.
    pub(crate) builds: JoinSet<KeyBuilt>,
    /// Verifications of copied chunks running.
    pub(crate) verifications: JoinSet<Finished>,
}

/// A table whose copied chunks hold fewer rows than this on average is read back in one
/// pass while its key builds; bigger chunks are read back one by one after it. Measured
/// on 2 cores (pg → pg): 3,000 chunks of 100 rows went from 1.1 s of reads after the
/// build to 0.2 s for build and pass (a read's fixed cost, ~0.4 ms, is that of ~1,000
/// rows), while 8 chunks of 250,000 rows took 1.3-1.6 s for build and pass against
/// 1.3-1.5 s for build then reads: the pass's search and the build compete for the same
/// cores, and the fixed costs saved are nothing beside the rows.
const ONE_PASS_BELOW_ROWS: u64 = 10_000;

/// A key build's end: the table, how it ended, and the target's checksums of the
/// table's copied chunks read in one pass while it ran.
pub(crate) type KeyBuilt = (
    usize,
    Result<(), KeyBuildError>,
    Vec<(ChunkId, RangeChecksum)>,
);

/// The worker a verification run by the scheduler is counted on in [`InFlight`].
fn verifier() -> WorkerId {
    WorkerId("key-verifier".to_owned())
}

impl DeferredKeys {
    /// The job's tables' phases: deferred tables wait for their chunks, when the
    /// scheduler can reach the target to build keys (a copy job with `targets`).
    pub(crate) fn new(deferred: impl Iterator<Item = bool>, options: &SchedulerOptions) -> Self {
        let targets = options
            .target_keys
            .clone()
            .filter(|_| options.mode == JobMode::Copy)
            .map(|keys| keys.0);
        let phases: Vec<Phase> = deferred
            .map(|deferred| {
                if deferred && targets.is_some() {
                    Phase::Pending
                } else {
                    Phase::Keyed
                }
            })
            .collect();
        Self {
            targets,
            retry_at: vec![None; phases.len()],
            phases,
            to_verify: VecDeque::new(),
            verify: options.verify,
            read_while_building: HashMap::new(),
            builds: JoinSet::new(),
            verifications: JoinSet::new(),
        }
    }

    /// Whether the table's chunks are copied without the key while it is missing.
    pub(crate) fn is_deferred(&self, table_index: usize) -> bool {
        self.phases
            .get(table_index)
            .is_some_and(|phase| *phase != Phase::Keyed)
    }

    /// Whether nothing is running or waiting to run here.
    pub(crate) fn idle(&self) -> bool {
        self.builds.is_empty()
            && self.verifications.is_empty()
            && self.to_verify.is_empty()
            && self.retry_at.iter().all(Option::is_none)
    }

    /// When a key build that failed for a passing reason is tried again.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.retry_at.iter().flatten().min().copied()
    }

    /// Starts the key build of every pending table whose chunks are all copied (or
    /// ended for good); the table is read back meanwhile in as many streams as chunks
    /// may be copying and verifying (twice `limit`), as their verifications would.
    pub(crate) fn start_builds(
        &mut self,
        model: &[ChunkRecord],
        tables: &[(Arc<TableSchema>, Arc<SplitKey>)],
        limit: usize,
        cancel: &CancellationToken,
    ) {
        let streams = limit.saturating_mul(2).max(1);
        let Some(targets) = self.targets.clone() else {
            return;
        };
        let now = Instant::now();
        for (table_index, phase) in self.phases.iter_mut().enumerate() {
            if *phase != Phase::Pending || self.retry_at[table_index].is_some_and(|at| at > now) {
                continue;
            }
            let all_copied = model
                .iter()
                .filter(|chunk| chunk.table_index == table_index)
                .all(|chunk| {
                    matches!(
                        chunk.state,
                        ChunkState::Copied | ChunkState::Verified | ChunkState::Failed
                    )
                });
            if !all_copied {
                continue;
            }
            let Some((table, key)) = tables.get(table_index).cloned() else {
                continue;
            };
            *phase = Phase::Building;
            self.retry_at[table_index] = None;
            // The copied chunks, read back in one pass while the key builds (a range of
            // a table without its key is read by scanning it whole). A table with
            // partitions has a relation each: its chunks are verified one by one.
            let copied: Vec<&ChunkRecord> = model
                .iter()
                .filter(|chunk| {
                    chunk.table_index == table_index && chunk.state == ChunkState::Copied
                })
                .collect();
            // Rows as the copies counted them at the source.
            let copied_rows: u64 = copied
                .iter()
                .map(|chunk| chunk.checksum.map_or(chunk.rows, |checksum| checksum.rows))
                .sum();
            let read_back = self.verify != VerifyMode::None
                && !copied.is_empty()
                && copied_rows / (copied.len() as u64) < ONE_PASS_BELOW_ROWS
                && model
                    .iter()
                    .all(|chunk| chunk.table_index != table_index || chunk.partition.is_none());
            let ids: Vec<ChunkId> = copied.iter().map(|chunk| chunk.id).collect();
            let ranges: Vec<ChunkRange> = copied.iter().map(|chunk| chunk.range.clone()).collect();
            let targets = targets.clone();
            let cancel = cancel.child_token();
            self.builds.spawn(async move {
                tracing::info!(table = %table.name, "every chunk copied: building the target table's primary key");
                let started = std::time::Instant::now();
                let read = async {
                    if read_back {
                        targets.checksum_unkeyed(&table, &key, &ranges, streams).await
                    } else {
                        None
                    }
                };
                let (built, read) = tokio::select! {
                    both = async { tokio::join!(targets.build_key(&table), read) } => both,
                    () = cancel.cancelled() => (Err(KeyBuildError {
                        message: format!("building the primary key of {} was cancelled", table.name),
                        retryable: true,
                    }), None),
                };
                if built.is_ok() {
                    tracing::info!(table = %table.name, seconds = started.elapsed().as_secs_f64(), chunks_read_back = read.is_some(), "primary key built");
                }
                let read = read
                    .filter(|checksums| checksums.len() == ids.len())
                    .map(|checksums| ids.into_iter().zip(checksums).collect())
                    .unwrap_or_default();
                (table_index, built, read)
            });
        }
    }

    /// Records a key build's end: a built key queues the table's copied chunks for
    /// verification; a failure that may pass is tried again after `backoff`. Returns
    /// the message of a failure that will not pass (the caller fails the chunks).
    pub(crate) fn built(
        &mut self,
        (table_index, built, read): KeyBuilt,
        model: &[ChunkRecord],
        backoff: Duration,
        cancelled: bool,
    ) -> Option<String> {
        match built {
            Ok(()) => {
                self.phases[table_index] = Phase::Built;
                self.read_while_building.extend(read);
                self.to_verify.extend(
                    model
                        .iter()
                        .filter(|chunk| {
                            chunk.table_index == table_index && chunk.state == ChunkState::Copied
                        })
                        .map(|chunk| chunk.id),
                );
                None
            }
            Err(error) if error.retryable => {
                self.phases[table_index] = Phase::Pending;
                if !cancelled {
                    tracing::warn!(%error, "building the primary key again shortly");
                    self.retry_at[table_index] =
                        Some(Instant::now() + backoff.max(Duration::from_secs(1)));
                }
                None
            }
            Err(error) => {
                self.phases[table_index] = Phase::Broken;
                Some(error.message)
            }
        }
    }

    /// A chunk that ended COPIED after its table's key was built (it was copying when
    /// the build began, which cannot happen, or its table is being verified already):
    /// verified like the others.
    pub(crate) fn copied(&mut self, record: &ChunkRecord) {
        if self.phases.get(record.table_index) == Some(&Phase::Built) {
            self.to_verify.push_back(record.id);
        }
    }

    /// Starts verifications of copied chunks while chunks copying + verifying stay
    /// within twice `limit`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_verifications(
        &mut self,
        store: &Arc<dyn Coordination>,
        job: &JobId,
        model: &[ChunkRecord],
        tables: &[(Arc<TableSchema>, Arc<SplitKey>)],
        in_flight: &mut InFlight,
        limit: usize,
        next_token: impl Fn() -> AttemptToken,
        options: &SchedulerOptions,
        cancel: &CancellationToken,
    ) {
        let Some(targets) = self.targets.clone() else {
            return;
        };
        while in_flight.total() < limit.saturating_mul(2)
            && let Some(chunk_id) = self.to_verify.pop_front()
        {
            let Some(record) = model.get(chunk_id.0 as usize).cloned() else {
                continue;
            };
            if record.state != ChunkState::Copied {
                continue;
            }
            let Some((table, key)) = tables.get(record.table_index).cloned() else {
                continue;
            };
            let read = self.read_while_building.remove(&chunk_id);
            let token = next_token();
            in_flight.started(chunk_id, token, verifier());
            in_flight.verifying(chunk_id, token);
            let store = store.clone();
            let job = job.clone();
            let options = options.clone();
            let targets = targets.clone();
            let cancel = cancel.child_token();
            self.verifications.spawn(async move {
                let table = match &record.partition {
                    Some(partition) => Arc::new(table.for_partition(partition)),
                    None => table,
                };
                let source = record.checksum.unwrap_or_default();
                let result = match read {
                    // Read back while the key was built, and equal: verified. Another
                    // outcome is checked again through the key (the copy may have hashed
                    // the source the other way, canonically).
                    Some(target) if agrees(source, target, options.verify) => ChunkResult::Verified {
                        rows: source.rows,
                        checksum: source,
                        sync: None,
                    },
                    _ => tokio::select! {
                        result = targets.verify_copied(&table, &key, &record.range, source, options.verify) => result,
                        () = cancel.cancelled() => ChunkResult::Cancelled,
                    },
                };
                tracing::info!(chunk = %chunk_id, table = %table.name, outcome = result.kind(), "copied chunk verified after its table's key was built");
                let took_back = |outcome| Finished {
                    chunk: chunk_id,
                    rows_streamed: 0,
                    outcome,
                };
                let Some(completion) = classify(&result, record.failures, &options) else {
                    return took_back(AttemptOutcome::Cancelled);
                };
                match store
                    .complete(&job, chunk_id, record.attempt, &completion)
                    .await
                {
                    Ok(stored) => Finished {
                        chunk: chunk_id,
                        // Not verified: its rows come off the progress shown.
                        rows_streamed: if stored.state == ChunkState::Verified {
                            0
                        } else {
                            record.rows
                        },
                        outcome: AttemptOutcome::Completed {
                            attempt: record.attempt,
                            completion,
                            record: Box::new(stored),
                        },
                    },
                    Err(error) => took_back(AttemptOutcome::Store(error)),
                }
            });
        }
    }
}

/// Whether the target side of a copied chunk agrees with the source side, as far as
/// `verify` looks.
fn agrees(source: RangeChecksum, target: RangeChecksum, verify: VerifyMode) -> bool {
    match verify {
        VerifyMode::None => true,
        VerifyMode::Count => source.rows == target.rows,
        VerifyMode::Checksum => source == target,
    }
}

/// The scheduler's handle on the target's keys (`None`: keys are never deferred).
#[derive(Clone)]
pub struct TargetKeysRef(pub Arc<dyn TargetKeys>);

impl std::fmt::Debug for TargetKeysRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TargetKeys")
    }
}
