//! `warden approval …`

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use uuid::Uuid;
use warden_client::Client;
use warden_types::ChangeStatus;

use crate::output::{self, table};

#[derive(Debug, Subcommand)]
pub enum ApprovalCmd {
    /// List change requests (pending by default).
    List {
        /// pending, approved, denied, cancelled, or `all`.
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// Approve a held change (another admin than the requester).
    Approve {
        id: Uuid,
        #[arg(long)]
        reason: String,
    },
    /// Deny a held change.
    Deny {
        id: Uuid,
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(c: &Client, cmd: ApprovalCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        ApprovalCmd::List { status } => {
            let status = if status == "all" {
                None
            } else {
                Some(status.parse::<ChangeStatus>().map_err(anyhow::Error::msg)?)
            };
            let page = c.list_approvals(status).await?;
            output::print(json, &page, || {
                let rows: Vec<Vec<String>> = page
                    .items
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            format!("{}/{}", r.environment, r.identity_name),
                            r.kind.to_string(),
                            r.scopes.join(" "),
                            r.status.to_string(),
                            r.requested_by.clone(),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "IDENTITY", "KIND", "SCOPES", "STATUS", "REQUESTED BY"],
                    &rows,
                )
            })?;
        }
        ApprovalCmd::Approve { id, reason } => {
            let r = c.decide(id, true, &reason).await?;
            output::print(json, &r, || {
                format!(
                    "approved {}: {} now has {}",
                    r.id,
                    r.identity_name,
                    r.scopes.join(" ")
                )
            })?;
        }
        ApprovalCmd::Deny { id, reason } => {
            let r = c.decide(id, false, &reason).await?;
            output::print(json, &r, || format!("denied {}", r.id))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
