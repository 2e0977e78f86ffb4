//! MySQL and MariaDB: source and sink.
//!
//! An endpoint is a connection URL in an environment variable (`url_env`), whose
//! database is where tables are listed (source) or created (target); see [`config`] for
//! ferry's own URL parameters. Every connection of a pool is set up the same way: UTF-8
//! (`utf8mb4`), UTC (`time_zone = '+00:00'`, so `TIMESTAMP` values are read and written
//! as UTC), a strict `sql_mode` that refuses zero dates and keeps explicit zeros in
//! AUTO_INCREMENT columns, generous network timeouts (a chunk's reader waits for its
//! writer), foreign key checks off (tables arrive in any order), and a connection
//! attribute `program_name=ferry`. Source sessions are read-only.
//!
//! Every statement starts with [`sql::STATEMENT_TAG`], so [`Source::probe_load`] can
//! subtract ferry's own running statements from `Threads_running`.
//!
//! Partitions: a table is described with its partitions from
//! `information_schema.PARTITIONS` (subpartitions, when present, are the leaves). A chunk
//! restricted to one ([`TableSchema::partition`]) names the table as `` `db`.`t` PARTITION
//! (`p`) `` in every data statement (`SELECT`, `DELETE`, `LOAD DATA ... INTO TABLE`,
//! `INSERT`), on both sides; a MySQL target gets the same partitioning through the
//! source's DDL.

pub mod config;
mod describe;
mod encode;
mod infile;
mod read;
mod split;
mod sql;
mod sync;
mod tls;
mod values;
mod write;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use ferry_model::checksum::RangeChecksum;
use ferry_model::key::{ChunkRange, KeyBound, KeySample, KeyStats, SplitKey};
use ferry_model::schema::{TableName, TableSchema};
use ferry_model::spec::Location;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Value};

pub use config::{MysqlConfig, WriteMethod, ZeroDates};
pub use read::{MAX_BATCH_BYTES, MAX_BATCH_ROWS};
pub use sql::{quote_ident, quote_table};

use crate::error::{ConnectorError, Failure, Result};
use crate::traits::{
    BatchStream, ChunkWrite, PrepareOptions, PrepareOutcome, Sink, Source, WatermarkStats,
    WriteSummary,
};

/// The connector kind in specs.
pub const KIND: &str = "mysql";
/// The table in the target that records the last committed attempt of each chunk.
pub const FENCE_TABLE: &str = "_ferry_fence";
/// The `sql_mode` of every ferry session.
pub const SESSION_SQL_MODE: &str = "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,\
     ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO";
/// Connections per endpoint at most.
const MAX_CONNECTIONS: usize = 64;
/// How long a session waits on a silent peer (seconds): a reader blocked behind a slow
/// writer, or a load waiting for the next batch.
const NET_TIMEOUT_SECS: u32 = 3600;
/// How long stopping an abandoned read may wait for a connection.
const KILL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// A connection that read a row bigger than this is closed rather than pooled: the
/// driver's read buffer grows to hold a whole row (up to twice its size) and never
/// shrinks, so a pooled connection would keep that memory, outside the process's
/// memory budget, for as long as it lives.
const BIG_ROW_BYTES: usize = 1 << 20;

/// Gives a read's connection back to the pool, or closes it when the read carried a row
/// bigger than [`BIG_ROW_BYTES`] (see there).
async fn release_read_conn(conn: Conn, largest_row: usize) {
    if largest_row > BIG_ROW_BYTES
        && let Err(error) = conn.disconnect().await
    {
        tracing::debug!(%error, "closing a connection that read big rows failed");
    }
}

/// Classifies a driver error: the server away or read-only (a lost or refused
/// connection, a shutdown, too many connections, a read-only standby), trouble in this
/// chunk (deadlock, lock wait timeout, an interrupted statement), or permanent.
pub fn classify(error: &mysql_async::Error) -> Failure {
    match error {
        mysql_async::Error::Io(_) => Failure::Unavailable,
        mysql_async::Error::Driver(driver) => match driver {
            mysql_async::DriverError::ConnectionClosed
            | mysql_async::DriverError::PoolDisconnected => Failure::Unavailable,
            mysql_async::DriverError::PacketOutOfOrder => Failure::Transient,
            _ => Failure::Permanent,
        },
        mysql_async::Error::Server(server) => classify_code(server.code),
        mysql_async::Error::Other(_) | mysql_async::Error::Url(_) => Failure::Permanent,
    }
}

/// Returns whether a driver error may go away on retry (unavailable or transient).
pub fn is_transient(error: &mysql_async::Error) -> bool {
    classify(error) != Failure::Permanent
}

/// The server error codes that are not permanent, by what they mean.
pub fn classify_code(code: u16) -> Failure {
    match code {
        1040 // too many connections
        | 1053 // server shutdown in progress
        | 1077 // normal shutdown
        | 1078 // got signal
        | 1079 // shutdown complete
        | 1152 // aborted connection
        | 1158 // error reading communication packets
        | 1159 // timeout reading communication packets
        | 1160 // error writing communication packets
        | 1161 // timeout writing communication packets
        | 1203 // max_user_connections
        | 1290 // --read-only (or another option) prevents this statement: a standby
        | 1836 // running in read-only mode
        | 2002 // cannot connect through the socket
        | 2003 // cannot connect to the server
        | 2006 // server has gone away
        | 2013 // lost connection during query
        | 4031 // MySQL: disconnected for inactivity
        => Failure::Unavailable,
        1205 // lock wait timeout
        | 1213 // deadlock
        | 1317 // query interrupted
        | 1614 // transaction branch rolled back: deadlock
        | 1927 // MariaDB: connection was killed (a newer attempt ending this one)
        | 1969 // MariaDB: max_statement_time exceeded
        | 3024 // MySQL: max_execution_time exceeded
        | 3572 // MySQL: NOWAIT lock not granted
        => Failure::Transient,
        _ => Failure::Permanent,
    }
}

/// Maps a driver error on `table` to a classified connector error.
fn query_error(
    operation: &'static str,
    table: &TableName,
) -> impl Fn(mysql_async::Error) -> ConnectorError + use<> {
    let table = table.clone();
    move |source| ConnectorError::Query {
        operation,
        table: table.clone(),
        failure: classify(&source),
        source: Box::new(source),
    }
}

/// What both sides share: the pool and what the server told us when opening.
pub(crate) struct Shared {
    pool: Pool,
    config: MysqlConfig,
    role: &'static str,
    is_mariadb: bool,
    /// A binary collation without trailing-space padding, for text key columns.
    nopad_collation: Option<String>,
    /// Whether writes may run at READ COMMITTED (not under statement-based binlogs).
    read_committed: bool,
    max_allowed_packet: usize,
    fence_ready: AtomicBool,
    local_infile_refused: AtomicBool,
    /// Target table name → the source table prepared into it, so two source tables of
    /// the same name (from different schemas) cannot both write into one target table.
    prepared: std::sync::Mutex<std::collections::HashMap<String, TableName>>,
}

impl Shared {
    async fn open(role: &'static str, config: MysqlConfig) -> Result<Self> {
        let open_error = |reason: String| ConnectorError::Open {
            role,
            location: config.label.clone(),
            reason,
        };
        let opts = Opts::from_url(config.driver_url())
            .map_err(|error| open_error(format!("invalid connection URL: {error}")))?;
        let ssl = tls::ssl_opts(&config.tls).map_err(|reason| ConnectorError::OpenRefused {
            role,
            location: config.label.clone(),
            reason,
        })?;
        let session = format!(
            "SET NAMES utf8mb4, time_zone = '+00:00', sql_mode = '{SESSION_SQL_MODE}', \
             net_read_timeout = {NET_TIMEOUT_SECS}, net_write_timeout = {NET_TIMEOUT_SECS}, \
             foreign_key_checks = 0"
        );
        let mut setup = vec![session];
        if role == "source" {
            setup.push("SET SESSION TRANSACTION READ ONLY".to_string());
        }
        let constraints = PoolConstraints::new(0, MAX_CONNECTIONS)
            .ok_or_else(|| ConnectorError::Task("invalid pool constraints".to_string()))?;
        let opts = OptsBuilder::from_opts(opts)
            .ssl_opts(ssl.clone())
            .setup(setup)
            .connect_attribute("program_name", "ferry")
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(constraints)
                    .with_inactive_connection_ttl(std::time::Duration::from_secs(30)),
            );
        let mut pool = Pool::new(opts.clone());
        let mut first = pool.get_conn().await;
        let retry = match &first {
            // PREFERRED: the server offers no TLS, so plaintext, as the mysql client does
            Err(error)
                if config.tls.mode == config::SslMode::Preferred
                    && tls::is_no_tls_from_server(error) =>
            {
                Some(None)
            }
            Err(error) => tls::verify_ca_retry(&config.tls, ssl.as_ref(), error).map(Some),
            Ok(_) => None,
        };
        let plaintext = config.tls.mode == config::SslMode::Disabled || retry == Some(None);
        if let Some(ssl) = retry {
            let old = std::mem::replace(&mut pool, Pool::new(opts.clone().ssl_opts(ssl)));
            let _ = old.disconnect().await;
            first = pool.get_conn().await;
        }
        let mut conn = match first {
            Ok(conn) => conn,
            Err(error) => {
                let plaintext_refused = config.tls.mode == config::SslMode::Disabled
                    && matches!(&error, mysql_async::Error::Server(server) if server.code == 1045);
                let needs_tls = plaintext_refused && tls::login_needs_tls(&opts).await;
                return Err(tls::open_error(role, &config, &error, plaintext, needs_tls));
            }
        };
        let probe: Option<(Value, Value, Value, Value)> = conn
            .query_first("SELECT VERSION(), @@max_allowed_packet, @@log_bin, @@binlog_format")
            .await
            .map_err(|error| open_error(error.to_string()))?;
        let (version, max_packet, log_bin, binlog_format) = probe
            .map(|(version, packet, log_bin, format)| {
                (
                    describe::text_of(version).unwrap_or_default(),
                    describe::text_of(packet)
                        .and_then(|text| text.parse::<usize>().ok())
                        .unwrap_or(4 << 20),
                    describe::text_of(log_bin).unwrap_or_default(),
                    describe::text_of(format).unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        let nopad: Option<Value> = conn
            .query_first(
                "SELECT COLLATION_NAME FROM information_schema.COLLATIONS \
                 WHERE COLLATION_NAME IN ('utf8mb4_0900_bin', 'utf8mb4_nopad_bin') LIMIT 1",
            )
            .await
            .map_err(|error| open_error(error.to_string()))?;
        let read_committed = log_bin == "0" || !binlog_format.eq_ignore_ascii_case("STATEMENT");
        drop(conn);
        Ok(Self {
            pool,
            is_mariadb: version.to_ascii_lowercase().contains("mariadb"),
            nopad_collation: nopad.and_then(describe::text_of),
            read_committed,
            max_allowed_packet: max_packet,
            fence_ready: AtomicBool::new(false),
            local_infile_refused: AtomicBool::new(false),
            prepared: std::sync::Mutex::new(std::collections::HashMap::new()),
            config,
            role,
        })
    }

    /// A pooled connection, set up as the module documentation says.
    async fn conn(&self, role: &'static str, table: &TableName) -> Result<Conn> {
        self.pool.get_conn().await.map_err(|error| {
            if is_transient(&error) {
                ConnectorError::Open {
                    role,
                    location: self.config.label.clone(),
                    reason: error.to_string(),
                }
            } else {
                query_error("connect", table)(error)
            }
        })
    }

    /// The database a source table lives in.
    fn database_of<'a>(&'a self, table: &'a TableSchema) -> &'a str {
        match self.role {
            "source" => table
                .name
                .schema
                .as_deref()
                .unwrap_or(&self.config.database),
            _ => &self.config.database,
        }
    }

    /// Streams a range into `batch_tx`; stops (and kills the query) when the receiver
    /// is dropped.
    async fn stream_range(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
        batch_tx: &tokio::sync::mpsc::Sender<Result<arrow_array::RecordBatch>>,
    ) -> Result<()> {
        let (sql, params) = read::select_range(self.database_of(table), table, key, range)?;
        self.stream_select(table, key, sql, params, batch_tx).await
    }

    /// Streams the rows a `SELECT` of `table`'s columns returns, as batches.
    async fn stream_select(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        sql: String,
        params: Vec<mysql_async::Value>,
        batch_tx: &tokio::sync::mpsc::Sender<Result<arrow_array::RecordBatch>>,
    ) -> Result<()> {
        let on_error = query_error("read chunk", &table.name);
        let mut builder = read::BatchBuilder::new(table, key, self.config.zero_dates)?;
        let mut conn = self.conn(self.role, &table.name).await?;
        let connection_id = conn.id();
        // `Ok(true)`: every row was read; `Ok(false)`: the stream was dropped.
        let outcome: Result<bool> = async {
            let mut result = conn.exec_iter(sql, params).await.map_err(&on_error)?;
            while let Some(row) = result.next().await.map_err(&on_error)? {
                if let Some(batch) = builder.push_row(row.unwrap())?
                    && batch_tx.send(Ok(batch)).await.is_err()
                {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        .await;
        if !matches!(outcome, Ok(true)) {
            // The stream was dropped or a value failed: stop the server sending the
            // rest, so the connection is released at once rather than after draining
            // the result.
            self.kill_query(connection_id).await;
        }
        release_read_conn(conn, builder.largest_row()).await;
        if !outcome? {
            return Ok(());
        }
        if let Some(batch) = builder.finish()? {
            // A closed channel here means the reader no longer wants the rows.
            let _ = batch_tx.send(Ok(batch)).await;
        }
        Ok(())
    }

    async fn kill_query(&self, connection_id: u32) {
        // Bounded: with every pooled connection taken, the reader's own connection is
        // released by draining instead.
        let conn = tokio::time::timeout(KILL_TIMEOUT, self.pool.get_conn()).await;
        match conn {
            Err(_) => tracing::debug!("no connection to stop an abandoned read with"),
            Ok(Ok(mut conn)) => {
                if let Err(error) = conn.query_drop(format!("KILL QUERY {connection_id}")).await {
                    tracing::debug!(%error, "failed to stop an abandoned read");
                }
            }
            Ok(Err(error)) => tracing::debug!(%error, "failed to stop an abandoned read"),
        }
    }

    /// Checksums a range read back as the carriers of `table`.
    async fn checksum_range(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<RangeChecksum> {
        let on_error = query_error("checksum chunk", &table.name);
        let (sql, params) = read::select_range(self.database_of(table), table, key, range)?;
        let mut builder = read::BatchBuilder::new(table, key, self.config.zero_dates)?;
        let mut checksum = RangeChecksum::default();
        let add = |checksum: &mut RangeChecksum, batch: arrow_array::RecordBatch| {
            checksum.add_batch(&batch).map_err(|error| {
                ConnectorError::Task(format!("failed to checksum table {}: {error}", table.name))
            })
        };
        let mut conn = self.conn(self.role, &table.name).await?;
        {
            let mut result = conn.exec_iter(sql, params).await.map_err(&on_error)?;
            while let Some(row) = result.next().await.map_err(&on_error)? {
                if let Some(batch) = builder.push_row(row.unwrap())? {
                    add(&mut checksum, batch)?;
                }
            }
        }
        release_read_conn(conn, builder.largest_row()).await;
        if let Some(batch) = builder.finish()? {
            add(&mut checksum, batch)?;
        }
        Ok(checksum)
    }
}

/// Reads the URL out of an endpoint location.
fn config_of(role: &'static str, location: &Location) -> Result<MysqlConfig> {
    match location {
        Location::Env { value, .. } => MysqlConfig::parse(role, value.expose()),
        Location::Path(_) => Err(ConnectorError::Open {
            role,
            location: "(a path)".to_string(),
            reason: format!(
                "a mysql endpoint takes a connection URL, not a path: set {role}.url_env to the \
                 name of an environment variable holding mysql://user:password@host:port/database"
            ),
        }),
    }
}

/// A MySQL/MariaDB database read as a source. Its sessions are read-only.
pub struct MysqlSource {
    shared: Arc<Shared>,
}

impl MysqlSource {
    /// Opens a source from a spec location (`url_env`).
    pub async fn open(location: &Location) -> Result<Self> {
        Self::open_config(config_of("source", location)?).await
    }

    /// Opens a source, with the spec's `source.zero_dates` (which wins over the URL's
    /// `ferry_zero_dates` parameter) when given.
    pub async fn open_with_zero_dates(
        location: &Location,
        zero_dates: Option<ZeroDates>,
    ) -> Result<Self> {
        let mut config = config_of("source", location)?;
        if let Some(mode) = zero_dates {
            config.zero_dates = mode;
        }
        Self::open_config(config).await
    }

    /// Opens a source from a parsed endpoint.
    pub async fn open_config(config: MysqlConfig) -> Result<Self> {
        Ok(Self {
            shared: Arc::new(Shared::open("source", config).await?),
        })
    }
}

#[async_trait]
impl Source for MysqlSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn list_tables(&self) -> Result<Vec<TableName>> {
        let database = &self.shared.config.database;
        let mut conn = self
            .shared
            .conn("source", &TableName::bare(database.as_str()))
            .await?;
        describe::list_tables(&mut conn, database).await
    }

    async fn describe_table(&self, table: &TableName) -> Result<TableSchema> {
        let database = table
            .schema
            .as_deref()
            .unwrap_or(&self.shared.config.database);
        let mut conn = self.shared.conn("source", table).await?;
        describe::describe(&mut conn, database, &table.name, self.shared.is_mariadb)
            .await?
            .ok_or_else(|| ConnectorError::TableNotFound {
                role: "source",
                table: table.clone(),
            })
    }

    async fn key_stats(&self, table: &TableSchema, key: &SplitKey) -> Result<KeyStats> {
        let mut conn = self.shared.conn("source", &table.name).await?;
        split::key_stats(&mut conn, self.shared.database_of(table), table, key).await
    }

    async fn key_boundaries(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        every_rows: u64,
    ) -> Result<Vec<KeyBound>> {
        let mut conn = self.shared.conn("source", &table.name).await?;
        split::key_boundaries(
            &mut conn,
            self.shared.database_of(table),
            table,
            key,
            every_rows,
        )
        .await
    }

    async fn read_changed(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
        watermark: &str,
        since: Option<i64>,
    ) -> Result<BatchStream> {
        let (sql, params) = sync::select_changed(
            self.shared.database_of(table),
            table,
            key,
            range,
            watermark,
            since,
        )?;
        let shared = self.shared.clone();
        let table = table.clone();
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            if let Err(error) = shared
                .stream_select(&table, &SplitKey::None, sql, params, &batch_tx)
                .await
            {
                let _ = batch_tx.send(Err(error)).await;
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            batch_rx,
        )))
    }

    async fn watermark_stats(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
        watermark: &str,
    ) -> Result<WatermarkStats> {
        sync::watermark_stats(&self.shared, table, key, range, watermark).await
    }

    async fn key_sample(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        points: u64,
        estimated_rows: u64,
    ) -> Result<Option<KeySample>> {
        let mut conn = self.shared.conn("source", &table.name).await?;
        split::key_sample(
            &mut conn,
            self.shared.database_of(table),
            table,
            key,
            points,
            estimated_rows,
        )
        .await
    }

    async fn read_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<BatchStream> {
        // Fail early, before any row moves, on a range this table cannot take.
        read::select_range(self.shared.database_of(table), table, key, range)?;
        let shared = self.shared.clone();
        let table = table.clone();
        let key = key.clone();
        let range = range.clone();
        // Two batches in flight: the reader stays one ahead of the writer, no more.
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            if let Err(error) = shared.stream_range(&table, &key, &range, &batch_tx).await {
                let _ = batch_tx.send(Err(error)).await;
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            batch_rx,
        )))
    }

    async fn probe_load(&self) -> Result<Option<f64>> {
        let table = TableName::bare("information_schema.PROCESSLIST");
        let on_error = query_error("probe load", &table);
        let mut conn = self.shared.conn("source", &table).await?;
        let status: Option<(Value, Value)> = conn
            .query_first(format!(
                "{}SHOW GLOBAL STATUS LIKE 'Threads_running'",
                sql::STATEMENT_TAG
            ))
            .await
            .map_err(&on_error)?;
        let running = status
            .and_then(|(_, value)| describe::text_of(value))
            .and_then(|text| text.parse::<f64>().ok())
            .unwrap_or(0.0);
        // ferry's own running statements (this probe's included, which stands for the
        // SHOW above) are not load on the server that ferry should back off from.
        let own: Option<Value> = conn
            .query_first(format!(
                "{tag}SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE COMMAND NOT IN ('Sleep', 'Daemon') AND INFO LIKE '{tag_pattern}%'",
                tag = sql::STATEMENT_TAG,
                tag_pattern = sql::STATEMENT_TAG.trim_end()
            ))
            .await
            .map_err(&on_error)?;
        let own = own
            .and_then(describe::text_of)
            .and_then(|text| text.parse::<f64>().ok())
            .unwrap_or(0.0);
        Ok(Some((running - own).max(0.0)))
    }

    async fn probe_load_sql(&self, probe_sql: &str) -> Result<Option<f64>> {
        let table = TableName::bare("load probe");
        let on_error = query_error("run the load probe", &table);
        let mut conn = self.shared.conn("source", &table).await?;
        // Read-only, and bounded: MariaDB takes max_statement_time (seconds), MySQL
        // max_execution_time (milliseconds); the pacer also times the probe out.
        let limit = if self.shared.is_mariadb {
            "SET STATEMENT max_statement_time = 5 FOR "
        } else {
            "/*+ MAX_EXECUTION_TIME(5000) */ "
        };
        conn.query_drop("START TRANSACTION READ ONLY")
            .await
            .map_err(&on_error)?;
        let statement = if self.shared.is_mariadb {
            format!("{limit}{probe_sql}")
        } else {
            probe_sql.replacen("SELECT", &format!("SELECT {limit}"), 1)
        };
        let value: Option<Value> = conn.query_first(statement).await.map_err(&on_error)?;
        let _ = conn.query_drop("ROLLBACK").await;
        match value
            .and_then(describe::text_of)
            .map(|text| text.trim().parse::<f64>())
        {
            Some(Ok(number)) if number.is_finite() => Ok(Some(number)),
            other => Err(ConnectorError::Task(format!(
                "the load probe must return one number in its first column, got {other:?}"
            ))),
        }
    }
}

/// A MySQL/MariaDB database written as a target.
pub struct MysqlSink {
    shared: Arc<Shared>,
}

impl MysqlSink {
    /// Opens a target from a spec location (`url_env`). The database must exist.
    pub async fn open(location: &Location) -> Result<Self> {
        Self::open_config(config_of("target", location)?).await
    }

    /// Opens a target from a parsed endpoint.
    pub async fn open_config(config: MysqlConfig) -> Result<Self> {
        Ok(Self {
            shared: Arc::new(Shared::open("target", config).await?),
        })
    }
}

#[async_trait]
impl Sink for MysqlSink {
    async fn read_back(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<BatchStream> {
        read::select_range(self.shared.database_of(table), table, key, range)?;
        let shared = self.shared.clone();
        let table = table.clone();
        let key = key.clone();
        let range = range.clone();
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            if let Err(error) = shared.stream_range(&table, &key, &range, &batch_tx).await {
                let _ = batch_tx.send(Err(error)).await;
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            batch_rx,
        )))
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    async fn ping(&self) -> Result<()> {
        let database = TableName::bare(self.shared.config.database.as_str());
        let mut conn = self.shared.conn("target", &database).await?;
        let read_only: Option<i64> = conn
            .query_first("SELECT @@global.read_only")
            .await
            .map_err(query_error("check the target database", &database))?;
        if read_only.unwrap_or(0) != 0 {
            return Err(ConnectorError::read_only_target(
                database,
                "read_only is on: a replica?",
            ));
        }
        Ok(())
    }

    fn can_carry_rowid(&self) -> bool {
        false
    }

    fn target_table(&self, table: &TableSchema) -> TableName {
        TableName {
            schema: Some(self.shared.config.database.clone()),
            name: table.name.name.clone(),
        }
    }

    async fn prepare_table(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        options: &PrepareOptions,
    ) -> Result<PrepareOutcome> {
        write::prepare_table(&self.shared, table, key, options).await
    }

    async fn upsert_newer(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        watermark: &str,
        batches: BatchStream,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<crate::traits::UpsertSummary> {
        sync::upsert_newer(&self.shared, table, key, watermark, batches, cancel).await
    }

    async fn delete_keys(&self, table: &TableSchema, key: &SplitKey, keys: &[i64]) -> Result<u64> {
        sync::delete_keys(&self.shared, table, key, keys).await
    }

    async fn write_chunk(
        &self,
        chunk: ChunkWrite<'_>,
        batches: BatchStream,
    ) -> Result<WriteSummary> {
        write::write_chunk(&self.shared, chunk, batches).await
    }

    async fn checksum_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<RangeChecksum> {
        self.shared.checksum_range(table, key, range).await
    }

    async fn count_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<u64> {
        let mut conn = self.shared.conn("target", &table.name).await?;
        split::count_range(&mut conn, self.shared.database_of(table), table, key, range).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_are_classified_by_what_a_retry_can_do() {
        for (code, failure) in [
            (1040, Failure::Unavailable),
            (1053, Failure::Unavailable),
            (1290, Failure::Unavailable),
            (1836, Failure::Unavailable),
            (2003, Failure::Unavailable),
            (2013, Failure::Unavailable),
            (1205, Failure::Transient),
            (1213, Failure::Transient),
            (1927, Failure::Transient),
            (1062, Failure::Permanent),
            (1406, Failure::Permanent),
            (1146, Failure::Permanent),
            (1045, Failure::Permanent),
        ] {
            assert_eq!(classify_code(code), failure, "code {code}");
        }
    }
}
