//! `netbed`: the network test bed as a program, for scripts (`scripts/bench`).
//!
//! ```text
//! netbed --repo PATH --dir DIR [--transport ssh|https]... [--latency UP[,DOWN]] [--lifetime 2h]
//! ```
//!
//! Serves the bare repository `PATH` over each transport (both by default) behind a fault
//! proxy, prints one JSON line — per transport its URL, the environment a client needs and the
//! proxy's port — and then takes commands on standard input, one a line, each answered with one
//! JSON line:
//!
//! ```text
//! [ssh|https] latency UP [DOWN]     e.g. `latency 25ms` (each way), `ssh latency 10ms 40ms`
//! [ssh|https] cut refuse|blackhole
//! [ssh|https] heal
//! [ssh|https] reset                 every open connection, now
//! [ssh|https] reset-after BYTES     the next connection to carry BYTES more upward
//! stats                             connections, bytes, resets, HTTP requests
//! ```
//!
//! It stops at the end of standard input, or after `--lifetime` whatever happens: it only ever
//! listens on loopback, and never outlives the script that started it by long.

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    match unix::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netbed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    eprintln!("netbed: the network test bed runs on Linux (it starts sshd and git http-backend)");
    std::process::ExitCode::FAILURE
}

#[cfg(unix)]
mod unix {
    use std::io::BufRead;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};
    use trinity_netbed::{Cut, NetRemote, Transport};

    const USAGE: &str = "usage: netbed --repo PATH --dir DIR [--transport ssh|https]... \
                         [--latency UP[,DOWN]] [--lifetime DURATION]";

    fn duration(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e}"))
    }

    fn latency(spec: &str) -> Result<(Duration, Duration), String> {
        match spec.split_once(',') {
            Some((up, down)) => Ok((duration(up)?, duration(down)?)),
            None => {
                let d = duration(spec)?;
                Ok((d, d))
            }
        }
    }

    pub(crate) fn main() -> Result<(), String> {
        let mut args = std::env::args().skip(1);
        let mut repo = None;
        let mut dir = None;
        let mut transports = Vec::new();
        let mut initial = (Duration::ZERO, Duration::ZERO);
        let mut lifetime = Duration::from_secs(2 * 3600);
        while let Some(a) = args.next() {
            let mut value = || args.next().ok_or(format!("{a} needs a value\n{USAGE}"));
            match a.as_str() {
                "--repo" => repo = Some(PathBuf::from(value()?)),
                "--dir" => dir = Some(PathBuf::from(value()?)),
                "--transport" => transports.push(value()?.parse::<Transport>()?),
                "--latency" => initial = latency(&value()?)?,
                "--lifetime" => lifetime = duration(&value()?)?,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(());
                }
                other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
            }
        }
        let repo = repo.ok_or(format!("--repo is required\n{USAGE}"))?;
        let dir = dir.ok_or(format!("--dir is required\n{USAGE}"))?;
        if transports.is_empty() {
            transports = vec![Transport::Ssh, Transport::Https];
        }
        let mut beds = Vec::new();
        for t in transports {
            let bed = NetRemote::start(t, &repo, &dir.join(t.to_string()))
                .map_err(|e| format!("cannot start the {t} server: {e}"))?;
            bed.proxy().set_latency(initial.0, initial.1);
            beds.push(bed);
        }
        let mut hello = serde_json::Map::new();
        for b in &beds {
            let env: serde_json::Map<String, Value> = b
                .env()
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect();
            hello.insert(
                b.transport().to_string(),
                json!({ "url": b.url(), "env": env, "proxy_port": b.proxy().port() }),
            );
        }
        println!("{}", Value::Object(hello));

        // Standard input is read on a thread, so that the lifetime ends the program even while
        // nobody writes.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let end = Instant::now() + lifetime;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    eprintln!("netbed: lifetime over, stopping");
                    return Ok(());
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            };
            let reply = match command(&beds, &line) {
                Ok(v) => v,
                Err(e) => json!({ "error": e }),
            };
            println!("{reply}");
        }
    }

    fn command(beds: &[NetRemote], line: &str) -> Result<Value, String> {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        let only = words
            .first()
            .and_then(|w| w.parse::<Transport>().ok())
            .inspect(|_| {
                words.remove(0);
            });
        let chosen: Vec<&NetRemote> = beds
            .iter()
            .filter(|b| only.is_none_or(|t| b.transport() == t))
            .collect();
        if chosen.is_empty() {
            return Err("no such transport here".to_owned());
        }
        match words.as_slice() {
            ["latency", up] => {
                let (u, d) = latency(up)?;
                chosen.iter().for_each(|b| b.proxy().set_latency(u, d));
            }
            ["latency", up, down] => {
                let (u, d) = (duration(up)?, duration(down)?);
                chosen.iter().for_each(|b| b.proxy().set_latency(u, d));
            }
            ["cut", how] => {
                let how: Cut = how.parse()?;
                chosen.iter().for_each(|b| b.proxy().cut(how));
            }
            ["heal"] => chosen.iter().for_each(|b| b.proxy().heal()),
            ["reset"] => chosen.iter().for_each(|b| b.proxy().reset_all()),
            ["reset-after", bytes] => {
                let n: u64 = bytes.parse().map_err(|e| format!("`{bytes}`: {e}"))?;
                chosen.iter().for_each(|b| b.proxy().reset_after_upload(n));
            }
            ["stats"] => {}
            _ => return Err(format!("unknown command `{line}`")),
        }
        let mut out = serde_json::Map::new();
        for b in chosen {
            let s = b.proxy().stats();
            out.insert(
                b.transport().to_string(),
                json!({
                    "connections": s.connections,
                    "open": s.open,
                    "bytes_up": s.bytes_up,
                    "bytes_down": s.bytes_down,
                    "resets": s.resets,
                    "http_requests": b.http_requests(),
                    "cut": b.proxy().is_cut().map(|c| format!("{c:?}").to_lowercase()),
                }),
            );
        }
        Ok(Value::Object(out))
    }
}
