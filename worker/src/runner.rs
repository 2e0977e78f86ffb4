//! Copies one chunk (source range → target range, overwrite, one transaction) and
//! verifies it.
//!
//! The source side of the checksum is computed from the very batches that were written,
//! as they stream past: the source is read once, and a source that keeps changing under
//! a live migration is compared with what was actually copied. The target side is read
//! back from the target after the commit.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ferry_common::checksum::RangeChecksum;
use ferry_common::execution::{ChunkExecutor, ChunkResult, ChunkTask};
use ferry_common::spec::VerifyMode;
use ferry_connectors::{ChunkWrite, ConnectorError, ErrorKind, Fence, Sink, Source};
use futures::StreamExt;
use tracing::Instrument;

/// Runs chunk attempts between one source and one sink.
pub struct ChunkRunner {
    source: Arc<dyn Source>,
    sink: Arc<dyn Sink>,
}

impl ChunkRunner {
    /// Creates a runner over a job's source and sink.
    pub fn new(source: Arc<dyn Source>, sink: Arc<dyn Sink>) -> Self {
        Self { source, sink }
    }

    async fn run(&self, task: &ChunkTask) -> Result<ChunkResult, ConnectorError> {
        if let Some(result) = self.run_native(task).await? {
            return Ok(result);
        }
        let batches = self
            .source
            .read_chunk(&task.table, &task.key, &task.range)
            .await?;
        let streamed = Arc::new(Mutex::new(RangeChecksum::default()));
        let hash_rows = task.verify == VerifyMode::Checksum;
        let stream_checksum = streamed.clone();
        let progress = task.progress.clone();
        let table_name = task.table.name.clone();
        let admission = task.admission.clone();
        let requeue_reason: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let stream_requeue = requeue_reason.clone();
        let hashed = batches.then(move |item| {
            let stream_checksum = stream_checksum.clone();
            let progress = progress.clone();
            let table_name = table_name.clone();
            let admission = admission.clone();
            let stream_requeue = stream_requeue.clone();
            async move {
                let batch = item?;
                // The throttle paces rows here, mid-chunk: paused jobs stop reading, rate
                // limits hold batches back.
                let bytes = batch.get_array_memory_size() as u64;
                if let Err(reason) = admission.admit(batch.num_rows() as u64, bytes).await {
                    *stream_requeue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
                    return Err(ConnectorError::Cancelled);
                }
                let mut checksum = stream_checksum
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        let fence = Fence {
            run_id: task.run_id.clone(),
            chunk: task.chunk,
            attempt: task.attempt,
        };
        let write = ChunkWrite {
            table: &task.table,
            key: &task.key,
            range: &task.range,
            fence: &fence,
            cancel: &task.cancel,
        };
        let written = self.sink.write_chunk(write, Box::pin(hashed)).await;
        if let Some(reason) = requeue_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            return Ok(ChunkResult::Requeued { reason });
        }
        let summary = written?;
        let source_checksum = *streamed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tracing::debug!(
            rows = summary.rows_written,
            deleted = summary.rows_deleted,
            "chunk written"
        );
        if summary.rows_written != source_checksum.rows {
            return Ok(ChunkResult::Error {
                message: format!(
                    "sink wrote {} rows but the source streamed {}",
                    summary.rows_written, source_checksum.rows
                ),
                retryable: true,
            });
        }
        if task.cancel.is_cancelled() {
            return Err(ConnectorError::Cancelled);
        }
        (task.on_verifying)();
        match task.verify {
            VerifyMode::None => {}
            VerifyMode::Count => {
                let target_rows = self
                    .sink
                    .count_chunk(&task.table, &task.key, &task.range)
                    .await?;
                if target_rows != source_checksum.rows {
                    let target = RangeChecksum {
                        rows: target_rows,
                        sum: 0,
                    };
                    return Ok(ChunkResult::Mismatch {
                        source: source_checksum,
                        target,
                    });
                }
            }
            VerifyMode::Checksum => {
                if !self
                    .native_checksums_agree(task, source_checksum.rows)
                    .await
                {
                    let target = self
                        .sink
                        .checksum_chunk(&task.table, &task.key, &task.range)
                        .await?;
                    if target != source_checksum {
                        return Ok(ChunkResult::Mismatch {
                            source: source_checksum,
                            target,
                        });
                    }
                }
            }
        }
        Ok(ChunkResult::Verified {
            rows: source_checksum.rows,
            checksum: source_checksum,
        })
    }
}

impl ChunkRunner {
    /// The same-engine fast path: when the sink takes the source's native bulk format
    /// for this table (e.g. PostgreSQL binary COPY) and the source can produce it, the
    /// chunk's bytes pass through untouched, in the sink's usual fenced overwrite
    /// transaction, and are verified with checksums computed inside both databases.
    /// Returns `None` when the pair has no such path; rows then travel as Arrow batches.
    ///
    /// The throttle paces the bytes as they pass (pause and bytes/s); rows are counted
    /// when the chunk is committed, so a rows/s limit applies between chunks only. The
    /// source side of the checksum is computed by the source after the copy, so a range
    /// written to meanwhile shows up as a mismatch and is copied again.
    async fn run_native(&self, task: &ChunkTask) -> Result<Option<ChunkResult>, ConnectorError> {
        let Some(format) = self.sink.native_format(&task.table).await? else {
            return Ok(None);
        };
        let Some(mut stream) = self
            .source
            .read_native(&task.table, &task.key, &task.range, format)
            .await?
        else {
            return Ok(None);
        };
        let admission = task.admission.clone();
        let requeue_reason: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let stream_requeue = requeue_reason.clone();
        stream.bytes = Box::pin(stream.bytes.then(move |item| {
            let admission = admission.clone();
            let stream_requeue = stream_requeue.clone();
            async move {
                let piece = item?;
                if let Err(reason) = admission.admit(0, piece.len() as u64).await {
                    *stream_requeue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
                    return Err(ConnectorError::Cancelled);
                }
                Ok(piece)
            }
        }));
        let fence = Fence {
            run_id: task.run_id.clone(),
            chunk: task.chunk,
            attempt: task.attempt,
        };
        let write = ChunkWrite {
            table: &task.table,
            key: &task.key,
            range: &task.range,
            fence: &fence,
            cancel: &task.cancel,
        };
        let written = self.sink.write_native(write, stream).await;
        if let Some(reason) = requeue_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            return Ok(Some(ChunkResult::Requeued { reason }));
        }
        let summary = written?;
        (task.progress)(summary.rows_written);
        tracing::debug!(
            rows = summary.rows_written,
            deleted = summary.rows_deleted,
            format,
            "chunk written in the native format"
        );
        if task.cancel.is_cancelled() {
            return Err(ConnectorError::Cancelled);
        }
        (task.on_verifying)();
        let written_rows = RangeChecksum {
            rows: summary.rows_written,
            sum: 0,
        };
        let result = match task.verify {
            VerifyMode::None => ChunkResult::Verified {
                rows: summary.rows_written,
                checksum: written_rows,
            },
            VerifyMode::Count => {
                let target_rows = self
                    .sink
                    .count_chunk(&task.table, &task.key, &task.range)
                    .await?;
                if target_rows == summary.rows_written {
                    ChunkResult::Verified {
                        rows: summary.rows_written,
                        checksum: written_rows,
                    }
                } else {
                    ChunkResult::Mismatch {
                        source: written_rows,
                        target: RangeChecksum {
                            rows: target_rows,
                            sum: 0,
                        },
                    }
                }
            }
            VerifyMode::Checksum => {
                let source = self
                    .source
                    .native_checksum(&task.table, &task.key, &task.range)
                    .await?;
                let target = self
                    .sink
                    .native_checksum(&task.table, &task.key, &task.range)
                    .await?;
                let (source, target) = match (source, target) {
                    (Some(source), Some(target)) if source.method == target.method => {
                        (source, target)
                    }
                    _ => {
                        return Err(ConnectorError::Task(format!(
                            "the {format} passthrough of table {} has no matching in-database \
                             checksums on both sides",
                            task.table.name
                        )));
                    }
                };
                // The digest is 32 hex digits where the method allows it; the record keeps
                // it as the chunk's checksum.
                let as_range = |native: &ferry_connectors::NativeChecksum| RangeChecksum {
                    rows: native.rows,
                    sum: u128::from_str_radix(&native.digest, 16).unwrap_or(0),
                };
                if source == target && source.rows == summary.rows_written {
                    ChunkResult::Verified {
                        rows: summary.rows_written,
                        checksum: as_range(&source),
                    }
                } else {
                    ChunkResult::Mismatch {
                        source: as_range(&source),
                        target: as_range(&target),
                    }
                }
            }
        };
        Ok(Some(result))
    }
}

impl ChunkRunner {
    /// Same-engine verification pushed down into both databases (e.g. MySQL's
    /// `mysql-md5-sum-v1`), which spares reading the target range back: true when source
    /// and sink give checksums of one method that agree, with `rows` rows. Anything else
    /// (different engines, no native checksum, a disagreement, an error) returns false and
    /// the canonical checksum decides: a native disagreement may come from the source
    /// changing since the copy, or from two servers printing a value differently.
    async fn native_checksums_agree(&self, task: &ChunkTask, rows: u64) -> bool {
        if self.source.kind() != self.sink.kind() {
            return false;
        }
        let (source, target) = tokio::join!(
            self.source
                .native_checksum(&task.table, &task.key, &task.range),
            self.sink
                .native_checksum(&task.table, &task.key, &task.range)
        );
        match (source, target) {
            (Ok(Some(source)), Ok(Some(target))) if source.method == target.method => {
                let agree = source == target && source.rows == rows;
                if !agree {
                    tracing::debug!(
                        method = source.method,
                        "in-database checksums differ; comparing canonical checksums"
                    );
                }
                agree
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::debug!(%error, "in-database checksum failed; comparing canonical checksums");
                false
            }
            _ => false,
        }
    }
}

#[async_trait]
impl ChunkExecutor for ChunkRunner {
    async fn execute(&self, task: ChunkTask) -> ChunkResult {
        let span = tracing::info_span!("chunk", job = %task.job, chunk = %task.chunk, attempt = %task.attempt, table = %task.table.name);
        match self.run(&task).instrument(span).await {
            Ok(result) => result,
            Err(error) if error.kind() == ErrorKind::Cancelled => ChunkResult::Cancelled,
            Err(error) => ChunkResult::Error {
                message: error.to_string(),
                retryable: error.is_retryable(),
            },
        }
    }
}
