#!/bin/sh
# Installs Trinity's five programs (trinity, git-sync, credit-monitor, wake-daemon,
# coordinator) into one directory: builds the workspace once (release), copies them.
#
#   scripts/install.sh                 build, install into ~/.local/bin
#   scripts/install.sh DIR             ... into DIR
#   scripts/install.sh --from BUILT    copy from BUILT (e.g. target/release) without building
#
# Then: `trinity init` (see README.md), and deploy/systemd/trinity.sh for the daemons.
set -eu
cd "$(dirname "$0")/.."
PROGRAMS="trinity git-sync credit-monitor wake-daemon coordinator"
FROM=""
DEST="${HOME}/.local/bin"
while [ $# -gt 0 ]; do
  case "$1" in
    --from) FROM=${2:?--from needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) DEST=$1; shift ;;
  esac
done
if [ -z "$FROM" ]; then
  command -v cargo >/dev/null 2>&1 || { echo "cargo is missing: install Rust (https://rustup.rs), 1.89 or newer" >&2; exit 1; }
  echo "building (release; the first build takes a few minutes)…"
  cargo build --release --locked --workspace --bins
  FROM=target/release
fi
mkdir -p "$DEST"
for p in $PROGRAMS; do
  [ -f "$FROM/$p" ] || { echo "$FROM/$p is missing" >&2; exit 1; }
  cp "$FROM/$p" "$DEST/$p.tmp.$$"
  mv "$DEST/$p.tmp.$$" "$DEST/$p"
  echo "installed $DEST/$p"
done
cp deploy/systemd/trinity.sh deploy/systemd/trinity@.service "$DEST/" 2>/dev/null || true
case ":$PATH:" in
  *":$DEST:"*) echo "done: $DEST is on your PATH" ;;
  *) echo "done. Add it to your PATH, e.g. in ~/.profile:  export PATH=\"$DEST:\$PATH\"" ;;
esac
"$DEST/trinity" --version
