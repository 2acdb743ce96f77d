#!/usr/bin/env bash
# `make rotate-admin-key`: replaces the bootstrap admin key of `make run`
# with a new one. The services read .run/admin.key again within a second,
# so the old key stops working and the new one works without a restart.
# With --keep-old the old key stays valid beside the new one (for callers
# still holding it) until this is run again without it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FILE="$ROOT/.run/admin.key"
new="AKIDadmin$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n').$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
old=""
if [[ "${1:-}" == "--keep-old" && -f "$FILE" ]]; then
  old="$(grep -v '^#' "$FILE" | head -n1 || true)"
fi
umask 077
tmp="$(mktemp "$FILE.XXXXXX")"
{
  printf '%s\n' "$new"
  if [[ -n "$old" ]]; then printf '%s\n' "$old"; fi
} >"$tmp"
mv -f "$tmp" "$FILE"
echo "new admin key (in .run/admin.key, in force within a second): $new"
