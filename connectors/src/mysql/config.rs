//! The endpoint of a MySQL/MariaDB connector: the connection URL (a secret), ferry's own
//! options carried as `ferry_*` query parameters, and a label safe to show.
//!
//! ```text
//! mysql://user:password@host:3306/database?ferry_write_method=insert&ferry_zero_dates=null
//! ```
//!
//! `ferry_*` parameters are removed before the URL reaches the driver, which refuses
//! parameters it does not know, and so are the mysql client's TLS options: `ssl-mode`
//! (`DISABLED`, `PREFERRED` (the default), `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`),
//! `ssl-ca`, `ssl-cert`, `ssl-key` (or `ssl_mode`, `ssl_ca`, ...). Every other parameter
//! is passed through untouched.

use ferry_model::text::percent_decode;
use std::fmt;
use std::path::PathBuf;

use crate::error::ConnectorError;
use crate::tls::{FileOption, Verify};

/// The mysql client's `--ssl-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disabled,
    /// TLS when the server offers it, without verification; else plaintext (the mysql
    /// client's default).
    #[default]
    Preferred,
    /// TLS, without verification.
    Required,
    /// TLS, the certificate chained to the CA in `ssl-ca`, the name not checked.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyIdentity,
}

impl SslMode {
    fn parse(value: &str) -> Option<Self> {
        Some(match value.to_ascii_uppercase().as_str() {
            "DISABLED" => SslMode::Disabled,
            "PREFERRED" => SslMode::Preferred,
            "REQUIRED" => SslMode::Required,
            "VERIFY_CA" => SslMode::VerifyCa,
            "VERIFY_IDENTITY" => SslMode::VerifyIdentity,
            _ => return None,
        })
    }

    /// The mysql client's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disabled => "DISABLED",
            SslMode::Preferred => "PREFERRED",
            SslMode::Required => "REQUIRED",
            SslMode::VerifyCa => "VERIFY_CA",
            SslMode::VerifyIdentity => "VERIFY_IDENTITY",
        }
    }
}

/// The TLS options of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MysqlTls {
    /// `ssl-mode`; without it, `VERIFY_CA` when `ssl-ca` is given (as the mysql client
    /// does), else `PREFERRED`.
    pub mode: SslMode,
    pub(crate) ca: Option<FileOption>,
    pub(crate) cert: Option<FileOption>,
    pub(crate) key: Option<FileOption>,
}

impl MysqlTls {
    /// How much of the server's certificate is checked.
    pub(crate) fn verify(&self) -> Verify {
        match self.mode {
            SslMode::Disabled | SslMode::Preferred | SslMode::Required => Verify::Nothing,
            SslMode::VerifyCa => Verify::Chain,
            SslMode::VerifyIdentity => Verify::Full,
        }
    }
}

/// How the sink inserts rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteMethod {
    /// `LOAD DATA LOCAL INFILE` fed from the batch stream, falling back to multi-row
    /// INSERTs when the server or the account refuses LOCAL INFILE.
    #[default]
    Auto,
    /// Multi-row INSERTs only (`ferry_write_method=insert`).
    Insert,
}

/// What a source does with a zero date (`0000-00-00`, `2024-00-10`), which no other
/// engine can hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ZeroDates {
    /// Fail the chunk, naming table, column and key (`ferry_zero_dates=error`).
    #[default]
    Error,
    /// Read it as NULL (`ferry_zero_dates=null`); the target then differs from the
    /// source by design, and verification compares the NULL.
    Null,
}

/// A parsed endpoint. `Debug` shows the redacted label only.
#[derive(Clone)]
pub struct MysqlConfig {
    /// The URL without ferry's parameters, for the driver. Holds credentials.
    driver_url: String,
    /// `mysql://user@host:port/database`, without password or parameters.
    pub label: String,
    /// The database tables are listed in (source) or created in (target).
    pub database: String,
    /// How the sink inserts rows.
    pub write_method: WriteMethod,
    /// What the source does with zero dates.
    pub zero_dates: ZeroDates,
    /// TLS.
    pub tls: MysqlTls,
}

impl fmt::Debug for MysqlConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MysqlConfig")
            .field("label", &self.label)
            .field("database", &self.database)
            .field("write_method", &self.write_method)
            .field("zero_dates", &self.zero_dates)
            .field("tls", &self.tls)
            .finish()
    }
}

impl MysqlConfig {
    /// Parses a connection URL. Errors never contain the URL itself.
    pub fn parse(role: &'static str, url: &str) -> Result<Self, ConnectorError> {
        let invalid = |reason: String| ConnectorError::Open {
            role,
            location: "mysql://(not shown)".to_string(),
            reason,
        };
        let Some(rest) = url
            .strip_prefix("mysql://")
            .or_else(|| url.strip_prefix("mariadb://"))
        else {
            return Err(invalid(
                "the URL must start with mysql:// (mysql://user:password@host:port/database)"
                    .to_string(),
            ));
        };
        let (before_query, query_opt) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        let (user_info_opt, host_port) = match authority.rsplit_once('@') {
            Some((user_info, host_port)) => (Some(user_info), host_port),
            None => (None, authority),
        };
        let user = user_info_opt
            .map(|user_info| {
                user_info
                    .split_once(':')
                    .map_or(user_info, |(user, _)| user)
            })
            .unwrap_or("");
        let database = percent_decode(path.trim_end_matches('/'));
        if database.is_empty() || database.contains('/') {
            return Err(invalid(
                "the URL names no database; end it with /<database> (mysql://user@host:port/database)"
                    .to_string(),
            ));
        }
        let host_port = if host_port.contains(':') || host_port.starts_with('[') {
            host_port.to_string()
        } else {
            format!("{host_port}:3306")
        };
        let label = if user.is_empty() {
            format!("mysql://{host_port}/{database}")
        } else {
            format!("mysql://{}@{host_port}/{database}", percent_decode(user))
        };

        let mut write_method = WriteMethod::default();
        let mut zero_dates = ZeroDates::default();
        let mut tls = MysqlTls::default();
        let mut mode = None;
        let mut driver_params = Vec::new();
        for pair in query_opt
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let file = |name: &'static str| {
                let path = percent_decode(value);
                if path.is_empty() {
                    Err(invalid(format!("{name} is empty: give the path of a file")))
                } else {
                    Ok(Some(FileOption {
                        name,
                        path: PathBuf::from(path),
                    }))
                }
            };
            match name.replace('_', "-").as_str() {
                "ssl-mode" => {
                    mode = Some(SslMode::parse(&percent_decode(value)).ok_or_else(|| {
                        invalid(format!(
                            "ssl-mode={value:?} is not one of DISABLED, PREFERRED, REQUIRED, \
                             VERIFY_CA, VERIFY_IDENTITY"
                        ))
                    })?);
                    continue;
                }
                "ssl-ca" => {
                    tls.ca = file("ssl-ca")?;
                    continue;
                }
                "ssl-cert" => {
                    tls.cert = file("ssl-cert")?;
                    continue;
                }
                "ssl-key" => {
                    tls.key = file("ssl-key")?;
                    continue;
                }
                "require-ssl" | "verify-ca" | "verify-identity" | "built-in-roots" => {
                    return Err(invalid(format!(
                        "{name} is the driver's own TLS parameter; use ssl-mode (DISABLED, \
                         PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY) and ssl-ca instead"
                    )));
                }
                _ => {}
            }
            match name {
                "ferry_write_method" => {
                    write_method = match value {
                        "auto" => WriteMethod::Auto,
                        "insert" => WriteMethod::Insert,
                        _ => {
                            return Err(invalid(format!(
                                "ferry_write_method={value:?} is not auto or insert"
                            )));
                        }
                    }
                }
                "ferry_zero_dates" => {
                    zero_dates = match value {
                        "error" => ZeroDates::Error,
                        "null" => ZeroDates::Null,
                        _ => {
                            return Err(invalid(format!(
                                "ferry_zero_dates={value:?} is not error or null"
                            )));
                        }
                    }
                }
                other if other.starts_with("ferry_") => {
                    return Err(invalid(format!(
                        "unknown URL parameter {other:?}; ferry knows ferry_write_method and ferry_zero_dates"
                    )));
                }
                _ => driver_params.push(pair),
            }
        }
        tls.mode = mode.unwrap_or(if tls.ca.is_some() {
            SslMode::VerifyCa
        } else {
            SslMode::Preferred
        });
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(invalid(
                "ssl-cert and ssl-key go together: give both files (the client certificate and its private key)"
                    .to_string(),
            ));
        }
        if tls.ca.is_none() && matches!(tls.mode, SslMode::VerifyCa | SslMode::VerifyIdentity) {
            return Err(invalid(format!(
                "ssl-mode={} needs ssl-ca=<the file of the CA that signed the server's certificate>",
                tls.mode.as_str()
            )));
        }
        let mut driver_url = format!("mysql://{before_query}");
        if !driver_params.is_empty() {
            driver_url.push('?');
            driver_url.push_str(&driver_params.join("&"));
        }
        Ok(Self {
            driver_url,
            label,
            database,
            write_method,
            zero_dates,
            tls,
        })
    }

    /// The URL for the driver. Holds credentials: never show it.
    pub fn driver_url(&self) -> &str {
        &self.driver_url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_hides_the_password_and_ferry_parameters_are_removed() {
        let config = MysqlConfig::parse(
            "source",
            "mysql://app:s3cret@db.example:3307/shop?ferry_write_method=insert&prefer_socket=false&ferry_zero_dates=null",
        )
        .expect("valid");
        assert_eq!(config.label, "mysql://app@db.example:3307/shop");
        assert_eq!(config.database, "shop");
        assert_eq!(config.write_method, WriteMethod::Insert);
        assert_eq!(config.zero_dates, ZeroDates::Null);
        assert_eq!(
            config.driver_url(),
            "mysql://app:s3cret@db.example:3307/shop?prefer_socket=false"
        );
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn defaults_and_default_port() {
        let config = MysqlConfig::parse("target", "mysql://root@localhost/db%20x").expect("valid");
        assert_eq!(config.label, "mysql://root@localhost:3306/db x");
        assert_eq!(config.write_method, WriteMethod::Auto);
        assert_eq!(config.zero_dates, ZeroDates::Error);
    }

    #[test]
    fn tls_options_are_taken_out_in_both_spellings() {
        let config = MysqlConfig::parse(
            "source",
            "mysql://app:s3cret@db:3307/shop?ssl-mode=verify_identity&ssl_ca=%2Fca.pem&ssl-cert=/c.pem&ssl_key=/k.pem&prefer_socket=false",
        )
        .expect("valid");
        assert_eq!(config.tls.mode, SslMode::VerifyIdentity);
        assert_eq!(config.tls.verify(), Verify::Full);
        let path = |option: &Option<FileOption>| option.as_ref().map(|file| file.to_string());
        assert_eq!(path(&config.tls.ca).as_deref(), Some("ssl-ca=/ca.pem"));
        assert_eq!(path(&config.tls.cert).as_deref(), Some("ssl-cert=/c.pem"));
        assert_eq!(path(&config.tls.key).as_deref(), Some("ssl-key=/k.pem"));
        assert_eq!(
            config.driver_url(),
            "mysql://app:s3cret@db:3307/shop?prefer_socket=false"
        );
        assert_eq!(config.label, "mysql://app@db:3307/shop");
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        // the defaults of the mysql client
        let plain = MysqlConfig::parse("source", "mysql://app@db/shop").expect("valid");
        assert_eq!(plain.tls.mode, SslMode::Preferred);
        let with_ca =
            MysqlConfig::parse("source", "mysql://app@db/shop?ssl-ca=/ca.pem").expect("ok");
        assert_eq!(with_ca.tls.mode, SslMode::VerifyCa);
    }

    #[test]
    fn tls_mistakes_are_refused_with_the_fix() {
        for (url, message) in [
            (
                "mysql://u:pw@h/db?ssl-mode=sometimes",
                "ssl-mode=\"sometimes\" is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY",
            ),
            (
                "mysql://u:pw@h/db?ssl-mode=VERIFY_IDENTITY",
                "ssl-mode=VERIFY_IDENTITY needs ssl-ca=<the file of the CA that signed the server's certificate>",
            ),
            (
                "mysql://u:pw@h/db?ssl-key=/k.pem",
                "ssl-cert and ssl-key go together: give both files (the client certificate and its private key)",
            ),
            (
                "mysql://u:pw@h/db?require_ssl=true",
                "require_ssl is the driver's own TLS parameter; use ssl-mode (DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY) and ssl-ca instead",
            ),
        ] {
            let error = MysqlConfig::parse("source", url).expect_err(url);
            assert_eq!(
                error.to_string(),
                format!("cannot open source database mysql://(not shown): {message}")
            );
        }
    }

    #[test]
    fn errors_never_show_the_url() {
        for url in [
            "postgres://u:pw@h/db",
            "mysql://u:pw@h:1",
            "mysql://u:pw@h:1/db?ferry_nope=1",
            "mysql://u:pw@h:1/db?ferry_write_method=fast",
        ] {
            let error = MysqlConfig::parse("source", url).expect_err(url);
            assert!(!error.to_string().contains("pw"), "{error}");
        }
    }
}
