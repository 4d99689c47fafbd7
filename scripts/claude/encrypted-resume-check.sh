#!/usr/bin/env bash
# An encrypted conversation resumes on the next PC, with the real Claude Code CLI.
#
# Two PCs of a signing fleet on this machine (the release build, one local bare repository).
# PC1's agent — the real `claude` against a loopback stub of the API (scripts/claude/stub_api.py)
# — is told a word to remember. PC1 hands off; its credit monitor encrypts the session to PC2;
# PC2's wake-daemon checks and decrypts it and starts the real `claude --resume SESSION`, asked
# for the word. Passes when the request PC2's CLI sends holds the remembered exchange, and the
# remote's whole history (`git log -p --all`) holds no line of it in the clear.
#
# Usage: scripts/claude/encrypted-resume-check.sh           (CLAUDE_BIN=/path/to/claude, or
#        the newest CLI under /tmp/cc/*/node_modules, or one installed from npm)
set -euo pipefail
cd "$(dirname "$0")/../.."
REL=$PWD/target/release
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W" 2>/dev/null || { sleep 2; rm -rf "$W"; }' EXIT
CLI=${CLAUDE_BIN:-$(ls -d /tmp/cc/*/node_modules/@anthropic-ai/claude-code-linux-x64/claude 2>/dev/null | sort -V | tail -1)}
if [ -z "$CLI" ]; then
  npm install --prefix "$W/npm" --no-audit --no-fund --ignore-scripts --silent \
    @anthropic-ai/claude-code@2.1.332 @anthropic-ai/claude-code-linux-x64@2.1.332
  CLI=$W/npm/node_modules/@anthropic-ai/claude-code-linux-x64/claude
fi
echo "claude: $("$CLI" --version)"
export GIT_CONFIG_GLOBAL=$W/none GIT_CONFIG_NOSYSTEM=1
port=18490
python3 scripts/claude/stub_api.py $port success "$W/requests.log" "$W/bodies.jsonl" &
for _ in $(seq 50); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done
claude_env=(ANTHROPIC_BASE_URL=http://127.0.0.1:$port ANTHROPIC_API_KEY=anything
  DISABLE_TELEMETRY=1 DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1)
WORD=PAPAYA-$RANDOM
for pc in PC1 PC2; do
  mkdir -p "$W/$pc/project" "$W/$pc/home/.claude"
  args=(init --pc $pc --remote "$W/remote.git")
  [ $pc = PC1 ] && args+=(--create-remote --fleet PC1,PC2 --coordinator PC2)
  (cd "$W/$pc" && HOME=$W/$pc/home "$REL/trinity" "${args[@]}" >/dev/null 2>&1)
  cat >> "$W/$pc/trinity.toml" <<TOML
[agent]
command = ["$CLI", "-p", "What word did I ask you to remember? Answer with the word only."]
workdir = "project"
new_console = false
[credit]
claude_projects_dir = "$W/$pc/home/.claude/projects"
pause = "1s"
TOML
done
pc_run() { local pc=$1; shift; (cd "$W/$pc" && env HOME="$W/$pc/home" TRINITY_CONFIG="$W/$pc/trinity.toml" "${claude_env[@]}" "$@"); }
key=$(pc_run PC2 "$REL/trinity" fleet keys --json | python3 -c "import json,sys; print(next(k['key'] for k in json.load(sys.stdin) if k['pc']=='PC2'))")
pc_run PC1 "$REL/trinity" fleet approve PC2 --key "$key" >/dev/null
for pc in PC1 PC2 PC1 PC2; do pc_run $pc "$REL/git-sync" --once >/dev/null 2>&1; done
for pc in PC1 PC2; do pc_run $pc "$REL/git-sync" > "$W/$pc/git-sync.out" 2>&1 & done

# PC1's agent at work: a real session that remembers the word.
pc_run PC1 "$REL/trinity" task add chapter -d "Write the chapter" >/dev/null
pc_run PC1 "$REL/trinity" work next >/dev/null
(cd "$W/PC1/project" && env -i PATH="$PATH" HOME="$W/PC1/home" "${claude_env[@]}" \
  "$CLI" -p "Remember the word $WORD for later." >/dev/null)
session=$(ls "$W/PC1/home/.claude/projects/"*/ | head -1)
echo "PC1's session: $session"

pc_run PC2 "$REL/wake-daemon" > "$W/PC2/wake.out" 2>&1 &
pc_run PC1 "$REL/credit-monitor" --force-handoff
for _ in $(seq 300); do
  grep -q "What word did I ask" "$W/bodies.jsonl" 2>/dev/null && break
  sleep 0.1
done
grep -q "What word did I ask" "$W/bodies.jsonl" || { echo "FAIL: PC2's agent never asked"; tail -20 "$W/PC2/wake.out"; exit 1; }
resumed=$(grep "What word did I ask" "$W/bodies.jsonl" | tail -1)
if grep -q "$WORD" <<< "$resumed"; then
  echo "PC2's claude --resume sent the remembered exchange (the word $WORD is in its request)"
else
  echo "FAIL: PC2's request holds no trace of PC1's conversation"; exit 1
fi
grep -o 'placed the conversation handed over.*' "$W/PC2/wake.out" | head -1 || true
sleep 1
history=$(git -C "$W/remote.git" log -p --all --text | tr -d '\0')
grep -q 'conversations/handoff_PC1_to_PC2_.*\.age' <<< "$history" || { echo "FAIL: no encrypted conversation went through the repository"; exit 1; }
if grep -q "$WORD" <<< "$history"; then
  echo "FAIL: the remote's history holds the word in the clear"; exit 1
fi
echo "PASS: the conversation went through the repository encrypted (age) and resumed on PC2"
