#!/usr/bin/env bash
# The dashboard picture in docs/images/dashboard.png: a day of a three-PC fleet played by the real
# coordinator (crates/coordinator/examples/dashboard_day.rs), rendered by headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "needs chromium (apt-get install chromium)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
page=$(cargo run -q --release -p coordinator --example dashboard_day -- "$dir")
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,1750 \
  --screenshot="$PWD/docs/images/dashboard.png" "file://$page" 2>/dev/null
echo "docs/images/dashboard.png from $page"
