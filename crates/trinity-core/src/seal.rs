//! Carried content the state repository must not read: the agent's conversation, encrypted to
//! the PC it is handed to ([age](https://age-encryption.org), X25519).
//!
//! Each PC keeps an age identity in `local/trust/age.key` (never synced, readable by its user
//! only) and publishes its recipient in `recipients/{PC}.json`, signed with its signing key, so
//! a sender believes the recipient exactly as far as it believes the PC's key
//! ([`crate::trust`]). The sender encrypts the conversation to the receiver's recipient into
//! `conversations/{handoff-id}.age` and writes the ciphertext's SHA-256 into the signed handoff
//! (`current_work.conversation_sha256`); the receiver places it only when both hold.

use std::io::Write as _;
use std::path::Path;

use age::secrecy::ExposeSecret as _;
use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

use crate::fsio::{self, IoError};
use crate::ids::PcId;
use crate::layout::Tree;
use crate::schema::{Doc, RecipientRecord};
use crate::trust::{Keyring, write_private};

/// What an age file starts with.
pub const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";

/// Why carried content could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The recipient file could not be read or was not believed.
    #[error(transparent)]
    Load(#[from] fsio::LoadError),
    /// The recipient file could not be written.
    #[error(transparent)]
    Save(#[from] fsio::SaveError),
    /// This PC has no identity, or it is unreadable.
    #[error("{}: {why}", path.display())]
    Identity {
        /// The identity file.
        path: std::path::PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The PC published no recipient this PC believes.
    #[error("{0} has published no encryption key signed with a key this PC trusts")]
    NoRecipient(PcId),
    /// Encryption failed.
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    /// Decryption failed: not for this PC, or damaged.
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
}

/// This PC's age identity, made on first use.
pub fn identity(tree: &Tree) -> Result<age::x25519::Identity, SealError> {
    let path = tree.age_identity_file();
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .ok_or("no AGE-SECRET-KEY line")
            .and_then(|l| l.trim().parse::<age::x25519::Identity>())
            .map_err(|why| SealError::Identity {
                path,
                why: why.to_owned(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = age::x25519::Identity::generate();
            let text = format!(
                "# this PC's key for the conversations carried to it (never share it)\n{}\n",
                id.to_string().expose_secret()
            );
            write_private(&path, text.as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(IoError::new("read", &path, e).into()),
    }
}

/// Publishes this PC's recipient in `recipients/{pc}.json` (signed as it is written) unless
/// the file there already holds it.
pub fn publish(tree: &Tree, pc: &PcId, now: DateTime<Utc>) -> Result<(), SealError> {
    let recipient = identity(tree)?.to_public().to_string();
    let path = tree.recipient_file(pc);
    if fsio::load::<RecipientRecord>(&path).is_ok_and(|d| d.value.recipient == recipient) {
        return Ok(());
    }
    let record = RecipientRecord {
        format_version: 1,
        pc: pc.clone(),
        recipient,
        published_at: now,
    };
    fsio::save(&path, &Doc::new(record))?;
    Ok(())
}

/// The recipient `pc` published, if this PC believes its signature.
pub fn recipient_of(
    tree: &Tree,
    keyring: &Keyring,
    pc: &PcId,
) -> Result<age::x25519::Recipient, SealError> {
    let path = tree.recipient_file(pc);
    let (doc, by) = match fsio::load_trusted::<RecipientRecord>(&path, keyring) {
        Ok(found) => found,
        Err(e) if e.is_not_found() => return Err(SealError::NoRecipient(pc.clone())),
        Err(e) => return Err(e.into()),
    };
    if by.is_none() {
        // Unsigned and let through (the mixed period): not good enough for secrets.
        return Err(SealError::NoRecipient(pc.clone()));
    }
    doc.value
        .recipient
        .parse()
        .map_err(|e: &str| SealError::Encrypt(e.to_owned()))
}

/// `plaintext` encrypted to `recipient`.
pub fn encrypt(recipient: &age::x25519::Recipient, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
            .map_err(|e| SealError::Encrypt(e.to_string()))?;
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| SealError::Encrypt(e.to_string()))?;
    writer
        .write_all(plaintext)
        .and_then(|()| writer.finish().map(|_| ()))
        .map_err(|e| SealError::Encrypt(e.to_string()))?;
    Ok(out)
}

/// `ciphertext` decrypted with this PC's identity.
pub fn decrypt(tree: &Tree, ciphertext: &[u8]) -> Result<Vec<u8>, SealError> {
    let id = identity(tree)?;
    age::decrypt(&id, ciphertext).map_err(|e| SealError::Decrypt(e.to_string()))
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `path` holds an age file (its header), for validation.
pub fn looks_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(AGE_HEADER)
}

/// [`decrypt`] of a file, after checking it is the one `sha256` names.
pub fn open_file(
    tree: &Tree,
    path: &Path,
    sha256: &str,
    limit: usize,
) -> Result<Vec<u8>, SealError> {
    let bytes = fsio::read_bounded(path, limit)?;
    let found = sha256_hex(&bytes);
    if found != sha256 {
        return Err(SealError::Decrypt(format!(
            "{} is not the file the handoff names (SHA-256 {found}, expected {sha256})",
            path.display()
        )));
    }
    decrypt(tree, &bytes)
}
