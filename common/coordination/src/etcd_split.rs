//! Splitting a chunk none of whose attempts wrote, on etcd: the chunk's new range, the new chunks
//! and the job record's chunk count go in one txn, guarded by the revisions they were
//! read at, so a reader never sees the count and the chunks disagree.

use etcd_client::{Compare, CompareOp, TxnOp};
use prost::Message;

use super::etcd::{EtcdStore, TxnOutcome};
use super::etcd_values::{decode, decode_chunk, key_text};
use super::transitions::split_transition;
use super::{ChunkRecord, CoordinationError, Result};
use ferry_model::ids::{Attempt, ChunkId, JobId};
use ferry_model::key::ChunkRange;
use ferry_proto::v1 as pb;

impl EtcdStore {
    /// [`crate::Coordination::split_chunk`] on etcd.
    pub(super) async fn split_chunk_txn(
        &self,
        job: &JobId,
        chunk: ChunkId,
        after: Attempt,
        pieces: &[(ChunkRange, u64)],
    ) -> Result<Vec<ChunkRecord>> {
        let operation = format!("split chunk {chunk} of job {job}");
        // The job record, the chunk, the new chunks; as many compares, plus the fence.
        let max_ops = self.options.max_txn_ops.max(1);
        if pieces.len() + 2 > max_ops {
            return Err(CoordinationError::SplitRefused {
                chunk,
                reason: format!(
                    "{} pieces do not fit one etcd txn of {max_ops} operations",
                    pieces.len()
                ),
            });
        }
        let job_key = self.keys.job_record(job);
        let chunk_key = self.keys.chunk(job, chunk);
        for _ in 0..=self.options.max_compare_retries {
            let (job_entry, _) = self.get(&operation, job_key.clone()).await?;
            let job_entry = job_entry.ok_or_else(|| CoordinationError::NotFound {
                what: format!("job {job}"),
            })?;
            let mut job_value: pb::JobRecordValue = decode(&job_entry)?;
            let (chunk_entry, _) = self.get(&operation, chunk_key.clone()).await?;
            let chunk_entry = chunk_entry.ok_or_else(|| CoordinationError::NotFound {
                what: format!("chunk {chunk} of job {job}"),
            })?;
            let record = decode_chunk(&chunk_entry)?;
            let split = split_transition(record, after, pieces, job_value.num_chunks)?;
            let added = u32::try_from(split.len() - 1).unwrap_or(u32::MAX);
            job_value.num_chunks = job_value.num_chunks.checked_add(added).ok_or_else(|| {
                CoordinationError::CorruptValue {
                    key: key_text(&job_key),
                    detail: "the chunk count does not fit 32 bits".to_owned(),
                }
            })?;
            let mut compares = vec![
                Compare::mod_revision(job_key.clone(), CompareOp::Equal, job_entry.mod_revision()),
                Compare::mod_revision(
                    chunk_key.clone(),
                    CompareOp::Equal,
                    chunk_entry.mod_revision(),
                ),
            ];
            let mut operations = vec![TxnOp::put(job_key.clone(), job_value.encode_to_vec(), None)];
            for piece in &split {
                let key = self.keys.chunk(job, piece.id);
                if piece.id != chunk {
                    // A new id: no key of it may exist.
                    compares.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
                }
                let value = super::etcd_values::encode_chunk(&key, piece)?;
                operations.push(TxnOp::put(key, value, None));
            }
            let outcome = self.commit(&operation, compares, operations).await;
            // Whatever happened, the cached record of the chunk may be stale now.
            self.forget_chunk(&chunk_key);
            if outcome? == TxnOutcome::Applied {
                return Ok(split);
            }
        }
        Err(self.contention(&operation))
    }
}
