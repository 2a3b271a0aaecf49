//! Scanning git history: every commit reachable from any ref, each blob read once.
//!
//! Commits are visited oldest first (by committer time); each commit's tree is walked, skipping
//! every tree and blob already seen, so a blob is attributed to the first commit that carries it
//! (with the path it had there) and read once however many commits share it. The blobs are then
//! read and scanned in parallel.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use gix::ObjectId;

use crate::engine::{Limits, Scanner, skip_reason};
use crate::{Finding, Origin, Stats, findings};

/// Why history could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HistoryError(String);

fn err(what: &str, e: impl std::fmt::Display) -> HistoryError {
    HistoryError(format!("{what}: {e}"))
}

/// Who and when, for findings from a commit.
#[derive(Debug, Clone)]
struct CommitInfo {
    id: String,
    author: String,
    email: String,
    date: String,
}

/// A blob to scan and where it was first seen.
struct Pending {
    blob: ObjectId,
    path: String,
    commit: usize,
}

fn rfc3339(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// What to scan.
#[derive(Debug, Clone, Default)]
pub struct HistoryOptions {
    /// Only commits reachable from HEAD but not from this revision, and only blobs its tree
    /// does not hold (incremental CI scans).
    pub since: Option<String>,
    /// Worker threads for reading and scanning blobs (0 = one per core).
    pub threads: usize,
}

/// Whether `path` is inside a git repository.
pub fn is_repository(path: &Path) -> bool {
    gix::discover(path).is_ok()
}

/// Every secret in the history of the repository at `path`.
pub fn scan_history(
    path: &Path,
    scanner: &Scanner,
    limits: &Limits,
    options: &HistoryOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Vec<Finding>, Stats), HistoryError> {
    let repo = gix::discover(path).map_err(|e| err("opening the repository", e))?;
    // Every ref's commit (branches, tags, remotes, stashes) and HEAD; with `since`, only what
    // HEAD adds (a CI job scanning its own changes).
    let mut tips: Vec<ObjectId> = Vec::new();
    if options.since.is_none() {
        let refs = repo.references().map_err(|e| err("reading refs", e))?;
        for r in refs.all().map_err(|e| err("reading refs", e))? {
            let Ok(mut r) = r else { continue };
            if let Ok(c) = r.peel_to_commit() {
                tips.push(c.id);
            }
        }
    }
    if let Ok(c) = repo.head_commit() {
        tips.push(c.id);
    }
    tips.sort();
    tips.dedup();

    let mut seen_trees: HashSet<ObjectId> = HashSet::new();
    let mut seen_blobs: HashSet<ObjectId> = HashSet::new();
    let mut hidden: HashSet<ObjectId> = HashSet::new();
    if let Some(rev) = &options.since {
        let since = repo
            .rev_parse_single(rev.as_str())
            .map_err(|e| err(&format!("resolving {rev:?}"), e))?
            .object()
            .map_err(|e| err(&format!("resolving {rev:?}"), e))?
            .peel_to_commit()
            .map_err(|e| err(&format!("{rev:?} is not a commit"), e))?;
        for info in repo
            .rev_walk([since.id])
            .all()
            .map_err(|e| err("walking history", e))?
        {
            hidden.insert(info.map_err(|e| err("walking history", e))?.id);
        }
        let tree = since.tree().map_err(|e| err("reading a tree", e))?;
        mark_tree(&repo, tree.id, &mut seen_trees, &mut seen_blobs)?;
    }

    // Every commit, oldest first.
    let mut commits: Vec<(i64, ObjectId)> = Vec::new();
    if !tips.is_empty() {
        for info in repo
            .rev_walk(tips)
            .all()
            .map_err(|e| err("walking history", e))?
        {
            let info = info.map_err(|e| err("walking history", e))?;
            if hidden.contains(&info.id) {
                continue;
            }
            let c = repo
                .find_commit(info.id)
                .map_err(|e| err("reading a commit", e))?;
            let t = c.time().map(|t| t.seconds).unwrap_or(0);
            commits.push((t, info.id));
        }
    }
    commits.sort();

    let mut infos: Vec<CommitInfo> = Vec::with_capacity(commits.len());
    let mut pending: Vec<Pending> = Vec::new();
    for (t, id) in &commits {
        let c = repo
            .find_commit(*id)
            .map_err(|e| err("reading a commit", e))?;
        let (author, email, when) = match c.author() {
            Ok(a) => (
                a.name.to_string(),
                a.email.to_string(),
                a.time().map(|t| t.seconds).unwrap_or(*t),
            ),
            Err(_) => (String::new(), String::new(), *t),
        };
        infos.push(CommitInfo {
            id: id.to_string(),
            author,
            email,
            date: rfc3339(when),
        });
        let tree = c
            .tree_id()
            .map_err(|e| err("reading a commit", e))?
            .detach();
        let commit = infos.len() - 1;
        collect(
            &repo,
            tree,
            String::new(),
            commit,
            &mut seen_trees,
            &mut seen_blobs,
            &mut pending,
        )?;
    }

    let mut stats = Stats {
        commits: commits.len() as u64,
        blobs: pending.len() as u64,
        ..Stats::default()
    };
    let sync = repo.into_sync();
    let next = AtomicUsize::new(0);
    let out = Mutex::new((Vec::new(), Stats::default()));
    let threads = if options.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        options.threads
    };
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let repo = sync.to_thread_local();
                let mut found = Vec::new();
                let mut local = Stats::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = pending.get(i) else { break };
                    let Ok(blob) = repo.find_object(p.blob) else {
                        continue;
                    };
                    let data = &blob.data;
                    match skip_reason(data, limits) {
                        Some(s) => local.skipped(s),
                        None => {
                            local.files += 1;
                            local.bytes += data.len() as u64;
                            let hits = scanner.scan(data);
                            if !hits.is_empty() {
                                let c = &infos[p.commit];
                                let origin = Origin {
                                    path: p.path.clone(),
                                    commit: Some(c.id.clone()),
                                    author: Some(c.author.clone()),
                                    email: Some(c.email.clone()),
                                    date: Some(c.date.clone()),
                                };
                                found.extend(findings(scanner, data, &hits, &origin));
                            }
                            progress(data.len() as u64);
                        }
                    }
                }
                if let Ok(mut o) = out.lock() {
                    o.0.extend(found);
                    o.1.add(&local);
                }
            });
        }
    });
    let (mut found, scanned) = out
        .into_inner()
        .map_err(|_| HistoryError("a scanning thread panicked".into()))?;
    stats.add(&scanned);
    found.sort_by(|a: &Finding, b: &Finding| {
        (&a.date, &a.commit, &a.path, a.line).cmp(&(&b.date, &b.commit, &b.path, b.line))
    });
    Ok((found, stats))
}

/// Records the blobs of `tree` not seen before, with their paths, for `commit`.
fn collect(
    repo: &gix::Repository,
    tree: ObjectId,
    prefix: String,
    commit: usize,
    seen_trees: &mut HashSet<ObjectId>,
    seen_blobs: &mut HashSet<ObjectId>,
    pending: &mut Vec<Pending>,
) -> Result<(), HistoryError> {
    if !seen_trees.insert(tree) {
        return Ok(());
    }
    let t = repo.find_tree(tree).map_err(|e| err("reading a tree", e))?;
    let mut subtrees = Vec::new();
    for entry in t.iter() {
        let entry = entry.map_err(|e| err("reading a tree", e))?;
        let name = entry.filename().to_string();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let mode = entry.mode();
        let id = entry.oid().to_owned();
        if mode.is_tree() {
            subtrees.push((id, path));
        } else if mode.is_blob() && seen_blobs.insert(id) {
            pending.push(Pending {
                blob: id,
                path,
                commit,
            });
        }
    }
    for (id, path) in subtrees {
        collect(repo, id, path, commit, seen_trees, seen_blobs, pending)?;
    }
    Ok(())
}

/// Marks everything in `tree` as seen (the `--since` base).
fn mark_tree(
    repo: &gix::Repository,
    tree: ObjectId,
    seen_trees: &mut HashSet<ObjectId>,
    seen_blobs: &mut HashSet<ObjectId>,
) -> Result<(), HistoryError> {
    let mut sink = Vec::new();
    collect(
        repo,
        tree,
        String::new(),
        0,
        seen_trees,
        seen_blobs,
        &mut sink,
    )?;
    Ok(())
}

/// The secrets in what is staged: every index entry whose blob differs from `HEAD`'s at that
/// path (for a pre-commit hook).
pub fn scan_staged(
    path: &Path,
    scanner: &Scanner,
    limits: &Limits,
) -> Result<(Vec<Finding>, Stats), HistoryError> {
    let repo = gix::discover(path).map_err(|e| err("opening the repository", e))?;
    let index = repo
        .index_or_empty()
        .map_err(|e| err("reading the index", e))?;
    let head_tree = repo.head_commit().ok().and_then(|c| c.tree().ok());
    let mut found = Vec::new();
    let mut stats = Stats::default();
    for entry in index.entries() {
        let rel = entry.path(&index).to_string();
        use gix::index::entry::Mode;
        if entry.mode != Mode::FILE && entry.mode != Mode::FILE_EXECUTABLE {
            continue;
        }
        let unchanged = head_tree.as_ref().is_some_and(|t| {
            t.lookup_entry_by_path(&rel)
                .ok()
                .flatten()
                .is_some_and(|e| e.object_id() == entry.id)
        });
        if unchanged {
            continue;
        }
        let Ok(blob) = repo.find_object(entry.id) else {
            continue;
        };
        match skip_reason(&blob.data, limits) {
            Some(s) => stats.skipped(s),
            None => {
                stats.files += 1;
                stats.bytes += blob.data.len() as u64;
                let hits = scanner.scan(&blob.data);
                let origin = Origin {
                    path: rel,
                    ..Origin::default()
                };
                found.extend(findings(scanner, &blob.data, &hits, &origin));
            }
        }
    }
    Ok((found, stats))
}
