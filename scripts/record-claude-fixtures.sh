#!/usr/bin/env bash
# Records what the real Claude Code CLI writes — its session transcript, its
# `-p --output-format stream-json` output and what its StopFailure hook is given — when the API
# answers 429 (with and without the unified usage-limit headers), 529, 500, or successfully,
# and when a session killed mid-request is resumed. The API is a stub on loopback
# (scripts/claude/stub_api.py); nothing leaves the machine.
#
# Usage: scripts/record-claude-fixtures.sh [VERSION]     (default: the newest version below)
#   CLAUDE_BIN=/path/to/claude  uses that CLI instead of installing VERSION.
# Supported and recorded: 2.1.197 and 2.1.332 (docs/credit-monitor.md).
# Writes crates/credit-monitor/tests/fixtures/claude-code/<version>/<case>/:
#   transcript.jsonl   ~/.claude/projects/<cwd>/<session>.jsonl as the CLI wrote it
#   stream.jsonl       its stdout with --output-format stream-json --verbose
#   requests.txt       how many POST /v1/messages the stub answered
#   stop-failure.json  what its StopFailure hook was given, when a turn failed
# Cases: 429, 429-unified, 529, 500, success, and resumed (a session killed mid-request, then
# resumed with --resume against a stub that answers; stream.jsonl is the resumed run's).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-2.1.332}
OUT=crates/credit-monitor/tests/fixtures/claude-code/$VERSION
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

CLI=${CLAUDE_BIN:-}
if [ -z "$CLI" ]; then
  echo "installing @anthropic-ai/claude-code@$VERSION into a temporary directory"
  # The native binary is in the optional per-platform package; no install script is needed.
  npm install --prefix "$WORK/npm" --no-audit --no-fund --ignore-scripts --silent \
    "@anthropic-ai/claude-code@$VERSION" "@anthropic-ai/claude-code-linux-x64@$VERSION"
  CLI=$WORK/npm/node_modules/@anthropic-ai/claude-code-linux-x64/claude
fi
"$CLI" --version

port=18400
# run DIR MODE ARGS...: the CLI in DIR against a stub answering MODE, its StopFailure hook
# recorded in DIR/stop-failure.json.
run() {
  local dir=$1 mode=$2
  shift 2
  port=$((port + 1))
  mkdir -p "$dir/home/.claude" "$dir/work"
  printf '{"hooks": {"StopFailure": [{"hooks": [{"type": "command", "command": "cat > %s/stop-failure.json"}]}]}}\n' \
    "$dir" > "$dir/home/.claude/settings.json"
  python3 scripts/claude/stub_api.py "$port" "$mode" "$dir/requests.log" &
  local stub=$!
  for _ in $(seq 50); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.1
  done
  local limit=300 signal=TERM
  if [ "$mode" = hang ]; then
    # The stub never answers: the CLI is killed mid-request, as a crash or a closed laptop would.
    limit=5
    signal=KILL
  fi
  (cd "$dir/work" && env -i PATH="$PATH" HOME="$dir/home" \
      ANTHROPIC_BASE_URL="http://127.0.0.1:$port" ANTHROPIC_API_KEY=anything \
      CLAUDE_CODE_MAX_RETRIES=2 DISABLE_TELEMETRY=1 DISABLE_AUTOUPDATER=1 \
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
      timeout -s "$signal" "$limit" "$CLI" -p "$@" --output-format stream-json --verbose \
      > "$dir/stream.jsonl" 2> "$dir/stderr.txt") || true
  kill "$stub" 2>/dev/null || true
  wait "$stub" 2>/dev/null || true
}

for case in 429 429-unified 529 500 success resumed; do
  dir=$WORK/$case
  echo "recording $case"
  if [ "$case" = resumed ]; then
    run "$dir" hang "say hi"
    session=$(python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['session_id'])" "$dir/stream.jsonl")
    rm -f "$dir/requests.log"
    run "$dir" success --resume "$session" "go on"
  else
    run "$dir" "$case" "say hi"
  fi
  transcript=$(find "$dir/home/.claude/projects" -name '*.jsonl' | head -n 1)
  if [ -z "$transcript" ]; then
    echo "no transcript for $case; the CLI said:" >&2
    cat "$dir/stderr.txt" >&2
    exit 1
  fi
  mkdir -p "$OUT/$case"
  cp "$transcript" "$OUT/$case/transcript.jsonl"
  cp "$dir/stream.jsonl" "$OUT/$case/stream.jsonl"
  rm -f "$OUT/$case/stop-failure.json"
  if [ -f "$dir/stop-failure.json" ]; then
    cp "$dir/stop-failure.json" "$OUT/$case/stop-failure.json"
  fi
  grep -c '^/v1/messages' "$dir/requests.log" > "$OUT/$case/requests.txt" || echo 0 > "$OUT/$case/requests.txt"
  echo "  $(cat "$OUT/$case/requests.txt") requests, $(wc -l < "$OUT/$case/transcript.jsonl") transcript lines"
done
echo "fixtures in $OUT"
