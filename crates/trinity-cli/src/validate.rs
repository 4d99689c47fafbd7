//! `trinity validate`: check files against their schemas by their place in the tree.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use trinity_core::fsio;
use trinity_core::layout::Tree;
use trinity_core::schema::Fleet;
use trinity_core::validate::{files_under, find_tree_root, implied_root, validate_file};

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Files or directories to check (directories are walked, skipping .git, local/ and logs/)
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// The root of the state tree the paths belong to [default: the nearest directory above
    /// them holding fleet.toml; failing that, the path is read as if it were inside a tree]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Print only problems and the summary, not each valid file
    #[arg(short, long)]
    quiet: bool,
}

pub(crate) fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    let mut problems = 0usize;
    for path in &args.paths {
        if path.is_dir() {
            files.extend(files_under(path)?);
        } else if path.exists() {
            files.push(path.clone());
        } else {
            println!("{}: does not exist", path.display());
            problems += 1;
        }
    }
    for file in &files {
        let root = args
            .root
            .clone()
            .or_else(|| find_tree_root(file))
            .or_else(|| implied_root(file));
        let Some(root) = root else {
            println!(
                "{}: has no place in the state tree layout (see docs/protocol.md)",
                file.display()
            );
            problems += 1;
            continue;
        };
        let tree = Tree::new(&root);
        let fleet = fsio::load::<Fleet>(&tree.fleet_file())
            .ok()
            .map(|d| d.value);
        match validate_file(&tree, file, fleet.as_ref()) {
            Ok(checked) => {
                if !args.quiet {
                    let extra = if checked.unknown_fields.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (fields unknown to this version, kept: {})",
                            checked.unknown_fields.join(", ")
                        )
                    };
                    println!("{}: ok, {}{extra}", file.display(), checked.kind.name());
                }
            }
            Err(problem) => {
                println!("{problem}");
                problems += 1;
            }
        }
    }
    let checked = files.len();
    if problems == 0 {
        println!("{checked} file(s) checked, all valid");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{checked} file(s) checked, {problems} problem(s)");
        Ok(ExitCode::FAILURE)
    }
}
