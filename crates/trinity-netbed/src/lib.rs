//! A network test bed: the state repository on a hosted git server as users have it, on
//! this machine's loopback only.
//!
//! * [`sshd::Sshd`] — OpenSSH's server with keys and a configuration of its own;
//! * [`https::GitHttps`] — git's smart HTTP (`git http-backend`) over TLS, with a certificate
//!   authority of its own, basic authentication and keep-alive;
//! * [`proxy::Proxy`] — a fault proxy in front of either: latency per direction, a cut
//!   (refused or black-holed) for as long as asked, connection resets mid-transfer, and a count
//!   of the connections a client opens;
//! * [`NetRemote`] — one bare repository behind one of the servers and a proxy, with the
//!   environment a client needs (`GIT_SSH_COMMAND`, or the CA and a credential helper).
//!
//! The e2e tests use it in-process; `scripts/bench` runs the `netbed` program.
#![cfg(unix)]

pub mod https;
pub mod proxy;
pub mod sshd;

use std::io;
use std::path::Path;

pub use proxy::{Cut, Proxy};

/// How the repository is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `ssh://user@127.0.0.1:PORT/path/state.git`.
    Ssh,
    /// `https://127.0.0.1:PORT/state.git`, with basic authentication.
    Https,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ssh" => Ok(Transport::Ssh),
            "https" => Ok(Transport::Https),
            other => Err(format!("unknown transport `{other}` (ssh, https)")),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Ssh => "ssh",
            Transport::Https => "https",
        })
    }
}

#[derive(Debug)]
enum Server {
    Ssh(sshd::Sshd),
    Https(https::GitHttps),
}

/// A bare repository on this machine served by a git server on loopback, reached through a
/// fault proxy. Dropping it stops both.
#[derive(Debug)]
pub struct NetRemote {
    transport: Transport,
    // The proxy goes first: its connections close before the server stops.
    proxy: Proxy,
    server: Server,
    url: String,
    env: Vec<(String, String)>,
}

/// Whether this machine can run `transport`'s server (sshd installed; HTTPS always).
pub fn available(transport: Transport) -> bool {
    match transport {
        Transport::Ssh => sshd::program().is_some(),
        Transport::Https => true,
    }
}

impl NetRemote {
    /// Serves `repo` (a bare repository) over `transport`, keeping the server's files in `dir`.
    pub fn start(transport: Transport, repo: &Path, dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // Clients run elsewhere: every path handed out is absolute.
        let dir = &dir.canonicalize()?;
        let repo = repo.canonicalize()?;
        match transport {
            Transport::Ssh => {
                let sshd = sshd::Sshd::start(&dir.join("sshd"))?;
                let proxy = Proxy::start(sshd.addr())?;
                let url = sshd.url(proxy.port(), &repo);
                let env = vec![("GIT_SSH_COMMAND".to_owned(), sshd.ssh_command())];
                Ok(Self {
                    transport,
                    proxy,
                    server: Server::Ssh(sshd),
                    url,
                    env,
                })
            }
            Transport::Https => {
                let (root, name) = match (repo.parent(), repo.file_name()) {
                    (Some(r), Some(n)) => (r.to_owned(), n.to_string_lossy().into_owned()),
                    _ => return Err(io::Error::other("the repository has no parent directory")),
                };
                let server = https::GitHttps::start(&root, &dir.join("https"))?;
                let proxy = Proxy::start(server.addr())?;
                let url = server.url(proxy.port(), &name);
                // The credentials come from a credential helper, as a user's would.
                let store = dir.join("https").join("credentials");
                std::fs::write(
                    &store,
                    format!(
                        "https://{}:{}@127.0.0.1:{}\n",
                        https::USER,
                        https::PASSWORD,
                        proxy.port()
                    ),
                )?;
                let env = vec![
                    (
                        "GIT_SSL_CAINFO".to_owned(),
                        server.ca_file().display().to_string(),
                    ),
                    ("GIT_CONFIG_COUNT".to_owned(), "1".to_owned()),
                    (
                        "GIT_CONFIG_KEY_0".to_owned(),
                        "credential.helper".to_owned(),
                    ),
                    (
                        "GIT_CONFIG_VALUE_0".to_owned(),
                        format!("store --file={}", store.display()),
                    ),
                ];
                Ok(Self {
                    transport,
                    proxy,
                    server: Server::Https(server),
                    url,
                    env,
                })
            }
        }
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The URL clients use (through the proxy).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The variables a client's git needs to reach the server (none of the machine's own
    /// configuration is used).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The fault proxy in front of the server.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// The server's log (sshd's), or an empty string.
    pub fn server_log(&self) -> String {
        match &self.server {
            Server::Ssh(s) => s.log(),
            Server::Https(_) => String::new(),
        }
    }

    /// HTTP requests the server answered (0 for ssh).
    pub fn http_requests(&self) -> u64 {
        match &self.server {
            Server::Ssh(_) => 0,
            Server::Https(s) => s.stats().requests,
        }
    }
}
