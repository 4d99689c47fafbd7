//! A protocol-v2 session with the remote's `git-upload-pack`: a check of the remote is one
//! `ls-refs` request, and a fetch one `fetch` request on the same session, whose pack goes
//! straight into `git index-pack`.
//!
//! Over ssh the session is the ssh program running `git-upload-pack` on the server (with
//! `GIT_PROTOCOL=version=2` passed on, as git does), opened for one check and the fetch after
//! it: `upload-pack` reads the branches once per process, so a session kept open would keep
//! answering with what it saw first. What makes it cheap is OpenSSH's connection sharing: a new
//! session is a new channel on the open connection. Over HTTP(S) the session is git's own
//! `git remote-https` helper in its `stateless-connect` mode: each request is a POST answered by
//! a fresh `upload-pack`, on one kept-alive connection, with the user's credential helpers and
//! TLS settings; it is kept between checks.
//!
//! Every read waits at most the session's deadline: a link that stops answering ends the
//! session (the child is killed) instead of holding the daemon.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gix::ObjectId;
use trinity_core::gitcmd::{kill_group, own_group};

use super::pkt::{self, Packet};

/// Why a session request failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session could not be started (no ssh or git program).
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No answer within the deadline.
    #[error("the remote did not answer within {}s", .0.as_secs())]
    Timeout(Duration),
    /// The other end closed the session (the text is what the ssh or git program said).
    #[error("the connection closed: {0}")]
    Closed(String),
    /// The server answered something this client does not understand.
    #[error("unexpected answer from the remote: {0}")]
    Protocol(String),
    /// Storing a fetched pack failed on this machine.
    #[error("cannot store the fetched objects: {0}")]
    Store(String),
}

/// What the reader thread passes on.
#[derive(Debug)]
enum Msg {
    /// A plain text line (the remote helper's answer to `stateless-connect`).
    Line(String),
    Packet(Packet),
    /// The stream ended (with the read error, if any).
    End(Option<String>),
}

/// An open v2 session.
#[derive(Debug)]
pub struct Session {
    parts: Parts,
    /// HTTP: each response ends with a response-end packet.
    stateless: bool,
    /// The server's `object-format`, sent back with every command when it named one.
    object_format: Option<String>,
    deadline: Duration,
    requests: u64,
}

impl Drop for Session {
    fn drop(&mut self) {
        // A v2 session ends with the end of its input; a server that does not notice is
        // stopped with the child.
        let _ = self.parts.stdin.write_all(b"0000");
        kill_group(&mut self.parts.child);
    }
}

/// The last lines a child wrote on stderr (for error messages), read on a thread.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    if let Some(err) = child.stderr.take() {
        let t = text.clone();
        let _ = std::thread::Builder::new()
            .name("git-sync session stderr".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                    if t.len() > 4096 {
                        let cut = t.len() - 2048;
                        let cut = (cut..t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(0);
                        t.replace_range(..cut, "");
                    }
                    t.push_str(line.trim_end());
                    t.push('\n');
                }
            });
    }
    text
}

fn reader(stdout: impl Read + Send + 'static, first_line: bool) -> Receiver<Msg> {
    let (tx, rx) = channel();
    let _ = std::thread::Builder::new()
        .name("git-sync session".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut r = BufReader::new(stdout);
            if first_line {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) => {
                        let _ = tx.send(Msg::End(None));
                        return;
                    }
                    Ok(_) => {
                        if tx.send(Msg::Line(line.trim_end().to_owned())).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::End(Some(e.to_string())));
                        return;
                    }
                }
            }
            loop {
                match pkt::read(&mut r) {
                    Ok(Some(p)) => {
                        if tx.send(Msg::Packet(p)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Msg::End(None));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::End(Some(e.to_string())));
                        return;
                    }
                }
            }
        });
    rx
}

/// A child process speaking pkt-lines: its input, its output (read on a thread) and what it
/// says on stderr.
#[derive(Debug)]
struct Parts {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Msg>,
    stderr: Arc<Mutex<String>>,
}

impl Parts {
    fn spawn(mut cmd: Command, first_line: bool) -> Result<Self, SessionError> {
        let program = format!("{:?}", cmd.get_program());
        // In a group of its own: stopping the session stops the ssh a shell may have started.
        let mut child = own_group(&mut cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SessionError::Spawn { program, source })?;
        let stderr = collect_stderr(&mut child);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            kill_group(&mut child);
            return Err(SessionError::Protocol("no pipes to the child".into()));
        };
        let rx = reader(stdout, first_line);
        Ok(Self {
            child,
            stdin,
            rx,
            stderr,
        })
    }

    fn closed(&mut self, why: Option<String>) -> SessionError {
        // Give the stderr reader a moment to see the child's last words.
        kill_group(&mut self.child);
        let start = Instant::now();
        let mut said = String::new();
        while start.elapsed() < Duration::from_millis(200) {
            said = self
                .stderr
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if !said.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut text = said.trim().to_owned();
        if let Some(w) = why
            && text.is_empty()
        {
            text = w;
        }
        if text.is_empty() {
            text = "no reason given".to_owned();
        }
        SessionError::Closed(text)
    }

    fn next(&mut self, until: Instant, deadline: Duration) -> Result<Msg, SessionError> {
        let left = until.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(Msg::End(why)) => Err(self.closed(why)),
            Ok(m) => Ok(m),
            Err(RecvTimeoutError::Timeout) => {
                kill_group(&mut self.child);
                Err(SessionError::Timeout(deadline))
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.closed(None)),
        }
    }

    fn packet(&mut self, until: Instant, deadline: Duration) -> Result<Packet, SessionError> {
        match self.next(until, deadline)? {
            Msg::Packet(p) => Ok(p),
            Msg::Line(l) => Err(SessionError::Protocol(format!("unexpected line `{l}`"))),
            Msg::End(_) => Err(SessionError::Protocol("ended".into())),
        }
    }
}

/// One v2 request: the command, the object format when the server named one, the arguments.
fn request(command: &str, object_format: Option<&str>, args: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    pkt::line(&mut out, &format!("command={command}"));
    if let Some(f) = object_format {
        pkt::line(&mut out, &format!("object-format={f}"));
    }
    pkt::delim(&mut out);
    for a in args {
        pkt::line(&mut out, a);
    }
    pkt::flush(&mut out);
    out
}

/// Parses `<oid> <refname>[\0caps]` (an advertisement or `ls-refs` line).
fn ref_line(line: &[u8]) -> Option<(String, ObjectId)> {
    let line = line.split(|b| *b == 0).next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split(' ');
    let oid = ObjectId::from_hex(words.next()?.as_bytes()).ok()?;
    let name = words.next()?.to_owned();
    Some((name, oid))
}

impl Session {
    /// Opens a session over ssh and asks for `refname` at once: `cmd` runs the ssh program
    /// with `git-upload-pack` on the server (and `GIT_PROTOCOL=version=2` passed on). The
    /// request goes out with the connection, before the server's greeting arrives, so the
    /// check costs the session's set-up and one more round trip. git's `upload-pack` reads its
    /// branches once per process, so a session answers for the moment it was opened: it is
    /// used for one check (and the fetch that follows), never kept for the next. Returns the
    /// session (none when the server speaks only the original protocol: its advertisement
    /// answered the check, and it is over) and the branch's commit.
    pub fn open_ssh(
        cmd: Command,
        deadline: Duration,
        refname: &str,
    ) -> Result<(Option<Session>, Option<ObjectId>), SessionError> {
        let mut parts = Parts::spawn(cmd, false)?;
        let until = Instant::now() + deadline;
        let request = request("ls-refs", None, &[format!("ref-prefix {refname}")]);
        if let Err(e) = parts
            .stdin
            .write_all(&request)
            .and_then(|()| parts.stdin.flush())
        {
            return Err(parts.closed(Some(e.to_string())));
        }
        let first = parts.packet(until, deadline)?;
        if first.text() == Some(b"version 2") {
            let mut session = Self::read_capabilities(parts, false, deadline, until)?;
            if session
                .object_format
                .as_deref()
                .is_some_and(|f| f != "sha1")
            {
                return Err(SessionError::Protocol(format!(
                    "the repository uses {:?} object ids; git-sync needs sha1",
                    session.object_format
                )));
            }
            session.requests += 1;
            let head = session.read_ls_ref(refname, until)?;
            return Ok((Some(session), head));
        }
        // The original protocol (the server did not take `GIT_PROTOCOL`): the advertisement
        // is the answer. The request sent ahead means nothing to it: the session just ends.
        let mut refs = Vec::new();
        let mut p = first;
        loop {
            match &p {
                Packet::Flush => break,
                Packet::Data(d) => {
                    if let Some(r) = ref_line(d.strip_suffix(b"\n").unwrap_or(d)) {
                        refs.push(r);
                    }
                }
                _ => {}
            }
            p = parts.packet(until, deadline)?;
        }
        drop(parts.stdin);
        kill_group(&mut parts.child);
        let head = refs.iter().find(|(n, _)| n == refname).map(|(_, id)| *id);
        Ok((None, head))
    }

    /// Opens a session over HTTP(S): `cmd` runs `git remote-https <remote> <url>`. `None`
    /// when the server does not speak protocol v2 (the helper said `fallback`).
    pub fn open_http(cmd: Command, deadline: Duration) -> Result<Option<Session>, SessionError> {
        let mut parts = Parts::spawn(cmd, true)?;
        let until = Instant::now() + deadline;
        parts
            .stdin
            .write_all(b"stateless-connect git-upload-pack\n")
            .and_then(|()| parts.stdin.flush())
            .map_err(|e| parts.closed(Some(e.to_string())))?;
        match parts.next(until, deadline)? {
            Msg::Line(l) if l.is_empty() => {}
            Msg::Line(l) if l == "fallback" => {
                drop(parts.stdin);
                kill_group(&mut parts.child);
                return Ok(None);
            }
            other => {
                return Err(SessionError::Protocol(format!(
                    "the remote helper answered {other:?}"
                )));
            }
        }
        let mut first = parts.packet(until, deadline)?;
        // A server may still name the service first.
        if first.text().is_some_and(|t| t.starts_with(b"# service=")) {
            while parts.packet(until, deadline)? != Packet::Flush {}
            first = parts.packet(until, deadline)?;
        }
        if first.text() != Some(b"version 2") {
            return Err(SessionError::Protocol(format!(
                "expected `version 2`, got {first:?}"
            )));
        }
        Self::read_capabilities(parts, true, deadline, until).map(Some)
    }

    fn read_capabilities(
        mut parts: Parts,
        stateless: bool,
        deadline: Duration,
        until: Instant,
    ) -> Result<Session, SessionError> {
        let mut caps = Vec::new();
        loop {
            match parts.packet(until, deadline)? {
                Packet::Flush => break,
                Packet::Data(d) => caps.push(String::from_utf8_lossy(&d).trim_end().to_owned()),
                other => {
                    return Err(SessionError::Protocol(format!(
                        "{other:?} among the capabilities"
                    )));
                }
            }
        }
        for needed in ["ls-refs", "fetch"] {
            if !caps
                .iter()
                .any(|c| c == needed || c.starts_with(&format!("{needed}=")))
            {
                return Err(SessionError::Protocol(format!(
                    "the server does not offer `{needed}`"
                )));
            }
        }
        let object_format = caps
            .iter()
            .find_map(|c| c.strip_prefix("object-format=").map(str::to_owned));
        Ok(Session {
            parts,
            stateless,
            object_format,
            deadline,
            requests: 0,
        })
    }

    fn packet(&mut self, until: Instant) -> Result<Packet, SessionError> {
        self.parts.packet(until, self.deadline)
    }

    fn send(&mut self, command: &str, args: &[String]) -> Result<(), SessionError> {
        let out = request(command, self.object_format.as_deref(), args);
        let written = self
            .parts
            .stdin
            .write_all(&out)
            .and_then(|()| self.parts.stdin.flush());
        if let Err(e) = written {
            return Err(self.parts.closed(Some(e.to_string())));
        }
        self.requests += 1;
        Ok(())
    }

    /// Reads what follows a response's final flush on HTTP (its response-end packet).
    fn end_response(&mut self, until: Instant) -> Result<(), SessionError> {
        if self.stateless {
            match self.packet(until)? {
                Packet::ResponseEnd => {}
                other => {
                    return Err(SessionError::Protocol(format!(
                        "expected the end of the response, got {other:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The commit `refname` (a full name, `refs/heads/trinity`) points to on the remote.
    pub fn ls_ref(&mut self, refname: &str) -> Result<Option<ObjectId>, SessionError> {
        self.send("ls-refs", &[format!("ref-prefix {refname}")])?;
        let until = Instant::now() + self.deadline;
        self.read_ls_ref(refname, until)
    }

    fn read_ls_ref(
        &mut self,
        refname: &str,
        until: Instant,
    ) -> Result<Option<ObjectId>, SessionError> {
        let mut found = None;
        loop {
            match self.packet(until)? {
                Packet::Flush => break,
                Packet::Data(d) => {
                    if let Some((name, oid)) = ref_line(d.strip_suffix(b"\n").unwrap_or(&d))
                        && name == refname
                    {
                        found = Some(oid);
                    }
                }
                other => {
                    return Err(SessionError::Protocol(format!(
                        "{other:?} in the list of branches"
                    )));
                }
            }
        }
        self.end_response(until)?;
        Ok(found)
    }

    /// Fetches `want` (and what it needs beyond `haves`) in one request, and stores the pack
    /// with `index_pack` (a `git index-pack --stdin --fix-thin` ready to run in the
    /// repository). Returns the bytes received.
    pub fn fetch(
        &mut self,
        want: ObjectId,
        haves: &[ObjectId],
        index_pack: Command,
    ) -> Result<u64, SessionError> {
        let mut args = vec![
            "ofs-delta".to_owned(),
            "no-progress".to_owned(),
            format!("want {want}"),
        ];
        args.extend(haves.iter().map(|h| format!("have {h}")));
        args.push("done".to_owned());
        self.send("fetch", &args)?;
        let until = Instant::now() + self.deadline;
        // Sections before the pack (none are asked for, but a server may send them).
        loop {
            match self.packet(until)? {
                Packet::Data(d) if d.strip_suffix(b"\n").unwrap_or(&d) == b"packfile" => break,
                Packet::Data(_) | Packet::Delim => {}
                Packet::Flush => {
                    // An answer without a pack (the server had nothing to send).
                    self.end_response(until)?;
                    return Err(SessionError::Protocol("the answer carried no pack".into()));
                }
                Packet::ResponseEnd => {
                    return Err(SessionError::Protocol("the answer ended early".into()));
                }
            }
        }
        let mut store = StorePack::start(index_pack)?;
        let mut received = 0u64;
        loop {
            match self.packet(until)? {
                Packet::Flush => break,
                Packet::Data(d) => match d.split_first() {
                    Some((1, data)) => {
                        received += data.len() as u64;
                        store.write(data)?;
                    }
                    Some((2, _)) => {}
                    Some((3, msg)) => {
                        return Err(SessionError::Protocol(format!(
                            "the remote failed: {}",
                            String::from_utf8_lossy(msg).trim()
                        )));
                    }
                    _ => return Err(SessionError::Protocol("a bad side-band packet".into())),
                },
                other => {
                    return Err(SessionError::Protocol(format!("{other:?} in the pack")));
                }
            }
        }
        self.end_response(until)?;
        store.finish(until.max(Instant::now() + Duration::from_secs(5)))?;
        Ok(received)
    }
}

/// `git index-pack --stdin` taking a pack as it arrives.
struct StorePack {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl StorePack {
    fn start(mut cmd: Command) -> Result<Self, SessionError> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| SessionError::Store(format!("cannot run git index-pack: {e}")))?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    fn write(&mut self, data: &[u8]) -> Result<(), SessionError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(SessionError::Store("git index-pack is gone".into()));
        };
        stdin
            .write_all(data)
            .map_err(|e| SessionError::Store(format!("git index-pack stopped reading: {e}")))
    }

    fn finish(mut self, until: Instant) -> Result<(), SessionError> {
        drop(self.stdin.take());
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    let mut err = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    return Err(SessionError::Store(format!(
                        "git index-pack failed ({status}): {}",
                        err.trim()
                    )));
                }
                Ok(None) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(SessionError::Store("git index-pack took too long".into()));
                }
                Err(e) => return Err(SessionError::Store(e.to_string())),
            }
        }
    }
}

impl Drop for StorePack {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_advertised_and_listed_refs() {
        let oid = "0123456789abcdef0123456789abcdef01234567";
        let (name, id) =
            ref_line(format!("{oid} refs/heads/trinity\0side-band-64k ofs-delta").as_bytes())
                .expect("parsed");
        assert_eq!(name, "refs/heads/trinity");
        assert_eq!(id.to_string(), oid);
        assert!(ref_line(b"version 2").is_none());
        assert!(ref_line(b"").is_none());
    }
}
