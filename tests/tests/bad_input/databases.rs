//! Databases that change or refuse under a job, on the real PostgreSQL and MariaDB of
//! `scripts/services.sh`: a source table dropped, renamed or altered between runs of a
//! job, a target table dropped, a target account without INSERT, a wrong password or
//! an unknown role. The first run copies a few chunks and stops (as after Ctrl-C); the
//! bad run must stop with its exit code and a message naming the table and the fix,
//! leaving the source and the rows already in the target untouched; after the fix, the
//! same command completes and the target equals the source (compared with psql or the
//! mariadb shell, not through ferry).

use std::collections::HashMap;

use ferry_tests::{
    Fault, env_url, mariadb, psql, run_local_with_env, unique_suffix, with_database,
};
use tokio_util::sync::CancellationToken;

use crate::common::{Failures, clip, ferryctl, run};

const SOURCE_VAR: &str = "FERRY_BAD_SOURCE";
const TARGET_VAR: &str = "FERRY_BAD_TARGET";
const ROWS: u32 = 1000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    Postgres,
    Mariadb,
}

/// A source and a target database of one engine, dropped at the end.
struct Databases {
    engine: Engine,
    server: String,
    source: String,
    target: String,
}

impl Databases {
    fn new(engine: Engine) -> Databases {
        let suffix = unique_suffix();
        let databases = Databases {
            engine,
            server: match engine {
                Engine::Postgres => env_url("FERRY_TEST_PG_URL"),
                Engine::Mariadb => env_url("FERRY_TEST_MYSQL_URL"),
            },
            source: format!("ferry_badsrc_{suffix}"),
            target: format!("ferry_baddst_{suffix}"),
        };
        for database in [&databases.source, &databases.target] {
            databases.server_sql(&format!("CREATE DATABASE {database}"));
        }
        databases
    }

    fn server_sql(&self, sql: &str) -> String {
        match self.engine {
            Engine::Postgres => psql(&self.server, sql),
            Engine::Mariadb => mariadb(&self.server, sql).trim().to_owned(),
        }
    }

    fn url(&self, database: &str) -> String {
        with_database(&self.server, database)
    }

    /// The URL of `database` as another user (no password, or `password`).
    fn url_as(&self, database: &str, user: &str, password: &str) -> String {
        let url = self.url(database);
        let scheme_end = url.find("://").map_or(0, |at| at + 3);
        let rest = &url[scheme_end..];
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        let credentials = if password.is_empty() {
            user.to_owned()
        } else {
            format!("{user}:{password}")
        };
        format!("{}{credentials}@{host}", &url[..scheme_end])
    }

    fn sql(&self, database: &str, sql: &str) -> String {
        match self.engine {
            Engine::Postgres => psql(&self.url(database), sql),
            Engine::Mariadb => mariadb(&self.url(database), sql).trim().to_owned(),
        }
    }

    fn create_table(&self, table: &str) {
        let sql = match self.engine {
            Engine::Postgres => format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, v text);
                 INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g;
                 ANALYZE {table};"
            ),
            Engine::Mariadb => format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, v text);
                 INSERT INTO {table} SELECT seq, concat('row ', seq) FROM seq_1_to_{ROWS};
                 ANALYZE TABLE {table};"
            ),
        };
        self.sql(&self.source, &sql);
    }

    /// Row count and a hash of every row in key order; `None` when the table is gone.
    fn fingerprint(&self, database: &str, table: &str) -> Option<String> {
        let exists = match self.engine {
            Engine::Postgres => self.sql(database, &format!("SELECT to_regclass('public.{table}') IS NOT NULL")) == "t",
            Engine::Mariadb => self.sql(database, &format!(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '{table}'"
            )) == "1",
        };
        if !exists {
            return None;
        }
        Some(match self.engine {
            Engine::Postgres => self.sql(database, &format!(
                "SELECT count(*) || ' ' || coalesce(md5(string_agg(id || ':' || coalesce(v, 'NULL'), ',' ORDER BY id)), '') FROM {table}"
            )),
            Engine::Mariadb => self.sql(database, &format!(
                "SET SESSION group_concat_max_len = 100000000; \
                 SELECT concat(count(*), ' ', coalesce(md5(group_concat(id, ':', coalesce(v, 'NULL') ORDER BY id SEPARATOR ',')), '')) FROM {table}"
            )),
        })
    }

    fn spec(&self, table: &str) -> String {
        let pattern = match self.engine {
            Engine::Postgres => format!("public.{table}"),
            Engine::Mariadb => table.to_owned(),
        };
        let kind = match self.engine {
            Engine::Postgres => "postgres",
            Engine::Mariadb => "mysql",
        };
        format!(
            "name: {}\nsource: {{ kind: {kind}, url_env: {SOURCE_VAR} }}\ntarget: {{ kind: {kind}, url_env: {TARGET_VAR} }}\n\
             tables: {{ include: [\"{pattern}\"] }}\nchunking: {{ target_rows: 100 }}\nverify: {{ max_attempts: 2 }}\n",
            table.replace('_', "-")
        )
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        for database in [&self.source, &self.target] {
            let sql = match self.engine {
                Engine::Postgres => format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
                Engine::Mariadb => format!("DROP DATABASE IF EXISTS {database}"),
            };
            let _ = std::panic::catch_unwind(|| self.server_sql(&sql));
        }
    }
}

/// What a case does to the databases, and what it expects.
struct Case {
    name: &'static str,
    engine: Engine,
    table: &'static str,
    /// SQL on the source (`Side::Source`) or the target that breaks the job.
    breaks: Vec<(Side, String)>,
    /// SQL run before the first run (creating an account).
    setup: Vec<(Side, String)>,
    /// The target account of every run: the server's, or another (user, password).
    account: TargetAccount,
    /// A password the bad run uses instead of the account's.
    bad_password: Option<&'static str>,
    code: i32,
    needles: Vec<&'static str>,
    /// SQL that fixes it, and whether the fix also needs a fresh state file.
    fixes: Vec<(Side, String)>,
    fresh_state: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Target,
    Server,
}

enum TargetAccount {
    Own,
    /// A user (created by `breaks`), with its password.
    Other(&'static str, &'static str),
}

fn postgres_cases(suffix: &str) -> Vec<Case> {
    let role: &'static str = Box::leak(format!("ferry_noins_{suffix}").into_boxed_str());
    let ghost: &'static str = Box::leak(format!("ferry_ghost_{suffix}").into_boxed_str());
    vec![
        Case {
            name: "PostgreSQL: source table dropped mid-job",
            engine: Engine::Postgres,
            table: "pg_dropped",
            breaks: vec![(Side::Source, "DROP TABLE pg_dropped".into())],
            setup: vec![],
            account: TargetAccount::Own,
            bad_password: None,
            code: 3,
            needles: vec!["source table public.pg_dropped changed since job pg-dropped was planned", "not found in the source database", "restore the table"],
            fixes: vec![(Side::Source, "CREATE TABLE pg_dropped (id bigint PRIMARY KEY, v text); INSERT INTO pg_dropped SELECT g, 'row ' || g FROM generate_series(1, 1000) g".into())],
            fresh_state: false,
        },
        Case {
            name: "PostgreSQL: source table renamed mid-job",
            engine: Engine::Postgres,
            table: "pg_renamed",
            breaks: vec![(Side::Source, "ALTER TABLE pg_renamed RENAME TO pg_renamed_new".into())],
            setup: vec![],
            account: TargetAccount::Own,
            bad_password: None,
            code: 3,
            needles: vec!["source table public.pg_renamed changed", "dropped or renamed"],
            fixes: vec![(Side::Source, "ALTER TABLE pg_renamed_new RENAME TO pg_renamed".into())],
            fresh_state: false,
        },
        Case {
            name: "PostgreSQL: source column added mid-job",
            engine: Engine::Postgres,
            table: "pg_added",
            breaks: vec![(Side::Source, "ALTER TABLE pg_added ADD COLUMN extra int DEFAULT 7".into())],
            setup: vec![],
            account: TargetAccount::Own,
            bad_password: None,
            code: 3,
            needles: vec!["source table public.pg_added changed", "column extra added"],
            fixes: vec![(Side::Source, "ALTER TABLE pg_added DROP COLUMN extra".into())],
            fresh_state: false,
        },
        Case {
            name: "PostgreSQL: source column type changed mid-job",
            engine: Engine::Postgres,
            table: "pg_retyped",
            breaks: vec![(Side::Source, "ALTER TABLE pg_retyped ALTER COLUMN v TYPE varchar(40)".into())],
            setup: vec![],
            account: TargetAccount::Own,
            bad_password: None,
            code: 3,
            needles: vec!["source table public.pg_retyped changed", "column v: type character varying(40), was text"],
            fixes: vec![(Side::Source, "ALTER TABLE pg_retyped ALTER COLUMN v TYPE text".into())],
            fresh_state: false,
        },
        Case {
            name: "PostgreSQL: target table dropped mid-job",
            engine: Engine::Postgres,
            table: "pg_tdropped",
            breaks: vec![(Side::Target, "DROP TABLE pg_tdropped".into())],
            setup: vec![],
            account: TargetAccount::Own,
            bad_password: None,
            code: 3,
            needles: vec!["target table", "pg_tdropped", "another --state"],
            fixes: vec![],
            fresh_state: true,
        },
        Case {
            name: "PostgreSQL: target role without INSERT",
            engine: Engine::Postgres,
            table: "pg_noinsert",
            setup: vec![
                (Side::Server, format!("CREATE ROLE {role} LOGIN")),
                (Side::Target, format!("GRANT USAGE, CREATE ON SCHEMA public TO {role}")),
            ],
            account: TargetAccount::Other(role, ""),
            bad_password: None,
            breaks: vec![(Side::Target, format!("REVOKE INSERT ON pg_noinsert FROM {role}"))],
            code: 1,
            needles: vec!["FAILED chunk", "permission denied for table pg_noinsert", "grant ferry's account the privileges it needs"],
            fixes: vec![(Side::Target, format!("GRANT INSERT ON pg_noinsert TO {role}"))],
            fresh_state: false,
        },
        Case {
            name: "PostgreSQL: target role may not log in",
            engine: Engine::Postgres,
            table: "pg_nologin",
            setup: vec![
                (Side::Server, format!("CREATE ROLE {ghost} LOGIN")),
                (Side::Target, format!("GRANT USAGE, CREATE ON SCHEMA public TO {ghost}")),
            ],
            account: TargetAccount::Other(ghost, ""),
            bad_password: None,
            breaks: vec![(Side::Server, format!("ALTER ROLE {ghost} NOLOGIN"))],
            code: 3,
            needles: vec!["target", ghost, "not permitted to log in"],
            fixes: vec![(Side::Server, format!("ALTER ROLE {ghost} LOGIN"))],
            fresh_state: false,
        },
    ]
}

fn mariadb_cases(suffix: &str) -> Vec<Case> {
    let user: &'static str = Box::leak(format!("ferry_noins_{suffix}").into_boxed_str());
    let pw_user: &'static str = Box::leak(format!("ferry_pw_{suffix}").into_boxed_str());
    vec![
        Case {
            name: "MariaDB: source table dropped mid-job",
            engine: Engine::Mariadb,
            table: "my_dropped",
            breaks: vec![(Side::Source, "DROP TABLE my_dropped".into())],
            setup: vec![],
            account: TargetAccount::Own,
            bad_password: None,
            code: 3,
            needles: vec!["source table", "my_dropped changed since job my-dropped was planned", "restore the table"],
            fixes: vec![(Side::Source, "CREATE TABLE my_dropped (id bigint PRIMARY KEY, v text); INSERT INTO my_dropped SELECT seq, concat('row ', seq) FROM seq_1_to_1000".into())],
            fresh_state: false,
        },
        Case {
            name: "MariaDB: source column added mid-job",
            engine: Engine::Mariadb,
            table: "my_added",
            breaks: vec![(Side::Source, "ALTER TABLE my_added ADD COLUMN extra int DEFAULT 7".into())],
            setup: vec![],
            account: TargetAccount::Own,
            bad_password: None,
            code: 3,
            needles: vec!["my_added changed", "column extra added"],
            fixes: vec![(Side::Source, "ALTER TABLE my_added DROP COLUMN extra".into())],
            fresh_state: false,
        },
        Case {
            name: "MariaDB: target user without INSERT",
            engine: Engine::Mariadb,
            table: "my_noinsert",
            setup: vec![(Side::Server, format!("CREATE USER '{user}'@'%'; GRANT ALL ON *.* TO '{user}'@'%'"))],
            account: TargetAccount::Other(user, ""),
            bad_password: None,
            breaks: vec![(Side::Server, format!("REVOKE INSERT ON *.* FROM '{user}'@'%'"))],
            code: 1,
            needles: vec!["FAILED chunk", "INSERT command denied", "my_noinsert", "grant ferry's account the privileges it needs"],
            fixes: vec![(Side::Server, format!("GRANT INSERT ON *.* TO '{user}'@'%'"))],
            fresh_state: false,
        },
        Case {
            name: "MariaDB: wrong password",
            engine: Engine::Mariadb,
            table: "my_password",
            setup: vec![(Side::Server, format!(
                "CREATE USER '{pw_user}'@'%' IDENTIFIED BY 'right-password'; GRANT ALL ON *.* TO '{pw_user}'@'%'"
            ))],
            account: TargetAccount::Other(pw_user, "right-password"),
            bad_password: Some("wrong-password"),
            breaks: vec![],
            code: 3,
            needles: vec!["target", "Access denied for user", pw_user],
            fixes: vec![],
            fresh_state: false,
        },
    ]
}

async fn run_case(case: &Case, failures: &mut Failures) {
    let databases = Databases::new(case.engine);
    databases.create_table(case.table);
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("job.yaml");
    std::fs::write(&spec, databases.spec(case.table)).expect("spec");
    let state = dir.path().join("state.db");
    let own_env = HashMap::from([
        (SOURCE_VAR.to_owned(), databases.url(&databases.source)),
        (
            TARGET_VAR.to_owned(),
            match case.account {
                TargetAccount::Own => databases.url(&databases.target),
                TargetAccount::Other(user, password) => {
                    databases.url_as(&databases.target, user, password)
                }
            },
        ),
    ]);
    for (side, sql) in &case.setup {
        side_sql(&databases, *side, sql);
    }
    // The first run: three chunks, then a stop.
    let cancel = CancellationToken::new();
    run_local_with_env(
        &spec,
        &state,
        1,
        vec![Fault::CancelAfterWrites {
            writes: 3,
            token: cancel.clone(),
        }],
        cancel,
        &own_env,
    )
    .await;
    let source_before = databases.fingerprint(&databases.source, case.table);
    let target_before = databases.fingerprint(&databases.target, case.table);
    assert!(
        target_before
            .as_ref()
            .is_some_and(|print| !print.starts_with("0 ")),
        "{}: the first run copied nothing",
        case.name
    );
    for (side, sql) in &case.breaks {
        side_sql(&databases, *side, sql);
    }
    let mut bad_env = own_env.clone();
    if let (TargetAccount::Other(user, _), Some(password)) = (&case.account, case.bad_password) {
        bad_env.insert(
            TARGET_VAR.to_owned(),
            databases.url_as(&databases.target, user, password),
        );
    }
    let local = |env: &HashMap<String, String>| {
        let mut command = ferryctl();
        command
            .arg("local")
            .arg(&spec)
            .arg("--state")
            .arg(&state)
            .args(["--control-addr", "127.0.0.1:0", "--workers", "2"])
            .envs(env);
        command
    };
    let (code, stdout, stderr) = run(&mut local(&bad_env));
    let output = format!("{stdout}{stderr}");
    crate::common::show(case.name, code, &output);
    failures.check(case.name, code == case.code, || {
        format!("exit {code}, expected {}: {}", case.code, clip(&output))
    });
    failures.contains(case.name, "output", &output, &case.needles);
    failures.check(case.name, !output.contains("panicked"), || {
        format!("panic: {output}")
    });
    failures.check(
        case.name,
        !output.contains("right-password") && !output.contains("wrong-password"),
        || "a password leaked".into(),
    );
    let source_now = databases.fingerprint(&databases.source, case.table);
    if source_now.is_some() && case.breaks.iter().all(|(side, _)| *side != Side::Source) {
        failures.check(case.name, source_now == source_before, || {
            "the source changed".into()
        });
    }
    let target_now = databases.fingerprint(&databases.target, case.table);
    if case.breaks.iter().all(|(side, _)| *side != Side::Target)
        || case.name.contains("without INSERT")
        || case.name.contains("log in")
    {
        failures.check(case.name, target_now == target_before, || {
            format!("the target changed: {target_now:?}, was {target_before:?}")
        });
    }
    // The fix, then the same command (on the job's own account) completes.
    for (side, sql) in &case.fixes {
        side_sql(&databases, *side, sql);
    }
    if case.fresh_state {
        let _ = std::fs::remove_file(&state);
        let _ = std::fs::remove_file(dir.path().join("state.db-wal"));
        let _ = std::fs::remove_file(dir.path().join("state.db-shm"));
    }
    let (code, stdout, stderr) = run(&mut local(&own_env));
    failures.check(case.name, code == 0, || {
        format!(
            "after the fix: exit {code}: {}",
            clip(&format!("{stdout}{stderr}"))
        )
    });
    let source_after = databases.fingerprint(&databases.source, case.table);
    failures.check(
        case.name,
        databases.fingerprint(&databases.target, case.table) == source_after
            && source_after.is_some(),
        || "after the fix the target does not equal the source".into(),
    );
    if let TargetAccount::Other(user, _) = case.account {
        let drop = match case.engine {
            Engine::Postgres => format!("DROP OWNED BY {user}; DROP ROLE IF EXISTS {user}"),
            Engine::Mariadb => format!("DROP USER IF EXISTS '{user}'@'%'"),
        };
        drop_databases_then(databases, &drop);
    }
}

/// Drops the databases first (a role owning objects in them cannot be dropped before).
fn drop_databases_then(databases: Databases, server_sql: &str) {
    let server = databases.server.clone();
    let engine = databases.engine;
    drop(databases);
    let _ = std::panic::catch_unwind(|| match engine {
        Engine::Postgres => psql(&server, server_sql),
        Engine::Mariadb => mariadb(&server, server_sql),
    });
}

fn side_sql(databases: &Databases, side: Side, sql: &str) {
    match side {
        Side::Source => databases.sql(&databases.source, sql),
        Side::Target => databases.sql(&databases.target, sql),
        Side::Server => databases.server_sql(sql),
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tables_changed_or_refused_under_a_job_are_named_and_nothing_is_lost() {
    let cases = postgres_cases(&unique_suffix());
    let mut failures = Failures::default();
    for case in &cases {
        run_case(case, &mut failures).await;
    }
    failures.finish(cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_tables_changed_or_refused_under_a_job_are_named_and_nothing_is_lost() {
    let cases = mariadb_cases(&unique_suffix());
    let mut failures = Failures::default();
    for case in &cases {
        run_case(case, &mut failures).await;
    }
    failures.finish(cases.len());
}

/// Two source tables that would land in one target table (PostgreSQL schemas `a` and `b`
/// into one MariaDB database): refused at planning, exit 2, nothing written; excluding
/// one (the fix the message names) runs.
#[test]
fn two_source_tables_into_one_target_table_are_refused_before_anything_is_written() {
    let source = Databases::new(Engine::Postgres);
    let target = Databases::new(Engine::Mariadb);
    source.sql(
        &source.source,
        "CREATE SCHEMA a; CREATE SCHEMA b;
         CREATE TABLE a.orders (id bigint PRIMARY KEY, v text); INSERT INTO a.orders VALUES (1, 'a');
         CREATE TABLE b.orders (id bigint PRIMARY KEY, v text); INSERT INTO b.orders VALUES (1, 'b');",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("job.yaml");
    let body = |exclude: &str| {
        format!(
            "name: collide\nsource: {{ kind: postgres, url_env: {SOURCE_VAR} }}\ntarget: {{ kind: mysql, url_env: {TARGET_VAR} }}\n\
             tables: {{ include: [\"a.*\", \"b.*\"]{exclude} }}\n"
        )
    };
    std::fs::write(&spec, body("")).expect("spec");
    let env = HashMap::from([
        (SOURCE_VAR.to_owned(), source.url(&source.source)),
        (TARGET_VAR.to_owned(), target.url(&target.target)),
    ]);
    let local = || {
        let mut command = ferryctl();
        command
            .arg("local")
            .arg(&spec)
            .args(["--control-addr", "127.0.0.1:0"])
            .envs(&env);
        command
    };
    let mut failures = Failures::default();
    let case = "two source tables into one target table";
    let (code, _, stderr) = run(&mut local());
    crate::common::show(case, code, &stderr);
    failures.check(case, code == 2, || format!("exit {code}: {stderr}"));
    failures.contains(
        case,
        "stderr",
        &stderr,
        &[
            "tables a.orders and b.orders would both be written to target table",
            "tables.exclude",
        ],
    );
    failures.check(
        case,
        target.fingerprint(&target.target, "orders").is_none(),
        || "a target table was created".into(),
    );
    std::fs::write(&spec, body(", exclude: [\"b.*\"]")).expect("spec");
    let (code, _, stderr) = run(&mut local());
    failures.check(case, code == 0, || {
        format!("with b.* excluded: exit {code}: {stderr}")
    });
    failures.finish(1);
}
