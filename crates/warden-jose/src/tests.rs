#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use proptest::prelude::*;
use ring::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaKeyPair};
use serde_json::json;

use super::*;

const NOW: i64 = 1_800_000_000;

/// A compact JWS over any header and claims, signed by `sign`.
fn craft(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn ed_key() -> SigningKey {
    SigningKey::generate(Alg::EdDSA, "k1").unwrap()
}

fn rsa_pair() -> RsaKeyPair {
    RsaKeyPair::from_der(include_bytes!("../testdata/rsa2048.der")).unwrap()
}

fn rsa_jwk(pair: &RsaKeyPair) -> Value {
    let c: signature::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
    json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)})
}

#[test]
fn eddsa_and_es256_round_trip_and_other_keys_fail() {
    for alg in [Alg::EdDSA, Alg::ES256] {
        let key = SigningKey::generate(alg, "kid-1").unwrap();
        let token = key.sign("at+jwt", &json!({"sub": "x"})).unwrap();
        let jws = decode(&token).unwrap();
        assert_eq!(jws.alg, alg);
        assert_eq!(jws.header.kid.as_deref(), Some("kid-1"));
        let jwk = VerifyingKey::from_jwk(&key.public_jwk()).unwrap();
        jwk.verify(&jws).unwrap();
        jws.verify(&key.verifying_key()).unwrap();
        let other = SigningKey::generate(alg, "kid-2").unwrap();
        assert_eq!(
            jws.verify(&other.verifying_key()),
            Err(JoseError::BadSignature)
        );
        // A key survives its PKCS#8 round trip.
        let again = SigningKey::from_pkcs8(alg, "kid-1", key.pkcs8()).unwrap();
        assert_eq!(again.public_jwk(), key.public_jwk());
    }
}

#[test]
fn rs256_and_ps256_verify_with_a_registered_rsa_key() {
    let pair = rsa_pair();
    let jwk = VerifyingKey::from_jwk(&rsa_jwk(&pair)).unwrap();
    let rng = SystemRandom::new();
    for (alg, pad) in [
        ("RS256", &RSA_PKCS1_SHA256 as &dyn signature::RsaEncoding),
        ("PS256", &RSA_PSS_SHA256),
    ] {
        let token = craft(&json!({"alg": alg}), &json!({"a": 1}), |m| {
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(pad, &rng, m, &mut sig).unwrap();
            sig
        });
        jwk.verify(&decode(&token).unwrap()).unwrap();
    }
    // The same signature under the other padding's name fails.
    let token = craft(&json!({"alg": "RS256"}), &json!({"a": 1}), |m| {
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(&RSA_PSS_SHA256, &rng, m, &mut sig).unwrap();
        sig
    });
    assert_eq!(
        jwk.verify(&decode(&token).unwrap()),
        Err(JoseError::BadSignature)
    );
}

#[test]
fn alg_none_and_hmac_are_refused_before_any_key_is_used() {
    let none = craft(&json!({"alg": "none"}), &json!({"sub": "x"}), |_| vec![1]);
    assert_eq!(
        decode(&none).unwrap_err(),
        JoseError::AlgNotAllowed("none".into())
    );
    // Unsigned form: empty third part.
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#)
    );
    assert_eq!(decode(&unsigned).unwrap_err(), JoseError::Malformed);
    // Algorithm confusion: HS256 keyed with the public key's JWK text.
    let key = ed_key();
    let public = key.public_jwk().to_string();
    let hs = craft(&json!({"alg": "HS256"}), &json!({"sub": "x"}), |m| {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, public.as_bytes());
        ring::hmac::sign(&k, m).as_ref().to_vec()
    });
    assert_eq!(
        decode(&hs).unwrap_err(),
        JoseError::AlgNotAllowed("HS256".into())
    );
}

#[test]
fn the_algorithm_must_fit_the_key_and_its_jwk_alg() {
    let key = ed_key();
    // An EdDSA signature presented as ES256.
    let token = craft(&json!({"alg": "ES256"}), &json!({}), |m| {
        key.sign_bytes(m).unwrap()
    });
    assert_eq!(
        decode(&token).unwrap().verify(&key.verifying_key()),
        Err(JoseError::KeyMismatch)
    );
    // A JWK that names RS256 cannot verify EdDSA even with the right key bytes.
    let mut jwk = key.public_jwk();
    jwk["alg"] = json!("RS256");
    let good = key.sign("x", &json!({})).unwrap();
    assert_eq!(
        VerifyingKey::from_jwk(&jwk)
            .unwrap()
            .verify(&decode(&good).unwrap()),
        Err(JoseError::KeyMismatch)
    );
}

#[test]
fn crit_sizes_and_shapes_are_checked() {
    let key = ed_key();
    let crit = craft(&json!({"alg": "EdDSA", "crit": ["exp"]}), &json!({}), |m| {
        key.sign_bytes(m).unwrap()
    });
    assert_eq!(decode(&crit).unwrap_err(), JoseError::Crit);
    assert_eq!(decode("a.b").unwrap_err(), JoseError::Malformed);
    assert_eq!(decode("a.b.c.d").unwrap_err(), JoseError::Malformed);
    assert_eq!(decode("!!.b.c").unwrap_err(), JoseError::Base64("header"));
    assert_eq!(
        decode(&"a".repeat(MAX_JWS_LEN + 1)).unwrap_err(),
        JoseError::TooLarge
    );
    let array_payload = craft(&json!({"alg": "EdDSA"}), &json!([1, 2]), |m| {
        key.sign_bytes(m).unwrap()
    });
    assert_eq!(
        decode(&array_payload).unwrap_err(),
        JoseError::Json("payload")
    );
    // Deeply nested JSON is an error, not a stack overflow.
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let nested = format!(
        "{}.{}.AA",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA"}"#),
        URL_SAFE_NO_PAD.encode(format!(r#"{{"a":{deep}}}"#))
    );
    assert_eq!(decode(&nested).unwrap_err(), JoseError::Json("payload"));
}

fn dpop_request(url: &str) -> DpopRequest<'_> {
    DpopRequest {
        method: "POST",
        url,
        now: NOW,
        max_age_secs: 60,
        leeway_secs: 5,
        access_token: None,
        nonce: None,
    }
}

fn proof(key: &SigningKey, header_extra: Value, claims: Value) -> String {
    let mut header = json!({"alg": key.alg().as_str(), "typ": "dpop+jwt", "jwk": key.public_jwk()});
    if let (Some(h), Some(extra)) = (header.as_object_mut(), header_extra.as_object()) {
        for (k, v) in extra {
            h.insert(k.clone(), v.clone());
        }
    }
    craft(&header, &claims, |m| key.sign_bytes(m).unwrap())
}

#[test]
fn a_valid_dpop_proof_yields_the_key_thumbprint() {
    let key = SigningKey::generate(Alg::ES256, "d").unwrap();
    let claims = json!({"htm": "POST", "htu": "https://warden.example/oauth2/token", "iat": NOW, "jti": "j1"});
    let p = proof(&key, json!({}), claims);
    let got = verify_dpop(
        &p,
        &dpop_request("https://Warden.example:443/oauth2/token?x=1"),
    )
    .unwrap();
    let thumb = VerifyingKey::from_jwk(&key.public_jwk())
        .unwrap()
        .thumbprint;
    assert_eq!(got.jkt, thumb);
    assert_eq!(got.jti, "j1");
}

#[test]
fn dpop_proofs_failing_one_check_each_are_refused() {
    let key = ed_key();
    let url = "https://warden.example/oauth2/token";
    let base = json!({"htm": "POST", "htu": url, "iat": NOW, "jti": "j1"});
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let req = dpop_request(url);
    let check = |p: String| verify_dpop(&p, &req).unwrap_err();
    assert_eq!(
        check(proof(&key, json!({}), with("htm", json!("GET")))),
        JoseError::Htm
    );
    assert_eq!(
        check(proof(
            &key,
            json!({}),
            with("htu", json!("https://evil.example/oauth2/token"))
        )),
        JoseError::Htu
    );
    assert_eq!(
        check(proof(&key, json!({}), with("iat", json!(NOW - 61)))),
        JoseError::Iat
    );
    assert_eq!(
        check(proof(&key, json!({}), with("iat", json!(NOW + 6)))),
        JoseError::Iat
    );
    let mut no_jti = base.clone();
    no_jti.as_object_mut().unwrap().remove("jti");
    assert_eq!(
        check(proof(&key, json!({}), no_jti)),
        JoseError::Claim("jti")
    );
    assert_eq!(
        check(proof(&key, json!({"typ": "JWT"}), base.clone())),
        JoseError::Typ("JWT".into())
    );
    // Private key material in the header's jwk.
    let mut private = key.public_jwk();
    private["d"] = json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A");
    assert_eq!(
        check(proof(&key, json!({"jwk": private}), base.clone())),
        JoseError::Jwk(JwkError::PrivateMaterial("d"))
    );
    // A jwk that is not the signer's.
    let other = ed_key();
    assert_eq!(
        check(proof(
            &key,
            json!({"jwk": other.public_jwk()}),
            base.clone()
        )),
        JoseError::BadSignature
    );
    // Bound to an access token: `ath` must match it.
    let bound = DpopRequest {
        access_token: Some("token-a"),
        ..req
    };
    let ath = sha256_b64(b"token-a");
    assert!(verify_dpop(&proof(&key, json!({}), with("ath", json!(ath))), &bound).is_ok());
    assert_eq!(
        verify_dpop(
            &proof(&key, json!({}), with("ath", json!(sha256_b64(b"token-b")))),
            &bound
        )
        .unwrap_err(),
        JoseError::Ath
    );
    // A required nonce.
    let nonced = DpopRequest {
        nonce: Some("n-1"),
        ..req
    };
    assert_eq!(
        verify_dpop(&proof(&key, json!({}), base.clone()), &nonced).unwrap_err(),
        JoseError::Nonce
    );
    assert!(
        verify_dpop(
            &proof(&key, json!({}), with("nonce", json!("n-1"))),
            &nonced
        )
        .is_ok()
    );
}

#[test]
fn urls_normalise_scheme_host_and_default_port_only() {
    assert_eq!(
        normalize_url("HTTPS://Example.COM:443/a/B?q#f").as_deref(),
        Some("https://example.com/a/B")
    );
    assert_eq!(
        normalize_url("http://h:8080").as_deref(),
        Some("http://h:8080/")
    );
    assert_eq!(normalize_url("ftp://h/x"), None);
    assert_eq!(normalize_url("https://user@h/x"), None);
    assert_eq!(normalize_url("/relative"), None);
}

fn assertion_rules<'a>(aud: &'a [&'a str]) -> AssertionRules<'a> {
    AssertionRules {
        client_id: "client-1",
        audiences: aud,
        now: NOW,
        max_lifetime_secs: 300,
        leeway_secs: 5,
    }
}

#[test]
fn client_assertion_claims_are_checked_one_by_one() {
    let key = ed_key();
    let aud = [
        "https://warden.example/oauth2/token",
        "https://warden.example",
    ];
    let rules = assertion_rules(&aud);
    let base =
        json!({"iss": "client-1", "sub": "client-1", "aud": aud[0], "exp": NOW + 60, "jti": "a1"});
    let run = |c: Value| check_assertion(&decode(&key.sign("JWT", &c).unwrap()).unwrap(), &rules);
    assert_eq!(
        run(base.clone()).unwrap(),
        AssertionClaims {
            jti: "a1".into(),
            exp: NOW + 60
        }
    );
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    assert!(run(with("aud", json!(["other", "https://warden.example/"]))).is_ok());
    assert_eq!(
        run(with("iss", json!("client-2"))).unwrap_err(),
        JoseError::Issuer
    );
    assert_eq!(
        run(with("sub", json!("client-2"))).unwrap_err(),
        JoseError::Claim("sub")
    );
    assert_eq!(
        run(with("aud", json!("https://elsewhere.example"))).unwrap_err(),
        JoseError::Audience
    );
    assert_eq!(
        run(with("exp", json!(NOW - 10))).unwrap_err(),
        JoseError::Expired
    );
    assert_eq!(
        run(with("exp", json!(NOW + 3600))).unwrap_err(),
        JoseError::TooLong
    );
    assert_eq!(
        run(with("nbf", json!(NOW + 60))).unwrap_err(),
        JoseError::NotYetValid
    );
    assert_eq!(
        run(with("iat", json!(NOW + 60))).unwrap_err(),
        JoseError::Iat
    );
    assert_eq!(
        run(with("exp", json!("soon"))).unwrap_err(),
        JoseError::Claim("exp")
    );
    let mut no_jti = base.clone();
    no_jti.as_object_mut().unwrap().remove("jti");
    assert_eq!(run(no_jti).unwrap_err(), JoseError::Claim("jti"));
}

#[test]
fn access_token_claims_and_binding_are_read() {
    let key = ed_key();
    let claims = json!({
        "iss": "https://warden.example", "sub": "id-1", "client_id": "id-1",
        "aud": ["https://api.example"], "scope": "ledger:read ledger:write",
        "exp": NOW + 600, "iat": NOW, "jti": "t1", "cnf": {"jkt": "abc"}
    });
    let rules = AccessTokenRules {
        issuer: "https://warden.example",
        audience: Some("https://api.example"),
        now: NOW,
        leeway_secs: 5,
    };
    let at = check_access_token(
        &decode(&key.sign("at+jwt", &claims).unwrap()).unwrap(),
        &rules,
    )
    .unwrap();
    assert_eq!(at.scope, vec!["ledger:read", "ledger:write"]);
    assert_eq!(at.jkt.as_deref(), Some("abc"));
    // An ID token or any other JWT type is not an access token.
    let wrong_typ = decode(&key.sign("JWT", &claims).unwrap()).unwrap();
    assert!(matches!(
        check_access_token(&wrong_typ, &rules),
        Err(JoseError::Typ(_))
    ));
    let other_aud = AccessTokenRules {
        audience: Some("https://other.example"),
        ..rules
    };
    let jws = decode(&key.sign("application/at+jwt", &claims).unwrap()).unwrap();
    assert_eq!(
        check_access_token(&jws, &other_aud).unwrap_err(),
        JoseError::Audience
    );
    let later = AccessTokenRules {
        now: NOW + 700,
        ..rules
    };
    assert_eq!(
        check_access_token(&jws, &later).unwrap_err(),
        JoseError::Expired
    );
    let other_iss = AccessTokenRules {
        issuer: "https://evil.example",
        ..rules
    };
    assert_eq!(
        check_access_token(&jws, &other_iss).unwrap_err(),
        JoseError::Issuer
    );
}

#[test]
fn client_keys_sign_assertions_and_proofs_the_server_accepts() {
    let (key, private) = ClientKey::generate_ed25519().unwrap();
    let again = ClientKey::from_private_jwk(&serde_json::from_str(&private).unwrap()).unwrap();
    assert_eq!(again.public_jwk(), key.public_jwk());
    assert!(
        key.public_jwk().get("d").is_none(),
        "the public half has no private member"
    );
    let a = key
        .client_assertion(
            "client-1",
            "https://warden.example/oauth2/token",
            NOW,
            60,
            "j",
        )
        .unwrap();
    let jws = decode(&a).unwrap();
    VerifyingKey::from_jwk(key.public_jwk())
        .unwrap()
        .verify(&jws)
        .unwrap();
    let aud = ["https://warden.example/oauth2/token"];
    assert!(check_assertion(&jws, &assertion_rules(&aud)).is_ok());
    let p = key
        .dpop_proof(
            "POST",
            "https://warden.example/oauth2/token",
            NOW,
            "p1",
            None,
        )
        .unwrap();
    assert!(verify_dpop(&p, &dpop_request("https://warden.example/oauth2/token")).is_ok());
    // A P-256 private JWK loads too (a key made by the server's own generator, exported by hand).
    let ec = serde_json::json!({"kty":"EC","crv":"P-256",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        "d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"});
    let eck = ClientKey::from_private_jwk(&ec).unwrap();
    assert_eq!(eck.alg(), Alg::ES256);
    let p = eck
        .dpop_proof(
            "POST",
            "https://warden.example/oauth2/token",
            NOW,
            "p2",
            None,
        )
        .unwrap();
    assert!(verify_dpop(&p, &dpop_request("https://warden.example/oauth2/token")).is_ok());
    // A d that does not belong to x is refused.
    let mut wrong = serde_json::from_str::<Value>(&private).unwrap();
    wrong["x"] = VerifyingKey::from_jwk(&ed_key().public_jwk())
        .map(|_| ed_key().public_jwk()["x"].clone())
        .unwrap();
    assert!(ClientKey::from_private_jwk(&wrong).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any string: an error or a JWS, never a panic.
    #[test]
    fn decode_never_panics(s in "\\PC{0,400}") {
        let _ = decode(&s);
        let _ = verify_dpop(&s, &dpop_request("https://w.example/t"));
    }

    /// Well-formed base64url parts carrying arbitrary bytes or JSON-ish text.
    #[test]
    fn decode_of_arbitrary_parts_never_panics(
        h in proptest::collection::vec(any::<u8>(), 0..300),
        p in "[\\[\\]{}\":,a-z0-9 ]{0,300}",
        s in proptest::collection::vec(any::<u8>(), 0..100),
        header_json in proptest::option::of("\\{\"alg\":\"(EdDSA|ES256|RS256|PS256|none)\"(,\"jwk\":\\{[a-z\":,]{0,60}\\})?\\}"),
    ) {
        let header = header_json.map(String::into_bytes).unwrap_or(h);
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(&header),
            URL_SAFE_NO_PAD.encode(p.as_bytes()),
            URL_SAFE_NO_PAD.encode(&s)
        );
        if let Ok(jws) = decode(&token) {
            let _ = jws.verify(&ed_key().verifying_key());
            let _ = check_assertion(&jws, &assertion_rules(&["a"]));
            let _ = check_access_token(&jws, &AccessTokenRules { issuer: "a", audience: None, now: NOW, leeway_secs: 0 });
        }
        let _ = verify_dpop(&token, &dpop_request("https://w.example/t"));
    }
}
