//! A throw-away certificate authority and a loopback server certificate.
//!
//! Owns key generation and PEM files for TLS fronts (registry, nginx) and for clients that
//! must trust them (skopeo `--cert-dir`, reqwest). It must not start anything.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::WorkDir;

/// A self-signed CA and a server certificate it signed for `127.0.0.1`, `localhost` and
/// `::1`, all written as PEM files.
///
/// Why: TLS registries and fronts need a certificate the client under test can be told to
/// trust, without touching the machine's trust store.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA certificate (PEM). Trust this.
    pub ca_cert_pem: String,
    /// `ca.crt` path.
    pub ca_cert_path: PathBuf,
    /// A directory holding only `ca.crt`: the form skopeo's `--cert-dir` and Docker's
    /// `certs.d/HOST/` expect.
    pub cert_dir: PathBuf,
    /// The server certificate (PEM), followed by nothing else.
    pub server_cert_pem: String,
    /// `server.crt` path.
    pub server_cert_path: PathBuf,
    /// The server key (PKCS#8 PEM).
    pub server_key_pem: String,
    /// `server.key` path.
    pub server_key_path: PathBuf,
}

impl TestCa {
    /// Generates the CA and server certificate (ECDSA P-256) in `work_dir/ca*/`.
    ///
    /// # Panics
    /// When key generation fails.
    pub fn new(work_dir: &WorkDir) -> TestCa {
        let dir = work_dir.fresh_dir("ca");
        let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("test-support: CA key: {e}"));
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("test-support: CA params: {e}"));
        ca_params.distinguished_name = name("imagewatch test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .unwrap_or_else(|e| panic!("test-support: CA cert: {e}"));

        let server_key = KeyPair::generate().unwrap_or_else(|e| panic!("test-support: server key: {e}"));
        let mut server_params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "::1".to_string(),
        ])
        .unwrap_or_else(|e| panic!("test-support: server params: {e}"));
        server_params.distinguished_name = name("localhost");
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = Issuer::new(ca_params, &ca_key);
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .unwrap_or_else(|e| panic!("test-support: server cert: {e}"));

        let ca_cert_pem = ca_cert.pem();
        let server_cert_pem = server_cert.pem();
        let server_key_pem = server_key.serialize_pem();
        let cert_dir = dir.join("certs.d");
        let ca_cert_path = work_dir.write(&dir.join("ca.crt"), &ca_cert_pem);
        work_dir.write(&cert_dir.join("ca.crt"), &ca_cert_pem);
        let server_cert_path = work_dir.write(&dir.join("server.crt"), &server_cert_pem);
        let server_key_path = work_dir.write(&dir.join("server.key"), &server_key_pem);
        TestCa {
            ca_cert_pem,
            ca_cert_path,
            cert_dir,
            server_cert_pem,
            server_cert_path,
            server_key_pem,
            server_key_path,
        }
    }
}

pub(crate) fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "imagewatch tests");
    dn
}
