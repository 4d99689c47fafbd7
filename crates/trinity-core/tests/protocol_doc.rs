//! docs/protocol.md stays true to the code: every example block titled with a tree path
//! validates at that path, every schema has an example, and every field the valid fixtures use
//! is documented.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use trinity_core::fsio;
use trinity_core::layout::Tree;
use trinity_core::schema::Fleet;
use trinity_core::validate::{self, validate_file};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// (path, body) of every fenced block whose info string has `title="…"`.
fn examples(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let title = info
            .split("title=\"")
            .nth(1)
            .and_then(|t| t.split('"').next());
        let mut body = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        if let Some(title) = title {
            out.push((title.to_owned(), body));
        }
    }
    out
}

#[test]
fn every_example_in_the_protocol_doc_validates_in_its_place() {
    let doc = fs::read_to_string(repo().join("docs/protocol.md")).expect("read docs/protocol.md");
    let examples = examples(&doc);
    assert!(
        examples.len() >= 14,
        "only {} examples found",
        examples.len()
    );
    let fleet = fsio::load::<Fleet>(&repo().join("fixtures/valid/fleet.toml"))
        .expect("fleet")
        .value;
    let mut kinds = BTreeSet::new();
    for (path, body) in &examples {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let file = dir.path().join(path);
        fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        fs::write(&file, body).expect("write");
        let checked = validate_file(&tree, &file, Some(&fleet)).unwrap_or_else(|p| {
            panic!("docs/protocol.md example {path} is invalid: {}", p.message)
        });
        assert!(
            checked.unknown_fields.is_empty(),
            "{path}: undocumented fields {:?}",
            checked.unknown_fields
        );
        kinds.insert(checked.kind.name());
    }
    for (schema, _) in validate::schema_versions() {
        assert!(
            kinds.contains(schema),
            "docs/protocol.md has no example of a {schema} file"
        );
    }
}

#[test]
fn every_field_the_fixtures_use_is_documented() {
    let doc = fs::read_to_string(repo().join("docs/protocol.md")).expect("read docs/protocol.md");
    let tree = Tree::new(repo().join("fixtures/valid"));
    let mut missing = BTreeSet::new();
    for file in validate::synced_files(&tree).expect("list") {
        if file.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let checked = validate_file(&tree, &file, None).expect("valid fixture");
        let value: serde_json::Value =
            serde_json::from_slice(&fs::read(&file).expect("read")).expect("json");
        for key in value.as_object().expect("object").keys() {
            let unknown = checked.unknown_fields.iter().any(|u| u == key);
            if !unknown && !doc.contains(&format!("`{key}`")) {
                missing.insert(format!("{key} ({})", checked.kind.name()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields missing from docs/protocol.md: {missing:?}"
    );
}

#[test]
fn the_doc_lists_every_schema_version() {
    let doc = fs::read_to_string(repo().join("docs/protocol.md")).expect("read docs/protocol.md");
    for (schema, version) in validate::schema_versions() {
        assert!(
            doc.contains(&format!("{schema} ({version})")),
            "the tree table lacks `{schema} ({version})`"
        );
    }
}
