//! Notifications: one short message per event, POSTed to an ntfy-compatible URL (plain-text
//! body, `Title` header) from a thread of their own, so a slow or dead server never blocks the
//! cycle. Failures are logged, never retried into duplicates.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The `Title` header: "Trinity: handoff PC1 → PC2".
    pub title: String,
    /// The body, one or two lines.
    pub body: String,
}

/// Sends messages in the background.
#[derive(Debug)]
pub struct Notifier {
    tx: Option<mpsc::Sender<Message>>,
}

impl Notifier {
    /// A notifier posting to `url`; empty: messages are dropped.
    pub fn new(url: &str) -> Self {
        let url = url.trim();
        if url.is_empty() {
            return Self { tx: None };
        }
        let target = match Target::parse(url) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(url, error = %e, "notifications are off");
                return Self { tx: None };
            }
        };
        let (tx, rx) = mpsc::channel::<Message>();
        let spawned = std::thread::Builder::new()
            .name("notify".to_owned())
            .spawn(move || {
                for m in rx {
                    match post(&target, &m) {
                        Ok(()) => tracing::debug!(title = %m.title, "notification sent"),
                        Err(e) => {
                            tracing::warn!(title = %m.title, error = %e, "notification failed")
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => Self { tx: Some(tx) },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the notification thread");
                Self { tx: None }
            }
        }
    }

    /// Queues a message (never blocks).
    pub fn send(&self, title: impl Into<String>, body: impl Into<String>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Message {
                title: title.into(),
                body: body.into(),
            });
        }
    }
}

#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("only http:// URLs are supported")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err("the URL has no host".to_owned());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn post(t: &Target, m: &Message) -> Result<(), String> {
    let addr = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", t.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", t.host))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let body = m.body.as_bytes();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nTitle: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        t.path,
        t.host,
        header_safe(&m.title),
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut reply = Vec::new();
    let _ = s.take(4096).read_to_end(&mut reply);
    let status = String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(format!("the server answered {status:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_only_plain_http_is_taken() {
        let t = Target::parse("http://ntfy.lan:8080/trinity").expect("valid");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("ntfy.lan", 8080, "/trinity")
        );
        let t = Target::parse("http://ntfy.lan").expect("valid");
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        assert!(Target::parse("https://ntfy.sh/x").is_err());
        assert!(Target::parse("http://:80/x").is_err());
    }
}
