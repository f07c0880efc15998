//! Certificates for registry tests that use TLS: a test certificate authority,
//! a server certificate for `127.0.0.1` and `localhost` that it signs, and a
//! client certificate that it signs. Every run generates fresh keys, so no key
//! material is ever checked in.
//!
//! The PEM files live in a temporary directory owned by [`TestCertificates`];
//! clones share that directory, and it is removed when the last clone drops.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, date_time_ymd,
};
use tempfile::TempDir;

/// A test certificate authority with one server and one client certificate.
#[derive(Clone)]
pub struct TestCertificates {
    directory: Arc<TempDir>,
    ca_certificate_pem: String,
    server_certificate_pem: String,
    server_key_pem: String,
    client_certificate_pem: String,
    client_key_pem: String,
}

impl TestCertificates {
    /// Generates a CA, a server certificate with the SANs `IP:127.0.0.1` and
    /// `DNS:localhost`, and a client certificate, and writes them as PEM files.
    pub fn generate() -> TestCertificates {
        let ca_key = KeyPair::generate().expect("generate the test CA key");
        let ca_params = certificate_authority_params("cri-imaged test CA");
        let ca_certificate = ca_params
            .self_signed(&ca_key)
            .expect("self-sign the test CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("generate the server key");
        let server_certificate = leaf_params(
            "cri-imaged test registry",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
        .signed_by(&server_key, &issuer)
        .expect("sign the server certificate");

        let client_key = KeyPair::generate().expect("generate the client key");
        let client_certificate = leaf_params(
            "cri-imaged test client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
        .signed_by(&client_key, &issuer)
        .expect("sign the client certificate");

        let certificates = TestCertificates {
            directory: Arc::new(TempDir::new().expect("create the certificate directory")),
            ca_certificate_pem: ca_certificate.pem(),
            server_certificate_pem: server_certificate.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_certificate_pem: client_certificate.pem(),
            client_key_pem: client_key.serialize_pem(),
        };
        for (path, contents) in [
            (
                certificates.ca_certificate_path(),
                &certificates.ca_certificate_pem,
            ),
            (
                certificates.server_certificate_path(),
                &certificates.server_certificate_pem,
            ),
            (certificates.server_key_path(), &certificates.server_key_pem),
            (
                certificates.client_certificate_path(),
                &certificates.client_certificate_pem,
            ),
            (certificates.client_key_path(), &certificates.client_key_pem),
        ] {
            fs::write(&path, contents)
                .unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
        }
        certificates
    }

    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    pub fn ca_certificate_path(&self) -> PathBuf {
        self.directory().join("ca.pem")
    }

    pub fn server_certificate_path(&self) -> PathBuf {
        self.directory().join("server.pem")
    }

    pub fn server_key_path(&self) -> PathBuf {
        self.directory().join("server-key.pem")
    }

    pub fn client_certificate_path(&self) -> PathBuf {
        self.directory().join("client.pem")
    }

    pub fn client_key_path(&self) -> PathBuf {
        self.directory().join("client-key.pem")
    }

    pub fn ca_certificate_pem(&self) -> &str {
        &self.ca_certificate_pem
    }

    pub fn server_certificate_pem(&self) -> &str {
        &self.server_certificate_pem
    }

    pub fn server_key_pem(&self) -> &str {
        &self.server_key_pem
    }

    pub fn client_certificate_pem(&self) -> &str {
        &self.client_certificate_pem
    }

    pub fn client_key_pem(&self) -> &str {
        &self.client_key_pem
    }

    /// A ureq TLS configuration that trusts only the test CA and, when asked,
    /// presents the client certificate.
    pub fn ureq_tls_config(&self, present_client_certificate: bool) -> ureq::tls::TlsConfig {
        let ca_certificate = ureq::tls::Certificate::from_pem(self.ca_certificate_pem.as_bytes())
            .expect("parse the test CA certificate");
        let mut builder = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca_certificate]));
        if present_client_certificate {
            let client_certificate =
                ureq::tls::Certificate::from_pem(self.client_certificate_pem.as_bytes())
                    .expect("parse the client certificate");
            let client_key = ureq::tls::PrivateKey::from_pem(self.client_key_pem.as_bytes())
                .expect("parse the client key");
            builder = builder.client_cert(Some(ureq::tls::ClientCert::new_with_certs(
                &[client_certificate],
                client_key,
            )));
        }
        builder.build()
    }
}

/// Parameters for a CA certificate. Go's x509 verifier (used by the registry
/// for client certificates and token chains) requires `CA:TRUE` and the
/// `keyCertSign` usage.
pub(super) fn certificate_authority_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    params
}

/// Parameters for a leaf certificate. rustls rejects a server certificate that
/// is itself a CA or that lacks a SAN, so leaves carry SANs and `CA:FALSE`.
pub(super) fn leaf_params(
    common_name: &str,
    subject_alt_names: &[&str],
    extended_key_usage: ExtendedKeyUsagePurpose,
) -> CertificateParams {
    let names: Vec<String> = subject_alt_names.iter().map(ToString::to_string).collect();
    let mut params = CertificateParams::new(names).expect("valid subject alternative names");
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![extended_key_usage];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    params
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "cri-imaged tests");
    name
}

/// A fixed, generous validity window: tests never depend on the clock being
/// close to the certificate dates, and Go parses these years without trouble.
fn set_validity(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2099, 1, 1);
}
