//! Validation of files by their place in the tree: the path decides the schema, the contents
//! must parse, and what the path says (PC, task, handoff) must agree with what the file says.

use std::fs;
use std::path::{Path, PathBuf};

use crate::fsio::{self, LoadError};
use crate::ids::{HandoffId, PcId};
use crate::layout::{FileKind, SYNCED_DIRS, Tree};
use crate::schema::{
    Claim, CreditDashboard, CreditStatus, Done, Escalation, Fleet, Handoff, Heartbeat,
    InstanceStatus, KeyRecord, Lease, MultiInstanceStatus, RecipientRecord, Revocation, Schema,
    Task, Timeline, Verification, WakeSignal,
};

/// The largest conversation a handoff may carry (`work.conversation_max_bytes` is capped by it).
pub const MAX_CONVERSATION_BYTES: usize = 16 * 1024 * 1024;

/// The size limit for files without a schema (markdown, HTML, `.gitignore`).
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;

/// One problem with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, worded to follow the path.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

/// What validation found out about a valid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The file's kind.
    pub kind: FileKind,
    /// Fields the file has that this build does not know (kept on rewrite).
    pub unknown_fields: Vec<String>,
}

/// Validates one file of `tree`. `fleet`, when known, is used to check that every PC named in
/// the path is a member.
pub fn validate_file(tree: &Tree, path: &Path, fleet: Option<&Fleet>) -> Result<Checked, Problem> {
    let problem = |message: String| Problem {
        path: path.to_owned(),
        message,
    };
    let kind = tree
        .classify(path)
        .map_err(|e| problem(layout_message(e)))?;
    let mut unknown_fields = Vec::new();
    let mut mismatches = Vec::new();
    {
        let mut m =
            |what: &str, in_path: &dyn std::fmt::Display, in_file: &dyn std::fmt::Display| {
                let (a, b) = (in_path.to_string(), in_file.to_string());
                if a != b {
                    mismatches.push(format!("the path says {what} {a} but the file says {b}"));
                }
            };
        macro_rules! load {
            ($t:ty) => {{
                let doc = fsio::load::<$t>(path).map_err(|e| problem(load_message(e)))?;
                unknown_fields = doc.unknown_fields();
                doc.value
            }};
        }
        match &kind {
            FileKind::Local => {}
            FileKind::GitIgnore | FileKind::DashboardHtml | FileKind::Postmortem(_) => {
                check_text(path).map_err(problem)?;
            }
            FileKind::Conversation(_) => {
                let bytes = fsio::read_bounded(path, MAX_CONVERSATION_BYTES)
                    .map_err(|e| problem(e.to_string()))?;
                if bytes.len() > MAX_CONVERSATION_BYTES {
                    return Err(problem(format!(
                        "is larger than {} MiB",
                        MAX_CONVERSATION_BYTES / (1024 * 1024)
                    )));
                }
                for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match serde_json::from_slice::<serde_json::Value>(line) {
                        Ok(v) if v.is_object() => {}
                        _ => {
                            return Err(problem(format!(
                                "line {} is not a JSON object (a conversation is JSON lines)",
                                n + 1
                            )));
                        }
                    }
                }
            }
            FileKind::SealedConversation(_) => {
                let bytes = fsio::read_bounded(path, MAX_CONVERSATION_BYTES + 64 * 1024)
                    .map_err(|e| problem(e.to_string()))?;
                if bytes.len() > MAX_CONVERSATION_BYTES + 32 * 1024 {
                    return Err(problem(format!(
                        "is larger than {} MiB",
                        MAX_CONVERSATION_BYTES / (1024 * 1024)
                    )));
                }
                if !crate::seal::looks_sealed(&bytes) {
                    return Err(problem(
                        "is not an age file (it must start with age-encryption.org/v1)".to_owned(),
                    ));
                }
            }
            FileKind::Recipient(pc) => m("PC", pc, &load!(RecipientRecord).pc),
            FileKind::Report(_) => {
                if path.extension().is_some_and(|e| e == "json") {
                    let bytes = fsio::read_bounded(path, MAX_TEXT_BYTES)
                        .map_err(|e| problem(e.to_string()))?;
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .map_err(|e| problem(format!("is not valid JSON: {e}")))?;
                } else {
                    check_text(path).map_err(problem)?;
                }
            }
            FileKind::Fleet => {
                load!(Fleet);
            }
            FileKind::Heartbeat(pc) => m("PC", pc, &load!(Heartbeat).pc),
            FileKind::Credit(pc) => m("PC", pc, &load!(CreditStatus).pc),
            FileKind::Instance(pc) => m("PC", pc, &load!(InstanceStatus).pc),
            FileKind::Handoff(id) | FileKind::ProcessedHandoff(id) => {
                let h = load!(Handoff);
                m("from_pc", id.from_pc(), &h.from_pc);
                m("to_pc", id.to_pc(), &h.to_pc);
                let stamp = |id: &HandoffId| crate::ids::file_timestamp(id.created_at());
                m(
                    "timestamp",
                    &stamp(id),
                    &crate::ids::file_timestamp(h.timestamp),
                );
            }
            FileKind::Wake(to, sig) => {
                let w = load!(WakeSignal);
                m("to_pc", to, &w.to_pc);
                m("signal id", sig, &w.id);
            }
            FileKind::Task(id) => m("task", id, &load!(Task).id),
            FileKind::Claim(id) => m("task", id, &load!(Claim).task_id),
            FileKind::Done(id) => m("task", id, &load!(Done).task_id),
            FileKind::Lease => {
                load!(Lease);
            }
            FileKind::MultiStatus => {
                load!(MultiInstanceStatus);
            }
            FileKind::Verification(id) => m("handoff", id, &load!(Verification).handoff_id),
            FileKind::CreditDashboard => {
                load!(CreditDashboard);
            }
            FileKind::Timeline => {
                load!(Timeline);
            }
            FileKind::Escalation(id) => m("id", id, &load!(Escalation).id),
            FileKind::Key(pc) => m("PC", pc, &load!(KeyRecord).pc),
            FileKind::Revocation(id) => {
                let r = load!(Revocation);
                let expected = format!("{}-{}-{}", r.pc, r.public_key.fingerprint(), r.revoked_by);
                m("id", id, &expected);
            }
        }
    }
    if let Some(fleet) = fleet {
        for pc in pcs_named_by(&kind) {
            if !fleet.contains(pc) {
                mismatches.push(format!(
                    "{pc} is not a member of the fleet ({})",
                    fleet.pcs_joined()
                ));
            }
        }
    }
    if !mismatches.is_empty() {
        return Err(problem(mismatches.join("; ")));
    }
    Ok(Checked {
        kind,
        unknown_fields,
    })
}

fn pcs_named_by(kind: &FileKind) -> Vec<&PcId> {
    match kind {
        FileKind::Heartbeat(pc)
        | FileKind::Credit(pc)
        | FileKind::Instance(pc)
        | FileKind::Wake(pc, _) => {
            vec![pc]
        }
        FileKind::Handoff(id) | FileKind::ProcessedHandoff(id) | FileKind::Verification(id) => {
            vec![id.from_pc(), id.to_pc()]
        }
        _ => Vec::new(),
    }
}

fn check_text(path: &Path) -> Result<(), String> {
    let bytes = fsio::read_bounded(path, MAX_TEXT_BYTES).map_err(|e| e.to_string())?;
    if bytes.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "is over the {MAX_TEXT_BYTES}-byte limit for a text file"
        ));
    }
    std::str::from_utf8(&bytes).map_err(|e| format!("is not UTF-8 text: {e}"))?;
    Ok(())
}

fn layout_message(e: crate::layout::LayoutError) -> String {
    match e {
        crate::layout::LayoutError::Unknown { why, .. } => {
            format!("has no place in the state tree layout: {why}")
        }
        other => other.to_string(),
    }
}

fn load_message(e: LoadError) -> String {
    match e {
        LoadError::Invalid { source, .. } => source.to_string(),
        LoadError::Io(io) => io.to_string(),
        LoadError::Refused { refusal, .. } => refusal.to_string(),
    }
}

/// Every file of the tree that is synced (not `.git/`, `local/`, `logs/`), sorted.
pub fn synced_files(tree: &Tree) -> Result<Vec<PathBuf>, fsio::IoError> {
    let mut out = Vec::new();
    walk(tree.root(), &mut out, &|path: &Path| {
        let rel = tree.relative(path).unwrap_or_default();
        crate::layout::UNSYNCED_DIRS.contains(&rel.as_str())
    })?;
    out.sort();
    Ok(out)
}

/// Every file below `dir`, sorted, skipping what is never a tree file: `.git/` anywhere, and
/// `local/` and `logs/` beside a `fleet.toml` (at a tree's root). For directories that may hold
/// several trees, or parts of one (`trinity validate fixtures/invalid`).
pub fn files_under(dir: &Path) -> Result<Vec<PathBuf>, fsio::IoError> {
    let mut out = Vec::new();
    walk(dir, &mut out, &|path: &Path| {
        let name = path.file_name().unwrap_or_default();
        let at_tree_root = path
            .parent()
            .is_some_and(|p| p.join(crate::layout::FLEET_FILE).is_file());
        name == ".git" || (at_tree_root && crate::layout::UNSYNCED_DIRS.iter().any(|d| name == *d))
    })?;
    out.sort();
    Ok(out)
}

/// Collects the files below `dir`, not descending into directories `skip` names. Other
/// programs write the tree meanwhile: a file or directory removed between being listed and
/// being looked at is simply not there.
fn walk(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    skip: &dyn Fn(&Path) -> bool,
) -> Result<(), fsio::IoError> {
    for entry in fs::read_dir(dir).map_err(|e| fsio::IoError::new("list", dir, e))? {
        let path = entry
            .map_err(|e| fsio::IoError::new("list", dir, e))?
            .path();
        if skip(&path) {
            continue;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fsio::IoError::new("inspect", &path, e)),
        };
        if meta.is_dir() {
            match walk(&path, out, skip) {
                Err(e) if e.is_not_found() && e.path == path => continue,
                other => other?,
            }
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Validates every synced file of the tree, reading `fleet.toml` first for membership checks.
pub fn validate_tree(tree: &Tree) -> Vec<Problem> {
    let fleet = fsio::load::<Fleet>(&tree.fleet_file())
        .ok()
        .map(|d| d.value);
    let files = match synced_files(tree) {
        Ok(files) => files,
        Err(e) => {
            return vec![Problem {
                path: tree.root().to_owned(),
                message: e.to_string(),
            }];
        }
    };
    files
        .iter()
        .filter_map(|p| validate_file(tree, p, fleet.as_ref()).err())
        .collect()
}

/// Finds the tree a path belongs to: the nearest ancestor directory holding `fleet.toml`.
pub fn find_tree_root(path: &Path) -> Option<PathBuf> {
    let start = if path.is_dir() {
        Some(path)
    } else {
        path.parent()
    };
    start?
        .ancestors()
        .find(|dir| dir.join(crate::layout::FLEET_FILE).is_file())
        .map(Path::to_owned)
}

/// For a file outside any tree: the root it would have if it were in one. First the shortest
/// trailing part of its path that the layout knows (so a fixture `…/handoff/handoff_PC1_to_PC2_….json`
/// is checked as a handoff); failing that, the parent of the nearest directory named like a
/// top-level directory of the tree, so a badly named file still gets a precise complaint.
pub fn implied_root(path: &Path) -> Option<PathBuf> {
    let comps: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let root_of = |start: usize| -> PathBuf {
        let root: PathBuf = path.components().take(start).collect();
        if root.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root
        }
    };
    for start in (0..comps.len()).rev() {
        if Tree::classify_relative(&comps[start..].join("/")).is_ok() {
            return Some(root_of(start));
        }
    }
    let top_level = |name: &str| SYNCED_DIRS.contains(&name) || name == crate::layout::FLEET_FILE;
    (0..comps.len().saturating_sub(1))
        .rev()
        .find(|&i| top_level(&comps[i]))
        .map(root_of)
}

/// The schema names and versions, for docs and `trinity validate --schemas`.
pub fn schema_versions() -> Vec<(&'static str, u32)> {
    fn v<T: Schema>() -> (&'static str, u32) {
        (T::NAME, T::FORMAT_VERSION)
    }
    vec![
        v::<Fleet>(),
        v::<Handoff>(),
        v::<WakeSignal>(),
        v::<Heartbeat>(),
        v::<CreditStatus>(),
        v::<InstanceStatus>(),
        v::<Task>(),
        v::<Claim>(),
        v::<Done>(),
        v::<Lease>(),
        v::<Verification>(),
        v::<MultiInstanceStatus>(),
        v::<CreditDashboard>(),
        v::<Timeline>(),
        v::<Escalation>(),
        v::<KeyRecord>(),
        v::<Revocation>(),
        v::<RecipientRecord>(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, b"{}").expect("write");
    }

    #[test]
    fn walkers_skip_what_is_never_a_tree_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("tree");
        for rel in [
            "fleet.toml",
            "heartbeat/PC1.json",
            ".git/HEAD",
            "local/credit/events.jsonl",
            "logs/git-sync.log",
            "reports/local/x.md",
        ] {
            touch(&root, rel);
        }
        // A directory above the tree, holding it and a stray `local/` that is not a tree's.
        touch(dir.path(), "local/keep.json");
        let rel = |files: Vec<PathBuf>| -> Vec<String> {
            files
                .iter()
                .map(|p| {
                    p.strip_prefix(dir.path())
                        .expect("inside")
                        .to_string_lossy()
                        .replace('\\', "/")
                })
                .collect()
        };
        assert_eq!(
            rel(synced_files(&Tree::new(&root)).expect("walk")),
            [
                "tree/fleet.toml",
                "tree/heartbeat/PC1.json",
                "tree/reports/local/x.md"
            ]
        );
        assert_eq!(
            rel(files_under(dir.path()).expect("walk")),
            [
                "local/keep.json",
                "tree/fleet.toml",
                "tree/heartbeat/PC1.json",
                "tree/reports/local/x.md"
            ]
        );
    }

    #[test]
    fn a_file_or_directory_removed_while_walking_is_skipped_not_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        touch(root, "spawn_queue/gone.json");
        touch(root, "spawn_queue/kept.json");
        touch(root, "wake/PC2/sig.json");
        // Another program removes them between the listing and the look.
        let mut out = Vec::new();
        walk(root, &mut out, &|path: &Path| {
            if path.ends_with("gone.json") {
                let _ = fs::remove_file(path);
            }
            if path.ends_with("wake") {
                let _ = fs::remove_dir_all(path);
            }
            false
        })
        .expect("walk");
        let names: Vec<_> = out
            .iter()
            .map(|p| p.strip_prefix(root).expect("inside").to_path_buf())
            .collect();
        assert_eq!(names, [Path::new("spawn_queue/kept.json")]);
    }
}
