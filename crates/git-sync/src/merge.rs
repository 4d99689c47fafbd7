//! The three-way merge, decided per path by the path's class — never by a person, never by
//! guessing at file contents.
//!
//! Trees are flattened to `path → blob id`. For each path, when only one side changed it, that
//! side is taken. When both changed it differently:
//!
//! | class | rule |
//! |---|---|
//! | owned by a PC | that PC's side: ours if we are the owner, theirs otherwise |
//! | owned by the coordinator leader | ours if this PC holds the lease, theirs otherwise |
//! | immutable | a deletion (the consumer archiving or consuming it) wins; two different creations fit no rule |
//! | compare-and-swap | theirs: the version that reached the remote first won the race |
//! | anything else | fits no rule |
//!
//! A path that fits no rule keeps the remote's version in the tree; our version is kept aside
//! (the caller writes it under `local/conflicts/` and raises an escalation).

use std::collections::{BTreeMap, BTreeSet};

use trinity_core::PcId;
use trinity_core::layout::{PathClass, Tree};

/// A flattened tree: path (with `/`) → blob id.
pub type Flat<Id> = BTreeMap<String, Id>;

/// Which side a merged path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This PC's commit.
    Ours,
    /// The remote's commit.
    Theirs,
}

/// A path no rule could decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict<Id> {
    /// The path no rule decides, relative to the tree's root (`/`-separated).
    pub path: String,
    /// Our version (absent when we deleted it), kept aside by the caller.
    pub ours: Option<Id>,
    /// Their version, kept in the tree.
    pub theirs: Option<Id>,
    /// Why no rule applied.
    pub why: String,
}

/// The result of a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged<Id> {
    /// The merged tree.
    pub tree: Flat<Id>,
    /// Paths where both sides changed and a rule decided (path, side taken).
    pub decided: Vec<(String, Side)>,
    /// Paths no rule could decide.
    pub conflicts: Vec<Conflict<Id>>,
}

/// Merges `ours` and `theirs` against their common ancestor `base`. `me` is this PC; `leader`
/// says whether this PC holds the coordinator lease.
pub fn merge<Id: Clone + Eq>(
    base: &Flat<Id>,
    ours: &Flat<Id>,
    theirs: &Flat<Id>,
    me: &PcId,
    leader: bool,
) -> Merged<Id> {
    let paths: BTreeSet<&String> = base
        .keys()
        .chain(ours.keys())
        .chain(theirs.keys())
        .collect();
    let mut tree = Flat::new();
    let mut decided = Vec::new();
    let mut conflicts = Vec::new();
    for path in paths {
        let (b, o, t) = (base.get(path), ours.get(path), theirs.get(path));
        let take = |side: Side| match side {
            Side::Ours => o.cloned(),
            Side::Theirs => t.cloned(),
        };
        let chosen = if o == t {
            o.cloned()
        } else if o == b {
            t.cloned()
        } else if t == b {
            o.cloned()
        } else {
            match rule(path, o.is_some(), t.is_some(), me, leader) {
                Ok(side) => {
                    decided.push((path.clone(), side));
                    take(side)
                }
                Err(why) => {
                    conflicts.push(Conflict {
                        path: path.clone(),
                        ours: o.cloned(),
                        theirs: t.cloned(),
                        why,
                    });
                    t.cloned()
                }
            }
        };
        if let Some(id) = chosen {
            tree.insert(path.clone(), id);
        }
    }
    Merged {
        tree,
        decided,
        conflicts,
    }
}

/// The side that wins when both changed `path` differently, or why no rule applies.
pub fn rule(
    path: &str,
    ours_exists: bool,
    theirs_exists: bool,
    me: &PcId,
    leader: bool,
) -> Result<Side, String> {
    let kind = Tree::classify_relative(path).map_err(|e| e.to_string())?;
    match kind.class() {
        PathClass::Owned(owner) => Ok(if &owner == me {
            Side::Ours
        } else {
            Side::Theirs
        }),
        PathClass::Leader => Ok(if leader { Side::Ours } else { Side::Theirs }),
        PathClass::Immutable { .. } => match (ours_exists, theirs_exists) {
            (false, _) => Ok(Side::Ours),
            (_, false) => Ok(Side::Theirs),
            (true, true) => Err(format!(
                "{path} is immutable, but two different versions were created"
            )),
        },
        PathClass::CompareAndSwap => Ok(Side::Theirs),
        PathClass::Local => Err(format!("{path} is local and should never be synced")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(s: &str) -> PcId {
        PcId::new(s).expect("valid")
    }

    fn flat(entries: &[(&str, u32)]) -> Flat<u32> {
        entries.iter().map(|(p, v)| ((*p).to_owned(), *v)).collect()
    }

    #[test]
    fn one_sided_changes_are_taken_from_either_side() {
        let base = flat(&[("heartbeat/PC1.json", 1), ("heartbeat/PC2.json", 1)]);
        let ours = flat(&[
            ("heartbeat/PC1.json", 2),
            ("heartbeat/PC2.json", 1),
            ("wake/PC2/a.json", 7),
        ]);
        let theirs = flat(&[("heartbeat/PC1.json", 1), ("heartbeat/PC2.json", 3)]);
        let m = merge(&base, &ours, &theirs, &pc("PC1"), false);
        assert_eq!(
            m.tree,
            flat(&[
                ("heartbeat/PC1.json", 2),
                ("heartbeat/PC2.json", 3),
                ("wake/PC2/a.json", 7)
            ])
        );
        assert!(m.decided.is_empty() && m.conflicts.is_empty());
    }

    #[test]
    fn owned_files_take_the_owners_version() {
        let base = flat(&[("credit/PC1.json", 1), ("instances/PC2.json", 1)]);
        let ours = flat(&[("credit/PC1.json", 2), ("instances/PC2.json", 2)]);
        let theirs = flat(&[("credit/PC1.json", 3), ("instances/PC2.json", 3)]);
        let m = merge(&base, &ours, &theirs, &pc("PC1"), false);
        assert_eq!(m.tree["credit/PC1.json"], 2);
        assert_eq!(m.tree["instances/PC2.json"], 3);
    }

    #[test]
    fn claims_and_the_lease_take_the_remotes_version() {
        let base = flat(&[]);
        let ours = flat(&[("claims/task-x.json", 1), ("coordinator/lease.json", 1)]);
        let theirs = flat(&[("claims/task-x.json", 2), ("coordinator/lease.json", 2)]);
        let m = merge(&base, &ours, &theirs, &pc("PC2"), false);
        assert_eq!(m.tree["claims/task-x.json"], 2);
        assert_eq!(m.tree["coordinator/lease.json"], 2);
        assert_eq!(m.decided.len(), 2);
    }

    #[test]
    fn leader_files_follow_the_lease() {
        let base = flat(&[("status/multi-instance-status.json", 1)]);
        let ours = flat(&[("status/multi-instance-status.json", 2)]);
        let theirs = flat(&[("status/multi-instance-status.json", 3)]);
        assert_eq!(
            merge(&base, &ours, &theirs, &pc("PC3"), true).tree["status/multi-instance-status.json"],
            2
        );
        assert_eq!(
            merge(&base, &ours, &theirs, &pc("PC3"), false).tree["status/multi-instance-status.json"],
            3
        );
    }

    #[test]
    fn deleting_an_immutable_file_wins_and_two_creations_are_a_conflict() {
        let sig = "wake/PC2/20261121T100000Z-PC1-x.json";
        let base = flat(&[(sig, 1)]);
        // We consumed the signal while the remote rewrote it: the deletion wins.
        let m = merge(&base, &flat(&[]), &flat(&[(sig, 2)]), &pc("PC2"), false);
        assert!(!m.tree.contains_key(sig));
        // Two different creations of one immutable name fit no rule: theirs is kept in the tree,
        // ours is reported.
        let done = "done/task-x.json";
        let m = merge(
            &flat(&[]),
            &flat(&[(done, 1)]),
            &flat(&[(done, 2)]),
            &pc("PC2"),
            false,
        );
        assert_eq!(m.tree[done], 2);
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.conflicts[0].ours, Some(1));
        assert!(
            m.conflicts[0].why.contains("immutable"),
            "{}",
            m.conflicts[0].why
        );
    }

    #[test]
    fn a_path_outside_every_class_is_a_conflict() {
        let m = merge(
            &flat(&[]),
            &flat(&[("notes/todo.txt", 1)]),
            &flat(&[("notes/todo.txt", 2)]),
            &pc("PC1"),
            false,
        );
        assert_eq!(m.conflicts.len(), 1);
        assert_eq!(m.tree["notes/todo.txt"], 2);
    }

    #[test]
    fn nothing_is_ever_dropped_silently() {
        // Every path of either side is in the result unless a side deleted it.
        let base = flat(&[("heartbeat/PC1.json", 1)]);
        let ours = flat(&[
            ("heartbeat/PC1.json", 1),
            ("handoff/handoff_PC1_to_PC2_20261121T100000Z.json", 5),
        ]);
        let theirs = flat(&[
            ("heartbeat/PC1.json", 1),
            ("done/t.json", 6),
            ("claims/t.json", 7),
        ]);
        let m = merge(&base, &ours, &theirs, &pc("PC1"), false);
        assert_eq!(m.tree.len(), 4);
    }
}
