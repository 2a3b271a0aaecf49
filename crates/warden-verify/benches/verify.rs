//! The verifier against the raw signature check it is built on: `cargo bench -p warden-verify`.
//! The goal is ≥ 80% of the raw rate (the rest is base64, JSON and claim checks).
#![allow(clippy::unwrap_used, reason = "benchmark")]

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use warden_jose::{Alg, SigningKey};
use warden_verify::{Presented, Requirements, Verifier};

fn bench(c: &mut Criterion) {
    for alg in [Alg::EdDSA, Alg::ES256] {
        let key = SigningKey::generate(alg, "k1").unwrap();
        let now = 1_800_000_000;
        let token = key
            .sign(
                "at+jwt",
                &json!({
                    "iss": "https://warden.example", "sub": "01a2", "client_id": "01a2",
                    "aud": "https://ledger.example", "exp": now + 600, "iat": now, "jti": "t1",
                    "scope": "ledger:read ledger:write",
                }),
            )
            .unwrap();
        let verifier = Verifier::with_jwks(
            "https://warden.example",
            &json!({ "keys": [key.public_jwk()] }),
        );
        let auth = format!("Bearer {token}");
        let presented = Presented {
            authorization: &auth,
            dpop: None,
            method: "GET",
            url: "https://ledger.example/x",
            client_certificate: None,
        };
        let req = Requirements {
            audience: "https://ledger.example",
            scopes: &["ledger:write"],
            environment: None,
        };
        assert!(verifier.verify_now(&presented, &req, now).is_ok());
        c.bench_function(&format!("verify_access_token/{alg}"), |b| {
            b.iter(|| verifier.verify_now(&presented, &req, now).unwrap())
        });
        // The raw signature verification of the same token, nothing else.
        let (input, sig) = token.rsplit_once('.').unwrap();
        use base64::Engine;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        let vk = key.verifying_key();
        c.bench_function(&format!("raw_signature_verify/{alg}"), |b| {
            b.iter(|| vk.verify(alg, input.as_bytes(), &sig).unwrap())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
