//! Scopes are `resource:action` strings. Some are privileged and need four-eyes approval.

use std::collections::BTreeSet;

use crate::error::CoreError;

pub const MAX_SCOPES: usize = 64;
pub const MAX_SCOPE_LEN: usize = 128;

fn valid_part(s: &str) -> bool {
    s == "*"
        || (!s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b'.' | b'/')
            }))
}

/// Checks one scope's syntax: `*`, `admin`, or `resource:action` where each side is `*` or made of
/// lowercase letters, digits and `_ - . /`.
pub fn check(scope: &str) -> Result<(), CoreError> {
    if scope.len() > MAX_SCOPE_LEN {
        return Err(CoreError::field(
            "scopes",
            format!("scope longer than {MAX_SCOPE_LEN} characters"),
        ));
    }
    if scope == "*" || scope == "admin" {
        return Ok(());
    }
    if let Some(rest) = scope.strip_prefix("secret:") {
        return match rest.split_once(':') {
            Some((action, glob))
                if matches!(action, "read" | "write" | "*") && valid_secret_glob(glob) =>
            {
                Ok(())
            }
            _ => Err(CoreError::field(
                "scopes",
                format!(
                    "{scope:?} is not `secret:read:<path glob>` or `secret:write:<path glob>` \
                     (path characters `A-Za-z0-9._-/`, `*` within a segment, `**` across)"
                ),
            )),
        };
    }
    match scope.split_once(':') {
        Some((res, act)) if valid_part(res) && valid_part(act) => Ok(()),
        _ => Err(CoreError::field(
            "scopes",
            format!(
                "{scope:?} is not `resource:action` (lowercase letters, digits, `_-./`, or `*`)"
            ),
        )),
    }
}

fn valid_secret_glob(glob: &str) -> bool {
    !glob.is_empty()
        && glob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b'*'))
}

/// Whether `glob` matches `path`: `*` matches within one `/`-separated segment, `**` across
/// segments; everything else literally.
pub fn glob_match(glob: &str, path: &str) -> bool {
    // Dynamic programming over (glob position, path position): O(|glob|·|path|) time whatever
    // the glob (a backtracking matcher is exponential in the number of stars).
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Lit(u8),
        Star,
        DoubleStar,
    }
    let g = glob.as_bytes();
    let mut toks = Vec::with_capacity(g.len());
    let mut i = 0;
    while i < g.len() {
        if g[i] == b'*' {
            if g.get(i + 1) == Some(&b'*') {
                toks.push(Tok::DoubleStar);
                i += 2;
            } else {
                toks.push(Tok::Star);
                i += 1;
            }
        } else {
            toks.push(Tok::Lit(g[i]));
            i += 1;
        }
    }
    let p = path.as_bytes();
    // `row[j]`: the tokens so far match `p[..j]`.
    let mut row = vec![false; p.len() + 1];
    row[0] = true;
    for t in toks {
        let mut next = vec![false; p.len() + 1];
        match t {
            Tok::Lit(c) => {
                for j in 0..p.len() {
                    next[j + 1] = row[j] && p[j] == c;
                }
            }
            Tok::Star | Tok::DoubleStar => {
                let mut reach = false;
                for j in 0..=p.len() {
                    // A star extends over the previous byte unless it is a `/` (single star).
                    if j > 0 && t == Tok::Star && p[j - 1] == b'/' {
                        reach = false;
                    }
                    reach = reach || row[j];
                    next[j] = reach;
                }
            }
        }
        row = next;
    }
    row[p.len()]
}

/// Whether `scopes` allow `action` (`read`, `write`) on the secret at `path`.
pub fn allows_secret(scopes: &[String], action: &str, path: &str) -> bool {
    scopes.iter().any(|s| {
        if s == "*" || s == "secret:*" {
            return true;
        }
        match s.strip_prefix("secret:").and_then(|r| r.split_once(':')) {
            Some((a, glob)) => (a == action || a == "*") && glob_match(glob, path),
            None => false,
        }
    })
}

/// Whether a scope is privileged: `*`, `admin`, `*:*`, `resource:*`, `*:action`, or listed in
/// config.
pub fn is_privileged(scope: &str, extra: &[String]) -> bool {
    if scope == "*" || scope == "admin" || extra.iter().any(|e| e == scope) {
        return true;
    }
    if let Some((_, glob)) = scope
        .strip_prefix("secret:")
        .and_then(|r| r.split_once(':'))
    {
        // Every secret, or every secret under a top-level segment.
        return glob.starts_with('*') || glob.matches('/').count() == 0 && glob.contains('*');
    }
    match scope.split_once(':') {
        Some((res, act)) => res == "*" || act == "*",
        None => false,
    }
}

/// Whether holding `granted` lets a token carry `requested`: equal, or `granted` is `*`, or
/// `granted` is `resource:*` / `*:action` / `*:*` matching `requested`'s side.
pub fn covers(granted: &str, requested: &str) -> bool {
    if granted == requested || granted == "*" {
        return true;
    }
    if let Some(req) = requested.strip_prefix("secret:") {
        // A secret scope is covered by a glob that matches it as a literal path only when the
        // requested one has no wildcard; a requested glob needs an equal grant or a `**` one
        // whose prefix it starts with.
        let Some((ra, rglob)) = req.split_once(':') else {
            return false;
        };
        if granted == "secret:*" {
            return true;
        }
        let Some((ga, gglob)) = granted
            .strip_prefix("secret:")
            .and_then(|g| g.split_once(':'))
        else {
            return false;
        };
        if ga != ra && ga != "*" {
            return false;
        }
        if !rglob.contains('*') {
            return glob_match(gglob, rglob);
        }
        return gglob == rglob
            || gglob
                .strip_suffix("**")
                .is_some_and(|p| !p.contains('*') && rglob.starts_with(p));
    }
    match (granted.split_once(':'), requested.split_once(':')) {
        (Some((gr, ga)), Some((rr, ra))) => (gr == "*" || gr == rr) && (ga == "*" || ga == ra),
        _ => false,
    }
}

/// Validates and de-duplicates a list of scopes, keeping a stable (sorted) order.
pub fn normalise(scopes: &[String]) -> Result<Vec<String>, CoreError> {
    if scopes.len() > MAX_SCOPES {
        return Err(CoreError::field(
            "scopes",
            format!("at most {MAX_SCOPES} scopes"),
        ));
    }
    let mut set = BTreeSet::new();
    for s in scopes {
        check(s)?;
        set.insert(s.clone());
    }
    Ok(set.into_iter().collect())
}

/// The privileged scopes among `scopes`.
pub fn privileged_among(scopes: &[String], extra: &[String]) -> Vec<String> {
    scopes
        .iter()
        .filter(|s| is_privileged(s, extra))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_scopes_are_recognised() {
        let extra = vec!["billing:refund".to_owned()];
        for s in ["*", "admin", "*:*", "ledger:*", "*:read", "billing:refund"] {
            assert!(is_privileged(s, &extra), "{s}");
        }
        for s in ["ledger:write", "ledger:read", "billing:view"] {
            assert!(!is_privileged(s, &extra), "{s}");
        }
    }

    #[test]
    fn syntax_is_checked() {
        for ok in ["ledger:write", "a.b/c:d-e_f", "*", "admin", "x:*"] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ledger",
            "Ledger:write",
            ":write",
            "ledger:",
            "a:b:c",
            "a b:c",
            "",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        assert!(check(&format!("a:{}", "b".repeat(200))).is_err());
    }

    #[test]
    fn secret_scopes_match_paths_by_glob() {
        assert!(check("secret:read:payments/*").is_ok());
        assert!(check("secret:write:payments/stripe-key").is_ok());
        assert!(check("secret:delete:payments/*").is_err());
        assert!(check("secret:read:").is_err());
        assert!(check("secret:read:a b").is_err());
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let granted = s(&["secret:read:payments/*"]);
        assert!(allows_secret(&granted, "read", "payments/stripe-key"));
        assert!(!allows_secret(&granted, "read", "payments/eu/stripe-key"));
        assert!(!allows_secret(&granted, "write", "payments/stripe-key"));
        assert!(!allows_secret(&granted, "read", "billing/key"));
        assert!(!allows_secret(&granted, "read", "paymentsX/key"));
        assert!(allows_secret(
            &s(&["secret:*:payments/**"]),
            "write",
            "payments/eu/k"
        ));
        assert!(allows_secret(&s(&["secret:*"]), "read", "x"));
        assert!(!allows_secret(&s(&["ledger:read"]), "read", "x"));
        assert!(covers("secret:read:payments/*", "secret:read:payments/k"));
        assert!(!covers("secret:read:payments/*", "secret:read:payments/**"));
        assert!(!covers(
            "secret:read:payments/*",
            "secret:read:payments/a/b"
        ));
        assert!(covers(
            "secret:read:payments/**",
            "secret:read:payments/eu/*"
        ));
        assert!(!covers("secret:read:payments/**", "secret:read:pay*"));
        assert!(!covers("secret:read:x", "secret:write:x"));
        assert!(glob_match("a/*/c", "a/b/c") && !glob_match("a/*/c", "a/b/x/c"));
        assert!(glob_match("a/**/c", "a/b/x/c") && glob_match("**", "x/y"));
        assert!(glob_match("*", "") && !glob_match("a", ""));
        // Many stars cost linear work, not exponential.
        let glob = format!("a/{}b", "*a".repeat(30));
        let path = format!("a/{}", "a".repeat(250));
        assert!(!glob_match(&glob, &path));
        assert!(is_privileged("secret:read:**", &[]));
        assert!(is_privileged("secret:read:pay*", &[]));
        assert!(!is_privileged("secret:read:payments/*", &[]));
    }

    #[test]
    fn normalise_sorts_dedups_and_limits() {
        let got = normalise(&["b:x".into(), "a:y".into(), "b:x".into()]).unwrap();
        assert_eq!(got, vec!["a:y".to_owned(), "b:x".to_owned()]);
        let many: Vec<String> = (0..65).map(|i| format!("r{i}:read")).collect();
        assert!(normalise(&many).is_err());
    }

    #[test]
    fn wildcards_cover_narrower_scopes_and_nothing_else() {
        assert!(covers("ledger:*", "ledger:write"));
        assert!(covers("*:read", "ledger:read"));
        assert!(covers("*", "admin"));
        assert!(covers("ledger:write", "ledger:write"));
        assert!(
            !covers("ledger:write", "ledger:*"),
            "narrow does not cover wide"
        );
        assert!(!covers("ledger:read", "ledger:write"));
        assert!(!covers("ledger:*", "billing:write"));
        assert!(!covers("admin", "ledger:read"));
        assert!(!covers("*:*", "admin"));
    }
}
