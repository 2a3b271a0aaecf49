//! Property: for random chains of delegations (random scopes held, lent and asked; random
//! lifetimes and depth bounds), every delegated token Warden issues carries scopes within
//! every delegation of its chain, the acting agent's and its parent token's, and expires no later
//! than any parent; every exchange that would break that is refused (DESIGN.md §4, invariant 5).

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::Value;
use time::Duration;
use warden_core::Registry;
use warden_core::registry::{ClientAuth, OAuthError, TOKEN_EXCHANGE_GRANT, TokenRequest};
use warden_types::{CreateDelegationRequest, CredentialKind, IssueCredentialRequest};

use crate::{Open, env, identity};

const UNIVERSE: [&str; 5] = ["a:r", "a:w", "b:r", "b:w", "c:r"];

#[derive(Debug, Clone)]
struct Hop {
    /// The agent's granted scopes (indexes into UNIVERSE).
    held: BTreeSet<usize>,
    lent: BTreeSet<usize>,
    asked: Option<BTreeSet<usize>>,
    ttl_secs: u64,
    max_depth: u32,
}

fn hop() -> impl Strategy<Value = Hop> {
    (
        proptest::collection::btree_set(0..UNIVERSE.len(), 1..=UNIVERSE.len()),
        proptest::collection::btree_set(0..UNIVERSE.len(), 1..=UNIVERSE.len()),
        prop_oneof![
            Just(None),
            Just(None),
            proptest::option::of(proptest::collection::btree_set(0..UNIVERSE.len(), 1..=3)),
        ],
        60u64..7200,
        prop_oneof![Just(1u32), 2u32..=4, 2u32..=4, 2u32..=4],
    )
        .prop_map(|(held, lent, asked, ttl_secs, max_depth)| Hop {
            held,
            lent,
            asked,
            ttl_secs,
            max_depth,
        })
}

fn names(set: &BTreeSet<usize>) -> Vec<String> {
    set.iter().map(|i| UNIVERSE[*i].to_owned()).collect()
}

fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let part = token.split('.').nth(1).unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn scopes_of(c: &Value) -> BTreeSet<String> {
    c["scope"]
        .as_str()
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn own_token(reg: &Registry, admin: &warden_core::Actor, name: &str) -> String {
    let c = reg
        .issue_credential(
            admin,
            name,
            IssueCredentialRequest {
                kind: CredentialKind::ClientSecret,
                ttl_seconds: None,
                description: None,
                jwk: None,
            },
        )
        .await
        .unwrap();
    reg.issue_token(TokenRequest {
        grant_type: "client_credentials".into(),
        client: ClientAuth::Secret {
            client_id: c.credential.identity_id.to_string(),
            secret: c.secret.unwrap(),
            basic: true,
        },
        assertion: None,
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
    .unwrap()
    .access_token
}

async fn exchange(
    reg: &Registry,
    subject: &str,
    actor: &str,
    asked: &Option<BTreeSet<usize>>,
) -> Result<String, OAuthError> {
    reg.issue_token(TokenRequest {
        grant_type: TOKEN_EXCHANGE_GRANT.into(),
        client: ClientAuth::None,
        assertion: None,
        subject_token: Some(subject.into()),
        subject_token_type: Some("urn:ietf:params:oauth:token-type:access_token".into()),
        requested_token_type: None,
        actor_token: Some(actor.into()),
        audience: None,
        scope: asked.as_ref().map(|a| names(a).join(" ")),
        resources: vec![],
        dpop: None,
        client_cert: None,
        request_id: "t".into(),
        source: "127.0.0.1".into(),
        user_agent: None,
    })
    .await
    .map(|t| t.access_token)
}

pub async fn delegated_tokens_never_exceed_any_parent(open: Open) {
    let mut runner = TestRunner::deterministic();
    let chains = proptest::collection::vec(hop(), 1..=3);
    let (mut issued, mut refused, mut deep) = (0, 0, 0);
    for case in 0..24 {
        let hops = chains.new_tree(&mut runner).unwrap().current();
        let e = env(open).await;
        e.reg.set_issuer("https://warden.test");
        e.reg.maintain_signing_keys().await.unwrap();
        // The principal: an identity holding everything.
        let mut root = identity("root");
        root.environment = "staging".into();
        root.scopes = UNIVERSE.iter().map(|s| (*s).to_owned()).collect();
        e.reg.create_identity(&e.admin, root).await.unwrap();
        let mut parent = own_token(&e.reg, &e.admin, "staging/root").await;
        let mut parent_name = "staging/root".to_owned();
        // What every hop so far allows, and the earliest end of the chain.
        let mut bound: BTreeSet<String> = UNIVERSE.iter().map(|s| (*s).to_owned()).collect();
        let mut max_depths: Vec<u32> = Vec::new();
        for (n, h) in hops.iter().enumerate() {
            let name = format!("agent-{n}");
            let mut a = identity(&name);
            a.environment = "staging".into();
            a.scopes = names(&h.held);
            e.reg.create_identity(&e.admin, a).await.unwrap();
            // Mostly lend within what the delegator holds (so chains grow); sometimes not.
            let lent: Vec<String> = if n == 0 || case % 4 == 0 {
                names(&h.lent)
            } else {
                let prev: BTreeSet<usize> = hops[n - 1].held.clone();
                let within: BTreeSet<usize> = h.lent.intersection(&prev).copied().collect();
                if within.is_empty() {
                    names(&prev)
                } else {
                    names(&within)
                }
            };
            // A delegator lends only what it holds (the root holds everything; an agent what it
            // was granted).
            let created = e
                .reg
                .create_delegation(
                    &e.admin,
                    CreateDelegationRequest {
                        delegator_identity: Some(parent_name.clone()),
                        delegator_issuer: None,
                        delegator_subject: None,
                        agent: format!("staging/{name}"),
                        scopes: lent.clone(),
                        audience: "https://mcp.test".into(),
                        ttl_secs: h.ttl_secs,
                        max_depth: Some(h.max_depth),
                    },
                )
                .await;
            let held_by_delegator =
                n == 0 || lent.iter().all(|s| names(&hops[n - 1].held).contains(s));
            let Ok(d) = created else {
                assert!(
                    !held_by_delegator,
                    "case {case}: a valid delegation was refused"
                );
                break;
            };
            assert!(
                held_by_delegator,
                "case {case}: lent what the delegator does not hold"
            );
            max_depths.push(h.max_depth);
            let actor = own_token(&e.reg, &e.admin, &format!("staging/{name}")).await;
            let parent_claims = claims(&parent);
            let parent_scopes = scopes_of(&parent_claims);
            let allowed: BTreeSet<String> = lent
                .iter()
                .filter(|s| names(&h.held).contains(s) && parent_scopes.contains(*s))
                .cloned()
                .collect();
            let depth = u32::try_from(n + 1).unwrap();
            let depth_ok = max_depths.iter().all(|m| depth <= *m);
            let asked_ok = h
                .asked
                .as_ref()
                .is_none_or(|a| names(a).iter().all(|s| allowed.contains(s)));
            let result = exchange(&e.reg, &parent, &actor, &h.asked).await;
            match result {
                Ok(token) => {
                    assert!(
                        depth_ok && !allowed.is_empty() && asked_ok,
                        "case {case} hop {n}: issued but should not be"
                    );
                    let c = claims(&token);
                    let got = scopes_of(&c);
                    assert!(!got.is_empty());
                    for s in &got {
                        assert!(
                            allowed.contains(s),
                            "case {case} hop {n}: {s} beyond the intersection"
                        );
                        assert!(
                            bound.contains(s),
                            "case {case} hop {n}: {s} beyond an earlier hop"
                        );
                    }
                    let exp = c["exp"].as_i64().unwrap();
                    assert!(
                        exp <= parent_claims["exp"].as_i64().unwrap(),
                        "outlives its parent"
                    );
                    assert!(
                        exp <= claims(&actor)["exp"].as_i64().unwrap(),
                        "outlives the actor token"
                    );
                    assert!(
                        exp <= d.expires_at.unix_timestamp(),
                        "outlives its delegation"
                    );
                    assert_eq!(c["del"].as_array().unwrap().len(), n + 1);
                    issued += 1;
                    if n > 0 {
                        deep += 1;
                    }
                    bound = got;
                    parent = token;
                    parent_name = format!("staging/{name}");
                }
                Err(err) => {
                    assert!(
                        !(depth_ok && !allowed.is_empty() && asked_ok),
                        "case {case} hop {n}: refused ({err:?}) but every invariant held"
                    );
                    refused += 1;
                    break;
                }
            }
            e.clock.advance(Duration::seconds(1));
        }
    }
    // Not vacuous: the random chains both issue (sub-agents included) and get refused.
    assert!(
        issued > 0 && refused > 0 && deep > 0,
        "issued {issued}, refused {refused}, sub-agent hops {deep}"
    );
}

/// Token checks are cached (`checked_token`); every change a token rests on ends its cached
/// answer: revoking the token, a delegation of its chain or its credential, suspending an agent in
/// the middle of its chain, withdrawing the signing key, and time. Each check first fills the
/// cache (introspecting twice), then changes one thing.
pub async fn cached_token_checks_end_with_what_they_rest_on(open: Open) {
    use warden_core::lifecycle::Transition;
    let e = env(open).await;
    e.reg.set_issuer("https://warden.test");
    e.reg.maintain_signing_keys().await.unwrap();
    for name in ["root", "agent-a", "agent-b"] {
        let mut i = identity(name);
        i.environment = "staging".into();
        i.scopes = vec!["a:r".into()];
        e.reg.create_identity(&e.admin, i).await.unwrap();
    }
    let active = |t: &str| e.reg.introspect(&e.admin, t).unwrap().active;
    let cached = |t: &str| active(t) && active(t);
    let lend = |from: &str, to: &str| CreateDelegationRequest {
        delegator_identity: Some(from.into()),
        delegator_issuer: None,
        delegator_subject: None,
        agent: to.into(),
        scopes: vec!["a:r".into()],
        audience: "https://mcp.test".into(),
        ttl_secs: 3600,
        max_depth: Some(2),
    };
    e.reg
        .create_delegation(&e.admin, lend("staging/root", "staging/agent-a"))
        .await
        .unwrap();
    let a_to_b = e
        .reg
        .create_delegation(&e.admin, lend("staging/agent-a", "staging/agent-b"))
        .await
        .unwrap();

    // Revoking the token itself (RFC 7009).
    let t = own_token(&e.reg, &e.admin, "staging/root").await;
    assert!(cached(&t));
    e.reg.revoke_access_token(&e.admin, &t).await.unwrap();
    assert!(!active(&t), "a revoked token stayed active from the cache");

    // Revoking the second delegation of a two-hop chain.
    let p = own_token(&e.reg, &e.admin, "staging/root").await;
    let a = own_token(&e.reg, &e.admin, "staging/agent-a").await;
    let b = own_token(&e.reg, &e.admin, "staging/agent-b").await;
    let d1 = exchange(&e.reg, &p, &a, &None).await.unwrap();
    let d2 = exchange(&e.reg, &d1, &b, &None).await.unwrap();
    assert!(cached(&d1) && cached(&d2));
    e.reg.revoke_delegation(&e.admin, a_to_b.id).await.unwrap();
    assert!(
        !active(&d2),
        "a token of a revoked delegation stayed active"
    );
    assert!(active(&d1), "the first hop does not rest on the second");
    assert!(
        exchange(&e.reg, &d1, &b, &None).await.is_err(),
        "exchanged on a revoked delegation"
    );

    // Suspending the agent in the middle of a chain.
    e.reg
        .create_delegation(&e.admin, lend("staging/agent-a", "staging/agent-b"))
        .await
        .unwrap();
    let d2 = exchange(&e.reg, &d1, &b, &None).await.unwrap();
    assert!(cached(&d2));
    e.reg
        .transition(
            &e.admin,
            "staging/agent-a",
            Transition::Suspend,
            Some("incident".into()),
        )
        .await
        .unwrap();
    assert!(
        !active(&d2),
        "a chain through a suspended agent stayed active"
    );
    assert!(!active(&d1));
    assert!(
        exchange(&e.reg, &d1, &b, &None).await.is_err(),
        "exchanged through a suspended agent"
    );

    // Revoking the credential a token was obtained with.
    let c = claims(&b);
    let cid = uuid::Uuid::parse_str(c["cid"].as_str().unwrap()).unwrap();
    assert!(cached(&b));
    e.reg.revoke_credential(&e.admin, cid, None).await.unwrap();
    assert!(!active(&b), "a token of a revoked credential stayed active");

    // Withdrawing the signing key (a compromised key).
    let r = own_token(&e.reg, &e.admin, "staging/root").await;
    assert!(cached(&r));
    e.reg.rotate_signing_key(&e.admin, true).await.unwrap();
    assert!(!active(&r), "a token of a withdrawn key stayed active");

    // Time.
    let r = own_token(&e.reg, &e.admin, "staging/root").await;
    assert!(cached(&r));
    e.clock.advance(Duration::minutes(11));
    assert!(!active(&r), "an expired token stayed active from the cache");
}
