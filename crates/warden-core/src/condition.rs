//! Conditions of trust rules over a token's claims.
//!
//! ```text
//! expr   := and ( "||" and )*
//! and    := atom ( "&&" atom )*
//! atom   := "(" expr ")" | claim "==" string | claim "!=" string
//!         | claim "=~" string            (glob: `*` any run of characters, `?` one)
//!         | claim "in" "[" string ("," string)* "]"
//! claim  := segment ( "/" segment )*     (nested claims: `kubernetes.io/namespace`)
//! string := "…" with \" and \\ escapes
//! ```
//!
//! A claim that is absent, or not a string (numbers and booleans compare by their JSON text),
//! never matches (`!=` included): a rule cannot be satisfied by leaving a claim out.

use serde_json::Value;

use crate::error::CoreError;

/// Longest condition accepted.
pub const MAX_CONDITION_LEN: usize = 2048;
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Eq(Vec<String>, String),
    Ne(Vec<String>, String),
    Glob(Vec<String>, String),
    In(Vec<String>, Vec<String>),
}

fn bad(msg: impl Into<String>) -> CoreError {
    CoreError::field("condition", msg.into())
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(tok.as_bytes()) {
            self.i += tok.len();
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Condition, CoreError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(bad("nested too deeply"));
        }
        let mut any = vec![self.and()?];
        while self.eat("||") {
            any.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Condition::Any(any)
        })
    }

    fn and(&mut self) -> Result<Condition, CoreError> {
        let mut all = vec![self.atom()?];
        while self.eat("&&") {
            all.push(self.atom()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Condition::All(all)
        })
    }

    fn atom(&mut self) -> Result<Condition, CoreError> {
        if self.eat("(") {
            let e = self.expr()?;
            if !self.eat(")") {
                return Err(bad(format!("expected ) at {}", self.i)));
            }
            return Ok(e);
        }
        let claim = self.claim()?;
        if self.eat("==") {
            Ok(Condition::Eq(claim, self.string()?))
        } else if self.eat("!=") {
            Ok(Condition::Ne(claim, self.string()?))
        } else if self.eat("=~") {
            Ok(Condition::Glob(claim, self.string()?))
        } else if self.eat("in") {
            if !self.eat("[") {
                return Err(bad("expected [ after in"));
            }
            let mut values = vec![self.string()?];
            while self.eat(",") {
                values.push(self.string()?);
            }
            if !self.eat("]") {
                return Err(bad("expected ] to end the list"));
            }
            Ok(Condition::In(claim, values))
        } else {
            Err(bad(format!(
                "expected ==, !=, =~ or in after the claim at {}",
                self.i
            )))
        }
    }

    fn claim(&mut self) -> Result<Vec<String>, CoreError> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || b"_.:/-".contains(&self.s[self.i]))
        {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| bad("not UTF-8"))?;
        if text.is_empty() {
            return Err(bad(format!("expected a claim name at {start}")));
        }
        let path: Vec<String> = text.split('/').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(bad(format!("{text:?}: empty claim segment")));
        }
        Ok(path)
    }

    fn string(&mut self) -> Result<String, CoreError> {
        self.ws();
        if self.s.get(self.i) != Some(&b'"') {
            return Err(bad(format!("expected a \"string\" at {}", self.i)));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return Err(bad("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    match self.s.get(self.i + 1) {
                        Some(c @ (b'"' | b'\\')) => out.push(*c),
                        _ => return Err(bad("only \\\" and \\\\ escapes")),
                    }
                    self.i += 2;
                }
                Some(c) => {
                    out.push(*c);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| bad("not UTF-8"))
    }
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, CoreError> {
        if text.trim().is_empty() || text.len() > MAX_CONDITION_LEN {
            return Err(bad(format!("1 to {MAX_CONDITION_LEN} characters")));
        }
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
            depth: 0,
        };
        let c = p.expr()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(bad(format!("unexpected text at {}", p.i)));
        }
        Ok(c)
    }

    pub fn matches(&self, claims: &Value) -> bool {
        match self {
            Condition::All(c) => c.iter().all(|c| c.matches(claims)),
            Condition::Any(c) => c.iter().any(|c| c.matches(claims)),
            Condition::Eq(p, v) => lookup(claims, p).is_some_and(|x| x == *v),
            Condition::Ne(p, v) => lookup(claims, p).is_some_and(|x| x != *v),
            Condition::Glob(p, g) => lookup(claims, p).is_some_and(|x| glob(g, &x)),
            Condition::In(p, vs) => lookup(claims, p).is_some_and(|x| vs.contains(&x)),
        }
    }
}

/// A claim at `path`, as text (strings as they are; numbers and booleans as JSON).
fn lookup(claims: &Value, path: &[String]) -> Option<String> {
    let mut v = claims;
    for seg in path {
        v = v.get(seg)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `*` any run of characters (slashes included), `?` one character; linear time.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for c in p {
        let mut next = vec![false; t.len() + 1];
        match c {
            '*' => {
                let mut reach = false;
                for j in 0..=t.len() {
                    reach = reach || row[j];
                    next[j] = reach;
                }
            }
            _ => {
                for j in 0..t.len() {
                    next[j + 1] = row[j] && (c == '?' || t[j] == c);
                }
            }
        }
        row = next;
    }
    row[t.len()]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use serde_json::json;

    use super::*;

    #[test]
    fn github_gitlab_and_kubernetes_claims() {
        let gh = json!({"repository": "org/app", "ref": "refs/heads/main", "environment": "prod",
                        "job_workflow_ref": "org/app/.github/workflows/deploy.yml@refs/heads/main",
                        "run_attempt": 1});
        let c = Condition::parse(
            r#"repository == "org/app" && ref == "refs/heads/main" && environment == "prod""#,
        )
        .unwrap();
        assert!(c.matches(&gh));
        let mut branch = gh.clone();
        branch["ref"] = json!("refs/heads/feature");
        assert!(!c.matches(&branch));
        let c = Condition::parse(
            r#"job_workflow_ref =~ "org/app/.github/workflows/*@refs/heads/main" && run_attempt in ["1", "2"]"#,
        )
        .unwrap();
        assert!(c.matches(&gh));
        let k8s =
            json!({"kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api"}}});
        let c = Condition::parse(
            r#"kubernetes.io/namespace == "payments" && (kubernetes.io/serviceaccount/name == "api" || kubernetes.io/serviceaccount/name == "worker")"#,
        )
        .unwrap();
        assert!(c.matches(&k8s));
        assert!(
            !Condition::parse(r#"kubernetes.io/namespace == "billing""#)
                .unwrap()
                .matches(&k8s)
        );
    }

    #[test]
    fn a_missing_claim_never_matches() {
        let c = Condition::parse(r#"environment != "dev""#).unwrap();
        assert!(!c.matches(&json!({})), "absent is not 'not dev'");
        assert!(c.matches(&json!({"environment": "prod"})));
        assert!(!c.matches(&json!({"environment": {"nested": 1}})));
    }

    #[test]
    fn bad_conditions_are_refused_with_a_reason() {
        for bad in [
            "",
            "repository",
            r#"repository = "x""#,
            r#"repository == x"#,
            r#"repository == "x" &&"#,
            r#"(repository == "x""#,
            r#"a in []"#,
            r#"a == "unterminated"#,
            r#"a == "x" extra"#,
            r#"a//b == "x""#,
        ] {
            assert!(Condition::parse(bad).is_err(), "{bad:?}");
        }
        let deep = format!("{}a == \"x\"{}", "(".repeat(40), ")".repeat(40));
        assert!(Condition::parse(&deep).is_err());
        assert!(Condition::parse(&"a == \"x\" && ".repeat(300)).is_err());
    }

    #[test]
    fn globs_are_linear_and_exact() {
        assert!(glob("a*b?d", "aXXbcd"));
        assert!(!glob("a*b?d", "aXXbd"));
        assert!(glob("*", ""));
        let text = "a".repeat(1000);
        assert!(!glob(&format!("{}b", "*a".repeat(40)), &text));
    }
}
