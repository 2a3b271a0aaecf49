//! Four-eyes approval, team isolation, retirement, TTL caps: each check with the case that must fail.

use warden_types::{CredentialKind, ErrorCode, IssueCredentialRequest, UpdateIdentityRequest};

use crate::harness::{Server, stderr};

#[tokio::test(flavor = "multi_thread")]
async fn privileged_create_needs_a_different_admin() {
    let s = Server::start();
    let t = s.admin.clone();
    s.ok(&t, &["team", "create", "platform"]);
    let member = s.operator("bob", "member", &["platform"]);
    let second_admin = s.operator("carol", "admin", &[]);

    // A member may request a privileged identity; it is held, not active.
    let v = s.identity(&member, "deployer", "platform", &["deploy:*", "repo:read"]);
    assert_eq!(v["identity"]["status"], "pending_approval");
    let req = v["change_request"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        v["change_request"]["privileged_scopes"],
        serde_json::json!(["deploy:*"])
    );

    // No credential for a pending identity.
    let issue = s.cli(
        &member,
        &["credential", "issue", "deployer", "--type", "api_key"],
    );
    assert!(
        stderr(&issue).contains("invalid_state"),
        "{}",
        stderr(&issue)
    );

    // The requester cannot decide; a non-admin cannot either.
    let o = s.cli(
        &member,
        &["approval", "approve", &req, "--reason", "looks fine"],
    );
    assert!(stderr(&o).contains("self_approval"), "{}", stderr(&o));
    let other_member = s.operator("dave", "member", &["platform"]);
    let o = s.cli(
        &other_member,
        &["approval", "approve", &req, "--reason", "looks fine"],
    );
    assert!(stderr(&o).contains("forbidden"), "{}", stderr(&o));
    assert_eq!(
        s.json(&t, &["identity", "show", "deployer"])["status"],
        "pending_approval"
    );

    // A reason is required.
    let o = s.cli(
        &second_admin,
        &["approval", "approve", &req, "--reason", " "],
    );
    assert!(stderr(&o).contains("reason"), "{}", stderr(&o));

    let ok = s.json(
        &second_admin,
        &[
            "approval",
            "approve",
            &req,
            "--reason",
            "release train needs it",
        ],
    );
    assert_eq!(ok["decision_reason"], "release train needs it");
    assert_eq!(
        s.json(&t, &["identity", "show", "deployer"])["status"],
        "active"
    );
    let again = s.cli(&t, &["approval", "approve", &req, "--reason", "twice"]);
    assert!(
        stderr(&again).contains("invalid_state"),
        "{}",
        stderr(&again)
    );

    // Denying a held create retires the identity.
    let v = s.identity(&member, "root-bot", "platform", &["admin"]);
    let req = v["change_request"]["id"].as_str().unwrap().to_owned();
    s.ok(
        &second_admin,
        &["approval", "deny", &req, "--reason", "nobody needs admin"],
    );
    assert_eq!(
        s.json(&t, &["identity", "show", "root-bot"])["status"],
        "retired"
    );

    // A member cannot park an identity under another team's parent, nor learn that it exists.
    s.ok(&t, &["team", "create", "other"]);
    let hidden = s.identity(&t, "hidden", "other", &[]);
    let o = s.cli(
        &member,
        &[
            "identity",
            "create",
            "--name",
            "child",
            "--kind",
            "ai_agent",
            "--owner",
            "platform",
            "--purpose",
            "Agent spawned under a hidden parent",
            "--env",
            "prod",
            "--parent",
            hidden["identity"]["id"].as_str().unwrap(),
        ],
    );
    assert!(
        stderr(&o).contains("no identity has this id"),
        "{}",
        stderr(&o)
    );

    // Denying a held create cancels the identity's other pending requests; duplicates are refused.
    let v = s.identity(&member, "twice", "platform", &["ops:*"]);
    let create_req = v["change_request"]["id"].as_str().unwrap().to_owned();
    s.ok(
        &member,
        &["identity", "update", "twice", "--add-scope", "db:*"],
    );
    let dup = s.cli(
        &member,
        &["identity", "update", "twice", "--add-scope", "db:*"],
    );
    assert!(stderr(&dup).contains("already pending"), "{}", stderr(&dup));
    s.ok(
        &second_admin,
        &["approval", "deny", &create_req, "--reason", "not needed"],
    );
    let pending = s.json(&t, &["approval", "list"]);
    assert!(
        pending["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["identity_name"] != "twice"),
        "{pending}"
    );

    // Configured privileged scopes (warden.toml ships billing:refund) are held too; narrowing is not.
    s.identity(&member, "refunder", "platform", &["billing:read"]);
    let v = s.json(
        &member,
        &[
            "identity",
            "update",
            "refunder",
            "--add-scope",
            "billing:refund",
        ],
    );
    assert!(v["change_request"].is_object());
    let v = s.json(
        &member,
        &[
            "identity",
            "update",
            "refunder",
            "--remove-scope",
            "billing:read",
            "--add-scope",
            "billing:view",
        ],
    );
    assert!(v.get("change_request").is_none());
    assert_eq!(v["identity"]["scopes"], serde_json::json!(["billing:view"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn members_touch_only_their_own_teams_identities() {
    let s = Server::start();
    let t = s.admin.clone();
    s.ok(&t, &["team", "create", "team-a"]);
    s.ok(&t, &["team", "create", "team-b"]);
    let a = s.operator("alice", "member", &["team-a"]);
    let auditor = s.operator("audrey", "auditor", &[]);
    s.identity(&t, "b-worker", "team-b", &["x:read"]);
    let (b_cred, b_key) = s.api_key(&t, "b-worker");
    s.identity(&a, "a-worker", "team-a", &["x:read"]);

    let ca = s.client(&a);
    // Not visible: reads and writes on team B's identity are "not found".
    for e in [
        ca.identity("b-worker").await.unwrap_err(),
        ca.list_credentials("b-worker").await.unwrap_err(),
        ca.transition("b-worker", "retire", Some("nope".into()))
            .await
            .unwrap_err(),
        ca.update_identity(
            "b-worker",
            &UpdateIdentityRequest {
                purpose: Some("Hijacked purpose text".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
        ca.issue_credential(
            "b-worker",
            &IssueCredentialRequest {
                kind: CredentialKind::ApiKey,
                ttl_seconds: None,
                description: None,
                jwk: None,
            },
        )
        .await
        .unwrap_err(),
        ca.revoke_credential(b_cred.parse().unwrap(), None)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");
    }
    // Creating into team B is refused and audited.
    let o = s.cli(
        &a,
        &[
            "identity",
            "create",
            "--name",
            "sneaky",
            "--kind",
            "bot",
            "--owner",
            "team-b",
            "--purpose",
            "Should never be created",
            "--env",
            "prod",
        ],
    );
    assert!(stderr(&o).contains("forbidden"), "{}", stderr(&o));
    let listed = ca.list_identities(&Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].name, "a-worker");
    assert!(s.key_valid(&b_key).await, "team B's key is untouched");
    // Members cannot read the audit log or create teams.
    assert_eq!(
        ca.list_audit(&Default::default()).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );

    // Auditors read everything and change nothing.
    let cu = s.client(&auditor);
    assert_eq!(
        cu.list_identities(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let e = cu
        .transition("b-worker", "suspend", Some("x".into()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    assert!(cu.verify_audit().await.unwrap().ok);
    let denials = s.json(&t, &["audit", "list", "--action", "identity.create"]);
    assert!(
        denials["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "denied" && e["actor"] == "operator:alice")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retire_revokes_every_credential_at_once() {
    let s = Server::start();
    let t = s.admin.clone();
    s.ok(&t, &["team", "create", "payments"]);
    s.identity(&t, "worker", "payments", &["ledger:write"]);
    let keys: Vec<String> = (0..3).map(|_| s.api_key(&t, "worker").1).collect();
    let secret = s.json(
        &t,
        &["credential", "issue", "worker", "--type", "client_secret"],
    );
    assert!(secret["secret"].as_str().unwrap().starts_with("wdn_cs_"));
    for k in &keys {
        assert!(s.key_valid(k).await);
        assert_eq!(s.json(k, &["whoami"])["name"], "worker");
    }
    s.ok(
        &t,
        &["identity", "retire", "worker", "--reason", "decommissioned"],
    );
    for k in &keys {
        assert!(!s.key_valid(k).await);
        let o = s.cli(k, &["whoami"]);
        assert!(stderr(&o).contains("unauthenticated"), "{}", stderr(&o));
    }
    let creds = s.json(&t, &["credential", "list", "worker"]);
    assert!(
        creds["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["revoked_at"].is_string())
    );
    // Retired is terminal.
    let o = s.cli(&t, &["identity", "resume", "worker"]);
    assert!(stderr(&o).contains("invalid_state"), "{}", stderr(&o));
    let o = s.cli(&t, &["credential", "issue", "worker", "--type", "api_key"]);
    assert!(stderr(&o).contains("invalid_state"), "{}", stderr(&o));
    // Every authentication attempt is in the audit log, failures included.
    let auth = s.json(
        &t,
        &[
            "audit",
            "list",
            "--action",
            "credential.authenticate",
            "--limit",
            "1000",
        ],
    );
    let items = auth["items"].as_array().unwrap();
    assert!(items.iter().filter(|e| e["outcome"] == "failure").count() >= 3);
    assert!(items.iter().filter(|e| e["outcome"] == "success").count() >= 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_is_capped_and_public_keys_are_checked() {
    let s = Server::start();
    let t = s.admin.clone();
    s.ok(&t, &["team", "create", "payments"]);
    s.identity(&t, "worker", "payments", &[]);
    let o = s.cli(
        &t,
        &[
            "credential",
            "issue",
            "worker",
            "--type",
            "api_key",
            "--ttl",
            "91d",
        ],
    );
    assert!(stderr(&o).contains("ttl_too_long"), "{}", stderr(&o));
    let v = s.json(
        &t,
        &[
            "credential",
            "issue",
            "worker",
            "--type",
            "api_key",
            "--ttl",
            "90d",
        ],
    );
    assert!(v["credential"]["expires_at"].is_string());

    let dir = s.data_dir();
    let public = dir.join("pub.jwk");
    std::fs::write(
        &public,
        r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
    )
    .unwrap();
    let v = s.json(
        &t,
        &[
            "credential",
            "add",
            "worker",
            "--type",
            "public_key",
            "--jwk",
            public.to_str().unwrap(),
        ],
    );
    assert_eq!(
        v["credential"]["thumbprint"],
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
    assert!(v.get("secret").is_none());
    let private = dir.join("priv.jwk");
    std::fs::write(&private, r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#).unwrap();
    let o = s.cli(
        &t,
        &[
            "credential",
            "add",
            "worker",
            "--jwk",
            private.to_str().unwrap(),
        ],
    );
    assert!(stderr(&o).contains("private"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_can_be_disabled_and_their_tokens_rotated() {
    let s = Server::start();
    let t = s.admin.clone();
    s.ok(&t, &["team", "create", "payments"]);
    let bob = s.operator("bob", "member", &["payments"]);
    let carol = s.operator("carol", "admin", &[]);
    assert_eq!(s.json(&bob, &["whoami"])["name"], "bob");

    // Disabling takes effect at once, even with bob's token in the authentication cache.
    s.ok(
        &t,
        &["operator", "disable", "bob", "--reason", "left the company"],
    );
    let o = s.cli(&bob, &["whoami"]);
    assert!(stderr(&o).contains("unauthenticated"), "{}", stderr(&o));
    assert!(s.ok(&t, &["operator", "list"]).contains("disabled"));
    s.ok(&carol, &["operator", "enable", "bob"]);
    assert_eq!(s.json(&bob, &["whoami"])["name"], "bob");

    // bob rotates his own token: the old one stops working, the new one works.
    let rotated = s.json(&bob, &["operator", "rotate-token"]);
    let new_bob = rotated["token"].as_str().unwrap().to_owned();
    assert!(stderr(&s.cli(&bob, &["whoami"])).contains("unauthenticated"));
    assert_eq!(s.json(&new_bob, &["whoami"])["name"], "bob");

    // A member cannot touch other operators; nobody disables themselves.
    let o = s.cli(&new_bob, &["operator", "rotate-token", "carol"]);
    assert!(stderr(&o).contains("forbidden"), "{}", stderr(&o));
    let o = s.cli(
        &new_bob,
        &["operator", "disable", "carol", "--reason", "coup"],
    );
    assert!(stderr(&o).contains("forbidden"), "{}", stderr(&o));
    assert_eq!(s.json(&carol, &["whoami"])["name"], "carol");
    let o = s.cli(&t, &["operator", "disable", "admin", "--reason", "oops"]);
    assert!(stderr(&o).contains("invalid_state"), "{}", stderr(&o));
    let events = s.json(&t, &["audit", "list", "--action", "operator.disable"]);
    let outcomes: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["success", "denied"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_an_admin_lifts_an_admins_suspension() {
    let s = Server::start();
    let t = s.admin.clone();
    s.ok(&t, &["team", "create", "payments"]);
    let bob = s.operator("bob", "member", &["payments"]);
    s.identity(&bob, "worker", "payments", &["ledger:read"]);
    let (_, key) = s.api_key(&bob, "worker");

    s.ok(
        &t,
        &[
            "identity",
            "suspend",
            "worker",
            "--reason",
            "incident 7: key seen on pastebin",
        ],
    );
    assert_eq!(
        s.json(&t, &["identity", "show", "worker"])["suspended_by_admin"],
        true
    );
    let o = s.cli(&bob, &["identity", "resume", "worker"]);
    assert!(stderr(&o).contains("only an admin"), "{}", stderr(&o));
    assert!(!s.key_valid(&key).await, "still suspended");
    s.ok(
        &t,
        &["identity", "resume", "worker", "--reason", "key rotated"],
    );
    assert!(s.key_valid(&key).await);

    // A member's own suspension, the member may lift.
    s.ok(
        &bob,
        &["identity", "suspend", "worker", "--reason", "maintenance"],
    );
    s.ok(&bob, &["identity", "resume", "worker"]);
    assert!(s.key_valid(&key).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_can_lock_a_members_suspension() {
    let s = Server::start();
    let t = s.admin.clone();
    s.ok(&t, &["team", "create", "payments"]);
    let bob = s.operator("bob", "member", &["payments"]);
    s.identity(&bob, "worker", "payments", &[]);
    s.ok(
        &bob,
        &["identity", "suspend", "worker", "--reason", "maintenance"],
    );
    s.ok(
        &t,
        &[
            "identity",
            "suspend",
            "worker",
            "--reason",
            "incident 9: hold until reviewed",
        ],
    );
    let o = s.cli(&bob, &["identity", "resume", "worker"]);
    assert!(stderr(&o).contains("only an admin"), "{}", stderr(&o));
    s.ok(
        &t,
        &["identity", "resume", "worker", "--reason", "reviewed"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_admin_needs_a_second_admin_to_be_enabled() {
    let s = Server::start();
    let t = s.admin.clone();
    // Bootstrap: the only admin's first additional admin is active at once.
    let carol = s.operator("carol", "admin", &[]);
    assert_eq!(s.json(&carol, &["whoami"])["name"], "carol");
    // From now on a new admin starts disabled, and its creator cannot enable it.
    let created = s.json(&t, &["operator", "create", "dave", "--role", "admin"]);
    assert!(created["operator"]["disabled_at"].is_string(), "{created}");
    let dave = created["token"].as_str().unwrap().to_owned();
    assert!(stderr(&s.cli(&dave, &["whoami"])).contains("unauthenticated"));
    let o = s.cli(&t, &["operator", "enable", "dave"]);
    assert!(stderr(&o).contains("self_approval"), "{}", stderr(&o));
    assert!(stderr(&s.cli(&dave, &["whoami"])).contains("unauthenticated"));
    s.ok(
        &carol,
        &[
            "operator",
            "enable",
            "dave",
            "--reason",
            "confirmed with the security team",
        ],
    );
    assert_eq!(s.json(&dave, &["whoami"])["name"], "dave");
    // Members and auditors are not admins: they are active at once.
    let aud = s.operator("audrey", "auditor", &[]);
    assert_eq!(s.json(&aud, &["whoami"])["name"], "audrey");
}
