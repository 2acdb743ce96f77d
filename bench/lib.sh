# bench/lib.sh: what the bench scripts (run.sh, activation.sh, domain.sh,
# grants.sh) share: set-up against this checkout's infrastructure, release
# build, run identity, services on free 127.0.0.1 ports, the idle wait and
# the watchdog, CPU sampling, wrk runs, results merging, and the cleanup that
# stops everything a run started and removes its databases and topics.
# Sourced, never run:
#
#   set -euo pipefail
#   BENCH_NAME=bench-foo            # prefix of every message
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# On sourcing it cds to the checkout, reads .run/infra.env and sets PG_BASE
# and BROKERS. A script then sets its knobs (PARTITIONS, DB_POOL,
# SERVICE_LOG are read by spawn_service), calls build_release, new_run,
# install_traps, and lists what cleanup removes in BENCH_DBS (dropped once
# DBS_CREATED=1) and TOPIC_REGEX (default "<PREFIX>\..*"); a function
# `cleanup_hook`, when defined, runs after the services stopped.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
[[ -f .run/infra.env ]] || { echo "bench: .run/infra.env missing; run 'make infra-up'" >&2; exit 1; }
# shellcheck disable=SC1091
source .run/infra.env
PG_BASE="$LICENSING_DATABASE_BASE_URL"
BROKERS="$LICENSING_KAFKA_BROKERS"
OUT="$ROOT/.run/bench"

say() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$BENCH_NAME" "$*" >&2; exit 1; }
require_tools() { local t; for t in "$@"; do command -v "$t" >/dev/null || die "$t is required"; done; }

# --- build -----------------------------------------------------------------------
# Release binaries of the given packages (unless BENCH_SKIP_BUILD=1), then
# COMMIT, DIRTY_PATHS (changed paths, those matching DIRTY_EXCLUDE left out;
# taken now: other work may change the tree while the run goes on), BIN and
# LOADGEN. Every package must build a binary of its own name.
DIRTY_EXCLUDE='bench/|docs/benchmarks\.md'
build_release() {   # package...
  local b args=(-p licensectl)   # provisions each run's topics and ACLs
  for b in "$@"; do args+=(-p "$b"); done
  if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    say "building release binaries (cargo build --release ${args[*]})"
    cargo build --release -q "${args[@]}"
  fi
  COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  DIRTY_PATHS="$({ git status --porcelain 2>/dev/null || true; } \
    | { grep -vE "^(\\?\\?| M) ($DIRTY_EXCLUDE)" || true; } | jq -R . | jq -sc .)"
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
  for b in "$@"; do [[ -x "$BIN/$b" ]] || die "$BIN/$b missing"; done
  LOADGEN="$BIN/loadgen"
}

# --- run identity ------------------------------------------------------------------
# RAND, RUN_ID, DIR (.run/bench/<run><suffix>, created), and the per-run
# secrets: the bootstrap admin key and the license-key secret.
new_run() {         # [dir_suffix]
  RAND="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
  RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)_$RAND"
  DIR="$OUT/$RUN_ID${1:-}"
  mkdir -p "$DIR"
  ADMIN_KEY="AKIDbench.$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  KEY_SECRET="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
}

# --- cleanup ---------------------------------------------------------------------
declare -A PIDS=() PORTS=()
BENCH_DBS=()
DBS_CREATED=0
TOPIC_REGEX=""
KEPT_TOPICS=""
WATCHDOG=""
WRK_PID=""
BG_PIDS=()
cleanup() {
  local rc=$? name db pid
  trap - EXIT INT TERM
  [[ -n "$WATCHDOG" ]] && kill "$WATCHDOG" 2>/dev/null || true
  [[ -n "$WRK_PID" ]] && kill "$WRK_PID" 2>/dev/null || true
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for name in "${!PIDS[@]}"; do stop_service "$name"; done
  if declare -F cleanup_hook >/dev/null; then cleanup_hook || true; fi
  if [[ "${BENCH_KEEP:-0}" != 1 ]]; then
    if (( DBS_CREATED )); then
      for db in "${BENCH_DBS[@]}"; do
        psql -q "$PG_BASE/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
      done
      drop_topics || true
    fi
  else
    say "kept databases ${BENCH_DBS[*]} and topics ${KEPT_TOPICS:-$PREFIX.*}"
  fi
  exit "$rc"
}
install_traps() {
  trap cleanup EXIT
  trap 'say "interrupted"; exit 130' INT TERM
}

# Best effort: the run's topics, with the broker's own TopicCommand.
drop_topics() {
  local cache="${LICENSING_KAFKA_CACHE:-$HOME/.cache/licensing/kafka-4.1.1}"
  command -v java >/dev/null && [[ -d "$cache/libs" ]] || return 0
  local cfg=(); [[ -f .run/kafka/admin.java.properties ]] && cfg=(--command-config .run/kafka/admin.java.properties)
  timeout 60 java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xlog:disable \
    -Dlicensing.kafka.log.level=OFF "-Dlog4j2.configurationFile=$ROOT/infra/kafka/log4j2.xml" \
    -cp "$cache/libs/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BROKERS" \
    "${cfg[@]}" --delete --topic "${TOPIC_REGEX:-$PREFIX\\..*}" >/dev/null 2>&1
}

# Bounded: TERMs the script after `secs` seconds (one-second sleeps: killing
# the watchdog leaves no long sleep behind).
start_watchdog() {  # secs
  local secs="$1"
  ( for _ in $(seq 1 "$secs"); do sleep 1; done
    say "deadline of ${secs}s reached; aborting"; kill -TERM $$ ) 2>/dev/null &
  WATCHDOG=$!
}

# --- helpers ---------------------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 12000 ))   # below the ephemeral range
    port_free "$p" && { echo "$p"; return; }
  done
  die "no free port"
}
now_ms() { date +%s%3N; }
sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# The run's topics and ACLs (PREFIX, PARTITIONS), as the Kafka
# administrator; once per run.
PROVISIONED=""
provision() {
  [[ "$PROVISIONED" == "$PREFIX" ]] && return 0
  "$BIN/licensectl" kafka provision --config "$LICENSING_KAFKA_CLIENTS/admin.properties" \
    --prefix "$PREFIX" --partitions "$PARTITIONS" >>"$DIR/provision.log" 2>&1 \
    || die "provisioning $PREFIX failed; see $DIR/provision.log"
  PROVISIONED="$PREFIX"
}

# name binary db_url [VAR=value ...] -> PIDS[name], PORTS[name]; does not
# wait. Environment: the run's settings, then SPAWN_ENV (the script's own
# defaults), then the arguments (later assignments win). Each service runs
# as its own Kafka principal (binary = role). Log: $DIR/<name>.log.
SPAWN_ENV=()
# Every service signs (checkpoints at least): a key of its own per run
# unless the caller names one (a later assignment wins).
spawn_service() {
  local name="$1" bin="$2" db="$3" port; shift 3
  provision
  port="$(free_port)"
  env LICENSING_HTTP_ADDR="127.0.0.1:$port" \
    LICENSING_DATABASE_URL="$db" \
    LICENSING_KAFKA_BROKERS="$BROKERS" \
    LICENSING_KAFKA_PROPERTIES_FILE="$LICENSING_KAFKA_CLIENTS/$bin.properties" \
    LICENSING_TOPIC_PREFIX="$PREFIX" \
    LICENSING_TOPIC_PARTITIONS="$PARTITIONS" \
    LICENSING_DB_POOL_SIZE="$DB_POOL" \
    LICENSING_CONFIG_DIR=/nonexistent \
    LICENSING_ADMIN_KEY="$ADMIN_KEY" \
    LICENSING_SIGNING_KEY_FILE="$DIR/$name-signing.pem" LICENSING_SIGNING_KEY_GENERATE=true \
    RUST_LOG="$SERVICE_LOG" \
    "${SPAWN_ENV[@]}" "$@" "$BIN/$bin" >>"$DIR/$name.log" 2>&1 &
  PIDS[$name]=$!
  PORTS[$name]=$port
}
# All five services, as a user runs them (issue 17: every benchmark runs
# the whole stack, whose consumers and replicas take their share of the
# machine): fresh databases bench_<tag>_<service>_<RAND> (DB_ISS, DB_ACT,
# DB_DOM, DB_GS, DB_PROJ), their signing keys in $DIR, ready on return, at
# ISS, ACT, DOM, GS and PROJ. Extra environment for one service:
# STACK_ENV_<name>=(...) arrays (name with _ for -), e.g. STACK_ENV_activation.
spawn_stack() {     # tag
  local tag="$1" svc db var
  DB_ISS="bench_${tag}_issuance_$RAND"; DB_ACT="bench_${tag}_activation_$RAND"
  DB_DOM="bench_${tag}_domain_$RAND"; DB_GS="bench_${tag}_grants_$RAND"
  DB_PROJ="bench_${tag}_projector_$RAND"
  BENCH_DBS+=("$DB_ISS" "$DB_ACT" "$DB_DOM" "$DB_GS" "$DB_PROJ")
  DBS_CREATED=1
  for db in "$DB_ISS" "$DB_ACT" "$DB_DOM" "$DB_GS" "$DB_PROJ"; do
    sql "$PG_BASE/postgres" -c "CREATE DATABASE $db"
  done
  declare -A dbs=([issuance]="$DB_ISS" [activation]="$DB_ACT" [domain-binding]="$DB_DOM"
                  [grant-sync]="$DB_GS" [projector]="$DB_PROJ")
  for svc in issuance activation domain-binding grant-sync projector; do
    var="STACK_ENV_${svc//-/_}[@]"
    spawn_service "$svc" "$svc" "$PG_BASE/${dbs[$svc]}" \
      LICENSING_LICENSE_KEY_SECRET="$KEY_SECRET" \
      LICENSING_UPSTREAM_SECRET_KEY_FILE="$DIR/upstream-secret.key" LICENSING_UPSTREAM_SECRET_KEY_GENERATE=true \
      ${!var+"${!var}"}
  done
  for svc in issuance activation domain-binding grant-sync projector; do wait_ready "$svc"; done
  ISS="http://127.0.0.1:${PORTS[issuance]}"; ACT="http://127.0.0.1:${PORTS[activation]}"
  DOM="http://127.0.0.1:${PORTS[domain-binding]}"; GS="http://127.0.0.1:${PORTS[grant-sync]}"
  PROJ="http://127.0.0.1:${PORTS[projector]}"
}
wait_ready() {      # name [timeout_s]
  local name="$1" limit="${2:-60}" url="http://127.0.0.1:${PORTS[$1]}/readyz"
  for _ in $(seq 1 $((limit * 10))); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    kill -0 "${PIDS[$name]}" 2>/dev/null || die "$name exited; see $DIR/$name.log"
    sleep 0.1
  done
  die "$name not ready after ${limit}s; see $DIR/$name.log"
}
stop_service() {
  local name="$1" pid="${PIDS[$1]:-}"
  [[ -n "$pid" ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$name]"
}
# As the admin: body in $DIR/call.out, status on stdout.
call() {            # method url [json]
  local args=(-sS -o "$DIR/call.out" -w '%{http_code}' --max-time 20 -X "$1" "$2"
    -H "authorization: Bearer $ADMIN_KEY")
  if [[ $# -ge 3 ]]; then
    args+=(-H 'content-type: application/json' -H "idempotency-key: $(cat /proc/sys/kernel/random/uuid)"
      --data-binary "$3")
  fi
  curl "${args[@]}"
}

# --- the machine -------------------------------------------------------------------
machine_busy() {    # busy cores of the whole machine over `secs` (default 2)
  local a b secs="${1:-2}"
  read -r -a a < <(head -n1 /proc/stat); sleep "$secs"; read -r -a b < <(head -n1 /proc/stat)
  local busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[6]+a[7]+a[8]) ))
  awk -v b="$busy" -v hz="$(getconf CLK_TCK)" -v s="$secs" 'BEGIN { printf "%.2f", b / hz / s }'
}
# Figures only mean something on an otherwise idle machine: wait (at most
# IDLE_WAIT seconds) for background load (builds, tests) to go away; what
# remained is BACKGROUND.
wait_idle() {       # [message suffix]
  local waited=0
  BACKGROUND="$(machine_busy 2)"
  while awk -v b="$BACKGROUND" 'BEGIN { exit !(b > 0.25) }' && (( waited < IDLE_WAIT )); do
    (( waited == 0 )) && say "machine busy ($BACKGROUND cores in use by other processes); waiting up to ${IDLE_WAIT}s${1:-}"
    BACKGROUND="$(machine_busy 3)"; waited=$((waited + 3))
  done
  if awk -v b="$BACKGROUND" 'BEGIN { exit !(b > 0.25) }'; then
    say "WARNING: $BACKGROUND cores busy before the run; figures will be pessimistic"
    ps -eo pcpu=,comm= --sort=-pcpu | head -n 5 | sed "s/^/$BENCH_NAME:   /" >&2
  fi
  return 0
}
# Waits (at most `secs`) until two readings in a row of the machine's busy
# cores, 2 s each, are below 0.6: a running stack's consumers and relays
# have caught up with what the last phase produced.
settle() {          # secs
  local t0 calm=0
  t0=$(now_ms)
  while (( calm < 2 && $(now_ms) - t0 < $1 * 1000 )); do
    if awk -v b="$(machine_busy 2)" 'BEGIN { exit !(b < 0.6) }'; then calm=$((calm + 1)); else calm=0; fi
  done
  say "settled in $(( ($(now_ms) - t0) / 1000 )) s"
}
# This checkout's PostgreSQL (postmaster = parent of its checkpointer) and
# Kafka broker: other stacks on the same machine are not counted as ours.
locate_infra() {
  PG_PID="$(sql "$PG_BASE/postgres" -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")"
  PG_PID="$(awk '{ print $4 }' "/proc/$PG_PID/stat" 2>/dev/null || true)"
  KAFKA_PID="$(cat .run/kafka/kafka.pid 2>/dev/null || true)"
  [[ "$PG_PID" =~ ^[0-9]+$ ]] || die "cannot find the PostgreSQL postmaster"
  [[ "$KAFKA_PID" =~ ^[0-9]+$ ]] && kill -0 "$KAFKA_PID" 2>/dev/null || die "cannot find the Kafka broker (.run/kafka/kafka.pid)"
}

# --- CPU ---------------------------------------------------------------------------
# CPU ticks of Postgres (with its backends), Kafka, every running service
# and any extra name=pid / name=tree:pid, and of the whole machine.
cpu_snap() {        # file [name=pid ...]
  local file="$1"; shift
  local args=("postgres=tree:$PG_PID" "kafka=$KAFKA_PID" "$@")
  for name in "${!PIDS[@]}"; do args+=("$name=${PIDS[$name]}"); done
  "$LOADGEN" cpu "${args[@]}" >"$file"
}
# Cores used per group between two snapshots taken `secs` apart, machine
# busy, other (= machine busy - ours) and steal.
cpu_diff() {        # before after secs
  jq -n --slurpfile a "$1" --slurpfile b "$2" --argjson secs "$3" --argjson hz "$(getconf CLK_TCK)" '
    ($a[0]) as $a | ($b[0]) as $b
    | ([$b | keys[] | select(startswith("machine_") | not)
        | {key: ., value: ((($b[.] - ($a[.] // 0)) / $hz / $secs * 100 | round) / 100)}] | from_entries)
    | (([to_entries[] | .value] | add) // 0) as $ours
    | . + {machine_busy_cores: ((($b.machine_busy - $a.machine_busy) / $hz / $secs * 100 | round) / 100)}
    | . + {other: (((.machine_busy_cores - $ours) * 100 | round) / 100)}
    | . + {steal: ((((($b.machine_steal // 0) - ($a.machine_steal // 0))) / $hz / $secs * 100 | round) / 100)}'
}
# A loadgen phase with CPU snapshots around it: $DIR/<tag>.json, cpu-<tag>.json.
measured() {        # tag timeout loadgen-args...
  local tag="$1" limit="$2" t0 t1; shift 2
  cpu_snap "$DIR/cpu-$tag-0.json"; t0=$(now_ms)
  timeout "$limit" "$LOADGEN" "$@" >"$DIR/$tag.json" || die "loadgen $tag failed (see above)"
  t1=$(now_ms); cpu_snap "$DIR/cpu-$tag-1.json"
  cpu_diff "$DIR/cpu-$tag-0.json" "$DIR/cpu-$tag-1.json" "$(( t1 - t0 ))e-3" >"$DIR/cpu-$tag.json"
}

# --- where the database time goes ------------------------------------------------------
# pg_stat_statements (loaded by infra/postgres/up.sh): reset before a phase,
# then the statements that took the most execution time during it, across
# this run's databases, as JSON lines in `file` (and the top 12 on stderr).
pg_statements_reset() {
  sql "$PG_BASE/postgres" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
    -c "SELECT pg_stat_statements_reset()" >/dev/null
}
pg_statements_top() {   # file [per_units]
  sql "$PG_BASE/postgres" -c "
    SELECT json_build_object('database', d.datname, 'calls', s.calls,
             'total_ms', round(s.total_exec_time::numeric, 1),
             'mean_ms', round(s.mean_exec_time::numeric, 3), 'rows', s.rows,
             'query', left(regexp_replace(s.query, '\s+', ' ', 'g'), 160))
      FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
     WHERE d.datname LIKE '%$RAND%'
     ORDER BY s.total_exec_time DESC LIMIT 25" >"$1"
  jq -r '"  \(.total_ms) ms  \(.calls) calls  \(.database | sub("_[0-9a-f]+$"; ""))  \(.query[0:110])"' "$1" | head -n 12 >&2
}

# --- database counters -------------------------------------------------------------
# Cumulative counters of a database (flushed by backends within ~1 s).
db_stats() {        # db_url file
  sleep 1.5
  sql "$1" -c "SELECT json_build_object('xact_commit', xact_commit, 'tup_inserted', tup_inserted,
    'tup_updated', tup_updated, 'tup_fetched', tup_fetched, 'tup_returned', tup_returned,
    'blks_hit', blks_hit, 'blks_read', blks_read)
    FROM pg_stat_database WHERE datname = current_database()" >"$2"
}
per_unit() {        # before after units -> counters per unit
  jq -n --slurpfile a "$1" --slurpfile b "$2" --argjson n "$3" '
    $a[0] as $a | $b[0] as $b | [$b | keys[] | {key: ., value: ((($b[.] - $a[.]) / $n * 100 | round) / 100)}] | from_entries'
}

# --- wrk ---------------------------------------------------------------------------
# wrk, installed with apt when missing; WRK_VERSION.
ensure_wrk() {
  if ! command -v wrk >/dev/null; then
    say "wrk not found; installing it (apt-get install wrk)"
    { apt-get update -qq && apt-get install -y -qq wrk; } >&2 \
      || die "could not install wrk with apt-get; install wrk 4.x and rerun"
    command -v wrk >/dev/null || die "apt-get installed no wrk binary"
  fi
  WRK_VERSION="$(wrk -v 2>&1 | head -n1 | awk '{ print $1, $2 }' || true)"
}
# utime,stime (ticks) of a /proc/<pid>/stat (the command name may hold spaces).
ut_st() { sed 's/^.*) //' "$1" | awk '{ print $12 "," $13 }'; }
# One wrk run of the Lua script WRK_SCRIPT with WRK_THREADS threads:
# $DIR/<tag>.wrk.txt (wrk's own report) and <tag>.wrk.json (what the
# script's done() writes to $BENCH_WRK_OUT); with `measure`, CPU per process
# over the run minus 1 s at either end, wrk's included, and the user/system
# split of the service WRK_SERVICE (<service>_user, <service>_sys).
# The seed catalog (infra/seed, as `make run` and the e2e tests): licenses
# need their product.
seed_catalog() {    # base_url
  local f code
  for f in infra/seed/*.json; do
    [[ -f "$f" ]] || continue
    code="$(curl -sS -o "$DIR/seed.out" -w '%{http_code}' -X POST "$1/v1/products" \
      -H "authorization: Bearer $ADMIN_KEY" -H 'content-type: application/json' \
      -H "idempotency-key: $(cat /proc/sys/kernel/random/uuid)" --data-binary "@$f")"
    [[ "$code" == 201 || "$code" == 409 ]] || die "seeding $f on $1: HTTP $code $(cat "$DIR/seed.out")"
  done
}

# The start of every wrk script: each thread gets its number (tid) for its
# offset into reqs[1..n], which the script's init fills.
wrk_lua_head() {
  cat <<'LUA'
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

local reqs, n, i = {}, 0, 0
LUA
}

# The end of every wrk script: rotate over reqs[1..n] (each thread from its
# own offset, set by its init) and write the summary JSON run_wrk reads.
wrk_lua_tail() {
  cat <<'LUA'

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  local f = assert(io.open(os.getenv("BENCH_WRK_OUT"), "w"))
  f:write(string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
  f:close()
end
LUA
}

# The whole wrk script for a list of requests: BENCH_WRK_REQS names a file of
# lines "METHOD<TAB>path<TAB>JSON body (may be empty)", each sent with
# `Authorization: Bearer $BENCH_WRK_TOKEN`, formatted once in init and
# rotated over, each thread from its own offset.
wrk_requests_lua() {
  wrk_lua_head
  cat <<'LUA'
-- Written by bench/lib.sh (wrk_requests_lua).
local token = os.getenv("BENCH_WRK_TOKEN")
local reqs_file = os.getenv("BENCH_WRK_REQS")

function init(args)
  local headers = { ["Authorization"] = "Bearer " .. token }
  local json = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
  for line in io.lines(reqs_file) do
    local method, path, body = line:match("^(%u+)\t([^\t]+)\t?(.*)$")
    assert(method, "bad request line: " .. line)
    n = n + 1
    if body == "" then
      reqs[n] = wrk.format(method, path, headers)
    else
      reqs[n] = wrk.format(method, path, json, body)
    end
  end
  assert(n > 0, "no requests")
  i = math.floor(((tid or 0) * n) / 2) % n
end
LUA
  wrk_lua_tail
}

run_wrk() {         # tag url connections secs measure|warmup
  local tag="$1" url="$2" conns="$3" secs="$4" t0 t1
  rm -f "$DIR/$tag.wrk.json"
  BENCH_WRK_OUT="$DIR/$tag.wrk.json" timeout $((secs + 30)) wrk --latency -t "$WRK_THREADS" -c "$conns" \
    -d "${secs}s" -s "$WRK_SCRIPT" "$url" >"$DIR/$tag.wrk.txt" 2>&1 &
  WRK_PID=$!
  if [[ "$5" == measure ]]; then
    local stat="/proc/${PIDS[$WRK_SERVICE]}/stat" a b
    sleep 1
    cpu_snap "$DIR/cpu-$tag-0.json" "wrk=tree:$WRK_PID"; t0=$(now_ms); a="$(ut_st "$stat")"
    sleep $((secs - 2))
    t1=$(now_ms); b="$(ut_st "$stat")"; cpu_snap "$DIR/cpu-$tag-1.json" "wrk=tree:$WRK_PID"
    cpu_diff "$DIR/cpu-$tag-0.json" "$DIR/cpu-$tag-1.json" "$(( t1 - t0 ))e-3" \
      | jq --argjson a "[$a]" --argjson b "[$b]" --argjson secs "$(( t1 - t0 ))e-3" --argjson hz "$(getconf CLK_TCK)" \
          --arg svc "$WRK_SERVICE" '
          . + {("\($svc)_user"): ((($b[0] - $a[0]) / $hz / $secs * 100 | round) / 100),
               ("\($svc)_sys"): ((($b[1] - $a[1]) / $hz / $secs * 100 | round) / 100)}' >"$DIR/cpu-$tag.json"
  fi
  wait "$WRK_PID" || { WRK_PID=""; cat "$DIR/$tag.wrk.txt" >&2; die "wrk $tag failed"; }
  WRK_PID=""
  [[ -s "$DIR/$tag.wrk.json" ]] || { cat "$DIR/$tag.wrk.txt" >&2; die "wrk $tag wrote no summary"; }
}

# A service logs one line per request (~300 bytes; gigabytes per wrk run):
# keep the other lines and a count of those of `path` (a regular
# expression matched against the line's "path" value).
slim_log() {        # file path_regex who
  [[ -f "$1" ]] || return 0
  local n re="\"message\":\"request completed\".*\"path\":\"$2\""
  n="$(grep -c "$re" "$1" || true)"
  (( n > 0 )) || return 0
  grep -v "$re" "$1" >"$1.slim" || true
  printf '{"bench":"%s removed %s request-completed lines of %s from this log"}\n' "$3" "$n" "$2" >>"$1.slim"
  mv "$1.slim" "$1"
}

# --- the pgbench reference -----------------------------------------------------------
# What an IssueLicense is compared with: pgbench inserting one ~300-byte
# JSON row per transaction into a new table `bench_rows` of database `db`,
# `clients` clients, 2 threads, `secs` seconds. Sets PG_TPS; pgbench's
# report in $DIR/pgbench.txt, CPU per process in $DIR/cpu-pgbench.json.
PGBIN="${LICENSING_PG_BIN:-/usr/lib/postgresql/15/bin}"
pgbench_rows() {    # db clients secs
  local db="$1" clients="$2" secs="$3" t0 t1
  [[ -x "$PGBIN/pgbench" ]] || die "$PGBIN/pgbench not found"
  sql "$PG_BASE/$db" -c "CREATE TABLE bench_rows (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payload json NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now())"
  cat >"$DIR/pgbench.sql" <<'EOF'
\set n random(1, 1000000000)
INSERT INTO bench_rows (payload) VALUES (('{"license_id":"' || gen_random_uuid() || '","product":"integration-platform","edition":"mainland","customer":"ACME Corp","kind":"formal","features":["data-access"],"issued_at":"' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '","command_id":"' || gen_random_uuid() || '","actor":{"kind":"service","id":"pgbench"},"n":' || :n || '}')::json);
EOF
  cpu_snap "$DIR/cpu-pgbench-0.json"; t0=$(now_ms)
  PGPASSWORD=licensing timeout $((secs + 60)) "$PGBIN/pgbench" -h 127.0.0.1 -p "$LICENSING_PG_PORT" \
    -U licensing -n -c "$clients" -j 2 -T "$secs" -f "$DIR/pgbench.sql" "$db" \
    >"$DIR/pgbench.txt" 2>"$DIR/pgbench.err"
  t1=$(now_ms); cpu_snap "$DIR/cpu-pgbench-1.json"
  cpu_diff "$DIR/cpu-pgbench-0.json" "$DIR/cpu-pgbench-1.json" "$(( t1 - t0 ))e-3" >"$DIR/cpu-pgbench.json"
  PG_TPS="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$DIR/pgbench.txt")"
  [[ -n "$PG_TPS" ]] || die "could not read pgbench tps; see $DIR/pgbench.txt"
}

# --- commit -> projector row at a steady rate ---------------------------------------
# An open loop of `rate` IssueLicense/s for `secs` s against $ISS (correlation
# id bench-<tag>-<RAND>), waiting at most 60 s for its events to reach the
# projector's audit_trail. For each event, commit -> projector row is the
# commit time of its row in issuance's `events` to the commit time of its
# `audit_trail` row, both from PostgreSQL's commit timestamps
# (track_commit_timestamp, on in infra/postgres/up.sh; one server, one
# clock), joined by event id; the relay's share (commit -> Kafka checkpoint)
# from `loadgen relay-trace`. Writes $DIR/<tag>.json: {http, commit_to_row,
# commit_to_relay_checkpoint, cpu_cores}.
latency_step() {    # tag rate secs issuance_db_url projector_db_url
  local tag="$1" rate="$2" secs="$3" iss_db="$4" proj_db="$5" corr="bench-$1-$RAND" ok n t0 t1 trace
  local commit_us="(extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint"
  cpu_snap "$DIR/cpu-$tag-0.json"; t0=$(now_ms)
  timeout $((secs + 60)) "$LOADGEN" relay-trace --db "$iss_db" --correlation-id "$corr" \
    --duration $((secs + 15)) --interval-ms 10 >"$DIR/$tag-relay.json" &
  trace=$!
  timeout $((secs + 60)) "$LOADGEN" http-issue ${BODY_ARGS[@]+"${BODY_ARGS[@]}"} --url "$ISS" --rate "$rate" \
    --duration "$secs" --max-inflight 512 --threads 1 --correlation-id "$corr" >"$DIR/$tag-http.json"
  ok="$(jq .ok "$DIR/$tag-http.json")"
  for _ in $(seq 1 600); do
    n="$(sql "$proj_db" -c "SELECT count(*) FROM audit_trail WHERE correlation_id = '$corr'")"
    (( n >= ok )) && break
    sleep 0.1
  done
  t1=$(now_ms); cpu_snap "$DIR/cpu-$tag-1.json"
  wait "$trace" || { say "WARNING: relay trace failed"; echo null >"$DIR/$tag-relay.json"; }
  cpu_diff "$DIR/cpu-$tag-0.json" "$DIR/cpu-$tag-1.json" "$(( t1 - t0 ))e-3" >"$DIR/cpu-$tag.json"
  sql "$iss_db" -F $'\t' -c "SELECT event_id, $commit_us FROM events
    WHERE metadata->>'correlation_id' = '$corr' ORDER BY 1" >"$DIR/$tag-commit-issuance.tsv"
  sql "$proj_db" -F $'\t' -c "SELECT event_id, $commit_us FROM audit_trail
    WHERE correlation_id = '$corr' ORDER BY 1" >"$DIR/$tag-commit-projector.tsv"
  LC_ALL=C join -t $'\t' "$DIR/$tag-commit-issuance.tsv" "$DIR/$tag-commit-projector.tsv" \
    | awk -F '\t' '$2 != "" && $3 != "" { print $3 - $2 }' | sort -n >"$DIR/$tag-commit-to-row.us"
  awk -v events="$(wc -l <"$DIR/$tag-commit-issuance.tsv")" '{ v[NR] = $1 }
    function ms(q,  r, i) { r = q * NR; i = int(r); if (i < r) i++; if (i < 1) i = 1; return sprintf("%.2f", v[i] / 1000) }
    END { if (NR == 0) { printf "{\"events\":%d,\"with_both_commit_times\":0,\"p50_ms\":null,\"p99_ms\":null,\"max_ms\":null}\n", events; exit }
          printf "{\"events\":%d,\"with_both_commit_times\":%d,\"p50_ms\":%s,\"p99_ms\":%s,\"max_ms\":%s}\n", events, NR, ms(0.5), ms(0.99), ms(1) }' \
    "$DIR/$tag-commit-to-row.us" \
    | jq -c '. + {method: "pg_xact_commit_timestamp(xmin) of the event row in issuance.events and of its audit_trail row"}' \
    >"$DIR/$tag-commit-to-row.json"
  jq -n --slurpfile h "$DIR/$tag-http.json" --slurpfile r "$DIR/$tag-relay.json" \
    --slurpfile p "$DIR/$tag-commit-to-row.json" --slurpfile c "$DIR/cpu-$tag.json" \
    '{http: $h[0], commit_to_row: $p[0], commit_to_relay_checkpoint: $r[0], cpu_cores: $c[0]}' >"$DIR/$tag.json"
  jq -c '{rate: .http.target_rate_per_s, achieved: .http.achieved_rate_per_s, http_ms: .http.latency_ms, commit_to_row: .commit_to_row, relay_ms: .commit_to_relay_checkpoint.commit_to_published_ms}' "$DIR/$tag.json" >&2
}

# --- results -------------------------------------------------------------------------
# Adds (or replaces) block `key` of .run/bench/results.json with the JSON of
# `file` (the results file is created if missing; other keys are kept).
merge_results() {   # key file
  local results="$OUT/results.json"
  if [[ -s "$results" ]] && jq -e 'type == "object"' "$results" >/dev/null 2>&1; then
    jq --arg k "$1" --slurpfile d "$2" '. + {($k): $d[0]}' "$results" >"$results.tmp"
  else
    jq --arg k "$1" '{($k): .}' "$2" >"$results.tmp"
  fi
  mv "$results.tmp" "$results"
}

# --- wrk reports ---------------------------------------------------------------------
# jq definitions shared by the scripts: `wrk_record($c; $t; $cpu)` turns a wrk
# JSON report (the input, bound as $w) into one measured row.
WRK_RECORD_JQ='
  def ms: . / 1000 * 1000 | round / 1000;
  def wrk_record($c; $t; $cpu):
    . as $w
    | ($w.errors.connect + $w.errors.read + $w.errors.write + $w.errors.timeout) as $sock
    | ($w.duration_us / 1e6) as $secs
    | {connections: $c, threads: $t, seconds: ($secs * 100 | round / 100), requests: $w.requests,
       rps: ($w.requests / $secs | round),
       p50_ms: ($w.latency_us.p50 | ms), p75_ms: ($w.latency_us.p75 | ms),
       p90_ms: ($w.latency_us.p90 | ms), p99_ms: ($w.latency_us.p99 | ms),
       p999_ms: ($w.latency_us.p999 | ms), max_ms: ($w.latency_us.max | ms),
       mean_ms: ($w.latency_us.mean | ms),
       non_2xx: $w.errors.status, socket_errors: $sock, socket_error_kinds: ($w.errors | del(.status)),
       errors: ($w.errors.status + $sock),
       bytes_per_response: (if $w.requests > 0 then ($w.bytes / $w.requests | round) else null end),
       cpu_cores: $cpu};
'
