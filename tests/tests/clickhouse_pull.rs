//! ClickHouse → ClickHouse writes: the target pulling each chunk itself (`pull_address`,
//! `pull_cluster`: the rows never pass through ferry, the fenced staging/swap and the
//! in-server checksums stay), and a split partition swapped in once. Two real 18.16
//! servers (scripts/services.sh); every check reads the servers independently with
//! `clickhouse-client`, the swaps counted in the target's own `system.query_log`.

use std::collections::HashMap;

use ferry_coordination::ChunkState;
use ferry_tests::{env_url, run_local_with_env, unique_suffix, with_database, write_spec};
use tokio_util::sync::CancellationToken;

use ferry_tests::clickhouse as ch;

/// Three monthly partitions; January (3,000 rows) is bigger than the chunk target and is
/// cut into ranges.
fn fill_orders(url: &str, database: &str) {
    ch(
        url,
        &format!(
            "CREATE TABLE {database}.orders (id UInt64, customer UInt32, amount Decimal(12, 2),
               status LowCardinality(String), note Nullable(String), created DateTime)
               ENGINE = MergeTree PARTITION BY toYYYYMM(created) ORDER BY id;
             INSERT INTO {database}.orders SELECT number, number % 97, toDecimal64(number, 2) / 7,
               ['new', 'paid'][number % 2 + 1], if(number % 5 = 0, NULL, concat('n', toString(number))),
               toDateTime('2024-01-01 00:00:00') + number * 60 FROM system.numbers LIMIT 3000;
             INSERT INTO {database}.orders SELECT 10000 + number, 1, toDecimal64('-9999999999.99', 2), '', '',
               toDateTime('2024-02-01 00:00:00') + number * 3600 * 24 % (3600 * 24 * 60) FROM system.numbers LIMIT 400;"
        ),
    );
}

fn per_partition(url: &str, database: &str) -> String {
    ch(
        url,
        &format!(
            "SELECT _partition_id, count(), sum(cityHash64(id, customer, toString(amount), toString(status), ifNull(note, '<null>'), created))
             FROM {database}.orders GROUP BY _partition_id ORDER BY 1 FORMAT TSV"
        ),
    )
}

/// The password of the `ferry_pull` user (on both servers; its queries are logged).
fn pull_password(pull_url: &str) -> String {
    pull_url
        .split_once("ferry_pull:")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(password, _)| password.to_string())
        .expect("a password in FERRY_TEST_CLICKHOUSE_PULL_URL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_partition_is_swapped_in_once_after_all_its_ranges_are_staged() {
    let url = env_url("FERRY_TEST_CLICKHOUSE_URL");
    let url2 = env_url("FERRY_TEST_CLICKHOUSE_URL_2");
    let password = pull_password(&env_url("FERRY_TEST_CLICKHOUSE_PULL_URL"));
    let port2 = url2
        .split_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(port, _)| port.to_string())
        .expect("the second server's port");
    let suffix = unique_suffix();
    let (src, dst) = (format!("once_src_{suffix}"), format!("once_dst_{suffix}"));
    ch(&url, &format!("CREATE DATABASE {src}"));
    ch(&url2, &format!("CREATE DATABASE {dst}"));
    fill_orders(&url, &src);
    let dir = tempfile::tempdir().expect("tempdir");
    let env: HashMap<String, String> = [
        ("SRC".to_string(), with_database(&url, &src)),
        // Written as ferry_pull, whose statements the target logs.
        (
            "DST".to_string(),
            format!("http://ferry_pull:{password}@127.0.0.1:{port2}/{dst}"),
        ),
    ]
    .into_iter()
    .collect();
    let path = write_spec(
        dir.path(),
        "name: once\nsource: {kind: clickhouse, url_env: SRC}\ntarget: {kind: clickhouse, url_env: DST}\ntables: {include: [orders]}\nchunking: {target_rows: 600}\n",
    );
    let (_, outcome, _) = run_local_with_env(
        &path,
        &dir.path().join("state.db"),
        3,
        vec![],
        CancellationToken::new(),
        &env,
    )
    .await;
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "{chunk:?}");
    }
    let january = outcome
        .chunks
        .iter()
        .filter(|c| c.partition.as_deref() == Some("202401"))
        .count();
    assert!(january >= 4, "January is cut into ranges: {january}");
    assert_eq!(per_partition(&url2, &dst), per_partition(&url, &src));
    ch(&url2, "SYSTEM FLUSH LOGS");
    // Swaps into the target table, per partition: one each, the split one included.
    let swaps = ch(
        &url2,
        &format!(
            "SELECT extract(query, 'PARTITION ID \\'([0-9]+)\\'') AS p, count() FROM system.query_log
             WHERE user = 'ferry_pull' AND type = 2 AND query LIKE 'ALTER TABLE `{dst}`.`orders` REPLACE PARTITION%'
             GROUP BY p ORDER BY p FORMAT TSV"
        ),
    );
    assert_eq!(swaps, "202401\t1\n202402\t1\n202403\t1", "{swaps}");
    let leftovers = ch(
        &url2,
        &format!(
            "SELECT count() FROM system.tables WHERE database = '{dst}' AND name LIKE '\\_ferry\\_stg%'"
        ),
    );
    assert_eq!(leftovers, "0", "no staging table left");
    ch(&url, &format!("DROP DATABASE {src}"));
    ch(&url2, &format!("DROP DATABASE {dst}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_target_pulls_each_chunk_and_both_servers_checksum_it() {
    let url = env_url("FERRY_TEST_CLICKHOUSE_URL");
    let url2 = env_url("FERRY_TEST_CLICKHOUSE_URL_2");
    // A user with a password on both servers, whose queries the servers log.
    let pull_url = env_url("FERRY_TEST_CLICKHOUSE_PULL_URL");
    let password = pull_password(&pull_url);
    let native = format!("127.0.0.1:{}", ferry_tests::clickhouse_native_port(&url));
    let suffix = unique_suffix();
    let (src, dst, dst2, dst3) = (
        format!("pull_src_{suffix}"),
        format!("pull_dst_{suffix}"),
        format!("pull_dst2_{suffix}"),
        format!("pull_dst3_{suffix}"),
    );
    ch(&url, &format!("CREATE DATABASE {src}"));
    ch(
        &url2,
        &format!("CREATE DATABASE {dst}; CREATE DATABASE {dst2}; CREATE DATABASE {dst3}"),
    );
    fill_orders(&url, &src);
    let expected = per_partition(&url, &src);
    let dir = tempfile::tempdir().expect("tempdir");
    let env: HashMap<String, String> = [
        ("SRC", with_database(&pull_url, &src)),
        ("DST", with_database(&url2, &dst)),
        ("DST2", with_database(&url2, &dst2)),
        ("DST3", with_database(&url2, &dst3)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let spec = |name: &str, target: &str, pull: &str| {
        format!(
            "name: {name}\nsource: {{kind: clickhouse, url_env: SRC, clickhouse: {{{pull}}}}}\ntarget: {{kind: clickhouse, url_env: {target}}}\ntables: {{include: [orders]}}\nchunking: {{target_rows: 1000}}\n"
        )
    };
    let run = |name: &str, spec: String| {
        let path = write_spec(dir.path(), &spec);
        let state = dir.path().join(format!("{name}.db"));
        let env = env.clone();
        async move {
            let (_, outcome, faulty) =
                run_local_with_env(&path, &state, 3, vec![], CancellationToken::new(), &env).await;
            (outcome, faulty, state)
        }
    };

    // 1. pull_address with the URL's user and password (remote()).
    let (outcome, faulty, state) = run(
        "by_address",
        spec("by_address", "DST", &format!("pull_address: \"{native}\"")),
    )
    .await;
    let january = outcome
        .chunks
        .iter()
        .filter(|c| c.partition.as_deref() == Some("202401"))
        .count();
    assert!(january >= 3, "January is cut into ranges: {january}");
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "{chunk:?}");
    }
    assert_eq!(
        faulty.pulled_writes(),
        outcome.chunks.len() as u64,
        "every chunk pulled by the target"
    );
    assert_eq!(
        per_partition(&url2, &dst),
        expected,
        "every row, per partition"
    );
    // Independently: the source's log holds the target's pulls (not initial queries, by
    // ferry_pull) and no read of the table streamed to ferry (an initial RowBinary select).
    ch(&url, "SYSTEM FLUSH LOGS");
    let pulls = ch(
        &url,
        &format!(
            "SELECT countIf(NOT is_initial_query), countIf(is_initial_query AND query LIKE '%FORMAT RowBinary%')
             FROM system.query_log WHERE user = 'ferry_pull' AND type = 2 AND query LIKE '%{src}%orders%' FORMAT TSV"
        ),
    );
    let (pulled, streamed) = pulls.split_once('\t').expect("two counts");
    assert!(
        pulled.parse::<u64>().expect("count") >= outcome.chunks.len() as u64,
        "{pulls}"
    );
    assert_eq!(streamed, "0", "no chunk streamed through ferry");
    // The password is in no answer ferry kept.
    let stored = std::fs::read(&state).expect("state file");
    assert!(
        !String::from_utf8_lossy(&stored).contains(&password),
        "the state file holds the source's password"
    );
    assert!(!format!("{outcome:?}").contains(&password));

    // 2. pull_cluster: the target's remote_servers name the source (credentials there).
    let (outcome, faulty, _) = run(
        "by_cluster",
        spec("by_cluster", "DST2", "pull_cluster: ferry_one"),
    )
    .await;
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Verified, "{chunk:?}");
    }
    assert_eq!(faulty.pulled_writes(), outcome.chunks.len() as u64);
    assert_eq!(per_partition(&url2, &dst2), expected);

    // 3. An address the target cannot reach: a permanent error naming the fix, not an
    // endless wait for databases that both answer; the password is not in it.
    let (outcome, faulty, _) = run(
        "unreachable",
        spec("unreachable", "DST3", "pull_address: \"127.0.0.1:1\""),
    )
    .await;
    assert_eq!(faulty.pulled_writes(), 0);
    for chunk in &outcome.chunks {
        assert_eq!(chunk.state, ChunkState::Failed, "{chunk:?}");
        let error = chunk.last_error.as_deref().unwrap_or_default();
        assert!(error.contains("pull_address"), "{error}");
        assert!(!error.contains(&password), "{error}");
    }
    assert_eq!(
        ch(&url2, &format!("SELECT count() FROM {dst3}.orders")),
        "0",
        "nothing swapped in"
    );
    let leftovers = ch(
        &url2,
        &format!(
            "SELECT count() FROM system.tables WHERE database IN ('{dst}', '{dst2}', '{dst3}') AND name LIKE '\\\\_ferry\\\\_stg%'"
        ),
    );
    assert_eq!(leftovers, "0", "no staging table left");
    ch(&url, &format!("DROP DATABASE {src}"));
    ch(
        &url2,
        &format!("DROP DATABASE {dst}; DROP DATABASE {dst2}; DROP DATABASE {dst3}"),
    );
}
