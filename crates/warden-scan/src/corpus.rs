//! A labelled corpus for measuring recall and precision: real open-source text as the
//! background, a synthetic secret of every rule kind planted in it (several per kind), and as many
//! decoys (each rule's counterexamples, and placeholder versions of its secrets).
//!
//! Deterministic: the same background and seed give the same corpus, so the measured figures are
//! stable and the floors CI enforces are not flaky.

use std::path::{Path, PathBuf};

use crate::Scanner;
use crate::rules::{Rule, Validator};

/// A small, seeded generator (xorshift64*): reproducible, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn pick(&mut self, alphabet: &[u8]) -> u8 {
        alphabet[self.below(alphabet.len())]
    }
}

/// One planted secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planted {
    /// Relative path of the corpus file it is in.
    pub path: String,
    pub rule: String,
    pub secret: String,
}

/// A decoy line: a placeholder (no rule may report it) or a rule's counterexample (that rule may
/// not report it; another rule may, since a near miss of one format can still be a secret — a
/// 20-character value assigned to `VULTR_API_KEY` is not a Vultr key but is a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoy {
    pub path: String,
    /// `None` for a placeholder: nothing may report it.
    pub rule: Option<String>,
    pub text: String,
}

/// The corpus as written to disk, and its labels.
#[derive(Debug, Default)]
pub struct Corpus {
    pub planted: Vec<Planted>,
    pub decoys: Vec<Decoy>,
    /// Background files and bytes.
    pub files: usize,
    pub bytes: u64,
}

const HEX_LOWER: &[u8] = b"0123456789abcdef";
const HEX_UPPER: &[u8] = b"0123456789ABCDEF";

/// A fresh secret shaped like `secret`: random-looking runs (8 or more alphanumerics with a digit
/// or mixed case) are redrawn, character by character, from the characters of the same class
/// that the rule's own examples use (so base32 stays base32 and hex stays hex); keywords (literal
/// prefixes) and word-like runs (`services`, `hooks`) stay. Checksummed formats get a valid
/// checksum again; PEM blocks and JWTs are kept whole (their structure is what is checked).
pub fn reshape(secret: &str, rule: &Rule, examples: &[String], rng: &mut Rng) -> String {
    match rule.validator {
        Some(Validator::WardenChecksum) => {
            if let Ok(kind) = warden_crypto::token::parse(secret) {
                return warden_crypto::token::generate(kind).expose().to_owned();
            }
        }
        Some(Validator::Pem | Validator::Jwt) => return secret.to_owned(),
        // Base64 JSON (a JWT-like token): its structure is the format.
        _ if secret.starts_with("eyJ") => return secret.to_owned(),
        _ => {}
    }
    let bytes = secret.as_bytes();
    let keep = fixed(secret, rule, examples);
    // The alphabet of each class, as the examples use it.
    let (mut digits, mut lowers, mut uppers) = (Vec::new(), Vec::new(), Vec::new());
    for e in examples.iter().map(String::as_str).chain([secret]) {
        let fixed = fixed(e, rule, examples);
        for (&b, _) in e.as_bytes().iter().zip(&fixed).filter(|(_, f)| !**f) {
            let class = if b.is_ascii_digit() {
                &mut digits
            } else if b.is_ascii_lowercase() {
                &mut lowers
            } else if b.is_ascii_uppercase() {
                &mut uppers
            } else {
                continue;
            };
            if !class.contains(&b) {
                class.push(b);
            }
        }
    }
    // Hex runs stay hex.
    let mut hex = vec![None; bytes.len()];
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let run = &bytes[start..i];
        let letters = run.iter().any(u8::is_ascii_alphabetic);
        if run.len() >= 8 && letters && run.iter().any(u8::is_ascii_digit) {
            let alphabet = if run
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            {
                Some(HEX_LOWER)
            } else if run
                .iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
            {
                Some(HEX_UPPER)
            } else {
                None
            };
            for slot in &mut hex[start..i] {
                *slot = alphabet;
            }
        }
        i = i.max(start + 1);
    }
    let mut out: Vec<u8> = bytes
        .iter()
        .zip(&keep)
        .zip(&hex)
        .map(|((&b, &k), h)| {
            if k || !b.is_ascii_alphanumeric() {
                b
            } else if let Some(alphabet) = h {
                rng.pick(alphabet)
            } else if b.is_ascii_digit() {
                rng.pick(&digits)
            } else if b.is_ascii_lowercase() {
                rng.pick(&lowers)
            } else {
                rng.pick(&uppers)
            }
        })
        .collect();
    if rule.validator == Some(Validator::GithubChecksum)
        && let Some(us) = out.iter().rposition(|b| *b == b'_')
        && out.len() == us + 37
    {
        let crc = crc32fast::hash(&out[us + 1..us + 31]);
        out.truncate(us + 31);
        out.extend(base62_6(crc));
    }
    String::from_utf8(out).unwrap_or_else(|_| secret.to_owned())
}

/// Which characters of `secret` stay as they are: its keywords (literal prefixes), word-like runs
/// (fewer than 8 alphanumerics, or letters of one case only), and runs every example has (the
/// literal parts of a format, like `IncomingWebhook`).
fn fixed(secret: &str, rule: &Rule, examples: &[String]) -> Vec<bool> {
    let bytes = secret.as_bytes();
    let lower = secret.to_ascii_lowercase();
    let mut keep = vec![false; bytes.len()];
    for k in &rule.keywords {
        let mut from = 0;
        while let Some(i) = lower[from..].find(k.as_str()) {
            let at = from + i;
            for slot in keep.iter_mut().skip(at).take(k.len()) {
                *slot = true;
            }
            from = at + k.len().max(1);
        }
    }
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            keep[i] = true;
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let run = &bytes[start..i];
        let digit = run.iter().any(u8::is_ascii_digit);
        let mixed =
            run.iter().any(u8::is_ascii_lowercase) && run.iter().any(u8::is_ascii_uppercase);
        let everywhere = examples.len() > 1
            && std::str::from_utf8(run).is_ok_and(|r| examples.iter().all(|e| e.contains(r)));
        if run.len() < 8 || !(digit || mixed) || everywhere {
            for slot in &mut keep[start..i] {
                *slot = true;
            }
        } else {
            // The ends of a run are often literal (`T…` and `B…` in Slack webhook ids, `AA` in
            // Telegram and Anthropic tokens).
            for j in [start, start + 1, i - 2, i - 1] {
                keep[j] = true;
            }
        }
    }
    keep
}

fn base62_6(mut n: u32) -> [u8; 6] {
    const B62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut d = [b'0'; 6];
    for slot in d.iter_mut().rev() {
        *slot = B62[(n % 62) as usize];
        n /= 62;
    }
    d
}

/// Text files under `dirs` (sorted, deterministic), up to `max_bytes` in all, named by their path
/// from each directory's parent (`tokio-1.54.1/src/lib.rs`).
pub fn background(dirs: &[PathBuf], max_bytes: u64) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for d in dirs {
        let base = d.parent().unwrap_or(d);
        let mut found: Vec<PathBuf> = ignore::WalkBuilder::new(d)
            .hidden(false)
            .git_ignore(false)
            .ignore(false)
            .sort_by_file_path(|a, b| a.cmp(b))
            .build()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_some_and(|t| t.is_file()))
            .map(|e| e.into_path())
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e, "rs" | "md" | "toml" | "txt" | "json" | "yml" | "yaml")
                })
            })
            .collect();
        found.sort();
        files.extend(
            found
                .into_iter()
                .map(|p| (crate::tree::relative(base, &p), p)),
        );
    }
    let mut out = Vec::new();
    let mut total = 0u64;
    for (name, p) in files {
        let Ok(data) = std::fs::read(&p) else {
            continue;
        };
        if data.len() > 256 << 10 || memchr::memchr(0, &data).is_some() {
            continue;
        }
        total += data.len() as u64;
        if total > max_bytes {
            break;
        }
        out.push((name, data));
    }
    out
}

/// Writes the corpus into `out`: the background files, with `per_rule` secrets of every rule
/// planted at random line boundaries (each in its example's context line), and for every rule
/// its counterexamples and placeholder versions of its examples as decoys.
pub fn build(
    scanner: &Scanner,
    background: Vec<(String, Vec<u8>)>,
    out: &Path,
    per_rule: usize,
    seed: u64,
) -> std::io::Result<Corpus> {
    let mut rng = Rng::new(seed);
    // Background lines, and what is planted before each original line (so that nothing planted
    // ever lands inside another planted block).
    type Planting = (String, Vec<Vec<u8>>, Vec<Vec<String>>);
    let mut files: Vec<Planting> = background
        .into_iter()
        .map(|(name, data)| {
            let lines: Vec<Vec<u8>> = data.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
            let slots = vec![Vec::new(); lines.len() + 1];
            (name, lines, slots)
        })
        .collect();
    if files.is_empty() {
        return Err(std::io::Error::other("no background files"));
    }
    let mut corpus = Corpus {
        files: files.len(),
        ..Corpus::default()
    };
    let insert = |rng: &mut Rng, files: &mut Vec<Planting>, text: String| {
        let f = rng.below(files.len());
        let at = rng.below(files[f].2.len());
        files[f].2[at].push(text);
        files[f].0.clone()
    };
    for (ri, rule) in scanner.rules().iter().enumerate() {
        // The secrets of the rule's examples: the alphabet new ones are drawn from.
        let secrets: Vec<String> = rule
            .examples
            .iter()
            .filter_map(|e| {
                let h = scanner
                    .scan(e.as_bytes())
                    .into_iter()
                    .find(|h| h.rule == ri)?;
                Some(e[h.start..h.end].to_owned())
            })
            .collect();
        for n in 0..per_rule {
            let example = &rule.examples[n % rule.examples.len().max(1)];
            // The example's secret, found by the rule itself.
            let Some(hit) = scanner
                .scan(example.as_bytes())
                .into_iter()
                .find(|h| h.rule == ri)
            else {
                continue;
            };
            let old = &example[hit.start..hit.end];
            let new = reshape(old, rule, &secrets, &mut rng);
            let line = format!("{}{}{}", &example[..hit.start], new, &example[hit.end..]);
            let path = insert(&mut rng, &mut files, line);
            corpus.planted.push(Planted {
                path,
                rule: rule.id.clone(),
                secret: new,
            });
            // A placeholder version of the same line: a decoy.
            let fake = placeholder(old, &mut rng);
            let decoy = format!("{}{}{}", &example[..hit.start], fake, &example[hit.end..]);
            let path = insert(&mut rng, &mut files, decoy.clone());
            corpus.decoys.push(Decoy {
                path,
                rule: None,
                text: decoy,
            });
        }
        for c in &rule.counterexamples {
            let path = insert(&mut rng, &mut files, c.clone());
            corpus.decoys.push(Decoy {
                path,
                rule: Some(rule.id.clone()),
                text: c.clone(),
            });
        }
    }
    std::fs::create_dir_all(out)?;
    for (name, lines, slots) in &files {
        let p = out.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut data: Vec<u8> = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            for text in slot {
                data.extend_from_slice(text.as_bytes());
                data.push(b'\n');
            }
            if let Some(line) = lines.get(i) {
                data.extend_from_slice(line);
                if i + 1 < lines.len() {
                    data.push(b'\n');
                }
            }
        }
        corpus.bytes += data.len() as u64;
        std::fs::write(p, data)?;
    }
    Ok(corpus)
}

/// The secret turned into a placeholder people write in docs and templates.
fn placeholder(secret: &str, rng: &mut Rng) -> String {
    let keep: String = secret.chars().take(4).collect();
    match rng.below(5) {
        0 => format!(
            "{keep}{}",
            "x".repeat(secret.len().saturating_sub(4).max(8))
        ),
        1 => "${SECRET_FROM_ENV}".to_owned(),
        2 => "<your-secret-here>".to_owned(),
        3 => format!(
            "{keep}EXAMPLE{}",
            "0".repeat(secret.len().saturating_sub(11).max(4))
        ),
        _ => "changeme".to_owned(),
    }
}

/// Recall and precision of findings against the labels.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Score {
    pub planted: usize,
    pub found: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub recall: f64,
    pub precision: f64,
    pub f1: f64,
}

/// A finding is a true positive when it is (within) a planted secret of the same file (each
/// planted secret counts once); it is neutral when it lies in another rule's counterexample (a
/// near miss of that format, see [`Decoy`]); anything else is a false positive.
pub fn score(corpus: &Corpus, findings: &[(String, String, String)]) -> Score {
    let planted = &corpus.planted;
    let mut hit = vec![false; planted.len()];
    let mut tp = 0;
    let mut fp = 0;
    for (path, rule, secret) in findings {
        let matches = |p: &Planted| {
            &p.path == path
                && (p.secret == *secret
                    || (secret.len() >= 8
                        && (p.secret.contains(secret.as_str())
                            || secret.contains(p.secret.as_str()))))
        };
        // The same secret may be planted twice in one file: each finding takes one not yet
        // found.
        let m = (0..planted.len())
            .find(|&i| !hit[i] && matches(&planted[i]))
            .or_else(|| planted.iter().position(matches));
        if let Some(i) = m {
            tp += 1;
            hit[i] = true;
            continue;
        }
        let neutral = corpus.decoys.iter().any(|d| {
            &d.path == path
                && d.rule.as_ref().is_some_and(|r| r != rule)
                && d.text.contains(secret.as_str())
        });
        if !neutral {
            fp += 1;
        }
    }
    let found = hit.iter().filter(|h| **h).count();
    let recall = found as f64 / planted.len().max(1) as f64;
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    Score {
        planted: planted.len(),
        found,
        true_positives: tp,
        false_positives: fp,
        recall,
        precision,
        f1: if recall + precision > 0.0 {
            2.0 * recall * precision / (recall + precision)
        } else {
            0.0
        },
    }
}
