//! `fleet.toml`: who is in the fleet, in rotation order.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{Encoding, Schema, v1};
use crate::ids::PcId;

/// `fleet.toml` at the root of the tree. Compare-and-swap: created by the first `trinity init`
/// against an empty remote, edited rarely, and the remote's version wins a race.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    /// Format version (missing means 1).
    #[serde(default = "v1")]
    pub format_version: u32,
    /// The PCs in rotation order: work goes from each to the next, and from the last to the first.
    pub pcs: Vec<PcId>,
    /// The preferred coordinator leader.
    pub coordinator: PcId,
}

impl Fleet {
    /// A fleet of `pcs` with `coordinator` as preferred leader (checked by [`Schema::check`]).
    pub fn new(pcs: Vec<PcId>, coordinator: PcId) -> Self {
        Self {
            format_version: Self::FORMAT_VERSION,
            pcs,
            coordinator,
        }
    }

    /// True when `pc` is a member.
    pub fn contains(&self, pc: &PcId) -> bool {
        self.pcs.contains(pc)
    }

    /// "PC1, PC2, PC3", for messages.
    pub fn pcs_joined(&self) -> String {
        self.pcs
            .iter()
            .map(PcId::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The PCs after `pc` in rotation order, wrapping around, `pc` itself excluded.
    pub fn successors(&self, pc: &PcId) -> impl Iterator<Item = &PcId> + '_ {
        let start = self.pcs.iter().position(|p| p == pc).map_or(0, |i| i + 1);
        let n = self.pcs.len();
        let pc = pc.clone();
        (0..n)
            .map(move |k| &self.pcs[(start + k) % n])
            .filter(move |p| **p != pc)
    }
}

impl Schema for Fleet {
    const NAME: &'static str = "fleet";
    const FORMAT_VERSION: u32 = 1;
    const MAX_BYTES: usize = 64 * 1024;
    const ENCODING: Encoding = Encoding::Toml;

    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.pcs.is_empty() {
            problems.push("pcs is empty; list the fleet's PCs in rotation order".to_owned());
        }
        let mut seen = HashSet::new();
        for pc in &self.pcs {
            if !seen.insert(pc.as_str().to_ascii_lowercase()) {
                problems.push(format!(
                    "{pc} is listed twice in pcs (names are compared case-insensitively)"
                ));
            }
        }
        if !self.pcs.is_empty() && !self.contains(&self.coordinator) {
            problems.push(format!(
                "coordinator {} is not one of pcs",
                self.coordinator
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcs(names: &[&str]) -> Vec<PcId> {
        names.iter().map(|n| PcId::new(n).expect("valid")).collect()
    }

    #[test]
    fn successors_wrap_around_and_skip_self() {
        let fleet = Fleet::new(
            pcs(&["PC1", "PC2", "PC3"]),
            PcId::new("PC3").expect("valid"),
        );
        let after = |pc: &str| -> Vec<String> {
            fleet
                .successors(&PcId::new(pc).expect("valid"))
                .map(|p| p.to_string())
                .collect()
        };
        assert_eq!(after("PC1"), ["PC2", "PC3"]);
        assert_eq!(after("PC3"), ["PC1", "PC2"]);
        assert_eq!(after("PC9"), ["PC1", "PC2", "PC3"]);
    }
}
