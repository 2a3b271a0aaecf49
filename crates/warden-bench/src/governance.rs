//! The governance benchmark: a generated estate (50,000 NHIs across 200 teams, 200,000
//! credentials, 10 million usage events with planted cases) in a real SQLite file; the hygiene
//! run and the posture report over it, timed (median of `runs`), and checked: the run must find
//! exactly the planted cases. Also the cost of recording one usage event (the token endpoint's
//! share of the governance work).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;
use warden_core::registry::CHECKPOINT_LABEL;
use warden_core::{Registry, SystemClock};
use warden_crypto::ServerKey;
use warden_store_conformance::estate::{EstateSize, generate, policy};
use warden_store_sqlite::SqliteStore;

use crate::median;

pub fn main(runs: usize, identities: usize, events: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(runs, identities, events))
}

async fn run(runs: usize, identities: usize, events: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = ServerKey::generate();
    let store: Arc<dyn warden_core::ports::Store> = Arc::new(SqliteStore::open(
        &dir.path().join("warden.db"),
        key.hasher(CHECKPOINT_LABEL),
    )?);
    let reg = Registry::new(store.clone(), Arc::new(SystemClock), policy(), &key);
    let admin_token = reg.bootstrap_admin("admin").await?.token;
    let admin = reg.authenticate(&admin_token, "bench", "local").await?;
    let size = EstateSize {
        identities,
        events,
        ..EstateSize::BENCH
    };
    eprintln!(
        "generating {} NHIs, {} credentials, {} usage events …",
        size.identities,
        size.identities * size.credentials_per_identity,
        size.events
    );
    let t = Instant::now();
    let planted = generate(&reg, &store, &admin, size).await;
    eprintln!("  generated in {:.1} s", t.elapsed().as_secs_f64());

    // Recording cost per usage event (in memory; written in batches).
    let ids: Vec<uuid::Uuid> = (0..1_000).map(|_| uuid::Uuid::now_v7()).collect();
    let scopes = vec!["svc1:read".to_owned()];
    let now = reg.now();
    let n = 2_000_000usize;
    let t = Instant::now();
    for j in 0..n {
        let id = ids[j % ids.len()];
        reg.record_usage(Some(id), id, &scopes, "10.1.2.3", now);
    }
    let record_ns = t.elapsed().as_nanos() as f64 / n as f64;
    reg.flush_usage().await?;

    // The token endpoint's whole share: recording plus anomaly scoring, over 50,000 identities
    // with baselines (the estate's), steady traffic (no alerts).
    let mut sample = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = reg.list_identities(&admin, Default::default(), after, 1_000)?;
        sample.extend(
            page.into_iter()
                // Not the schedule-bound, nor the stale (their use would change what hygiene finds).
                .filter(|i| {
                    !i.labels.contains_key("schedule")
                        && i.last_used_at
                            .is_some_and(|t| now - t < time::Duration::days(30))
                }),
        );
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    // One event an hour per identity, from the next hour on: usual traffic (known scope, no
    // source network), so nothing is alerted and the estate's planted findings stay exact.
    let t = Instant::now();
    for j in 0..n {
        let i = &sample[j % sample.len()];
        let at = now + time::Duration::hours(1 + (j / sample.len()) as i64);
        reg.observe_usage(&warden_core::registry::anomaly::Use {
            identity: i,
            credential: None,
            scopes: &i.scopes[..1],
            audiences: &i.audiences,
            source: "",
            user_agent: None,
            at,
        });
    }
    let observe_ns = t.elapsed().as_nanos() as f64 / n as f64;
    reg.flush_usage().await?;
    let anomalies = warden_store_conformance::estate::anomalies_found(&reg, &admin);
    for r in warden_store_conformance::estate::ANOMALY_RULES {
        let (p, f) = (planted[r], anomalies.get(r).copied().unwrap_or(0));
        if p != f {
            bail!("{r}: planted {p}, found {f}");
        }
    }

    let mut hygiene = Vec::new();
    let mut report = Vec::new();
    for r in 0..runs {
        let t = Instant::now();
        let h = reg.run_hygiene(&admin, "bench").await?;
        let hs = t.elapsed().as_secs_f64();
        for (rule, n) in planted
            .iter()
            .filter(|(r, _)| !r.starts_with("NHI-ANOMALY") && **r != "NHI-INTERACTIVE")
        {
            let found = h
                .rules
                .iter()
                .find(|x| x.rule == *rule)
                .map(|x| x.found)
                .context("rule missing")?;
            if found != *n {
                let f = reg.list_findings(
                    &admin,
                    &warden_core::ports::FindingFilter {
                        status: None,
                        kind: Some(warden_types::FindingKind::Hygiene),
                    },
                    None,
                    1000,
                )?;
                for x in f.iter().filter(|x| x.rule == *rule).take(100) {
                    eprintln!("{:?} {:?}", x.identity, x.evidence);
                }
                bail!("{rule}: planted {n}, found {found}");
            }
        }
        let t = Instant::now();
        let p = reg.posture_report(&admin, None)?;
        let html_bytes = serde_json::to_vec(&p)?.len();
        let ps = t.elapsed().as_secs_f64();
        eprintln!(
            "run {}/{runs}: hygiene {hs:.2} s ({} identities, {} credentials), posture report {ps:.2} s ({} KB JSON)",
            r + 1,
            h.identities,
            h.credentials,
            html_bytes / 1024
        );
        hygiene.push(hs);
        report.push(ps);
    }
    let summary = json!({
        "identities": size.identities,
        "credentials": size.identities * size.credentials_per_identity,
        "usage_events": size.events,
        "planted": planted,
        "hygiene_secs_median": median(hygiene),
        "posture_report_secs_median": median(report),
        "usage_record_ns_per_event": record_ns,
        "usage_record_and_anomaly_score_ns_per_event": observe_ns,
        "anomalies_found": anomalies,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
