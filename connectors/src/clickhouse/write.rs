//! The sink: a chunk goes into a staging table, then its partitions are swapped into the
//! target with `ALTER TABLE ... REPLACE PARTITION ID ... FROM` (atomic per partition).
//! The fence and its remaining window are described in `docs/clickhouse.md`.
//!
//! - A whole-partition chunk (the usual case) is swapped in straight from staging.
//! - A range chunk (a split partition, or a table of another engine cut on its key)
//!   rebuilds each partition it touches: the target's rows outside the range plus the
//!   staged rows, into a swap table, swapped in under the table's lock, so two ranges of
//!   one partition never swap over each other.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use ferry_model::checksum::RangeChecksum;
use ferry_model::column::ColumnView;
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::{TableName, TableSchema};
use ferry_model::spec::{ClickhouseOptions, Location, SchemaMode};
use futures::StreamExt;

use super::assemble::StagedRange;
use super::fence::FENCE_TABLE;
use super::http::HttpError;
use super::read::NATIVE_FORMAT;
use super::rowbinary::encode;
use super::sql::{self, ident, literal, qualified};
use super::types::{ChType, target_type};
use super::{Config, KIND, Shared, query_error};
use crate::error::{BoxError, ConnectorError, Result};
use crate::traits::{
    BatchStream, ChunkWrite, NativeChecksum, NativeStream, PrepareOptions, PrepareOutcome,
    PullSource, Sink, WriteSummary,
};

/// Where a chunk's staged rows come from.
enum Staged<'a> {
    /// `RowBinary` bytes streamed through ferry.
    Streamed(futures::stream::BoxStream<'static, Result<Bytes, BoxError>>),
    /// Fetched by the target's server from the source's.
    Pulled(&'a PullSource),
}

/// A ClickHouse database written as a target.
pub struct ClickhouseSink {
    pub(super) shared: Shared,
    /// Target table → its `(name, type)` columns, as prepared.
    columns: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// Target table → the key clauses of its staging tables.
    staging_clauses: Mutex<HashMap<String, String>>,
    /// Ranges of split partitions this sink staged and left waiting for their partition's
    /// other ranges: (table, range) → (run, staging table), so verification reads them
    /// where they are.
    pub(super) waiting: Mutex<HashMap<String, (String, String)>>,
}

impl ClickhouseSink {
    /// Opens the target at `location` with the endpoint's options.
    pub async fn open(location: &Location, options: Option<&ClickhouseOptions>) -> Result<Self> {
        let config = Config::from_location(location, "target")?;
        let shared = Shared::open(config, options.cloned().unwrap_or_default(), "target").await?;
        Ok(Self {
            shared,
            columns: Mutex::new(HashMap::new()),
            staging_clauses: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn target(&self, table: &TableSchema) -> String {
        qualified(self.shared.database(), &table.name.name)
    }

    pub(super) async fn exec(
        &self,
        operation: &'static str,
        table: &TableName,
        statement: &str,
    ) -> Result<()> {
        self.shared
            .endpoint
            .query_text(statement)
            .await
            .map(drop)
            .map_err(query_error(operation, table))
    }

    pub(super) async fn scalar(
        &self,
        operation: &'static str,
        table: &TableName,
        statement: &str,
    ) -> Result<u64> {
        let sql = format!("{statement} FORMAT TSVRaw");
        // A read of the system tables may meet a table dropped meanwhile: read again.
        let rows = if statement.contains("FROM system.") {
            self.table_list_rows(&sql).await
        } else {
            self.shared.endpoint.query_rows(&sql).await
        }
        .map_err(query_error(operation, table))?;
        Ok(rows
            .first()
            .and_then(|row| row.first())
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0))
    }

    pub(super) async fn target_columns(
        &self,
        table: &TableSchema,
    ) -> Result<Vec<(String, String)>> {
        if let Some(columns) = self
            .columns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&table.name.name)
        {
            return Ok(columns.clone());
        }
        let columns = self
            .shared
            .columns(self.shared.database(), &table.name.name)
            .await
            .map_err(query_error("describe target table", &table.name))?;
        if columns.is_empty() {
            return Err(ConnectorError::TableNotFound {
                role: "target",
                table: table.name.clone(),
            });
        }
        self.columns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(table.name.name.clone(), columns.clone());
        Ok(columns)
    }

    /// The target's type of each source column, in the source's order.
    pub(super) async fn ordered_target_types(&self, table: &TableSchema) -> Result<Vec<ChType>> {
        let columns = self.target_columns(table).await?;
        table
            .columns
            .iter()
            .map(|column| {
                let declared = columns
                    .iter()
                    .find(|(name, _)| *name == column.name)
                    .map(|(_, t)| t.clone())
                    .ok_or_else(|| ConnectorError::SchemaMismatch {
                        table: table.name.clone(),
                        detail: format!("column {} is missing in the target", column.name),
                    })?;
                ChType::parse(&declared).ok_or_else(|| ConnectorError::SchemaMismatch {
                    table: table.name.clone(),
                    detail: format!(
                        "target column {} has type {declared}, which ferry cannot write",
                        column.name
                    ),
                })
            })
            .collect()
    }

    pub(super) fn column_list(table: &TableSchema) -> String {
        table
            .columns
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Creates the target from another engine's columns.
    fn mapped_ddl(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        options: &PrepareOptions,
    ) -> Result<String> {
        let mut columns = Vec::new();
        for column in &table.columns {
            let declared = match options.type_overrides.get(&column.name) {
                Some(chosen) => chosen.clone(),
                None if table.source_kind == KIND => column.declared_type.clone(),
                None => target_type(&column.column_type, column.nullable, self.shared.features)
                    .map_err(|why| {
                        ConnectorError::type_mapping(
                            &table.name,
                            &column.name,
                            &column.column_type.display_name(),
                            KIND,
                            &why,
                        )
                    })?,
            };
            columns.push(format!("{} {declared}", ident(&column.name)));
        }
        let order_by = match key {
            SplitKey::Columns {
                names,
                nullable: false,
                ..
            } => {
                format!(
                    "({})",
                    names
                        .iter()
                        .map(|n| ident(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            _ => "tuple()".to_string(),
        };
        let engine = self
            .shared
            .options
            .engines
            .iter()
            .find(|rule| rule.from == "MergeTree")
            .map_or_else(
                || "MergeTree".to_string(),
                |rule| {
                    rule.to
                        .replace("{database}", self.shared.database())
                        .replace("{table}", &table.name.name)
                },
            );
        let cluster = self
            .shared
            .options
            .on_cluster
            .as_ref()
            .map(|c| format!(" ON CLUSTER {}", ident(c)))
            .unwrap_or_default();
        Ok(format!(
            "CREATE TABLE {}{cluster} ({}) ENGINE = {engine} ORDER BY {order_by}",
            self.target(table),
            columns.join(", ")
        ))
    }

    /// `DROP TABLE` a table of ours (staging, swap, lock), quietly.
    pub(super) async fn drop_table(&self, name: &str) {
        let _ = self
            .shared
            .endpoint
            .query_text(&format!(
                "DROP TABLE IF EXISTS {}",
                qualified(self.shared.database(), name)
            ))
            .await;
    }

    /// A MergeTree table of the target's structure and keys, for staging.
    async fn create_staging(&self, table: &TableSchema, name: &str) -> Result<()> {
        let cached = self
            .staging_clauses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&table.name.name)
            .cloned();
        let clauses = match cached {
            Some(clauses) => clauses,
            None => {
                let clauses = self.staging_keys(table).await?;
                self.staging_clauses
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(table.name.name.clone(), clauses.clone());
                clauses
            }
        };
        let statement = format!(
            "CREATE TABLE {} AS {} ENGINE = MergeTree{clauses}",
            qualified(self.shared.database(), name),
            self.target(table)
        );
        match self.shared.endpoint.query_text(&statement).await {
            // Left by this attempt's earlier run (a transient retry): start afresh.
            Err(HttpError::Server { code: 57, .. }) => {
                self.drop_table(name).await;
                self.exec("create the staging table", &table.name, &statement)
                    .await
            }
            other => other
                .map(drop)
                .map_err(query_error("create the staging table", &table.name)),
        }
    }

    /// The target's partition, sorting, primary and sampling keys as clauses.
    async fn staging_keys(&self, table: &TableSchema) -> Result<String> {
        let rows = self
            .shared
            .endpoint
            .query_rows(&format!(
                "SELECT partition_key, sorting_key, primary_key, sampling_key FROM system.tables \
                 WHERE database = {} AND name = {} FORMAT TSV",
                literal(self.shared.database()),
                literal(&table.name.name)
            ))
            .await
            .map_err(query_error("create the staging table", &table.name))?;
        let keys: Vec<String> = rows
            .into_iter()
            .next()
            .unwrap_or_default()
            .iter()
            .map(|field| sql::tsv_unescape(field))
            .collect();
        let get = |index: usize| keys.get(index).cloned().unwrap_or_default();
        let mut clauses = String::new();
        if !get(0).is_empty() {
            clauses.push_str(&format!(" PARTITION BY {}", get(0)));
        }
        let sorting = get(1);
        clauses.push_str(&format!(
            " ORDER BY {}",
            if sorting.is_empty() {
                "tuple()".to_string()
            } else {
                format!("({sorting})")
            }
        ));
        if !get(2).is_empty() && get(2) != sorting {
            clauses.push_str(&format!(" PRIMARY KEY ({})", get(2)));
        }
        if !get(3).is_empty() {
            clauses.push_str(&format!(" SAMPLE BY {}", get(3)));
        }
        Ok(clauses)
    }

    /// Inserts `rows` (RowBinary of the chunk's columns) into the staging table.
    async fn load_staging(
        &self,
        table: &TableSchema,
        staging: &str,
        rows: futures::stream::BoxStream<'static, Result<Bytes, BoxError>>,
    ) -> Result<()> {
        let statement = format!(
            "INSERT INTO {} ({}) FORMAT RowBinary",
            qualified(self.shared.database(), staging),
            Self::column_list(table)
        );
        let mut settings = vec![("input_format_allow_errors_num", "0".to_string())];
        if self.shared.features.version >= (19, 5) {
            settings.push(("max_partitions_per_insert_block", "0".to_string()));
        }
        self.shared
            .endpoint
            .insert(&statement, &settings, rows)
            .await
            .map_err(query_error("write chunk", &table.name))
    }

    /// The partitions a chunk may hold rows of in `from` (`WHERE` its scope).
    async fn partitions_of(
        &self,
        table: &TableSchema,
        from: &str,
        condition: &str,
    ) -> Result<Vec<String>> {
        if !self.has_parts(table, from).await? {
            return Ok(Vec::new());
        }
        let rows = self
            .shared
            .endpoint
            .query_rows(&format!(
                "SELECT _partition_id FROM {} WHERE {condition} AND {} GROUP BY _partition_id FORMAT TSV",
                qualified(self.shared.database(), from),
                sql::reads_a_column(table)
            ))
            .await
            .map_err(query_error("list partitions", &table.name))?;
        Ok(rows
            .into_iter()
            .map(|row| sql::tsv_unescape(&row[0]))
            .collect())
    }

    /// Whether `name` has active parts: ClickHouse 18.16 knows no `_partition_id` in a
    /// table without any, so a query using it would fail instead of finding nothing.
    pub(super) async fn has_parts(&self, table: &TableSchema, name: &str) -> Result<bool> {
        let parts = self
            .scalar(
                "list parts",
                &table.name,
                &format!(
                    "SELECT count() FROM system.parts WHERE database = {} AND table = {} AND active",
                    literal(self.shared.database()),
                    literal(name)
                ),
            )
            .await?;
        Ok(parts > 0)
    }

    /// The rows the target's active parts of `partition` hold.
    pub(super) async fn partition_rows(&self, table: &TableSchema, partition: &str) -> Result<u64> {
        self.scalar(
            "count the rows replaced",
            &table.name,
            &format!(
                "SELECT sum(rows) FROM system.parts WHERE database = {} AND table = {} \
                 AND active AND partition_id = {}",
                literal(self.shared.database()),
                literal(&table.name.name),
                literal(partition)
            ),
        )
        .await
    }

    /// Counts the target's rows `WHERE condition` (0 without parts).
    async fn count_target(&self, table: &TableSchema, condition: &str) -> Result<u64> {
        self.count_in(table, &table.name.name, condition).await
    }

    /// Swaps the staged rows in (see the module documentation).
    async fn swap(&self, chunk: &ChunkWrite<'_>, staging: &str, written: u64) -> Result<u64> {
        let table = chunk.table;
        let target_columns = self.target_columns(table).await?;
        let predicate = sql::range_predicate(table, chunk.key, chunk.range, Some(&target_columns));
        if let (None, Some(partition)) = (&predicate, &table.partition) {
            // One whole partition (the usual chunk): staging holds it entire, or nothing.
            let deleted = self.partition_rows(table, partition).await?;
            self.check_fence(chunk).await?;
            let target = self.target(table);
            let statement = if written > 0 {
                format!(
                    "ALTER TABLE {target} REPLACE PARTITION ID {} FROM {}",
                    literal(partition),
                    qualified(self.shared.database(), staging)
                )
            } else {
                format!(
                    "ALTER TABLE {target} DROP PARTITION ID {}",
                    literal(partition)
                )
            };
            self.exec("swap the partition in", &table.name, &statement)
                .await?;
            return Ok(deleted);
        }
        let scope = sql::chunk_where(table, chunk.key, chunk.range, Some(&target_columns));
        let deleted = self.count_target(table, &scope).await?;
        let partition_filter = table.partition.as_ref().map_or_else(
            || "1".to_string(),
            |p| format!("_partition_id = {}", literal(p)),
        );
        let mut partitions = self
            .partitions_of(table, staging, &partition_filter)
            .await?;
        for partition in self.partitions_of(table, &table.name.name, &scope).await? {
            if !partitions.contains(&partition) {
                partitions.push(partition);
            }
        }
        if let Some(partition) = &table.partition
            && !partitions.contains(partition)
        {
            partitions.push(partition.clone());
        }
        let staged = self.partitions_of(table, staging, "1").await?;
        let target = self.target(table);
        let database = self.shared.database();
        match predicate {
            // The chunk owns whole partitions: staging holds them entire.
            None => {
                for partition in &partitions {
                    self.check_fence(chunk).await?;
                    let statement = if staged.contains(partition) {
                        format!(
                            "ALTER TABLE {target} REPLACE PARTITION ID {} FROM {}",
                            literal(partition),
                            qualified(database, staging)
                        )
                    } else {
                        format!(
                            "ALTER TABLE {target} DROP PARTITION ID {}",
                            literal(partition)
                        )
                    };
                    self.exec("swap the partition in", &table.name, &statement)
                        .await?;
                }
            }
            Some(predicate) => {
                let lock = self.lock(table, chunk).await?;
                let result = async {
                    for partition in &partitions {
                        let swap = format!("{staging}_swap");
                        self.drop_table(&swap).await;
                        self.exec(
                            "rebuild the partition",
                            &table.name,
                            &format!("CREATE TABLE {} AS {}", qualified(database, &swap), qualified(database, staging)),
                        )
                        .await?;
                        let columns = Self::column_list(table);
                        if self.has_parts(table, &table.name.name).await? {
                            self.exec(
                                "rebuild the partition",
                                &table.name,
                                &format!(
                                    "INSERT INTO {swap_q} SELECT * FROM {target} WHERE _partition_id = {p} AND NOT ({predicate})",
                                    swap_q = qualified(database, &swap),
                                    p = literal(partition)
                                ),
                            )
                            .await?;
                        }
                        if staged.contains(partition) {
                        self.exec(
                            "rebuild the partition",
                            &table.name,
                            &format!(
                                "INSERT INTO {swap_q} ({columns}) SELECT {columns} FROM {stg} WHERE _partition_id = {p}",
                                swap_q = qualified(database, &swap),
                                stg = qualified(database, staging),
                                p = literal(partition)
                            ),
                        )
                        .await?;
                        }
                        let rows = self
                            .scalar("rebuild the partition", &table.name, &format!("SELECT count() FROM {}", qualified(database, &swap)))
                            .await?;
                        self.check_fence(chunk).await?;
                        self.check_lock(&lock, chunk).await?;
                        let statement = if rows > 0 {
                            format!(
                                "ALTER TABLE {target} REPLACE PARTITION ID {} FROM {}",
                                literal(partition),
                                qualified(database, &swap)
                            )
                        } else {
                            format!("ALTER TABLE {target} DROP PARTITION ID {}", literal(partition))
                        };
                        self.exec("swap the partition in", &table.name, &statement).await?;
                        self.drop_table(&swap).await;
                    }
                    Ok::<(), ConnectorError>(())
                }
                .await;
                self.drop_table(&format!("{staging}_swap")).await;
                self.unlock(&lock, chunk).await;
                result?;
            }
        }
        Ok(deleted)
    }

    /// Stages the rows (streamed through ferry, or pulled by this server from the
    /// source's), swaps them in, and cleans up; the staging table is dropped on every
    /// path.
    async fn write_staged(&self, chunk: ChunkWrite<'_>, rows: Staged<'_>) -> Result<WriteSummary> {
        let rows = match rows {
            Staged::Streamed(rows) => rows,
            Staged::Pulled(pull) => {
                let staging = self.start_attempt(&chunk).await?;
                let result = async {
                    self.create_staging(chunk.table, &staging).await?;
                    let cancel = chunk.cancel.clone();
                    tokio::select! {
                        pulled = self.pull_into(chunk.table, &staging, pull) => pulled?,
                        () = cancel.cancelled() => return Err(ConnectorError::Cancelled),
                    }
                    self.finish_staged(&chunk, &staging).await
                }
                .await;
                return self.end_staged(&staging, result).await;
            }
        };
        let staging = self.start_attempt(&chunk).await?;
        // The rows' own error (a value that does not fit, a failed source read): hyper
        // reports only that the body failed, so the error is kept here.
        let slot: std::sync::Arc<Mutex<Option<BoxError>>> = std::sync::Arc::default();
        let stream_slot = slot.clone();
        let rows = rows
            .map(move |item| {
                item.map_err(|error| {
                    let message = error.to_string();
                    *stream_slot
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
                    BoxError::from(message)
                })
            })
            .boxed();
        let result = async {
            self.create_staging(chunk.table, &staging).await?;
            let cancel = chunk.cancel.clone();
            let load = self.load_staging(chunk.table, &staging, rows);
            let loaded = tokio::select! {
                loaded = load => loaded,
                () = cancel.cancelled() => return Err(ConnectorError::Cancelled),
            };
            if let Err(error) = loaded {
                let cause = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                return Err(match cause {
                    Some(cause) => match cause.downcast::<ConnectorError>() {
                        Ok(connector) => *connector,
                        Err(other) => ConnectorError::Task(other.to_string()),
                    },
                    None => error,
                });
            }
            self.finish_staged(&chunk, &staging).await
        }
        .await;
        self.end_staged(&staging, result).await
    }

    /// Drops the staging table, unless its range waits in it for its partition's other
    /// ranges.
    async fn end_staged(
        &self,
        staging: &str,
        result: Result<(WriteSummary, bool)>,
    ) -> Result<WriteSummary> {
        let keep = matches!(result, Ok((_, true)));
        if !keep {
            self.drop_table(staging).await;
        }
        result.map(|(summary, _)| summary)
    }

    /// Counts what staging holds and swaps it in; a range of a split partition waits in
    /// staging until its partition's ranges are all staged, then the partition is swapped
    /// in once (`assemble.rs`). True when the staging table is to be kept.
    async fn finish_staged(
        &self,
        chunk: &ChunkWrite<'_>,
        staging: &str,
    ) -> Result<(WriteSummary, bool)> {
        let written = self
            .scalar(
                "count staged rows",
                &chunk.table.name,
                &format!(
                    "SELECT count() FROM {}",
                    qualified(self.shared.database(), staging)
                ),
            )
            .await?;
        let summary = |deleted| WriteSummary {
            rows_written: written,
            rows_deleted: deleted,
            key_missing: false,
        };
        if let Some(partition) = &chunk.table.partition
            && sql::range_predicate(chunk.table, chunk.key, chunk.range, None).is_some()
        {
            match self.stage_range(chunk, partition, staging, written).await? {
                StagedRange::Waiting => {
                    self.waiting
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(
                            Self::waiting_key(chunk.table, chunk.range),
                            (chunk.fence.run_id.clone(), staging.to_string()),
                        );
                    return Ok((summary(0), true));
                }
                StagedRange::Swapped { deleted } => return Ok((summary(deleted), false)),
                StagedRange::TakenIn => return Ok((summary(0), false)),
                StagedRange::Rebuild => {}
            }
        }
        let deleted = self.swap(chunk, staging, written).await?;
        Ok((summary(deleted), false))
    }

    /// `INSERT INTO staging SELECT … FROM <the source's servers>`: this server fetches the
    /// chunk's rows itself. The source's password, which the statement holds, is cut out
    /// of any error.
    async fn pull_into(&self, table: &TableSchema, staging: &str, pull: &PullSource) -> Result<()> {
        let columns = Self::column_list(table);
        let statement = format!(
            "INSERT INTO {} ({columns}) SELECT {columns} FROM {} WHERE {}",
            qualified(self.shared.database(), staging),
            pull.from,
            pull.filter
        );
        let mut settings = Vec::new();
        if self.shared.features.version >= (19, 5) {
            settings.push(("max_partitions_per_insert_block", "0".to_string()));
        }
        if let Some(seconds) = self.shared.options.max_execution_time {
            settings.push(("max_execution_time", seconds.to_string()));
        }
        let error = match self
            .shared
            .endpoint
            .execute_secret(&statement, &settings, pull.secret.as_deref())
            .await
        {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        Err(match &error {
            // The target's servers did not reach the source's: unavailable, so the runner
            // checks whether the source answers ferry (then the address is wrong).
            HttpError::Server {
                code: 209 | 210 | 279,
                ..
            } => ConnectorError::Query {
                operation: "pull chunk from the source",
                table: table.name.clone(),
                source: Box::new(error),
                failure: crate::error::Failure::Unavailable,
            },
            // Unknown user, wrong password, authentication failed.
            HttpError::Server {
                code: 192 | 193 | 516,
                ..
            } => ConnectorError::Unsupported {
                table: table.name.clone(),
                detail: format!(
                    "the source refused the target's servers the source URL's user when they pulled the chunk ({error}): \
                     with pull_address the target logs in with the source URL's user and password; \
                     with pull_cluster with the user in the target's remote_servers"
                ),
            },
            _ => query_error("pull chunk from the source", &table.name)(error),
        })
    }
}

#[async_trait]
impl Sink for ClickhouseSink {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn can_carry_rowid(&self) -> bool {
        false
    }

    fn target_table(&self, table: &TableSchema) -> TableName {
        TableName {
            schema: Some(self.shared.database().to_string()),
            name: table.name.name.clone(),
        }
    }

    async fn prepare_table(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        options: &PrepareOptions,
    ) -> Result<PrepareOutcome> {
        self.columns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&table.name.name);
        self.staging_clauses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&table.name.name);
        let database = self.shared.database().to_string();
        self.exec(
            "create the fence table",
            &table.name,
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (tag String, attempt UInt32, at DateTime DEFAULT now()) \
                 ENGINE = MergeTree ORDER BY tag",
                qualified(&database, FENCE_TABLE)
            ),
        )
        .await?;
        self.create_assembly_tables(table).await?;
        let ddl = if table.source_kind == KIND && options.type_overrides.is_empty() {
            let native = table.native_ddl.as_deref().unwrap_or_default();
            sql::rewrite_ddl(
                native,
                &database,
                &table.name.name,
                self.shared.options.on_cluster.as_deref(),
                &self.shared.options.engines,
            )
            .map_err(|detail| ConnectorError::Unsupported {
                table: table.name.clone(),
                detail,
            })?
        } else {
            self.mapped_ddl(table, key, options)?
        };
        let existing = self
            .shared
            .columns(&database, &table.name.name)
            .await
            .map_err(query_error("describe target table", &table.name))?;
        let cluster = self
            .shared
            .options
            .on_cluster
            .as_ref()
            .map(|c| format!(" ON CLUSTER {}", ident(c)))
            .unwrap_or_default();
        let outcome = match (options.mode, existing.is_empty()) {
            (SchemaMode::Recreate, false) => {
                self.exec(
                    "drop the target table",
                    &table.name,
                    &format!("DROP TABLE IF EXISTS {}{cluster}", self.target(table)),
                )
                .await?;
                self.exec("create the target table", &table.name, &ddl)
                    .await?;
                PrepareOutcome::Recreated
            }
            (SchemaMode::RequireExisting, true) => {
                return Err(ConnectorError::TableNotFound {
                    role: "target",
                    table: table.name.clone(),
                });
            }
            (_, true) => {
                self.exec("create the target table", &table.name, &ddl)
                    .await?;
                PrepareOutcome::Created
            }
            (_, false) => {
                for column in &table.columns {
                    let Some((_, found)) = existing.iter().find(|(name, _)| *name == column.name)
                    else {
                        return Err(ConnectorError::SchemaMismatch {
                            table: table.name.clone(),
                            detail: format!(
                                "column {} is missing in the target; add it, or use schema: recreate",
                                column.name
                            ),
                        });
                    };
                    if table.source_kind == KIND && *found != column.declared_type {
                        return Err(ConnectorError::SchemaMismatch {
                            table: table.name.clone(),
                            detail: format!(
                                "column {} is {} in the source but {found} in the target",
                                column.name, column.declared_type
                            ),
                        });
                    }
                }
                PrepareOutcome::Existing
            }
        };
        // Every target column must be one ferry can write.
        self.ordered_target_types(table).await?;
        Ok(outcome)
    }

    async fn ping(&self) -> Result<()> {
        self.shared.ping().await?;
        let readonly = self
            .shared
            .endpoint
            .query_text("SELECT value FROM system.settings WHERE name = 'readonly' FORMAT TSVRaw")
            .await
            .unwrap_or_default();
        if readonly.trim() != "0" && !readonly.trim().is_empty() {
            return Err(ConnectorError::read_only_target(
                TableName::bare(self.shared.label.clone()),
                "the user's readonly setting",
            ));
        }
        Ok(())
    }

    async fn write_chunk(
        &self,
        chunk: ChunkWrite<'_>,
        batches: BatchStream,
    ) -> Result<WriteSummary> {
        let types = self.ordered_target_types(chunk.table).await?;
        let table = chunk.table.clone();
        let rows = batches
            .map(move |item| -> Result<Bytes, BoxError> {
                let batch = item.map_err(|error| Box::new(error) as BoxError)?;
                let mut out = Vec::with_capacity(batch.get_array_memory_size());
                let views = table
                    .columns
                    .iter()
                    .zip(batch.columns())
                    .map(|(column, array)| ColumnView::new(&column.name, array.as_ref()))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|error| Box::new(error) as BoxError)?;
                for row in 0..batch.num_rows() {
                    for ((view, column), ch) in views.iter().zip(&table.columns).zip(&types) {
                        encode(ch, view.cell(row), &mut out).map_err(|detail| {
                            Box::new(ConnectorError::ValueType {
                                table: table.name.clone(),
                                column: column.name.clone(),
                                detail,
                            }) as BoxError
                        })?;
                    }
                }
                Ok(Bytes::from(out))
            })
            .boxed();
        self.write_staged(chunk, Staged::Streamed(rows)).await
    }

    async fn checksum_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<RangeChecksum> {
        self.on_verified(table, range, |name| {
            self.checksum_in(table, name, key, range)
        })
        .await
    }

    async fn count_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<u64> {
        let target_columns = self.target_columns(table).await?;
        let condition = sql::chunk_where(table, key, range, Some(&target_columns));
        self.on_verified(table, range, |name| {
            let condition = condition.clone();
            async move { self.count_in(table, &name, &condition).await }
        })
        .await
    }

    async fn native_format(&self, table: &TableSchema) -> Result<Option<&'static str>> {
        if table.source_kind != KIND {
            return Ok(None);
        }
        let columns = self.target_columns(table).await?;
        let same = table.columns.len() == columns.len()
            && table.columns.iter().all(|c| {
                columns
                    .iter()
                    .any(|(name, t)| *name == c.name && *t == c.declared_type)
            })
            && table
                .columns
                .iter()
                .all(|c| ChType::parse(&c.declared_type).is_some());
        Ok(same.then_some(NATIVE_FORMAT))
    }

    async fn write_native(
        &self,
        chunk: ChunkWrite<'_>,
        stream: NativeStream,
    ) -> Result<WriteSummary> {
        if stream.format != NATIVE_FORMAT {
            return Err(ConnectorError::Unsupported {
                table: chunk.table.name.clone(),
                detail: format!(
                    "the clickhouse sink takes {NATIVE_FORMAT}, not {}",
                    stream.format
                ),
            });
        }
        let rows = stream
            .bytes
            .map(|item| item.map_err(|error| Box::new(error) as BoxError))
            .boxed();
        self.write_staged(chunk, Staged::Streamed(rows)).await
    }

    async fn write_pulled(
        &self,
        chunk: ChunkWrite<'_>,
        pull: &PullSource,
    ) -> Result<Option<WriteSummary>> {
        // The same condition as the pass-through: the target's columns are the source's.
        if pull.kind != KIND || self.native_format(chunk.table).await?.is_none() {
            return Ok(None);
        }
        self.write_staged(chunk, Staged::Pulled(pull))
            .await
            .map(Some)
    }

    async fn native_checksum(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<Option<NativeChecksum>> {
        self.on_verified(table, range, |name| {
            self.native_checksum_in(table, name, key, range)
        })
        .await
    }
}
