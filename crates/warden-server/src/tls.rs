//! HTTPS with optional client certificates, for mutual-TLS client authentication and
//! certificate-bound tokens (RFC 8705).
//!
//! The TLS layer asks every client for a certificate but requires none, and accepts any
//! certificate whose owner proves possession of its key in the handshake (that proof is checked
//! here, with the provider's signature algorithms). Whether the certificate *means* anything is
//! decided per request: chained to the configured client CA with a subject alternative name an
//! identity registered (`tls_client_auth`), or carrying a public key an identity registered
//! (`self_signed_tls_client_auth`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceExt;
use warden_core::registry::ClientCert;

use crate::AppState;

/// A TLS setup that failed to load.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// What `warden serve` needs for HTTPS.
pub struct Tls {
    config: Arc<ServerConfig>,
    /// Validates client chains against the configured client CA (`tls_client_auth`).
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("client_ca", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError(format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

impl Tls {
    /// Loads the server's certificate chain and key (PEM) and, optionally, the CA that issues
    /// client certificates.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| TlsError(format!("{}: {e}", key.display())))?;
        let client_ca = match client_ca {
            None => None,
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for c in certs(path)? {
                    roots
                        .add(c)
                        .map_err(|e| TlsError(format!("{}: {e}", path.display())))?;
                }
                Some(
                    WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        Arc::clone(&provider),
                    )
                    .build()
                    .map_err(|e| TlsError(format!("client CA: {e}")))?,
                )
            }
        };
        let verifier = Arc::new(AnyClientCertificate {
            algorithms: provider.signature_verification_algorithms,
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| TlsError(format!("server certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            client_ca,
        })
    }

    /// What a request's handlers learn about the connection's client certificate.
    fn describe(&self, chain: &[CertificateDer<'static>]) -> Option<ClientCert> {
        let (end_entity, intermediates) = chain.split_first()?;
        let chain_valid = self.client_ca.as_ref().is_some_and(|v| {
            v.verify_client_cert(end_entity, intermediates, UnixTime::now())
                .is_ok()
        });
        let (_, parsed) = x509_parser::parse_x509_certificate(end_entity.as_ref()).ok()?;
        let (mut san_uris, mut san_dns) = (Vec::new(), Vec::new());
        if let Ok(Some(ext)) = parsed.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::URI(u) => san_uris.push((*u).to_owned()),
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        san_dns.push((*d).to_owned());
                    }
                    _ => {}
                }
            }
        }
        let key_thumbprint = spki_jwk(parsed.public_key())
            .and_then(|jwk| warden_crypto::jwk::check_public_jwk(&jwk).ok())
            .map(|k| k.thumbprint);
        let not_after =
            time::OffsetDateTime::from_unix_timestamp(parsed.validity().not_after.timestamp()).ok();
        Some(ClientCert {
            x5t_s256: warden_jose::sha256_b64(end_entity.as_ref()),
            key_thumbprint,
            chain_valid,
            san_uris,
            san_dns,
            not_after,
        })
    }
}

/// A certificate's public key as a JWK (Ed25519, P-256, RSA), to compare with registered keys.
fn spki_jwk(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<Value> {
    use base64::Engine;
    use x509_parser::public_key::PublicKey;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let raw = spki.subject_public_key.data.as_ref();
    if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 {
        return Some(json!({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}));
    }
    match spki.parsed().ok()? {
        PublicKey::EC(point) if point.data().len() == 65 => {
            let d = point.data();
            Some(json!({"kty": "EC", "crv": "P-256", "x": b64(&d[1..33]), "y": b64(&d[33..])}))
        }
        PublicKey::RSA(rsa) => {
            let trim = |b: &[u8]| {
                let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
                b[start..].to_vec()
            };
            Some(json!({"kty": "RSA", "n": b64(&trim(rsa.modulus)), "e": b64(&trim(rsa.exponent))}))
        }
        _ => None,
    }
}

/// Asks for a client certificate, requires none, and accepts any whose key signed the
/// handshake; what it is worth is decided per request (see the module docs).
#[derive(Debug)]
struct AnyClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Serves the app over TLS until `shutdown` resolves. Each request carries the peer address
/// and, when the client presented one, its [`ClientCert`].
pub async fn serve_tls(
    listener: TcpListener,
    state: AppState,
    tls: Tls,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = Arc::new(tls);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));
    let app = crate::app(state);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let (acceptor, app, tls) = (acceptor.clone(), app.clone(), Arc::clone(&tls));
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            // A handshake that stalls is dropped (no slowloris on the handshake).
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream));
            let Ok(Ok(stream)) = handshake.await else {
                return;
            };
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| {
                    let owned: Vec<CertificateDer<'static>> =
                        chain.iter().map(|c| c.clone().into_owned()).collect();
                    tls.describe(&owned)
                })
                .map(Arc::new);
            let service =
                tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    if let Some(c) = &cert {
                        req.extensions_mut().insert(Arc::clone(c));
                    }
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await;
        });
    }
}
