//! Engine unit tests.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::engine::{Limits, Skip, entropy, is_placeholder, skip_reason, validate};
use crate::rules::{Validator, parse};
use crate::{Scanner, fingerprint, redact};

const RULES: &str = r#"
[[rule]]
id = "demo-token"
description = "Demo token"
severity = "high"
keywords = ["dmo_"]
regex = '''(?:^|[^A-Za-z0-9_])(dmo_[A-Za-z0-9]{20})(?:[^A-Za-z0-9_]|$)'''
entropy = 3.0
examples = ["x = dmo_Ab3dE5gH7jK9mN1pQ3sT", "dmo_Zx8Cv7Bn6Mq5Wr4Et3Yu"]
counterexamples = ["dmo_aaaaaaaaaaaaaaaaaaaa", "dmo_short"]

[[rule]]
id = "generic-secret"
description = "Generic secret"
severity = "low"
keywords = ["secret"]
regex = '''(?i)secret\s*=\s*"?([A-Za-z0-9_]{16,})"?'''
entropy = 3.0
examples = ["secret = \"Q9w8E7r6T5y4U3i2O1p0\"", "SECRET=Zm4Xn3Cb2Vq1Wa9Sd8"]
counterexamples = ["secret = \"changeme\"", "secret = \"aaaaaaaaaaaaaaaaaaaaaa\""]
"#;

fn demo() -> Scanner {
    Scanner::new(parse("demo.toml", RULES).unwrap()).unwrap()
}

#[test]
fn lines_columns_and_the_allow_comment() {
    let s = demo();
    let text =
        b"one\n  two dmo_Ab3dE5gH7jK9mN1pQ3sT\nthree dmo_Zx8Cv7Bn6Mq5Wr4Et3Yu # warden:allow\n";
    let hits = s.scan(text);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!((hits[0].line, hits[0].column), (2, 7));
    assert_eq!(
        &text[hits[0].start..hits[0].end],
        b"dmo_Ab3dE5gH7jK9mN1pQ3sT"
    );
}

#[test]
fn a_keyword_anywhere_on_the_line_selects_the_rule_case_insensitively() {
    let s = demo();
    assert_eq!(
        s.scan(b"DMO_ is the prefix: dmo_Ab3dE5gH7jK9mN1pQ3sT")
            .len(),
        1
    );
    assert!(s.scan(b"no keyword here: Ab3dE5gH7jK9mN1pQ3sT").is_empty());
}

#[test]
fn a_specific_rule_wins_over_a_generic_one_on_the_same_text() {
    let s = demo();
    let hits = s.scan(b"secret = dmo_Ab3dE5gH7jK9mN1pQ3sT");
    let ids: Vec<_> = hits.iter().map(|h| s.rules()[h.rule].id.as_str()).collect();
    assert_eq!(ids, vec!["demo-token"]);
}

#[test]
fn rules_check_passes_and_catches_a_broken_rule() {
    assert!(crate::check_rules(&demo()).is_empty());
    let broken = RULES.replace("dmo_Zx8Cv7Bn6Mq5Wr4Et3Yu\"]", "dmo_Zx8Cv\"]");
    let failures = crate::check_rules(&Scanner::new(parse("b.toml", &broken).unwrap()).unwrap());
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].problem.contains("example not found"));
    let loose = RULES.replace("entropy = 3.0\nexamples = [\"x =", "examples = [\"x =");
    let failures = crate::check_rules(&Scanner::new(parse("l.toml", &loose).unwrap()).unwrap());
    assert!(
        failures
            .iter()
            .any(|f| f.problem.contains("counterexample matched")),
        "without its entropy floor the filler matches: {failures:?}"
    );
}

#[test]
fn bad_rule_files_are_refused_with_the_reason() {
    let no_kw = RULES.replacen("keywords = [\"dmo_\"]", "keywords = []", 1);
    assert!(
        parse("x.toml", &no_kw)
            .unwrap_err()
            .to_string()
            .contains("keyword")
    );
    let bad_re = RULES.replacen("[A-Za-z0-9]{20}", "[A-Za-z0-9{20}", 1);
    assert!(
        parse("x.toml", &bad_re)
            .unwrap_err()
            .to_string()
            .contains("regex")
    );
    let unknown = format!("{RULES}\nfoo = 1\n");
    assert!(parse("x.toml", &unknown).is_err());
    let dup = format!(
        "{RULES}{}",
        &RULES[..RULES.find("[[rule]]\nid = \"generic").unwrap()]
    );
    let rules = parse("d.toml", &dup).unwrap();
    assert!(
        Scanner::new(rules)
            .unwrap_err()
            .to_string()
            .contains("duplicate")
    );
}

#[test]
fn entropy_placeholders_and_skips() {
    assert!(entropy(b"aaaaaaaa") < 0.01);
    assert!((entropy(b"abcdefgh") - 3.0).abs() < 1e-9);
    assert!(is_placeholder(b"AKIAIOSFODNN7EXAMPLE"));
    assert!(is_placeholder(b"${API_TOKEN}"));
    assert!(is_placeholder(
        b"Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    ));
    assert!(!is_placeholder(b"Zm4Xn3Cb2Vq1Wa9Sd8"));
    let limits = Limits::default();
    assert_eq!(skip_reason(b"\x7fELF\0\0\0", &limits), Some(Skip::Binary));
    let minified = vec![b'a'; 600 << 10];
    assert_eq!(skip_reason(&minified, &limits), Some(Skip::Minified));
    assert_eq!(skip_reason(b"plain text\n", &limits), None);
}

#[test]
fn names_in_code_are_not_secrets_for_broad_rules() {
    use crate::engine::looks_like_identifier as id;
    assert!(id(b"CLIENT_HANDSHAKE_TRAFFIC_SECRET"));
    assert!(id(b"EphemeralPrivateKey"));
    assert!(id(b"password_field_name"));
    assert!(!id(b"Zm4Xn3Cb2Vq1Wa9Sd8"), "digits");
    assert!(!id(b"qWeRtYuIoPaSdF"), "random letters are not words");
    assert!(!id(b"xkcdPassWordHorseStaple"), "starts lowercase");
}

#[test]
fn validators() {
    let w = warden_crypto::token::generate(warden_crypto::token::TokenKind::ApiKey);
    assert!(validate(Validator::WardenChecksum, w.expose().as_bytes()));
    let mut bad = w.expose().to_owned();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    assert!(!validate(Validator::WardenChecksum, bad.as_bytes()));
    // {"alg":"HS256","typ":"JWT"} . {"sub":"1"} . sig
    let jwt = b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.c2ln";
    assert!(validate(Validator::Jwt, jwt));
    assert!(!validate(
        Validator::Jwt,
        b"eyJub3QganNvbg.eyJzdWIiOiIxIn0.c2ln"
    ));
}

#[test]
fn fingerprints_and_redaction() {
    let a = fingerprint("r", "p", b"s1");
    assert_eq!(a.len(), 32);
    assert_eq!(a, fingerprint("r", "p", b"s1"));
    assert_ne!(a, fingerprint("r", "q", b"s1"));
    assert_ne!(
        fingerprint("ab", "c", b""),
        fingerprint("a", "bc", b""),
        "fields are framed"
    );
    let r = redact("ghp_abcdefghijklmnopqrstuvwxyz0123456789");
    assert!(r.starts_with("ghp_"));
    assert!(!r.contains("abcdef"));
}

#[test]
fn the_builtin_rules_pass_their_own_check_and_cover_at_least_150_formats() {
    let scanner = Scanner::new(crate::rules::builtin().unwrap()).unwrap();
    let failures = crate::check_rules(&scanner);
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(scanner.rules().len() >= 150, "{}", scanner.rules().len());
    for r in scanner.rules() {
        assert!(
            r.examples.len() >= 2 && r.counterexamples.len() >= 2,
            "{}",
            r.id
        );
    }
}
