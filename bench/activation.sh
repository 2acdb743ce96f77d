#!/usr/bin/env bash
# Second half of `make bench` (issues 5 and 17): activations/s end to end,
# and POST /v1/validate requests/s beside the host check of domain binding
# (its reference, from memory since issue 6) in the same run, with all five
# services running; a bare ES256 signing loop of libs/signing in the same
# run shows how much of the activation budget is crypto. See
# docs/benchmarks.md, sections "Activation (issue 5)" and "Issue 17".
#
# Builds release binaries (unless BENCH_SKIP_BUILD=1), starts the five
# release services on free ports (fresh databases bench_act_<service>_<rand>,
# topic prefix benchact<rand>, 12 partitions, a per-run admin key),
# creates a product whose policy allows BENCH_ACT_MAX_ACTIVATIONS seats,
# issues BENCH_ACT_LICENSES formal licenses, waits until activation and
# domain binding have them (over Kafka) and binds each to a domain, then:
#   1. loadgen sign: bare sign / verify loops on BENCH_ACT_SIGN_THREADS
#      threads                                       -> signs/s, verify/s
#   2. loadgen activate: warm-up, then N activations of distinct devices
#      spread over the licenses, C closed-loop clients -> activations/s, p50, p99
#   3. wrk validate: POST /v1/validate for the activated devices (each
#      answers VALID, checked on a sample first)      -> requests/s, p50, p99
#   4. wrk host check: GET /v1/domain-check of the licenses' hosts, same
#      connections, threads and seconds               -> requests/s, p50, p99
# and adds a block `activation` to .run/bench/results.json (created if
# missing, other keys kept) with the issue 17 targets met or not; raw files
# in .run/bench/<run>-activation/. Everything it starts is stopped, and its
# databases and topics removed, on exit (BENCH_KEEP=1 keeps them).
#
# Knobs (defaults are what docs/benchmarks.md reports):
#   BENCH_ACT_LICENSES=50 BENCH_ACT_MAX_ACTIVATIONS=100000
#   BENCH_ACT_COUNT=5000 BENCH_ACT_WARMUP=200 BENCH_ACT_CLIENTS=32
#   BENCH_ACT_READ_SECS=20 BENCH_ACT_READ_WARMUP=5 BENCH_ACT_CONNECTIONS=32
#   BENCH_ACT_SIGN_SECS=10 BENCH_ACT_VERIFY_SECS=5 BENCH_ACT_SIGN_THREADS=2
#   BENCH_ACT_DB_POOL=40 BENCH_ACT_RUST_LOG=info BENCH_ACT_DEADLINE=420
#   BENCH_ACT_IDLE_WAIT=60 (seconds waited, before the deadline starts, for
#   the machine to go idle)
set -euo pipefail

BENCH_NAME=bench-activation
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LICENSES="${BENCH_ACT_LICENSES:-50}"
MAX_ACT="${BENCH_ACT_MAX_ACTIVATIONS:-100000}"
COUNT="${BENCH_ACT_COUNT:-5000}"
WARMUP="${BENCH_ACT_WARMUP:-200}"
CLIENTS="${BENCH_ACT_CLIENTS:-32}"
READ_SECS="${BENCH_ACT_READ_SECS:-20}"
READ_WARMUP="${BENCH_ACT_READ_WARMUP:-5}"
CONNECTIONS="${BENCH_ACT_CONNECTIONS:-32}"
SIGN_SECS="${BENCH_ACT_SIGN_SECS:-10}"
VERIFY_SECS="${BENCH_ACT_VERIFY_SECS:-5}"
SIGN_THREADS="${BENCH_ACT_SIGN_THREADS:-2}"
DB_POOL="${BENCH_ACT_DB_POOL:-40}"
SERVICE_LOG="${BENCH_ACT_RUST_LOG:-info}"
DEADLINE="${BENCH_ACT_DEADLINE:-420}"
IDLE_WAIT="${BENCH_ACT_IDLE_WAIT:-60}"
PARTITIONS=12

require_tools jq psql curl
ensure_wrk
WRK_THREADS=2

# --- build -----------------------------------------------------------------------
build_release issuance activation domain-binding grant-sync projector loadgen

# --- run identity and cleanup -------------------------------------------------------
new_run -activation
PREFIX="benchact$RAND"
export LOADGEN_TOKEN="$ADMIN_KEY" BENCH_WRK_TOKEN="$ADMIN_KEY"
# The services log one line per request: keep a count of the measured ones.
cleanup_hook() {
  slim_log "$DIR/activation.log" /v1/validate bench/activation.sh
  slim_log "$DIR/domain-binding.log" /v1/domain-check bench/activation.sh
}
install_traps

# --- helpers ---------------------------------------------------------------------
# POST as the admin: body in $DIR/post.out, status on stdout.
post() {            # url json
  curl -sS -o "$DIR/post.out" -w '%{http_code}' --max-time 20 -X POST "$1" \
    -H "authorization: Bearer $ADMIN_KEY" -H 'content-type: application/json' \
    -H "idempotency-key: $(cat /proc/sys/kernel/random/uuid)" --data-binary "$2"
}
locate_infra
wait_idle

# Bounded from here on.
start_watchdog "$DEADLINE"
T_START=$(now_ms)

# --- services, product, licenses ------------------------------------------------
say "run $RUN_ID: the five services on topic prefix $PREFIX, output $DIR"
spawn_stack act

PRODUCT="bench-seats-$RAND"
code="$(post "$ISS/v1/products" "$(jq -nc --arg p "$PRODUCT" --argjson max "$MAX_ACT" '{
  code: $p, name: "Activation bench product",
  features: [{code: "f1", name: "F1"}, {code: "f2", name: "F2"}],
  policy: {max_activations: $max, requires_domain: true}}')")"
[[ "$code" == 201 ]] || die "creating product $PRODUCT: HTTP $code $(cat "$DIR/post.out")"

say "issuing $LICENSES formal licenses of $PRODUCT (max_activations $MAX_ACT)"
: >"$DIR/licenses.tsv"
LICENSE_BODY="$(jq -nc --arg p "$PRODUCT" '{product: $p, customer: "ACME Corp", kind: "formal", features: ["f1", "f2"]}')"
for _ in $(seq 1 "$LICENSES"); do
  code="$(post "$ISS/v1/licenses" "$LICENSE_BODY")"
  [[ "$code" == 201 ]] || die "issuing a license: HTTP $code $(cat "$DIR/post.out")"
  jq -er '"\(.id)\t\(.key)"' "$DIR/post.out" >>"$DIR/licenses.tsv"
done
cut -f2 "$DIR/licenses.tsv" >"$DIR/keys.txt"

# Activation learns licenses from issuance's events over Kafka.
t0=$(now_ms)
while read -r key; do
  for i in $(seq 1 600); do
    code="$(post "$ACT/v1/validate" "$(jq -nc --arg k "$key" '{license_key: $k}')")"
    [[ "$code" == 200 ]] && [[ "$(jq -r .code "$DIR/post.out")" != NOT_FOUND ]] && break
    (( i < 600 )) || die "license $key did not reach activation within 60 s"
    sleep 0.1
  done
done <"$DIR/keys.txt"
ARRIVAL_MS=$(( $(now_ms) - t0 ))
say "all $LICENSES licenses at activation ${ARRIVAL_MS} ms after the last was issued"

# Domain binding too; license i is bound to bench<i>.com, and its host
# check asks for www.bench<i>.com (answer OK).
say "binding each license to its own domain"
: >"$DIR/host-checks.tsv"
i=0
while IFS=$'\t' read -r id key; do
  i=$((i + 1))
  for n in $(seq 1 600); do
    [[ "$(call GET "$DOM/v1/licenses/$id/domain")" == 200 ]] && break
    (( n < 600 )) || die "license $id did not reach domain binding within 60 s"
    sleep 0.1
  done
  code="$(call PUT "$DOM/v1/licenses/$id/domain" "$(jq -nc --arg d "www.bench$i.com" '{domain: $d}')")"
  [[ "$code" == 200 ]] || die "binding $id: HTTP $code $(cat "$DIR/call.out")"
  printf 'GET\t/v1/domain-check?license_key=%s&host=www.bench%s.com\t\n' "$key" "$i" >>"$DIR/host-checks.tsv"
done <"$DIR/licenses.tsv"

# One probe activation (its own device, license 1): the real size of a file's claims.
code="$(post "$ACT/v1/activations" "$(jq -nc --arg k "$(head -n1 "$DIR/keys.txt")" '{license_key: $k,
  fingerprint: {machine_id: "probe-m", disk: "probe-d", board: "probe-b", mac: "probe-n"}}')")"
[[ "$code" == 201 ]] || die "probe activation: HTTP $code $(cat "$DIR/post.out")"
CLAIMS_B64="$(jq -r .activation_file "$DIR/post.out" | cut -d. -f2)"
CLAIMS_BYTES=$(( ${#CLAIMS_B64} * 3 / 4 ))
FILE_BYTES="$(jq -r '.activation_file | length' "$DIR/post.out")"

# --- 1. bare signing loop --------------------------------------------------------
say "1/4 sign: ES256 sign ${SIGN_SECS}s, verify ${VERIFY_SECS}s, on $SIGN_THREADS threads (services idle)"
measured sign $((SIGN_SECS + VERIFY_SECS + 30)) sign --threads "$SIGN_THREADS" \
  --duration "$SIGN_SECS" --verify-duration "$VERIFY_SECS"
jq -c '{signs_per_sec, signs_per_sec_per_thread, verify_per_sec, verify_per_sec_per_thread, payload_bytes}' "$DIR/sign.json" >&2

# --- 2. activations ----------------------------------------------------------------
say "2/4 activate: warm-up $WARMUP, then $COUNT activations of distinct devices, $CLIENTS clients, over $LICENSES licenses"
pg_statements_reset
measured activate 240 activate --url "$ACT" --keys-file "$DIR/keys.txt" --clients "$CLIENTS" \
  --count "$COUNT" --warmup "$WARMUP" --device-prefix "bench-$RAND" --correlation-id "bench-act-$RAND"
jq -c '{per_sec, p50_ms, p99_ms, errors, error_kinds}' "$DIR/activate.json" >&2
say "the statements that took the most database time during the activations (all services):"
pg_statements_top "$DIR/activate-statements.jsonl"

# --- 3 and 4. validate beside the host check ------------------------------------------
# Device i's body as loadgen sends it (bench/loadgen device_body): license i
# mod K, four components of its own.
DEVICES=$((WARMUP + COUNT))
awk -v d="$DEVICES" -v p="bench-$RAND" 'NR == FNR { k[n++] = $0; next } END {
  for (i = 0; i < d; i++)
    printf "POST\t/v1/validate\t{\"license_key\":\"%s\",\"fingerprint\":{\"machine_id\":\"%s-machine-%d\",\"disk\":\"%s-disk-%d\",\"board\":\"%s-board-%d\",\"mac\":\"%s-mac-%d\"}}\n", k[i % n], p, i, p, i, p, i, p, i
}' "$DIR/keys.txt" /dev/null >"$DIR/validations.tsv"
# Every request of a sample answers 200 with the code expected of it.
check_sample() {    # file base_url expected_code
  local method path body code n=0
  while IFS=$'\t' read -r method path body; do
    code="$(call "$method" "$2$path" ${body:+"$body"})"
    [[ "$code" == 200 && "$(jq -r .code "$DIR/call.out")" == "$3" ]] \
      || die "$method $path answered HTTP $code $(cat "$DIR/call.out"), not $3"
    n=$((n + 1))
  done < <(awk -v k="$(( ($(wc -l <"$1") + 49) / 50 ))" '(NR - 1) % k == 0' "$1")
  say "$n sampled requests of $(basename "$1") answer $3"
}
check_sample "$DIR/validations.tsv" "$ACT" VALID
check_sample "$DIR/host-checks.tsv" "$DOM" OK
WRK_SCRIPT="$DIR/requests.lua"
wrk_requests_lua >"$WRK_SCRIPT"
read_phase() {      # tag service base_url requests_file
  export BENCH_WRK_REQS="$4"
  WRK_SERVICE="$2"
  run_wrk "$1-warmup" "$3" "$CONNECTIONS" "$READ_WARMUP" warmup
  run_wrk "$1" "$3" "$CONNECTIONS" "$READ_SECS" measure
  jq -c --argjson c "$CONNECTIONS" --argjson t "$WRK_THREADS" --slurpfile cpu "$DIR/cpu-$1.json" \
    "$WRK_RECORD_JQ"' wrk_record($c; $t; $cpu[0])' "$DIR/$1.wrk.json" >"$DIR/$1.json"
  jq -c '{rps, p50_ms, p99_ms, errors, cpu: .cpu_cores}' "$DIR/$1.json" >&2
}
# The activations' events still travel to the other services' consumers:
# the reads are measured on a settled stack.
settle 60
say "3/4 validate: ${READ_SECS}s of POST /v1/validate over the $DEVICES activated devices, $CONNECTIONS connections"
read_phase validate activation "$ACT" "$DIR/validations.tsv"
say "4/4 host check: ${READ_SECS}s of GET /v1/domain-check over the $LICENSES bound licenses, $CONNECTIONS connections"
read_phase host-check domain-binding "$DOM" "$DIR/host-checks.tsv"

SEATS="$(sql "$PG_BASE/$DB_ACT" -c "SELECT count(*) FROM events WHERE event_type = 'DeviceActivated'" 2>/dev/null || echo null)"
[[ "$SEATS" =~ ^[0-9]+$ ]] || SEATS=null

# --- results -------------------------------------------------------------------------
MEM="$(free -b | awk '/^Mem:/ { printf "%.1f GiB", $2 / 1073741824 }')"
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
jq -n \
  --arg run "$RUN_ID" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg commit "$COMMIT" \
  --argjson dirty_paths "$DIRTY_PATHS" --arg nproc "$(nproc)" --arg mem "$MEM" \
  --arg uname "$(uname -srm)" --arg cpu "$CPU_MODEL" --arg bg "$BACKGROUND" --arg log "$SERVICE_LOG" \
  --argjson pool "$DB_POOL" --argjson parts "$PARTITIONS" --argjson licenses "$LICENSES" \
  --argjson max "$MAX_ACT" --argjson arrival "$ARRIVAL_MS" --argjson claims "$CLAIMS_BYTES" \
  --argjson file "$FILE_BYTES" --argjson seats "$SEATS" --argjson wall "$(( $(now_ms) - T_START ))" \
  --slurpfile s "$DIR/sign.json" --slurpfile a "$DIR/activate.json" --slurpfile v "$DIR/validate.json" \
  --slurpfile h "$DIR/host-check.json" \
  --slurpfile cs "$DIR/cpu-sign.json" --slurpfile ca "$DIR/cpu-activate.json" '
  def r($d): . * pow(10; $d) | round / pow(10; $d);
  def met($ok): if $ok then "met" else "not met" end;
  $s[0] as $s | $a[0] as $a | $v[0] as $v | $h[0] as $h | $ca[0] as $ca
  | (1000 / $s.signs_per_sec_per_thread) as $sign_ms
  | ($ca.activation * 1000 / $a.per_sec) as $act_cpu_ms
  | ($ca.machine_busy_cores * 1000 / $a.per_sec) as $machine_ms
  | {
    run: $run, date: $date, commit: $commit, uncommitted: $dirty_paths,
    machine: {nproc: ($nproc | tonumber), memory: $mem, uname: $uname, cpu: $cpu},
    background_cores_before: ($bg | tonumber),
    services: {rust_log: $log, db_pool_size: $pool, topic_partitions: $parts},
    setup: {licenses: $licenses, max_activations: $max, license_arrival_ms: $arrival,
            claims_bytes: $claims, activation_file_bytes: $file,
            device_activated_events: $seats,
            seats_per_license_at_end: (if $seats == null then null else ($seats / $licenses | r(1)) end)},
    wall_s: ($wall / 1000 | r(1)),
    sign: ($s + {cpu_cores: $cs[0]}),
    activate: ($a + {cpu_cores: $ca}),
    validate: $v,
    host_check: $h,
    targets: [
      {path: "POST /v1/validate, \($v.connections) connections",
       measured: "\($v.rps) req/s, p99 \($v.p99_ms) ms, \($v.rps / $h.rps | r(2)) x the host check",
       target: ">= 20,000 req/s at p99 <= 5 ms, and >= 0.6 x the host check",
       status: met($v.rps >= 20000 and $v.p99_ms <= 5 and $v.rps / $h.rps >= 0.6 and $v.errors == 0)},
      {path: "host check (reference), \($h.connections) connections",
       measured: "\($h.rps) req/s, p99 \($h.p99_ms) ms", target: "keep (34,062 req/s, p99 4.8 ms when filed)",
       status: "reference"},
      {path: "POST /v1/activations, \($a.clients) clients, distinct devices, all services running",
       measured: "\($a.per_sec) /s, p99 \($a.p99_ms) ms",
       target: ">= 800 /s at p99 <= 100 ms",
       status: met($a.per_sec >= 800 and $a.p99_ms <= 100 and $a.errors == 0)}
    ],
    summary: {
      activations_per_s: $a.per_sec, activate_p50_ms: $a.p50_ms, activate_p99_ms: $a.p99_ms,
      activate_errors: $a.errors,
      validate_rps: $v.rps, validate_p50_ms: $v.p50_ms, validate_p99_ms: $v.p99_ms,
      validate_errors: $v.errors,
      host_check_rps: $h.rps, host_check_p99_ms: $h.p99_ms,
      validate_over_host_check: ($v.rps / $h.rps | r(3)),
      signs_per_sec: $s.signs_per_sec, signs_per_sec_per_thread: $s.signs_per_sec_per_thread,
      verify_per_sec: $s.verify_per_sec, verify_per_sec_per_thread: $s.verify_per_sec_per_thread
    },
    crypto_share: {
      note: "one ES256 signature per activation; validate signs nothing",
      sign_ms_per_op_one_core: ($sign_ms | r(3)),
      activations_per_s_over_signs_per_s: ($a.per_sec / $s.signs_per_sec | r(4)),
      cores_signing_at_measured_rate: ($a.per_sec / $s.signs_per_sec_per_thread | r(4)),
      activation_service_cpu_ms_per_activation: ($act_cpu_ms | r(3)),
      machine_cpu_ms_per_activation: ($machine_ms | r(3)),
      of_activation_service_cpu: ($sign_ms / $act_cpu_ms | r(4)),
      of_machine_cpu: ($sign_ms / $machine_ms | r(4))
    }
  }' >"$DIR/activation.json"

merge_results activation "$DIR/activation.json"

jq -r '
  def row: "  \(.[0] | . + " " * ([50 - length, 1] | max))\(.[1])";
  "",
  "bench/activation.sh — run \(.run) (\(.machine.nproc) cores, commit \(.commit))",
  "",
  ( [
    ["activations/s (\(.activate.clients) clients, \(.activate.count) devices, \(.setup.licenses) licenses)", "\(.activate.per_sec)"],
    ["  p50 / p99 (ms)", "\(.activate.p50_ms) / \(.activate.p99_ms)"],
    ["  errors", "\(.activate.errors) \(.activate.error_kinds)"],
    ["validate requests/s (\(.validate.connections) connections, \(.validate.seconds) s)", "\(.validate.rps)"],
    ["  p50 / p99 (ms)", "\(.validate.p50_ms) / \(.validate.p99_ms)"],
    ["  errors", "\(.validate.errors) \(.validate.socket_error_kinds)"],
    ["host check requests/s (same connections, seconds)", "\(.host_check.rps)"],
    ["  p50 / p99 (ms)", "\(.host_check.p50_ms) / \(.host_check.p99_ms)"],
    ["validate ÷ host check", "\(.summary.validate_over_host_check)"],
    ["bare ES256 sign/s (\(.sign.threads) threads; per thread)", "\(.sign.signs_per_sec) (\(.sign.signs_per_sec_per_thread))"],
    ["bare ES256 verify/s (\(.sign.threads) threads; per thread)", "\(.sign.verify_per_sec) (\(.sign.verify_per_sec_per_thread))"],
    ["one signature on one core (ms)", "\(.crypto_share.sign_ms_per_op_one_core)"],
    ["activations/s ÷ signs/s (whole machine)", "\(.crypto_share.activations_per_s_over_signs_per_s)"],
    ["cores busy signing at the measured rate", "\(.crypto_share.cores_signing_at_measured_rate)"],
    ["activation CPU per activation (ms)", "\(.crypto_share.activation_service_cpu_ms_per_activation)"],
    ["  signing share of it", "\(.crypto_share.of_activation_service_cpu * 100 | . * 10 | round / 10) %"],
    ["machine CPU per activation (ms)", "\(.crypto_share.machine_cpu_ms_per_activation)"],
    ["  signing share of it", "\(.crypto_share.of_machine_cpu * 100 | . * 10 | round / 10) %"]
  ][] | row),
  "",
  "issue 17 targets (measured side by side in this run):",
  (.targets[] | "  \(.path): \(.measured) — target \(.target): \(.status)"),
  "",
  "  CPU cores: activate \(.activate.cpu_cores | to_entries | map("\(.key) \(.value)") | join(", "))",
  "             validate \(.validate.cpu_cores | to_entries | map("\(.key) \(.value)") | join(", "))",
  "             host check \(.host_check.cpu_cores | to_entries | map("\(.key) \(.value)") | join(", "))",
  "  background load before the run: \(.background_cores_before) cores",
  "",
  "raw numbers: .run/bench/results.json (key activation; run directory .run/bench/\(.run)-activation/)"
' "$DIR/activation.json"
