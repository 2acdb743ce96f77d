#!/usr/bin/env bash
# Drops the databases earlier test runs left (`t_*`, one per service a test
# started): `make test` runs this first, so repeated runs do not fill the
# disk. Never touches the services' own databases or a benchmark's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
# shellcheck source=/dev/null
source "$ROOT/.run/infra.env"
URL="$LICENSING_DATABASE_BASE_URL/postgres"
psql() { "${LICENSING_PG_BIN:-/usr/lib/postgresql/15/bin}/psql" "$@"; }
mapfile -t dbs < <(psql -X -At "$URL" -c "SELECT datname FROM pg_database WHERE datname LIKE 't\_%'")
for d in "${dbs[@]}"; do
  psql -X -q "$URL" -c "DROP DATABASE IF EXISTS \"$d\" WITH (FORCE)"
done
printf 'postgres: dropped %d test databases of earlier runs\n' "${#dbs[@]}"
