//! `warden scan`: find secrets in a working tree and its git history (offline).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use warden_scan::history::{HistoryOptions, is_repository, scan_history, scan_staged};
use warden_scan::tree::{WalkOptions, scan_tree};
use warden_scan::{Finding, Limits, Scanner, Stats, report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Jsonl,
    Sarif,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ScanArgs {
    #[command(subcommand)]
    pub cmd: Option<ScanCmd>,
    /// What to scan: a directory (its files, and its git history if it is a repository) or a
    /// file.
    pub path: Option<PathBuf>,
    /// Skip the git history.
    #[arg(long)]
    pub no_history: bool,
    /// Skip the working tree (history only).
    #[arg(long, conflicts_with = "no_history")]
    pub no_tree: bool,
    /// Only what is staged for the next commit (a pre-commit hook).
    #[arg(long, conflicts_with_all = ["no_history", "no_tree", "since"])]
    pub staged: bool,
    /// Only commits after this revision, and blobs its tree does not hold (incremental CI
    /// scans); skips the working tree.
    #[arg(long)]
    pub since: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write the report here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// A previous JSON report (or JSON Lines) whose findings are known and not reported again.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Include the secrets themselves in the report (otherwise only a redacted preview).
    #[arg(long)]
    pub show_secrets: bool,
    /// More rules (TOML), in addition to the built-in ones.
    #[arg(long = "rules")]
    pub rules: Vec<PathBuf>,
    /// Also scan files that .gitignore excludes.
    #[arg(long)]
    pub no_ignore: bool,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Skip files larger than this many bytes.
    #[arg(long, default_value_t = 32 << 20)]
    pub max_file_size: usize,
    /// Send the findings to this Warden server (`/v1/findings`, with --token or WARDEN_TOKEN):
    /// each becomes an inventory finding; a live Warden credential is revoked at once.
    #[arg(long)]
    pub report_to: Option<String>,
    /// The repository's name in reported findings [default: the scanned directory's name].
    #[arg(long)]
    pub repository: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ScanCmd {
    /// The rules.
    #[command(subcommand)]
    Rules(RulesCmd),
}

#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    /// Prove every rule finds its examples and none of its counterexamples.
    Check {
        /// More rule files to check with the built-in ones.
        #[arg(long = "rules")]
        rules: Vec<PathBuf>,
    },
    /// List the rules.
    List,
}

fn scanner(extra: &[PathBuf]) -> Result<Scanner> {
    let mut rules = warden_scan::rules::builtin().context("the built-in rules")?;
    for p in extra {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        rules.extend(warden_scan::rules::parse(&p.display().to_string(), &text)?);
    }
    Ok(Scanner::new(rules)?)
}

/// A byte counter on standard error while a long scan runs (only on a terminal).
fn progress_bar(enabled: bool) -> Option<indicatif::ProgressBar> {
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {bytes} scanned ({bytes_per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(pb)
}

/// Findings as the server takes them; Warden's own secrets go with them (the server recognises
/// the credential by its keyed hash), no other secret leaves the machine.
fn reports(
    found: &[Finding],
    root: &std::path::Path,
    repository: Option<&str>,
) -> Vec<warden_types::FindingReport> {
    let owners = warden_scan::owners::CodeOwners::load(root);
    let repository = repository.map(str::to_owned).or_else(|| {
        std::fs::canonicalize(root)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    });
    found
        .iter()
        .map(|f| warden_types::FindingReport {
            fingerprint: f.fingerprint.clone(),
            rule: f.rule.clone(),
            severity: f.severity.as_str().to_owned(),
            repository: repository.clone(),
            path: f.path.clone(),
            line: f.line as u64,
            commit: f.commit.clone(),
            author: f.author.clone(),
            email: f.email.clone(),
            preview: f.preview.chars().take(500).collect(),
            suggested_owner: owners
                .as_ref()
                .and_then(|o| o.owners_of(&f.path))
                .or_else(|| f.email.clone()),
            secret: f.rule.starts_with("warden-").then(|| f.secret.clone()),
        })
        .collect()
}

/// Sends findings in batches; prints what the server did.
fn report(client: &warden_client::Client, reports: Vec<warden_types::FindingReport>) -> Result<()> {
    let rt = tokio::runtime::Handle::current();
    let (mut created, mut updated, mut revoked) = (0, 0, 0);
    for batch in reports.chunks(100) {
        let req = warden_types::ReportFindingsRequest {
            findings: batch.to_vec(),
        };
        let r = rt
            .block_on(client.report_findings(&req))
            .context("reporting the findings")?;
        created += r.created;
        updated += r.updated;
        revoked += r.revoked;
        for f in r.items.iter().filter(|f| f.action.is_some()) {
            eprintln!(
                "warden: {} credential {} of identity {} (team {}) found in {}: {}",
                f.rule,
                f.credential_id.map(|c| c.to_string()).unwrap_or_default(),
                f.identity.as_deref().unwrap_or("?"),
                f.owner.as_deref().unwrap_or("?"),
                f.path,
                f.action.as_deref().unwrap_or("")
            );
        }
    }
    eprintln!(
        "reported {} findings: {created} new, {updated} seen before, {revoked} Warden credentials revoked",
        reports.len()
    );
    Ok(())
}

pub fn run(
    a: ScanArgs,
    json_flag: bool,
    reporter: Option<warden_client::Client>,
) -> Result<ExitCode> {
    match a.cmd {
        Some(ScanCmd::Rules(RulesCmd::Check { rules })) => return rules_check(&rules, json_flag),
        Some(ScanCmd::Rules(RulesCmd::List)) => return rules_list(json_flag),
        None => {}
    }
    let format = if json_flag && a.format == Format::Text {
        Format::Json
    } else {
        a.format
    };
    let root = a.path.clone().unwrap_or_else(|| PathBuf::from("."));
    if !root.exists() {
        bail!("{} does not exist", root.display());
    }
    let scanner = scanner(&a.rules)?;
    let limits = Limits {
        max_bytes: a.max_file_size,
        ..Limits::default()
    };
    let pb = progress_bar(format == Format::Text || a.output.is_some());
    let tick = |n: u64| {
        if let Some(pb) = &pb {
            pb.inc(n);
        }
    };
    let mut stats = Stats::default();
    let mut found: Vec<Finding> = Vec::new();
    let repo = root.is_dir() && is_repository(&root);
    if a.staged {
        if !repo {
            bail!("--staged needs a git repository");
        }
        let (f, s) = scan_staged(&root, &scanner, &limits)?;
        found = f;
        stats = s;
    } else {
        let tree = !a.no_tree && a.since.is_none();
        let history = repo && !a.no_history;
        if a.since.is_some() && !repo {
            bail!("--since needs a git repository");
        }
        if tree {
            if let Some(pb) = &pb {
                pb.set_message("working tree:");
            }
            let (f, s) = scan_tree(
                &root,
                &scanner,
                &limits,
                WalkOptions {
                    no_ignore: a.no_ignore,
                    threads: a.threads,
                },
                &tick,
            )?;
            found = f;
            stats.add(&s);
        }
        if history {
            if let Some(pb) = &pb {
                pb.set_message("git history:");
            }
            let (h, s) = scan_history(
                &root,
                &scanner,
                &limits,
                &HistoryOptions {
                    since: a.since.clone(),
                    threads: a.threads,
                },
                &tick,
            )?;
            stats.commits = s.commits;
            stats.blobs = s.blobs;
            stats.skipped_binary += s.skipped_binary;
            stats.skipped_large += s.skipped_large;
            stats.skipped_minified += s.skipped_minified;
            if !tree {
                stats.files += s.files;
                stats.bytes += s.bytes;
            }
            found = merge(found, h);
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if let Some(b) = &a.baseline {
        let text =
            std::fs::read_to_string(b).with_context(|| format!("reading {}", b.display()))?;
        let known = report::baseline_fingerprints(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", b.display()))?;
        found.retain(|f| !known.contains(&f.fingerprint));
    }
    if let Some(client) = &reporter {
        report(client, reports(&found, &root, a.repository.as_deref()))?;
    }
    let body = match format {
        Format::Text => {
            let colour = a.output.is_none() && std::io::stdout().is_terminal();
            report::text(&found, &stats, colour, a.show_secrets)
        }
        Format::Json => {
            let mut s =
                serde_json::to_string_pretty(&report::json(&found, &stats, a.show_secrets))?;
            s.push('\n');
            s
        }
        Format::Jsonl => report::json_lines(&found, a.show_secrets),
        Format::Sarif => {
            let mut s = serde_json::to_string_pretty(&report::sarif(
                &found,
                scanner.rules(),
                env!("CARGO_PKG_VERSION"),
            ))?;
            s.push('\n');
            s
        }
    };
    match &a.output {
        Some(p) => std::fs::write(p, body).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout().write_all(body.as_bytes())?,
    }
    Ok(if found.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Working-tree findings with what history knows about them (who introduced the secret), and the
/// history findings no longer in the tree.
fn merge(tree: Vec<Finding>, history: Vec<Finding>) -> Vec<Finding> {
    let mut introduced: HashMap<String, Finding> = HashMap::new();
    for h in &history {
        introduced
            .entry(h.fingerprint.clone())
            .or_insert_with(|| h.clone());
    }
    let mut out = Vec::with_capacity(tree.len() + history.len());
    let mut in_tree = std::collections::HashSet::new();
    for mut t in tree {
        if let Some(h) = introduced.get(&t.fingerprint) {
            t.commit = h.commit.clone();
            t.author = h.author.clone();
            t.email = h.email.clone();
            t.date = h.date.clone();
        }
        in_tree.insert(t.fingerprint.clone());
        out.push(t);
    }
    let mut reported = std::collections::HashSet::new();
    for h in history {
        if !in_tree.contains(&h.fingerprint) && reported.insert(h.fingerprint.clone()) {
            out.push(h);
        }
    }
    out
}

fn rules_check(extra: &[PathBuf], json: bool) -> Result<ExitCode> {
    let scanner = scanner(extra)?;
    let failures = warden_scan::check_rules(&scanner);
    let n = scanner.rules().len();
    let examples: usize = scanner
        .rules()
        .iter()
        .map(|r| r.examples.len() + r.counterexamples.len())
        .sum();
    if json {
        let v = serde_json::json!({
            "rules": n,
            "examples": examples,
            "failures": failures.iter().map(|f| serde_json::json!({
                "rule": f.rule, "source": f.source, "problem": f.problem,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for f in &failures {
            println!("FAIL {} ({}): {}", f.rule, f.source, f.problem);
        }
        println!(
            "{n} rules, {examples} examples and counterexamples: {}",
            if failures.is_empty() {
                "all pass".to_owned()
            } else {
                format!("{} failures", failures.len())
            }
        );
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn rules_list(json: bool) -> Result<ExitCode> {
    let scanner = scanner(&[])?;
    if json {
        let v: Vec<_> = scanner
            .rules()
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "description": r.description, "severity": r.severity,
                    "keywords": r.keywords, "source": r.source,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for r in scanner.rules() {
            println!("{:<40} {:<9} {}", r.id, r.severity.as_str(), r.description);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum FindingCmd {
    /// List findings (admins and auditors).
    List {
        #[arg(long)]
        status: Option<String>,
        /// `warden_credential`, `unmanaged`, `rotation_failed` or `hygiene`.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Mark a finding acknowledged (someone is on it).
    Ack {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Mark a finding resolved (the secret is rotated and gone).
    Resolve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Suppress a finding (a false positive, or accepted): needs a reason.
    Suppress {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

pub async fn run_finding(
    c: &warden_client::Client,
    cmd: FindingCmd,
    json: bool,
) -> Result<ExitCode> {
    use warden_types::{FindingStatus, UpdateFindingRequest};
    let (id, status, reason) = match cmd {
        FindingCmd::List { status, kind } => {
            let status = status
                .map(|s| s.parse::<FindingStatus>())
                .transpose()
                .map_err(|e| anyhow::anyhow!(e))?;
            let kind = kind
                .map(|s| s.parse::<warden_types::FindingKind>())
                .transpose()
                .map_err(|e| anyhow::anyhow!(e))?;
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = c.list_findings(status, kind, cursor.as_deref()).await?;
                items.extend(page.items);
                match page.next_cursor {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            let page = warden_types::FindingPage {
                items,
                next_cursor: None,
            };
            crate::output::print(json, &page, || {
                let rows: Vec<Vec<String>> = page
                    .items
                    .iter()
                    .map(|f| {
                        vec![
                            f.id.to_string(),
                            f.status.to_string(),
                            f.kind.to_string(),
                            f.rule.clone(),
                            format!("{}:{}", f.path, f.line),
                            f.identity
                                .clone()
                                .or(f.suggested_owner.clone())
                                .unwrap_or_default(),
                            f.action.clone().unwrap_or_default(),
                            f.times_seen.to_string(),
                        ]
                    })
                    .collect();
                crate::output::table(
                    &[
                        "ID",
                        "STATUS",
                        "KIND",
                        "RULE",
                        "WHERE",
                        "IDENTITY/OWNER",
                        "ACTION",
                        "SEEN",
                    ],
                    &rows,
                )
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        FindingCmd::Ack { id, reason } => (id, FindingStatus::Acknowledged, reason),
        FindingCmd::Resolve { id, reason } => (id, FindingStatus::Resolved, reason),
        FindingCmd::Suppress { id, reason } => (id, FindingStatus::Suppressed, Some(reason)),
    };
    let f = c
        .update_finding(&id, &UpdateFindingRequest { status, reason })
        .await?;
    crate::output::print(json, &f, || format!("finding {} is {}", f.id, f.status))?;
    Ok(ExitCode::SUCCESS)
}
