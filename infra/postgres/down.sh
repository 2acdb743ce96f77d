#!/usr/bin/env bash
# Stop the local PostgreSQL server of this checkout (pg_ctl stop -m fast). Keeps the data.
# With --immediate: pg_ctl stop -m immediate, a crash the server recovers
# from at its next start (the fault tests use it).
set -euo pipefail

MODE=fast
[[ "${1:-}" == "--immediate" ]] && MODE=immediate

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
RUN="$ROOT/.run"
PGBIN="${LICENSING_PG_BIN:-/usr/lib/postgresql/15/bin}"

say() { printf 'postgres: %s\n' "$*"; }
die() { printf 'postgres: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ ! -e "$RUN/pg/data/PG_VERSION" || ! -x "$PGBIN/pg_ctl" ]]; then
  say "not running"
  exit 0
fi

if [[ $EUID -eq 0 ]]; then
  as_pg() { (cd / && runuser -u postgres -- "$@"); }
else
  as_pg() { (cd / && "$@"); }
fi

exec 9>"$RUN/pg.lock"
flock 9

DATA="$(readlink -f "$RUN/pg")/data"
if as_pg "$PGBIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; then
  as_pg "$PGBIN/pg_ctl" stop -D "$DATA" -m "$MODE" -w -t 60 -s || die "pg_ctl stop failed"
  say "stopped"
else
  say "not running"
fi
