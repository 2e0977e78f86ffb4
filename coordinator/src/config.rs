//! `ferry-coordinator`'s configuration: [`CoordinatorConfig`], loaded in layers by
//! [`CoordinatorConfig::load`]: defaults < TOML file (`--config`) < environment
//! (`FERRY_COORDINATOR__SECTION__KEY`) < flags ([`CoordinatorArgs`]), then validated with
//! every problem reported at once. `coordinator/config.example.toml` shows every key
//! with its default; a test keeps it equal to [`CoordinatorConfig::default`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use ferry_model::duration;
use ferry_model::problems::Problems;
use ferry_server::config::{
    self, ConfigError, ETCD_ENV_ALIASES, EnvAlias, EtcdConfig, LayeredConfig, SharedArgs,
};
use ferry_server::metrics_http::MetricsConfig;
use ferry_server::process::LogConfig;
use serde::{Deserialize, Serialize};

use crate::security::{ControlSecurity, Role};

/// Prefix of the coordinator's environment variables: `FERRY_COORDINATOR__LEASE__TTL=10s`.
pub const ENV_PREFIX: &str = "FERRY_COORDINATOR";

/// Older flat names no longer read, and what replaces each (the binary warns when one
/// is set).
pub const RETIRED_ENV: &[(&str, &str)] = &[
    ("FERRY_LISTEN", "FERRY_COORDINATOR__SERVER__LISTEN"),
    ("FERRY_ADVERTISE", "FERRY_COORDINATOR__SERVER__ADVERTISE"),
    ("FERRY_COORDINATOR_NAME", "FERRY_COORDINATOR__NAME"),
    ("FERRY_LEASE_TTL", "FERRY_COORDINATOR__LEASE__TTL"),
    ("FERRY_WORKER_TTL", "FERRY_COORDINATOR__LEASE__WORKER_TTL"),
    ("FERRY_GRACE", "FERRY_COORDINATOR__LEASE__GRACE"),
];

/// A coordinator's settings. Every key is optional in a file; the defaults are those
/// of [`Default`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// This coordinator's name, unique in the cluster. Default: `{host}-{pid}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The etcd that holds the cluster's state.
    pub etcd: EtcdConfig,
    /// The Control API (and the gRPC health service on the same port).
    pub server: ServerConfig,
    /// Lease timings.
    pub lease: LeaseConfig,
    /// Compaction of etcd's history by the leader.
    pub history: HistoryConfig,
    /// Prometheus metrics over HTTP.
    pub metrics: MetricsConfig,
    /// The web console over HTTP.
    pub console: ConsoleConfig,
    /// How logs are written.
    pub log: LogConfig,
    /// Caps on chunks in flight per database across all jobs (`[[endpoints]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointCapConfig>,
}

/// One `[[endpoints]]` entry: the most chunks in flight on one database, summed over
/// every job that reads or writes it (docs/throttling.md, "Sharing the cluster").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointCapConfig {
    /// The database: `host:port/database` as in its connection URL (port required; the
    /// host compared without case), or `file:/path` for a database file.
    #[serde(rename = "match")]
    pub database: String,
    /// Chunks in flight on it at most, 1 to 1024.
    pub max_concurrency: u32,
}

impl CoordinatorConfig {
    /// The `[[endpoints]]` caps by database identity (entries that do not read are left
    /// out: [`LayeredConfig::validate`] refuses them first).
    pub fn database_caps(&self) -> HashMap<String, u32> {
        self.endpoints
            .iter()
            .filter_map(|entry| {
                ferry_model::spec::normalize_database_identity(&entry.database)
                    .map(|identity| (identity, entry.max_concurrency))
            })
            .collect()
    }
}

/// The `[console]` section: the web console (docs/console.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// `host:port` serving the web console over HTTP, with the Control API's tokens and
    /// roles (`server.tokens_file`). Default: not served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// etcd keeps every revision of every key until it is compacted; a job writes about ten
/// per chunk, and an uncompacted history slows etcd down several times over a big job.
/// The leader compacts it regularly, keeping the newest revisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// How often the leader compacts; `0s` turns it off (e.g. when etcd compacts by
    /// itself with `--auto-compaction-*`). Default `30s`.
    #[serde(with = "duration::as_text")]
    pub compact_interval: Duration,
    /// Revisions kept behind the newest one at each compaction. Default `100000`.
    pub keep_revisions: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            compact_interval: Duration::from_secs(30),
            keep_revisions: 100_000,
        }
    }
}

/// Where the Control API listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` the Control API and the health service listen on (port 0: any free
    /// port, printed on stdout). Default `127.0.0.1:7979`.
    pub listen: String,
    /// `host:port` other processes reach this coordinator at; the leader publishes it
    /// so that standbys can point clients to it. Default: the bound listen address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// The server's certificate (PEM): serve the Control API over TLS. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The server's private key (PEM), with `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// A CA (PEM): require client certificates signed by it (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// `viewer` or `operator`: the role of a caller known by its client certificate when
    /// no tokens are checked. Default `operator`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_role: Option<String>,
    /// A file of `NAME ROLE TOKEN` lines: callers must send one of these bearer tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address. Default `false`.
    pub insecure: bool,
    /// A second, plaintext `host:port` serving only the gRPC health service, for probes
    /// that speak no TLS (Kubernetes' `grpc` probes) when the Control API serves TLS.
    /// Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7979".to_owned(),
            advertise: None,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            client_cert_role: None,
            tokens_file: None,
            insecure: false,
            health_listen: None,
        }
    }
}

impl ServerConfig {
    /// The Control API's security settings.
    pub fn security(&self) -> ControlSecurity {
        ControlSecurity {
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            client_ca: self.client_ca.clone(),
            client_cert_role: self.client_cert_role.as_deref().and_then(Role::parse),
            tokens_file: self.tokens_file.clone(),
            insecure: self.insecure,
        }
    }
}

/// Lease timings of the coordinator and of the workers it watches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// TTL of the coordinator's own etcd lease: a standby takes over about this long
    /// after the leader dies. At least 2s, whole seconds. Default `10s`.
    #[serde(with = "duration::as_text")]
    pub ttl: Duration,
    /// The workers' lease TTL (must match the workers' `lease.ttl`): a new leader gives
    /// chunks in flight this long before it reaps them. At least 2s, whole seconds.
    /// Default `10s`.
    #[serde(with = "duration::as_text")]
    pub worker_ttl: Duration,
    /// Extra wait after a worker's lease vanished before its chunks are reassigned.
    /// Workers stop writing at 2/3 of their TTL, before etcd drops the lease, so any
    /// value is safe; the grace absorbs a commit still in flight. Default `2s`.
    #[serde(with = "duration::as_text")]
    pub grace: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl: Duration::from_secs(10),
            worker_ttl: Duration::from_secs(10),
            grace: Duration::from_secs(2),
        }
    }
}

/// `ferry-coordinator`'s command line. Every flag but `--config` overrides one key of
/// the configuration when given.
#[derive(Clone, Debug, Default, clap::Parser)]
#[command(
    name = "ferry-coordinator",
    version,
    about = "A ferry coordinator: plans jobs and assigns their chunks to workers; one of several replicas leads (etcd election), the others stand by and answer reads.",
    after_help = "Settings come from defaults < the --config file < FERRY_COORDINATOR__SECTION__KEY \
                  environment variables (e.g. FERRY_COORDINATOR__ETCD__ENDPOINTS) < these flags. \
                  See coordinator/config.example.toml for every key."
)]
pub struct CoordinatorArgs {
    /// `--config`, `--etcd-endpoints`, `--cluster`, `--name`.
    #[command(flatten)]
    pub shared: SharedArgs,
    /// Where the Control API and the health service listen, host:port [server.listen].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// The address other processes reach this coordinator at [server.advertise].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// The Control API's TLS certificate, PEM [server.tls_cert].
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The Control API's TLS private key, PEM [server.tls_key].
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA, PEM (mutual TLS) [server.client_ca].
    #[arg(long, value_name = "PATH")]
    pub client_ca: Option<PathBuf>,
    /// Bearer tokens, one `NAME ROLE TOKEN` line each (ROLE viewer or operator)
    /// [server.tokens_file].
    #[arg(long, value_name = "PATH")]
    pub tokens_file: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address [server.insecure].
    #[arg(long)]
    pub insecure: bool,
    /// A plaintext port serving only the gRPC health service, host:port
    /// [server.health_listen].
    #[arg(long, value_name = "HOST:PORT")]
    pub health_listen: Option<String>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics [metrics.listen].
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
    /// Serve the web console at http://HOST:PORT [console.listen].
    #[arg(long, value_name = "HOST:PORT")]
    pub console_listen: Option<String>,
    /// The coordinator's lease TTL, e.g. 10s (a bare number is seconds) [lease.ttl].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_flag_duration)]
    pub lease_ttl: Option<Duration>,
    /// The workers' lease TTL, e.g. 10s [lease.worker_ttl].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_flag_duration)]
    pub worker_ttl: Option<Duration>,
    /// Wait after a worker's lease vanished before its chunks are reassigned, e.g. 2s
    /// [lease.grace].
    #[arg(long, value_name = "DURATION", value_parser = config::parse_flag_duration)]
    pub grace: Option<Duration>,
}

impl CoordinatorArgs {
    /// Overrides the keys whose flags were given.
    fn apply_to(&self, config: &mut CoordinatorConfig) {
        self.shared.apply_to(&mut config.etcd, &mut config.name);
        if let Some(listen) = &self.listen {
            config.server.listen.clone_from(listen);
        }
        if let Some(advertise) = &self.advertise {
            config.server.advertise = Some(advertise.clone());
        }
        if let Some(path) = &self.tls_cert {
            config.server.tls_cert = Some(path.clone());
        }
        if let Some(path) = &self.tls_key {
            config.server.tls_key = Some(path.clone());
        }
        if let Some(path) = &self.client_ca {
            config.server.client_ca = Some(path.clone());
        }
        if let Some(path) = &self.tokens_file {
            config.server.tokens_file = Some(path.clone());
        }
        if self.insecure {
            config.server.insecure = true;
        }
        if let Some(health_listen) = &self.health_listen {
            config.server.health_listen = Some(health_listen.clone());
        }
        if let Some(listen) = &self.metrics_listen {
            config.metrics.listen = Some(listen.clone());
        }
        if let Some(listen) = &self.console_listen {
            config.console.listen = Some(listen.clone());
        }
        if let Some(format) = self.shared.log_format {
            config.log.format = format;
        }
        if let Some(ttl) = self.lease_ttl {
            config.lease.ttl = ttl;
        }
        if let Some(worker_ttl) = self.worker_ttl {
            config.lease.worker_ttl = worker_ttl;
        }
        if let Some(grace) = self.grace {
            config.lease.grace = grace;
        }
    }
}

impl CoordinatorConfig {
    /// Loads the layers (defaults, `args.config`, `env`, `args`) and validates the
    /// result.
    pub fn load(
        args: &CoordinatorArgs,
        env: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        config::load(args.shared.config.as_deref(), env, |merged| {
            args.apply_to(merged)
        })
    }
}

impl LayeredConfig for CoordinatorConfig {
    const ENV_PREFIX: &'static str = ENV_PREFIX;
    const ENV_ALIASES: &'static [EnvAlias] = ETCD_ENV_ALIASES;

    fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::new();
        problems.check("name", config::check_process_name(self.name.as_deref()));
        self.etcd.check(&mut problems);
        problems.check(
            "server.listen",
            config::check_host_port(&self.server.listen),
        );
        if let Some(advertise) = &self.server.advertise {
            problems.check("server.advertise", config::check_host_port(advertise));
            if advertise.ends_with(":0") {
                problems.push(
                    "server.advertise",
                    "port 0 cannot be reached; give the real port",
                );
            }
        }
        if let Some(role) = &self.server.client_cert_role
            && Role::parse(role).is_none()
        {
            problems.push(
                "server.client_cert_role",
                format!("unknown role {role:?}: use viewer or operator"),
            );
        }
        self.server.security().check(&mut problems);
        if let Some(health_listen) = &self.server.health_listen {
            problems.check(
                "server.health_listen",
                config::check_host_port(health_listen),
            );
        }
        if let Some(listen) = &self.metrics.listen {
            problems.check("metrics.listen", config::check_host_port(listen));
        }
        if let Some(listen) = &self.console.listen {
            problems.check("console.listen", config::check_host_port(listen));
        }
        problems.check("lease.ttl", config::check_lease_ttl(self.lease.ttl));
        problems.check(
            "lease.worker_ttl",
            config::check_lease_ttl(self.lease.worker_ttl),
        );
        let mut seen = std::collections::HashSet::new();
        for (index, entry) in self.endpoints.iter().enumerate() {
            let path = format!("endpoints[{index}]");
            match ferry_model::spec::normalize_database_identity(&entry.database) {
                Some(identity) => {
                    if !seen.insert(identity.clone()) {
                        problems.push(
                            &format!("{path}.match"),
                            format!("{identity} is listed twice; keep one entry per database"),
                        );
                    }
                }
                None => problems.push(
                    &format!("{path}.match"),
                    format!(
                        "{:?} is not host:port/database (e.g. \"db.example.com:5432/orders\") \
                         nor file:/path",
                        entry.database
                    ),
                ),
            }
            if entry.max_concurrency == 0 || entry.max_concurrency > 1024 {
                problems.push(&format!("{path}.max_concurrency"), "must be from 1 to 1024");
            }
        }
        if !self.history.compact_interval.is_zero() && self.history.keep_revisions < 1_000 {
            problems.push(
                "history.keep_revisions",
                "keep at least 1000 revisions, or turn compaction off with compact_interval = \"0s\"",
            );
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

    fn parse(flags: &[&str]) -> Result<CoordinatorArgs, clap::Error> {
        CoordinatorArgs::try_parse_from(
            std::iter::once("ferry-coordinator").chain(flags.iter().copied()),
        )
    }

    fn args(flags: &[&str]) -> CoordinatorArgs {
        parse(flags).expect("flags parse")
    }

    #[test]
    fn the_example_file_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let example: CoordinatorConfig = config::read_file(&path).expect("the example parses");
        assert_eq!(example, CoordinatorConfig::default());
    }

    #[test]
    fn the_defaults_are_the_documented_values() {
        let defaults = CoordinatorConfig::default();
        assert_eq!(defaults.etcd.cluster, "default");
        assert!(defaults.etcd.endpoints.is_empty());
        assert_eq!(defaults.server.listen, "127.0.0.1:7979");
        assert_eq!(defaults.lease.ttl, Duration::from_secs(10));
        assert_eq!(defaults.lease.worker_ttl, Duration::from_secs(10));
        assert_eq!(defaults.lease.grace, Duration::from_secs(2));
    }

    #[test]
    fn flags_override_the_environment_which_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("coordinator.toml");
        std::fs::write(
            &path,
            "name = \"from-file\"\n\
             [etcd]\nendpoints = [\"http://file:2379\"]\ncluster = \"file\"\n\
             [server]\nlisten = \"0.0.0.0:1111\"\n\
             [lease]\nttl = \"3s\"\nworker_ttl = \"4s\"\ngrace = \"5s\"\n",
        )
        .expect("write the file");
        let path_text = path.display().to_string();
        let loaded = CoordinatorConfig::load(
            &args(&[
                "--config",
                &path_text,
                "--lease-ttl",
                "7",
                "--listen",
                "0.0.0.0:3333",
            ]),
            &env(&[
                ("FERRY_COORDINATOR__LEASE__TTL", "6s"),
                ("FERRY_COORDINATOR__LEASE__WORKER_TTL", "8s"),
                ("FERRY_COORDINATOR__SERVER__LISTEN", "0.0.0.0:2222"),
                (
                    "FERRY_COORDINATOR__ETCD__ENDPOINTS",
                    "http://env-a:2379,http://env-b:2379",
                ),
            ]),
        )
        .expect("loads");
        // Flag over environment over file.
        assert_eq!(loaded.lease.ttl, Duration::from_secs(7));
        assert_eq!(loaded.server.listen, "0.0.0.0:3333");
        // Environment over file.
        assert_eq!(loaded.lease.worker_ttl, Duration::from_secs(8));
        assert_eq!(
            loaded.etcd.endpoints,
            ["http://env-a:2379", "http://env-b:2379"]
        );
        // File over defaults.
        assert_eq!(loaded.lease.grace, Duration::from_secs(5));
        assert_eq!(loaded.etcd.cluster, "file");
        assert_eq!(loaded.name.as_deref(), Some("from-file"));
        assert_eq!(loaded.server.advertise, None);
    }

    #[test]
    fn the_old_flat_names_still_set_etcd_but_the_new_ones_win() {
        let loaded = CoordinatorConfig::load(
            &args(&[]),
            &env(&[
                ("FERRY_ETCD_ENDPOINTS", "http://old:2379"),
                ("FERRY_CLUSTER", "old"),
                ("FERRY_COORDINATOR__ETCD__CLUSTER", "new"),
            ]),
        )
        .expect("loads");
        assert_eq!(loaded.etcd.endpoints, ["http://old:2379"]);
        assert_eq!(loaded.etcd.cluster, "new");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused_with_file_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("typo.toml");
        std::fs::write(&path, "[lease]\nttl = \"10s\"\ngrace_period = \"1s\"\n").expect("write");
        let error = CoordinatorConfig::load(
            &args(&[
                "--config",
                &path.display().to_string(),
                "--etcd-endpoints",
                "http://e:1",
            ]),
            &HashMap::new(),
        )
        .expect_err("an unknown key");
        let text = error.to_string();
        assert!(
            text.contains("typo.toml") && text.contains("lease.grace_period"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_duration_is_refused_naming_the_key_or_the_variable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[lease]\nworker_ttl = \"ten seconds\"\n").expect("write");
        let from_file = CoordinatorConfig::load(
            &args(&["--config", &path.display().to_string()]),
            &HashMap::new(),
        )
        .expect_err("a bad duration in the file");
        assert!(
            from_file.to_string().contains("lease.worker_ttl"),
            "{from_file}"
        );
        let from_env = CoordinatorConfig::load(
            &args(&["--etcd-endpoints", "http://e:1"]),
            &env(&[("FERRY_COORDINATOR__LEASE__GRACE", "2 fortnights and a bit")]),
        )
        .expect_err("a bad duration in the environment");
        assert!(
            from_env
                .to_string()
                .contains("FERRY_COORDINATOR__LEASE__GRACE: invalid duration"),
            "{from_env}"
        );
        let from_flag = parse(&["--grace", "soon"]).expect_err("a bad duration flag");
        assert!(
            from_flag.to_string().contains("invalid duration"),
            "{from_flag}"
        );
    }

    #[test]
    fn validate_lists_every_problem_at_once() {
        let config = CoordinatorConfig {
            name: Some(String::new()),
            etcd: EtcdConfig {
                endpoints: Vec::new(),
                cluster: String::new(),
                ..EtcdConfig::default()
            },
            server: ServerConfig {
                listen: "localhost".to_owned(),
                advertise: Some("10.0.0.1:0".to_owned()),
                ..ServerConfig::default()
            },
            lease: LeaseConfig {
                ttl: Duration::from_secs(1),
                worker_ttl: Duration::from_millis(2500),
                grace: Duration::ZERO,
            },
            history: HistoryConfig {
                compact_interval: Duration::from_secs(30),
                keep_revisions: 10,
            },
            metrics: MetricsConfig {
                listen: Some("nowhere".to_owned()),
            },
            console: ConsoleConfig::default(),
            log: LogConfig::default(),
            endpoints: vec![
                EndpointCapConfig {
                    database: "db:5432/orders".to_owned(),
                    max_concurrency: 4,
                },
                EndpointCapConfig {
                    database: "DB:5432/orders".to_owned(),
                    max_concurrency: 0,
                },
                EndpointCapConfig {
                    database: "db/orders".to_owned(),
                    max_concurrency: 2,
                },
            ],
        };
        let Err(problems) = config.validate() else {
            panic!("invalid");
        };
        assert_eq!(
            problems.paths(),
            [
                "name",
                "etcd.endpoints",
                "etcd.cluster",
                "server.listen",
                "server.advertise",
                "metrics.listen",
                "lease.ttl",
                "lease.worker_ttl",
                "endpoints[1].match",
                "endpoints[1].max_concurrency",
                "endpoints[2].match",
                "history.keep_revisions"
            ]
        );
        let text = ConfigError::Invalid { problems }.to_string();
        assert!(text.contains("etcd.endpoints: must not be empty"), "{text}");
        assert!(text.contains("lease.ttl: must be at least 2s"), "{text}");
    }

    #[test]
    fn endpoint_caps_are_read_from_the_file_by_normalised_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("coordinator.toml");
        std::fs::write(
            &path,
            "[etcd]\nendpoints = [\"http://e:2379\"]\n\
             [[endpoints]]\nmatch = \"DB.example.com:5432/orders\"\nmax_concurrency = 8\n",
        )
        .expect("write the file");
        let path_text = path.display().to_string();
        let loaded = CoordinatorConfig::load(&args(&["--config", &path_text]), &HashMap::new())
            .expect("loads");
        assert_eq!(
            loaded.database_caps(),
            HashMap::from([("db.example.com:5432/orders".to_owned(), 8)])
        );
    }

    #[test]
    fn the_defaults_need_only_etcd_endpoints() {
        let missing =
            CoordinatorConfig::load(&args(&[]), &HashMap::new()).expect_err("no endpoints");
        assert_eq!(
            missing.to_string(),
            "invalid configuration:\netcd.endpoints: must not be empty"
        );
        let loaded =
            CoordinatorConfig::load(&args(&["--etcd-endpoints", "http://e:1"]), &HashMap::new())
                .expect("loads");
        assert_eq!(loaded.etcd.endpoints, ["http://e:1"]);
    }
}
