//! `trinity logs`: show and follow a daemon's log without needing `tail`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use trinity_core::DaemonName;
use trinity_core::layout::Tree;

use trinity_core::DaemonId;

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The daemon: credit-monitor, wake-daemon, git-sync or coordinator
    daemon: String,
    /// Keep printing lines as they are written (Ctrl-C to stop)
    #[arg(short, long)]
    follow: bool,
    /// How many of the last lines to print first
    #[arg(short = 'n', long, default_value_t = 20, value_name = "N")]
    lines: usize,
    /// The state tree [default: state_dir from the config]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// Accepts the seed documents' names too: `auto_wake_daemon`, `credit_monitor`.
fn daemon_name(input: &str) -> anyhow::Result<DaemonName> {
    let dashed = input.trim().to_ascii_lowercase().replace('_', "-");
    let name = match dashed.trim_end_matches(".log") {
        "auto-wake-daemon" | "wake" => "wake-daemon".to_owned(),
        "credit" => "credit-monitor".to_owned(),
        "sync" => "git-sync".to_owned(),
        other => other.to_owned(),
    };
    Ok(DaemonName::new(name)?)
}

pub(crate) fn run(args: LogsArgs, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let state_dir = match args.state_dir {
        Some(dir) => dir,
        None => crate::load_config(config_path)?.state_dir,
    };
    let tree = Tree::new(state_dir);
    let daemon = daemon_name(&args.daemon)?;
    let path = tree.log_file(&daemon);
    if !path.is_file() {
        let present: Vec<String> = std::fs::read_dir(tree.logs_dir())
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".log"))
                            .map(str::to_owned)
                    })
                    .filter(|n| !n.contains('.'))
                    .collect()
            })
            .unwrap_or_default();
        let hint = if present.is_empty() {
            format!(
                "no daemon has written a log in {} yet",
                tree.logs_dir().display()
            )
        } else {
            format!("logs present: {}", present.join(", "))
        };
        // The daemons, and the CLI itself, write logs.
        let known = if daemon.as_str().parse::<DaemonId>().is_ok() || daemon.as_str() == "trinity" {
            String::new()
        } else {
            format!(
                "; daemons are {}",
                DaemonId::ALL.map(DaemonId::as_str).join(", ")
            )
        };
        bail!("no log file {} ({hint}{known})", path.display());
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut file =
        File::open(&path).with_context(|| format!("failed to open {}", path.display()))?;
    let pos = print_last_lines(&mut file, args.lines, &mut out)?;
    out.flush()?;
    if args.follow {
        follow(&path, pos, &mut out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the last `n` lines of `file`; returns the end position.
fn print_last_lines(file: &mut File, n: usize, out: &mut impl Write) -> io::Result<u64> {
    let len = file.seek(SeekFrom::End(0))?;
    if n == 0 {
        return Ok(len);
    }
    // A trailing newline ends the last line; it does not start another one.
    let mut scan_end = len;
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] == b'\n' {
            scan_end -= 1;
        }
    }
    // Walk back in chunks until the n-th newline from the end.
    let mut start = 0;
    let mut found = 0;
    let mut pos = scan_end;
    let mut buf = vec![0u8; 64 * 1024];
    'scan: while pos > 0 {
        let chunk = usize::try_from(pos).unwrap_or(usize::MAX).min(buf.len());
        pos -= chunk as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf[..chunk])?;
        for i in (0..chunk).rev() {
            if buf[i] == b'\n' {
                found += 1;
                if found == n {
                    start = pos + i as u64 + 1;
                    break 'scan;
                }
            }
        }
    }
    copy_from(file, start, len, out)
}

fn copy_from(file: &mut File, from: u64, to: u64, out: &mut impl Write) -> io::Result<u64> {
    file.seek(SeekFrom::Start(from))?;
    io::copy(&mut file.take(to - from), out)?;
    Ok(to)
}

/// Opens a log for reading without stopping the daemon from rolling it over: on Windows a
/// file held open without `FILE_SHARE_DELETE` cannot be renamed.
fn open_shared(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        // FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
        options.share_mode(0x1 | 0x2 | 0x4);
    }
    options.open(path)
}

/// Prints what is appended to `path` from `pos` on, reopening it when it is rolled over.
fn follow(path: &Path, mut pos: u64, out: &mut impl Write) -> anyhow::Result<()> {
    let mut file = open_shared(path)?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(_) => continue, // between a roll's rename and the new file
        };
        if len < pos {
            // Rolled over (or truncated): the current file is a new one.
            file = open_shared(path)?;
            pos = 0;
        }
        if len > pos {
            pos = copy_from(&mut file, pos, len, out)?;
            out.flush()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(text: &str, n: usize) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        std::fs::write(&path, text).expect("write");
        let mut out = Vec::new();
        let mut f = File::open(&path).expect("open");
        let end = print_last_lines(&mut f, n, &mut out).expect("tail");
        assert_eq!(end, text.len() as u64);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn prints_the_last_lines() {
        assert_eq!(last("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last("a\nb\nc\n", 5), "a\nb\nc\n");
        assert_eq!(last("a\nb\nc", 1), "c");
        assert_eq!(last("a\nb\nc\n", 0), "");
        assert_eq!(last("", 3), "");
        let many: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(last(&many, 2), "line 99998\nline 99999\n");
    }

    #[test]
    fn seed_names_are_understood() {
        assert_eq!(
            daemon_name("auto_wake_daemon").expect("ok").as_str(),
            "wake-daemon"
        );
        assert_eq!(
            daemon_name("credit_monitor").expect("ok").as_str(),
            "credit-monitor"
        );
        assert_eq!(
            daemon_name("git-sync.log").expect("ok").as_str(),
            "git-sync"
        );
        assert!(daemon_name("../etc").is_err());
    }
}
