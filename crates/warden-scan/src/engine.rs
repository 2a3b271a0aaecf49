//! Matching many rules in one pass over a buffer.
//!
//! 1. One Aho-Corasick automaton holds every rule's keywords (ASCII case-insensitive). A single
//!    pass finds every keyword occurrence.
//! 2. Each occurrence names the line it is on and the rules whose keyword it is. Only those rules'
//!    regexes run, and only on that line (a multiline rule: from that line on, up to
//!    [`MULTILINE_WINDOW`] bytes).
//! 3. A candidate is kept if its secret is long and random enough (`entropy`), passes the rule's
//!    structure check (`validator`), is not a placeholder, and its line has no `warden:allow`.

use std::collections::HashSet;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine;

use crate::rules::{Rule, RuleError, Validator};

/// How far a multiline rule (a PEM block) may reach from the line its keyword is on.
pub const MULTILINE_WINDOW: usize = 64 * 1024;

/// Substrings (case-insensitive) that mark a value as a placeholder or a documented decoy.
const PLACEHOLDERS: &[&str] = &[
    "example",
    "xxxx",
    "placeholder",
    "dummy",
    "changeme",
    "change_me",
    "your_",
    "your-",
    "<",
    "${",
    "{{",
    "****",
    "redacted",
];

/// Secrets published in documentation on purpose (emulator keys, sample tokens): never findings.
const PUBLIC_DECOYS: &[&str] = &[
    // Azurite (Azure Storage emulator) account key.
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
    // Azure Cosmos DB emulator key.
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==",
    // kubeadm's documented bootstrap token.
    "abcdef.0123456789abcdef",
    // AWS documentation's secret key.
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
];

/// The comment that suppresses findings on its line.
pub const ALLOW_MARK: &[u8] = b"warden:allow";

/// A secret found in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Index of the rule in the scanner.
    pub rule: usize,
    /// Byte range of the secret in the buffer.
    pub start: usize,
    pub end: usize,
    /// 1-based line and column (in bytes) of the secret's start.
    pub line: usize,
    pub column: usize,
    /// Whether a structure check (checksum, JWT, PEM) confirmed it.
    pub validated: bool,
}

/// What to skip.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Files larger than this are skipped (reported as skipped).
    pub max_bytes: usize,
    /// Files larger than this whose average line is longer than `minified_line` bytes are taken
    /// for minified or generated code and skipped.
    pub minified_bytes: usize,
    pub minified_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 32 << 20,
            minified_bytes: 512 << 10,
            minified_line: 2_000,
        }
    }
}

/// Why a buffer was not scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Binary,
    TooLarge,
    Minified,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Binary => "binary",
            Skip::TooLarge => "too large",
            Skip::Minified => "minified",
        }
    }
}

/// Whether `data` is worth scanning under `limits`.
pub fn skip_reason(data: &[u8], limits: &Limits) -> Option<Skip> {
    if data.len() > limits.max_bytes {
        return Some(Skip::TooLarge);
    }
    if memchr::memchr(0, &data[..data.len().min(8_000)]).is_some() {
        return Some(Skip::Binary);
    }
    if data.len() > limits.minified_bytes {
        let lines = memchr::memchr_iter(b'\n', data).count() + 1;
        if data.len() / lines > limits.minified_line {
            return Some(Skip::Minified);
        }
    }
    None
}

/// Shannon entropy of `s` in bits per byte.
pub fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether a value looks like a name in code rather than a secret: letters and underscores only,
/// made of words (`SCREAMING_SNAKE`, `snake_case` with words of 3+ letters, or `CamelCase`).
/// Applied to broad rules only (a `password = PASSWORD_FIELD` in code is not a password).
pub fn looks_like_identifier(secret: &[u8]) -> bool {
    if secret.is_empty() || !secret.iter().all(|b| b.is_ascii_alphabetic() || *b == b'_') {
        return false;
    }
    if secret.contains(&b'_') {
        return secret
            .split(|b| *b == b'_')
            .filter(|w| !w.is_empty())
            .all(|w| {
                w.len() >= 3
                    && (w.iter().all(u8::is_ascii_uppercase)
                        || w.iter().all(u8::is_ascii_lowercase)
                        || (w[0].is_ascii_uppercase() && w[1..].iter().all(u8::is_ascii_lowercase)))
            });
    }
    // CamelCase: every uppercase letter starts a lowercase word of 3+ letters.
    let mut words = 0;
    let mut i = 0;
    while i < secret.len() {
        if !secret[i].is_ascii_uppercase() {
            return false;
        }
        let start = i;
        i += 1;
        while i < secret.len() && secret[i].is_ascii_lowercase() {
            i += 1;
        }
        if i - start < 3 {
            return false;
        }
        words += 1;
    }
    words >= 2
}

/// Whether `secret` is a placeholder rather than a value.
pub fn is_placeholder(secret: &[u8]) -> bool {
    if PUBLIC_DECOYS.iter().any(|d| d.as_bytes() == secret) {
        return true;
    }
    let lower = secret.to_ascii_lowercase();
    PLACEHOLDERS
        .iter()
        .any(|p| memchr::memmem::find(&lower, p.as_bytes()).is_some())
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn base62_6(mut n: u32) -> [u8; 6] {
    let mut d = [b'0'; 6];
    for slot in d.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    d
}

fn b64_any(s: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let trimmed: Vec<u8> = s.iter().copied().filter(|b| *b != b'=').collect();
    URL_SAFE_NO_PAD
        .decode(&trimmed)
        .ok()
        .or_else(|| STANDARD.decode(s).ok())
}

/// Runs a structure check.
pub fn validate(v: Validator, secret: &[u8]) -> bool {
    match v {
        Validator::WardenChecksum => {
            std::str::from_utf8(secret).is_ok_and(|s| warden_crypto::token::parse(s).is_ok())
        }
        Validator::GithubChecksum => {
            // `<prefix>_` + 30 random base62 + 6 base62 CRC32 of those 30.
            let Some(us) = memchr::memrchr(b'_', secret) else {
                return false;
            };
            let body = &secret[us + 1..];
            body.len() == 36
                && body.iter().all(u8::is_ascii_alphanumeric)
                && base62_6(crc32fast::hash(&body[..30])) == body[30..]
        }
        Validator::Jwt => {
            let mut parts = secret.split(|b| *b == b'.');
            let (Some(h), Some(p)) = (parts.next(), parts.next()) else {
                return false;
            };
            let json_object = |part: &[u8]| {
                b64_any(part)
                    .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
                    .filter(serde_json::Value::is_object)
            };
            json_object(h).is_some_and(|h| h.get("alg").is_some_and(serde_json::Value::is_string))
                && json_object(p).is_some()
        }
        Validator::Pem => {
            let text = String::from_utf8_lossy(secret);
            let body: String = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with("-----") && !l.contains(':') && !l.is_empty())
                .collect();
            match base64::engine::general_purpose::STANDARD.decode(body.as_bytes()) {
                Ok(raw) if text.contains("OPENSSH PRIVATE KEY") => {
                    raw.starts_with(b"openssh-key-v1\0")
                }
                // DER: a SEQUENCE (0x30) of some size; PGP: a packet tag with the high bit set.
                Ok(raw) if text.contains("PGP PRIVATE KEY") => {
                    raw.first().is_some_and(|b| b & 0x80 != 0)
                }
                // (An Ed25519 PKCS#8 key is 48 bytes.)
                Ok(raw) => raw.len() >= 32 && raw.first() == Some(&0x30),
                Err(_) => false,
            }
        }
    }
}

/// Many rules, one pass.
#[derive(Debug, Clone)]
pub struct Scanner {
    rules: Vec<Rule>,
    keywords: AhoCorasick,
    /// Keyword pattern index → the rules it selects.
    selects: Vec<Vec<u32>>,
    /// Rules whose findings give way to a specific rule's on the same text.
    generic: Vec<bool>,
}

impl Scanner {
    pub fn new(rules: Vec<Rule>) -> Result<Self, RuleError> {
        crate::rules::check_unique(&rules)?;
        let mut words: Vec<String> = Vec::new();
        let mut selects: Vec<Vec<u32>> = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            for k in &r.keywords {
                let idx = match words.iter().position(|w| w == k) {
                    Some(p) => p,
                    None => {
                        words.push(k.clone());
                        selects.push(Vec::new());
                        words.len() - 1
                    }
                };
                let rule = u32::try_from(i).map_err(|_| RuleError::Invalid {
                    source_name: r.source.clone(),
                    message: "too many rules".into(),
                })?;
                if !selects[idx].contains(&rule) {
                    selects[idx].push(rule);
                }
            }
        }
        let keywords = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .prefilter(true)
            .build(&words)
            .map_err(|e| RuleError::Invalid {
                source_name: "keywords".into(),
                message: e.to_string(),
            })?;
        let generic = rules.iter().map(|r| r.yields).collect();
        Ok(Scanner {
            rules,
            keywords,
            selects,
            generic,
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every secret in `data`, in order.
    pub fn scan(&self, data: &[u8]) -> Vec<Hit> {
        // (line start, line end, rules selected on it), in line order.
        // The first keyword of a line is found with a plain leftmost search (which the
        // automaton's prefilter accelerates); then that line alone is searched for every
        // keyword, overlapping, and the scan jumps to the next line.
        let mut lines: Vec<(usize, usize, Vec<u32>)> = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let Some(m) = self
                .keywords
                .find(aho_corasick::Input::new(data).range(pos..))
            else {
                break;
            };
            let start = memchr::memrchr(b'\n', &data[..m.start()]).map_or(0, |i| i + 1);
            let end = memchr::memchr(b'\n', &data[m.end()..]).map_or(data.len(), |i| m.end() + i);
            let mut rules: Vec<u32> = Vec::new();
            for k in self.keywords.find_overlapping_iter(&data[start..end]) {
                for &r in &self.selects[k.pattern().as_usize()] {
                    if !rules.contains(&r) {
                        rules.push(r);
                    }
                }
            }
            lines.push((start, end, rules));
            pos = end + 1;
        }
        let mut hits = Vec::new();
        let mut seen: HashSet<(u32, usize)> = HashSet::new();
        let mut cursor = LineCursor::default();
        for (start, end, rules) in &lines {
            for &r in rules {
                let rule = &self.rules[r as usize];
                let window_end = if rule.multiline {
                    data.len().min(start + MULTILINE_WINDOW)
                } else {
                    *end
                };
                let window = &data[*start..window_end];
                for caps in rule.regex().captures_iter(window) {
                    let Some(g) = caps.get(rule.secret_group) else {
                        continue;
                    };
                    let secret = g.as_bytes();
                    let abs = start + g.start();
                    if secret.is_empty() || !seen.insert((r, abs)) {
                        continue;
                    }
                    if rule.entropy.is_some_and(|min| entropy(secret) < min)
                        || is_placeholder(secret)
                        || (rule.yields && looks_like_identifier(secret))
                    {
                        continue;
                    }
                    let validated = match rule.validator {
                        Some(v) if !validate(v, secret) => continue,
                        Some(_) => true,
                        None => false,
                    };
                    let (line, line_start) = cursor.locate(data, abs);
                    let line_end =
                        memchr::memchr(b'\n', &data[abs..]).map_or(data.len(), |i| abs + i);
                    if memchr::memmem::find(&data[line_start..line_end], ALLOW_MARK).is_some() {
                        continue;
                    }
                    hits.push(Hit {
                        rule: r as usize,
                        start: abs,
                        end: start + g.end(),
                        line,
                        column: abs - line_start + 1,
                        validated,
                    });
                }
            }
        }
        // A generic rule's finding gives way to a specific rule's on overlapping text.
        let specific: Vec<(usize, usize)> = hits
            .iter()
            .filter(|h| !self.generic[h.rule])
            .map(|h| (h.start, h.end))
            .collect();
        hits.retain(|h| {
            !self.generic[h.rule] || !specific.iter().any(|&(s, e)| h.start < e && s < h.end)
        });
        hits.sort_by_key(|h| (h.start, h.rule));
        hits
    }
}

/// Turns byte offsets into line numbers, counting forward from the last answer.
#[derive(Default)]
struct LineCursor {
    pos: usize,
    line: usize,
    line_start: usize,
}

impl LineCursor {
    /// (1-based line of `at`, offset where that line starts).
    fn locate(&mut self, data: &[u8], at: usize) -> (usize, usize) {
        if at < self.pos {
            *self = LineCursor::default();
        }
        for i in memchr::memchr_iter(b'\n', &data[self.pos..at]) {
            self.line += 1;
            self.line_start = self.pos + i + 1;
        }
        self.pos = at;
        (self.line + 1, self.line_start)
    }
}

/// One example's outcome in a `rules check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    pub rule: String,
    pub source: String,
    pub problem: String,
}

/// Proves every rule finds each of its examples and none of its counterexamples, scanning each
/// alone with the whole rule set (so the prefilter, suppressions and validators all take part).
pub fn check_rules(scanner: &Scanner) -> Vec<CheckFailure> {
    let mut out = Vec::new();
    for (i, r) in scanner.rules().iter().enumerate() {
        let fail = |problem: String| CheckFailure {
            rule: r.id.clone(),
            source: r.source.clone(),
            problem,
        };
        if let Err(e) = r.compile() {
            out.push(fail(format!("regex does not compile: {e}")));
            continue;
        }
        if r.examples.len() < 2 {
            out.push(fail("needs at least 2 examples".into()));
        }
        if r.counterexamples.len() < 2 {
            out.push(fail("needs at least 2 counterexamples".into()));
        }
        for e in &r.examples {
            if !scanner.scan(e.as_bytes()).iter().any(|h| h.rule == i) {
                out.push(fail(format!("example not found: {e:?}")));
            }
        }
        for c in &r.counterexamples {
            if scanner.scan(c.as_bytes()).iter().any(|h| h.rule == i) {
                out.push(fail(format!("counterexample matched: {c:?}")));
            }
        }
    }
    out
}
