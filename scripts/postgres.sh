#!/usr/bin/env bash
# Project-local PostgreSQL 15 cluster on loopback: up | down | status | psql.
# Runs as the unprivileged `postgres` system user; scram-sha-256 everywhere, except the `postgres` superuser over
# the cluster's own Unix socket (peer: the OS vouches for it), which this script uses to manage roles.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
load_env

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BASE="$RPM_STATE_DIR/postgres"
PGDATA="$BASE/data"
SOCK="$BASE/run"
PGLOG="$BASE/postgres.log"
as_pg() { runuser -u postgres -- "$@"; }
superuser_psql() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$POSTGRES_PORT" -U postgres "$@"; }

init_cluster() {
    log "initdb $PGDATA"
    mkdir -p "$BASE" "$SOCK"
    chown postgres:postgres "$BASE" "$SOCK"
    chmod 700 "$BASE"
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    cat > "$PGDATA/pg_hba.conf" <<HBA
# Managed by scripts/postgres.sh. No trust: peer for the postgres superuser on the local socket, scram otherwise.
local   all   postgres                  peer
local   all   all                       scram-sha-256
host    all   all        127.0.0.1/32   scram-sha-256
host    all   all        ::1/128        scram-sha-256
HBA
    cat >> "$PGDATA/postgresql.conf" <<CONF

# --- rpm-telemetry ---
listen_addresses = '127.0.0.1'
port = $POSTGRES_PORT
unix_socket_directories = '$SOCK'
password_encryption = 'scram-sha-256'
max_connections = 200
shared_buffers = 512MB
work_mem = 16MB
maintenance_work_mem = 128MB
# Durability stays on: every acknowledged reading survives a crash.
fsync = on
synchronous_commit = on
full_page_writes = on
wal_compression = on
max_wal_size = 2GB
checkpoint_timeout = 10min
log_min_duration_statement = -1
log_line_prefix = '%m [%p] %q%u@%d '
timezone = 'UTC'
CONF
    chown postgres:postgres "$PGDATA/pg_hba.conf"
}

running() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

apply_roles() {
    # Idempotent; re-applies the passwords in .env so a fresh clone works with an existing cluster.
    superuser_psql -d postgres \
        -v db="$POSTGRES_DB" \
        -v owner="$POSTGRES_ADMIN_USER" -v owner_pw="$POSTGRES_ADMIN_PASSWORD" \
        -v ingest="$POSTGRES_INGEST_USER" -v ingest_pw="$POSTGRES_INGEST_PASSWORD" \
        -v processor="$POSTGRES_PROCESSOR_USER" -v processor_pw="$POSTGRES_PROCESSOR_PASSWORD" \
        -v app="$POSTGRES_USER" -v app_pw="$POSTGRES_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY[:'owner', :'ingest', :'processor', :'app']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
-- The owner runs migrations and may create scratch databases (tests, db-compare); nobody is a superuser.
ALTER ROLE :"owner" LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOBYPASSRLS PASSWORD :'owner_pw';
ALTER ROLE :"ingest" LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE NOBYPASSRLS PASSWORD :'ingest_pw';
ALTER ROLE :"processor" LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE NOBYPASSRLS PASSWORD :'processor_pw';
ALTER ROLE :"app" LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE NOBYPASSRLS PASSWORD :'app_pw';
-- The owner grants privileges on its objects to the service roles; membership lets it name them in policies.
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"ingest", :"processor", :"app";
SQL
    # PostgreSQL 15's defaults are already right: schema public belongs to pg_database_owner (the database's
    # owner role) and PUBLIC may not create in it. Restore them in case an older version of this script changed
    # them, so the live database matches one migrated from scratch (make db-compare).
    superuser_psql -d "$POSTGRES_DB" <<'SQL'
ALTER SCHEMA public OWNER TO pg_database_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
}

up() {
    ensure_state_dir
    [ -f "$PGDATA/PG_VERSION" ] || init_cluster
    if ! running; then
        log "starting PostgreSQL"
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 start >/dev/null
    fi
    wait_for 60 "PostgreSQL" as_pg "$PGBIN/pg_isready" -q -h "$SOCK" -p "$POSTGRES_PORT"
    apply_roles
    # A real readiness check: log in over TCP with the owner's password.
    PGPASSWORD="$POSTGRES_ADMIN_PASSWORD" wait_for 30 "PostgreSQL login" \
        psql -X -q -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_ADMIN_USER" -d "$POSTGRES_DB" -c 'SELECT 1'
    log "PostgreSQL 15 listening on $POSTGRES_HOST:$POSTGRES_PORT (db $POSTGRES_DB, data $PGDATA)"
}

down() {
    if [ -f "$PGDATA/PG_VERSION" ] && running; then
        log "stopping PostgreSQL"
        as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
    fi
}

status() {
    if [ -f "$PGDATA/PG_VERSION" ] && running; then echo "postgres: running on $POSTGRES_HOST:$POSTGRES_PORT"
    else echo "postgres: stopped"; fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    # Superuser shell for operators (peer authentication on the local socket).
    psql) shift; superuser_psql -d "$POSTGRES_DB" "$@" ;;
    *) die "usage: $0 up|down|status|psql" ;;
esac
