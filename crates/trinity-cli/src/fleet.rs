//! `trinity fleet`: the fleet's keys — who may start and steer work (docs/security.md).
//!
//! Each PC signs what it writes with its own key (`local/trust/signing.key`, made by
//! `trinity init`). A key is believed once a member already trusted approves it: `trinity fleet
//! approve PC4 --key …` publishes it in `keys/PC4.json`, signed. `revoke` makes every PC refuse
//! a key from then on; `rotate` gives this PC a new key, vouched for by its old one.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Subcommand};
use serde::Serialize;
use trinity_core::config::Config;
use trinity_core::fsio::{self, SaveError};
use trinity_core::schema::{Doc, KeyRecord, Revocation, Schema};
use trinity_core::trust::{
    self, KeyStanding, Keyring, Pin, PinSource, Pins, PublicKey, SigningKey,
};
use trinity_core::{PcId, Tree};

#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    #[command(subcommand)]
    command: FleetCommand,
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// List the fleet's keys and which this PC believes; print this PC's public key.
    Keys(KeysArgs),
    /// Approve a PC's key (a newcomer's, or a PC's new machine): sign and publish it.
    Approve(ApproveArgs),
    /// Revoke a PC's key (a lost laptop): every PC refuses its signatures from then on.
    Revoke(RevokeArgs),
    /// Give this PC a new signing key, vouched for by its old one, and retire the old one.
    Rotate,
}

#[derive(Debug, Args)]
struct KeysArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ApproveArgs {
    /// The PC whose key to approve
    pc: PcId,
    /// Its public key, as its `trinity init` or `trinity fleet keys` printed it (compare it
    /// over a channel you trust: whoever gives you this key may start work on every PC)
    #[arg(long, value_name = "KEY")]
    key: String,
    /// Replace a key the PC already has that this PC believes (a new machine for that PC)
    #[arg(long)]
    replace: bool,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// The PC whose keys to revoke
    pc: PcId,
    /// Only this key [default: every key of that PC this PC believes]
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    /// Why, for the record
    #[arg(long, default_value = "revoked by an operator")]
    reason: String,
}

pub(crate) fn run(args: FleetArgs, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (config, tree) = crate::load_tree(config_path)?;
    let pc = config.require_pc()?.clone();
    match args.command {
        FleetCommand::Keys(a) => keys(&config, &tree, &pc, a.json),
        FleetCommand::Approve(a) => approve(&config, &tree, &pc, a),
        FleetCommand::Revoke(a) => revoke(&config, &tree, &pc, a),
        FleetCommand::Rotate => rotate(&config, &tree, &pc),
    }
}

/// This PC's key, which must exist and be this PC's.
fn own_key(tree: &Tree, pc: &PcId) -> anyhow::Result<SigningKey> {
    let key = SigningKey::load(tree)?.with_context(|| {
        format!(
            "this PC has no signing key ({}); run `trinity init` again to make one",
            tree.signing_key_file().display()
        )
    })?;
    if key.pc() != pc {
        bail!(
            "the signing key in {} is {}'s, not {pc}'s",
            tree.signing_key_file().display(),
            key.pc()
        );
    }
    Ok(key)
}

#[derive(Serialize)]
struct KeyLine {
    pc: PcId,
    key: String,
    fingerprint: String,
    trusted: bool,
    standing: String,
}

fn keys(config: &Config, tree: &Tree, pc: &PcId, json: bool) -> anyhow::Result<ExitCode> {
    let keyring = crate::keyring(config, tree)?;
    let lines: Vec<KeyLine> = keyring
        .keys()
        .iter()
        .map(|v| KeyLine {
            pc: v.pc.clone(),
            key: v.key.to_string(),
            fingerprint: v.key.fingerprint(),
            trusted: matches!(
                v.standing,
                KeyStanding::Pinned | KeyStanding::Approved { .. }
            ),
            standing: v.standing.to_string(),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(ExitCode::SUCCESS);
    }
    match SigningKey::load(tree)? {
        Some(k) => println!("this PC ({pc}): {}", k.public()),
        None => println!("this PC ({pc}) has no signing key: run `trinity init` again"),
    }
    if !keyring.enabled() {
        println!("signatures are not checked on this PC (it has no key)");
    } else if !config.security.require_signatures {
        println!("unsigned files are accepted (security.require_signatures = false)");
    }
    println!();
    println!("{:<6} {:<16}  {:<44}  STANDING", "PC", "FINGERPRINT", "KEY");
    for l in &lines {
        println!(
            "{:<6} {:<16}  {:<44}  {}",
            l.pc.as_str(),
            l.fingerprint,
            l.key,
            l.standing
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn approve(config: &Config, tree: &Tree, pc: &PcId, a: ApproveArgs) -> anyhow::Result<ExitCode> {
    let key = PublicKey::parse(&a.key).map_err(|e| anyhow::anyhow!(e))?;
    let own = own_key(tree, pc)?;
    let keyring = crate::keyring(config, tree)?;
    if keyring.trusted_key_of(pc) != Some(own.public()) {
        bail!("this PC's own key is not trusted here; approvals must come from a trusted member");
    }
    if let Some(current) = keyring.trusted_key_of(&a.pc) {
        if current == key {
            println!("{}'s key {} is already trusted", a.pc, key.fingerprint());
            return Ok(ExitCode::SUCCESS);
        }
        if !a.replace {
            bail!(
                "{} already has the trusted key {}; give --replace to approve {} in its place (and revoke the old one with `trinity fleet revoke {} --key {current}`)",
                a.pc,
                current.fingerprint(),
                key.fingerprint(),
                a.pc
            );
        }
    }
    let record = KeyRecord {
        format_version: 1,
        pc: a.pc.clone(),
        public_key: key,
        approved_at: Utc::now(),
        approved_by: pc.clone(),
    };
    fsio::save(&tree.key_file(&a.pc), &Doc::new(record))?;
    println!(
        "approved {}'s key {} (keys/{}.json, signed by {pc}); git-sync brings it to every PC",
        a.pc,
        key.fingerprint(),
        a.pc
    );
    Ok(ExitCode::SUCCESS)
}

fn revoke(config: &Config, tree: &Tree, pc: &PcId, a: RevokeArgs) -> anyhow::Result<ExitCode> {
    own_key(tree, pc)?;
    let keyring = crate::keyring(config, tree)?;
    let targets: Vec<PublicKey> = match &a.key {
        Some(k) => vec![PublicKey::parse(k).map_err(|e| anyhow::anyhow!(e))?],
        None => keyring
            .keys()
            .iter()
            // Every key of that PC, retired ones too (a retired key still vouches for its
            // successor until another member revokes it).
            .filter(|v| {
                v.pc == a.pc && !matches!(&v.standing, KeyStanding::Revoked { by } if by != &a.pc)
            })
            .map(|v| v.key)
            .collect(),
    };
    if targets.is_empty() {
        bail!("this PC believes no key of {}: nothing to revoke", a.pc);
    }
    for key in targets {
        write_revocation(tree, &a.pc, key, pc, &a.reason)?;
        println!(
            "revoked {}'s key {} (revoked/{}-{}-{pc}.json); every PC refuses its signatures once git-sync brings it",
            a.pc,
            key.fingerprint(),
            a.pc,
            key.fingerprint()
        );
    }
    if &a.pc == pc {
        eprintln!(
            "warning: this PC revoked its own key: it can no longer sign; run `trinity init` again and have a member approve the new key"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_revocation(
    tree: &Tree,
    whose: &PcId,
    key: PublicKey,
    by: &PcId,
    reason: &str,
) -> anyhow::Result<()> {
    let r = Revocation {
        format_version: 1,
        pc: whose.clone(),
        public_key: key,
        revoked_at: Utc::now(),
        revoked_by: by.clone(),
        reason: reason.to_owned(),
    };
    match fsio::create(&tree.revocation_file(whose, &key.fingerprint(), by), &r) {
        Ok(()) => Ok(()),
        Err(SaveError::Io(e)) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn rotate(config: &Config, tree: &Tree, pc: &PcId) -> anyhow::Result<ExitCode> {
    let old = own_key(tree, pc)?;
    let keyring = crate::keyring(config, tree)?;
    if keyring.trusted_key_of(pc) != Some(old.public()) {
        bail!("this PC's key is not trusted here, so it cannot vouch for a new one");
    }
    let new = SigningKey::generate(pc.clone())?;
    // The old key vouches for the new one; the new one retires the old one. A PC that sees
    // both believes the new key: a key retired by its own successor still vouches for it.
    let record = KeyRecord {
        format_version: 1,
        pc: pc.clone(),
        public_key: new.public(),
        approved_at: Utc::now(),
        approved_by: pc.clone(),
    };
    fsio::save(&tree.key_file(pc), &Doc::new(record))?;
    pin(tree, &new, PinSource::Own)?;
    new.save(tree)?;
    write_revocation(tree, pc, old.public(), pc, "rotated")?;
    // Signed again, with the new key: the old one's signatures are refused from now on.
    let recipient = tree.recipient_file(pc);
    if let Ok(doc) = fsio::load::<trinity_core::schema::RecipientRecord>(&recipient) {
        fsio::save(&recipient, &doc)?;
    }
    println!(
        "{pc}'s new key: {} (was {}); the old key is retired",
        new.public(),
        old.public().fingerprint()
    );
    Ok(ExitCode::SUCCESS)
}

fn pin(tree: &Tree, key: &SigningKey, source: PinSource) -> anyhow::Result<()> {
    let mut pins = Pins::load(tree)?;
    if pins.add(Pin {
        pc: key.pc().clone(),
        key: key.public(),
        source,
        pinned_at: Utc::now(),
    }) {
        pins.save(tree)?;
    }
    Ok(())
}

/// Whether a published key is a founding key: one that vouches for itself, its record signed
/// by the very key it publishes (a rotated key is signed by its predecessor instead).
fn founding(id: &str, raw: &serde_json::Value, r: &KeyRecord) -> bool {
    let alone = Pins {
        keys: vec![Pin {
            pc: r.pc.clone(),
            key: r.public_key,
            source: PinSource::Given,
            pinned_at: Utc::now(),
        }],
    };
    r.approved_by == r.pc
        && Keyring::decide(&alone, &[], &[], true, true)
            .check(KeyRecord::NAME, id, raw, Some(&r.pc))
            .is_ok()
}

/// `trinity init`'s part: makes this PC's signing key if it has none, and decides whom it
/// trusts — the keys given with `--trust`, or else the fleet's founding key found in the tree
/// (said aloud, to be compared). On a fleet with no keys at all, this PC founds its trust.
/// Returns lines to print.
pub(crate) fn enrol(tree: &Tree, pc: &PcId, given: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let key = match SigningKey::load(tree)? {
        Some(k) if k.pc() == pc => k,
        Some(k) => bail!(
            "{} holds {}'s signing key, not {pc}'s",
            tree.signing_key_file().display(),
            k.pc()
        ),
        None => {
            let k = SigningKey::generate(pc.clone())?;
            k.save(tree)?;
            k
        }
    };
    pin(tree, &key, PinSource::Own)?;
    // The key conversations carried to this PC are encrypted to, signed with this PC's key.
    trinity_core::seal::publish(tree, pc, Utc::now())?;
    out.push(format!(
        "signing:    this PC's key {} ({})",
        key.public(),
        tree.signing_key_file().display()
    ));

    let mut pins = Pins::load(tree)?;
    for g in given {
        let (who, k) = g
            .split_once('=')
            .with_context(|| format!("--trust {g:?}: expected PC=KEY"))?;
        let who = PcId::new(who).map_err(|e| anyhow::anyhow!("--trust {g:?}: {e}"))?;
        let k = PublicKey::parse(k).map_err(|e| anyhow::anyhow!("--trust {g:?}: {e}"))?;
        pins.add(Pin {
            pc: who.clone(),
            key: k,
            source: PinSource::Given,
            pinned_at: Utc::now(),
        });
        out.push(format!(
            "            trusting {who}'s key {} (given)",
            k.fingerprint()
        ));
    }
    pins.save(tree)?;

    let records = trust::published::<KeyRecord>(&tree.keys_dir());
    let own_published = records
        .iter()
        .any(|(_, _, r)| r.pc == *pc && r.public_key == key.public());
    if records
        .iter()
        .any(|(id, raw, r)| r.public_key == key.public() && founding(id, raw, r))
    {
        out.push(format!(
            "            this PC's key founded the fleet's trust (keys/{pc}.json): approve the other PCs from here"
        ));
    }
    if given.is_empty() && !pins.keys.iter().any(|p| p.source == PinSource::Given) {
        let founders: Vec<&KeyRecord> = records
            .iter()
            .filter(|(id, raw, r)| r.pc != *pc && founding(id, raw, r))
            .map(|(_, _, r)| r)
            .collect();
        match founders.as_slice() {
            [] if !own_published && records.is_empty() => {
                // A fleet without keys (made before signing, or just created here): this PC
                // founds its trust.
                let record = KeyRecord {
                    format_version: 1,
                    pc: pc.clone(),
                    public_key: key.public(),
                    approved_at: Utc::now(),
                    approved_by: pc.clone(),
                };
                fsio::save(&tree.key_file(pc), &Doc::new(record))?;
                out.push(format!(
                    "            this PC founds the fleet's trust: keys/{pc}.json (git-sync publishes it); approve the other PCs from here"
                ));
                return Ok(out);
            }
            [] => {}
            [f] => {
                pins.add(Pin {
                    pc: f.pc.clone(),
                    key: f.public_key,
                    source: PinSource::Given,
                    pinned_at: Utc::now(),
                });
                pins.save(tree)?;
                out.push(format!(
                    "            trusting the fleet's founding key, {}'s {}, as found in the state repository: compare it with `trinity fleet keys` on {} (or give --trust {}=KEY)",
                    f.pc,
                    f.public_key.fingerprint(),
                    f.pc,
                    f.pc
                ));
            }
            many => bail!(
                "the state repository holds {} founding keys ({}); say which to trust with --trust PC=KEY (from `trinity fleet keys` on a member)",
                many.len(),
                many.iter()
                    .map(|r| format!("{} {}", r.pc, r.public_key.fingerprint()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    if !own_published {
        out.push(format!(
            "            not approved yet: on a member of the fleet, run\n              trinity fleet approve {pc} --key {}",
            key.public()
        ));
    }
    Ok(out)
}
