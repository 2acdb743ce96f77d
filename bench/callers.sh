#!/usr/bin/env bash
# Part of `make bench` (issue 15): what the hardening against callers costs
# and where an operator's status page stands, each figure beside its
# reference in the same run.
#   1. `GET /v1/admin/projections` on a quiet projector whose four event
#      topics (12 partitions) hold BENCH_CALLERS_LICENSES issued licenses
#      (transactional, so every partition ends in commit markers the status
#      must tell from lag): target under 100 ms; reference: the same
#      projector's `GET /healthz` (no database, no broker), same connection,
#      same run. Rounds alternate status / reference.
#   2. `POST /v1/validate` with an installed product's credential
#      (`Authorization: License <key>`) vs the same request with the
#      `activator` API key, alternating rounds: the cost of license-scoped
#      credentials on the hottest product path.
# Release builds; everything it starts is stopped, its databases and topics
# removed (BENCH_KEEP=1 keeps them). Results: key `callers` of
# .run/bench/results.json, raw files in .run/bench/<run>-callers/.
# Knobs: BENCH_CALLERS_LICENSES=2000 BENCH_CALLERS_SECS=10
#   BENCH_CALLERS_ROUNDS=2 BENCH_CALLERS_CONNECTIONS=16 (validate)
#   BENCH_CALLERS_DEADLINE=900 BENCH_DB_POOL=32
set -euo pipefail

BENCH_NAME=bench-callers
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LICENSES="${BENCH_CALLERS_LICENSES:-2000}"
SECS="${BENCH_CALLERS_SECS:-10}"
ROUNDS="${BENCH_CALLERS_ROUNDS:-2}"
CONNS="${BENCH_CALLERS_CONNECTIONS:-16}"
DEADLINE="${BENCH_CALLERS_DEADLINE:-900}"
DB_POOL="${BENCH_DB_POOL:-32}"
SERVICE_LOG="${BENCH_RUST_LOG:-warn}"
IDLE_WAIT="${BENCH_IDLE_WAIT:-120}"
PARTITIONS=12

require_tools jq psql curl
ensure_wrk
build_release issuance activation projector loadgen

new_run -callers
DB_ISS="bench_callers_iss_$RAND"
DB_ACT="bench_callers_act_$RAND"
DB_PROJ="bench_callers_proj_$RAND"
PREFIX="benchcallers$RAND"
BENCH_DBS=("$DB_ISS" "$DB_ACT" "$DB_PROJ")
install_traps
locate_infra
start_watchdog "$DEADLINE"

say "run $RUN_ID: prefix $PREFIX, output $DIR"
DBS_CREATED=1
sql "$PG_BASE/postgres" -c "CREATE DATABASE $DB_ISS" -c "CREATE DATABASE $DB_ACT" \
  -c "CREATE DATABASE $DB_PROJ"
KEYFILE="$DIR/activation-signing.pem"
spawn_service issuance issuance "$PG_BASE/$DB_ISS" LICENSING_LICENSE_KEY_SECRET="$KEY_SECRET"
spawn_service activation activation "$PG_BASE/$DB_ACT" \
  LICENSING_SIGNING_KEY_FILE="$KEYFILE" LICENSING_SIGNING_KEY_GENERATE=true
spawn_service projector projector "$PG_BASE/$DB_PROJ" \
  LICENSING_SIGNING_KEY_FILE="$DIR/projector-signing.pem" LICENSING_SIGNING_KEY_GENERATE=true
for s in issuance activation projector; do wait_ready "$s"; done
ISS="http://127.0.0.1:${PORTS[issuance]}"
ACT="http://127.0.0.1:${PORTS[activation]}"
PROJ="http://127.0.0.1:${PORTS[projector]}"
seed_catalog "$ISS"

say "issuing $LICENSES licenses"
export LOADGEN_TOKEN="$ADMIN_KEY"
"$LOADGEN" http-issue --url "$ISS" --clients 16 --count "$LICENSES" \
  --correlation-id "callers-$RAND" >"$DIR/issue.json"

# The product: one license, one device, activated with its own credential.
code="$(call POST "$ISS/v1/licenses" \
  '{"product":"integration-platform","edition":"enterprise","customer":"Bench","kind":"formal","features":["data-access"]}')"
[[ "$code" == 201 ]] || die "issuing the product's license: HTTP $code"
LICENSE_KEY="$(jq -r .key "$DIR/call.out")"
DEVICE='{"machine_id":"m-1","disk":"d-1","board":"b-1","mac":"aa:bb:cc:dd:ee:01"}'
for i in $(seq 1 300); do
  code="$(curl -sS -o "$DIR/call.out" -w '%{http_code}' -X POST "$ACT/v1/activations" \
    -H "authorization: License $LICENSE_KEY" -H 'content-type: application/json' \
    --data-binary "{\"fingerprint\":$DEVICE}")"
  [[ "$code" == 201 || "$code" == 200 ]] && break
  (( i < 300 )) || die "the product could not activate: HTTP $code $(cat "$DIR/call.out")"
  sleep 0.1
done

# Quiet: the projector has every event (lag 0 on every model).
say "waiting for the projector to catch up"
for i in $(seq 1 600); do
  code="$(call GET "$PROJ/v1/admin/projections")"
  [[ "$code" == 200 ]] && jq -e '[.models[].lag] | all(. == 0)' "$DIR/call.out" >/dev/null && break
  (( i < 600 )) || die "projector lag not 0 after 60 s: $(cat "$DIR/call.out")"
  sleep 0.1
done
cp "$DIR/call.out" "$DIR/projections.json"
IDLE_WAIT="$IDLE_WAIT" wait_idle

# --- wrk scripts ------------------------------------------------------------------------
lua() {  # name method path auth_var [body_var]
  local body=nil
  [[ -n "${5:-}" ]] && body="os.getenv(\"$5\")"
  {
    wrk_lua_head
    cat <<LUA
function init(args)
  local headers = { ["Authorization"] = os.getenv("$4"), ["Content-Type"] = "application/json" }
  n = 1
  reqs[1] = wrk.format("$2", "$3", headers, $body)
end
LUA
    wrk_lua_tail
  } >"$DIR/$1.lua"
}
export BENCH_CALLERS_ADMIN="Bearer $ADMIN_KEY"
export BENCH_CALLERS_LICENSE="License $LICENSE_KEY"
export BENCH_CALLERS_BODY="{\"fingerprint\":$DEVICE,\"features\":[\"data-access\"]}"
export BENCH_CALLERS_OPERATOR_BODY="{\"license_key\":\"$LICENSE_KEY\",\"fingerprint\":$DEVICE,\"features\":[\"data-access\"]}"
lua status GET /v1/admin/projections BENCH_CALLERS_ADMIN
lua healthz GET /healthz BENCH_CALLERS_ADMIN
lua license POST /v1/validate BENCH_CALLERS_LICENSE BENCH_CALLERS_BODY
lua operator POST /v1/validate BENCH_CALLERS_ADMIN BENCH_CALLERS_OPERATOR_BODY

: >"$DIR/rows.jsonl"
row() {  # tag kind service url connections
  WRK_SCRIPT="$DIR/$2.lua"; WRK_SERVICE="$3"; WRK_THREADS=1
  run_wrk "$1" "$4" "$5" "$SECS" measure
  jq -c --arg kind "$2" --argjson c "$5" --slurpfile cpu "$DIR/cpu-$1.json" \
    "$WRK_RECORD_JQ"' {kind: $kind} + wrk_record($c; 1; $cpu[0])' "$DIR/$1.wrk.json" \
    | tee -a "$DIR/rows.jsonl" | jq -c '{kind, connections, rps, p50_ms, p99_ms, max_ms, errors}' >&2
}
for r in $(seq 1 "$ROUNDS"); do
  say "round $r: projections status vs healthz (1 connection, ${SECS}s each)"
  if (( r % 2 )); then
    row "status-$r" status projector "$PROJ" 1; row "healthz-$r" healthz projector "$PROJ" 1
  else
    row "healthz-$r" healthz projector "$PROJ" 1; row "status-$r" status projector "$PROJ" 1
  fi
  say "round $r: validate with the license credential vs an activator key ($CONNS connections)"
  if (( r % 2 )); then
    row "license-$r" license activation "$ACT" "$CONNS"
    row "operator-$r" operator activation "$ACT" "$CONNS"
  else
    row "operator-$r" operator activation "$ACT" "$CONNS"
    row "license-$r" license activation "$ACT" "$CONNS"
  fi
done

jq -s --arg run "$RUN_ID" --arg commit "$COMMIT" --argjson dirty "$DIRTY_PATHS" \
  --argjson licenses "$LICENSES" --argjson nproc "$(nproc)" '
  def arm($k): map(select(.kind == $k));
  def mean(f): (map(f) | add / length * 1000 | round / 1000);
  {run: $run, commit: $commit, dirty_paths: $dirty, nproc: $nproc, licenses: $licenses,
   projections_status: {p50_ms: (arm("status") | mean(.p50_ms)), p99_ms: (arm("status") | mean(.p99_ms)),
                        max_ms: (arm("status") | map(.max_ms) | max), rps: (arm("status") | mean(.rps)),
                        target_p99_ms: 100},
   healthz_reference: {p50_ms: (arm("healthz") | mean(.p50_ms)), p99_ms: (arm("healthz") | mean(.p99_ms)),
                       rps: (arm("healthz") | mean(.rps))},
   validate_license_credential: {rps: (arm("license") | mean(.rps)), p50_ms: (arm("license") | mean(.p50_ms)),
                                 p99_ms: (arm("license") | mean(.p99_ms)), errors: (arm("license") | map(.errors) | add)},
   validate_activator_key: {rps: (arm("operator") | mean(.rps)), p50_ms: (arm("operator") | mean(.p50_ms)),
                            p99_ms: (arm("operator") | mean(.p99_ms)), errors: (arm("operator") | map(.errors) | add)},
   rows: .}' "$DIR/rows.jsonl" >"$DIR/summary.json"
merge_results callers "$DIR/summary.json"
jq '{projections_status, healthz_reference, validate_license_credential, validate_activator_key}' "$DIR/summary.json" >&2
say "done: $DIR/summary.json"
