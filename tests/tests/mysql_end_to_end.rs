//! MySQL/MariaDB → MySQL/MariaDB end to end, against the real server of
//! `scripts/services.sh` (`FERRY_TEST_MYSQL_URL`): every supported type with its edge
//! values, every key shape (composite under a case-insensitive collation, skewed,
//! unsigned beyond i64, decimal, enum, datetime, none), awkward identifiers and a
//! generated column; the same with the INSERT fallback; the fence, zero dates, the
//! connector conformance suite, and a new attempt ending the session of a stopped older
//! attempt of its chunk (and of no other chunk or run).
//!
//! Each test copies between two databases of its own on the same server, with random
//! names, dropped at the end. The final comparison goes through the `mariadb` shell
//! (`EXCEPT ALL` both ways on an exact text of every column), not ferry's checksum.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use ferry_connectors::conformance::{
    check_failed_write_commits_nothing, check_overwrite_is_idempotent_and_fenced,
    check_split_covers_table, primary_key_of,
};
use ferry_connectors::{
    BatchStream, ConnectorError, Fence, PrepareOptions, Sink, Source, WriteSummary,
};
use ferry_coordination::ChunkState;
use ferry_ctl::local::{LocalJob, load_spec};
use ferry_model::ids::{Attempt, ChunkId};
use ferry_model::key::{ChunkRange, KeyBound, KeyValue, SplitKey};
use ferry_model::schema::{ColumnType, TableName, TableSchema};
use ferry_tests::{run_local_with_env, run_shell, unique_suffix, write_chunk, write_spec};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

const SOURCE_VAR: &str = "FERRY_E2E_MYSQL_SOURCE";
const TARGET_VAR: &str = "FERRY_E2E_MYSQL_TARGET";

/// The test server's URL; the tests fail (never skip) without it.
fn server_url() -> String {
    std::env::var("FERRY_TEST_MYSQL_URL").unwrap_or_else(|_| {
        panic!(
            "FERRY_TEST_MYSQL_URL is not set: start the test services with \
             `scripts/services.sh up && eval \"$(scripts/services.sh env)\"`"
        )
    })
}

/// The parts of a `mysql://user[:password]@host[:port]/database` URL the shell needs.
struct Server {
    host: String,
    port: String,
    user: String,
    password: Option<String>,
    /// Everything before the database, e.g. `mysql://root@127.0.0.1:53306`.
    base_url: String,
}

impl Server {
    fn from_env() -> Server {
        let url = server_url();
        let rest = url
            .strip_prefix("mysql://")
            .expect("FERRY_TEST_MYSQL_URL starts with mysql://");
        let authority = rest.split(['/', '?']).next().unwrap_or(rest);
        let (user_info, host_port) = authority.rsplit_once('@').unwrap_or(("root", authority));
        let (user, password) = match user_info.split_once(':') {
            Some((user, password)) => (user.to_string(), Some(password.to_string())),
            None => (user_info.to_string(), None),
        };
        let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "3306"));
        Server {
            host: host.to_string(),
            port: port.to_string(),
            user,
            password,
            base_url: format!("mysql://{authority}"),
        }
    }

    fn url(&self, database: &str, parameters: &str) -> String {
        format!("{}/{database}{parameters}", self.base_url)
    }

    /// Runs SQL through the `mariadb` shell (independent of ferry and of its driver);
    /// returns the tab-separated output, trimmed.
    fn sql(&self, sql: &str) -> String {
        let shell = ["mariadb", "mysql"]
            .into_iter()
            .find(|name| {
                Command::new(name)
                    .arg("--version")
                    .output()
                    .is_ok_and(|output| output.status.success())
            })
            .expect("the mariadb shell must be installed (scripts/services.sh installs it)");
        let mut command = Command::new(shell);
        command
            .args([
                "--batch",
                "--skip-column-names",
                "--default-character-set=utf8mb4",
                "--protocol=TCP",
            ])
            .arg(format!("--host={}", self.host))
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={}", self.user));
        if let Some(password) = &self.password {
            command.env("MYSQL_PWD", password);
        }
        run_shell(command, sql).trim().to_string()
    }
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A source and a target database, dropped on drop.
struct Fixture {
    server: Server,
    source: String,
    target: String,
    env: HashMap<String, String>,
}

impl Fixture {
    /// `target_parameters` are appended to the target URL (e.g. `?ferry_write_method=insert`).
    fn new(target_parameters: &str) -> Fixture {
        let server = Server::from_env();
        let suffix = unique_suffix();
        let source = format!("ferry_src_{suffix}");
        let target = format!("ferry_dst_{suffix}");
        server.sql(&format!(
            "CREATE DATABASE {} CHARACTER SET utf8mb4; CREATE DATABASE {} CHARACTER SET utf8mb4;",
            quote_ident(&source),
            quote_ident(&target)
        ));
        let env = HashMap::from([
            (SOURCE_VAR.to_string(), server.url(&source, "")),
            (
                TARGET_VAR.to_string(),
                server.url(&target, target_parameters),
            ),
        ]);
        Fixture {
            server,
            source,
            target,
            env,
        }
    }

    fn spec(&self, extra: &str) -> String {
        format!(
            "name: mysql-e2e\nsource: {{ kind: mysql, url_env: {SOURCE_VAR} }}\n\
             target: {{ kind: mysql, url_env: {TARGET_VAR} }}\n\
             tables: {{ include: [\"*\"] }}\n{extra}"
        )
    }

    /// Runs SQL in the source database.
    fn source_sql(&self, sql: &str) -> String {
        self.server.sql(&format!(
            "USE {}; SET time_zone = '+00:00', max_recursive_iterations = 1000000; {sql}",
            quote_ident(&self.source)
        ))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.server.sql(&format!(
                "DROP DATABASE IF EXISTS {}; DROP DATABASE IF EXISTS {};",
                quote_ident(&self.source),
                quote_ident(&self.target)
            ))
        }));
    }
}

const EVERY_TYPE_TABLE: &str = "Every `Type` Table";

/// The columns of the every-type table that are not generated, in order.
const EVERY_TYPE_COLUMNS: &str = "`select`, `ti`, `tiu`, `Bool Flag`, `si`, `siu`, `mi`, `miu`, `int`, `iu`, \
    `bi`, `biu`, `dec`, `money`, `f`, `d`, `b1`, `b64`, `c`, `vc`, `tt`, `lt`, `bn`, `vb`, `bl`, \
    `dt`, `dtm`, `ts`, `tm`, `yr`, `js`, `en`, `st`, `back``tick`";

/// Builds every kind of table and value ferry must carry.
fn create_source(fixture: &Fixture) {
    let table = quote_ident(EVERY_TYPE_TABLE);
    let columns = EVERY_TYPE_COLUMNS;
    fixture.source_sql(&format!(
        r#"
        CREATE TABLE {table} (
            `select` BIGINT NOT NULL PRIMARY KEY,
            `ti` TINYINT, `tiu` TINYINT UNSIGNED, `Bool Flag` TINYINT(1),
            `si` SMALLINT, `siu` SMALLINT UNSIGNED, `mi` MEDIUMINT, `miu` MEDIUMINT UNSIGNED,
            `int` INT, `iu` INT UNSIGNED, `bi` BIGINT, `biu` BIGINT UNSIGNED,
            `dec` DECIMAL(65,30), `money` DECIMAL(10,2),
            `f` FLOAT, `d` DOUBLE,
            `b1` BIT(1), `b64` BIT(64),
            `c` CHAR(10), `vc` VARCHAR(255), `tt` TEXT, `lt` LONGTEXT,
            `bn` BINARY(4), `vb` VARBINARY(64), `bl` LONGBLOB,
            `dt` DATE, `dtm` DATETIME(6), `ts` TIMESTAMP(6) NULL DEFAULT NULL, `tm` TIME(6), `yr` YEAR,
            `js` JSON, `en` ENUM('a','b''c','d\\e','x,y'), `st` SET('p','q','r'),
            `back``tick` VARCHAR(10),
            `gen` BIGINT AS (`int` * 2) VIRTUAL,
            `gen stored` VARCHAR(300) AS (CONCAT(`vc`, '!')) STORED
        ) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

        INSERT INTO {table} ({columns}) VALUES
        (1, -128, 0, -128, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
         -99999999999999999999999999999999999.999999999999999999999999999999, -99999999.99,
         -3.40282e38, -1.7976931348623157e308, b'0', b'0', '', '', '', '', 0x00000000, X'', X'',
         '1000-01-01', '1000-01-01 00:00:00.000000', '1970-01-01 00:00:01.000000', '00:00:00', 1901,
         '{{}}', 'a', '', ''),
        (2, 127, 255, 127, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
         9223372036854775807, 18446744073709551615,
         99999999999999999999999999999999999.999999999999999999999999999999, 99999999.99,
         3.40282e38, 1.7976931348623157e308, b'1', 0xFFFFFFFFFFFFFFFF, 'abcdefghij', REPEAT('x', 255),
         'ünïcödé ✓ 日本語', '🦀🚀 four-byte emoji 👩‍👩‍👧', 0xFFFFFFFF, REPEAT(0xFF, 64), 0xFF00FF,
         '9999-12-31', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', '23:59:59.999999', 2155,
         '[1, 2.50, "x", {{"b": null, "a": true}}]', 'x,y', 'p,q,r', 'tick`'),
        (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL),
        (4, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 9223372036854775808,
         0.000000000000000000000000000001, 0.01,
         1.17549435e-38, 4.9406564584124654e-324, NULL, b'1010', 'a\tb', 'tab\there\nnewline\\backslash''quote"dq',
         CONCAT('nul', CHAR(0 USING utf8mb4), 'byte'), '\\N', 0x00090A5C, 0x00090A5C2722000D, 0x5C4E,
         '1969-12-31', '1900-02-28 12:34:56.123456', '1970-01-01 00:00:01.5', '12:00:00.5', 0,
         '{{"k": "v\\u00e9 🦀", "n": -0.5e1}}', 'b''c', 'q', 'a`b'),
        (5, -1, 1, 2, -1, 1, -1, 1, -1, 1, -1, 1, -1.5, -0.5, 0.1, 0.30000000000000004, b'1', 1,
         'NULL', 'NULL', 'NULL', REPEAT('é', 524288), 0x4E554C4C, 0x4E, REPEAT(0x00090A5CFF27, 174763),
         '2100-01-01', '2100-01-01 00:00:00.000001', '2000-02-29 12:00:00', '00:00:00.000001', 2000,
         'null', 'd\\e', 'p,r', NULL);

        INSERT INTO {table} ({columns})
        SELECT i, i % 127, i % 255, i % 2, i - 200, i * 3, -i, i * 5, i * 1000, i, i * i * i * 1000,
               i * 99999999999, CONCAT(i, '.', LPAD(i, 30, '0')), ROUND(i / 7, 2), i / 3.0e0, i / 7.0e0,
               i % 2, i * 12345, LPAD(i, 10, 'c'), CONCAT('row ', i), REPEAT('t', i % 50), CONCAT('long ', i),
               UNHEX(LPAD(HEX(i), 8, '0')), UNHEX(HEX(i)), REPEAT(CHAR(i % 256), i % 40),
               DATE_ADD('1950-01-01', INTERVAL i * 97 DAY),
               TIMESTAMPADD(MICROSECOND, i * 123456789, '1960-01-01 00:00:00'),
               TIMESTAMPADD(SECOND, i * 86400 * 30, '1971-01-01 00:00:00'),
               SEC_TO_TIME((i * 211) % 86400), 1901 + i % 255,
               JSON_OBJECT('i', i, 's', CONCAT('v', i)), ELT(1 + i % 4, 'a', 'b''c', 'd\\e', 'x,y'),
               ELT(1 + i % 3, 'p', 'q,r', ''), CHAR(65 + i % 26)
        FROM (WITH RECURSIVE n(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM n WHERE i < 409) SELECT i FROM n) AS numbers;

        CREATE TABLE composite (
            a VARCHAR(20) COLLATE utf8mb4_general_ci NOT NULL, b INT NOT NULL, v TEXT,
            PRIMARY KEY (a, b)
        ) DEFAULT CHARSET=utf8mb4;
        INSERT INTO composite
        SELECT t.a, t.idx * 10 + j.j, CONCAT(t.idx, '/', j.j)
        FROM (SELECT 0 AS idx, '' AS a UNION ALL SELECT 1, 'A' UNION ALL SELECT 2, 'a'
              UNION ALL SELECT 3, 'Ä' UNION ALL SELECT 4, 'ä' UNION ALL SELECT 5, 'z'
              UNION ALL SELECT 6, '🦀' UNION ALL SELECT 7, 'a b' UNION ALL SELECT 8, '"'
              UNION ALL SELECT 9, '''' UNION ALL SELECT 10, '10' UNION ALL SELECT 11, '9'
              UNION ALL SELECT 12, 'ß' UNION ALL SELECT 13, 'ss' UNION ALL SELECT 14, 'a '
              UNION ALL SELECT 15, ' a') AS t,
             (SELECT 0 AS j UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) AS j;
        INSERT INTO composite VALUES ('A', -2147483648, 'min'), ('a', 2147483647, 'max');

        CREATE TABLE skewed (id BIGINT PRIMARY KEY, v VARCHAR(20));
        INSERT INTO skewed SELECT i, CONCAT('s', i)
        FROM (WITH RECURSIVE n(i) AS (SELECT 1000000 UNION ALL SELECT i + 1 FROM n WHERE i < 1000199) SELECT i FROM n) AS numbers;
        INSERT INTO skewed VALUES (-9223372036854775808, 'min'), (-9223372036854775807, 'min+1'),
            (-5000000000000, 'far'), (7, 'seven'), (9223372036854775806, 'max-1'), (9223372036854775807, 'max');

        CREATE TABLE unsigned_key (id BIGINT UNSIGNED PRIMARY KEY, v INT);
        INSERT INTO unsigned_key SELECT i, i
        FROM (WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 119) SELECT i FROM n) AS numbers;
        INSERT INTO unsigned_key VALUES (9223372036854775807, 1), (9223372036854775808, 2),
            (18446744073709551614, 3), (18446744073709551615, 4);
        INSERT INTO unsigned_key SELECT 18446744073709551500 + i, i
        FROM (WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 79) SELECT i FROM n) AS numbers;

        CREATE TABLE decimal_key (k DECIMAL(20,5) PRIMARY KEY, v INT);
        INSERT INTO decimal_key SELECT ROUND(i / 7, 5), i
        FROM (WITH RECURSIVE n(i) AS (SELECT -60 UNION ALL SELECT i + 1 FROM n WHERE i < 60) SELECT i FROM n) AS numbers;

        CREATE TABLE enum_key (e ENUM('z','a','m') NOT NULL, n INT NOT NULL, PRIMARY KEY (e, n));
        INSERT INTO enum_key SELECT ELT(1 + i % 3, 'z', 'a', 'm'), i
        FROM (WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 119) SELECT i FROM n) AS numbers;

        CREATE TABLE datetime_key (t DATETIME(6) PRIMARY KEY, v INT);
        INSERT INTO datetime_key SELECT TIMESTAMPADD(MICROSECOND, i * 1000001, '1969-12-31 23:59:59.999999'), i
        FROM (WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 119) SELECT i FROM n) AS numbers;

        CREATE TABLE `no key` (x VARCHAR(20), y INT);
        INSERT INTO `no key` SELECT IF(i % 10 = 0, 'dup', CONCAT('x', i)), IF(i % 10 = 0, 0, i)
        FROM (WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 299) SELECT i FROM n) AS numbers;

        CREATE TABLE `Empty Table` (id INT PRIMARY KEY, v TEXT);
        "#
    ));
}

/// The tables of [`create_source`].
const TABLES: [&str; 9] = [
    EVERY_TYPE_TABLE,
    "composite",
    "skewed",
    "unsigned_key",
    "decimal_key",
    "enum_key",
    "datetime_key",
    "no key",
    "Empty Table",
];

/// Compares a table between the two databases through the shell: equal row counts, the
/// same DDL, and no row in one that is not in the other (`EXCEPT ALL` both ways, on the
/// bytes of text and blobs, so a collation cannot hide a difference).
fn assert_same_table(fixture: &Fixture, table: &str) {
    let server = &fixture.server;
    let literal = |text: &str| format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"));
    let column_rows = server.sql(&format!(
        "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
        literal(&fixture.source),
        literal(table)
    ));
    let exprs: Vec<String> = column_rows
        .lines()
        .map(|line| {
            let (name, data_type) = line.split_once('\t').expect("name and type");
            let name = name.replace("\\\\", "\\");
            let quoted = quote_ident(&name);
            match data_type {
                "bit" => format!("{quoted} + 0"),
                "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "binary"
                | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "json"
                | "enum" | "set" => format!("HEX({quoted})"),
                _ => quoted,
            }
        })
        .collect();
    assert!(
        !exprs.is_empty(),
        "table {table} has no columns in the source"
    );
    let list = exprs.join(", ");
    let source_table = format!("{}.{}", quote_ident(&fixture.source), quote_ident(table));
    let target_table = format!("{}.{}", quote_ident(&fixture.target), quote_ident(table));
    let outcome = server.sql(&format!(
        "SET time_zone = '+00:00'; \
         SELECT (SELECT COUNT(*) FROM {source_table}), (SELECT COUNT(*) FROM {target_table}), \
         (SELECT COUNT(*) FROM (SELECT {list} FROM {source_table} EXCEPT ALL SELECT {list} FROM {target_table}) AS d), \
         (SELECT COUNT(*) FROM (SELECT {list} FROM {target_table} EXCEPT ALL SELECT {list} FROM {source_table}) AS d)"
    ));
    let numbers: Vec<&str> = outcome.split('\t').collect();
    assert_eq!(numbers.len(), 4, "unexpected output {outcome:?}");
    assert_eq!(
        numbers[0], numbers[1],
        "row counts differ for table {table}"
    );
    if (numbers[2], numbers[3]) != ("0", "0") {
        let differing: Vec<String> = exprs
            .iter()
            .filter(|expr| {
                server.sql(&format!(
                    "SET time_zone = '+00:00'; SELECT COUNT(*) FROM (SELECT {expr} FROM {source_table} \
                     EXCEPT ALL SELECT {expr} FROM {target_table}) AS d"
                )) != "0"
            })
            .cloned()
            .collect();
        panic!(
            "rows differ for table {table}: {} source-only, {} target-only; differing columns: {}",
            numbers[2],
            numbers[3],
            differing.join(", ")
        );
    }
    let ddl = |database: &str| {
        let shown = server.sql(&format!(
            "SHOW CREATE TABLE {}.{}",
            quote_ident(database),
            quote_ident(table)
        ));
        let ddl = shown
            .split_once('\t')
            .map_or(shown.clone(), |(_, ddl)| ddl.to_string());
        ddl.split(' ')
            .filter(|word| !word.starts_with("AUTO_INCREMENT="))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        ddl(&fixture.source),
        ddl(&fixture.target),
        "the target table {table} was created with the source's DDL"
    );
}

/// Held (shared) by tests that must load with `LOAD DATA LOCAL INFILE`, and exclusively
/// by the test that switches it off on the server.
static LOCAL_INFILE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

async fn copy_every_type_and_compare(target_parameters: &str) {
    let _local_infile = LOCAL_INFILE.read().await;
    let fixture = Fixture::new(target_parameters);
    create_source(&fixture);
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), &fixture.spec("chunking: { target_rows: 50 }\n"));
    let (prepared, outcome, sink) = run_local_with_env(
        &spec_path,
        &dir.path().join("state.db"),
        3,
        vec![],
        CancellationToken::new(),
        &fixture.env,
    )
    .await;

    assert!(!outcome.interrupted);
    // The independent comparison first: it names the columns that differ.
    for table in TABLES {
        assert_same_table(&fixture, table);
    }
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
        assert_eq!(
            chunk.attempt.0, 1,
            "no chunk needed a second attempt: {chunk:?}"
        );
    }
    assert_eq!(sink.committed_writes(), outcome.chunks.len() as u64);
    let tables = &prepared.job.tables;
    assert_eq!(tables.len(), TABLES.len(), "every table is planned");
    let chunks_of = |name: &str| {
        let index = tables
            .iter()
            .position(|t| t.schema.name.name == name)
            .unwrap_or_else(|| panic!("table {name} planned"));
        outcome
            .chunks
            .iter()
            .filter(|c| c.table_index == index)
            .collect::<Vec<_>>()
    };
    // Every kind of key was split into several chunks; the keyless table is one chunk.
    assert!(chunks_of(EVERY_TYPE_TABLE).len() >= 5);
    for name in [
        "composite",
        "skewed",
        "unsigned_key",
        "decimal_key",
        "enum_key",
        "datetime_key",
    ] {
        assert!(chunks_of(name).len() >= 2, "table {name} was split");
    }
    assert!(
        chunks_of("unsigned_key").iter().any(|c| matches!(
            &c.range,
            ChunkRange::Interval { lower: Some(KeyBound(values)), .. }
                if matches!(values.as_slice(), [KeyValue::Text(_)])
        )),
        "an unsigned key beyond i64 bounds a chunk"
    );
    let no_key = chunks_of("no key");
    assert_eq!(no_key.len(), 1);
    assert_eq!(no_key[0].range, ChunkRange::WholeTable);
    assert_eq!(no_key[0].rows, 300);
    let every_type = tables
        .iter()
        .find(|t| t.schema.name.name == EVERY_TYPE_TABLE)
        .expect("planned");
    assert!(
        every_type
            .schema
            .columns
            .iter()
            .all(|c| !c.name.starts_with("gen")),
        "generated columns are not carried"
    );
    let type_of = |name: &str| {
        every_type
            .schema
            .column(name)
            .unwrap_or_else(|| panic!("column {name}"))
            .column_type
            .clone()
    };
    assert_eq!(
        type_of("Bool Flag"),
        ColumnType::Int8,
        "tinyint(1) is an integer"
    );
    assert_eq!(type_of("biu"), ColumnType::UInt64);
    assert_eq!(type_of("miu"), ColumnType::UInt32);
    assert_eq!(
        type_of("dec"),
        ColumnType::Decimal {
            precision: Some(65),
            scale: Some(30)
        }
    );
    assert_eq!(type_of("b64"), ColumnType::Bit { width: 64 });
    assert_eq!(
        type_of("js"),
        ColumnType::Json,
        "MariaDB's json is found by its check"
    );
    assert_eq!(type_of("ts"), ColumnType::TimestampTz);
    assert_eq!(type_of("dtm"), ColumnType::Timestamp);
    assert_eq!(type_of("yr"), ColumnType::Year);
    assert_eq!(
        type_of("en"),
        ColumnType::Enum {
            labels: vec!["a".into(), "b'c".into(), "d\\e".into(), "x,y".into()]
        }
    );
    assert_eq!(
        every_type.schema.name,
        TableName {
            schema: Some(fixture.source.clone()),
            name: EVERY_TYPE_TABLE.into()
        }
    );

    // Every chunk was verified with the canonical checksum (the target read back): the
    // recorded checksum is the target's, and a changed value changes it.
    let spec = load_spec(&spec_path, &fixture.env).expect("spec");
    let sink = ferry_connectors::open_sink(&spec.target)
        .await
        .expect("sink");
    for chunk in &outcome.chunks {
        let table = &tables[chunk.table_index];
        let on_target = sink
            .checksum_chunk(&table.schema, &table.key, &chunk.range)
            .await
            .expect("target checksum");
        assert_eq!(Some(on_target), chunk.checksum, "chunk {chunk:?}");
        assert_eq!(on_target.rows, chunk.rows);
    }
    let first = outcome
        .chunks
        .iter()
        .find(|chunk| {
            tables[chunk.table_index].schema.name.name == EVERY_TYPE_TABLE
                && matches!(chunk.range, ChunkRange::Interval { lower: None, .. })
        })
        .expect("the first chunk of the every-type table");
    let first_table = &tables[first.table_index];
    fixture.server.sql(&format!(
        "UPDATE {}.{} SET `f` = `f` * 2 WHERE `select` = 4",
        quote_ident(&fixture.target),
        quote_ident(EVERY_TYPE_TABLE)
    ));
    let after = sink
        .checksum_chunk(&first_table.schema, &first_table.key, &first.range)
        .await
        .expect("checksum");
    assert_ne!(
        Some(after),
        first.checksum,
        "a changed float changes the checksum"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_key_and_identifier_is_copied_exactly_between_mysql_databases() {
    copy_every_type_and_compare("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_is_copied_exactly_with_the_insert_fallback() {
    copy_every_type_and_compare("?ferry_write_method=insert").await;
}

/// Sets a global server variable for the life of the guard.
struct GlobalSetting<'a> {
    server: &'a Server,
    name: &'static str,
    restore: String,
}

impl<'a> GlobalSetting<'a> {
    fn set(server: &'a Server, name: &'static str, value: &str) -> Self {
        let restore = server.sql(&format!("SELECT @@GLOBAL.{name}"));
        server.sql(&format!("SET GLOBAL {name} = {value}"));
        GlobalSetting {
            server,
            name,
            restore,
        }
    }
}

impl Drop for GlobalSetting<'_> {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.server
                .sql(&format!("SET GLOBAL {} = {}", self.name, self.restore))
        }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_local_infile_falls_back_to_inserts() {
    let fixture = Fixture::new("");
    fixture.source_sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARBINARY(16), s TEXT);
         INSERT INTO t SELECT i, UNHEX(REPEAT('0A5C', i % 5)), REPEAT('\\\t', i % 4)
         FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) SELECT i FROM n) AS numbers;",
    );
    let _exclusive = LOCAL_INFILE.write().await;
    let _local_infile_off = GlobalSetting::set(&fixture.server, "local_infile", "0");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(
        dir.path(),
        &fixture.spec("chunking: { target_rows: 100 }\n"),
    );
    let (_, outcome, _) = run_local_with_env(
        &spec_path,
        &dir.path().join("state.db"),
        2,
        vec![],
        CancellationToken::new(),
        &fixture.env,
    )
    .await;
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
        assert_eq!(chunk.attempt.0, 1, "the refusal cost no attempt: {chunk:?}");
    }
    assert_same_table(&fixture, "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_attempt_is_fenced_and_the_connector_conforms() {
    let fixture = Fixture::new("");
    fixture.source_sql(
        "CREATE TABLE t (a VARCHAR(10) NOT NULL, b INT NOT NULL, v VARBINARY(16), PRIMARY KEY (a, b));
         INSERT INTO t SELECT CONCAT('k', i % 50), i, UNHEX(REPEAT('5C', i % 9))
         FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) SELECT i FROM n) AS numbers;",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), &fixture.spec(""));
    let spec = load_spec(&spec_path, &fixture.env).expect("spec");
    let (source, sink) = ferry_tests::open_connectors(&spec).await;
    let table = source
        .describe_table(&TableName {
            schema: Some(fixture.source.clone()),
            name: "t".into(),
        })
        .await
        .expect("describe");
    check_split_covers_table(source.as_ref(), &table, 1500).await;
    // Attempts 1 and 2 write, then attempt 1 again is refused (Fenced) and changes nothing.
    check_overwrite_is_idempotent_and_fenced(source.as_ref(), sink.as_ref(), &table, "run-a").await;
    check_failed_write_commits_nothing(source.as_ref(), sink.as_ref(), &table, "run-a").await;
    assert_same_table(&fixture, "t");
    // Two source tables of one name (from two schemas) cannot share the target table.
    let mut namesake = table.clone();
    namesake.name.schema = Some("another_schema".into());
    let refused = sink
        .prepare_table(
            &namesake,
            &primary_key_of(&namesake),
            &PrepareOptions::default(),
        )
        .await;
    assert!(
        matches!(&refused, Err(ConnectorError::SchemaMismatch { detail, .. }) if detail.contains("tables.exclude")),
        "{refused:?}"
    );
    // ferry's own statements (the probe's included) are not counted as load.
    let load = source
        .probe_load()
        .await
        .expect("probe")
        .expect("a mysql source has a load probe");
    assert!((0.0..1000.0).contains(&load), "{load}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_date_fails_its_chunk_naming_table_column_and_key() {
    let fixture = Fixture::new("");
    fixture.source_sql(
        "SET SESSION sql_mode = '';
         CREATE TABLE zero_dates (id INT PRIMARY KEY, d DATE, dt DATETIME);
         INSERT INTO zero_dates VALUES (1, '2024-01-01', '2024-01-01 00:00:00'),
             (7, '0000-00-00', '2024-01-01 00:00:00'), (9, '2024-01-02', NULL);
         CREATE TABLE spans (id INT PRIMARY KEY, t TIME);
         INSERT INTO spans VALUES (1, '10:00:00'), (3, '-01:00:00');",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), &fixture.spec(""));
    let (_, outcome, sink) = run_local_with_env(
        &spec_path,
        &dir.path().join("state.db"),
        1,
        vec![],
        CancellationToken::new(),
        &fixture.env,
    )
    .await;
    assert_eq!(outcome.chunks.len(), 2, "one chunk per table");
    assert_eq!(sink.committed_writes(), 0, "nothing was committed");
    let reason_of = |table: &str| {
        let index = outcome
            .chunks
            .iter()
            .position(|chunk| {
                chunk
                    .last_error
                    .as_deref()
                    .unwrap_or_default()
                    .contains(table)
            })
            .unwrap_or_else(|| panic!("no failure names {table}: {:?}", outcome.chunks));
        let failed = &outcome.chunks[index];
        assert_eq!(failed.state, ChunkState::Failed, "{failed:?}");
        failed.last_error.clone().unwrap_or_default()
    };
    let zero_date = reason_of(&format!("{}.zero_dates", fixture.source));
    for expected in [
        "column d",
        "zero date 0000-00-00",
        "key 7",
        "zero_dates: null",
    ] {
        assert!(
            zero_date.contains(expected),
            "{expected:?} missing from {zero_date:?}"
        );
    }
    let span = reason_of(&format!("{}.spans", fixture.source));
    for expected in ["column t", "-01:00:00", "key 3"] {
        assert!(
            span.contains(expected),
            "{expected:?} missing from {span:?}"
        );
    }

    // With `zero_dates: null` on the spec's source, zero dates are read as NULL.
    let env = fixture.env.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(
        dir.path(),
        &fixture
            .spec("tables: { include: [\"zero_dates\"] }\n")
            .replace("tables: { include: [\"*\"] }\n", "")
            .replace(
                &format!("url_env: {SOURCE_VAR} }}"),
                &format!("url_env: {SOURCE_VAR}, zero_dates: null }}"),
            ),
    );
    let (_, outcome, _) = run_local_with_env(
        &spec_path,
        &dir.path().join("state.db"),
        1,
        vec![],
        CancellationToken::new(),
        &env,
    )
    .await;
    assert!(
        outcome
            .chunks
            .iter()
            .all(|c| c.state == ChunkState::Verified),
        "{:?}",
        outcome.chunks
    );
    assert_eq!(
        fixture.server.sql(&format!(
            "SELECT id, IFNULL(d, 'null') FROM {}.zero_dates ORDER BY id",
            quote_ident(&fixture.target)
        )),
        "1\t2024-01-01\n7\tnull\n9\t2024-01-02"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tables_are_created_in_mysql_with_mapped_types_and_copied_exactly() {
    let fixture = Fixture::new("");
    let dir = tempfile::tempdir().expect("tempdir");
    let connection = rusqlite::Connection::open(dir.path().join("source.db")).expect("source");
    connection
        .execute_batch(
            r#"
            CREATE TABLE "Mixed Ints" (id INTEGER PRIMARY KEY, t TEXT, r REAL, b BLOB NOT NULL);
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
            INSERT INTO "Mixed Ints" SELECT i * 1000 - 150000,
                CASE i % 4 WHEN 0 THEN NULL WHEN 1 THEN 'tab	newline
backslash\ é🦀 ' || i WHEN 2 THEN '' ELSE '\N' END,
                CASE i % 3 WHEN 0 THEN NULL ELSE i / 7.0 END,
                CASE i % 2 WHEN 0 THEN x'00090a5c27ff' ELSE zeroblob(i % 5) END
            FROM n;
            INSERT INTO "Mixed Ints" VALUES (9223372036854775807, 'max', 1e308, x''),
                (-9223372036854775808, 'min', -2.2250738585072014e-308, x'5c');
            CREATE TABLE texts (k TEXT PRIMARY KEY NOT NULL, v INTEGER);
            INSERT INTO texts VALUES ('a', 1), ('B', 2), ('é', 3), ('🦀', 4), ('a ', 5);
            "#,
        )
        .expect("fill the source");
    drop(connection);
    let spec = format!(
        "name: sqlite-to-mysql\nsource: {{ kind: sqlite, path: source.db }}\n\
         target: {{ kind: mysql, url_env: {TARGET_VAR} }}\n\
         tables: {{ include: [\"*\"] }}\nchunking: {{ target_rows: 50 }}\n"
    );
    let spec_path = write_spec(dir.path(), &spec);
    let (_, outcome, _) = run_local_with_env(
        &spec_path,
        &dir.path().join("state.db"),
        2,
        vec![],
        CancellationToken::new(),
        &fixture.env,
    )
    .await;
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
    }
    assert!(outcome.chunks.len() >= 6, "the integer key was split");
    let target = quote_ident(&fixture.target);
    assert_eq!(
        fixture.server.sql(&format!(
            "SELECT COUNT(*), SUM(t IS NULL), SUM(t = '\\\\N'), SUM(LENGTH(b)), MIN(id), MAX(id) \
             FROM {target}.`Mixed Ints`"
        )),
        "302\t75\t75\t1201\t-9223372036854775808\t9223372036854775807"
    );
    assert_eq!(
        fixture
            .server
            .sql(&format!("SELECT HEX(k), v FROM {target}.texts ORDER BY k")),
        "42\t2\n61\t1\n6120\t5\nC3A9\t3\nF09FA680\t4",
        "text keys keep every byte and sort bytewise, trailing spaces included (a binary no-pad collation)"
    );
    let ddl = fixture
        .server
        .sql(&format!("SHOW CREATE TABLE {target}.texts"));
    assert!(ddl.contains("varchar(768)"), "{ddl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_mysql_cannot_hold_are_refused_at_plan_time_naming_the_override() {
    let fixture = Fixture::new("");
    let dir = tempfile::tempdir().expect("tempdir");
    let connection = rusqlite::Connection::open(dir.path().join("source.db")).expect("source");
    connection
        .execute_batch("CREATE TABLE loose (id INTEGER PRIMARY KEY, anything NUMERIC);")
        .expect("fill the source");
    drop(connection);
    let spec = format!(
        "name: refused\nsource: {{ kind: sqlite, path: source.db }}\n\
         target: {{ kind: mysql, url_env: {TARGET_VAR} }}\n\
         tables: {{ include: [\"*\"] }}\n"
    );
    let spec_path = write_spec(dir.path(), &spec);
    let spec = load_spec(&spec_path, &fixture.env).expect("spec");
    let job = ferry_ctl::local::LocalJob::open(spec, &dir.path().join("state.db"))
        .await
        .expect("open");
    let error = job.prepare().await.expect_err("planning refuses the table");
    let message = error.to_string();
    for expected in ["loose", "column anything", "mysql", "columns:"] {
        assert!(
            message.contains(expected),
            "{expected:?} missing from {message}"
        );
    }
}

/// The partitions of `database.table` as `information_schema.PARTITIONS` lists them:
/// partition, subpartition, method and bound, one line each.
fn partition_layout(server: &Server, database: &str, table: &str) -> String {
    server.sql(&format!(
        "SELECT PARTITION_NAME, COALESCE(SUBPARTITION_NAME, '-'), PARTITION_METHOD, \
                COALESCE(SUBPARTITION_METHOD, '-'), COALESCE(PARTITION_DESCRIPTION, '-') \
         FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = '{database}' AND TABLE_NAME = '{table}' \
         ORDER BY PARTITION_ORDINAL_POSITION, SUBPARTITION_ORDINAL_POSITION"
    ))
}

/// Rows per partition of `database.table`, counted with `PARTITION (p)`.
fn partition_count(server: &Server, database: &str, table: &str, partition: &str) -> String {
    server.sql(&format!(
        "SELECT COUNT(*) FROM {}.{} PARTITION ({})",
        quote_ident(database),
        quote_ident(table),
        quote_ident(partition)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_partitioned_table_is_planned_copied_and_repaired_partition_by_partition() {
    let _load_data = LOCAL_INFILE.read().await;
    let fixture = Fixture::new("");
    // p2023 is cut into key sub-ranges, p2025 stays empty, pmax takes the rest; `sub` is
    // subpartitioned, so its leaves are the subpartitions.
    fixture.source_sql(
        "CREATE TABLE events (id INT NOT NULL, at DATE NOT NULL, v VARCHAR(20), PRIMARY KEY (id, at))
             PARTITION BY RANGE (YEAR(at)) (
                 PARTITION p2023 VALUES LESS THAN (2024),
                 PARTITION p2024 VALUES LESS THAN (2025),
                 PARTITION p2025 VALUES LESS THAN (2026),
                 PARTITION pmax VALUES LESS THAN MAXVALUE);
         INSERT INTO events SELECT i, DATE '2023-01-01' + INTERVAL (i % 365) DAY, CONCAT('a', i)
             FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) SELECT i FROM n) AS numbers;
         INSERT INTO events SELECT i, DATE '2024-01-01' + INTERVAL (i % 366) DAY, CONCAT('b', i)
             FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60) SELECT i FROM n) AS numbers;
         INSERT INTO events SELECT i, DATE '2030-06-01' + INTERVAL i DAY, NULL
             FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) SELECT i FROM n) AS numbers;
         CREATE TABLE sub (id INT NOT NULL PRIMARY KEY, v INT)
             PARTITION BY RANGE (id) SUBPARTITION BY HASH (id) SUBPARTITIONS 2 (
                 PARTITION lo VALUES LESS THAN (100),
                 PARTITION hi VALUES LESS THAN MAXVALUE);
         INSERT INTO sub SELECT i, i * 2
             FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 150) SELECT i FROM n) AS numbers;",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(
        dir.path(),
        &fixture.spec("chunking: { target_rows: 100 }\n"),
    );
    let state = dir.path().join("state.db");
    let (prepared, outcome, _) = run_local_with_env(
        &spec_path,
        &state,
        3,
        vec![],
        CancellationToken::new(),
        &fixture.env,
    )
    .await;
    assert!(!outcome.interrupted);
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
        assert!(
            chunk.partition.is_some(),
            "chunk {chunk:?} names its partition"
        );
    }
    for table in &prepared.job.tables {
        assert!(table.warnings.is_empty(), "{:?}", table.warnings);
    }

    // Chunks per partition, from the state file: p2023 sub-split, the others one chunk
    // each (the empty one too); `sub` by its four subpartitions.
    let per_partition: HashMap<String, u64> = ferry_tests::sqlite3(
        &state,
        "SELECT partition_name || '|' || count(*) FROM chunks GROUP BY partition_name",
    )
    .lines()
    .filter_map(|line| {
        let (name, count) = line.split_once('|')?;
        Some((name.to_string(), count.parse().ok()?))
    })
    .collect();
    assert!(per_partition["p2023"] >= 5, "{per_partition:?}");
    for single in ["p2024", "p2025", "pmax", "losp0", "losp1", "hisp0", "hisp1"] {
        assert_eq!(per_partition[single], 1, "{single} in {per_partition:?}");
    }
    assert_eq!(per_partition.len(), 8, "{per_partition:?}");

    // The target is partitioned the same way and each partition holds the source's
    // rows: counted with PARTITION (p), the content compared with EXCEPT ALL, and the
    // DDL compared by assert_same_table.
    for table in ["events", "sub"] {
        assert_eq!(
            partition_layout(&fixture.server, &fixture.source, table),
            partition_layout(&fixture.server, &fixture.target, table)
        );
        assert_same_table(&fixture, table);
    }
    for (partition, rows) in [
        ("p2023", "500"),
        ("p2024", "60"),
        ("p2025", "0"),
        ("pmax", "40"),
    ] {
        assert_eq!(
            partition_count(&fixture.server, &fixture.source, "events", partition),
            rows
        );
        assert_eq!(
            partition_count(&fixture.server, &fixture.target, "events", partition),
            rows
        );
    }
    for partition in ["losp0", "losp1", "hisp0", "hisp1"] {
        assert_eq!(
            partition_count(&fixture.server, &fixture.target, "sub", partition),
            partition_count(&fixture.server, &fixture.source, "sub", partition),
        );
    }

    // Re-copy only p2024's chunk (as a resume does with chunks that are not VERIFIED):
    // its corrupted and deleted rows are repaired, while a changed row of pmax inside the
    // key range of p2024's unbounded chunk is left alone.
    let target = quote_ident(&fixture.target);
    fixture.server.sql(&format!(
        "UPDATE {target}.events PARTITION (p2024) SET v = 'corrupt' WHERE id = 7;
         DELETE FROM {target}.events PARTITION (p2024) WHERE id = 8;
         UPDATE {target}.events PARTITION (pmax) SET v = 'marker' WHERE id = 5;"
    ));
    ferry_tests::sqlite3(
        &state,
        "UPDATE chunks SET state = 'PLANNED' WHERE partition_name = 'p2024'",
    );
    let (_, again, again_sink) = run_local_with_env(
        &spec_path,
        &state,
        2,
        vec![],
        CancellationToken::new(),
        &fixture.env,
    )
    .await;
    assert_eq!(
        again_sink.committed_writes(),
        1,
        "only p2024's chunk was copied"
    );
    for chunk in &again.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
    }
    assert_eq!(
        fixture.server.sql(&format!(
            "SELECT COUNT(*), SUM(v = 'corrupt') FROM {target}.events PARTITION (p2024)"
        )),
        "60\t0"
    );
    assert_eq!(
        fixture.server.sql(&format!(
            "SELECT v FROM {target}.events PARTITION (pmax) WHERE id = 5"
        )),
        "marker",
        "pmax was not touched"
    );
    assert_eq!(
        partition_count(&fixture.server, &fixture.target, "events", "pmax"),
        "40"
    );

    // An existing target whose partitions differ is refused at plan time, naming the
    // table and the partition.
    fixture
        .server
        .sql(&format!("ALTER TABLE {target}.events DROP PARTITION p2025"));
    let existing = write_spec(
        dir.path(),
        &fixture.spec("chunking: { target_rows: 100 }\nschema: require_existing\n"),
    );
    let spec = load_spec(&existing, &fixture.env).expect("spec");
    let job = LocalJob::open(spec, &dir.path().join("state-existing.db"))
        .await
        .expect("open job");
    let Err(error) = job.prepare().await else {
        panic!("different partitions are refused");
    };
    let error = error.to_string();
    for needle in ["events", "p2025", "missing"] {
        assert!(error.contains(needle), "{needle} missing from: {error}");
    }
}

/// How long a new attempt may take to replace a stopped one (the zombie's session must
/// be ended, not waited for: `innodb_lock_wait_timeout` is checked to be longer).
const REPLACE_BOUND: Duration = Duration::from_secs(20);

/// Runs `sink.write_chunk` in its own task.
fn spawn_write(
    sink: &Arc<dyn Sink>,
    table: &TableSchema,
    key: &SplitKey,
    range: &ChunkRange,
    fence: Fence,
    batches: BatchStream,
) -> tokio::task::JoinHandle<Result<WriteSummary, ConnectorError>> {
    let (sink, table, key, range) = (sink.clone(), table.clone(), key.clone(), range.clone());
    tokio::spawn(
        async move { write_chunk(sink.as_ref(), &table, &key, &range, &fence, batches).await },
    )
}

/// An attempt whose input yielded one batch and holds the rest back: its transaction
/// stays open in the middle of the load, as a worker stopped there leaves it.
struct StalledWrite {
    feed: futures::channel::mpsc::UnboundedSender<Result<RecordBatch, ConnectorError>>,
    rest: Vec<RecordBatch>,
    task: tokio::task::JoinHandle<Result<WriteSummary, ConnectorError>>,
    lock: String,
}

impl StalledWrite {
    async fn start(
        source: &dyn Source,
        sink: &Arc<dyn Sink>,
        table: &TableSchema,
        range: &ChunkRange,
        fence: Fence,
    ) -> StalledWrite {
        let key = primary_key_of(table);
        let mut rest: Vec<RecordBatch> = source
            .read_chunk(table, &key, range)
            .await
            .expect("read_chunk")
            .map(|batch| batch.expect("batch"))
            .collect()
            .await;
        assert!(rest.len() >= 2, "the chunk has more than one batch");
        let (feed, input) = futures::channel::mpsc::unbounded();
        feed.unbounded_send(Ok(rest.remove(0))).expect("feed");
        let lock = fence.attempt_tag(fence.attempt);
        let task = spawn_write(sink, table, &key, range, fence, input.boxed());
        StalledWrite {
            feed,
            rest,
            task,
            lock,
        }
    }

    /// Waits until the attempt's session (found by its lock) has rows in an open
    /// transaction (the reads are spaced by [`lock_holder_is_loading`]).
    async fn wait_loading(&self, server: &Server) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lock_holder_is_loading(server, &self.lock).await {
            assert!(!self.task.is_finished(), "{} ended early", self.lock);
            assert!(
                Instant::now() < deadline,
                "{} never started loading",
                self.lock
            );
        }
    }

    /// Hands over the rest of the rows and ends the input; returns the write's outcome.
    async fn finish(self) -> Result<WriteSummary, ConnectorError> {
        for batch in self.rest {
            self.feed.unbounded_send(Ok(batch)).expect("feed");
        }
        drop(self.feed);
        tokio::time::timeout(REPLACE_BOUND, self.task)
            .await
            .expect("the write ends once its input does")
            .expect("write task")
    }

    /// Ends the input after the one batch; returns the write's outcome.
    async fn abandon(self) -> Result<WriteSummary, ConnectorError> {
        drop(self.feed);
        tokio::time::timeout(REPLACE_BOUND, self.task)
            .await
            .expect("the write ends once its input does")
            .expect("write task")
    }
}

/// When this process last finished reading `information_schema.INNODB_TRX`.
static INNODB_TRX_READ: tokio::sync::Mutex<Option<Instant>> = tokio::sync::Mutex::const_new(None);

/// How long InnoDB keeps serving the same copy of `INNODB_TRX` after a read of it
/// (`CACHE_MIN_IDLE_TIME_US`, 0.1 s, in `trx0i_s.cc`), with a margin. The copy is
/// refreshed only once no one has read it for that long, so tests polling it at once
/// every 0.1 s would keep each other reading a stale copy for as long as they poll.
const INNODB_TRX_CACHE_IDLE: Duration = Duration::from_millis(150);

/// Whether the session holding the named lock `lock` is in the middle of a chunk's load:
/// its InnoDB transaction holds locks (the fence row's at least) and has written rows
/// (`LOAD DATA` inserts them as they arrive) or waits for the client between statements
/// (the INSERT fallback sends a statement once it has gathered enough rows). The reads
/// of `INNODB_TRX` in this process take turns, each after the server's copy of it could
/// be refreshed ([`INNODB_TRX_CACHE_IDLE`]).
async fn lock_holder_is_loading(server: &Server, lock: &str) -> bool {
    let mut last_read = INNODB_TRX_READ.lock().await;
    if let Some(last_read) = *last_read {
        tokio::time::sleep_until((last_read + INNODB_TRX_CACHE_IDLE).into()).await;
    }
    let loading = server.sql(&format!(
        "SELECT COUNT(*) FROM information_schema.INNODB_TRX \
         WHERE trx_mysql_thread_id = IS_USED_LOCK('{lock}') AND trx_rows_locked > 0 \
         AND (trx_rows_modified > 0 OR trx_query IS NULL)"
    )) == "1";
    *last_read = Some(Instant::now());
    loading
}

/// Rows of `table` in `where_clause` in the source and the target (counts, then rows in
/// one and not the other, both ways), compared through the shell.
fn assert_same_rows(fixture: &Fixture, table: &str, where_clause: &str, rows: u64) {
    let (source, target) = (quote_ident(&fixture.source), quote_ident(&fixture.target));
    let select =
        |database: &str| format!("SELECT id, v FROM {database}.{table} WHERE {where_clause}");
    assert_eq!(
        fixture.server.sql(&format!(
            "SELECT (SELECT COUNT(*) FROM {source}.{table} WHERE {where_clause}), \
                    (SELECT COUNT(*) FROM {target}.{table} WHERE {where_clause}), \
                    (SELECT COUNT(*) FROM ({} EXCEPT ALL {}) AS missing), \
                    (SELECT COUNT(*) FROM ({} EXCEPT ALL {}) AS extra)",
            select(&source),
            select(&target),
            select(&target),
            select(&source)
        )),
        format!("{rows}\t{rows}\t0\t0"),
        "{table} where {where_clause}: source rows, target rows, missing, extra"
    );
}

/// The attempt recorded in the target's fence for `(run, chunk)`.
fn fenced_attempt(fixture: &Fixture, run: &str, chunk: u32) -> String {
    fixture.server.sql(&format!(
        "SELECT attempt FROM {}._ferry_fence WHERE run_id = '{run}' AND chunk = {chunk}",
        quote_ident(&fixture.target)
    ))
}

/// A sink on the fixture's target database through `url` (another user's, say).
async fn open_target(fixture: &Fixture, dir: &std::path::Path, url: String) -> Arc<dyn Sink> {
    let mut env = fixture.env.clone();
    env.insert(TARGET_VAR.to_string(), url);
    let spec_path = write_spec(dir, &fixture.spec(""));
    let spec = load_spec(&spec_path, &env).expect("spec");
    ferry_connectors::open_sink(&spec.target)
        .await
        .expect("sink")
}

/// The source tables of the zombie tests, described and prepared in the target through
/// `sink`: `t` (ids 1 to 20,000), `u` and `w` (ids 1 to 10,000).
async fn zombie_tables(
    fixture: &Fixture,
    dir: &std::path::Path,
    sink: &Arc<dyn Sink>,
) -> (Arc<dyn Source>, [TableSchema; 3]) {
    let lock_wait: u64 = fixture
        .server
        .sql("SELECT @@GLOBAL.innodb_lock_wait_timeout")
        .parse()
        .expect("innodb_lock_wait_timeout");
    assert!(
        Duration::from_secs(lock_wait) >= 2 * REPLACE_BOUND,
        "innodb_lock_wait_timeout = {lock_wait} s: a new attempt waiting for the zombie \
         would fail only after it, so it must be well above the {REPLACE_BOUND:?} bound"
    );
    fixture.source_sql(
        "CREATE TABLE t (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(40) NOT NULL);
         INSERT INTO t SELECT i, CONCAT('t-', i, '-', MD5(i))
         FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) SELECT i FROM n) AS numbers;
         CREATE TABLE u (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(40) NOT NULL);
         INSERT INTO u SELECT id, CONCAT('u-', id) FROM t WHERE id <= 10000;
         CREATE TABLE w LIKE u;
         INSERT INTO w SELECT id, CONCAT('w-', id) FROM t WHERE id <= 10000;",
    );
    let spec = load_spec(&write_spec(dir, &fixture.spec("")), &fixture.env).expect("spec");
    let source = ferry_connectors::open_source(&spec.source)
        .await
        .expect("source");
    let mut tables = Vec::new();
    for name in ["t", "u", "w"] {
        let name = TableName {
            schema: Some(fixture.source.clone()),
            name: name.into(),
        };
        let table = source.describe_table(&name).await.expect("describe");
        sink.prepare_table(&table, &primary_key_of(&table), &PrepareOptions::default())
            .await
            .expect("prepare");
        tables.push(table);
    }
    let tables = tables.try_into().expect("three tables");
    (source, tables)
}

/// Attempt `attempt` of `chunk` of `run`.
fn attempt_of(run: &str, chunk: u32, attempt: u32) -> Fence {
    Fence {
        run_id: run.into(),
        chunk: ChunkId(chunk),
        attempt: Attempt(attempt),
    }
}

/// The keys below `upper`, or every key.
fn keys_below(upper: Option<i64>) -> ChunkRange {
    ChunkRange::Interval {
        lower: None,
        upper: upper.map(|upper| KeyBound(vec![KeyValue::Int(upper)])),
    }
}

/// The keys from `lower` on.
fn keys_from(lower: i64) -> ChunkRange {
    ChunkRange::Interval {
        lower: Some(KeyBound(vec![KeyValue::Int(lower)])),
        upper: None,
    }
}

/// Two chunks of one table copied at once into an empty target: the lower one must not
/// wait for the upper one's uncommitted rows just past its range (a range DELETE there
/// would, as InnoDB locks the first row after the range).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_on_an_empty_range_does_not_wait_for_its_neighbours_uncommitted_rows() {
    let _load_data = LOCAL_INFILE.read().await;
    let fixture = Fixture::new("");
    let server = &fixture.server;
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = open_target(&fixture, dir.path(), fixture.env[TARGET_VAR].clone()).await;
    let (source, [t, _, _]) = zombie_tables(&fixture, dir.path(), &sink).await;
    let key = primary_key_of(&t);
    let run = format!("n-{}", unique_suffix());
    let (lower, upper) = (keys_below(Some(10001)), keys_from(10001));
    // Chunk 2 holds uncommitted rows from 10001 on, right past chunk 1's range.
    let neighbour =
        StalledWrite::start(source.as_ref(), &sink, &t, &upper, attempt_of(&run, 2, 1)).await;
    neighbour.wait_loading(server).await;
    let started = Instant::now();
    let batches = source.read_chunk(&t, &key, &lower).await.expect("read");
    let first = spawn_write(&sink, &t, &key, &lower, attempt_of(&run, 1, 1), batches);
    let written = tokio::time::timeout(REPLACE_BOUND, first)
        .await
        .expect("chunk 1 waited for chunk 2 to commit")
        .expect("write task")
        .expect("chunk 1 commits");
    eprintln!(
        "chunk 1 committed in {:?} beside the open chunk 2",
        started.elapsed()
    );
    assert_eq!((written.rows_written, written.rows_deleted), (10000, 0));
    let summary = neighbour.finish().await.expect("chunk 2 commits");
    assert_eq!(summary.rows_written, 10000);
    assert_same_rows(&fixture, "t", "TRUE", 20000);

    // A re-copy of chunk 1 still clears its range first (the rows are there now).
    let batches = source.read_chunk(&t, &key, &lower).await.expect("read");
    let again = write_chunk(
        sink.as_ref(),
        &t,
        &key,
        &lower,
        &attempt_of(&run, 1, 2),
        batches,
    )
    .await
    .expect("re-copy");
    assert_eq!((again.rows_written, again.rows_deleted), (10000, 10000));
    assert_same_rows(&fixture, "t", "TRUE", 20000);
}

/// A worker stopped in the middle of chunk 5 (attempt 1) holds the fence row; attempt 2
/// of the chunk ends that session and commits at once, the zombie cannot commit after
/// it, and in-flight attempts of another chunk or another run are left alone.
async fn new_attempt_ends_the_stopped_attempt_of_its_chunk_only(target_parameters: &str) {
    let fixture = Fixture::new(target_parameters);
    let server = &fixture.server;
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = open_target(&fixture, dir.path(), fixture.env[TARGET_VAR].clone()).await;
    let (source, [t, u, w]) = zombie_tables(&fixture, dir.path(), &sink).await;
    let key = primary_key_of(&t);
    let (low, whole) = (keys_below(Some(10001)), keys_below(None));
    // Named locks are server-wide: runs of their own, as every job run has.
    let (run_a, run_b) = (
        format!("a-{}", unique_suffix()),
        format!("b-{}", unique_suffix()),
    );
    let (run_a, run_b) = (run_a.as_str(), run_b.as_str());

    // In flight at once: the zombie (run a, chunk 5, attempt 1), another chunk of the
    // same run, and the same chunk number of another run. (Those two write other tables:
    // an uncommitted row just past chunk 5's range, as another chunk of `t` would insert,
    // blocks chunk 5's DELETE of its range until that chunk commits.)
    let source = source.as_ref();
    let zombie = StalledWrite::start(source, &sink, &t, &low, attempt_of(run_a, 5, 1)).await;
    let neighbour = StalledWrite::start(source, &sink, &w, &whole, attempt_of(run_a, 6, 1)).await;
    let other_run = StalledWrite::start(source, &sink, &u, &whole, attempt_of(run_b, 5, 1)).await;
    for stalled in [&zombie, &neighbour, &other_run] {
        stalled.wait_loading(server).await;
    }

    // Attempt 2 of chunk 5 writes the whole range, within the bound.
    let started = Instant::now();
    let batches = source.read_chunk(&t, &key, &low).await.expect("read");
    let replacing = spawn_write(&sink, &t, &key, &low, attempt_of(run_a, 5, 2), batches);
    let replaced = tokio::time::timeout(REPLACE_BOUND, replacing)
        .await
        .expect("attempt 2 waited for the stopped attempt 1 instead of ending its session")
        .expect("write task")
        .expect("attempt 2 commits");
    eprintln!(
        "attempt 2 replaced the stopped attempt 1 in {:?}",
        started.elapsed()
    );
    assert_eq!(replaced.rows_written, 10000);
    assert_same_rows(&fixture, "t", "id < 10001", 10000);
    assert_eq!(fenced_attempt(&fixture, run_a, 5), "2");
    let replacing_lock = attempt_of(run_a, 5, 2).attempt_tag(Attempt(2));
    assert_eq!(
        server.sql(&format!(
            "SELECT CONCAT_WS(',', IS_USED_LOCK('{}'), IS_USED_LOCK('{replacing_lock}'))",
            zombie.lock
        )),
        "",
        "the zombie's session is gone and attempt 2 released its lock"
    );
    for alive in [&neighbour, &other_run] {
        assert!(
            lock_holder_is_loading(server, &alive.lock).await,
            "{} was ended too",
            alive.lock
        );
    }

    // The zombie wakes up and ends its input: its session is gone, nothing commits.
    let late = zombie.abandon().await;
    assert!(late.is_err(), "the stopped attempt committed: {late:?}");
    eprintln!("the stopped attempt 1 ended with: {late:?}");
    assert_same_rows(&fixture, "t", "id < 10001", 10000);
    assert_eq!(fenced_attempt(&fixture, run_a, 5), "2");

    // The other chunk and the other run were not touched: they finish and commit.
    for (stalled, table, run, chunk) in [(neighbour, "w", run_a, 6), (other_run, "u", run_b, 5)] {
        let lock = stalled.lock.clone();
        let summary = stalled
            .finish()
            .await
            .unwrap_or_else(|error| panic!("{lock} failed: {error}"));
        assert_eq!(summary.rows_written, 10000, "{lock}");
        assert_same_rows(&fixture, table, "TRUE", 10000);
        assert_eq!(fenced_attempt(&fixture, run, chunk), "1");
        assert_eq!(
            server.sql(&format!("SELECT IS_USED_LOCK('{lock}') IS NULL")),
            "1",
            "{lock} was released"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_attempt_ends_the_stopped_older_attempt_in_the_middle_of_load_data() {
    let _load_data = LOCAL_INFILE.read().await;
    new_attempt_ends_the_stopped_attempt_of_its_chunk_only("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_attempt_ends_the_stopped_older_attempt_between_inserts() {
    new_attempt_ends_the_stopped_attempt_of_its_chunk_only("?ferry_write_method=insert").await;
}

/// Two accounts of the server, dropped on drop.
struct Accounts<'a> {
    server: &'a Server,
    names: Vec<String>,
}

impl Drop for Accounts<'_> {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for name in &self.names {
                self.server
                    .sql(&format!("DROP USER IF EXISTS '{name}'@'%'"));
            }
        }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_privilege_to_kill_a_new_attempt_waits_for_the_older_one_as_before() {
    let _load_data = LOCAL_INFILE.read().await;
    let fixture = Fixture::new("");
    let server = &fixture.server;
    let dir = tempfile::tempdir().expect("tempdir");
    // The zombie writes as one account, the new attempt as another without CONNECTION
    // ADMIN or SUPER: its KILL is refused (1095, not owner of the thread).
    let suffix = unique_suffix();
    let accounts = Accounts {
        server,
        names: vec![format!("ferry_a_{suffix}"), format!("ferry_b_{suffix}")],
    };
    let mut sinks = Vec::new();
    for name in &accounts.names {
        server.sql(&format!(
            "CREATE USER '{name}'@'%' IDENTIFIED BY 'pw-{suffix}'; \
             GRANT ALL ON {}.* TO '{name}'@'%';",
            quote_ident(&fixture.target)
        ));
        let url = format!(
            "mysql://{name}:pw-{suffix}@{}:{}/{}",
            server.host, server.port, fixture.target
        );
        sinks.push(open_target(&fixture, dir.path(), url).await);
    }
    let (source, [t, _, _]) = zombie_tables(&fixture, dir.path(), &sinks[0]).await;
    let key = primary_key_of(&t);
    let low = keys_below(Some(10001));
    let run = format!("p-{suffix}");
    let run = run.as_str();
    let zombie =
        StalledWrite::start(source.as_ref(), &sinks[0], &t, &low, attempt_of(run, 5, 1)).await;
    zombie.wait_loading(server).await;

    let batches = source.read_chunk(&t, &key, &low).await.expect("read");
    let replacing = spawn_write(&sinks[1], &t, &key, &low, attempt_of(run, 5, 2), batches);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!replacing.is_finished(), "attempt 2 did not wait");
    assert!(
        lock_holder_is_loading(server, &zombie.lock).await,
        "an account without the privilege ended another account's session"
    );
    // The older attempt goes on and commits; the new one then overwrites the range.
    let older = zombie.finish().await.expect("attempt 1 commits");
    assert_eq!(older.rows_written, 10000);
    let newer = tokio::time::timeout(REPLACE_BOUND, replacing)
        .await
        .expect("attempt 2 goes on once attempt 1 commits")
        .expect("write task")
        .expect("attempt 2 commits");
    assert_eq!(newer.rows_deleted, 10000);
    assert_same_rows(&fixture, "t", "id < 10001", 10000);
    assert_eq!(fenced_attempt(&fixture, run, 5), "2");
}
