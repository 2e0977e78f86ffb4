//! [`EndpointSpec::database_identity`]: which database server and database an endpoint
//! names, with no credentials, so that jobs reaching the same database through different
//! variables or users are known to share it (their concurrency is capped together).

use std::path::Path;

use super::endpoints::{EndpointSpec, Location, normalize_lexically};
use crate::text::percent_decode;

impl EndpointSpec {
    /// Returns `host:port/database` for a server endpoint (the host lowercased, the port
    /// defaulted by kind, the database percent-decoded; user and password dropped), or
    /// `file:/path` for a database file; `None` when the location cannot be read as
    /// either. Never contains a password: only what identifies the database is kept.
    pub fn database_identity(&self) -> Option<String> {
        match &self.location {
            Location::Path(path) => Some(file_identity(path)),
            Location::Env { value, .. } if self.kind == "sqlite" => {
                Some(file_identity(Path::new(value.expose())))
            }
            Location::Env { value, .. } => server_identity(&self.kind, value.expose()),
        }
    }
}

/// `file:` and the path with `.` and `..` resolved.
fn file_identity(path: &Path) -> String {
    format!("file:{}", normalize_lexically(path).display())
}

/// The port a server of `kind` (or URL `scheme`) listens on when none is given.
fn default_port(kind: &str, scheme: &str) -> Option<u16> {
    match (kind, scheme) {
        (_, "postgres" | "postgresql") | ("postgres", _) => Some(5432),
        (_, "mysql" | "mariadb") | ("mysql", _) => Some(3306),
        (_, "https") => Some(8443),
        (_, "http") | ("clickhouse", _) => Some(8123),
        _ => None,
    }
}

/// `host:port/database` from a URL (`scheme://user:password@host:port/db?...`) or a
/// libpq keyword string (`host=h port=5432 dbname=db user=u password=p`).
fn server_identity(kind: &str, value: &str) -> Option<String> {
    let value = value.trim();
    let (host, port, database) = match value.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            // The userinfo (with any password) ends at the last `@`.
            let host_port = authority
                .rsplit_once('@')
                .map_or(authority, |(_, after)| after);
            let (host, port_text) = split_host_port(host_port);
            let port = match port_text {
                Some(text) => text.parse::<u16>().ok()?,
                None => default_port(kind, &scheme)?,
            };
            let after_authority = &rest[authority_end..];
            let path_end = after_authority
                .find(['?', '#'])
                .unwrap_or(after_authority.len());
            let path_database = after_authority[..path_end].trim_start_matches('/');
            let query = after_authority[path_end..]
                .strip_prefix('?')
                .map(|query| query.split('#').next().unwrap_or_default())
                .unwrap_or_default();
            let database = if path_database.is_empty() {
                query_value(query, &["database", "dbname"]).unwrap_or_default()
            } else {
                path_database.to_owned()
            };
            (host.to_owned(), port, percent_decode(&database))
        }
        None if value.contains('=') => {
            let mut host = None;
            let mut port = None;
            let mut database = None;
            for pair in value.split_whitespace() {
                let Some((key, setting)) = pair.split_once('=') else {
                    continue;
                };
                let setting = setting.trim_matches('\'');
                match key {
                    "host" | "hostaddr" => host = Some(setting.to_owned()),
                    "port" => port = Some(setting.parse::<u16>().ok()?),
                    "dbname" => database = Some(setting.to_owned()),
                    _ => {}
                }
            }
            let port = match port {
                Some(port) => port,
                None => default_port(kind, "")?,
            };
            (
                host.unwrap_or_else(|| "localhost".to_owned()),
                port,
                database.unwrap_or_default(),
            )
        }
        None => return None,
    };
    if host.is_empty() {
        return None;
    }
    Some(join_identity(&host, port, &database))
}

/// `host:port/database`, the host lowercased (and bracketed when it is an IPv6 address).
fn join_identity(host: &str, port: u16, database: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains(':') {
        format!("[{host}]:{port}/{database}")
    } else {
        format!("{host}:{port}/{database}")
    }
}

/// `host` and `port` of `host:port`, `[v6]:port`, or a bare host.
fn split_host_port(host_port: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host_port.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (host, after.strip_prefix(':'));
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    }
}

/// The first of `keys` set in a URL query string.
fn query_value(query: &str, keys: &[&str]) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, setting) = pair.split_once('=')?;
        keys.contains(&key).then(|| setting.to_owned())
    })
}

/// Normalises an operator-written `host:port/database` (`endpoints[].match` in the
/// coordinator's configuration) the way [`EndpointSpec::database_identity`] writes
/// identities: the host lowercased. `None` when it is not of that shape.
pub fn normalize_database_identity(text: &str) -> Option<String> {
    let text = text.trim();
    if let Some(path) = text.strip_prefix("file:") {
        return Some(file_identity(Path::new(path)));
    }
    let (host_port, database) = text.split_once('/')?;
    let (host, port) = split_host_port(host_port);
    let port = port?.parse::<u16>().ok()?;
    if host.is_empty() {
        return None;
    }
    Some(join_identity(host, port, database))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;
    use crate::spec::Secret;

    fn env_endpoint(kind: &str, value: &str) -> EndpointSpec {
        EndpointSpec {
            kind: kind.to_owned(),
            location: Location::Env {
                var: "URL".to_owned(),
                value: Secret::new(value),
            },
            zero_dates: None,
            clickhouse: None,
        }
    }

    fn identity(kind: &str, value: &str) -> Option<String> {
        env_endpoint(kind, value).database_identity()
    }

    #[test]
    fn users_and_passwords_do_not_change_which_database_an_endpoint_is() {
        let first = identity(
            "postgres",
            "postgres://etl:s3cret@DB.example.com:5432/orders",
        );
        let second = identity(
            "postgres",
            "postgresql://reader@db.example.com/orders?sslmode=require",
        );
        assert_eq!(first.as_deref(), Some("db.example.com:5432/orders"));
        assert_eq!(first, second);
        assert!(!first.unwrap().contains("s3cret"));
        assert_ne!(
            identity("postgres", "postgres://u:p@db.example.com/orders"),
            identity("postgres", "postgres://u:p@db.example.com/billing")
        );
    }

    #[test]
    fn ports_default_by_kind_and_keyword_strings_are_read() {
        assert_eq!(
            identity("mysql", "mysql://root:pw@127.0.0.1/shop").as_deref(),
            Some("127.0.0.1:3306/shop")
        );
        assert_eq!(
            identity(
                "postgres",
                "host=Db1 port=6432 dbname=app user=u password=secret"
            )
            .as_deref(),
            Some("db1:6432/app")
        );
        assert_eq!(
            identity("clickhouse", "http://u:p@ch:8123/?database=events").as_deref(),
            Some("ch:8123/events")
        );
        assert_eq!(
            identity("postgres", "postgres://u:p@[::1]:5433/a%20b").as_deref(),
            Some("[::1]:5433/a b")
        );
        assert_eq!(identity("postgres", "not a url"), None);
        assert_eq!(
            identity("sqlite", "/srv/./data/x.db").as_deref(),
            Some("file:/srv/data/x.db")
        );
    }

    #[test]
    fn configured_matches_are_normalised_like_identities() {
        assert_eq!(
            normalize_database_identity("DB.example.com:5432/orders").as_deref(),
            Some("db.example.com:5432/orders")
        );
        assert_eq!(normalize_database_identity("db.example.com/orders"), None);
        assert_eq!(normalize_database_identity("db:port/orders"), None);
    }
}
