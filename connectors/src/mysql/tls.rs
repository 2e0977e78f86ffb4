//! TLS for MySQL/MariaDB: the endpoint's `ssl-*` options as mysql_async's rustls
//! `SslOpts`, and why opening a connection failed, in words that say what to fix.

use mysql_async::{ClientIdentity, SslOpts};

use super::config::{MysqlConfig, MysqlTls, SslMode};
use crate::error::ConnectorError;
use crate::tls::{self, Verify, Wording};

/// How the mysql client's options are named in messages about a failed handshake.
const WORDING: Wording = Wording {
    root_option: "ssl-ca",
    chain_only: "ssl-mode=VERIFY_CA",
    encrypt_only: "ssl-mode=REQUIRED",
};

/// The driver's TLS options (`None`: plaintext). The files are read here first, so a
/// missing or malformed one is named before any connection; the driver gets their paths,
/// never their contents (its options are printable).
pub(crate) fn ssl_opts(options: &MysqlTls) -> Result<Option<SslOpts>, String> {
    tls::install_default_provider();
    if options.mode == SslMode::Disabled {
        return Ok(None);
    }
    let mut ssl = SslOpts::default();
    if let Some(ca) = &options.ca {
        tls::load_certificates(ca)?;
        ssl = ssl
            .with_root_certs(vec![ca.path.clone().into()])
            .with_disable_built_in_roots(true);
    }
    if let (Some(cert), Some(key)) = (&options.cert, &options.key) {
        tls::load_certificates(cert)?;
        tls::load_private_key(key)?;
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(
            cert.path.clone().into(),
            key.path.clone().into(),
        )));
    }
    Ok(Some(match options.verify() {
        Verify::Nothing => ssl.with_danger_accept_invalid_certs(true),
        // The driver's own "skip domain validation" looks for a rustls error text that
        // rustls no longer writes; VERIFY_CA is done by [`verify_ca_retry`] instead.
        Verify::Chain | Verify::Full => ssl,
    }))
}

/// VERIFY_CA: when the first handshake failed only on the name (the chain, checked
/// first, is good), the options that verify the certificate against the name it does
/// carry, so the chain is still verified on every connection.
pub(crate) fn verify_ca_retry(
    options: &MysqlTls,
    ssl: Option<&SslOpts>,
    error: &mysql_async::Error,
) -> Option<SslOpts> {
    if options.mode != SslMode::VerifyCa {
        return None;
    }
    let name = tls::other_name_in_certificate(error)?;
    Some(ssl?.clone().with_danger_tls_hostname_override(Some(name)))
}

/// After a plaintext login was refused (1045): whether the same login over TLS is
/// accepted, i.e. the server requires TLS (MariaDB answers plaintext under
/// `require_secure_transport` with "access denied", not with an error of its own).
pub(crate) async fn login_needs_tls(opts: &mysql_async::OptsBuilder) -> bool {
    let probe = mysql_async::Pool::new(
        opts.clone()
            .ssl_opts(SslOpts::default().with_danger_accept_invalid_certs(true)),
    );
    let accepted = probe.get_conn().await.is_ok();
    let _ = probe.disconnect().await;
    accepted
}

/// Whether the server said it cannot do TLS (PREFERRED then goes on in plaintext).
pub(crate) fn is_no_tls_from_server(error: &mysql_async::Error) -> bool {
    matches!(
        error,
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)
    )
}

/// Why the first connection of an endpoint failed, with the fix: TLS and authentication
/// problems are permanent ([`ConnectorError::OpenRefused`]), a refused or lost
/// connection may pass ([`ConnectorError::Open`]). `plaintext`: the login went without
/// TLS; `needs_tls`: the login refused in plaintext is accepted over TLS.
pub(crate) fn open_error(
    role: &'static str,
    config: &MysqlConfig,
    error: &mysql_async::Error,
    plaintext: bool,
    needs_tls: bool,
) -> ConnectorError {
    let address = address(&config.label);
    let refused = |reason: String| ConnectorError::OpenRefused {
        role,
        location: config.label.clone(),
        reason,
    };
    if let Some(tls_error) = tls::find_rustls_error(error) {
        return refused(tls::describe_handshake_failure(
            tls_error,
            &address,
            config.tls.ca.as_ref(),
            &WORDING,
        ));
    }
    match error {
        mysql_async::Error::Server(server) => match server.code {
            1049 => refused(format!(
                "database {} does not exist; create it first, or fix the URL",
                config.database
            )),
            // MySQL's ER_SECURE_TRANSPORT_REQUIRED, or MariaDB's access denied that the
            // same login over TLS does not get
            3159 => refused(requires_tls(&server.message)),
            1045 if needs_tls => refused(requires_tls(&format!(
                "{}, and the same login over TLS is accepted",
                server.message
            ))),
            1045 if !plaintext && config.tls.cert.is_none() => refused(format!(
                "{}; check the user and password in the URL, and if the account requires \
                     a client certificate (REQUIRE X509 or SUBJECT), add ssl-cert=<certificate \
                     file>&ssl-key=<key file>",
                server.message
            )),
            1045 => refused(format!(
                "{}; check the user and password in the URL",
                server.message
            )),
            code if super::classify_code(code) == crate::Failure::Permanent => {
                refused(error.to_string())
            }
            _ => ConnectorError::Open {
                role,
                location: config.label.clone(),
                reason: error.to_string(),
            },
        },
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            refused(format!(
                "the server at {address} does not offer TLS, and ssl-mode={} requires it: \
                 enable TLS on the server (ssl-cert, ssl-key), or set ssl-mode=PREFERRED",
                config.tls.mode.as_str()
            ))
        }
        _ if tls::is_connection_refused(error) => ConnectorError::Open {
            role,
            location: config.label.clone(),
            reason: format!(
                "connection refused at {address}: is the server running and listening there?"
            ),
        },
        mysql_async::Error::Io(mysql_async::IoError::Tls(_)) | mysql_async::Error::Url(_) => {
            refused(error.to_string())
        }
        _ => ConnectorError::Open {
            role,
            location: config.label.clone(),
            reason: error.to_string(),
        },
    }
}

fn requires_tls(why: &str) -> String {
    format!(
        "the server requires TLS ({why}): add ssl-mode=REQUIRED to the URL (or \
         ssl-mode=VERIFY_IDENTITY with ssl-ca=<the server's CA file>)"
    )
}

/// `host:port` of a `mysql://user@host:port/database` label.
fn address(label: &str) -> String {
    let rest = label.trim_start_matches("mysql://");
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_taken_from_the_label() {
        assert_eq!(
            address("mysql://app@db.example:3307/shop"),
            "db.example:3307"
        );
        assert_eq!(address("mysql://127.0.0.1:3306/shop"), "127.0.0.1:3306");
    }

    #[test]
    fn a_missing_ca_file_is_named_before_connecting() {
        let config = MysqlConfig::parse("target", "mysql://u:pw@h/db?ssl-ca=/nonexistent/ca.pem")
            .expect("ok");
        let error = ssl_opts(&config.tls).expect_err("unreadable");
        assert!(
            error.starts_with("cannot read ssl-ca=/nonexistent/ca.pem: "),
            "{error}"
        );
    }
}
