//! git's smart HTTP over TLS, as a hosted git server offers it: `git http-backend` behind a
//! small HTTP/1.1 server on a loopback port, with a certificate from a certificate authority
//! of its own (written to `ca.pem` for the client to trust), basic authentication, and
//! keep-alive, so that a client that reuses its connection can be told from one that does not.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// The user name the server accepts.
pub const USER: &str = "trinity";
/// Its password.
pub const PASSWORD: &str = "netbed-secret";

/// The largest request body the server takes (the state repository's pushes are small).
const MAX_BODY: usize = 64 << 20;

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    unauthorized: AtomicU64,
}

/// What the server has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// TLS connections accepted.
    pub connections: u64,
    /// HTTP requests answered (401s included).
    pub requests: u64,
    /// Requests refused for missing or wrong credentials.
    pub unauthorized: u64,
}

/// A running server. Dropping it stops it.
#[derive(Debug)]
pub struct GitHttps {
    addr: SocketAddr,
    ca: PathBuf,
    counters: Arc<Counters>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for GitHttps {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A certificate authority and a server certificate for `127.0.0.1` and `localhost`,
/// signed by it: (CA PEM, server certificate DER, server key DER).
fn certificates() -> io::Result<(String, Vec<u8>, Vec<u8>)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "trinity netbed CA");
    let ca_key = KeyPair::generate().map_err(other)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(other)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .map_err(other)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "trinity netbed");
    let key = KeyPair::generate().map_err(other)?;
    let cert = params.signed_by(&key, &issuer).map_err(other)?;
    Ok((ca_cert.pem(), cert.der().to_vec(), key.serialize_der()))
}

/// A TLS server's parts: its runtime, listener and acceptor, and where the authority's
/// certificate was written.
struct Tls {
    runtime: tokio::runtime::Runtime,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ca: PathBuf,
}

impl Tls {
    /// A fresh authority and server certificate (its PEM in `{dir}/ca.pem`), a runtime of one
    /// thread, a listener on a free loopback port.
    fn start(dir: &Path, name: &str) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (ca_pem, cert, key) = certificates()?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_pem)?;
        // ring's provider is deprecated only for lacking post-quantum key exchange, which a
        // loopback test server does not need (and ring builds everywhere, mingw included).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(other)?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .map_err(other)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind(("127.0.0.1", 0)))?;
        Ok(Self {
            runtime,
            listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            ca,
        })
    }
}

impl GitHttps {
    /// Serves the repositories under `project_root` on a free loopback port; writes the
    /// authority's certificate to `{dir}/ca.pem`.
    pub fn start(project_root: &Path, dir: &Path) -> io::Result<Self> {
        let Tls {
            runtime,
            listener,
            acceptor,
            ca,
        } = Tls::start(dir, "netbed-https")?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let root = project_root.canonicalize()?;
        let c = counters.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                c.connections.fetch_add(1, Ordering::Relaxed);
                let acceptor = acceptor.clone();
                let root = root.clone();
                let c = c.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, &root, &c).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            ca,
            counters,
            runtime: Some(runtime),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate authority's certificate, for the client to trust (`GIT_SSL_CAINFO`).
    pub fn ca_file(&self) -> &Path {
        &self.ca
    }

    /// The `https://` URL of the repository `name` (under the served root) through `port`.
    pub fn url(&self, port: u16, name: &str) -> String {
        format!("https://127.0.0.1:{port}/{name}")
    }

    /// What the server has seen so far.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.counters.connections.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            unauthorized: self.counters.unauthorized.load(Ordering::Relaxed),
        }
    }
}

/// One parsed request.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> io::Result<Option<String>> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
}

/// Reads one request; `None` at the end of the connection.
async fn read_request<R: AsyncBufReadExt + Unpin>(r: &mut R) -> io::Result<Option<Request>> {
    let Some(line) = read_line(r).await? else {
        return Ok(None);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(other(format!("bad request line `{line}`")));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    while let Some(h) = read_line(r).await? {
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut req = Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size = read_line(r).await?.unwrap_or_default();
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| other(format!("bad chunk size `{size}`")))?;
            if size == 0 {
                while read_line(r).await?.is_some_and(|l| !l.is_empty()) {}
                break;
            }
            if req.body.len() + size > MAX_BODY {
                return Err(other("request body too large"));
            }
            let at = req.body.len();
            req.body.resize(at + size, 0);
            r.read_exact(&mut req.body[at..]).await?;
            read_line(r).await?;
        }
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len.parse().map_err(other)?;
        if len > MAX_BODY {
            return Err(other("request body too large"));
        }
        req.body.resize(len, 0);
        r.read_exact(&mut req.body).await?;
    }
    Ok(Some(req))
}

fn authorized(req: &Request) -> bool {
    let want = base64(format!("{USER}:{PASSWORD}").as_bytes());
    req.header("authorization")
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|v| v.trim() == want)
}

/// Standard base64 with padding (for the expected `Authorization` header).
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn respond<W: AsyncWrite + Unpin>(
    w: &mut W,
    status: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

/// Runs `git http-backend` for one request: (status, headers, body).
async fn cgi(req: &Request, root: &Path) -> io::Result<(String, Vec<(String, String)>, Vec<u8>)> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", &req.path)
        .env("QUERY_STRING", &req.query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_USER", USER)
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (header, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(v) = req.header(header) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| other("no stdin"))?;
    let body = req.body.clone();
    let feed = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = child.wait_with_output().await?;
    let _ = feed.await;
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .ok_or_else(|| other("git http-backend wrote no headers"))?;
    let head = String::from_utf8_lossy(&out.stdout[..split.0]).into_owned();
    let body = out.stdout[split.0 + split.1..].to_vec();
    let mut status = "200 OK".to_owned();
    let mut headers = Vec::new();
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("status") {
            status = v.to_owned();
        } else {
            headers.push((k.to_owned(), v.to_owned()));
        }
    }
    Ok((status, headers, body))
}

/// Answers requests on one connection until the client closes it (or asks to).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    root: &Path,
    counters: &Counters,
) -> io::Result<()> {
    let mut stream = BufReader::new(stream);
    while let Some(req) = read_request(&mut stream).await? {
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if !authorized(&req) {
            counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            respond(
                stream.get_mut(),
                "401 Unauthorized",
                &[(
                    "WWW-Authenticate".to_owned(),
                    "Basic realm=\"netbed\"".to_owned(),
                )],
                b"",
            )
            .await?;
        } else {
            match cgi(&req, root).await {
                Ok((status, headers, body)) => {
                    respond(stream.get_mut(), &status, &headers, &body).await?
                }
                Err(e) => {
                    respond(
                        stream.get_mut(),
                        "500 Internal Server Error",
                        &[],
                        e.to_string().as_bytes(),
                    )
                    .await?
                }
            }
        }
        if close {
            break;
        }
    }
    Ok(())
}

/// One request a [`Capture`] server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// `POST`, `GET`…
    pub method: String,
    /// The path, query included.
    pub target: String,
    /// The headers as sent.
    pub headers: Vec<(String, String)>,
    /// The request's body, as received.
    pub body: Vec<u8>,
}

impl Captured {
    /// A header's value (the name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct CaptureState {
    requests: Vec<Captured>,
    replies: std::collections::VecDeque<u16>,
}

/// An HTTPS server that records every request and answers 200 — or, first, the statuses it was
/// told to ([`Capture::reply_next`]): a webhook receiver for tests, with a certificate authority
/// of its own. Dropping it stops it.
#[derive(Debug)]
pub struct Capture {
    addr: SocketAddr,
    ca: PathBuf,
    state: Arc<std::sync::Mutex<CaptureState>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Capture {
    /// Starts on a free loopback port; the authority's certificate goes to `{dir}/ca.pem`.
    pub fn start(dir: &Path) -> io::Result<Self> {
        let Tls {
            runtime,
            listener,
            acceptor,
            ca,
        } = Tls::start(dir, "netbed-capture")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(std::sync::Mutex::new(CaptureState::default()));
        let st = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut stream = BufReader::new(tls);
                    while let Ok(Some(req)) = read_request(&mut stream).await {
                        let status = {
                            let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                            let target = if req.query.is_empty() {
                                req.path.clone()
                            } else {
                                format!("{}?{}", req.path, req.query)
                            };
                            s.requests.push(Captured {
                                method: req.method.clone(),
                                target,
                                headers: req.headers.clone(),
                                body: req.body.clone(),
                            });
                            s.replies.pop_front().unwrap_or(200)
                        };
                        let text =
                            format!("{status} {}", if status < 400 { "OK" } else { "Error" });
                        if respond(stream.get_mut(), &text, &[], b"").await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            ca,
            state,
            runtime: Some(runtime),
        })
    }

    /// The URL of `path` (`/hooks/secret`) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// The certificate authority's certificate, for the client to trust.
    pub fn ca_file(&self) -> &Path {
        &self.ca
    }

    /// The next requests are answered with these statuses, in order; then 200 again.
    pub fn reply_next(&self, statuses: &[u16]) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replies
            .extend(statuses);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Captured> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .requests
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"trinity:x"), "dHJpbml0eTp4");
    }
}
