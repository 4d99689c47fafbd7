#!/bin/sh
# Trinity's daemons on Linux: one per program (git-sync, credit-monitor, wake-daemon,
# coordinator), each restartable on its own, each with its own log (.trinity/logs/NAME.log).
#
#   trinity.sh install          set up user services (systemd), or nothing to do without systemd
#   trinity.sh start [NAME]     start every daemon, or one
#   trinity.sh stop [NAME]      stop every daemon, or one (SIGTERM: each finishes its step)
#   trinity.sh restart NAME     restart one daemon only
#   trinity.sh status           which daemons run (and `trinity doctor` for the rest)
#   trinity.sh logs NAME        follow that daemon's log
#   trinity.sh uninstall        stop everything and remove the user services
#
# With systemd (a user session: `systemctl --user` works) the daemons are user services,
# trinity@NAME, restarted on failure. Without it (containers, WSL without systemd) they are
# background processes with pid files in .trinity/local/run/; TRINITY_MODE=process forces that.
#
# TRINITY_CONFIG names the configuration (default: ./trinity.toml); TRINITY_BIN the directory
# of the programs (default: where `trinity` is on PATH).
set -eu

DAEMONS="git-sync credit-monitor wake-daemon coordinator"
CONFIG=${TRINITY_CONFIG:-$PWD/trinity.toml}
case "$CONFIG" in /*) ;; *) CONFIG=$PWD/$CONFIG ;; esac
if [ -z "${TRINITY_BIN:-}" ]; then
  t=$(command -v trinity 2>/dev/null || true)
  [ -n "$t" ] || { echo "trinity is not on PATH: set TRINITY_BIN to the directory of the programs" >&2; exit 1; }
  TRINITY_BIN=$(dirname "$t")
fi
[ -f "$CONFIG" ] || { echo "no configuration at $CONFIG: run \`trinity init\` first, or set TRINITY_CONFIG" >&2; exit 1; }

die() { echo "trinity.sh: $*" >&2; exit 1; }

valid_name() {
  for d in $DAEMONS; do [ "$d" = "$1" ] && return 0; done
  die "unknown daemon '$1' (one of: $DAEMONS)"
}

# The daemons a verb applies to (call `valid_name` first: this runs in a subshell).
names() { if [ -n "${1:-}" ]; then echo "$1"; else echo "$DAEMONS"; fi; }

mode() {
  if [ "${TRINITY_MODE:-}" = process ]; then echo process; return; fi
  if [ "${TRINITY_MODE:-}" = systemd ]; then echo systemd; return; fi
  if command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; then
    echo systemd
  else
    echo process
  fi
}

# The state tree's directory, from the configuration (state_dir = "…").
state_dir() {
  d=$(sed -n 's/^state_dir *= *"\(.*\)"/\1/p' "$CONFIG" | head -n 1)
  [ -n "$d" ] || d=.trinity
  case "$d" in /*) echo "$d" ;; *) echo "$(dirname "$CONFIG")/$d" ;; esac
}

run_dir() { echo "$(state_dir)/local/run"; }

pid_of() {
  f="$(run_dir)/$1.pid"
  [ -f "$f" ] || return 1
  p=$(cat "$f")
  kill -0 "$p" 2>/dev/null || return 1
  echo "$p"
}

units_dir() { echo "${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"; }
env_file() { echo "${XDG_CONFIG_HOME:-$HOME/.config}/trinity/env"; }

install() {
  if [ "$(mode)" = systemd ]; then
    mkdir -p "$(units_dir)" "$(dirname "$(env_file)")"
    cp "$(dirname "$0")/trinity@.service" "$(units_dir)/trinity@.service"
    {
      echo "TRINITY_CONFIG=$CONFIG"
      echo "TRINITY_BIN=$TRINITY_BIN"
      echo "PATH=$PATH"
    } > "$(env_file)"
    systemctl --user daemon-reload
    for d in $DAEMONS; do systemctl --user enable "trinity@$d" >/dev/null; done
    echo "installed: trinity@{$(echo $DAEMONS | tr ' ' ',')} (user services, restarted on failure)"
    echo "to keep them running while you are logged out: loginctl enable-linger $USER"
  else
    echo "no systemd user session here: the daemons run as background processes (trinity.sh start)"
  fi
}

start_one() {
  d=$1
  if [ "$(mode)" = systemd ]; then systemctl --user start "trinity@$d"; echo "started $d"; return; fi
  if p=$(pid_of "$d"); then echo "$d is already running (pid $p)"; return; fi
  mkdir -p "$(run_dir)"
  TRINITY_CONFIG=$CONFIG nohup "$TRINITY_BIN/$d" --config "$CONFIG" > /dev/null 2>&1 &
  echo $! > "$(run_dir)/$d.pid"
  echo "started $d (pid $!)"
}

stop_one() {
  d=$1
  if [ "$(mode)" = systemd ]; then systemctl --user stop "trinity@$d"; echo "stopped $d"; return; fi
  if ! p=$(pid_of "$d"); then echo "$d is not running"; rm -f "$(run_dir)/$d.pid"; return; fi
  kill -TERM "$p"
  i=0
  while kill -0 "$p" 2>/dev/null; do
    i=$((i + 1))
    [ $i -gt 300 ] && { kill -KILL "$p" 2>/dev/null || true; break; }
    sleep 0.1
  done
  rm -f "$(run_dir)/$d.pid"
  echo "stopped $d"
}

status() {
  for d in $DAEMONS; do
    if [ "$(mode)" = systemd ]; then
      printf '%-15s %s\n' "$d" "$(systemctl --user is-active "trinity@$d" 2>/dev/null || true)"
    elif p=$(pid_of "$d"); then
      printf '%-15s running (pid %s)\n' "$d" "$p"
    else
      printf '%-15s stopped\n' "$d"
    fi
  done
}

verb=${1:-}
[ -n "$verb" ] || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
shift
[ -z "${1:-}" ] || valid_name "$1"
case "$verb" in
  install) install ;;
  start) for d in $(names "${1:-}"); do start_one "$d"; done ;;
  stop) for d in $(names "${1:-}"); do stop_one "$d"; done ;;
  restart)
    [ -n "${1:-}" ] || die "restart needs a daemon's name (one of: $DAEMONS)"
    valid_name "$1"
    stop_one "$1"; start_one "$1" ;;
  status) status ;;
  logs)
    [ -n "${1:-}" ] || die "logs needs a daemon's name (one of: $DAEMONS)"
    valid_name "$1"
    exec "$TRINITY_BIN/trinity" --config "$CONFIG" logs "$1" --follow ;;
  uninstall)
    for d in $DAEMONS; do stop_one "$d"; done
    if [ "$(mode)" = systemd ]; then
      for d in $DAEMONS; do systemctl --user disable "trinity@$d" >/dev/null 2>&1 || true; done
      rm -f "$(units_dir)/trinity@.service" "$(env_file)"
      systemctl --user daemon-reload
    fi
    echo "uninstalled" ;;
  *) die "unknown verb '$verb' (install, start, stop, restart NAME, status, logs NAME, uninstall)" ;;
esac
