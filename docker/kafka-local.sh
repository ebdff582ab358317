#!/usr/bin/env bash
# A local single-node Apache Kafka (KRaft: broker + controller in one JVM) for tests, CI and
# development. No Docker: the broker jars and their runtime dependencies come from Maven Central
# through Maven, once, into a cache dir.
#
#   docker/kafka-local.sh start    start (or find running) and print the bootstrap address
#   docker/kafka-local.sh stop     stop it (SIGTERM, bounded wait, then SIGKILL); data is kept
#   docker/kafka-local.sh status   say whether it runs; exit 0 when running, 3 when not
#
# Environment:
#   KAFKA_VERSION          org.apache.kafka:kafka_2.13 version (default 4.1.1)
#   KAFKA_PORT             PLAINTEXT listener on 127.0.0.1 (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft CONTROLLER listener on 127.0.0.1 (default KAFKA_PORT+1)
#   KAFKA_DATA_DIR         storage, config, pid and log (default ${TMPDIR:-/tmp}/shadowproxy-kafka-$KAFKA_PORT)
#   KAFKA_CACHE_DIR        jars (default ${XDG_CACHE_HOME:-$HOME/.cache}/shadowproxy/kafka-$KAFKA_VERSION)
#   KAFKA_LOG4J_VERSION    log4j-slf4j-impl version, binds the broker's slf4j logging (default 2.24.3)
#   KAFKA_HEAP_OPTS        JVM heap (default -Xms256m -Xmx512m)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to accept connections (default 90)
#   KAFKA_FETCH_TIMEOUT    seconds to allow the first Maven download (default 600)
#
# Topics are NOT auto-created (auto.create.topics.enable=false): the Kafka sink creates its
# topic explicitly (create_topic=...) and otherwise fails clearly, as it would in production.
set -euo pipefail

KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-${TMPDIR:-/tmp}/shadowproxy-kafka-$KAFKA_PORT}"
KAFKA_CACHE_DIR="${KAFKA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shadowproxy/kafka-$KAFKA_VERSION}"
KAFKA_LOG4J_VERSION="${KAFKA_LOG4J_VERSION:-2.24.3}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_FETCH_TIMEOUT="${KAFKA_FETCH_TIMEOUT:-600}"

LIB_DIR="$KAFKA_CACHE_DIR/libs"
PID_FILE="$KAFKA_DATA_DIR/kafka.pid"
LOG_FILE="$KAFKA_DATA_DIR/server.log"
OUT_FILE="$KAFKA_DATA_DIR/kafka.out"
ADDRESS="127.0.0.1:$KAFKA_PORT"

die() { echo "kafka-local: $*" >&2; exit 1; }

running_pid() {
  # The pid of our broker if it is alive, else nothing.
  [[ -f "$PID_FILE" ]] || return 0
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    echo "$pid"
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

fetch_jars() {
  # First use only: a marker file says the copy finished.
  [[ -f "$KAFKA_CACHE_DIR/.complete" ]] && return 0
  command -v mvn >/dev/null || die "mvn not found: Maven is needed once to fetch the Kafka jars"
  mkdir -p "$KAFKA_CACHE_DIR"
  cat >"$KAFKA_CACHE_DIR/pom.xml" <<POM
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.shadowproxy</groupId>
  <artifactId>kafka-local</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- kafka_2.13 logs through slf4j 1.7 and ships log4j-core but no binding between them -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$KAFKA_LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
  echo "kafka-local: fetching Apache Kafka $KAFKA_VERSION jars with Maven into $LIB_DIR (first use only)" >&2
  rm -rf "$LIB_DIR"
  # (sed strips the colour codes Maven 3.8 prints even in batch mode)
  if ! timeout "$KAFKA_FETCH_TIMEOUT" mvn -q -B -Dstyle.color=never -f "$KAFKA_CACHE_DIR/pom.xml" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIB_DIR" 2>&1 \
      | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2; then
    die "Maven could not fetch org.apache.kafka:kafka_2.13:$KAFKA_VERSION (see above)"
  fi
  ls "$LIB_DIR"/kafka_2.13-*.jar >/dev/null 2>&1 || die "no kafka_2.13 jar in $LIB_DIR after Maven ran"
  touch "$KAFKA_CACHE_DIR/.complete"
}

write_config() {
  mkdir -p "$KAFKA_DATA_DIR/logs"
  cat >"$KAFKA_DATA_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA_DIR/logs
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  cat >"$KAFKA_DATA_DIR/log4j2.yaml" <<LOG
Configuration:
  Appenders:
    File:
      name: FILE
      fileName: "$LOG_FILE"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: FILE
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.controller
        level: INFO
      - name: state.change.logger
        level: WARN
LOG
}

java_opts() {
  # shellcheck disable=SC2086
  echo $KAFKA_HEAP_OPTS -XX:+UseG1GC -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$KAFKA_DATA_DIR/log4j2.yaml" "-Dkafka.logs.dir=$KAFKA_DATA_DIR"
}

format_storage() {
  [[ -f "$KAFKA_DATA_DIR/logs/meta.properties" ]] && return 0
  local cluster_id
  # A Kafka cluster id is 16 random bytes, base64url without padding.
  # One starting with '-' would be read as an option by kafka-storage's parser: draw again.
  cluster_id="-"
  while [[ "$cluster_id" == -* ]]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  done
  # shellcheck disable=SC2046
  if ! java $(java_opts) -cp "$LIB_DIR/*" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$KAFKA_DATA_DIR/server.properties" >>"$OUT_FILE" 2>&1; then
    tail -n 20 "$OUT_FILE" >&2 || true
    die "formatting the KRaft storage in $KAFKA_DATA_DIR/logs failed"
  fi
}

start() {
  if [[ -n "$(running_pid)" ]]; then
    echo "$ADDRESS"
    return 0
  fi
  fetch_jars
  if port_open "$KAFKA_PORT"; then
    die "127.0.0.1:$KAFKA_PORT is already in use by another process (set KAFKA_PORT)"
  fi
  write_config
  format_storage
  # shellcheck disable=SC2046
  setsid nohup java $(java_opts) -cp "$LIB_DIR/*" kafka.Kafka "$KAFKA_DATA_DIR/server.properties" \
    >>"$OUT_FILE" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  local pid deadline
  pid="$(cat "$PID_FILE")"
  deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  until port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$LOG_FILE" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "--- last lines of $LOG_FILE / $OUT_FILE ---" >&2
      tail -n 30 "$LOG_FILE" "$OUT_FILE" >&2 2>/dev/null || true
      rm -f "$PID_FILE"
      die "the broker exited during startup"
    fi
    if ((SECONDS >= deadline)); then
      echo "--- last lines of $LOG_FILE / $OUT_FILE ---" >&2
      tail -n 30 "$LOG_FILE" "$OUT_FILE" >&2 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$PID_FILE"
      die "the broker did not accept connections on $ADDRESS within ${KAFKA_START_TIMEOUT}s"
    fi
    sleep 0.2
  done
  echo "$ADDRESS"
}

stop() {
  local pid
  pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$PID_FILE"
    echo "kafka-local: not running ($ADDRESS)" >&2
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      echo "kafka-local: broker $pid ignored SIGTERM for 30s, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  echo "kafka-local: stopped ($ADDRESS, data kept in $KAFKA_DATA_DIR)" >&2
}

status() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    echo "running: $ADDRESS (pid $pid, data $KAFKA_DATA_DIR)"
  else
    echo "not running: $ADDRESS"
    return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
