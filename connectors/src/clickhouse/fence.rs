//! The fence of a ClickHouse target (see `docs/clickhouse.md`): each attempt is recorded
//! in `_ferry_fence` when it starts and checked before every swap, the staging tables of
//! a chunk's older attempts are dropped when a newer one starts, and range swaps of one
//! table take its lock.

use std::time::Duration;

use ferry_model::schema::TableSchema;

use super::http::HttpError;
use super::query_error;
use super::sql::{self, literal, qualified};
use super::write::ClickhouseSink;
use crate::error::{ConnectorError, Result};
use crate::traits::ChunkWrite;

/// The table recording which attempt of each chunk started last.
pub const FENCE_TABLE: &str = "_ferry_fence";
/// A lock older than this is taken to be a dead writer's and broken.
const LOCK_LEASE_SECS: u64 = 600;

/// The table whose existence is the swap lock of `database.table`.
pub fn lock_table_name(database: &str, table: &str) -> String {
    format!(
        "_ferry_lock_{}",
        sql::short_hash(&qualified(database, table))
    )
}

impl ClickhouseSink {
    /// Records that this attempt started, and drops the staging tables of the chunk's
    /// older attempts (a stale attempt's swap then finds its staging gone).
    pub(super) async fn start_attempt(&self, chunk: &ChunkWrite<'_>) -> Result<String> {
        let tag = chunk.fence.chunk_tag();
        let attempt = chunk.fence.attempt.0;
        self.check_fence(chunk).await?;
        self.exec(
            "record the fence",
            &chunk.table.name,
            &format!(
                "INSERT INTO {} (tag, attempt) VALUES ({}, {attempt})",
                qualified(self.shared.database(), FENCE_TABLE),
                literal(&tag)
            ),
        )
        .await?;
        let prefix = sql::staging_prefix(&tag);
        let rows = self
            .table_list_rows(&format!(
                "SELECT name FROM system.tables WHERE database = {} AND startsWith(name, {}) FORMAT TSV",
                literal(self.shared.database()),
                literal(&prefix)
            ))
            .await
            .map_err(query_error("clean up staging tables", &chunk.table.name))?;
        for row in rows {
            let name = sql::tsv_unescape(&row[0]);
            let older = name[prefix.len()..]
                .split('_')
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n < attempt);
            if older {
                self.drop_table(&name).await;
            }
        }
        Ok(format!("{prefix}{attempt}"))
    }

    /// Runs a query over `system.tables`, again when it fails because a table was dropped
    /// while the server listed them (18.16 answers "doesn't exist" then: other chunks drop
    /// their staging tables all the time).
    pub(super) async fn table_list_rows(
        &self,
        sql: &str,
    ) -> std::result::Result<Vec<Vec<String>>, HttpError> {
        let mut tries = 0;
        loop {
            match self.shared.endpoint.query_rows(sql).await {
                Err(HttpError::Server { code: 60, .. }) if tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20 * tries)).await;
                }
                other => return other,
            }
        }
    }

    /// Refuses the attempt when a newer one of the chunk has started.
    pub(super) async fn check_fence(&self, chunk: &ChunkWrite<'_>) -> Result<()> {
        let newest = self
            .scalar(
                "check the fence",
                &chunk.table.name,
                &format!(
                    "SELECT max(attempt) FROM {} WHERE tag = {}",
                    qualified(self.shared.database(), FENCE_TABLE),
                    literal(&chunk.fence.chunk_tag())
                ),
            )
            .await?;
        if newest > u64::from(chunk.fence.attempt.0) {
            return Err(ConnectorError::Fenced {
                table: chunk.table.name.clone(),
                chunk: chunk.fence.chunk,
                attempt: chunk.fence.attempt,
                committed: ferry_model::ids::Attempt(newest as u32),
            });
        }
        Ok(())
    }

    /// The holder recorded in the lock table `name` (empty when it is gone).
    async fn lock_holder(&self, name: &str) -> String {
        self.shared
            .endpoint
            .query_text(&format!(
                "SELECT any(holder) FROM {} FORMAT TSVRaw",
                qualified(self.shared.database(), name)
            ))
            .await
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Refuses to go on when this attempt no longer holds the table's swap lock (it was
    /// broken as older than the lease and taken by another writer): checked right before
    /// each swap of a rebuilt partition.
    pub(super) async fn check_lock(&self, name: &str, chunk: &ChunkWrite<'_>) -> Result<()> {
        let holder = self.lock_holder(name).await;
        if holder == chunk.fence.attempt_tag(chunk.fence.attempt) {
            return Ok(());
        }
        Err(ConnectorError::Query {
            operation: "swap the partition in",
            table: chunk.table.name.clone(),
            source: format!(
                "the table's swap lock was broken and is held by {} now; the chunk runs again",
                if holder.is_empty() { "nobody" } else { &holder }
            )
            .into(),
            failure: crate::error::Failure::Transient,
        })
    }

    /// Releases the table's swap lock if this attempt still holds it. The lock is first
    /// renamed away (one `RENAME` succeeds, atomically), then dropped if it was ours; a
    /// lock broken and taken by another writer meanwhile is put back for that writer.
    pub(super) async fn unlock(&self, name: &str, chunk: &ChunkWrite<'_>) {
        let mine = chunk.fence.attempt_tag(chunk.fence.attempt);
        let database = self.shared.database();
        let released = format!("{name}_rel_{}", sql::short_hash(&mine));
        let renamed = self
            .shared
            .endpoint
            .query_text(&format!(
                "RENAME TABLE {} TO {}",
                qualified(database, name),
                qualified(database, &released)
            ))
            .await;
        if renamed.is_err() {
            return; // gone already (broken by a newer attempt of this chunk)
        }
        let holder = self.lock_holder(&released).await;
        if holder == mine {
            self.drop_table(&released).await;
            return;
        }
        tracing::warn!(
            lock = name,
            holder,
            "the swap lock was taken over meanwhile; left to its holder"
        );
        let restored = self
            .shared
            .endpoint
            .query_text(&format!(
                "RENAME TABLE {} TO {}",
                qualified(database, &released),
                qualified(database, name)
            ))
            .await;
        if restored.is_err() {
            // A third writer took the free name meanwhile; its holder's check_lock stops
            // the one whose lock this was before it swaps.
            self.drop_table(&released).await;
        }
    }

    /// Takes the table's swap lock (a table only one writer can create).
    pub(super) async fn lock(&self, table: &TableSchema, chunk: &ChunkWrite<'_>) -> Result<String> {
        let name = lock_table_name(self.shared.database(), &table.name.name);
        let statement = format!(
            "CREATE TABLE {} (holder String) ENGINE = Memory",
            qualified(self.shared.database(), &name)
        );
        let mut pause = Duration::from_millis(20);
        loop {
            if chunk.cancel.is_cancelled() {
                return Err(ConnectorError::Cancelled);
            }
            match self.shared.endpoint.query_text(&statement).await {
                Ok(_) => {
                    // Who holds it: a newer attempt of the same chunk may break it at once.
                    let holder = chunk.fence.attempt_tag(chunk.fence.attempt);
                    let recorded = self
                        .shared
                        .endpoint
                        .query_text(&format!(
                            "INSERT INTO {} (holder) VALUES ({})",
                            qualified(self.shared.database(), &name),
                            literal(&holder)
                        ))
                        .await;
                    match recorded {
                        Ok(_) => return Ok(name),
                        // Broken by another writer before we wrote our name: take it again.
                        Err(HttpError::Server { code: 60, .. }) => continue,
                        Err(error) => {
                            return Err(query_error("take the table's lock", &table.name)(error));
                        }
                    }
                }
                Err(HttpError::Server { code: 57, .. }) => {
                    let holder = self
                        .shared
                        .endpoint
                        .query_text(&format!(
                            "SELECT any(holder) FROM {} FORMAT TSVRaw",
                            qualified(self.shared.database(), &name)
                        ))
                        .await
                        .unwrap_or_default();
                    let tag = chunk.fence.chunk_tag();
                    let older_attempt_of_this_chunk = holder
                        .trim()
                        .strip_prefix(&tag)
                        .and_then(|attempt| attempt.parse::<u32>().ok())
                        .is_some_and(|attempt| attempt < chunk.fence.attempt.0);
                    if older_attempt_of_this_chunk {
                        tracing::warn!(table = %table.name, holder = holder.trim(), "breaking the swap lock of an older attempt of this chunk");
                        self.drop_table(&name).await;
                        continue;
                    }
                    let age = self
                        .scalar(
                            "take the table's lock",
                            &table.name,
                            &format!(
                                "SELECT toUInt64(now() - metadata_modification_time) FROM system.tables \
                                 WHERE database = {} AND name = {}",
                                literal(self.shared.database()),
                                literal(&name)
                            ),
                        )
                        .await?;
                    if age > LOCK_LEASE_SECS {
                        tracing::warn!(table = %table.name, "breaking a swap lock held for {age}s");
                        self.drop_table(&name).await;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(error) => return Err(query_error("take the table's lock", &table.name)(error)),
            }
        }
    }
}
