#!/usr/bin/env bash
# Creates .env from .env.example, replacing every "generate" value with a fresh random secret. Never overwrites.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ -f "$ROOT/.env" ] && exit 0
while IFS= read -r line; do
    if [[ "$line" == *=generate ]]; then
        printf '%s=%s\n' "${line%=generate}" "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    else
        printf '%s\n' "$line"
    fi
done < "$ROOT/.env.example" > "$ROOT/.env.tmp"
chmod 600 "$ROOT/.env.tmp"
mv "$ROOT/.env.tmp" "$ROOT/.env"
echo "wrote .env with generated passwords"
