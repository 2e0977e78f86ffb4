//! How the etcd store's values are encoded: `ferry.v1` protobuf messages
//! (`proto/ferry/v1/state.proto`) for jobs, chunks and checksums, with the key named in
//! every decoding error.

use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::KeyValue;
use prost::Message;

use crate::{ChunkRecord, ChunkState, CoordinationError, JobRecord, Result, TableRecord};
use ferry_model::checksum::RangeChecksum;
use ferry_model::execution::SyncChanges;
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};
use ferry_model::key::ChunkRange;
use ferry_proto::v1 as pb;

pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

pub(crate) fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

// ------------------------------------------------------------------ values
// Domain records <-> `ferry.v1` values.

pub(crate) fn decode<M: Message + Default>(entry: &KeyValue) -> Result<M> {
    M::decode(entry.value()).map_err(|error| CoordinationError::CorruptValue {
        key: key_text(entry.key()),
        detail: error.to_string(),
    })
}

pub(crate) fn encode_job(key: &[u8], job: &JobRecord, num_chunks: u32) -> Result<Vec<u8>> {
    let tables_json =
        serde_json::to_string(&job.tables).map_err(|error| CoordinationError::CorruptValue {
            key: key_text(key),
            detail: format!("tables: {error}"),
        })?;
    Ok(pb::JobRecordValue {
        id: job.id.0.clone(),
        run_id: job.run_id.clone(),
        fingerprint: job.fingerprint.clone(),
        tables_json,
        num_chunks,
        created_at_unix_ms: now_unix_ms(),
    }
    .encode_to_vec())
}

pub(crate) fn decode_job(entry: &KeyValue) -> Result<(JobRecord, u32)> {
    let value: pb::JobRecordValue = decode(entry)?;
    let tables: Vec<TableRecord> = serde_json::from_str(&value.tables_json).map_err(|error| {
        CoordinationError::CorruptValue {
            key: key_text(entry.key()),
            detail: format!("tables: {error}"),
        }
    })?;
    let record = JobRecord {
        id: JobId(value.id),
        run_id: value.run_id,
        fingerprint: value.fingerprint,
        tables,
    };
    Ok((record, value.num_chunks))
}

pub(crate) fn encode_chunk(key: &[u8], record: &ChunkRecord) -> Result<Vec<u8>> {
    let table_index =
        u32::try_from(record.table_index).map_err(|_| CoordinationError::CorruptValue {
            key: key_text(key),
            detail: format!("table index {} does not fit 32 bits", record.table_index),
        })?;
    Ok(pb::ChunkRecordValue {
        id: record.id.0,
        table_index,
        range: Some(pb::ChunkRange::from(&record.range)),
        estimated_rows: record.estimated_rows,
        state: state_to_proto(record.state) as i32,
        attempt: record.attempt.0,
        failures: record.failures,
        mismatches: record.mismatches,
        rows: record.rows,
        checksum: record.checksum.map(checksum_to_proto),
        last_error: record.last_error.clone(),
        worker: record.worker.as_ref().map(|worker| worker.0.clone()),
        partition: record.partition.clone(),
        last_worker: record
            .evidence
            .worker
            .as_ref()
            .map(|worker| worker.0.clone()),
        started_at_unix_ms: record.evidence.started_at_unix_ms,
        ended_at_unix_ms: record.evidence.ended_at_unix_ms,
        target_checksum: record.evidence.target_checksum.map(checksum_to_proto),
        sync: record
            .evidence
            .sync
            .as_ref()
            .map(pb::SyncChangesValue::from),
    }
    .encode_to_vec())
}

pub(crate) fn decode_chunk(entry: &KeyValue) -> Result<ChunkRecord> {
    let value: pb::ChunkRecordValue = decode(entry)?;
    chunk_from_proto(value).map_err(|detail| CoordinationError::CorruptValue {
        key: key_text(entry.key()),
        detail,
    })
}

pub(crate) fn chunk_from_proto(
    value: pb::ChunkRecordValue,
) -> std::result::Result<ChunkRecord, String> {
    let range = value
        .range
        .ok_or_else(|| "chunk without a range".to_owned())
        .and_then(|range| ChunkRange::try_from(range).map_err(|error| error.to_string()))?;
    Ok(ChunkRecord {
        id: ChunkId(value.id),
        table_index: value.table_index as usize,
        range,
        estimated_rows: value.estimated_rows,
        state: state_from_proto(value.state)?,
        attempt: Attempt(value.attempt),
        failures: value.failures,
        mismatches: value.mismatches,
        rows: value.rows,
        checksum: value.checksum.map(checksum_from_proto),
        last_error: value.last_error,
        worker: value.worker.map(WorkerId),
        partition: value.partition,
        // Absent in values written before ferry kept evidence: read as none.
        evidence: crate::ChunkEvidence {
            worker: value.last_worker.map(WorkerId),
            started_at_unix_ms: value.started_at_unix_ms,
            ended_at_unix_ms: value.ended_at_unix_ms,
            target_checksum: value.target_checksum.map(checksum_from_proto),
            sync: value.sync.map(SyncChanges::from),
        },
    })
}

pub(crate) fn state_to_proto(state: ChunkState) -> pb::ChunkState {
    match state {
        ChunkState::Planned => pb::ChunkState::Planned,
        ChunkState::Assigned => pb::ChunkState::Assigned,
        ChunkState::Copying => pb::ChunkState::Copying,
        ChunkState::Verifying => pb::ChunkState::Verifying,
        ChunkState::Verified => pb::ChunkState::Verified,
        ChunkState::Failed => pb::ChunkState::Failed,
        ChunkState::Copied => pb::ChunkState::Copied,
    }
}

pub(crate) fn state_from_proto(raw: i32) -> std::result::Result<ChunkState, String> {
    match pb::ChunkState::try_from(raw) {
        Ok(pb::ChunkState::Planned) => Ok(ChunkState::Planned),
        Ok(pb::ChunkState::Assigned) => Ok(ChunkState::Assigned),
        Ok(pb::ChunkState::Copying) => Ok(ChunkState::Copying),
        Ok(pb::ChunkState::Verifying) => Ok(ChunkState::Verifying),
        Ok(pb::ChunkState::Verified) => Ok(ChunkState::Verified),
        Ok(pb::ChunkState::Failed) => Ok(ChunkState::Failed),
        Ok(pb::ChunkState::Copied) => Ok(ChunkState::Copied),
        Ok(pb::ChunkState::Unspecified) | Err(_) => Err(format!("unknown chunk state {raw}")),
    }
}

pub(crate) fn checksum_to_proto(checksum: RangeChecksum) -> pb::RangeChecksumValue {
    pb::RangeChecksumValue {
        rows: checksum.rows,
        sum_high: (checksum.sum >> 64) as u64,
        sum_low: checksum.sum as u64,
    }
}

pub(crate) fn checksum_from_proto(value: pb::RangeChecksumValue) -> RangeChecksum {
    RangeChecksum {
        rows: value.rows,
        sum: (u128::from(value.sum_high) << 64) | u128::from(value.sum_low),
    }
}
