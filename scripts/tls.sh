#!/usr/bin/env bash
# The project's certificate authority for MQTT over TLS, with openssl: up | device SERIAL | revoke SERIAL | crl | status
#
#   up              the CA, the broker's certificate (127.0.0.1, localhost) and a current CRL; idempotent. The CRL
#                   always lists one "canary" certificate, revoked when the CA is made, so a running broker can be
#                   checked to enforce revocation at any time.
#   device SERIAL   a client certificate whose CN is the device serial (the broker's mTLS listener takes it as the
#                   username: use_identity_as_username). Prints the paths of the key and certificate.
#   revoke SERIAL [--no-reload]
#                   revokes every certificate issued to SERIAL, rewrites the CRL and reloads the broker (SIGHUP:
#                   Mosquitto 2.0.11 re-reads the CRL then; a connection already open stays open, but a device
#                   revoked in the registry has lost its ACL entry, so it can publish nothing). Prints
#                   "revoked N certificate(s) of SERIAL"; without a CA, "no CA: ..." (and makes none). `python -m
#                   ingest devices revoke` calls it with --no-reload and reloads once with the password file and ACL.
#   crl             rewrites the CRL (valid 30 days: `up` renews it when it has less than 7 left) and reloads.
#   export DIR      copies the broker's files (CA certificate, broker certificate and key, CRL) to DIR for another
#                   broker, e.g. docker-compose's (deploy/compose/tls, mounted at /mosquitto/tls), owned by uid 1883
#                   (the image's mosquitto user). DIR is remembered: every later CRL (revoke, crl, renewal) is copied
#                   there too, and the compose broker reloads when it changes.
#
# Keys live under $RPM_TLS_DIR (default $RPM_STATE_DIR/tls), never in the repository. The CA key can impersonate
# any client of the mTLS listener: it is readable by root only. Keys are ECDSA P-256, signatures SHA-256.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
load_env

TLS_DIR=${RPM_TLS_DIR:-$RPM_STATE_DIR/tls}
CA="$TLS_DIR/ca"
BROKER="$TLS_DIR/broker"
DEVICES="$TLS_DIR/devices"
CONF="$CA/openssl.cnf"
CA_DAYS=3650
LEAF_DAYS=825
CRL_DAYS=30
CANARY=revoked-canary
SERIAL_RE='^[A-Za-z0-9._-]{3,64}$'

write_config() {
    cat > "$CONF" <<CONF
# Managed by scripts/tls.sh.
[ ca ]
default_ca = project_ca

[ project_ca ]
dir = $CA
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
certificate = \$dir/ca.crt
private_key = \$dir/ca.key
serial = \$dir/serial
crlnumber = \$dir/crlnumber
default_md = sha256
default_days = $LEAF_DAYS
default_crl_days = $CRL_DAYS
policy = policy_cn
unique_subject = no
copy_extensions = none

[ policy_cn ]
commonName = supplied

[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused

[ v3_ca ]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ v3_broker ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid

[ v3_device ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
CONF
}

make_ca() {
    [ -f "$CA/ca.crt" ] && return 0
    log "creating the project CA in $CA"
    mkdir -p "$CA/newcerts" "$BROKER" "$DEVICES"
    chmod 700 "$CA"
    : > "$CA/index.txt"
    openssl rand -hex 16 > "$CA/serial"
    echo 1000 > "$CA/crlnumber"
    write_config
    openssl ecparam -name prime256v1 -genkey -noout -out "$CA/ca.key"
    chmod 600 "$CA/ca.key"
    openssl req -config "$CONF" -new -x509 -key "$CA/ca.key" -days "$CA_DAYS" -sha256 -extensions v3_ca \
        -subj "/O=rpm-telemetry/CN=rpm-telemetry project CA" -out "$CA/ca.crt"
    issue "$CANARY" >/dev/null
    revoke_certs "$CANARY" >/dev/null
}

# issue CN [DIR]: a key and a certificate for a device (clientAuth) or, with CN=broker, the broker (serverAuth).
issue() {
    local cn=$1 dir=$DEVICES ext=v3_device
    if [ "$cn" = broker ]; then dir=$BROKER; ext=v3_broker; fi
    local key="$dir/$cn.key" crt="$dir/$cn.crt" csr
    csr=$(mktemp)
    openssl ecparam -name prime256v1 -genkey -noout -out "$key"
    chmod 600 "$key"
    openssl req -config "$CONF" -new -key "$key" -subj "/CN=$cn" -out "$csr"
    openssl ca -config "$CONF" -batch -notext -extensions "$ext" -in "$csr" -out "$crt" 2>/dev/null
    rm -f "$csr"
    echo "$key $crt"
}

# revoke_certs CN [reload|no-reload]
revoke_certs() {
    local cn=$1 serials serial count=0
    # index.txt is tab-separated: status, expiry, revocation date (empty while valid), serial, file, subject.
    serials=$(awk -F'\t' -v subject="/CN=$cn" '$1 == "V" && $6 == subject { print $4 }' "$CA/index.txt")
    for serial in $serials; do
        openssl ca -config "$CONF" -revoke "$CA/newcerts/$serial.pem" -crl_reason keyCompromise 2>/dev/null
        count=$((count + 1))
    done
    write_crl "${2:-reload}"
    echo "revoked $count certificate(s) of $cn"
}

# write_crl [reload|no-reload]
write_crl() {
    openssl ca -config "$CONF" -gencrl -out "$CA/crl.pem.new" 2>/dev/null
    mv "$CA/crl.pem.new" "$CA/crl.pem"
    publish
    [ "${1:-reload}" = reload ] || return 0
    # Reload the project's broker if it uses this CRL.
    local pidfile="$RPM_STATE_DIR/mosquitto/mosquitto.pid" conf="$RPM_STATE_DIR/mosquitto/mosquitto.conf"
    if pid_alive "$pidfile" && grep -qF "crlfile $BROKER/crl.pem" "$conf" 2>/dev/null; then
        kill -HUP "$(cat "$pidfile")"
    fi
}

# The broker reads the CA certificate, the CRL and its own key as the unprivileged `mosquitto` user.
publish() {
    cp "$CA/ca.crt" "$CA/crl.pem" "$BROKER/"
    chmod 755 "$TLS_DIR" "$BROKER"
    if id mosquitto >/dev/null 2>&1; then chown -R mosquitto:mosquitto "$BROKER"; fi
    chmod 640 "$BROKER/broker.key" 2>/dev/null || true
    chmod 644 "$BROKER/ca.crt" "$BROKER/crl.pem"
    local dir
    if [ -f "$TLS_DIR/exports" ]; then
        while IFS= read -r dir; do [ -d "$dir" ] && copy_out "$CA/crl.pem" "$dir/crl.pem" 644; done < "$TLS_DIR/exports"
    fi
}

# copy_out SOURCE TARGET MODE: in one rename (a broker reloading never reads half a file), owned by uid 1883.
copy_out() {
    cp "$1" "$2.new"
    chmod "$3" "$2.new"
    chown 1883:1883 "$2.new" 2>/dev/null || true
    mv "$2.new" "$2"
}

export_broker() {
    local dir
    mkdir -p "$1"
    dir=$(cd "$1" && pwd)
    copy_out "$BROKER/ca.crt" "$dir/ca.crt" 644
    copy_out "$BROKER/broker.crt" "$dir/broker.crt" 644
    copy_out "$BROKER/broker.key" "$dir/broker.key" 600
    copy_out "$CA/crl.pem" "$dir/crl.pem" 644
    grep -qxF "$dir" "$TLS_DIR/exports" 2>/dev/null || echo "$dir" >> "$TLS_DIR/exports"
    log "TLS: broker files in $dir (later CRLs are copied there too)"
}

crl_days_left() {
    local next
    next=$(openssl crl -in "$CA/crl.pem" -noout -nextupdate | cut -d= -f2)
    echo $(( ($(date -d "$next" +%s) - $(date +%s)) / 86400 ))
}

up() {
    ensure_state_dir
    mkdir -p "$TLS_DIR"
    make_ca
    [ -f "$BROKER/broker.crt" ] || issue broker >/dev/null
    if [ ! -f "$CA/crl.pem" ] || [ "$(crl_days_left)" -lt 7 ]; then write_crl; else publish; fi
    log "TLS: CA $CA/ca.crt, broker certificate $BROKER/broker.crt, CRL valid $(crl_days_left) more days"
}

check_cn() {
    [[ $1 =~ $SERIAL_RE ]] || die "not a device serial: $1"
    case "$1" in broker|"$CANARY"|"${MQTT_INGEST_USER:-rpm-ingest}"|"${MQTT_PROCESSOR_USER:-rpm-processor}")
        die "$1 is reserved: a device certificate's CN is its MQTT username";; esac
}

# One change to the CA at a time (openssl ca keeps its serial and index in files).
mkdir -p "$TLS_DIR"
exec 9>"$TLS_DIR/.lock"
flock 9

case "${1:-}" in
    up) up ;;
    device) [ $# -eq 2 ] || die "usage: $0 device SERIAL"; check_cn "$2"; up >/dev/null; issue "$2" ;;
    revoke)
        [ $# -eq 2 ] || { [ $# -eq 3 ] && [ "$3" = --no-reload ]; } || die "usage: $0 revoke SERIAL [--no-reload]"
        if [ ! -f "$CA/ca.crt" ]; then echo "no CA in $CA: no certificate of $2 to revoke"; exit 0; fi
        up >/dev/null
        if [ $# -eq 3 ]; then revoke_certs "$2" no-reload; else revoke_certs "$2"; fi
        ;;
    crl) up >/dev/null; write_crl ;;
    export) [ $# -eq 2 ] || die "usage: $0 export DIR"; up >/dev/null; export_broker "$2" ;;
    status)
        [ -f "$CA/ca.crt" ] || { echo "tls: no CA (run: $0 up)"; exit 0; }
        echo "tls: CA $(openssl x509 -in "$CA/ca.crt" -noout -enddate), CRL valid $(crl_days_left) more days," \
             "$(grep -c '^R' "$CA/index.txt") revoked of $(wc -l < "$CA/index.txt") issued"
        ;;
    *) die "usage: $0 up|device SERIAL|revoke SERIAL [--no-reload]|crl|export DIR|status" ;;
esac
