#!/usr/bin/env bash
# The project's test command (README.md): the doc tests (nextest does not run those), then
# every other test of the workspace. Extra arguments go to nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked --doc --quiet
cargo nextest run --workspace --locked --no-fail-fast "$@"
