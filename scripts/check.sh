#!/usr/bin/env bash
# The checks to run before every commit: formatting, lints, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all
cargo clippy --workspace --all-targets -- -D warnings
scripts/test.sh "$@"
