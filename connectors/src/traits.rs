//! The two traits every engine implements. Shapes follow DESIGN §6: a connector does no
//! planning or throttling; it describes, splits, reads, writes and checksums.

use arrow_array::RecordBatch;
use async_trait::async_trait;
use ferry_model::checksum::RangeChecksum;
use ferry_model::ids::{Attempt, ChunkId};
use ferry_model::key::{ChunkRange, KeyBound, KeySample, KeyStats, SplitKey};
use ferry_model::schema::{TableName, TableSchema};
use ferry_model::spec::SchemaMode;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use crate::error::{ConnectorError, Result};

/// A chunk's rows as Arrow batches, in key order. Dropping it cancels the read.
pub type BatchStream = BoxStream<'static, Result<RecordBatch, ConnectorError>>;

/// A chunk in an engine's own bulk format (e.g. PostgreSQL binary COPY), passed from a
/// source to a sink of the same engine without decoding. Dropping it cancels the read.
pub struct NativeStream {
    /// The format's name, e.g. `postgres-binary-copy`.
    pub format: &'static str,
    /// The bytes, in order.
    pub bytes: BoxStream<'static, Result<bytes::Bytes, ConnectorError>>,
}

/// What [`Source::read_native`] returns: the chunk's bytes, and the checksum of the rows
/// they hold, which the source computes as the bytes pass. The checksum resolves once
/// every byte has been read; it fails when the stream failed or was dropped.
pub struct NativeRead {
    /// The bytes, for [`Sink::write_native`].
    pub stream: NativeStream,
    /// The source side of the verification, comparable with the sink's
    /// [`Sink::native_checksum`] of the same method.
    pub checksum: BoxFuture<'static, Result<NativeChecksum, ConnectorError>>,
}

/// A checksum of a range in a native format (each row's raw bytes hashed, order
/// independent), comparable only with one of the same `method` (same engine, same
/// column types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeChecksum {
    /// How it was computed, e.g. `postgres-copy-binary-xxh3-v1`.
    pub method: &'static str,
    /// Rows and the wrapping sum of their hashes, like the canonical checksum's.
    pub checksum: RangeChecksum,
}

/// A chunk the target's servers can fetch from the source's servers themselves (e.g. a
/// ClickHouse `INSERT … SELECT FROM remote()`), so its rows never pass through ferry.
/// What [`Source::pull`] offers and [`Sink::write_pulled`] takes.
pub struct PullSource {
    /// The source's engine, e.g. `clickhouse`; a sink takes only its own.
    pub kind: &'static str,
    /// The table expression the target reads from, e.g. `remote('h:9000', db, t, 'u', 'p')`:
    /// may hold the source's credentials, so never shown; see `secret`.
    pub from: String,
    /// The condition selecting the chunk's rows in `from`.
    pub filter: String,
    /// Text (a password) that must be cut out of any error message about the statement.
    pub secret: Option<String>,
}

/// What [`Source::pull`] returns: where the target pulls the chunk from, and the source's
/// checksum of its rows.
pub struct PullRead {
    /// Where and what the target's servers fetch.
    pub source: PullSource,
    /// The source side of the verification, computed by the source's server over the same
    /// rows (comparable with the sink's [`Sink::native_checksum`] of the same method); it
    /// runs while the target pulls.
    pub checksum: BoxFuture<'static, Result<NativeChecksum, ConnectorError>>,
}

impl std::fmt::Debug for PullSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullSource")
            .field("kind", &self.kind)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// One snapshot of a whole source database, exported for `consistency: job_snapshot`
/// ([`Source::export_snapshot`]): it stays importable while this value lives (its
/// transaction is held open on a connection of its own) and ends when it is dropped.
pub struct ExportedSnapshot {
    /// The identifier readers import ([`Source::in_snapshot`]).
    pub id: String,
    /// Ends the holder (its task and connection) when dropped.
    pub(crate) _holder: tokio_util::sync::DropGuard,
}

impl std::fmt::Debug for ExportedSnapshot {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ExportedSnapshot")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Identifies one attempt of one chunk, for the target's fence table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The job run (unique per job creation, so a re-created job starts a new fence).
    pub run_id: String,
    /// The chunk.
    pub chunk: ChunkId,
    /// The attempt; a commit is refused when a higher one is already committed.
    pub attempt: Attempt,
}

impl Fence {
    /// What a target session of an attempt of this chunk is tagged with, up to the
    /// attempt number: `ferry:{run}:{chunk}:`, the run id hashed (the low 32 bits of its
    /// 64-bit FNV-1a, 8 hex digits) to keep the tag short. PostgreSQL names its sessions
    /// with it (`application_name`), MySQL takes named locks (`GET_LOCK`).
    pub fn chunk_tag(&self) -> String {
        let run = self
            .run_id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        format!("ferry:{:08x}:{}:", run as u32, self.chunk.0)
    }

    /// The tag of `attempt` of this chunk: [`Fence::chunk_tag`] followed by the attempt.
    /// At most 36 characters, within the 63 of a PostgreSQL `application_name` and the
    /// 64 of a MySQL lock name.
    pub fn attempt_tag(&self, attempt: Attempt) -> String {
        format!("{}{}", self.chunk_tag(), attempt.0)
    }
}

/// One chunk to write with overwrite.
#[derive(Clone, Debug)]
pub struct ChunkWrite<'a> {
    /// The table, as the source described it.
    pub table: &'a TableSchema,
    /// The key the table is split on.
    pub key: &'a SplitKey,
    /// The rows this chunk owns; they are deleted before the new rows go in.
    pub range: &'a ChunkRange,
    /// The attempt's identity.
    pub fence: &'a Fence,
    /// Cancels the write; the transaction then rolls back.
    pub cancel: &'a CancellationToken,
    /// The table was created by this job without its primary key, which is not built
    /// yet (`chunking.defer_key`): the range's delete (a full scan without the key) is
    /// skipped when the fence shows that no earlier attempt of the chunk committed, so
    /// the range is known empty. A sink that cannot tell deletes as usual.
    pub key_deferred: bool,
}

/// What a write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteSummary {
    /// Rows inserted.
    pub rows_written: u64,
    /// Rows of the range deleted before inserting (non-zero on a re-copy).
    pub rows_deleted: u64,
    /// The target table was without its primary key when the chunk was written (its key
    /// deferred and not built yet, [`ChunkWrite::key_deferred`]): the chunk's verification
    /// waits for the key. Told by the write's own look at the table (no separate catalog
    /// read per chunk); `false` for a sink that never defers keys.
    pub key_missing: bool,
}

/// A range's row count and largest watermark ([`Source::watermark_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatermarkStats {
    /// Rows in the range.
    pub rows: u64,
    /// Their largest watermark, in microseconds since the epoch.
    pub newest: Option<i64>,
}

/// What a newer-wins upsert ([`Sink::upsert_newer`]) changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpsertSummary {
    /// Rows read from the source.
    pub rows_read: u64,
    /// Rows whose key was not in the target.
    pub inserted: u64,
    /// Target rows replaced by a different row with a newer or equal watermark.
    pub updated: u64,
}

/// How to prepare one target table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrepareOptions {
    /// Create, check or recreate.
    pub mode: SchemaMode,
    /// Target column types the user chose (spec `columns:`), by source column name. A
    /// sink uses them verbatim instead of its own mapping; verification still compares
    /// every value, so a lossy override is caught.
    pub type_overrides: std::collections::BTreeMap<String, String>,
    /// Create the table without its primary key when this call creates it (the job
    /// builds it with [`Sink::build_primary_key`] once the table is copied), and accept
    /// an existing table whose key is missing (a resumed job of such a table). Only
    /// set for a sink whose [`Sink::defers_primary_key`] says it gains from it.
    pub defer_primary_key: bool,
}

/// What preparing a target table did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrepareOutcome {
    /// The table did not exist and was created.
    Created,
    /// The table existed and matches the source.
    Existing,
    /// The table was dropped and created again (`schema: recreate`).
    Recreated,
}

/// A database ferry reads from. Never modifies anything.
#[async_trait]
pub trait Source: Send + Sync {
    /// The connector kind, as written in specs (`sqlite`).
    fn kind(&self) -> &'static str;

    /// Lists the user tables (not system or ferry tables).
    async fn list_tables(&self) -> Result<Vec<TableName>>;

    /// Describes a table: columns, types, primary key.
    /// Errors with [`ConnectorError::TableNotFound`] when it does not exist.
    async fn describe_table(&self, table: &TableName) -> Result<TableSchema>;

    /// Counts rows and reads the key's extent, so the planner can choose a split.
    async fn key_stats(&self, table: &TableSchema, key: &SplitKey) -> Result<KeyStats>;

    /// Returns strictly increasing key boundaries about `every_rows` rows apart (the first
    /// boundary is past the first `every_rows` keys); NULL keys are not counted.
    async fn key_boundaries(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        every_rows: u64,
    ) -> Result<Vec<KeyBound>>;

    /// Samples about `points` non-NULL keys spread over the table's rows independently of
    /// the key values (so skewed keys and gaps do not bias it), returned in key order with
    /// the rows they stand for; `estimated_rows` is [`Source::key_stats`]'s count. Returns
    /// `None` when this source cannot sample the table cheaply: the planner then reads
    /// exact boundaries with [`Source::key_boundaries`]. Reads a fraction of the table,
    /// not every key.
    async fn key_sample(
        &self,
        _table: &TableSchema,
        _key: &SplitKey,
        _points: u64,
        _estimated_rows: u64,
    ) -> Result<Option<KeySample>> {
        Ok(None)
    }

    /// Streams the rows of a range in key order as batches matching
    /// `table.arrow_schema(key == Rowid)`.
    async fn read_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<BatchStream>;

    /// Streams the range in the native bulk `format` a sink asked for, with the checksum
    /// of the rows streamed, or `None` when this source cannot produce it (then rows
    /// travel as Arrow batches).
    async fn read_native(
        &self,
        _table: &TableSchema,
        _key: &SplitKey,
        _range: &ChunkRange,
        _format: &str,
    ) -> Result<Option<NativeRead>> {
        Ok(None)
    }

    /// Offers the range for a target of `target_kind` to pull server to server, with the
    /// source's checksum of it, or `None` (the default) when this source offers no such
    /// path for the pair (rows then travel through ferry).
    async fn pull(
        &self,
        _table: &TableSchema,
        _key: &SplitKey,
        _range: &ChunkRange,
        _target_kind: &'static str,
    ) -> Result<Option<PullRead>> {
        Ok(None)
    }

    /// Checks that the database answers (a catalog read), for a job waiting out an
    /// outage. Errors as the read would.
    async fn ping(&self) -> Result<()> {
        self.list_tables().await.map(drop)
    }

    /// Samples the database's load (built-in probe), or `None` when it has none.
    async fn probe_load(&self) -> Result<Option<f64>> {
        Ok(None)
    }

    /// Checks, before any row moves, that every column of `table` can be read into its
    /// Arrow carrier, for a copy to a target of another engine (same-engine copies may
    /// pass columns through natively). Errors with [`ConnectorError::TypeMapping`]
    /// naming the first column that cannot.
    async fn check_readable(&self, _table: &TableSchema, _target_kind: &'static str) -> Result<()> {
        Ok(())
    }

    /// Streams the rows of a range whose `watermark` column (a timestamp) is at or past
    /// `since` (microseconds since 1970-01-01 UTC; a zone-less timestamp's wall time read
    /// as UTC), or every row of the range when `since` is `None`, as batches like
    /// [`Source::read_chunk`]'s (in no particular order), for a sync pass. Rows whose
    /// watermark is NULL are read only when `since` is `None`.
    async fn read_changed(
        &self,
        table: &TableSchema,
        _key: &SplitKey,
        _range: &ChunkRange,
        _watermark: &str,
        _since: Option<i64>,
    ) -> Result<BatchStream> {
        Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: format!(
                "the {} source cannot read rows by a watermark column; leave out `watermark:` \
                 to sync by checksum-and-repair passes",
                self.kind()
            ),
        })
    }

    /// Exports one snapshot of the whole database for `consistency: job_snapshot`, held
    /// until the returned value is dropped. Errors with [`ConnectorError::Unsupported`]
    /// when this source cannot (the default).
    async fn export_snapshot(&self) -> Result<ExportedSnapshot> {
        Err(ConnectorError::Unsupported {
            table: TableName::bare("(job)"),
            detail: format!(
                "consistency: job_snapshot: the {} source cannot export a snapshot; use \
                 consistency: chunk",
                self.kind()
            ),
        })
    }

    /// Counts the rows of a range and reads their largest `watermark` (a timestamp, in
    /// microseconds since 1970-01-01 UTC like [`Source::read_changed`]'s `since`; `None`
    /// when the range is empty or every watermark is NULL), in one statement: what a sync
    /// pass compares to skip work (and, over the whole table, its next high-water mark).
    async fn watermark_stats(
        &self,
        table: &TableSchema,
        _key: &SplitKey,
        _range: &ChunkRange,
        _watermark: &str,
    ) -> Result<WatermarkStats> {
        Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: format!(
                "the {} source cannot read a watermark column's extent; leave out \
                 `watermark:` to sync by checksum-and-repair passes",
                self.kind()
            ),
        })
    }

    /// This source with every chunk read ([`Source::read_chunk`], [`Source::read_native`])
    /// importing the exported snapshot `snapshot_id`, so all of them see one point in
    /// time. A read whose snapshot is gone (its holder ended) fails with a permanent
    /// error naming the fix. Errors when this source cannot import snapshots.
    fn in_snapshot(&self, snapshot_id: &str) -> Result<std::sync::Arc<dyn Source>> {
        let _ = snapshot_id;
        Err(ConnectorError::Unsupported {
            table: TableName::bare("(job)"),
            detail: format!(
                "consistency: job_snapshot: the {} source cannot read in an exported \
                 snapshot; use consistency: chunk",
                self.kind()
            ),
        })
    }

    /// A cheap signature of the writes the database has counted on a table (every
    /// partition of it), from its own statistics, without reading a row: when two reads
    /// give the same signature, no row of the table was inserted, updated or deleted in
    /// between (a sync pass then leaves the table out). `None` (the default) when this
    /// source has no such statistics: the table always counts as changed. A signature MAY
    /// change without a write (a false "changed" costs only work) but MUST change after
    /// any committed write, at the latest once the database has published its statistics.
    async fn change_signature(&self, _table: &TableSchema) -> Result<Option<String>> {
        Ok(None)
    }

    /// Runs a user's load probe: `sql` returns one number. Runs read-only with a statement
    /// timeout; `None` when this source cannot run SQL probes.
    async fn probe_load_sql(&self, _sql: &str) -> Result<Option<f64>> {
        Ok(None)
    }
}

/// A database ferry writes to.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The connector kind, as written in specs (`sqlite`).
    fn kind(&self) -> &'static str;

    /// Whether the sink can store a SQLite rowid, so a table without a primary key can
    /// still be split on it.
    fn can_carry_rowid(&self) -> bool;

    /// The target table a source table is written to. Two source tables with the same
    /// target are refused when the job is planned.
    fn target_table(&self, table: &TableSchema) -> TableName {
        table.name.clone()
    }

    /// Creates the target table, checks an existing one, or recreates it, per
    /// `options.mode`. Idempotent for `CreateIfMissing` and `RequireExisting`. A column
    /// whose type this sink cannot hold losslessly (and has no override) is refused here,
    /// before any row moves, with [`ConnectorError::TypeMapping`].
    async fn prepare_table(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        options: &PrepareOptions,
    ) -> Result<PrepareOutcome>;

    /// Checks that the database answers and takes writes, for a job waiting out an
    /// outage: a server that came back as a read-only standby is
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) until it is primary
    /// again.
    async fn ping(&self) -> Result<()>;

    /// In one transaction: deletes the chunk's range, inserts the batches, checks and
    /// records the fence, commits. On any error or cancellation nothing is committed.
    async fn write_chunk(
        &self,
        chunk: ChunkWrite<'_>,
        batches: BatchStream,
    ) -> Result<WriteSummary>;

    /// Checksums the target rows of a range with the canonical checksum.
    async fn checksum_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<RangeChecksum>;

    /// Streams the target rows of a range in key order, as batches of the same form as
    /// [`Source::read_chunk`] gives for `table` (so the canonical checksum and a row by
    /// row comparison treat both sides alike), for localising a difference. Reads only.
    async fn read_back(
        &self,
        table: &TableSchema,
        _key: &SplitKey,
        _range: &ChunkRange,
    ) -> Result<BatchStream> {
        Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: format!(
                "the {} target cannot be read back row by row to localise a difference",
                self.kind()
            ),
        })
    }

    /// Writes `batches` newer-wins, in one transaction: a row whose key is not in the
    /// target is inserted; a target row is replaced only when the incoming row's
    /// `watermark` is newer than or equal to its own, so a target row newer than the
    /// source's is kept. Rows equal to the target's count as neither inserted nor
    /// updated. On any error or cancellation nothing is committed.
    async fn upsert_newer(
        &self,
        table: &TableSchema,
        _key: &SplitKey,
        _watermark: &str,
        _batches: BatchStream,
        _cancel: &CancellationToken,
    ) -> Result<UpsertSummary> {
        Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: format!("the {} target cannot take newer-wins upserts", self.kind()),
        })
    }

    /// Deletes the target rows whose single integer key is one of `keys`, in one
    /// transaction, and returns how many it deleted.
    async fn delete_keys(
        &self,
        table: &TableSchema,
        _key: &SplitKey,
        _keys: &[i64],
    ) -> Result<u64> {
        Err(ConnectorError::Unsupported {
            table: table.name.clone(),
            detail: format!("the {} target cannot delete rows by key", self.kind()),
        })
    }

    /// Counts the target rows of a range.
    async fn count_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<u64>;

    /// The native bulk format (e.g. `postgres-binary-copy`) in which this sink can take
    /// `table`'s rows untouched, or `None` (the default) when rows must travel as Arrow
    /// batches. A sink offers one only when the prepared target table holds exactly the
    /// source's column types, so the bytes mean the same values on both sides.
    async fn native_format(&self, _table: &TableSchema) -> Result<Option<&'static str>> {
        Ok(None)
    }

    /// Like [`Sink::write_chunk`] (one fenced overwrite transaction, nothing committed on
    /// error or cancellation), with the rows in the native format `native_format` named.
    async fn write_native(
        &self,
        chunk: ChunkWrite<'_>,
        _stream: NativeStream,
    ) -> Result<WriteSummary> {
        Err(ConnectorError::Unsupported {
            table: chunk.table.name.clone(),
            detail: format!("the {} sink takes no native format", self.kind()),
        })
    }

    /// Like [`Sink::write_native`], with the target's servers fetching the rows from the
    /// source's themselves, or `None` (the default, nothing done) when this sink cannot
    /// take `pull` (another engine, column types that differ).
    async fn write_pulled(
        &self,
        _chunk: ChunkWrite<'_>,
        _pull: &PullSource,
    ) -> Result<Option<WriteSummary>> {
        Ok(None)
    }

    /// Checksums the target rows of a range read back in the native format `native_format`
    /// named, comparable with the [`NativeRead::checksum`] of a source of the same engine,
    /// or `None` when the table cannot be read back in that format.
    async fn native_checksum(
        &self,
        _table: &TableSchema,
        _key: &SplitKey,
        _range: &ChunkRange,
    ) -> Result<Option<NativeChecksum>> {
        Ok(None)
    }

    /// [`Sink::native_checksum`] of each of `ranges` of one table, in their order, read
    /// in one pass over the table, in up to `streams` parts at once; `None` (the
    /// default) when this sink cannot, or the ranges do not tile the key. For a table
    /// whose key is not built yet ([`PrepareOptions::defer_primary_key`]), where reading
    /// one range scans the whole table anyway: it runs while the key is built.
    async fn native_checksums(
        &self,
        _table: &TableSchema,
        _key: &SplitKey,
        _ranges: &[ChunkRange],
        _streams: usize,
    ) -> Result<Option<Vec<NativeChecksum>>> {
        Ok(None)
    }

    /// [`Sink::checksum_chunk`] of each of `ranges` of one table, in their order, read in
    /// one pass over the table, in up to `streams` parts at once; `None` (the default)
    /// when this sink cannot, or the ranges do not tile the key. Like
    /// [`Sink::native_checksums`], for the rows that did not pass in a native format.
    async fn checksum_chunks(
        &self,
        _table: &TableSchema,
        _key: &SplitKey,
        _ranges: &[ChunkRange],
        _streams: usize,
    ) -> Result<Option<Vec<RangeChecksum>>> {
        Ok(None)
    }

    /// Whether loading a table this sink creates is faster without its primary key and
    /// the key built after ([`PrepareOptions::defer_primary_key`]): measured per engine.
    fn defers_primary_key(&self) -> bool {
        false
    }

    /// Builds the target table's primary key if it is missing; idempotent (a resumed
    /// job calls it again). Rows with equal keys fail it with a
    /// [`ConnectorError::SchemaMismatch`] naming the table and the fix.
    async fn build_primary_key(&self, _table: &TableSchema) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_tags_are_short_stable_and_distinct() {
        let fence = Fence {
            run_id: "orders-2024-06-01T12:00:00Z-0f3a9c".into(),
            chunk: ChunkId(42),
            attempt: Attempt(3),
        };
        // Pinned: workers of different builds must find each other's sessions and locks.
        assert_eq!(fence.chunk_tag(), "ferry:a093e004:42:");
        assert_eq!(fence.attempt_tag(Attempt(3)), "ferry:a093e004:42:3");
        let longest = Fence {
            run_id: "r".repeat(4096),
            chunk: ChunkId(u32::MAX),
            attempt: Attempt(u32::MAX),
        };
        let tag = longest.attempt_tag(Attempt(u32::MAX));
        assert_eq!(tag.len(), 36, "{tag}");
        assert!(
            tag.len() <= 63,
            "fits a PostgreSQL application_name and a MySQL lock name"
        );
        // Another run, chunk or attempt gives another tag; a chunk's tag never is a prefix
        // of another chunk's (`:7:` vs `:71:`).
        let other_run = Fence {
            run_id: "orders-2024-06-01T12:00:00Z-0f3a9d".into(),
            ..fence.clone()
        };
        assert_ne!(other_run.chunk_tag(), fence.chunk_tag());
        let chunk_7 = Fence {
            chunk: ChunkId(7),
            ..fence.clone()
        };
        let chunk_71 = Fence {
            chunk: ChunkId(71),
            ..fence.clone()
        };
        assert!(
            !chunk_71
                .attempt_tag(Attempt(1))
                .starts_with(&chunk_7.chunk_tag())
        );
        assert_ne!(
            fence.attempt_tag(Attempt(1)),
            fence.attempt_tag(Attempt(11))
        );
    }
}
