//! TLS to the database: `sslmode` in the URL chooses it, the certificate is verified against the
//! system roots plus `PgOptions::ca_file`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::{IpAddr, Ipv4Addr};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use warden_core::StoreError;
use warden_core::ports::Store;
use warden_core::registry::CHECKPOINT_LABEL;
use warden_crypto::ServerKey;
use warden_store_conformance::pg::PgServer;
use warden_store_postgres::{PgOptions, PgStore};

/// A CA, and a certificate it signed for 127.0.0.1: (CA PEM, certificate PEM, key PEM).
fn issue() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "warden test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

fn open(url: &str, ca: Option<&std::path::Path>) -> Result<PgStore, StoreError> {
    let options = PgOptions {
        ca_file: ca.map(std::path::Path::to_path_buf),
        ..PgOptions::default()
    };
    PgStore::open(url, ServerKey::generate().hasher(CHECKPOINT_LABEL), options)
}

#[test]
fn the_store_speaks_tls_to_the_database_and_verifies_its_certificate() {
    let (ca, cert, key) = issue();
    let server = PgServer::start_tls(&cert, &key);
    let url = server.create_database_tls();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();

    // The server's CA trusted: the store opens (migrations ran over TLS) and serves.
    let store = open(&format!("{url}?sslmode=require"), Some(&ca_file)).unwrap();
    store.ready().unwrap();
    store.close();

    // A certificate from an unknown CA is refused, with a clear reason.
    let (other_ca, _, _) = issue();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, other_ca).unwrap();
    let e = open(&format!("{url}?sslmode=require"), Some(&other)).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // Without TLS the server lets nobody in (hostssl only): TLS was really in use above.
    let e = open(&format!("{url}?sslmode=disable"), Some(&ca_file)).unwrap_err();
    assert!(e.to_string().contains("pg_hba.conf"), "{e}");

    // A CA file that is not PEM is a configuration error, not a silent fallback.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let e = open(&format!("{url}?sslmode=require"), Some(&junk)).unwrap_err();
    assert!(e.to_string().contains("holds no certificate"), "{e}");
}
