#!/bin/sh
# Starts Mosquitto once broker-sync has written the password file, then reloads it (SIGHUP, never a restart)
# whenever broker-sync rewrites the password file or the ACL: the writer runs in another container and cannot
# signal this one.
set -eu
AUTH=/mosquitto/auth
until [ -s "$AUTH/passwd" ] && [ -s "$AUTH/acl" ]; do
    echo "waiting for $AUTH/passwd and acl (python -m ingest broker-sync)"
    sleep 2
done
stamp() { stat -c '%Y %s' "$AUTH/passwd" "$AUTH/acl" 2>/dev/null | tr '\n' ' '; }
mosquitto -c /mosquitto/config/mosquitto.conf &
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
