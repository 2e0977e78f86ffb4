//! `ferry-worker`'s configuration: [`WorkerConfig`], loaded in layers by
//! [`WorkerConfig::load`]: defaults < TOML file (`--config`) < environment
//! (`FERRY_WORKER__SECTION__KEY`) < flags ([`WorkerArgs`]), then validated with every
//! problem reported at once. `worker/config.example.toml` shows every key with its
//! default; a test keeps it equal to [`WorkerConfig::default`].

use std::collections::HashMap;
use std::time::Duration;

use ferry_model::duration;
use ferry_model::problems::Problems;
use ferry_server::config::{
    self, ConfigError, ETCD_ENV_ALIASES, EnvAlias, EtcdConfig, LayeredConfig, SharedArgs,
};
use ferry_server::metrics_http::MetricsConfig;
use ferry_server::process::LogConfig;
use serde::{Deserialize, Serialize};

/// Prefix of the worker's environment variables: `FERRY_WORKER__SLOTS=4`.
pub const ENV_PREFIX: &str = "FERRY_WORKER";

/// Older flat names no longer read, and what replaces each (the binary warns when one
/// is set).
pub const RETIRED_ENV: &[(&str, &str)] = &[
    ("FERRY_WORKER_NAME", "FERRY_WORKER__NAME"),
    ("FERRY_WORKER_SLOTS", "FERRY_WORKER__SLOTS"),
    ("FERRY_WORKER_TTL", "FERRY_WORKER__LEASE__TTL"),
    ("FERRY_DRAIN_TIMEOUT", "FERRY_WORKER__DRAIN_TIMEOUT"),
];

/// A worker's settings. Every key is optional in a file; the defaults are those of
/// [`Default`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// This worker's name, unique in the cluster. Default: `{host}-{pid}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Chunks copied at once. At least 1. Default 2.
    pub slots: u32,
    /// How long a drain (SIGTERM, `ferryctl drain`) lets running chunks finish before
    /// it hands them back. Keep Kubernetes' `terminationGracePeriodSeconds` above it.
    /// Default `60s`.
    #[serde(with = "duration::as_text")]
    pub drain_timeout: Duration,
    /// MiB of rows the process's readers may hold in flight across all its slots: a
    /// reader waits (reading nothing more) while its next batch would pass it; a batch
    /// bigger than all of it travels alone. What it does not count (each slot's batch
    /// being read and the drivers' buffers for the largest row) is in the README's
    /// "Memory". At least 16. Default 256.
    pub memory_budget_mb: u64,
    /// The etcd that holds the cluster's state.
    pub etcd: EtcdConfig,
    /// The worker's lease.
    pub lease: WorkerLeaseConfig,
    /// The gRPC health service.
    pub health: HealthConfig,
    /// Prometheus metrics over HTTP.
    pub metrics: MetricsConfig,
    /// How logs are written.
    pub log: LogConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: None,
            slots: 2,
            drain_timeout: Duration::from_secs(60),
            memory_budget_mb: ferry_model::memory::DEFAULT_BUDGET_BYTES >> 20,
            etcd: EtcdConfig::default(),
            lease: WorkerLeaseConfig::default(),
            health: HealthConfig::default(),
            metrics: MetricsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// The worker's etcd lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerLeaseConfig {
    /// Lease TTL: the leader reassigns this worker's chunks this long (plus its grace)
    /// after the worker stops renewing; the worker stops writing at 2/3 of it. Must
    /// match the coordinators' `lease.worker_ttl`. At least 2s, whole seconds.
    /// Default `10s`.
    #[serde(with = "duration::as_text")]
    pub ttl: Duration,
}

impl Default for WorkerLeaseConfig {
    fn default() -> Self {
        WorkerLeaseConfig {
            ttl: Duration::from_secs(10),
        }
    }
}

/// The worker's gRPC health service (`grpc.health.v1.Health`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// `host:port` to serve it on. Default: not served (workers serve nothing else, and
    /// several workers often share a host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// `ferry-worker`'s command line. Every flag but `--config` overrides one key of the
/// configuration when given.
#[derive(Clone, Debug, Default, clap::Parser)]
#[command(
    name = "ferry-worker",
    version,
    about = "A ferry worker: takes chunks assigned through etcd, copies and verifies them.",
    after_help = "Settings come from defaults < the --config file < FERRY_WORKER__SECTION__KEY \
                  environment variables (e.g. FERRY_WORKER__SLOTS) < these flags. \
                  See worker/config.example.toml for every key."
)]
pub struct WorkerArgs {
    /// `--config`, `--etcd-endpoints`, `--cluster`, `--name`.
    #[command(flatten)]
    pub shared: SharedArgs,
    /// Chunks copied at once [slots].
    #[arg(long)]
    pub slots: Option<u32>,
    /// Lease TTL, e.g. 10s (a bare number is seconds) [lease.ttl].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_flag_duration)]
    pub ttl: Option<Duration>,
    /// How long a drain lets running chunks finish, e.g. 60s [drain_timeout].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_flag_duration)]
    pub drain_timeout: Option<Duration>,
    /// MiB of rows in flight across all slots [memory_budget_mb].
    #[arg(long, value_name = "MIB")]
    pub memory_budget_mb: Option<u64>,
    /// Serve the gRPC health service on host:port [health.listen].
    #[arg(long, value_name = "HOST:PORT")]
    pub health_listen: Option<String>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics [metrics.listen].
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
}

impl WorkerArgs {
    /// Overrides the keys whose flags were given.
    fn apply_to(&self, config: &mut WorkerConfig) {
        self.shared.apply_to(&mut config.etcd, &mut config.name);
        if let Some(slots) = self.slots {
            config.slots = slots;
        }
        if let Some(ttl) = self.ttl {
            config.lease.ttl = ttl;
        }
        if let Some(drain_timeout) = self.drain_timeout {
            config.drain_timeout = drain_timeout;
        }
        if let Some(budget) = self.memory_budget_mb {
            config.memory_budget_mb = budget;
        }
        if let Some(listen) = &self.health_listen {
            config.health.listen = Some(listen.clone());
        }
        if let Some(listen) = &self.metrics_listen {
            config.metrics.listen = Some(listen.clone());
        }
        if let Some(format) = self.shared.log_format {
            config.log.format = format;
        }
    }
}

impl WorkerConfig {
    /// Loads the layers (defaults, `args.config`, `env`, `args`) and validates the
    /// result.
    pub fn load(args: &WorkerArgs, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        config::load(args.shared.config.as_deref(), env, |merged| {
            args.apply_to(merged)
        })
    }
}

impl LayeredConfig for WorkerConfig {
    const ENV_PREFIX: &'static str = ENV_PREFIX;
    const ENV_ALIASES: &'static [EnvAlias] = ETCD_ENV_ALIASES;

    fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::new();
        problems.check("name", config::check_process_name(self.name.as_deref()));
        if self.slots == 0 {
            problems.push("slots", "must be at least 1");
        }
        if self.memory_budget_mb < ferry_model::memory::MIN_BUDGET_BYTES >> 20 {
            problems.push(
                "memory_budget_mb",
                "must be at least 16 (a batch is cut at about 8 MiB)",
            );
        }
        self.etcd.check(&mut problems);
        problems.check("lease.ttl", config::check_lease_ttl(self.lease.ttl));
        if let Some(listen) = &self.metrics.listen {
            problems.check("metrics.listen", config::check_host_port(listen));
        }
        if let Some(listen) = &self.health.listen {
            problems.check("health.listen", config::check_host_port(listen));
        }
        problems.into_result()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;

    use ferry_server::config::env_from_pairs as env;

    fn args(flags: &[&str]) -> WorkerArgs {
        WorkerArgs::try_parse_from(std::iter::once("ferry-worker").chain(flags.iter().copied()))
            .expect("flags parse")
    }

    #[test]
    fn the_example_file_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let example: WorkerConfig = config::read_file(&path).expect("the example parses");
        assert_eq!(example, WorkerConfig::default());
    }

    #[test]
    fn flags_override_the_environment_which_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("worker.toml");
        std::fs::write(
            &path,
            "slots = 3\ndrain_timeout = \"5m\"\nname = \"file\"\n\
             [etcd]\nendpoints = [\"http://file:2379\"]\n\
             [lease]\nttl = \"4s\"\n",
        )
        .expect("write the file");
        let loaded = WorkerConfig::load(
            &args(&["--config", &path.display().to_string(), "--slots", "8"]),
            &env(&[
                ("FERRY_WORKER__SLOTS", "5"),
                ("FERRY_WORKER__LEASE__TTL", "6s"),
                ("FERRY_WORKER__HEALTH__LISTEN", "0.0.0.0:7990"),
            ]),
        )
        .expect("loads");
        assert_eq!(loaded.slots, 8);
        assert_eq!(loaded.lease.ttl, Duration::from_secs(6));
        assert_eq!(loaded.health.listen.as_deref(), Some("0.0.0.0:7990"));
        assert_eq!(loaded.drain_timeout, Duration::from_secs(300));
        assert_eq!(loaded.name.as_deref(), Some("file"));
        assert_eq!(loaded.etcd.endpoints, ["http://file:2379"]);
        assert_eq!(loaded.etcd.cluster, "default");
    }

    #[test]
    fn an_unknown_key_or_bad_value_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("typo.toml");
        std::fs::write(&path, "[health]\nlisten_on = \"0.0.0.0:1\"\n").expect("write");
        let error = WorkerConfig::load(
            &args(&["--config", &path.display().to_string()]),
            &HashMap::new(),
        )
        .expect_err("an unknown key");
        let text = error.to_string();
        assert!(
            text.contains("typo.toml") && text.contains("health.listen_on"),
            "{text}"
        );
        let error = WorkerConfig::load(
            &args(&["--etcd-endpoints", "http://e:1"]),
            &env(&[
                ("FERRY_WORKER__SLOTS", "two"),
                ("FERRY_WORKER__DRAIN_TIMEOUT", "1 minute-ish"),
            ]),
        )
        .expect_err("bad values");
        let text = error.to_string();
        assert!(
            text.contains("FERRY_WORKER__SLOTS: expected a whole number"),
            "{text}"
        );
        assert!(
            text.contains("FERRY_WORKER__DRAIN_TIMEOUT: invalid duration"),
            "{text}"
        );
    }

    #[test]
    fn validate_lists_every_problem_at_once() {
        let config = WorkerConfig {
            slots: 0,
            lease: WorkerLeaseConfig {
                ttl: Duration::from_secs(1),
            },
            health: HealthConfig {
                listen: Some("nowhere".to_owned()),
            },
            ..WorkerConfig::default()
        };
        let Err(problems) = config.validate() else {
            panic!("invalid");
        };
        assert_eq!(
            problems.paths(),
            ["slots", "etcd.endpoints", "lease.ttl", "health.listen"]
        );
    }

    #[test]
    fn old_names_and_flags_keep_working() {
        let loaded = WorkerConfig::load(
            &args(&["--ttl", "3", "--drain-timeout", "30"]),
            &env(&[
                ("FERRY_ETCD_ENDPOINTS", "http://old:2379"),
                ("FERRY_CLUSTER", "c1"),
            ]),
        )
        .expect("loads");
        assert_eq!(loaded.etcd.endpoints, ["http://old:2379"]);
        assert_eq!(loaded.etcd.cluster, "c1");
        assert_eq!(loaded.lease.ttl, Duration::from_secs(3));
        assert_eq!(loaded.drain_timeout, Duration::from_secs(30));
    }
}
