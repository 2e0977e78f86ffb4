//! TLS to the databases, against the TLS-only PostgreSQL and MariaDB of
//! `scripts/services.sh` (`FERRY_TEST_PG_TLS_URL`, `FERRY_TEST_MYSQL_TLS_URL`, the test CA
//! and certificates in `FERRY_TEST_TLS_DIR`). Their certificate names only `localhost`,
//! so dialling `127.0.0.1` with full verification meets a certificate for another name.
//!
//! Fully verified connections copy a table (PostgreSQL → PostgreSQL, MariaDB → MariaDB,
//! PostgreSQL → MariaDB), checked with each engine's own shell over TLS; a wrong CA, a
//! certificate for another name, plaintext, a missing client certificate, a refused
//! connection and an unreadable certificate file each fail when the job opens, with the
//! message naming the endpoint and the fix, and the target table is never created.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use ferry_connectors::ErrorKind;
use ferry_coordination::ChunkState;
use ferry_ctl::local::{LocalError, LocalJob, load_spec};
use ferry_tests::{
    env_url, psql, run_local_with_env, run_shell, unique_suffix, wait_until_async, write_spec,
};
use tokio_util::sync::CancellationToken;

const ROWS: i64 = 1500;
const TLS_USER: &str = "ferry_cert";

/// A file of the test CA's folder.
fn tls_file(name: &str) -> String {
    PathBuf::from(env_url("FERRY_TEST_TLS_DIR"))
        .join(name)
        .display()
        .to_string()
}

/// The port of a `scheme://user@host:port/db` URL.
fn port_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once(':')
        .map(|(_, port)| port.to_string())
        .expect("the test URL names its port")
}

fn pg_port() -> String {
    port_of(&env_url("FERRY_TEST_PG_TLS_URL"))
}

fn my_port() -> String {
    port_of(&env_url("FERRY_TEST_MYSQL_TLS_URL"))
}

/// A URL of the TLS-only PostgreSQL.
fn pg_url(user: &str, host: &str, database: &str, parameters: &str) -> String {
    format!(
        "postgres://{user}@{host}:{}/{database}?{parameters}",
        pg_port()
    )
}

/// Full verification against the test CA.
fn verify_full() -> String {
    format!("sslmode=verify-full&sslrootcert={}", tls_file("ca.crt"))
}

/// libpq's own view of the TLS-only PostgreSQL, fully verified.
fn pg_shell(database: &str, sql: &str) -> String {
    psql(
        &pg_url("postgres", "localhost", database, &verify_full()),
        sql,
    )
}

/// A URL of the TLS-only MariaDB.
fn my_url(user: &str, host: &str, database: &str, parameters: &str) -> String {
    format!(
        "mysql://{user}@{host}:{}/{database}?{parameters}",
        my_port()
    )
}

fn verify_identity() -> String {
    format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", tls_file("ca.crt"))
}

/// The `mariadb` shell over verified TLS; tab-separated output as `|`-separated lines.
fn my_shell(sql: &str) -> String {
    let mut command = Command::new("mariadb");
    command.args([
        "--no-defaults",
        "-N",
        "-B",
        "--protocol=tcp",
        "-h",
        "localhost",
        "-P",
        &my_port(),
        "-u",
        "root",
        "--ssl",
        "--ssl-verify-server-cert",
        &format!("--ssl-ca={}", tls_file("ca.crt")),
    ]);
    run_shell(command, sql).replace('\t', "|")
}

/// `id|name|amount×100` of every row, sorted by id, from PostgreSQL.
fn pg_rows(database: &str, table: &str) -> String {
    pg_shell(
        database,
        &format!("SELECT id, name, (amount * 100)::bigint FROM {table} ORDER BY id"),
    )
}

/// The same from MariaDB.
fn my_rows(database: &str) -> String {
    my_shell(&format!(
        "SELECT id, name, CAST(amount * 100 AS SIGNED) FROM `{database}`.items ORDER BY id"
    ))
    .trim()
    .to_string()
}

/// A source table on the TLS-only PostgreSQL (schema `schema` of ferry_test) and a
/// target database owned by ferry_cert; both dropped on drop.
struct PgFixture {
    schema: String,
    target: String,
}

impl PgFixture {
    fn new() -> PgFixture {
        let suffix = unique_suffix();
        let fixture = PgFixture {
            schema: format!("tls_src_{suffix}"),
            target: format!("tls_dst_{suffix}"),
        };
        pg_shell(
            "ferry_test",
            &format!(
                "CREATE SCHEMA {schema};
                 CREATE TABLE {schema}.items (id bigint PRIMARY KEY, name text, amount numeric(12,2));
                 INSERT INTO {schema}.items SELECT g, 'naïve ✓ ' || g, g / 4.0 FROM generate_series(1, {ROWS}) g;
                 GRANT USAGE ON SCHEMA {schema} TO {TLS_USER};
                 GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {TLS_USER};",
                schema = fixture.schema
            ),
        );
        pg_shell(
            "ferry_test",
            &format!("CREATE DATABASE {} OWNER {TLS_USER}", fixture.target),
        );
        fixture
    }

    fn source_rows(&self) -> String {
        pg_rows("ferry_test", &format!("{}.items", self.schema))
    }

    /// Whether the target table exists (the schema is created with it).
    fn target_table_exists(&self) -> bool {
        pg_shell(
            &self.target,
            &format!("SELECT to_regclass('{}.items') IS NOT NULL", self.schema),
        ) == "t"
    }
}

impl Drop for PgFixture {
    fn drop(&mut self) {
        let url = pg_url("postgres", "localhost", "ferry_test", &verify_full());
        for sql in [
            format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.target),
        ] {
            let _ = Command::new("psql")
                .args(["-X", "-q", "-d", &url, "-c", &sql])
                .output();
        }
    }
}

/// A source and a target database on the TLS-only MariaDB, dropped on drop.
struct MyFixture {
    source: String,
    target: String,
}

impl MyFixture {
    fn new() -> MyFixture {
        let suffix = unique_suffix();
        let fixture = MyFixture {
            source: format!("tls_src_{suffix}"),
            target: format!("tls_dst_{suffix}"),
        };
        my_shell(&format!(
            "CREATE DATABASE {source} CHARACTER SET utf8mb4; CREATE DATABASE {target} CHARACTER SET utf8mb4;
             CREATE TABLE {source}.items (id bigint PRIMARY KEY, name varchar(100), amount decimal(12,2)) DEFAULT CHARSET=utf8mb4;
             SET SESSION max_recursive_iterations = 100000;
             INSERT INTO {source}.items WITH RECURSIVE n(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM n WHERE g < {ROWS})
               SELECT g, CONCAT('naïve ✓ ', g), g / 4.0 FROM n;",
            source = fixture.source,
            target = fixture.target
        ));
        fixture
    }

    /// Whether the target database holds any table.
    fn target_has_tables(&self) -> bool {
        my_shell(&format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}'",
            self.target
        ))
        .trim()
            != "0"
    }
}

impl Drop for MyFixture {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            my_shell(&format!(
                "DROP DATABASE IF EXISTS {}; DROP DATABASE IF EXISTS {};",
                self.source, self.target
            ))
        });
    }
}

fn spec(source_kind: &str, target_kind: &str, table: &str) -> String {
    format!(
        "name: tls\nsource: {{ kind: {source_kind}, url_env: SRC }}\n\
         target: {{ kind: {target_kind}, url_env: DST }}\n\
         tables: {{ include: [\"{table}\"] }}\nchunking: {{ target_rows: 500 }}\n"
    )
}

/// Runs the job to the end; every chunk verified.
async fn copy(spec_yaml: &str, source_url: String, target_url: String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), spec_yaml);
    let env = HashMap::from([
        ("SRC".to_string(), source_url),
        ("DST".to_string(), target_url),
    ]);
    let (_, outcome, _) = run_local_with_env(
        &spec_path,
        &dir.path().join("state.db"),
        2,
        vec![],
        CancellationToken::new(),
        &env,
    )
    .await;
    assert!(!outcome.interrupted);
    assert!(outcome.chunks.len() >= 2, "{} chunks", outcome.chunks.len());
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "{chunk:?}");
    }
}

/// Opens the job and expects it refused; returns the message.
async fn refused(spec_yaml: &str, source_url: String, target_url: String) -> (String, ErrorKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), spec_yaml);
    let env = HashMap::from([
        ("SRC".to_string(), source_url),
        ("DST".to_string(), target_url),
    ]);
    let spec = load_spec(&spec_path, &env).expect("valid spec");
    match LocalJob::open(spec, &dir.path().join("state.db")).await {
        Ok(_) => panic!("the job opened"),
        Err(LocalError::Connector(error)) => (error.to_string(), error.kind()),
        Err(other) => panic!("not a connector error: {other}"),
    }
}

/// Opens the job (both connectors) and expects it to open.
async fn opens(spec_yaml: &str, source_url: String, target_url: String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), spec_yaml);
    let env = HashMap::from([
        ("SRC".to_string(), source_url),
        ("DST".to_string(), target_url),
    ]);
    let spec = load_spec(&spec_path, &env).expect("valid spec");
    if let Err(error) = LocalJob::open(spec, &dir.path().join("state.db")).await {
        panic!("the job did not open: {error}");
    }
}

/// Like [`refused`], against one of the shared plain test servers, which an outage test
/// of another run may have stopped for a few seconds: waits until the refusal is not
/// an unavailable server.
async fn refused_by_plain_server(
    spec_yaml: &str,
    source_url: String,
    target_url: String,
) -> (String, ErrorKind) {
    let answer = std::sync::Arc::new(std::sync::Mutex::new(None));
    wait_until_async(std::time::Duration::from_secs(60), || {
        let (spec_yaml, source_url, target_url) = (
            spec_yaml.to_string(),
            source_url.clone(),
            target_url.clone(),
        );
        let answer = answer.clone();
        async move {
            let refusal = refused(&spec_yaml, source_url, target_url).await;
            let done = refusal.1 != ErrorKind::Unavailable;
            *answer.lock().expect("lock") = Some(refusal);
            done
        }
    })
    .await
    .expect("the plain test server answers within 60 s");
    let refusal = answer.lock().expect("lock").take();
    refusal.expect("an answer")
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_full_copies_and_a_verified_client_certificate_is_accepted() {
    let fixture = PgFixture::new();
    let table = format!("{}.items", fixture.schema);
    // the target user must present its certificate (pg_hba: cert)
    let target = pg_url(
        TLS_USER,
        "localhost",
        &fixture.target,
        &format!(
            "{}&sslcert={}&sslkey={}",
            verify_full(),
            tls_file("client.crt"),
            tls_file("client.key")
        ),
    );
    copy(
        &spec("postgres", "postgres", &table),
        pg_url("postgres", "localhost", "ferry_test", &verify_full()),
        target,
    )
    .await;
    let expected = fixture.source_rows();
    assert_eq!(expected.lines().count() as i64, ROWS);
    assert_eq!(pg_rows(&fixture.target, &table), expected);
    // the target table was created by ferry_cert, who can only log in over TLS with
    // its certificate
    assert_eq!(
        pg_shell(
            &fixture.target,
            &format!(
                "SELECT tableowner FROM pg_tables WHERE schemaname = '{}' AND tablename = 'items'",
                fixture.schema
            )
        ),
        TLS_USER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refusals_name_the_endpoint_and_the_fix_before_any_row_moves() {
    let fixture = PgFixture::new();
    let table = format!("{}.items", fixture.schema);
    let source = pg_url("postgres", "localhost", "ferry_test", &verify_full());
    let port = pg_port();
    let database = fixture.target.clone();
    let label = |host: &str, user: &str| format!("postgres://{user}@{host}:{port}/{database}");
    let other_ca = tls_file("other-ca.crt");
    let cases = [
        (
            "wrong CA",
            pg_url(
                "postgres",
                "localhost",
                &database,
                &format!("sslmode=verify-full&sslrootcert={other_ca}"),
            ),
            format!(
                "cannot open target database {}: the server certificate of localhost:{port} is \
                 not signed by the CA in sslrootcert={other_ca}: set sslrootcert= to the file of \
                 the CA that signed the server's certificate (or sslmode=require without \
                 sslrootcert to encrypt without verifying)",
                label("localhost", "postgres")
            ),
            ErrorKind::Permanent,
        ),
        (
            "certificate for another host name",
            pg_url("postgres", "127.0.0.1", &database, &verify_full()),
            format!(
                "cannot open target database {}: the server certificate of 127.0.0.1:{port} is \
                 for localhost, not for 127.0.0.1 (the host in the URL): connect to a host name \
                 the certificate names, or use sslmode=verify-ca to check the CA only",
                label("127.0.0.1", "postgres")
            ),
            ErrorKind::Permanent,
        ),
        (
            "plaintext against a TLS-only server",
            pg_url("postgres", "127.0.0.1", &database, "sslmode=disable"),
            format!(
                "cannot open target database {}: the server requires TLS (pg_hba.conf rejects \
                 connection for host \"127.0.0.1\", user \"postgres\", database \"{database}\", \
                 no encryption): add sslmode=require to the URL (or sslmode=verify-full with \
                 sslrootcert=<the server's CA file>)",
                label("127.0.0.1", "postgres")
            ),
            ErrorKind::Permanent,
        ),
        (
            "missing client certificate",
            pg_url(TLS_USER, "localhost", &database, &verify_full()),
            format!(
                "cannot open target database {}: the server requires a client certificate for \
                 user {TLS_USER} (connection requires a valid client certificate): add \
                 sslcert=<certificate file> and sslkey=<key file> to the URL",
                label("localhost", TLS_USER)
            ),
            ErrorKind::Permanent,
        ),
        (
            "unreadable certificate file",
            pg_url(
                "postgres",
                "localhost",
                &database,
                "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
            ),
            format!(
                "cannot open target database {}: cannot read sslrootcert=/nonexistent/ca.crt: No \
                 such file or directory (os error 2); check the path and that this process may \
                 read it",
                label("localhost", "postgres")
            ),
            ErrorKind::Permanent,
        ),
    ];
    for (case, target, message, kind) in cases {
        let (text, actual_kind) = refused(
            &spec("postgres", "postgres", &table),
            source.clone(),
            target,
        )
        .await;
        assert_eq!(text, message, "{case}");
        assert_eq!(actual_kind, kind, "{case}");
        assert!(
            !fixture.target_table_exists(),
            "{case}: the target table was created"
        );
    }

    // A refused connection may pass: unavailable, not permanent.
    let port = closed_port();
    let (text, kind) = refused(
        &spec("postgres", "postgres", &table),
        source.clone(),
        format!("postgres://postgres@127.0.0.1:{port}/nowhere?connect_timeout=5"),
    )
    .await;
    assert_eq!(
        text,
        format!(
            "cannot open target database postgres://postgres@127.0.0.1:{port}/nowhere: connection \
             refused at 127.0.0.1:{port}: is the server running and listening there?"
        )
    );
    assert_eq!(kind, ErrorKind::Unavailable);

    // A server without TLS (the plain test server) when TLS is required.
    let plain = env_url("FERRY_TEST_PG_URL");
    let plain_label = plain.split('?').next().unwrap_or(&plain).to_string();
    let plain_address = plain_label
        .rsplit_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(address, _)| address.to_string())
        .expect("host:port in FERRY_TEST_PG_URL");
    let (text, kind) = refused_by_plain_server(
        &spec("postgres", "postgres", &table),
        source.clone(),
        format!("{plain_label}?sslmode=require"),
    )
    .await;
    assert_eq!(
        text,
        format!(
            "cannot open target database {plain_label}: the server at {plain_address} does not \
             accept TLS, and sslmode=require requires it: enable ssl on the server, or set \
             sslmode=prefer"
        )
    );
    assert_eq!(kind, ErrorKind::Permanent);

    // Encryption without verification opens at 127.0.0.1 too: libpq's default (prefer)
    // and require without sslrootcert.
    for parameters in ["", "sslmode=require"] {
        opens(
            &spec("postgres", "postgres", &table),
            source.clone(),
            pg_url("postgres", "127.0.0.1", &database, parameters),
        )
        .await;
    }

    // verify-ca checks the CA only: the same 127.0.0.1 connection copies.
    copy(
        &spec("postgres", "postgres", &table),
        source,
        pg_url(
            "postgres",
            "127.0.0.1",
            &database,
            &format!("sslmode=verify-ca&sslrootcert={}", tls_file("ca.crt")),
        ),
    )
    .await;
    assert_eq!(pg_rows(&database, &table), fixture.source_rows());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_verify_identity_copies_and_a_verified_client_certificate_is_accepted() {
    let fixture = MyFixture::new();
    let target = my_url(
        TLS_USER,
        "localhost",
        &fixture.target,
        &format!(
            "{}&ssl-cert={}&ssl-key={}",
            verify_identity(),
            tls_file("client.crt"),
            tls_file("client.key")
        ),
    );
    copy(
        &spec("mysql", "mysql", &format!("{}.items", fixture.source)),
        my_url("root", "localhost", &fixture.source, &verify_identity()),
        target,
    )
    .await;
    let expected = my_rows(&fixture.source);
    assert_eq!(expected.lines().count() as i64, ROWS);
    assert_eq!(my_rows(&fixture.target), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_refusals_name_the_endpoint_and_the_fix_before_any_row_moves() {
    let fixture = MyFixture::new();
    let table = format!("{}.items", fixture.source);
    let source = my_url("root", "localhost", &fixture.source, &verify_identity());
    let port = my_port();
    let database = fixture.target.clone();
    let label = |host: &str, user: &str| format!("mysql://{user}@{host}:{port}/{database}");
    let other_ca = tls_file("other-ca.crt");
    let cases = [
        (
            "wrong CA",
            my_url(
                "root",
                "localhost",
                &database,
                &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={other_ca}"),
            ),
            format!(
                "cannot open target database {}: the server certificate of localhost:{port} is \
                 not signed by the CA in ssl-ca={other_ca}: set ssl-ca= to the file of the CA \
                 that signed the server's certificate (or ssl-mode=REQUIRED to encrypt without \
                 verifying)",
                label("localhost", "root")
            ),
        ),
        (
            "certificate for another host name",
            my_url("root", "127.0.0.1", &database, &verify_identity()),
            format!(
                "cannot open target database {}: the server certificate of 127.0.0.1:{port} is \
                 for localhost, not for 127.0.0.1 (the host in the URL): connect to a host name \
                 the certificate names, or use ssl-mode=VERIFY_CA to check the CA only",
                label("127.0.0.1", "root")
            ),
        ),
        (
            "plaintext against a TLS-only server",
            my_url("root", "127.0.0.1", &database, "ssl-mode=DISABLED"),
            format!(
                "cannot open target database {}: the server requires TLS (Access denied for \
                 user 'root'@'127.0.0.1' (using password: NO), and the same login over TLS is \
                 accepted): add ssl-mode=REQUIRED to the URL (or ssl-mode=VERIFY_IDENTITY with \
                 ssl-ca=<the server's CA file>)",
                label("127.0.0.1", "root")
            ),
        ),
        (
            "missing client certificate",
            my_url(TLS_USER, "localhost", &database, &verify_identity()),
            format!(
                "cannot open target database {}: Access denied for user '{TLS_USER}'@'127.0.0.1' \
                 (using password: NO); check the user and password in the URL, and if the \
                 account requires a client certificate (REQUIRE X509 or SUBJECT), add \
                 ssl-cert=<certificate file>&ssl-key=<key file>",
                label("localhost", TLS_USER)
            ),
        ),
        (
            "unreadable certificate file",
            my_url(
                "root",
                "localhost",
                &database,
                &format!(
                    "ssl-mode=VERIFY_IDENTITY&ssl-ca={}&ssl-cert=/nonexistent/client.crt&ssl-key={}",
                    tls_file("ca.crt"),
                    tls_file("client.key")
                ),
            ),
            format!(
                "cannot open target database {}: cannot read ssl-cert=/nonexistent/client.crt: \
                 No such file or directory (os error 2); check the path and that this process \
                 may read it",
                label("localhost", "root")
            ),
        ),
    ];
    for (case, target, message) in cases {
        let (text, kind) = refused(&spec("mysql", "mysql", &table), source.clone(), target).await;
        assert_eq!(text, message, "{case}");
        assert_eq!(kind, ErrorKind::Permanent, "{case}");
        assert!(
            !fixture.target_has_tables(),
            "{case}: a target table was created"
        );
    }

    let port = closed_port();
    let (text, kind) = refused(
        &spec("mysql", "mysql", &table),
        source.clone(),
        format!("mysql://root@127.0.0.1:{port}/nowhere"),
    )
    .await;
    assert_eq!(
        text,
        format!(
            "cannot open target database mysql://root@127.0.0.1:{port}/nowhere: connection \
             refused at 127.0.0.1:{port}: is the server running and listening there?"
        )
    );
    assert_eq!(kind, ErrorKind::Unavailable);

    // A server without TLS (the plain test server) when TLS is required.
    let plain = env_url("FERRY_TEST_MYSQL_URL");
    let plain_label = plain.split('?').next().unwrap_or(&plain).to_string();
    let plain_address = plain_label
        .rsplit_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(address, _)| address.to_string())
        .expect("host:port in FERRY_TEST_MYSQL_URL");
    let (text, kind) = refused_by_plain_server(
        &spec("mysql", "mysql", &table),
        source.clone(),
        format!("{plain_label}?ssl-mode=REQUIRED"),
    )
    .await;
    assert_eq!(
        text,
        format!(
            "cannot open target database {plain_label}: the server at {plain_address} does not \
             offer TLS, and ssl-mode=REQUIRED requires it: enable TLS on the server (ssl-cert, \
             ssl-key), or set ssl-mode=PREFERRED"
        )
    );
    assert_eq!(kind, ErrorKind::Permanent);

    // Encryption without verification opens at 127.0.0.1 too: the mysql client's default
    // (PREFERRED) and REQUIRED.
    for parameters in ["", "ssl-mode=REQUIRED"] {
        opens(
            &spec("mysql", "mysql", &table),
            source.clone(),
            my_url("root", "127.0.0.1", &database, parameters),
        )
        .await;
    }

    // VERIFY_CA checks the CA only: the same 127.0.0.1 connection copies.
    copy(
        &spec("mysql", "mysql", &table),
        source,
        my_url(
            "root",
            "127.0.0.1",
            &database,
            &format!("ssl-mode=VERIFY_CA&ssl-ca={}", tls_file("ca.crt")),
        ),
    )
    .await;
    assert_eq!(my_rows(&database), my_rows(&fixture.source));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_mysql_both_fully_verified() {
    let pg = PgFixture::new();
    let my = MyFixture::new();
    let table = format!("{}.items", pg.schema);
    copy(
        &spec("postgres", "mysql", &table),
        pg_url("postgres", "localhost", "ferry_test", &verify_full()),
        my_url("root", "localhost", &my.target, &verify_identity()),
    )
    .await;
    assert_eq!(my_rows(&my.target), pg.source_rows());
}
