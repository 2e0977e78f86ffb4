//! The in-process coordination store, persisted to a SQLite state file, for
//! `ferryctl local`. Each call is one SQLite transaction (WAL, synchronous NORMAL):
//! it survives the process being killed at any point.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use super::cluster::{ClusterJob, JobPhase};
use super::transitions::{
    assign_transition, complete_transition, report_transition, split_transition,
};
use super::{
    ChunkCompletion, ChunkRecord, ChunkState, Coordination, CoordinationError, JobRecord,
    PolicyChange, Result,
};
use ferry_model::checksum::RangeChecksum;
use ferry_model::ids::{Attempt, ChunkId, JobId, WorkerId};
use ferry_model::key::ChunkRange;
use ferry_proto::v1 as pb;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    tables_json TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    job TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    table_index INTEGER NOT NULL,
    range BLOB NOT NULL,
    estimated_rows INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    mismatches INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    checksum TEXT,
    last_error TEXT,
    worker TEXT,
    partition_name TEXT,
    evidence TEXT,
    PRIMARY KEY (job, chunk)
);
CREATE TABLE IF NOT EXISTS policies (
    job TEXT PRIMARY KEY,
    policy_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_history (
    job TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_unix_ms INTEGER NOT NULL,
    origin TEXT NOT NULL,
    summary TEXT NOT NULL,
    actor TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL DEFAULT 'throttle',
    PRIMARY KEY (job, seq)
);
CREATE TABLE IF NOT EXISTS submitted_jobs (
    id TEXT PRIMARY KEY,
    spec_yaml TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    submitted_at_unix_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    registered_at TEXT NOT NULL
);
";

/// Adds `chunks.partition_name` to a state file written before chunks named their
/// partition; its chunks keep NULL there (planned as whole tables).
fn add_partition_column(connection: &Connection) -> rusqlite::Result<()> {
    let has_column: bool = connection.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('chunks') WHERE name = 'partition_name'",
        [],
        |row| row.get(0),
    )?;
    if !has_column {
        connection.execute_batch("ALTER TABLE chunks ADD COLUMN partition_name TEXT")?;
    }
    Ok(())
}

/// Adds `chunks.evidence` (JSON of [`super::ChunkEvidence`]) to a state file written
/// before ferry kept each attempt's evidence; its chunks read with none.
fn add_evidence_column(connection: &Connection) -> rusqlite::Result<()> {
    let has_column: bool = connection.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('chunks') WHERE name = 'evidence'",
        [],
        |row| row.get(0),
    )?;
    if !has_column {
        connection.execute_batch("ALTER TABLE chunks ADD COLUMN evidence TEXT")?;
    }
    Ok(())
}

/// Adds `policy_history.actor` and `.action` to a state file written before the history
/// recorded who did what; its entries read as throttle changes by no one in particular.
fn add_history_columns(connection: &Connection) -> rusqlite::Result<()> {
    for (column, definition) in [
        ("actor", "TEXT NOT NULL DEFAULT ''"),
        ("action", "TEXT NOT NULL DEFAULT 'throttle'"),
    ] {
        let has_column: bool = connection.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info('policy_history') WHERE name = ?1",
            [column],
            |row| row.get(0),
        )?;
        if !has_column {
            connection.execute_batch(&format!(
                "ALTER TABLE policy_history ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

/// The state file's format version (`PRAGMA user_version`); a file of a newer version
/// is refused, never half-read. Files written before versions existed read as 0 and
/// are version 1.
pub const STATE_FORMAT_VERSION: i64 = 1;

/// A SQLite error on the state file `path`: a damaged or foreign file is named as such
/// (what to do differs from a busy or full disk).
fn storage_error(path: &str, source: rusqlite::Error) -> CoordinationError {
    match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            CoordinationError::StateFileDamaged {
                path: path.to_owned(),
                detail: source.to_string(),
            }
        }
        _ => CoordinationError::Storage {
            path: path.to_owned(),
            source,
        },
    }
}

/// A coordination store in a local SQLite file.
pub struct LocalStore {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl LocalStore {
    /// Opens or creates the state file.
    pub fn open(path: &Path) -> Result<Self> {
        let display = path.display().to_string();
        let storage = |source| storage_error(&display, source);
        let connection =
            Connection::open(path).map_err(|source| match source.sqlite_error_code() {
                Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied) => {
                    CoordinationError::OpenStateFile {
                        path: display.clone(),
                        source,
                    }
                }
                _ => storage(source),
            })?;
        // The first read of the file: a foreign or damaged file fails here.
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(storage)?;
        if version > STATE_FORMAT_VERSION {
            return Err(CoordinationError::StateFileTooNew {
                path: display,
                found: version,
                supported: STATE_FORMAT_VERSION,
            });
        }
        connection
            .execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .map_err(|source| match source.sqlite_error_code() {
                Some(rusqlite::ErrorCode::CannotOpen) => CoordinationError::OpenStateFile {
                    path: display.clone(),
                    source,
                },
                _ => storage(source),
            })?;
        connection.execute_batch(SCHEMA).map_err(storage)?;
        add_partition_column(&connection).map_err(storage)?;
        add_evidence_column(&connection).map_err(storage)?;
        add_history_columns(&connection).map_err(storage)?;
        connection
            .pragma_update(None, "user_version", STATE_FORMAT_VERSION)
            .map_err(storage)?;
        Ok(Self {
            path: path.to_path_buf(),
            connection: Mutex::new(connection),
        })
    }

    /// Opens a store that lives in memory only (tests).
    pub fn in_memory() -> Result<Self> {
        let storage = |source| CoordinationError::Storage {
            path: ":memory:".into(),
            source,
        };
        let connection = Connection::open_in_memory().map_err(storage)?;
        connection.execute_batch(SCHEMA).map_err(storage)?;
        Ok(Self {
            path: PathBuf::from(":memory:"),
            connection: Mutex::new(connection),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (each call is
        // one transaction), so a poisoned lock is still safe to use.
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn storage(&self) -> impl Fn(rusqlite::Error) -> CoordinationError + '_ {
        move |source| storage_error(&self.path.display().to_string(), source)
    }

    fn corrupt(&self, detail: String) -> CoordinationError {
        CoordinationError::Corrupt {
            path: self.path.display().to_string(),
            detail,
        }
    }

    /// The record of `job` (its tables, without its chunks), read on `connection`.
    fn job_record(&self, connection: &Connection, job: &JobId) -> Result<Option<JobRecord>> {
        let row = connection
            .query_row(
                "SELECT run_id, fingerprint, tables_json FROM jobs WHERE id = ?1",
                [&job.0],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(self.storage())?;
        let Some((run_id, fingerprint, tables_json)) = row else {
            return Ok(None);
        };
        let tables = serde_json::from_str(&tables_json)
            .map_err(|error| self.corrupt(format!("job {job}: tables: {error}")))?;
        Ok(Some(JobRecord {
            id: job.clone(),
            run_id,
            fingerprint,
            tables,
        }))
    }

    fn evidence_json(&self, chunk: ChunkId, evidence: &super::ChunkEvidence) -> Result<String> {
        serde_json::to_string(evidence)
            .map_err(|error| self.corrupt(format!("chunk {chunk}: evidence: {error}")))
    }

    fn read_chunk(
        &self,
        connection: &Connection,
        job: &JobId,
        chunk: ChunkId,
    ) -> Result<ChunkRecord> {
        let raw = connection
            .query_row(
                &format!("SELECT {CHUNK_COLUMNS} FROM chunks WHERE job = ?1 AND chunk = ?2"),
                params![job.0, chunk.0],
                RawChunk::from_row,
            )
            .optional()
            .map_err(self.storage())?
            .ok_or_else(|| CoordinationError::NotFound {
                what: format!("chunk {chunk} of job {job}"),
            })?;
        raw.decode().map_err(|detail| self.corrupt(detail))
    }
}

/// Submitted jobs (the cluster protocol's job specs and states, persisted for
/// [`crate::InProcessCluster`]) and the bulk re-copy.
impl LocalStore {
    /// Stores a submitted job's spec and marks it RUNNING; `AlreadyExists` when the job
    /// was submitted before.
    pub(crate) fn submit_job_spec(
        &self,
        job: &JobId,
        spec_yaml: &str,
        at_unix_ms: i64,
    ) -> Result<()> {
        let inserted = self
            .lock()
            .execute(
                "INSERT INTO submitted_jobs (id, spec_yaml, state, reason, submitted_at_unix_ms) \
                 VALUES (?1, ?2, ?3, '', ?4) ON CONFLICT (id) DO NOTHING",
                params![job.0, spec_yaml, JobPhase::Running.as_str(), at_unix_ms],
            )
            .map_err(self.storage())?;
        if inserted == 0 {
            return Err(CoordinationError::AlreadyExists {
                what: format!("job {job}"),
            });
        }
        Ok(())
    }

    /// The spec a job was submitted with.
    pub(crate) fn job_spec(&self, job: &JobId) -> Result<Option<String>> {
        self.lock()
            .query_row(
                "SELECT spec_yaml FROM submitted_jobs WHERE id = ?1",
                [&job.0],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.storage())
    }

    /// Every submitted job, or the one named `only`, by name.
    pub(crate) fn submitted_jobs(&self, only: Option<&JobId>) -> Result<Vec<ClusterJob>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(
                "SELECT id, state, reason, submitted_at_unix_ms FROM submitted_jobs \
                 WHERE ?1 IS NULL OR id = ?1 ORDER BY id",
            )
            .map_err(self.storage())?;
        let rows = statement
            .query_map([only.map(|job| job.0.clone())], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(self.storage())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.storage())?;
        rows.into_iter()
            .map(|(id, state, reason, submitted_at_unix_ms)| {
                let phase = JobPhase::parse(&state).ok_or_else(|| {
                    self.corrupt(format!("job {id}: unknown job state {state:?}"))
                })?;
                Ok(ClusterJob {
                    id: JobId(id),
                    phase,
                    reason,
                    submitted_at_unix_ms,
                })
            })
            .collect()
    }

    /// Sets a submitted job's state; `NotFound` for a job never submitted.
    pub(crate) fn set_job_phase(&self, job: &JobId, phase: JobPhase, reason: &str) -> Result<()> {
        let changed = self
            .lock()
            .execute(
                "UPDATE submitted_jobs SET state = ?2, reason = ?3 WHERE id = ?1",
                params![job.0, phase.as_str(), reason],
            )
            .map_err(self.storage())?;
        if changed == 0 {
            return Err(CoordinationError::NotFound {
                what: format!("job {job}"),
            });
        }
        Ok(())
    }

    /// Puts the given chunks that have ended (VERIFIED or FAILED) back to PLANNED
    /// with their failure count, rows and checksum reset, in one transaction.
    pub(crate) fn recopy_chunks(&self, job: &JobId, chunks: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(self.storage())?;
        let mut changed = Vec::new();
        {
            let mut reset = transaction
                .prepare(
                    "UPDATE chunks SET state = 'PLANNED', failures = 0, rows = 0, checksum = NULL \
                     WHERE job = ?1 AND chunk = ?2 AND state IN ('VERIFIED', 'FAILED')",
                )
                .map_err(self.storage())?;
            for chunk in chunks {
                if reset
                    .execute(params![job.0, chunk.0])
                    .map_err(self.storage())?
                    > 0
                {
                    changed.push(*chunk);
                }
            }
        }
        transaction.commit().map_err(self.storage())?;
        changed.sort();
        changed.dedup();
        Ok(changed)
    }

    /// Returns the in-flight chunks of every job to PLANNED (see
    /// [`Coordination::requeue_in_flight`]); by job.
    pub(crate) fn requeue_all_in_flight(&self) -> Result<Vec<(JobId, ChunkId)>> {
        self.requeue(None)
    }

    /// Returns the in-flight chunks of `job` (of every job: `None`) to PLANNED, in one
    /// statement.
    fn requeue(&self, job: Option<&JobId>) -> Result<Vec<(JobId, ChunkId)>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(
                "UPDATE chunks SET state = 'PLANNED', worker = NULL \
                 WHERE (?1 IS NULL OR job = ?1) AND state IN ('ASSIGNED', 'COPYING', 'VERIFYING') \
                 RETURNING job, chunk",
            )
            .map_err(self.storage())?;
        let mut rows = statement
            .query_map([job.map(|job| job.0.as_str())], |row| {
                Ok((JobId(row.get(0)?), ChunkId(row.get(1)?)))
            })
            .map_err(self.storage())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.storage())?;
        rows.sort_by_key(|(_, chunk)| *chunk);
        Ok(rows)
    }
}

const CHUNK_COLUMNS: &str = "chunk, table_index, range, estimated_rows, state, attempt, failures, \
                             mismatches, rows, checksum, last_error, worker, partition_name, \
                             evidence";

struct RawChunk {
    chunk: i64,
    table_index: i64,
    range: Vec<u8>,
    estimated_rows: i64,
    state: String,
    attempt: i64,
    failures: i64,
    mismatches: i64,
    rows: i64,
    checksum: Option<String>,
    last_error: Option<String>,
    worker: Option<String>,
    partition: Option<String>,
    evidence: Option<String>,
}

impl RawChunk {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            chunk: row.get(0)?,
            table_index: row.get(1)?,
            range: row.get(2)?,
            estimated_rows: row.get(3)?,
            state: row.get(4)?,
            attempt: row.get(5)?,
            failures: row.get(6)?,
            mismatches: row.get(7)?,
            rows: row.get(8)?,
            checksum: row.get(9)?,
            last_error: row.get(10)?,
            worker: row.get(11)?,
            partition: row.get(12)?,
            evidence: row.get(13)?,
        })
    }

    fn decode(self) -> std::result::Result<ChunkRecord, String> {
        let number = |value: i64, what: &str| {
            u32::try_from(value)
                .map_err(|_| format!("chunk {}: {what} {value} out of range", self.chunk))
        };
        let range = pb::ChunkRange::decode(self.range.as_slice())
            .map_err(|error| format!("chunk {}: range: {error}", self.chunk))
            .and_then(|range| {
                ChunkRange::try_from(range)
                    .map_err(|error| format!("chunk {}: {error}", self.chunk))
            })?;
        let state = ChunkState::parse(&self.state)
            .ok_or_else(|| format!("chunk {}: unknown state {:?}", self.chunk, self.state))?;
        let checksum = self
            .checksum
            .map(|text| serde_json::from_str::<RangeChecksum>(&text))
            .transpose()
            .map_err(|error| format!("chunk {}: checksum: {error}", self.chunk))?;
        let evidence = self
            .evidence
            .map(|text| serde_json::from_str::<super::ChunkEvidence>(&text))
            .transpose()
            .map_err(|error| format!("chunk {}: evidence: {error}", self.chunk))?
            .unwrap_or_default();
        Ok(ChunkRecord {
            id: ChunkId(number(self.chunk, "id")?),
            table_index: number(self.table_index, "table index")? as usize,
            range,
            estimated_rows: self.estimated_rows.max(0) as u64,
            state,
            attempt: Attempt(number(self.attempt, "attempt")?),
            failures: number(self.failures, "failures")?,
            mismatches: number(self.mismatches, "mismatches")?,
            rows: self.rows.max(0) as u64,
            checksum,
            last_error: self.last_error,
            worker: self.worker.map(WorkerId),
            partition: self.partition,
            evidence,
        })
    }
}

#[async_trait]
impl Coordination for LocalStore {
    async fn load_job(&self, job: &JobId) -> Result<Option<(JobRecord, Vec<ChunkRecord>)>> {
        let connection = self.lock();
        let Some(record) = self.job_record(&connection, job)? else {
            return Ok(None);
        };
        let mut statement = connection
            .prepare(&format!(
                "SELECT {CHUNK_COLUMNS} FROM chunks WHERE job = ?1 ORDER BY chunk"
            ))
            .map_err(self.storage())?;
        let raw_chunks = statement
            .query_map([&job.0], RawChunk::from_row)
            .map_err(self.storage())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.storage())?;
        let chunks = raw_chunks
            .into_iter()
            .map(RawChunk::decode)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|detail| self.corrupt(detail))?;
        Ok(Some((record, chunks)))
    }

    async fn load_job_record(&self, job: &JobId) -> Result<Option<JobRecord>> {
        self.job_record(&self.lock(), job)
    }

    async fn create_job(&self, job: &JobRecord, chunks: &[ChunkRecord]) -> Result<()> {
        let tables_json = serde_json::to_string(&job.tables)
            .map_err(|error| self.corrupt(format!("job {}: tables: {error}", job.id)))?;
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(self.storage())?;
        transaction
            .execute(
                "INSERT INTO jobs (id, run_id, fingerprint, tables_json, created_at) \
                 VALUES (?1, ?2, ?3, ?4, datetime('now'))",
                params![job.id.0, job.run_id, job.fingerprint, tables_json],
            )
            .map_err(self.storage())?;
        {
            let mut insert = transaction
                .prepare(
                    "INSERT INTO chunks (job, chunk, table_index, range, estimated_rows, state, \
                     attempt, failures, mismatches, rows, partition_name) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, 0, ?8)",
                )
                .map_err(self.storage())?;
            for chunk in chunks {
                insert
                    .execute(params![
                        job.id.0,
                        chunk.id.0,
                        chunk.table_index as i64,
                        pb::ChunkRange::from(&chunk.range).encode_to_vec(),
                        chunk.estimated_rows as i64,
                        chunk.state.as_str(),
                        chunk.attempt.0,
                        chunk.partition,
                    ])
                    .map_err(self.storage())?;
            }
        }
        transaction.commit().map_err(self.storage())
    }

    async fn register_worker(&self, worker: &WorkerId) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO workers (id, registered_at) VALUES (?1, datetime('now')) \
                 ON CONFLICT (id) DO UPDATE SET registered_at = excluded.registered_at",
                [&worker.0],
            )
            .map_err(self.storage())?;
        Ok(())
    }

    async fn requeue_in_flight(&self, job: &JobId) -> Result<Vec<ChunkId>> {
        Ok(self
            .requeue(Some(job))?
            .into_iter()
            .map(|(_, chunk)| chunk)
            .collect())
    }

    async fn assign(&self, job: &JobId, chunk: ChunkId, worker: &WorkerId) -> Result<Attempt> {
        let connection = self.lock();
        let record = self.read_chunk(&connection, job, chunk)?;
        let (next, attempt) = assign_transition(record, worker, super::now_unix_ms())?;
        let evidence = self.evidence_json(chunk, &next.evidence)?;
        connection
            .execute(
                "UPDATE chunks SET state = 'ASSIGNED', attempt = ?3, worker = ?4, evidence = ?5 \
                 WHERE job = ?1 AND chunk = ?2",
                params![job.0, chunk.0, attempt.0, worker.0, evidence],
            )
            .map_err(self.storage())?;
        Ok(attempt)
    }

    async fn start_attempt(
        &self,
        job: &JobId,
        chunk: ChunkId,
        worker: &WorkerId,
    ) -> Result<Attempt> {
        let connection = self.lock();
        let record = self.read_chunk(&connection, job, chunk)?;
        let (assigned, attempt) = assign_transition(record, worker, super::now_unix_ms())?;
        let started = report_transition(assigned, attempt, ChunkState::Copying)?;
        let evidence = self.evidence_json(chunk, &started.evidence)?;
        connection
            .execute(
                "UPDATE chunks SET state = ?3, attempt = ?4, worker = ?5, evidence = ?6 \
                 WHERE job = ?1 AND chunk = ?2",
                params![
                    job.0,
                    chunk.0,
                    started.state.as_str(),
                    attempt.0,
                    worker.0,
                    evidence
                ],
            )
            .map_err(self.storage())?;
        Ok(attempt)
    }

    async fn report_state(
        &self,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        state: ChunkState,
    ) -> Result<()> {
        let connection = self.lock();
        let record = self.read_chunk(&connection, job, chunk)?;
        report_transition(record, attempt, state)?;
        connection
            .execute(
                "UPDATE chunks SET state = ?3 WHERE job = ?1 AND chunk = ?2",
                params![job.0, chunk.0, state.as_str()],
            )
            .map_err(self.storage())?;
        Ok(())
    }

    async fn complete(
        &self,
        job: &JobId,
        chunk: ChunkId,
        attempt: Attempt,
        completion: &ChunkCompletion,
    ) -> Result<ChunkRecord> {
        let connection = self.lock();
        let record = self.read_chunk(&connection, job, chunk)?;
        let record = complete_transition(record, attempt, completion, super::now_unix_ms())?;
        let evidence = self.evidence_json(chunk, &record.evidence)?;
        let checksum_json = record
            .checksum
            .map(|checksum| serde_json::to_string(&checksum))
            .transpose()
            .map_err(|error| self.corrupt(format!("chunk {chunk}: checksum: {error}")))?;
        connection
            .execute(
                "UPDATE chunks SET state = ?3, failures = ?4, mismatches = ?5, rows = ?6, \
                 checksum = ?7, last_error = ?8, worker = NULL, evidence = ?9 \
                 WHERE job = ?1 AND chunk = ?2",
                params![
                    job.0,
                    chunk.0,
                    record.state.as_str(),
                    record.failures,
                    record.mismatches,
                    record.rows as i64,
                    checksum_json,
                    record.last_error,
                    evidence,
                ],
            )
            .map_err(self.storage())?;
        Ok(record)
    }

    async fn load_chunk(&self, job: &JobId, chunk: ChunkId) -> Result<Option<ChunkRecord>> {
        let connection = self.lock();
        match self.read_chunk(&connection, job, chunk) {
            Ok(record) => Ok(Some(record)),
            Err(CoordinationError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn split_chunk(
        &self,
        job: &JobId,
        chunk: ChunkId,
        after: Attempt,
        pieces: &[(ChunkRange, u64)],
    ) -> Result<Vec<ChunkRecord>> {
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(self.storage())?;
        let record = self.read_chunk(&transaction, job, chunk)?;
        let next_id: u32 = transaction
            .query_row(
                "SELECT coalesce(max(chunk), -1) + 1 FROM chunks WHERE job = ?1",
                [&job.0],
                |row| row.get(0),
            )
            .map_err(self.storage())?;
        let split = split_transition(record, after, pieces, next_id)?;
        for (index, piece) in split.iter().enumerate() {
            let range = pb::ChunkRange::from(&piece.range).encode_to_vec();
            if index == 0 {
                transaction
                    .execute(
                        "UPDATE chunks SET range = ?3, estimated_rows = ?4 \
                         WHERE job = ?1 AND chunk = ?2",
                        params![job.0, piece.id.0, range, piece.estimated_rows as i64],
                    )
                    .map_err(self.storage())?;
            } else {
                transaction
                    .execute(
                        "INSERT INTO chunks (job, chunk, table_index, range, estimated_rows, \
                         state, attempt, failures, mismatches, rows, partition_name) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, 0, 0, ?7)",
                        params![
                            job.0,
                            piece.id.0,
                            piece.table_index as i64,
                            range,
                            piece.estimated_rows as i64,
                            piece.state.as_str(),
                            piece.partition,
                        ],
                    )
                    .map_err(self.storage())?;
            }
        }
        transaction.commit().map_err(self.storage())?;
        Ok(split)
    }

    async fn reset_failed(&self, job: &JobId) -> Result<Vec<ChunkId>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(
                "UPDATE chunks SET state = 'PLANNED', failures = 0 WHERE job = ?1 \
                 AND state = 'FAILED' RETURNING chunk",
            )
            .map_err(self.storage())?;
        let ids = statement
            .query_map([&job.0], |row| row.get::<_, u32>(0))
            .map_err(self.storage())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.storage())?;
        Ok(ids.into_iter().map(ChunkId).collect())
    }

    async fn save_policy(
        &self,
        job: &JobId,
        policy_json: &str,
        change: &PolicyChange,
    ) -> Result<()> {
        let mut connection = self.lock();
        let transaction = connection.transaction().map_err(self.storage())?;
        transaction
            .execute(
                "INSERT INTO policies (job, policy_json) VALUES (?1, ?2) \
                 ON CONFLICT (job) DO UPDATE SET policy_json = excluded.policy_json",
                params![job.0, policy_json],
            )
            .map_err(self.storage())?;
        insert_history(&transaction, job, change).map_err(self.storage())?;
        transaction.commit().map_err(self.storage())
    }

    async fn record_event(&self, job: &JobId, event: &PolicyChange) -> Result<()> {
        insert_history(&self.lock(), job, event).map_err(self.storage())
    }

    async fn load_policy(&self, job: &JobId) -> Result<Option<String>> {
        self.lock()
            .query_row(
                "SELECT policy_json FROM policies WHERE job = ?1",
                [&job.0],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.storage())
    }

    async fn policy_history(&self, job: &JobId) -> Result<Vec<PolicyChange>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(
                "SELECT at_unix_ms, origin, summary, actor, action FROM policy_history \
                 WHERE job = ?1 ORDER BY seq",
            )
            .map_err(self.storage())?;
        let changes = statement
            .query_map([&job.0], |row| {
                Ok(PolicyChange {
                    at_unix_ms: row.get(0)?,
                    origin: row.get(1)?,
                    summary: row.get(2)?,
                    actor: row.get(3)?,
                    action: row.get(4)?,
                })
            })
            .map_err(self.storage())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.storage())?;
        Ok(changes)
    }
}

/// Appends `change` to the job's history under its next sequence number.
fn insert_history(
    connection: &Connection,
    job: &JobId,
    change: &PolicyChange,
) -> rusqlite::Result<()> {
    connection.execute(
        "INSERT INTO policy_history (job, seq, at_unix_ms, origin, summary, actor, action) VALUES \
         (?1, (SELECT coalesce(max(seq), 0) + 1 FROM policy_history WHERE job = ?1), ?2, ?3, ?4, ?5, ?6)",
        params![
            job.0,
            change.at_unix_ms,
            change.origin,
            change.summary,
            change.actor,
            change.action
        ],
    )?;
    Ok(())
}
