#!/usr/bin/env bash
# `make bench`: throughput and latency figures of issuance (+ projector)
# against the PostgreSQL and Kafka of infra/up.sh. See docs/benchmarks.md.
#
# Builds release binaries (unless BENCH_SKIP_BUILD=1), then in one run:
#   1. IssueLicense over HTTP, 32 closed-loop clients     -> cmd/s, p50, p99
#   1b. the same with auth on vs off (a second issuance, LICENSING_AUTH_ENABLED
#       =false), rounds alternating on/off/on/off         -> cost = 1 - on/off
#   2. pgbench: one ~300-byte JSON row per transaction     -> tps, ratio 1/2
#   3. outbox relay draining a 100,000-event SQL backlog   -> events/s
#   4. commit -> projector row latency at 500 cmd/s        -> p50, p99
# Everything it starts (services on free ports, fresh databases
# bench_{issuance,issuance_noauth,projector}_<rand>, topics <prefix>.* and
# <prefix>noauth.*) it stops and removes
# on exit; BENCH_KEEP=1 keeps databases and topics for inspection.
# Raw numbers: .run/bench/results.json (and .run/bench/<run>/).
#
# Services run with a per-run bootstrap admin key (the load generator's
# bearer token) and the seed catalog of infra/seed loaded.
# Knobs (defaults are what docs/benchmarks.md reports):
#   BENCH_CLIENTS=32 BENCH_COUNT=20000 BENCH_WARMUP=1000 BENCH_PGBENCH_SECS=20
#   BENCH_BACKLOG=100000 BENCH_RATE=500 BENCH_RATE_SECS=20 BENCH_RUST_LOG=info
#   BENCH_RATE_LOW=200 BENCH_RATE_LOW_SECS=15 (informative second open-loop step)
#   BENCH_AUTH_COUNT=10000 BENCH_AUTH_ROUNDS=2 (per arm; phase 1b)
#   BENCH_DB_POOL=40 BENCH_DEADLINE=590 (seconds after the build)
#   BENCH_BODY='{...}' (IssueLicense body; default in bench/loadgen)
set -euo pipefail

BENCH_NAME=bench
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS="${BENCH_CLIENTS:-32}"
COUNT="${BENCH_COUNT:-20000}"
WARMUP="${BENCH_WARMUP:-1000}"
PGBENCH_SECS="${BENCH_PGBENCH_SECS:-20}"
BACKLOG="${BENCH_BACKLOG:-100000}"
RATE="${BENCH_RATE:-500}"
RATE_SECS="${BENCH_RATE_SECS:-20}"
RATE_LOW="${BENCH_RATE_LOW:-200}"
RATE_LOW_SECS="${BENCH_RATE_LOW_SECS:-15}"
SERVICE_LOG="${BENCH_RUST_LOG:-info}"
DB_POOL="${BENCH_DB_POOL:-40}"
DEADLINE="${BENCH_DEADLINE:-590}"
AUTH_COUNT="${BENCH_AUTH_COUNT:-10000}"
AUTH_ROUNDS="${BENCH_AUTH_ROUNDS:-2}"
IDLE_WAIT="${BENCH_IDLE_WAIT:-120}"
BODY_ARGS=(); [[ -n "${BENCH_BODY:-}" ]] && BODY_ARGS=(--body "$BENCH_BODY")
PARTITIONS=12

require_tools jq psql curl
[[ -x "$PGBIN/pgbench" ]] || die "$PGBIN/pgbench not found"

# --- build ---------------------------------------------------------------------
build_release issuance projector loadgen

# --- run identity and cleanup -----------------------------------------------------
new_run
DB_ISS="bench_issuance_$RAND"
DB_PROJ="bench_projector_$RAND"
DB_NOAUTH="bench_issuance_noauth_$RAND"
PREFIX="bench$RAND"
PREFIX_NOAUTH="${PREFIX}noauth"
ISS_URL_DB="$PG_BASE/$DB_ISS"
PROJ_URL_DB="$PG_BASE/$DB_PROJ"
NOAUTH_URL_DB="$PG_BASE/$DB_NOAUTH"
# The bootstrap admin key is the load generator's bearer token (via the
# environment); every service gets the license-key secret and auth on
# unless told otherwise.
export LOADGEN_TOKEN="$ADMIN_KEY"
SPAWN_ENV=(LICENSING_AUTH_ENABLED=true LICENSING_LICENSE_KEY_SECRET="$KEY_SECRET")

# Cleanup (lib.sh) drops these databases and the topics of both prefixes.
BENCH_DBS=("$DB_ISS" "$DB_NOAUTH" "$DB_PROJ")
DBS_CREATED=1
TOPIC_REGEX="$PREFIX(noauth)?\\..*"
KEPT_TOPICS="$PREFIX.* $PREFIX_NOAUTH.*"
install_traps

# Bounded: the whole measured part must end within $DEADLINE seconds.
start_watchdog "$DEADLINE"

# --- helpers ---------------------------------------------------------------------
locate_infra
wait_idle " for it to go idle"

say "run $RUN_ID: databases $DB_ISS / $DB_PROJ, topic prefix $PREFIX, output $DIR"
sql "$PG_BASE/postgres" -c "CREATE DATABASE $DB_ISS" -c "CREATE DATABASE $DB_PROJ"

# Nearest-rank percentile (ms) of the pooled latencies (µs, one per line) of files.
pooled_ms() {       # q file...
  local q="$1"; shift
  cat "$@" | sort -n | awk -v q="$q" '{ v[NR] = $1 }
    END { if (NR == 0) { print "null"; exit } r = q * NR; i = int(r); if (i < r) i++; if (i < 1) i = 1
          printf "%.2f\n", v[i] / 1000 }'
}

# --- 1. IssueLicense over HTTP ----------------------------------------------------
spawn_service issuance issuance "$ISS_URL_DB"
wait_ready issuance
ISS="http://127.0.0.1:${PORTS[issuance]}"
seed_catalog "$ISS"
say "1/4 http: warm-up $WARMUP, then $COUNT IssueLicense with $CLIENTS clients ($ISS)"
timeout 60 "$LOADGEN" http-issue "${BODY_ARGS[@]}" --url "$ISS" --clients "$CLIENTS" --count "$WARMUP" \
  --correlation-id "bench-warmup-$RAND" >"$DIR/http-warmup.json"
db_stats "$ISS_URL_DB" "$DIR/db-http-0.json"
cpu_snap "$DIR/cpu-http-0.json"; t0=$(now_ms)
timeout 180 "$LOADGEN" http-issue "${BODY_ARGS[@]}" --url "$ISS" --clients "$CLIENTS" --count "$COUNT" \
  --correlation-id "bench-http-$RAND" >"$DIR/http.json"
t1=$(now_ms); cpu_snap "$DIR/cpu-http-1.json"
cpu_diff "$DIR/cpu-http-0.json" "$DIR/cpu-http-1.json" "$(( (t1 - t0) ))e-3" >"$DIR/cpu-http.json"
errs="$(jq .errors "$DIR/http.json")"
(( errs == 0 )) || die "$errs IssueLicense requests failed ($(jq -c .error_kinds "$DIR/http.json")); figures would be meaningless"
db_stats "$ISS_URL_DB" "$DIR/db-http-1.json"
per_unit "$DIR/db-http-0.json" "$DIR/db-http-1.json" "$(jq "[.ok, 1] | max" "$DIR/http.json")" >"$DIR/db-http.json"
jq -c '{throughput_per_s, latency_ms, errors}' "$DIR/http.json" >&2

# --- 1b. IssueLicense with auth on vs off ------------------------------------------
# A second issuance (same binary, its own fresh database and topic prefix,
# same seed catalog) with LICENSING_AUTH_ENABLED=false; the load generator
# sends the same bearer header to both (ignored by the open one). Rounds of
# the same closed loop alternate on/off/on/off..., auth on first, so drift
# (background load, growing tables, Kafka) falls on both arms alike. Both
# processes run throughout; only the measured one gets load.
say "1b: auth on vs off: second issuance with LICENSING_AUTH_ENABLED=false (database $DB_NOAUTH, topics $PREFIX_NOAUTH.*)"
sql "$PG_BASE/postgres" -c "CREATE DATABASE $DB_NOAUTH"
# Its own prefix's topics and ACLs: a service refuses to start without them.
PREFIX="$PREFIX_NOAUTH" provision
spawn_service issuance_noauth issuance "$NOAUTH_URL_DB" LICENSING_TOPIC_PREFIX="$PREFIX_NOAUTH" \
  LICENSING_AUTH_ENABLED=false
wait_ready issuance_noauth
ISS_OFF="http://127.0.0.1:${PORTS[issuance_noauth]}"
grep -qF 'AUTHENTICATION IS DISABLED' "$DIR/issuance_noauth.log" \
  || die "issuance_noauth did not log that authentication is disabled; see $DIR/issuance_noauth.log"
seed_catalog "$ISS_OFF"
# The same warm-up the auth-on process had before phase 1.
timeout 60 "$LOADGEN" http-issue "${BODY_ARGS[@]}" --url "$ISS_OFF" --clients "$CLIENTS" --count "$WARMUP" \
  --correlation-id "bench-warmup-noauth-$RAND" >"$DIR/auth-off-warmup.json"
AUTH_ROWS_BEFORE="$(jq -n --argjson on "$(sql "$ISS_URL_DB" -c "SELECT count(*) FROM events")" \
  --argjson off "$(sql "$NOAUTH_URL_DB" -c "SELECT count(*) FROM events")" '{on: $on, off: $off}')"
AUTH_FILES=()
say "1b: $AUTH_ROUNDS rounds per arm of $AUTH_COUNT IssueLicense, $CLIENTS clients, order on/off/on/off..."
for r in $(seq 1 "$AUTH_ROUNDS"); do
  for arm in on off; do
    if [[ "$arm" == on ]]; then url="$ISS"; svc=issuance; else url="$ISS_OFF"; svc=issuance_noauth; fi
    tag="auth-$arm-$r"
    cpu_snap "$DIR/cpu-$tag-0.json"; t0=$(now_ms)
    timeout 180 "$LOADGEN" http-issue "${BODY_ARGS[@]}" --url "$url" --clients "$CLIENTS" --count "$AUTH_COUNT" \
      --correlation-id "bench-$tag-$RAND" --latencies-out "$DIR/$tag.us" >"$DIR/$tag.json"
    t1=$(now_ms); cpu_snap "$DIR/cpu-$tag-1.json"
    cpu_diff "$DIR/cpu-$tag-0.json" "$DIR/cpu-$tag-1.json" "$(( (t1 - t0) ))e-3" >"$DIR/cpu-$tag.json"
    errs="$(jq .errors "$DIR/$tag.json")"
    (( errs == 0 )) || die "$tag: $errs IssueLicense requests failed ($(jq -c .error_kinds "$DIR/$tag.json"))"
    jq -n --arg arm "$arm" --argjson round "$r" --arg svc "$svc" --slurpfile h "$DIR/$tag.json" \
      --slurpfile c "$DIR/cpu-$tag.json" --argjson wall "$(( t1 - t0 ))e-3" '
      $h[0] as $h | $c[0] as $c
      | {arm: $arm, round: $round, throughput_per_s: $h.throughput_per_s, ok: $h.ok, errors: $h.errors,
         elapsed_s: $h.elapsed_s, latency_ms: $h.latency_ms,
         service_cores: $c[$svc], postgres_cores: $c.postgres, kafka_cores: $c.kafka,
         machine_busy_cores: $c.machine_busy_cores, other_cores: $c.other, cpu_cores: $c,
         service_cpu_ms_per_cmd: (($c[$svc] * $wall / ([$h.ok, 1] | max) * 1000000 | round) / 1000)}' \
      >"$DIR/$tag.round.json"
    AUTH_FILES+=("$DIR/$tag.round.json")
    jq -c '{arm, round, throughput_per_s, p50: .latency_ms.p50, p99: .latency_ms.p99, service_cpu_ms_per_cmd}' \
      "$DIR/$tag.round.json" >&2
  done
done
stop_service issuance_noauth
jq -s --argjson count "$AUTH_COUNT" --argjson clients "$CLIENTS" --argjson rounds "$AUTH_ROUNDS" \
  --argjson rows "$AUTH_ROWS_BEFORE" \
  --argjson on_p50 "$(pooled_ms 0.50 "$DIR"/auth-on-*.us)" --argjson on_p99 "$(pooled_ms 0.99 "$DIR"/auth-on-*.us)" \
  --argjson off_p50 "$(pooled_ms 0.50 "$DIR"/auth-off-*.us)" --argjson off_p99 "$(pooled_ms 0.99 "$DIR"/auth-off-*.us)" '
  def arm($a; $p50; $p99): [.[] | select(.arm == $a)] as $r
    | {mean_throughput_per_s: (([$r[].throughput_per_s] | add / length) * 10 | round / 10),
       rounds_throughput_per_s: [$r[].throughput_per_s],
       p50_ms_pooled: $p50, p99_ms_pooled: $p99, rounds_p99_ms: [$r[].latency_ms.p99],
       service_cpu_ms_per_cmd_mean: (([$r[].service_cpu_ms_per_cmd] | add / length) * 1000 | round / 1000)};
  arm("on"; $on_p50; $on_p99) as $on | arm("off"; $off_p50; $off_p99) as $off
  | {clients: $clients, count_per_round: $count, rounds_per_arm: $rounds,
     order: [.[] | "\(.arm)\(.round)"], events_before_rounds: $rows,
     rounds: ., on: $on, off: $off,
     cost: ((1 - $on.mean_throughput_per_s / $off.mean_throughput_per_s) * 1000 | round / 1000),
     p99_increase_ms: ((($on.p99_ms_pooled // 0) - ($off.p99_ms_pooled // 0)) * 100 | round / 100)}' \
  "${AUTH_FILES[@]}" >"$DIR/auth.json"
jq -c '{on: .on.mean_throughput_per_s, off: .off.mean_throughput_per_s, cost, p99_on: .on.p99_ms_pooled, p99_off: .off.p99_ms_pooled}' \
  "$DIR/auth.json" >&2
stop_service issuance   # idle during pgbench; must be down for the backlog

# --- 2. pgbench: one comparable row per transaction --------------------------------
say "2/4 pgbench: -c $CLIENTS -j 2 -T $PGBENCH_SECS -n, one ~300-byte json row per transaction"
db_stats "$ISS_URL_DB" "$DIR/db-pgbench-0.json"
pgbench_rows "$DB_ISS" "$CLIENTS" "$PGBENCH_SECS"
PG_LAT="$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$DIR/pgbench.txt")"
PG_TX="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$DIR/pgbench.txt")"
db_stats "$ISS_URL_DB" "$DIR/db-pgbench-1.json"
per_unit "$DIR/db-pgbench-0.json" "$DIR/db-pgbench-1.json" "${PG_TX:-1}" >"$DIR/db-pgbench.json"
PG_ROW_BYTES="$(sql "$ISS_URL_DB" -c "SELECT round(avg(octet_length(payload::text))) FROM bench_rows")"
[[ -n "$PG_TPS" ]] || die "could not read pgbench tps; see $DIR/pgbench.txt"
say "pgbench: $PG_TPS tps (latency avg $PG_LAT ms, payload $PG_ROW_BYTES bytes)"

# --- 3. relay draining a backlog -------------------------------------------------
say "3/4 relay: inserting a backlog of $BACKLOG events by SQL (issuance stopped)"
t0=$(now_ms)
sql "$ISS_URL_DB" <<EOF
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'License', id::text, 1, 'LicenseIssued', '1',
       ('{"license_id":"' || id || '","product":"integration-platform","edition":"mainland",'
        || '"customer":"ACME Corp","kind":"formal","features":["data-access"],"issued_at":"' || ts || '"}')::json,
       ('{"occurred_at":"' || ts || '","command_id":"' || gen_random_uuid()
        || '","correlation_id":"bench","actor":{"kind":"system","id":"bench"}}')::json
FROM (SELECT gen_random_uuid() AS id,
             to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS ts
        FROM generate_series(1, $BACKLOG)) AS s;
EOF
t1=$(now_ms)
INSERT_MS=$((t1 - t0))
EV_BYTES="$(sql "$ISS_URL_DB" -c "SELECT round(avg(octet_length(payload::text) + octet_length(metadata::text))) FROM events WHERE metadata->>'correlation_id' = 'bench'")"
say "backlog inserted in ${INSERT_MS} ms; starting issuance and polling relay_checkpoints every 100 ms"
cpu_snap "$DIR/cpu-relay-0.json"
t0=$(now_ms)
spawn_service issuance issuance "$ISS_URL_DB"
timeout 150 "$LOADGEN" relay-watch --db "$ISS_URL_DB" --relay issuance --t0-ms "$t0" \
  --timeout 120 --interval-ms 100 >"$DIR/relay.json"
t1=$(now_ms); cpu_snap "$DIR/cpu-relay-1.json"
cpu_diff "$DIR/cpu-relay-0.json" "$DIR/cpu-relay-1.json" "$(( (t1 - t0) ))e-3" >"$DIR/cpu-relay.json"
wait_ready issuance
ISS="http://127.0.0.1:${PORTS[issuance]}"
# When the relay took its lock and read its Kafka checkpoint (log timestamp).
ACTIVE_TS="$(grep -F '"relay active"' "$DIR/issuance.log" | tail -n1 | jq -r .timestamp 2>/dev/null || true)"
RELAY_ACTIVE_MS=null
[[ -n "$ACTIVE_TS" && "$ACTIVE_TS" != null ]] && RELAY_ACTIVE_MS=$(( $(date -d "$ACTIVE_TS" +%s%3N) - t0 ))
jq -c '{backlog, caught_up, first_move_s, caught_up_s, events_per_s_from_spawn, events_per_s_after_first_batch}' "$DIR/relay.json" >&2

# --- 4. commit -> projector latency at a steady rate --------------------------------
say "4/4 projector: catching up with the topic, then $RATE cmd/s for ${RATE_SECS}s"
TOTAL_EVENTS="$(sql "$ISS_URL_DB" -c "SELECT count(*) FROM events")"
t0=$(now_ms)
spawn_service projector projector "$PROJ_URL_DB"
wait_ready projector
CATCHUP_DONE=0; last_n=-1; still=0
for _ in $(seq 1 1800); do   # at most 180 s; gives up after 15 s without progress
  n="$(sql "$PROJ_URL_DB" -c "SELECT count(*) FROM audit_trail" 2>/dev/null || echo 0)"
  if (( n >= TOTAL_EVENTS )); then CATCHUP_DONE=1; break; fi
  if (( n == last_n )); then still=$((still + 1)); else still=0; last_n=$n; fi
  (( still < 150 )) || break
  sleep 0.1
done
t1=$(now_ms)
CATCHUP_MS=$((t1 - t0))
say "projector: $n of $TOTAL_EVENTS events projected $((CATCHUP_MS)) ms after spawn"
(( CATCHUP_DONE == 1 )) || say "WARNING: projector did not catch up; phase-4 latencies include backlog"
latency_step lat "$RATE" "$RATE_SECS" "$ISS_URL_DB" "$PROJ_URL_DB"
# Informative only: the same at a rate the machine is not saturated by.
say "4b: the same at $RATE_LOW cmd/s for ${RATE_LOW_SECS}s (not a target; separates saturation from pipeline latency)"
latency_step low "$RATE_LOW" "$RATE_LOW_SECS" "$ISS_URL_DB" "$PROJ_URL_DB"

# --- results ----------------------------------------------------------------------
MEM="$(free -b | awk '/^Mem:/ { printf "%.1f GiB", $2 / 1073741824 }')"
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
PG_VERSION="$(sql "$PG_BASE/postgres" -c "SHOW server_version")"
PG_SETTINGS="$(sql "$PG_BASE/postgres" -c "SELECT json_object_agg(name, setting) FROM pg_settings WHERE name IN ('synchronous_commit','fsync','shared_buffers','wal_level','max_connections','full_page_writes','commit_delay')")"
jq -n \
  --arg run "$RUN_ID" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --arg commit "$COMMIT" \
  --arg dirty "$(jq length <<<"$DIRTY_PATHS")" --argjson dirty_paths "$DIRTY_PATHS" \
  --arg nproc "$(nproc)" --arg mem "$MEM" --arg uname "$(uname -srm)" --arg cpu "$CPU_MODEL" \
  --arg pgv "$PG_VERSION" --arg bg "$BACKGROUND" --argjson pgs "$PG_SETTINGS" --arg log "$SERVICE_LOG" \
  --argjson pool "$DB_POOL" --argjson parts "$PARTITIONS" \
  --slurpfile http "$DIR/http.json" --slurpfile cpu_http "$DIR/cpu-http.json" --slurpfile auth "$DIR/auth.json" \
  --slurpfile db_http "$DIR/db-http.json" --slurpfile db_pg "$DIR/db-pgbench.json" \
  --argjson pg_tps "$PG_TPS" --argjson pg_lat "${PG_LAT:-null}" --argjson pg_tx "${PG_TX:-null}" \
  --argjson pg_bytes "${PG_ROW_BYTES:-null}" --slurpfile cpu_pg "$DIR/cpu-pgbench.json" \
  --argjson pg_secs "$PGBENCH_SECS" --argjson clients "$CLIENTS" \
  --slurpfile relay "$DIR/relay.json" --slurpfile cpu_relay "$DIR/cpu-relay.json" \
  --argjson insert_ms "$INSERT_MS" --argjson active_ms "$RELAY_ACTIVE_MS" --argjson ev_bytes "${EV_BYTES:-null}" \
  --argjson catchup_ms "$CATCHUP_MS" --argjson catchup_events "$TOTAL_EVENTS" --argjson catchup_done "$CATCHUP_DONE" \
  --slurpfile lat "$DIR/lat.json" --slurpfile low "$DIR/low.json" '
  ($http[0]) as $h | ($relay[0]) as $r | ($lat[0].commit_to_row) as $l
  | {
    run: $run, date: $date, commit: $commit, uncommitted_paths: ($dirty | tonumber),
    uncommitted: $dirty_paths,
    machine: {nproc: ($nproc | tonumber), memory: $mem, uname: $uname, cpu: $cpu},
    postgres: {version: $pgv, settings: $pgs},
    background_cores_before: ($bg | tonumber),
    services: {rust_log: $log, db_pool_size: $pool, topic_partitions: $parts},
    http_issue: ($h + {cpu_cores: $cpu_http[0], db_counters_per_command: $db_http[0]}),
    pgbench: {tps: $pg_tps, latency_avg_ms: $pg_lat, transactions: $pg_tx, clients: $clients,
              threads: 2, seconds: $pg_secs, payload_bytes_avg: $pg_bytes, cpu_cores: $cpu_pg[0],
              db_counters_per_transaction: $db_pg[0]},
    ratio_http_to_pgbench: (($h.throughput_per_s / $pg_tps * 1000 | round) / 1000),
    auth_on_vs_off: $auth[0],
    relay: ($r + {backlog_insert_ms: $insert_ms, event_bytes_avg: $ev_bytes, cpu_cores: $cpu_relay[0],
                  relay_active_s: (if $active_ms == null then null else $active_ms / 1000 end),
                  events_per_s_from_relay_active: (if $active_ms == null or $r.caught_up_s == null then null
                    else ($r.backlog / ($r.caught_up_s - $active_ms / 1000)) | round end)}),
    projector_catch_up: {events: $catchup_events, ms_from_spawn: $catchup_ms, complete: ($catchup_done == 1),
                         events_per_s: (if $catchup_ms > 0 then ($catchup_events / $catchup_ms * 1000 | round) else null end)},
    projector_latency: $lat[0],
    projector_latency_low_rate: $low[0],
    targets: {
      ratio: {target: ">= 0.5", met: (($h.throughput_per_s / $pg_tps) >= 0.5)},
      relay: {target: ">= 30000 events/s", met: (($r.events_per_s_from_spawn // 0) >= 30000)},
      projector_p99: {target: "<= 200 ms", met: (($l.p99_ms // 1e9) <= 200)},
      auth_cost: {target: "< 10 %", met: (($auth[0].cost // 1) < 0.10)}
    }
  }' >"$DIR/results.json"
cp "$DIR/results.json" "$OUT/results.json"

jq -r '
  def yn: if . then "met" else "MISSED" end;
  "",
  "make bench — run \(.run) (\(.machine.nproc) cores, \(.machine.memory), \(.machine.uname))",
  "",
  (["measure", "result", "target"] | "  \(.[0] | . + " " * (46 - length))\(.[1] | " " * (16 - length) + .)   \(.[2])"),
  ( [
      ["IssueLicense HTTP, \(.http_issue.clients) clients: cmd/s", "\(.http_issue.throughput_per_s)", ""],
      ["  latency p50 / p99 (ms)", "\(.http_issue.latency_ms.p50) / \(.http_issue.latency_ms.p99)", ""],
      ["  errors", "\(.http_issue.errors) of \(.http_issue.requested)", ""],
      ["pgbench insert, -c \(.pgbench.clients) -j 2: tps", "\(.pgbench.tps | round)", ""],
      ["ratio HTTP cmd/s / pgbench tps", "\(.ratio_http_to_pgbench)", ">= 0.5  \(.targets.ratio.met | yn)"],
      ["auth on/off rounds of \(.auth_on_vs_off.count_per_round): cmd/s", "\(.auth_on_vs_off.rounds | map("\(.arm) \(.throughput_per_s)") | join(", "))", ""],
      ["  mean cmd/s on / off", "\(.auth_on_vs_off.on.mean_throughput_per_s) / \(.auth_on_vs_off.off.mean_throughput_per_s)", ""],
      ["  p99 (ms, pooled rounds) on / off", "\(.auth_on_vs_off.on.p99_ms_pooled) / \(.auth_on_vs_off.off.p99_ms_pooled)", ""],
      ["  cost of auth = 1 - on/off", "\(.auth_on_vs_off.cost * 1000 | round / 10) %", "< 10 %  \(.targets.auth_cost.met | yn)"],
      ["relay, \(.relay.backlog) backlog: events/s (from spawn)", "\(.relay.events_per_s_from_spawn // "n/a")", ">= 30000  \(.targets.relay.met | yn)"],
      ["  events/s from relay active / after 1st batch", "\(.relay.events_per_s_from_relay_active // "n/a") / \(.relay.events_per_s_after_first_batch // "n/a")", ""],
      ["  relay active / 1st batch / caught up (s)", "\(.relay.relay_active_s // "n/a") / \(.relay.first_move_s // "n/a") / \(.relay.caught_up_s // "n/a")", ""],
      ["projector catch-up, \(.projector_catch_up.events) events: events/s", "\(.projector_catch_up.events_per_s // "n/a")", ""],
      ["open loop \(.projector_latency.http.target_rate_per_s) cmd/s: achieved", "\(.projector_latency.http.achieved_rate_per_s)", ""],
      ["  HTTP latency p50 / p99 (ms)", "\(.projector_latency.http.latency_ms.p50) / \(.projector_latency.http.latency_ms.p99)", ""],
      ["  commit->projector row p50 / p99 (ms)", "\(.projector_latency.commit_to_row.p50_ms) / \(.projector_latency.commit_to_row.p99_ms)", "p99 <= 200  \(.targets.projector_p99.met | yn)"],
      ["  of which commit->relay checkpoint p50 / p99", "\(.projector_latency.commit_to_relay_checkpoint.commit_to_published_ms.p50) / \(.projector_latency.commit_to_relay_checkpoint.commit_to_published_ms.p99)", ""],
      ["(info) open loop \(.projector_latency_low_rate.http.target_rate_per_s) cmd/s: achieved", "\(.projector_latency_low_rate.http.achieved_rate_per_s)", ""],
      ["  HTTP latency p50 / p99 (ms)", "\(.projector_latency_low_rate.http.latency_ms.p50) / \(.projector_latency_low_rate.http.latency_ms.p99)", ""],
      ["  commit->projector row p50 / p99 (ms)", "\(.projector_latency_low_rate.commit_to_row.p50_ms) / \(.projector_latency_low_rate.commit_to_row.p99_ms)", ""],
      ["  of which commit->relay checkpoint p50 / p99", "\(.projector_latency_low_rate.commit_to_relay_checkpoint.commit_to_published_ms.p50) / \(.projector_latency_low_rate.commit_to_relay_checkpoint.commit_to_published_ms.p99)", ""]
    ][] | "  \(.[0] | . + " " * ([46 - length, 1] | max))\(.[1] | " " * ([16 - length, 0] | max) + .)   \(.[2])"),
  "",
  "  CPU cores used per phase (machine_busy_cores 2 = the whole machine; other = load generator, pgbench and any other process; steal = taken by the hypervisor):",
  ( ([["IssueLicense HTTP", .http_issue.cpu_cores]]
    + [.auth_on_vs_off.rounds[] | ["auth \(.arm) round \(.round)", .cpu_cores]]
    + [["pgbench", .pgbench.cpu_cores],
     ["relay backlog", .relay.cpu_cores], ["\(.projector_latency.http.target_rate_per_s) cmd/s + projector", .projector_latency.cpu_cores],
     ["\(.projector_latency_low_rate.http.target_rate_per_s) cmd/s + projector", .projector_latency_low_rate.cpu_cores]])[]
    | "    \(.[0] | . + " " * ([24 - length, 1] | max))\(.[1] // {} | to_entries | map("\(.key) \(.value)") | join(", "))"),
  "  background load before the run: \(.background_cores_before) cores",
  "",
  "raw numbers: .run/bench/results.json (run directory .run/bench/\(.run)/)"
' "$OUT/results.json"
