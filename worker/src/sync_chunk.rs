//! One chunk of a sync pass ([`JobMode::Sync`](ferry_model::spec::JobMode::Sync)): its
//! key range caught up with the source, run by the same runner, agents and scheduler as
//! a copy, locally and on a cluster.
//!
//! A table with the spec's watermark column (and a single integer key):
//! 1. the source's row count and largest watermark of the range, in one statement
//!    ([`Source::watermark_stats`](ferry_connectors::Source::watermark_stats));
//! 2. when that watermark is at or past the pass's mark for the table (the last pass's
//!    high-water mark minus the lag; every row on the first pass), the range's rows past
//!    the mark are read ([`Source::read_changed`](ferry_connectors::Source::read_changed))
//!    and written newer-wins ([`Sink::upsert_newer`](ferry_connectors::Sink::upsert_newer),
//!    one transaction; a target row newer than the source's is kept); otherwise nothing
//!    in the range can have changed since the mark and nothing is read;
//! 3. the target's row count of the range. When it equals the source's, no key can be
//!    only in the target (every source key is in the target after step 2), so the keyed
//!    diff is skipped; otherwise the key column alone is read from both sides and the
//!    keys only in the target (deleted at the source) are deleted.
//!
//! Any other table: both sides of the range are counted and checksummed; when they
//! differ, the range is re-copied through the copy path (one fenced overwrite
//! transaction) and verified.
//!
//! Every step is idempotent, so an attempt lost with its worker runs again from the
//! start: an upsert of the same rows changes nothing the first one did not (newer-wins,
//! equal rows untouched), deleting keys absent at the source deletes nothing twice, and
//! a re-copy is a fenced overwrite. The chunk reports the rows it changed
//! ([`SyncChanges`]); a range already caught up reports 0.

use ferry_connectors::{BatchStream, ConnectorError};
use ferry_model::checksum::RangeChecksum;
use ferry_model::column::{CellRef, ColumnView};
use ferry_model::execution::{ChunkResult, ChunkTask, SyncChanges};
use ferry_model::sync::TableMethod;
use futures::StreamExt;

use crate::runner::{ChunkRunner, RequeueSlot};

/// Keys deleted per statement.
const DELETE_BATCH_KEYS: usize = 10_000;

impl ChunkRunner {
    /// Catches one chunk of a sync pass up.
    pub(crate) async fn sync_chunk(&self, task: &ChunkTask) -> Result<ChunkResult, ConnectorError> {
        let Some(pass) = &task.sync else {
            return Err(ConnectorError::Task(format!(
                "chunk {} of job {} is a sync chunk without the pass's parameters",
                task.chunk, task.job
            )));
        };
        let (method, since) = pass
            .method_of(&task.table, &task.key)
            .map_err(|error| ConnectorError::Task(error.to_string()))?;
        match method {
            TableMethod::Watermark { column, key_column } => {
                self.sync_by_watermark(task, &column, &key_column, since)
                    .await
            }
            TableMethod::ChecksumRepair => self.sync_by_checksum(task).await,
        }
    }

    async fn sync_by_watermark(
        &self,
        task: &ChunkTask,
        column: &str,
        key_column: &str,
        since: Option<i64>,
    ) -> Result<ChunkResult, ConnectorError> {
        let source = self
            .source
            .watermark_stats(&task.table, &task.key, &task.range, column)
            .await?;
        let mut changes = SyncChanges::default();
        let may_have_changed = match (since, source.newest) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mark), Some(newest)) => newest >= mark,
        };
        if may_have_changed {
            let rows = self
                .source
                .read_changed(&task.table, &task.key, &task.range, column, since)
                .await?;
            let requeue = RequeueSlot::default();
            let paced = paced(rows, task, requeue.clone(), true);
            let upserted = self
                .sink
                .upsert_newer(&task.table, &task.key, column, paced, &task.cancel)
                .await;
            if let Some(reason) = requeue.take() {
                return Ok(ChunkResult::Requeued { reason });
            }
            let upserted = upserted?;
            changes.rows_read = upserted.rows_read;
            changes.inserted = upserted.inserted;
            changes.updated = upserted.updated;
        }
        if task.cancel.is_cancelled() {
            return Err(ConnectorError::Cancelled);
        }
        (task.on_verifying)();
        let target_rows = self
            .sink
            .count_chunk(&task.table, &task.key, &task.range)
            .await?;
        if target_rows != source.rows {
            changes.keys_compared = true;
            match self.delete_missing(task, key_column).await? {
                Ok(deleted) => changes.deleted = deleted,
                Err(reason) => return Ok(ChunkResult::Requeued { reason }),
            }
        }
        Ok(ChunkResult::Verified {
            rows: changes.changed_rows(),
            checksum: RangeChecksum {
                rows: source.rows,
                sum: 0,
            },
            sync: Some(changes),
        })
    }

    /// The keyed diff of the chunk's range: the key column alone read from both sides,
    /// the keys only in the target deleted. Memory: the range's keys (8 bytes each per
    /// side). `Err(reason)` when the throttle requeued the chunk.
    async fn delete_missing(
        &self,
        task: &ChunkTask,
        key_column: &str,
    ) -> Result<Result<u64, String>, ConnectorError> {
        let mut keys_only = (*task.table).clone();
        keys_only.columns.retain(|column| column.name == key_column);
        let source = self.source.read_chunk(&keys_only, &task.key, &task.range);
        let target = self.sink.read_back(&keys_only, &task.key, &task.range);
        let (source, target) = tokio::try_join!(source, target)?;
        let requeue = RequeueSlot::default();
        let source = paced(source, task, requeue.clone(), false);
        let keys = tokio::try_join!(keys_of(source, key_column), keys_of(target, key_column));
        if let Some(reason) = requeue.take() {
            return Ok(Err(reason));
        }
        let (source, target) = keys?;
        let extra = keys_only_in(&target, &source);
        let mut deleted = 0;
        for part in extra.chunks(DELETE_BATCH_KEYS) {
            if task.cancel.is_cancelled() {
                return Err(ConnectorError::Cancelled);
            }
            deleted += self.sink.delete_keys(&task.table, &task.key, part).await?;
        }
        Ok(Ok(deleted))
    }

    /// Checksum-and-repair: both sides of the range compared; a differing range re-copied
    /// through the copy path and verified.
    async fn sync_by_checksum(&self, task: &ChunkTask) -> Result<ChunkResult, ConnectorError> {
        match self.verify_only(task, self.source.as_ref()).await? {
            ChunkResult::Verified { checksum, .. } => Ok(ChunkResult::Verified {
                rows: 0,
                checksum,
                sync: Some(SyncChanges::default()),
            }),
            ChunkResult::Mismatch { .. } => {
                match self.copy_and_verify(task, self.source.as_ref()).await? {
                    ChunkResult::Verified { rows, checksum, .. } => Ok(ChunkResult::Verified {
                        rows,
                        checksum,
                        sync: Some(SyncChanges {
                            recopied_rows: rows,
                            repaired: true,
                            ..SyncChanges::default()
                        }),
                    }),
                    other => Ok(other),
                }
            }
            other => Ok(other),
        }
    }
}

/// Passes `batches` through the throttle's admission (a paused job stops reading; rate
/// limits space the batches), counting progress when `count_progress`; a requeue is left
/// in `requeue` and ends the stream with [`ConnectorError::Cancelled`].
fn paced(
    batches: BatchStream,
    task: &ChunkTask,
    requeue: RequeueSlot,
    count_progress: bool,
) -> BatchStream {
    let admission = task.admission.clone();
    let progress = task.progress.clone();
    Box::pin(batches.then(move |item| {
        let admission = admission.clone();
        let progress = progress.clone();
        let requeue = requeue.clone();
        async move {
            let batch = item?;
            let rows = batch.num_rows() as u64;
            let bytes = batch.get_array_memory_size() as u64;
            if let Err(reason) = admission.admit(rows, bytes).await {
                requeue.set(reason);
                return Err(ConnectorError::Cancelled);
            }
            if count_progress {
                progress(rows);
            }
            Ok(batch)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_only_in_the_target_are_found_by_a_merge() {
        assert_eq!(keys_only_in(&[1, 2, 5, 9, 10], &[2, 3, 9]), vec![1, 5, 10]);
        assert_eq!(keys_only_in(&[], &[1]), Vec::<i64>::new());
        assert_eq!(keys_only_in(&[4], &[]), vec![4]);
        assert_eq!(keys_only_in(&[-3, 7], &[-3, 7]), Vec::<i64>::new());
    }
}
