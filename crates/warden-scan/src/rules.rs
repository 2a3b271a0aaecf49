//! Rules as data: TOML files compiled into the binary (`rules/*.toml`), plus any file a user adds.

use std::collections::HashSet;

use std::sync::{Arc, OnceLock};

use regex::bytes::Regex;
use serde::Deserialize;

/// How bad a leaked secret of this kind is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Structure checks a format allows beyond its pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validator {
    /// Three base64url parts; the header decodes to a JSON object with `alg`.
    Jwt,
    /// A PEM block whose body is valid base64 of plausible length.
    Pem,
    /// GitHub classic token: the last 6 characters are the base62 CRC32 of the 30 before.
    GithubChecksum,
    /// Warden secret (`wdn_..`): base62 CRC32 of everything before the last 6 characters.
    WardenChecksum,
}

/// A rule as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    pub keywords: Vec<String>,
    pub regex: String,
    pub secret_group: Option<usize>,
    pub entropy: Option<f64>,
    #[serde(default)]
    pub multiline: bool,
    pub validator: Option<Validator>,
    /// Whether this rule's findings give way to another rule's on overlapping text (broad rules:
    /// generic assignments, any JWT, any connection URI). Default: ids starting `generic-`.
    pub yields: Option<bool>,
    #[serde(default)]
    pub examples: Vec<String>,
    #[serde(default)]
    pub counterexamples: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<RuleDef>,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    pub keywords: Vec<String>,
    /// The pattern; compiled on first use (most rules never meet their keywords in a given
    /// repository, and compiling ~300 regexes up front cost more than scanning a small one).
    pub pattern: String,
    regex: Arc<OnceLock<Regex>>,
    pub secret_group: usize,
    pub entropy: Option<f64>,
    pub multiline: bool,
    pub validator: Option<Validator>,
    pub yields: bool,
    pub examples: Vec<String>,
    pub counterexamples: Vec<String>,
    /// Which file it came from (for messages).
    pub source: String,
}

/// Why a rules file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
}

fn invalid(source: &str, message: String) -> RuleError {
    RuleError::Invalid {
        source_name: source.to_owned(),
        message,
    }
}

/// The rule files compiled into the binary: every `rules/*.toml` (see `build.rs`).
pub const BUILTIN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

impl Rule {
    /// The compiled pattern. A pattern that parsed but does not compile (over the size limit)
    /// matches nothing; `rules check` compiles every rule and reports it.
    pub fn regex(&self) -> &Regex {
        self.regex.get_or_init(|| {
            build(&self.pattern).unwrap_or_else(|_| {
                // `[^\x00-\x{10FFFF}]` can never match.
                build(r"[^\x00-\x{10FFFF}]").unwrap_or_else(|_| unreachable!("a fixed pattern"))
            })
        })
    }

    /// Compiles the pattern now; the error if it cannot be.
    pub fn compile(&self) -> Result<(), String> {
        let r = build(&self.pattern).map_err(|e| e.to_string())?;
        let _ = self.regex.set(r);
        Ok(())
    }
}

/// ASCII semantics (`\w`, `\d`, `\s`, `\b`, case folding): secrets are ASCII, and Unicode
/// classes made every automaton many times larger (building them was most of a scan's time).
fn build(pattern: &str) -> Result<Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(1 << 22)
        .dfa_size_limit(1 << 20)
        .build()
}

/// Parses and compiles the rules of one TOML file.
pub fn parse(source: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    let file: RuleFile = toml::from_str(text).map_err(|e| invalid(source, e.to_string()))?;
    file.rule.into_iter().map(|d| compile(source, d)).collect()
}

fn compile(source: &str, d: RuleDef) -> Result<Rule, RuleError> {
    let at = |m: String| invalid(source, format!("rule {:?}: {m}", d.id));
    if d.id.is_empty()
        || !d
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(at("id must be lowercase kebab-case".into()));
    }
    if d.keywords.is_empty() {
        return Err(at(
            "needs at least one keyword (the prefilter runs a rule only where one occurs)".into(),
        ));
    }
    if let Some(k) = d.keywords.iter().find(|k| k.len() < 3) {
        return Err(at(format!(
            "keyword {k:?} is shorter than 3 characters (it would match everywhere)"
        )));
    }
    // Syntax and groups are checked now; the automaton is built on first use.
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(&d.regex)
        .map_err(|e| at(format!("regex: {e}")))?;
    let groups = hir.properties().explicit_captures_len();
    let secret_group = d.secret_group.unwrap_or(usize::from(groups >= 1));
    if secret_group > groups {
        return Err(at(format!(
            "secret_group {secret_group} but the regex has {groups} groups"
        )));
    }
    Ok(Rule {
        yields: d.yields.unwrap_or_else(|| d.id.starts_with("generic-")),
        keywords: d.keywords.iter().map(|k| k.to_ascii_lowercase()).collect(),
        id: d.id,
        description: d.description,
        severity: d.severity,
        pattern: d.regex,
        regex: Arc::new(OnceLock::new()),
        secret_group,
        entropy: d.entropy,
        multiline: d.multiline,
        validator: d.validator,
        examples: d.examples,
        counterexamples: d.counterexamples,
        source: source.to_owned(),
    })
}

/// The built-in rules.
pub fn builtin() -> Result<Vec<Rule>, RuleError> {
    let mut out = Vec::new();
    for (name, text) in BUILTIN {
        out.extend(parse(name, text)?);
    }
    Ok(out)
}

/// Refuses duplicate ids across the given rules.
pub fn check_unique(rules: &[Rule]) -> Result<(), RuleError> {
    let mut seen = HashSet::new();
    for r in rules {
        if !seen.insert(r.id.as_str()) {
            return Err(invalid(&r.source, format!("duplicate rule id {:?}", r.id)));
        }
    }
    Ok(())
}
