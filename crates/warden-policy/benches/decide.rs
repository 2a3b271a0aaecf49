//! Decision latency with 1,000 policies loaded (the issue's goal: p99 < 1 ms per decision).
//! `cargo bench -p warden-policy`: prints p50, p99 and max over 20,000 decisions.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark")]

use std::time::Instant;

use warden_policy::{Agent, Engine, Question};

fn main() {
    // 1,000 policies: team- and scope-specific permits, a few forbids.
    let docs: Vec<(String, String)> = (0..1_000)
        .map(|i| {
            let text = if i % 50 == 0 {
                format!(
                    r#"forbid(principal, action, resource) when {{ context.action == "svc{i}:delete" }};"#
                )
            } else {
                format!(
                    r#"permit(principal in Warden::Team::"team-{}", action == Warden::Action::"invoke", resource)
                       when {{ context.action == "svc{i}:read" && context.delegator_issuer == "corp" && context.depth <= 2 }};"#,
                    i % 20
                )
            };
            (format!("p{i}"), text)
        })
        .collect();
    let t = Instant::now();
    let engine = Engine::new(docs.iter().map(|(n, t)| (n.as_str(), t.as_str()))).unwrap();
    eprintln!("loaded {} policies in {:?}", engine.len(), t.elapsed());
    let question = |i: usize| Question {
        agent: Agent {
            id: format!("agent-{i}"),
            name: "support-bot".into(),
            kind: "ai_agent".into(),
            environment: "prod".into(),
            team: format!("team-{}", i % 20),
        },
        action: format!("svc{}:read", i % 1_000),
        resource: format!("https://mcp.example/items/{i}"),
        delegator: "alice@example.com".into(),
        delegator_issuer: "corp".into(),
        chain: vec![format!("agent-{i}")],
        depth: 1,
        scopes: vec![format!("svc{}:read", i % 1_000)],
        source: "10.0.0.5".into(),
        hour: 12,
    };
    let questions: Vec<Question> = (0..1_000).map(question).collect();
    for q in questions.iter().take(200) {
        std::hint::black_box(engine.decide(q));
    }
    let mut times = Vec::with_capacity(20_000);
    let mut allowed = 0;
    for i in 0..20_000 {
        let q = &questions[i % questions.len()];
        let t = Instant::now();
        let a = engine.decide(q);
        times.push(t.elapsed());
        allowed += usize::from(a.allow);
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "decisions: 20000 ({} allowed); p50 {:?}; p99 {:?}; max {:?}",
        allowed,
        pct(0.50),
        pct(0.99),
        times[times.len() - 1]
    );
}
