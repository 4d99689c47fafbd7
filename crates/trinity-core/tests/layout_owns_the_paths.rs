//! Every path of the state tree is built by `layout`: no other source file of the workspace
//! joins a tree directory's name or writes a tree path as a string (tests aside). A path built
//! elsewhere drifts from the layout the day the layout changes.

use std::path::{Path, PathBuf};

use trinity_core::layout::{FLEET_FILE, GITIGNORE_FILE, SYNCED_DIRS, UNSYNCED_DIRS};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literals of a line of code (comments cut off).
fn literals(line: &str) -> Vec<String> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut chars = code.chars();
    while let Some(c) = chars.next() {
        if c == '"' {
            let mut lit = String::new();
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    _ => {
                        escaped = false;
                        lit.push(c);
                    }
                }
            }
            out.push(lit);
        }
    }
    out
}

/// What a literal says of the tree, if it names a path of it: a directory joined on its own
/// (`.join("handoff")`), a path under one (`"heartbeat/"`, `"local/run"`), or the tree's own
/// files.
fn tree_path(line: &str, lit: &str) -> bool {
    let dirs = SYNCED_DIRS
        .iter()
        .chain(UNSYNCED_DIRS)
        .filter(|d| **d != ".git");
    if lit == FLEET_FILE || lit == GITIGNORE_FILE {
        return true;
    }
    for d in dirs {
        if line.contains(&format!(".join(\"{d}\")")) {
            return true;
        }
        let under = format!("{d}/");
        if lit.starts_with(&under)
            && lit
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-./{}".contains(c))
        {
            return true;
        }
    }
    false
}

#[test]
fn no_tree_path_is_built_outside_layout() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&crates).expect("crates").flatten() {
        let src = krate.path().join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    files.sort();
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut found = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&crates).unwrap_or(file);
        let rel_text = rel.to_string_lossy().replace('\\', "/");
        // The layout itself, and the test kit (a dependency of trinity-core's own tests, so
        // it cannot use the layout).
        if rel_text == "trinity-core/src/layout.rs" || rel_text.starts_with("trinity-testkit/") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let code = match text.find("#[cfg(test)]\nmod tests") {
            Some(at) => &text[..at],
            None => &text,
        };
        for (n, line) in code.lines().enumerate() {
            for lit in literals(line) {
                if tree_path(line, &lit) {
                    found.push(format!("{rel_text}:{}: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "tree paths built outside trinity_core::layout (add a method to Tree):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_what_it_looks_for() {
    let hit = |line: &str| literals(line).iter().any(|l| tree_path(line, l));
    assert!(hit(r#"let p = root.join("handoff");"#));
    assert!(hit(r#"if rel.starts_with("heartbeat/") {"#));
    assert!(hit(r#"git.run(["add", "fleet.toml"])"#));
    assert!(hit(r#"dir.join("local/run/x.lock")"#));
    assert!(!hit(r#"// root.join("handoff")"#));
    assert!(!hit(r#"tracing::info!("handoff accepted");"#));
    assert!(!hit(r#"let p = workdir.join(".git");"#));
    assert!(!hit(r#"format!("{} of {}", a, b)"#));
}
