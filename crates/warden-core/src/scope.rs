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

/// Whether a scope is privileged: `*`, `admin`, `*:*`, `resource:*`, `*:action`, or listed in
/// config.
pub fn is_privileged(scope: &str, extra: &[String]) -> bool {
    if scope == "*" || scope == "admin" || extra.iter().any(|e| e == scope) {
        return true;
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
