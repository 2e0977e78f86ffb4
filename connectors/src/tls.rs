//! TLS to databases, shared by the PostgreSQL and MySQL connectors: rustls over the
//! `ring` provider (no OpenSSL), certificate and key files read with messages that name
//! the file, the three levels of server verification the engines' clients know, and
//! handshake failures turned into messages that say what to fix.
//!
//! Key material is read into memory only to build a client configuration; it never
//! appears in a message, and file paths (which are not secrets) do.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The crypto provider of every TLS connection ferry opens to a database. rustls marks
/// ring's provider deprecated because it has no post-quantum key exchange; the one that
/// has (aws-lc-rs) needs cmake and a C toolchain to build, which ferry avoids.
#[allow(deprecated)]
fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// [`ring_provider`], shared.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring_provider())
}

/// Makes `ring` the process-wide default provider, for drivers that build their own
/// rustls configuration with the default (mysql_async). A no-op when one is installed.
pub(crate) fn install_default_provider() {
    let _ = ring_provider().install_default();
}

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Encrypt only: any certificate is accepted.
    Nothing,
    /// The certificate chains to a trusted CA; the name in it is not checked.
    Chain,
    /// The chain, and the host name the client dialled is in the certificate.
    Full,
}

/// One option of an endpoint URL naming a file, e.g. `sslrootcert=/etc/ca.pem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileOption {
    /// The option's name as the user wrote it (`sslrootcert`, `ssl-ca`).
    pub name: &'static str,
    /// The file.
    pub path: PathBuf,
}

impl std::fmt::Display for FileOption {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}={}", self.name, self.path.display())
    }
}

fn read(option: &FileOption) -> Result<Vec<u8>, String> {
    std::fs::read(&option.path).map_err(|error| {
        format!("cannot read {option}: {error}; check the path and that this process may read it")
    })
}

/// Reads the certificates of a PEM (or single DER) file.
pub(crate) fn load_certificates(
    option: &FileOption,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(option)?;
    let mut certificates = Vec::new();
    for certificate in CertificateDer::pem_slice_iter(&bytes) {
        certificates.push(
            certificate
                .map_err(|error| format!("{option} is not a PEM certificate file: {error}"))?,
        );
    }
    if certificates.is_empty() {
        if std::str::from_utf8(&bytes).is_err() && !bytes.is_empty() {
            certificates.push(CertificateDer::from(bytes));
        } else {
            return Err(format!(
                "{option} holds no certificate (expected -----BEGIN CERTIFICATE-----)"
            ));
        }
    }
    Ok(certificates)
}

/// Reads a private key (PKCS#8, PKCS#1 or SEC1, PEM). The message never shows the key.
pub(crate) fn load_private_key(option: &FileOption) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(option)?;
    if bytes
        .windows(b"ENCRYPTED".len())
        .any(|window| window == b"ENCRYPTED")
    {
        return Err(format!(
            "{option} is an encrypted private key, which ferry cannot read: decrypt it \
             (openssl pkey -in KEY -out KEY.plain) and keep the file readable by this process only"
        ));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| {
        format!(
            "{option} holds no private key (expected -----BEGIN PRIVATE KEY-----, \
             RSA PRIVATE KEY or EC PRIVATE KEY)"
        )
    })
}

/// What a client configuration is built from.
pub(crate) struct TlsSettings<'a> {
    /// How much of the server's certificate is checked.
    pub verify: Verify,
    /// The CA file; `None`: the public web roots built into ferry (Mozilla's).
    pub root: Option<&'a FileOption>,
    /// A client certificate and its key.
    pub identity: Option<(&'a FileOption, &'a FileOption)>,
}

/// Builds a rustls client configuration. Errors name the file and the fix.
pub(crate) fn client_config(settings: &TlsSettings<'_>) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot set up TLS: {error}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match settings.verify {
        Verify::Nothing => Arc::new(AnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        }),
        Verify::Chain | Verify::Full => {
            let mut roots = RootCertStore::empty();
            match settings.root {
                Some(option) => {
                    for certificate in load_certificates(option)? {
                        roots.add(certificate).map_err(|error| {
                            format!("{option} holds a certificate rustls cannot use: {error}")
                        })?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| format!("cannot set up certificate verification: {error}"))?;
            if settings.verify == Verify::Full {
                webpki
            } else {
                Arc::new(ChainOnly { webpki })
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match settings.identity {
        Some((certificate, key)) => {
            let chain = load_certificates(certificate)?;
            let key_der = load_private_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|error| {
                    format!("{certificate} and {key} do not make a client identity: {error}")
                })
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Accepts any certificate (encryption without verification, as `sslmode=require` and
/// `ssl-mode=REQUIRED` do); handshake signatures are still checked.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks the chain (and validity dates) but not the name (`verify-ca`, `VERIFY_CA`).
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The rustls error somewhere in an error's chain (drivers wrap it in `io::Error`s).
pub(crate) fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = find_rustls_error(inner)
        {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// The refused connection in an error's chain, if that is what happened.
pub(crate) fn is_connection_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// The words of one engine's options, for messages about a failed handshake.
pub(crate) struct Wording {
    /// The CA option, e.g. `sslrootcert`.
    pub root_option: &'static str,
    /// The setting that checks the CA but not the name, e.g. `sslmode=verify-ca`.
    pub chain_only: &'static str,
    /// The setting that encrypts without checking, e.g. `sslmode=require`.
    pub encrypt_only: &'static str,
}

/// Says what a failed TLS handshake with `endpoint` (`host:port`) means and what to fix.
pub(crate) fn describe_handshake_failure(
    error: &rustls::Error,
    endpoint: &str,
    root: Option<&FileOption>,
    wording: &Wording,
) -> String {
    let trusted = match root {
        Some(option) => format!("the CA in {option}"),
        None => format!(
            "a public CA (no {} given, so the web's public roots were used)",
            wording.root_option
        ),
    };
    match error {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!(
            "the server certificate of {endpoint} is not signed by {trusted}: set {}= to the \
             file of the CA that signed the server's certificate (or {} to encrypt without \
             verifying)",
            wording.root_option, wording.encrypt_only
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected,
            presented,
        }) => {
            let names = if presented.is_empty() {
                "no name at all".to_string()
            } else {
                presented
                    .iter()
                    .map(|name| plain_name(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "the server certificate of {endpoint} is for {names}, not for {} (the host in \
                 the URL): connect to a host name the certificate names, or use {} to check \
                 the CA only",
                expected.to_str(),
                wording.chain_only
            )
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => format!(
            "the server certificate of {endpoint} does not name the host in the URL: connect \
             to a host name the certificate names, or use {} to check the CA only",
            wording.chain_only
        ),
        rustls::Error::InvalidCertificate(
            certificate_error @ (CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. }),
        ) => format!(
            "the server certificate of {endpoint} is not valid now ({certificate_error}): \
             renew it on the server, or check this machine's clock"
        ),
        rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::CertificateRequired
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateUnknown),
        ) => format!(
            "the server {endpoint} refused the TLS handshake ({alert:?}): it requires a client \
             certificate signed by a CA it trusts; check the client certificate and key options"
        ),
        other => format!("the TLS handshake with {endpoint} failed: {other}"),
    }
}

/// When the handshake failed only because the certificate names another host (its chain
/// is verified first): the first name it is for.
pub(crate) fn other_name_in_certificate(
    error: &(dyn std::error::Error + 'static),
) -> Option<String> {
    match find_rustls_error(error)? {
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        }) => presented.first().map(|name| plain_name(name).to_string()),
        _ => None,
    }
}

/// `localhost` from webpki's `DnsName("localhost")`, `10.0.0.1` from `IpAddress(10.0.0.1)`.
fn plain_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .unwrap_or(presented)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_are_shown_plain() {
        assert_eq!(plain_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("DirectoryName"), "DirectoryName");
    }

    #[test]
    fn unreadable_and_wrong_files_are_named() {
        let missing = FileOption {
            name: "sslrootcert",
            path: PathBuf::from("/nonexistent/ca.pem"),
        };
        assert!(!missing.path.is_file());
        let error = load_certificates(&missing).expect_err("missing");
        assert!(
            error.starts_with("cannot read sslrootcert=/nonexistent/ca.pem: "),
            "{error}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let text = dir.path().join("key.pem");
        std::fs::write(&text, "not a key").expect("write");
        let option = FileOption {
            name: "sslkey",
            path: text.clone(),
        };
        let error = load_private_key(&option).expect_err("no key");
        assert!(
            error.contains(&format!("sslkey={}", text.display())),
            "{error}"
        );
        let error = load_certificates(&FileOption {
            name: "ssl-ca",
            path: text,
        })
        .expect_err("no certificate");
        assert!(error.contains("holds no certificate"), "{error}");
    }
}
