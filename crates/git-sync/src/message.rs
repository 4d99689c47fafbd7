//! Commit messages that say what happened, derived from the paths (and, where it helps, the
//! files): `handoff: PC1 → PC2 (credit exhaustion)`, `wake: PC2 from PC1`, `heartbeat: PC1`,
//! `claim: task-x by PC2`. One commit may carry several changes: the subject lists the first
//! few, the body lists every path.

use trinity_core::layout::{FileKind, Tree};
use trinity_core::schema::{self as s, Schema};
use trinity_core::schema::{
    Claim, CreditStatus, Done, Handoff, Heartbeat, InstanceStatus, WakeSignal,
};

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new file.
    Added,
    /// A changed file.
    Modified,
    /// A removed file.
    Deleted,
}

/// One change going into a commit.
#[derive(Debug, Clone)]
pub struct Change {
    /// Path relative to the tree's root, with `/`.
    pub path: String,
    /// What happened.
    pub kind: ChangeKind,
    /// The new contents (none for a deletion).
    pub content: Option<Vec<u8>>,
}

fn parse<T: Schema>(c: &Change) -> Option<T> {
    c.content
        .as_deref()
        .and_then(|b| s::from_bytes::<T>(b).ok())
}

/// One line for one change.
pub fn describe(c: &Change) -> String {
    let Ok(kind) = Tree::classify_relative(&c.path) else {
        return format!("update: {}", c.path);
    };
    let deleted = c.kind == ChangeKind::Deleted;
    match kind {
        FileKind::Handoff(id) if deleted => {
            format!("handoff taken: {} → {}", id.from_pc(), id.to_pc())
        }
        FileKind::Handoff(id) => {
            let reason = parse::<Handoff>(c)
                .map(|h| format!(" ({})", h.reason.describe()))
                .unwrap_or_default();
            format!("handoff: {} → {}{reason}", id.from_pc(), id.to_pc())
        }
        FileKind::ProcessedHandoff(id) => {
            format!("handoff accepted: {} → {}", id.from_pc(), id.to_pc())
        }
        FileKind::Wake(to, _) if deleted => format!("wake consumed: {to}"),
        FileKind::Wake(to, _) => match parse::<WakeSignal>(c) {
            Some(w) => format!("wake: {to} from {}", w.from_pc),
            None => format!("wake: {to}"),
        },
        FileKind::Heartbeat(pc) => match parse::<Heartbeat>(c) {
            Some(h)
                if h.status != s::HeartbeatStatus::Active
                    && h.status != s::HeartbeatStatus::Idle =>
            {
                format!("heartbeat: {pc} ({})", status_word(h.status))
            }
            _ => format!("heartbeat: {pc}"),
        },
        FileKind::Credit(pc) => match parse::<CreditStatus>(c) {
            Some(cs) => format!("credit: {pc} {}", cs.level),
            None => format!("credit: {pc}"),
        },
        FileKind::Instance(pc) => match parse::<InstanceStatus>(c) {
            Some(i) => format!("instance: {pc} {}", i.state),
            None => format!("instance: {pc}"),
        },
        FileKind::Claim(task) if deleted => format!("claim released: {task}"),
        FileKind::Claim(task) => match parse::<Claim>(c) {
            Some(cl) => format!("claim: {task} by {}", cl.pc),
            None => format!("claim: {task}"),
        },
        FileKind::Done(task) => match parse::<Done>(c) {
            Some(d) => format!("done: {task} by {}", d.pc),
            None => format!("done: {task}"),
        },
        FileKind::Task(task) if deleted => format!("task removed: {task}"),
        FileKind::Task(task) => format!("task: {task}"),
        FileKind::Escalation(id) => format!("escalation: {id}"),
        FileKind::Lease => "lease: coordinator".to_owned(),
        other => format!("{}: {}", other.name(), c.path),
    }
}

fn status_word(status: s::HeartbeatStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The whole message: a subject naming up to three changes (the most telling first), then
/// every path.
pub fn message(changes: &[Change]) -> String {
    let mut lines: Vec<(u8, String)> = changes
        .iter()
        .map(|c| (rank(&c.path), describe(c)))
        .collect();
    lines.sort_by_key(|l| l.0);
    let mut seen = Vec::new();
    for (_, l) in &lines {
        if !seen.contains(l) {
            seen.push(l.clone());
        }
    }
    let mut subject = seen.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
    if seen.len() > 3 {
        subject.push_str(&format!(" (+{} more)", seen.len() - 3));
    }
    let mut body = String::new();
    for c in changes {
        let tag = match c.kind {
            ChangeKind::Added => "A",
            ChangeKind::Modified => "M",
            ChangeKind::Deleted => "D",
        };
        body.push_str(&format!("{tag} {}\n", c.path));
    }
    format!("{subject}\n\n{body}")
}

/// Handoffs first, heartbeats last.
fn rank(path: &str) -> u8 {
    match path.split('/').next().unwrap_or("") {
        "handoff" => 0,
        "wake" => 1,
        "claims" | "done" | "spawn_queue" => 2,
        "escalations" => 3,
        "instances" => 4,
        "credit" => 5,
        "heartbeat" => 9,
        _ => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, kind: ChangeKind, json: &str) -> Change {
        Change {
            path: path.to_owned(),
            kind,
            content: if json.is_empty() {
                None
            } else {
                Some(json.as_bytes().to_vec())
            },
        }
    }

    #[test]
    fn messages_say_what_happened() {
        let handoff = r#"{"format_version":1,"from_pc":"PC1","to_pc":"PC2","timestamp":"2026-11-21T10:00:00Z","reason":"credit_exhaustion","task_queue":[]}"#;
        let wake = r#"{"format_version":1,"id":"s1","from_pc":"PC1","to_pc":"PC2","timestamp":"2026-11-21T10:00:00Z","task":"credit_handoff","message":""}"#;
        let claim = r#"{"format_version":1,"task_id":"task-x","pc":"PC2","claimed_at":"2026-11-21T10:00:00Z"}"#;
        let hb = r#"{"format_version":1,"pc":"PC1","status":"handoff_initiated","timestamp":"2026-11-21T10:00:00Z","to_pc":"PC2"}"#;
        let cases = [
            (
                change(
                    "handoff/handoff_PC1_to_PC2_20261121T100000Z.json",
                    ChangeKind::Added,
                    handoff,
                ),
                "handoff: PC1 → PC2 (credit exhaustion)",
            ),
            (
                change("wake/PC2/s1.json", ChangeKind::Added, wake),
                "wake: PC2 from PC1",
            ),
            (
                change("wake/PC2/s1.json", ChangeKind::Deleted, ""),
                "wake consumed: PC2",
            ),
            (
                change("claims/task-x.json", ChangeKind::Added, claim),
                "claim: task-x by PC2",
            ),
            (
                change("heartbeat/PC1.json", ChangeKind::Modified, hb),
                "heartbeat: PC1 (handoff_initiated)",
            ),
            (
                change("heartbeat/PC1.json", ChangeKind::Modified, "{"),
                "heartbeat: PC1",
            ),
            (
                change(
                    "handoff/processed/handoff_PC1_to_PC2_20261121T100000Z.json",
                    ChangeKind::Added,
                    handoff,
                ),
                "handoff accepted: PC1 → PC2",
            ),
        ];
        for (c, want) in cases {
            assert_eq!(describe(&c), want);
        }
    }

    #[test]
    fn several_changes_make_one_subject_and_a_full_body() {
        let changes = vec![
            change("heartbeat/PC1.json", ChangeKind::Modified, ""),
            change(
                "handoff/handoff_PC1_to_PC2_20261121T100000Z.json",
                ChangeKind::Added,
                "",
            ),
            change("wake/PC2/s1.json", ChangeKind::Added, ""),
            change("credit/PC1.json", ChangeKind::Modified, ""),
            change("instances/PC1.json", ChangeKind::Modified, ""),
        ];
        let m = message(&changes);
        let subject = m.lines().next().expect("subject");
        assert_eq!(
            subject,
            "handoff: PC1 → PC2; wake: PC2; instance: PC1 (+2 more)"
        );
        assert_eq!(
            m.lines()
                .filter(|l| l.starts_with("A ") || l.starts_with("M "))
                .count(),
            5
        );
    }
}
