#!/usr/bin/env bash
# Fifth part of `make bench` (issue 8, "Measure"): the projector.
#   1. rebuild throughput over BENCH_PROJ_EVENTS events (default 1,000,000;
#      target >= 100,000 events/s): `POST /v1/admin/rebuild` rebuilds every
#      read model from the event topics; events / (finished_at - started_at)
#      per model as the projector reports it, and events / wall time of the
#      whole rebuild (POST to the last model done, polled every 0.5 s);
#   2. `GET /v1/licenses/{id}/state?as_of=<RFC 3339>` of a license with
#      BENCH_PROJ_HOT_EVENTS events (default 10,000; target p99 <= 20 ms,
#      issue 17), at an instant in the middle of its history, at its end,
#      and rotating over BENCH_PROJ_ASOF_INSTANTS (default 200) instants
#      drawn at random from its events' recorded_at (`as_of_any`: each
#      folded from the nearest snapshot at or before it, up to 499 events
#      on top);
#   3. `GET /v1/audit?license_id=<id>&limit=100` over as many audit rows as
#      events (target p99 <= 20 ms), rotating over BENCH_PROJ_AUDIT_IDS
#      (default 1,000) random license ids.
# Bonus figures: the time to seed the topics, and the live projection of the
# whole backlog by a freshly started projector.
# See docs/benchmarks.md, section "Projector (issue 8)".
#
# Builds release binaries (unless BENCH_SKIP_BUILD=1), installs wrk with apt
# if it is missing. `loadgen events` writes a synthetic, contract-valid
# history (BENCH_PROJ_LICENSES ordinary licenses, default events / 10, plus
# the hot one; src/events.rs of bench/loadgen describes the mix; every
# envelope hash-chained as the event store chains them) as `<key>\t<json>`
# lines, one file per context, into the run directory. The four event
# topics `benchproj<rand>.<context>.events` are created with 12 partitions
# (TopicCommand, retention forever, as schemas/topics.toml has them) and each
# file is loaded into its topic by Kafka's own console producer (the jars
# infra/kafka uses; keyed by aggregate id, so an aggregate stays in one
# partition; zstd, 1 MiB batches, linger 50 ms, acks=all; the four run in
# parallel); the topics' end offsets are checked against the files. Only
# the projector runs: the seeded history stands in for the other services'
# databases, and those services running on its topics would append their
# own events to its streams at sequences already taken, through another
# partitioner (docs/benchmarks.md, "Issue 17: rebuilds read in chunks").
# A release projector starts on a free 127.0.0.1 port (fresh database
# bench_proj_<rand>, the topic prefix, a per-run bootstrap admin key — the
# projector accepts LICENSING_ADMIN_KEY like every service, so no issuance
# runs; the default pool of 32; RUST_LOG=info) and projects the backlog
# live: `GET /v1/admin/projections` is polled every second until every
# model's checkpoints cover every event with lag 0 (bounded by
# BENCH_PROJ_LIVE_TIMEOUT). Then:
#   rebuild  `POST /v1/admin/rebuild {}` (202 {rebuild_id, models, status}),
#            `GET /v1/admin/projections` every 0.5 s until each model's
#            rebuild is done or failed (bounded by BENCH_PROJ_REBUILD_TIMEOUT;
#            a failure is reported, with the time each model had consumed
#            every event, and the reads still run on the live tables); CPU
#            of the projector, PostgreSQL and Kafka over the rebuild; the
#            audit trail's row count after.
#   as_of    one curl per instant checks the answer (200; its expires_at
#            and version, when it has them, against what loadgen recorded),
#            then for each instant (mid, end) and connection count
#            (BENCH_PROJ_ASOF_CONNECTIONS): a wrk warm-up of BENCH_PROJ_WARMUP
#            s, then BENCH_PROJ_SECS s measured with --latency.
#   audit    one curl checks an answer (200, items of that license), then
#            the same with BENCH_PROJ_AUDIT_CONNECTIONS connections over
#            the license ids.
# The wrk Lua script (in the run directory) rotates over the request paths
# with the Authorization header; an answer >= 400 or a socket error is an
# error. CPU per process over each measured window (1 s in from each end).
# With every poll of the live projection and of the rebuild, the wait
# events of the database's active backends (pg_stat_activity) are sampled:
# the mean number of backends per wait state is reported; and the
# database's counters (pg_stat_database: transactions, rows, blocks) per
# event over both.
# Results: block `projector` of .run/bench/results.json (created if missing,
# other keys kept); raw files in .run/bench/<run>-projector/ (the seed
# files, about 1 KiB per event, are deleted at exit unless BENCH_KEEP=1;
# the request lines of the wrk runs are removed from the projector's log
# and counted). Everything it starts is stopped, and its database and topics
# removed, on exit (BENCH_KEEP=1 keeps them). Bounded by a watchdog of
# BENCH_PROJ_DEADLINE seconds after the build.
#
# Knobs (defaults are what docs/benchmarks.md reports):
#   BENCH_PROJ_EVENTS=1000000 BENCH_PROJ_LICENSES=<events / 10>
#   BENCH_PROJ_HOT_EVENTS=10000 BENCH_PROJ_AUDIT_IDS=1000 BENCH_PROJ_ASOF_INSTANTS=200
#   BENCH_PROJ_ASOF_CONNECTIONS="1 4" BENCH_PROJ_AUDIT_CONNECTIONS=16 (lists)
#   BENCH_PROJ_THREADS=2 BENCH_PROJ_SECS=20 BENCH_PROJ_WARMUP=5
#   BENCH_PROJ_DB_POOL=32 BENCH_PROJ_RUST_LOG=info
#   BENCH_PROJ_LIVE_TIMEOUT=1800 BENCH_PROJ_REBUILD_TIMEOUT=1800
#   BENCH_PROJ_DEADLINE=5400 BENCH_PROJ_IDLE_WAIT=60
#   BENCH_PROJ_SEED_ONLY=0 (1: generate and seed the topics, check them,
#   report, and stop: no projector)
set -euo pipefail

BENCH_NAME=bench-projector
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

EVENTS="${BENCH_PROJ_EVENTS:-1000000}"
LICENSES="${BENCH_PROJ_LICENSES:-$(( ${BENCH_PROJ_EVENTS:-1000000} / 10 ))}"
HOT_EVENTS="${BENCH_PROJ_HOT_EVENTS:-10000}"
AUDIT_IDS="${BENCH_PROJ_AUDIT_IDS:-1000}"
read -r -a ASOF_CONNS <<<"${BENCH_PROJ_ASOF_CONNECTIONS:-1 4}"
read -r -a AUDIT_CONNS <<<"${BENCH_PROJ_AUDIT_CONNECTIONS:-16}"
THREADS="${BENCH_PROJ_THREADS:-2}"
SECS="${BENCH_PROJ_SECS:-20}"
WARMUP="${BENCH_PROJ_WARMUP:-5}"
DB_POOL="${BENCH_PROJ_DB_POOL:-32}"
SERVICE_LOG="${BENCH_PROJ_RUST_LOG:-info}"
LIVE_TIMEOUT="${BENCH_PROJ_LIVE_TIMEOUT:-1800}"
REBUILD_TIMEOUT="${BENCH_PROJ_REBUILD_TIMEOUT:-1800}"
DEADLINE="${BENCH_PROJ_DEADLINE:-5400}"
IDLE_WAIT="${BENCH_PROJ_IDLE_WAIT:-60}"
SEED_ONLY="${BENCH_PROJ_SEED_ONLY:-0}"
PARTITIONS=12
TARGET_REBUILD=100000
ASOF_INSTANTS="${BENCH_PROJ_ASOF_INSTANTS:-200}"
TARGET_ASOF_P99_MS=20
TARGET_AUDIT_P99_MS=20
KAFKA_CACHE="${LICENSING_KAFKA_CACHE:-$HOME/.cache/licensing/kafka-4.1.1}"
CONTEXTS=(issuance activation domain grants)

require_tools jq psql curl java
(( SECS >= 5 )) || die "BENCH_PROJ_SECS must be at least 5"
(( HOT_EVENTS >= 2 && LICENSES >= 1 )) || die "BENCH_PROJ_HOT_EVENTS must be at least 2, BENCH_PROJ_LICENSES at least 1"
(( EVENTS >= LICENSES + HOT_EVENTS )) || die "BENCH_PROJ_EVENTS must be at least BENCH_PROJ_LICENSES + BENCH_PROJ_HOT_EVENTS"
[[ -d "$KAFKA_CACHE/libs" ]] || die "no Kafka jars in $KAFKA_CACHE/libs; run 'make infra-up'"

# --- wrk and the build ---------------------------------------------------------------
[[ "$SEED_ONLY" == 1 ]] || ensure_wrk
DIRTY_EXCLUDE='bench/|docs/benchmarks\.md|Makefile'
if [[ "$SEED_ONLY" == 1 ]]; then build_release loadgen; else build_release projector loadgen; fi

# --- run identity and cleanup -------------------------------------------------------
new_run -projector
DB="bench_proj_$RAND"
PREFIX="benchproj$RAND"
SEED_DIR="$DIR/seed"
KEY_DIR="$(mktemp -d)"
BENCH_DBS=("$DB")
cleanup_hook() {
  rm -rf "$KEY_DIR"
  slim_log "$DIR/projector.log" '/v1/(licenses/[0-9a-f-]*/state|audit)' bench/projector.sh
  local f
  for f in "$DIR"/produce-*.pid; do [[ -f "$f" ]] && kill "$(cat "$f")" 2>/dev/null; done
  [[ "${BENCH_KEEP:-0}" == 1 ]] || rm -rf "$SEED_DIR"
  wal_size RESET
}
# A rebuild writes gigabytes: 4 GB of WAL between checkpoints while this
# runs (infra/postgres/up.sh keeps 1 GB for the test suite's disk).
wal_size() {        # SET | RESET
  local stmt="ALTER SYSTEM RESET max_wal_size"
  [[ "$1" == SET ]] && stmt="ALTER SYSTEM SET max_wal_size = '4GB'"
  [[ -n "${PG_BASE:-}" ]] && sql "$PG_BASE/postgres" -c "$stmt" -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
}
install_traps

locate_infra
wal_size SET
wait_idle

# Bounded from here on.
start_watchdog "$DEADLINE"
T_START=$(now_ms)
say "run $RUN_ID: database $DB, topic prefix $PREFIX, output $DIR"

# The Kafka tools: short JVMs (C1 only, small heap), quiet unless they
# fail, bounded to 90 s.
ktool() {
  local cds=(); [[ -f "$KAFKA_CACHE/tools.jsa" ]] && cds=("-XX:SharedArchiveFile=$KAFKA_CACHE/tools.jsa")
  timeout 90 java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto -Xlog:disable "${cds[@]}" \
    -Dlicensing.kafka.log.level=OFF "-Dlog4j2.configurationFile=$ROOT/infra/kafka/log4j2.xml" \
    -cp "$KAFKA_CACHE/libs/*" "$@"
}
ADMIN_CFG=(--command-config .run/kafka/admin.java.properties)

# --- 0. the history --------------------------------------------------------------------
say "0/4 generating $EVENTS events: $LICENSES licenses + one of $HOT_EVENTS events (loadgen events)"
timeout 600 "$LOADGEN" events --out-dir "$SEED_DIR" --licenses "$LICENSES" --events "$EVENTS" \
  --hot-license-events "$HOT_EVENTS" --hot-file "$DIR/hot.env" --ids-out "$DIR/audit-ids.txt" \
  --ids-count "$AUDIT_IDS" >"$DIR/generate.json" 2>"$DIR/generate.err" \
  || { cat "$DIR/generate.err" >&2; die "loadgen events failed"; }
jq -c '{events, licenses, bytes, seconds, events_per_s, per_context: (.per_context | map_values(.events))}' "$DIR/generate.json" >&2
HOT="$(sed -n 's/^hot_license=//p' "$DIR/hot.env")"
MID_AS_OF="$(sed -n 's/^mid_as_of=//p' "$DIR/hot.env")"
END_AS_OF="$(sed -n 's/^end_as_of=//p' "$DIR/hot.env")"
[[ "$HOT" =~ ^[0-9a-f-]{36}$ && -n "$MID_AS_OF" && -n "$END_AS_OF" ]] || die "loadgen wrote no hot license ($DIR/hot.env)"
TOTAL="$(jq -r .events "$DIR/generate.json")"
(( TOTAL == EVENTS )) || die "loadgen wrote $TOTAL events, not $EVENTS"

# --- 1. topics and seeding ---------------------------------------------------------------
DBS_CREATED=1       # from here on, cleanup drops the topics (and the database)
say "1/4 provisioning the topics ($PARTITIONS partitions) and seeding them with the console producer"
provision

# One console producer per topic, all four at once; each timed on its own.
produce() {         # context
  local c="$1" t0 t1
  t0=$(now_ms)
  timeout 1200 java -Xms256m -Xmx1g -XX:+UseParallelGC -Xlog:disable \
    -Dlicensing.kafka.log.level=WARN "-Dlog4j2.configurationFile=$ROOT/infra/kafka/log4j2.xml" \
    -cp "$KAFKA_CACHE/libs/*" org.apache.kafka.tools.ConsoleProducer \
    --bootstrap-server "$BROKERS" --topic "$PREFIX.$c.events" \
    --producer.config .run/kafka/admin.java.properties \
    --property parse.key=true --property "key.separator=$(printf '\t')" \
    --compression-codec zstd --timeout 50 --max-partition-memory-bytes 1048576 \
    --max-memory-bytes 134217728 --request-timeout-ms 30000 --request-required-acks all \
    --message-send-max-retries 10 --producer-property max.request.size=4194304 \
    --producer-property enable.idempotence=true \
    <"$SEED_DIR/$c.tsv" >"$DIR/produce-$c.log" 2>&1 &
  echo $! >"$DIR/produce-$c.pid"   # timeout passes a TERM from cleanup on to java
  wait $! || return 1
  rm -f "$DIR/produce-$c.pid"
  t1=$(now_ms)
  echo "$(( t1 - t0 ))" >"$DIR/produce-$c.ms"
}
# The producers are the script's children: counted once reaped (tree:).
cpu_snap "$DIR/cpu-seed-0.json" "producers=tree:$$"; t0=$(now_ms)
for c in "${CONTEXTS[@]}"; do produce "$c" & BG_PIDS+=($!); done
for i in "${!CONTEXTS[@]}"; do
  wait "${BG_PIDS[$i]}" || { tail -n 20 "$DIR/produce-${CONTEXTS[$i]}.log" >&2; die "seeding ${CONTEXTS[$i]} failed"; }
done
BG_PIDS=()
SEED_MS=$(( $(now_ms) - t0 )); cpu_snap "$DIR/cpu-seed-1.json" "producers=tree:$$"
cpu_diff "$DIR/cpu-seed-0.json" "$DIR/cpu-seed-1.json" "${SEED_MS}e-3" >"$DIR/cpu-seed.json"

# End offsets per partition: every line is in its topic, spread over the partitions.
: >"$DIR/seed.jsonl"
for c in "${CONTEXTS[@]}"; do
  ktool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$BROKERS" "${ADMIN_CFG[@]}" \
    --topic "$PREFIX.$c.events" --time -1 >"$DIR/offsets-$c.txt" 2>&1 || { cat "$DIR/offsets-$c.txt" >&2; die "GetOffsetShell $c failed"; }
  want="$(jq -r --arg c "$c" '.per_context[$c].events' "$DIR/generate.json")"
  got="$(awk -F: '{ s += $NF } END { print s + 0 }' "$DIR/offsets-$c.txt")"
  used="$(awk -F: '$NF > 0 { n++ } END { print n + 0 }' "$DIR/offsets-$c.txt")"
  (( got == want )) || die "topic $PREFIX.$c.events holds $got messages, the file $want lines"
  jq -nc --arg c "$c" --argjson n "$got" --argjson used "$used" --argjson ms "$(cat "$DIR/produce-$c.ms")" \
    --argjson bytes "$(jq --arg c "$c" '.per_context[$c].bytes' "$DIR/generate.json")" \
    '{context: $c, events: $n, partitions_used: $used, bytes: $bytes, ms: $ms,
      events_per_s: ($n / ($ms / 1000) | round)}' >>"$DIR/seed.jsonl"
done
jq -c . "$DIR/seed.jsonl" >&2
say "seeded $TOTAL events in $SEED_MS ms ($(( TOTAL * 1000 / (SEED_MS > 0 ? SEED_MS : 1) )) events/s, four producers at once)"
# Bytes of the topics' log segments (compressed batches) on disk.
TOPIC_BYTES="$({ find "$ROOT/.run/kafka/data" -path "*/$PREFIX.*.events-*" -name '*.log' -printf '%s\n' 2>/dev/null || true; } \
  | awk '{ s += $1 } END { print s + 0 }')"
jq -s . "$DIR/seed.jsonl" >"$DIR/seed.json"

MEM="$(free -b | awk '/^Mem:/ { printf "%.1f GiB", $2 / 1073741824 }')"
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
COMMON_ARGS=(--arg run "$RUN_ID" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg commit "$COMMIT"
  --argjson dirty_paths "$DIRTY_PATHS" --arg nproc "$(nproc)" --arg mem "$MEM"
  --arg uname "$(uname -srm)" --arg cpu "$CPU_MODEL" --arg bg "$BACKGROUND"
  --slurpfile gen "$DIR/generate.json" --slurpfile seed "$DIR/seed.json"
  --slurpfile seedcpu "$DIR/cpu-seed.json" --argjson seed_ms "$SEED_MS" --argjson topic_bytes "$TOPIC_BYTES")
SEED_JQ='{
    events: $gen[0].events, licenses: $gen[0].licenses, bytes: $gen[0].bytes,
    generate_seconds: $gen[0].seconds, event_types: $gen[0].event_types, hot: $gen[0].hot,
    per_context: $seed[0], wall_ms: $seed_ms, events_per_s: ($gen[0].events / ($seed_ms / 1000) | round),
    topic_bytes_on_disk: $topic_bytes, cpu_cores: $seedcpu[0],
    producer: "kafka ConsoleProducer 4.1.1, keyed, zstd, batch 1 MiB, linger 50 ms, acks=all, four at once"}'
if [[ "$SEED_ONLY" == 1 ]]; then
  jq -n "${COMMON_ARGS[@]}" '{run: $run, date: $date, commit: $commit, uncommitted: $dirty_paths,
    machine: {nproc: ($nproc | tonumber), memory: $mem, uname: $uname, cpu: $cpu},
    background_cores_before: ($bg | tonumber), seed: '"$SEED_JQ"'}' >"$DIR/projector-seed.json"
  jq -c '.seed | {events, wall_ms, events_per_s, topic_bytes_on_disk, cpu_cores}' "$DIR/projector-seed.json"
  say "BENCH_PROJ_SEED_ONLY=1: stopping after the seed (results in $DIR/projector-seed.json, not merged)"
  exit 0
fi

# --- 2. live projection of the backlog -------------------------------------------------
say "2/4 starting the projector on the backlog of $TOTAL events"
DBS_CREATED=1
sql "$PG_BASE/postgres" -c "CREATE DATABASE $DB"
db_stats "$PG_BASE/$DB" "$DIR/db-live-0.json"
cpu_snap "$DIR/cpu-live-0.json"; T_SPAWN=$(now_ms)
spawn_service projector projector "$PG_BASE/$DB" LICENSING_SIGNING_KEY_FILE="$KEY_DIR/signing.pem" \
  LICENSING_SIGNING_KEY_GENERATE=true
wait_ready projector 120
T_READY=$(now_ms)
PROJ="http://127.0.0.1:${PORTS[projector]}"

# Events every model has applied (checkpoints of our event topics), and
# whether each model's lag is 0; "-" when the answer is not the expected one.
progress() {        # -> "<min covered over models> <all lags 0: true|false> <models>"
  local code
  code="$(call GET "$PROJ/v1/admin/projections")" || { echo "- false 0"; return; }
  [[ "$code" == 200 ]] || { echo "- false 0"; return; }
  jq -r --arg p "$PREFIX." '
    [.models[] | {lag: (.lag // 1),
      covered: ([.checkpoints[]? | select(.topic | startswith($p)) | .next_offset] | add // 0)}] as $m
    | "\($m | map(.covered) | min // 0) \($m | all(.lag == 0)) \($m | length)"' "$DIR/call.out" 2>/dev/null \
    || echo "- false 0"
}
# What the database's active backends are doing, one sample (for "where the
# time goes"): {"<wait_event_type>:<wait_event>" or "CPU": backends}.
pg_waits() {        # file tag t_ms
  sql "$PG_BASE/$DB" -c "SELECT json_build_object('t_ms', $3, 'waits', coalesce(json_object_agg(k, n), '{}'))
    FROM (SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS k, count(*) AS n
          FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'
            AND pid <> pg_backend_pid() GROUP BY 1) s" >>"$1" 2>/dev/null || true
}
# Mean active backends per wait state over a phase's samples.
waits_summary() {   # file
  jq -s '(length) as $n | if $n == 0 then {} else
    {samples: $n, mean_active_backends: ([.[].waits | to_entries[]] | group_by(.key)
      | map({key: .[0].key, value: ((map(.value) | add) / $n * 100 | round / 100)}) | from_entries)} end' "$1"
}
: >"$DIR/live-progress.jsonl"
: >"$DIR/waits-live.jsonl"
LIVE_DONE=0
for _ in $(seq 1 "$LIVE_TIMEOUT"); do
  read -r covered lag0 nmodels < <(progress)
  printf '{"t_ms":%d,"covered":"%s","lag0":%s,"models":%s}\n' "$(( $(now_ms) - T_SPAWN ))" "$covered" "$lag0" "$nmodels" >>"$DIR/live-progress.jsonl"
  pg_waits "$DIR/waits-live.jsonl" live "$(( $(now_ms) - T_SPAWN ))"
  if [[ "$covered" != - ]] && (( nmodels > 0 && covered >= TOTAL )) && [[ "$lag0" == true ]]; then LIVE_DONE=1; break; fi
  kill -0 "${PIDS[projector]}" 2>/dev/null || die "the projector exited; see $DIR/projector.log"
  sleep 1
done
T_LIVE=$(now_ms)
cpu_snap "$DIR/cpu-live-1.json"
db_stats "$PG_BASE/$DB" "$DIR/db-live-1.json"
per_unit "$DIR/db-live-0.json" "$DIR/db-live-1.json" "$TOTAL" >"$DIR/db-live.json"
cpu_diff "$DIR/cpu-live-0.json" "$DIR/cpu-live-1.json" "$(( T_LIVE - T_SPAWN ))e-3" >"$DIR/cpu-live.json"
(( LIVE_DONE )) || die "the projector did not project the backlog within ${LIVE_TIMEOUT}s (last: $(tail -n1 "$DIR/live-progress.jsonl")); see $DIR/projector.log"
cp "$DIR/call.out" "$DIR/projections-live.json"
AUDIT_ROWS="$(sql "$PG_BASE/$DB" -c "SELECT count(*) FROM audit_trail")"
(( AUDIT_ROWS == TOTAL )) || die "audit_trail holds $AUDIT_ROWS rows after the live projection, not $TOTAL"
table_sizes() {     # file
  sql "$PG_BASE/$DB" -c "SELECT json_build_object('database_bytes', pg_database_size(current_database()),
    'tables', (SELECT json_object_agg(relname, json_build_object('rows_estimate', n_live_tup,
      'total_bytes', pg_total_relation_size(relid), 'index_bytes', pg_indexes_size(relid)))
      FROM pg_stat_user_tables WHERE relname IN ('audit_trail', 'license_state')))" >"$1"
}
table_sizes "$DIR/tables-live.json"
say "live: $TOTAL events projected $(( T_LIVE - T_SPAWN )) ms after spawn ($(( T_READY - T_SPAWN )) ms to ready); audit_trail $AUDIT_ROWS rows"

# --- 3. rebuild --------------------------------------------------------------------------
wait_idle " before the rebuild"
BG_REBUILD="$BACKGROUND"
say "3/4 rebuild: POST /v1/admin/rebuild"
db_stats "$PG_BASE/$DB" "$DIR/db-rebuild-0.json"
cpu_snap "$DIR/cpu-rebuild-0.json"; T_RB0=$(now_ms)
code="$(call POST "$PROJ/v1/admin/rebuild" '{}')"
[[ "$code" == 202 ]] || die "POST /v1/admin/rebuild: HTTP $code $(cat "$DIR/call.out")"
cp "$DIR/call.out" "$DIR/rebuild-accepted.json"
REBUILD_ID="$(jq -er .rebuild_id "$DIR/rebuild-accepted.json")"
: >"$DIR/rebuild-progress.jsonl"
: >"$DIR/waits-rebuild.jsonl"
RB_STATUS=running
for _ in $(seq 1 $(( REBUILD_TIMEOUT * 2 ))); do
  sleep 0.5
  code="$(call GET "$PROJ/v1/admin/projections")" || code=000
  if [[ "$code" == 200 ]]; then
    jq -c --argjson t "$(( $(now_ms) - T_RB0 ))" --arg id "$REBUILD_ID" \
      '{t_ms: $t, models: [.models[] | {name, lag, rebuild: (.rebuild | if . == null then null
        else {id, status, events, events_per_sec, lag, eta_secs} end)}]}' "$DIR/call.out" >>"$DIR/rebuild-progress.jsonl"
    pg_waits "$DIR/waits-rebuild.jsonl" rebuild "$(( $(now_ms) - T_RB0 ))"
    # Over when every model the rebuild named (all, if it named none) is
    # done or failed: a failed model is reported, the other ones waited for.
    RB_STATUS="$(jq -r --arg id "$REBUILD_ID" --slurpfile acc "$DIR/rebuild-accepted.json" '
      ([$acc[0].models[]? | if type == "object" then .name else . end]) as $named
      | [.models[] | select(($named | length) == 0 or (.name as $n | $named | index([$n])))] as $ms
      | [$ms[] | .rebuild | select(. != null and .id == $id) | .status] as $s
      | if ($ms | length) == 0 or ($s | length) < ($ms | length) or ($s | any(. == "running")) then "running"
        elif ($s | all(. == "done")) then "done"
        else "failed" end' "$DIR/call.out")"
    [[ "$RB_STATUS" == running ]] || break
  fi
  kill -0 "${PIDS[projector]}" 2>/dev/null || die "the projector exited during the rebuild; see $DIR/projector.log"
done
T_RB1=$(now_ms)
cpu_snap "$DIR/cpu-rebuild-1.json"
db_stats "$PG_BASE/$DB" "$DIR/db-rebuild-1.json"
per_unit "$DIR/db-rebuild-0.json" "$DIR/db-rebuild-1.json" "$TOTAL" >"$DIR/db-rebuild.json"
cpu_diff "$DIR/cpu-rebuild-0.json" "$DIR/cpu-rebuild-1.json" "$(( T_RB1 - T_RB0 ))e-3" >"$DIR/cpu-rebuild.json"
[[ "$RB_STATUS" != running ]] || die "rebuild $REBUILD_ID not over within ${REBUILD_TIMEOUT}s; see $DIR/rebuild-progress.jsonl"
cp "$DIR/call.out" "$DIR/projections-rebuild.json"
if [[ "$RB_STATUS" == failed ]]; then
  say "WARNING: rebuild $REBUILD_ID failed: $(jq -c '[.models[] | {name, status: .rebuild.status, error: .rebuild.error}]' "$DIR/projections-rebuild.json")"
  say "WARNING: going on with the reads (on the live tables); the rebuild figures are up to the failure"
fi
# When each model's rebuild had consumed every event (first poll showing it).
jq -s --argjson n "$TOTAL" '[.[] | .t_ms as $t | .models[] | select(.rebuild != null and (.rebuild.events // 0) >= $n)
  | {name, t: $t}] | group_by(.name) | map({key: .[0].name, value: (map(.t) | min)}) | from_entries' \
  "$DIR/rebuild-progress.jsonl" >"$DIR/rebuild-consumed.json"
AUDIT_ROWS_RB="$(sql "$PG_BASE/$DB" -c "SELECT count(*) FROM audit_trail")"
table_sizes "$DIR/tables-rebuild.json"
jq -c --slurpfile cpu "$DIR/cpu-rebuild.json" --argjson wall "$(( T_RB1 - T_RB0 ))" --argjson n "$TOTAL" '
  {status: "'"$RB_STATUS"'", wall_ms: $wall, events_per_s_wall: ($n / ($wall / 1000) | round),
   models: [.models[] | {name, events: .rebuild.events, events_per_sec: .rebuild.events_per_sec}],
   cpu: ($cpu[0] | {projector, postgres, kafka, other, machine_busy_cores})}' "$DIR/projections-rebuild.json" >&2
(( AUDIT_ROWS_RB == TOTAL )) || say "WARNING: audit_trail holds $AUDIT_ROWS_RB rows after the rebuild, not $TOTAL"

# --- 4. reads under wrk ------------------------------------------------------------------
{
wrk_lua_head
cat <<'LUA'
-- Written by bench/projector.sh. Rotates over the request paths of
-- BENCH_PROJ_PATHS (one a line), each thread from its own offset, with
-- `Authorization: Bearer $BENCH_PROJ_TOKEN`; the requests are formatted
-- once, in init. done() writes the summary as JSON to BENCH_WRK_OUT
-- (latencies in microseconds; errors.status = answers >= 400).
local token = os.getenv("BENCH_PROJ_TOKEN")
local paths_file = os.getenv("BENCH_PROJ_PATHS")

function init(args)
  local headers = { ["Authorization"] = "Bearer " .. token }
  for path in io.lines(paths_file) do
    n = n + 1
    reqs[n] = wrk.format("GET", path, headers)
  end
  assert(n > 0, "no request paths")
  i = math.floor(((tid or 0) * n) / 2) % n
end

LUA
wrk_lua_tail
} >"$DIR/reads.lua"
export BENCH_PROJ_TOKEN="$ADMIN_KEY"
WRK_SCRIPT="$DIR/reads.lua"
WRK_SERVICE=projector

# One measured wrk row: warm-up, measured run, its JSON line in $DIR/reads.jsonl.
read_row() {        # tag kind paths_file connections
  local tag="$1" kind="$2" paths="$3" c="$4"
  export BENCH_PROJ_PATHS="$paths"
  WRK_THREADS=$(( THREADS < c ? THREADS : c ))
  say "$kind: $c connections, $WRK_THREADS threads: warm-up ${WARMUP}s, then ${SECS}s measured"
  run_wrk "$tag-warmup" "$PROJ" "$c" "$WARMUP" warmup
  run_wrk "$tag" "$PROJ" "$c" "$SECS" measure
  jq -c --arg kind "$kind" --argjson c "$c" --argjson t "$WRK_THREADS" --slurpfile cpu "$DIR/cpu-$tag.json" \
    "$WRK_RECORD_JQ"' {kind: $kind} + wrk_record($c; $t; $cpu[0])' "$DIR/$tag.wrk.json" | tee -a "$DIR/reads.jsonl" \
    | jq -c '{kind, connections, rps, p50_ms, p99_ms, max_ms, errors, cpu: (.cpu_cores | {projector, wrk, postgres, other, machine_busy_cores})}' >&2
}

# The as_of answers, checked once against what loadgen recorded.
: >"$DIR/asof-checks.jsonl"
for at in mid end; do
  as_of="$(sed -n "s/^${at}_as_of=//p" "$DIR/hot.env")"
  echo "/v1/licenses/$HOT/state?as_of=$as_of" >"$DIR/paths-asof-$at.txt"
  t0=$(now_ms)
  code="$(call GET "$PROJ$(cat "$DIR/paths-asof-$at.txt")")"
  ms=$(( $(now_ms) - t0 ))
  [[ "$code" == 200 ]] || die "GET $(cat "$DIR/paths-asof-$at.txt"): HTTP $code $(head -c 400 "$DIR/call.out")"
  cp "$DIR/call.out" "$DIR/asof-$at.json"
  jq -c --arg at "$at" --arg as_of "$as_of" --argjson ms "$ms" --argjson bytes "$(wc -c <"$DIR/call.out")" \
    --arg exp "$(sed -n "s/^${at}_expires_at=//p" "$DIR/hot.env")" \
    --argjson ver "$(sed -n "s/^${at}_version=//p" "$DIR/hot.env")" \
    --arg status "$(sed -n "s/^${at}_status=//p" "$DIR/hot.env")" \
    --argjson events "$(sed -n "s/^${at}_events=//p" "$DIR/hot.env")" '
    def found($k): (.state[$k]? // ([.. | objects | select(has($k)) | .[$k]] | first));
    {expires_at: found("expires_at"), version: found("version"), status: found("status"),
     events: (.events_folded // .state.events?)} as $got
    | {expires_at: $exp, version: $ver, status: $status, events: $events} as $want
    | {at: $at, as_of: $as_of, first_answer_ms: $ms, bytes: $bytes, expected: $want, answered: $got,
       matches: ($want | with_entries(.key as $k | .value = (if $got[$k] == null then null else $got[$k] == .value end)))}' \
    "$DIR/call.out" | tee -a "$DIR/asof-checks.jsonl" >&2
done

# Instants throughout the hot license's history (RFC 3339, microseconds).
sql "$PG_BASE/$DB" -c "SELECT '/v1/licenses/$HOT/state?as_of=' ||
    replace(to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), '+', '%2B')
  FROM audit_trail WHERE license_id = '$HOT' ORDER BY random() LIMIT $ASOF_INSTANTS" >"$DIR/paths-asof-any.txt"
[[ -s "$DIR/paths-asof-any.txt" ]] || die "no instants of the hot license"
code="$(call GET "$PROJ$(head -n1 "$DIR/paths-asof-any.txt")")"
[[ "$code" == 200 ]] || die "GET $(head -n1 "$DIR/paths-asof-any.txt"): HTTP $code $(head -c 400 "$DIR/call.out")"

# The audit paths; one answer checked.
sed 's|^\(.*\)$|/v1/audit?license_id=\1\&limit=100|' "$DIR/audit-ids.txt" >"$DIR/paths-audit.txt"
first_id="$(head -n1 "$DIR/audit-ids.txt")"
code="$(call GET "$PROJ/v1/audit?license_id=$first_id&limit=100")"
[[ "$code" == 200 ]] || die "GET /v1/audit?license_id=$first_id: HTTP $code $(head -c 400 "$DIR/call.out")"
AUDIT_CHECK="$(jq -c --arg id "$first_id" '{license_id: $id, items: (.items | length),
  all_of_that_license: (.items | all(.license_id == $id)), next_cursor: .next_cursor}' "$DIR/call.out")"
jq -e '.items > 0 and .all_of_that_license' <<<"$AUDIT_CHECK" >/dev/null \
  || die "the audit answer for $first_id is not its events: $AUDIT_CHECK"
say "audit check: $AUDIT_CHECK"

wait_idle " before the reads"
BG_READS="$BACKGROUND"
: >"$DIR/reads.jsonl"
for at in mid end any; do
  for c in "${ASOF_CONNS[@]}"; do read_row "asof-$at-c$c" "as_of_$at" "$DIR/paths-asof-$at.txt" "$c"; done
done
for c in "${AUDIT_CONNS[@]}"; do read_row "audit-c$c" audit "$DIR/paths-audit.txt" "$c"; done

# --- results -------------------------------------------------------------------------
jq -n "${COMMON_ARGS[@]}" \
  --arg bg_rb "$BG_REBUILD" --arg bg_reads "$BG_READS" --arg log "$SERVICE_LOG" --argjson pool "$DB_POOL" \
  --argjson parts "$PARTITIONS" --arg wrk "$WRK_VERSION" --argjson threads "$THREADS" \
  --argjson secs "$SECS" --argjson warmup "$WARMUP" --argjson total "$TOTAL" --arg hot "$HOT" \
  --argjson t_spawn "$T_SPAWN" --argjson t_ready "$T_READY" --argjson t_live "$T_LIVE" \
  --argjson t_rb0 "$T_RB0" --argjson t_rb1 "$T_RB1" --arg rebuild_id "$REBUILD_ID" \
  --argjson audit_rows "$AUDIT_ROWS" --argjson audit_rows_rb "$AUDIT_ROWS_RB" \
  --argjson audit_check "$AUDIT_CHECK" --argjson nids "$(wc -l <"$DIR/audit-ids.txt")" --argjson wall "$(( $(now_ms) - T_START ))" \
  --argjson trb "$TARGET_REBUILD" --argjson tasof "$TARGET_ASOF_P99_MS" --argjson taudit "$TARGET_AUDIT_P99_MS" \
  --slurpfile livecpu "$DIR/cpu-live.json" --slurpfile rbcpu "$DIR/cpu-rebuild.json" \
  --slurpfile accepted "$DIR/rebuild-accepted.json" --slurpfile proj "$DIR/projections-rebuild.json" \
  --slurpfile consumed "$DIR/rebuild-consumed.json" --arg rb_status "$RB_STATUS" \
  --argjson waits_live "$(waits_summary "$DIR/waits-live.jsonl")" \
  --slurpfile dblive "$DIR/db-live.json" --slurpfile dbrb "$DIR/db-rebuild.json" \
  --slurpfile dbrb0 "$DIR/db-rebuild-0.json" --slurpfile dbrb1 "$DIR/db-rebuild-1.json" \
  --slurpfile dblive0 "$DIR/db-live-0.json" --slurpfile dblive1 "$DIR/db-live-1.json" \
  --argjson waits_rb "$(waits_summary "$DIR/waits-rebuild.jsonl")" \
  --slurpfile tlive "$DIR/tables-live.json" --slurpfile trb_tables "$DIR/tables-rebuild.json" \
  --slurpfile checks <(jq -s . "$DIR/asof-checks.jsonl") --slurpfile reads <(jq -s . "$DIR/reads.jsonl") '
  def ts: capture("^(?<s>[0-9-]+T[0-9:]+)(?<f>\\.[0-9]+)?") | ((.s + "Z") | fromdateiso8601) + ((.f // ".0") | "0" + . | tonumber);
  ($reads[0]) as $reads
  | ($proj[0].models | map(select(.rebuild != null) | .rebuild as $r
      | (if $r.started_at != null and $r.finished_at != null then ($r.finished_at | ts) - ($r.started_at | ts) else null end) as $s
      | ($consumed[0][.name]) as $c
      | {name, table, status: $r.status, error: $r.error, events: $r.events,
         seconds: (if $s == null then null else ($s * 1000 | round) / 1000 end),
         events_per_s: (if $s == null or $s <= 0 then null else ($r.events / $s | round) end),
         total_events_per_s: (if $s == null or $s <= 0 then null else ($total / $s | round) end),
         reported_events_per_sec: $r.events_per_sec, started_at: $r.started_at, finished_at: $r.finished_at,
         consumed_all_ms_after_post: $c,
         events_per_s_to_consumed_all: (if $c == null or $c <= 0 then null else ($total / ($c / 1000) | round) end)})) as $models
  | (($t_rb1 - $t_rb0) / 1000) as $rb_s
  | ($total / $rb_s | round) as $rb_rate
  | ($reads | map(select(.kind | startswith("as_of")))) as $asof
  | ($reads | map(select(.kind == "audit"))) as $audit
  | {
    run: $run, date: $date, commit: $commit, uncommitted: $dirty_paths,
    machine: {nproc: ($nproc | tonumber), memory: $mem, uname: $uname, cpu: $cpu},
    background_cores_before: {start: ($bg | tonumber), rebuild: ($bg_rb | tonumber), reads: ($bg_reads | tonumber)},
    services: {rust_log: $log, db_pool_size: $pool, topic_partitions: $parts},
    wall_s: ($wall / 100 | round / 10),
    seed: '"$SEED_JQ"',
    live: {events: $total, spawn_to_ready_ms: ($t_ready - $t_spawn), spawn_to_caught_up_ms: ($t_live - $t_spawn),
           events_per_s_from_spawn: ($total / (($t_live - $t_spawn) / 1000) | round),
           events_per_s_from_ready: ($total / ([($t_live - $t_ready), 1] | max / 1000) | round),
           audit_rows: $audit_rows, cpu_cores: $livecpu[0], tables: $tlive[0], pg_waits: $waits_live,
           db_counters_per_event: $dblive[0],
           events_per_transaction: ($total / ([$dblive1[0].xact_commit - $dblive0[0].xact_commit, 1] | max) | round),
           poll: "GET /v1/admin/projections every 1 s"},
    rebuild: {rebuild_id: $rebuild_id, status: $rb_status, accepted: $accepted[0], wall_ms: ($t_rb1 - $t_rb0),
              events_per_s_wall: $rb_rate, models: $models, audit_rows_after: $audit_rows_rb,
              cpu_cores: $rbcpu[0], tables_after: $trb_tables[0], pg_waits: $waits_rb,
              db_counters_per_event: $dbrb[0],
              events_per_transaction: ($total / ([$dbrb1[0].xact_commit - $dbrb0[0].xact_commit, 1] | max) | round),
              poll: "GET /v1/admin/projections every 0.5 s",
              target: {events_per_s: $trb, met: ($rb_status == "done" and $rb_rate >= $trb),
                       met_per_model: ($models | map({key: .name, value: (.status == "done" and (.events_per_s // 0) >= $trb)}) | from_entries)}},
    as_of: {license_id: $hot, checks: $checks[0],
            wrk: {version: $wrk, threads: $threads, seconds: $secs, warmup_seconds: $warmup,
                  endpoint: "GET /v1/licenses/{id}/state?as_of=", error: "answer >= 400 or socket error"},
            runs: $asof,
            target: {p99_ms: $tasof, met: ($asof | length > 0 and all(.p99_ms <= $tasof and .errors == 0)),
                     worst_p99_ms: ($asof | map(.p99_ms) | max)}},
    audit: {check: $audit_check, license_ids: $nids,
            wrk: {version: $wrk, threads: $threads, seconds: $secs, warmup_seconds: $warmup,
                  endpoint: "GET /v1/audit?license_id=&limit=100", error: "answer >= 400 or socket error"},
            runs: $audit,
            target: {p99_ms: $taudit, met: ($audit | length > 0 and all(.p99_ms <= $taudit and .errors == 0)),
                     worst_p99_ms: ($audit | map(.p99_ms) | max)}}
  }' >"$DIR/projector.json"
merge_results projector "$DIR/projector.json"

jq -r '
  def lpad($n): tostring | " " * ([$n - length, 0] | max) + .;
  "",
  "bench/projector.sh — run \(.run) (\(.machine.nproc) cores, commit \(.commit), \(.as_of.wrk.version))",
  "history: \(.seed.events) events, \(.seed.licenses) licenses (hot \(.as_of.license_id): \(.seed.hot.events) events), \(.seed.bytes / 1048576 | floor) MiB of JSON",
  "seed: \(.seed.wall_ms) ms with four console producers (\(.seed.events_per_s) events/s)",
  "live: backlog projected \(.live.spawn_to_caught_up_ms) ms after spawn (\(.live.events_per_s_from_ready) events/s from ready); CPU projector \(.live.cpu_cores.projector) / postgres \(.live.cpu_cores.postgres) / kafka \(.live.cpu_cores.kafka)",
  "",
  "  1. rebuild \(.rebuild.status): \(.rebuild.wall_ms) ms wall, \(.rebuild.events_per_s_wall) events/s (target \(.rebuild.target.events_per_s): \(if .rebuild.target.met then "MET" else "NOT MET" end))",
  ( .rebuild.models[] | "     \(.name) \(.status): \(.events) events in \(.seconds) s = \(.events_per_s) events/s (reported \(.reported_events_per_sec | floor)); every event consumed \(.consumed_all_ms_after_post) ms after the POST (\(.events_per_s_to_consumed_all) events/s)\(if .error then "; error: \(.error)" else "" end)" ),
  "     CPU cores: projector \(.rebuild.cpu_cores.projector) / postgres \(.rebuild.cpu_cores.postgres) / kafka \(.rebuild.cpu_cores.kafka) / other \(.rebuild.cpu_cores.other) (machine \(.rebuild.cpu_cores.machine_busy_cores))",
  "     \(.rebuild.events_per_transaction) events per transaction (every model'"'"'s counted); per event \(.rebuild.db_counters_per_event | "\(.tup_inserted) rows inserted, \(.tup_updated) updated, \(.blks_hit + .blks_read) blocks"); CPU \((.rebuild.cpu_cores.projector * .rebuild.wall_ms / .seed.events * 1000 | round)) µs projector + \((.rebuild.cpu_cores.postgres * .rebuild.wall_ms / .seed.events * 1000 | round)) µs postgres",
  "     active backends (mean of \(.rebuild.pg_waits.samples // 0) samples): \(.rebuild.pg_waits.mean_active_backends // {} | to_entries | sort_by(-.value) | map("\(.key) \(.value)") | join(", "))",
  "",
  "  2./3. reads (\(.as_of.wrk.seconds) s per row after \(.as_of.wrk.warmup_seconds) s warm-up)",
  "  \("what" | lpad(12))\("conns" | lpad(7))\("req/s" | lpad(9))\("p50 ms" | lpad(9))\("p99 ms" | lpad(9))\("max ms" | lpad(9))\("errors" | lpad(8))   CPU: projector / wrk / postgres (machine)",
  ( (.as_of.runs + .audit.runs)[] | "  \(.kind | lpad(12))\(.connections | lpad(7))\(.rps | lpad(9))\(.p50_ms | lpad(9))\(.p99_ms | lpad(9))\(.max_ms | lpad(9))\(.errors | lpad(8))   \(.cpu_cores | "\(.projector) / \(.wrk) / \(.postgres) (\(.machine_busy_cores))")" ),
  "  as_of answers: \(.as_of.checks | map("\(.at) \(.matches | to_entries | map("\(.key) \(if .value == null then "absent" elif .value then "ok" else "WRONG" end)") | join(", "))") | join("; "))",
  "  as_of target p99 <= \(.as_of.target.p99_ms) ms: \(if .as_of.target.met then "MET" else "NOT MET" end) (worst \(.as_of.target.worst_p99_ms)); audit target p99 <= \(.audit.target.p99_ms) ms: \(if .audit.target.met then "MET" else "NOT MET" end) (worst \(.audit.target.worst_p99_ms))",
  "  background load: \(.background_cores_before | "\(.start) cores at the start, \(.rebuild) before the rebuild, \(.reads) before the reads")",
  "",
  "raw numbers: .run/bench/results.json (key projector; run directory .run/bench/\(.run)-projector/)"
' "$DIR/projector.json"
