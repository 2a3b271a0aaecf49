//! Input rules. Each error names the field and says why.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::error::CoreError;

pub const MAX_LABELS: usize = 32;
pub const MAX_AUDIENCES: usize = 16;

/// DNS-label style: lowercase letters, digits and `-`, 1–63 characters, no leading or trailing `-`.
pub fn dns_label(field: &str, value: &str) -> Result<(), CoreError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CoreError::field(
            field,
            format!(
                "{value:?} is not a DNS label: use 1–63 lowercase letters, digits and `-`, not starting or ending with `-`"
            ),
        ))
    }
}

/// One line of 10–200 characters.
pub fn purpose(value: &str) -> Result<String, CoreError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(CoreError::field(
            "purpose",
            "required: say in one line what this identity is for",
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(CoreError::field(
            "purpose",
            "must be a single line without control characters",
        ));
    }
    let n = v.chars().count();
    if !(10..=200).contains(&n) {
        return Err(CoreError::field(
            "purpose",
            format!("must be 10–200 characters, got {n}"),
        ));
    }
    Ok(v.to_owned())
}

/// A free-text reason (for transitions and decisions): 1–500 characters, one line.
pub fn reason(
    field: &str,
    value: Option<&str>,
    required: bool,
) -> Result<Option<String>, CoreError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None if required => Err(CoreError::field(field, "required: say why")),
        None => Ok(None),
        Some(v) if v.chars().count() > 500 || v.chars().any(char::is_control) => Err(
            CoreError::field(field, "must be one line of at most 500 characters"),
        ),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// Free-text description: optional, at most 500 characters.
pub fn description(value: Option<&str>) -> Result<Option<String>, CoreError> {
    reason("description", value, false)
}

pub fn labels(labels: &BTreeMap<String, String>) -> Result<(), CoreError> {
    if labels.len() > MAX_LABELS {
        return Err(CoreError::field(
            "labels",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'-' | b'_' | b'.' | b'/')
            });
        if !key_ok {
            return Err(CoreError::field(
                "labels",
                format!("label key {k:?}: 1–63 lowercase letters, digits and `-_./`"),
            ));
        }
        if v.len() > 256 || v.chars().any(char::is_control) {
            return Err(CoreError::field(
                "labels",
                format!("label {k:?}: value must be one line of at most 256 bytes"),
            ));
        }
    }
    Ok(())
}

pub fn audiences(list: &[String]) -> Result<Vec<String>, CoreError> {
    if list.len() > MAX_AUDIENCES {
        return Err(CoreError::field(
            "audiences",
            format!("at most {MAX_AUDIENCES} audiences"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for a in list {
        if a.is_empty() || a.len() > 256 || a.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(CoreError::field(
                "audiences",
                format!("{a:?} must be 1–256 characters without spaces"),
            ));
        }
        if !out.contains(a) {
            out.push(a.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// A CIDR range like `10.0.0.0/8` or `2001:db8::/32`.
pub fn cidr(value: &str) -> Result<(), CoreError> {
    let bad = || {
        CoreError::field(
            "constraints.allowed_networks",
            format!("{value:?} is not a CIDR range like 10.0.0.0/8"),
        )
    };
    let (addr, len) = value.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(())
}

pub fn constraints(c: &warden_types::Constraints) -> Result<(), CoreError> {
    if c.allowed_networks.len() > 64 {
        return Err(CoreError::field(
            "constraints.allowed_networks",
            "at most 64 ranges",
        ));
    }
    for n in &c.allowed_networks {
        cidr(n)?;
    }
    if c.max_token_ttl_seconds == Some(0) {
        return Err(CoreError::field(
            "constraints.max_token_ttl_seconds",
            "must be greater than zero",
        ));
    }
    if let Some(san) = &c.tls_client_auth_san
        && (san.is_empty() || san.len() > 255 || !san.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(CoreError::field(
            "constraints.tls_client_auth_san",
            "a URI or DNS name of 1 to 255 printable characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "billing-worker", "x1", &"a".repeat(63)] {
            assert!(dns_label("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64), "naïve"] {
            let err = dns_label("name", bad).unwrap_err();
            assert!(err.to_string().starts_with("name: "), "{err}");
        }
    }

    #[test]
    fn purpose_must_be_one_line_of_10_to_200_chars() {
        assert!(purpose("Posts invoices to the ledger API").is_ok());
        assert_eq!(
            purpose("  trimmed purpose text  ").unwrap(),
            "trimmed purpose text"
        );
        let missing = purpose("   ").unwrap_err().to_string();
        assert!(
            missing.contains("purpose") && missing.contains("required"),
            "{missing}"
        );
        assert!(purpose("short").is_err());
        assert!(purpose(&"x".repeat(201)).is_err());
        assert!(purpose("two\nlines are not allowed").is_err());
    }

    #[test]
    fn cidrs_and_labels() {
        assert!(cidr("10.0.0.0/8").is_ok());
        assert!(cidr("2001:db8::/32").is_ok());
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            assert!(cidr(bad).is_err(), "{bad}");
        }
        let mut l = BTreeMap::new();
        l.insert("team/tier".to_owned(), "gold".to_owned());
        assert!(labels(&l).is_ok());
        l.insert("Bad Key".to_owned(), "v".to_owned());
        assert!(labels(&l).is_err());
    }

    #[test]
    fn reasons() {
        assert!(reason("reason", None, true).is_err());
        assert!(reason("reason", Some("  "), true).is_err());
        assert_eq!(reason("reason", None, false).unwrap(), None);
        assert_eq!(
            reason("reason", Some("decommissioned"), true).unwrap(),
            Some("decommissioned".into())
        );
    }
}
