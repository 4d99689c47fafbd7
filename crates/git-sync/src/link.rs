//! How git-sync reaches the remote, cheaply.
//!
//! A remote on this machine is read directly (its branch's id, never its objects). A remote
//! over ssh or HTTP(S) is checked with one protocol-v2 `ls-refs` request, and fetched with one
//! `fetch` request on the same session ([`session`]): over ssh a session per check, opened on
//! OpenSSH's shared connection (`ControlMaster`, a socket under `local/git-sync/ssh/`; not on
//! Windows, whose OpenSSH lacks it), so a check costs no handshake; over HTTP(S) one session
//! (`git remote-https`) kept open on one kept-alive connection. git's own commands (push, and
//! fetches where no session is possible) run with the user's ssh command plus git-sync's
//! options: the shared connection, keep-alives that notice a dead link, a connect timeout,
//! batch mode. The user's ssh configuration, agent and credential helpers are used as git uses
//! them; nothing of theirs is changed. Every network operation has a deadline
//! (`sync.network_timeout`).

pub mod pkt;
pub mod session;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gix::ObjectId;
use trinity_core::gitcmd::{self, Failure, Git, SshCommand, SshVariant, classify_failure};

use session::{Session, SessionError};

/// What the remote URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A repository on this machine (a path, or `file://`).
    Local(PathBuf),
    /// A repository behind an ssh server.
    Ssh {
        /// `user@`, when the URL names one.
        user: Option<String>,
        /// The server.
        host: String,
        /// The port, when not the default.
        port: Option<u16>,
        /// The repository's path as the server takes it.
        path: String,
    },
    /// An `http://` or `https://` URL.
    Http(String),
    /// Anything else git understands (`git://`, a remote helper): checked with `git ls-remote`.
    Other(String),
}

impl Endpoint {
    /// What `url` names; a relative path is taken from `root` (the tree, where git runs).
    pub fn parse(url: &str, root: &Path) -> Self {
        let stripped = url.strip_prefix("file://").unwrap_or(url);
        if gitcmd::is_local_path(url) {
            let p = Path::new(stripped);
            return Endpoint::Local(if p.is_absolute() {
                p.to_owned()
            } else {
                root.join(p)
            });
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return Endpoint::Http(url.to_owned());
        }
        let Ok(parsed) = gix::url::parse(gix::bstr::BStr::new(url)) else {
            return Endpoint::Other(url.to_owned());
        };
        if parsed.scheme != gix::url::Scheme::Ssh {
            return Endpoint::Other(url.to_owned());
        }
        let Some(host) = parsed.host() else {
            return Endpoint::Other(url.to_owned());
        };
        let mut path = parsed.path.to_string();
        // `ssh://host/~user/repo` means `~user/repo` on the server, as git reads it.
        if path.starts_with("/~") {
            path.remove(0);
        }
        Endpoint::Ssh {
            user: parsed.user().map(str::to_owned),
            host: host.to_owned(),
            port: parsed.port,
            path,
        }
    }

    /// A short name for logs and the state file: `local`, `ssh`, `https`, `http`, `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            Endpoint::Local(_) => "local",
            Endpoint::Ssh { .. } => "ssh",
            Endpoint::Http(u) if u.starts_with("https") => "https",
            Endpoint::Http(_) => "http",
            Endpoint::Other(_) => "other",
        }
    }
}

/// The ssh options git-sync adds to the user's OpenSSH command for its own git and sessions.
/// `control`: the shared connection's socket (`None`: no sharing).
pub fn ssh_options(control: Option<&Path>, timeout: Duration) -> Vec<(&'static str, String)> {
    let mut o = vec![
        ("BatchMode", "yes".to_owned()),
        // A connection that cannot be set up in time is a network failure, not a hang.
        ("ConnectTimeout", timeout.as_secs().clamp(1, 30).to_string()),
        // A link that died is noticed within about 15 s, even with nothing to send.
        ("ServerAliveInterval", "5".to_owned()),
        ("ServerAliveCountMax", "3".to_owned()),
    ];
    if let Some(socket) = control {
        o.push(("ControlMaster", "auto".to_owned()));
        o.push(("ControlPath", socket.display().to_string()));
        // Kept a minute after its last user: git-sync's session keeps it in use while it runs.
        o.push(("ControlPersist", "60".to_owned()));
    }
    o
}

/// 16 hex digits naming `text`.
fn tag(text: &[u8]) -> Option<String> {
    Some(
        gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, text)
            .ok()?
            .to_hex_with_len(16)
            .to_string(),
    )
}

/// The shared ssh connection's socket for `server` (`user@host:port`): in `preferred` (under
/// the tree's `local/`) unless that path is too long for a Unix socket, else in a private
/// directory under the system's temporary directory. `None` where OpenSSH cannot share
/// connections (Windows). The name is git-sync's own hash of the server, not OpenSSH's `%C`,
/// so the ssh command needs no `%` and runs without a shell.
pub fn control_socket(preferred: &Path, server: &str) -> Option<PathBuf> {
    if cfg!(windows) {
        return None;
    }
    let name = tag(server.as_bytes())?;
    // A socket path must stay under 104 bytes (macOS; Linux 108).
    let fits = |d: &Path| d.as_os_str().len() + 1 + name.len() < 100;
    let dir = if fits(preferred) {
        preferred.to_owned()
    } else {
        let t = tag(preferred.as_os_str().as_encoded_bytes())?;
        std::env::temp_dir().join(format!("trinity-ssh-{}", &t[..12]))
    };
    if !fits(&dir) {
        return None;
    }
    std::fs::create_dir_all(&dir).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok()?;
    }
    Some(dir.join(name))
}

/// Why the remote could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// Unreachable, or stopped answering.
    Network(String),
    /// Credentials refused.
    Auth(String),
    /// This machine could not store what arrived.
    Local(String),
}

impl LinkError {
    /// A failure known by git's words: refused credentials, or the network.
    pub(crate) fn from_text(text: String) -> Self {
        match classify_failure(&text) {
            Failure::Auth => LinkError::Auth(text),
            _ => LinkError::Network(text),
        }
    }

    fn from_session(e: SessionError) -> Self {
        match e {
            SessionError::Store(s) => LinkError::Local(s),
            SessionError::Spawn { .. } | SessionError::Timeout(_) | SessionError::Protocol(_) => {
                LinkError::Network(e.to_string())
            }
            SessionError::Closed(_) => LinkError::from_text(e.to_string()),
        }
    }

    /// What git printed, for a git failure.
    pub fn from_git(e: &gitcmd::GitError) -> Self {
        if e.timed_out() {
            return LinkError::Network(e.to_string());
        }
        LinkError::from_text(format!("{} {e}", e.stderr()))
    }
}

/// What the link has done, for `git-sync --status` and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Sessions opened (each one a new connection where nothing is shared).
    pub sessions: u64,
    /// Checks of the remote's branch.
    pub checks: u64,
    /// Fetches over the session.
    pub session_fetches: u64,
    /// Fetches by the git program.
    pub git_fetches: u64,
}

/// The way to the remote, kept between cycles.
#[derive(Debug)]
pub struct Link {
    endpoint: Endpoint,
    url: String,
    root: PathBuf,
    git: Git,
    ssh: SshCommand,
    timeout: Duration,
    session: Option<Session>,
    /// ssh sessions share one connection.
    shared: bool,
    /// An HTTP server without protocol v2: `git ls-remote` until then.
    no_session_until: Option<Instant>,
    local_repo: Option<gix::Repository>,
    stats: LinkStats,
}

/// How long an HTTP server that does not speak protocol v2 is checked with `git ls-remote`
/// before a session is tried again.
const RETRY_SESSION_AFTER: Duration = Duration::from_secs(3600);

impl Link {
    /// The link to `url` for the repository at `root` (git runs there), with `timeout` for
    /// every network operation and the shared ssh connection's socket under `control` (`None`:
    /// a connection each).
    pub fn new(url: &str, root: &Path, timeout: Duration, control: Option<&Path>) -> Self {
        let endpoint = Endpoint::parse(url, root);
        let mut ssh = SshCommand::resolve(Some(root));
        if ssh.command == "ssh"
            && let Some(bundled) = gix::path::env::installation_program("ssh")
        {
            // Git for Windows runs its own ssh, not the one on the PATH: so does git-sync.
            ssh.command = gitcmd::shell_quote(&bundled.display().to_string());
        }
        let sharing = match (&endpoint, control) {
            (
                Endpoint::Ssh {
                    user, host, port, ..
                },
                Some(c),
            ) if ssh.variant == SshVariant::OpenSsh => {
                let server = format!(
                    "{}@{host}:{}",
                    user.as_deref().unwrap_or(""),
                    port.unwrap_or(22)
                );
                control_socket(c, &server)
            }
            _ => None,
        };
        let shared = sharing.is_some();
        let ssh = ssh.with_options(&ssh_options(sharing.as_deref(), timeout));
        let git = Git::in_dir(root).with_ssh(ssh.clone()).timeout(timeout);
        Self {
            endpoint,
            url: url.to_owned(),
            root: root.to_owned(),
            git,
            ssh,
            timeout,
            session: None,
            shared,
            no_session_until: None,
            local_repo: None,
            stats: LinkStats::default(),
        }
    }

    /// What the URL names.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The remote's path when it is on this machine.
    pub fn local_path(&self) -> Option<&Path> {
        match &self.endpoint {
            Endpoint::Local(p) => Some(p),
            _ => None,
        }
    }

    /// git, as git-sync runs it for the remote (its ssh options, the deadline).
    pub fn git(&self) -> &Git {
        &self.git
    }

    /// The ssh command git-sync runs (the user's, with git-sync's options).
    pub fn ssh_command(&self) -> &SshCommand {
        &self.ssh
    }

    /// Whether each check of the remote opens a connection of its own (ssh where OpenSSH
    /// cannot share one: on Windows, or with `sync.share_ssh_connection = false`).
    pub fn connection_per_check(&self) -> bool {
        matches!(self.endpoint, Endpoint::Ssh { .. }) && !self.shared
    }

    /// What the link has done so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Whether a session is open now.
    pub fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// Ends the session (at shutdown, or to start afresh).
    pub fn close(&mut self) {
        self.session = None;
        self.local_repo = None;
    }

    /// A cycle is over: an ssh session, good for its own check only, is ended (an HTTP one
    /// stays open for the next).
    pub fn end_cycle(&mut self) {
        if matches!(self.endpoint, Endpoint::Ssh { .. }) {
            self.session = None;
        }
    }

    /// The commit `branch` points to on the remote, read the cheapest way the remote allows.
    /// `deadline` bounds this check (a probe while the link is down uses a short one).
    pub fn head(
        &mut self,
        branch: &str,
        deadline: Option<Duration>,
    ) -> Result<Option<ObjectId>, LinkError> {
        self.stats.checks += 1;
        let refname = format!("refs/heads/{branch}");
        match self.endpoint.clone() {
            Endpoint::Local(path) => self.local_head(&path, &refname),
            Endpoint::Ssh { .. } => {
                // A fresh session for each check (see `session`): the last one answered for
                // its own moment only.
                self.session = None;
                let cmd = self.session_command().map_err(LinkError::Network)?;
                self.stats.sessions += 1;
                let (session, head) =
                    Session::open_ssh(cmd, deadline.unwrap_or(self.timeout), &refname)
                        .map_err(LinkError::from_session)?;
                self.session = session;
                Ok(head)
            }
            Endpoint::Http(_) => {
                if self.no_session_until.is_some_and(|t| Instant::now() < t) {
                    return self.ls_remote(&refname);
                }
                // An idle session the server closed since the last check is no failure: one
                // fresh session, at once.
                if let Some(s) = self.session.as_mut() {
                    match s.ls_ref(&refname) {
                        Ok(id) => return Ok(id),
                        Err(e) => {
                            tracing::debug!(error = %e, "the remote session ended; opening another");
                            self.session = None;
                        }
                    }
                }
                self.open_http(&refname, deadline.unwrap_or(self.timeout))
            }
            Endpoint::Other(_) => self.ls_remote(&refname),
        }
    }

    /// Opens the HTTP(S) session (kept for the next checks) and checks `refname` on it.
    fn open_http(
        &mut self,
        refname: &str,
        deadline: Duration,
    ) -> Result<Option<ObjectId>, LinkError> {
        let helper = if self.url.starts_with("https://") {
            "remote-https"
        } else {
            "remote-http"
        };
        let opened = Session::open_http(self.git.command([helper, "origin", &self.url]), deadline);
        self.stats.sessions += 1;
        match opened.map_err(LinkError::from_session)? {
            Some(mut s) => {
                let id = s.ls_ref(refname).map_err(LinkError::from_session)?;
                tracing::debug!("opened a session with the remote");
                self.session = Some(s);
                Ok(id)
            }
            None => {
                tracing::info!(
                    "the remote's HTTP server does not speak git's protocol v2: checking it with git ls-remote"
                );
                self.no_session_until = Some(Instant::now() + RETRY_SESSION_AFTER);
                self.ls_remote(refname)
            }
        }
    }

    /// The ssh program running `git-upload-pack` on the server, as git would start it.
    fn session_command(&self) -> Result<Command, String> {
        let Endpoint::Ssh {
            user,
            host,
            port,
            path,
        } = &self.endpoint
        else {
            return Err("not an ssh remote".to_owned());
        };
        let mut prep =
            gix::command::prepare(self.ssh.command.as_str()).command_may_be_shell_script();
        let target = match user {
            Some(u) => format!("{u}@{host}"),
            None => host.clone(),
        };
        if host.starts_with('-') || target.starts_with('-') {
            return Err(format!("refusing the ssh host `{host}`"));
        }
        match self.ssh.variant {
            SshVariant::OpenSsh => {
                prep = prep
                    .args(["-o", "SendEnv=GIT_PROTOCOL"])
                    .env("GIT_PROTOCOL", "version=2");
                if let Some(p) = port {
                    prep = prep.arg(format!("-p{p}"));
                }
            }
            SshVariant::Putty | SshVariant::TortoisePlink => {
                if self.ssh.variant == SshVariant::TortoisePlink {
                    prep = prep.arg("-batch");
                }
                if let Some(p) = port {
                    prep = prep.args(["-P".to_owned(), p.to_string()]);
                }
            }
            SshVariant::Simple if port.is_some() => {
                return Err(format!(
                    "the ssh command `{}` cannot be given a port",
                    self.ssh.command
                ));
            }
            SshVariant::Simple => {}
        }
        let quoted = format!("'{}'", path.replace('\'', "'\\''"));
        prep = prep
            .arg(target)
            .arg(format!("git-upload-pack {quoted}"))
            .env("LC_ALL", "C")
            .env("LANG", "C");
        let mut cmd = Command::try_from(prep).map_err(|e| e.to_string())?;
        cmd.current_dir(&self.root);
        Ok(cmd)
    }

    fn ls_remote(&self, refname: &str) -> Result<Option<ObjectId>, LinkError> {
        let out = self
            .git
            .run(["ls-remote", "origin", refname])
            .map_err(|e| LinkError::from_git(&e))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(_, name)| *name == refname)
            .and_then(|(id, _)| ObjectId::from_hex(id.as_bytes()).ok()))
    }

    fn local_head(&mut self, path: &Path, refname: &str) -> Result<Option<ObjectId>, LinkError> {
        if self.local_repo.is_none() {
            match gix::open(path) {
                Ok(r) => self.local_repo = Some(r),
                Err(e) => {
                    return Err(LinkError::Network(format!(
                        "{} is not a git repository: {e}",
                        path.display()
                    )));
                }
            }
        }
        let Some(repo) = &self.local_repo else {
            return Ok(None);
        };
        if !path.exists() {
            self.local_repo = None;
            return Err(LinkError::Network(format!(
                "{} does not exist",
                path.display()
            )));
        }
        match repo.try_find_reference(refname) {
            // The branch names its commit: read the id, never the object. Peeling would open
            // the remote's object database and keep its pack files mapped (every push adds
            // one): memory that grew with the remote, and files a Windows share could not
            // delete.
            Ok(Some(mut r)) => Ok(match r.try_id() {
                Some(id) => Some(id.detach()),
                None => r.peel_to_id().ok().map(|id| id.detach()),
            }),
            Ok(None) => Ok(None),
            Err(e) => {
                self.local_repo = None;
                Err(LinkError::Network(e.to_string()))
            }
        }
    }

    /// Fetches `want` over the session when one is open (one round trip), else with
    /// `git fetch`; `haves` are commits this repository has. Afterwards the objects are in
    /// the repository; the caller moves the remote-tracking branch. Returns whether the
    /// remote-tracking branch was already moved (by `git fetch`).
    pub fn fetch(
        &mut self,
        branch: &str,
        want: Option<ObjectId>,
        haves: &[ObjectId],
    ) -> Result<bool, LinkError> {
        if let (Some(want), Some(session)) = (want, self.session.as_mut()) {
            let index = self.git.command(["index-pack", "--stdin", "--fix-thin"]);
            match session.fetch(want, haves, index) {
                Ok(bytes) => {
                    self.stats.session_fetches += 1;
                    tracing::debug!(bytes, "fetched over the session");
                    return Ok(false);
                }
                Err(e @ SessionError::Store(_)) => {
                    self.session = None;
                    return Err(LinkError::from_session(e));
                }
                Err(e) => {
                    // The session broke: git's own fetch, on a fresh connection, decides.
                    tracing::debug!(error = %e, "fetching over the session failed; using git fetch");
                    self.session = None;
                }
            }
        }
        self.stats.git_fetches += 1;
        self.git
            .run([
                "fetch",
                "--quiet",
                "--no-tags",
                "origin",
                &format!("+refs/heads/{branch}:refs/remotes/origin/{branch}"),
            ])
            .map_err(|e| LinkError::from_git(&e))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn paths_are_local() {
        let root = Path::new("/t/.trinity");
        assert_eq!(
            Endpoint::parse("/srv/state.git", root),
            Endpoint::Local("/srv/state.git".into())
        );
        assert_eq!(
            Endpoint::parse("../state.git", root),
            Endpoint::Local("/t/.trinity/../state.git".into())
        );
        assert_eq!(
            Endpoint::parse("file:///srv/state.git", root),
            Endpoint::Local("/srv/state.git".into())
        );
    }

    #[test]
    fn urls_are_told_apart() {
        let root = Path::new("t");
        assert_eq!(
            Endpoint::parse("ssh://git@example.com:2222/srv/state.git", root),
            Endpoint::Ssh {
                user: Some("git".into()),
                host: "example.com".into(),
                port: Some(2222),
                path: "/srv/state.git".into()
            }
        );
        assert_eq!(
            Endpoint::parse("git@github.com:team/state.git", root),
            Endpoint::Ssh {
                user: Some("git".into()),
                host: "github.com".into(),
                port: None,
                path: "team/state.git".into()
            }
        );
        assert_eq!(
            Endpoint::parse("ssh://host/~me/state.git", root),
            Endpoint::Ssh {
                user: None,
                host: "host".into(),
                port: None,
                path: "~me/state.git".into()
            }
        );
        assert_eq!(
            Endpoint::parse("https://example.com/state.git", root).kind(),
            "https"
        );
        assert_eq!(
            Endpoint::parse("git://example.com/state.git", root).kind(),
            "other"
        );
    }

    #[test]
    fn ssh_options_share_one_connection_except_where_openssh_cannot() {
        let socket = Path::new("t").join("ssh").join("0123");
        let o = ssh_options(Some(&socket), Duration::from_secs(20));
        let get = |k: &str| o.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("ControlMaster").as_deref(), Some("auto"));
        assert_eq!(get("ControlPath"), Some(socket.display().to_string()));
        assert_eq!(get("BatchMode").as_deref(), Some("yes"));
        assert_eq!(get("ConnectTimeout").as_deref(), Some("20"));
        let plain = ssh_options(None, Duration::from_secs(90));
        assert!(plain.iter().all(|(n, _)| !n.starts_with("Control")));
        assert!(plain.contains(&("ConnectTimeout", "30".to_owned())));
    }

    #[cfg(windows)]
    #[test]
    fn windows_openssh_never_shares_a_connection() {
        let dir = std::env::temp_dir().join("trinity-link-test");
        assert_eq!(control_socket(&dir, "git@host:22"), None);
        let link = Link::new(
            "ssh://git@host/state.git",
            &dir,
            Duration::from_secs(20),
            Some(&dir),
        );
        assert!(
            !link.ssh_command().command.contains("ControlMaster"),
            "{}",
            link.ssh_command().command
        );
        assert!(link.ssh_command().command.contains("BatchMode=yes"));
        assert!(link.connection_per_check());
    }

    #[cfg(unix)]
    #[test]
    fn a_long_tree_path_puts_the_socket_in_a_private_temporary_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let short = dir.path().join("ssh");
        let a = control_socket(&short, "git@host:22").expect("a socket");
        assert_eq!(a.parent(), Some(short.as_path()));
        let b = control_socket(&short, "git@other:22").expect("a socket");
        assert_ne!(a, b, "one socket per server");
        assert!(!a.display().to_string().contains('%'));
        let long = dir.path().join("x".repeat(120)).join("ssh");
        let chosen = control_socket(&long, "git@host:22").expect("a shorter place");
        assert!(
            chosen.starts_with(std::env::temp_dir()),
            "{}",
            chosen.display()
        );
        assert!(chosen.as_os_str().len() < 100);
        use std::os::unix::fs::PermissionsExt;
        let parent = chosen.parent().expect("dir");
        let mode = std::fs::metadata(parent)
            .expect("made")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let _ = std::fs::remove_dir(parent);
    }
}
