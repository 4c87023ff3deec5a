#!/usr/bin/env bash
# First start of the database container (docker-entrypoint-initdb.d, as the image's superuser): the project's roles
# and database, as scripts/postgres.sh makes them locally, and the TimescaleDB extension in the project database
# and in template1, so vital_readings becomes a hypertable (migration 0050) and the scratch databases of db-compare
# and the tests are hypertable-capable too. Passwords come from the environment (.env), never from this file.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v db="$POSTGRES_DB" \
    -v owner="$POSTGRES_ADMIN_USER" -v owner_pw="$POSTGRES_ADMIN_PASSWORD" \
    -v ingest="$POSTGRES_INGEST_USER" -v ingest_pw="$POSTGRES_INGEST_PASSWORD" \
    -v processor="$POSTGRES_PROCESSOR_USER" -v processor_pw="$POSTGRES_PROCESSOR_PASSWORD" \
    -v app="$POSTGRES_APP_USER" -v app_pw="$POSTGRES_APP_PASSWORD" <<'SQL'
SET password_encryption = 'scram-sha-256';
SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY[:'owner', :'ingest', :'processor', :'app']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
ALTER ROLE :"owner" LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOBYPASSRLS PASSWORD :'owner_pw';
ALTER ROLE :"ingest" LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE NOBYPASSRLS PASSWORD :'ingest_pw';
ALTER ROLE :"processor" LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE NOBYPASSRLS PASSWORD :'processor_pw';
ALTER ROLE :"app" LOGIN NOCREATEDB NOSUPERUSER NOCREATEROLE NOBYPASSRLS PASSWORD :'app_pw';
ALTER DATABASE :"db" OWNER TO :"owner";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"ingest", :"processor", :"app";
SQL

for database in template1 "$POSTGRES_DB"; do
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$database" -v owner="$POSTGRES_ADMIN_USER" <<'SQL'
CREATE EXTENSION IF NOT EXISTS timescaledb;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO :"owner";
SQL
done
