//! The work queue as the fleet sees it: every task of `spawn_queue/` with its state (queued,
//! blocked by dependencies, claimed by a PC, done), the checks a new task must pass (unique id,
//! known dependencies, no cycle), and the choice of the next task for a PC.
//!
//! Pure functions over what the tree holds; [`QueueView::read`] is the one place that reads it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::fsio;
use crate::ids::{PcId, TaskId};
use crate::layout::Tree;
use crate::schema::{Claim, Done, Outcome, Task};
use crate::trust::Keyring;

/// Where a task stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TaskState {
    /// Ready to be taken.
    Queued,
    /// Waiting for these dependencies to be done.
    Blocked {
        /// The dependencies not done yet.
        waiting_on: Vec<TaskId>,
    },
    /// A PC works on it.
    Claimed {
        /// Who.
        pc: PcId,
    },
    /// Finished (or given up).
    Done {
        /// How it ended.
        outcome: Outcome,
        /// Who finished it.
        pc: PcId,
    },
}

impl TaskState {
    /// `queued`, `blocked`, `claimed by PC2`, `done (completed, PC1)`.
    pub fn describe(&self) -> String {
        match self {
            TaskState::Queued => "queued".to_owned(),
            TaskState::Blocked { waiting_on } => format!(
                "blocked by {}",
                waiting_on
                    .iter()
                    .map(TaskId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            TaskState::Claimed { pc } => format!("claimed by {pc}"),
            TaskState::Done { outcome, pc } => {
                format!("done ({}, {pc})", serde_plain(outcome))
            }
        }
    }
}

fn serde_plain(o: &Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The queue: tasks, claims and done records, by task id.
#[derive(Debug, Clone, Default)]
pub struct QueueView {
    /// Every readable task of `spawn_queue/`.
    pub tasks: BTreeMap<TaskId, Task>,
    /// Every readable claim.
    pub claims: BTreeMap<TaskId, Claim>,
    /// Every readable done record (also for tasks no longer queued).
    pub done: BTreeMap<TaskId, Done>,
    /// Files that could not be read, with why (they are left out of the view).
    pub unreadable: Vec<String>,
    /// Files whose signature is not believed, with why (left out of the view: nobody acts on
    /// them; see [`crate::trust`]).
    pub refused: Vec<String>,
}

/// Why a file of the queue is left out of the view.
#[derive(Debug, Clone)]
enum Unread {
    /// It could not be read or is invalid.
    Unreadable(String),
    /// Its signature is not believed.
    Refused(String),
}

impl QueueView {
    fn take<T>(&mut self, r: &Result<T, Unread>, put: impl FnOnce(&mut Self, &T)) {
        match r {
            Ok(v) => put(self, v),
            Err(Unread::Unreadable(e)) => self.unreadable.push(e.clone()),
            Err(Unread::Refused(e)) => self.refused.push(e.clone()),
        }
    }
}

/// Reads a file of the queue and checks its signature.
fn load_checked<T: crate::schema::Schema>(
    path: &std::path::Path,
    keyring: &Keyring,
) -> Option<Result<T, Unread>> {
    match fsio::load_trusted::<T>(path, keyring) {
        Ok((doc, _)) => Some(Ok(doc.value)),
        Err(e) if e.is_not_found() => None,
        Err(e @ fsio::LoadError::Refused { .. }) => Some(Err(Unread::Refused(e.to_string()))),
        Err(e) => Some(Err(Unread::Unreadable(e.to_string()))),
    }
}

impl QueueView {
    /// Reads `spawn_queue/`, `claims/` and `done/` of a tree, as of one commit (git-sync's
    /// checkouts are held back meanwhile: a finished task is never seen unclaimed and not done).
    /// Files whose signature `keyring` does not believe are left out (in `refused`).
    pub fn read(tree: &Tree, keyring: &Keyring) -> Self {
        let _settled = crate::syncstate::hold_checkouts(tree);
        QueueReader::default().read(tree, keyring)
    }

    /// Whether a task is done (a done record with any outcome but `failed`).
    pub fn is_done(&self, id: &TaskId) -> bool {
        self.done
            .get(id)
            .is_some_and(|d| d.outcome != Outcome::Failed)
    }

    /// A task's state.
    pub fn state(&self, task: &Task) -> TaskState {
        if let Some(d) = self.done.get(&task.id) {
            return TaskState::Done {
                outcome: d.outcome,
                pc: d.pc.clone(),
            };
        }
        if let Some(c) = self.claims.get(&task.id) {
            return TaskState::Claimed { pc: c.pc.clone() };
        }
        let waiting_on: Vec<TaskId> = task
            .dependencies
            .iter()
            .filter(|d| !self.is_done(d))
            .cloned()
            .collect();
        if waiting_on.is_empty() {
            TaskState::Queued
        } else {
            TaskState::Blocked { waiting_on }
        }
    }

    /// Every task with its state, in the order work is taken: ready ones first by priority
    /// then age, then blocked, claimed and done ones.
    pub fn listing(&self) -> Vec<(&Task, TaskState)> {
        let mut out: Vec<(&Task, TaskState)> =
            self.tasks.values().map(|t| (t, self.state(t))).collect();
        let group = |s: &TaskState| match s {
            TaskState::Queued => 0,
            TaskState::Blocked { .. } => 1,
            TaskState::Claimed { .. } => 2,
            TaskState::Done { .. } => 3,
        };
        out.sort_by(|(a, sa), (b, sb)| {
            (group(sa), a.priority.rank(), a.created_at, &a.id).cmp(&(
                group(sb),
                b.priority.rank(),
                b.created_at,
                &b.id,
            ))
        });
        out
    }

    /// The task a PC of `roles` should take next: queued (dependencies done, unclaimed), of
    /// one of its roles or of none (any task when it declares no roles), highest priority
    /// first, then the oldest.
    pub fn next_for(&self, roles: &[String]) -> Option<&Task> {
        self.listing()
            .into_iter()
            .filter(|(_, s)| *s == TaskState::Queued)
            .map(|(t, _)| t)
            .find(|t| role_fits(t, roles))
    }

    /// Checks tasks about to be added (all or none): ids new to the queue and to each other,
    /// dependencies that exist (queued, done, or among the new ones), and no cycle. Returns
    /// every problem, one line each.
    pub fn check_new(&self, new: &[Task]) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut ids = BTreeSet::new();
        for t in new {
            if self.tasks.contains_key(&t.id) || self.done.contains_key(&t.id) {
                problems.push(format!("task {} already exists", t.id));
            }
            if !ids.insert(t.id.clone()) {
                problems.push(format!("task {} is listed twice", t.id));
            }
        }
        for t in new {
            for d in &t.dependencies {
                if !ids.contains(d) && !self.tasks.contains_key(d) && !self.done.contains_key(d) {
                    problems.push(format!(
                        "task {} depends on {d}, which does not exist",
                        t.id
                    ));
                }
            }
        }
        let mut graph: BTreeMap<&TaskId, Vec<&TaskId>> = self
            .tasks
            .values()
            .map(|t| (&t.id, t.dependencies.iter().collect()))
            .collect();
        for t in new {
            graph.insert(&t.id, t.dependencies.iter().collect());
        }
        if let Some(cycle) = find_cycle(&graph) {
            problems.push(format!(
                "dependency cycle: {}",
                cycle
                    .iter()
                    .map(|id| id.as_str())
                    .collect::<Vec<_>>()
                    .join(" → ")
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Whether a PC of `roles` may take `task`.
pub fn role_fits(task: &Task, roles: &[String]) -> bool {
    match &task.role {
        None => true,
        Some(r) => roles.is_empty() || roles.iter().any(|x| x == r),
    }
}

/// A task's age at `now`, for people: `3m`, `2h 5m`, `5d`.
pub fn age(task: &Task, now: DateTime<Utc>) -> String {
    crate::clock::human_duration((now - task.created_at).to_std().unwrap_or_default())
}

/// Reads the queue again and again (the coordinator's cycle), parsing only what changed: task
/// files and done records are immutable, so they are parsed once per name; claims can be
/// rewritten (a takeover), so they are parsed again when their size or modification time
/// changes. Files that vanished drop out. The view is the same [`QueueView::read`] gives.
#[derive(Debug, Default)]
pub struct QueueReader {
    tasks: BTreeMap<std::ffi::OsString, Result<Task, Unread>>,
    claims: BTreeMap<std::ffi::OsString, (Stamp, Result<Claim, Unread>)>,
    done: BTreeMap<std::ffi::OsString, Result<Done, Unread>>,
}

type Stamp = (Option<std::time::SystemTime>, u64);

impl QueueReader {
    /// The queue as the tree holds it now. The caller holds git-sync's checkouts back
    /// ([`crate::syncstate::hold_checkouts`]) for as long as the view must be one commit's —
    /// the coordinator, for its whole reading of the fleet. (Not taken here: a second hold
    /// inside the caller's could wait behind a checkout that waits for the first.)
    /// Files are checked against `keyring` when first read (immutable ones) or read again.
    pub fn read(&mut self, tree: &Tree, keyring: &Keyring) -> QueueView {
        let mut view = QueueView::default();
        refresh_immutable(&tree.spawn_queue_dir(), &mut self.tasks, keyring);
        refresh_immutable(&tree.done_dir(), &mut self.done, keyring);
        refresh_stamped(&tree.claims_dir(), &mut self.claims, keyring);
        for r in self.tasks.values() {
            view.take(r, |v, t| {
                v.tasks.insert(t.id.clone(), t.clone());
            });
        }
        for (_, r) in self.claims.values() {
            view.take(r, |v, c| {
                v.claims.insert(c.task_id.clone(), c.clone());
            });
        }
        for r in self.done.values() {
            view.take(r, |v, d| {
                v.done.insert(d.task_id.clone(), d.clone());
            });
        }
        view
    }
}

fn json_names(dir: &std::path::Path) -> Vec<(std::ffi::OsString, std::fs::DirEntry)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".json") && !name.starts_with('.')
        })
        .map(|e| (e.file_name(), e))
        .collect()
}

fn refresh_immutable<T: crate::schema::Schema>(
    dir: &std::path::Path,
    cache: &mut BTreeMap<std::ffi::OsString, Result<T, Unread>>,
    keyring: &Keyring,
) {
    let names = json_names(dir);
    let present: BTreeSet<&std::ffi::OsString> = names.iter().map(|(n, _)| n).collect();
    cache.retain(|n, _| present.contains(n));
    for (name, entry) in &names {
        if cache.contains_key(name) {
            continue;
        }
        if let Some(r) = load_checked(&entry.path(), keyring) {
            cache.insert(name.clone(), r);
        }
    }
}

fn refresh_stamped<T: crate::schema::Schema>(
    dir: &std::path::Path,
    cache: &mut BTreeMap<std::ffi::OsString, (Stamp, Result<T, Unread>)>,
    keyring: &Keyring,
) {
    let names = json_names(dir);
    let present: BTreeSet<&std::ffi::OsString> = names.iter().map(|(n, _)| n).collect();
    cache.retain(|n, _| present.contains(n));
    for (name, entry) in &names {
        let Ok(meta) = entry.metadata() else {
            cache.remove(name);
            continue;
        };
        let stamp = (meta.modified().ok(), meta.len());
        if cache.get(name).is_some_and(|(s, _)| *s == stamp) {
            continue;
        }
        match load_checked(&entry.path(), keyring) {
            Some(r) => {
                cache.insert(name.clone(), (stamp, r));
            }
            None => {
                cache.remove(name);
            }
        }
    }
}

/// A cycle in a dependency graph, as the path that closes it, if any.
fn find_cycle<'a>(graph: &BTreeMap<&'a TaskId, Vec<&'a TaskId>>) -> Option<Vec<&'a TaskId>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Closed,
    }
    fn visit<'a>(
        node: &'a TaskId,
        graph: &BTreeMap<&'a TaskId, Vec<&'a TaskId>>,
        marks: &mut BTreeMap<&'a TaskId, Mark>,
        path: &mut Vec<&'a TaskId>,
    ) -> Option<Vec<&'a TaskId>> {
        match marks.get(node) {
            Some(Mark::Closed) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node, Mark::Open);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(node, Mark::Closed);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(node, graph, &mut marks, &mut path) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod reader_tests {
    use super::*;
    use crate::schema::Doc;

    #[test]
    fn the_cached_reader_sees_what_a_fresh_read_sees_as_files_come_change_and_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let pc = |s: &str| PcId::new(s).expect("valid");
        let id = |s: &str| TaskId::new(s).expect("valid");
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("time");
        let task = |n: &str| Task {
            format_version: 1,
            id: id(n),
            description: n.to_owned(),
            priority: Default::default(),
            created_at: now,
            created_by: pc("PC1"),
            dependencies: Vec::new(),
            role: None,
        };
        let claim = |n: &str, who: &str, epoch: u64| Claim {
            format_version: 1,
            task_id: id(n),
            pc: pc(who),
            claimed_at: now,
            epoch,
            handoff: None,
        };
        let same = |a: &QueueView, b: &QueueView| {
            assert_eq!(a.tasks, b.tasks);
            assert_eq!(a.claims, b.claims);
            assert_eq!(a.done, b.done);
            assert_eq!(a.unreadable.len(), b.unreadable.len());
        };
        let ring = Keyring::open_or_closed(&tree, true, now);
        let mut reader = QueueReader::default();
        same(&reader.read(&tree, &ring), &QueueView::read(&tree, &ring));
        for n in ["a", "b", "c"] {
            fsio::create(&tree.task_file(&id(n)), &task(n)).expect("task");
        }
        fsio::create(&tree.claim_file(&id("a")), &claim("a", "PC1", 0)).expect("claim");
        same(&reader.read(&tree, &ring), &QueueView::read(&tree, &ring));
        // A takeover rewrites the claim (longer: the epoch has two digits).
        fsio::save(&tree.claim_file(&id("a")), &Doc::new(claim("a", "PC2", 12))).expect("claim");
        let v = reader.read(&tree, &ring);
        assert_eq!(v.claims[&id("a")].pc, pc("PC2"));
        same(&v, &QueueView::read(&tree, &ring));
        // A claim released, a task gone, a broken file.
        std::fs::remove_file(tree.claim_file(&id("a"))).expect("rm");
        std::fs::remove_file(tree.task_file(&id("c"))).expect("rm");
        std::fs::write(tree.spawn_queue_dir().join("bad.json"), "{").expect("bad");
        let v = reader.read(&tree, &ring);
        assert!(v.claims.is_empty());
        assert_eq!(v.tasks.len(), 2);
        assert_eq!(v.unreadable.len(), 1);
        same(&v, &QueueView::read(&tree, &ring));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Priority;

    fn task(id: &str, priority: Priority, minute: i64, deps: &[&str]) -> Task {
        Task {
            format_version: 1,
            id: TaskId::new(id).expect("id"),
            priority,
            description: format!("do {id}"),
            created_at: DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).expect("time"),
            created_by: PcId::new("PC3").expect("pc"),
            dependencies: deps.iter().map(|d| TaskId::new(*d).expect("id")).collect(),
            role: None,
        }
    }

    fn view(tasks: Vec<Task>) -> QueueView {
        QueueView {
            tasks: tasks.into_iter().map(|t| (t.id.clone(), t)).collect(),
            ..QueueView::default()
        }
    }

    fn done(id: &str, outcome: Outcome) -> Done {
        Done {
            format_version: 1,
            task_id: TaskId::new(id).expect("id"),
            pc: PcId::new("PC1").expect("pc"),
            finished_at: DateTime::from_timestamp(1_800_100_000, 0).expect("time"),
            outcome,
            summary: String::new(),
            commit: None,
        }
    }

    #[test]
    fn states_follow_claims_done_records_and_dependencies() {
        let mut v = view(vec![
            task("a", Priority::Normal, 0, &[]),
            task("b", Priority::High, 1, &["a"]),
            task("c", Priority::Low, 2, &[]),
        ]);
        let by = |v: &QueueView, id: &str| v.state(&v.tasks[&TaskId::new(id).expect("id")]);
        assert_eq!(by(&v, "a"), TaskState::Queued);
        assert_eq!(by(&v, "b").describe(), "blocked by a", "b waits for a");
        v.claims.insert(
            TaskId::new("c").expect("id"),
            Claim {
                format_version: 1,
                task_id: TaskId::new("c").expect("id"),
                pc: PcId::new("PC2").expect("pc"),
                claimed_at: DateTime::from_timestamp(1_800_000_500, 0).expect("time"),
                epoch: 0,
                handoff: None,
            },
        );
        assert_eq!(by(&v, "c").describe(), "claimed by PC2");
        // A failed task does not unblock its dependents; a completed one does.
        v.done
            .insert(TaskId::new("a").expect("id"), done("a", Outcome::Failed));
        assert!(matches!(by(&v, "b"), TaskState::Blocked { .. }));
        v.done
            .insert(TaskId::new("a").expect("id"), done("a", Outcome::Completed));
        assert_eq!(by(&v, "b"), TaskState::Queued);
        assert_eq!(by(&v, "a").describe(), "done (completed, PC1)");
    }

    #[test]
    fn the_next_task_is_the_highest_priority_ready_one_then_the_oldest_of_a_fitting_role() {
        let mut backend = task("api", Priority::Critical, 5, &[]);
        backend.role = Some("backend".to_owned());
        let v = view(vec![
            task("old-normal", Priority::Normal, 0, &[]),
            task("new-high", Priority::High, 9, &[]),
            task("older-high", Priority::High, 3, &[]),
            task("blocked-critical", Priority::Critical, 1, &["old-normal"]),
            backend,
        ]);
        let next = |roles: &[&str]| {
            let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
            v.next_for(&roles).map(|t| t.id.to_string())
        };
        assert_eq!(next(&[]).as_deref(), Some("api"), "no roles: any task");
        assert_eq!(next(&["backend"]).as_deref(), Some("api"));
        assert_eq!(next(&["frontend"]).as_deref(), Some("older-high"));
    }

    #[test]
    fn new_tasks_need_new_ids_known_dependencies_and_no_cycle() {
        let v = view(vec![
            task("a", Priority::Normal, 0, &[]),
            task("b", Priority::Normal, 1, &["a"]),
        ]);
        assert!(
            v.check_new(&[task("c", Priority::Normal, 2, &["b"])])
                .is_ok()
        );
        let dup = v
            .check_new(&[task("a", Priority::Normal, 2, &[])])
            .expect_err("refused");
        assert_eq!(dup, ["task a already exists"]);
        let unknown = v
            .check_new(&[task("c", Priority::Normal, 2, &["zz"])])
            .expect_err("refused");
        assert_eq!(unknown, ["task c depends on zz, which does not exist"]);
        // Within one import: x → y → x.
        let cycle = v
            .check_new(&[
                task("x", Priority::Normal, 2, &["y"]),
                task("y", Priority::Normal, 3, &["x"]),
            ])
            .expect_err("refused");
        assert_eq!(cycle.len(), 1, "{cycle:?}");
        assert!(cycle[0].starts_with("dependency cycle: "), "{cycle:?}");
        let twice = v
            .check_new(&[
                task("d", Priority::Normal, 2, &[]),
                task("d", Priority::Normal, 3, &[]),
            ])
            .expect_err("refused");
        assert_eq!(twice, ["task d is listed twice"]);
    }
}
