//! Finding the programs Trinity starts: the agent, verification phases, git.

use std::path::{Path, PathBuf};

/// `program` found in the directories of `path` with one of the extensions of `pathext`
/// (default `.COM;.EXE;.BAT;.CMD`), in that order; `None` for a name that has a directory or an
/// extension already, or that is nowhere.
pub fn find_on_path(
    program: &str,
    path: Option<&std::ffi::OsStr>,
    pathext: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.components().count() != 1 || p.extension().is_some() {
        return None;
    }
    let exts: Vec<String> = pathext
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".COM;.EXE;.BAT;.CMD".to_owned())
        .split(';')
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    for dir in std::env::split_paths(path?) {
        for ext in &exts {
            for candidate in [
                dir.join(format!("{program}{}", ext.to_ascii_lowercase())),
                dir.join(format!("{program}{ext}")),
            ] {
                if candidate.is_file() {
                    return Some(candidate);
                }
            }
        }
    }
    None
}

/// Where `program` would be started from: a name with a directory as given (if it exists),
/// else looked up on PATH — on Windows with every PATHEXT extension, as the wake-daemon starts
/// it (`claude` is npm's `claude.cmd`). `None` when it is nowhere.
pub fn locate(program: &str) -> Option<PathBuf> {
    let p = Path::new(program);
    if p.components().count() != 1 {
        return p.is_file().then(|| p.to_owned());
    }
    let path = std::env::var_os("PATH");
    if cfg!(windows)
        && let Some(found) = find_on_path(
            program,
            path.as_deref(),
            std::env::var_os("PATHEXT").as_deref(),
        )
    {
        return Some(found);
    }
    std::env::split_paths(path.as_deref()?)
        .map(|d| d.join(program))
        .find(|c| c.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_found_with_any_pathext_extension() {
        let dir = tempfile::tempdir().expect("temp");
        let npm = dir.path().join("npm");
        let other = dir.path().join("bin");
        std::fs::create_dir_all(&npm).expect("npm dir");
        std::fs::create_dir_all(&other).expect("bin dir");
        std::fs::write(npm.join("claude.cmd"), "@echo off").expect("cmd");
        let path = std::env::join_paths([&other, &npm]).expect("path");
        let found = find_on_path("claude", Some(&path), Some(".COM;.EXE;.BAT;.CMD".as_ref()));
        assert_eq!(found, Some(npm.join("claude.cmd")));
        // An .exe earlier on PATH wins, as the shell would choose.
        std::fs::write(other.join("claude.exe"), "MZ").expect("exe");
        let found = find_on_path("claude", Some(&path), None);
        assert_eq!(found, Some(other.join("claude.exe")));
        // Names with a directory or an extension are used as given.
        assert_eq!(find_on_path("C:/x/claude", Some(&path), None), None);
        assert_eq!(find_on_path("claude.cmd", Some(&path), None), None);
        assert_eq!(find_on_path("nothere", Some(&path), None), None);
    }

    #[test]
    fn locate_finds_programs_on_the_path_and_given_paths() {
        let dir = tempfile::tempdir().expect("temp");
        let file = dir.path().join("tool");
        std::fs::write(&file, "").expect("write");
        assert_eq!(locate(file.to_str().expect("utf-8")), Some(file.clone()));
        assert_eq!(
            locate(dir.path().join("missing").to_str().expect("utf-8")),
            None
        );
        assert!(locate("no-such-program-anywhere-3f9a").is_none());
    }
}
