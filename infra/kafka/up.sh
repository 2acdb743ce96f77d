#!/usr/bin/env bash
# Start the local single-node Apache Kafka 4.1.1 broker (KRaft) of this
# checkout, authenticated and authorised (idempotent).
#
#   jars     ${LICENSING_KAFKA_CACHE:-~/.cache/licensing/kafka-4.1.1}/libs (Maven Central, via pom.xml)
#   config   $ROOT/.run/kafka/server.properties      data  $ROOT/.run/kafka/data
#   pid      $ROOT/.run/kafka/kafka.pid              log   $ROOT/.run/logs/kafka.log
#   listens  127.0.0.1:${LICENSING_KAFKA_PORT:-9092} (controller ${LICENSING_KAFKA_CONTROLLER_PORT:-9093})
#
# Security: both listeners are SASL_SSL (no anonymous listener). A CA and
# the broker's certificate are generated at first start (.run/kafka/tls/);
# clients authenticate with SCRAM-SHA-512, the controller listener with
# PLAIN. Every principal of schemas/acls.toml gets a SCRAM user with a
# random password, bootstrapped when the storage is formatted, and a
# librdkafka properties file in .run/kafka/clients/<role>.properties
# (admin.properties: the super user that provisions). The StandardAuthorizer
# refuses whatever no ACL grants; topics and ACLs are provisioned by
# `licensectl kafka provision` (make run) or the tests' harness.
#
# Already running: reused.
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
ACLS_TOML="$ROOT/schemas/acls.toml"
TLS="$KDIR/tls"
SECRETS="$KDIR/secrets"
CLIENTS="$KDIR/clients"
PORT="${LICENSING_KAFKA_PORT:-9092}"
CTL="${LICENSING_KAFKA_CONTROLLER_PORT:-9093}"
CACHE="${LICENSING_KAFKA_CACHE:-$HOME/.cache/licensing/kafka-4.1.1}"
LIBS="$CACHE/libs"
READY_TIMEOUT="${LICENSING_KAFKA_READY_TIMEOUT:-90}"

say() { printf 'kafka: %s\n' "$*"; }
die() { printf 'kafka: ERROR: %s\n' "$*" >&2; exit 1; }

for v in PORT CTL READY_TIMEOUT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
done
[[ "$PORT" != "$CTL" ]] || die "broker and controller ports must differ (both $PORT)"
[[ -f "$ACLS_TOML" ]] || die "$ACLS_TOML not found"

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
    --bootstrap-server "127.0.0.1:$PORT" --command-config "$KDIR/admin.java.properties" "$@" 9>&-
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

# --- security material (made once, kept with the data) ----------------------------
secret() {        # the password of user $1, generated on first use
  local f="$SECRETS/$1"
  if [[ ! -s "$f" ]]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f")
  fi
  cat "$f"
}

make_tls() {      # a CA and the broker's certificate for 127.0.0.1/localhost
  [[ -s "$TLS/broker.pem" && -s "$TLS/ca.pem" ]] && return 0
  command -v openssl >/dev/null 2>&1 || apt_install openssl openssl
  say "generating a CA and the broker certificate in $TLS"
  rm -rf "$TLS"; mkdir -p "$TLS"; chmod 700 "$TLS"
  (
    cd "$TLS"; umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -keyout ca.key -out ca.pem -subj "/CN=licensing local CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout broker.key -out broker.csr -subj "/CN=localhost"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile broker.ext -out broker.crt
    # Kafka's PEM key store: an unencrypted PKCS#8 key, then the chain.
    openssl pkcs8 -topk8 -nocrypt -in broker.key -out broker.p8
    cat broker.p8 broker.crt ca.pem >broker.pem
    rm -f broker.csr broker.ext broker.key broker.p8 ca.srl
    chmod 644 ca.pem
  ) >>"$LOG" 2>&1 || die "could not generate TLS material, see $LOG"
  chmod 755 "$TLS"
}

# role:user of the super user and of every principal of acls.toml.
principals() {
  echo "admin:licensing-admin"
  awk -F'"' '/^role = /{r=$2} /^user = /{print r ":" $2}' "$ACLS_TOML"
}

write_clients() { # librdkafka properties per principal, and the tools' Java one
  local role user pw
  mkdir -p "$CLIENTS"; chmod 700 "$CLIENTS"
  while IFS=: read -r role user; do
    pw="$(secret "$user")"
    (umask 077; cat >"$CLIENTS/$role.properties.tmp" <<EOF
# principal $user ($role), written by infra/kafka/up.sh
bootstrap.servers=127.0.0.1:$PORT
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.username=$user
sasl.password=$pw
ssl.ca.location=$TLS/ca.pem
EOF
    )
    mv -f "$CLIENTS/$role.properties.tmp" "$CLIENTS/$role.properties"
  done < <(principals)
  (umask 077; cat >"$KDIR/admin.java.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="licensing-admin" password="$(secret licensing-admin)";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem
request.timeout.ms=10000
default.api.timeout.ms=15000
EOF
  )
}

# --- already running? -----------------------------------------------------------
if pid="$(kafka_pid)"; then
  grep -qxF "listeners=SASL_SSL://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CTL" "$PROPS" ||
    die "this checkout's broker (pid $pid) runs with other ports or without authentication; run infra/kafka/down.sh first"
  write_clients
  wait_ready
  say "reused, 127.0.0.1:$PORT (pid $pid)"
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
mkdir -p "$SECRETS"; chmod 700 "$SECRETS"
make_tls
(umask 077; cat >"$PROPS" <<EOF
# written by infra/kafka/up.sh on every start; edits are lost
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CTL
listeners=SASL_SSL://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CTL
advertised.listeners=SASL_SSL://127.0.0.1:$PORT
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="licensing-broker" password="$(secret licensing-broker)";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="licensing-controller" password="$(secret licensing-controller)" user_licensing-controller="$(secret licensing-controller)";
ssl.keystore.type=PEM
ssl.keystore.location=$TLS/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:licensing-broker;User:licensing-controller;User:licensing-admin
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
# A development and test broker creates and deletes thousands of topics
# (one prefix per test): deleted logs go at once, and the metadata log is
# snapshotted often, so a restart (the fault tests SIGKILL it) replays little.
file.delete.delay.ms=1000
# A broker restarted after a crash recovers every partition it holds, and
# the internal topics' defaults (50 partitions each) would be most of them;
# one broker gains nothing from 50 coordinators' partitions.
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4
metadata.log.max.record.bytes.between.snapshots=1048576
EOF
)
write_clients

# SCRAM users are bootstrapped when the storage is formatted: data
# formatted for other users (or before authentication) is local test data,
# formatted again.
want_users="$(principals | cut -d: -f2 | sort | tr '\n' ' ')"
if [[ -f "$DATA/meta.properties" && "$(cat "$KDIR/formatted-users" 2>/dev/null)" != "$want_users" ]]; then
  say "data in $DATA was formatted for other users; formatting again"
  rm -rf "$DATA"
fi

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
  scram=(--add-scram "SCRAM-SHA-512=[name=licensing-broker,password=$(secret licensing-broker)]")
  while IFS=: read -r _ user; do
    scram+=(--add-scram "SCRAM-SHA-512=[name=$user,password=$(secret "$user")]")
  done < <(principals)
  "${TOOL_JAVA[@]}" kafka.tools.StorageTool format --standalone --cluster-id "$cid" \
    --config "$PROPS" "${scram[@]}" >>"$LOG" 2>&1 9>&- || die "storage format failed, see $LOG"
  printf '%s\n' "$CTL" >"$KDIR/formatted-controller-port"
  printf '%s' "$want_users" >"$KDIR/formatted-users"
fi

# --- start -------------------------------------------------------------------
# Every partition keeps its active segment open, and a test run creates
# thousands of partitions (a topic prefix per test): the broker gets as many
# descriptors as it may have (as root: raised to the kernel's per-process
# maximum), or it stops accepting connections with "Too many open files".
if [[ "$(id -u)" == 0 ]]; then
  nr_open="$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)"
  ulimit -Hn "$nr_open" 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
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
say "started, 127.0.0.1:$PORT (SASL_SSL, pid $(cat "$PIDF")); client credentials in $CLIENTS"
