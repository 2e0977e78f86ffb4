//! How `ferryctl` proves itself to a Control API: TLS (the server's CA, and a client
//! certificate for mutual TLS) and a bearer token. Set once per process from the flags
//! ([`ClientSecurity::install`]); every connection the remote commands open uses it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use ferry_coordinator::security::access::AUTHORIZATION_KEY;
use ferry_coordinator::security::tls::read_pem;

/// The TLS and token settings of this `ferryctl` process.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    tls: Option<ClientTlsConfig>,
    /// Whether a client certificate is presented.
    identity: bool,
    token: Option<MetadataValue<Ascii>>,
}

/// The flags (or `FERRY_*` variables) they come from.
#[derive(Clone, Debug, Default)]
pub struct ClientSecurityArgs {
    /// `--ca`: the CA that signed the server's certificate.
    pub ca: Option<PathBuf>,
    /// `--cert`: this client's certificate (mutual TLS).
    pub cert: Option<PathBuf>,
    /// `--key`: this client's key.
    pub key: Option<PathBuf>,
    /// `--tls-server-name`: the name the server's certificate must carry, when it is not
    /// the endpoint's host.
    pub server_name: Option<String>,
    /// `--token-file`: a file holding the bearer token.
    pub token_file: Option<PathBuf>,
}

static INSTALLED: OnceLock<ClientSecurity> = OnceLock::new();

impl ClientSecurity {
    /// Reads the files the flags name. Errors name the flag and the file, never a token.
    pub fn load(args: &ClientSecurityArgs) -> Result<ClientSecurity, String> {
        let token = args.token_file.as_deref().map(read_token).transpose()?;
        let wants_tls = args.ca.is_some() || args.cert.is_some() || args.server_name.is_some();
        if args.cert.is_some() != args.key.is_some() {
            return Err(
                "--cert and --key go together (a client certificate and its key): give both"
                    .to_owned(),
            );
        }
        let tls = if wants_tls {
            let mut config = ClientTlsConfig::new();
            if let Some(ca) = &args.ca {
                let pem =
                    read_pem(ca, "the CA", "--ca", "CERTIFICATE").map_err(|e| e.to_string())?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
                let cert_pem = read_pem(cert, "the client certificate", "--cert", "CERTIFICATE")
                    .map_err(|e| e.to_string())?;
                let key_pem = read_pem(key, "the client key", "--key", "PRIVATE KEY")
                    .map_err(|e| e.to_string())?;
                config = config.identity(Identity::from_pem(cert_pem, key_pem));
            }
            if let Some(name) = &args.server_name {
                config = config.domain_name(name.clone());
            }
            Some(config)
        } else {
            None
        };
        Ok(ClientSecurity {
            tls,
            identity: args.cert.is_some(),
            token,
        })
    }

    /// Makes these the settings of every connection this process opens. The first call
    /// wins; `ferryctl` makes it once, from its flags.
    pub fn install(self) {
        let _ = INSTALLED.set(self);
    }

    /// The installed settings (none: plaintext, no token).
    pub(crate) fn current() -> &'static ClientSecurity {
        INSTALLED.get_or_init(ClientSecurity::default)
    }

    /// The TLS settings, when connections use TLS.
    pub(crate) fn tls(&self) -> Option<&ClientTlsConfig> {
        self.tls.as_ref()
    }

    /// Whether a client certificate is presented (mutual TLS).
    pub(crate) fn has_identity(&self) -> bool {
        self.identity
    }

    /// The interceptor that adds the bearer token to every request.
    pub(crate) fn bearer(&self) -> BearerToken {
        BearerToken {
            value: self.token.clone(),
        }
    }
}

/// Reads a token file: the token on its first non-empty line.
fn read_token(path: &Path) -> Result<MetadataValue<Ascii>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read --token-file {}: {error}", path.display()))?;
    let token = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .ok_or_else(|| format!("--token-file {} holds no token", path.display()))?;
    if token.chars().any(char::is_whitespace) {
        return Err(format!(
            "--token-file {}: the first line must be the token alone (this looks like a \
             server's tokens file of `NAME ROLE TOKEN` lines: give ferryctl only the token)",
            path.display()
        ));
    }
    format!("Bearer {token}").parse().map_err(|_| {
        format!(
            "--token-file {}: the token must be printable ASCII",
            path.display()
        )
    })
}

/// Adds `authorization: Bearer TOKEN` when a token is set.
#[derive(Clone, Debug)]
pub struct BearerToken {
    value: Option<MetadataValue<Ascii>>,
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.value {
            request
                .metadata_mut()
                .insert(AUTHORIZATION_KEY, value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_gives_one_token_and_its_errors_never_show_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("token");
        std::fs::write(&good, "\n  secret-token-value-123  \n").expect("write");
        let value = read_token(&good).expect("token");
        assert_eq!(
            value.to_str().expect("ascii"),
            "Bearer secret-token-value-123"
        );
        let server_file = dir.path().join("tokens");
        std::fs::write(&server_file, "ops operator secret-token-value-123\n").expect("write");
        let error = read_token(&server_file).expect_err("a server's file");
        assert!(error.contains("NAME ROLE TOKEN"), "{error}");
        assert!(!error.contains("secret-token-value"), "{error}");
        let missing = read_token(&dir.path().join("nope")).expect_err("missing");
        assert!(missing.contains("cannot read --token-file"), "{missing}");
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let error = ClientSecurity::load(&ClientSecurityArgs {
            cert: Some("client.crt".into()),
            ..ClientSecurityArgs::default()
        })
        .expect_err("no key");
        assert!(error.contains("--cert and --key go together"), "{error}");
    }
}
