//! OpenSSH's server on a loopback port, with a host key, a user key and a configuration of
//! its own (never the machine's), for git over ssh as a hosted git server offers it.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian (and most distributions) install the server.
const SSHD: &[&str] = &["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"];

/// A running sshd. Dropping it stops it.
#[derive(Debug)]
pub struct Sshd {
    dir: PathBuf,
    addr: SocketAddr,
    user: String,
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sshd program, if this machine has one.
pub fn program() -> Option<PathBuf> {
    SSHD.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// The name of the user this process runs as (whom the server lets in).
pub fn user() -> io::Result<String> {
    let out = Command::new("id").arg("-un").output()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if name.is_empty() {
        return Err(io::Error::other("`id -un` printed no user name"));
    }
    Ok(name)
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn keygen(path: &Path) -> io::Result<()> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "netbed", "-f"])
        .arg(path))
}

fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Sshd {
    /// Starts sshd in `dir` (keys, configuration, log and the client's configuration are
    /// written there) on a free loopback port, and waits until it accepts connections.
    pub fn start(dir: &Path) -> io::Result<Self> {
        let program = program().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "sshd is not installed (Debian: apt-get install openssh-server)",
            )
        })?;
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let host_key = dir.join("host_key");
        let user_key = dir.join("user_key");
        if !host_key.is_file() {
            keygen(&host_key)?;
        }
        if !user_key.is_file() {
            keygen(&user_key)?;
        }
        std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys"))?;
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub"))?;
        // The client knows the server by an alias, whatever port (or proxy) it goes through.
        std::fs::write(
            dir.join("known_hosts"),
            format!("netbed {}\n", host_pub.trim()),
        )?;
        std::fs::write(
            dir.join("ssh_config"),
            format!(
                "Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n  HostKeyAlias netbed\n  \
                 UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n  \
                 StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n",
                key = user_key.display(),
                known = dir.join("known_hosts").display(),
            ),
        )?;
        // As root, sshd wants its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let user = user()?;
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            std::fs::write(
                dir.join("sshd_config"),
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\n\
                     AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
                     StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     UsePAM no\nPermitRootLogin prohibit-password\nAllowUsers {user}\n\
                     AcceptEnv GIT_PROTOCOL\nMaxStartups 200\nMaxSessions 200\n\
                     PrintMotd no\nLogLevel VERBOSE\n",
                    host = host_key.display(),
                    dir = dir.display(),
                ),
            )?;
            let log = std::fs::File::create(dir.join("sshd.log"))?;
            let mut child = Command::new(&program)
                .args(["-D", "-e", "-f"])
                .arg(dir.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let start = Instant::now();
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = Some(io::Error::other(format!(
                        "sshd exited ({status}): {}",
                        std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
                    )));
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(Self {
                        dir,
                        addr,
                        user,
                        child,
                    });
                }
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = Some(io::Error::other("sshd did not start listening in 10 s"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("sshd did not start")))
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The ssh command a client uses (`GIT_SSH_COMMAND`): the test bed's own client
    /// configuration, nothing from the machine's.
    pub fn ssh_command(&self) -> String {
        format!("ssh -F {}", self.dir.join("ssh_config").display())
    }

    /// An `ssh://` URL of `repo` (an absolute path on this machine) through `port` (the
    /// server's own, or a proxy's).
    pub fn url(&self, port: u16, repo: &Path) -> String {
        format!("ssh://{}@127.0.0.1:{port}{}", self.user, repo.display())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}
