//! The dashboard page (`dashboards/CREDIT_DASHBOARD.html`): one self-contained file — inline
//! SVG and CSS, no script, no network — that opens by double-click and reloads itself every 30
//! seconds. A day's timeline of every PC with the handoffs between them, the countdown to each
//! usage limit's reset, tokens per PC and day, the latest handoffs, verdicts and reassignments,
//! and the fleet table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Timelike, Utc};
use trinity_core::PcId;
use trinity_core::clock::human_duration;
use trinity_core::coordination;
use trinity_core::schema::{
    CreditDashboard, CreditStatus, HandoffReason, MultiInstanceStatus, Phase, Timeline,
    TimelineEvent, Verdict,
};

/// What the page shows.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// The fleet status (PCs, handoffs in flight, KPIs, the last action).
    pub status: &'a MultiInstanceStatus,
    /// The seed's credit dashboard.
    pub dashboard: &'a CreditDashboard,
    /// The last day, as the leaders saw it.
    pub timeline: &'a Timeline,
    /// Each PC's credit status (its tokens per day).
    pub credit: &'a BTreeMap<PcId, CreditStatus>,
    /// When the page is written.
    pub now: DateTime<Utc>,
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The two views of the timeline: the day, and the last hour (a new fleet's first minutes, a
/// handoff's seconds).
const VIEWS: [(&str, i64, i64); 2] = [("day", 24 * 60, 3 * 60), ("hour", 60, 10)];
/// At most this share of a view lies ahead of now (a reset further out is written, not drawn).
const MAX_AHEAD_SHARE: f64 = 0.4;

/// A phase's colour (fill) on the timeline and in the legend.
fn colour(p: Phase) -> &'static str {
    match p {
        Phase::Active => "#2e9e4f",
        Phase::Standby => "#9db4cc",
        Phase::Paused => "#f0b429",
        Phase::Exhausted => "#d64545",
        Phase::Silent => "#f08c3a",
        Phase::Dead => "#3c3c3c",
        Phase::Stopped => "#c8c8c8",
    }
}

fn phase_words(p: Phase) -> &'static str {
    match p {
        Phase::Active => "active (agent working)",
        Phase::Standby => "standby",
        Phase::Paused => "paused after a handoff",
        Phase::Exhausted => "exhausted (out of credit)",
        Phase::Silent => "silent (suspected dead)",
        Phase::Dead => "dead (work reassigned)",
        Phase::Stopped => "stopped on purpose",
    }
}

fn verdict_colour(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "#187a2f",
        Verdict::Deny => "#b00020",
        Verdict::Escalate => "#a86b00",
    }
}

/// "14:05 UTC" today, "Dec 04 14:05 UTC" another day.
fn clock_time(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if t.date_naive() == now.date_naive() {
        t.format("%H:%M UTC").to_string()
    } else {
        t.format("%b %d %H:%M UTC").to_string()
    }
}

/// "1.84 M", "912 k", "640".
fn tokens_text(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.0} k", n as f64 / 1e3),
        _ => format!("{:.2} M", n as f64 / 1e6),
    }
}

fn event_text(e: &TimelineEvent) -> String {
    let (from, to) = (e.handoff.from_pc(), e.handoff.to_pc());
    match (e.verdict, e.reason) {
        (Some(v), _) => format!("{} — {from}'s finished work", v.as_str()),
        (None, HandoffReason::WorkComplete) => format!("{from} finished work, submitted"),
        (None, HandoffReason::Reassignment) => format!("reassigned {from}'s work to {to}"),
        (None, HandoffReason::Assignment) => format!("assigned a task to {to}"),
        (None, HandoffReason::Remediation) => format!("remediation sent to {to}"),
        (None, r) => format!("handoff {from} → {to} ({})", r.describe()),
    }
}

/// The page.
pub fn dashboard_html(page: &Page<'_>) -> String {
    let status = page.status;
    let now = page.now;
    let svg_day = timeline_svg(page, VIEWS[0]);
    let svg_hour = timeline_svg(page, VIEWS[1]);
    let legend: String = Phase::ALL
        .iter()
        .map(|p| {
            format!(
                "<span class=\"key\"><i style=\"background:{}\"></i>{}</span>",
                colour(*p),
                esc(phase_words(*p))
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let resets = resets_html(page);
    let tokens = tokens_html(page);
    let recent = recent_html(page);
    let rows = pc_rows(page);
    let mut flights = String::new();
    for h in &status.handoffs {
        let _ = writeln!(
            flights,
            "<li><code>{}</code> — {} — {}</li>",
            esc(h.id.as_str()),
            esc(h.reason.describe()),
            esc(&h.phase)
        );
    }
    if flights.is_empty() {
        flights.push_str("<li>none</li>\n");
    }
    let mut kpis = String::new();
    for (name, value, target, met) in coordination::kpi_checks(&status.kpis) {
        let mark = match met {
            Some(true) => "met",
            Some(false) => "missed",
            None => "—",
        };
        let _ = writeln!(
            kpis,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{mark}</td></tr>",
            esc(name),
            esc(&value),
            esc(target)
        );
    }
    let action = match (&status.last_action, status.last_autonomous_action) {
        (Some(what), Some(at)) => format!("{} — {}", esc(&clock_time(at, now)), esc(what)),
        (Some(what), None) => esc(what),
        _ => "none yet".to_owned(),
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="30">
<title>Trinity — fleet dashboard</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; max-width: 1060px; }}
h1 {{ margin-bottom: 0.2em; }}
h2 {{ margin: 1.2em 0 0.5em; font-size: 1.15em; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; }}
td.n, th.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.sub td {{ border-bottom: 1px solid #eee; color: #777; font-size: 0.85em; }}
.ok {{ color: #187a2f; font-weight: bold; }}
.warn {{ color: #a86b00; font-weight: bold; }}
.bad {{ color: #b00020; font-weight: bold; }}
.pc {{ font-weight: bold; }}
.muted {{ color: #777; }}
.key {{ margin-right: 1em; font-size: 0.85em; white-space: nowrap; }}
.key i {{ display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.3em; vertical-align: -0.1em; border-radius: 2px; }}
svg text {{ font-family: system-ui, sans-serif; }}
ul {{ padding-left: 1.2em; }}
</style>
</head>
<body>
<h1>Trinity fleet</h1>
<p id="updated" class="muted">Updated {updated} by coordinator {coord} (lease epoch {epoch}). This page reloads every 30 seconds.</p>
<h2>The last 24 hours</h2>
{svg_day}
<p id="legend">{legend}<br><span class="key"><b style="color:#1f3b5a">↓</b> handoff between PCs</span> <span class="key"><b style="color:#b00020">↓</b> reassignment of a dead PC's work</span> <span class="key">▽ task given by the coordinator</span> <span class="key"><b style="color:#187a2f">●</b> verdict (green approve, red deny, amber escalate)</span></p>
<h2>The last hour</h2>
{svg_hour}
<h2>Usage-limit resets</h2>
{resets}
<h2>Tokens per day</h2>
{tokens}
<h2>Latest handoffs, verdicts and reassignments</h2>
{recent}
<h2>PCs</h2>
<table id="pcs">
<tr><th>PC</th><th>credit</th><th>rate limits</th><th>errors</th><th>avg response</th><th>liveness</th><th>silent for</th><th>state</th><th>task</th></tr>
{rows}</table>
<h2>Handoffs in flight</h2>
<ul id="handoffs">
{flights}</ul>
<h2>KPIs</h2>
<table id="kpis">
<tr><th>indicator</th><th>value</th><th>target</th><th></th></tr>
{kpis}</table>
<p id="last-action">Last autonomous action: {action}</p>
</body>
</html>
"#,
        updated = esc(&status
            .updated_at
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()),
        coord = esc(status.coordinator.as_str()),
        epoch = status.epoch,
    )
}

/// The PCs the page shows: the fleet's, then any other the timeline remembers.
fn pcs(page: &Page<'_>) -> Vec<PcId> {
    let mut out: Vec<PcId> = page.status.instances.keys().cloned().collect();
    for pc in page.timeline.pcs.keys() {
        if !out.contains(pc) {
            out.push(pc.clone());
        }
    }
    out
}

/// The timeline over `view` (name, minutes of the past, minutes between grid lines): a row per
/// PC coloured by phase, up to now and on to the latest reset in view, handoffs drawn as
/// arrows between rows, verdicts as dots.
fn timeline_svg(page: &Page<'_>, (name, past_min, grid_min): (&str, i64, i64)) -> String {
    let now = page.now;
    let tl = page.timeline;
    let pcs = pcs(page);
    let start = now - Duration::minutes(past_min);
    let latest_reset = tl
        .pcs
        .values()
        .filter_map(|spans| spans.last())
        .filter(|s| s.to.is_none())
        .filter_map(|s| s.until)
        .filter(|u| *u > now)
        .max();
    // Ahead: to the latest reset (in whole grid steps), at least one step, at most a share.
    let step_s = grid_min * 60;
    let max_ahead = (past_min as f64 * 60.0 * MAX_AHEAD_SHARE) as i64;
    let ahead_s = latest_reset.map_or(step_s / 2, |u| {
        let secs = (u - now).num_seconds();
        ((secs + step_s - 1) / step_s * step_s).clamp(step_s / 2, max_ahead)
    });
    let end = now + Duration::seconds(ahead_s);
    let (left, right, top, row_h, gap) = (64.0, 16.0, 26.0, 24.0, 12.0);
    let width = 1000.0;
    let plot = width - left - right;
    let span_s = (end - start).num_seconds() as f64;
    let x = |t: DateTime<Utc>| -> f64 {
        let t = t.clamp(start, end);
        left + plot * (t - start).num_seconds() as f64 / span_s
    };
    let row_y = |i: usize| top + i as f64 * (row_h + gap);
    let height = row_y(pcs.len().max(1)) + 4.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg id="timeline-{name}" class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="Each PC's phase over the last {past}, with handoffs">
<defs><marker id="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#1f3b5a"/></marker><marker id="arrow-r-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#b00020"/></marker>
<pattern id="ahead-{name}" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/><rect width="3" height="6" fill="#f3c7c7"/></pattern></defs>"##,
        past = human_duration(std::time::Duration::from_secs(past_min as u64 * 60)),
    );
    // The grid: a line every `grid_min`, on the clock's round times; no label under "now".
    let mut tick = start
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc())
        .unwrap_or(start);
    while tick <= end {
        let minute = i64::from(tick.hour() * 60 + tick.minute());
        if tick >= start && minute % grid_min == 0 && (x(tick) - x(now)).abs() > 24.0 {
            let tx = x(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{tx:.1}" y1="{y1}" x2="{tx:.1}" y2="{y2:.1}" stroke="#e4e4e4"/><text x="{tx:.1}" y="14" font-size="11" fill="#666" text-anchor="middle">{}</text>"##,
                tick.format("%H:%M"),
                y1 = top - 6.0,
                y2 = height - 4.0,
            );
        }
        tick += Duration::minutes(grid_min.min(60));
    }
    for (i, pc) in pcs.iter().enumerate() {
        let y = row_y(i);
        let _ = writeln!(
            svg,
            r##"<text x="{lx}" y="{ty:.1}" font-size="13" font-weight="bold" fill="#222" text-anchor="end">{name}</text><rect x="{left}" y="{y:.1}" width="{w:.1}" height="{row_h}" fill="#f6f6f6"/>"##,
            lx = left - 10.0,
            ty = y + row_h / 2.0 + 4.5,
            name = esc(pc.as_str()),
            w = x(now) - left,
        );
        let Some(spans) = tl.pcs.get(pc) else {
            continue;
        };
        for s in spans {
            let to = s.to.unwrap_or(tl.updated_at.max(s.from)).min(now);
            if to < start {
                continue;
            }
            let (x1, x2) = (x(s.from), x(to));
            let w = (x2 - x1).max(1.5);
            let title = match s.to {
                Some(t) => format!(
                    "{pc} {} from {} to {}",
                    s.phase,
                    clock_time(s.from, now),
                    clock_time(t, now)
                ),
                None => format!("{pc} {} since {}", s.phase, clock_time(s.from, now)),
            };
            let _ = writeln!(
                svg,
                r##"<rect class="span {phase}" x="{x1:.1}" y="{y:.1}" width="{w:.1}" height="{row_h}" fill="{fill}"><title>{title}</title></rect>"##,
                phase = s.phase,
                fill = colour(s.phase),
                title = esc(&title),
            );
            // The wait still ahead: hatched up to the reset.
            if s.to.is_none()
                && let Some(until) = s.until.filter(|u| *u > now)
            {
                let (a, b) = (x(now), x(until));
                let _ = writeln!(
                    svg,
                    r##"<rect class="ahead" x="{a:.1}" y="{y:.1}" width="{w:.1}" height="{row_h}" fill="url(#ahead-{name})" stroke="{stroke}" stroke-dasharray="3 2"><title>{title}</title></rect>"##,
                    w = (b - a).max(1.5),
                    stroke = colour(s.phase),
                    title = esc(&format!(
                        "{pc} {} until {}",
                        s.phase,
                        clock_time(until, now)
                    )),
                );
            }
        }
    }
    // "now".
    let nx = x(now);
    let _ = writeln!(
        svg,
        r##"<line x1="{nx:.1}" y1="{y1}" x2="{nx:.1}" y2="{y2:.1}" stroke="#1f3b5a" stroke-width="1.5"/><text x="{nx:.1}" y="{y1}" font-size="11" fill="#1f3b5a" text-anchor="middle" dy="-8">now</text>"##,
        y1 = top - 4.0,
        y2 = height - 4.0,
    );
    let row_of = |pc: &PcId| pcs.iter().position(|p| p == pc);
    for e in &tl.events {
        if e.at < start {
            continue;
        }
        let ex = x(e.at);
        let (from, to) = (e.handoff.from_pc(), e.handoff.to_pc());
        let title = esc(&format!(
            "{} — {} ({})",
            clock_time(e.at, now),
            event_text(e),
            e.handoff
        ));
        match e.verdict {
            Some(v) => {
                if let Some(r) = row_of(from) {
                    let _ = writeln!(
                        svg,
                        r##"<circle class="verdict" cx="{ex:.1}" cy="{cy:.1}" r="4.5" fill="{fill}" stroke="#fff" stroke-width="1.5"><title>{title}</title></circle>"##,
                        cy = row_y(r) + row_h / 2.0,
                        fill = verdict_colour(v),
                    );
                }
            }
            // Finished work shows as its verdict.
            None if e.reason == HandoffReason::WorkComplete => {}
            // A task the leader gave: a mark on the receiver's row.
            None if matches!(
                e.reason,
                HandoffReason::Assignment | HandoffReason::Remediation
            ) || from == to =>
            {
                if let Some(r) = row_of(to) {
                    let y = row_y(r);
                    let _ = writeln!(
                        svg,
                        r##"<path class="assignment" d="M{a:.1},{y:.1} h9 l-4.5,7 z" fill="#fff" stroke="#1f3b5a" stroke-width="1.2"><title>{title}</title></path>"##,
                        a = ex - 4.5,
                    );
                }
            }
            None => {
                if let (Some(a), Some(b)) = (row_of(from), row_of(to)) {
                    let (ya, yb) = (row_y(a) + row_h / 2.0, row_y(b) + row_h / 2.0);
                    let (y1, y2) = if ya < yb {
                        (ya, yb - row_h / 2.0)
                    } else {
                        (ya, yb + row_h / 2.0)
                    };
                    let (stroke, marker) = if e.reason == HandoffReason::Reassignment {
                        ("#b00020", "arrow-r")
                    } else {
                        ("#1f3b5a", "arrow")
                    };
                    let _ = writeln!(
                        svg,
                        r##"<line class="handoff" x1="{ex:.1}" y1="{y1:.1}" x2="{ex:.1}" y2="{y2:.1}" stroke="{stroke}" stroke-width="2" marker-end="url(#{marker}-{name})"><title>{title}</title></line>"##
                    );
                }
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// When each paused or exhausted PC expects to work again.
fn resets_html(page: &Page<'_>) -> String {
    let now = page.now;
    let mut items = String::new();
    for pc in pcs(page) {
        let Some(span) = page
            .timeline
            .pcs
            .get(&pc)
            .and_then(|s| s.last())
            .filter(|s| s.to.is_none())
        else {
            continue;
        };
        if !matches!(span.phase, Phase::Exhausted | Phase::Paused) {
            continue;
        }
        let text = match span.until.filter(|u| *u > now) {
            Some(until) => format!(
                "<li><b>{}</b> {} until <b>{}</b> — in {} (as of {})</li>",
                esc(pc.as_str()),
                span.phase,
                esc(&clock_time(until, now)),
                esc(&human_duration((until - now).to_std().unwrap_or_default())),
                esc(&now.format("%H:%M UTC").to_string())
            ),
            None => format!(
                "<li><b>{}</b> {} since {}, no reset time known</li>",
                esc(pc.as_str()),
                span.phase,
                esc(&clock_time(span.from, now))
            ),
        };
        items.push_str(&text);
        items.push('\n');
    }
    if items.is_empty() {
        return "<p id=\"resets\" class=\"muted\">No PC waits for a reset.</p>".to_owned();
    }
    format!("<ul id=\"resets\">\n{items}</ul>")
}

/// Tokens per PC and UTC day, the last seven days.
fn tokens_html(page: &Page<'_>) -> String {
    let today = page.now.date_naive();
    let days: Vec<String> = (0..7)
        .rev()
        .map(|back| {
            (today - chrono::Days::new(back))
                .format("%Y-%m-%d")
                .to_string()
        })
        .collect();
    let mut out = String::from("<table id=\"tokens\">\n<tr><th>PC</th>");
    for d in &days {
        let _ = write!(out, "<th class=\"n\">{}</th>", esc(&d[5..]));
    }
    out.push_str("<th class=\"n\">7 days</th></tr>\n");
    let mut totals = vec![0u64; days.len()];
    for pc in pcs(page) {
        let by_day = page.credit.get(&pc).map(|c| &c.tokens_by_day);
        let _ = write!(out, "<tr><td class=\"pc\">{}</td>", esc(pc.as_str()));
        let mut sum = 0;
        for (i, d) in days.iter().enumerate() {
            let n = by_day.and_then(|m| m.get(d)).copied().unwrap_or(0);
            totals[i] += n;
            sum += n;
            let _ = write!(out, "<td class=\"n\">{}</td>", tokens_text(n));
        }
        let _ = writeln!(out, "<td class=\"n\"><b>{}</b></td></tr>", tokens_text(sum));
    }
    out.push_str("<tr><td class=\"muted\">fleet</td>");
    for n in &totals {
        let _ = write!(out, "<td class=\"n muted\">{}</td>", tokens_text(*n));
    }
    let _ = writeln!(
        out,
        "<td class=\"n\"><b>{}</b></td></tr>",
        tokens_text(totals.iter().sum())
    );
    out.push_str("</table>");
    out
}

/// The newest events first.
fn recent_html(page: &Page<'_>) -> String {
    let now = page.now;
    let mut items = String::new();
    for e in page.timeline.events.iter().rev().take(15) {
        let class = match e.verdict {
            Some(Verdict::Approve) => " class=\"ok\"",
            Some(Verdict::Deny) => " class=\"bad\"",
            Some(Verdict::Escalate) => " class=\"warn\"",
            None => "",
        };
        let _ = writeln!(
            items,
            "<li><span class=\"muted\">{}</span> <span{class}>{}</span> <code class=\"muted\">{}</code></li>",
            esc(&clock_time(e.at, now)),
            esc(&event_text(e)),
            esc(e.handoff.as_str())
        );
    }
    if items.is_empty() {
        return "<p id=\"recent\" class=\"muted\">Nothing in the last day.</p>".to_owned();
    }
    format!("<ul id=\"recent\">\n{items}</ul>")
}

fn pc_rows(page: &Page<'_>) -> String {
    let mut rows = String::new();
    for (pc, s) in &page.status.instances {
        let credit = page.dashboard.pcs.get(pc);
        let level = credit.map_or("—".to_owned(), |c| c.status.as_str().to_owned());
        let class = credit.map_or("unknown", |c| match c.status.as_str() {
            "HEALTHY" => "ok",
            "WARNING" => "warn",
            _ => "bad",
        });
        let silent = s.silent_for_s.map_or("never seen".to_owned(), |secs| {
            human_duration(std::time::Duration::from_secs_f64(secs.max(0.0)))
        });
        let _ = writeln!(
            rows,
            "<tr><td class=\"pc\">{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(pc.as_str()),
            esc(&level),
            credit.map_or("—".to_owned(), |c| c.rate_limit_count.to_string()),
            credit.map_or("—".to_owned(), |c| format!(
                "{:.0}%",
                c.error_rate * 100.0
            )),
            credit.map_or("—".to_owned(), |c| format!(
                "{:.1} s",
                c.avg_response_time
            )),
            esc(&format!("{:?}", s.liveness).to_uppercase()),
            esc(&silent),
            esc(s.state.map_or("—", |st| st.as_str())),
            esc(s.current_task.as_ref().map_or("—", |t| t.as_str())),
        );
        let _ = writeln!(
            rows,
            "<tr class=\"sub\"><td></td><td colspan=\"8\">next PC: {}</td></tr>",
            esc(credit
                .and_then(|c| c.next_pc.as_ref())
                .map_or("—", |p| p.as_str()))
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn token_counts_read_at_a_glance() {
        assert_eq!(
            [0, 999, 1_000, 912_450, 1_843_200].map(tokens_text),
            ["0", "999", "1 k", "912 k", "1.84 M"]
        );
    }
}
