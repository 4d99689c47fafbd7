//! Cross-daemon tests live in `tests/`: they run the workspace's real programs (`trinity`,
//! `git-sync`, `credit-monitor`, `wake-daemon`) for several simulated PCs that share one local
//! bare repository, as the fleet would. Build the workspace first (`scripts/test.sh` does).
