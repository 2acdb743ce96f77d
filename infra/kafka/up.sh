#!/usr/bin/env bash
# Start the local single-node Apache Kafka 4.1.1 broker (KRaft) of this
# checkout and create the topics of schemas/topics.toml (idempotent).
#
#   jars     ${LICENSING_KAFKA_CACHE:-~/.cache/licensing/kafka-4.1.1}/libs (Maven Central, via pom.xml)
#   config   $ROOT/.run/kafka/server.properties      data  $ROOT/.run/kafka/data
#   pid      $ROOT/.run/kafka/kafka.pid              log   $ROOT/.run/logs/kafka.log
#   listens  127.0.0.1:${LICENSING_KAFKA_PORT:-9092} (controller ${LICENSING_KAFKA_CONTROLLER_PORT:-9093})
#   topics   ${LICENSING_TOPIC_PREFIX:-licensing}.<name>
#
# Already running: reused (only missing topics are created).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
RUN="$ROOT/.run"
KDIR="$RUN/kafka"
DATA="$KDIR/data"
PIDF="$KDIR/kafka.pid"
LOG="$RUN/logs/kafka.log"
PROPS="$KDIR/server.properties"
LOG4J="$ROOT/infra/kafka/log4j2.xml"
POM="$ROOT/infra/kafka/pom.xml"
TOPICS_TOML="$ROOT/schemas/topics.toml"
PORT="${LICENSING_KAFKA_PORT:-9092}"
CTL="${LICENSING_KAFKA_CONTROLLER_PORT:-9093}"
PREFIX="${LICENSING_TOPIC_PREFIX:-licensing}"
CACHE="${LICENSING_KAFKA_CACHE:-$HOME/.cache/licensing/kafka-4.1.1}"
LIBS="$CACHE/libs"
READY_TIMEOUT="${LICENSING_KAFKA_READY_TIMEOUT:-90}"
TOPIC_JOBS="${LICENSING_KAFKA_TOPIC_JOBS:-4}"   # parallel topic-creating JVMs

say() { printf 'kafka: %s\n' "$*"; }
die() { printf 'kafka: ERROR: %s\n' "$*" >&2; exit 1; }

for v in PORT CTL READY_TIMEOUT TOPIC_JOBS; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
done
[[ "$PORT" != "$CTL" ]] || die "broker and controller ports must differ (both $PORT)"
[[ -f "$TOPICS_TOML" ]] || die "$TOPICS_TOML not found"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  [[ $EUID -eq 0 ]] || die "$1 is missing; install it (apt-get install -y $2)"
  say "installing $2 (apt-get, log: .run/logs/apt-kafka.log)"
  { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2"; } \
    >>"$RUN/logs/apt-kafka.log" 2>&1 || die "apt-get install $2 failed, see $RUN/logs/apt-kafka.log"
}

mkdir -p "$KDIR" "$RUN/logs"
exec 9>"$RUN/kafka.lock"        # one up/down at a time for this checkout
flock 9

# --- java and the jars --------------------------------------------------------
command -v java >/dev/null 2>&1 || apt_install java openjdk-17-jre-headless

# The tools (topic list/create) are short JVMs: small heap, C1 only, and a
# class-data-sharing archive of their classes (made on the first topic list)
# that halves their start-up. -Xlog:disable keeps JVM warnings out of their output.
CDS="$CACHE/tools.jsa"
TOOL_JAVA=(java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto -Xlog:disable
           -Dlicensing.kafka.log.level=OFF "-Dlog4j2.configurationFile=$LOG4J" -cp "$LIBS/*")

want_mark="kafka-4.1.1 pom-sha256=$(sha256sum "$POM" | cut -d' ' -f1)"
if [[ "$(cat "$CACHE/.complete" 2>/dev/null || true)" != "$want_mark" ]]; then
  command -v mvn >/dev/null 2>&1 || apt_install mvn maven
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.lock"         # checkouts may share the cache
  flock 8
  if [[ "$(cat "$CACHE/.complete" 2>/dev/null || true)" != "$want_mark" ]]; then
    say "fetching jars into $LIBS (maven)"
    rm -rf "$LIBS" "$CACHE/libs.tmp" "$CDS"
    if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
         -DoutputDirectory="$CACHE/libs.tmp" >"$RUN/logs/kafka-fetch.log" 2>&1; then
      tail -n 20 "$RUN/logs/kafka-fetch.log" >&2 || true
      die "maven could not fetch the Kafka jars, see $RUN/logs/kafka-fetch.log"
    fi
    ls "$CACHE/libs.tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "maven ran but kafka_2.13 is not in $CACHE/libs.tmp"
    mv "$CACHE/libs.tmp" "$LIBS"
    printf '%s\n' "$want_mark" >"$CACHE/.complete"
  fi
  exec 8>&-
fi

# --- topics.toml -> "name|partitions|replication_factor|retention_ms|cleanup_policy" lines
parse_topics() {
  awk '
    function value(line) {
      sub(/^[^=]*=[ \t]*/, "", line)
      if (line ~ /^"/) { sub(/^"/, "", line); sub(/".*$/, "", line) }
      else { sub(/[ \t]*#.*$/, "", line); sub(/[ \t]+$/, "", line) }
      return line
    }
    BEGIN { sec = ""; n = 0; dp = 3; dr = 1 }
    /^[ \t]*(#|$)/ { next }
    /^[ \t]*\[\[[ \t]*topic[ \t]*\]\]/ { sec = "topic"; n++; next }
    /^[ \t]*\[/ { sec = $0; gsub(/[][ \t]/, "", sec); next }
    /=/ {
      key = $0; sub(/[ \t]*=.*$/, "", key); gsub(/^[ \t]+/, "", key)
      v = value($0)
      if (sec == "defaults") {
        if (key == "partitions") dp = v
        else if (key == "replication_factor") dr = v
      } else if (sec == "topic") {
        t[n, key] = v
      }
    }
    END {
      for (i = 1; i <= n; i++) {
        p = ((i, "partitions") in t) ? t[i, "partitions"] : dp
        r = ((i, "replication_factor") in t) ? t[i, "replication_factor"] : dr
        ret = ((i, "retention_ms") in t) ? t[i, "retention_ms"] : ""
        cp = ((i, "cleanup_policy") in t) ? t[i, "cleanup_policy"] : ""
        print t[i, "name"] "|" p "|" r "|" ret "|" cp
      }
    }' "$TOPICS_TOML"
}

# --- helpers -------------------------------------------------------------------
kafka_pid() {    # prints the pid of this checkout's broker, fails when not running
  local pid
  pid="$(cat "$PIDF" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $PROPS" || return 1
  echo "$pid"
}

topic_cmd() {     # [-XX:... JVM option] TopicCommand arguments...
  local -a jvm=()
  if [[ "${1:-}" == -XX:* ]]; then jvm=("$1"); shift
  elif [[ -f "$CDS" ]]; then jvm=("-XX:SharedArchiveFile=$CDS"); fi
  timeout 60 "${TOOL_JAVA[@]}" "${jvm[@]}" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "127.0.0.1:$PORT" --command-config "$KDIR/admin.properties" "$@" 9>&-
}

list_topics() {  # into EXISTING; makes the CDS archive on first success
  if [[ -f "$CDS" ]]; then
    EXISTING="$(topic_cmd --list 2>/dev/null)"
  else
    local tmp="$CDS.$$.tmp"
    if EXISTING="$(topic_cmd "-XX:ArchiveClassesAtExit=$tmp" --list 2>/dev/null)"; then
      if [[ -s "$tmp" ]]; then mv -f "$tmp" "$CDS"; else rm -f "$tmp"; fi
    else
      rm -f "$tmp"; return 1
    fi
  fi
}

EXISTING=""
wait_ready() {   # until the broker answers a metadata request (topic list)
  local deadline=$((SECONDS + READY_TIMEOUT))
  while :; do
    if port_open "$PORT" && list_topics; then
      return 0
    fi
    if ! kafka_pid >/dev/null; then
      tail -n 20 "$LOG" >&2 || true
      die "broker exited during start-up, see $LOG"
    fi
    (( SECONDS < deadline )) || die "broker not ready after ${READY_TIMEOUT}s, see $LOG"
    sleep 1
  done
}

create_topics() {  # the missing ones, up to $TOPIC_JOBS tool JVMs at a time
  local name parts rf ret cp full tmpd line pid failed=0 created=0 running=0
  local -a specs args
  local -A job_topic=()
  mapfile -t specs < <(parse_topics)
  (( ${#specs[@]} > 0 )) || die "no [[topic]] in $TOPICS_TOML"
  tmpd="$(mktemp -d "$KDIR/topics.XXXXXX")"
  reap() {
    local pid
    if wait -n -p pid; then
      created=$((created + 1))
    else
      failed=$((failed + 1))
      printf 'kafka: ERROR: creating %s failed:\n' "${job_topic[$pid]}" >&2
      sed 's/^/  /' "$tmpd/${job_topic[$pid]}.out" >&2
    fi
    running=$((running - 1))
  }
  for line in "${specs[@]}"; do
    IFS='|' read -r name parts rf ret cp <<<"$line"
    [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "bad topic name '$name' in $TOPICS_TOML"
    [[ "$parts" =~ ^[0-9]+$ && "$rf" =~ ^[0-9]+$ ]] || die "bad partitions/replication_factor for '$name' in $TOPICS_TOML"
    full="$PREFIX.$name"
    if grep -qxF -- "$full" <<<"$EXISTING"; then continue; fi
    args=(--create --if-not-exists --topic "$full" --partitions "$parts" --replication-factor "$rf")
    if [[ -n "$ret" ]]; then args+=(--config "retention.ms=$ret"); fi
    if [[ -n "$cp" ]]; then args+=(--config "cleanup.policy=$cp"); fi
    topic_cmd "${args[@]}" >"$tmpd/$full.out" 2>&1 &
    job_topic[$!]="$full"
    running=$((running + 1))
    while (( running >= TOPIC_JOBS )); do reap; done
  done
  while (( running > 0 )); do reap; done
  rm -rf "$tmpd"
  (( failed == 0 )) || die "$failed topic(s) could not be created"
  if (( created > 0 )); then
    say "topics: created $created, ${#specs[@]} in all (prefix $PREFIX)"
  else
    say "topics: all ${#specs[@]} present (prefix $PREFIX)"
  fi
}

write_admin_props() {
  cat >"$KDIR/admin.properties" <<EOF
request.timeout.ms=10000
default.api.timeout.ms=15000
EOF
}

# --- already running? -----------------------------------------------------------
if pid="$(kafka_pid)"; then
  grep -qxF "listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CTL" "$PROPS" ||
    die "this checkout's broker (pid $pid) runs with other ports than $PORT/$CTL; run infra/kafka/down.sh first"
  write_admin_props
  wait_ready
  say "reused, 127.0.0.1:$PORT (pid $pid)"
  create_topics
  exit 0
fi
rm -f "$PIDF"

for p in "$PORT" "$CTL"; do
  if port_open "$p"; then
    die "127.0.0.1:$p is already in use by another process (not this checkout's broker); stop it or set LICENSING_KAFKA_PORT / LICENSING_KAFKA_CONTROLLER_PORT"
  fi
done

jv="$(java -version 2>&1 | awk -F'"' '/version/ { print $2; exit }')"
jmajor="${jv%%.*}"; [[ "$jmajor" == 1 ]] && jmajor="$(cut -d. -f2 <<<"$jv")"
[[ "$jmajor" =~ ^[0-9]+$ && "$jmajor" -ge 17 ]] || die "Kafka 4 needs Java 17 or newer; 'java' is version '$jv'"

# --- config, format once ------------------------------------------------------------
cat >"$PROPS" <<EOF
# written by infra/kafka/up.sh on every start; edits are lost
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CTL
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CTL
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
EOF
write_admin_props

if [[ -f "$DATA/meta.properties" ]]; then
  fmt_ctl="$(cat "$KDIR/formatted-controller-port" 2>/dev/null || echo "$CTL")"
  [[ "$fmt_ctl" == "$CTL" ]] ||
    die "data in $DATA was formatted for controller port $fmt_ctl, not $CTL; use that port or remove $KDIR"
else
  cid=""
  while [[ ! "$cid" =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{21}$ ]]; do   # 16 random bytes, base64url, no leading '-'
    cid="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  done
  say "format $DATA (cluster id $cid)"
  mkdir -p "$DATA"
  "${TOOL_JAVA[@]}" kafka.tools.StorageTool format --standalone --cluster-id "$cid" \
    --config "$PROPS" >>"$LOG" 2>&1 9>&- || die "storage format failed, see $LOG"
  printf '%s\n' "$CTL" >"$KDIR/formatted-controller-port"
fi

# --- start -------------------------------------------------------------------
# setsid: own session, so the broker outlives this shell and its job control;
# the inner bash writes its own pid (== the java pid after exec).
(
  cd "$KDIR"
  # shellcheck disable=SC2016  # expanded by the inner bash
  exec nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDF" \
    java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
      -Djava.awt.headless=true "-Dlog4j2.configurationFile=$LOG4J" -cp "$LIBS/*" \
      kafka.Kafka "$PROPS"
) >>"$LOG" 2>&1 </dev/null 9>&- &

for _ in $(seq 50); do [[ -s "$PIDF" ]] && break; sleep 0.1; done
[[ -s "$PIDF" ]] || die "broker did not start, see $LOG"
wait_ready
say "started, 127.0.0.1:$PORT (pid $(cat "$PIDF"))"
create_topics
