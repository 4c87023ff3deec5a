#!/usr/bin/env bash
# Starts or stops every service the project needs, on loopback: up | down | status.
# `up` is idempotent: it installs what is missing, starts what is not running and checks each is really ready.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
load_env

case "${1:-}" in
    up)
        started=$SECONDS
        bash "$ROOT/scripts/install.sh"
        bash "$ROOT/scripts/postgres.sh" up
        bash "$ROOT/scripts/mosquitto.sh" up
        bash "$ROOT/scripts/kafka.sh" up
        log "services ready in $((SECONDS - started))s:"
        bash "$0" status
        ;;
    down)
        # Only what this project started (pid files under RPM_STATE_DIR), in reverse order.
        bash "$ROOT/scripts/kafka.sh" down || true
        bash "$ROOT/scripts/mosquitto.sh" down || true
        bash "$ROOT/scripts/postgres.sh" down || true
        ;;
    status)
        bash "$ROOT/scripts/postgres.sh" status
        bash "$ROOT/scripts/mosquitto.sh" status
        bash "$ROOT/scripts/kafka.sh" status
        ;;
    *) die "usage: $0 up|down|status" ;;
esac
