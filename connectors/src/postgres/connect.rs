//! Connections: parsing the endpoint's URL, a label for messages without credentials,
//! the session settings every ferry connection runs with, and error classification.

use std::time::Duration;

use ferry_model::schema::TableName;
use ferry_model::spec::Location;
use tokio_postgres::config::{Host, SslMode as DriverSslMode};
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::pool::{Idle, Session};
use super::ssl::{SslMode, SslOptions, split_ssl_options};
use crate::error::{ConnectorError, Failure};
use crate::tls::{self, TlsSettings, Verify, Wording};

/// The `application_name` of every ferry session, which the load probe leaves out.
pub const APPLICATION_NAME: &str = "ferry";

/// How long opening a connection may take when the URL does not say.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Session settings that make text forms deterministic: bounds are written and read as
/// text (`'2024-01-01 00:00:00+00'::text::timestamptz`), so every session agrees on the
/// zone, date and interval styles, float precision (shortest exact) and `bytea` hex.
/// Literals rely on standard-conforming strings.
const SESSION_OPTIONS: &str = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres \
     -c extra_float_digits=3 -c bytea_output=hex -c standard_conforming_strings=on";

/// How libpq's options are named in messages about a failed handshake.
const WORDING: Wording = Wording {
    root_option: "sslrootcert",
    chain_only: "sslmode=verify-ca",
    encrypt_only: "sslmode=require without sslrootcert",
};

/// A PostgreSQL database ferry connects to, with a printable label.
#[derive(Clone)]
pub struct Endpoint {
    config: Config,
    /// The TLS connector built from the endpoint's `ssl*` options.
    tls: MakeRustlsConnect,
    ssl: SslOptions,
    /// `postgres://user@host:port/db`, never with a password.
    pub label: String,
    /// `source` or `target`.
    pub role: &'static str,
    /// Connections released for reuse ([`Endpoint::session`]).
    idle: Idle,
}

impl Endpoint {
    /// Reads the endpoint's URL. `read_only` makes every transaction read-only (sources).
    pub fn new(
        role: &'static str,
        location: &Location,
        read_only: bool,
    ) -> Result<Self, ConnectorError> {
        let (var, url) = match location {
            Location::Env { var, value } => (var, value.expose()),
            Location::Path(path) => {
                return Err(ConnectorError::Open {
                    role,
                    location: path.display().to_string(),
                    reason: format!(
                        "the postgres connector takes a connection URL, not a file: set \
                         {role}.url_env to the name of an environment variable holding \
                         postgres://user@host:port/database"
                    ),
                });
            }
        };
        let not_a_url = |reason: String| ConnectorError::Open {
            role,
            location: format!("(the URL in ${var})"),
            reason: format!("it is not a PostgreSQL connection URL: {reason}"),
        };
        let (ssl, rest) = split_ssl_options(url).map_err(not_a_url)?;
        let mut config: Config = rest
            .parse()
            .map_err(|error: tokio_postgres::Error| not_a_url(error.to_string()))?;
        config.ssl_mode(match ssl.mode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        });
        config.application_name(APPLICATION_NAME);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        let mut options = config.get_options().unwrap_or_default().to_string();
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(SESSION_OPTIONS);
        if read_only {
            options.push_str(" -c default_transaction_read_only=on");
        }
        config.options(options);
        let label = redacted_label(&config);
        let refused = |reason: String| ConnectorError::OpenRefused {
            role,
            location: label.clone(),
            reason,
        };
        let client_config = if ssl.mode == SslMode::Disable {
            tls::client_config(&TlsSettings {
                verify: Verify::Nothing,
                root: None,
                identity: None,
            })
        } else {
            ssl.settings()
                .and_then(|settings| tls::client_config(&settings))
        }
        .map_err(refused)?;
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(client_config),
            ssl,
            label,
            role,
            idle: Idle::default(),
        })
    }

    /// The TLS connector of this endpoint (for cancel requests).
    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// A connection for one operation: an idle one released by an earlier operation, or
    /// a new one. Release it ([`Session::release`]) when the operation ended cleanly.
    pub async fn session(&self) -> Result<Session, ConnectorError> {
        self.idle.session(self.connect()).await
    }

    /// Opens a new connection; its driver task ends when the returned client is dropped.
    pub async fn connect(&self) -> Result<Client, ConnectorError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|error| self.open_error(&error))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %describe_error(&error), "postgres connection ended");
            }
        });
        Ok(client)
    }
}

impl Endpoint {
    /// `host:port` (or a list of them) of the endpoint, for messages.
    fn address(&self) -> String {
        let label = self.label.trim_start_matches("postgres://");
        let hosts = label.split_once('/').map_or(label, |(hosts, _)| hosts);
        hosts
            .rsplit_once('@')
            .map_or(hosts, |(_, hosts)| hosts)
            .to_string()
    }

    /// Says why a connection could not be opened and what to fix: TLS and
    /// authentication problems are permanent, a refused or broken connection may pass.
    fn open_error(&self, error: &tokio_postgres::Error) -> ConnectorError {
        let address = self.address();
        let user = self.config.get_user().unwrap_or("");
        let refused = |reason: String| ConnectorError::OpenRefused {
            role: self.role,
            location: self.label.clone(),
            reason,
        };
        if let Some(tls_error) = tls::find_rustls_error(error) {
            return refused(tls::describe_handshake_failure(
                tls_error,
                &address,
                self.ssl.root_cert.as_ref(),
                &WORDING,
            ));
        }
        if let Some(db_error) = error.as_db_error() {
            let message = db_error.message();
            let code = db_error.code().code();
            if code == "28000" && message.contains("no encryption") {
                return refused(format!(
                    "the server requires TLS ({message}): add sslmode=require to the URL \
                     (or sslmode=verify-full with sslrootcert=<the server's CA file>)"
                ));
            }
            if message.contains("requires a valid client certificate") {
                return refused(format!(
                    "the server requires a client certificate for user {user} ({message}): \
                     add sslcert=<certificate file> and sslkey=<key file> to the URL"
                ));
            }
            if message.contains("certificate authentication failed") {
                return refused(format!(
                    "the server refused the client certificate for user {user} ({message}): \
                     its common name (CN) must be the user name, or the server's pg_ident map \
                     must allow it"
                ));
            }
            if code == "28P01" || code == "28000" {
                return refused(format!(
                    "{}; check the user and password in the URL",
                    describe_error(error)
                ));
            }
            if classify_sqlstate(Some(code)) == Failure::Permanent {
                return refused(describe_error(error));
            }
        }
        if tls::is_connection_refused(error) {
            return ConnectorError::Open {
                role: self.role,
                location: self.label.clone(),
                reason: format!(
                    "connection refused at {address}: is the server running and listening there?"
                ),
            };
        }
        let text = describe_error(error);
        if text.contains("server does not support TLS") {
            return refused(format!(
                "the server at {address} does not accept TLS, and sslmode={} requires it: \
                 enable ssl on the server, or set sslmode=prefer",
                self.ssl.mode.as_str()
            ));
        }
        ConnectorError::Open {
            role: self.role,
            location: self.label.clone(),
            reason: text,
        }
    }
}

/// `postgres://user@host:port/db` from a parsed URL: no password, ever.
pub fn redacted_label(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let host_text = match host {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            let port = config
                .get_ports()
                .get(index)
                .or_else(|| config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            format!("{host_text}:{port}")
        })
        .collect();
    let user = config.get_user().unwrap_or("");
    let user_part = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    format!(
        "postgres://{user_part}{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// The message of a PostgreSQL error with its SQLSTATE, detail, hint and context (which
/// names the COPY line and column of a bad value); a driver error with its causes (the
/// driver's own text, "error connecting to server", leaves them out).
pub fn describe_error(error: &tokio_postgres::Error) -> String {
    let Some(db_error) = error.as_db_error() else {
        let mut text = error.to_string();
        let mut cause = std::error::Error::source(error);
        while let Some(inner) = cause {
            text.push_str(&format!(": {inner}"));
            cause = inner.source();
        }
        return text;
    };
    let mut text = format!(
        "{} (SQLSTATE {})",
        db_error.message(),
        db_error.code().code()
    );
    if let Some(column) = db_error.column() {
        text.push_str(&format!("; column {column}"));
    }
    if let Some(detail) = db_error.detail() {
        text.push_str(&format!("; detail: {detail}"));
    }
    if let Some(hint) = db_error.hint() {
        text.push_str(&format!("; hint: {hint}"));
    }
    if let Some(context) = db_error.where_() {
        text.push_str(&format!("; context: {context}"));
    }
    text
}

/// Classifies a driver error: the server away or read-only (no server error at all: the
/// connection broke or was refused), trouble in this chunk, or permanent
/// ([`classify_sqlstate`]).
pub fn classify(error: &tokio_postgres::Error) -> Failure {
    classify_sqlstate(error.as_db_error().map(|db_error| db_error.code().code()))
}

/// Classifies a SQLSTATE (`None`: no server error, the connection failed):
/// - unavailable: no server error, class 08 (connection exception), 57P01–57P03
///   (admin or crash shutdown, cannot connect now), 53300 (too many connections),
///   25006 (read-only transaction: a standby after a switch), class 58 (system error);
/// - transient: class 40 (serialization failure, deadlock, statement completion
///   unknown), 55P03 (lock not available), 57014 (statement timeout or cancel), other
///   class 53 (disk full, out of memory);
/// - permanent: everything else (data, constraint, privilege, missing object).
pub fn classify_sqlstate(code: Option<&str>) -> Failure {
    let Some(code) = code else {
        return Failure::Unavailable;
    };
    let class = code.get(..2).unwrap_or_default();
    match (class, code) {
        ("08" | "58", _) | (_, "57P01" | "57P02" | "57P03" | "53300" | "25006") => {
            Failure::Unavailable
        }
        ("40" | "53", _) | (_, "55P03" | "57014") => Failure::Transient,
        _ => Failure::Permanent,
    }
}

/// A PostgreSQL error with its full description (the driver's own `Display` leaves out
/// the detail and the context that names the bad column).
#[derive(Debug, thiserror::Error)]
#[error("{description}")]
pub struct PgError {
    description: String,
    #[source]
    source: tokio_postgres::Error,
}

/// Wraps a driver error as a [`ConnectorError::Query`] for `operation` on `table`.
pub fn query_error(
    operation: &'static str,
    table: &TableName,
) -> impl Fn(tokio_postgres::Error) -> ConnectorError + use<> {
    let table = table.clone();
    move |source| ConnectorError::Query {
        operation,
        table: table.clone(),
        failure: classify(&source),
        source: Box::new(PgError {
            description: describe_error(&source),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::spec::Secret;

    #[test]
    fn sqlstates_are_classified_by_what_a_retry_can_do() {
        for (code, failure) in [
            (None, Failure::Unavailable),
            (Some("08006"), Failure::Unavailable),
            (Some("08001"), Failure::Unavailable),
            (Some("57P01"), Failure::Unavailable),
            (Some("57P03"), Failure::Unavailable),
            (Some("53300"), Failure::Unavailable),
            (Some("25006"), Failure::Unavailable),
            (Some("40001"), Failure::Transient),
            (Some("40P01"), Failure::Transient),
            (Some("55P03"), Failure::Transient),
            (Some("57014"), Failure::Transient),
            (Some("53100"), Failure::Transient),
            (Some("23505"), Failure::Permanent),
            (Some("22003"), Failure::Permanent),
            (Some("42501"), Failure::Permanent),
            (Some("42P01"), Failure::Permanent),
        ] {
            assert_eq!(classify_sqlstate(code), failure, "{code:?}");
        }
    }

    #[test]
    fn labels_never_show_the_password() {
        let location = Location::Env {
            var: "DST".into(),
            value: Secret::new("postgres://alice:hunter2@db.internal:6543/orders?sslmode=disable"),
        };
        let endpoint = Endpoint::new("target", &location, false).expect("valid");
        assert_eq!(endpoint.label, "postgres://alice@db.internal:6543/orders");
        assert!(!endpoint.label.contains("hunter2"));

        // with TLS options, in both forms: the label has neither password nor key path
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("client.key");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        for url in [
            format!(
                "postgres://alice:hunter2@db.internal:6543/orders?sslmode=prefer&sslkey={}",
                key.display()
            ),
            format!(
                "host=db.internal port=6543 user=alice password=hunter2 dbname=orders sslkey={}",
                key.display()
            ),
        ] {
            let location = Location::Env {
                var: "DST".into(),
                value: Secret::new(url),
            };
            let error = Endpoint::new("target", &location, false)
                .err()
                .expect("sslkey without sslcert is refused");
            let text = error.to_string();
            assert_eq!(
                text,
                format!(
                    "cannot open target database postgres://alice@db.internal:6543/orders: \
                     sslkey={} is given without sslcert: add sslcert=<the file of the client \
                     certificate>",
                    key.display()
                )
            );
            assert!(
                !text.contains("hunter2") && !text.contains("not a key"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_file_path_or_a_bad_url_is_refused_with_the_fix() {
        let path = Location::Path("/tmp/x.db".into());
        let error = Endpoint::new("source", &path, true).err().expect("refused");
        assert!(error.to_string().contains("source.url_env"), "{error}");
        let bad = Location::Env {
            var: "SRC".into(),
            value: Secret::new("postgres://u:secret@h:notaport/db"),
        };
        let error = Endpoint::new("source", &bad, true).err().expect("refused");
        let text = error.to_string();
        assert!(text.contains("$SRC") && !text.contains("secret"), "{text}");
    }
}
