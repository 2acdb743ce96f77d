#!/usr/bin/env bash
# Connection settings of the local infrastructure started by infra/up.sh.
#
#   eval "$(infra/env.sh)"        prints `export KEY=VALUE` lines
#   . infra/env.sh                exports them into the current shell (bash, sh, zsh)
#   infra/env.sh --plain          prints KEY=VALUE lines: what .run/infra.env holds
#
# Ports follow LICENSING_PG_PORT / LICENSING_KAFKA_PORT, as infra/up.sh does.
# POSIX sh on purpose (it is also sourced); no `set -e` so a sourcing shell keeps its options.

LICENSING_PG_PORT="${LICENSING_PG_PORT:-5432}"
LICENSING_DATABASE_BASE_URL="postgres://licensing:licensing@127.0.0.1:$LICENSING_PG_PORT"
LICENSING_KAFKA_PORT="${LICENSING_KAFKA_PORT:-9092}"
LICENSING_KAFKA_BROKERS="127.0.0.1:$LICENSING_KAFKA_PORT"
LICENSING_TOPIC_PREFIX="${LICENSING_TOPIC_PREFIX:-licensing}"
export LICENSING_PG_PORT LICENSING_DATABASE_BASE_URL LICENSING_KAFKA_PORT \
  LICENSING_KAFKA_BROKERS LICENSING_TOPIC_PREFIX

if [ -n "${BASH_SOURCE:-}" ]; then
  [ "${BASH_SOURCE[0]}" = "$0" ] && _licensing_run=1 || _licensing_run=0
elif [ -n "${ZSH_EVAL_CONTEXT:-}" ]; then
  case "$ZSH_EVAL_CONTEXT" in *:file*) _licensing_run=0 ;; *) _licensing_run=1 ;; esac
else
  case "${0##*/}" in env.sh) _licensing_run=1 ;; *) _licensing_run=0 ;; esac
fi

if [ "$_licensing_run" = 1 ]; then
  unset _licensing_run
  case "${1:-}" in
    --plain) _licensing_prefix= ;;
    "") _licensing_prefix="export " ;;
    *) echo "usage: infra/env.sh [--plain]" >&2; exit 2 ;;
  esac
  for _licensing_k in LICENSING_PG_PORT LICENSING_DATABASE_BASE_URL LICENSING_KAFKA_PORT \
      LICENSING_KAFKA_BROKERS LICENSING_TOPIC_PREFIX; do
    eval "printf '%s%s=%s\n' \"\$_licensing_prefix\" \"\$_licensing_k\" \"\$$_licensing_k\""
  done
else
  unset _licensing_run
fi
