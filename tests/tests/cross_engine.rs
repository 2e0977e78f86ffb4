//! Every pair of different engines: SQLite ↔ PostgreSQL ↔ MySQL/MariaDB. Each copies a table
//! of the types both sides can hold (with edge values) in several chunks, then checks the
//! target independently: each engine's own shell prints every row in one canonical text
//! form computed in its own SQL, and the two sets must be equal.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use ferry_coordination::ChunkState;
use ferry_tests::{
    env_url, mariadb, psql, run_local_with_env, run_shell, unique_suffix, with_database, write_spec,
};
use tokio_util::sync::CancellationToken;

fn sqlite(path: &Path, sql: &str) -> String {
    let mut command = Command::new("sqlite3");
    command.args(["-separator", "|"]).arg(path);
    run_shell(command, sql)
}

/// Asserts two row sets are equal, showing only the first differences.
fn assert_same_rows(actual: &[String], expected: &[String], what: &str) {
    let missing: Vec<&String> = expected
        .iter()
        .filter(|row| !actual.contains(row))
        .take(3)
        .collect();
    let extra: Vec<&String> = actual
        .iter()
        .filter(|row| !expected.contains(row))
        .take(3)
        .collect();
    let shorten = |rows: Vec<&String>| {
        rows.iter()
            .map(|row| row.chars().take(300).collect::<String>())
            .collect::<Vec<_>>()
    };
    assert!(
        actual == expected,
        "{what}: {} rows in the target, {} expected; missing {:?}; unexpected {:?}",
        actual.len(),
        expected.len(),
        shorten(missing),
        shorten(extra)
    );
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

const ROWS: i64 = 2400;

// Canonical row text per engine: id | i | amount×100 | hex(name) | hex(data) | date | timestamp µs | f×1024 | b
const PG_ROW: &str = "SELECT id::text, coalesce(i::text,'N'), coalesce(((amount*100)::bigint)::text,'N'), \
    coalesce(encode(convert_to(name,'UTF8'),'hex'),'N'), coalesce(encode(data,'hex'),'N'), \
    coalesce(to_char(d,'YYYY-MM-DD'),'N'), coalesce(to_char(ts,'YYYY-MM-DD HH24:MI:SS.US'),'N'), \
    coalesce(((f*1024)::bigint)::text,'N'), coalesce((b::int)::text,'N') FROM";
const MY_ROW: &str = "SELECT CAST(id AS CHAR), COALESCE(CAST(i AS CHAR),'N'), COALESCE(CAST(CAST(ROUND(amount*100) AS SIGNED) AS CHAR),'N'), \
    COALESCE(LOWER(HEX(name)),'N'), COALESCE(LOWER(HEX(data)),'N'), COALESCE(DATE_FORMAT(d,'%Y-%m-%d'),'N'), \
    COALESCE(DATE_FORMAT(ts,'%Y-%m-%d %H:%i:%s.%f'),'N'), COALESCE(CAST(CAST(ROUND(f*1024) AS SIGNED) AS CHAR),'N'), \
    COALESCE(CAST(CAST(b AS SIGNED) AS CHAR),'N') FROM";
const SQLITE_ROW: &str = "SELECT CAST(id AS TEXT), coalesce(CAST(i AS TEXT),'N'), \
    coalesce(CAST(CAST(ROUND(CAST(amount AS REAL)*100) AS INTEGER) AS TEXT),'N'), CASE WHEN name IS NULL THEN 'N' ELSE lower(hex(name)) END, \
    CASE WHEN data IS NULL THEN 'N' ELSE lower(hex(data)) END, coalesce(d,'N'), coalesce(CASE WHEN instr(ts,'.')=0 THEN ts||'.000000' ELSE ts END,'N'), \
    coalesce(CAST(CAST(ROUND(f*1024) AS INTEGER) AS TEXT),'N'), coalesce(CAST(b AS TEXT),'N') FROM";
// The SQLite source has no decimal, date, timestamp or boolean columns: those print as N.
const SQLITE_SOURCE_ROW: &str = "SELECT CAST(id AS TEXT), coalesce(CAST(i AS TEXT),'N'), 'N', CASE WHEN name IS NULL THEN 'N' ELSE lower(hex(name)) END, \
    CASE WHEN data IS NULL THEN 'N' ELSE lower(hex(data)) END, 'N', 'N', coalesce(CAST(CAST(ROUND(f*1024) AS INTEGER) AS TEXT),'N'), 'N' FROM";

fn pg_source_sql(schema: &str) -> String {
    format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.items (id bigint PRIMARY KEY, i integer, amount numeric(12,2), name text, data bytea,
           d date, ts timestamp, f double precision, b boolean);
         INSERT INTO {schema}.items SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE (g * 7919) % 100000 - 50000 END,
           ((g * 31) % 1000000) / 100.0 - 5000, CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'naïve ✓ 名前 ' || g END,
           CASE WHEN g % 3 = 0 THEN NULL ELSE decode(lpad(to_hex(g), 8, '0') || '00ff', 'hex') END,
           date '1900-01-01' + (g * 37) % 73000, timestamp '1969-12-31 23:59:59.5' + g * interval '1 hour 0.000123 second',
           (g % 200) / 8.0 - 12.5, CASE g % 3 WHEN 0 THEN true WHEN 1 THEN false END
           FROM generate_series(1, {ROWS}) g;
         INSERT INTO {schema}.items VALUES (-9223372036854775808, -2147483648, -9999999999.99, 'é''\"\\\\', '\\x00', '0001-01-01', '1000-01-01 00:00:00', -1e6, true),
           (9223372036854775807, 2147483647, 9999999999.99, repeat('x', 100000), '\\x', '9999-12-31', '9999-12-31 23:59:59.999999', 1e6, false);"
    )
}

fn my_source_sql(database: &str) -> String {
    format!(
        "CREATE DATABASE {database} CHARACTER SET utf8mb4; USE {database}; SET SESSION max_recursive_iterations = 1000000;
         CREATE TABLE items (id bigint PRIMARY KEY, i int, amount decimal(12,2), name longtext, data longblob,
           d date, ts datetime(6), f double, b tinyint(1)) DEFAULT CHARSET=utf8mb4;
         INSERT INTO items WITH RECURSIVE n(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM n WHERE g < {ROWS})
           SELECT g, IF(g % 7 = 0, NULL, (g * 7919) % 100000 - 50000), ((g * 31) % 1000000) / 100.0 - 5000,
           CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE CONCAT('naïve ✓ 名前 ', g) END,
           IF(g % 3 = 0, NULL, UNHEX(CONCAT(LPAD(HEX(g), 8, '0'), '00FF'))),
           DATE_ADD('1900-01-01', INTERVAL (g * 37) % 73000 DAY),
           DATE_ADD('1969-12-31 23:59:59.5', INTERVAL g * 3600000123 MICROSECOND),
           (g % 200) / 8.0 - 12.5, CASE g % 3 WHEN 0 THEN 1 WHEN 1 THEN 0 END FROM n;
         INSERT INTO items VALUES (-9223372036854775808, -2147483648, -9999999999.99, 'é''\"\\\\', X'00', '1000-01-01', '1000-01-01 00:00:00', -1e6, 1),
           (9223372036854775807, 2147483647, 9999999999.99, REPEAT('x', 100000), X'', '9999-12-31', '9999-12-31 23:59:59.999999', 1e6, 0);"
    )
}

fn sqlite_source(path: &Path) {
    sqlite(
        path,
        &format!(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, i INTEGER, name TEXT, data BLOB, f REAL);
             WITH RECURSIVE n(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM n WHERE g < {ROWS})
             INSERT INTO items SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE (g * 7919) % 100000 - 50000 END,
               CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN '' ELSE 'naïve ✓ 名前 ' || g END,
               CASE WHEN g % 3 = 0 THEN NULL ELSE CAST(x'0000ff' || randomblob(g % 5) AS BLOB) END, (g % 200) / 8.0 - 12.5 FROM n;
             INSERT INTO items VALUES (-9223372036854775808, -2147483648, 'é''\"\\', x'00', -1e6), (9223372036854775807, 2147483647, '', x'', 1e6);"
        ),
    );
}

async fn copy(dir: &Path, source: &str, target: &str, table: &str, env: HashMap<String, String>) {
    let spec_path = write_spec(
        dir,
        &format!(
            "name: cross\nsource: {source}\ntarget: {target}\ntables: {{ include: [\"{table}\"] }}\nchunking: {{ target_rows: 500 }}\n"
        ),
    );
    let (prepared, outcome, _) = run_local_with_env(
        &spec_path,
        &dir.join("state.db"),
        3,
        vec![],
        CancellationToken::new(),
        &env,
    )
    .await;
    assert!(!outcome.interrupted);
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "{chunk:?}");
    }
    assert!(
        outcome.chunks.len() >= 4,
        "integer keys are split across engines: {} chunks",
        outcome.chunks.len()
    );
    assert!(
        prepared.job.tables[0].warnings.is_empty(),
        "{:?}",
        prepared.job.tables[0].warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_sqlite_and_back() {
    let pg = env_url("FERRY_TEST_PG_URL");
    let id = unique_suffix();
    let schema = format!("cross_src_{id}");
    psql(&pg, &pg_source_sql(&schema));
    let dir = tempfile::tempdir().expect("tempdir");
    let env = HashMap::from([("SRC".to_string(), pg.clone())]);
    copy(
        dir.path(),
        "{ kind: postgres, url_env: SRC }",
        "{ kind: sqlite, path: target.db }",
        &format!("{schema}.items"),
        env,
    )
    .await;
    let expected = sorted_lines(&psql(&pg, &format!("{PG_ROW} {schema}.items")));
    assert_eq!(expected.len() as i64, ROWS + 2);
    assert_same_rows(
        &sorted_lines(&sqlite(
            &dir.path().join("target.db"),
            &format!("{SQLITE_ROW} items;"),
        )),
        &expected,
        "sqlite target",
    );

    // And SQLite → PostgreSQL, into a database of its own.
    let database = format!("cross_dst_{id}");
    psql(&pg, &format!("CREATE DATABASE {database}"));
    let target_url = with_database(&pg, &database);
    let back = tempfile::tempdir().expect("tempdir");
    sqlite_source(&back.path().join("source.db"));
    let env = HashMap::from([("DST".to_string(), target_url.clone())]);
    copy(
        back.path(),
        "{ kind: sqlite, path: source.db }",
        "{ kind: postgres, url_env: DST }",
        "items",
        env,
    )
    .await;
    let expected = sorted_lines(&sqlite(
        &back.path().join("source.db"),
        &format!("{SQLITE_SOURCE_ROW} items;"),
    ));
    let actual = sorted_lines(&psql(
        &target_url,
        "SELECT id::text, coalesce(i::text,'N'), 'N', coalesce(encode(convert_to(name,'UTF8'),'hex'),'N'), coalesce(encode(data,'hex'),'N'), 'N', 'N', coalesce(((f*1024)::bigint)::text,'N'), 'N' FROM public.items",
    ));
    assert_same_rows(&actual, &expected, "postgres target");
    psql(
        &pg,
        &format!("DROP SCHEMA {schema} CASCADE; DROP DATABASE {database} WITH (FORCE)"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_mysql_and_back() {
    let pg = env_url("FERRY_TEST_PG_URL");
    let my = env_url("FERRY_TEST_MYSQL_URL");
    let id = unique_suffix();
    let schema = format!("cross_src_{id}");
    psql(&pg, &pg_source_sql(&schema));
    let my_target = format!("cross_dst_{id}");
    mariadb(
        &my,
        &format!("CREATE DATABASE {my_target} CHARACTER SET utf8mb4"),
    );
    let my_target_url = with_database(&my, &my_target);
    let dir = tempfile::tempdir().expect("tempdir");
    let env = HashMap::from([
        ("SRC".to_string(), pg.clone()),
        ("DST".to_string(), my_target_url.clone()),
    ]);
    copy(
        dir.path(),
        "{ kind: postgres, url_env: SRC }",
        "{ kind: mysql, url_env: DST }",
        &format!("{schema}.items"),
        env,
    )
    .await;
    let expected = sorted_lines(&psql(&pg, &format!("{PG_ROW} {schema}.items")));
    assert_same_rows(
        &sorted_lines(&mariadb(&my_target_url, &format!("{MY_ROW} items"))),
        &expected,
        "mysql target",
    );

    // MySQL → PostgreSQL.
    let my_source = format!("cross_src_{id}");
    mariadb(&my, &my_source_sql(&my_source));
    let pg_database = format!("cross_dst_{id}");
    psql(&pg, &format!("CREATE DATABASE {pg_database}"));
    let pg_target_url = with_database(&pg, &pg_database);
    let back = tempfile::tempdir().expect("tempdir");
    let env = HashMap::from([
        ("SRC".to_string(), with_database(&my, &my_source)),
        ("DST".to_string(), pg_target_url.clone()),
    ]);
    copy(
        back.path(),
        "{ kind: mysql, url_env: SRC }",
        "{ kind: postgres, url_env: DST }",
        &format!("{my_source}.items"),
        env,
    )
    .await;
    let expected = sorted_lines(&mariadb(
        &with_database(&my, &my_source),
        &format!("{MY_ROW} items"),
    ));
    assert_eq!(expected.len() as i64, ROWS + 2);
    assert_same_rows(
        &sorted_lines(&psql(&pg_target_url, &format!("{PG_ROW} public.items"))),
        &expected,
        "postgres target",
    );

    psql(
        &pg,
        &format!("DROP SCHEMA {schema} CASCADE; DROP DATABASE {pg_database} WITH (FORCE)"),
    );
    mariadb(
        &my,
        &format!("DROP DATABASE {my_target}; DROP DATABASE {my_source}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_to_sqlite() {
    let my = env_url("FERRY_TEST_MYSQL_URL");
    let my_source = format!("cross_sq_{}", unique_suffix());
    mariadb(&my, &my_source_sql(&my_source));
    let dir = tempfile::tempdir().expect("tempdir");
    let source_url = with_database(&my, &my_source);
    let env = HashMap::from([("SRC".to_string(), source_url.clone())]);
    copy(
        dir.path(),
        "{ kind: mysql, url_env: SRC }",
        "{ kind: sqlite, path: target.db }",
        &format!("{my_source}.items"),
        env,
    )
    .await;
    let expected = sorted_lines(&mariadb(&source_url, &format!("{MY_ROW} items")));
    assert_same_rows(
        &sorted_lines(&sqlite(
            &dir.path().join("target.db"),
            &format!("{SQLITE_ROW} items;"),
        )),
        &expected,
        "sqlite target",
    );
    mariadb(&my, &format!("DROP DATABASE {my_source}"));
}

/// Plans a PostgreSQL → SQLite job over `include` (a YAML list) that must be refused;
/// returns the job's folder and the error.
async fn refused_postgres_to_sqlite(pg: &str, include: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = write_spec(
        dir.path(),
        &format!(
            "name: refused\nsource: {{ kind: postgres, url_env: SRC }}\ntarget: {{ kind: sqlite, path: target.db }}\ntables: {{ include: {include} }}\n"
        ),
    );
    let env = HashMap::from([("SRC".to_string(), pg.to_string())]);
    let spec = ferry_ctl::local::load_spec(&spec, &env).expect("spec");
    let job = ferry_ctl::local::LocalJob::open(spec, &dir.path().join("state.db"))
        .await
        .expect("open");
    let error = job.prepare().await.expect_err("refused").to_string();
    (dir, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_source_tables_with_one_target_are_refused() {
    let pg = env_url("FERRY_TEST_PG_URL");
    let id = unique_suffix();
    let (first, second) = (format!("cross_a_{id}"), format!("cross_b_{id}"));
    psql(
        &pg,
        &format!(
            "CREATE SCHEMA {first}; CREATE SCHEMA {second}; CREATE TABLE {first}.items (id int PRIMARY KEY); CREATE TABLE {second}.items (id int PRIMARY KEY);"
        ),
    );
    let (dir, error) =
        refused_postgres_to_sqlite(&pg, &format!("[\"{first}.*\", \"{second}.*\"]")).await;
    assert!(
        error.contains("would both be written to target table items"),
        "{error}"
    );
    assert!(
        !sqlite(
            &dir.path().join("target.db"),
            "SELECT name FROM sqlite_schema"
        )
        .contains("items"),
        "nothing created"
    );
    psql(
        &pg,
        &format!("DROP SCHEMA {first} CASCADE; DROP SCHEMA {second} CASCADE"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_type_ferry_cannot_carry_is_refused_before_anything_is_created() {
    let pg = env_url("FERRY_TEST_PG_URL");
    let schema = format!("cross_inet_{}", unique_suffix());
    psql(
        &pg,
        &format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.hosts (id int PRIMARY KEY, address inet); INSERT INTO {schema}.hosts VALUES (1, '10.0.0.1');"
        ),
    );
    let (dir, error) = refused_postgres_to_sqlite(&pg, &format!("[\"{schema}.hosts\"]")).await;
    assert!(
        error.contains("column address") && error.contains("inet"),
        "{error}"
    );
    assert!(
        !sqlite(
            &dir.path().join("target.db"),
            "SELECT name FROM sqlite_schema"
        )
        .contains("hosts"),
        "nothing created"
    );
    psql(&pg, &format!("DROP SCHEMA {schema} CASCADE"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_postgres_table_goes_to_mysql_through_its_parent_with_a_warning() {
    let pg = env_url("FERRY_TEST_PG_URL");
    let my = env_url("FERRY_TEST_MYSQL_URL");
    let id = unique_suffix();
    let schema = format!("cross_part_{id}");
    psql(
        &pg,
        &format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.events (id bigint PRIMARY KEY, at date NOT NULL, v text)
                 PARTITION BY RANGE (id);
             CREATE TABLE {schema}.low PARTITION OF {schema}.events
                 FOR VALUES FROM (MINVALUE) TO (500);
             CREATE TABLE {schema}.rest PARTITION OF {schema}.events DEFAULT;
             INSERT INTO {schema}.events
                 SELECT i, date '2022-07-01' + i, 'v' || i FROM generate_series(1, 900) AS i;"
        ),
    );
    let my_target = format!("cross_part_{id}");
    mariadb(
        &my,
        &format!("CREATE DATABASE {my_target} CHARACTER SET utf8mb4"),
    );
    let my_target_url = with_database(&my, &my_target);
    let dir = tempfile::tempdir().expect("tempdir");
    let env = HashMap::from([
        ("SRC".to_string(), pg.clone()),
        ("DST".to_string(), my_target_url.clone()),
    ]);
    let spec_path = write_spec(
        dir.path(),
        &format!(
            "name: cross-part\nsource: {{ kind: postgres, url_env: SRC }}\n\
             target: {{ kind: mysql, url_env: DST }}\n\
             tables: {{ include: [\"{schema}.events\"] }}\nchunking: {{ target_rows: 200 }}\n"
        ),
    );
    let (prepared, outcome, _) = run_local_with_env(
        &spec_path,
        &dir.path().join("state.db"),
        2,
        vec![],
        CancellationToken::new(),
        &env,
    )
    .await;
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "{chunk:?}");
        assert_eq!(
            chunk.partition, None,
            "planned through the parent: {chunk:?}"
        );
    }
    // Split on the (integer) key of the parent, across its partitions.
    assert!(outcome.chunks.len() >= 4, "{} chunks", outcome.chunks.len());
    let warnings = &prepared.job.tables[0].warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("has 2 partitions") && w.contains("through the table itself")),
        "{warnings:?}"
    );
    let row = "SELECT id, at, v FROM";
    assert_same_rows(
        &sorted_lines(&mariadb(&my_target_url, &format!("{row} events"))),
        &sorted_lines(&psql(&pg, &format!("{row} {schema}.events"))),
        "mysql target",
    );
    psql(&pg, &format!("DROP SCHEMA {schema} CASCADE"));
    mariadb(&my, &format!("DROP DATABASE {my_target}"));
}
