//! Recall and precision on a labelled corpus, with floors the build enforces: real open-source
//! text (the sources of crates this workspace builds with, at their locked versions, from the
//! cargo registry) as the background, three synthetic secrets of every rule kind planted in it,
//! and as many decoys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::PathBuf;

use warden_scan::corpus::{background, build, score};
use warden_scan::tree::{WalkOptions, scan_tree};
use warden_scan::{Limits, Scanner};

/// Crates whose sources make the background (ordinary Rust, docs and config, no key fixtures), at
/// the versions `Cargo.lock` pins: the corpus is the same on every machine that builds this
/// workspace.
const BACKGROUND: &[&str] = &[
    "serde_json",
    "regex-syntax",
    "tokio",
    "hyper",
    "clap_builder",
    "time",
    "memchr",
    "aho-corasick",
    "syn",
    "toml",
    "axum",
    "tracing-subscriber",
];

fn background_dirs() -> Vec<PathBuf> {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
        .expect("Cargo.lock");
    // name -> highest locked version
    let mut versions: std::collections::BTreeMap<String, String> = Default::default();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), &name) {
            if BACKGROUND.contains(&n.as_str()) {
                let v = v.trim_matches('"').to_owned();
                let newer = versions.get(n).is_none_or(|old| {
                    let parse = |s: &str| {
                        s.split('.')
                            .map(|p| p.parse::<u64>().unwrap_or(0))
                            .collect::<Vec<_>>()
                    };
                    parse(&v) > parse(old)
                });
                if newer {
                    versions.insert(n.clone(), v);
                }
            }
            name = None;
        }
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let mut dirs = Vec::new();
    for index in std::fs::read_dir(home.join("registry/src")).expect("the cargo registry sources") {
        let index = index.unwrap().path();
        for (n, v) in &versions {
            let d = index.join(format!("{n}-{v}"));
            if d.is_dir()
                && !dirs
                    .iter()
                    .any(|x: &PathBuf| x.ends_with(format!("{n}-{v}")))
            {
                dirs.push(d);
            }
        }
    }
    dirs.sort();
    dirs
}

#[test]
fn recall_and_precision_on_the_labelled_corpus_stay_above_their_floors() {
    let scanner = Scanner::new(warden_scan::rules::builtin().unwrap()).unwrap();
    let bg = background(&background_dirs(), 24 << 20);
    assert!(
        bg.len() > 500,
        "too little background text: {} files",
        bg.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let corpus = build(&scanner, bg, dir.path(), 3, 0x5741_5244_454e).unwrap();
    let (findings, stats) = scan_tree(
        dir.path(),
        &scanner,
        &Limits::default(),
        WalkOptions::default(),
        &|_| {},
    )
    .unwrap();
    let labelled: Vec<(String, String, String)> = findings
        .iter()
        .map(|f| (f.path.clone(), f.rule.clone(), f.secret.clone()))
        .collect();
    let s = score(&corpus, &labelled);
    eprintln!(
        "corpus: {} files, {:.1} MB, {} planted, {} decoys; recall {:.4}, precision {:.4}, F1 {:.4} ({} false positives)",
        corpus.files,
        corpus.bytes as f64 / 1e6,
        corpus.planted.len(),
        corpus.decoys.len(),
        s.recall,
        s.precision,
        s.f1,
        s.false_positives
    );
    for f in &findings {
        let planted = corpus.planted.iter().any(|p| {
            p.path == f.path && (p.secret.contains(&f.secret) || f.secret.contains(&p.secret))
        });
        let neutral = corpus.decoys.iter().any(|d| {
            d.path == f.path
                && d.rule.as_ref().is_some_and(|r| *r != f.rule)
                && d.text.contains(&f.secret)
        });
        if !planted && !neutral {
            eprintln!(
                "  false positive: {} {}:{} {}",
                f.rule, f.path, f.line, f.preview
            );
        }
    }
    for p in &corpus.planted {
        if !findings.iter().any(|f| {
            f.path == p.path && (p.secret.contains(&f.secret) || f.secret.contains(&p.secret))
        }) {
            eprintln!("  missed: {} in {}", p.rule, p.path);
        }
    }
    assert!(stats.files as usize >= corpus.files);
    assert!(corpus.planted.len() >= 3 * 150);
    assert!(s.recall >= 0.95, "recall {:.4} below its floor", s.recall);
    assert!(
        s.precision >= 0.95,
        "precision {:.4} below its floor",
        s.precision
    );
}

#[test]
#[ignore = "a debugging aid: prints how reshaped secrets of some rules fare alone"]
fn reshape_debug() {
    use warden_scan::corpus::{Rng, reshape};
    let scanner = Scanner::new(warden_scan::rules::builtin().unwrap()).unwrap();
    let want: Vec<String> = std::env::var("RULES")
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect();
    let mut rng = Rng::new(7);
    for (ri, r) in scanner.rules().iter().enumerate() {
        if !want.contains(&r.id) {
            continue;
        }
        let secrets: Vec<String> = r
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
        let e = &r.examples[0];
        let h = scanner
            .scan(e.as_bytes())
            .into_iter()
            .find(|h| h.rule == ri)
            .unwrap();
        let new = reshape(&e[h.start..h.end], r, &secrets, &mut rng);
        let line = format!("{}{}{}", &e[..h.start], new, &e[h.end..]);
        let found: Vec<_> = scanner
            .scan(line.as_bytes())
            .iter()
            .map(|h| scanner.rules()[h.rule].id.clone())
            .collect();
        eprintln!(
            "{}\n  old {}\n  new {}\n  found {:?}",
            r.id,
            &e[h.start..h.end],
            new,
            found
        );
    }
}

/// Writes the corpus to `$WARDEN_CORPUS_DIR` with its labels (`labels.jsonl`), for the scan
/// benchmark and for running other scanners on the same text.
#[test]
#[ignore = "writes the corpus for benchmarks; run with WARDEN_CORPUS_DIR=…"]
fn write_corpus() {
    let Some(out) = std::env::var_os("WARDEN_CORPUS_DIR").map(PathBuf::from) else {
        return;
    };
    let scanner = Scanner::new(warden_scan::rules::builtin().unwrap()).unwrap();
    let bg = background(&background_dirs(), 24 << 20);
    let corpus = build(&scanner, bg, &out.join("tree"), 3, 0x5741_5244_454e).unwrap();
    let mut labels = String::new();
    for p in &corpus.planted {
        labels.push_str(
            &serde_json::json!({"path": p.path, "rule": p.rule, "secret": p.secret}).to_string(),
        );
        labels.push('\n');
    }
    std::fs::write(out.join("labels.jsonl"), labels).unwrap();
    let mut decoys = String::new();
    for d in &corpus.decoys {
        decoys.push_str(
            &serde_json::json!({"path": d.path, "rule": d.rule, "text": d.text}).to_string(),
        );
        decoys.push('\n');
    }
    std::fs::write(out.join("decoys.jsonl"), decoys).unwrap();
    eprintln!(
        "{} files, {} bytes, {} planted",
        corpus.files,
        corpus.bytes,
        corpus.planted.len()
    );
}
