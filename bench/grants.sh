#!/usr/bin/env bash
# Fourth part of `make bench` (issue 7, "Measure"): grant sync.
#   1. heartbeats/s sustained with BENCH_GS_LEASES live leases (target
#      >= 5,000/s): `POST /v1/leases/{id}/heartbeat` (no body) under wrk,
#      each lease with its own client's token;
#   2. sync long-poll fan-out: BENCH_GS_FANOUT_CLIENTS clients parked in
#      `POST /v1/sync {cursor, wait_ms}`, then one license change at
#      issuance (a renewal, reaching grant sync over Kafka); the time from
#      the change's HTTP 200 to each client's answer carrying it, p50 / p99
#      / max (target p99 <= 1 s), split into issuance -> grant sync
#      (replication) and grant sync -> clients (fan-out).
# See docs/benchmarks.md, section "Grant sync (issue 7)".
#
# Builds release binaries (unless BENCH_SKIP_BUILD=1), installs wrk with apt
# if it is missing, starts release issuance + grant-sync on free 127.0.0.1
# ports (fresh databases bench_gs_{issuance,grants}_<rand>, topic prefix
# benchgs<rand>, 12 partitions, a per-run admin key, a signing key generated
# into a temporary file, LICENSING_SYNC_MAX_WAIT_MS above the long-poll
# time), loads the seed catalog (infra/seed/*.json) into issuance, issues
# one formal integration-platform (enterprise) license with features
# ["data-access"], `seats: {"data-access": BENCH_GS_LEASES}` and an expiry a
# year ahead, waits until grant sync knows it (over Kafka: `GET
# /v1/licenses/{id}/leases` until 200), and `loadgen grants-setup` registers
# BENCH_GS_CLIENTS license clients (`POST /v1/clients`) and checks out
# BENCH_GS_LEASES leases of data-access (`POST /v1/leases`; lease j by
# client j mod clients; the policy's default TTL of 300 s, so every lease
# stays live through the run). Then:
#   heartbeats  for each connection count (BENCH_GS_CONNECTIONS): a wrk
#               warm-up of BENCH_GS_WARMUP s, then BENCH_GS_SECS s measured
#               with --latency and BENCH_GS_THREADS threads; the Lua script
#               (written into the run directory) rotates over the (lease id,
#               token) pairs; any answer other than 2xx, or a socket error,
#               is an error. CPU per process over the measured window (1 s
#               in from each end); database counters per heartbeat.
#   fan-out     `loadgen sync-fanout`: every client syncs once (its cursor),
#               then per round (BENCH_GS_ROUNDS) all park in a long-poll of
#               BENCH_GS_WAIT_MS, BENCH_GS_PARK_MS pass once all requests
#               are written (CPU and grant sync's transactions/s of the
#               parked state sampled over its last four fifths), issuance
#               renews the license (`POST /v1/licenses/{id}/renew`, a day
#               further each round) and each answer is timed from that
#               renewal's 200. Issuance's relay checkpoint and grant sync's
#               change-feed row are polled every 5 ms meanwhile.
# Results: block `grants` of .run/bench/results.json (created if missing,
# other keys kept); raw files in .run/bench/<run>-grants/ (client tokens
# and lease ids are deleted at exit, being credentials, unless BENCH_KEEP=1).
# Everything it starts is stopped, and its databases and topics removed, on
# exit (BENCH_KEEP=1 keeps databases and topics). Bounded by a watchdog of
# BENCH_GS_DEADLINE seconds after the build.
#
# Knobs (defaults are what docs/benchmarks.md reports):
#   BENCH_GS_LEASES=1000 BENCH_GS_CLIENTS=1000 BENCH_GS_SETUP_CONCURRENCY=16
#   BENCH_GS_CONNECTIONS="16 64" BENCH_GS_THREADS=2 BENCH_GS_SECS=20
#   BENCH_GS_WARMUP=5 BENCH_GS_FANOUT_CLIENTS=<BENCH_GS_CLIENTS>
#   BENCH_GS_ROUNDS=3 BENCH_GS_WAIT_MS=30000 BENCH_GS_PARK_MS=5000
#   BENCH_GS_DB_POOL=32 (the service default) BENCH_GS_RUST_LOG=info
#   BENCH_GS_DEADLINE=600 BENCH_GS_IDLE_WAIT=60
#   BENCH_GS_ANALYZE=0 (1: `VACUUM (ANALYZE) leases` before the heartbeats, a
#   diagnostic: the service leaves the fresh table to autovacuum)
set -euo pipefail

BENCH_NAME=bench-grants
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LEASES="${BENCH_GS_LEASES:-1000}"
CLIENTS="${BENCH_GS_CLIENTS:-1000}"
SETUP_CONC="${BENCH_GS_SETUP_CONCURRENCY:-16}"
read -r -a CONNECTIONS <<<"${BENCH_GS_CONNECTIONS:-16 64}"
THREADS="${BENCH_GS_THREADS:-2}"
SECS="${BENCH_GS_SECS:-20}"
WARMUP="${BENCH_GS_WARMUP:-5}"
FANOUT_CLIENTS="${BENCH_GS_FANOUT_CLIENTS:-$CLIENTS}"
ROUNDS="${BENCH_GS_ROUNDS:-3}"
WAIT_MS="${BENCH_GS_WAIT_MS:-30000}"
PARK_MS="${BENCH_GS_PARK_MS:-5000}"
DB_POOL="${BENCH_GS_DB_POOL:-32}"
SERVICE_LOG="${BENCH_GS_RUST_LOG:-info}"
DEADLINE="${BENCH_GS_DEADLINE:-600}"
ANALYZE="${BENCH_GS_ANALYZE:-0}"
IDLE_WAIT="${BENCH_GS_IDLE_WAIT:-60}"
PARTITIONS=12
MAX_WAIT_MS=$(( WAIT_MS + 30000 ))
TARGET_HB=5000
TARGET_P99_MS=1000

require_tools jq psql curl
(( SECS >= 5 )) || die "BENCH_GS_SECS must be at least 5"
(( LEASES >= 1 && CLIENTS >= 1 )) || die "BENCH_GS_LEASES and BENCH_GS_CLIENTS must be at least 1"
(( FANOUT_CLIENTS <= CLIENTS )) || die "BENCH_GS_FANOUT_CLIENTS must not exceed BENCH_GS_CLIENTS"
(( ROUNDS >= 1 )) || die "BENCH_GS_ROUNDS must be at least 1"
# Every parked long-poll is a socket in grant sync and one in the load
# generator (and wrk holds its connections): raise the soft limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) > FANOUT_CLIENTS + 256 )) || die "open-file limit $(ulimit -n) too low for $FANOUT_CLIENTS long-polls"

# --- wrk and the build ---------------------------------------------------------------
ensure_wrk
DIRTY_EXCLUDE='bench/|docs/benchmarks\.md|Makefile'
build_release issuance grant-sync loadgen

# --- run identity and cleanup -------------------------------------------------------
new_run -grants
DB_ISS="bench_gs_issuance_$RAND"
DB_GS="bench_gs_grants_$RAND"
PREFIX="benchgs$RAND"
KEY_DIR="$(mktemp -d)"
export LOADGEN_TOKEN="$ADMIN_KEY"
BENCH_DBS=("$DB_ISS" "$DB_GS")
cleanup_hook() {
  rm -rf "$KEY_DIR"
  slim_log "$DIR/grant-sync.log" '/v1/leases/[0-9a-f-]*/heartbeat' bench/grants.sh
  [[ "${BENCH_KEEP:-0}" == 1 ]] || rm -f "$DIR/clients.tsv" "$DIR/leases.tsv"
}
install_traps

locate_infra
wait_idle

# Bounded from here on.
start_watchdog "$DEADLINE"
T_START=$(now_ms)

# --- services, catalog, license ---------------------------------------------------------
say "run $RUN_ID: databases $DB_ISS / $DB_GS, topic prefix $PREFIX, output $DIR"
DBS_CREATED=1
sql "$PG_BASE/postgres" -c "CREATE DATABASE $DB_ISS" -c "CREATE DATABASE $DB_GS"
spawn_service issuance issuance "$PG_BASE/$DB_ISS" LICENSING_LICENSE_KEY_SECRET="$KEY_SECRET"
spawn_service grant-sync grant-sync "$PG_BASE/$DB_GS" LICENSING_SIGNING_KEY_FILE="$KEY_DIR/signing.pem" \
  LICENSING_SIGNING_KEY_GENERATE=true LICENSING_SYNC_MAX_WAIT_MS="$MAX_WAIT_MS" \
  LICENSING_UPSTREAM_SECRET_KEY_FILE="$KEY_DIR/upstream-secret.key" LICENSING_UPSTREAM_SECRET_KEY_GENERATE=true
wait_ready issuance
wait_ready grant-sync
ISS="http://127.0.0.1:${PORTS[issuance]}"
GS="http://127.0.0.1:${PORTS[grant-sync]}"

seed_catalog "$ISS"

EXP_DAY="$(date -u -d '+365 days' +%Y-%m-%d)"
EXPIRES="${EXP_DAY}T00:00:00Z"
LICENSE_BODY="$(jq -nc --argjson seats "$LEASES" --arg exp "$EXPIRES" '{
  product: "integration-platform", edition: "enterprise", customer: "ACME Bench", kind: "formal",
  features: ["data-access"], seats: {"data-access": $seats}, expires_at: $exp}')"
code="$(call POST "$ISS/v1/licenses" "$LICENSE_BODY")"
[[ "$code" == 201 ]] || die "issuing the license: HTTP $code $(cat "$DIR/call.out")"
LICENSE="$(jq -er .id "$DIR/call.out")"
say "license $LICENSE: integration-platform enterprise, data-access x $LEASES seats, expires $EXPIRES"

# Grant sync learns the license from issuance's events over Kafka.
t0=$(now_ms)
for i in $(seq 1 600); do
  [[ "$(call GET "$GS/v1/licenses/$LICENSE/leases")" == 200 ]] && break
  (( i < 600 )) || die "license $LICENSE did not reach grant sync within 60 s"
  sleep 0.1
done
ARRIVAL_MS=$(( $(now_ms) - t0 ))
[[ "$(jq -r '.seats["data-access"].seats' "$DIR/call.out")" == "$LEASES" ]] \
  || die "grant sync shows seats $(jq -c .seats "$DIR/call.out"), expected data-access x $LEASES"
say "grant sync knows the license ${ARRIVAL_MS} ms after its issuance answered"

# --- clients and leases ----------------------------------------------------------------
say "registering $CLIENTS clients and checking out $LEASES leases of data-access ($SETUP_CONC at a time)"
timeout 400 "$LOADGEN" grants-setup --url "$GS" --license "$LICENSE" --clients "$CLIENTS" \
  --leases "$LEASES" --feature data-access --concurrency "$SETUP_CONC" \
  --clients-out "$DIR/clients.tsv" --leases-out "$DIR/leases.tsv" >"$DIR/setup.json" \
  || die "grants-setup failed (see above)"
jq -c '{clients, leases, lease_ttl_secs, register: .register | {seconds, per_s}, checkout: .checkout | {seconds, per_s, p50_ms, p99_ms}}' "$DIR/setup.json" >&2
code="$(call GET "$GS/v1/licenses/$LICENSE/leases")"
[[ "$code" == 200 ]] || die "GET leases: HTTP $code"
IN_USE="$(jq -r '.seats["data-access"].in_use' "$DIR/call.out")"
LIVE="$(jq -r '.leases | length' "$DIR/call.out")"
[[ "$IN_USE" == "$LEASES" && "$LIVE" == "$LEASES" ]] || die "grant sync shows $LIVE live leases, $IN_USE seats in use; expected $LEASES"
# One heartbeat by hand: 200 with a deadline TTL ahead.
read -r LEASE1 TOKEN1 _ < <(head -n1 "$DIR/leases.tsv")
code="$(curl -sS -o "$DIR/call.out" -w '%{http_code}' --max-time 10 -X POST "$GS/v1/leases/$LEASE1/heartbeat" \
  -H "authorization: Bearer $TOKEN1")"
[[ "$code" == 200 ]] && jq -e .deadline "$DIR/call.out" >/dev/null \
  || die "a heartbeat answered HTTP $code $(cat "$DIR/call.out")"
say "$LIVE live leases; a heartbeat answers 200 (deadline $(jq -r .deadline "$DIR/call.out"))"

# --- 1. heartbeats -------------------------------------------------------------------
{
wrk_lua_head
cat <<'LUA'
-- Written by bench/grants.sh. Rotates over the leases of BENCH_GS_PAIRS
-- (lease_id <TAB> token <TAB> client_id, one a line), each thread from its
-- own offset: `POST /v1/leases/{id}/heartbeat` without a body, with
-- `Authorization: Bearer <the lease's client token>`; the requests are
-- formatted once, in init. done() writes the summary as JSON to
-- BENCH_WRK_OUT (latencies in microseconds; errors.status = answers >= 400).
local pairs_file = os.getenv("BENCH_GS_PAIRS")

function init(args)
  for line in io.lines(pairs_file) do
    local id, token = line:match("^([^\t]+)\t([^\t]+)")
    if id then
      n = n + 1
      reqs[n] = wrk.format("POST", "/v1/leases/" .. id .. "/heartbeat",
        { ["Authorization"] = "Bearer " .. token, ["Content-Length"] = "0" })
    end
  end
  assert(n > 0, "no leases")
  i = math.floor(((tid or 0) * n) / 2) % n
end

LUA
wrk_lua_tail
} >"$DIR/heartbeat.lua"
export BENCH_GS_PAIRS="$DIR/leases.tsv"
WRK_SCRIPT="$DIR/heartbeat.lua"
WRK_THREADS="$THREADS"
WRK_SERVICE=grant-sync

# Counters of the leases table (HOT updates: no index entry per update),
# its indexes (entries read), and the database's deadlocks.
lease_stats() {     # file
  sql "$PG_BASE/$DB_GS" -c "SELECT json_build_object('n_tup_upd', n_tup_upd, 'n_tup_hot_upd', n_tup_hot_upd,
    'n_live_tup', n_live_tup, 'n_dead_tup', n_dead_tup, 'autovacuum_count', autovacuum_count,
    'autoanalyze_count', autoanalyze_count, 'seq_scan', seq_scan, 'seq_tup_read', seq_tup_read,
    'table_bytes', pg_table_size('leases'), 'index_bytes', pg_indexes_size('leases'),
    'indexes', (SELECT json_object_agg(indexrelname, json_build_object('scans', idx_scan, 'tup_read', idx_tup_read))
                  FROM pg_stat_user_indexes WHERE relname = 'leases'),
    'deadlocks', (SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()))
    FROM pg_stat_user_tables WHERE relname = 'leases'" >"$1"
}
if [[ "$ANALYZE" == 1 ]]; then
  say "BENCH_GS_ANALYZE=1: VACUUM (ANALYZE) leases before the heartbeats (not what the service does by itself)"
  sql "$PG_BASE/$DB_GS" -c "VACUUM (ANALYZE) leases"
fi

: >"$DIR/heartbeats.jsonl"
for c in "${CONNECTIONS[@]}"; do
  tag="hb-c$c"
  say "1/2 heartbeats: $c connections, $THREADS threads, $LEASES leases: warm-up ${WARMUP}s, then ${SECS}s measured"
  run_wrk "$tag-warmup" "$GS/v1/leases" "$c" "$WARMUP" warmup
  db_stats "$PG_BASE/$DB_GS" "$DIR/db-$tag-0.json"; lease_stats "$DIR/leases-$tag-0.json"
  run_wrk "$tag" "$GS/v1/leases" "$c" "$SECS" measure
  db_stats "$PG_BASE/$DB_GS" "$DIR/db-$tag-1.json"; lease_stats "$DIR/leases-$tag-1.json"
  per_unit "$DIR/db-$tag-0.json" "$DIR/db-$tag-1.json" "$(jq '[.requests, 1] | max' "$DIR/$tag.wrk.json")" \
    >"$DIR/db-$tag.json"
  jq -c --argjson c "$c" --argjson t "$THREADS" --slurpfile cpu "$DIR/cpu-$tag.json" \
    --slurpfile db "$DIR/db-$tag.json" --slurpfile la "$DIR/leases-$tag-0.json" --slurpfile lb "$DIR/leases-$tag-1.json" \
    "$WRK_RECORD_JQ"'
    . as $w
    | ($w.duration_us / 1e6) as $secs
    | wrk_record($c; $t; $cpu[0]) + {
       grant_sync_cpu_us_per_heartbeat: (if $w.requests > 0 then ($cpu[0]["grant-sync"] * $secs / $w.requests * 1e6 | round) else null end),
       postgres_cpu_us_per_heartbeat: (if $w.requests > 0 then ($cpu[0].postgres * $secs / $w.requests * 1e6 | round) else null end),
       db_counters_per_heartbeat: $db[0],
       deadlocks: ($lb[0].deadlocks - $la[0].deadlocks),
       leases_table: {rows_updated: ($lb[0].n_tup_upd - $la[0].n_tup_upd),
                      hot_updates: ($lb[0].n_tup_hot_upd - $la[0].n_tup_hot_upd),
                      dead_rows_after: $lb[0].n_dead_tup, autovacuums: ($lb[0].autovacuum_count - $la[0].autovacuum_count),
                      autoanalyzes: ($lb[0].autoanalyze_count - $la[0].autoanalyze_count),
                      seq_tuples_read_per_heartbeat: ((($lb[0].seq_tup_read - $la[0].seq_tup_read) / ([$w.requests, 1] | max) * 100 | round) / 100),
                      index_entries_read_per_heartbeat: ($lb[0].indexes | with_entries(.key as $k
                        | .value = (((.value.tup_read - $la[0].indexes[$k].tup_read) / ([$w.requests, 1] | max) * 100 | round) / 100))),
                      index_scans_per_heartbeat: ($lb[0].indexes | with_entries(.key as $k
                        | .value = (((.value.scans - $la[0].indexes[$k].scans) / ([$w.requests, 1] | max) * 100 | round) / 100))),
                      table_bytes_after: $lb[0].table_bytes, index_bytes_after: $lb[0].index_bytes}}' \
    "$DIR/$tag.wrk.json" | tee -a "$DIR/heartbeats.jsonl" \
    | jq -c '{connections, rps, p50_ms, p99_ms, errors, cpu: (.cpu_cores | {"grant-sync", "grant-sync_user", "grant-sync_sys", wrk, postgres, kafka, other, machine_busy_cores}), xact_per_hb: .db_counters_per_heartbeat.xact_commit, deadlocks}' >&2
done
LIVE_AFTER="$(sql "$PG_BASE/$DB_GS" -c "SELECT count(*) FROM leases WHERE status = 'live' AND deadline > now() + interval '200 seconds'")"
say "$LIVE_AFTER of $LEASES leases live with a deadline more than 200 s ahead after the heartbeats"

# --- 2. sync long-poll fan-out ---------------------------------------------------------
# One renewal per round, each a day later than the last.
: >"$DIR/renewals.jsonl"
for r in $(seq 1 "$ROUNDS"); do
  jq -nc --arg exp "$(date -u -d "$EXP_DAY + $r days" +%Y-%m-%dT00:00:00Z)" --arg po "PO-bench-$RAND-$r" \
    '{expires_at: $exp, order_ref: $po}' >>"$DIR/renewals.jsonl"
done
say "2/2 fan-out: $FANOUT_CLIENTS clients long-polling (wait_ms $WAIT_MS), $ROUNDS rounds of one renewal each"
FANOUT_TIMEOUT=$(( 120 + ROUNDS * (WAIT_MS / 1000 + PARK_MS / 1000 + 40) ))
timeout "$FANOUT_TIMEOUT" "$LOADGEN" sync-fanout --url "$GS" --clients-file "$DIR/clients.tsv" \
  --clients "$FANOUT_CLIENTS" --license "$LICENSE" --rounds "$ROUNDS" --wait-ms "$WAIT_MS" --park-ms "$PARK_MS" \
  --trigger-url "$ISS/v1/licenses/$LICENSE/renew" --trigger-bodies "$DIR/renewals.jsonl" \
  --issuance-db "$PG_BASE/$DB_ISS" --grants-db "$PG_BASE/$DB_GS" --sample-ms 5 \
  --cpu "postgres=tree:$PG_PID kafka=$KAFKA_PID issuance=${PIDS[issuance]} grant-sync=${PIDS[grant-sync]}" \
  --cpu-out-prefix "$DIR/cpu-fanout" --arrivals-out "$DIR/fanout-arrivals.tsv" >"$DIR/fanout-raw.json" \
  || die "sync-fanout failed (see above)"
# CPU of each round: parked (snapshot 0 -> 1) and delivering (1 -> 2).
: >"$DIR/fanout-cpu.jsonl"
for r in $(seq 0 $((ROUNDS - 1))); do
  p="$DIR/cpu-fanout-r$r"
  park_s="$(jq -n --slurpfile a "$p-0.json" --slurpfile b "$p-1.json" '($b[0].machine_wall_ms - $a[0].machine_wall_ms) / 1000')"
  del_s="$(jq -n --slurpfile a "$p-1.json" --slurpfile b "$p-2.json" '($b[0].machine_wall_ms - $a[0].machine_wall_ms) / 1000')"
  jq -nc --argjson r "$r" --argjson ps "$park_s" --argjson ds "$del_s" \
    --argjson parked "$(cpu_diff "$p-0.json" "$p-1.json" "$park_s" | jq -c 'del(.machine_wall_ms)')" \
    --argjson delivery "$(cpu_diff "$p-1.json" "$p-2.json" "$del_s" | jq -c 'del(.machine_wall_ms)')" \
    '{round: $r, parked_s: $ps, parked: $parked, delivery_s: $ds, delivery: $delivery}' >>"$DIR/fanout-cpu.jsonl"
done
jq --slurpfile cpu <(jq -s . "$DIR/fanout-cpu.jsonl") '. + {cpu_cores_per_round: $cpu[0]}' "$DIR/fanout-raw.json" >"$DIR/fanout.json"
jq -c '.per_round[] | {round, delivered, missed, arrival_ms: (.arrival_ms | {p50, p99, max}), pipeline_ms: (.pipeline_ms | {published, stored, servable, first_client, last_client})}' "$DIR/fanout.json" >&2

# --- results -------------------------------------------------------------------------
MEM="$(free -b | awk '/^Mem:/ { printf "%.1f GiB", $2 / 1073741824 }')"
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
jq -n \
  --arg run "$RUN_ID" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg commit "$COMMIT" \
  --argjson dirty_paths "$DIRTY_PATHS" --arg nproc "$(nproc)" --arg mem "$MEM" \
  --arg uname "$(uname -srm)" --arg cpu "$CPU_MODEL" --arg bg "$BACKGROUND" --arg log "$SERVICE_LOG" \
  --argjson pool "$DB_POOL" --argjson parts "$PARTITIONS" --argjson maxwait "$MAX_WAIT_MS" \
  --arg wrk "$WRK_VERSION" --argjson threads "$THREADS" --argjson secs "$SECS" --argjson warmup "$WARMUP" \
  --arg license "$LICENSE" --arg analyze "$ANALYZE" --argjson arrival "$ARRIVAL_MS" --argjson live_after "$LIVE_AFTER" \
  --argjson wall "$(( $(now_ms) - T_START ))" --argjson thb "$TARGET_HB" --argjson tp99 "$TARGET_P99_MS" \
  --slurpfile setup "$DIR/setup.json" --slurpfile hb <(jq -s . "$DIR/heartbeats.jsonl") \
  --slurpfile fo "$DIR/fanout.json" '
  $hb[0] as $hb | $fo[0] as $fo
  | ($hb | map(select(.rps >= $thb and .errors == 0))) as $met
  | ($fo.per_round | map(.pipeline_ms)) as $pl
  | def med: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
  {
    run: $run, date: $date, commit: $commit, uncommitted: $dirty_paths,
    machine: {nproc: ($nproc | tonumber), memory: $mem, uname: $uname, cpu: $cpu},
    background_cores_before: ($bg | tonumber),
    services: {rust_log: $log, db_pool_size: $pool, topic_partitions: $parts, sync_max_wait_ms: $maxwait},
    vacuum_analyze_before_heartbeats: ($analyze == "1"),
    setup: ($setup[0] + {license_arrival_ms: $arrival, live_leases_after_heartbeats: $live_after}),
    wall_s: ($wall / 100 | round / 10),
    heartbeats: {
      wrk: {version: $wrk, threads: $threads, seconds: $secs, warmup_seconds: $warmup,
            endpoint: "POST /v1/leases/{id}/heartbeat", error: "answer >= 400 or socket error"},
      runs: $hb,
      target: {rps: $thb, met: ($met | length > 0), met_at_connections: ($met | map(.connections)),
               best_rps: ($hb | map(.rps) | max)}
    },
    fanout: ($fo + {
      target: {p99_ms: $tp99, met: (($fo.arrival_ms.p99 // 1e9) <= $tp99 and $fo.missed == 0),
               p99_ms_pooled: $fo.arrival_ms.p99},
      split_median_of_rounds_ms: {
        published: ($pl | map(.published) | map(select(. != null)) | med),
        stored: ($pl | map(.stored) | map(select(. != null)) | med),
        servable: ($pl | map(.servable) | map(select(. != null)) | med),
        first_client: ($pl | map(.first_client) | map(select(. != null)) | med),
        last_client: ($pl | map(.last_client) | map(select(. != null)) | med),
        fanout_first_to_last: ($pl | map(.fanout_first_to_last) | map(select(. != null)) | med)
      }
    })
  }' >"$DIR/grants.json"
merge_results grants "$DIR/grants.json"

jq -r '
  def pad($n): tostring | . + " " * ([$n - length, 1] | max);
  def lpad($n): tostring | " " * ([$n - length, 0] | max) + .;
  "",
  "bench/grants.sh — run \(.run) (\(.machine.nproc) cores, commit \(.commit), \(.heartbeats.wrk.version))",
  "setup: \(.setup.clients) clients, \(.setup.leases) leases of one license (registered \(.setup.register.per_s)/s, checked out \(.setup.checkout.per_s)/s)",
  "",
  "  heartbeats (\(.heartbeats.wrk.threads) wrk threads, \(.heartbeats.wrk.seconds) s per row after \(.heartbeats.wrk.warmup_seconds) s warm-up)",
  "  \("conns" | lpad(6))\("beats/s" | lpad(10))\("p50 ms" | lpad(9))\("p90 ms" | lpad(9))\("p99 ms" | lpad(9))\("errors" | lpad(8))   CPU cores: grant-sync (user+sys) / wrk / postgres / kafka / other (machine)",
  ( .heartbeats.runs[] | "  \(.connections | lpad(6))\(.rps | lpad(10))\(.p50_ms | lpad(9))\(.p90_ms | lpad(9))\(.p99_ms | lpad(9))\(.errors | lpad(8))   \(.cpu_cores | "\(."grant-sync") (\(."grant-sync_user")+\(."grant-sync_sys")) / \(.wrk) / \(.postgres) / \(.kafka) / \(.other) (\(.machine_busy_cores))")" ),
  "  target \(.heartbeats.target.rps)/s: \(if .heartbeats.target.met then "MET at \(.heartbeats.target.met_at_connections | map(tostring) | join(", ")) connections" else "NOT MET (best \(.heartbeats.target.best_rps)/s)" end)",
  "",
  "  fan-out: \(.fanout.clients) clients parked in POST /v1/sync, \(.fanout.rounds) rounds of one renewal; ms from the renewal'"'"'s 200",
  "  \("round" | pad(7))\("got" | lpad(6))\("p50" | lpad(9))\("p99" | lpad(9))\("max" | lpad(9))\("published" | lpad(11))\("stored" | lpad(9))\("servable" | lpad(10))\("first" | lpad(9))\("last" | lpad(9))",
  ( .fanout.per_round[] | "  \(.round | pad(7))\(.delivered | lpad(6))\(.arrival_ms.p50 // "-" | lpad(9))\(.arrival_ms.p99 // "-" | lpad(9))\(.arrival_ms.max // "-" | lpad(9))\(.pipeline_ms.published // "-" | lpad(11))\(.pipeline_ms.stored // "-" | lpad(9))\(.pipeline_ms.servable // "-" | lpad(10))\(.pipeline_ms.first_client // "-" | lpad(9))\(.pipeline_ms.last_client // "-" | lpad(9))" ),
  "  pooled: p50 \(.fanout.arrival_ms.p50) / p99 \(.fanout.arrival_ms.p99) / max \(.fanout.arrival_ms.max) ms, \(.fanout.missed) missed; target p99 <= \(.fanout.target.p99_ms) ms: \(if .fanout.target.met then "MET" else "NOT MET" end)",
  ( .fanout.cpu_cores_per_round[] | "  CPU round \(.round): parked \(.parked | "grant-sync \(."grant-sync"), postgres \(.postgres), loadgen \(.loadgen) (machine \(.machine_busy_cores))"); delivering \(.delivery | "grant-sync \(."grant-sync"), postgres \(.postgres), loadgen \(.loadgen) (machine \(.machine_busy_cores))") over \(.delivery_s) s" ),
  "  background load before the run: \(.background_cores_before) cores",
  "",
  "raw numbers: .run/bench/results.json (key grants; run directory .run/bench/\(.run)-grants/)"
' "$DIR/grants.json"
