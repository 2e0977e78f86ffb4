//! Where a ClickHouse target's chunk is verified, and how: the target table, or the
//! staging table of a split partition's range that waits for its partition's other ranges
//! (`assemble.rs`); counts, the canonical checksum over rows read back, and the native
//! checksum (in the server, or over `RowBinary` read back).

use ferry_model::checksum::RangeChecksum;
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::TableSchema;
use futures::StreamExt;

use super::assemble;
use super::checksum::{self, SQL_CHECKSUM_METHOD};
use super::http::HttpError;
use super::query_error;
use super::read::{self, CHECKSUM_METHOD};
use super::sql::{self, qualified};
use super::types::ChType;
use super::write::ClickhouseSink;
use crate::error::{ConnectorError, Result};
use crate::traits::NativeChecksum;

impl ClickhouseSink {
    /// Counts the rows of `name` (the target table or a staging table) `WHERE condition`
    /// (0 without parts).
    pub(super) async fn count_in(
        &self,
        table: &TableSchema,
        name: &str,
        condition: &str,
    ) -> Result<u64> {
        if !self.has_parts(table, name).await? {
            return Ok(0);
        }
        self.scalar(
            "count chunk",
            &table.name,
            &format!(
                "SELECT count() FROM {} WHERE {condition} AND {}",
                qualified(self.shared.database(), name),
                sql::reads_a_column(table)
            ),
        )
        .await
    }
    pub(super) fn waiting_key(table: &TableSchema, range: &ChunkRange) -> String {
        format!(
            "{}\u{1f}{:?}\u{1f}{range:?}",
            table.name.name, table.partition
        )
    }
    /// Where a chunk's rows are to be verified: the target table, or the staging table of
    /// a range this sink staged that still waits for its partition's other ranges.
    async fn verified_in(&self, table: &TableSchema, range: &ChunkRange) -> Result<String> {
        let key = Self::waiting_key(table, range);
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let (Some((run, staging)), Some(partition)) = (waiting, &table.partition)
            && !self.is_assembled(table, &run, partition).await?
        {
            return Ok(staging);
        }
        Ok(table.name.name.clone())
    }
    /// Runs `verify` on where the chunk's rows are ([`Self::verified_in`]); when a waiting
    /// range's staging table was taken in and dropped meanwhile, on the target.
    pub(super) async fn on_verified<T, F, Fut>(
        &self,
        table: &TableSchema,
        range: &ChunkRange,
        verify: F,
    ) -> Result<T>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let from = self.verified_in(table, range).await?;
        if from == table.name.name {
            return verify(from).await;
        }
        match verify(from).await {
            Err(ConnectorError::Query { source, .. })
                if source
                    .downcast_ref::<HttpError>()
                    .is_some_and(assemble::is_unknown_table) =>
            {
                verify(table.name.name.clone()).await
            }
            other => other,
        }
    }
    async fn read_target(
        &self,
        table: &TableSchema,
        name: &str,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<(Vec<ChType>, super::http::ByteStream)> {
        let types = self.ordered_target_types(table).await?;
        if !self.has_parts(table, name).await? {
            return Ok((types, futures::stream::empty().boxed()));
        }
        let target_columns = self.target_columns(table).await?;
        let statement = format!(
            "SELECT {} FROM {} WHERE {} FORMAT RowBinary",
            Self::column_list(table),
            qualified(self.shared.database(), name),
            sql::chunk_where(table, key, range, Some(&target_columns))
        );
        let bytes = self
            .shared
            .endpoint
            .stream(&statement, &[])
            .await
            .map_err(query_error("checksum chunk", &table.name))?;
        Ok((types, bytes))
    }
    /// The canonical checksum of the chunk's rows in `name` (the target or a staging table).
    pub(super) async fn checksum_in(
        &self,
        table: &TableSchema,
        name: String,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<RangeChecksum> {
        let (types, bytes) = self.read_target(table, &name, key, range).await?;
        let mut stream = read::table_batches(table, types, bytes);
        let mut checksum = RangeChecksum::default();
        while let Some(batch) = stream.next().await {
            checksum.add_batch(&batch?).map_err(|error| {
                ConnectorError::Task(format!("checksum of {}: {error}", table.name))
            })?;
        }
        Ok(checksum)
    }

    /// The native checksum of the chunk's rows in `name` (the target or a staging table).
    pub(super) async fn native_checksum_in(
        &self,
        table: &TableSchema,
        name: String,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<Option<NativeChecksum>> {
        // The same choice as the source's `read_native`: in the server when every
        // column has a version-stable form.
        let types = self.ordered_target_types(table).await?;
        let columns: Vec<(&str, &ChType)> = table
            .columns
            .iter()
            .map(|column| column.name.as_str())
            .zip(&types)
            .collect();
        if let Some(arguments) = checksum::row_hash_arguments(&columns) {
            if !self.has_parts(table, &name).await? {
                return Ok(Some(NativeChecksum {
                    method: SQL_CHECKSUM_METHOD,
                    checksum: RangeChecksum::default(),
                }));
            }
            let target_columns = self.target_columns(table).await?;
            let statement = checksum::statement(
                &arguments,
                &qualified(self.shared.database(), &name),
                &sql::chunk_where(table, key, range, Some(&target_columns)),
            );
            return Ok(Some(NativeChecksum {
                method: SQL_CHECKSUM_METHOD,
                checksum: checksum::query(&self.shared.endpoint, &statement, &table.name).await?,
            }));
        }
        let (types, bytes) = self.read_target(table, &name, key, range).await?;
        let checksum = read::hash_rows(&table.name, &types, bytes).await?;
        Ok(Some(NativeChecksum {
            method: CHECKSUM_METHOD,
            checksum,
        }))
    }
}
