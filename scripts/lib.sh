# Shared by the project's shell scripts: paths, the environment, small helpers. Source it; don't run it.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$ROOT/.venv/bin/python"

# Exports the settings in .env (created on first use), except those already set in the environment: as in the
# Python services' settings, an explicit environment variable wins over the file.
load_env() {
    [ -f "$ROOT/.env" ] || bash "$ROOT/scripts/env.sh"
    local key value
    while IFS='=' read -r key value; do
        [[ $key =~ ^[A-Z_][A-Z0-9_]*$ ]] || continue
        [ -n "${!key+x}" ] || export "$key=$value"
    done < "$ROOT/.env"
    : "${RPM_STATE_DIR:=/var/tmp/rpm-telemetry}"
    export RPM_STATE_DIR
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND every 0.2 s until it succeeds or time runs out.
wait_for() {
    local seconds=$1 what=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "$what not ready after ${seconds}s"
        sleep 0.2
    done
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# State directory reachable by the unprivileged service users (never under /root).
ensure_state_dir() {
    case "$RPM_STATE_DIR" in /root/*) die "RPM_STATE_DIR must not be under /root (service users cannot reach it)";; esac
    mkdir -p "$RPM_STATE_DIR"
    chmod 755 "$RPM_STATE_DIR"
}
