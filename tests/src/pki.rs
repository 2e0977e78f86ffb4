//! Certificates for the TLS tests, made with rcgen: a CA, a server certificate for
//! `localhost` and `127.0.0.1`, a client certificate, and an unrelated CA, as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// The PEM files of a test PKI.
pub struct TestPki {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    /// The server's certificate (localhost, 127.0.0.1) and key.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// A client certificate with subject `CN=alice-ops`, and its key.
    pub client_cert: PathBuf,
    /// The client's key.
    pub client_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca")
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write pem");
    path
}

impl TestPki {
    /// Makes the certificates in `dir`.
    pub fn new(dir: &Path) -> TestPki {
        let authority = ca("ferry test CA");
        let other = ca("some other CA");
        let server_key = KeyPair::generate().expect("server key");
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server_params
            .signed_by(&server_key, &authority)
            .expect("server cert");
        let client_key = KeyPair::generate().expect("client key");
        let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("client");
        client_params
            .distinguished_name
            .push(DnType::CommonName, "alice-ops");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params
            .signed_by(&client_key, &authority)
            .expect("client cert");
        TestPki {
            ca: write(dir, "ca.crt", &authority.pem()),
            other_ca: write(dir, "other-ca.crt", &other.pem()),
            server_cert: write(dir, "server.crt", &server.pem()),
            server_key: write(dir, "server.key", &server_key.serialize_pem()),
            client_cert: write(dir, "client.crt", &client.pem()),
            client_key: write(dir, "client.key", &client_key.serialize_pem()),
        }
    }
}
