//! The `source:` and `target:` sections: which connector, and where its database is (a
//! file `path`, or `url_env`, the name of an environment variable holding the connection
//! URL). A connection URL is never echoed in an error nor shown by `Debug`: only its
//! variable's name is.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde_yaml_ng::Value;

use super::SpecContext;
use super::fields::{describe, describe_without_text, read_mapping, read_string};
use crate::problems::Problems;

const ENDPOINT_FIELDS: &[&str] = &["kind", "path", "url_env", "zero_dates", "clickhouse"];

/// One side of a migration: a connector kind and where its database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    /// Connector kind, one of [`SpecContext::known_kinds`].
    pub kind: String,
    /// Where the database is.
    pub location: Location,
    /// MySQL sources: what a zero date (`0000-00-00`, `2024-00-10`) becomes: an error
    /// naming table, column and key (the default), or NULL. Never a silent change.
    pub zero_dates: Option<ZeroDates>,
    /// ClickHouse endpoints: read replica, split columns, engine rewrite rules, cluster.
    pub clickhouse: Option<super::clickhouse::ClickhouseOptions>,
}

/// What a MySQL zero date becomes when read (`source.zero_dates`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroDates {
    /// The chunk fails, naming table, column and key.
    Error,
    /// The value is read as NULL.
    Null,
}

/// Where an endpoint's database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A database file, already joined to [`SpecContext::base_dir`] when given relative.
    Path(PathBuf),
    /// A connection string read from an environment variable (a file path for `sqlite`).
    Env {
        /// Name of the environment variable; safe to show.
        var: String,
        /// The variable's value at parse time; may hold credentials.
        value: Secret,
    },
}

/// A value that must not be shown: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value` so that it is not printed by accident.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Returns the secret value itself, for handing to a connector.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

/// A location value with the password of a URL's userinfo removed
/// (`postgres://u:secret@h/db` → `postgres://u@h/db`); other values unchanged.
pub fn without_password(value: &str) -> String {
    let Some(scheme_end) = value.find("://").map(|at| at + 3) else {
        return value.to_string();
    };
    let authority_end = value[scheme_end..]
        .find(['/', '?'])
        .map_or(value.len(), |at| scheme_end + at);
    let authority = &value[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else {
        return value.to_string();
    };
    let user = authority[..at].split(':').next().unwrap_or_default();
    format!(
        "{}{user}@{}{}",
        &value[..scheme_end],
        &authority[at + 1..],
        &value[authority_end..]
    )
}

/// Reads `source:` or `target:` (`path` says which, for `zero_dates`).
pub(super) fn read_endpoint(
    value: &Value,
    path: &str,
    context: &SpecContext<'_>,
    problems: &mut Problems,
) -> Option<EndpointSpec> {
    if !value.is_mapping() {
        // A user may have written the connection URL right here: do not echo it.
        problems.push(
            path,
            format!(
                "expected a mapping with kind and path or url_env, found {}",
                describe_without_text(value)
            ),
        );
        return None;
    }
    let fields = read_mapping(value, path, ENDPOINT_FIELDS, &[], problems)?;
    let kind_opt = fields
        .required("kind", problems)
        .and_then(|kind_value| read_kind(kind_value, &fields.path_of("kind"), context, problems));
    let location_opt = match (fields.optional("path"), fields.optional("url_env")) {
        (Some(_), Some(_)) => {
            problems.push(path, "set exactly one of path or url_env, not both");
            None
        }
        (None, None) => {
            problems.push(
                path,
                "missing location; set path (a database file) or url_env (the name of an \
                 environment variable holding the connection URL)",
            );
            None
        }
        (Some(path_value), None) => {
            read_path_location(path_value, &fields.path_of("path"), context, problems)
        }
        (None, Some(var_value)) => {
            read_env_location(var_value, &fields.path_of("url_env"), context, problems)
        }
    };
    // `zero_dates: null` is YAML's null, not an empty field: it means "read them as NULL".
    let zero_dates_raw = value.get("zero_dates");
    let zero_dates_opt = match zero_dates_raw {
        None => Some(None),
        Some(zero_value) => {
            let field_path = fields.path_of("zero_dates");
            let mode = match zero_value.as_str() {
                Some("error") => Some(ZeroDates::Error),
                Some("null") => Some(ZeroDates::Null),
                None if zero_value.is_null() => Some(ZeroDates::Null),
                _ => {
                    problems.push(
                        &field_path,
                        format!("expected error or null, found {}", describe(zero_value)),
                    );
                    None
                }
            };
            let applies = path == "source" && kind_opt.as_deref() == Some("mysql");
            if mode.is_some() && !applies {
                problems.push(&field_path, "only applies to a source of kind mysql");
                None
            } else {
                mode.map(Some)
            }
        }
    };
    let clickhouse_opt = match fields.optional("clickhouse") {
        None => Some(None),
        Some(section) => {
            let section_path = fields.path_of("clickhouse");
            if kind_opt.is_some() && kind_opt.as_deref() != Some("clickhouse") {
                problems.push(
                    &section_path,
                    "only applies to an endpoint of kind clickhouse",
                );
                None
            } else {
                super::clickhouse::read_clickhouse(section, &section_path, path, problems).map(Some)
            }
        }
    };
    Some(EndpointSpec {
        kind: kind_opt?,
        location: location_opt?,
        zero_dates: zero_dates_opt?,
        clickhouse: clickhouse_opt?,
    })
}

fn read_kind(
    value: &Value,
    path: &str,
    context: &SpecContext<'_>,
    problems: &mut Problems,
) -> Option<String> {
    let kind = read_string(value, path, problems)?;
    if !context.known_kinds.contains(&kind) {
        let available = if context.known_kinds.is_empty() {
            "none in this build".to_owned()
        } else {
            context.known_kinds.join(", ")
        };
        problems.push(
            path,
            format!("unknown connector kind {kind:?}; available: {available}"),
        );
        return None;
    }
    Some(kind.to_owned())
}

fn read_path_location(
    value: &Value,
    path: &str,
    context: &SpecContext<'_>,
    problems: &mut Problems,
) -> Option<Location> {
    let file = read_string(value, path, problems)?;
    if file.is_empty() {
        problems.push(path, "must not be empty");
        return None;
    }
    // `join` keeps an absolute `file` as it is.
    Some(Location::Path(context.base_dir.join(file)))
}

fn is_env_var_name(name: &str) -> bool {
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_');
    starts_well && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn read_env_location(
    value: &Value,
    path: &str,
    context: &SpecContext<'_>,
    problems: &mut Problems,
) -> Option<Location> {
    let Value::String(var) = value else {
        problems.push(
            path,
            format!(
                "expected the name of an environment variable, found {}",
                describe(value)
            ),
        );
        return None;
    };
    if !is_env_var_name(var) {
        // Most likely the URL itself was pasted here; never echo it.
        problems.push(
            path,
            "expected the name of an environment variable (letters, digits and '_', not \
             starting with a digit); put the connection URL in that variable, not in the spec",
        );
        return None;
    }
    match context.env.get(var.as_str()) {
        Some(env_value) if !env_value.is_empty() => Some(Location::Env {
            var: var.clone(),
            value: Secret::new(env_value.as_str()),
        }),
        Some(_) => {
            problems.push(
                path,
                format!("environment variable {var} is empty; export it with the connection URL"),
            );
            None
        }
        None => {
            problems.push(
                path,
                format!("environment variable {var} is not set; export it with the connection URL"),
            );
            None
        }
    }
}

/// Resolves `.` and `..` without touching the file system, so `a/../src.db` and `src.db`
/// compare equal even when the file does not exist yet.
pub(super) fn normalize_lexically(path: &Path) -> PathBuf {
    let mut normalized = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped = matches!(
                    normalized.components().next_back(),
                    Some(Component::Normal(_))
                ) && normalized.pop();
                if !popped && !normalized.has_root() {
                    normalized.push(Component::ParentDir);
                }
            }
            other => normalized.push(other),
        }
    }
    normalized
}

/// Reports a target that is the same database as the source. Paths are compared after
/// resolving `.` and `..`; environment endpoints by variable name or value.
pub(super) fn check_distinct_databases(
    source: &EndpointSpec,
    target: &EndpointSpec,
    problems: &mut Problems,
) {
    match (&source.location, &target.location) {
        (Location::Path(source_path), Location::Path(target_path))
            if normalize_lexically(source_path) == normalize_lexically(target_path) =>
        {
            problems.push(
                "target.path",
                "same database as source.path; ferry never writes to its source",
            );
        }
        (
            Location::Env {
                var: source_var,
                value: source_value,
            },
            Location::Env {
                var: target_var,
                value: target_value,
            },
        ) if source_var == target_var || source_value == target_value => {
            problems.push(
                "target.url_env",
                "same database as source.url_env; ferry never writes to its source",
            );
        }
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;
    use crate::spec::JobSpec;
    use crate::spec::test_support::*;

    #[test]
    fn relative_paths_are_joined_to_base_dir_and_absolute_ones_kept() {
        let yaml = spec_with("  path: dst.db", "  path: /srv/data/dst.db");
        let spec = parse(&yaml).unwrap();
        assert_eq!(
            spec.source.location,
            Location::Path(PathBuf::from("/jobs/src.db"))
        );
        assert_eq!(
            spec.target.location,
            Location::Path(PathBuf::from("/srv/data/dst.db"))
        );
    }

    #[test]
    fn env_location_keeps_the_value_secret() {
        let yaml = spec_with("  path: src.db", "  url_env: SRC_URL");
        let spec = parse(&yaml).unwrap();
        let Location::Env { var, value } = &spec.source.location else {
            panic!("expected an env location: {:?}", spec.source.location);
        };
        assert_eq!(var, "SRC_URL");
        assert_eq!(value.expose(), SOURCE_SECRET);
        assert_eq!(format!("{value}"), "<redacted>");
        assert_eq!(format!("{value:?}"), "<redacted>");
        let spec_debug = format!("{spec:?}");
        assert!(!spec_debug.contains("hunter2"), "{spec_debug}");
        assert!(spec_debug.contains("<redacted>"));
    }

    #[test]
    fn missing_source_is_reported() {
        let yaml = "name: n\ntarget: {kind: sqlite, path: dst.db}\ntables: {include: [t]}\n";
        assert_eq!(
            single_error(yaml),
            ("source".to_owned(), "missing required field".to_owned())
        );
    }

    #[test]
    fn source_given_as_url_is_reported_without_echoing_it() {
        let yaml = "name: n\nsource: postgres://u:pw@h/db\ntarget: {kind: sqlite, path: dst.db}\n\
                    tables: {include: [t]}\n";
        assert_eq!(
            single_error(yaml),
            (
                "source".to_owned(),
                "expected a mapping with kind and path or url_env, found a string".to_owned()
            )
        );
    }

    #[test]
    fn unknown_kind_lists_available_kinds() {
        let yaml = spec_with("  kind: sqlite", "  kind: postgress");
        assert_eq!(
            single_error(&yaml),
            (
                "source.kind".to_owned(),
                "unknown connector kind \"postgress\"; available: sqlite".to_owned()
            )
        );
    }

    #[test]
    fn missing_kind_is_reported() {
        let yaml = spec_with("  kind: sqlite", "");
        assert_eq!(paths_of(&yaml), ["source.kind"]);
    }

    #[test]
    fn both_path_and_url_env_is_reported_on_the_endpoint() {
        let yaml = spec_with("  path: src.db", "  path: src.db\n  url_env: SRC_URL");
        let (path, message) = single_error(&yaml);
        assert_eq!(path, "source");
        assert!(
            message.contains("exactly one of path or url_env"),
            "{message}"
        );
    }

    #[test]
    fn neither_path_nor_url_env_is_reported_on_the_endpoint() {
        let yaml = spec_with("  path: dst.db", "");
        let (path, message) = single_error(&yaml);
        assert_eq!(path, "target");
        assert!(message.starts_with("missing location"), "{message}");
    }

    #[test]
    fn missing_env_var_is_named_without_leaking_other_values() {
        let yaml = spec_with("  path: dst.db", "  url_env: TGT_URL");
        let (path, message) = single_error(&yaml);
        assert_eq!(path, "target.url_env");
        assert_eq!(
            message,
            "environment variable TGT_URL is not set; export it with the connection URL"
        );
        let all_text = format!("{}", parse(&yaml).unwrap_err());
        assert!(!all_text.contains("hunter2"), "{all_text}");
        assert!(!all_text.contains(SOURCE_SECRET));
    }

    #[test]
    fn empty_env_var_is_reported() {
        let yaml = spec_with("  path: dst.db", "  url_env: EMPTY_URL");
        let (path, message) = single_error(&yaml);
        assert_eq!(path, "target.url_env");
        assert!(message.contains("EMPTY_URL is empty"), "{message}");
    }

    #[test]
    fn url_pasted_into_url_env_is_not_echoed() {
        let yaml = spec_with("  path: dst.db", "  url_env: \"postgres://u:pw@h/db\"");
        let (path, message) = single_error(&yaml);
        assert_eq!(path, "target.url_env");
        assert!(!message.contains("pw@h"), "{message}");
    }

    #[test]
    fn unknown_endpoint_field_is_reported() {
        let yaml = spec_with("  path: src.db", "  path: src.db\n  url: x");
        assert_eq!(paths_of(&yaml), ["source.url"]);
    }

    #[test]
    fn same_path_for_source_and_target_is_reported() {
        let yaml = spec_with("  path: dst.db", "  path: ./sub/../src.db");
        assert_eq!(
            single_error(&yaml),
            (
                "target.path".to_owned(),
                "same database as source.path; ferry never writes to its source".to_owned()
            )
        );
    }

    #[test]
    fn same_env_var_for_source_and_target_is_reported() {
        let yaml = spec_with("  path: src.db", "  url_env: SRC_URL");
        let yaml = yaml.replace("  path: dst.db", "  url_env: SRC_URL");
        assert_eq!(paths_of(&yaml), ["target.url_env"]);
    }

    #[test]
    fn zero_dates_applies_to_mysql_sources_only() {
        let context_kinds = ["sqlite", "mysql"];
        let env = test_env();
        let base = Path::new("/jobs");
        let context = SpecContext {
            base_dir: base,
            env: &env,
            known_kinds: &context_kinds,
        };
        let spec = JobSpec::parse(
            "name: z\nsource: { kind: mysql, url_env: SRC_URL, zero_dates: null }\ntarget: { kind: sqlite, path: t.db }\ntables: { include: [t] }\n",
            &context,
        )
        .expect("valid");
        assert_eq!(spec.source.zero_dates, Some(ZeroDates::Null));
        let errors = JobSpec::parse(
            "name: z\nsource: { kind: sqlite, path: s.db, zero_dates: null }\ntarget: { kind: mysql, url_env: SRC_URL, zero_dates: maybe }\ntables: { include: [t] }\n",
            &context,
        )
        .expect_err("invalid");
        assert_eq!(errors.paths(), ["source.zero_dates", "target.zero_dates"]);
    }

    #[test]
    fn passwords_are_removed_from_fingerprinted_locations() {
        assert_eq!(
            without_password("postgres://u:s3cret@h:5432/db?x=1"),
            "postgres://u@h:5432/db?x=1"
        );
        assert_eq!(without_password("mysql://root@h/db"), "mysql://root@h/db");
        assert_eq!(without_password("/var/lib/t.db"), "/var/lib/t.db");
        assert_eq!(
            without_password("postgres://u:p@ss@h/db"),
            "postgres://u@h/db"
        );
    }
}
