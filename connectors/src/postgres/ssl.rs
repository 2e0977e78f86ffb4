//! libpq's TLS options in a connection string, taken out before the rest reaches
//! tokio-postgres (whose parser knows only `disable`, `prefer` and `require` and refuses
//! the file options): `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, in URL query form
//! (`postgres://host/db?sslmode=verify-full&sslrootcert=/ca.pem`) and in `key=value`
//! form (`host=db sslmode=verify-full sslrootcert=/ca.pem`).

use ferry_model::text::percent_decode;
use std::path::PathBuf;

use crate::tls::{FileOption, TlsSettings, Verify};

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, without verification; else plaintext (libpq's
    /// default).
    #[default]
    Prefer,
    /// TLS, without verification (with `sslrootcert`: as `verify-ca`, libpq's rule).
    Require,
    /// TLS, the certificate chained to the CA, the name not checked.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }

    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS options of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SslOptions {
    pub mode: SslMode,
    pub root_cert: Option<FileOption>,
    pub cert: Option<FileOption>,
    pub key: Option<FileOption>,
}

impl SslOptions {
    /// How much of the server's certificate is checked: libpq's rules, `require` with a
    /// root certificate verifying the chain.
    pub fn verify(&self) -> Verify {
        match self.mode {
            SslMode::Disable | SslMode::Prefer => Verify::Nothing,
            SslMode::Require if self.root_cert.is_none() => Verify::Nothing,
            SslMode::Require | SslMode::VerifyCa => Verify::Chain,
            SslMode::VerifyFull => Verify::Full,
        }
    }

    /// The settings for [`crate::tls::client_config`]; a client certificate needs both
    /// files.
    pub fn settings(&self) -> Result<TlsSettings<'_>, String> {
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(format!(
                    "{cert} is given without sslkey: add sslkey=<the file of its private key>"
                ));
            }
            (None, Some(key)) => {
                return Err(format!(
                    "{key} is given without sslcert: add sslcert=<the file of the client certificate>"
                ));
            }
        };
        Ok(TlsSettings {
            verify: self.verify(),
            root: self.root_cert.as_ref(),
            identity,
        })
    }

    fn set(&mut self, name: &str, value: &str) -> Result<bool, String> {
        let file = |name: &'static str| {
            if value.is_empty() {
                Err(format!("{name} is empty: give the path of a file"))
            } else {
                Ok(Some(FileOption {
                    name,
                    path: PathBuf::from(value),
                }))
            }
        };
        match name {
            "sslmode" => self.mode = SslMode::parse(value)?,
            "sslrootcert" => {
                self.root_cert = if value == "system" {
                    None
                } else {
                    file("sslrootcert")?
                }
            }
            "sslcert" => self.cert = file("sslcert")?,
            "sslkey" => self.key = file("sslkey")?,
            "sslpassword" => {
                return Err(
                    "sslpassword (an encrypted client key) is not supported: decrypt the key \
                     (openssl pkey -in KEY -out KEY.plain) and drop sslpassword"
                        .to_string(),
                );
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Splits a connection string into the TLS options and the rest, for tokio-postgres.
/// Errors never contain the string itself (it may hold a password).
pub(crate) fn split_ssl_options(text: &str) -> Result<(SslOptions, String), String> {
    let mut options = SslOptions::default();
    let trimmed = text.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        let Some((base, query)) = text.split_once('?') else {
            return Ok((options, text.to_string()));
        };
        let (query, fragment) = match query.split_once('#') {
            Some((query, fragment)) => (query, Some(fragment)),
            None => (query, None),
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !options.set(&percent_decode(name), &percent_decode(value))? {
                kept.push(pair);
            }
        }
        let mut rest = base.to_string();
        if !kept.is_empty() {
            rest.push('?');
            rest.push_str(&kept.join("&"));
        }
        if let Some(fragment) = fragment {
            rest.push('#');
            rest.push_str(fragment);
        }
        Ok((options, rest))
    } else {
        let mut kept = Vec::new();
        for (name, value) in parse_key_values(text)? {
            if !options.set(&name, &value)? {
                kept.push(format!(
                    "{name}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        Ok((options, kept.join(" ")))
    }
}

/// Parses libpq's `key=value` form: values may be single-quoted, `\` escapes the next
/// character.
fn parse_key_values(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            name.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "option {name:?} has no value: write key=value pairs separated by spaces"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("the value of {name:?} has no closing quote")),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &'static str, path: &str) -> Option<FileOption> {
        Some(FileOption {
            name,
            path: PathBuf::from(path),
        })
    }

    #[test]
    fn url_options_are_taken_out_and_the_rest_kept() {
        let (options, rest) = split_ssl_options(
            "postgres://u:pw@h:5/db?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&sslcert=/c.pem&sslkey=/k.pem&application_name=x",
        )
        .expect("valid");
        assert_eq!(
            options,
            SslOptions {
                mode: SslMode::VerifyFull,
                root_cert: file("sslrootcert", "/etc/ca.pem"),
                cert: file("sslcert", "/c.pem"),
                key: file("sslkey", "/k.pem"),
            }
        );
        assert_eq!(
            rest,
            "postgres://u:pw@h:5/db?connect_timeout=5&application_name=x"
        );
        let (options, rest) = split_ssl_options("postgresql://h/db?sslmode=require").expect("ok");
        assert_eq!(
            (options.mode, rest.as_str()),
            (SslMode::Require, "postgresql://h/db")
        );
        let (options, rest) = split_ssl_options("postgres://h/db").expect("ok");
        assert_eq!(
            (options.mode, rest.as_str()),
            (SslMode::Prefer, "postgres://h/db")
        );
    }

    #[test]
    fn key_value_options_are_taken_out_and_the_rest_requoted() {
        let (options, rest) = split_ssl_options(
            "host=h port=5 user=u password='it\\'s x' sslmode = verify-ca sslrootcert='/my ca.pem' dbname=db",
        )
        .expect("valid");
        assert_eq!(options.mode, SslMode::VerifyCa);
        assert_eq!(options.root_cert, file("sslrootcert", "/my ca.pem"));
        assert_eq!(
            rest,
            "host='h' port='5' user='u' password='it\\'s x' dbname='db'"
        );
    }

    #[test]
    fn libpq_verification_rules() {
        let mut options = SslOptions {
            mode: SslMode::Require,
            ..SslOptions::default()
        };
        assert_eq!(options.verify(), Verify::Nothing);
        options.root_cert = file("sslrootcert", "/ca.pem");
        assert_eq!(
            options.verify(),
            Verify::Chain,
            "require + sslrootcert = verify-ca"
        );
        options.mode = SslMode::VerifyFull;
        assert_eq!(options.verify(), Verify::Full);
        options.mode = SslMode::Prefer;
        assert_eq!(options.verify(), Verify::Nothing);
    }

    #[test]
    fn bad_values_are_refused_without_showing_the_string() {
        for text in [
            "postgres://u:pw@h/db?sslmode=sometimes",
            "host=h password=pw sslmode=sometimes",
            "postgres://u:pw@h/db?sslrootcert=",
            "host=h password='pw",
            "postgres://u:pw@h/db?sslpassword=pw",
        ] {
            let error = split_ssl_options(text).expect_err(text);
            assert!(!error.contains("pw"), "{error}");
        }
        let options = SslOptions {
            cert: file("sslcert", "/c.pem"),
            ..SslOptions::default()
        };
        let error = options.settings().err().expect("refused");
        assert_eq!(
            error,
            "sslcert=/c.pem is given without sslkey: add sslkey=<the file of its private key>"
        );
    }
}
