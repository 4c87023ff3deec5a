#!/usr/bin/env bash
# Project-local Mosquitto on loopback with password auth and ACL: up | down | status | reload.
# The broker starts as root, reads its config, and drops to the unprivileged `mosquitto` user.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
load_env

BASE="$RPM_STATE_DIR/mosquitto"
CONF="$BASE/mosquitto.conf"
PIDFILE="$BASE/mosquitto.pid"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

render_config() {
    mkdir -p "$BASE/data"
    sed -e "s|@STATE@|$BASE|g" -e "s|@HOST@|$MQTT_HOST|g" -e "s|@PORT@|$MQTT_PORT|g" \
        "$ROOT/deploy/mosquitto/mosquitto.conf.template" > "$CONF"
    # TLS listeners (scripts/tls.sh: the project CA, the broker's certificate and a current CRL).
    bash "$ROOT/scripts/tls.sh" up >/dev/null
    sed -e "s|@HOST@|$MQTT_HOST|g" -e "s|@TLS_PORT@|${MQTT_TLS_PORT:-18883}|g" \
        -e "s|@MTLS_PORT@|${MQTT_MTLS_PORT:-18884}|g" -e "s|@TLS@|${RPM_TLS_DIR:-$RPM_STATE_DIR/tls}/broker|g" \
        "$ROOT/deploy/mosquitto/tls.conf.template" >> "$CONF"
    # Password file and ACL from .env and the device registry (devices appear once migrations have run).
    "$PY" -m ingest broker-sync --no-reload
    chown -R mosquitto:mosquitto "$BASE"
    chmod 750 "$BASE"
    chmod 600 "$BASE/passwd" "$BASE/acl"
    chown mosquitto:mosquitto "$BASE/passwd" "$BASE/acl"
}

ready() {
    mosquitto_sub -h "$MQTT_HOST" -p "$MQTT_PORT" -u "$MQTT_INGEST_USER" -P "$MQTT_INGEST_PASSWORD" \
        -t '$SYS/broker/version' -C 1 -W 2
}

up() {
    ensure_state_dir
    render_config
    if pid_alive "$PIDFILE"; then
        kill -HUP "$(cat "$PIDFILE")"
    else
        log "starting Mosquitto"
        rm -f "$PIDFILE"
        "$MOSQUITTO" -c "$CONF" -d
    fi
    wait_for 30 "Mosquitto" ready
    log "Mosquitto $("$MOSQUITTO" -h | head -1 | awk '{print $3}') listening on $MQTT_HOST:$MQTT_PORT (auth on, state $BASE)"
}

down() {
    if pid_alive "$PIDFILE"; then
        log "stopping Mosquitto"
        local pid; pid=$(cat "$PIDFILE")
        kill -TERM "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        rm -f "$PIDFILE"
    fi
}

status() {
    if pid_alive "$PIDFILE"; then echo "mosquitto: running on $MQTT_HOST:$MQTT_PORT"; else echo "mosquitto: stopped"; fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    reload) "$PY" -m ingest broker-sync ;;
    *) die "usage: $0 up|down|status|reload" ;;
esac
