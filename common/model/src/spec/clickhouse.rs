//! The `clickhouse:` section of a ClickHouse endpoint.
//!
//! ```yaml
//! source:
//!   kind: clickhouse
//!   url_env: OLD_CLUSTER_URL
//!   clickhouse:
//!     read_replica: "10.0.0.7:8123"     # chunk reads go to this replica's HTTP interface
//!     split_column: {events: user_id}   # cut big partitions of `events` on user_id
//!     max_execution_time: 3600          # seconds, per read
//!     pull_address: "10.0.0.7:9000"     # ClickHouse targets pull chunks from here (native port)
//! target:
//!   kind: clickhouse
//!   url_env: NEW_CLUSTER_URL
//!   clickhouse:
//!     on_cluster: new_cluster           # CREATE TABLE ... ON CLUSTER new_cluster
//!     engines:                          # source engine -> target engine, in this order
//!       MergeTree: "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"
//! ```

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::fields::{describe, read_mapping, read_positive_integer, read_string};
use crate::problems::Problems;

const SOURCE_FIELDS: &[&str] = &[
    "read_replica",
    "split_column",
    "max_execution_time",
    "pull_address",
    "pull_cluster",
];
const TARGET_FIELDS: &[&str] = &["on_cluster", "engines"];

/// ClickHouse options of an endpoint (`source.clickhouse` or `target.clickhouse`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClickhouseOptions {
    /// Source: `host:port` of the HTTP interface of the replica that chunk reads go to
    /// (the catalog is read from the URL's server), so the rest of the old cluster keeps
    /// serving.
    pub read_replica: Option<String>,
    /// Source: the column a table's big partitions are cut on, by table name (default:
    /// the sorting key's first column).
    pub split_column: BTreeMap<String, String>,
    /// Source: `max_execution_time` of every read, in seconds.
    pub max_execution_time: Option<u64>,
    /// Source: where a ClickHouse target reaches this source over the native protocol
    /// (`host:port`, 9000 by default) to pull each chunk itself with `remote()`, with the
    /// URL's user and password (which the target's query log then holds).
    pub pull_address: Option<String>,
    /// Source: a cluster in the target servers' `remote_servers` that names this source
    /// (credentials in the target's configuration): the target pulls each chunk with
    /// `cluster()`.
    pub pull_cluster: Option<String>,
    /// Target: the cluster every `CREATE TABLE` runs `ON CLUSTER`.
    pub on_cluster: Option<String>,
    /// Target: engine rewrite rules, in order: the first whose `from` names the source
    /// table's engine gives the target's.
    pub engines: Vec<EngineRule>,
}

/// One engine rewrite rule: a source engine name and the target's engine clause, where
/// `{database}` and `{table}` are replaced by the target table's (ClickHouse macros such
/// as `{shard}` and `{replica}` are left for the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineRule {
    /// The source engine's name, e.g. `MergeTree`.
    pub from: String,
    /// The target engine clause, e.g. `ReplicatedMergeTree('/t/{shard}/{table}', '{replica}')`.
    pub to: String,
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `host:port` with a numeric port and a host of letters, digits, '.', '-' or '_' (it is
/// written into a statement).
fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            && port.parse::<u16>().is_ok_and(|port| port > 0)
    })
}

/// The engine name a clause starts with: `ReplicatedMergeTree` of `ReplicatedMergeTree('/p', 'r')`.
pub fn engine_name(clause: &str) -> &str {
    let clause = clause.trim();
    clause
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(clause, |end| &clause[..end])
}

/// Reads `clickhouse:` of `source` or `target` (`role`).
pub(super) fn read_clickhouse(
    value: &Value,
    path: &str,
    role: &str,
    problems: &mut Problems,
) -> Option<ClickhouseOptions> {
    let allowed = if role == "source" {
        SOURCE_FIELDS
    } else {
        TARGET_FIELDS
    };
    let fields = read_mapping(value, path, allowed, &[], problems)?;
    let mut options = ClickhouseOptions::default();
    let mut ok = true;
    if let Some(replica) = fields.optional("read_replica") {
        let replica_path = fields.path_of("read_replica");
        match read_string(replica, &replica_path, problems) {
            Some(text) if text.contains(':') && !text.contains('/') => {
                options.read_replica = Some(text.to_string());
            }
            Some(_) => {
                problems.push(
                    &replica_path,
                    "expected host:port of the replica's HTTP interface, e.g. 10.0.0.7:8123",
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(split) = fields.optional("split_column") {
        let split_path = fields.path_of("split_column");
        match split.as_mapping() {
            Some(mapping) => {
                for (table, column) in mapping {
                    match (table.as_str(), column.as_str()) {
                        (Some(table), Some(column)) if !column.is_empty() => {
                            options
                                .split_column
                                .insert(table.to_string(), column.to_string());
                        }
                        _ => {
                            problems.push(
                                &split_path,
                                format!(
                                    "expected table: column names, found {}: {}",
                                    describe(table),
                                    describe(column)
                                ),
                            );
                            ok = false;
                        }
                    }
                }
            }
            None => {
                problems.push(
                    &split_path,
                    format!(
                        "expected a mapping of table: column, found {}",
                        describe(split)
                    ),
                );
                ok = false;
            }
        }
    }
    if let Some(seconds) = fields.optional("max_execution_time") {
        match read_positive_integer(
            seconds,
            &fields.path_of("max_execution_time"),
            86_400,
            problems,
        ) {
            Some(value) => options.max_execution_time = Some(value),
            None => ok = false,
        }
    }
    if let Some(address) = fields.optional("pull_address") {
        let address_path = fields.path_of("pull_address");
        match read_string(address, &address_path, problems) {
            Some(text) if is_host_port(text) => options.pull_address = Some(text.to_string()),
            Some(_) => {
                problems.push(
                    &address_path,
                    "expected host:port of the source's native interface as the target servers reach it, e.g. 10.0.0.7:9000",
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(cluster) = fields.optional("pull_cluster") {
        let cluster_path = fields.path_of("pull_cluster");
        match read_string(cluster, &cluster_path, problems) {
            Some(name) if is_identifier(name) => options.pull_cluster = Some(name.to_string()),
            Some(_) => {
                problems.push(
                    &cluster_path,
                    "expected a cluster name of the target servers' remote_servers (letters, digits, '_')",
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if options.pull_address.is_some() && options.pull_cluster.is_some() {
        problems.push(
            &fields.path_of("pull_cluster"),
            "pull_address and pull_cluster both say where the target pulls from: keep one",
        );
        ok = false;
    }
    if let Some(cluster) = fields.optional("on_cluster") {
        let cluster_path = fields.path_of("on_cluster");
        match read_string(cluster, &cluster_path, problems) {
            Some(name) if is_identifier(name) => options.on_cluster = Some(name.to_string()),
            Some(_) => {
                problems.push(
                    &cluster_path,
                    "expected a cluster name (letters, digits, '_')",
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    if let Some(engines) = fields.optional("engines") {
        let engines_path = fields.path_of("engines");
        match engines.as_mapping() {
            Some(mapping) => {
                for (from, to) in mapping {
                    let (Some(from), Some(to)) = (from.as_str(), to.as_str()) else {
                        problems.push(
                            &engines_path,
                            format!(
                                "expected source engine: target engine clause, found {}: {}",
                                describe(from),
                                describe(to)
                            ),
                        );
                        ok = false;
                        continue;
                    };
                    let rule_path = format!("{engines_path}.{from}");
                    if !is_identifier(from) || !from.ends_with("MergeTree") {
                        problems.push(
                            &rule_path,
                            "a rule rewrites an engine of the MergeTree family (MergeTree, \
                             ReplacingMergeTree, ...): name it without arguments",
                        );
                        ok = false;
                    } else if !engine_name(to).ends_with("MergeTree") {
                        problems.push(
                            &rule_path,
                            format!(
                                "the target engine {:?} is not of the MergeTree family: ferry \
                                 swaps partitions in, which only MergeTree engines can take",
                                engine_name(to)
                            ),
                        );
                        ok = false;
                    } else {
                        options.engines.push(EngineRule {
                            from: from.to_string(),
                            to: to.trim().to_string(),
                        });
                    }
                }
            }
            None => {
                problems.push(
                    &engines_path,
                    format!(
                        "expected a mapping of source engine: target engine clause, found {}",
                        describe(engines)
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(options)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    fn read(yaml: &str, role: &str) -> (Option<ClickhouseOptions>, Problems) {
        let value: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let mut problems = Problems::default();
        let options = read_clickhouse(&value, &format!("{role}.clickhouse"), role, &mut problems);
        (options, problems)
    }

    #[test]
    fn reads_rules_in_order_and_source_options() {
        let (options, problems) = read(
            "on_cluster: c1\nengines:\n  ReplacingMergeTree: \"ReplicatedReplacingMergeTree('/t/{shard}/{table}', '{replica}')\"\n  MergeTree: ReplicatedMergeTree('/t/{table}', '{replica}')\n",
            "target",
        );
        assert!(problems.is_empty(), "{problems}");
        let options = options.unwrap();
        assert_eq!(options.on_cluster.as_deref(), Some("c1"));
        assert_eq!(options.engines.len(), 2);
        assert_eq!(options.engines[0].from, "ReplacingMergeTree");
        assert_eq!(engine_name(&options.engines[1].to), "ReplicatedMergeTree");
        let (options, problems) = read(
            "read_replica: 127.0.0.1:8123\nsplit_column: {events: user_id}\nmax_execution_time: 60\n",
            "source",
        );
        assert!(problems.is_empty(), "{problems}");
        let options = options.unwrap();
        assert_eq!(options.split_column["events"], "user_id");
        assert_eq!(options.max_execution_time, Some(60));
    }

    #[test]
    fn refuses_rules_that_cannot_apply() {
        let (options, problems) = read(
            "engines: {Log: \"ReplicatedMergeTree('/t', 'r')\"}",
            "target",
        );
        assert!(options.is_none());
        assert!(
            problems.to_string().contains("MergeTree family"),
            "{problems}"
        );
        let (_, problems) = read("engines: {MergeTree: Memory}", "target");
        assert!(
            problems.to_string().contains("not of the MergeTree family"),
            "{problems}"
        );
        let (_, problems) = read("on_cluster: c1", "source");
        assert!(!problems.is_empty());
        let (_, problems) = read("pull_address: \"h:9000'); DROP\"", "source");
        assert!(
            problems.to_string().contains("native interface"),
            "{problems}"
        );
        let (_, problems) = read("pull_address: h:9000\npull_cluster: old", "source");
        assert!(problems.to_string().contains("keep one"), "{problems}");
        let (options, problems) = read("pull_address: old-ch-1.dc:9000", "source");
        assert!(problems.is_empty(), "{problems}");
        assert_eq!(
            options.unwrap().pull_address.as_deref(),
            Some("old-ch-1.dc:9000")
        );
        let (_, problems) = read("pull_address: h:9000", "target");
        assert!(!problems.is_empty());
    }
}
