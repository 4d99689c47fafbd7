//! Credit exhaustion: the event format and the rules that turn events into a level.
//!
//! The credit monitor appends one [`CreditEvent`] per line to `local/credit/events.jsonl`
//! (the format is documented in docs/protocol.md). A [`Tracker`] ingests events in order and
//! evaluates the rules at any moment; it keeps only what its windows need, so evaluation costs
//! the same after ten events or ten million, and replaying a trace is linear.
//!
//! # Rules
//!
//! | rule | EXHAUSTED when | fraction |
//! |---|---|---|
//! | `rate_limit` | `rate_limit_threshold` rate limits within `rate_limit_window` | count / threshold |
//! | `slow_responses` | `slow_threshold` consecutive responses slower than `slow_response` | run / threshold |
//! | `error_rate` | errors over the last `error_window_calls` calls exceed `error_rate_threshold`; while the window fills (from `error_min_calls` calls), the 95% lower confidence bound of the rate must exceed it | rate (or bound) / threshold |
//! | `usage_limit` | a usage limit was reported and its `reset_at` has not passed | 1 while it lasts |
//! | `spend_limit` | a spend limit was reported this month (UTC) | 1 while it lasts |
//! | `utilization` | the provider's utilization is at or above `utilization_threshold` | utilization / threshold |
//! | `predictive` | utilization, extrapolated from its recent rise, reaches 1.0 within `predictive_lead` | lead / time left |
//!
//! Overloaded responses (HTTP 529) are the provider's global load, not this PC's credit: they
//! count in no rule.
//!
//! # Levels
//!
//! A continuous rule is WARNING from `warning_fraction` (70%) of its threshold and CRITICAL from
//! `critical_fraction` (85%). A counted rule (rate limits, slow responses) moves in whole steps,
//! and 70% or 85% of a small threshold is never hit exactly (2 of 3 is 67%), so for counted rules:
//! one count short of the threshold is CRITICAL, two counts short is at least WARNING, and
//! otherwise the percentages apply. With a threshold of 3 or more every level is reachable:
//! 0, 1, 2, 3 rate limits are HEALTHY, WARNING, CRITICAL, EXHAUSTED. (A threshold of 1 or 2 has
//! too few steps for four levels: the lower ones are skipped.)

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::config::CreditConfig;
use crate::schema::{CreditLevel, HandoffReason};

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A call that succeeded (slow if its duration is over `slow_response`).
    Success,
    /// A call that failed (429 is `rate_limit`, 529 is `overloaded`).
    Error,
    /// A rate-limit response (HTTP 429).
    RateLimit,
    /// A response slower than `slow_response` (`duration_s` says how slow).
    Slow,
    /// The plan's usage limit was reached; it resets at `reset_at`.
    UsageLimit,
    /// The account's spend limit was reached; it resets on the first of next month (UTC).
    SpendLimit,
    /// The provider is overloaded (HTTP 529): counts in no rule.
    Overloaded,
    /// A utilization reading (0..1) from the provider's rate-limit headers.
    Utilization,
    /// This PC took over work: every window starts afresh.
    Reset,
}

impl EventKind {
    /// The word used in the event file.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Success => "success",
            EventKind::Error => "error",
            EventKind::RateLimit => "rate_limit",
            EventKind::Slow => "slow",
            EventKind::UsageLimit => "usage_limit",
            EventKind::SpendLimit => "spend_limit",
            EventKind::Overloaded => "overloaded",
            EventKind::Utilization => "utilization",
            EventKind::Reset => "reset",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of `local/credit/events.jsonl` (and of a replay trace). Only `ts` and `kind` are
/// required; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditEvent {
    /// When it happened.
    pub ts: DateTime<Utc>,
    /// What happened.
    pub kind: EventKind,
    /// How long the call took, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// The provider's `retry-after`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<f64>,
    /// When a limit resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<DateTime<Utc>>,
    /// The HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Tokens used by the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Utilization, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utilization: Option<f64>,
}

/// Why an event line was refused.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON of the event format.
    #[error("not a credit event: {0}")]
    Parse(#[source] serde_json::Error),
    /// Parsed, but a figure is out of range.
    #[error("invalid credit event: {0}")]
    Invalid(String),
}

/// Asks this PC's credit monitor to start afresh: appends a `reset` event to its events file
/// (under its lock). What a reset means — every window restarts, any pause ends, the trigger is
/// armed again — is the credit monitor's to apply when it next steps. The wake-daemon asks
/// when this PC takes work over from one out of credit; `credit-monitor --reset` asks too.
pub fn request_reset(
    tree: &crate::layout::Tree,
    now: DateTime<Utc>,
) -> Result<(), crate::fsio::IoError> {
    crate::daemon::append_line(
        &tree.credit_events_file(),
        &CreditEvent::new(now, EventKind::Reset).to_line(),
        &tree.credit_lock_file(),
    )
}

impl CreditEvent {
    /// An event with only `ts` and `kind`.
    pub fn new(ts: DateTime<Utc>, kind: EventKind) -> Self {
        Self {
            ts,
            kind,
            duration_s: None,
            retry_after_s: None,
            reset_at: None,
            status_code: None,
            tokens: None,
            utilization: None,
        }
    }

    /// Parses one line and checks its figures.
    pub fn parse_line(line: &str) -> Result<Self, EventError> {
        let event: CreditEvent = serde_json::from_str(line).map_err(EventError::Parse)?;
        event.check().map_err(EventError::Invalid)?;
        Ok(event)
    }

    /// The figures must be finite and in range.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("duration_s", self.duration_s),
            ("retry_after_s", self.retry_after_s),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(format!("{name} must be a non-negative number, not {v}"));
            }
        }
        if let Some(u) = self.utilization
            && !(0.0..=1.0).contains(&u)
        {
            return Err(format!("utilization must be between 0 and 1, not {u}"));
        }
        if self.kind == EventKind::Utilization && self.utilization.is_none() {
            return Err("a utilization event needs `utilization`".to_owned());
        }
        Ok(())
    }

    /// One line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        // Serializing this struct cannot fail: no maps with non-string keys, no custom code.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The rule names, as they appear in `credit/{PC}.json` and in replay output.
pub mod rule {
    /// Rate limits within the window.
    pub const RATE_LIMIT: &str = "rate_limit";
    /// Consecutive slow responses.
    pub const SLOW_RESPONSES: &str = "slow_responses";
    /// Errors over recent calls.
    pub const ERROR_RATE: &str = "error_rate";
    /// The plan's usage limit.
    pub const USAGE_LIMIT: &str = "usage_limit";
    /// The account's spend limit.
    pub const SPEND_LIMIT: &str = "spend_limit";
    /// Utilization at the threshold.
    pub const UTILIZATION: &str = "utilization";
    /// Utilization projected to reach the limit.
    pub const PREDICTIVE: &str = "predictive";
    /// Every rule, in report order.
    pub const ALL: [&str; 7] = [
        RATE_LIMIT,
        SLOW_RESPONSES,
        ERROR_RATE,
        USAGE_LIMIT,
        SPEND_LIMIT,
        UTILIZATION,
        PREDICTIVE,
    ];
}

/// The thresholds, from `[credit]` in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Rate limits in the window that mean EXHAUSTED.
    pub rate_limit_threshold: u32,
    /// The rate-limit window.
    pub rate_limit_window: Duration,
    /// What counts as slow, in seconds.
    pub slow_response_s: f64,
    /// Consecutive slow responses that mean EXHAUSTED.
    pub slow_threshold: u32,
    /// The error rate that must be exceeded.
    pub error_rate_threshold: f64,
    /// Calls the error rate looks at.
    pub error_window_calls: u32,
    /// Calls needed before the error rate counts.
    pub error_min_calls: u32,
    /// Utilization that means EXHAUSTED.
    pub utilization_threshold: f64,
    /// The predictive lead time.
    pub predictive_lead: Duration,
    /// WARNING from this fraction.
    pub warning_fraction: f64,
    /// CRITICAL from this fraction.
    pub critical_fraction: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self::from(&CreditConfig::default())
    }
}

impl From<&CreditConfig> for Rules {
    fn from(c: &CreditConfig) -> Self {
        Self {
            rate_limit_threshold: c.rate_limit_threshold.max(1),
            rate_limit_window: c.rate_limit_window,
            slow_response_s: c.slow_response.as_secs_f64(),
            slow_threshold: c.slow_threshold.max(1),
            error_rate_threshold: c.error_rate_threshold,
            error_window_calls: c.error_window_calls.max(1),
            error_min_calls: c.error_min_calls,
            utilization_threshold: c.utilization_threshold,
            predictive_lead: c.predictive_lead,
            warning_fraction: c.warning_fraction,
            critical_fraction: c.critical_fraction,
        }
    }
}

impl Rules {
    /// The level of a continuous rule at `fraction`, EXHAUSTED when `exhausted`.
    pub fn continuous_level(&self, fraction: f64, exhausted: bool) -> CreditLevel {
        if exhausted {
            CreditLevel::Exhausted
        } else if fraction >= self.critical_fraction {
            CreditLevel::Critical
        } else if fraction >= self.warning_fraction {
            CreditLevel::Warning
        } else {
            CreditLevel::Healthy
        }
    }

    /// The level of a counted rule at `count` of `threshold` (see the module docs).
    pub fn counted_level(&self, count: u32, threshold: u32) -> CreditLevel {
        if count >= threshold {
            return CreditLevel::Exhausted;
        }
        if count == 0 {
            return CreditLevel::Healthy;
        }
        let fraction = f64::from(count) / f64::from(threshold);
        if count + 1 >= threshold || fraction >= self.critical_fraction {
            CreditLevel::Critical
        } else if count + 2 >= threshold || fraction >= self.warning_fraction {
            CreditLevel::Warning
        } else {
            CreditLevel::Healthy
        }
    }
}

/// One rule's standing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleResult {
    /// The rule's name (see [`rule`]).
    pub rule: &'static str,
    /// The level this rule alone would give (WARNING from half its threshold).
    pub level: CreditLevel,
    /// Its fraction of the threshold (1.0 = threshold reached).
    pub fraction: f64,
    /// A sentence for people.
    pub reason: String,
    /// Until when the rule keeps the PC exhausted, when that is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// The outcome of evaluating every rule at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// When.
    pub at: DateTime<Utc>,
    /// The highest level of any rule.
    pub level: CreditLevel,
    /// The rule that decided it (the highest level, then the highest fraction); `None` when every
    /// rule is at zero.
    pub rule: Option<&'static str>,
    /// That rule's fraction.
    pub fraction: f64,
    /// Why, for people.
    pub reason: String,
    /// Every rule, in [`rule::ALL`] order.
    pub rules: Vec<RuleResult>,
    /// Rate limits in the window.
    pub rate_limit_count: u32,
    /// Errors over the recent calls, 0..1.
    pub error_rate: f64,
    /// Mean duration of the recent calls that reported one, in seconds.
    pub avg_response_time: f64,
    /// Until when the PC must not be chosen as a handoff target, when known.
    pub exhausted_until: Option<DateTime<Utc>>,
}

impl Evaluation {
    /// The rules' fractions by name, for `credit/{PC}.json`.
    pub fn fractions(&self) -> BTreeMap<String, f64> {
        self.rules
            .iter()
            .map(|r| (r.rule.to_owned(), round4(r.fraction)))
            .collect()
    }

    /// The handoff reason for an EXHAUSTED evaluation.
    pub fn handoff_reason(&self) -> HandoffReason {
        match self.rule {
            Some(rule::USAGE_LIMIT) => HandoffReason::UsageLimit,
            Some(rule::SPEND_LIMIT) => HandoffReason::SpendLimit,
            _ => HandoffReason::CreditExhaustion,
        }
    }
}

/// Rounds to 4 decimals, so files do not carry float noise.
pub fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[derive(Debug, Clone, Copy)]
struct Call {
    failed: bool,
    duration_s: Option<f64>,
}

/// Ingests events in order and evaluates the rules. Memory is bounded by the windows.
#[derive(Debug, Clone)]
pub struct Tracker {
    rules: Rules,
    /// Rate limits: when, and until when the provider asked us to wait.
    rate_limits: VecDeque<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    slow_run: u32,
    calls: VecDeque<Call>,
    utilization: VecDeque<(DateTime<Utc>, f64)>,
    usage_until: Option<DateTime<Utc>>,
    spend_until: Option<DateTime<Utc>>,
    events_seen: u64,
    last_reset: Option<DateTime<Utc>>,
}

/// How long a usage limit lasts when the provider did not say (Claude's plans reset in
/// five-hour windows).
pub const DEFAULT_USAGE_LIMIT: Duration = Duration::from_secs(5 * 60 * 60);

/// The first instant of the month after `t`, in UTC.
pub fn first_of_next_month(t: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or(t)
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl Tracker {
    /// A monitor with empty windows.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            rate_limits: VecDeque::new(),
            slow_run: 0,
            calls: VecDeque::new(),
            utilization: VecDeque::new(),
            usage_until: None,
            spend_until: None,
            events_seen: 0,
            last_reset: None,
        }
    }

    /// The thresholds in use.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Events ingested since the monitor was made.
    pub fn events_seen(&self) -> u64 {
        self.events_seen
    }

    /// When the last `reset` event happened.
    pub fn last_reset(&self) -> Option<DateTime<Utc>> {
        self.last_reset
    }

    fn push_call(&mut self, call: Call) {
        self.calls.push_back(call);
        while self.calls.len() > self.rules.error_window_calls as usize {
            self.calls.pop_front();
        }
    }

    /// Takes one event into the windows.
    pub fn ingest(&mut self, e: &CreditEvent) {
        self.events_seen += 1;
        // A reset starts every window afresh: an event dated before it, recorded late (a
        // transcript carried over from another PC, a log read after the fact), is not news.
        if e.kind != EventKind::Reset && self.last_reset.is_some_and(|r| e.ts < r) {
            return;
        }
        let slow = self.rules.slow_response_s;
        match e.kind {
            EventKind::Reset => {
                let rules = self.rules.clone();
                let seen = self.events_seen;
                *self = Tracker::new(rules);
                self.events_seen = seen;
                self.last_reset = Some(e.ts);
            }
            EventKind::Success => {
                let is_slow = e.duration_s.is_some_and(|d| d > slow);
                self.slow_run = if is_slow { self.slow_run + 1 } else { 0 };
                self.push_call(Call {
                    failed: false,
                    duration_s: e.duration_s,
                });
            }
            EventKind::Slow => {
                self.slow_run += 1;
                self.push_call(Call {
                    failed: false,
                    duration_s: e.duration_s,
                });
            }
            EventKind::Error => {
                if e.status_code == Some(529) {
                    return;
                }
                if e.status_code == Some(429) {
                    let mut as_rate_limit = e.clone();
                    as_rate_limit.kind = EventKind::RateLimit;
                    self.events_seen -= 1;
                    return self.ingest(&as_rate_limit);
                }
                self.push_call(Call {
                    failed: true,
                    duration_s: e.duration_s,
                });
            }
            EventKind::RateLimit => {
                let until = later(
                    e.reset_at,
                    e.retry_after_s
                        .map(|s| add(e.ts, Duration::from_secs_f64(s.min(1e9)))),
                );
                self.rate_limits.push_back((e.ts, until));
                // Memory stays bounded even if the clock is never asked: keep a generous tail.
                let keep = (self.rules.rate_limit_threshold as usize).max(1) * 64;
                while self.rate_limits.len() > keep {
                    self.rate_limits.pop_front();
                }
            }
            EventKind::UsageLimit => {
                let until = e.reset_at.unwrap_or_else(|| add(e.ts, DEFAULT_USAGE_LIMIT));
                self.usage_until = later(self.usage_until, Some(until));
            }
            EventKind::SpendLimit => {
                let until = e.reset_at.unwrap_or_else(|| first_of_next_month(e.ts));
                self.spend_until = later(self.spend_until, Some(until));
            }
            EventKind::Overloaded => {}
            EventKind::Utilization => {}
        }
        // Utilization may ride on any event (a wrapper reading a response's headers reports it
        // with the call's outcome), not only on `utilization` events.
        if let Some(u) = e.utilization {
            self.push_utilization(e.ts, u);
        }
    }

    fn push_utilization(&mut self, ts: DateTime<Utc>, u: f64) {
        self.utilization.push_back((ts, u));
        let horizon = self.rules.predictive_lead.max(Duration::from_secs(60));
        while let Some(&(t, _)) = self.utilization.front() {
            if self.utilization.len() > 2 && add(t, horizon) < ts {
                self.utilization.pop_front();
            } else {
                break;
            }
        }
        while self.utilization.len() > 256 {
            self.utilization.pop_front();
        }
    }

    /// Evaluates every rule at `now`.
    pub fn evaluate(&self, now: DateTime<Utc>) -> Evaluation {
        let (rate_limits, count) = self.rate_limit_rule(now);
        let (errors, error_rate) = self.error_rate_rule();
        let results = vec![
            rate_limits,
            self.slow_rule(),
            errors,
            self.limit_rule(rule::USAGE_LIMIT, self.usage_until, "usage limit", now),
            self.limit_rule(rule::SPEND_LIMIT, self.spend_until, "spend limit", now),
            self.utilization_rule(now),
            self.predict(now),
        ];

        let decided = results
            .iter()
            .filter(|x| x.fraction > 0.0 || x.level > CreditLevel::Healthy)
            .max_by(|a, b| {
                a.level
                    .cmp(&b.level)
                    .then(a.fraction.total_cmp(&b.fraction))
            });
        let level = decided.map_or(CreditLevel::Healthy, |d| d.level);
        let exhausted_until = results
            .iter()
            .filter(|x| x.level == CreditLevel::Exhausted)
            .filter_map(|x| x.until)
            .max();
        let durations: Vec<f64> = self.calls.iter().filter_map(|c| c.duration_s).collect();
        let avg = if durations.is_empty() {
            0.0
        } else {
            durations.iter().sum::<f64>() / durations.len() as f64
        };
        Evaluation {
            at: now,
            level,
            rule: decided.map(|d| d.rule),
            fraction: decided.map_or(0.0, |d| round4(d.fraction)),
            reason: decided.map_or_else(|| "no warning signs".to_owned(), |d| d.reason.clone()),
            rate_limit_count: count,
            error_rate: round4(error_rate),
            avg_response_time: round4(avg),
            exhausted_until,
            rules: results,
        }
    }

    /// The rate limits recorded in the window ending at `now`, oldest first.
    fn rate_limits_in_window(
        &self,
        now: DateTime<Utc>,
    ) -> Vec<&(DateTime<Utc>, Option<DateTime<Utc>>)> {
        let window_start = now
            - chrono::Duration::from_std(self.rules.rate_limit_window)
                .unwrap_or(chrono::Duration::MAX);
        self.rate_limits
            .iter()
            .filter(|(t, _)| *t > window_start && *t <= now)
            .collect()
    }

    /// Rate limits in the window, and how many there are.
    fn rate_limit_rule(&self, now: DateTime<Utc>) -> (RuleResult, u32) {
        let r = &self.rules;
        let in_window = self.rate_limits_in_window(now);
        let count = in_window.len() as u32;
        let threshold = r.rate_limit_threshold;
        let rl_level = r.counted_level(count, threshold);
        let rl_until = if rl_level == CreditLevel::Exhausted {
            // The rule stops firing when the oldest of the last `threshold` leaves the window,
            // or when the provider said to retry, whichever is later.
            let nth = in_window[in_window.len() - threshold as usize].0;
            let asked = in_window.iter().filter_map(|(_, u)| *u).max();
            later(Some(add(nth, r.rate_limit_window)), asked)
        } else {
            None
        };
        let result = RuleResult {
            rule: rule::RATE_LIMIT,
            level: rl_level,
            fraction: f64::from(count) / f64::from(threshold),
            reason: format!(
                "{count} rate limit{} in the last {} (threshold {threshold})",
                plural(count),
                humantime::format_duration(r.rate_limit_window)
            ),
            until: rl_until,
        };
        (result, count)
    }

    /// Consecutive slow responses.
    fn slow_rule(&self) -> RuleResult {
        let r = &self.rules;
        let run = self.slow_run;
        RuleResult {
            rule: rule::SLOW_RESPONSES,
            level: r.counted_level(run, r.slow_threshold),
            fraction: f64::from(run) / f64::from(r.slow_threshold),
            reason: format!(
                "{run} consecutive response{} slower than {}s (threshold {})",
                plural(run),
                r.slow_response_s,
                r.slow_threshold
            ),
            until: None,
        }
    }

    /// The error rate of the last calls, and the rate itself.
    fn error_rate_rule(&self) -> (RuleResult, f64) {
        let r = &self.rules;
        let calls = self.calls.len() as u32;
        let errors = self.calls.iter().filter(|c| c.failed).count() as u32;
        let error_rate = if calls == 0 {
            0.0
        } else {
            f64::from(errors) / f64::from(calls)
        };
        let counts = calls >= r.error_min_calls && calls > 0;
        // While the window fills, the rate of a few calls is mostly noise: judge the lower
        // bound of its 95% confidence interval instead, so only an overwhelming error rate
        // fires before the window is full (see docs/credit-monitor.md for the numbers).
        let filling = calls < r.error_window_calls;
        let judged = if filling {
            wilson_lower_bound(errors, calls)
        } else {
            error_rate
        };
        let (er_fraction, er_level) = if counts && r.error_rate_threshold > 0.0 {
            let f = judged / r.error_rate_threshold;
            (f, r.continuous_level(f, judged > r.error_rate_threshold))
        } else {
            (0.0, CreditLevel::Healthy)
        };
        let result = RuleResult {
            rule: rule::ERROR_RATE,
            level: er_level,
            fraction: er_fraction,
            reason: if counts && filling {
                format!(
                    "{errors} error{} in the first {calls} calls ({:.0}%; at least {:.0}% with 95% confidence, limit {:.0}%)",
                    plural(errors),
                    error_rate * 100.0,
                    judged * 100.0,
                    r.error_rate_threshold * 100.0
                )
            } else if counts {
                format!(
                    "{errors} error{} in the last {calls} calls ({:.0}%, limit {:.0}%)",
                    plural(errors),
                    error_rate * 100.0,
                    r.error_rate_threshold * 100.0
                )
            } else {
                format!(
                    "{calls} call{} so far, the error rate counts from {}",
                    plural(calls),
                    r.error_min_calls
                )
            },
            until: None,
        };
        (result, error_rate)
    }

    /// A usage or spend limit the provider reported, active until it resets.
    fn limit_rule(
        &self,
        name: &'static str,
        until: Option<DateTime<Utc>>,
        what: &str,
        now: DateTime<Utc>,
    ) -> RuleResult {
        let active = until.is_some_and(|u| now < u);
        RuleResult {
            rule: name,
            level: if active {
                CreditLevel::Exhausted
            } else {
                CreditLevel::Healthy
            },
            fraction: if active { 1.0 } else { 0.0 },
            reason: match until {
                Some(u) if active => format!("{what} reached; it resets at {}", u.to_rfc3339()),
                _ => format!("no {what} reported"),
            },
            until: until.filter(|_| active),
        }
    }

    /// The latest utilization reading against its limit.
    fn utilization_rule(&self, now: DateTime<Utc>) -> RuleResult {
        let r = &self.rules;
        let latest = self.utilization.back().copied().filter(|(t, _)| *t <= now);
        let (u_fraction, u_level, u_reason) = match latest {
            Some((_, u)) if r.utilization_threshold > 0.0 => {
                let f = u / r.utilization_threshold;
                (
                    f,
                    r.continuous_level(f, u >= r.utilization_threshold),
                    format!(
                        "utilization {:.0}% (limit {:.0}%)",
                        u * 100.0,
                        r.utilization_threshold * 100.0
                    ),
                )
            }
            _ => (
                0.0,
                CreditLevel::Healthy,
                "no utilization reported".to_owned(),
            ),
        };
        RuleResult {
            rule: rule::UTILIZATION,
            level: u_level,
            fraction: u_fraction,
            reason: u_reason,
            until: None,
        }
    }

    /// The predictive rule: a least-squares line through the recent utilization readings.
    fn predict(&self, now: DateTime<Utc>) -> RuleResult {
        let r = &self.rules;
        let lead = r.predictive_lead.as_secs_f64().max(1.0);
        let samples: Vec<(f64, f64)> = match self.utilization.back() {
            Some(&(last, _)) => self
                .utilization
                .iter()
                .filter(|(t, _)| *t <= now && secs_between(*t, last) <= lead)
                .map(|&(t, u)| (secs_between(last, t), u))
                .collect(),
            None => Vec::new(),
        };
        let quiet = RuleResult {
            rule: rule::PREDICTIVE,
            level: CreditLevel::Healthy,
            fraction: 0.0,
            reason: "utilization is not rising".to_owned(),
            until: None,
        };
        let span = samples.first().map_or(0.0, |s| -s.0);
        if samples.len() < 2 || span < 1.0 {
            return quiet;
        }
        let n = samples.len() as f64;
        let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
        let my = samples.iter().map(|s| s.1).sum::<f64>() / n;
        let sxx: f64 = samples.iter().map(|s| (s.0 - mx).powi(2)).sum();
        let sxy: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 - my)).sum();
        if sxx <= 0.0 {
            return quiet;
        }
        let slope = sxy / sxx; // utilization per second
        let Some(&(last_t, last_u)) = self.utilization.back() else {
            return quiet;
        };
        if slope <= 0.0 {
            return quiet;
        }
        let projected_now = (last_u + slope * secs_between(last_t, now).max(0.0)).min(1.0);
        let eta = ((1.0 - projected_now) / slope).max(0.0);
        let fraction = if eta <= 0.0 { f64::MAX } else { lead / eta };
        let fraction = fraction.min(100.0);
        RuleResult {
            rule: rule::PREDICTIVE,
            level: r.continuous_level(fraction, eta <= lead),
            fraction,
            reason: format!(
                "utilization rising {:.1} points a minute, at the limit in about {}",
                slope * 6000.0,
                humantime::format_duration(Duration::from_secs(eta.min(1e9) as u64))
            ),
            until: None,
        }
    }
}

/// The lower end of the Wilson score interval (95%, z = 1.96) of `errors` in `calls`: the error
/// rate the calls show with 95% confidence.
pub fn wilson_lower_bound(errors: u32, calls: u32) -> f64 {
    if calls == 0 {
        return 0.0;
    }
    let n = f64::from(calls);
    let p = f64::from(errors) / n;
    let z = 1.96_f64;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).max(0.0)
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One change found by [`replay`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReplayLine {
    /// The level changed.
    Level {
        /// The event's time.
        ts: DateTime<Utc>,
        /// The new level.
        level: CreditLevel,
        /// The deciding rule.
        rule: Option<&'static str>,
        /// Its fraction.
        fraction: f64,
    },
    /// A handoff would be triggered here.
    Handoff {
        /// The event's time.
        ts: DateTime<Utc>,
        /// Always true (so JSON readers can tell the lines apart).
        handoff: bool,
        /// Why.
        reason: String,
    },
}

/// Runs the rules over a trace with the trace's own clock: one [`ReplayLine::Level`] per level
/// change, and a [`ReplayLine::Handoff`] where the monitor would hand off (once per exhaustion:
/// it re-arms when the level drops below EXHAUSTED or on a `reset`).
pub fn replay<'a>(
    rules: Rules,
    events: impl IntoIterator<Item = &'a CreditEvent>,
    mut out: impl FnMut(ReplayLine),
) -> u64 {
    let mut monitor = Tracker::new(rules);
    let mut level = CreditLevel::Healthy;
    let mut armed = true;
    let mut n = 0;
    for e in events {
        n += 1;
        monitor.ingest(e);
        if e.kind == EventKind::Reset {
            armed = true;
        }
        let eval = monitor.evaluate(e.ts);
        if eval.level != level {
            level = eval.level;
            out(ReplayLine::Level {
                ts: e.ts,
                level,
                rule: eval.rule,
                fraction: eval.fraction,
            });
        }
        if level == CreditLevel::Exhausted {
            if armed {
                armed = false;
                out(ReplayLine::Handoff {
                    ts: e.ts,
                    handoff: true,
                    reason: eval.reason.clone(),
                });
            }
        } else {
            armed = true;
        }
    }
    n
}

#[cfg(test)]
mod tests;
