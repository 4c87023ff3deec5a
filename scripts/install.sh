#!/usr/bin/env bash
# Installs everything the project needs on a bare Debian machine of this kind; fast and quiet when already done.
#   Debian packages: mosquitto, mosquitto-clients, openssl (PostgreSQL 15, Java 17 and Maven are preinstalled here;
#   installed from Debian if missing). Python: a .venv with the project and its dev/bench extras.
#   Kafka: resolved from Maven Central by scripts/kafka.sh fetch.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
# openssl (Debian priority "optional", absent from a minimal install): scripts/tls.sh makes the project CA and the
# broker's certificate, which scripts/mosquitto.sh needs to start at all, and the TLS tests' certificates and CRLs.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15 postgresql-client-15)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
# Prometheus (and promtool): tests/ops start one on loopback to scrape the services and check the rules.
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# Debian's package may start its own broker on :1883; the project runs its own instance, so stop that one.
if command -v service >/dev/null 2>&1 && pgrep -f '/etc/mosquitto/mosquitto.conf' >/dev/null 2>&1; then
    service mosquitto stop >/dev/null 2>&1 || true
fi
# Likewise Debian's Prometheus daemon (:9090): tests run their own, on a free port with a temporary data dir.
if command -v service >/dev/null 2>&1 && pgrep -x prometheus -u prometheus >/dev/null 2>&1; then
    service prometheus stop >/dev/null 2>&1 || true
fi

stamp="$ROOT/.venv/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    log "installing Python dependencies into .venv"
    [ -x "$ROOT/.venv/bin/python" ] || python3 -m venv "$ROOT/.venv"
    "$ROOT/.venv/bin/pip" install -q --upgrade pip
    "$ROOT/.venv/bin/pip" install -q -e "$ROOT[dev,bench]"
    rm -f "$ROOT"/.venv/.installed-*
    touch "$stamp"
fi

if [ -f "$ROOT/scripts/kafka.sh" ]; then
    bash "$ROOT/scripts/kafka.sh" fetch
fi
