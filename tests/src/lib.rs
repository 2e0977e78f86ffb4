//! Helpers for ferry's end-to-end tests: a fault-injecting sink wrapper around a real
//! sink, an independent comparison through the `sqlite3` command-line shell, and a
//! one-call local run.

pub mod browser;
pub mod cluster;
pub mod helm;
pub mod pki;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ferry_connectors::{
    BatchStream, ChunkWrite, ConnectorError, Fence, NativeChecksum, NativeStream, PrepareOptions,
    PrepareOutcome, PullSource, Sink, WriteSummary,
};
use ferry_coordination::ChunkRecord;
use ferry_coordinator::scheduler::RunOutcome;
use ferry_ctl::local::{LocalJob, LocalRunOptions, PreparedJob, load_spec};
use ferry_model::checksum::RangeChecksum;
use ferry_model::ids::ChunkId;
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::TableSchema;
pub use ferry_model::testing::{wait_until, wait_until_async};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// A fault to inject into writes.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The first `times` write attempts of `chunk` see their row stream fail after the
    /// first batch (so rows are already inserted in the open transaction).
    FailStream {
        /// The chunk.
        chunk: ChunkId,
        /// How many attempts fail.
        times: u32,
    },
    /// After the first successful write of `chunk`, run `sql` on the target database
    /// (outside ferry), so verification sees a different target.
    CorruptAfterWrite {
        /// The chunk.
        chunk: ChunkId,
        /// The target database file.
        target: PathBuf,
        /// The corrupting statement.
        sql: String,
    },
    /// After `writes` successful writes in all, cancel `token` (a stop right after a
    /// commit, before the chunk is recorded as verified).
    CancelAfterWrites {
        /// Writes before the stop.
        writes: u64,
        /// The run's token.
        token: CancellationToken,
    },
    /// Offer no native bulk format, so rows travel as Arrow batches even between two
    /// databases of one engine. (A sink with any fault but this next one offers none:
    /// faults act on batches.)
    ArrowOnly,
    /// Before the first build of a deferred primary key, run `sql` on the PostgreSQL
    /// target at `url` with `psql` (outside ferry): a change the copied chunks'
    /// verification must find. The native format stays offered.
    BeforeKeyBuild {
        /// The target database's URL.
        url: String,
        /// The changing statement.
        sql: String,
    },
}

/// Wraps a real sink, counting writes per chunk and injecting faults.
pub struct FaultySink {
    inner: Arc<dyn Sink>,
    faults: Vec<Fault>,
    attempts_by_chunk: Mutex<HashMap<ChunkId, u32>>,
    committed_by_chunk: Mutex<HashMap<ChunkId, u32>>,
    committed_writes: AtomicU64,
    native_writes: AtomicU64,
    pulled_writes: AtomicU64,
    range_checksums: AtomicU64,
    one_pass_checksums: AtomicU64,
    key_changed: AtomicBool,
}

impl FaultySink {
    /// Wraps `inner` with `faults`.
    pub fn new(inner: Arc<dyn Sink>, faults: Vec<Fault>) -> Self {
        Self {
            inner,
            faults,
            attempts_by_chunk: Mutex::new(HashMap::new()),
            committed_by_chunk: Mutex::new(HashMap::new()),
            committed_writes: AtomicU64::new(0),
            native_writes: AtomicU64::new(0),
            pulled_writes: AtomicU64::new(0),
            range_checksums: AtomicU64::new(0),
            one_pass_checksums: AtomicU64::new(0),
            key_changed: AtomicBool::new(false),
        }
    }

    /// Whether the faults leave rows as they are in flight (the native format offered).
    fn batches_untouched(&self) -> bool {
        self.faults
            .iter()
            .all(|fault| matches!(fault, Fault::BeforeKeyBuild { .. }))
    }

    /// Ranges of the target read back one by one (native or canonical checksums), in
    /// all.
    pub fn range_checksums(&self) -> u64 {
        self.range_checksums.load(Ordering::SeqCst)
    }

    /// Tables read back in one pass for their chunks' checksums (native or canonical),
    /// in all.
    pub fn one_pass_checksums(&self) -> u64 {
        self.one_pass_checksums.load(Ordering::SeqCst)
    }

    /// Counts a committed write of `chunk` that took the path `path` counts.
    fn committed(&self, chunk: ChunkId, path: &AtomicU64) {
        *self
            .committed_by_chunk
            .lock()
            .expect("lock")
            .entry(chunk)
            .or_insert(0) += 1;
        self.committed_writes.fetch_add(1, Ordering::SeqCst);
        path.fetch_add(1, Ordering::SeqCst);
    }

    /// Committed writes per chunk.
    pub fn committed_by_chunk(&self) -> HashMap<ChunkId, u32> {
        self.committed_by_chunk.lock().expect("lock").clone()
    }

    /// Committed writes in all.
    pub fn committed_writes(&self) -> u64 {
        self.committed_writes.load(Ordering::SeqCst)
    }

    /// Committed writes the target's servers pulled from the source's themselves.
    pub fn pulled_writes(&self) -> u64 {
        self.pulled_writes.load(Ordering::SeqCst)
    }

    /// Committed writes that took the native (same-engine passthrough) path.
    pub fn native_writes(&self) -> u64 {
        self.native_writes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Sink for FaultySink {
    async fn ping(&self) -> ferry_connectors::error::Result<()> {
        self.inner.ping().await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn can_carry_rowid(&self) -> bool {
        self.inner.can_carry_rowid()
    }

    async fn prepare_table(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        options: &PrepareOptions,
    ) -> Result<PrepareOutcome, ConnectorError> {
        self.inner.prepare_table(table, key, options).await
    }

    async fn write_chunk(
        &self,
        chunk: ChunkWrite<'_>,
        batches: BatchStream,
    ) -> Result<WriteSummary, ConnectorError> {
        let chunk_id = chunk.fence.chunk;
        let attempt_number = {
            let mut attempts = self.attempts_by_chunk.lock().expect("lock");
            let entry = attempts.entry(chunk_id).or_insert(0);
            *entry += 1;
            *entry
        };
        let fail_stream = self.faults.iter().any(|fault| {
            matches!(fault, Fault::FailStream { chunk, times } if *chunk == chunk_id && attempt_number <= *times)
        });
        let batches: BatchStream = if fail_stream {
            Box::pin(batches.take(1).chain(futures::stream::once(async {
                Err(ConnectorError::Task(
                    "injected failure after the first batch".into(),
                ))
            })))
        } else {
            batches
        };
        let summary = self.inner.write_chunk(chunk, batches).await?;
        let committed_for_chunk = {
            let mut committed = self.committed_by_chunk.lock().expect("lock");
            let entry = committed.entry(chunk_id).or_insert(0);
            *entry += 1;
            *entry
        };
        let total = self.committed_writes.fetch_add(1, Ordering::SeqCst) + 1;
        for fault in &self.faults {
            match fault {
                Fault::CorruptAfterWrite { chunk, target, sql }
                    if *chunk == chunk_id && committed_for_chunk == 1 =>
                {
                    let connection =
                        rusqlite::Connection::open(target).expect("open target to corrupt it");
                    let changed = connection.execute(sql, []).expect("corrupt the target");
                    assert!(
                        changed > 0,
                        "the corrupting statement changed nothing: {sql}"
                    );
                }
                Fault::CancelAfterWrites { writes, token } if total == *writes => token.cancel(),
                _ => {}
            }
        }
        Ok(summary)
    }

    async fn checksum_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<RangeChecksum, ConnectorError> {
        self.range_checksums.fetch_add(1, Ordering::SeqCst);
        self.inner.checksum_chunk(table, key, range).await
    }

    async fn count_chunk(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<u64, ConnectorError> {
        self.inner.count_chunk(table, key, range).await
    }

    async fn native_format(
        &self,
        table: &TableSchema,
    ) -> Result<Option<&'static str>, ConnectorError> {
        if !self.batches_untouched() {
            return Ok(None);
        }
        self.inner.native_format(table).await
    }

    async fn write_native(
        &self,
        chunk: ChunkWrite<'_>,
        stream: NativeStream,
    ) -> Result<WriteSummary, ConnectorError> {
        let chunk_id = chunk.fence.chunk;
        let summary = self.inner.write_native(chunk, stream).await?;
        self.committed(chunk_id, &self.native_writes);
        Ok(summary)
    }

    async fn native_checksum(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        range: &ChunkRange,
    ) -> Result<Option<NativeChecksum>, ConnectorError> {
        self.range_checksums.fetch_add(1, Ordering::SeqCst);
        self.inner.native_checksum(table, key, range).await
    }

    async fn native_checksums(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        ranges: &[ChunkRange],
        streams: usize,
    ) -> Result<Option<Vec<NativeChecksum>>, ConnectorError> {
        self.one_pass_checksums.fetch_add(1, Ordering::SeqCst);
        self.inner
            .native_checksums(table, key, ranges, streams)
            .await
    }

    async fn checksum_chunks(
        &self,
        table: &TableSchema,
        key: &SplitKey,
        ranges: &[ChunkRange],
        streams: usize,
    ) -> Result<Option<Vec<RangeChecksum>>, ConnectorError> {
        self.one_pass_checksums.fetch_add(1, Ordering::SeqCst);
        self.inner
            .checksum_chunks(table, key, ranges, streams)
            .await
    }

    async fn write_pulled(
        &self,
        chunk: ChunkWrite<'_>,
        pull: &PullSource,
    ) -> Result<Option<WriteSummary>, ConnectorError> {
        if !self.faults.is_empty() {
            return Ok(None);
        }
        let chunk_id = chunk.fence.chunk;
        let summary = self.inner.write_pulled(chunk, pull).await?;
        if summary.is_some() {
            self.committed(chunk_id, &self.pulled_writes);
        }
        Ok(summary)
    }

    fn defers_primary_key(&self) -> bool {
        self.inner.defers_primary_key()
    }

    async fn build_primary_key(&self, table: &TableSchema) -> Result<(), ConnectorError> {
        for fault in &self.faults {
            if let Fault::BeforeKeyBuild { url, sql } = fault
                && !self.key_changed.swap(true, Ordering::SeqCst)
            {
                psql(url, sql);
            }
        }
        self.inner.build_primary_key(table).await
    }
}

/// Writes one chunk through `sink` ([`Sink::write_chunk`] with the chunk's parts), never
/// cancelled.
pub async fn write_chunk(
    sink: &dyn Sink,
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
    fence: &Fence,
    batches: BatchStream,
) -> Result<WriteSummary, ConnectorError> {
    let cancel = CancellationToken::new();
    let chunk = ChunkWrite {
        table,
        key,
        range,
        fence,
        cancel: &cancel,
        key_deferred: false,
    };
    sink.write_chunk(chunk, batches).await
}

/// Writes `spec_yaml` to `dir/job.yaml` and returns its path.
pub fn write_spec(dir: &Path, spec_yaml: &str) -> PathBuf {
    let path = dir.join("job.yaml");
    std::fs::write(&path, spec_yaml).expect("write spec");
    path
}

/// Runs a spec in-process with the sink wrapped by `faults`; returns the prepared job,
/// the outcome and the wrapper (for its counters).
pub async fn run_local(
    spec_path: &Path,
    state_path: &Path,
    workers: usize,
    faults: Vec<Fault>,
    cancel: CancellationToken,
) -> (PreparedJob, RunOutcome, Arc<FaultySink>) {
    run_local_with_env(
        spec_path,
        state_path,
        workers,
        faults,
        cancel,
        &HashMap::new(),
    )
    .await
}

/// Like [`run_local`], with `env` as the environment the spec's `url_env` names are
/// looked up in (tests never set the process environment).
pub async fn run_local_with_env(
    spec_path: &Path,
    state_path: &Path,
    workers: usize,
    faults: Vec<Fault>,
    cancel: CancellationToken,
    env: &HashMap<String, String>,
) -> (PreparedJob, RunOutcome, Arc<FaultySink>) {
    let spec = load_spec(spec_path, env).expect("valid spec");
    let mut job = LocalJob::open(spec, state_path).await.expect("open job");
    let faulty = Arc::new(FaultySink::new(job.sink.clone(), faults));
    job.sink = faulty.clone();
    let prepared = job.prepare().await.expect("prepare job");
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let drain = tokio::spawn(async move { while events_rx.recv().await.is_some() {} });
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        job.run(
            &prepared,
            &LocalRunOptions::workers(workers),
            events_tx,
            cancel,
        ),
    )
    .await
    .expect("run finished in time")
    .expect("run succeeds");
    drain.await.expect("drain events");
    (prepared, outcome, faulty)
}

/// Runs SQL through the `sqlite3` shell (independent of ferry and rusqlite) and returns
/// its output, trimmed.
pub fn sqlite3(database: &Path, sql: &str) -> String {
    let output = Command::new("sqlite3")
        .arg(database)
        .arg(sql)
        .output()
        .expect("the sqlite3 shell must be installed (make deps installs it)");
    assert!(
        output.status.success(),
        "sqlite3 failed on {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Compares one table between two SQLite files with the `sqlite3` shell: equal row
/// counts, and no row (as values, and as `quote()`d text, which tells storage classes
/// apart) in one that is not in the other. With `with_rowid`, rowids are compared too.
pub fn assert_same_table(source: &Path, target: &Path, table: &str, with_rowid: bool) {
    let quoted = format!("\"{}\"", table.replace('"', "\"\""));
    let columns = sqlite3(
        source,
        &format!(
            "SELECT group_concat(quote(name), ',') FROM pragma_table_info({})",
            sql_string(table)
        ),
    );
    assert!(
        !columns.is_empty(),
        "table {table} has no columns in the source"
    );
    let column_names: Vec<String> = sqlite3(
        source,
        &format!("SELECT name FROM pragma_table_info({})", sql_string(table)),
    )
    .lines()
    .map(|name| format!("\"{}\"", name.replace('"', "\"\"")))
    .collect();
    let mut quoted_list: Vec<String> = column_names
        .iter()
        .map(|name| format!("quote({name})"))
        .collect();
    let mut plain_list = column_names.clone();
    if with_rowid {
        quoted_list.insert(0, "rowid".to_string());
        plain_list.insert(0, "rowid".to_string());
    }
    let attach = format!("ATTACH {} AS t;", sql_string(&target.display().to_string()));
    let counts = sqlite3(
        source,
        &format!(
            "{attach} SELECT (SELECT count(*) FROM main.{quoted}) || ' ' || (SELECT count(*) FROM t.{quoted});"
        ),
    );
    let (source_count, target_count) = counts.split_once(' ').expect("two counts");
    assert_eq!(
        source_count, target_count,
        "row counts differ for table {table}"
    );
    for list in [quoted_list.join(", "), plain_list.join(", ")] {
        let differences = sqlite3(
            source,
            &format!(
                "{attach} SELECT (SELECT count(*) FROM (SELECT {list} FROM main.{quoted} EXCEPT SELECT {list} FROM t.{quoted})) \
                 || ' ' || (SELECT count(*) FROM (SELECT {list} FROM t.{quoted} EXCEPT SELECT {list} FROM main.{quoted}));"
            ),
        );
        assert_eq!(
            differences, "0 0",
            "rows differ for table {table} (source-only, target-only) comparing {list}"
        );
    }
}

/// Quotes a SQL string literal.
pub fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Chunks of the outcome, by id.
pub fn chunk(outcome: &RunOutcome, id: u32) -> &ChunkRecord {
    &outcome.chunks[id as usize]
}

/// A test service's URL from the environment (`scripts/services.sh env`); a test fails,
/// never skips, without it.
pub fn env_url(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the test services with \
             `scripts/services.sh up && eval \"$(scripts/services.sh env)\"`"
        )
    })
}

/// A loopback TCP port free at the time of the call (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A suffix unique to each call, for schema and database names (16 hex digits from the
/// process, the time, a counter and a random seed). The time alone is not enough: two
/// tests of one binary, started at the same moment, drew the same suffix and collided on
/// a database name.
pub use ferry_coordination::conformance::unique_suffix;

/// The URL of another database on the same server.
pub fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |at| at + 3);
    let (base, query) = match url.find('?') {
        Some(at) => (&url[..at], &url[at..]),
        None => (url, ""),
    };
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |at| scheme_end + at);
    format!("{}/{database}{query}", &base[..path_start])
}

/// Runs SQL through `psql` (independent of ferry and of its driver); returns the
/// unaligned (`|`-separated), tuples-only output, trimmed.
pub fn psql(url: &str, sql: &str) -> String {
    let mut command = Command::new("psql");
    command.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        url,
        "-f",
        "-",
    ]);
    run_shell(command, sql).trim().to_string()
}

/// Runs a database shell (`psql`, `mariadb`, `sqlite3`) with `input` on its standard
/// input and returns its standard output as is. Panics naming the shell, with its error
/// and the start of the input, when it cannot start or fails.
pub fn run_shell(mut command: Command, input: &str) -> String {
    use std::io::Write as _;
    use std::process::Stdio;
    let shell = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot start {shell} (scripts/services.sh installs it): {error}")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .unwrap_or_else(|error| panic!("cannot write to {shell}: {error}"));
    let output = child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("{shell} did not finish: {error}"));
    assert!(
        output.status.success(),
        "{shell} failed: {}\n--- input (first 2000 characters) ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        input.chars().take(2000).collect::<String>()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs SQL with the `mariadb` shell against the database of a `mysql://root@host:port/db` URL.
pub fn mariadb(url: &str, sql: &str) -> String {
    let rest = url.trim_start_matches("mysql://");
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, host_port) = authority.split_once('@').unwrap_or(("root", authority));
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "3306"));
    let mut command = Command::new("mariadb");
    command.args([
        "--no-defaults",
        "-N",
        "-B",
        "-h",
        host,
        "-P",
        port,
        "-u",
        user,
    ]);
    if !database.is_empty() {
        command.arg(database);
    }
    run_shell(command, sql).replace('\t', "|")
}

/// Opens a spec's source and sink (the test fails naming which could not be opened).
pub async fn open_connectors(
    spec: &ferry_model::spec::JobSpec,
) -> (Arc<dyn ferry_connectors::Source>, Arc<dyn Sink>) {
    let source = ferry_connectors::open_source(&spec.source)
        .await
        .expect("source");
    let sink = ferry_connectors::open_sink(&spec.target)
        .await
        .expect("sink");
    (source, sink)
}

/// The native (TCP) port of the test ClickHouse server behind `url`: its HTTP port + 877,
/// as `scripts/services.sh` lays them out (58123 → 59000, 58124 → 59001; keep that
/// offset when overriding `FERRY_CH*_PORT`).
/// `clickhouse-client` against the server of `url` (its native port, see
/// [`clickhouse_native_port`]), running `sql` (several statements allowed); its output
/// without the trailing newline.
pub fn clickhouse(url: &str, sql: &str) -> String {
    let port = clickhouse_native_port(url);
    let mut command = std::process::Command::new("clickhouse-client");
    command.args([
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--allow_experimental_low_cardinality_type",
        "1",
        "--multiquery",
        "--query",
        sql,
    ]);
    run_shell(command, "").trim_end().to_string()
}

pub fn clickhouse_native_port(url: &str) -> u16 {
    let http: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .expect("a port in the ClickHouse URL");
    http + 877
}

/// A source and a target database on the test PostgreSQL server
/// (`ferry_{tag}src_*`, `ferry_{tag}dst_*`), dropped on drop.
pub struct PgPair {
    pub server: String,
    pub source_db: String,
    pub target_db: String,
}

impl PgPair {
    pub fn new(tag: &str) -> PgPair {
        let server = env_url("FERRY_TEST_PG_URL");
        let suffix = unique_suffix();
        let pair = PgPair {
            source_db: format!("ferry_{tag}src_{suffix}"),
            target_db: format!("ferry_{tag}dst_{suffix}"),
            server,
        };
        psql(&pair.server, &format!("CREATE DATABASE {}", pair.source_db));
        psql(&pair.server, &format!("CREATE DATABASE {}", pair.target_db));
        pair
    }

    pub fn source(&self) -> String {
        with_database(&self.server, &self.source_db)
    }

    pub fn target(&self) -> String {
        with_database(&self.server, &self.target_db)
    }
}

impl Drop for PgPair {
    fn drop(&mut self) {
        psql(
            &self.server,
            &format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE); DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.source_db, self.target_db
            ),
        );
    }
}
