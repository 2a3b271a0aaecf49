//! The scanner benchmark (`warden-bench scan --corpus DIR`): Warden and peer scanners on the same
//! labelled corpus (written by `bench/run scan`), each run `--runs` times; recall, precision, F1
//! and MB/s (median wall time) side by side.
//!
//! Every tool is scored the same way, by line: a reported line holding (the start of) a planted
//! secret is a true positive, each planted secret counting once; a line holding another rule's
//! counterexample is neutral (a near miss of one format can still be a secret); anything else is a
//! false positive.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::median;

/// Labelled lines of the corpus, by path: planted secrets (start line, end line) and
/// counterexample lines.
struct Labels {
    planted: HashMap<String, Vec<(usize, usize)>>,
    neutral: HashMap<String, HashSet<usize>>,
    total: usize,
    bytes: u64,
}

fn line_of(text: &str, needle: &str) -> Option<(usize, usize)> {
    let at = text.find(needle)?;
    let start = text[..at].matches('\n').count() + 1;
    Some((start, start + needle.matches('\n').count()))
}

fn load_labels(corpus: &Path) -> Result<Labels> {
    let tree = corpus.join("tree");
    let mut files: HashMap<String, String> = HashMap::new();
    let mut read = |p: &str| -> Result<String> {
        if let Some(t) = files.get(p) {
            return Ok(t.clone());
        }
        let t = String::from_utf8_lossy(&std::fs::read(tree.join(p))?).into_owned();
        files.insert(p.to_owned(), t.clone());
        Ok(t)
    };
    let mut planted: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
    let mut total = 0;
    for line in std::fs::read_to_string(corpus.join("labels.jsonl"))?.lines() {
        let v: Value = serde_json::from_str(line)?;
        let (Some(path), Some(secret)) = (v["path"].as_str(), v["secret"].as_str()) else {
            continue;
        };
        let text = read(path)?;
        total += 1;
        // Identical secrets planted twice in one file: each occurrence.
        let mut from = 0;
        let mut placed = false;
        while let Some(i) = text[from..].find(secret) {
            let at = from + i;
            let start = text[..at].matches('\n').count() + 1;
            let span = (start, start + secret.matches('\n').count());
            let list = planted.entry(path.to_owned()).or_default();
            if !list.contains(&span) {
                list.push(span);
                placed = true;
                break;
            }
            from = at + 1;
        }
        if !placed {
            bail!("a planted secret is not in {path}");
        }
    }
    let mut neutral: HashMap<String, HashSet<usize>> = HashMap::new();
    for line in std::fs::read_to_string(corpus.join("decoys.jsonl"))?.lines() {
        let v: Value = serde_json::from_str(line)?;
        if v["rule"].is_null() {
            continue;
        }
        let (Some(path), Some(t)) = (v["path"].as_str(), v["text"].as_str()) else {
            continue;
        };
        let text = read(path)?;
        if let Some((s, e)) = line_of(&text, t) {
            neutral.entry(path.to_owned()).or_default().extend(s..=e);
        }
    }
    let bytes = dir_bytes(&tree)?;
    Ok(Labels {
        planted,
        neutral,
        total,
        bytes,
    })
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                n += e.metadata()?.len();
            }
        }
    }
    Ok(n)
}

/// (recall, precision, f1, false positives) of reported (path, line)s.
fn score(labels: &Labels, reported: &[(String, usize)]) -> (f64, f64, f64, usize) {
    let mut hit: HashSet<(String, usize)> = HashSet::new();
    let mut tp = 0usize;
    let mut fp = 0usize;
    let mut seen: HashSet<(String, usize)> = HashSet::new();
    for (path, line) in reported {
        if !seen.insert((path.clone(), *line)) {
            continue;
        }
        let planted = labels.planted.get(path).and_then(|spans| {
            spans
                .iter()
                .find(|(s, e)| (*s..=*e).contains(line))
                .map(|(s, _)| *s)
        });
        match planted {
            Some(start) => {
                tp += 1;
                hit.insert((path.clone(), start));
            }
            None if labels.neutral.get(path).is_some_and(|n| n.contains(line)) => {}
            None => fp += 1,
        }
    }
    let recall = hit.len() as f64 / labels.total.max(1) as f64;
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let f1 = if recall + precision > 0.0 {
        2.0 * recall * precision / (recall + precision)
    } else {
        0.0
    };
    (recall, precision, f1, fp)
}

fn timed(mut cmd: Command) -> Result<(f64, Vec<u8>)> {
    let t0 = Instant::now();
    let out = cmd.output().context("running a scanner")?;
    let secs = t0.elapsed().as_secs_f64();
    if !out.status.success() && out.status.code() != Some(1) {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((secs, out.stdout))
}

fn relative(tree: &Path, p: &str) -> String {
    let p = Path::new(p);
    p.strip_prefix(tree)
        .unwrap_or(p)
        .to_string_lossy()
        .trim_start_matches("./")
        .to_owned()
}

/// Wall seconds and the (path, line)s a scanner reported.
type Run = Result<(f64, Vec<(String, usize)>)>;

/// One scanner: how to run it on `tree` and read its (path, line)s.
struct Tool {
    name: &'static str,
    run: Box<dyn Fn(&Path) -> Run>,
}

fn warden(bin: PathBuf) -> Tool {
    Tool {
        name: "warden scan",
        run: Box::new(move |tree| {
            let mut c = Command::new(&bin);
            c.args(["scan", "--no-history", "--format", "jsonl"])
                .arg(tree);
            let (secs, out) = timed(c)?;
            let mut found = Vec::new();
            for line in String::from_utf8_lossy(&out).lines() {
                let v: Value = serde_json::from_str(line)?;
                if let (Some(p), Some(l)) = (v["path"].as_str(), v["line"].as_u64()) {
                    found.push((p.to_owned(), l as usize));
                }
            }
            Ok((secs, found))
        }),
    }
}

fn detect_secrets(bin: PathBuf) -> Tool {
    Tool {
        name: "detect-secrets",
        run: Box::new(move |tree| {
            let mut c = Command::new(&bin);
            c.args(["scan", "--all-files"]).current_dir(tree);
            let (secs, out) = timed(c)?;
            let v: Value = serde_json::from_slice(&out)?;
            let mut found = Vec::new();
            if let Some(results) = v["results"].as_object() {
                for (file, list) in results {
                    for r in list.as_array().into_iter().flatten() {
                        if let Some(l) = r["line_number"].as_u64() {
                            found.push((relative(tree, file), l as usize));
                        }
                    }
                }
            }
            Ok((secs, found))
        }),
    }
}

fn ripsecrets(bin: PathBuf) -> Tool {
    Tool {
        name: "ripsecrets",
        run: Box::new(move |tree| {
            let mut c = Command::new(&bin);
            c.arg(".").current_dir(tree);
            let (secs, out) = timed(c)?;
            let mut found = Vec::new();
            // `path:line:…` per finding.
            for line in String::from_utf8_lossy(&out).lines() {
                let mut parts = line.splitn(3, ':');
                if let (Some(p), Some(l)) = (parts.next(), parts.next())
                    && let Ok(l) = l.trim().parse::<usize>()
                {
                    found.push((relative(tree, p), l));
                }
            }
            Ok((secs, found))
        }),
    }
}

/// Runs every available tool `runs` times on the corpus and prints the table and a JSON summary.
pub fn main(
    warden_bin: &Path,
    corpus: &Path,
    detect_secrets_bin: Option<PathBuf>,
    ripsecrets_bin: Option<PathBuf>,
    runs: usize,
) -> Result<()> {
    let labels = load_labels(corpus)?;
    let tree = corpus.join("tree");
    // The peers run inside the tree: their paths must not be relative.
    let absolute = |p: Option<PathBuf>| -> Result<Option<PathBuf>> {
        p.map(|p| {
            p.canonicalize()
                .with_context(|| format!("{} (is it installed?)", p.display()))
        })
        .transpose()
    };
    let detect_secrets_bin = absolute(detect_secrets_bin)?;
    let ripsecrets_bin = absolute(ripsecrets_bin)?;
    let mut tools = vec![warden(warden_bin.to_path_buf())];
    if let Some(b) = ripsecrets_bin {
        tools.push(ripsecrets(b));
    }
    if let Some(b) = detect_secrets_bin {
        tools.push(detect_secrets(b));
    }
    eprintln!(
        "corpus: {:.1} MB, {} planted secrets; {} runs each",
        labels.bytes as f64 / 1e6,
        labels.total,
        runs
    );
    let mut rows = Vec::new();
    for t in &tools {
        let mut times = Vec::new();
        let mut found = Vec::new();
        for _ in 0..runs.max(1) {
            let (secs, f) = (t.run)(&tree)?;
            times.push(secs);
            found = f;
        }
        let secs = median(times);
        let (recall, precision, f1, fp) = score(&labels, &found);
        let mbps = labels.bytes as f64 / 1e6 / secs;
        eprintln!(
            "  {:<16} recall {recall:.3}  precision {precision:.3}  F1 {f1:.3}  ({fp} false positives)  {secs:.2} s  {mbps:.0} MB/s",
            t.name
        );
        rows.push(json!({
            "tool": t.name, "recall": recall, "precision": precision, "f1": f1,
            "false_positives": fp, "seconds_median": secs, "mb_per_s": mbps,
        }));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "corpus_mb": labels.bytes as f64 / 1e6,
            "planted": labels.total,
            "runs": runs,
            "results": rows,
        }))?
    );
    Ok(())
}
