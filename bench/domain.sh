#!/usr/bin/env bash
# Third part of `make bench` (issue 6, "Measure"): host checks per second
# with p50/p99, `GET /v1/domain-check` of domain binding under `wrk`. Target
# >= 20,000 checks/s at p99 <= 5 ms on the 2-core machine. See
# docs/benchmarks.md, section "Host checks (issue 6)".
#
# Builds release binaries (unless BENCH_SKIP_BUILD=1), installs wrk with apt
# if it is missing, starts release issuance + domain-binding on free ports
# (fresh databases bench_dom_{issuance,domain}_<rand>, topic prefix
# benchdom<rand>, a per-run admin key), loads the seed catalog
# (infra/seed/*.json) into issuance, issues BENCH_DOM_LICENSES cloud-engine
# (mainland) licenses, waits until domain binding has them (over Kafka),
# binds license i to its own registrable domain (bench<i>.com, or
# bench<i>.co.uk for odd i) and checks every (key, host) pair of the load
# once with curl (OK for the bound domain and its subdomains,
# DOMAIN_MISMATCH for the others). Then, for each arm (BENCH_DOM_ARMS):
#   on     domain binding restarted as configured (auth on, RUST_LOG as set)
#   off    the same with LICENSING_AUTH_ENABLED=false (what auth costs)
#   quiet  auth on, RUST_LOG=warn (what the per-request log line costs)
#   norefresh  auth on, LICENSING_CACHE_REFRESH_MS=60000 (what the cache's
#          200 ms refresh, which takes its write lock, costs)
# and each connection count (BENCH_DOM_CONNECTIONS): a wrk warm-up of
# BENCH_DOM_WARMUP s, then BENCH_DOM_SECS s measured with --latency and
# BENCH_DOM_THREADS threads, CPU per process sampled over the measured
# window (1 s in from each end). The wrk Lua script (written into the run
# directory) rotates over the pairs with the Authorization header; any
# answer other than 2xx counts as an error (wrk's non-2xx count), and so do
# socket errors. Results: block `domain` of .run/bench/results.json
# (created if missing, other keys kept); raw files in
# .run/bench/<run>-domain/. Everything it starts is stopped, and its
# databases and topics removed, on exit (BENCH_KEEP=1 keeps databases and
# topics).
#
# Knobs (defaults are what docs/benchmarks.md reports):
#   BENCH_DOM_LICENSES=200 BENCH_DOM_HOSTS=10 (hosts per license, the last
#   of them a mismatch: 10 % mismatches) BENCH_DOM_CONNECTIONS="16 64"
#   BENCH_DOM_THREADS=2 BENCH_DOM_SECS=20 BENCH_DOM_WARMUP=5
#   BENCH_DOM_ARMS="on off quiet norefresh" BENCH_DOM_RUST_LOG=info BENCH_DOM_DEADLINE=900
#   BENCH_DOM_IDLE_WAIT=60
set -euo pipefail

BENCH_NAME=bench-domain
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LICENSES="${BENCH_DOM_LICENSES:-200}"
HOSTS="${BENCH_DOM_HOSTS:-10}"
read -r -a CONNECTIONS <<<"${BENCH_DOM_CONNECTIONS:-16 64}"
THREADS="${BENCH_DOM_THREADS:-2}"
SECS="${BENCH_DOM_SECS:-20}"
WARMUP="${BENCH_DOM_WARMUP:-5}"
read -r -a ARMS <<<"${BENCH_DOM_ARMS:-on off quiet norefresh}"
SERVICE_LOG="${BENCH_DOM_RUST_LOG:-info}"
DEADLINE="${BENCH_DOM_DEADLINE:-900}"
IDLE_WAIT="${BENCH_DOM_IDLE_WAIT:-60}"
DB_POOL=10
PARTITIONS=12
TARGET_RPS=20000
TARGET_P99_MS=5

require_tools jq psql curl
(( HOSTS >= 2 )) || die "BENCH_DOM_HOSTS must be at least 2"
(( SECS >= 5 )) || die "BENCH_DOM_SECS must be at least 5"
for arm in "${ARMS[@]}"; do
  [[ "$arm" =~ ^(on|off|quiet|norefresh)$ ]] || die "unknown arm '$arm' in BENCH_DOM_ARMS (on, off, quiet, norefresh)"
done

# --- wrk ---------------------------------------------------------------------------
ensure_wrk

# --- build -----------------------------------------------------------------------
DIRTY_EXCLUDE='bench/|docs/benchmarks\.md|Makefile'
build_release issuance domain-binding loadgen

# --- run identity and cleanup -------------------------------------------------------
new_run -domain
DB_ISS="bench_dom_issuance_$RAND"
DB_DOM="bench_dom_domain_$RAND"
PREFIX="benchdom$RAND"
# The wrk script reads the token, the request list and its output file from
# the environment (the token stays off wrk's command line and out of files).
export BENCH_DOM_TOKEN="$ADMIN_KEY"
BENCH_DBS=("$DB_ISS" "$DB_DOM")
# The service logs one line per request: keep a count of the host checks'.
cleanup_hook() { slim_log "$DIR/domain-binding.log" /v1/domain-check bench/domain.sh; }
install_traps

# --- helpers ---------------------------------------------------------------------
locate_infra
wait_idle

# Bounded from here on.
start_watchdog "$DEADLINE"
T_START=$(now_ms)

# --- services, catalog, licenses, bindings --------------------------------------------
say "run $RUN_ID: databases $DB_ISS / $DB_DOM, topic prefix $PREFIX, output $DIR"
DBS_CREATED=1
sql "$PG_BASE/postgres" -c "CREATE DATABASE $DB_ISS" -c "CREATE DATABASE $DB_DOM"
spawn_service issuance issuance "$PG_BASE/$DB_ISS" LICENSING_LICENSE_KEY_SECRET="$KEY_SECRET"
spawn_service domain-binding domain-binding "$PG_BASE/$DB_DOM"
wait_ready issuance
wait_ready domain-binding
ISS="http://127.0.0.1:${PORTS[issuance]}"
DOM="http://127.0.0.1:${PORTS[domain-binding]}"

# The seed catalog (as infra/seed, bench/run.sh and the e2e tests).
seed_catalog "$ISS"

say "issuing $LICENSES cloud-engine (mainland) licenses"
: >"$DIR/licenses.tsv"
LICENSE_BODY='{"product":"cloud-engine","edition":"mainland","customer":"ACME Bench","kind":"formal","features":["site-engine"]}'
for _ in $(seq 1 "$LICENSES"); do
  code="$(call POST "$ISS/v1/licenses" "$LICENSE_BODY")"
  [[ "$code" == 201 ]] || die "issuing a license: HTTP $code $(cat "$DIR/call.out")"
  jq -er '"\(.id)\t\(.key)"' "$DIR/call.out" >>"$DIR/licenses.tsv"
done

# Domain binding learns licenses from issuance's events over Kafka.
t0=$(now_ms)
while IFS=$'\t' read -r id _; do
  for i in $(seq 1 600); do
    [[ "$(call GET "$DOM/v1/licenses/$id/domain")" == 200 ]] && break
    (( i < 600 )) || die "license $id did not reach domain binding within 60 s"
    sleep 0.1
  done
done <"$DIR/licenses.tsv"
ARRIVAL_MS=$(( $(now_ms) - t0 ))
say "all $LICENSES licenses at domain binding ${ARRIVAL_MS} ms after the last was issued"

# License i: bench<i>.com (even i) or bench<i>.co.uk (odd i, a two-label
# public suffix). Its hosts: the apex, then subdomains (authorised: OK), and
# as the last of BENCH_DOM_HOSTS one host of the next license's domain
# (DOMAIN_MISMATCH). Pairs are written host-major, so consecutive requests
# hit different licenses.
domain_of() { if (( $1 % 2 )); then echo "bench$1.co.uk"; else echo "bench$1.com"; fi; }
SUBS=(www api cdn.eu app shop a.b.c m static img mail blog docs status)
say "binding each license to its own domain"
i=0
while IFS=$'\t' read -r id _; do
  i=$((i + 1))
  d="$(domain_of "$i")"
  code="$(call PUT "$DOM/v1/licenses/$id/domain" "$(jq -nc --arg d "www.$d" '{domain: $d}')")"
  [[ "$code" == 200 ]] || die "binding $id to www.$d: HTTP $code $(cat "$DIR/call.out")"
  [[ "$(jq -r .domain "$DIR/call.out")" == "$d" ]] || die "binding $id: domain $(jq -c .domain "$DIR/call.out"), expected $d"
done <"$DIR/licenses.tsv"

: >"$DIR/pairs.tsv"         # path <TAB> expected code
for h in $(seq 0 $((HOSTS - 1))); do
  i=0
  while IFS=$'\t' read -r _ key; do
    i=$((i + 1))
    if (( h == HOSTS - 1 )); then
      host="www.$(domain_of $(( i % LICENSES + 1 )))"; expect=DOMAIN_MISMATCH
      (( LICENSES > 1 )) || host="www.unbound-bench.com"
    elif (( h == 0 )); then
      host="$(domain_of "$i")"; expect=OK
    else
      host="${SUBS[$(( (h - 1) % ${#SUBS[@]} ))]}.$(domain_of "$i")"; expect=OK
    fi
    printf '/v1/domain-check?license_key=%s&host=%s\t%s\n' "$key" "$host" "$expect" >>"$DIR/pairs.tsv"
  done <"$DIR/licenses.tsv"
done
PAIRS="$(wc -l <"$DIR/pairs.tsv")"
MISMATCHES="$(grep -c 'DOMAIN_MISMATCH$' "$DIR/pairs.tsv" || true)"
cut -f1 "$DIR/pairs.tsv" >"$DIR/paths.txt"

# Every pair once over one curl connection: HTTP 200 and the expected code.
# `all` checks every pair, `sample` the first 50.
verify_pairs() {    # base_url all|sample
  local src="$DIR/pairs.tsv" n
  [[ "$2" == all ]] || { head -n 50 "$DIR/pairs.tsv" >"$DIR/pairs-sample.tsv"; src="$DIR/pairs-sample.tsv"; }
  awk -F'\t' -v base="$1" '{ printf "url = \"%s%s\"\n", base, $1 }' "$src" >"$DIR/verify.curl"
  curl -sS --max-time 120 -K "$DIR/verify.curl" -H "authorization: Bearer $ADMIN_KEY" \
    -w '\t%{http_code}\n' >"$DIR/verify.out" || die "verifying the pairs: curl failed"
  n="$(paste <(cut -f2 "$src") "$DIR/verify.out" \
    | awk -F'\t' '{ c = $2; sub(/.*"code":"/, "", c); sub(/".*/, "", c)
                    if ($3 != 200 || c != $1) { bad++; if (bad <= 3) print "  expected " $1 ", got HTTP " $3 " " $2 > "/dev/stderr" } }
                  END { print bad + 0 }')"
  (( n == 0 )) || die "$n of $(wc -l <"$src") pairs did not answer as expected (see above)"
}

# The host-check cache follows within ~200 ms; this instance set it at once.
t0=$(now_ms)
for i in $(seq 1 100); do
  code="$(call GET "$DOM$(tail -n1 "$DIR/paths.txt")")"
  [[ "$code" == 200 && "$(jq -r .code "$DIR/call.out")" != NOT_FOUND ]] && break
  (( i < 100 )) || die "the host-check cache does not know the last license after 10 s"
  sleep 0.1
done
verify_pairs "$DOM" all
say "$PAIRS (key, host) pairs, $MISMATCHES of them mismatches, all answer as expected ($(( $(now_ms) - t0 )) ms)"

# --- the wrk script ------------------------------------------------------------------
{
wrk_lua_head
cat <<'LUA'
-- Written by bench/domain.sh. Rotates over the request paths of
-- BENCH_DOM_PATHS (one a line), each thread from its own offset, with
-- `Authorization: Bearer $BENCH_DOM_TOKEN`; the requests are formatted once,
-- in init. done() writes the summary as JSON to BENCH_WRK_OUT (latencies in
-- microseconds; errors.status = answers >= 400).
local token = os.getenv("BENCH_DOM_TOKEN")
local paths_file = os.getenv("BENCH_DOM_PATHS")

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
} >"$DIR/domain-check.lua"
export BENCH_DOM_PATHS="$DIR/paths.txt"
WRK_SCRIPT="$DIR/domain-check.lua"
WRK_THREADS="$THREADS"
WRK_SERVICE=domain-binding

# --- arms ----------------------------------------------------------------------------
# Each arm restarts domain binding (same database: its cache loads every
# license and binding at start-up) with the arm's settings.
: >"$DIR/runs.jsonl"
for arm in "${ARMS[@]}"; do
  stop_service domain-binding
  case "$arm" in
    on)    extra=() ;;
    off)   extra=(LICENSING_AUTH_ENABLED=false) ;;
    quiet) extra=(RUST_LOG=warn) ;;
    norefresh) extra=(LICENSING_CACHE_REFRESH_MS=60000) ;;
  esac
  spawn_service domain-binding domain-binding "$PG_BASE/$DB_DOM" "${extra[@]}"
  wait_ready domain-binding
  DOM="http://127.0.0.1:${PORTS[domain-binding]}"
  noauth="$(curl -sS -o /dev/null -w '%{http_code}' "$DOM$(head -n1 "$DIR/paths.txt")")"
  if [[ "$arm" == off ]]; then
    [[ "$noauth" == 200 ]] || die "arm off: a check without a key answered HTTP $noauth, not 200"
  else
    [[ "$noauth" == 401 ]] || die "arm $arm: a check without a key answered HTTP $noauth, not 401"
  fi
  verify_pairs "$DOM" sample
  for c in "${CONNECTIONS[@]}"; do
    say "arm $arm (pid ${PIDS[domain-binding]}): $c connections, $THREADS threads: warm-up ${WARMUP}s, then ${SECS}s measured"
    run_wrk "$arm-c$c-warmup" "$DOM/v1/domain-check" "$c" "$WARMUP" warmup
    run_wrk "$arm-c$c" "$DOM/v1/domain-check" "$c" "$SECS" measure
    jq -c --arg arm "$arm" --argjson c "$c" --argjson t "$THREADS" --slurpfile cpu "$DIR/cpu-$arm-c$c.json" \
      "$WRK_RECORD_JQ"' {arm: $arm} + wrk_record($c; $t; $cpu[0])' "$DIR/$arm-c$c.wrk.json" | tee -a "$DIR/runs.jsonl" \
      | jq -c '{arm, connections, rps, p50_ms, p99_ms, errors, cpu: (.cpu_cores | {"domain-binding", "domain-binding_user", "domain-binding_sys", wrk, postgres, kafka, other, machine_busy_cores})}' >&2
  done
done

# --- results -------------------------------------------------------------------------
MEM="$(free -b | awk '/^Mem:/ { printf "%.1f GiB", $2 / 1073741824 }')"
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
jq -n \
  --arg run "$RUN_ID" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg commit "$COMMIT" \
  --argjson dirty_paths "$DIRTY_PATHS" --arg nproc "$(nproc)" --arg mem "$MEM" \
  --arg uname "$(uname -srm)" --arg cpu "$CPU_MODEL" --arg bg "$BACKGROUND" --arg log "$SERVICE_LOG" \
  --arg wrk "$WRK_VERSION" --argjson threads "$THREADS" --argjson secs "$SECS" --argjson warmup "$WARMUP" \
  --argjson licenses "$LICENSES" --argjson pairs "$PAIRS" --argjson mism "$MISMATCHES" \
  --argjson arrival "$ARRIVAL_MS" --argjson wall "$(( $(now_ms) - T_START ))" \
  --argjson trps "$TARGET_RPS" --argjson tp99 "$TARGET_P99_MS" \
  --slurpfile runs "$DIR/runs.jsonl" '
  ($runs | map(select(.arm == "on"))) as $on
  | ($on | map(select(.rps >= $trps and .p99_ms <= $tp99 and .errors == 0))) as $met
  | {
    run: $run, date: $date, commit: $commit, uncommitted: $dirty_paths,
    machine: {nproc: ($nproc | tonumber), memory: $mem, uname: $uname, cpu: $cpu},
    background_cores_before: ($bg | tonumber),
    services: {rust_log: $log, arms: {on: "auth on", off: "LICENSING_AUTH_ENABLED=false",
               quiet: "auth on, RUST_LOG=warn",
               norefresh: "auth on, LICENSING_CACHE_REFRESH_MS=60000"}},
    setup: {licenses: $licenses, product: "cloud-engine", edition: "mainland", pairs: $pairs,
            mismatch_pairs: $mism, license_arrival_ms: $arrival},
    wrk: {version: $wrk, threads: $threads, seconds: $secs, warmup_seconds: $warmup,
          endpoint: "GET /v1/domain-check?license_key=&host=", error: "answer >= 400 or socket error"},
    wall_s: ($wall / 100 | round / 10),
    runs: $runs,
    target: {rps: $trps, p99_ms: $tp99, arm: "on",
             met: ($met | length > 0), met_at_connections: ($met | map(.connections)),
             best_rps: ($on | map(.rps) | max)},
    summary: ($runs | map({key: "\(.arm)_c\(.connections)",
                           value: {rps, p50_ms, p99_ms, errors}}) | from_entries)
  }' >"$DIR/domain.json"

merge_results domain "$DIR/domain.json"

jq -r '
  def pad($n): tostring | . + " " * ([$n - length, 1] | max);  # at least one space
  def lpad($n): tostring | " " * ([$n - length, 0] | max) + .;
  "",
  "bench/domain.sh — run \(.run) (\(.machine.nproc) cores, commit \(.commit), \(.wrk.version))",
  "host checks: \(.setup.licenses) licenses, \(.setup.pairs) (key, host) pairs (\(.setup.mismatch_pairs) mismatches), \(.wrk.threads) wrk threads, \(.wrk.seconds) s per row after \(.wrk.warmup_seconds) s warm-up",
  "",
  "  \("arm" | pad(10))\("conns" | lpad(6))\("checks/s" | lpad(10))\("p50 ms" | lpad(9))\("p90 ms" | lpad(9))\("p99 ms" | lpad(9))\("errors" | lpad(8))   CPU cores: domain-binding (user+sys) / wrk / postgres / kafka / other (machine)",
  ( .runs[] | "  \(.arm | pad(10))\(.connections | lpad(6))\(.rps | lpad(10))\(.p50_ms | lpad(9))\(.p90_ms | lpad(9))\(.p99_ms | lpad(9))\(.errors | lpad(8))   \(.cpu_cores | "\(."domain-binding") (\(."domain-binding_user")+\(."domain-binding_sys")) / \(.wrk) / \(.postgres) / \(.kafka) / \(.other) (\(.machine_busy_cores))")" ),
  "",
  "  target \(.target.rps)/s at p99 <= \(.target.p99_ms) ms (arm on): \(if .target.met then "MET at \(.target.met_at_connections | map(tostring) | join(", ")) connections" else "NOT MET (best \(.target.best_rps)/s)" end)",
  "  background load before the run: \(.background_cores_before) cores",
  "",
  "raw numbers: .run/bench/results.json (key domain; run directory .run/bench/\(.run)-domain/)"
' "$DIR/domain.json"
