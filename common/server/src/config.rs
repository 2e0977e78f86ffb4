//! Layered configuration of ferry's long-running binaries (`ferry-coordinator` and
//! `ferry-worker`). Each layer overrides the one before it:
//!
//! 1. the documented `Default` of the binary's config struct;
//! 2. a TOML file (`--config PATH`): every key optional, an unknown key is an error
//!    naming the file and the key ([`read_file`]);
//! 3. the environment ([`apply_env`]): `{PREFIX}__{SECTION}__{KEY}`, e.g.
//!    `FERRY_COORDINATOR__ETCD__ENDPOINTS`: `__` between nesting levels, commas between
//!    the items of a list. Environment sits above the file so that a deployment's values
//!    (Helm) win over a config file baked into an image;
//! 4. command-line flags, applied by each binary.
//!
//! Then the binary's `validate()` reports every problem at once, each at its key path,
//! in the [`Problems`] list job specs are checked with too (one problem per line).
//! The environment is an argument, so tests never set process variables.
//!
//! Durations are strings in the syntax job specs use too, described in
//! [`ferry_model::duration`] (`"10s"`, `"500ms"`, `"2m"`, `"1h 30m"`); a struct reads them
//! with `#[serde(with = "ferry_model::duration::as_text")]`.

use crate::error_chain;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_model::duration::{format_duration, parse_duration};
use ferry_model::problems::Problems;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read the configuration file {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has a bad value.
    #[error("configuration file {}{}", path.display(), key.as_ref().map(|key| format!(", key `{key}`")).unwrap_or_default())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The key path the error is at, when the TOML itself parsed.
        key: Option<String>,
        /// The parser's error (with the line, column and the offending text).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// Environment variables with bad values or names; each problem is at its variable.
    #[error("invalid environment:\n{problems}")]
    Environment {
        /// Every bad variable.
        problems: Problems,
    },
    /// The merged configuration breaks a rule; each problem is at its key path.
    #[error("invalid configuration:\n{problems}")]
    Invalid {
        /// Every broken rule.
        problems: Problems,
    },
    /// The configuration could not be turned into TOML values to apply the environment
    /// (a bug in the config struct, not in the input).
    #[error("cannot represent the configuration as TOML")]
    Represent(#[source] toml::ser::Error),
}

/// A binary's configuration struct, loadable in layers by [`load`].
pub trait LayeredConfig: Serialize + DeserializeOwned + Default {
    /// Prefix of its environment variables, e.g. `FERRY_WORKER` (for `FERRY_WORKER__SLOTS`).
    const ENV_PREFIX: &'static str;
    /// Older variable names still read; the new names win.
    const ENV_ALIASES: &'static [EnvAlias];

    /// Reports every problem at once, each at its key path.
    fn validate(&self) -> Result<(), Problems>;
}

/// Loads a configuration: defaults < `file` < `env` < `apply_flags`, then validates it.
pub fn load<C: LayeredConfig>(
    file: Option<&Path>,
    env: &HashMap<String, String>,
    apply_flags: impl FnOnce(&mut C),
) -> Result<C, ConfigError> {
    let from_file = match file {
        Some(path) => read_file(path)?,
        None => C::default(),
    };
    let mut merged = apply_env(&from_file, C::ENV_PREFIX, C::ENV_ALIASES, env)?;
    apply_flags(&mut merged);
    merged
        .validate()
        .map_err(|problems| ConfigError::Invalid { problems })?;
    Ok(merged)
}

/// An environment map from `(name, value)` pairs, for tests of the loaders.
pub fn env_from_pairs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// Reads a TOML configuration file; missing keys take the struct's defaults (the
/// struct is `#[serde(default)]`), unknown keys are refused.
pub fn read_file<C: DeserializeOwned>(path: &Path) -> Result<C, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    parse_toml(&text, path)
}

/// Parses a configuration file's text; `path` is only for the error.
pub fn parse_toml<C: DeserializeOwned>(text: &str, path: &Path) -> Result<C, ConfigError> {
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|source| ConfigError::ParseFile {
            path: path.to_owned(),
            key: None,
            source: Box::new(source),
        })?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        ConfigError::ParseFile {
            path: path.to_owned(),
            // `.` is the document itself: nothing more precise to say.
            key: (key != ".").then_some(key),
            source: Box::new(error.into_inner()),
        }
    })
}

/// An old environment variable name still accepted for a key; the new name wins when
/// both are set.
#[derive(Clone, Copy, Debug)]
pub struct EnvAlias {
    /// The old name, e.g. `FERRY_ETCD_ENDPOINTS`.
    pub variable: &'static str,
    /// The key path it sets, e.g. `etcd.endpoints`.
    pub key: &'static str,
}

/// The flat names both binaries read before the layered configuration:
/// `FERRY_ETCD_ENDPOINTS` and `FERRY_CLUSTER`, still accepted (the new names win).
pub const ETCD_ENV_ALIASES: &[EnvAlias] = &[
    EnvAlias {
        variable: "FERRY_ETCD_ENDPOINTS",
        key: "etcd.endpoints",
    },
    EnvAlias {
        variable: "FERRY_CLUSTER",
        key: "etcd.cluster",
    },
];

/// One environment variable to apply: its name, the key path it sets, its raw value.
struct EnvOverride<'a> {
    variable: &'a str,
    path: Vec<String>,
    raw: &'a str,
}

/// Applies the environment on top of `config`: every `{prefix}__A__B` variable sets key
/// `a.b` (lowercased), and each alias its key. A value takes the type of the key's
/// current value: a list is split at commas, an integer or boolean is parsed, anything
/// else is a string (a duration's string is parsed by the struct). Every bad variable
/// is reported at once, by name.
pub fn apply_env<C>(
    config: &C,
    prefix: &str,
    aliases: &[EnvAlias],
    env: &HashMap<String, String>,
) -> Result<C, ConfigError>
where
    C: Serialize + DeserializeOwned,
{
    let base = toml::Table::try_from(config).map_err(ConfigError::Represent)?;
    let overrides = env_overrides(prefix, aliases, env);
    let mut problems = Problems::new();
    let mut merged = base.clone();
    for entry in &overrides {
        if entry.path.iter().any(String::is_empty) {
            problems.push(
                entry.variable,
                format!("not a key: use {prefix}__SECTION__KEY, one `__` between levels"),
            );
            continue;
        }
        let value = match typed_value(lookup(&base, &entry.path), entry.raw) {
            Ok(value) => value,
            Err(message) => {
                problems.push(entry.variable, message);
                continue;
            }
        };
        // Checked alone, so that the problem names this variable.
        let mut alone = base.clone();
        let checked = insert(&mut alone, &entry.path, value.clone()).and_then(|()| {
            alone
                .try_into::<C>()
                .map(drop)
                .map_err(|error| error.message().to_owned())
        });
        if !problems.check(entry.variable, checked) {
            continue;
        }
        // Cannot fail: the same insert succeeded on a table of the same shape.
        let _ = insert(&mut merged, &entry.path, value);
    }
    if !problems.is_empty() {
        return Err(ConfigError::Environment { problems });
    }
    merged.try_into::<C>().map_err(|error| {
        let variables = overrides
            .iter()
            .map(|entry| entry.variable)
            .collect::<Vec<_>>()
            .join(", ");
        ConfigError::Environment {
            problems: Problems::single(&variables, error.message()),
        }
    })
}

/// The variables to apply, in order: aliases first (so a new name wins over an old
/// one), then the prefixed ones sorted by name.
fn env_overrides<'a>(
    prefix: &str,
    aliases: &[EnvAlias],
    env: &'a HashMap<String, String>,
) -> Vec<EnvOverride<'a>> {
    let mut overrides: Vec<EnvOverride<'a>> = aliases
        .iter()
        .filter_map(|alias| {
            let (variable, raw) = env.get_key_value(alias.variable)?;
            Some(EnvOverride {
                variable,
                path: alias.key.split('.').map(str::to_owned).collect(),
                raw,
            })
        })
        .collect();
    let nested_prefix = format!("{prefix}__");
    let mut prefixed: Vec<EnvOverride<'a>> = env
        .iter()
        .filter_map(|(variable, raw)| {
            let rest = variable.strip_prefix(&nested_prefix)?;
            Some(EnvOverride {
                variable,
                path: rest.split("__").map(str::to_lowercase).collect(),
                raw,
            })
        })
        .collect();
    prefixed.sort_by(|left, right| left.variable.cmp(right.variable));
    overrides.extend(prefixed);
    overrides
}

fn lookup<'t>(table: &'t toml::Table, path: &[String]) -> Option<&'t toml::Value> {
    let (last, sections) = path.split_last()?;
    let mut current = table;
    for section in sections {
        current = current.get(section)?.as_table()?;
    }
    current.get(last)
}

fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, sections)) = path.split_last() else {
        return Err("not a key".to_owned());
    };
    let mut current = table;
    for section in sections {
        let entry = current
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{section}` is a value, not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// A variable's text as a value of the same kind as `current`. Values never appear in
/// messages except numbers and booleans (a string may hold a credential).
fn typed_value(current: Option<&toml::Value>, raw: &str) -> Result<toml::Value, String> {
    let trimmed = raw.trim();
    match current {
        Some(toml::Value::Array(_)) => Ok(toml::Value::Array(
            trimmed
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        )),
        Some(toml::Value::Integer(_)) => trimmed
            .parse()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected a whole number, got {trimmed:?}")),
        Some(toml::Value::Boolean(_)) => trimmed
            .parse()
            .map(toml::Value::Boolean)
            .map_err(|_| format!("expected true or false, got {trimmed:?}")),
        Some(toml::Value::Float(_)) => trimmed
            .parse()
            .map(toml::Value::Float)
            .map_err(|_| format!("expected a number, got {trimmed:?}")),
        _ => Ok(toml::Value::String(raw.to_owned())),
    }
}

// The rules below return the message for their key; `validate()` records them with
// `Problems::check`, as the spec reader does with the throttle rules.

/// A lease TTL: etcd counts leases in whole seconds, and keep-alives run every third of
/// the TTL, so below 2 s one late renewal loses the lease.
pub fn check_lease_ttl(ttl: Duration) -> Result<(), String> {
    if ttl < Duration::from_secs(2) {
        return Err(format!("must be at least 2s, got {}", format_duration(ttl)));
    }
    if ttl.subsec_nanos() != 0 {
        return Err(format!(
            "must be whole seconds (etcd leases count seconds), got {}",
            format_duration(ttl)
        ));
    }
    Ok(())
}

/// An optional process name (it is part of etcd keys): not empty when given.
pub fn check_process_name(name: Option<&str>) -> Result<(), String> {
    name.map_or(Ok(()), check_key_segment)
}

/// A `host:port` address (a host name, an IPv4 address or a bracketed IPv6 address).
/// Nothing is resolved here.
pub fn check_host_port(address: &str) -> Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("expected host:port, got {address:?}"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("bad port {port:?} in {address:?}"));
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && !host.contains(':')
            && !host.chars().any(char::is_whitespace)
            && !host.contains('/')
    };
    if host_ok {
        Ok(())
    } else {
        Err(format!("bad host {host:?} in {address:?}"))
    }
}

fn check_key_segment(name: &str) -> Result<(), String> {
    // Any other text is fine: key segments are percent-encoded (`keys::escape_segment`).
    if name.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(())
    }
}

/// Where a ferry cluster keeps its state: the same section in the coordinator's and the
/// worker's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// etcd client endpoints, e.g. `["http://127.0.0.1:2379"]`. Default: none (required).
    pub endpoints: Vec<String>,
    /// The cluster's name: its keys live under `/ferry/{cluster}/v1`. Default `default`.
    pub cluster: String,
    /// The CA (PEM) that signed etcd's certificate: connect over TLS (`https://`
    /// endpoints). Default: none (plaintext).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM), for an etcd started with `--client-cert-auth`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The etcd user (etcd RBAC), with `password_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A file holding the etcd user's password (e.g. a mounted Secret); never the
    /// password itself in the configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: Vec::new(),
            cluster: "default".to_owned(),
            ca: None,
            cert: None,
            key: None,
            user: None,
            password_file: None,
        }
    }
}

impl EtcdConfig {
    /// Records this section's problems under `etcd.*`.
    pub fn check(&self, problems: &mut Problems) {
        if self.endpoints.is_empty() {
            problems.push("etcd.endpoints", "must not be empty");
        }
        for endpoint in &self.endpoints {
            if endpoint.trim().is_empty() || endpoint.chars().any(char::is_whitespace) {
                problems.push("etcd.endpoints", "an endpoint is empty or contains spaces");
            }
        }
        problems.check("etcd.cluster", check_key_segment(&self.cluster));
        let tls = self.ca.is_some() || self.cert.is_some();
        for endpoint in &self.endpoints {
            if tls && endpoint.starts_with("http://") {
                problems.push(
                    "etcd.endpoints",
                    format!(
                        "{} is plaintext but etcd.ca/etcd.cert ask for TLS: write https://",
                        ferry_model::spec::without_password(endpoint)
                    ),
                );
            }
            if !tls && endpoint.starts_with("https://") {
                problems.push(
                    "etcd.ca",
                    "an https:// endpoint needs the CA that signed etcd's certificate: set \
                     etcd.ca (flag --etcd-ca)",
                );
            }
        }
        if self.cert.is_some() != self.key.is_some() {
            problems.push(
                "etcd.cert",
                "etcd.cert and etcd.key go together: give both or neither",
            );
        }
        if self.user.is_some() != self.password_file.is_some() {
            problems.push(
                "etcd.user",
                "etcd.user and etcd.password_file go together: give both or neither",
            );
        }
    }

    /// Reads the TLS material and the password the settings name.
    pub fn access(&self) -> Result<ferry_coordination::EtcdAccess, String> {
        let read = |path: &Path, key: &str| {
            std::fs::read(path)
                .map_err(|error| format!("cannot read {key} {}: {error}", path.display()))
        };
        let tls = if self.ca.is_some() || self.cert.is_some() {
            let mut options = tonic::transport::ClientTlsConfig::new();
            if let Some(ca) = &self.ca {
                options = options.ca_certificate(tonic::transport::Certificate::from_pem(read(
                    ca, "etcd.ca",
                )?));
            }
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                options = options.identity(tonic::transport::Identity::from_pem(
                    read(cert, "etcd.cert")?,
                    read(key, "etcd.key")?,
                ));
            }
            Some(options)
        } else {
            None
        };
        let user = match (&self.user, &self.password_file) {
            (Some(user), Some(path)) => {
                let bytes = read(path, "etcd.password_file")?;
                let password = String::from_utf8(bytes).map_err(|_| {
                    format!("etcd.password_file {} is not UTF-8 text", path.display())
                })?;
                Some((
                    user.clone(),
                    password.trim_end_matches(['\n', '\r']).to_owned(),
                ))
            }
            _ => None,
        };
        Ok(ferry_coordination::EtcdAccess { tls, user })
    }

    /// The endpoints joined by commas, without any password (for logs and errors).
    pub fn endpoints_for_log(&self) -> String {
        self.endpoints
            .iter()
            .map(|endpoint| ferry_model::spec::without_password(endpoint))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The flags `ferry-coordinator` and `ferry-worker` share (flattened into each one's
/// arguments). Each overrides its key when given.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SharedArgs {
    /// A TOML configuration file; the environment and the other flags override it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// etcd endpoints, comma-separated [etcd.endpoints].
    #[arg(long, value_delimiter = ',', value_name = "URL,...")]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Cluster name: the etcd prefix is /ferry/{cluster}/v1 [etcd.cluster].
    #[arg(long)]
    pub cluster: Option<String>,
    /// This process's name, unique in the cluster (default: host-pid) [name].
    #[arg(long)]
    pub name: Option<String>,
    /// The CA (PEM) that signed etcd's certificate: TLS to etcd [etcd.ca].
    #[arg(long, value_name = "PATH")]
    pub etcd_ca: Option<PathBuf>,
    /// A client certificate (PEM) for etcd [etcd.cert].
    #[arg(long, value_name = "PATH")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's key (PEM) [etcd.key].
    #[arg(long, value_name = "PATH")]
    pub etcd_key: Option<PathBuf>,
    /// The etcd user (etcd RBAC) [etcd.user].
    #[arg(long, value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// A file holding the etcd user's password [etcd.password_file].
    #[arg(long, value_name = "PATH")]
    pub etcd_password_file: Option<PathBuf>,
    /// Log format: text, or json (one object per line) for collectors [log.format].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<crate::process::LogFormat>,
}

impl SharedArgs {
    /// Overrides `etcd.*` and `name` where their flags were given.
    pub fn apply_to(&self, etcd: &mut EtcdConfig, name: &mut Option<String>) {
        if let Some(endpoints) = &self.etcd_endpoints {
            etcd.endpoints.clone_from(endpoints);
        }
        if let Some(cluster) = &self.cluster {
            etcd.cluster.clone_from(cluster);
        }
        if let Some(flag_name) = &self.name {
            *name = Some(flag_name.clone());
        }
        if let Some(path) = &self.etcd_ca {
            etcd.ca = Some(path.clone());
        }
        if let Some(path) = &self.etcd_cert {
            etcd.cert = Some(path.clone());
        }
        if let Some(path) = &self.etcd_key {
            etcd.key = Some(path.clone());
        }
        if let Some(user) = &self.etcd_user {
            etcd.user = Some(user.clone());
        }
        if let Some(path) = &self.etcd_password_file {
            etcd.password_file = Some(path.clone());
        }
    }
}

/// etcd could not be reached, or refused us, at startup.
#[derive(Debug, thiserror::Error)]
pub enum EtcdConnectError {
    /// No answer from any endpoint.
    #[error("cannot reach etcd at {endpoints} (etcd.endpoints)")]
    Unreachable {
        /// The endpoints tried, without passwords.
        endpoints: String,
        /// The last failure.
        #[source]
        source: ferry_coordination::CoordinationError,
    },
    /// etcd answered but refused the user or the certificate.
    #[error("etcd at {endpoints} refused {what}: {fix}")]
    Refused {
        /// The endpoints tried, without passwords.
        endpoints: String,
        /// What was refused.
        what: String,
        /// What to check.
        fix: &'static str,
        /// The failure.
        #[source]
        source: ferry_coordination::CoordinationError,
    },
    /// The TLS material or the password file could not be read.
    #[error("etcd settings: {0}")]
    Settings(String),
}

impl EtcdConfig {
    /// Connects to this etcd under the cluster's prefix, retrying for about a minute
    /// while it is unreachable (a process may start before etcd does).
    pub async fn connect(&self) -> Result<ferry_coordination::EtcdStore, EtcdConnectError> {
        let options = ferry_coordination::EtcdStoreOptions {
            access: self.access().map_err(EtcdConnectError::Settings)?,
            ..ferry_coordination::EtcdStoreOptions::default()
        };
        ferry_coordination::EtcdStore::connect_retrying(
            &self.endpoints,
            ferry_coordination::keys::KeyLayout::default_prefix(&self.cluster),
            options,
            30,
        )
        .await
        .map_err(|source| self.connect_error(source))
    }

    /// Names what etcd refused (the user, a certificate) and what to check, when the
    /// failure says so; otherwise "cannot reach".
    fn connect_error(&self, source: ferry_coordination::CoordinationError) -> EtcdConnectError {
        let endpoints = self.endpoints_for_log();
        let text = error_chain(&source).to_lowercase();
        let refused = if text.contains("authentication failed")
            || text.contains("invalid user id or password")
        {
            Some((
                format!("the user {}", self.user.as_deref().unwrap_or("(none)")),
                "check etcd.user and the password in etcd.password_file",
            ))
        } else if text.contains("user name is empty")
            || text.contains("token") && text.contains("auth")
        {
            Some((
                "an anonymous client (etcd has authentication enabled)".to_owned(),
                "set etcd.user and etcd.password_file (flags --etcd-user, --etcd-password-file)",
            ))
        } else if text.contains("certificate") {
            Some((
                "the TLS handshake".to_owned(),
                "check etcd.ca (the CA that signed etcd's certificate; the endpoint's host must \
                 be a name in it) and etcd.cert/etcd.key when etcd runs with --client-cert-auth",
            ))
        } else {
            None
        };
        match refused {
            Some((what, fix)) => EtcdConnectError::Refused {
                endpoints,
                what,
                fix,
                source,
            },
            None => EtcdConnectError::Unreachable { endpoints, source },
        }
    }
}

/// Logs a warning for each retired environment variable that is still set, naming the
/// variable that replaced it (`retired` pairs old and new names): a setting that
/// silently stopped applying would be worse than a noisy log.
pub fn warn_retired_variables(env: &HashMap<String, String>, retired: &[(&str, &str)]) {
    for (old, new) in retired {
        if env.contains_key(*old) {
            tracing::warn!(
                variable = old,
                replacement = new,
                "a retired environment variable is set and ignored"
            );
        }
    }
}

/// A configuration as one line of JSON for the log, with the password of every URL
/// removed.
pub fn for_log<C: Serialize>(config: &C) -> String {
    fn redact(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => *text = ferry_model::spec::without_password(text),
            serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
            serde_json::Value::Object(fields) => fields.values_mut().for_each(redact),
            _ => {}
        }
    }
    match serde_json::to_value(config) {
        Ok(mut value) => {
            redact(&mut value);
            value.to_string()
        }
        Err(error) => format!("(cannot show the configuration: {error})"),
    }
}

/// Parses a duration flag: a duration as in configuration files ([`parse_duration`]), or a
/// bare number of seconds (what the flags took before they took units, so existing
/// scripts keep working).
pub fn parse_flag_duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => parse_duration(text).map_err(|error| error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        slots: u32,
        on: bool,
        etcd: EtcdConfig,
        timing: Timing,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Timing {
        #[serde(with = "ferry_model::duration::as_text")]
        ttl: Duration,
    }

    impl Default for Timing {
        fn default() -> Self {
            Timing {
                ttl: Duration::from_secs(10),
            }
        }
    }

    use env_from_pairs as env;

    const ALIASES: &[EnvAlias] = &[EnvAlias {
        variable: "OLD_ENDPOINTS",
        key: "etcd.endpoints",
    }];

    #[test]
    fn environment_values_take_the_type_of_their_key() {
        let applied: Sample = apply_env(
            &Sample::default(),
            "T",
            &[],
            &env(&[
                ("T__NAME", "w1"),
                ("T__SLOTS", " 4 "),
                ("T__ON", "true"),
                ("T__ETCD__ENDPOINTS", "http://a:1, http://b:2,"),
                ("T__TIMING__TTL", "1m 30s"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("applies");
        assert_eq!(applied.name.as_deref(), Some("w1"));
        assert_eq!(applied.slots, 4);
        assert!(applied.on);
        assert_eq!(applied.etcd.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(applied.timing.ttl, Duration::from_secs(90));
    }

    #[test]
    fn a_new_variable_wins_over_its_old_alias() {
        let old_only: Sample = apply_env(
            &Sample::default(),
            "T",
            ALIASES,
            &env(&[("OLD_ENDPOINTS", "http://old:1")]),
        )
        .expect("applies");
        assert_eq!(old_only.etcd.endpoints, ["http://old:1"]);
        let both: Sample = apply_env(
            &Sample::default(),
            "T",
            ALIASES,
            &env(&[
                ("OLD_ENDPOINTS", "http://old:1"),
                ("T__ETCD__ENDPOINTS", "http://new:1"),
            ]),
        )
        .expect("applies");
        assert_eq!(both.etcd.endpoints, ["http://new:1"]);
    }

    #[test]
    fn every_bad_variable_is_reported_by_name() {
        let error = apply_env::<Sample>(
            &Sample::default(),
            "T",
            &[],
            &env(&[
                ("T__SLOTS", "many"),
                ("T__TIMING__TTL", "10 parsecs"),
                ("T__TIMING__NOPE", "1"),
                ("T__SLOTS__DEEP", "1"),
                ("T__", "1"),
            ]),
        )
        .expect_err("refused");
        let ConfigError::Environment { problems } = &error else {
            panic!("unexpected error {error:?}");
        };
        assert_eq!(
            problems.paths(),
            [
                "T__",
                "T__SLOTS",
                "T__SLOTS__DEEP",
                "T__TIMING__NOPE",
                "T__TIMING__TTL"
            ],
            "{error}"
        );
        let text = error.to_string();
        assert!(text.contains("T__TIMING__TTL: invalid duration"), "{text}");
        assert!(text.contains("unknown field `nope`"), "{text}");
    }

    #[test]
    fn file_errors_name_the_file_and_the_key() {
        let path = Path::new("/etc/ferry/sample.toml");
        let unknown = parse_toml::<Sample>("[timing]\nttl = \"5s\"\nttll = \"5s\"\n", path)
            .expect_err("unknown key");
        let text = format!(
            "{unknown} / {}",
            std::error::Error::source(&unknown)
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        assert!(text.contains("/etc/ferry/sample.toml"), "{text}");
        assert!(text.contains("timing.ttll"), "{text}");
        let bad =
            parse_toml::<Sample>("[timing]\nttl = \"soon\"\n", path).expect_err("bad duration");
        assert!(bad.to_string().contains("key `timing.ttl`"), "{bad}");
        let number = parse_toml::<Sample>("[timing]\nttl = 10\n", path).expect_err("bare number");
        assert!(number.to_string().contains("key `timing.ttl`"), "{number}");
        let syntax = parse_toml::<Sample>("[timing\n", path).expect_err("not toml");
        assert!(syntax.to_string().contains("sample.toml"), "{syntax}");
    }

    #[test]
    fn addresses_are_checked_without_resolving() {
        for good in [
            "127.0.0.1:7979",
            "0.0.0.0:0",
            "[::1]:7979",
            "coordinator-0.ferry:7979",
        ] {
            assert_eq!(check_host_port(good), Ok(()), "{good}");
        }
        for bad in [
            "7979",
            "host:",
            "host:99999",
            ":7979",
            "::1:7979",
            "[zz]:1",
            "a b:1",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_take_durations_and_also_bare_seconds() {
        assert_eq!(parse_flag_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_flag_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(
            parse_flag_duration("1.5s"),
            Ok(Duration::from_millis(1_500))
        );
        let error = parse_flag_duration("soon").expect_err("not a duration");
        assert!(error.starts_with("invalid duration \"soon\""), "{error}");
    }

    #[test]
    fn a_file_takes_the_duration_forms_of_specs_and_of_humantime() {
        let path = Path::new("/etc/ferry/sample.toml");
        for (text, expected) in [
            ("1m30s", Duration::from_secs(90)),
            ("1 min 30 secs", Duration::from_secs(90)),
            ("1h 30m", Duration::from_secs(5_400)),
            ("0", Duration::ZERO),
        ] {
            let sample: Sample = parse_toml(&format!("[timing]\nttl = \"{text}\"\n"), path)
                .expect("a valid duration");
            assert_eq!(sample.timing.ttl, expected, "{text}");
        }
    }

    #[test]
    fn rules_report_at_their_key_and_problems_display_one_per_line() {
        let mut problems = Problems::new();
        problems.check("lease.ttl", check_lease_ttl(Duration::from_secs(1)));
        problems.check("lease.ttl", check_lease_ttl(Duration::from_millis(2_500)));
        problems.check("lease.ttl", check_lease_ttl(Duration::from_secs(10)));
        problems.check("name", check_process_name(Some(" ")));
        problems.check("name", check_process_name(None));
        let error = ConfigError::Invalid { problems };
        assert_eq!(
            error.to_string(),
            "invalid configuration:\n\
             lease.ttl: must be at least 2s, got 1s\n\
             lease.ttl: must be whole seconds (etcd leases count seconds), got 2s 500ms\n\
             name: must not be empty"
        );
    }

    #[test]
    fn the_log_form_hides_passwords() {
        let sample = Sample {
            etcd: EtcdConfig {
                endpoints: vec!["http://root:s3cret@etcd:2379".to_owned()],
                ..EtcdConfig::default()
            },
            ..Sample::default()
        };
        let logged = for_log(&sample);
        assert!(!logged.contains("s3cret"), "{logged}");
        assert!(logged.contains("http://root@etcd:2379"), "{logged}");
        assert!(logged.contains("\"ttl\":\"10s\""), "{logged}");
        assert_eq!(sample.etcd.endpoints_for_log(), "http://root@etcd:2379");
    }
}
