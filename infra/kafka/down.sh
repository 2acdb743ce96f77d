#!/usr/bin/env bash
# Stop the local Kafka broker of this checkout: SIGTERM (controlled shutdown),
# SIGKILL after 30 s. Keeps the data. With --kill: SIGKILL at once, a crash
# (the fault tests use it).
set -euo pipefail

SIGNAL=TERM
[[ "${1:-}" == "--kill" ]] && SIGNAL=KILL

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
RUN="$ROOT/.run"
KDIR="$RUN/kafka"
PIDF="$KDIR/kafka.pid"
PROPS="$KDIR/server.properties"

say() { printf 'kafka: %s\n' "$*"; }

if [[ ! -f "$PIDF" ]]; then
  say "not running"
  exit 0
fi

exec 9>"$RUN/kafka.lock"
flock 9

pid="$(cat "$PIDF" 2>/dev/null || true)"
is_ours() {
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $PROPS"
}

if ! is_ours; then
  rm -f "$PIDF"
  say "not running"
  exit 0
fi

kill -"$SIGNAL" "$pid" 2>/dev/null || true
for _ in $(seq 300); do               # 30 s
  is_ours || break
  sleep 0.1
done
if is_ours; then
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 50); do is_ours || break; sleep 0.1; done
  rm -f "$PIDF"
  say "killed (no clean stop within 30 s)"
else
  rm -f "$PIDF"
  say "stopped"
fi
