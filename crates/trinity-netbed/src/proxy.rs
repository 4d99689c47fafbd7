//! A TCP proxy on loopback that makes a link look like a WAN and fail like one, on demand:
//! latency per direction, a cut (the server refusing connections, or a black hole where
//! packets go nowhere until the link returns), and connection resets mid-transfer.
//!
//! It counts what a client costs the server: connections opened, bytes each way.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// How a cut link behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The server is gone: new connections are refused at once, open ones are reset.
    Refuse,
    /// Packets go nowhere: new connections get no answer and open ones stall, until the link
    /// returns — then everything held goes through, as TCP's retransmissions would make it.
    Blackhole,
}

impl std::str::FromStr for Cut {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "refuse" => Ok(Cut::Refuse),
            "blackhole" => Ok(Cut::Blackhole),
            other => Err(format!("unknown cut `{other}` (refuse, blackhole)")),
        }
    }
}

/// The link's settings, changed at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Link {
    /// Added to every byte going client → server.
    up: Duration,
    /// Added to every byte going server → client.
    down: Duration,
    cut: Option<Cut>,
    /// Bumped to reset every open connection.
    reset_all: u64,
    /// One-shot: the connection that next carries this many bytes toward the server (counted
    /// from when it was armed) is reset.
    reset_after_upload: Option<u64>,
    /// Bumped when `reset_after_upload` is armed.
    armed: u64,
}

/// What the proxy has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connections accepted from clients (each one a new TCP connection, a handshake).
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// Bytes forwarded client → server.
    pub bytes_up: u64,
    /// Bytes forwarded server → client.
    pub bytes_down: u64,
    /// Connections reset by the proxy.
    pub resets: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    open: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    resets: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    addr: SocketAddr,
    link: watch::Sender<Link>,
    counters: Counters,
    /// Who takes the one-shot upload reset: the first connection to claim the armed generation.
    claimed: Mutex<u64>,
}

/// A running proxy: `addr` forwards to `upstream`. Dropping it stops it and closes every
/// connection.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Proxy {
    /// Starts a proxy on a free loopback port, forwarding to `upstream`, on a runtime of its
    /// own (one thread).
    pub fn start(upstream: SocketAddr) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("netbed-proxy")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind(("127.0.0.1", 0)))?;
        let addr = listener.local_addr()?;
        let (link, _) = watch::channel(Link::default());
        let shared = Arc::new(Shared {
            upstream,
            addr,
            link,
            counters: Counters::default(),
            claimed: Mutex::new(0),
        });
        runtime.spawn(listen(shared.clone(), Some(listener)));
        Ok(Self {
            shared,
            runtime: Some(runtime),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// Adds `up` to the way toward the server and `down` to the way back (a round trip costs
    /// both). Applies to bytes read from now on.
    pub fn set_latency(&self, up: Duration, down: Duration) {
        self.shared.link.send_modify(|l| {
            l.up = up;
            l.down = down;
        });
    }

    /// Cuts the link until [`Proxy::heal`].
    pub fn cut(&self, how: Cut) {
        self.shared.link.send_modify(|l| l.cut = Some(how));
    }

    /// The link is back.
    pub fn heal(&self) {
        self.shared.link.send_modify(|l| l.cut = None);
    }

    /// Whether the link is cut, and how.
    pub fn is_cut(&self) -> Option<Cut> {
        self.shared.link.borrow().cut
    }

    /// Resets every open connection now (both ends see a TCP reset).
    pub fn reset_all(&self) {
        self.shared.link.send_modify(|l| l.reset_all += 1);
    }

    /// Resets the first connection that carries `bytes` more toward the server from now on
    /// (a push, say), mid-transfer. Once.
    pub fn reset_after_upload(&self, bytes: u64) {
        self.shared.link.send_modify(|l| {
            l.reset_after_upload = Some(bytes);
            l.armed += 1;
        });
    }

    /// What the proxy has seen so far.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            connections: c.connections.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
            resets: c.resets.load(Ordering::Relaxed),
        }
    }
}

/// Accepts connections; while the link is cut with [`Cut::Refuse`] the port is closed, so
/// connecting fails at once, and it is opened again on the same port when the link returns.
async fn listen(shared: Arc<Shared>, mut listener: Option<TcpListener>) {
    let mut link = shared.link.subscribe();
    loop {
        let refusing = link.borrow_and_update().cut == Some(Cut::Refuse);
        match (&listener, refusing) {
            (Some(_), true) => listener = None,
            (None, false) => match TcpListener::bind(shared.addr).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    eprintln!("netbed proxy: cannot listen on {} again: {e}", shared.addr);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ => {}
        }
        let Some(l) = &listener else {
            if link.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((client, _)) = accepted {
                    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve(shared.clone(), client));
                }
            }
            changed = link.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Waits while the link is black-holed. False when the proxy is gone or the link is cut by
/// refusal (the connection must go).
async fn passable(link: &mut watch::Receiver<Link>) -> bool {
    loop {
        match link.borrow_and_update().cut {
            None => return true,
            Some(Cut::Refuse) => return false,
            Some(Cut::Blackhole) => {}
        }
        if link.changed().await.is_err() {
            return false;
        }
    }
}

/// Takes the one-shot upload reset armed as `armed`, if no connection took it yet.
fn claim(shared: &Shared, armed: u64) -> bool {
    let mut claimed = shared.claimed.lock().unwrap_or_else(|p| p.into_inner());
    if *claimed < armed {
        *claimed = armed;
        true
    } else {
        false
    }
}

async fn serve(shared: Arc<Shared>, mut client: TcpStream) {
    shared.counters.open.fetch_add(1, Ordering::Relaxed);
    let mut link = shared.link.subscribe();
    let start = *link.borrow_and_update();
    let reset = async {
        // A black hole holds the connection unanswered until the link returns.
        if !passable(&mut link.clone()).await {
            return true;
        }
        let Ok(mut server) = TcpStream::connect(shared.upstream).await else {
            return true;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let reset = relay(&shared, &mut client, &mut server, &mut link, start).await;
        if reset {
            abort(&server);
        }
        reset
    }
    .await;
    if reset {
        shared.counters.resets.fetch_add(1, Ordering::Relaxed);
        abort(&client);
    }
    shared.counters.open.fetch_sub(1, Ordering::Relaxed);
}

/// Closes with a TCP reset rather than a goodbye.
fn abort(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Bytes read from one side, to be written to the other once their time has come.
type Queue = Arc<Mutex<VecDeque<(Instant, Vec<u8>)>>>;

/// Forwards both ways until both sides are done (false) or the connection must be reset
/// (true).
async fn relay(
    shared: &Shared,
    client: &mut TcpStream,
    server: &mut TcpStream,
    link: &mut watch::Receiver<Link>,
    start: Link,
) -> bool {
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let (reset_tx, mut reset_rx) = watch::channel(false);
    let up = pump(
        &mut cr,
        &mut sw,
        link.clone(),
        Direction::Up,
        shared,
        Some(&reset_tx),
    );
    let down = pump(
        &mut sr,
        &mut cw,
        link.clone(),
        Direction::Down,
        shared,
        None,
    );
    let watch_reset = async {
        loop {
            {
                let l = *link.borrow_and_update();
                if l.cut == Some(Cut::Refuse) || l.reset_all != start.reset_all {
                    return;
                }
            }
            tokio::select! {
                changed = link.changed() => if changed.is_err() { return },
                _ = reset_rx.changed() => return,
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => false,
        _ = watch_reset => true,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// Copies `from` to `to`, each chunk held for the direction's latency, nothing written while
/// the link is black-holed; shuts `to`'s writing down when `from` ends.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    link: watch::Receiver<Link>,
    direction: Direction,
    shared: &Shared,
    reset: Option<&watch::Sender<bool>>,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let queue: Queue = Arc::default();
    let (wake, mut woken) = watch::channel(false);
    let reader = {
        let queue = queue.clone();
        let link = link.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let delay = match direction {
                    Direction::Up => link.borrow().up,
                    Direction::Down => link.borrow().down,
                };
                queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back((Instant::now() + delay, buf[..n].to_vec()));
                let _ = wake.send(false);
            }
            let _ = wake.send(true);
        }
    };
    let counters = &shared.counters;
    let writer = async move {
        let mut link = link;
        // Bytes written toward the server, and how many of them before the one-shot reset
        // was last armed.
        let mut uploaded = 0u64;
        let mut armed = link.borrow().armed;
        let mut baseline = 0u64;
        loop {
            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            match next {
                Some((at, bytes)) => {
                    tokio::time::sleep_until(at).await;
                    if !passable(&mut link).await {
                        return;
                    }
                    let mut bytes = &bytes[..];
                    let mut cut_here = false;
                    if reset.is_some() {
                        let l = *link.borrow();
                        if l.armed != armed {
                            armed = l.armed;
                            baseline = uploaded;
                        }
                        if let Some(limit) = l.reset_after_upload {
                            let room = (baseline + limit).saturating_sub(uploaded);
                            if (bytes.len() as u64) >= room && claim(shared, armed) {
                                // Part of this chunk goes, then the connection is reset.
                                bytes = &bytes[..room as usize];
                                cut_here = true;
                            }
                        }
                    }
                    // Counted as handed on, before the peer can have read them.
                    let n = bytes.len() as u64;
                    match direction {
                        Direction::Up => {
                            uploaded += n;
                            counters.bytes_up.fetch_add(n, Ordering::Relaxed);
                        }
                        Direction::Down => {
                            counters.bytes_down.fetch_add(n, Ordering::Relaxed);
                        }
                    }
                    if to.write_all(bytes).await.is_err() {
                        return;
                    }
                    if cut_here {
                        if let Some(reset) = reset {
                            let _ = reset.send(true);
                        }
                        return;
                    }
                }
                None if *woken.borrow_and_update() => {
                    let _ = to.shutdown().await;
                    return;
                }
                None => {
                    if woken.changed().await.is_err() {
                        // The reader is gone: write what it left, then end.
                        if queue.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                            let _ = to.shutdown().await;
                            return;
                        }
                    }
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Instant as StdInstant;

    /// An echo server on loopback, on a thread per connection.
    fn echo() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(s: &mut StdStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
        let start = StdInstant::now();
        while !ok() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn forwards_and_counts() {
        let proxy = Proxy::start(echo()).expect("proxy");
        let mut s = StdStream::connect(proxy.addr()).expect("connect");
        assert_eq!(round_trip(&mut s, b"hello").expect("echo"), b"hello");
        let stats = proxy.stats();
        assert_eq!(stats.connections, 1);
        assert_eq!((stats.bytes_up, stats.bytes_down), (5, 5));
    }

    #[test]
    fn latency_is_added_each_way() {
        let proxy = Proxy::start(echo()).expect("proxy");
        proxy.set_latency(Duration::from_millis(40), Duration::from_millis(60));
        let mut s = StdStream::connect(proxy.addr()).expect("connect");
        let t = StdInstant::now();
        round_trip(&mut s, b"x").expect("echo");
        let rtt = t.elapsed();
        assert!(rtt >= Duration::from_millis(100), "{rtt:?}");
        assert!(rtt < Duration::from_secs(2), "{rtt:?}");
    }

    #[test]
    fn a_refusing_cut_refuses_and_resets_then_heals_on_the_same_port() {
        let proxy = Proxy::start(echo()).expect("proxy");
        let mut open = StdStream::connect(proxy.addr()).expect("connect");
        round_trip(&mut open, b"a").expect("echo");
        proxy.cut(Cut::Refuse);
        wait_until("refused", || StdStream::connect(proxy.addr()).is_err());
        // The open connection was reset: its next exchange fails.
        open.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert!(round_trip(&mut open, b"b").is_err());
        proxy.heal();
        wait_until("listening again", || {
            StdStream::connect(proxy.addr()).is_ok()
        });
        let mut s = StdStream::connect(proxy.addr()).expect("connect");
        assert_eq!(round_trip(&mut s, b"c").expect("echo"), b"c");
    }

    #[test]
    fn a_black_hole_holds_everything_until_the_link_returns() {
        let proxy = Proxy::start(echo()).expect("proxy");
        let mut open = StdStream::connect(proxy.addr()).expect("connect");
        round_trip(&mut open, b"a").expect("echo");
        proxy.cut(Cut::Blackhole);
        open.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        open.write_all(b"held").expect("write");
        let mut buf = [0u8; 4];
        let err = open.read_exact(&mut buf).expect_err("nothing comes back");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        // A new connection is accepted but goes nowhere either.
        let mut new = StdStream::connect(proxy.addr()).expect("accepted");
        new.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        new.write_all(b"late").expect("write");
        proxy.heal();
        open.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        open.read_exact(&mut buf).expect("delivered after the cut");
        assert_eq!(&buf, b"held");
        new.read_exact(&mut buf).expect("delivered after the cut");
        assert_eq!(&buf, b"late");
    }

    #[test]
    fn resets_one_connection_mid_upload_and_every_one_on_demand() {
        let proxy = Proxy::start(echo()).expect("proxy");
        let mut a = StdStream::connect(proxy.addr()).expect("connect");
        let mut b = StdStream::connect(proxy.addr()).expect("connect");
        round_trip(&mut a, b"1").expect("echo");
        round_trip(&mut b, b"1").expect("echo");
        proxy.reset_after_upload(1000);
        // Small exchanges pass; the one that carries 1000 bytes is cut mid-way, once.
        round_trip(&mut a, b"small").expect("echo");
        a.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let big = vec![7u8; 4000];
        assert!(round_trip(&mut a, &big).is_err(), "a was reset");
        assert_eq!(round_trip(&mut b, &big).expect("b goes on"), big);
        assert_eq!(proxy.stats().resets, 1);
        proxy.reset_all();
        b.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        wait_until("b reset", || proxy.stats().resets == 2);
        assert!(round_trip(&mut b, b"x").is_err());
    }
}
