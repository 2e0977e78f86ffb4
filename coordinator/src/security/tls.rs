//! The Control API's TLS: the server's certificate and key, and, for mutual TLS, the CA
//! that signs the clients' certificates (rustls with ring, through tonic).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use x509_cert::der::Decode;

/// Why the TLS material could not be used. Messages name files, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// A file could not be read.
    #[error("cannot read {what} {path} ({key}): {source}")]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The setting that names it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold PEM of the expected kind.
    #[error("{path} ({key}) holds no PEM {expected}: expected a `-----BEGIN {expected}` block")]
    NotPem {
        /// The setting that names it.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM label expected (`CERTIFICATE`, `PRIVATE KEY`).
        expected: &'static str,
    },
}

/// Reads a PEM file and checks that it holds a block labelled with `expected` (any
/// `… PRIVATE KEY` block for keys).
pub fn read_pem(
    path: &Path,
    what: &'static str,
    key: &'static str,
    expected: &'static str,
) -> Result<Vec<u8>, TlsFileError> {
    let bytes = std::fs::read(path).map_err(|source| TlsFileError::Read {
        what,
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text.lines().any(|line| {
        line.starts_with("-----BEGIN ") && line.trim_end().ends_with(&format!("{expected}-----"))
    });
    if !found {
        return Err(TlsFileError::NotPem {
            key,
            path: path.to_path_buf(),
            expected,
        });
    }
    Ok(bytes)
}

/// The server side: `cert` and `key` (PEM), and `client_ca` (PEM) to require client
/// certificates signed by it.
pub fn server_tls(
    cert: &Path,
    key: &Path,
    client_ca_opt: Option<&Path>,
) -> Result<ServerTlsConfig, TlsFileError> {
    let cert_pem = read_pem(
        cert,
        "the server certificate",
        "server.tls_cert",
        "CERTIFICATE",
    )?;
    let key_pem = read_pem(key, "the server key", "server.tls_key", "PRIVATE KEY")?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
    if let Some(client_ca) = client_ca_opt {
        let ca_pem = read_pem(
            client_ca,
            "the client CA",
            "server.client_ca",
            "CERTIFICATE",
        )?;
        config = config.client_ca_root(Certificate::from_pem(ca_pem));
    }
    Ok(config)
}

/// The subject of a DER certificate, as `CN=…,O=…`, if it parses.
pub fn certificate_subject(der: &[u8]) -> Option<String> {
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    Some(certificate.tbs_certificate.subject.to_string())
}
