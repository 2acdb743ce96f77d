#!/usr/bin/env bash
# Part of `make bench` (issue 17, "bounded aggregates"): a command on an
# aggregate with a long history beside the same command on fresh
# aggregates, in one run, with all five services running. See
# docs/benchmarks.md, section "Issue 17".
#
# Builds release binaries (unless BENCH_SKIP_BUILD=1), starts the five
# services (spawn_stack: fresh databases bench_agg_<service>_<rand>, topic
# prefix benchagg<rand>), loads the seed catalog, then `loadgen
# long-stream`: one license is given BENCH_AGG_HISTORY events (suspend,
# reinstate, ...), then BENCH_AGG_COUNT times a fresh license is issued and
# suspended (measured) and the long license suspended (measured) and
# reinstated. Prints both latencies, their ratio and the target (within
# 1.2 x), and adds a block `aggregates` to .run/bench/results.json.
#
# Knobs: BENCH_AGG_HISTORY=10000 BENCH_AGG_COUNT=200 BENCH_AGG_DB_POOL=40
#   BENCH_AGG_RUST_LOG=info BENCH_AGG_DEADLINE=400 BENCH_AGG_IDLE_WAIT=60
set -euo pipefail

BENCH_NAME=bench-aggregates
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HISTORY="${BENCH_AGG_HISTORY:-10000}"
COUNT="${BENCH_AGG_COUNT:-200}"
DB_POOL="${BENCH_AGG_DB_POOL:-40}"
SERVICE_LOG="${BENCH_AGG_RUST_LOG:-info}"
DEADLINE="${BENCH_AGG_DEADLINE:-400}"
IDLE_WAIT="${BENCH_AGG_IDLE_WAIT:-60}"
PARTITIONS=12

require_tools jq psql curl
build_release issuance activation domain-binding grant-sync projector loadgen
new_run -aggregates
PREFIX="benchagg$RAND"
export LOADGEN_TOKEN="$ADMIN_KEY"
install_traps
locate_infra
wait_idle
start_watchdog "$DEADLINE"
T_START=$(now_ms)

say "run $RUN_ID: the five services on topic prefix $PREFIX, output $DIR"
spawn_stack agg
seed_catalog "$ISS"
SNAPSHOT_EVERY="${LICENSING_SNAPSHOT_EVERY:-50}"

say "long-stream: $HISTORY events on one license, then $COUNT suspensions of it beside $COUNT of fresh licenses"
measured long-stream "$DEADLINE" long-stream --url "$ISS" --history "$HISTORY" --count "$COUNT"
SNAPSHOTS="$(sql "$PG_BASE/$DB_ISS" -c "SELECT count(*) FROM snapshots WHERE aggregate_type = 'License'")"

jq -n --arg run "$RUN_ID" --arg commit "$COMMIT" --argjson dirty "$DIRTY_PATHS" \
  --arg every "$SNAPSHOT_EVERY" --argjson snapshots "$SNAPSHOTS" \
  --argjson wall "$(( $(now_ms) - T_START ))" \
  --slurpfile r "$DIR/long-stream.json" --slurpfile c "$DIR/cpu-long-stream.json" '
  $r[0] as $r | {
    run: $run, commit: $commit, uncommitted: $dirty, wall_s: ($wall / 1000),
    snapshot_every: $every, license_snapshots_at_end: $snapshots,
    long_stream: $r, cpu_cores: $c[0],
    target: {
      path: "a command on an aggregate with \($r.history_events) past events",
      measured: "p50 \($r.long.p50_ms) ms vs \($r.fresh.p50_ms) ms fresh (\($r.long_over_fresh_p50) x; mean \($r.long_over_fresh_mean) x)",
      target: "within 1.2 x the same command on a fresh aggregate",
      status: (if $r.long_over_fresh_p50 <= 1.2 and $r.long_over_fresh_mean <= 1.2 then "met" else "not met" end)
    }
  }' >"$DIR/aggregates.json"
merge_results aggregates "$DIR/aggregates.json"

jq -r '
  "",
  "bench/aggregates.sh — run \(.run) (commit \(.commit))",
  "",
  "  history: \(.long_stream.history_events) events in \(.long_stream.history_seconds) s (\(.long_stream.history_commands_per_s) commands/s, one client)",
  "  suspend, fresh license:  p50 \(.long_stream.fresh.p50_ms) ms, p99 \(.long_stream.fresh.p99_ms) ms, mean \(.long_stream.fresh.mean_ms) ms",
  "  suspend, long license:   p50 \(.long_stream.long.p50_ms) ms, p99 \(.long_stream.long.p99_ms) ms, mean \(.long_stream.long.mean_ms) ms",
  "  snapshots of License aggregates at the end: \(.license_snapshots_at_end)",
  "",
  "issue 17 target (measured side by side in this run):",
  "  \(.target.path): \(.target.measured) — target \(.target.target): \(.target.status)",
  "",
  "  CPU cores: \(.cpu_cores | to_entries | map("\(.key) \(.value)") | join(", "))",
  "",
  "raw numbers: .run/bench/results.json (key aggregates; run directory .run/bench/\(.run)-aggregates/)"
' "$DIR/aggregates.json"
