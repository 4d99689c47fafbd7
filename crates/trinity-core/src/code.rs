//! The agent's code travels with its work: the outgoing PC snapshots the project checkout
//! ([`snapshot`]) without touching the user's branch, index or files, and pushes it to a branch
//! of its own on the project's remote; the incoming PC fetches it and checks it out
//! ([`restore`]) before it starts its agent, first setting its own uncommitted changes aside on a
//! ref of their own. Runs the `git` program (non-interactive, [`crate::gitcmd`]).

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::gitcmd::{Git, GitError};
use crate::ids::{PcId, TaskId};
use crate::schema::CodeSnapshot;

/// Why the code could not be snapshotted or restored.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The workdir is not a git working tree.
    #[error("{} is not a git repository", .0.display())]
    NotARepository(std::path::PathBuf),
    /// A merge (or rebase, cherry-pick) is in progress there: nothing is touched.
    #[error("a {what} is in progress in {}: finish or abort it first", dir.display())]
    InProgress {
        /// The checkout.
        dir: std::path::PathBuf,
        /// merge, rebase, cherry-pick…
        what: &'static str,
    },
    /// The checkout has no commit yet.
    #[error("{} has no commit yet", .0.display())]
    NoCommit(std::path::PathBuf),
    /// git failed.
    #[error(transparent)]
    Git(#[from] GitError),
}

/// The branch a task's work in progress lives on, on the project's remote.
pub fn wip_ref(task: &TaskId) -> String {
    format!("refs/heads/trinity/wip/{task}")
}

/// The local branch the incoming PC works on.
pub fn work_branch(task: &TaskId) -> String {
    format!("trinity/work/{task}")
}

fn repo_checks(git: &Git, dir: &Path) -> Result<(), CodeError> {
    match git.run(["rev-parse", "--is-inside-work-tree"]) {
        Ok(out) if out.trim() == "true" => {}
        _ => return Err(CodeError::NotARepository(dir.to_owned())),
    }
    for (marker, what) in [
        ("MERGE_HEAD", "merge"),
        ("rebase-merge", "rebase"),
        ("rebase-apply", "rebase"),
        ("CHERRY_PICK_HEAD", "cherry-pick"),
        ("REVERT_HEAD", "revert"),
    ] {
        let path = git.run(["rev-parse", "--git-path", marker])?;
        let path = dir.join(path.trim());
        if path.exists() {
            return Err(CodeError::InProgress {
                dir: dir.to_owned(),
                what,
            });
        }
    }
    Ok(())
}

/// A commit of the whole working tree (tracked changes, and untracked files `.gitignore` does
/// not exclude) on top of HEAD, made through a temporary index so the user's index, branch
/// and files stay as they are. Returns (HEAD, the commit).
fn commit_working_tree(
    git: &Git,
    dir: &Path,
    message: &str,
    who: &str,
) -> Result<(String, String), CodeError> {
    let head = git
        .run(["rev-parse", "--verify", "-q", "HEAD^{commit}"])
        .map_err(|_| CodeError::NoCommit(dir.to_owned()))?
        .trim()
        .to_owned();
    let index = git.run(["rev-parse", "--git-path", "trinity-snapshot.index"])?;
    let index = dir.join(index.trim());
    let _ = std::fs::remove_file(&index);
    let g = git
        .clone()
        .with_env("GIT_INDEX_FILE", &index)
        .with_env("GIT_AUTHOR_NAME", who)
        .with_env("GIT_AUTHOR_EMAIL", "trinity@trinity.invalid")
        .with_env("GIT_COMMITTER_NAME", who)
        .with_env("GIT_COMMITTER_EMAIL", "trinity@trinity.invalid");
    let result = (|| {
        g.run(["read-tree", &head])?;
        g.run(["add", "-A", "--", "."])?;
        let tree = g.run(["write-tree"])?.trim().to_owned();
        g.run(["commit-tree", &tree, "-p", &head, "-m", message])
            .map(|c| c.trim().to_owned())
    })();
    let _ = std::fs::remove_file(&index);
    Ok((head, result?))
}

/// The remote to push to: `configured`, else the current branch's upstream remote, else
/// `origin` when it exists.
fn push_remote(git: &Git, configured: &str, branch: Option<&str>) -> Option<String> {
    if !configured.trim().is_empty() {
        return Some(configured.trim().to_owned());
    }
    if let Some(b) = branch
        && let Ok(r) = git.run(["config", "--get", &format!("branch.{b}.remote")])
        && !r.trim().is_empty()
        && r.trim() != "."
    {
        return Some(r.trim().to_owned());
    }
    git.run(["remote"]).ok().and_then(|out| {
        out.lines()
            .find(|l| l.trim() == "origin")
            .map(str::to_owned)
    })
}

/// Snapshots `dir` for `task` and pushes the snapshot to `refs/heads/trinity/wip/{task}` on the
/// project's remote (`remote`: a remote name or URL; empty: the upstream, else `origin`). A
/// push that fails does not fail the snapshot: it comes back with `pushed: false` and why.
pub fn snapshot(
    dir: &Path,
    task: &TaskId,
    pc: &PcId,
    remote: &str,
) -> Result<CodeSnapshot, CodeError> {
    let git = Git::in_dir(dir);
    repo_checks(&git, dir)?;
    let branch = git
        .run(["symbolic-ref", "--short", "-q", "HEAD"])
        .ok()
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty());
    let (base, wip) = commit_working_tree(
        &git,
        dir,
        &format!("trinity: work in progress on {task}, handed over by {pc}"),
        &format!("trinity {pc}"),
    )?;
    let reference = wip_ref(task);
    git.run(["update-ref", &reference, &wip])?;
    let target = push_remote(&git, remote, branch.as_deref());
    let repository = target
        .as_deref()
        .map(|r| {
            git.run(["remote", "get-url", r])
                .map(|u| u.trim().to_owned())
                .unwrap_or_else(|_| r.to_owned())
        })
        .unwrap_or_default();
    let (pushed, note) = match &target {
        None => (
            false,
            Some("the checkout has no remote to push to (set [work] remote)".to_owned()),
        ),
        Some(r) => match git.run([
            "push",
            "--force",
            "--porcelain",
            "--quiet",
            r,
            &format!("{wip}:{reference}"),
        ]) {
            Ok(_) => (true, None),
            Err(e) => (
                false,
                Some(format!(
                    "push to {r} failed: {}",
                    e.stderr().lines().last().unwrap_or("").trim()
                )),
            ),
        },
    };
    Ok(CodeSnapshot {
        repository,
        branch,
        base_commit: base,
        wip_commit: wip,
        wip_ref: reference,
        pushed,
        note,
    })
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The local branch now checked out.
    pub branch: String,
    /// Where this checkout's own uncommitted changes were set aside, if it had any.
    pub set_aside: Option<String>,
    /// Whether the checkout already was at the snapshot (a second run).
    pub already: bool,
}

/// Brings the snapshot into `dir`: fetches it from its repository, sets this checkout's
/// uncommitted changes aside on `refs/trinity/saved/{time}` (a commit of them, nothing is
/// lost), and checks the snapshot out on `trinity/work/{task}`. Running it again is harmless.
pub fn restore(
    dir: &Path,
    task: &TaskId,
    snap: &CodeSnapshot,
    pc: &PcId,
    now: DateTime<Utc>,
) -> Result<Restored, CodeError> {
    let git = Git::in_dir(dir);
    repo_checks(&git, dir)?;
    let branch = work_branch(task);
    let has = |c: &str| {
        git.run(["cat-file", "-e", &format!("{c}^{{commit}}")])
            .is_ok()
    };
    if !has(&snap.wip_commit) {
        git.run([
            "fetch",
            "--quiet",
            "--no-tags",
            &snap.repository,
            &format!("+{}:refs/trinity/fetched/{task}", snap.wip_ref),
        ])?;
    }
    let head = git.run(["rev-parse", "--verify", "-q", "HEAD"]).ok();
    let current = git
        .run(["symbolic-ref", "--short", "-q", "HEAD"])
        .ok()
        .map(|b| b.trim().to_owned());
    let dirty = !git
        .run(["status", "--porcelain", "--untracked-files=all"])?
        .trim()
        .is_empty();
    if head.as_deref().map(str::trim) == Some(snap.wip_commit.as_str())
        && current.as_deref() == Some(branch.as_str())
        && !dirty
    {
        return Ok(Restored {
            branch,
            set_aside: None,
            already: true,
        });
    }
    if dirty && head.is_none() {
        return Err(CodeError::NoCommit(dir.to_owned()));
    }
    let mut set_aside = None;
    if dirty {
        let (_, saved) = commit_working_tree(
            &git,
            dir,
            &format!("trinity: {pc}'s uncommitted changes, set aside before taking over {task}"),
            &format!("trinity {pc}"),
        )?;
        let reference = format!("refs/trinity/saved/{}", now.format("%Y%m%dT%H%M%SZ"));
        git.run(["update-ref", &reference, &saved])?;
        set_aside = Some(reference);
    }
    // Tracked changes are in the saved commit; untracked ones too (not ignored ones, which
    // `clean` without -x leaves alone).
    if dirty {
        git.run(["reset", "--hard", "--quiet"])?;
        git.run(["clean", "-f", "-d", "--quiet"])?;
    }
    git.run(["checkout", "--quiet", "-B", &branch, &snap.wip_commit])?;
    Ok(Restored {
        branch,
        set_aside,
        already: false,
    })
}

/// Where Claude Code keeps the sessions of a working directory: `projects/` (usually
/// `~/.claude/projects`) joined with the directory's path, every character but ASCII letters
/// and digits replaced by `-` (as Claude Code 2.1.332 names it: `/tmp/my.proj_dir x` →
/// `-tmp-my-proj-dir-x`).
pub fn claude_project_dir(projects: &Path, workdir: &Path) -> std::path::PathBuf {
    let name: String = workdir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    projects.join(name)
}

/// The most recently written session transcript in `dir`: its session id (the file's stem)
/// and path.
pub fn newest_session(dir: &Path) -> Option<(String, std::path::PathBuf)> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max_by_key(|(t, _)| *t)
        .and_then(|(_, p)| {
            let id = p.file_stem()?.to_string_lossy().into_owned();
            is_session_id(&id).then_some((id, p))
        })
}

/// Whether `id` can be a Claude Code session id (and so a file name): 1–64 ASCII letters,
/// digits and `-`.
pub fn is_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Whether an agent command runs Claude Code (its program is `claude`, `claude.exe`,
/// `claude.cmd`…), which understands `--resume SESSION`.
pub fn is_claude(command: &[String]) -> bool {
    command.first().is_some_and(|p| {
        Path::new(p)
            .file_stem()
            .is_some_and(|s| s.eq_ignore_ascii_case("claude"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_code_names_a_project_directory_as_recorded() {
        assert_eq!(
            claude_project_dir(
                Path::new("/h/.claude/projects"),
                Path::new("/tmp/cce/my.proj_dir x")
            ),
            Path::new("/h/.claude/projects/-tmp-cce-my-proj-dir-x")
        );
        assert_eq!(
            claude_project_dir(Path::new("P"), Path::new("C:\\Users\\me\\proj")),
            Path::new("P").join("C--Users-me-proj")
        );
    }

    #[test]
    fn only_claude_understands_resume_and_session_ids_are_file_names() {
        assert!(is_claude(&["claude".to_owned(), "-p".to_owned()]));
        assert!(is_claude(&["C:/npm/claude.cmd".to_owned()]));
        assert!(!is_claude(&["/bin/sh".to_owned(), "claude".to_owned()]));
        assert!(is_session_id("2df57bb5-2d6b-4a0d-83f6-77ad5ca7db72"));
        assert!(!is_session_id("../x"));
        assert!(!is_session_id(""));
    }
}
