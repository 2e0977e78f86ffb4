//! A split partition swapped in once (see `docs/clickhouse.md`): each range chunk of a
//! partition cut into ranges stages its rows and is verified *in its staging table*; the
//! range whose staging completes the partition (the staged ranges cover the split key's
//! whole line, and the NULL keys when the key can be NULL) assembles every range's staging
//! into one table (`ATTACH PARTITION … FROM`, no copy) and swaps that in with one
//! `REPLACE PARTITION`. Until then the target keeps the partition's old rows whole.
//!
//! Bookkeeping in the target database: `_ferry_ranges` (which attempt of which chunk staged
//! which range of which partition, in which table) and `_ferry_swapped` (partitions
//! assembled, with the staging tables they took). A range staged after its partition was
//! assembled (a re-copy) is swapped in by rebuilding the partition, as before.

use std::collections::HashMap;

use ferry_model::key::ChunkRange;
use ferry_model::schema::TableSchema;

use super::http::HttpError;
use super::query_error;
use super::sql::{self, literal, qualified};
use super::write::ClickhouseSink;
use crate::error::Result;
use crate::traits::ChunkWrite;

/// Staged ranges of split partitions.
pub const RANGES_TABLE: &str = "_ferry_ranges";
/// Split partitions assembled and swapped in.
pub const SWAPPED_TABLE: &str = "_ferry_swapped";

/// What became of a staged range.
pub(super) enum StagedRange {
    /// It waits in its staging table (kept) for the partition's other ranges.
    Waiting,
    /// It completed its partition, which is swapped in (its staging can go).
    Swapped {
        /// Rows the partition held before.
        deleted: u64,
    },
    /// Another range's assembly took it in (its staging can go).
    TakenIn,
    /// The partition was assembled before this range was staged: rebuild it the old way.
    Rebuild,
}

/// A range's identity within its partition: its bounds, `""` for an unbounded end, `null`
/// for the NULL keys.
fn bounds(range: &ChunkRange) -> (String, String) {
    match range {
        ChunkRange::Interval { lower, upper } => (
            lower
                .as_ref()
                .map_or_else(String::new, |b| format!("{b:?}")),
            upper
                .as_ref()
                .map_or_else(String::new, |b| format!("{b:?}")),
        ),
        ChunkRange::NullKeys => ("null".into(), "null".into()),
        ChunkRange::WholeTable => (String::new(), String::new()),
    }
}

/// Whether `ranges` (lower, upper) chain from unbounded to unbounded, and hold the NULL
/// keys' range when `nullable`.
pub(super) fn covers(ranges: &[(String, String)], nullable: bool) -> bool {
    if nullable && !ranges.iter().any(|(lo, hi)| lo == "null" && hi == "null") {
        return false;
    }
    let next: HashMap<&str, &str> = ranges
        .iter()
        .filter(|(lo, _)| lo != "null")
        .map(|(lo, hi)| (lo.as_str(), hi.as_str()))
        .collect();
    let mut at = "";
    for _ in 0..=next.len() {
        match next.get(at) {
            Some(&"") => return true,
            Some(hi) => at = hi,
            None => return false,
        }
    }
    false
}

impl ClickhouseSink {
    /// Creates the bookkeeping tables (with the fence table, when a table is prepared).
    pub(super) async fn create_assembly_tables(&self, table: &TableSchema) -> Result<()> {
        let database = self.shared.database();
        self.exec(
            "create the range table",
            &table.name,
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (run String, tbl String, part String, tag String, \
                 attempt UInt32, lo String, hi String, staging String, rows UInt64, \
                 at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY (run, tbl, part)",
                qualified(database, RANGES_TABLE)
            ),
        )
        .await?;
        self.exec(
            "create the range table",
            &table.name,
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (run String, tbl String, part String, \
                 stagings Array(String), at DateTime DEFAULT now()) ENGINE = MergeTree \
                 ORDER BY (run, tbl, part)",
                qualified(database, SWAPPED_TABLE)
            ),
        )
        .await
    }

    /// The staging tables of the assembly of `partition` in this run, if it was assembled.
    async fn assembled(
        &self,
        chunk: &ChunkWrite<'_>,
        partition: &str,
    ) -> Result<Option<Vec<String>>> {
        let rows = self
            .shared
            .endpoint
            .query_rows(&format!(
                "SELECT arrayJoin(stagings) FROM {} WHERE run = {} AND tbl = {} AND part = {} FORMAT TSV",
                qualified(self.shared.database(), SWAPPED_TABLE),
                literal(&chunk.fence.run_id),
                literal(&chunk.table.name.name),
                literal(partition)
            ))
            .await
            .map_err(query_error("assemble the partition", &chunk.table.name))?;
        let exists = self
            .scalar(
                "assemble the partition",
                &chunk.table.name,
                &format!(
                    "SELECT count() FROM {} WHERE run = {} AND tbl = {} AND part = {}",
                    qualified(self.shared.database(), SWAPPED_TABLE),
                    literal(&chunk.fence.run_id),
                    literal(&chunk.table.name.name),
                    literal(partition)
                ),
            )
            .await?;
        Ok((exists > 0).then(|| {
            rows.into_iter()
                .map(|row| sql::tsv_unescape(&row[0]))
                .collect()
        }))
    }

    /// Whether `partition` was assembled in `run` (for verification: read the target or
    /// the staging table).
    pub(super) async fn is_assembled(
        &self,
        table: &TableSchema,
        run: &str,
        partition: &str,
    ) -> Result<bool> {
        Ok(self
            .scalar(
                "checksum chunk",
                &table.name,
                &format!(
                    "SELECT count() FROM {} WHERE run = {} AND tbl = {} AND part = {}",
                    qualified(self.shared.database(), SWAPPED_TABLE),
                    literal(run),
                    literal(&table.name.name),
                    literal(partition)
                ),
            )
            .await?
            > 0)
    }

    /// Records a staged range of a split partition and, under the table's lock, assembles
    /// the partition when the staged ranges cover it.
    pub(super) async fn stage_range(
        &self,
        chunk: &ChunkWrite<'_>,
        partition: &str,
        staging: &str,
        written: u64,
    ) -> Result<StagedRange> {
        if self.assembled(chunk, partition).await?.is_some() {
            return Ok(StagedRange::Rebuild);
        }
        let database = self.shared.database();
        let (lo, hi) = bounds(chunk.range);
        self.check_fence(chunk).await?;
        self.exec(
            "record the staged range",
            &chunk.table.name,
            &format!(
                "INSERT INTO {} (run, tbl, part, tag, attempt, lo, hi, staging, rows) VALUES \
                 ({}, {}, {}, {}, {}, {}, {}, {}, {written})",
                qualified(database, RANGES_TABLE),
                literal(&chunk.fence.run_id),
                literal(&chunk.table.name.name),
                literal(partition),
                literal(&chunk.fence.chunk_tag()),
                chunk.fence.attempt.0,
                literal(&lo),
                literal(&hi),
                literal(staging)
            ),
        )
        .await?;
        let lock = self.lock(chunk.table, chunk).await?;
        let result = self.assemble(chunk, partition, staging, &lock).await;
        self.drop_table(&format!("{staging}_swap")).await;
        self.unlock(&lock, chunk).await;
        result
    }

    async fn assemble(
        &self,
        chunk: &ChunkWrite<'_>,
        partition: &str,
        staging: &str,
        lock: &str,
    ) -> Result<StagedRange> {
        let table = chunk.table;
        let database = self.shared.database();
        if let Some(taken) = self.assembled(chunk, partition).await? {
            return Ok(if taken.iter().any(|name| name == staging) {
                StagedRange::TakenIn
            } else {
                StagedRange::Rebuild
            });
        }
        // Each chunk's newest attempt whose staging table still exists.
        let rows = self
            .table_list_rows(&format!(
                "SELECT lo, hi, staging, rows FROM (SELECT tag, argMax(lo, attempt) AS lo, \
                 argMax(hi, attempt) AS hi, argMax(staging, attempt) AS staging, \
                 argMax(rows, attempt) AS rows FROM {} WHERE run = {} AND tbl = {} AND part = {} \
                 GROUP BY tag) WHERE staging IN (SELECT name FROM system.tables WHERE database = {}) \
                 FORMAT TSV",
                qualified(database, RANGES_TABLE),
                literal(&chunk.fence.run_id),
                literal(&table.name.name),
                literal(partition),
                literal(database)
            ))
            .await
            .map_err(query_error("assemble the partition", &table.name))?;
        let staged: Vec<(String, String, String, u64)> = rows
            .iter()
            .filter_map(|row| {
                Some((
                    sql::tsv_unescape(row.first()?),
                    sql::tsv_unescape(row.get(1)?),
                    sql::tsv_unescape(row.get(2)?),
                    row.get(3)?.parse().ok()?,
                ))
            })
            .collect();
        let spans: Vec<(String, String)> = staged
            .iter()
            .map(|(lo, hi, _, _)| (lo.clone(), hi.clone()))
            .collect();
        if !covers(&spans, chunk.key.nullable()) {
            return Ok(StagedRange::Waiting);
        }
        let swap = format!("{staging}_swap");
        self.drop_table(&swap).await;
        self.exec(
            "assemble the partition",
            &table.name,
            &format!(
                "CREATE TABLE {} AS {}",
                qualified(database, &swap),
                qualified(database, staging)
            ),
        )
        .await?;
        let mut expected = 0;
        for (_, _, name, rows) in &staged {
            expected += rows;
            if *rows == 0 {
                continue;
            }
            self.exec(
                "assemble the partition",
                &table.name,
                &format!(
                    "ALTER TABLE {} ATTACH PARTITION ID {} FROM {}",
                    qualified(database, &swap),
                    literal(partition),
                    qualified(database, name)
                ),
            )
            .await?;
        }
        let assembled = self
            .scalar(
                "assemble the partition",
                &table.name,
                &format!("SELECT count() FROM {}", qualified(database, &swap)),
            )
            .await?;
        if assembled != expected {
            return Err(crate::error::ConnectorError::Query {
                operation: "assemble the partition",
                table: table.name.clone(),
                source: format!(
                    "partition {partition}: the staged ranges hold {expected} rows but {assembled} were assembled"
                )
                .into(),
                failure: crate::error::Failure::Transient,
            });
        }
        let deleted = self.partition_rows(table, partition).await?;
        self.check_fence(chunk).await?;
        self.check_lock(lock, chunk).await?;
        let statement = if assembled > 0 {
            format!(
                "ALTER TABLE {} REPLACE PARTITION ID {} FROM {}",
                self.target(table),
                literal(partition),
                qualified(database, &swap)
            )
        } else {
            format!(
                "ALTER TABLE {} DROP PARTITION ID {}",
                self.target(table),
                literal(partition)
            )
        };
        self.exec("swap the partition in", &table.name, &statement)
            .await?;
        let names: Vec<String> = staged.iter().map(|(_, _, name, _)| literal(name)).collect();
        self.exec(
            "record the assembled partition",
            &table.name,
            &format!(
                "INSERT INTO {} (run, tbl, part, stagings) VALUES ({}, {}, {}, [{}])",
                qualified(database, SWAPPED_TABLE),
                literal(&chunk.fence.run_id),
                literal(&table.name.name),
                literal(partition),
                names.join(", ")
            ),
        )
        .await?;
        for (_, _, name, _) in &staged {
            if name != staging {
                self.drop_table(name).await;
            }
        }
        Ok(StagedRange::Swapped { deleted })
    }
}

/// Whether a read of `table` failed because the table is gone (dropped meanwhile).
pub(super) fn is_unknown_table(error: &HttpError) -> bool {
    error.code() == Some(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(lo, hi)| ((*lo).to_string(), (*hi).to_string()))
            .collect()
    }

    #[test]
    fn coverage_needs_an_unbroken_chain_from_end_to_end() {
        assert!(covers(&spans(&[("", "a"), ("a", "b"), ("b", "")]), false));
        assert!(covers(&spans(&[("b", ""), ("", "a"), ("a", "b")]), false));
        assert!(!covers(&spans(&[("", "a"), ("b", "")]), false), "a gap");
        assert!(
            !covers(&spans(&[("", "a"), ("a", "b")]), false),
            "no upper end"
        );
        assert!(
            !covers(&spans(&[("a", "b"), ("b", "")]), false),
            "no lower end"
        );
        assert!(covers(&spans(&[("", "")]), false));
        assert!(
            !covers(&spans(&[("", "a"), ("a", "")]), true),
            "NULL keys missing"
        );
        assert!(covers(
            &spans(&[("", "a"), ("a", ""), ("null", "null")]),
            true
        ));
        assert!(!covers(&spans(&[("a", "a")]), false), "a cycle is no chain");
    }
}
