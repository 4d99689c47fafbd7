#!/usr/bin/env bash
# The project's test command (README.md): the doc tests (nextest does not run those), then
# every other test of the workspace with cargo-nextest. Extra arguments go to nextest.
#
# It sets itself up: without cargo-nextest it installs it (`cargo install --locked
# cargo-nextest`, a few minutes, once); if that cannot be done (no network), it runs the same
# tests with `cargo test` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: cargo-nextest is not installed; installing it once (cargo install --locked cargo-nextest)..." >&2
  if ! cargo install --locked cargo-nextest; then
    echo "test.sh: could not install cargo-nextest; running the tests with cargo test instead" >&2
    cargo test --workspace --locked --no-fail-fast "$@"
    exit
  fi
fi
cargo test --workspace --locked --doc --quiet
cargo nextest run --workspace --locked --no-fail-fast "$@"
