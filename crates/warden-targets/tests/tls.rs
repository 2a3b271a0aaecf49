//! The vault reaches databases over TLS and verifies their certificate (a real PostgreSQL server
//! that accepts TLS connections only).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::{IpAddr, Ipv4Addr};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use warden_core::ports::{PgLogin, PgTls, VaultTargets};
use warden_store_conformance::pg::PgServer;
use warden_targets::Targets;

/// A CA and a certificate it signed for 127.0.0.1: (CA PEM, certificate PEM, key PEM).
fn issue() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "vault test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

fn login(server: &PgServer, tls: PgTls) -> PgLogin {
    PgLogin {
        host: "127.0.0.1".into(),
        port: server.port,
        dbname: "postgres".into(),
        username: "warden".into(),
        password: zeroize::Zeroizing::new(String::new()),
        tls,
    }
}

#[tokio::test]
async fn databases_are_reached_over_verified_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (ca, cert, key) = issue();
    let server = PgServer::start_tls(&cert, &key);
    let targets = Targets::new(reqwest::Client::new());

    // The right CA: the health check runs over TLS.
    let ok = login(&server, PgTls::VerifyFull { ca_pem: Some(ca) });
    targets.pg_check(&ok, "SELECT 1").await.unwrap();

    // Another CA: refused, naming the certificate.
    let (other, _, _) = issue();
    let wrong = login(
        &server,
        PgTls::VerifyFull {
            ca_pem: Some(other),
        },
    );
    let e = targets.pg_check(&wrong, "SELECT 1").await.unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    // No CA at all (only the system's roots): refused too.
    let none = login(&server, PgTls::VerifyFull { ca_pem: None });
    assert!(targets.pg_check(&none, "SELECT 1").await.is_err());

    // Plain TCP to a server that accepts only TLS: refused by the server.
    let plain = login(&server, PgTls::Disable);
    assert!(targets.pg_check(&plain, "SELECT 1").await.is_err());

    // A CA PEM that holds no certificate is a clear error, not a panic.
    let junk = login(
        &server,
        PgTls::VerifyFull {
            ca_pem: Some(
                "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into(),
            ),
        },
    );
    assert!(targets.pg_check(&junk, "SELECT 1").await.is_err());
}

/// The syslog sink speaks TLS (RFC 5425) to a receiver whose certificate it verifies: the right
/// CA delivers framed messages; another CA, or only the system's roots, is refused.
#[tokio::test]
async fn syslog_over_tls_verifies_the_receiver() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::AsyncReadExt;
    use warden_targets::sinks::SyslogConnection;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (ca, cert, key) = issue();
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let mut received = Vec::new();
        // The refused attempts first (their handshakes fail), then the good one.
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(sock).await else {
                continue;
            };
            // The client closes without close_notify: what was read before that counts.
            let _ = tls.read_to_end(&mut received).await;
            return received;
        }
    });

    let (other, _, _) = issue();
    let e = SyslogConnection::open(&address, true, Some(&other))
        .await
        .err()
        .unwrap();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    assert!(SyslogConnection::open(&address, true, None).await.is_err());

    let mut c = SyslogConnection::open(&address, true, Some(&ca))
        .await
        .unwrap();
    let event = warden_types::AuditEvent {
        seq: 42,
        time: time::OffsetDateTime::now_utc(),
        actor: "system".into(),
        action: "identity.retire".into(),
        target: "identity:x".into(),
        outcome: warden_types::AuditOutcome::Success,
        request_id: "r".into(),
        source: "local".into(),
        details: serde_json::json!({}),
        prev_hash: "0".repeat(64),
        hash: "1".repeat(64),
    };
    c.send(&[&event], "host", "warden").await.unwrap();
    drop(c);
    let got = String::from_utf8(server.await.unwrap()).unwrap();
    let (len, msg) = got.split_once(' ').unwrap();
    assert_eq!(
        len.parse::<usize>().unwrap(),
        msg.len(),
        "one octet-counted frame"
    );
    assert!(msg.starts_with("<110>1 "), "{msg}");
    assert!(msg.contains("seq=\"42\""), "{msg}");
}
