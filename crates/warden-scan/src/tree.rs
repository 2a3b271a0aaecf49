//! Scanning a directory tree in parallel.

use std::path::Path;
use std::sync::Mutex;

use crate::engine::{Limits, Scanner, skip_reason};
use crate::{Finding, Origin, Stats, findings};

/// How to walk.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkOptions {
    /// Also scan what `.gitignore` (and `.ignore`) exclude.
    pub no_ignore: bool,
    /// Worker threads (0 = one per core).
    pub threads: usize,
}

/// Every secret in the files under `root` (the `.git` directory excepted). Files are read whole,
/// one per worker at a time, so memory stays bounded by `threads × limits.max_bytes`.
pub fn scan_tree(
    root: &Path,
    scanner: &Scanner,
    limits: &Limits,
    options: WalkOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> std::io::Result<(Vec<Finding>, Stats)> {
    if !root.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} does not exist", root.display()),
        ));
    }
    let out = Mutex::new((Vec::new(), Stats::default()));
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(!options.no_ignore)
        .git_exclude(!options.no_ignore)
        .git_global(false)
        .ignore(!options.no_ignore)
        .parents(!options.no_ignore)
        .require_git(false)
        .threads(options.threads)
        .filter_entry(|e| e.file_name() != ".git")
        .build_parallel();
    let single_file = root.is_file();
    walker.run(|| {
        // One read buffer per worker, reused for every file (a fresh allocation per file cost
        // more in page faults than the scan).
        let mut buffer: Vec<u8> = Vec::new();
        let out = &out;
        Box::new(move |entry| {
            let Ok(entry) = entry else {
                return ignore::WalkState::Continue;
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                return ignore::WalkState::Continue;
            }
            let path = entry.path();
            let mut stats = Stats::default();
            let mut found = Vec::new();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if size > limits.max_bytes as u64 {
                stats.skipped(crate::Skip::TooLarge);
            } else if read_into(path, &mut buffer).is_ok() {
                let data = &buffer;
                match skip_reason(data, limits) {
                    Some(s) => stats.skipped(s),
                    None => {
                        stats.files += 1;
                        stats.bytes += data.len() as u64;
                        let hits = scanner.scan(data);
                        if !hits.is_empty() {
                            let rel = if single_file {
                                path.file_name().map_or_else(
                                    || path.display().to_string(),
                                    |n| n.to_string_lossy().into_owned(),
                                )
                            } else {
                                relative(root, path)
                            };
                            let origin = Origin {
                                path: rel,
                                ..Origin::default()
                            };
                            found = findings(scanner, data, &hits, &origin);
                        }
                    }
                }
            }
            progress(stats.bytes);
            if let Ok(mut o) = out.lock() {
                o.0.extend(found);
                o.1.add(&stats);
            }
            ignore::WalkState::Continue
        })
    });
    let (mut found, stats) = out
        .into_inner()
        .map_err(|_| std::io::Error::other("a scanning thread panicked"))?;
    found.sort_by(|a: &Finding, b: &Finding| {
        (&a.path, a.line, a.column, &a.rule).cmp(&(&b.path, b.line, b.column, &b.rule))
    });
    Ok((found, stats))
}

fn read_into(path: &Path, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Read;
    buffer.clear();
    std::fs::File::open(path)?.read_to_end(buffer)?;
    Ok(())
}

/// `path` relative to `root`, with `/` separators.
pub fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}
