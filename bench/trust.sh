#!/usr/bin/env bash
# Part of `make bench` (issue 14, "Measure"): what the trust model costs,
# each figure beside its reference in the same run:
#   0. a warm-up drain per arm (not measured): the plaintext broker is a
#      fresh JVM, the SASL_SSL one has been running
#   1. IssueLicense over HTTP, 32 closed-loop clients, against the SASL_SSL
#      broker (SCRAM-SHA-512, ACLs) vs a plaintext broker without an
#      authorizer started for this run; two issuances (own databases and
#      prefixes), rounds in ABBA order (sasl/plain, plain/sasl, ...) so that
#      a drift of the machine's speed falls on both arms -> cost = 1 - sasl/plain
#   2. the outbox relay draining a backlog (SQL-inserted and vacuumed, so
#      that autovacuum does not land in one arm's drain, issuance stopped),
#      sasl vs plain, ABBA                                -> cost
#   3. the same backlog on the SASL_SSL broker with checkpoints on vs off
#      (LICENSING_CHECKPOINTS_ENABLED), ABBA: the cost of
#      signed checkpoints at the relay's full rate, and how fast the
#      checkpointer turns the backlog into Merkle leaves
# Everything it starts it stops; databases bench_trust_* and the topics of
# its prefixes are removed (BENCH_KEEP=1 keeps them). Raw numbers: key
# `trust` of .run/bench/results.json, run directory .run/bench/<run>-trust/.
# Each cost is given from the arms' means and, steadier against a drifting
# machine, as the median of the rounds' own ratios.
# Knobs: BENCH_CLIENTS=32 BENCH_TRUST_COUNT=5000 BENCH_TRUST_ROUNDS=4
#   BENCH_TRUST_BACKLOG=100000 BENCH_DB_POOL=40 BENCH_DEADLINE=1500
set -euo pipefail

BENCH_NAME=bench-trust
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLIENTS="${BENCH_CLIENTS:-32}"
COUNT="${BENCH_TRUST_COUNT:-5000}"
ROUNDS="${BENCH_TRUST_ROUNDS:-4}"
BACKLOG="${BENCH_TRUST_BACKLOG:-100000}"
DB_POOL="${BENCH_DB_POOL:-40}"
DEADLINE="${BENCH_DEADLINE:-1500}"
IDLE_WAIT="${BENCH_IDLE_WAIT:-120}"
SERVICE_LOG="${BENCH_RUST_LOG:-info}"
PARTITIONS=12
KAFKA_CACHE="${LICENSING_KAFKA_CACHE:-$HOME/.cache/licensing/kafka-4.1.1}"

require_tools jq psql curl java
build_release issuance loadgen

new_run -trust
DB_SASL="bench_trust_sasl_$RAND"
DB_PLAIN="bench_trust_plain_$RAND"
PREFIX="benchtrust$RAND"
PREFIX_PLAIN="${PREFIX}plain"
export LOADGEN_TOKEN="$ADMIN_KEY"
SPAWN_ENV=(LICENSING_LICENSE_KEY_SECRET="$KEY_SECRET" LICENSING_SIGNING_KEY_GENERATE=true
           LICENSING_SIGNING_KEY_FILE="$DIR/signing.pem")
BENCH_DBS=("$DB_SASL" "$DB_PLAIN")
DBS_CREATED=1
TOPIC_REGEX="$PREFIX(plain)?\\..*"
KEPT_TOPICS="$PREFIX.* $PREFIX_PLAIN.*"

# --- the plaintext broker of this run ---------------------------------------------
PLAIN_PID=""
cleanup_hook() {
  if [[ -n "$PLAIN_PID" ]]; then
    kill -TERM "$PLAIN_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$PLAIN_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PLAIN_PID" 2>/dev/null || true
  fi
}
install_traps
start_watchdog "$DEADLINE"

PLAIN_PORT="$(free_port)"; PLAIN_CTL="$(free_port)"
PLAIN_DIR="$DIR/kafka-plain"
mkdir -p "$PLAIN_DIR/data"
cat >"$PLAIN_DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$PLAIN_CTL
listeners=PLAINTEXT://127.0.0.1:$PLAIN_PORT,CONTROLLER://127.0.0.1:$PLAIN_CTL
advertised.listeners=PLAINTEXT://127.0.0.1:$PLAIN_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$PLAIN_DIR/data
num.partitions=3
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
JAVA_TOOL=(java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xlog:disable
  -Dlicensing.kafka.log.level=OFF "-Dlog4j2.configurationFile=$ROOT/infra/kafka/log4j2.xml" -cp "$KAFKA_CACHE/libs/*")
timeout 120 "${JAVA_TOOL[@]}" kafka.tools.StorageTool format --standalone \
  --cluster-id "$(head -c 16 /dev/urandom | base64 | tr '+/' 'AB' | tr -d '=\n' | cut -c1-22)" \
  --config "$PLAIN_DIR/server.properties" >"$PLAIN_DIR/format.log" 2>&1 || die "formatting the plaintext broker failed"
# The same heap and collector as infra/kafka/up.sh's broker.
java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
  "-Dlog4j2.configurationFile=$ROOT/infra/kafka/log4j2.xml" -cp "$KAFKA_CACHE/libs/*" \
  kafka.Kafka "$PLAIN_DIR/server.properties" >"$PLAIN_DIR/kafka.log" 2>&1 &
PLAIN_PID=$!
printf 'bootstrap.servers=127.0.0.1:%s\n' "$PLAIN_PORT" >"$DIR/plain.properties"
for _ in $(seq 1 300); do
  timeout 20 "${JAVA_TOOL[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$PLAIN_PORT" \
    --list >/dev/null 2>&1 && break
  kill -0 "$PLAIN_PID" 2>/dev/null || die "the plaintext broker exited; see $PLAIN_DIR/kafka.log"
  sleep 0.5
done

locate_infra
wait_idle " for it to go idle"
say "run $RUN_ID: SASL_SSL broker $BROKERS (prefix $PREFIX), plaintext broker 127.0.0.1:$PLAIN_PORT (prefix $PREFIX_PLAIN)"
sql "$PG_BASE/postgres" -c "CREATE DATABASE $DB_SASL" -c "CREATE DATABASE $DB_PLAIN"
provision
"$BIN/licensectl" kafka provision --config "$DIR/plain.properties" --prefix "$PREFIX_PLAIN" \
  --partitions "$PARTITIONS" >>"$DIR/provision.log" 2>&1 || die "provisioning the plaintext broker failed"

# arm -> service name, database, and the environment that points it at its broker.
arm_env() {         # arm
  if [[ "$1" == plain ]]; then
    echo "LICENSING_KAFKA_BROKERS=127.0.0.1:$PLAIN_PORT LICENSING_KAFKA_PROPERTIES_FILE=$DIR/plain.properties LICENSING_TOPIC_PREFIX=$PREFIX_PLAIN"
  else
    echo "LICENSING_TOPIC_PREFIX=$PREFIX"
  fi
}
arm_db() { if [[ "$1" == plain ]]; then echo "$PG_BASE/$DB_PLAIN"; else echo "$PG_BASE/$DB_SASL"; fi; }
spawn_arm() {       # arm [VAR=value ...]; does not wait
  local arm="$1"; shift
  # shellcheck disable=SC2046
  spawn_service "iss_$arm" issuance "$(arm_db "$arm")" $(arm_env "$arm") "$@"
}
start_arm() {       # arm [VAR=value ...]
  spawn_arm "$@"
  wait_ready "iss_$1"
}
# The two arms of round r, in ABBA order.
order() {           # r a b
  if (( $1 % 2 == 1 )); then echo "$2 $3"; else echo "$3 $2"; fi
}
# CPU snapshots that also name the plaintext broker: the CPU each broker
# spends per command or event is steadier than throughput on a machine
# whose speed drifts.
snap() { cpu_snap "$1" "kafka_plain=$PLAIN_PID"; }
pooled_ms() {       # q file...
  local q="$1"; shift
  cat "$@" | sort -n | awk -v q="$q" '{ v[NR] = $1 }
    END { if (NR == 0) { print "null"; exit } r = q * NR; i = int(r); if (i < r) i++; if (i < 1) i = 1
          printf "%.2f\n", v[i] / 1000 }'
}

# --- the relay draining a backlog (phases 0, 2 and 3) -----------------------------------
backlog() {         # db_url
  sql "$1" <<EOF
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
  # Now, not in the middle of one arm's drain.
  sql "$1" -c "VACUUM ANALYZE events" -c "VACUUM ANALYZE merkle_leaves" >/dev/null
}
# One drain: backlog inserted with issuance stopped, then issuance started and
# the relay's checkpoint followed to the end (and the leaves, when on).
drain() {           # tag arm checkpoints(true|false)
  local tag="$1" arm="$2" cps="$3" db t0 t1 leaves0 leaf_s=null
  db="$(arm_db "$arm")"
  backlog "$db"
  leaves0="$(sql "$db" -c "SELECT count(*) FROM merkle_leaves")"
  snap "$DIR/cpu-$tag-0.json"; t0=$(now_ms)
  spawn_arm "$arm" LICENSING_CHECKPOINTS_ENABLED="$cps"
  timeout 150 "$LOADGEN" relay-watch --db "$db" --relay issuance --t0-ms "$t0" --timeout 120 \
    --interval-ms 100 >"$DIR/$tag.json"
  wait_ready "iss_$arm"
  if [[ "$cps" == true ]]; then
    for _ in $(seq 1 1200); do   # the checkpointer's catch-up, at most 120 s
      n="$(sql "$db" -c "SELECT count(*) FROM merkle_leaves")"
      (( n - leaves0 >= BACKLOG )) && { leaf_s="$(( $(now_ms) - t0 ))e-3"; break; }
      sleep 0.1
    done
  fi
  t1=$(now_ms); snap "$DIR/cpu-$tag-1.json"
  cpu_diff "$DIR/cpu-$tag-0.json" "$DIR/cpu-$tag-1.json" "$(( t1 - t0 ))e-3" >"$DIR/cpu-$tag.json"
  stop_service "iss_$arm"
  jq -n --arg tag "$tag" --arg arm "$arm" --argjson cps "$cps" --slurpfile r "$DIR/$tag.json" \
    --slurpfile c "$DIR/cpu-$tag.json" --argjson leaf_s "$leaf_s" --argjson backlog "$BACKLOG" \
    --argjson window_s "$(( t1 - t0 ))e-3" '
    ($c[0] | if $arm == "sasl" then .kafka else .kafka_plain end) as $broker
    | def per_event($cores): $cores * $window_s / $backlog * 1e6 | . * 10 | round / 10;
    {tag: $tag, arm: $arm, checkpoints: $cps, caught_up: $r[0].caught_up, caught_up_s: $r[0].caught_up_s,
     events_per_s_from_spawn: $r[0].events_per_s_from_spawn,
     events_per_s_after_first_batch: $r[0].events_per_s_after_first_batch,
     leaves_appended_s_from_spawn: $leaf_s,
     leaves_per_s_from_spawn: (if $leaf_s == null then null else ($backlog / $leaf_s | round) end),
     window_s: $window_s,
     broker_us_per_event: per_event($broker),
     service_us_per_event: per_event($c[0]["iss_" + $arm]),
     postgres_us_per_event: per_event($c[0].postgres),
     cpu_cores: $c[0]}' >"$DIR/$tag.round.json"
  jq -c '{tag, events_per_s_from_spawn, events_per_s_after_first_batch, leaves_per_s_from_spawn,
          broker_us_per_event, service_us_per_event, postgres_us_per_event}' "$DIR/$tag.round.json" >&2
}
# --- 0. warm-up -----------------------------------------------------------------------
# The plaintext broker is a JVM started a minute ago; the SASL_SSL one has
# run for as long as infra/kafka/up.sh's. A drain per arm, not measured,
# gets both JITs through the relay's paths before anything is compared.
say "0/3 warm-up: one $BACKLOG-event drain per arm"
for arm in sasl plain; do
  start_arm "$arm"; stop_service "iss_$arm"   # migrated: the backlog has its table
  drain "warm-$arm" "$arm" true
done

# --- 1. IssueLicense, sasl vs plain --------------------------------------------------
for arm in sasl plain; do
  start_arm "$arm"
  url="http://127.0.0.1:${PORTS[iss_$arm]}"
  seed_catalog "$url"
  timeout 60 "$LOADGEN" http-issue --url "$url" --clients "$CLIENTS" --count 3000 \
    --correlation-id "trust-warmup-$arm-$RAND" >"$DIR/warmup-$arm.json"
done
ISSUE_FILES=()
say "1/3 IssueLicense: $ROUNDS rounds per arm of $COUNT, $CLIENTS clients, ABBA"
for r in $(seq 1 "$ROUNDS"); do
  for arm in $(order "$r" sasl plain); do
    tag="issue-$arm-$r"; url="http://127.0.0.1:${PORTS[iss_$arm]}"
    snap "$DIR/cpu-$tag-0.json"; t0=$(now_ms)
    timeout 180 "$LOADGEN" http-issue --url "$url" --clients "$CLIENTS" --count "$COUNT" \
      --correlation-id "trust-$tag-$RAND" --latencies-out "$DIR/$tag.us" >"$DIR/$tag.json"
    t1=$(now_ms); snap "$DIR/cpu-$tag-1.json"
    cpu_diff "$DIR/cpu-$tag-0.json" "$DIR/cpu-$tag-1.json" "$(( t1 - t0 ))e-3" >"$DIR/cpu-$tag.json"
    (( $(jq .errors "$DIR/$tag.json") == 0 )) || die "$tag: requests failed ($(jq -c .error_kinds "$DIR/$tag.json"))"
    jq -n --arg arm "$arm" --argjson round "$r" --slurpfile h "$DIR/$tag.json" --slurpfile c "$DIR/cpu-$tag.json" \
      '($c[0] | if $arm == "sasl" then .kafka else .kafka_plain end) as $broker
      | ($c[0]["iss_" + $arm]) as $service
      | {arm: $arm, round: $round, throughput_per_s: $h[0].throughput_per_s, latency_ms: $h[0].latency_ms,
         broker_us_per_command: ($broker / $h[0].throughput_per_s * 1e6 | round),
         service_us_per_command: ($service / $h[0].throughput_per_s * 1e6 | round),
         cpu_cores: $c[0]}' >"$DIR/$tag.round.json"
    ISSUE_FILES+=("$DIR/$tag.round.json")
    jq -c '{arm, round, throughput_per_s, p99: .latency_ms.p99, broker_us_per_command, service_us_per_command}' \
      "$DIR/$tag.round.json" >&2
  done
done
jq -s --argjson sasl_p99 "$(pooled_ms 0.99 "$DIR"/issue-sasl-*.us)" --argjson plain_p99 "$(pooled_ms 0.99 "$DIR"/issue-plain-*.us)" '
  def mean($a): [.[] | select(.arm == $a) | .throughput_per_s] | add / length | . * 10 | round / 10;
  def us($a; $f): [.[] | select(.arm == $a) | .[$f]] | add / length | round;
  def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  . as $all
  | {rounds: .,
     sasl: {mean_throughput_per_s: mean("sasl"), p99_ms_pooled: $sasl_p99,
            broker_us_per_command: us("sasl"; "broker_us_per_command"),
            service_us_per_command: us("sasl"; "service_us_per_command")},
     plain: {mean_throughput_per_s: mean("plain"), p99_ms_pooled: $plain_p99,
             broker_us_per_command: us("plain"; "broker_us_per_command"),
             service_us_per_command: us("plain"; "service_us_per_command")}}
  | . + {cost: ((1 - .sasl.mean_throughput_per_s / .plain.mean_throughput_per_s) * 1000 | round / 1000),
         cost_median_of_rounds: ([$all | group_by(.round)[]
           | (map(select(.arm == "sasl"))[0].throughput_per_s / map(select(.arm == "plain"))[0].throughput_per_s)]
           | median | (1 - .) * 1000 | round / 1000)}' \
  "${ISSUE_FILES[@]}" >"$DIR/issue.json"
jq -c '{sasl: .sasl, plain: .plain, cost, cost_median_of_rounds}' "$DIR/issue.json" >&2
for arm in sasl plain; do stop_service "iss_$arm"; done

RELAY_FILES=(); CP_FILES=()
say "2/3 relay: $ROUNDS rounds per arm of a $BACKLOG-event backlog, sasl/plain ABBA"
for r in $(seq 1 "$ROUNDS"); do
  for arm in $(order "$r" sasl plain); do drain "relay-$arm-$r" "$arm" true; RELAY_FILES+=("$DIR/relay-$arm-$r.round.json"); done
done
say "3/3 relay with checkpoints on/off (SASL_SSL): $ROUNDS rounds per arm, ABBA"
for r in $(seq 1 "$ROUNDS"); do
  for cps in $(order "$r" true false); do drain "cp-$cps-$r" sasl "$cps"; CP_FILES+=("$DIR/cp-$cps-$r.round.json"); done
done
summarise() {       # key_on key_off field (jq over the rounds)
  jq -s --arg on "$1" --arg off "$2" --arg by "$3" '
    def sel($v): [.[] | select((if $by == "arm" then .arm else (.checkpoints | tostring) end) == $v)];
    def mean($r; $f): [$r[] | .[$f] // empty] | if length == 0 then null else add / length | round end;
    def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def ratio($x; $y; $f): [range(0; [($x | length), ($y | length)] | min) as $i | $x[$i][$f] / $y[$i][$f]]
      | median | (1 - .) * 1000 | round / 1000;
    def us($r; $f): [$r[] | .[$f]] | add / length | . * 10 | round / 10;
    def cpu($r): {broker_us_per_event: us($r; "broker_us_per_event"),
                  service_us_per_event: us($r; "service_us_per_event"),
                  postgres_us_per_event: us($r; "postgres_us_per_event")};
    (sel($on)) as $a | (sel($off)) as $b
    | {rounds: ., ($on): ({events_per_s_from_spawn: mean($a; "events_per_s_from_spawn"),
                         events_per_s_after_first_batch: mean($a; "events_per_s_after_first_batch"),
                         leaves_per_s_from_spawn: mean($a; "leaves_per_s_from_spawn")} + cpu($a)),
       ($off): ({events_per_s_from_spawn: mean($b; "events_per_s_from_spawn"),
                 events_per_s_after_first_batch: mean($b; "events_per_s_after_first_batch")} + cpu($b))}
    | . + {cost_from_spawn: ((1 - .[$on].events_per_s_from_spawn / .[$off].events_per_s_from_spawn) * 1000 | round / 1000),
           cost_steady: ((1 - .[$on].events_per_s_after_first_batch / .[$off].events_per_s_after_first_batch) * 1000 | round / 1000),
           cost_from_spawn_median_of_rounds: ratio($a; $b; "events_per_s_from_spawn"),
           cost_steady_median_of_rounds: ratio($a; $b; "events_per_s_after_first_batch")}'
}
summarise sasl plain arm <<<"$(cat "${RELAY_FILES[@]}")" >"$DIR/relay.json"
summarise true false checkpoints <<<"$(cat "${CP_FILES[@]}")" >"$DIR/checkpoints.json"

jq -n --arg run "$RUN_ID" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg commit "$COMMIT" \
  --argjson dirty "$DIRTY_PATHS" --arg nproc "$(nproc)" --arg bg "$BACKGROUND" \
  --argjson clients "$CLIENTS" --argjson count "$COUNT" --argjson rounds "$ROUNDS" --argjson backlog "$BACKLOG" \
  --slurpfile i "$DIR/issue.json" --slurpfile r "$DIR/relay.json" --slurpfile c "$DIR/checkpoints.json" '
  {run: $run, date: $date, commit: $commit, uncommitted: $dirty, nproc: ($nproc | tonumber),
   background_cores_before: ($bg | tonumber),
   setup: {clients: $clients, issue_count_per_round: $count, rounds_per_arm: $rounds, backlog: $backlog,
           sasl: "SASL_SSL, SCRAM-SHA-512, StandardAuthorizer with ACLs (infra/kafka/up.sh)",
           plain: "PLAINTEXT, no authorizer, same jars, heap and collector, started by bench/trust.sh"},
   issue_license: $i[0], relay: $r[0], checkpoints: $c[0],
   targets: {issue_sasl_cost: {target: "< 5 %", met: ($i[0].cost < 0.05),
                               met_by_median_of_rounds: ($i[0].cost_median_of_rounds < 0.05)},
             relay_sasl_cost: {target: "< 5 %", met: ($r[0].cost_from_spawn < 0.05),
                               met_by_median_of_rounds: ($r[0].cost_from_spawn_median_of_rounds < 0.05)}}}' >"$DIR/trust.json"
merge_results trust "$DIR/trust.json"

jq -r '
  def yn: if . then "met" else "MISSED" end;
  def pct: . * 1000 | round / 10 | tostring + " %";
  "", "bench/trust.sh — run \(.run) (\(.nproc) cores, commit \(.commit))", "",
  "  IssueLicense HTTP (\(.setup.clients) clients, \(.setup.rounds_per_arm)×\(.setup.issue_count_per_round) per arm)",
  "    SASL_SSL \(.issue_license.sasl.mean_throughput_per_s) cmd/s (p99 \(.issue_license.sasl.p99_ms_pooled) ms)  vs  plaintext \(.issue_license.plain.mean_throughput_per_s) cmd/s (p99 \(.issue_license.plain.p99_ms_pooled) ms)",
  "    CPU per command: broker \(.issue_license.sasl.broker_us_per_command) µs vs \(.issue_license.plain.broker_us_per_command) µs, issuance \(.issue_license.sasl.service_us_per_command) µs vs \(.issue_license.plain.service_us_per_command) µs",
  "    cost \(.issue_license.cost | pct) (median of rounds \(.issue_license.cost_median_of_rounds | pct))   target < 5 %  \(.targets.issue_sasl_cost.met | yn)",
  "  relay, \(.setup.backlog)-event backlog (events/s from spawn; after the first batch)",
  "    SASL_SSL \(.relay.sasl.events_per_s_from_spawn); \(.relay.sasl.events_per_s_after_first_batch)  vs  plaintext \(.relay.plain.events_per_s_from_spawn); \(.relay.plain.events_per_s_after_first_batch)",
  "    CPU per event: broker \(.relay.sasl.broker_us_per_event) µs vs \(.relay.plain.broker_us_per_event) µs, issuance \(.relay.sasl.service_us_per_event) µs vs \(.relay.plain.service_us_per_event) µs",
  "    cost \(.relay.cost_from_spawn | pct) (median of rounds \(.relay.cost_from_spawn_median_of_rounds | pct)); steady \(.relay.cost_steady | pct) (\(.relay.cost_steady_median_of_rounds | pct))   target < 5 %  \(.targets.relay_sasl_cost.met | yn)",
  "  checkpoints at the relay'"'"'s full rate (SASL_SSL)",
  "    on \(.checkpoints["true"].events_per_s_from_spawn); \(.checkpoints["true"].events_per_s_after_first_batch)  vs  off \(.checkpoints["false"].events_per_s_from_spawn); \(.checkpoints["false"].events_per_s_after_first_batch)",
  "    CPU per event: issuance \(.checkpoints["true"].service_us_per_event) µs vs \(.checkpoints["false"].service_us_per_event) µs, PostgreSQL \(.checkpoints["true"].postgres_us_per_event) µs vs \(.checkpoints["false"].postgres_us_per_event) µs",
  "    cost \(.checkpoints.cost_from_spawn | pct) (median of rounds \(.checkpoints.cost_from_spawn_median_of_rounds | pct)); steady \(.checkpoints.cost_steady | pct) (\(.checkpoints.cost_steady_median_of_rounds | pct)); the checkpointer appended \(.checkpoints["true"].leaves_per_s_from_spawn) leaves/s",
  "", "raw numbers: .run/bench/results.json (key trust; run directory .run/bench/\(.run)-trust/)"' "$DIR/trust.json"
