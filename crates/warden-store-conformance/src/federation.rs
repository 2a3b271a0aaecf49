//! Federation over the `Store` port with a fake clock and a fake JWKS endpoint: keys refetched on
//! an unknown `kid` (but not more than every 30 s), kept through an issuer outage for 5 minutes,
//! then refused (fail closed).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use time::Duration;
use warden_core::ports::BoxFuture;
use warden_core::registry::federation::Fetcher;
use warden_core::registry::{ClientAuth, JWT_BEARER_GRANT, OAuthError, TokenRequest};
use warden_core::{Clock, Registry};
use warden_jose::{Alg, SigningKey};
use warden_types::{AddIssuerRequest, AddTrustRuleRequest, CreateOperatorRequest, OperatorRole};

use crate::{Open, env, identity};

/// Serves a JWKS (or fails, when `down`), counting fetches.
pub struct FakeJwks {
    pub doc: Mutex<Value>,
    pub down: Mutex<bool>,
    pub fetches: AtomicU32,
}

impl Fetcher for FakeJwks {
    fn get<'a>(&'a self, _url: &'a str) -> BoxFuture<'a, Result<(u16, Vec<u8>), String>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let out = if *self.down.lock().unwrap() {
            Err("connection refused".to_owned())
        } else {
            Ok((200, self.doc.lock().unwrap().to_string().into_bytes()))
        };
        Box::pin(async move { out })
    }
}

const ISS: &str = "https://ci.example";
const AUD: &str = "https://warden.test";

fn token(key: &SigningKey, now: i64) -> String {
    key.sign(
        "JWT",
        &json!({"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "sub": "repo:org/app",
                "repository": "org/app"}),
    )
    .unwrap()
}

async fn exchange(reg: &Registry, subject: String) -> Result<(), OAuthError> {
    reg.issue_token(TokenRequest {
        grant_type: JWT_BEARER_GRANT.into(),
        client: ClientAuth::None,
        assertion: Some(subject),
        subject_token: None,
        subject_token_type: None,
        requested_token_type: None,
        actor_token: None,
        audience: None,
        scope: None,
        resources: vec![],
        dpop: None,
        client_cert: None,
        request_id: "t".into(),
        source: "127.0.0.1".into(),
        user_agent: None,
    })
    .await
    .map(|_| ())
}

pub async fn issuer_keys_are_refetched_for_new_kids_and_kept_only_so_long_without_the_issuer(
    open: Open,
) {
    let e = env(open).await;
    e.reg.set_issuer(AUD);
    e.reg.maintain_signing_keys().await.unwrap();
    let first = SigningKey::generate(Alg::ES256, "key-a").unwrap();
    let second = SigningKey::generate(Alg::ES256, "key-b").unwrap();
    let jwks = Arc::new(FakeJwks {
        doc: Mutex::new(json!({ "keys": [first.public_jwk()] })),
        down: Mutex::new(false),
        fetches: AtomicU32::new(0),
    });
    e.reg.set_fetcher(jwks.clone());
    let mut req = identity("deployer");
    req.environment = "staging".into();
    e.reg.create_identity(&e.admin, req).await.unwrap();
    e.reg
        .add_issuer(
            &e.admin,
            AddIssuerRequest {
                name: "ci".into(),
                issuer: ISS.into(),
                jwks_url: Some("https://ci.example/jwks".into()),
                static_jwks: None,
                audiences: vec![AUD.into()],
                max_token_age_secs: None,
                single_use: false,
            },
        )
        .await
        .unwrap();
    let rule = e
        .reg
        .add_trust_rule(
            &e.admin,
            AddTrustRuleRequest {
                identity: "staging/deployer".into(),
                issuer: "ci".into(),
                condition: r#"repository == "org/app""#.into(),
                max_ttl_secs: None,
            },
        )
        .await
        .unwrap();
    let second_admin = e
        .reg
        .create_operator(
            &e.admin,
            CreateOperatorRequest {
                name: "admin-two".into(),
                role: OperatorRole::Admin,
                teams: vec![],
            },
        )
        .await
        .unwrap();
    let approver = e
        .reg
        .authenticate(&second_admin.token, "t", "test")
        .await
        .unwrap();
    e.reg
        .decide_trust_rule(&approver, rule.id, true, "ok".into())
        .await
        .unwrap();
    let now = |c: &dyn Clock| c.now().unix_timestamp();

    exchange(&e.reg, token(&first, now(&*e.clock)))
        .await
        .unwrap();
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);
    exchange(&e.reg, token(&first, now(&*e.clock)))
        .await
        .unwrap();
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1, "cached");

    // The issuer rotates its key. An unknown kid refetches, but not more than every 30 s.
    *jwks.doc.lock().unwrap() = json!({ "keys": [second.public_jwk()] });
    e.clock.advance(Duration::seconds(10));
    assert!(
        exchange(&e.reg, token(&second, now(&*e.clock)))
            .await
            .is_err()
    );
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        1,
        "no refetch within 30 s"
    );
    e.clock.advance(Duration::seconds(21));
    exchange(&e.reg, token(&second, now(&*e.clock)))
        .await
        .unwrap();
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        2,
        "refetched for the new kid"
    );

    // The issuer goes down: its keys serve for 5 minutes after the last fetch, then nothing.
    *jwks.down.lock().unwrap() = true;
    e.clock.advance(Duration::minutes(4));
    exchange(&e.reg, token(&second, now(&*e.clock)))
        .await
        .unwrap();
    e.clock.advance(Duration::minutes(2));
    let err = exchange(&e.reg, token(&second, now(&*e.clock)))
        .await
        .unwrap_err();
    assert!(matches!(err, OAuthError::InvalidGrant), "{err:?}");
    // Back up: accepted again.
    *jwks.down.lock().unwrap() = false;
    exchange(&e.reg, token(&second, now(&*e.clock)))
        .await
        .unwrap();
}
