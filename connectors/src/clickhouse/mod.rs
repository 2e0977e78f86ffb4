//! ClickHouse: source and sink over the HTTP interface (see `docs/clickhouse.md`).
//!
//! An endpoint is `http://[user[:password]@]host:port/database` in an environment
//! variable. A source describes tables from `system.tables` / `system.columns`, plans a
//! MergeTree table partition by partition (active `system.parts`), cuts a partition
//! bigger than the chunk target on its split column, and reads `FORMAT RowBinary` from
//! the read replica. A sink writes a chunk into a staging table and swaps it in with
//! `ALTER TABLE ... REPLACE PARTITION ... FROM` ([`write`]).

mod assemble;
mod checksum;
mod fence;
mod http;
mod read;
mod rowbinary;
mod sql;
mod types;
mod verified;
mod write;

use std::sync::Arc;

use async_trait::async_trait;
use ferry_model::key::{ChunkRange, KeyBound, KeyStats, KeyValue, SplitKey};
use ferry_model::schema::{ColumnSchema, Partitioning, TableName, TablePartition, TableSchema};
use ferry_model::spec::{ClickhouseOptions, Location};
use futures::StreamExt;

pub use checksum::SQL_CHECKSUM_METHOD;
pub use fence::{FENCE_TABLE, lock_table_name};
pub use http::{HttpError, classify_code};
pub use read::{CHECKSUM_METHOD, NATIVE_FORMAT};
pub use sql::{ident, literal, qualified};
pub use types::{ChType, ServerFeatures};
pub use write::ClickhouseSink;

use crate::error::{ConnectorError, Failure, Result};
use crate::traits::{
    BatchStream, NativeChecksum, NativeRead, NativeStream, PullRead, PullSource, Source,
};

/// The connector kind in specs.
pub const KIND: &str = "clickhouse";

/// A parsed endpoint.
#[derive(Clone)]
pub struct Config {
    endpoint: http::Endpoint,
    label: String,
    /// The URL's user and password, for a target pulling from this source (`remote()`).
    credentials: Option<(String, String)>,
}

impl Config {
    /// Parses `http://[user[:password]@]host:port/database`.
    pub fn parse(url: &str, role: &'static str) -> Result<Self> {
        let invalid = |reason: &str| ConnectorError::Open {
            role,
            location: ferry_model::spec::without_password(url),
            reason: format!("{reason}; expected http://[user[:password]@]host:port/database"),
        };
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(invalid(
                "https is not supported yet (put a TLS proxy or tunnel in front)",
            ));
        } else {
            return Err(invalid("not an http:// URL"));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let database = path.split('?').next().unwrap_or_default();
        if database.is_empty() {
            return Err(invalid("no database in the URL path"));
        }
        let (user_info, address) = match authority.rsplit_once('@') {
            Some((user_info, address)) => (Some(user_info), address),
            None => (None, authority),
        };
        if !address.contains(':') {
            return Err(invalid("no port (the HTTP interface's, 8123 by default)"));
        }
        let credentials = user_info.map(|user_info| {
            let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
            (user.to_string(), password.to_string())
        });
        let authorization = credentials.as_ref().map(|(user, password)| {
            format!(
                "Basic {}",
                http::base64(format!("{user}:{password}").as_bytes())
            )
        });
        Ok(Self {
            endpoint: http::Endpoint {
                address: address.to_string(),
                authorization,
                database: database.to_string(),
                settings: Vec::new(),
            },
            label: format!("http://{address}/{database}"),
            credentials,
        })
    }

    fn from_location(location: &Location, role: &'static str) -> Result<Self> {
        match location {
            Location::Env { value, .. } => Self::parse(value.expose(), role),
            Location::Path(path) => Err(ConnectorError::Open {
                role,
                location: path.display().to_string(),
                reason: "a ClickHouse endpoint is a URL: set url_env".into(),
            }),
        }
    }
}

fn query_error(
    operation: &'static str,
    table: &TableName,
) -> impl Fn(HttpError) -> ConnectorError + use<> {
    let table = table.clone();
    move |error| ConnectorError::Query {
        operation,
        table: table.clone(),
        failure: error.failure(),
        source: Box::new(error),
    }
}

/// What both sides share: the server, its version, the options.
pub(crate) struct Shared {
    endpoint: http::Endpoint,
    credentials: Option<(String, String)>,
    features: ServerFeatures,
    options: ClickhouseOptions,
    label: String,
}

impl Shared {
    async fn open(config: Config, options: ClickhouseOptions, role: &'static str) -> Result<Self> {
        let version = config
            .endpoint
            .query_text("SELECT version() FORMAT TSVRaw")
            .await
            .map_err(|error| ConnectorError::Open {
                role,
                location: config.label.clone(),
                reason: error.to_string(),
            })?;
        let exists = config
            .endpoint
            .query_text(&format!(
                "SELECT count() FROM system.databases WHERE name = {} FORMAT TSVRaw",
                literal(&config.endpoint.database)
            ))
            .await
            .map_err(|error| ConnectorError::Open {
                role,
                location: config.label.clone(),
                reason: error.to_string(),
            })?;
        if exists.trim() != "1" {
            return Err(ConnectorError::Open {
                role,
                location: config.label.clone(),
                reason: format!(
                    "database {} does not exist; create it first, or fix the URL",
                    config.endpoint.database
                ),
            });
        }
        let features = ServerFeatures::from_version(&version);
        let mut endpoint = config.endpoint;
        if features.version < (19, 0) {
            // LowCardinality is experimental before 19.0: without this a staging table
            // of a table that has such a column cannot be created.
            endpoint
                .settings
                .push(("allow_experimental_low_cardinality_type", "1".to_string()));
        }
        Ok(Self {
            features,
            endpoint,
            credentials: config.credentials,
            options,
            label: config.label,
        })
    }

    fn database(&self) -> &str {
        &self.endpoint.database
    }

    async fn ping(&self) -> Result<()> {
        self.endpoint
            .query_text("SELECT 1 FORMAT TSVRaw")
            .await
            .map(drop)
            .map_err(|error| ConnectorError::Query {
                operation: "check the database",
                table: TableName::bare(self.label.clone()),
                failure: match error.failure() {
                    Failure::Permanent => Failure::Unavailable,
                    other => other,
                },
                source: Box::new(error),
            })
    }

    /// `(name, type)` of a table's columns, in order; empty when it does not exist.
    async fn columns(
        &self,
        database: &str,
        table: &str,
    ) -> std::result::Result<Vec<(String, String)>, HttpError> {
        let rows = self
            .endpoint
            .query_rows(&format!(
                "SELECT name, type FROM system.columns WHERE database = {} AND table = {} FORMAT TSV",
                literal(database),
                literal(table)
            ))
            .await?;
        Ok(rows
            .into_iter()
            .filter(|row| row.len() == 2)
            .map(|row| (sql::tsv_unescape(&row[0]), sql::tsv_unescape(&row[1])))
            .collect())
    }
}

/// A ClickHouse database read as a source.
pub struct ClickhouseSource {
    shared: Shared,
    /// Where chunk reads go (`read_replica`, else the URL's server).
    reads: http::Endpoint,
}

impl ClickhouseSource {
    /// Opens the source at `location` with the endpoint's options.
    pub async fn open(location: &Location, options: Option<&ClickhouseOptions>) -> Result<Self> {
        let config = Config::from_location(location, "source")?;
        let options = options.cloned().unwrap_or_default();
        let shared = Shared::open(config, options, "source").await?;
        let mut reads = shared.endpoint.clone();
        if let Some(replica) = &shared.options.read_replica {
            reads.address = replica.clone();
        }
        Ok(Self { shared, reads })
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = vec![("readonly", "2".to_string())];
        if let Some(seconds) = self.shared.options.max_execution_time {
            settings.push(("max_execution_time", seconds.to_string()));
        }
        settings
    }

    fn parsed_columns(table: &TableSchema) -> Result<Vec<ChType>> {
        table
            .columns
            .iter()
            .map(|column| {
                ChType::parse(&column.declared_type).ok_or_else(|| ConnectorError::Unsupported {
                    table: table.name.clone(),
                    detail: format!(
                        "column {} has type {}, which ferry does not read",
                        column.name, column.declared_type
                    ),
                })
            })
            .collect()
    }

    /// The in-server checksum's arguments over the table's columns, when every column has
    /// a version-stable form.
    fn row_hash_arguments(table: &TableSchema, columns: &[ChType]) -> Option<String> {
        checksum::row_hash_arguments(
            &table
                .columns
                .iter()
                .zip(columns)
                .map(|(column, column_type)| (column.name.as_str(), column_type))
                .collect::<Vec<_>>(),
        )
    }

    fn select(&self, table: &TableSchema, key: &SplitKey, range: &ChunkRange) -> String {
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|column| ident(&column.name))
            .collect();
        format!(
            "SELECT {} FROM {} WHERE {} FORMAT RowBinary",
            columns.join(", "),
            qualified(self.shared.database(), &table.name.name),
            sql::chunk_where(table, key, range, None)
        )
    }
}

#[async_trait]
impl Source for ClickhouseSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn list_tables(&self) -> Result<Vec<TableName>> {
        let database = self.shared.database();
        let rows = self
            .shared
            .endpoint
            .query_rows(&format!(
                "SELECT name FROM system.tables WHERE database = {} AND NOT is_temporary \
                 AND engine NOT IN ('View', 'MaterializedView', 'Dictionary', 'Distributed') \
                 AND name NOT LIKE '\\_ferry\\_%' AND name NOT LIKE '.inner.%' ORDER BY name FORMAT TSV",
                literal(database)
            ))
            .await
            .map_err(query_error("list tables", &TableName::bare(database)))?;
        Ok(rows
            .into_iter()
            .map(|row| TableName {
                schema: Some(database.to_string()),
                name: sql::tsv_unescape(&row[0]),
            })
            .collect())
    }

    async fn describe_table(&self, table: &TableName) -> Result<TableSchema> {
        let database = self.shared.database().to_string();
        let on_error = query_error("describe table", table);
        let rows = self
            .shared
            .endpoint
            .query_rows(&format!(
                "SELECT engine, partition_key, sorting_key, create_table_query FROM system.tables \
                 WHERE database = {} AND name = {} FORMAT TSV",
                literal(&database),
                literal(&table.name)
            ))
            .await
            .map_err(&on_error)?;
        let Some(info) = rows.into_iter().next().filter(|row| row.len() == 4) else {
            return Err(ConnectorError::TableNotFound {
                role: "source",
                table: table.clone(),
            });
        };
        let (engine, partition_key, sorting_key, ddl) = (
            sql::tsv_unescape(&info[0]),
            sql::tsv_unescape(&info[1]),
            sql::tsv_unescape(&info[2]),
            sql::tsv_unescape(&info[3]),
        );
        let mut columns = Vec::new();
        for (name, declared) in self
            .shared
            .columns(&database, &table.name)
            .await
            .map_err(&on_error)?
        {
            let parsed = ChType::parse(&declared);
            let (column_type, nullable) = match &parsed {
                Some(parsed) => (parsed.column_type(), parsed.base().1),
                // Unknown types still pass between ClickHouse servers natively; another
                // engine's target refuses them in check_readable.
                None => (ferry_model::schema::ColumnType::Blob, true),
            };
            columns.push(ColumnSchema {
                name,
                declared_type: declared,
                column_type,
                nullable,
            });
        }
        let name = TableName {
            schema: Some(database.clone()),
            name: table.name.clone(),
        };
        let mut partitioning = None;
        if engine.ends_with("MergeTree") {
            let parts = self
                .shared
                .endpoint
                .query_rows(&format!(
                    "SELECT partition_id, any(partition), sum(rows) FROM system.parts \
                     WHERE database = {} AND table = {} AND active GROUP BY partition_id \
                     ORDER BY partition_id FORMAT TSV",
                    literal(&database),
                    literal(&table.name)
                ))
                .await
                .map_err(&on_error)?;
            partitioning = Some(Partitioning {
                method: if partition_key.is_empty() {
                    "tuple()".to_string()
                } else {
                    partition_key.clone()
                },
                partitions: parts
                    .into_iter()
                    .filter(|row| row.len() == 3)
                    .map(|row| TablePartition {
                        name: sql::tsv_unescape(&row[0]),
                        schema: None,
                        parent: None,
                        bound: sql::tsv_unescape(&row[1]),
                        sub_method: None,
                        leaf: true,
                    })
                    .collect(),
            });
        }
        let split = self
            .shared
            .options
            .split_column
            .get(&table.name)
            .cloned()
            .or_else(|| {
                let first = sorting_key.split(',').next().unwrap_or_default().trim();
                columns
                    .iter()
                    .any(|column| column.name == first)
                    .then(|| first.to_string())
            })
            .filter(|name| {
                columns.iter().any(|column| {
                    &column.name == name
                        && matches!(
                            ChType::parse(&column.declared_type)
                                .as_ref()
                                .map(|t| t.base().0),
                            Some(
                                ChType::UInt8
                                    | ChType::UInt16
                                    | ChType::UInt32
                                    | ChType::UInt64
                                    | ChType::Int8
                                    | ChType::Int16
                                    | ChType::Int32
                                    | ChType::Int64
                                    | ChType::Date
                                    | ChType::DateTime
                                    | ChType::String
                            )
                        )
                })
            });
        if let Some(wanted) = self.shared.options.split_column.get(&table.name)
            && split.as_deref() != Some(wanted.as_str())
        {
            return Err(ConnectorError::Unsupported {
                table: name,
                detail: format!(
                    "split_column {wanted} is not a column of an integer, Date, DateTime or \
                     String type; choose another in source.clickhouse.split_column"
                ),
            });
        }
        Ok(TableSchema {
            name,
            columns,
            primary_key: Vec::new(),
            has_rowid: false,
            source_kind: KIND.to_string(),
            native_ddl: Some(ddl),
            partitioning,
            partition: None,
            split_columns: split.into_iter().collect(),
        })
    }

    async fn key_stats(&self, table: &TableSchema, key: &SplitKey) -> Result<KeyStats> {
        let on_error = query_error("count rows", &table.name);
        if !key.nullable() && !key.single_integer() {
            // Only the row count is needed: the active parts know it without a scan.
            let partition = table
                .partition
                .as_ref()
                .map(|p| format!(" AND partition_id = {}", literal(p)))
                .unwrap_or_default();
            let rows = self
                .shared
                .endpoint
                .query_text(&format!(
                    "SELECT sum(rows) FROM system.parts WHERE database = {} AND table = {}                      AND active{partition} FORMAT TSVRaw",
                    literal(self.shared.database()),
                    literal(&table.name.name)
                ))
                .await
                .map_err(&on_error)?;
            return Ok(KeyStats {
                rows: rows.trim().parse().unwrap_or(0),
                null_key_rows: 0,
                int_min_max: None,
            });
        }
        let target = qualified(self.shared.database(), &table.name.name);
        let scope = sql::chunk_where(table, &SplitKey::None, &ChunkRange::WholeTable, None);
        let expressions = sql::key_expressions(table, key);
        let nulls = if expressions.is_empty() || !key.nullable() {
            "0".to_string()
        } else {
            format!(
                "countIf({})",
                expressions
                    .iter()
                    .map(|e| format!("isNull({e})"))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            )
        };
        let min_max = if key.single_integer() {
            format!("toString(min({0})), toString(max({0}))", expressions[0])
        } else {
            "'', ''".to_string()
        };
        let rows = self
            .shared
            .endpoint
            .query_rows(&format!(
                "SELECT count(), {nulls}, {min_max} FROM {target} WHERE {scope} AND {} FORMAT TSV",
                sql::reads_a_column(table)
            ))
            .await
            .map_err(&on_error)?;
        let row = rows.into_iter().next().unwrap_or_default();
        let number = |index: usize| {
            row.get(index)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (rows, null_key_rows) = (number(0), number(1));
        let int_min_max = match (
            row.get(2).and_then(|v| v.parse::<i64>().ok()),
            row.get(3).and_then(|v| v.parse::<i64>().ok()),
        ) {
            (Some(min), Some(max)) if rows > null_key_rows => Some((min, max)),
            _ => None,
        };
        Ok(KeyStats {
            rows,
            null_key_rows,
            int_min_max,
        })
    }

    async fn key_boundaries(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        every_rows: u64,
    ) -> Result<Vec<KeyBound>> {
        let expressions = sql::key_expressions(table, key);
        if expressions.len() != 1 {
            return Ok(Vec::new());
        }
        let expression = &expressions[0];
        let scope = sql::chunk_where(table, &SplitKey::None, &ChunkRange::WholeTable, None);
        // Every `every_rows`-th key in order; equal keys cannot be cut apart, so repeats
        // collapse into one boundary.
        let rows = self
            .shared
            .endpoint
            .query_rows(&format!(
                "SELECT k FROM (SELECT {expression} AS k FROM {} WHERE {scope} AND isNotNull({expression}) ORDER BY k) \
                 WHERE (rowNumberInAllBlocks() + 1) % {every} = 0 AND rowNumberInAllBlocks() > 0 FORMAT TSV",
                qualified(self.shared.database(), &table.name.name),
                every = every_rows.max(1)
            ))
            .await
            .map_err(query_error("split table", &table.name))?;
        let is_text = !expression.starts_with("toInt64")
            && table.columns.iter().any(|c| {
                ident(&c.name) == *expression
                    && c.column_type == ferry_model::schema::ColumnType::Text
            });
        let mut bounds: Vec<KeyBound> = Vec::new();
        for row in rows {
            let text = sql::tsv_unescape(row.first().map_or("", String::as_str));
            // The boundary is the key *after* the n-th, so the first range holds n rows.
            let value = if is_text {
                KeyValue::Text(text)
            } else {
                match text.parse::<i64>() {
                    Ok(v) => KeyValue::Int(v.saturating_add(1)),
                    Err(_) => continue,
                }
            };
            let bound = KeyBound(vec![value]);
            if bounds
                .last()
                .is_none_or(|last| last.sql_cmp(&bound).is_lt())
            {
                bounds.push(bound);
            }
        }
        Ok(bounds)
    }

    async fn read_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<BatchStream> {
        let columns = Self::parsed_columns(table)?;
        let bytes = self
            .reads
            .stream(&self.select(table, key, range), &self.settings())
            .await
            .map_err(query_error("read chunk", &table.name))?;
        Ok(read::table_batches(table, columns, bytes))
    }

    async fn read_native(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
        format: &str,
    ) -> Result<Option<NativeRead>> {
        if format != NATIVE_FORMAT {
            return Ok(None);
        }
        let columns = Self::parsed_columns(table)?;
        // Counted and hashed by the server after the read when every column has a
        // version-stable form (the sink does the same), else hashed here as it passes.
        let in_server = Self::row_hash_arguments(table, &columns).map(|arguments| {
            checksum::statement(
                &arguments,
                &qualified(self.shared.database(), &table.name.name),
                &sql::chunk_where(table, key, range, None),
            )
        });
        let mut bytes = self
            .reads
            .stream(&self.select(table, key, range), &self.settings())
            .await
            .map_err(query_error("read chunk", &table.name))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes>>(4);
        let (mut checksum_tx, checksum_rx) = tokio::sync::oneshot::channel();
        let name = table.name.clone();
        let hash_here = in_server.is_none();
        let reads = self.reads.clone();
        tokio::spawn(async move {
            let mut hasher = read::RowHasher::default();
            loop {
                let piece = tokio::select! {
                    piece = bytes.next() => piece,
                    () = tx.closed() => return,
                };
                match piece {
                    Some(Ok(piece)) => {
                        if hash_here {
                            hasher.feed(&columns, &piece);
                        }
                        if tx.send(Ok(piece)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(error)) => {
                        let failure = error.failure();
                        let _ = tx.send(Err(read::read_error(&name, error, failure))).await;
                        return;
                    }
                    None => {
                        if hash_here && hasher.has_partial_row() {
                            let _ = tx
                                .send(Err(read::read_error(
                                    &name,
                                    "the output ends inside a row",
                                    Failure::Transient,
                                )))
                                .await;
                            return;
                        }
                        // The server's checksum starts as soon as the read ends, while
                        // the target still takes the last rows in.
                        let result = match &in_server {
                            None => Ok(NativeChecksum {
                                method: CHECKSUM_METHOD,
                                checksum: hasher.checksum,
                            }),
                            Some(statement) => tokio::select! {
                                checksum = checksum::query(&reads, statement, &name) => {
                                    checksum.map(|checksum| NativeChecksum {
                                        method: SQL_CHECKSUM_METHOD,
                                        checksum,
                                    })
                                }
                                () = checksum_tx.closed() => return,
                            },
                        };
                        let _ = checksum_tx.send(result);
                        return;
                    }
                }
            }
        });
        let table_name = table.name.clone();
        Ok(Some(NativeRead {
            stream: NativeStream {
                format: NATIVE_FORMAT,
                bytes: tokio_stream::wrappers::ReceiverStream::new(rx).boxed(),
            },
            checksum: Box::pin(async move {
                checksum_rx.await.map_err(|_| ConnectorError::Query {
                    operation: "read chunk",
                    table: table_name,
                    source: "the read ended before its last row".into(),
                    failure: Failure::Transient,
                })?
            }),
        }))
    }

    async fn pull(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
        target_kind: &'static str,
    ) -> Result<Option<PullRead>> {
        if target_kind != KIND {
            return Ok(None);
        }
        let options = &self.shared.options;
        let database = self.shared.database();
        let (from, secret) = match (&options.pull_address, &options.pull_cluster) {
            (Some(address), _) => {
                let (user, password) = self
                    .shared
                    .credentials
                    .clone()
                    .unwrap_or_else(|| ("default".to_string(), String::new()));
                (
                    format!(
                        "remote({}, {}, {}, {}, {})",
                        literal(address),
                        ident(database),
                        ident(&table.name.name),
                        literal(&user),
                        literal(&password)
                    ),
                    (!password.is_empty()).then_some(password),
                )
            }
            (None, Some(cluster)) => (
                format!(
                    "cluster({}, {}, {})",
                    ident(cluster),
                    ident(database),
                    ident(&table.name.name)
                ),
                None,
            ),
            (None, None) => return Ok(None),
        };
        // Only with the checksum inside the servers: a pulled chunk passes no row through
        // ferry to hash.
        let Some(arguments) = Self::row_hash_arguments(table, &Self::parsed_columns(table)?) else {
            return Ok(None);
        };
        let filter = sql::chunk_where(table, key, range, None);
        let statement =
            checksum::statement(&arguments, &qualified(database, &table.name.name), &filter);
        let reads = self.reads.clone();
        let name = table.name.clone();
        Ok(Some(PullRead {
            source: PullSource {
                kind: KIND,
                from,
                filter,
                secret,
            },
            checksum: Box::pin(async move {
                checksum::query(&reads, &statement, &name)
                    .await
                    .map(|checksum| NativeChecksum {
                        method: SQL_CHECKSUM_METHOD,
                        checksum,
                    })
            }),
        }))
    }

    async fn ping(&self) -> Result<()> {
        self.shared.ping().await?;
        if self.reads.address != self.shared.endpoint.address {
            self.reads
                .query_text("SELECT 1 FORMAT TSVRaw")
                .await
                .map_err(|error| ConnectorError::Query {
                    operation: "check the read replica",
                    table: TableName::bare(self.reads.address.clone()),
                    failure: match error.failure() {
                        Failure::Permanent => Failure::Unavailable,
                        other => other,
                    },
                    source: Box::new(error),
                })?;
        }
        Ok(())
    }

    async fn probe_load(&self) -> Result<Option<f64>> {
        // Queries running on the server chunks are read from, ours (this probe) excluded.
        let text = self
            .reads
            .query_text("SELECT value FROM system.metrics WHERE metric = 'Query' FORMAT TSVRaw")
            .await
            .map_err(query_error(
                "probe load",
                &TableName::bare("system.metrics"),
            ))?;
        let running: f64 = text.trim().parse().unwrap_or(1.0);
        Ok(Some((running - 1.0).max(0.0)))
    }

    async fn check_readable(&self, table: &TableSchema, target_kind: &'static str) -> Result<()> {
        for column in &table.columns {
            let readable = ChType::parse(&column.declared_type).is_some_and(|parsed| {
                !matches!(
                    parsed.base().0,
                    ChType::Array(_) | ChType::Tuple(_) | ChType::Map(..) | ChType::Opaque(..)
                ) && !matches!(parsed.base().0, ChType::DateTime64(p) if *p > 6)
            });
            if !readable {
                return Err(ConnectorError::type_mapping(
                    &table.name,
                    &column.name,
                    &column.declared_type,
                    target_kind,
                    "ferry carries it between ClickHouse servers only",
                ));
            }
        }
        Ok(())
    }

    async fn probe_load_sql(&self, sql_text: &str) -> Result<Option<f64>> {
        let text = self
            .reads
            .stream(
                &format!("{sql_text} FORMAT TSVRaw"),
                &[
                    ("readonly", "2".to_string()),
                    ("max_execution_time", "10".to_string()),
                ],
            )
            .await
            .map_err(query_error("probe load", &TableName::bare("load probe")))?;
        let bytes: Vec<bytes::Bytes> = text
            .filter_map(|piece| async { piece.ok() })
            .collect()
            .await;
        let text: String = bytes
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        Ok(text
            .split_whitespace()
            .next()
            .and_then(|value| value.parse().ok()))
    }
}

/// The load probe's server, for `Arc<dyn Source>` users.
pub async fn open_source(
    location: &Location,
    options: Option<&ClickhouseOptions>,
) -> Result<Arc<dyn Source>> {
    Ok(Arc::new(ClickhouseSource::open(location, options).await?))
}
