use super::*;
use crate::schema::CreditLevel::*;

fn t0() -> DateTime<Utc> {
    "2026-11-21T10:00:00Z".parse().expect("valid time")
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

fn ev(secs: i64, kind: EventKind) -> CreditEvent {
    CreditEvent::new(at(secs), kind)
}

fn success(secs: i64, duration: f64) -> CreditEvent {
    CreditEvent {
        duration_s: Some(duration),
        ..ev(secs, EventKind::Success)
    }
}

fn util(secs: i64, u: f64) -> CreditEvent {
    CreditEvent {
        utilization: Some(u),
        ..ev(secs, EventKind::Utilization)
    }
}

fn run(events: &[CreditEvent], now: i64) -> Evaluation {
    let mut m = Tracker::new(Rules::default());
    for e in events {
        m.ingest(e);
    }
    m.evaluate(at(now))
}

fn rule_of<'a>(e: &'a Evaluation, name: &str) -> &'a RuleResult {
    e.rules
        .iter()
        .find(|r| r.rule == name)
        .expect("every rule is reported")
}

#[test]
fn no_events_is_healthy_with_no_deciding_rule() {
    let e = run(&[], 0);
    assert_eq!(e.level, Healthy);
    assert_eq!(e.rule, None);
    assert_eq!(e.rules.len(), rule::ALL.len());
}

#[test]
fn rate_limits_below_at_and_above_the_threshold() {
    let rl = |s| ev(s, EventKind::RateLimit);
    let levels: Vec<_> = (0..=4)
        .map(|n| run(&(0..n).map(|i| rl(i * 10)).collect::<Vec<_>>(), 60).level)
        .collect();
    assert_eq!(levels, [Healthy, Warning, Critical, Exhausted, Exhausted]);
    let e = run(&[rl(0), rl(10), rl(20)], 60);
    assert_eq!(e.rule, Some(rule::RATE_LIMIT));
    assert_eq!(e.fraction, 1.0);
    assert_eq!(e.rate_limit_count, 3);
    assert!(e.reason.contains("3 rate limits"), "{}", e.reason);
    assert_eq!(e.handoff_reason(), HandoffReason::CreditExhaustion);
}

#[test]
fn the_rate_limit_window_slides() {
    let events = [
        ev(0, EventKind::RateLimit),
        ev(300, EventKind::RateLimit),
        ev(600, EventKind::RateLimit),
    ];
    // 15 minutes after the first, it has left the window.
    assert_eq!(run(&events, 899).level, Exhausted);
    let e = run(&events, 900);
    assert_eq!(e.level, Critical);
    assert_eq!(e.rate_limit_count, 2);
    // exhausted_until says when the rule stops firing.
    assert_eq!(run(&events, 700).exhausted_until, Some(at(900)));
}

#[test]
fn retry_after_extends_exhausted_until() {
    let mut third = ev(20, EventKind::RateLimit);
    third.retry_after_s = Some(3600.0);
    let e = run(
        &[
            ev(0, EventKind::RateLimit),
            ev(10, EventKind::RateLimit),
            third,
        ],
        30,
    );
    assert_eq!(e.exhausted_until, Some(at(3620)));
}

#[test]
fn consecutive_slow_responses_and_a_normal_one_ends_the_run() {
    let slow = |s| success(s, 12.0);
    let four: Vec<_> = (0..4).map(slow).collect();
    assert_eq!(run(&four, 10).level, Critical);
    let mut five = four.clone();
    five.push(ev(5, EventKind::Slow));
    let e = run(&five, 10);
    assert_eq!((e.level, e.rule), (Exhausted, Some(rule::SLOW_RESPONSES)));
    // Exactly at the limit is not slow.
    let mut at_limit = four.clone();
    at_limit.push(success(5, 10.0));
    assert_eq!(run(&at_limit, 10).level, Healthy);
    // A normal response in between restarts the count.
    let mut broken: Vec<_> = (0..3).map(slow).collect();
    broken.push(success(3, 1.0));
    broken.extend((4..7).map(slow));
    assert_eq!(run(&broken, 10).level, Warning);
    assert_eq!(
        rule_of(&run(&broken, 10), rule::SLOW_RESPONSES).fraction,
        0.6
    );
}

#[test]
fn error_rate_needs_enough_calls_and_must_be_exceeded() {
    let calls = |errors: usize, total: usize| -> Vec<CreditEvent> {
        (0..total)
            .map(|i| {
                if i < errors {
                    ev(i as i64, EventKind::Error)
                } else {
                    success(i as i64, 1.0)
                }
            })
            .collect()
    };
    // 9 calls, all errors: not enough calls yet.
    assert_eq!(run(&calls(9, 9), 100).level, Healthy);
    // While the window fills, the 95% lower bound of the rate is judged: 4 of 10 (40%, the
    // old false alarm) is at least 17% — healthy; 5 of 10 at least 24% — WARNING; 6 of 10 at
    // least 31% — EXHAUSTED; 10 of 10 at once.
    assert_eq!(run(&calls(4, 10), 100).level, Healthy);
    assert_eq!(run(&calls(5, 10), 100).level, Warning);
    assert_eq!(run(&calls(6, 10), 100).level, Exhausted);
    let e = run(&calls(10, 10), 100);
    assert_eq!((e.level, e.rule), (Exhausted, Some(rule::ERROR_RATE)));
    assert!(
        rule_of(&e, rule::ERROR_RATE)
            .reason
            .contains("with 95% confidence"),
        "{}",
        rule_of(&e, rule::ERROR_RATE).reason
    );
    // The full window: the rate itself.
    // 20 calls: 5 → WARNING (25%), 6 → CRITICAL (30%), 7 → EXHAUSTED (35%).
    assert_eq!(run(&calls(4, 20), 100).level, Healthy);
    assert_eq!(run(&calls(5, 20), 100).level, Warning);
    assert_eq!(run(&calls(6, 20), 100).level, Critical);
    let e = run(&calls(7, 20), 100);
    assert_eq!((e.level, e.rule), (Exhausted, Some(rule::ERROR_RATE)));
    assert_eq!(e.error_rate, 0.35);
}

#[test]
fn the_error_window_slides_over_the_last_calls() {
    let mut events: Vec<_> = (0..7).map(|i| ev(i, EventKind::Error)).collect();
    events.extend((7..20).map(|i| success(i, 1.0)));
    assert_eq!(run(&events, 100).level, Exhausted);
    // Three more good calls push three errors out of the last 20.
    events.extend((20..23).map(|i| success(i, 1.0)));
    let e = run(&events, 100);
    assert_eq!(e.error_rate, 0.2);
    assert_eq!(e.level, Healthy);
}

#[test]
fn overloaded_is_never_a_reason_to_hand_off() {
    let mut events: Vec<_> = (0..50).map(|i| ev(i, EventKind::Overloaded)).collect();
    events.extend((50..100).map(|i| CreditEvent {
        status_code: Some(529),
        ..ev(i, EventKind::Error)
    }));
    events.extend((100..110).map(|i| success(i, 1.0)));
    let e = run(&events, 200);
    assert_eq!(e.level, Healthy);
    assert_eq!(e.error_rate, 0.0);
}

#[test]
fn an_error_with_status_429_is_a_rate_limit() {
    let e429 = |s| CreditEvent {
        status_code: Some(429),
        ..ev(s, EventKind::Error)
    };
    let e = run(&[e429(0), e429(1), e429(2)], 10);
    assert_eq!((e.level, e.rule), (Exhausted, Some(rule::RATE_LIMIT)));
}

#[test]
fn usage_limit_lasts_until_its_reset_in_any_time_zone() {
    let mut e = ev(0, EventKind::UsageLimit);
    // 19:00 in Tokyo is 10:00 UTC; reset one hour after the event.
    e.reset_at = Some(
        DateTime::parse_from_rfc3339("2026-11-21T20:00:00+09:00")
            .expect("valid time")
            .with_timezone(&Utc),
    );
    assert_eq!(e.reset_at, Some(at(3600)));
    let during = run(std::slice::from_ref(&e), 3599);
    assert_eq!(
        (during.level, during.rule),
        (Exhausted, Some(rule::USAGE_LIMIT))
    );
    assert_eq!(during.exhausted_until, Some(at(3600)));
    assert_eq!(during.handoff_reason(), HandoffReason::UsageLimit);
    assert_eq!(run(&[e], 3600).level, Healthy);
}

#[test]
fn usage_limit_without_a_reset_time_lasts_five_hours() {
    let e = run(&[ev(0, EventKind::UsageLimit)], 60);
    assert_eq!(e.exhausted_until, Some(at(5 * 3600)));
}

#[test]
fn spend_limit_lasts_until_the_first_of_next_month() {
    let e = run(&[ev(0, EventKind::SpendLimit)], 60);
    assert_eq!((e.level, e.rule), (Exhausted, Some(rule::SPEND_LIMIT)));
    let december: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().expect("valid time");
    assert_eq!(e.exhausted_until, Some(december));
    assert_eq!(e.handoff_reason(), HandoffReason::SpendLimit);
    let dec31: DateTime<Utc> = "2026-12-31T23:59:59Z".parse().expect("valid time");
    assert_eq!(
        first_of_next_month(dec31),
        "2027-01-01T00:00:00Z"
            .parse::<DateTime<Utc>>()
            .expect("valid time")
    );
}

#[test]
fn utilization_at_below_and_above_the_threshold() {
    let level = |u| run(&[util(0, u)], 1).level;
    assert_eq!(level(0.5), Healthy);
    assert_eq!(level(0.70), Warning); // 0.70 / 0.95 = 74%
    assert_eq!(level(0.82), Critical); // 86%
    assert_eq!(level(0.9499), Critical);
    assert_eq!(level(0.95), Exhausted);
    assert_eq!(level(1.0), Exhausted);
}

#[test]
fn predictive_catches_a_rise_before_the_hard_limit() {
    // One point a minute from 50%: at 60% now, at 100% in 40 minutes — not yet.
    let slow_rise: Vec<_> = (0..=10)
        .map(|m| util(m * 60, 0.50 + 0.01 * m as f64))
        .collect();
    let e = run(&slow_rise, 600);
    assert_eq!(rule_of(&e, rule::PREDICTIVE).level, Healthy);
    // Five points a minute: at 80% after 6 minutes, at the limit in 4 more → EXHAUSTED now,
    // while utilization itself is still below 95%.
    let fast_rise: Vec<_> = (0..=6)
        .map(|m| util(m * 60, 0.50 + 0.05 * m as f64))
        .collect();
    let e = run(&fast_rise, 360);
    assert_eq!(rule_of(&e, rule::UTILIZATION).level, Warning);
    assert_eq!((e.level, e.rule), (Exhausted, Some(rule::PREDICTIVE)));
    // Flat or falling utilization predicts nothing.
    let flat: Vec<_> = (0..=6).map(|m| util(m * 60, 0.8)).collect();
    assert_eq!(rule_of(&run(&flat, 360), rule::PREDICTIVE).fraction, 0.0);
}

#[test]
fn predictive_reaches_every_level() {
    // Projected time to the limit: lead / fraction. Lead is 10 minutes.
    let level_for_eta_minutes = |eta: f64| {
        // Rising 1 point a minute, starting so that 1.0 is `eta` minutes after the last sample.
        let last = 1.0 - eta * 0.01;
        let samples: Vec<_> = (0..=5)
            .map(|m| util(m * 60, last - 0.01 * (5 - m) as f64))
            .collect();
        rule_of(&run(&samples, 300), rule::PREDICTIVE).level
    };
    assert_eq!(level_for_eta_minutes(20.0), Healthy);
    assert_eq!(level_for_eta_minutes(13.0), Warning);
    assert_eq!(level_for_eta_minutes(11.0), Critical);
    assert_eq!(level_for_eta_minutes(9.0), Exhausted);
}

#[test]
fn counted_rules_reach_every_level_for_every_threshold_from_three() {
    let rules = Rules::default();
    for threshold in 3..=40 {
        let levels: Vec<_> = (0..=threshold)
            .map(|c| rules.counted_level(c, threshold))
            .collect();
        for want in [Healthy, Warning, Critical, Exhausted] {
            assert!(levels.contains(&want), "{want:?} at threshold {threshold}");
        }
        assert!(levels.windows(2).all(|w| w[0] <= w[1]), "monotonic");
        // The percentages still apply where they are reached.
        for c in 1..threshold {
            let f = f64::from(c) / f64::from(threshold);
            if f >= rules.critical_fraction {
                assert_eq!(levels[c as usize], Critical);
            } else if f >= rules.warning_fraction {
                assert!(levels[c as usize] >= Warning);
            }
        }
    }
    // The default thresholds, as documented.
    assert_eq!(
        (0..=5)
            .map(|c| rules.counted_level(c, 5))
            .collect::<Vec<_>>(),
        [Healthy, Healthy, Healthy, Warning, Critical, Exhausted]
    );
}

#[test]
fn a_reset_starts_every_window_afresh() {
    let mut events = vec![
        ev(0, EventKind::RateLimit),
        ev(1, EventKind::RateLimit),
        ev(2, EventKind::UsageLimit),
    ];
    assert_eq!(run(&events, 10).level, Exhausted);
    events.push(ev(3, EventKind::Reset));
    let e = run(&events, 10);
    assert_eq!(e.level, Healthy);
    events.push(ev(4, EventKind::RateLimit));
    assert_eq!(run(&events, 10).rate_limit_count, 1);
}

#[test]
fn the_deciding_rule_is_the_highest_level_then_the_highest_fraction() {
    let events = [
        ev(0, EventKind::RateLimit), // rate limits 1/3: WARNING, 0.33
        success(1, 12.0),
        success(2, 12.0),
        success(3, 12.0),
        success(4, 12.0), // slow 4/5: CRITICAL
    ];
    let e = run(&events, 10);
    assert_eq!((e.level, e.rule), (Critical, Some(rule::SLOW_RESPONSES)));
    assert_eq!(e.avg_response_time, 12.0);
}

#[test]
fn event_lines_parse_and_bad_ones_are_refused() {
    let line = r#"{"ts":"2026-11-21T10:00:00Z","kind":"rate_limit","retry_after_s":30,"status_code":429,"future":1}"#;
    let e = CreditEvent::parse_line(line).expect("valid");
    assert_eq!(e.kind, EventKind::RateLimit);
    assert_eq!(e.retry_after_s, Some(30.0));
    let back = CreditEvent::parse_line(&e.to_line()).expect("round trip");
    assert_eq!(back, e);
    for bad in [
        r#"{"ts":"2026-11-21T10:00:00Z"}"#,
        r#"{"ts":"yesterday","kind":"success"}"#,
        r#"{"ts":"2026-11-21T10:00:00Z","kind":"nap"}"#,
        r#"{"ts":"2026-11-21T10:00:00Z","kind":"utilization"}"#,
        r#"{"ts":"2026-11-21T10:00:00Z","kind":"utilization","utilization":1.5}"#,
        r#"{"ts":"2026-11-21T10:00:00Z","kind":"success","duration_s":-1}"#,
        r#"{"ts":"2026-11-21T10:00:00Z","kind":"succ"#,
    ] {
        assert!(CreditEvent::parse_line(bad).is_err(), "{bad}");
    }
}

#[test]
fn replay_reports_level_changes_and_one_handoff_per_exhaustion() {
    let events = [
        ev(0, EventKind::RateLimit),
        ev(10, EventKind::RateLimit),
        ev(20, EventKind::RateLimit),
        ev(30, EventKind::RateLimit),
        ev(2000, EventKind::Success),
        ev(2010, EventKind::RateLimit),
        ev(2020, EventKind::RateLimit),
        ev(2030, EventKind::RateLimit),
    ];
    let mut lines = Vec::new();
    let n = replay(Rules::default(), &events, |l| lines.push(l));
    assert_eq!(n, 8);
    let handoffs: Vec<_> = lines
        .iter()
        .filter_map(|l| match l {
            ReplayLine::Handoff { ts, .. } => Some(*ts),
            ReplayLine::Level { .. } => None,
        })
        .collect();
    assert_eq!(handoffs, [at(20), at(2030)]);
    let levels: Vec<_> = lines
        .iter()
        .filter_map(|l| match l {
            ReplayLine::Level { level, .. } => Some(*level),
            ReplayLine::Handoff { .. } => None,
        })
        .collect();
    assert_eq!(
        levels,
        [
            Warning, Critical, Exhausted, Healthy, Warning, Critical, Exhausted
        ]
    );
    let json = serde_json::to_string(&lines[2]).expect("serializes");
    assert_eq!(
        json,
        r#"{"ts":"2026-11-21T10:00:20Z","level":"EXHAUSTED","rule":"rate_limit","fraction":1.0}"#
    );
}

#[test]
fn wilson_lower_bound_figures() {
    let close = |a: f64, b: f64| (a - b).abs() < 0.001;
    assert_eq!(wilson_lower_bound(0, 0), 0.0);
    assert_eq!(wilson_lower_bound(0, 10), 0.0);
    assert!(close(wilson_lower_bound(4, 13), 0.127));
    assert!(close(wilson_lower_bound(6, 10), 0.313));
    assert!(close(wilson_lower_bound(10, 10), 0.722));
}

#[test]
fn utilization_carried_on_any_event_feeds_the_utilization_rule() {
    let mut on_success = success(10, 1.0);
    on_success.utilization = Some(0.97);
    let e = run(&[on_success], 11);
    assert_eq!((e.level, e.rule), (Exhausted, Some(rule::UTILIZATION)));
}

fn default_rules() -> Rules {
    Rules::from(&crate::config::CreditConfig::default())
}

fn handoffs(events: &[CreditEvent]) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    replay(default_rules(), events, |line| {
        if let ReplayLine::Handoff { ts, .. } = line {
            out.push(ts);
        }
    });
    out
}

fn call(i: i64, failed: bool) -> CreditEvent {
    if failed {
        ev(i * 10, EventKind::Error)
    } else {
        success(i * 10, 1.0)
    }
}

#[test]
fn replay_a_steady_25_percent_error_rate_over_300_calls_never_hands_off() {
    // One call in four fails, from the very first: below the 30% limit, but 4 of the first 13
    // calls is 31%, which fired while the window filled. A reset half-way (this PC took work
    // over, or restarted into an empty window) starts the warm-up again.
    let mut events: Vec<CreditEvent> = (0..300).map(|i| call(i, i % 4 == 0)).collect();
    events.insert(150, ev(1495, EventKind::Reset));
    assert_eq!(handoffs(&events), Vec::<DateTime<Utc>>::new());
}

#[test]
fn replay_a_50_percent_error_burst_after_a_healthy_history_hands_off_within_15_calls() {
    let mut events: Vec<CreditEvent> = (0..100).map(|i| call(i, false)).collect();
    events.extend((100..140).map(|i| call(i, i % 2 == 0)));
    let h = handoffs(&events);
    assert_eq!(h.len(), 1, "{h:?}");
    let calls_into_burst = (h[0] - at(1000)).num_seconds() / 10 + 1;
    assert!(
        calls_into_burst <= 15,
        "handed off {calls_into_burst} calls into the burst"
    );
}

#[test]
fn replay_a_utilization_ramp_carried_on_success_events_hands_off_before_the_limit() {
    // A wrapper reports the provider's utilization header with each successful call: 0.50 at
    // first, rising 0.01 a call, a call every 30 s, so 1.0 is reached at call 50.
    let events: Vec<CreditEvent> = (0..60)
        .map(|i| {
            let mut e = success(i * 30, 1.0);
            e.utilization = Some((0.5 + 0.01 * i as f64).min(1.0));
            e
        })
        .collect();
    let h = handoffs(&events);
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(
        h[0] < at(50 * 30),
        "handed off at {} (limit at call 50)",
        h[0]
    );
}

#[test]
fn events_dated_before_a_reset_do_not_count() {
    // This PC took work over at t=100 (reset); a transcript carried from the PC before it is
    // read afterwards, with the rate limits that PC met at t=90..95.
    let events = vec![
        ev(100, EventKind::Reset),
        ev(90, EventKind::RateLimit),
        ev(92, EventKind::RateLimit),
        ev(95, EventKind::RateLimit),
    ];
    assert_eq!(run(&events, 101).level, Healthy);
    // Its own, after the reset, count.
    let mut events = events;
    events.extend([101, 102, 103].map(|t| ev(t, EventKind::RateLimit)));
    assert_eq!(run(&events, 104).level, Exhausted);
}
