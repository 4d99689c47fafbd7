//! Notifications: one short message per event, POSTed to the URL people read them at — an
//! ntfy topic, a Slack, Discord, Teams or Matrix webhook, or any endpoint taking JSON — over
//! HTTPS or plain HTTP, from a thread of its own so a slow or dead server never blocks the
//! cycle.
//!
//! Each message is tried up to [`ATTEMPTS`] times (a network failure, a 429 or a 5xx answer is
//! retried after 1 s, then 4 s; any other answer, and a certificate that does not verify, is
//! final), each attempt bounded by [`TIMEOUT`]. The URL's path and query — where webhook secrets and ntfy topics live — never
//! reach a log line: it is logged as `scheme://host/…`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Attempts per message.
pub const ATTEMPTS: u32 = 3;

/// The longest one attempt may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The waits before the second and third attempts.
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(4)];

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// "Trinity: handoff PC1 → PC2".
    pub title: String,
    /// The body, one or two lines.
    pub body: String,
}

/// The shape of the request a server expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ntfy: the body as plain text, the title in a `Title` header.
    Ntfy,
    /// Slack's incoming webhooks, and Teams' and Matrix's (hookshot) that take the same:
    /// `{"text": "*title*\nbody"}`.
    Slack,
    /// Discord's webhooks: `{"content": "**title**\nbody"}`.
    Discord,
    /// Any other endpoint: `{"title", "body", "text", "source": "trinity"}`.
    Json,
}

impl Format {
    /// The format named in the configuration (`auto`: from the URL's host).
    pub fn from_config(name: &str, url: &str) -> Result<Self, String> {
        match name.trim() {
            "" | "auto" => Ok(Self::detect(url)),
            "ntfy" => Ok(Format::Ntfy),
            "slack" | "teams" | "matrix" => Ok(Format::Slack),
            "discord" => Ok(Format::Discord),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unknown notification format `{other}` (auto, ntfy, slack, discord, json)"
            )),
        }
    }

    /// The format of well-known services, by the URL's host; ntfy for any other (what this
    /// setting always meant).
    pub fn detect(url: &str) -> Self {
        let host = host(url).to_ascii_lowercase();
        if host == "hooks.slack.com" || host.ends_with(".webhook.office.com") {
            Format::Slack
        } else if (host == "discord.com" || host == "discordapp.com")
            && url.contains("/api/webhooks/")
        {
            Format::Discord
        } else {
            Format::Ntfy
        }
    }
}

/// The host (and port) of a URL.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

/// The URL as it may be logged: scheme and host, never the path (a webhook's secret, an ntfy
/// topic) or credentials.
pub fn redact(url: &str) -> String {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    format!("{scheme}://{}/…", host(url))
}

/// A request ready to send: its content type and body, and a `Title` header for ntfy.
fn request(format: Format, m: &Message) -> (&'static str, Option<String>, String) {
    let one_line = |s: &str| {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
    };
    match format {
        Format::Ntfy => (
            "text/plain; charset=utf-8",
            Some(one_line(&m.title)),
            m.body.clone(),
        ),
        Format::Slack => (
            "application/json",
            None,
            serde_json::json!({ "text": format!("*{}*\n{}", m.title, m.body) }).to_string(),
        ),
        Format::Discord => {
            let mut content = format!("**{}**\n{}", m.title, m.body);
            // Discord refuses more than 2000 characters.
            if content.chars().count() > 2000 {
                content = content.chars().take(1999).collect::<String>() + "…";
            }
            (
                "application/json",
                None,
                serde_json::json!({ "content": content }).to_string(),
            )
        }
        Format::Json => (
            "application/json",
            None,
            serde_json::json!({
                "title": m.title,
                "body": m.body,
                "text": format!("{}\n{}", m.title, m.body),
                "source": "trinity",
            })
            .to_string(),
        ),
    }
}

/// Where messages go, and how.
#[derive(Debug)]
struct Target {
    url: String,
    format: Format,
    agent: ureq::Agent,
}

/// Why an attempt failed, and whether another is worth it.
#[derive(Debug)]
struct Failure {
    text: String,
    retry: bool,
}

impl Target {
    fn new(url: &str, format: Format, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err("the URL must start with https:// or http://".to_owned());
        }
        if host(url).is_empty() {
            return Err("the URL has no host".to_owned());
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!("{} holds no certificate", path.display()));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .user_agent(concat!("trinity-coordinator/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Self {
            url: url.to_owned(),
            format,
            agent,
        })
    }

    /// One attempt.
    fn post(&self, m: &Message) -> Result<(), Failure> {
        let (content_type, title, body) = request(self.format, m);
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", content_type);
        if let Some(t) = &title {
            req = req.header("Title", t);
        }
        match req.send(body.as_bytes()) {
            Ok(resp) => {
                let status = resp.status().as_u16();
                if (200..300).contains(&status) {
                    Ok(())
                } else {
                    Err(Failure {
                        text: format!("the server answered {status}"),
                        retry: status == 429 || status >= 500,
                    })
                }
            }
            Err(e) => {
                let text = self.scrub(&e.to_string());
                // A certificate that does not verify, or a URL that cannot be sent to, stays so:
                // only the network's troubles are worth another attempt.
                let lasting = matches!(
                    e,
                    ureq::Error::Tls(_)
                        | ureq::Error::Rustls(_)
                        | ureq::Error::Pem(_)
                        | ureq::Error::BadUri(_)
                        | ureq::Error::Http(_)
                        | ureq::Error::RequireHttpsOnly(_)
                        | ureq::Error::TlsRequired
                ) || text.to_ascii_lowercase().contains("certificate");
                Err(Failure {
                    text,
                    retry: !lasting,
                })
            }
        }
    }

    /// An error's text with the URL's secret parts taken out.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.url, &redact(&self.url));
        if let Some((_, rest)) = self.url.split_once("://")
            && let Some(i) = rest.find(['/', '?'])
        {
            let secret = &rest[i..];
            if secret.len() > 1 {
                out = out.replace(secret, "/…");
            }
        }
        out
    }

    /// Every attempt for one message; the last failure if none got through.
    fn deliver(&self, m: &Message, mut wait: impl FnMut(Duration)) -> Result<u32, String> {
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.post(m) {
                Ok(()) => return Ok(attempt),
                Err(f) => {
                    last = f.text;
                    if !f.retry {
                        break;
                    }
                    if let Some(w) = BACKOFF.get(attempt as usize - 1) {
                        wait(*w);
                    }
                }
            }
        }
        Err(last)
    }
}

/// Sends messages in the background.
#[derive(Debug)]
pub struct Notifier {
    tx: Option<mpsc::Sender<Message>>,
    /// Messages queued and not yet delivered or given up.
    pending: Arc<AtomicUsize>,
}

impl Notifier {
    /// A notifier posting to `url` in `format` (`auto`, `ntfy`, `slack`, `discord`, `json`),
    /// trusting only the certificate authorities in `ca_file` when one is given (a server of
    /// one's own), else the usual public ones; an empty URL: messages are dropped.
    pub fn new(url: &str, format: &str, ca_file: Option<&std::path::Path>) -> Self {
        let off = Self {
            tx: None,
            pending: Arc::default(),
        };
        let url = url.trim();
        if url.is_empty() {
            return off;
        }
        let target = Format::from_config(format, url).and_then(|f| Target::new(url, f, ca_file));
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(url = %redact(url), error = %e, "notifications are off");
                return off;
            }
        };
        let (tx, rx) = mpsc::channel::<Message>();
        let pending = off.pending.clone();
        let spawned = std::thread::Builder::new()
            .name("notifications".to_owned())
            .spawn(move || {
                for m in rx {
                    match target.deliver(&m, std::thread::sleep) {
                        Ok(attempts) => {
                            tracing::debug!(title = %m.title, attempts, "notification sent")
                        }
                        Err(e) => tracing::warn!(
                            title = %m.title,
                            url = %redact(&target.url),
                            error = %e,
                            "notification failed after {ATTEMPTS} attempts"
                        ),
                    }
                    pending.fetch_sub(1, Ordering::SeqCst);
                }
            });
        match spawned {
            Ok(_) => Self {
                tx: Some(tx),
                pending: off.pending,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the notification thread");
                off
            }
        }
    }

    /// Queues a message (never blocks).
    pub fn send(&self, title: impl Into<String>, body: impl Into<String>) {
        if let Some(tx) = &self.tx {
            self.pending.fetch_add(1, Ordering::SeqCst);
            if tx
                .send(Message {
                    title: title.into(),
                    body: body.into(),
                })
                .is_err()
            {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Waits until every queued message is delivered or given up, at most `within` (before a
    /// program that sent some exits). False if some were still on their way.
    pub fn flush(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while self.pending.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_follows_the_host_unless_named() {
        let f = |u: &str| Format::from_config("auto", u).expect("format");
        assert_eq!(
            f("https://hooks.slack.com/services/T0/B0/secret"),
            Format::Slack
        );
        assert_eq!(
            f("https://discord.com/api/webhooks/1/secret"),
            Format::Discord
        );
        assert_eq!(
            f("https://acme.webhook.office.com/webhookb2/secret"),
            Format::Slack
        );
        assert_eq!(f("https://ntfy.sh/trinity-secret-topic"), Format::Ntfy);
        assert_eq!(f("http://ntfy.lan:8080/trinity"), Format::Ntfy);
        assert_eq!(
            Format::from_config("json", "https://example.com/hook").expect("json"),
            Format::Json
        );
        assert!(Format::from_config("smoke", "https://x").is_err());
    }

    #[test]
    fn a_logged_url_keeps_no_secret() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/XYZSECRET"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact("https://user:pass@ntfy.example.com:8443/topic?auth=tok"),
            "https://ntfy.example.com:8443/…"
        );
        let t = Target::new(
            "https://hooks.slack.com/services/T0/B0/XYZSECRET",
            Format::Slack,
            None,
        )
        .expect("target");
        let scrubbed = t.scrub(
            "io: connecting to https://hooks.slack.com/services/T0/B0/XYZSECRET failed; /services/T0/B0/XYZSECRET",
        );
        assert!(!scrubbed.contains("XYZSECRET"), "{scrubbed}");
    }

    #[test]
    fn payloads_have_each_service_s_shape() {
        let m = Message {
            title: "Trinity: handoff PC1 → PC2".to_owned(),
            body: "credit exhaustion".to_owned(),
        };
        let (ct, title, body) = request(Format::Ntfy, &m);
        assert_eq!(
            (ct, title.as_deref(), body.as_str()),
            (
                "text/plain; charset=utf-8",
                Some("Trinity: handoff PC1 → PC2"),
                "credit exhaustion"
            )
        );
        let json = |f| serde_json::from_str::<serde_json::Value>(&request(f, &m).2).expect("json");
        assert_eq!(
            json(Format::Slack)["text"],
            "*Trinity: handoff PC1 → PC2*\ncredit exhaustion"
        );
        assert_eq!(
            json(Format::Discord)["content"],
            "**Trinity: handoff PC1 → PC2**\ncredit exhaustion"
        );
        let j = json(Format::Json);
        assert_eq!(j["title"], "Trinity: handoff PC1 → PC2");
        assert_eq!(j["body"], "credit exhaustion");
        assert_eq!(j["source"], "trinity");
        let long = Message {
            title: "t".to_owned(),
            body: "x".repeat(5000),
        };
        let content = serde_json::from_str::<serde_json::Value>(&request(Format::Discord, &long).2)
            .expect("json")["content"]
            .as_str()
            .expect("text")
            .chars()
            .count();
        assert_eq!(content, 2000);
    }

    #[test]
    fn urls_must_be_http_or_https() {
        assert!(Target::new("ftp://x/y", Format::Ntfy, None).is_err());
        assert!(Target::new("https:///topic", Format::Ntfy, None).is_err());
        assert!(Target::new("https://ntfy.sh/t", Format::Ntfy, None).is_ok());
    }
}
