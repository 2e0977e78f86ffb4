//! Copies one chunk (source range → target range, overwrite, one transaction) and
//! verifies it.
//!
//! Rows travel one of two ways, and each has its own checksum:
//!
//! - **Arrow batches** (any pair of engines): the canonical checksum
//!   ([`RangeChecksum`]). The source side is computed from the very batches that were
//!   written, as they stream past: the source is read once, and a source that keeps
//!   changing under a live migration is compared with what was actually copied. The
//!   target side is read back after the commit ([`Sink::checksum_chunk`]).
//! - **The engine's own bulk format**, when the sink takes the source's for the table
//!   (PostgreSQL binary COPY between tables of the same column types): the rows are never
//!   decoded, so the source hashes each row's raw bytes as they pass
//!   ([`NativeRead::checksum`]) and the sink hashes the range read back in the same
//!   format ([`Sink::native_checksum`]).
//!
//! A chunk of a table planned by native partitions names its partition
//! ([`ChunkTask::partition`]); the runner hands the connectors the table restricted to it
//! ([`ferry_model::schema::TableSchema::for_partition`]), so the source read, the
//! target's delete and write, and both checksums cover that partition's rows of the range.
//!
//! A chunk of a verify-only job ([`JobMode::Verify`]) is not copied: both sides are
//! counted and checksummed with the canonical checksum at once, and nothing is written.
//! A chunk of a sync pass ([`JobMode::Sync`]) is caught up by `crate::sync_chunk`.
//!
//! Checksums computed inside PostgreSQL and MySQL (`md5` over each row's text in SQL) are
//! not used: measured, they cost more than reading the target back and hashing it here.
//! Between two ClickHouse servers the native checksum is the servers' own (the
//! connector's choice, behind the same `NativeRead::checksum` / `Sink::native_checksum`).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use ferry_connectors::{
    ChunkWrite, ConnectorError, ErrorKind, Fence, NativeRead, PullRead, Sink, Source, WriteSummary,
};
use ferry_model::checksum::RangeChecksum;
use ferry_model::execution::{ChunkExecutor, ChunkResult, ChunkTask, GiveBackAdmission};
use ferry_model::memory::{self, ChunkMemory};
use ferry_model::spec::{JobMode, VerifyMode};
use futures::StreamExt;
use tracing::Instrument;

/// Runs chunk attempts between one source and one sink.
pub struct ChunkRunner {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) sink: Arc<dyn Sink>,
}

/// How a chunk's copy ended.
enum Copied {
    /// Committed: the source side of the checksum (only the row count when
    /// `verify` is not `checksum` on the Arrow path), what the sink's write did (rows
    /// written, whether the table still lacked its deferred key), and the native
    /// checksum method when the rows passed in the native format.
    Committed {
        source: RangeChecksum,
        written: WriteSummary,
        native_method: Option<&'static str>,
    },
    /// The throttle stopped the copy mid-chunk; nothing was committed.
    Requeued(String),
}

/// Where a stream tells the runner that the throttle requeued the chunk.
#[derive(Clone, Default)]
pub(crate) struct RequeueSlot(Arc<Mutex<Option<String>>>);

impl RequeueSlot {
    pub(crate) fn set(&self, reason: String) {
        *lock(&self.0) = Some(reason);
    }

    pub(crate) fn take(&self) -> Option<String> {
        lock(&self.0).take()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn fence_of(task: &ChunkTask) -> Fence {
    Fence {
        run_id: task.run_id.clone(),
        chunk: task.chunk,
        attempt: task.attempt,
    }
}

fn chunk_write<'a>(task: &'a ChunkTask, fence: &'a Fence) -> ChunkWrite<'a> {
    ChunkWrite {
        table: &task.table,
        key: &task.key,
        range: &task.range,
        fence,
        cancel: &task.cancel,
        key_deferred: task.key_deferred,
    }
}

impl ChunkRunner {
    /// Creates a runner over a job's source and sink.
    pub fn new(source: Arc<dyn Source>, sink: Arc<dyn Sink>) -> Self {
        Self { source, sink }
    }

    async fn run(&self, task: &ChunkTask) -> Result<ChunkResult, ConnectorError> {
        // `consistency: job_snapshot`: every read of the attempt imports the job's snapshot.
        let source = match &task.source_snapshot {
            Some(snapshot_id) => self.source.in_snapshot(snapshot_id)?,
            None => self.source.clone(),
        };
        let source = source.as_ref();
        match task.mode {
            JobMode::Verify => self.verify_only(task, source).await,
            JobMode::Sync => self.sync_chunk(task).await,
            JobMode::Copy => self.copy_and_verify(task, source).await,
        }
    }

    /// Copies the chunk with overwrite (one fenced transaction) and verifies it, reading
    /// from `source` (the job's source, or it in the job's snapshot).
    pub(crate) async fn copy_and_verify(
        &self,
        task: &ChunkTask,
        source: &dyn Source,
    ) -> Result<ChunkResult, ConnectorError> {
        // Held until the chunk is verified: the read-back sees rows as big as the copy's.
        let memory = chunk_memory(task).await;
        let copied = match self.copy_pulled(task, source).await? {
            Some(copied) => copied,
            None => match self.copy_native(task, source, &memory).await? {
                Some(copied) => copied,
                None => self.copy_batches(task, source, &memory).await?,
            },
        };
        let (source, written, native_method) = match copied {
            Copied::Committed {
                source,
                written,
                native_method,
            } => (source, written, native_method),
            Copied::Requeued(reason) => return Ok(ChunkResult::Requeued { reason }),
        };
        let rows_written = written.rows_written;
        if rows_written != source.rows {
            return Ok(ChunkResult::Error {
                message: format!(
                    "sink wrote {rows_written} rows but the source streamed {}",
                    source.rows
                ),
                retryable: true,
            });
        }
        if task.cancel.is_cancelled() {
            return Err(ConnectorError::Cancelled);
        }
        // A table of this job loaded without its key, still without it when the chunk
        // was written: the copy is verified by the scheduler once the key is built
        // (reading a range back now would scan the whole table).
        if task.key_deferred && written.key_missing {
            return Ok(ChunkResult::Copied {
                rows: source.rows,
                checksum: source,
            });
        }
        (task.on_verifying)();
        // The copy is committed and its slot may be copying the next chunk: trouble that
        // may pass reads the target again, it does not copy the chunk again.
        let mut verified = self.read_back(task, source, native_method).await;
        for pause in TRANSIENT_RETRY_PAUSES {
            match &verified {
                Err(error) if error.kind() == ErrorKind::Transient => {
                    tracing::warn!(%error, "transient error: verifying the chunk again");
                }
                _ => break,
            }
            tokio::select! {
                () = task.cancel.cancelled() => return Err(ConnectorError::Cancelled),
                () = tokio::time::sleep(pause) => {}
            }
            verified = self.read_back(task, source, native_method).await;
        }
        let (source_seen, target) = match verified {
            Ok(sides) => sides,
            // Still failing: the attempt ends (the chunk is re-copied as a new attempt,
            // through a copy slot) rather than being copied again within this one.
            Err(error) if error.kind() == ErrorKind::Transient => {
                return Ok(ChunkResult::Error {
                    message: format!(
                        "cannot verify the copied chunk of table {}: {error}",
                        task.table.name
                    ),
                    retryable: true,
                });
            }
            Err(error) => return Err(error),
        };
        if target != source_seen {
            return Ok(ChunkResult::Mismatch {
                source: source_seen,
                target,
            });
        }
        Ok(ChunkResult::Verified {
            rows: source.rows,
            checksum: source,
            sync: None,
        })
    }

    /// Reads a committed chunk back from the target as far as `verify` looks (rows only
    /// for `count`); returns what the source streamed and what the target holds, to
    /// compare.
    async fn read_back(
        &self,
        task: &ChunkTask,
        source: RangeChecksum,
        native_method: Option<&'static str>,
    ) -> Result<(RangeChecksum, RangeChecksum), ConnectorError> {
        Ok(match (task.verify, native_method) {
            (VerifyMode::None, _) => (source, source),
            (VerifyMode::Count, _) => {
                let rows = self
                    .sink
                    .count_chunk(&task.table, &task.key, &task.range)
                    .await?;
                let rows_of = |rows| RangeChecksum { rows, sum: 0 };
                (rows_of(source.rows), rows_of(rows))
            }
            (VerifyMode::Checksum, None) => (
                source,
                self.sink
                    .checksum_chunk(&task.table, &task.key, &task.range)
                    .await?,
            ),
            (VerifyMode::Checksum, Some(method)) => {
                match self
                    .sink
                    .native_checksum(&task.table, &task.key, &task.range)
                    .await?
                {
                    Some(target) if target.method == method => (source, target.checksum),
                    _ => {
                        return Err(ConnectorError::Task(format!(
                            "table {} was copied in the native format but the target cannot \
                             checksum it with {method}",
                            task.table.name
                        )));
                    }
                }
            }
        })
    }

    /// A verify-only attempt: counts and checksums the range on both sides at once with
    /// the canonical checksum (streamed: the source's batches are hashed as they are
    /// read, through the throttle's admission like a copy's), and writes nothing.
    pub(crate) async fn verify_only(
        &self,
        task: &ChunkTask,
        source: &dyn Source,
    ) -> Result<ChunkResult, ConnectorError> {
        let memory = chunk_memory(task).await;
        let source = async {
            let mut batches = source
                .read_chunk(&task.table, &task.key, &task.range)
                .await?;
            let mut checksum = RangeChecksum::default();
            while let Some(batch) = batches.next().await {
                let batch = batch?;
                let bytes = batch.get_array_memory_size() as u64;
                memory.lock().await.cover(bytes).await;
                if let Err(reason) = task.admission.admit(batch.num_rows() as u64, bytes).await {
                    return Ok(Err(reason));
                }
                if task.cancel.is_cancelled() {
                    return Err(ConnectorError::Cancelled);
                }
                checksum.add_batch(&batch).map_err(|error| {
                    ConnectorError::Task(format!(
                        "failed to checksum rows of table {}: {error}",
                        task.table.name
                    ))
                })?;
                (task.progress)(batch.num_rows() as u64);
            }
            Ok(Ok(checksum))
        };
        let target = self
            .sink
            .checksum_chunk(&task.table, &task.key, &task.range);
        let (source, target) = tokio::try_join!(source, target)?;
        let source = match source {
            Ok(source) => source,
            Err(reason) => return Ok(ChunkResult::Requeued { reason }),
        };
        if task.cancel.is_cancelled() {
            return Err(ConnectorError::Cancelled);
        }
        (task.on_verifying)();
        if source != target {
            return Ok(ChunkResult::Mismatch { source, target });
        }
        Ok(ChunkResult::Verified {
            rows: source.rows,
            checksum: source,
            sync: None,
        })
    }

    /// Copies the chunk as Arrow batches, hashing them (or only counting their rows) as
    /// they pass to the sink.
    async fn copy_batches(
        &self,
        task: &ChunkTask,
        source: &dyn Source,
        memory: &SharedMemory,
    ) -> Result<Copied, ConnectorError> {
        let batches = source
            .read_chunk(&task.table, &task.key, &task.range)
            .await?;
        let streamed = Arc::new(Mutex::new(RangeChecksum::default()));
        let hash_rows = task.verify == VerifyMode::Checksum;
        let requeue = RequeueSlot::default();
        let stream_checksum = streamed.clone();
        let stream_requeue = requeue.clone();
        let progress = task.progress.clone();
        let table_name = task.table.name.clone();
        let admission = task.admission.clone();
        let memory = memory.clone();
        let hashed = batches.then(move |item| {
            let stream_checksum = stream_checksum.clone();
            let stream_requeue = stream_requeue.clone();
            let progress = progress.clone();
            let table_name = table_name.clone();
            let admission = admission.clone();
            let memory = memory.clone();
            async move {
                let batch = item?;
                // The process's memory budget: the chunk holds enough for its largest
                // batch before the batch goes on.
                let bytes = batch.get_array_memory_size() as u64;
                memory.lock().await.cover(bytes).await;
                // The throttle paces rows here, mid-chunk: paused jobs stop reading, rate
                // limits hold batches back.
                if let Err(reason) = admission.admit(batch.num_rows() as u64, bytes).await {
                    stream_requeue.set(reason);
                    return Err(ConnectorError::Cancelled);
                }
                let mut checksum = lock(&stream_checksum);
                if hash_rows {
                    checksum.add_batch(&batch).map_err(|error| {
                        ConnectorError::Task(format!(
                            "failed to checksum rows of table {table_name}: {error}"
                        ))
                    })?;
                } else {
                    checksum.rows += batch.num_rows() as u64;
                }
                progress(batch.num_rows() as u64);
                Ok(batch)
            }
        });
        let fence = fence_of(task);
        let written = self
            .sink
            .write_chunk(chunk_write(task, &fence), Box::pin(hashed))
            .await;
        if let Some(reason) = requeue.take() {
            return Ok(Copied::Requeued(reason));
        }
        let summary = written?;
        log_written(&summary, "chunk written");
        let source = *lock(&streamed);
        Ok(Copied::Committed {
            source,
            written: summary,
            native_method: None,
        })
    }

    /// The server-to-server path: when the source offers the chunk for the target's
    /// servers to fetch themselves (ClickHouse `pull_address`/`pull_cluster`) and the sink
    /// takes it, the target pulls the rows into its usual fenced overwrite while the
    /// source's server checksums the same rows. Returns `None` when the pair has no such
    /// path.
    ///
    /// Nothing passes through ferry to pace, so while a rows/s or bytes/s limit is in
    /// force the chunk takes a path that does; a pause holds the chunk before it starts
    /// (a pull that is running finishes).
    async fn copy_pulled(
        &self,
        task: &ChunkTask,
        reader: &dyn Source,
    ) -> Result<Option<Copied>, ConnectorError> {
        if task.admission.limits_rows() || task.admission.limits_bytes() {
            return Ok(None);
        }
        let Some(PullRead { source, checksum }) = reader
            .pull(&task.table, &task.key, &task.range, self.sink.kind())
            .await?
        else {
            return Ok(None);
        };
        if let Err(reason) = task.admission.admit(0, 0).await {
            return Ok(Some(Copied::Requeued(reason)));
        }
        let fence = fence_of(task);
        // Without verification the source's servers need not read the chunk twice: the
        // rows staged are the rows pulled.
        let checksum = async {
            if task.verify == VerifyMode::None {
                None
            } else {
                Some(checksum.await)
            }
        };
        let (written, source) = tokio::join!(
            self.sink.write_pulled(chunk_write(task, &fence), &source),
            checksum
        );
        let written = match written {
            // The target's servers cannot reach the source's although both answer ferry:
            // the pull address is wrong (or the network between them is down). Waiting
            // for "the databases" would wait for ever; say what to fix.
            Err(error)
                if error.kind() == ErrorKind::Unavailable
                    && reader.ping().await.is_ok()
                    && self.sink.ping().await.is_ok() =>
            {
                return Err(ConnectorError::Unsupported {
                    table: task.table.name.clone(),
                    detail: format!(
                        "the target's servers could not pull the chunk from the source, though \
                         both answer ferry: {error}; check the source's pull_address or \
                         pull_cluster (the target's servers must reach the source's native port)"
                    ),
                });
            }
            written => written?,
        };
        let Some(summary) = written else {
            return Ok(None);
        };
        let (source, native_method) = match source.transpose()? {
            Some(source) => (source.checksum, Some(source.method)),
            None => (
                RangeChecksum {
                    rows: summary.rows_written,
                    sum: 0,
                },
                None,
            ),
        };
        if let Err(reason) = task.admission.admit(summary.rows_written, 0).await {
            return Ok(Some(Copied::Requeued(reason)));
        }
        (task.progress)(summary.rows_written);
        log_written(&summary, "chunk pulled by the target");
        Ok(Some(Copied::Committed {
            source,
            written: summary,
            native_method,
        }))
    }

    /// The same-engine fast path: when the sink takes the source's native bulk format
    /// for this table (e.g. PostgreSQL binary COPY) and the source can produce it, the
    /// chunk's bytes pass through untouched, in the sink's usual fenced overwrite
    /// transaction. Returns `None` when the pair has no such path.
    ///
    /// The throttle paces the bytes as they pass (pause and bytes/s). Native bytes are not
    /// counted in rows, so while a rows/s limit is in force the chunk takes the Arrow path,
    /// where every batch's rows are admitted.
    async fn copy_native(
        &self,
        task: &ChunkTask,
        source: &dyn Source,
        memory: &SharedMemory,
    ) -> Result<Option<Copied>, ConnectorError> {
        if task.admission.limits_rows() {
            return Ok(None);
        }
        let Some(format) = self.sink.native_format(&task.table).await? else {
            return Ok(None);
        };
        let Some(NativeRead {
            mut stream,
            checksum,
        }) = source
            .read_native(&task.table, &task.key, &task.range, format)
            .await?
        else {
            return Ok(None);
        };
        let admission = task.admission.clone();
        let requeue = RequeueSlot::default();
        let stream_requeue = requeue.clone();
        let memory = memory.clone();
        stream.bytes = Box::pin(stream.bytes.then(move |item| {
            let admission = admission.clone();
            let stream_requeue = stream_requeue.clone();
            let memory = memory.clone();
            async move {
                let piece = item?;
                memory.lock().await.cover(piece.len() as u64).await;
                if let Err(reason) = admission.admit(0, piece.len() as u64).await {
                    stream_requeue.set(reason);
                    return Err(ConnectorError::Cancelled);
                }
                Ok(piece)
            }
        }));
        let fence = fence_of(task);
        let written = self
            .sink
            .write_native(chunk_write(task, &fence), stream)
            .await;
        if let Some(reason) = requeue.take() {
            return Ok(Some(Copied::Requeued(reason)));
        }
        let summary = written?;
        (task.progress)(summary.rows_written);
        log_written(&summary, "chunk written in the native format");
        let source = checksum.await?;
        Ok(Some(Copied::Committed {
            source: source.checksum,
            written: summary,
            native_method: Some(source.method),
        }))
    }
}

/// A running chunk's share of the process's memory budget, for the stream adapters.
type SharedMemory = Arc<tokio::sync::Mutex<ChunkMemory>>;

/// Before the chunk reads anything: its table's share of the budget
/// ([`ChunkMemory::start`]).
async fn chunk_memory(task: &ChunkTask) -> SharedMemory {
    let table = task.table.name.to_string();
    Arc::new(tokio::sync::Mutex::new(
        ChunkMemory::start(memory::process_budget(), &table).await,
    ))
}

fn log_written(summary: &WriteSummary, message: &'static str) {
    tracing::debug!(
        rows = summary.rows_written,
        deleted = summary.rows_deleted,
        "{message}"
    );
}

/// Pauses before running a chunk again after a transient error, within one attempt;
/// an error that persists past them fails the attempt (which then counts).
const TRANSIENT_RETRY_PAUSES: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(200),
    std::time::Duration::from_millis(1000),
];

#[async_trait]
impl ChunkExecutor for ChunkRunner {
    async fn execute(&self, task: ChunkTask) -> ChunkResult {
        let span = tracing::info_span!("chunk", job = %task.job, chunk = %task.chunk, attempt = %task.attempt, table = %task.table.name, partition = task.partition.as_deref());
        // A partition chunk reads, writes and checksums its partition only, on both sides
        // (and through the native passthrough alike): every call below sees the table
        // restricted to it.
        let task = ChunkTask {
            table: task.chunk_table(),
            admission: Arc::new(GiveBackAdmission::new(
                task.admission.clone(),
                task.give_back.clone(),
            )),
            ..task
        };
        let mut outcome = self.run(&task).instrument(span.clone()).await;
        // Trouble in this chunk that may pass (a deadlock, a lock wait timeout, a
        // serialization failure): the whole chunk transaction again, within the attempt.
        // Safe: nothing of the failed run was committed, and the retry overwrites.
        for pause in TRANSIENT_RETRY_PAUSES {
            match &outcome {
                Err(error) if error.kind() == ErrorKind::Transient => {
                    tracing::warn!(parent: &span, %error, "transient error: running the chunk again within the attempt");
                }
                _ => break,
            }
            tokio::select! {
                () = task.cancel.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
            outcome = self.run(&task).instrument(span.clone()).await;
        }
        match outcome {
            Ok(result) => result,
            Err(error) if error.kind() == ErrorKind::Cancelled => ChunkResult::Cancelled,
            Err(error) if error.kind() == ErrorKind::Unavailable => ChunkResult::Unavailable {
                message: error.to_string(),
            },
            Err(error) => ChunkResult::Error {
                message: error.to_string(),
                retryable: error.is_retryable(),
            },
        }
    }
}
