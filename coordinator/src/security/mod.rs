//! Who may reach and call the Control API, the same for a coordinator and for
//! `ferryctl local`: server TLS, optional mutual TLS, bearer tokens with roles, and the
//! rule that a server without authentication listens on loopback only unless the
//! operator says `--insecure`.

pub mod access;
pub mod tls;
pub mod tokens;

use ferry_server::error_chain;
use std::net::SocketAddr;
use std::path::PathBuf;

use ferry_model::problems::Problems;
use tonic::transport::ServerTlsConfig;

pub use access::{AccessDenied, Caller, ControlAccess};
pub use tokens::{Role, Tokens, TokensError};

use tls::TlsFileError;

/// The Control API's security settings (a coordinator's `server.*` keys; `ferryctl
/// local`'s flags of the same names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlSecurity {
    /// The server's certificate (PEM): serve TLS.
    pub tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// A CA (PEM): require client certificates signed by it (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// The role of a caller known by its client certificate, when no tokens are checked.
    pub client_cert_role: Option<Role>,
    /// `NAME ROLE TOKEN` lines: require a bearer token.
    pub tokens_file: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address.
    pub insecure: bool,
}

/// Why a Control API would not start.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The tokens file.
    #[error(transparent)]
    Tokens(#[from] TokensError),
    /// The TLS material.
    #[error(transparent)]
    Tls(#[from] TlsFileError),
    /// rustls refused the certificate or key.
    #[error(
        "the Control API's TLS certificate or key (server.tls_cert, server.tls_key) cannot \
         be used: {0}"
    )]
    TlsSetup(String),
    /// A non-loopback address without authentication.
    #[error(
        "refusing to serve the Control API on {addr} without authentication: anyone who \
         reaches it could cancel jobs or drain workers. Set server.tokens_file (bearer \
         tokens) or server.client_ca (mutual TLS), or listen on 127.0.0.1, or, if a network \
         policy already guards the port, pass --insecure (server.insecure = true)"
    )]
    Unauthenticated {
        /// The address it would listen on.
        addr: SocketAddr,
    },
}

/// A Control API's security, ready to serve.
pub struct SecuredControl {
    /// TLS for the server builder, when served over TLS.
    pub tls: Option<ServerTlsConfig>,
    /// Who may call.
    pub access: ControlAccess,
    /// One line for the start-up log: what is encrypted and who may call.
    pub description: String,
}

impl SecuredControl {
    /// A tonic server builder with this TLS, if any.
    pub fn server_builder(&mut self) -> Result<tonic::transport::Server, SecurityError> {
        let builder = tonic::transport::Server::builder();
        match self.tls.take() {
            Some(tls) => builder
                .tls_config(tls)
                .map_err(|error| SecurityError::TlsSetup(error_chain(&error))),
            None => Ok(builder),
        }
    }
}

impl ControlSecurity {
    /// Records problems with the combination of settings under `server.*`.
    pub fn check(&self, problems: &mut Problems) {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            problems.push(
                "server.tls_cert",
                "server.tls_cert and server.tls_key go together: give both or neither",
            );
        }
        if self.client_ca.is_some() && self.tls_cert.is_none() {
            problems.push(
                "server.client_ca",
                "mutual TLS needs the server's own certificate: set server.tls_cert and \
                 server.tls_key too",
            );
        }
        if self.client_cert_role.is_some() && self.client_ca.is_none() {
            problems.push(
                "server.client_cert_role",
                "only applies with server.client_ca (mutual TLS)",
            );
        }
    }

    /// Loads the tokens and TLS material for a server bound to `bound`, refusing a
    /// non-loopback address without authentication unless `insecure`.
    pub fn prepare(&self, bound: SocketAddr) -> Result<SecuredControl, SecurityError> {
        let tokens_opt = self.tokens_file.as_deref().map(Tokens::load).transpose()?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(tls::server_tls(cert, key, self.client_ca.as_deref())?),
            _ => None,
        };
        let certificate_role = self
            .client_ca
            .as_ref()
            .map(|_| self.client_cert_role.unwrap_or(Role::Operator));
        let described_tokens = tokens_opt.as_ref().map(Tokens::describe);
        let access = ControlAccess::new(tokens_opt, certificate_role);
        if !access.authenticates() && !bound.ip().is_loopback() && !self.insecure {
            return Err(SecurityError::Unauthenticated { addr: bound });
        }
        let transport = match (&tls, &self.client_ca) {
            (None, _) => "plaintext",
            (Some(_), None) => "TLS",
            (Some(_), Some(_)) => "mutual TLS",
        };
        let callers = match (described_tokens, certificate_role) {
            (Some(tokens), _) => tokens,
            (None, Some(role)) => format!("client certificates ({role})"),
            (None, None) if bound.ip().is_loopback() => {
                "no authentication: only this machine can reach it".to_owned()
            }
            (None, None) => "NO AUTHENTICATION (--insecure): anyone who reaches it is an \
                             operator"
                .to_owned(),
        };
        Ok(SecuredControl {
            tls,
            access,
            description: format!("Control API on {bound}: {transport}, {callers}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_address_needs_authentication_or_insecure() {
        let public: SocketAddr = "0.0.0.0:7979".parse().expect("addr");
        let error = ControlSecurity::default()
            .prepare(public)
            .err()
            .expect("refused");
        assert!(error.to_string().contains("--insecure"), "{error}");
        let insecure = ControlSecurity {
            insecure: true,
            ..ControlSecurity::default()
        }
        .prepare(public)
        .expect("insecure");
        assert!(insecure.description.contains("NO AUTHENTICATION"));
        let loopback = ControlSecurity::default()
            .prepare("127.0.0.1:7979".parse().expect("addr"))
            .expect("loopback");
        assert_eq!(
            loopback.description,
            "Control API on 127.0.0.1:7979: plaintext, no authentication: only this machine can reach it"
        );
    }

    #[test]
    fn settings_that_do_not_go_together_are_named() {
        let mut problems = Problems::default();
        ControlSecurity {
            tls_cert: Some("cert.pem".into()),
            client_cert_role: Some(Role::Viewer),
            ..ControlSecurity::default()
        }
        .check(&mut problems);
        let text = problems.to_lines().join("\n");
        assert!(
            text.contains("server.tls_cert and server.tls_key go together"),
            "{text}"
        );
        assert!(text.contains("server.client_cert_role"), "{text}");
    }
}
