#!/bin/sh
# Starts Mosquitto once broker-sync has written the password file, then reloads it (SIGHUP, never a restart)
# whenever broker-sync rewrites the password file or the ACL, or `scripts/tls.sh export` a new CRL: the writers run
# in another container or on the host and cannot signal this one.
# The TLS listeners (tls.conf) are added when /mosquitto/tls holds the broker's certificate, key, CA and CRL.
set -eu
AUTH=/mosquitto/auth
TLS=/mosquitto/tls
CONF=/tmp/mosquitto.conf
until [ -s "$AUTH/passwd" ] && [ -s "$AUTH/acl" ]; do
    echo "waiting for $AUTH/passwd and acl (python -m ingest broker-sync)"
    sleep 2
done
cp /mosquitto/config/mosquitto.conf "$CONF"
if [ -s "$TLS/ca.crt" ] && [ -s "$TLS/broker.crt" ] && [ -s "$TLS/broker.key" ] && [ -s "$TLS/crl.pem" ]; then
    cat /mosquitto/config/tls.conf >> "$CONF"
    echo "TLS listeners: 8883 (password over TLS), 8884 (mutual TLS, CRL $TLS/crl.pem)"
else
    echo "no broker certificate in $TLS (on the host: bash scripts/tls.sh export deploy/compose/tls): TLS listeners off"
fi
stamp() { stat -c '%Y %s' "$AUTH/passwd" "$AUTH/acl" "$TLS/crl.pem" 2>/dev/null | tr '\n' ' '; }
mosquitto -c "$CONF" &
broker=$!
trap 'kill -TERM "$broker"; wait "$broker"; exit 0' TERM INT
seen=$(stamp)
while kill -0 "$broker" 2>/dev/null; do
    sleep 2
    now=$(stamp)
    if [ "$now" != "$seen" ]; then
        kill -HUP "$broker"
        seen=$now
    fi
done
wait "$broker"
