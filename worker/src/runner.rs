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
        Ok(ChunkResult::Verified {
            rows: source_checksum.rows,
            checksum: source_checksum,
        })
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
