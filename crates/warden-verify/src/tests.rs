#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use serde_json::json;
use warden_jose::{Alg, ClientKey, SigningKey};

use super::*;

const ISS: &str = "https://warden.example";
const AUD: &str = "https://ledger.example";
const URL: &str = "https://ledger.example/invoices";
const NOW: i64 = 1_800_000_000;

struct Fixture {
    server: SigningKey,
    client: ClientKey,
    verifier: Verifier,
}

fn fixture() -> Fixture {
    let server = SigningKey::generate(Alg::EdDSA, "k1").unwrap();
    let verifier = Verifier::with_jwks(ISS, &json!({ "keys": [server.public_jwk()] }));
    Fixture {
        server,
        client: ClientKey::generate_ed25519().unwrap().0,
        verifier,
    }
}

fn jkt(k: &ClientKey) -> String {
    VerifyingKey::from_jwk(k.public_jwk()).unwrap().thumbprint
}

fn mint(f: &Fixture, extra: Value) -> String {
    let mut claims = json!({
        "iss": ISS, "sub": "id-1", "client_id": "id-1", "aud": AUD, "exp": NOW + 600,
        "iat": NOW, "jti": "t1", "scope": "ledger:read ledger:write",
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    f.server.sign("at+jwt", &claims).unwrap()
}

const REQ: Requirements<'static> = Requirements {
    audience: AUD,
    scopes: &["ledger:write"],
    environment: None,
};

fn bearer(auth: &str) -> Presented<'_> {
    Presented {
        authorization: auth,
        dpop: None,
        method: "POST",
        url: URL,
        client_certificate: None,
    }
}

#[test]
fn a_bearer_token_is_checked_for_signature_audience_scope_and_expiry() {
    let f = fixture();
    let t = mint(&f, json!({}));
    let auth = format!("Bearer {t}");
    let at = f.verifier.verify_now(&bearer(&auth), &REQ, NOW).unwrap();
    assert_eq!(at.sub, "id-1");
    let other_aud = Requirements {
        audience: "https://other.example",
        scopes: &[],
        environment: None,
    };
    assert_eq!(
        f.verifier.verify_now(&bearer(&auth), &other_aud, NOW),
        Err(VerifyError::Token(JoseError::Audience))
    );
    let admin = Requirements {
        audience: AUD,
        scopes: &["ledger:admin"],
        environment: None,
    };
    let e = f
        .verifier
        .verify_now(&bearer(&auth), &admin, NOW)
        .unwrap_err();
    assert_eq!(e.code(), "insufficient_scope");
    assert_eq!(
        // Expired: past `exp` plus the 5 s clock leeway.
        f.verifier.verify_now(&bearer(&auth), &REQ, NOW + 606),
        Err(VerifyError::Token(JoseError::Expired))
    );
    // Signed by a key the issuer does not publish.
    let rogue = SigningKey::generate(Alg::EdDSA, "k1").unwrap();
    let forged = rogue.sign("at+jwt", &json!({"iss": ISS})).unwrap();
    let auth = format!("Bearer {forged}");
    assert_eq!(
        f.verifier.verify_now(&bearer(&auth), &REQ, NOW),
        Err(VerifyError::Token(JoseError::BadSignature))
    );
    let unknown = SigningKey::generate(Alg::EdDSA, "k9").unwrap();
    let auth = format!("Bearer {}", unknown.sign("at+jwt", &json!({})).unwrap());
    assert_eq!(
        f.verifier.verify_now(&bearer(&auth), &REQ, NOW),
        Err(VerifyError::UnknownKey)
    );
    assert_eq!(
        f.verifier.verify_now(&bearer("Basic abc"), &REQ, NOW),
        Err(VerifyError::NoToken)
    );
}

#[test]
fn a_service_can_require_the_environment_of_the_tokens_identity() {
    let f = fixture();
    let staging = mint(&f, json!({ "env": "staging" }));
    let auth = format!("Bearer {staging}");
    let prod_only = Requirements {
        environment: Some("prod"),
        ..REQ
    };
    assert_eq!(
        f.verifier.verify_now(&bearer(&auth), &prod_only, NOW),
        Err(VerifyError::Environment("prod".into()))
    );
    let prod = mint(&f, json!({ "env": "prod" }));
    let auth = format!("Bearer {prod}");
    assert!(
        f.verifier
            .verify_now(&bearer(&auth), &prod_only, NOW)
            .is_ok()
    );
}

#[test]
fn a_dpop_bound_token_needs_a_fresh_proof_from_its_key() {
    let f = fixture();
    let t = mint(&f, json!({ "cnf": { "jkt": jkt(&f.client) } }));
    let auth = format!("DPoP {t}");
    let proof = |k: &ClientKey, jti: &str, ath: Option<&str>, url: &str| {
        k.dpop_proof("POST", url, NOW, jti, ath).unwrap()
    };
    fn with<'a>(auth: &'a str, p: &'a str) -> Presented<'a> {
        Presented {
            authorization: auth,
            dpop: Some(p),
            method: "POST",
            url: URL,
            client_certificate: None,
        }
    }
    let p1 = proof(&f.client, "p1", Some(&t), URL);
    f.verifier.verify_now(&with(&auth, &p1), &REQ, NOW).unwrap();
    assert_eq!(
        f.verifier.verify_now(&with(&auth, &p1), &REQ, NOW),
        Err(VerifyError::DpopReplay)
    );
    // The stolen token with the thief's own key.
    let thief = ClientKey::generate_ed25519().unwrap().0;
    let p = proof(&thief, "p2", Some(&t), URL);
    assert_eq!(
        f.verifier.verify_now(&with(&auth, &p), &REQ, NOW),
        Err(VerifyError::DpopKeyMismatch)
    );
    // A proof made for another token, another URL, or none at all.
    let p = proof(&f.client, "p3", Some("another-token"), URL);
    assert_eq!(
        f.verifier.verify_now(&with(&auth, &p), &REQ, NOW),
        Err(VerifyError::DpopProof(JoseError::Ath))
    );
    let p = proof(&f.client, "p4", Some(&t), "https://ledger.example/other");
    assert_eq!(
        f.verifier.verify_now(&with(&auth, &p), &REQ, NOW),
        Err(VerifyError::DpopProof(JoseError::Htu))
    );
    let none = Presented {
        dpop: None,
        ..with(&auth, "")
    };
    assert_eq!(
        f.verifier.verify_now(&none, &REQ, NOW),
        Err(VerifyError::DpopRequired)
    );
    // Downgrade: the bound token sent as a bearer token.
    let auth_bearer = format!("Bearer {t}");
    assert_eq!(
        f.verifier.verify_now(&bearer(&auth_bearer), &REQ, NOW),
        Err(VerifyError::DpopRequired)
    );
    // And an unbound token may not pretend to be DPoP-bound.
    let plain = mint(&f, json!({}));
    let auth_plain = format!("DPoP {plain}");
    let p = proof(&f.client, "p5", Some(&plain), URL);
    let sent = Presented {
        authorization: &auth_plain,
        dpop: Some(&p),
        ..bearer("")
    };
    assert_eq!(
        f.verifier.verify_now(&sent, &REQ, NOW),
        Err(VerifyError::NotDpopBound)
    );
}

#[test]
fn proof_ids_are_remembered_per_key() {
    // Another client choosing the same `jti` does not use up this client's proof, nor the reverse.
    let f = fixture();
    let other = ClientKey::generate_ed25519().unwrap().0;
    for k in [&f.client, &other] {
        let t = mint(&f, json!({ "cnf": { "jkt": jkt(k) } }));
        let auth = format!("DPoP {t}");
        let p = k
            .dpop_proof("POST", URL, NOW, "same-jti", Some(&t))
            .unwrap();
        let sent = Presented {
            authorization: &auth,
            dpop: Some(&p),
            ..bearer("")
        };
        assert!(f.verifier.verify_now(&sent, &REQ, NOW).is_ok());
        assert_eq!(
            f.verifier.verify_now(&sent, &REQ, NOW),
            Err(VerifyError::DpopReplay)
        );
    }
}

#[test]
fn a_certificate_bound_token_needs_the_same_certificate() {
    let f = fixture();
    let cert = b"a DER certificate".as_slice();
    let t = mint(&f, json!({ "cnf": { "x5t#S256": sha256_b64(cert) } }));
    let auth = format!("Bearer {t}");
    let with = |c: Option<&'static [u8]>| Presented {
        client_certificate: c,
        ..bearer(&auth)
    };
    assert!(f.verifier.verify_now(&with(Some(cert)), &REQ, NOW).is_ok());
    assert_eq!(
        f.verifier
            .verify_now(&with(Some(b"another certificate")), &REQ, NOW),
        Err(VerifyError::CertificateMismatch)
    );
    assert_eq!(
        f.verifier.verify_now(&with(None), &REQ, NOW),
        Err(VerifyError::CertificateMismatch)
    );
}
