//! `warden hygiene`: run the hygiene checks, see the background jobs.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum HygieneCmd {
    /// Run every hygiene check now (admins) and print what each rule found; the findings are
    /// listed with `warden finding list --kind hygiene`.
    Run,
    /// Background jobs: last run, outcome, trigger (admins and auditors).
    Jobs,
}

#[derive(Debug, Subcommand)]
pub enum ReviewCmd {
    /// Start a campaign (admins): each owning team attests each of its NHIs.
    Start {
        name: String,
        /// Days the teams have; unattested NHIs are escalated after.
        #[arg(long, default_value_t = 14)]
        due_days: u32,
        /// Only this team's NHIs.
        #[arg(long)]
        team: Option<String>,
    },
    /// Campaigns and their counts.
    List,
    /// A campaign's queue (members: their teams' NHIs), unattested first.
    Queue { id: String },
    /// Attest an NHI: keep it, reduce it, or retire it now — with a reason.
    Attest {
        id: String,
        identity: String,
        #[arg(long, value_parser = ["keep", "reduce", "retire"])]
        decision: String,
        #[arg(long)]
        reason: String,
        /// With `--decision reduce`: a scope to take away now (repeat for several).
        #[arg(long = "remove-scope")]
        remove_scopes: Vec<String>,
    },
    /// Close a campaign (admins).
    Close { id: String },
}

fn campaign_rows(cs: &[warden_types::ReviewCampaign]) -> String {
    let rows: Vec<Vec<String>> = cs
        .iter()
        .map(|c| {
            let s = &c.summary;
            vec![
                c.id.to_string(),
                c.name.clone(),
                c.status.clone(),
                format!("{}/{}", s.items - s.unattested, s.items),
                format!("{} keep, {} reduce, {} retire", s.keep, s.reduce, s.retire),
                s.escalated.to_string(),
            ]
        })
        .collect();
    crate::output::table(
        &["ID", "NAME", "STATUS", "ATTESTED", "DECISIONS", "ESCALATED"],
        &rows,
    )
}

pub async fn run_review(c: &warden_client::Client, cmd: ReviewCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        ReviewCmd::Start {
            name,
            due_days,
            team,
        } => {
            let r = c
                .create_review(&warden_types::CreateReviewRequest {
                    name,
                    due_in_days: due_days,
                    team,
                })
                .await?;
            crate::output::print(json, &r, || campaign_rows(std::slice::from_ref(&r)))?;
        }
        ReviewCmd::List => {
            let cs = c.list_reviews().await?;
            crate::output::print(json, &cs, || campaign_rows(&cs))?;
        }
        ReviewCmd::Queue { id } => {
            let items = c.review_items(&id).await?;
            crate::output::print(json, &items, || {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|i| {
                        vec![
                            i.identity.clone(),
                            i.team.clone(),
                            i.scopes.join(" "),
                            i.decision.clone().unwrap_or_else(|| "-".into()),
                            i.reason.clone().unwrap_or_default(),
                            if i.escalated_at.is_some() { "yes" } else { "" }.into(),
                        ]
                    })
                    .collect();
                crate::output::table(
                    &["NHI", "TEAM", "SCOPES", "DECISION", "REASON", "ESCALATED"],
                    &rows,
                )
            })?;
        }
        ReviewCmd::Attest {
            id,
            identity,
            decision,
            reason,
            remove_scopes,
        } => {
            let i = c
                .attest(
                    &id,
                    &warden_types::AttestRequest {
                        identity,
                        decision,
                        reason,
                        remove_scopes,
                    },
                )
                .await?;
            crate::output::print(json, &i, || {
                format!("{}: {}", i.identity, i.decision.clone().unwrap_or_default())
            })?;
        }
        ReviewCmd::Close { id } => {
            let r = c.close_review(&id).await?;
            crate::output::print(json, &r, || campaign_rows(std::slice::from_ref(&r)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum ReportCmd {
    /// The OWASP Non-Human Identities Top 10 (2025) posture: per risk, the checks that measure
    /// it, the NHIs affected with their owners, and a score.
    Posture {
        /// `html` (one self-contained file with charts), `md` or `json`.
        #[arg(long, default_value = "md")]
        format: String,
        /// One team's NHIs only (members may ask for their own team's).
        #[arg(long)]
        team: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
    },
}

pub async fn run_report(c: &warden_client::Client, cmd: ReportCmd, json: bool) -> Result<ExitCode> {
    let ReportCmd::Posture {
        format,
        team,
        output,
    } = cmd;
    let format = if json { "json".to_owned() } else { format };
    let render: fn(&warden_types::PostureReport) -> Result<String> = match format.as_str() {
        "html" => |r| Ok(crate::report::html(r)),
        "md" | "markdown" => |r| Ok(crate::report::markdown(r)),
        "json" => |r| Ok(serde_json::to_string_pretty(r)? + "\n"),
        other => anyhow::bail!("--format: {other:?} is not html, md or json"),
    };
    let report = c.posture_report(team.as_deref()).await?;
    let text = render(&report)?;
    match output {
        Some(path) => {
            // Written whole or not at all: a temporary file beside it, renamed over it.
            let tmp = path.with_extension("tmp-warden");
            std::fs::write(&tmp, text.as_bytes())
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} ({format})", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(c: &warden_client::Client, cmd: HygieneCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        HygieneCmd::Run => {
            let r = c.run_hygiene().await?;
            crate::output::print(json, &r, || {
                let rows: Vec<Vec<String>> = r
                    .rules
                    .iter()
                    .map(|x| vec![x.rule.clone(), x.found.to_string(), x.opened.to_string()])
                    .collect();
                let mut out = format!(
                    "checked {} identities and {} credentials in {} ms\n",
                    r.identities, r.credentials, r.duration_ms
                );
                out.push_str(&crate::output::table(&["RULE", "FOUND", "NEW"], &rows));
                out.push_str(&format!("\nresolved: {}", r.resolved));
                if !r.suspended.is_empty() {
                    out.push_str(&format!("\nsuspended: {}", r.suspended.join(", ")));
                }
                out
            })?;
        }
        HygieneCmd::Jobs => {
            let jobs = c.list_jobs().await?;
            crate::output::print(json, &jobs, || {
                let ts = |t: Option<time::OffsetDateTime>| {
                    t.and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(|| "-".into())
                };
                let rows: Vec<Vec<String>> = jobs
                    .iter()
                    .map(|j| {
                        vec![
                            j.job.clone(),
                            j.runs.to_string(),
                            ts(j.last_started_at),
                            ts(j.last_finished_at),
                            j.last_outcome.clone().unwrap_or_default(),
                            j.last_trigger.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                crate::output::table(
                    &[
                        "JOB",
                        "RUNS",
                        "LAST STARTED",
                        "LAST FINISHED",
                        "OUTCOME",
                        "TRIGGER",
                    ],
                    &rows,
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
