//! `warden audit …`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use warden_client::AuditQuery;
use warden_core::Registry;
use warden_types::AuditVerifyReport;

use crate::output::{self, table};

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Query audit events.
    List {
        /// e.g. identity:<id>
        #[arg(long)]
        target: Option<String>,
        /// e.g. operator:admin
        #[arg(long)]
        actor: Option<String>,
        /// e.g. identity.retire
        #[arg(long)]
        action: Option<String>,
        /// RFC 3339 time (inclusive)
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time (exclusive)
        #[arg(long)]
        until: Option<String>,
        /// Continue after this sequence number.
        #[arg(long)]
        cursor: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Walk the hash chain; exit 1 naming the first bad event if anything was edited, deleted or
    /// reordered.
    Verify {
        /// Verify a data dir directly, without a server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn report_text(r: &AuditVerifyReport) -> String {
    if r.ok {
        format!(
            "audit chain OK: {} events verified (head seq {}, signed checkpoint at {})",
            r.events_checked, r.last_good_seq, r.checkpoint_seq
        )
    } else {
        format!(
            "audit chain BROKEN: first bad event seq {}: {}\n({} events verified before it)",
            r.first_bad_seq
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            r.problem.as_deref().unwrap_or("unknown problem"),
            r.events_checked
        )
    }
}

pub async fn run(g: &crate::Global, cmd: AuditCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        AuditCmd::List {
            target,
            actor,
            action,
            since,
            until,
            cursor,
            limit,
        } => {
            let q = AuditQuery {
                target,
                actor,
                action,
                since,
                until,
                cursor,
                limit: Some(limit),
            };
            let page = crate::client(g)?.list_audit(&q).await?;
            output::print(json, &page, || {
                let rows: Vec<Vec<String>> = page
                    .items
                    .iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            output::time(e.time),
                            e.actor.clone(),
                            e.action.clone(),
                            e.target.clone(),
                            e.outcome.to_string(),
                        ]
                    })
                    .collect();
                let mut t = table(
                    &["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME"],
                    &rows,
                );
                if let Some(n) = &page.next_cursor {
                    t.push_str(&format!("more: --cursor {n}\n"));
                }
                t
            })?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Verify { data_dir } => {
            let report = match data_dir {
                Some(dir) => {
                    let (store, key) = crate::cmd_server::open_offline(&dir)?;
                    Registry::verify_store(&store, &key)?
                }
                None => crate::client(g)?.verify_audit().await?,
            };
            output::print(json, &report, || report_text(&report))?;
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
