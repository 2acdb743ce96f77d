#!/usr/bin/env bash
# Start the local PostgreSQL 15 server of this checkout (idempotent).
#
#   data     $ROOT/.run/pg/data      socket dir  $ROOT/.run/pg
#   log      $ROOT/.run/logs/postgres.log
#   listens  127.0.0.1:${LICENSING_PG_PORT:-5432} only
#   roles    licensing / licensing (SUPERUSER: administration and the tests' set-up);
#            licensing_owner (owns the databases, runs migrations); one login role
#            per service (licensing_issuance, ...): what each serves requests as,
#            never a superuser. Passwords of the non-superusers are random, made
#            once, in .run/pg-roles.env (ROLE=PASSWORD lines, mode 0600).
#            scram-sha-256 over TCP.
#   dbs      issuance activation domain_binding grant_sync projector (owner licensing_owner)
#
# Already running and healthy: reused, exits 0 at once. Run as root: the server
# itself runs as the `postgres` OS user (initdb refuses root). When that user
# cannot reach $ROOT/.run (e.g. a clone under /root, mode 700), the cluster
# lives in /var/lib/postgresql/licensing/<hash of ROOT> and .run/pg links to it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
RUN="$ROOT/.run"
PORT="${LICENSING_PG_PORT:-5432}"
PGBIN="${LICENSING_PG_BIN:-/usr/lib/postgresql/15/bin}"
LOG="$RUN/logs/postgres.log"
DATABASES=(issuance activation domain_binding grant_sync projector)
SERVICE_ROLES=(licensing_issuance licensing_activation licensing_domain_binding licensing_grant_sync licensing_projector)
ROLES_FILE="$RUN/pg-roles.env"

say() { printf 'postgres: %s\n' "$*"; }
die() { printf 'postgres: ERROR: %s\n' "$*" >&2; exit 1; }

[[ "$PORT" =~ ^[0-9]+$ ]] || die "LICENSING_PG_PORT must be a number, got '$PORT'"

if [[ $EUID -eq 0 ]]; then
  OSUSER=postgres
  as_pg() { (cd / && runuser -u "$OSUSER" -- "$@"); }
else
  OSUSER="$(id -un)"
  as_pg() { (cd / && "$@"); }
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- binaries ---------------------------------------------------------------
if [[ ! -x "$PGBIN/postgres" ]]; then
  [[ $EUID -eq 0 ]] || die "$PGBIN/postgres not found; install postgresql-15 (as root: apt-get install -y postgresql-15)"
  mkdir -p "$RUN/logs"
  say "installing postgresql-15 (apt-get, log: .run/logs/apt-postgres.log)"
  had_main=0; [[ -e /etc/postgresql/15/main ]] && had_main=1
  { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15; } \
    >"$RUN/logs/apt-postgres.log" 2>&1 || die "apt-get install postgresql-15 failed, see $RUN/logs/apt-postgres.log"
  # Debian's package creates (and may start) its own "15 main" cluster on 5432;
  # it is not ours: stop it and keep it from starting by itself.
  if [[ $had_main -eq 0 && -d /etc/postgresql/15/main ]]; then
    pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
    echo manual >/etc/postgresql/15/main/start.conf
  fi
  [[ -x "$PGBIN/postgres" ]] || die "postgres still missing in $PGBIN after install"
fi

if [[ $EUID -eq 0 ]] && ! id -u "$OSUSER" >/dev/null 2>&1; then
  useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/sh "$OSUSER"
fi

# --- where the cluster lives --------------------------------------------------
mkdir -p "$RUN/logs"
chmod 755 "$RUN" "$RUN/logs" 2>/dev/null || true

exec 9>"$RUN/pg.lock"           # one up/down at a time for this checkout
flock 9

PGLINK="$RUN/pg"
fallback_dir() { echo "/var/lib/postgresql/licensing/$(printf '%s' "$ROOT" | sha256sum | cut -c1-16)"; }

if [[ ! -L "$PGLINK" ]]; then
  mkdir -p "$PGLINK"
  [[ $EUID -eq 0 ]] && chown "$OSUSER:" "$PGLINK"
  chmod 755 "$PGLINK"
  # the socket path must fit in sun_path (107 bytes)
  if ! as_pg test -w "$PGLINK" -a -x "$PGLINK" || (( ${#PGLINK} + 20 > 100 )); then
    [[ $EUID -eq 0 ]] || die "cannot use $PGLINK"
    rmdir "$PGLINK" 2>/dev/null || die "$PGLINK is not usable by user $OSUSER and not empty"
    fb="$(fallback_dir)"
    if [[ -d "$fb" ]]; then     # left over from a removed .run: start afresh
      as_pg "$PGBIN/pg_ctl" stop -D "$fb/data" -m fast -s >/dev/null 2>&1 || true
      rm -rf "$fb"
    fi
    mkdir -p "$fb"; chown "$OSUSER:" "$fb"; chmod 755 "$fb"
    printf '%s\n' "$ROOT" >"$fb/.checkout"
    ln -s "$fb" "$PGLINK"
    say "$OSUSER cannot reach $RUN; cluster kept in $fb (linked from .run/pg)"
  fi
fi
PGBASE="$(readlink -f "$PGLINK")"
DATA="$PGBASE/data"

running() { as_pg "$PGBIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; }

psql_admin() {   # as the superuser, over the unix socket (peer auth)
  as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGBASE" -p "$PORT" -U "$OSUSER" -d postgres
}

role_password() {   # the password of role $1, made once
  local pw
  pw="$(sed -n "s/^$1=//p" "$ROLES_FILE" 2>/dev/null | head -n1)"
  if [[ -z "$pw" ]]; then
    pw="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    (umask 077; echo "$1=$pw" >>"$ROLES_FILE")
  fi
  echo "$pw"
}

ensure_role_and_dbs() {
  local list r sql_roles=""
  list="$(printf "'%s'," "${DATABASES[@]}")"; list="${list%,}"
  for r in licensing_owner "${SERVICE_ROLES[@]}"; do
    sql_roles+="SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE', '$r')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$r')
\\gexec
ALTER ROLE $r WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$(role_password "$r")';
"
  done
  # The owner is a member of each service role: it hands the projector the
  # read-model tables it rebuilds and may still migrate them.
  for r in "${SERVICE_ROLES[@]}"; do sql_roles+="GRANT $r TO licensing_owner;
"; done
  psql_admin >/dev/null <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'licensing') THEN
    CREATE ROLE licensing LOGIN SUPERUSER CREATEDB PASSWORD 'licensing';
  END IF;
END
\$\$;
$sql_roles
SELECT format('CREATE DATABASE %I OWNER licensing_owner', d)
  FROM unnest(ARRAY[$list]) AS d
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d)
\gexec
SQL
  # Databases made before there was an owner role: hand them over.
  local d
  for d in "${DATABASES[@]}"; do
    if [[ "$(psql_admin -At <<<"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$d'")" != licensing_owner ]]; then
      psql_admin >/dev/null <<SQL
ALTER DATABASE $d OWNER TO licensing_owner;
\\c $d
REASSIGN OWNED BY licensing TO licensing_owner;
SQL
    fi
  done
}

check_tcp_login() {
  PGPASSWORD=licensing PGCONNECT_TIMEOUT=5 "$PGBIN/psql" -X -q -At \
    "postgresql://licensing@127.0.0.1:$PORT/issuance" -c 'select 1' >/dev/null 2>&1
}

# --- already running? -------------------------------------------------------
if running; then
  cur_port="$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)"
  [[ "$cur_port" == "$PORT" ]] ||
    die "this checkout's cluster is already running on port $cur_port, not $PORT; run infra/postgres/down.sh first"
  # it may be starting, or dying (killed a moment ago): wait for one or the other
  for _ in $(seq 150); do
    if "$PGBIN/pg_isready" -q -h "$PGBASE" -p "$PORT" -t 2; then
      ensure_role_and_dbs
      check_tcp_login || die "cluster is running but licensing@127.0.0.1:$PORT/issuance does not answer; see $LOG"
      say "reused, 127.0.0.1:$PORT"
      exit 0
    fi
    running || break
    sleep 0.2
  done
  running && die "cluster (pid $(head -n 1 "$DATA/postmaster.pid")) runs but does not accept connections after 30 s; see $LOG"
fi

if port_open "$PORT"; then
  die "127.0.0.1:$PORT is already in use by another process (not this checkout's cluster in $DATA); stop it or set LICENSING_PG_PORT"
fi

# --- initdb once --------------------------------------------------------------
if [[ ! -f "$DATA/PG_VERSION" ]]; then
  say "initdb $DATA"
  rm -rf "$DATA"
  as_pg "$PGBIN/initdb" -D "$DATA" -U "$OSUSER" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >>"$LOG" 2>&1 ||
    die "initdb failed, see $LOG"
  echo "include_if_exists = 'licensing.conf'" | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
fi

# Settings and access rules are rewritten on every start (port may change).
as_pg tee "$DATA/licensing.conf" >/dev/null <<CONF
# written by infra/postgres/up.sh on every start; edits are lost
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGBASE'
max_connections = 400
shared_buffers = 256MB
fsync = on
synchronous_commit = on
full_page_writes = on
# The test suite's WAL stays within 1 GB of disk; bench/projector.sh raises
# this to 4 GB for its rebuild, which would otherwise checkpoint every few
# seconds, each checkpoint followed by a wave of full-page images.
max_wal_size = 1GB
# Where the database time goes, per statement (bench/activation.sh reports
# it); its overhead is a few percent at most.
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
# Commit times of rows (pg_xact_commit_timestamp): bench/pipeline.sh times
# commit -> projector row with them; a few bytes per transaction.
track_commit_timestamp = on
password_encryption = 'scram-sha-256'
timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = off
log_destination = 'stderr'
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
CONF
as_pg tee "$DATA/pg_hba.conf" >/dev/null <<HBA
# written by infra/postgres/up.sh on every start; edits are lost
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 peer
host    all       all   127.0.0.1/32  scram-sha-256
HBA

# --- start ------------------------------------------------------------------
# No -l: the server writes to the log file this (root) shell opened, so the
# postgres user needs no access to .run/logs.
# 9>&-: the server must not inherit (and so hold) the lock.
if ! as_pg "$PGBIN/pg_ctl" start -D "$DATA" -w -t 60 -s >>"$LOG" 2>&1 9>&-; then
  tail -n 15 "$LOG" >&2 || true
  die "server did not start, see $LOG"
fi
ensure_role_and_dbs
check_tcp_login || die "server started but licensing@127.0.0.1:$PORT/issuance does not answer; see $LOG"
say "started, 127.0.0.1:$PORT (dbs: ${DATABASES[*]})"
