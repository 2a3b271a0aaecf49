//! Anomaly scoring cost per usage event (issue 8's goal: ≤ 2 µs, so that it never slows the token
//! endpoint). `cargo bench -p warden-core --bench anomaly`: 50,000 identities with learned
//! baselines, 5,000,000 events over them; prints ns per event (median of 5 rounds).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark")]

use std::time::Instant;

use uuid::Uuid;
use warden_core::anomaly::{Baselines, Event};

fn main() {
    let ids: Vec<Uuid> = (0..50_000).map(|_| Uuid::now_v7()).collect();
    let scopes: Vec<Vec<String>> = (0..7)
        .map(|s| vec![format!("svc{s}:read"), format!("svc{s}:write")])
        .collect();
    let nets: Vec<String> = (0..250).map(|n| format!("10.1.{n}.0/24")).collect();
    let audiences: Vec<Vec<String>> = (0..7)
        .map(|s| vec![format!("https://svc{s}.example")])
        .collect();
    let mut b = Baselines::new(0);
    let mut out = Vec::new();
    let t0: i64 = 1_700_000_000;
    // Warm: every identity seen once (its baseline allocated).
    for (i, id) in ids.iter().enumerate() {
        b.observe(
            &Event {
                identity: *id,
                scopes: &scopes[i % 7],
                audiences: &audiences[i % 7],
                network: Some(&nets[i % 250]),
                at: t0,
                window: None,
            },
            &mut out,
        );
    }
    let n = 5_000_000usize;
    let mut rounds = Vec::new();
    for r in 0..5 {
        let start = Instant::now();
        for j in 0..n {
            let i = (j * 7919) % ids.len();
            out.clear();
            b.observe(
                &Event {
                    identity: ids[i],
                    scopes: &scopes[i % 7],
                    audiences: &audiences[i % 7],
                    network: Some(&nets[i % 250]),
                    // Time moves on: about an hour per round, so bounds are recomputed too.
                    at: t0 + (r * n + j) as i64 / 1_400,
                    window: Some((0, 24)),
                },
                &mut out,
            );
        }
        rounds.push(start.elapsed().as_nanos() as f64 / n as f64);
    }
    rounds.sort_by(f64::total_cmp);
    println!(
        "anomaly scoring: {:.0} ns per event (median of 5 rounds of {n} events over {} identities)",
        rounds[2],
        b.len()
    );
}
