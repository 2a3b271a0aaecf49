//! Warden's secret scanner.
//!
//! - [`rules`]: credential formats as data (`rules/*.toml`, compiled in; users add files), each
//!   with examples and counterexamples that `warden scan rules check` proves.
//! - [`engine`]: one Aho-Corasick pass finds every rule keyword; only the selected rules' regexes
//!   run, only on the lines their keywords are on; entropy, validators (checksums, JWT, PEM) and
//!   placeholder suppression decide.
//! - [`tree`]: a working tree, in parallel, honouring `.gitignore`.
//! - [`history`]: every commit of every ref, each blob read once, attributed to the first commit
//!   (oldest first) that carries it.
//! - [`report`]: findings as text, JSON, JSON Lines and SARIF 2.1.0; baselines.

pub mod corpus;
pub mod engine;
pub mod history;
pub mod owners;
pub mod report;
pub mod rules;
pub mod tree;

use sha2::{Digest, Sha256};

pub use engine::{Hit, Limits, Scanner, Skip, check_rules};
pub use rules::{Rule, RuleError, Severity};

/// A secret found somewhere, ready to report.
#[derive(Clone, serde::Serialize)]
pub struct Finding {
    pub rule: String,
    pub description: String,
    pub severity: Severity,
    /// Relative to the scanned root, with `/` separators.
    pub path: String,
    pub line: usize,
    pub column: usize,
    /// Where it came from in history (absent for working-tree findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Stable across runs and line moves: baselines and the server deduplicate by it.
    pub fingerprint: String,
    /// The line with the secret redacted.
    pub preview: String,
    /// Whether a structure check (checksum, JWT, PEM) confirmed the format.
    pub validated: bool,
    /// The secret itself: only serialised when the user asks (`--show-secrets`).
    #[serde(skip)]
    pub secret: String,
}

impl std::fmt::Debug for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finding")
            .field("rule", &self.rule)
            .field("path", &self.path)
            .field("line", &self.line)
            .field("commit", &self.commit)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Where a scanned buffer came from.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub path: String,
    pub commit: Option<String>,
    pub author: Option<String>,
    pub email: Option<String>,
    pub date: Option<String>,
}

/// `sha256("warden-scan/v1" ‖ rule ‖ path ‖ secret)`, 32 hex digits: the same secret of the same
/// rule in the same file keeps its fingerprint when lines move or commits change.
pub fn fingerprint(rule: &str, path: &str, secret: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [
        b"warden-scan/v1".as_slice(),
        rule.as_bytes(),
        path.as_bytes(),
        secret,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A secret shown without giving it away: its first characters (which name the kind, like
/// `ghp_`) and its length.
pub fn redact(secret: &str) -> String {
    let n = secret.chars().count();
    let keep = (n / 5).min(4);
    let head: String = secret.chars().take(keep).collect();
    format!("{head}…[{n} chars]")
}

/// The hits of one buffer as findings.
pub fn findings(scanner: &Scanner, data: &[u8], hits: &[Hit], origin: &Origin) -> Vec<Finding> {
    hits.iter()
        .map(|h| {
            let rule = &scanner.rules()[h.rule];
            let secret = String::from_utf8_lossy(&data[h.start..h.end]).into_owned();
            let line_start = memchr::memrchr(b'\n', &data[..h.start]).map_or(0, |i| i + 1);
            let before = String::from_utf8_lossy(&data[line_start..h.start]);
            let after_end = memchr::memchr(b'\n', &data[h.end..]).map_or(data.len(), |i| h.end + i);
            let after = String::from_utf8_lossy(&data[h.end..after_end]);
            let preview = format!(
                "{}{}{}",
                tail(before.trim_start(), 60),
                redact(&secret),
                head(&after, 60)
            );
            Finding {
                rule: rule.id.clone(),
                description: rule.description.clone(),
                severity: rule.severity,
                path: origin.path.clone(),
                line: h.line,
                column: h.column,
                commit: origin.commit.clone(),
                author: origin.author.clone(),
                email: origin.email.clone(),
                date: origin.date.clone(),
                fingerprint: fingerprint(&rule.id, &origin.path, secret.as_bytes()),
                preview,
                validated: h.validated,
                secret,
            }
        })
        .collect()
}

fn head(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

fn tail(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        return s.to_owned();
    }
    let mut out = String::from("…");
    out.extend(s.chars().skip(count - n));
    out
}

/// What a scan looked at and skipped.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub files: u64,
    pub bytes: u64,
    pub skipped_binary: u64,
    pub skipped_large: u64,
    pub skipped_minified: u64,
    pub commits: u64,
    pub blobs: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.skipped_binary += o.skipped_binary;
        self.skipped_large += o.skipped_large;
        self.skipped_minified += o.skipped_minified;
        self.commits += o.commits;
        self.blobs += o.blobs;
    }

    pub fn skipped(&mut self, s: Skip) {
        match s {
            Skip::Binary => self.skipped_binary += 1,
            Skip::TooLarge => self.skipped_large += 1,
            Skip::Minified => self.skipped_minified += 1,
        }
    }
}

#[cfg(test)]
mod tests;
