#!/usr/bin/env bash
# Start the local PostgreSQL and Kafka of this checkout (idempotent; running
# ones are reused) and write their settings to .run/infra.env (KEY=VALUE).
# Ports: LICENSING_PG_PORT (5432), LICENSING_KAFKA_PORT (9092),
# LICENSING_KAFKA_CONTROLLER_PORT (9093). Stop with infra/down.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(dirname "$HERE")"

"$HERE/postgres/up.sh"
"$HERE/kafka/up.sh"

mkdir -p "$ROOT/.run"
{
  "$HERE/env.sh" --plain
  # librdkafka properties (SASL_SSL credentials) of each principal, by role
  echo "LICENSING_KAFKA_CLIENTS=$ROOT/.run/kafka/clients"
} >"$ROOT/.run/infra.env.tmp"
mv -f "$ROOT/.run/infra.env.tmp" "$ROOT/.run/infra.env"
echo "infra: ready; settings in .run/infra.env (or: eval \"\$(infra/env.sh)\")"
