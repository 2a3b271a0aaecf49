//! Reports: text, JSON, JSON Lines, SARIF 2.1.0; baselines.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};

use crate::{Finding, Severity, Stats};

/// A finding as written, with the secret when the user asked for it.
fn finding_json(f: &Finding, show_secrets: bool) -> Value {
    let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
    if show_secrets && let Some(o) = v.as_object_mut() {
        o.insert("secret".into(), Value::String(f.secret.clone()));
    }
    v
}

/// `{"version": 1, "findings": [...], "stats": {...}}`.
pub fn json(findings: &[Finding], stats: &Stats, show_secrets: bool) -> Value {
    json!({
        "version": 1,
        "findings": findings.iter().map(|f| finding_json(f, show_secrets)).collect::<Vec<_>>(),
        "stats": stats,
    })
}

/// One finding per line.
pub fn json_lines(findings: &[Finding], show_secrets: bool) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&finding_json(f, show_secrets).to_string());
        out.push('\n');
    }
    out
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "note",
    }
}

/// SARIF 2.1.0, one run; GitHub code scanning reads it.
pub fn sarif(findings: &[Finding], rules: &[crate::Rule], version: &str) -> Value {
    let used: BTreeMap<&str, &crate::Rule> = rules
        .iter()
        .filter(|r| findings.iter().any(|f| f.rule == r.id))
        .map(|r| (r.id.as_str(), r))
        .collect();
    let index: BTreeMap<&str, usize> = used.keys().enumerate().map(|(i, k)| (*k, i)).collect();
    let descriptors: Vec<Value> = used
        .values()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.id,
                "shortDescription": { "text": r.description },
                "fullDescription": { "text": format!("{} ({} severity). A secret in source or history must be rotated: removing it from the file does not remove it from history.", r.description, r.severity.as_str()) },
                "defaultConfiguration": { "level": level(r.severity) },
                "properties": { "tags": ["security", "secret"], "security-severity": match r.severity {
                    Severity::Critical => "9.5", Severity::High => "8.0", Severity::Medium => "5.0", Severity::Low => "2.0" } },
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut message = format!("{}: {}", f.description, f.preview);
            if let Some(c) = &f.commit {
                message.push_str(&format!(" (commit {c})"));
            }
            let mut r = json!({
                "ruleId": f.rule,
                "level": level(f.severity),
                "message": { "text": message },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": f.path },
                        "region": { "startLine": f.line.max(1), "startColumn": f.column.max(1) },
                    }
                }],
                "partialFingerprints": { "wardenFingerprint/v1": f.fingerprint },
            });
            if let (Some(o), Some(i)) = (r.as_object_mut(), index.get(f.rule.as_str())) {
                o.insert("ruleIndex".into(), json!(i));
            }
            r
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "warden-scan",
                "semanticVersion": version,
                "informationUri": "https://github.com/warden-nhi/warden",
                "rules": descriptors,
            }},
            "results": results,
        }],
    })
}

/// Human-readable, one block per finding; `colour` adds ANSI colours.
pub fn text(findings: &[Finding], stats: &Stats, colour: bool, show_secrets: bool) -> String {
    let paint = |code: &str, s: &str| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    };
    let mut out = String::new();
    for f in findings {
        let sev = match f.severity {
            Severity::Critical => paint("1;31", "critical"),
            Severity::High => paint("31", "high    "),
            Severity::Medium => paint("33", "medium  "),
            Severity::Low => paint("36", "low     "),
        };
        out.push_str(&format!(
            "{sev} {} {}:{}:{}{}\n",
            paint("1", &f.rule),
            f.path,
            f.line,
            f.column,
            if f.validated {
                "  (format verified)"
            } else {
                ""
            }
        ));
        if let Some(c) = &f.commit {
            out.push_str(&format!(
                "         commit {} by {} <{}> {}\n",
                &c[..c.len().min(12)],
                f.author.as_deref().unwrap_or(""),
                f.email.as_deref().unwrap_or(""),
                f.date.as_deref().unwrap_or("")
            ));
        }
        out.push_str(&format!("         {}\n", f.preview));
        if show_secrets {
            out.push_str(&format!("         secret: {}\n", f.secret));
        }
    }
    out.push_str(&format!(
        "{} finding{} in {} files ({:.1} MB){}{}; skipped {} binary, {} large, {} minified\n",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" },
        stats.files,
        stats.bytes as f64 / 1e6,
        if stats.commits > 0 {
            format!(", {} commits", stats.commits)
        } else {
            String::new()
        },
        if stats.blobs > 0 {
            format!(", {} unique blobs", stats.blobs)
        } else {
            String::new()
        },
        stats.skipped_binary,
        stats.skipped_large,
        stats.skipped_minified
    ));
    out
}

/// Fingerprints in a baseline: a JSON report (`--format json`) or a JSON array of findings, or
/// JSON Lines.
pub fn baseline_fingerprints(text: &str) -> Result<HashSet<String>, String> {
    let from = |v: &Value| {
        v.get("fingerprint")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        let list = match &v {
            Value::Array(a) => a.clone(),
            Value::Object(o) => o
                .get("findings")
                .and_then(Value::as_array)
                .cloned()
                .ok_or("a baseline object needs a \"findings\" array")?,
            _ => return Err("a baseline is a JSON report, array or JSON Lines".into()),
        };
        return Ok(list.iter().filter_map(from).collect());
    }
    let mut out = HashSet::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", i + 1))?;
        out.extend(from(&v));
    }
    Ok(out)
}
