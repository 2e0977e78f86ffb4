//! PostgreSQL → PostgreSQL end to end, against the real server of `scripts/services.sh`
//! (`FERRY_TEST_PG_URL`): every supported type with its edge values, every key shape,
//! awkward identifiers, a partitioned table; the refusal of types ferry cannot carry;
//! the fence; and the connector conformance suite.
//!
//! A PostgreSQL target keeps the source's schema and table names, so each test copies
//! from schemas of the test database into a database of its own on the same server,
//! both with random names, dropped at the end. The final comparison goes through the
//! `psql` shell (PostgreSQL's own text output of every row), not ferry's checksum.

use std::collections::HashMap;
use std::process::Command;

use ferry_connectors::conformance::{
    check_failed_write_commits_nothing, check_overwrite_is_idempotent_and_fenced,
    check_split_covers_table, primary_key_of,
};
use ferry_connectors::{ChunkWrite, ConnectorError, Fence, PrepareOptions};
use ferry_coordination::ChunkState;
use ferry_ctl::local::{LocalJob, load_spec};
use ferry_model::ids::{Attempt, ChunkId};
use ferry_model::key::{ChunkRange, SplitKey};
use ferry_model::schema::TableName;
use ferry_tests::{Fault, psql, run_local_with_env, unique_suffix, with_database, write_spec};
use tokio_util::sync::CancellationToken;

const SOURCE_VAR: &str = "FERRY_E2E_PG_SOURCE";
const TARGET_VAR: &str = "FERRY_E2E_PG_TARGET";

/// The test server's URL; the tests fail (never skip) without it.
fn server_url() -> String {
    std::env::var("FERRY_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "FERRY_TEST_PG_URL is not set: start the test services with \
             `scripts/services.sh up && eval \"$(scripts/services.sh env)\"`"
        )
    })
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Source schemas in the test database and a target database, dropped on drop.
struct Fixture {
    source_url: String,
    target_url: String,
    target_database: String,
    schemas: Vec<String>,
    env: HashMap<String, String>,
}

impl Fixture {
    fn new(schemas: &[&str]) -> Fixture {
        let source_url = server_url();
        let suffix = unique_suffix();
        let target_database = format!("ferry_dst_{suffix}");
        psql(
            &source_url,
            &format!("CREATE DATABASE {}", quote_ident(&target_database)),
        );
        let target_url = with_database(&source_url, &target_database);
        let schemas: Vec<String> = schemas
            .iter()
            .map(|schema| format!("{schema}_{suffix}"))
            .collect();
        let env = HashMap::from([
            (SOURCE_VAR.to_string(), source_url.clone()),
            (TARGET_VAR.to_string(), target_url.clone()),
        ]);
        Fixture {
            source_url,
            target_url,
            target_database,
            schemas,
            env,
        }
    }

    fn schema(&self, index: usize) -> &str {
        &self.schemas[index]
    }

    fn spec(&self, extra: &str) -> String {
        let include: Vec<String> = self
            .schemas
            .iter()
            .map(|schema| format!("{:?}", format!("{schema}.*")))
            .collect();
        format!(
            "name: pg-e2e\nsource: {{ kind: postgres, url_env: {SOURCE_VAR} }}\n\
             target: {{ kind: postgres, url_env: {TARGET_VAR} }}\n\
             tables: {{ include: [{}] }}\n{extra}",
            include.join(", ")
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let schemas: Vec<String> = self.schemas.iter().map(|s| quote_ident(s)).collect();
        let _ = Command::new("psql")
            .args(["-X", "-q", "-d", &self.source_url, "-c"])
            .arg(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                schemas.join(", ")
            ))
            .output();
        let _ = Command::new("psql")
            .args(["-X", "-q", "-d", &self.source_url, "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.target_database)
            ))
            .output();
    }
}

/// Builds every kind of table and value ferry must carry in schemas `s` and `m`.
fn create_source(url: &str, s: &str, m: &str) {
    let s = quote_ident(s);
    let m = quote_ident(m);
    psql(
        url,
        &format!(
            r#"
CREATE SCHEMA {s};
CREATE SCHEMA {m};
CREATE TYPE {s}.mood AS ENUM ('sad', 'ok', 'happy', 'très "content"');

CREATE TABLE {s}.all_types (
    id bigint PRIMARY KEY,
    c_int2 smallint, c_int4 integer, c_int8 bigint,
    c_money numeric(12,2), c_tiny numeric(40,30), c_num numeric,
    c_float4 real, c_float8 double precision,
    c_bool boolean,
    c_text text, c_varchar varchar(20), c_char char(5), c_name name,
    c_bytea bytea,
    c_date date, c_time time, c_timetz timetz, c_ts timestamp, c_tstz timestamptz(3),
    c_interval interval,
    c_uuid uuid, c_json json, c_jsonb jsonb, c_mood {s}.mood,
    c_int_arr integer[], c_text_arr text[], c_num_arr numeric(10,3)[], c_grid integer[][],
    c_mood_arr {s}.mood[], c_tstz_arr timestamptz[], c_bytea_arr bytea[], c_jsonb_arr jsonb[],
    c_date_arr date[], c_float_arr double precision[], c_interval_arr interval[]
);
INSERT INTO {s}.all_types VALUES
(1, -32768, -2147483648, -9223372036854775808, -9999999999.99,
 0.000000000000000000000000000001, 'NaN', '-Infinity', '-Infinity', false,
 '', '', '', '', '\x', '4713-01-01 BC', '00:00:00', '00:00:00+15:59',
 '4713-01-01 00:00:00 BC', '4713-01-01 00:00:00+00 BC', '-178000000 years',
 '00000000-0000-0000-0000-000000000000', '{{}}', '{{}}', 'sad',
 '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}'),
(2, 32767, 2147483647, 9223372036854775807, 9999999999.99,
 9999999999.999999999999999999999999999999,
 12345678901234567890123456789012345678901234567890.0000000001, 'Infinity', 'Infinity', true,
 repeat('é', 524288), 'twenty chars exactly', 'abcde', repeat('n', 63),
 decode(repeat('00ff7f80', 262144), 'hex'),
 '200000-01-01', '24:00:00', '23:59:59.999999-15:59:59', '200000-06-01 12:00:00.000001',
 '200000-06-01 12:00:00.001+05:30', '178000000 years 11 months 29 days 23:59:59.999999',
 'ffffffff-ffff-ffff-ffff-ffffffffffff',
 '{{"b": 1, "a": [1, 2.50, null], "b": 2, "nested": {{"x": "y"}}}}',
 '{{"big": 123456789012345, "s": "\u00e9 \"q\"", "arr": [true, false, null]}}', 'très "content"',
 '{{1,NULL,-2147483648}}', '{{"",NULL,"a,b","quote\"d","NULL"}}', '{{1.5,NaN,-0.001}}',
 '{{{{1,2,3}},{{4,NULL,6}}}}', '{{sad,"très \"content\""}}',
 '{{"2040-01-01 00:00:00+02",infinity,NULL}}', '{{"\\x00ff",NULL,"\\x"}}',
 ARRAY['{{"a": 1}}'::jsonb, '[1, 2]', 'null', '"text"'],
 '{{1969-12-31,2038-01-20,-infinity}}', '{{NaN,-Infinity,-0,1.5e300,5e-324}}',
 '{{"1 mon 2 days 00:00:01","-3 years"}}'),
(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL),
(4, 0, 0, 0, 0, -0.000000000000000000000000000001, '1e-1000', '-0', '-0', true,
 '日本語 ✓ 🦀 "quoted" ''single'' \ back\slash ' || chr(10) || chr(9), 'ü', 'a', 'Ünï',
 '\x00', '1969-12-31', '12:34:56.789', '12:34:56.789+05:30', '1969-12-31 23:59:59.999999',
 '1969-12-31 23:59:59.999999-08', '-1 days 00:00:00.000001',
 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '[]', '[]', 'ok',
 '{{0}}', '{{NULL}}', '{{0.000}}', '{{{{NULL}}}}', '{{NULL}}', '{{NULL}}', '{{NULL}}', '{{NULL}}',
 '{{NULL}}', '{{NULL}}', '{{NULL}}');
INSERT INTO {s}.all_types
SELECT i, (i % 30000)::int2, i * 7, i * 1000003, round(i / 7.0, 2), round(i / 3.0, 30),
       (i::numeric / 13) ^ 3, i / 9.0, i / 11.0, i % 2 = 0,
       md5(i::text), left(md5(i::text), 20), left(md5(i::text), 3), 'n' || i,
       decode(md5(i::text), 'hex'),
       date '2000-01-01' + i * 97, time '00:00' + i * interval '3 minutes 7.5 seconds',
       (time '00:00' + i * interval '2 minutes')::timetz, timestamp '1900-01-01' + i * interval '101 days 7 hours',
       timestamptz '2038-01-19 03:14:08+00' + i * interval '1 day 1 microsecond',
       i * interval '1 month 1 day 1 second',
       md5(i::text)::uuid, json_build_object('i', i, 'half', i / 2.0), jsonb_build_object('k', i, 'l', ARRAY[i, -i]),
       (ARRAY['sad', 'ok', 'happy'])[i % 3 + 1]::{s}.mood,
       ARRAY[i, -i, NULL], ARRAY[md5(i::text), NULL], ARRAY[i / 8.0, NULL]::numeric(10,3)[],
       ARRAY[[i, i + 1], [i + 2, i + 3]], ARRAY['ok']::{s}.mood[],
       ARRAY[timestamptz '2000-01-01 00:00+00' + i * interval '1 hour'], ARRAY[decode(md5(i::text), 'hex')],
       ARRAY[jsonb_build_object('i', i)], ARRAY[date '1999-01-01' + i], ARRAY[i / 3.0, -i],
       ARRAY[i * interval '1 minute']
FROM generate_series(10, 400) AS i;

CREATE TABLE {s}.composite (a text NOT NULL, b integer NOT NULL, v text, PRIMARY KEY (a, b));
INSERT INTO {s}.composite
SELECT t, b, t || '/' || b
FROM unnest(ARRAY['', 'A', 'a', 'Ä', 'ä', 'z', '🦀', 'a b', '"', '''', '10', '9', 'NULL', '\']) AS t,
     unnest(ARRAY[-2147483648, -1, 0, 1, 2147483647]) AS b;
INSERT INTO {s}.composite SELECT 'k' || i, i % 3, NULL FROM generate_series(1, 200) AS i;

CREATE TABLE {s}.typed_keys (
    v integer, k_ts timestamptz NOT NULL, k_num numeric NOT NULL, k_uuid uuid NOT NULL,
    PRIMARY KEY (k_num, k_ts, k_uuid)
);
INSERT INTO {s}.typed_keys
SELECT i, timestamptz '2020-02-29 12:00:00.5+03' + (i % 7) * interval '1 hour',
       (i % 5) / 3.0 - 0.5, md5(i::text)::uuid
FROM generate_series(1, 230) AS i;

CREATE TABLE {s}.skewed (id bigint PRIMARY KEY, v text);
INSERT INTO {s}.skewed SELECT 1000000 + i, 's' || i FROM generate_series(0, 299) AS i;
INSERT INTO {s}.skewed VALUES (-9223372036854775808, 'min'), (-9223372036854775807, 'min+1'),
    (-5000000000000, 'far'), (7, 'seven'), (9223372036854775806, 'max-1'), (9223372036854775807, 'max');

CREATE TABLE {s}.no_key (x text, y integer);
INSERT INTO {s}.no_key SELECT CASE WHEN i % 10 = 0 THEN 'dup' ELSE 'x' || i END,
                              CASE WHEN i % 10 = 0 THEN 0 ELSE i END
FROM generate_series(0, 299) AS i;

CREATE TABLE {s}.empty (id integer PRIMARY KEY, v text);

-- ICU orders a < B, bytewise B < a: ranges must mean the same rows in a target whose
-- column has the database's default collation.
CREATE TABLE {s}.collated (k text COLLATE "und-x-icu" PRIMARY KEY, v integer);
INSERT INTO {s}.collated
SELECT chr(c) || repeat(chr(c + (i % 2) * 32), i % 4) || i, i
FROM generate_series(65, 90) AS c, generate_series(1, 10) AS i;
INSERT INTO {s}.collated
SELECT lower(k) || '_', v FROM {s}.collated;

CREATE TABLE {s}.events (id bigint NOT NULL, at date NOT NULL, v text, PRIMARY KEY (id, at))
    PARTITION BY RANGE (at);
CREATE TABLE {s}.events_2023 PARTITION OF {s}.events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE {s}.events_2024 PARTITION OF {s}.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE {s}.events_other PARTITION OF {s}.events DEFAULT;
INSERT INTO {s}.events SELECT i, date '2022-11-01' + i * 3, 'e' || i FROM generate_series(1, 300) AS i;

CREATE TABLE {m}."Mixed ""Quoted"" Table" (
    "select" integer PRIMARY KEY, "from" text, "Weird col" double precision, "group" bytea,
    "Order" date, "user" {s}.mood, "Ünïcode ✓" varchar(10)
);
INSERT INTO {m}."Mixed ""Quoted"" Table"
SELECT i, 'from ' || i, i / 4.0, decode(lpad(to_hex(i), 8, '0'), 'hex'), date '2001-01-01' + i,
       (ARRAY['sad', 'happy'])[i % 2 + 1]::{s}.mood, 'ü' || i
FROM generate_series(-60, 60) AS i;
"#
        ),
    );
}

/// The tables of the fixture, quoted, for the comparisons.
fn source_tables(s: &str, m: &str) -> Vec<String> {
    let s = quote_ident(s);
    [
        "all_types",
        "composite",
        "typed_keys",
        "skewed",
        "no_key",
        "empty",
        "collated",
        "events",
    ]
    .iter()
    .map(|table| format!("{s}.{table}"))
    .chain([format!(
        "{}.{}",
        quote_ident(m),
        quote_ident("Mixed \"Quoted\" Table")
    )])
    .collect()
}

/// Compares one table in the source and the target with `psql`: equal row counts, no
/// row (as PostgreSQL prints it) in one that is not in the other, counting duplicates,
/// and the same column names, types and primary key.
fn assert_same_table(source_url: &str, target_url: &str, table: &str) {
    let count_sql = format!("SELECT count(*) FROM {table}");
    let source_count = psql(source_url, &count_sql);
    assert_eq!(
        source_count,
        psql(target_url, &count_sql),
        "row counts differ for {table}"
    );
    let rows_sql = format!("SELECT md5(t::text) FROM {table} AS t ORDER BY 1");
    let source_rows: Vec<String> = psql(source_url, &rows_sql)
        .lines()
        .map(String::from)
        .collect();
    let target_rows: Vec<String> = psql(target_url, &rows_sql)
        .lines()
        .map(String::from)
        .collect();
    let (source_only, target_only) = multiset_difference(&source_rows, &target_rows);
    assert_eq!(
        (source_only, target_only),
        (0, 0),
        "rows differ for {table} (source-only, target-only)"
    );
    let shape_sql = format!(
        "SELECT string_agg(a.attname || ' ' || CASE WHEN t.typtype = 'e' OR et.typtype = 'e' \
                THEN t.typname::text ELSE format_type(a.atttypid, a.atttypmod) END \
                || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY a.attnum) \
                || ' | key ' || coalesce((SELECT string_agg(k.attname, ',' ORDER BY x.n) \
                   FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS x(attnum, n) \
                   JOIN pg_attribute k ON k.attnum = x.attnum AND k.attrelid = i.indrelid \
                   WHERE i.indrelid = '{table}'::regclass AND i.indisprimary), '') \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A' \
         WHERE a.attrelid = '{table}'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
    );
    assert_eq!(
        psql(source_url, &shape_sql),
        psql(target_url, &shape_sql),
        "columns, types or key differ for {table}"
    );
    assert!(
        source_count == "0" || !source_rows.is_empty(),
        "compared no rows for {table}"
    );
}

/// Counts of elements only in `left` and only in `right`, duplicates counted (EXCEPT ALL
/// both ways); both inputs sorted.
fn multiset_difference(left: &[String], right: &[String]) -> (usize, usize) {
    let (mut i, mut j, mut left_only, mut right_only) = (0, 0, 0, 0);
    while i < left.len() && j < right.len() {
        match left[i].cmp(&right[j]) {
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                left_only += 1;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                right_only += 1;
                j += 1;
            }
        }
    }
    (left_only + left.len() - i, right_only + right.len() - j)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_key_and_identifier_is_copied_exactly_between_postgres_databases() {
    let fixture = Fixture::new(&["ferry_src", "Src Mixed"]);
    create_source(&fixture.source_url, fixture.schema(0), fixture.schema(1));
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), &fixture.spec("chunking: { target_rows: 40 }\n"));
    // First through Arrow batches: every value decoded from and encoded into PostgreSQL
    // binary formats by ferry.
    let (prepared, outcome, sink) = run_local_with_env(
        &spec_path,
        &dir.path().join("state.db"),
        3,
        vec![Fault::ArrowOnly],
        CancellationToken::new(),
        &fixture.env,
    )
    .await;

    assert!(!outcome.interrupted);
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
        assert_eq!(
            chunk.attempt.0, 1,
            "no chunk needed a second attempt: {chunk:?}"
        );
    }
    assert_eq!(sink.committed_writes(), outcome.chunks.len() as u64);
    assert_eq!(sink.native_writes(), 0);

    // The parent of the partitioned table is listed, its partitions are not.
    let tables = &prepared.job.tables;
    let names: Vec<String> = tables.iter().map(|t| t.schema.name.name.clone()).collect();
    assert!(names.contains(&"events".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|name| name.starts_with("events_")),
        "{names:?}"
    );
    assert_eq!(names.len(), 9, "{names:?}");
    let chunks_of = |name: &str| {
        let index = tables
            .iter()
            .position(|t| t.schema.name.name == name)
            .expect("table planned");
        outcome
            .chunks
            .iter()
            .filter(|c| c.table_index == index)
            .collect::<Vec<_>>()
    };
    assert!(
        chunks_of("all_types").len() >= 5,
        "dense integer key split evenly"
    );
    assert!(
        chunks_of("composite").len() >= 5,
        "text+int key split on boundaries"
    );
    assert!(
        chunks_of("typed_keys").len() >= 5,
        "timestamptz+numeric+uuid key split"
    );
    assert!(
        chunks_of("skewed").len() >= 5,
        "skewed integer key split on boundaries"
    );
    assert!(
        chunks_of("collated").len() >= 10,
        "text key with a non-bytewise collation split bytewise"
    );
    assert!(
        chunks_of("events").len() >= 5,
        "partitioned table split on its key"
    );
    let no_key = chunks_of("no_key");
    assert_eq!(no_key.len(), 1);
    assert_eq!(no_key[0].range, ChunkRange::WholeTable);
    assert_eq!(no_key[0].rows, 300);
    assert_eq!(chunks_of("empty").iter().map(|c| c.rows).sum::<u64>(), 0);
    let all_rows: u64 = chunks_of("all_types").iter().map(|c| c.rows).sum();
    assert_eq!(all_rows, 395);

    for table in source_tables(fixture.schema(0), fixture.schema(1)) {
        assert_same_table(&fixture.source_url, &fixture.target_url, &table);
    }

    // A second run against the existing tables checks them and overwrites every chunk,
    // this time through the same-engine passthrough (binary COPY bytes untouched,
    // verified by hashing those bytes on both sides), and leaves the same rows.
    let again = write_spec(
        dir.path(),
        &fixture.spec("chunking: { target_rows: 70 }\nschema: require_existing\n"),
    );
    let (second_prepared, second, second_sink) = run_local_with_env(
        &again,
        &dir.path().join("state-2.db"),
        2,
        vec![],
        CancellationToken::new(),
        &fixture.env,
    )
    .await;
    for chunk in &second.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
        assert_eq!(
            chunk.attempt.0, 1,
            "no chunk needed a second attempt: {chunk:?}"
        );
    }
    assert_eq!(second_sink.native_writes(), second.chunks.len() as u64);
    for table in source_tables(fixture.schema(0), fixture.schema(1)) {
        assert_same_table(&fixture.source_url, &fixture.target_url, &table);
    }

    // The passthrough's checksum is the target's binary COPY bytes hashed (the source's
    // were hashed in flight): it is what each chunk recorded, and one changed value in
    // the target changes it.
    let spec = load_spec(&again, &fixture.env).expect("spec");
    let target = ferry_connectors::open_sink(&spec.target)
        .await
        .expect("sink");
    let tables = &second_prepared.job.tables;
    for chunk in &second.chunks {
        let table = &tables[chunk.table_index];
        // A chunk of the partitioned table is checksummed on its partition.
        let schema = match &chunk.partition {
            Some(partition) => table.schema.for_partition(partition),
            None => table.schema.clone(),
        };
        let on_target = target
            .native_checksum(&schema, &table.key, &chunk.range)
            .await
            .expect("target checksum")
            .expect("same column types");
        assert_eq!(Some(on_target.checksum), chunk.checksum, "chunk {chunk:?}");
    }
    // A table's chunks read back in one pass (what verifies a table whose key is built
    // after loading): each chunk's checksum is the one its copy recorded.
    let mut in_one_pass = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let chunks: Vec<_> = second
            .chunks
            .iter()
            .filter(|chunk| chunk.table_index == index)
            .collect();
        if chunks.iter().any(|chunk| chunk.partition.is_some()) {
            continue;
        }
        let ranges: Vec<ChunkRange> = chunks.iter().map(|chunk| chunk.range.clone()).collect();
        let Some(checksums) = target
            .native_checksums(&table.schema, &table.key, &ranges, 2)
            .await
            .expect("one-pass checksums")
        else {
            continue;
        };
        let recorded: Vec<_> = chunks.iter().map(|chunk| chunk.checksum).collect();
        let read: Vec<_> = checksums
            .iter()
            .map(|native| Some(native.checksum))
            .collect();
        assert_eq!(read, recorded, "{}", table.schema.name);
        // Canonically too (rows that passed as Arrow batches): what each range's
        // canonical checksum is.
        let canonical = target
            .checksum_chunks(&table.schema, &table.key, &ranges, 2)
            .await
            .expect("one-pass canonical checksums")
            .expect("the same ranges tile the key");
        for (chunk, canonical) in chunks.iter().zip(canonical) {
            let alone = target
                .checksum_chunk(&table.schema, &table.key, &chunk.range)
                .await
                .expect("canonical checksum");
            assert_eq!(canonical, alone, "{chunk:?}");
        }
        in_one_pass.push((table.schema.name.name.clone(), chunks.len()));
    }
    for name in ["all_types", "composite", "typed_keys", "skewed"] {
        assert!(
            in_one_pass
                .iter()
                .any(|(table, chunks)| table == name && *chunks > 1),
            "{name} was not read back in one pass: {in_one_pass:?}"
        );
    }
    let first = second
        .chunks
        .iter()
        .find(|chunk| {
            tables[chunk.table_index].schema.name.name == "all_types"
                && matches!(chunk.range, ChunkRange::Interval { lower: None, .. })
        })
        .expect("the first chunk of all_types");
    psql(
        &fixture.target_url,
        &format!(
            "UPDATE {}.all_types SET c_float8 = -c_float8 WHERE id = 10",
            quote_ident(fixture.schema(0))
        ),
    );
    let table = &tables[first.table_index];
    let changed = target
        .native_checksum(&table.schema, &table.key, &first.range)
        .await
        .expect("target checksum")
        .expect("same column types");
    assert_ne!(Some(changed.checksum), first.checksum);
    let all_types: Vec<_> = second
        .chunks
        .iter()
        .filter(|chunk| chunk.table_index == first.table_index)
        .collect();
    let ranges: Vec<ChunkRange> = all_types.iter().map(|chunk| chunk.range.clone()).collect();
    let read = target
        .native_checksums(&table.schema, &table.key, &ranges, 2)
        .await
        .expect("one-pass checksums")
        .expect("ranges that tile the key");
    for (chunk, read) in all_types.iter().zip(&read) {
        if chunk.id == first.id {
            assert_eq!(read.checksum, changed.checksum);
        } else {
            assert_eq!(Some(read.checksum), chunk.checksum, "{chunk:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_ferry_cannot_carry_are_refused_at_plan_time_naming_table_and_column() {
    let fixture = Fixture::new(&["ferry_odd"]);
    let s = quote_ident(fixture.schema(0));
    psql(
        &fixture.source_url,
        &format!(
            "CREATE SCHEMA {s}; \
             CREATE TABLE {s}.odd_types (id integer PRIMARY KEY, note text, addr inet); \
             INSERT INTO {s}.odd_types VALUES (1, 'a', '10.0.0.1');"
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(dir.path(), &fixture.spec(""));
    let spec = load_spec(&spec_path, &fixture.env).expect("valid spec");

    // Describing works, and names the declared type.
    let source = ferry_connectors::open_source(&spec.source)
        .await
        .expect("open source");
    let table_name = TableName {
        schema: Some(fixture.schema(0).to_string()),
        name: "odd_types".to_string(),
    };
    let table = source.describe_table(&table_name).await.expect("describe");
    assert_eq!(table.columns[2].declared_type, "inet");

    // Reading refuses, naming the table, the column and the type.
    let key = primary_key_of(&table);
    let read = source
        .read_chunk(&table, &key, &ChunkRange::WholeTable)
        .await;
    let Err(error) = read else {
        panic!("reading inet is refused");
    };
    let error = error.to_string();
    for needle in ["odd_types", "addr", "inet"] {
        assert!(error.contains(needle), "{needle} missing from: {error}");
    }

    // Planning refuses before any row moves, with the override that would fix it.
    let job = LocalJob::open(spec, &dir.path().join("state.db"))
        .await
        .expect("open job");
    let Err(error) = job.prepare().await else {
        panic!("planning refuses inet");
    };
    let error = error.to_string();
    for needle in ["odd_types", "addr", "inet", "columns:"] {
        assert!(error.contains(needle), "{needle} missing from: {error}");
    }
    let target_tables = psql(
        &fixture.target_url,
        "SELECT count(*) FROM pg_class WHERE relname = 'odd_types'",
    );
    assert_eq!(target_tables, "0", "nothing was created in the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_columns_are_refused_when_described() {
    let fixture = Fixture::new(&["ferry_gen"]);
    let s = quote_ident(fixture.schema(0));
    psql(
        &fixture.source_url,
        &format!(
            "CREATE SCHEMA {s}; \
             CREATE TABLE {s}.computed (id integer PRIMARY KEY, twice integer GENERATED ALWAYS AS (id * 2) STORED);"
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = load_spec(&write_spec(dir.path(), &fixture.spec("")), &fixture.env).expect("spec");
    let source = ferry_connectors::open_source(&spec.source)
        .await
        .expect("open source");
    let described = source
        .describe_table(&TableName {
            schema: Some(fixture.schema(0).to_string()),
            name: "computed".to_string(),
        })
        .await;
    let Err(error) = described else {
        panic!("generated column refused");
    };
    assert!(
        matches!(error, ConnectorError::Unsupported { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("twice"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_attempt_is_fenced_and_the_connector_conforms() {
    let fixture = Fixture::new(&["ferry_fence"]);
    let s = quote_ident(fixture.schema(0));
    psql(
        &fixture.source_url,
        &format!(
            "CREATE SCHEMA {s}; \
             CREATE TABLE {s}.t (a text NOT NULL, b integer NOT NULL, v bytea, PRIMARY KEY (a, b)); \
             INSERT INTO {s}.t SELECT 'k' || (i % 50), i, decode(repeat('ab', i % 9), 'hex') \
             FROM generate_series(1, 20000) AS i;"
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = load_spec(&write_spec(dir.path(), &fixture.spec("")), &fixture.env).expect("spec");
    let source = ferry_connectors::open_source(&spec.source)
        .await
        .expect("open source");
    let sink = ferry_connectors::open_sink(&spec.target)
        .await
        .expect("open sink");
    let table = source
        .describe_table(&TableName {
            schema: Some(fixture.schema(0).to_string()),
            name: "t".to_string(),
        })
        .await
        .expect("describe");

    check_split_covers_table(source.as_ref(), &table, 1500).await;
    check_overwrite_is_idempotent_and_fenced(source.as_ref(), sink.as_ref(), &table, "run-a").await;
    check_failed_write_commits_nothing(source.as_ref(), sink.as_ref(), &table, "run-a").await;

    // Attempt 2 commits; attempt 1 arriving late is refused and changes nothing.
    let key = primary_key_of(&table);
    sink.prepare_table(&table, &key, &PrepareOptions::default())
        .await
        .expect("prepare");
    let range = ChunkRange::Interval {
        lower: None,
        upper: None,
    };
    let write = |attempt: u32| {
        let source = source.clone();
        let sink = sink.clone();
        let table = table.clone();
        let key: SplitKey = key.clone();
        let range = range.clone();
        async move {
            let fence = Fence {
                run_id: "run-b".to_string(),
                chunk: ChunkId(7),
                attempt: Attempt(attempt),
            };
            let cancel = CancellationToken::new();
            let batches = source.read_chunk(&table, &key, &range).await.expect("read");
            sink.write_chunk(
                ChunkWrite {
                    table: &table,
                    key: &key,
                    range: &range,
                    fence: &fence,
                    cancel: &cancel,
                    key_deferred: false,
                },
                batches,
            )
            .await
        }
    };
    let committed = write(2).await.expect("attempt 2 commits");
    assert_eq!(committed.rows_written, 20000);
    psql(
        &fixture.target_url,
        &format!("UPDATE {s}.t SET v = NULL WHERE b = 1"),
    );
    let before = sink
        .checksum_chunk(&table, &key, &range)
        .await
        .expect("checksum");
    let refused = write(1).await;
    assert!(
        matches!(
            refused,
            Err(ConnectorError::Fenced {
                attempt: Attempt(1),
                committed: Attempt(2),
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        sink.checksum_chunk(&table, &key, &range)
            .await
            .expect("checksum"),
        before,
        "the refused attempt changed nothing"
    );
    let fence_row = psql(
        &fixture.target_url,
        &format!(
            "SELECT attempt, table_name FROM {s}._ferry_fence WHERE run_id = 'run-b' AND chunk = 7"
        ),
    );
    assert_eq!(fence_row, format!("2|{}.t", fixture.schema(0)));
    // The fence table is ferry's: read as a source, the target lists its tables but not
    // the fence table.
    let target_as_source = format!(
        "name: fence-listing\nsource: {{ kind: postgres, url_env: {TARGET_VAR} }}\n\
         target: {{ kind: postgres, url_env: {SOURCE_VAR} }}\ntables: {{ include: [\"*\"] }}\n"
    );
    let listing_spec =
        load_spec(&write_spec(dir.path(), &target_as_source), &fixture.env).expect("spec");
    let listed = ferry_connectors::open_source(&listing_spec.source)
        .await
        .expect("open target as a source")
        .list_tables()
        .await
        .expect("list");
    assert!(listed.iter().any(|name| name.name == "t"), "{listed:?}");
    assert!(
        listed.iter().all(|name| name.name != "_ferry_fence"),
        "{listed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_an_open_error_that_never_shows_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = HashMap::from([
        (
            SOURCE_VAR.to_string(),
            "postgres://alice:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=5".to_string(),
        ),
        (TARGET_VAR.to_string(), server_url()),
    ]);
    let spec = write_spec(
        dir.path(),
        &format!(
            "name: unreachable\nsource: {{ kind: postgres, url_env: {SOURCE_VAR} }}\n\
             target: {{ kind: postgres, url_env: {TARGET_VAR} }}\ntables: {{ include: [\"*\"] }}\n"
        ),
    );
    let spec = load_spec(&spec, &env).expect("spec");
    let Err(error) = ferry_connectors::open_source(&spec.source).await else {
        panic!("nothing listens on port 1");
    };
    let text = error.to_string();
    assert!(matches!(error, ConnectorError::Open { .. }), "{text}");
    assert!(
        text.contains("postgres://alice@127.0.0.1:1/nowhere"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        error.is_retryable(),
        "a connection failure may pass: {text}"
    );
}

/// The leaf partitions of `table` with their bounds, and its partition key, as `psql`
/// reads them from the catalog: `name|bound` lines, then the key.
fn partition_layout(url: &str, table: &str) -> String {
    psql(
        url,
        &format!(
            "SELECT c.relname || '|' || pg_get_expr(c.relpartbound, c.oid) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = '{table}'::regclass ORDER BY c.relname; \
             SELECT pg_get_partkeydef('{table}'::regclass);"
        ),
    )
}

/// Chunk counts per partition as the state file stores them, read with `sqlite3`.
fn chunks_per_partition(state: &std::path::Path) -> HashMap<String, u64> {
    ferry_tests::sqlite3(
        state,
        "SELECT coalesce(partition_name, '-') || '|' || count(*) FROM chunks GROUP BY partition_name",
    )
    .lines()
    .filter_map(|line| {
        let (name, count) = line.split_once('|')?;
        Some((name.to_string(), count.parse().ok()?))
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_partitioned_table_is_planned_copied_and_repaired_partition_by_partition() {
    let fixture = Fixture::new(&["ferry_part"]);
    let s = quote_ident(fixture.schema(0));
    // y2023 is big enough to be cut into key sub-ranges, y2025 stays empty, the default
    // partition takes the rows outside every range.
    psql(
        &fixture.source_url,
        &format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.events (id bigint NOT NULL, at date NOT NULL, v text,
                                      PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
             CREATE TABLE {s}.y2023 PARTITION OF {s}.events
                 FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
             CREATE TABLE {s}.y2024 PARTITION OF {s}.events
                 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             CREATE TABLE {s}.y2025 PARTITION OF {s}.events
                 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
             CREATE TABLE {s}.rest PARTITION OF {s}.events DEFAULT;
             INSERT INTO {s}.events
                 SELECT i, date '2023-01-01' + (i % 365), 'a' || i FROM generate_series(1, 500) AS i;
             INSERT INTO {s}.events
                 SELECT i, date '2024-01-01' + (i % 366), 'b' || i FROM generate_series(1, 60) AS i;
             INSERT INTO {s}.events
                 SELECT i, date '2019-06-01' + i, NULL FROM generate_series(1, 40) AS i;"
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = write_spec(
        dir.path(),
        &fixture.spec("chunking: { target_rows: 100 }\n"),
    );
    let state = dir.path().join("state.db");
    let (prepared, outcome, sink) = run_local_with_env(
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
    }
    // Same engine: the passthrough carried every chunk, partition by partition.
    assert_eq!(sink.native_writes(), outcome.chunks.len() as u64);
    assert!(prepared.job.tables[0].warnings.is_empty());

    // Chunks per partition, from the state file: y2023 (500 rows) sub-split, every other
    // leaf one chunk (the empty one too), none planned through the parent.
    let per_partition = chunks_per_partition(&state);
    assert_eq!(per_partition.len(), 4, "{per_partition:?}");
    assert!(per_partition["y2023"] >= 5, "{per_partition:?}");
    assert_eq!(per_partition["y2024"], 1, "{per_partition:?}");
    assert_eq!(per_partition["y2025"], 1, "{per_partition:?}");
    assert_eq!(per_partition["rest"], 1, "{per_partition:?}");
    let rows_of = |partition: &str| -> u64 {
        outcome
            .chunks
            .iter()
            .filter(|chunk| chunk.partition.as_deref() == Some(partition))
            .map(|chunk| chunk.rows)
            .sum()
    };
    assert_eq!(
        [
            rows_of("y2023"),
            rows_of("y2024"),
            rows_of("y2025"),
            rows_of("rest")
        ],
        [500, 60, 0, 40]
    );

    // The target is partitioned the same way, and every leaf holds the source's rows,
    // compared with psql (counts and the md5 of every row, as multisets).
    let parent = format!("{s}.events");
    assert_eq!(
        partition_layout(&fixture.source_url, &parent),
        partition_layout(&fixture.target_url, &parent)
    );
    assert!(partition_layout(&fixture.target_url, &parent).contains("RANGE (at)"));
    for leaf in ["y2023", "y2024", "y2025", "rest"] {
        let table = format!("{s}.{leaf}");
        let count_sql = format!("SELECT count(*) FROM ONLY {table}");
        assert_eq!(
            psql(&fixture.target_url, &count_sql),
            psql(&fixture.source_url, &count_sql),
            "{leaf}"
        );
        assert_same_table(&fixture.source_url, &fixture.target_url, &table);
    }
    assert_same_table(&fixture.source_url, &fixture.target_url, &parent);

    // Re-copy only y2024's chunk (as a resume does with chunks that are not VERIFIED),
    // through Arrow batches this time. Its corrupted row is repaired; a changed row in
    // the default partition, inside the key range of y2024's unbounded chunk, is left
    // alone: the overwrite deleted in y2024 only.
    psql(
        &fixture.target_url,
        &format!(
            "UPDATE {s}.events SET v = 'corrupt' WHERE id = 7 AND at >= '2024-01-01' AND at < '2025-01-01';
             DELETE FROM {s}.y2024 WHERE id = 8;
             UPDATE {s}.rest SET v = 'marker' WHERE id = 5;"
        ),
    );
    ferry_tests::sqlite3(
        &state,
        "UPDATE chunks SET state = 'PLANNED' WHERE partition_name = 'y2024'",
    );
    let (_, again, again_sink) = run_local_with_env(
        &spec_path,
        &state,
        2,
        vec![Fault::ArrowOnly],
        CancellationToken::new(),
        &fixture.env,
    )
    .await;
    assert_eq!(
        again_sink.committed_writes(),
        1,
        "only y2024's chunk was copied"
    );
    for chunk in &again.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "chunk {chunk:?}");
    }
    assert_same_table(
        &fixture.source_url,
        &fixture.target_url,
        &format!("{s}.y2024"),
    );
    assert_same_table(
        &fixture.source_url,
        &fixture.target_url,
        &format!("{s}.y2023"),
    );
    assert_eq!(
        psql(
            &fixture.target_url,
            &format!("SELECT v FROM {s}.rest WHERE id = 5")
        ),
        "marker",
        "the default partition was not touched"
    );
    assert_eq!(
        psql(
            &fixture.target_url,
            &format!("SELECT count(*) FROM {s}.rest")
        ),
        "40"
    );

    // An existing target whose partitions differ is refused at plan time, naming the
    // table and the partitions.
    psql(
        &fixture.target_url,
        &format!(
            "DROP TABLE {s}.y2025;
             CREATE TABLE {s}.y2026 PARTITION OF {s}.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
        ),
    );
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
    for needle in ["events", "y2025", "missing", "y2026", "only in the target"] {
        assert!(error.contains(needle), "{needle} missing from: {error}");
    }
}

/// Connections are reused across chunks: after several chunks read, written and
/// verified through one source and one sink, each database holds one idle ferry
/// session (not one per operation), and it carries ferry's own name again, not the
/// last attempt's (which a later attempt's clean-up would otherwise end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_across_chunks_with_their_settings_reset() {
    use ferry_connectors::Sink;
    use ferry_model::spec::{Location, Secret};

    let server = server_url();
    let suffix = unique_suffix();
    let (src, dst) = (
        format!("ferry_poolsrc_{suffix}"),
        format!("ferry_pooldst_{suffix}"),
    );
    psql(&server, &format!("CREATE DATABASE {src}"));
    psql(&server, &format!("CREATE DATABASE {dst}"));
    psql(
        &with_database(&server, &src),
        "CREATE TABLE t (id bigint PRIMARY KEY, note text);
         INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1000) g;",
    );
    let location = |database: &str| Location::Env {
        var: "POOL_TEST".into(),
        value: Secret::new(with_database(&server, database)),
    };
    let source = ferry_connectors::postgres::PostgresSource::open(&location(&src))
        .await
        .expect("open source");
    let sink = ferry_connectors::postgres::PostgresSink::open(&location(&dst))
        .await
        .expect("open sink");
    let table = ferry_connectors::Source::describe_table(
        &source,
        &TableName {
            schema: Some("public".into()),
            name: "t".into(),
        },
    )
    .await
    .expect("describe");
    let key = primary_key_of(&table);
    sink.prepare_table(&table, &key, &PrepareOptions::default())
        .await
        .expect("prepare");
    let format = sink
        .native_format(&table)
        .await
        .expect("native format")
        .expect("same types: binary COPY passes through");
    let cancel = CancellationToken::new();
    for (index, bounds) in [(None, Some(250)), (Some(250), Some(700)), (Some(700), None)]
        .into_iter()
        .enumerate()
    {
        let bound = |value: Option<i64>| {
            value.map(|v| ferry_model::key::KeyBound(vec![ferry_model::key::KeyValue::Int(v)]))
        };
        let range = ChunkRange::Interval {
            lower: bound(bounds.0),
            upper: bound(bounds.1),
        };
        let fence = Fence {
            run_id: format!("run-{suffix}"),
            chunk: ChunkId(index as u32),
            // A first attempt names its session for its transaction only, a later one
            // for the session (reset when the connection goes back): both kinds here.
            attempt: Attempt(index as u32 % 2 + 1),
        };
        let read = ferry_connectors::Source::read_native(&source, &table, &key, &range, format)
            .await
            .expect("read")
            .expect("native read");
        let written = sink
            .write_native(
                ChunkWrite {
                    table: &table,
                    key: &key,
                    range: &range,
                    fence: &fence,
                    cancel: &cancel,
                    key_deferred: false,
                },
                read.stream,
            )
            .await
            .expect("write");
        let expected = read.checksum.await.expect("source checksum");
        let actual = sink
            .native_checksum(&table, &key, &range)
            .await
            .expect("target checksum")
            .expect("native checksum");
        assert_eq!(actual, expected, "chunk {index}");
        assert_eq!(
            sink.count_chunk(&table, &key, &range).await.expect("count"),
            written.rows_written
        );
    }
    let sessions = |database: &str| {
        psql(
            &server,
            &format!(
                "SELECT application_name, count(*) FROM pg_stat_activity \
                 WHERE datname = '{database}' GROUP BY 1 ORDER BY 1"
            ),
        )
    };
    // One idle session kept on each side, named `ferry` again (a session older than the
    // pool's 5 s is replaced by the next operation; its backend may take a moment to go).
    for (database, side) in [(&dst, "target"), (&src, "source")] {
        ferry_tests::wait_until(std::time::Duration::from_secs(10), || {
            sessions(database).trim() == "ferry|1"
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "not one reused {side} session named ferry: {}",
                sessions(database)
            )
        });
    }
    assert_eq!(
        psql(
            &with_database(&server, &dst),
            "SELECT count(*), sum(id) FROM public.t"
        )
        .trim(),
        "1000|500500"
    );
    drop((source, sink));
    tests_drop_database(&server, &src);
    tests_drop_database(&server, &dst);
}

/// A database of its own (`{prefix}_{suffix}`) made by `setup` on the test server, and a
/// PostgreSQL source on it with its table `public.t` described: for the pool's tests.
async fn pool_test_source(
    prefix: &str,
    setup: &str,
) -> (
    String,
    ferry_connectors::postgres::PostgresSource,
    ferry_model::schema::TableSchema,
    SplitKey,
) {
    use ferry_connectors::Source;
    use ferry_model::spec::{Location, Secret};

    let server = server_url();
    let database = format!("{prefix}_{}", unique_suffix());
    psql(&server, &format!("CREATE DATABASE {database}"));
    psql(&with_database(&server, &database), setup);
    let source = ferry_connectors::postgres::PostgresSource::open(&Location::Env {
        var: "POOL_TEST".into(),
        value: Secret::new(with_database(&server, &database)),
    })
    .await
    .expect("open source");
    let table = source
        .describe_table(&TableName {
            schema: Some("public".into()),
            name: "t".into(),
        })
        .await
        .expect("describe");
    let key = primary_key_of(&table);
    (database, source, table, key)
}

/// ferry's sessions open on `database` now, as PostgreSQL lists them.
fn ferry_sessions(server: &str, database: &str) -> String {
    psql(
        server,
        &format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = '{database}' AND application_name = 'ferry'"
        ),
    )
}

/// A connection whose read carried a row over 1 MiB is closed, not pooled: the driver's
/// read buffer grew to the row's size and would stay that big, outside the memory
/// budget, for as long as the pooled connection lives. A read of small rows leaves its
/// connection pooled (the control). Both read paths: batches and the raw binary COPY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_read_a_row_over_1_mib_is_closed_not_pooled() {
    use ferry_connectors::Source;
    use ferry_model::key::{KeyBound, KeyValue};
    use futures::StreamExt;

    let server = server_url();
    let (database, source, table, key) = pool_test_source(
        "ferry_bigrow",
        "CREATE TABLE t (id bigint PRIMARY KEY, note text);
         ALTER TABLE t ALTER COLUMN note SET STORAGE EXTERNAL;
         INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 10) g;
         INSERT INTO t VALUES (11, repeat('x', 2 * 1024 * 1024));",
    )
    .await;
    let bound = |value: i64| Some(KeyBound(vec![KeyValue::Int(value)]));
    let small = ChunkRange::Interval {
        lower: None,
        upper: bound(11),
    };
    let big = ChunkRange::Interval {
        lower: bound(11),
        upper: None,
    };
    let sessions = || ferry_sessions(&server, &database);
    let expect_sessions = |count: &'static str, after: &'static str| {
        let sessions = &sessions;
        async move {
            ferry_tests::wait_until(std::time::Duration::from_secs(10), || {
                sessions().trim() == count
            })
            .await
            .unwrap_or_else(|_| {
                panic!("after {after}: {} ferry sessions, not {count}", sessions())
            });
        }
    };
    let read_batches = |range: ChunkRange| {
        let (source, table, key) = (&source, &table, &key);
        async move {
            let mut batches = source.read_chunk(table, key, &range).await.expect("read");
            let mut rows = 0;
            while let Some(batch) = batches.next().await {
                rows += batch.expect("batch").num_rows();
            }
            rows
        }
    };
    assert_eq!(read_batches(small.clone()).await, 10);
    expect_sessions("1", "a read of small rows").await;
    assert_eq!(read_batches(big.clone()).await, 1);
    expect_sessions("0", "a read of a 2 MiB row").await;
    // The raw binary COPY path (same engine on both sides).
    let native = |range: ChunkRange| {
        let (source, table, key) = (&source, &table, &key);
        async move {
            let mut read = source
                .read_native(table, key, &range, "postgres-binary-copy")
                .await
                .expect("read")
                .expect("native read");
            let mut bytes = 0;
            while let Some(piece) = read.stream.bytes.next().await {
                bytes += piece.expect("piece").len();
            }
            read.checksum.await.expect("checksum");
            bytes
        }
    };
    assert!(native(small).await > 0);
    expect_sessions("1", "a raw read of small rows").await;
    assert!(native(big).await > 2 * 1024 * 1024);
    expect_sessions("0", "a raw read of a 2 MiB row").await;
    drop(source);
    tests_drop_database(&server, &database);
}

/// A pooled connection left idle is closed once it is older than the pool's
/// `MAX_AGE` (5 s), even when nothing asks the pool for a connection again: idle worker
/// processes must not keep a server's connections (40 of them once held all 200 of the
/// test server's, and a job waiting for one new connection waited for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pooled_connection_is_closed_once_past_its_age() {
    use ferry_connectors::Source;
    use futures::StreamExt;

    let server = server_url();
    let (database, source, table, key) = pool_test_source(
        "ferry_idle",
        "CREATE TABLE t (id bigint PRIMARY KEY, note text);
         INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 10) g;",
    )
    .await;
    let sessions = || ferry_sessions(&server, &database);
    let mut batches = source
        .read_chunk(
            &table,
            &key,
            &ChunkRange::Interval {
                lower: None,
                upper: None,
            },
        )
        .await
        .expect("read");
    let mut rows = 0;
    while let Some(batch) = batches.next().await {
        rows += batch.expect("batch").num_rows();
    }
    assert_eq!(rows, 10);
    drop(batches);
    // Pooled after the read…
    ferry_tests::wait_until(std::time::Duration::from_secs(3), || {
        sessions().trim() == "1"
    })
    .await
    .unwrap_or_else(|_| panic!("after a read: {} ferry sessions, not 1", sessions()));
    // …and closed within its age (5 s) while the pool is left alone.
    ferry_tests::wait_until(std::time::Duration::from_secs(15), || {
        sessions().trim() == "0"
    })
    .await
    .unwrap_or_else(|_| panic!("idle for 15 s: {} ferry sessions, not 0", sessions()));
    drop(source);
    tests_drop_database(&server, &database);
}

fn tests_drop_database(server: &str, database: &str) {
    psql(server, &format!("DROP DATABASE {database} WITH (FORCE)"));
}
