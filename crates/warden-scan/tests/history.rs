//! Real git repositories, built with the `git` command: secrets deleted in later commits, several
//! branches, a merge, a renamed file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;
use std::process::Command;

use warden_crypto::token::{TokenKind, generate};
use warden_scan::history::{HistoryOptions, scan_history, scan_staged};
use warden_scan::tree::{WalkOptions, scan_tree};
use warden_scan::{Limits, Scanner};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Alice Author")
        .env("GIT_AUTHOR_EMAIL", "alice@example.org")
        .env("GIT_COMMITTER_NAME", "Alice Author")
        .env("GIT_COMMITTER_EMAIL", "alice@example.org")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Commits with distinct, increasing dates so that "oldest first" is well defined.
fn commit(dir: &Path, n: u32, message: &str) -> String {
    let date = format!("2024-01-{:02}T10:00:00Z", n);
    let out = Command::new("git")
        .args(["-c", "commit.gpgsign=false", "commit", "-q", "-m", message])
        .current_dir(dir)
        .env(
            "GIT_AUTHOR_NAME",
            if n.is_multiple_of(2) {
                "Bob Builder"
            } else {
                "Alice Author"
            },
        )
        .env(
            "GIT_AUTHOR_EMAIL",
            if n.is_multiple_of(2) {
                "bob@example.org"
            } else {
                "alice@example.org"
            },
        )
        .env("GIT_COMMITTER_NAME", "CI")
        .env("GIT_COMMITTER_EMAIL", "ci@example.org")
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    git(dir, &["rev-parse", "HEAD"])
}

fn scanner() -> Scanner {
    Scanner::new(warden_scan::rules::builtin().unwrap()).unwrap()
}

fn noop(_: u64) {}

#[test]
fn history_finds_deleted_secrets_on_every_branch_each_blob_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q"]);
    let deleted = generate(TokenKind::ApiKey);
    let branch_only = generate(TokenKind::ClientSecret);
    let renamed = generate(TokenKind::Operator);

    std::fs::write(d.join("README.md"), "# demo\n").unwrap();
    std::fs::write(
        d.join("config.py"),
        format!("DEBUG = True\nWARDEN_KEY = \"{}\"\n", deleted.expose()),
    )
    .unwrap();
    git(d, &["add", "."]);
    let first = commit(d, 1, "add config");
    // The secret is removed: the working tree is clean, history is not.
    std::fs::write(
        d.join("config.py"),
        "DEBUG = True\nWARDEN_KEY = os.environ[\"WARDEN_KEY\"]\n",
    )
    .unwrap();
    git(d, &["commit", "-qam", "remove the key"]);
    // A branch with its own secret, never merged.
    git(d, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(
        d.join("deploy.yaml"),
        format!("client_secret: {}\n", branch_only.expose()),
    )
    .unwrap();
    git(d, &["add", "."]);
    let on_branch = commit(d, 3, "deploy config");
    git(d, &["checkout", "-q", "main"]);
    // Another branch merged back, with a file that is later renamed.
    git(d, &["checkout", "-q", "-b", "ops"]);
    std::fs::write(
        d.join("ops.env"),
        format!("WARDEN_TOKEN={}\n", renamed.expose()),
    )
    .unwrap();
    git(d, &["add", "."]);
    let introduced = commit(d, 4, "ops token");
    git(d, &["checkout", "-q", "main"]);
    git(
        d,
        &[
            "-c",
            "commit.gpgsign=false",
            "merge",
            "-q",
            "--no-ff",
            "ops",
            "-m",
            "merge ops",
        ],
    );
    std::fs::create_dir(d.join("ops")).unwrap();
    git(d, &["mv", "ops.env", "ops/production.env"]);
    commit(d, 6, "move ops env");

    let s = scanner();
    let (found, stats) =
        scan_history(d, &s, &Limits::default(), &HistoryOptions::default(), &noop).unwrap();
    let by_secret = |secret: &str| {
        found
            .iter()
            .filter(|f| f.secret == secret)
            .collect::<Vec<_>>()
    };
    let f = by_secret(deleted.expose());
    assert_eq!(f.len(), 1, "{found:?}");
    assert_eq!(f[0].rule, "warden-api-key");
    assert_eq!(f[0].path, "config.py");
    assert_eq!(f[0].line, 2);
    assert_eq!(f[0].column, 15);
    assert_eq!(f[0].commit.as_deref(), Some(first.as_str()));
    assert_eq!(f[0].author.as_deref(), Some("Alice Author"));
    assert_eq!(f[0].email.as_deref(), Some("alice@example.org"));
    assert_eq!(f[0].date.as_deref(), Some("2024-01-01T10:00:00Z"));
    assert!(f[0].validated, "the checksum was verified");
    assert!(
        !f[0].preview.contains(deleted.expose()),
        "previews are redacted"
    );

    let f = by_secret(branch_only.expose());
    assert_eq!(f.len(), 1, "a branch that was never merged is scanned");
    assert_eq!(f[0].commit.as_deref(), Some(on_branch.as_str()));
    assert_eq!(f[0].author.as_deref(), Some("Alice Author"));

    // The renamed file has the same blob: read once, reported once, where it first appeared.
    let f = by_secret(renamed.expose());
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].path, "ops.env");
    assert_eq!(f[0].commit.as_deref(), Some(introduced.as_str()));
    assert_eq!(f[0].author.as_deref(), Some("Bob Builder"));
    assert_eq!(found.len(), 3, "{found:?}");

    // Each blob once: as many blobs as `git rev-list --all --objects` lists blobs.
    let listed = git(d, &["rev-list", "--all", "--objects"]);
    let blobs = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|id| git(d, &["cat-file", "-t", id]) == "blob")
        .count();
    assert_eq!(stats.blobs as usize, blobs);
    assert_eq!(stats.commits, 6, "five commits and the merge");

    // The working tree holds only the renamed secret.
    let (tree, _) = scan_tree(d, &s, &Limits::default(), WalkOptions::default(), &noop).unwrap();
    assert_eq!(tree.len(), 1, "{tree:?}");
    assert_eq!(tree[0].path, "ops/production.env");
    assert_eq!(tree[0].secret, renamed.expose());

    // Incremental: since the commit before the move, nothing new (the move adds no blob).
    let since = HistoryOptions {
        since: Some("HEAD~1".into()),
        threads: 0,
    };
    let (inc, stats) = scan_history(d, &s, &Limits::default(), &since, &noop).unwrap();
    assert_eq!(stats.commits, 1);
    assert!(inc.is_empty(), "{inc:?}");
    let since_first = HistoryOptions {
        since: Some(first.clone()),
        threads: 0,
    };
    let (inc, _) = scan_history(d, &s, &Limits::default(), &since_first, &noop).unwrap();
    let secrets: Vec<_> = inc.iter().map(|f| f.secret.as_str()).collect();
    assert!(secrets.contains(&renamed.expose()));
    assert!(
        !secrets.contains(&branch_only.expose()),
        "--since scans what HEAD adds, not other branches"
    );
    assert!(
        !secrets.contains(&deleted.expose()),
        "introduced before --since"
    );
}

#[test]
fn staged_scans_only_what_changes_in_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q"]);
    let old = generate(TokenKind::ApiKey);
    std::fs::write(d.join("old.env"), format!("KEY={}\n", old.expose())).unwrap();
    git(d, &["add", "."]);
    commit(d, 1, "old secret, already committed");
    let new = generate(TokenKind::ApiKey);
    std::fs::write(d.join("new.env"), format!("KEY={}\n", new.expose())).unwrap();
    let unstaged = generate(TokenKind::ApiKey);
    std::fs::write(
        d.join("scratch.env"),
        format!("KEY={}\n", unstaged.expose()),
    )
    .unwrap();
    git(d, &["add", "new.env"]);
    let (found, _) = scan_staged(d, &scanner(), &Limits::default()).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].secret, new.expose());
    assert_eq!(found[0].path, "new.env");
}
