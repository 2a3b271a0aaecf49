//! Renders the posture report as Markdown or as one self-contained HTML file (inline CSS and SVG
//! charts; no script, no external resource), from the JSON the server answers.

use std::fmt::Write as _;

use warden_types::{ChartBar, PostureReport};

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes text for a Markdown table cell.
fn md(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

fn scope(r: &PostureReport) -> String {
    match &r.team {
        Some(t) => format!("team {t}"),
        None => "the whole estate".into(),
    }
}

fn ts(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn markdown(r: &PostureReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# NHI posture: OWASP Non-Human Identities Top 10 (2025)\n"
    );
    let _ = writeln!(
        o,
        "Scope: {}. Generated {}. Score **{}/100**. {} NHIs, {} usable credentials, {} open findings.",
        md(&scope(r)),
        ts(r.generated_at),
        r.score,
        r.identities,
        r.credentials,
        r.open_findings
    );
    match r.hygiene_run_at {
        Some(t) => {
            let _ = writeln!(o, "Hygiene checks last ran {}.\n", ts(t));
        }
        None => {
            let _ = writeln!(
                o,
                "The hygiene checks have not run yet (`warden hygiene run`): their counts are empty.\n"
            );
        }
    }
    let _ = writeln!(o, "| risk | score | level | NHIs affected |");
    let _ = writeln!(o, "|---|---|---|---|");
    for k in &r.risks {
        let _ = writeln!(
            o,
            "| {} {} | {} | {} | {} of {} |",
            k.id,
            md(&k.title),
            k.score,
            k.level,
            k.affected_count,
            k.population
        );
    }
    for k in &r.risks {
        let _ = writeln!(
            o,
            "\n## {} {} — score {} ({})\n",
            k.id,
            md(&k.title),
            k.score,
            k.level
        );
        let _ = writeln!(o, "| check | measures | count |");
        let _ = writeln!(o, "|---|---|---|");
        for c in &k.checks {
            let _ = writeln!(o, "| `{}` | {} | {} |", c.id, md(&c.description), c.count);
        }
        if !k.affected.is_empty() {
            let _ = writeln!(o, "\n| NHI | owner | found by |");
            let _ = writeln!(o, "|---|---|---|");
            for a in &k.affected {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} |",
                    md(&a.identity),
                    md(&a.owner),
                    md(&a.checks.join(", "))
                );
            }
            if k.affected_count > k.affected.len() as u64 {
                let _ = writeln!(
                    o,
                    "\n…and {} more.",
                    k.affected_count - k.affected.len() as u64
                );
            }
        }
    }
    let chart = |o: &mut String, title: &str, bars: &[ChartBar]| {
        let _ = writeln!(o, "\n## {title}\n\n| | |\n|---|---|");
        for b in bars {
            let _ = writeln!(o, "| {} | {} |", md(&b.label), b.value);
        }
    };
    chart(&mut o, "Credential age", &r.credential_age);
    chart(&mut o, "Open findings by team", &r.risk_by_team);
    chart(
        &mut o,
        "Open findings over the last 30 days",
        &r.findings_over_time,
    );
    o
}

/// A chart's caption and the opening of its SVG (closed with `</svg></figure>`).
fn svg_open(title: &str, w: f64, h: f64) -> String {
    let t = esc(title);
    format!(
        r#"<figure><figcaption>{t}</figcaption><svg role="img" aria-label="{t}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">"#
    )
}

/// A horizontal bar chart.
fn bars_svg(title: &str, bars: &[ChartBar]) -> String {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let row = 26;
    let h = 30 + row * bars.len().max(1);
    let mut s = svg_open(title, 640.0, h as f64);
    if bars.is_empty() {
        let _ = write!(
            s,
            r#"<text x="10" y="30" class="muted">nothing to show</text>"#
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = 10 + row * i;
        let w = (b.value as f64 / max as f64 * 380.0).round() as u64;
        let _ = write!(
            s,
            r#"<text x="190" y="{}" text-anchor="end" class="lbl">{}</text><rect x="200" y="{y}" width="{w}" height="18" class="bar"/><text x="{}" y="{}" class="val">{}</text>"#,
            y + 14,
            esc(&b.label),
            205 + w,
            y + 14,
            b.value
        );
    }
    s.push_str("</svg></figure>");
    s
}

/// A line chart over time.
fn line_svg(title: &str, points: &[ChartBar]) -> String {
    let max = points.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let (w, h, left, top, bottom) = (640.0, 220.0, 50.0, 20.0, 40.0);
    let n = points.len().max(2) as f64 - 1.0;
    let xy = |i: usize, v: u64| {
        (
            left + (w - left - 20.0) * i as f64 / n,
            top + (h - top - bottom) * (1.0 - v as f64 / max as f64),
        )
    };
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (x, y) = xy(i, p.value);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let mut s = svg_open(title, w, h);
    let _ = write!(
        s,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" class="axis"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" class="axis"/><text x="{}" y="{}" text-anchor="end" class="lbl">{max}</text><text x="{}" y="{}" text-anchor="end" class="lbl">0</text>"#,
        h - bottom,
        w - 20.0,
        h - bottom,
        h - bottom,
        left - 6.0,
        top + 4.0,
        left - 6.0,
        h - bottom
    );
    if !path.is_empty() {
        let _ = write!(s, r#"<polyline points="{}" class="line"/>"#, path.join(" "));
    }
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let _ = write!(
            s,
            r#"<text x="{left}" y="{}" class="lbl">{}</text><text x="{}" y="{}" text-anchor="end" class="lbl">{}</text>"#,
            h - 15.0,
            esc(&first.label),
            w - 20.0,
            h - 15.0,
            esc(&last.label)
        );
    }
    s.push_str("</svg></figure>");
    s
}

pub fn html(r: &PostureReport) -> String {
    let mut o = String::new();
    o.push_str(r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>NHI posture — OWASP Non-Human Identities Top 10</title><style>
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1040px;color:#1b1f24;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
.muted{color:#57606a;fill:#57606a}.score{font-size:2.4rem;font-weight:700}
table{border-collapse:collapse;width:100%;margin:.6rem 0}th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#f6f8fa}
.lvl{font-weight:600;padding:.05rem .45rem;border-radius:.6rem;color:#fff}.low{background:#1a7f37}.medium{background:#9a6700}.high{background:#bc4c00}.critical{background:#cf222e}
.grid{display:flex;flex-wrap:wrap;gap:1.5rem}figure{margin:0}figcaption{font-weight:600;margin:.4rem 0}
.bar{fill:#0969da}.line{fill:none;stroke:#cf222e;stroke-width:2}.axis{stroke:#8c959f}.lbl{font-size:12px;fill:#1b1f24}.val{font-size:12px;fill:#57606a}
code{background:#f6f8fa;padding:.05rem .3rem;border-radius:.3rem}
</style></head><body>"#);
    let _ = write!(
        o,
        r#"<h1>NHI posture: OWASP Non-Human Identities Top 10 (2025)</h1><p class="muted">Scope: {} · generated {}</p><p><span class="score">{}/100</span> · {} NHIs · {} usable credentials · {} open findings</p>"#,
        esc(&scope(r)),
        esc(&ts(r.generated_at)),
        r.score,
        r.identities,
        r.credentials,
        r.open_findings
    );
    match r.hygiene_run_at {
        Some(t) => {
            let _ = write!(o, r#"<p class="muted">Hygiene checks last ran {}.</p>"#, esc(&ts(t)));
        }
        None => o.push_str(r#"<p class="muted">The hygiene checks have not run yet (<code>warden hygiene run</code>): their counts are empty.</p>"#),
    }
    o.push_str("<h2>Summary</h2><table><tr><th>risk</th><th>score</th><th>level</th><th>NHIs affected</th></tr>");
    for k in &r.risks {
        let _ = write!(
            o,
            "<tr><td><a href=\"#{}\">{} {}</a></td><td>{}</td><td><span class=\"lvl {}\">{}</span></td><td>{} of {}</td></tr>",
            esc(&k.id),
            esc(&k.id),
            esc(&k.title),
            k.score,
            esc(&k.level),
            esc(&k.level),
            k.affected_count,
            k.population
        );
    }
    o.push_str("</table><h2>Charts</h2><div class=\"grid\">");
    o.push_str(&bars_svg("Usable credentials by age", &r.credential_age));
    o.push_str(&bars_svg("Open findings by team", &r.risk_by_team));
    o.push_str(&line_svg(
        "Open findings over the last 30 days",
        &r.findings_over_time,
    ));
    o.push_str("</div>");
    for k in &r.risks {
        let _ = write!(
            o,
            "<h2 id=\"{}\">{} {} — {} <span class=\"lvl {}\">{}</span></h2><table><tr><th>check</th><th>measures</th><th>count</th></tr>",
            esc(&k.id),
            esc(&k.id),
            esc(&k.title),
            k.score,
            esc(&k.level),
            esc(&k.level)
        );
        for c in &k.checks {
            let _ = write!(
                o,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&c.id),
                esc(&c.description),
                c.count
            );
        }
        o.push_str("</table>");
        if !k.affected.is_empty() {
            o.push_str("<table><tr><th>NHI</th><th>owner</th><th>found by</th></tr>");
            for a in &k.affected {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&a.identity),
                    esc(&a.owner),
                    esc(&a.checks.join(", "))
                );
            }
            o.push_str("</table>");
            if k.affected_count > k.affected.len() as u64 {
                let _ = write!(
                    o,
                    "<p class=\"muted\">…and {} more.</p>",
                    k.affected_count - k.affected.len() as u64
                );
            }
        }
    }
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_inventory_is_escaped() {
        assert_eq!(
            esc("<script>\"x\"&'y'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"
        );
        assert_eq!(md("a|b\nc"), "a\\|b c");
    }
}
