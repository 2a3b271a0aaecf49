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
    /// Export events as JSON Lines (one event per line, in chain order) for a SIEM or an archive.
    /// Prints the last sequence number to stderr: pass it as --after-seq to continue.
    Export {
        /// RFC 3339 time, or how long ago (`24h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time (exclusive).
        #[arg(long)]
        until: Option<String>,
        /// Only events after this sequence number (where an earlier export stopped).
        #[arg(long)]
        after_seq: Option<u64>,
        /// Write to this file (whole or not at all) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// The configured audit sinks: where each delivers, its cursor, lag and last error.
    Sinks,
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
        AuditCmd::Export {
            since,
            until,
            after_seq,
            output,
        } => export(g, since, until, after_seq, output).await,
        AuditCmd::Sinks => {
            let sinks = crate::client(g)?.audit_sinks().await?;
            output::print(json, &sinks, || {
                if sinks.is_empty() {
                    return "no audit sinks configured ([[audit.sinks]] in warden.toml)\n".into();
                }
                let mut t = String::new();
                for s in &sinks {
                    t.push_str(&format!(
                        "{} ({} → {}): cursor {}, lag {}, {}{}\n",
                        s.name,
                        s.kind,
                        s.target,
                        s.cursor,
                        s.lag,
                        if s.active {
                            "delivering"
                        } else {
                            "standby (another node delivers)"
                        },
                        s.last_error
                            .as_ref()
                            .map(|e| format!(", {} failures, last: {e}", s.failures))
                            .unwrap_or_default()
                    ));
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

/// `--since`: an RFC 3339 time, or a duration ago.
fn since_time(v: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    if time::OffsetDateTime::parse(v, &Rfc3339).is_ok() {
        return Ok(v.to_owned());
    }
    let ago = humantime::parse_duration(v).map_err(|_| {
        anyhow::anyhow!("--since: {v:?} is neither an RFC 3339 time nor a duration like 24h or 7d")
    })?;
    let ago = time::Duration::try_from(ago)
        .map_err(|_| anyhow::anyhow!("--since: {v:?} is too long ago"))?;
    Ok((time::OffsetDateTime::now_utc() - ago).format(&Rfc3339)?)
}

async fn export(
    g: &crate::Global,
    since: Option<String>,
    until: Option<String>,
    after_seq: Option<u64>,
    output: Option<PathBuf>,
) -> Result<ExitCode> {
    use std::io::Write as _;
    let since = since.as_deref().map(since_time).transpose()?;
    let client = crate::client(g)?;
    // To a file: a temporary beside it, renamed over it once every page is written.
    let (mut sink, tmp): (Box<dyn std::io::Write>, Option<PathBuf>) = match &output {
        Some(path) => {
            let tmp = path.with_extension("tmp-warden");
            let f = std::fs::File::create(&tmp)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
            (Box::new(std::io::BufWriter::new(f)), Some(tmp))
        }
        None => (
            Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            None,
        ),
    };
    let mut cursor = after_seq;
    let (mut n, mut last) = (0u64, after_seq);
    let result: Result<()> = async {
        loop {
            let page = client
                .list_audit(&AuditQuery {
                    since: since.clone(),
                    until: until.clone(),
                    cursor,
                    limit: Some(1_000),
                    ..Default::default()
                })
                .await?;
            for e in &page.items {
                serde_json::to_writer(&mut sink, e)?;
                sink.write_all(b"\n")?;
                n += 1;
                last = Some(e.seq);
            }
            match page.next_cursor.as_deref().map(str::parse::<u64>) {
                Some(Ok(c)) => cursor = Some(c),
                Some(Err(_)) => anyhow::bail!("the server sent a malformed cursor"),
                None => break,
            }
        }
        sink.flush()?;
        Ok(())
    }
    .await;
    drop(sink);
    if let Err(e) = result {
        if let Some(tmp) = &tmp {
            let _ = std::fs::remove_file(tmp);
        }
        return Err(e);
    }
    if let (Some(tmp), Some(path)) = (tmp, &output) {
        std::fs::rename(&tmp, path)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    eprintln!(
        "exported {n} events{}",
        last.map(|s| format!("; continue with --after-seq {s}"))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
