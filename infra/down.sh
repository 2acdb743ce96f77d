#!/usr/bin/env bash
# Stop the local Kafka and PostgreSQL of this checkout. Data in .run/ is kept;
# remove .run/ as well for a clean slate.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
rc=0
"$HERE/kafka/down.sh" || rc=1
"$HERE/postgres/down.sh" || rc=1
exit "$rc"
