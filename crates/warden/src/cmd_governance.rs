//! `warden hygiene`: run the hygiene checks, see the background jobs.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum HygieneCmd {
    /// Run every hygiene check now (admins) and print what each rule found; the findings are
    /// listed with `warden finding list --kind hygiene`.
    Run,
    /// Background jobs: last run, outcome, trigger (admins and auditors).
    Jobs,
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
