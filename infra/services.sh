#!/usr/bin/env bash
# Starts (or stops, or shows) the five services in the background for
# `make run`, against the PostgreSQL and Kafka of infra/up.sh. Logs in
# .run/logs/. Each service runs under a supervisor that starts it again
# when it exits unexpectedly (after 1 s, doubling to 30 s while it keeps
# failing within a minute of its start), and logs each restart in the
# service's log; `stop` stops the supervisors first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"
mkdir -p "$RUN/logs" "$RUN/pids"
# shellcheck disable=SC1091
source "$RUN/infra.env"

# Secrets of this local installation, made once: the first bootstrap admin
# key (.run/admin.key, one line, the whole bearer token; the services read
# that file, so `make rotate-admin-key` replaces the key, and emptying the
# file revokes it, without a restart) and the secret license keys are
# derived from.
SECRETS="$RUN/secrets.env"
if [[ ! -f "$SECRETS" ]]; then
  umask 077
  {
    echo "LICENSING_ADMIN_KEY=AKIDadmin.$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    echo "LICENSING_LICENSE_KEY_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
  } >"$SECRETS"
fi
# shellcheck disable=SC1090
source "$SECRETS"
export LICENSING_LICENSE_KEY_SECRET
export LICENSING_ADMIN_KEY_FILE="$RUN/admin.key"
# Only the file: a key exported in the operator's shell would outlive its
# rotation and revocation.
export -n LICENSING_ADMIN_KEY
# Every service's signing key (one each) and the key grant sync seals
# upstream secrets with: generated (mode 0600) on their first start.
export LICENSING_SIGNING_KEY_GENERATE=true
export LICENSING_UPSTREAM_SECRET_KEY_FILE="$RUN/grant-sync-upstream-secret.key"
export LICENSING_UPSTREAM_SECRET_KEY_GENERATE=true
# A developer's callback receiver runs on this machine: webhooks may call
# loopback over plain HTTP here (the default configuration refuses both).
export LICENSING_WEBHOOK_ALLOW_HTTP=true
export LICENSING_WEBHOOK_ALLOWED_NETWORKS='["127.0.0.0/8", "::1/128"]'
[[ -f "$RUN/admin.key" ]] || (umask 077 && printf '%s\n' "$LICENSING_ADMIN_KEY" >"$RUN/admin.key")
# The key in force (rotated ones replace the first in the file).
LICENSING_ADMIN_KEY="$(grep -v '^#' "$RUN/admin.key" | head -n1 || true)"

# Each service serves as its own database role; `<service> migrate` applies
# its migrations as the owner first, so that the serving process never holds
# the owner's password (passwords made by infra/postgres/up.sh).
pg_password() { sed -n "s/^$1=//p" "$RUN/pg-roles.env" | head -n1; }

# Release builds (`make run` builds them): a newcomer trying the running
# system measures it at its real speed. LICENSING_PROFILE=debug runs the
# debug binaries of `cargo build` instead.
PROFILE="${LICENSING_PROFILE:-release}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"

SERVICES=(issuance:8081:issuance activation:8082:activation domain-binding:8083:domain_binding grant-sync:8084:grant_sync projector:8085:projector)

# Whether process $1 is service $3's $2 (`service`: the binary itself, of
# any profile; `supervisor`: this script supervising it). A pid file left
# behind may name a pid the system has since given to another process,
# which must never be signalled.
ours() {
  [[ "$1" =~ ^[1-9][0-9]*$ ]] || return 1
  if [[ "$2" == service ]]; then
    [[ "$(basename "$(readlink "/proc/$1/exe" 2>/dev/null)")" == "$3" ]]
  else
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "services.sh supervise $3"
  fi
}

# The pid in pid file $1, if that process is still service $3's $2.
live_pid() {
  local pid
  pid="$(cat "$1" 2>/dev/null || true)"
  ours "$pid" "$2" "$3" && echo "$pid"
}

# Runs `$BIN/$1` until `stop`: starts it again when it exits, with backoff.
supervise() {
  local name="$1" log="$RUN/logs/$1.log" delay=1 started rc child=""
  # The child's pid only while it is ours to signal.
  trap '[[ -n "$child" ]] && kill -TERM "$child" 2>/dev/null && wait "$child"; exit 0' TERM INT
  while true; do
    started=$SECONDS
    "$BIN/$name" >>"$log" 2>&1 &
    child=$!
    echo "$child" >"$RUN/pids/$name.pid"
    rc=0
    wait "$child" || rc=$?
    child=""
    rm -f "$RUN/pids/$name.pid"
    [[ -f "$RUN/pids/$name.stopping" ]] && exit 0
    if ((SECONDS - started >= 60)); then delay=1; fi
    printf '{"timestamp":"%s","level":"ERROR","message":"exited unexpectedly (status %s); starting it again in %s s","service":"%s","target":"supervisor"}\n' \
      "$(date -u +%FT%T.%6NZ)" "$rc" "$delay" "$name" >>"$log"
    # In the background, so that `stop`'s TERM is handled at once.
    sleep "$delay" &
    wait $! || true
    [[ -f "$RUN/pids/$name.stopping" ]] && exit 0
    delay=$((delay * 2 > 30 ? 30 : delay * 2))
  done
}

# `start` and `stop` take turns (two `make run` at once would leave a
# supervisor `stop` does not know of). Released at exit; the supervisors
# never hold it (9>&-).
take_turn() {
  exec 9>"$RUN/pids/services.lock"
  flock 9
}

start() {
  take_turn
  # Topics and ACLs of the deployment, as the Kafka administrator.
  "$BIN/licensectl" kafka provision \
    --config "$LICENSING_KAFKA_CLIENTS/admin.properties" --prefix "$LICENSING_TOPIC_PREFIX"
  for entry in "${SERVICES[@]}"; do
    IFS=: read -r name port db <<<"$entry"
    pidfile="$RUN/pids/$name.supervisor.pid"
    if pid="$(live_pid "$pidfile" supervisor "$name")"; then
      echo "$name already running (supervisor pid $pid)"
      continue
    fi
    rm -f "$RUN/pids/$name.stopping"
    role="licensing_${db}"
    serving_url="postgres://$role:$(pg_password "$role")@127.0.0.1:$LICENSING_PG_PORT/$db"
    LICENSING_DATABASE_URL="$serving_url" \
    LICENSING_DATABASE_MIGRATION_URL="postgres://licensing_owner:$(pg_password licensing_owner)@127.0.0.1:$LICENSING_PG_PORT/$db" \
      "$BIN/$name" migrate >>"$RUN/logs/$name.log" 2>&1 \
      || { echo "$name: migrating failed; see .run/logs/$name.log" >&2; exit 1; }
    LICENSING_SIGNING_KEY_FILE="$RUN/$name-signing.pem" \
    LICENSING_HTTP_ADDR="127.0.0.1:$port" \
    LICENSING_DATABASE_URL="$serving_url" \
    LICENSING_KAFKA_BROKERS="$LICENSING_KAFKA_BROKERS" \
    LICENSING_KAFKA_PROPERTIES_FILE="$LICENSING_KAFKA_CLIENTS/$name.properties" \
      nohup setsid bash "$ROOT/infra/services.sh" supervise "$name" >/dev/null 2>&1 9>&- &
    echo $! >"$pidfile"
  done
  for entry in "${SERVICES[@]}"; do
    IFS=: read -r name port _ <<<"$entry"
    for _ in $(seq 1 120); do
      if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
      sleep 0.5
    done
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
      echo "$name  http://127.0.0.1:$port"
    else
      echo "$name did not become ready; see .run/logs/$name.log" >&2
      exit 1
    fi
  done
  # The seed catalog; a product that exists already answers 409.
  for seed in "$ROOT"/infra/seed/*.json; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:8081/v1/products" \
      -H "Authorization: Bearer $LICENSING_ADMIN_KEY" -H 'content-type: application/json' \
      --data-binary "@$seed")
    [[ "$code" == 201 || "$code" == 409 ]] || echo "seeding $(basename "$seed"): HTTP $code" >&2
  done
  echo "admin key (also in .run/admin.key): $LICENSING_ADMIN_KEY"
  echo "Kafka (SASL_SSL): every topic readable with $LICENSING_KAFKA_CLIENTS/operator.properties;"
  echo "  internal services send commands with $LICENSING_KAFKA_CLIENTS/caller.properties"
}

stop() {
  take_turn
  for entry in "${SERVICES[@]}"; do
    IFS=: read -r name _ _ <<<"$entry"
    touch "$RUN/pids/$name.stopping"
    for kind in supervisor service; do
      pidfile="$RUN/pids/$name.pid"
      [[ "$kind" == supervisor ]] && pidfile="$RUN/pids/$name.supervisor.pid"
      if pid="$(live_pid "$pidfile" "$kind" "$name")"; then
        kill -TERM "$pid"
        for _ in $(seq 1 60); do ours "$pid" "$kind" "$name" || break; sleep 0.5; done
        if ours "$pid" "$kind" "$name"; then kill -KILL "$pid"; fi
      fi
      rm -f "$pidfile"
    done
    rm -f "$RUN/pids/$name.stopping"
    echo "$name stopped"
  done
}

# Each service's pid, port, readiness (its /readyz, within a second) and
# relay role (whether this instance holds its context's relay lock).
status() {
  printf '%-15s %-8s %-6s %-10s %-9s %s\n' service pid port readiness relay restarts
  for entry in "${SERVICES[@]}"; do
    IFS=: read -r name port _ <<<"$entry"
    pid="$(live_pid "$RUN/pids/$name.pid" service "$name" || echo -)"
    ready="$(curl -s -m 1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)"
    case "$ready" in 200) ready=ready ;; 503) ready=not-ready ;; *) ready=down ;; esac
    relay="$(curl -s -m 1 "http://127.0.0.1:$port/metrics" 2>/dev/null | sed -n 's/^relay_active{[^}]*} //p' | head -n1)"
    case "$relay" in 1) relay=active ;; 0) relay=standby ;; *) relay=- ;; esac
    restarts="$(grep -c '"target":"supervisor"' "$RUN/logs/$name.log" 2>/dev/null || true)"
    printf '%-15s %-8s %-6s %-10s %-9s %s\n' "$name" "$pid" "$port" "$ready" "$relay" "${restarts:-0}"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  supervise) supervise "$2" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
