//! The fleet's keys: published public keys and their revocations.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Schema, v1};
use crate::ids::PcId;
use crate::trust::PublicKey;

/// `keys/{PC}.json`: a PC's public key, signed by the member that approved it (by the PC
/// itself for the fleet's founding key, which the other PCs pin at `trinity init`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// Whose key (must match the file name).
    pub pc: PcId,
    /// The ed25519 public key, base64.
    pub public_key: PublicKey,
    /// When it was approved.
    pub approved_at: DateTime<Utc>,
    /// The member whose signature vouches for it.
    pub approved_by: PcId,
}

impl Schema for KeyRecord {
    const NAME: &'static str = "key";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 4 * 1024;
    const SIGNED: bool = true;

    fn author(&self) -> Option<&PcId> {
        Some(&self.approved_by)
    }
}

/// `revoked/{PC}-{fingerprint}-{BY}.json`: a key no PC may believe any more (a lost laptop, a
/// key rotated away), signed by `BY`, the member that revoked it. Kept for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// Whose key.
    pub pc: PcId,
    /// The revoked key (its fingerprint is in the file name).
    pub public_key: PublicKey,
    /// When.
    pub revoked_at: DateTime<Utc>,
    /// The member that revoked it.
    pub revoked_by: PcId,
    /// Why, for people.
    #[serde(default)]
    pub reason: String,
}

impl Schema for Revocation {
    const NAME: &'static str = "revocation";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 4 * 1024;
    const SIGNED: bool = true;

    fn author(&self) -> Option<&PcId> {
        Some(&self.revoked_by)
    }

    fn check(&self) -> Vec<String> {
        if self.reason.len() > 1000 {
            vec!["reason is over 1000 bytes".to_owned()]
        } else {
            Vec::new()
        }
    }
}

/// `recipients/{PC}.json`: the key the conversations carried to a PC are encrypted to (an age
/// X25519 recipient), signed by that PC. Owned by the PC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientRecord {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// Whose key (must match the file name).
    pub pc: PcId,
    /// The age recipient: `age1…`.
    pub recipient: String,
    /// When it was published.
    pub published_at: DateTime<Utc>,
}

impl Schema for RecipientRecord {
    const NAME: &'static str = "recipient";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 4 * 1024;
    const SIGNED: bool = true;

    fn author(&self) -> Option<&PcId> {
        Some(&self.pc)
    }

    fn check(&self) -> Vec<String> {
        match self.recipient.parse::<age::x25519::Recipient>() {
            Ok(_) => Vec::new(),
            Err(e) => vec![format!(
                "recipient {:?} is not an age X25519 recipient: {e}",
                self.recipient
            )],
        }
    }
}
