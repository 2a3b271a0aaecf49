//! `warden team …` and `warden operator …`

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use warden_client::Client;
use warden_types::{CreateOperatorRequest, CreateTeamRequest, OperatorRole, Team};

use crate::output::{self, table};

#[derive(Debug, Subcommand)]
pub enum TeamCmd {
    /// Create a team (admin).
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    List,
    Show {
        team: String,
    },
    /// Add an operator to a team (admin).
    AddMember {
        team: String,
        operator: String,
    },
    /// Remove an operator from a team (admin).
    RemoveMember {
        team: String,
        operator: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OperatorCmd {
    /// Create an operator; its token is printed once (admin).
    Create {
        name: String,
        #[arg(long)]
        role: OperatorRole,
        /// Team to join; repeat for several.
        #[arg(long = "team")]
        teams: Vec<String>,
    },
    List,
    /// Disable an operator: its token stops working at once (admin).
    Disable {
        operator: String,
        #[arg(long)]
        reason: String,
    },
    /// Re-enable a disabled operator (admin).
    Enable {
        operator: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Replace an operator's token (your own, or anyone's as admin); prints the new one once.
    RotateToken {
        /// Defaults to yourself.
        operator: Option<String>,
    },
}

fn team_text(t: &Team) -> String {
    format!(
        "team {} ({})\nmembers: {}\n",
        t.name,
        t.id,
        if t.members.is_empty() {
            "-".into()
        } else {
            t.members.join(", ")
        }
    )
}

pub async fn run_team(c: &Client, cmd: TeamCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        TeamCmd::Create { name, description } => {
            let t = c
                .create_team(&CreateTeamRequest { name, description })
                .await?;
            output::print(json, &t, || format!("created {}", team_text(&t)))?;
        }
        TeamCmd::List => {
            let l = c.list_teams().await?;
            output::print(json, &l, || {
                let rows: Vec<Vec<String>> = l
                    .items
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.members.join(","),
                            t.description.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(&["NAME", "MEMBERS", "DESCRIPTION"], &rows)
            })?;
        }
        TeamCmd::Show { team } => {
            let t = c.team(&team).await?;
            output::print(json, &t, || team_text(&t))?;
        }
        TeamCmd::AddMember { team, operator } => {
            let t = c.add_member(&team, &operator).await?;
            output::print(json, &t, || team_text(&t))?;
        }
        TeamCmd::RemoveMember { team, operator } => {
            let t = c.remove_member(&team, &operator).await?;
            output::print(json, &t, || team_text(&t))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_operator(c: &Client, cmd: OperatorCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        OperatorCmd::Create { name, role, teams } => {
            let o = c
                .create_operator(&CreateOperatorRequest { name, role, teams })
                .await?;
            output::print(json, &o, || {
                format!(
                    "operator {} ({}) created.\nToken (shown once):\n  {}\n",
                    o.operator.name, o.operator.role, o.token
                )
            })?;
        }
        OperatorCmd::Disable { operator, reason } => {
            let o = c.set_operator(&operator, "disable", Some(reason)).await?;
            output::print(json, &o, || {
                format!("operator {} disabled; its token no longer works", o.name)
            })?;
        }
        OperatorCmd::Enable { operator, reason } => {
            let o = c.set_operator(&operator, "enable", reason).await?;
            output::print(json, &o, || format!("operator {} enabled", o.name))?;
        }
        OperatorCmd::RotateToken { operator } => {
            let name = match operator {
                Some(o) => o,
                None => match c.whoami().await? {
                    warden_types::WhoAmI::Operator { name, .. } => name,
                    _ => anyhow::bail!("only operators have operator tokens"),
                },
            };
            let o = c.rotate_operator_token(&name).await?;
            output::print(json, &o, || {
                format!(
                    "new token for {} (shown once; the old one no longer works):\n  {}\n",
                    o.operator.name, o.token
                )
            })?;
        }
        OperatorCmd::List => {
            let l = c.list_operators().await?;
            output::print(json, &l, || {
                let rows: Vec<Vec<String>> = l
                    .items
                    .iter()
                    .map(|o| {
                        vec![
                            o.name.clone(),
                            o.role.to_string(),
                            o.teams.join(","),
                            output::time(o.created_at),
                            if o.disabled_at.is_some() {
                                "disabled".into()
                            } else {
                                "active".into()
                            },
                        ]
                    })
                    .collect();
                table(&["NAME", "ROLE", "TEAMS", "CREATED", "STATE"], &rows)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
