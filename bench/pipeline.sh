#!/usr/bin/env bash
# Part of `make bench` (issue 17): the command pipeline with all five
# services running, as a user runs them.
#   1. IssueLicense over HTTP, BENCH_PIPE_CLIENTS closed-loop clients, beside
#      pgbench inserting one ~300-byte JSON row per transaction with the same
#      number of clients, in the same run, on the same database server
#      -> ratio HTTP cmd/s ÷ pgbench tps (target >= 0.3);
#   2. an open loop of BENCH_PIPE_RATE IssueLicense/s (default 500) for
#      BENCH_PIPE_RATE_SECS s -> achieved rate (target: sustained) and, per
#      command, commit -> projector row (target p99 <= 200 ms): the commit
#      time of the event's row in issuance's `events` and of its row in the
#      projector's `audit_trail`, both from PostgreSQL's commit timestamps
#      (`track_commit_timestamp`, on in infra/postgres/up.sh; one server,
#      one clock), joined by event id; the relay's share (commit -> Kafka
#      checkpoint) from `loadgen relay-trace`.
# Every service runs throughout (spawn_stack in bench/lib.sh): activation,
# domain binding and grant sync consume the licenses issuance publishes.
# CPU per process over each measured phase. Results: block `pipeline` of
# .run/bench/results.json; raw files in .run/bench/<run>-pipeline/.
# Everything it starts it stops, and its databases and topics are removed,
# on exit (BENCH_KEEP=1 keeps them). Bounded by BENCH_PIPE_DEADLINE s.
#
# Knobs (defaults are what docs/benchmarks.md reports):
#   BENCH_PIPE_CLIENTS=32 BENCH_PIPE_COUNT=10000 BENCH_PIPE_WARMUP=1000
#   BENCH_PIPE_PGBENCH_SECS=20 BENCH_PIPE_RATE=500 BENCH_PIPE_RATE_SECS=20
#   BENCH_PIPE_DB_POOL=40 BENCH_PIPE_RUST_LOG=info BENCH_PIPE_DEADLINE=600
set -euo pipefail

BENCH_NAME=bench-pipeline
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS="${BENCH_PIPE_CLIENTS:-32}"
COUNT="${BENCH_PIPE_COUNT:-10000}"
WARMUP="${BENCH_PIPE_WARMUP:-1000}"
PGBENCH_SECS="${BENCH_PIPE_PGBENCH_SECS:-20}"
RATE="${BENCH_PIPE_RATE:-500}"
RATE_SECS="${BENCH_PIPE_RATE_SECS:-20}"
DB_POOL="${BENCH_PIPE_DB_POOL:-40}"
SERVICE_LOG="${BENCH_PIPE_RUST_LOG:-info}"
DEADLINE="${BENCH_PIPE_DEADLINE:-600}"
IDLE_WAIT="${BENCH_PIPE_IDLE_WAIT:-60}"
PARTITIONS=12
TARGET_RATIO=0.3
TARGET_ROW_P99_MS=200

require_tools jq psql curl join

build_release issuance activation domain-binding grant-sync projector loadgen

new_run -pipeline
PREFIX="benchpipe$RAND"
export LOADGEN_TOKEN="$ADMIN_KEY"
install_traps
locate_infra
[[ "$(sql "$PG_BASE/postgres" -c "SHOW track_commit_timestamp")" == on ]] \
  || die "track_commit_timestamp is off: restart PostgreSQL with infra/postgres/up.sh (infra/down.sh, then make infra-up)"
wait_idle

start_watchdog "$DEADLINE"
T_START=$(now_ms)
say "run $RUN_ID: the five services on topic prefix $PREFIX, output $DIR"
spawn_stack pipe
seed_catalog "$ISS"
ISS_DB_URL="$PG_BASE/$DB_ISS"
PROJ_DB_URL="$PG_BASE/$DB_PROJ"

# --- 1. IssueLicense over HTTP beside pgbench --------------------------------------
say "1/2 warm-up $WARMUP, then $COUNT IssueLicense, $CLIENTS clients"
timeout 120 "$LOADGEN" http-issue --url "$ISS" --clients "$CLIENTS" --count "$WARMUP" \
  --correlation-id "bench-warmup-$RAND" >"$DIR/http-warmup.json"
settle 3
pg_statements_reset
cpu_snap "$DIR/cpu-http-0.json"; t0=$(now_ms)
timeout 300 "$LOADGEN" http-issue --url "$ISS" --clients "$CLIENTS" --count "$COUNT" \
  --correlation-id "bench-http-$RAND" >"$DIR/http.json"
t1=$(now_ms); cpu_snap "$DIR/cpu-http-1.json"
cpu_diff "$DIR/cpu-http-0.json" "$DIR/cpu-http-1.json" "$(( t1 - t0 ))e-3" >"$DIR/cpu-http.json"
errs="$(jq .errors "$DIR/http.json")"
(( errs == 0 )) || die "$errs IssueLicense requests failed ($(jq -c .error_kinds "$DIR/http.json"))"
jq -c '{throughput_per_s, latency_ms}' "$DIR/http.json" >&2
say "the statements that took the most database time during it (all services):"
pg_statements_top "$DIR/http-statements.jsonl"

# The services stay up (their consumers drain what phase 1 published).
settle 5
say "1/2 pgbench: -c $CLIENTS -j 2 -T $PGBENCH_SECS -n, one ~300-byte json row per transaction"
pgbench_rows "$DB_ISS" "$CLIENTS" "$PGBENCH_SECS"
say "pgbench: $PG_TPS tps"

# --- 2. commit -> projector row at a steady rate --------------------------------------
settle 5
say "2/2 open loop: $RATE IssueLicense/s for ${RATE_SECS}s"
latency_step rate "$RATE" "$RATE_SECS" "$ISS_DB_URL" "$PROJ_DB_URL"

# --- results ----------------------------------------------------------------------
jq -n --arg run "$RUN_ID" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg commit "$COMMIT" \
  --argjson dirty "$DIRTY_PATHS" --arg bg "$BACKGROUND" --argjson clients "$CLIENTS" \
  --argjson pg_tps "$PG_TPS" --argjson pg_secs "$PGBENCH_SECS" --argjson rate "$RATE" --argjson rate_secs "$RATE_SECS" \
  --argjson t_ratio "$TARGET_RATIO" --argjson t_p99 "$TARGET_ROW_P99_MS" \
  --argjson wall "$(( $(now_ms) - T_START ))" \
  --slurpfile http "$DIR/http.json" --slurpfile cpu_http "$DIR/cpu-http.json" \
  --slurpfile cpu_pg "$DIR/cpu-pgbench.json" \
  --slurpfile step "$DIR/rate.json" '
  ($http[0]) as $h | ($step[0].http) as $r | ($step[0].commit_to_row) as $l
  | {run: $run, date: $date, commit: $commit, uncommitted: $dirty,
     background_cores_before: ($bg | tonumber), wall_s: ($wall / 1000),
     services: "issuance, activation, domain-binding, grant-sync, projector",
     http_issue: ($h + {cpu_cores: $cpu_http[0]}),
     pgbench: {tps: $pg_tps, clients: $clients, threads: 2, seconds: $pg_secs, cpu_cores: $cpu_pg[0]},
     ratio_http_to_pgbench: (($h.throughput_per_s / $pg_tps * 1000 | round) / 1000),
     steady_rate: {http: $r, commit_to_projector_row: $l,
                   commit_to_relay_checkpoint: $step[0].commit_to_relay_checkpoint, cpu_cores: $step[0].cpu_cores},
     targets: {
       ratio: {target: ">= \($t_ratio)", met: (($h.throughput_per_s / $pg_tps) >= $t_ratio)},
       sustained: {target: "\($rate) cmd/s", met: (($r.achieved_rate_per_s // 0) >= $rate * 0.98 and ($r.errors // 1) == 0)},
       commit_to_row_p99: {target: "<= \($t_p99) ms", met: ($l.p99_ms != null and $l.p99_ms <= $t_p99 and $l.with_both_commit_times == $l.events)}
     }}' >"$DIR/pipeline.json"
merge_results pipeline "$DIR/pipeline.json"

jq -r '
  def yn: if . then "met" else "NOT MET" end;
  "",
  "bench/pipeline.sh — run \(.run) (commit \(.commit), all five services)",
  "  IssueLicense HTTP, \(.http_issue.clients // .pgbench.clients) clients: \(.http_issue.throughput_per_s) cmd/s, p50 \(.http_issue.latency_ms.p50) ms, p99 \(.http_issue.latency_ms.p99) ms",
  "  pgbench, same clients: \(.pgbench.tps | round) tps",
  "  ratio \(.ratio_http_to_pgbench)   target \(.targets.ratio.target)   \(.targets.ratio.met | yn)",
  "  open loop \(.steady_rate.http.target_rate_per_s) cmd/s: achieved \(.steady_rate.http.achieved_rate_per_s), errors \(.steady_rate.http.errors)   \(.targets.sustained.met | yn)",
  "  commit -> projector row: p50 \(.steady_rate.commit_to_projector_row.p50_ms) ms, p99 \(.steady_rate.commit_to_projector_row.p99_ms) ms, max \(.steady_rate.commit_to_projector_row.max_ms) ms (\(.steady_rate.commit_to_projector_row.with_both_commit_times) of \(.steady_rate.commit_to_projector_row.events) events)   target \(.targets.commit_to_row_p99.target)   \(.targets.commit_to_row_p99.met | yn)",
  "  of which commit -> relay checkpoint: p50 \(.steady_rate.commit_to_relay_checkpoint.commit_to_published_ms.p50 // "n/a") ms, p99 \(.steady_rate.commit_to_relay_checkpoint.commit_to_published_ms.p99 // "n/a") ms",
  "  CPU cores, IssueLicense: \(.http_issue.cpu_cores | to_entries | map("\(.key) \(.value)") | join(", "))",
  "  CPU cores, open loop: \(.steady_rate.cpu_cores | to_entries | map("\(.key) \(.value)") | join(", "))"
' "$DIR/pipeline.json"
