#!/usr/bin/env bash
# A PostgreSQL server for the gateway's ledger tests.
#
# Installs PostgreSQL from Debian's packages if it is missing (apt-get, non-interactive),
# starts a private cluster (its own data directory and port, independent of any system
# cluster) unless it already runs, creates a role and a database, and prints exactly one
# line on stdout:
#
#     export VEIL_TEST_POSTGRES_URL=postgres://veil:veil@127.0.0.1:PORT/veil_test
#
# Everything else goes to stderr, so `eval "$(scripts/setup-postgres.sh)"` works.
# Idempotent: a second run finds the running server and prints the same line.
#
# Settings (environment): VEIL_PG_DIR (default /tmp/veil-postgres), VEIL_PG_PORT (54329).
# The role may create databases: each test run makes its own.
set -euo pipefail

say() { printf 'setup-postgres: %s\n' "$*" >&2; }

PG_DIR="${VEIL_PG_DIR:-/tmp/veil-postgres}"
PG_PORT="${VEIL_PG_PORT:-54329}"
PG_USER=veil
PG_PASSWORD=veil
PG_DB=veil_test
URL="postgres://${PG_USER}:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/${PG_DB}"

find_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        say "need root (or sudo) to run: $*"
        return 1
    fi
}

if ! BIN="$(find_bindir)"; then
    say "PostgreSQL is not installed; installing it from Debian's packages"
    # No default cluster: this script makes its own (and a system one would take port 5432).
    if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
        as_root mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        postgresql >&2
    BIN="$(find_bindir)" || { say "installed, but no initdb/pg_ctl under /usr/lib/postgresql"; exit 1; }
fi
say "using $BIN"

# PostgreSQL refuses to run as root: run the cluster as the `postgres` user then.
RUN_AS=()
if [[ "$(id -u)" == 0 ]]; then
    if ! id postgres >/dev/null 2>&1; then
        say "creating the postgres system user"
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    RUN_AS=(runuser -u postgres --)
fi

DATA="$PG_DIR/data"
SOCK="$PG_DIR/socket"
LOG="$PG_DIR/server.log"
mkdir -p "$PG_DIR"
if [[ "$(id -u)" == 0 ]]; then
    chown postgres: "$PG_DIR"
fi
"${RUN_AS[@]}" mkdir -p "$SOCK"

psql_admin() {
    "${RUN_AS[@]}" "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PG_PORT" -U postgres -d postgres "$@"
}

if [[ ! -f "$DATA/PG_VERSION" ]]; then
    say "initializing a private cluster in $DATA"
    "${RUN_AS[@]}" "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >&2 ||
        "${RUN_AS[@]}" "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 --encoding=UTF8 --no-locale >&2
fi

if "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    say "the server is already running (port $PG_PORT)"
else
    say "starting the server on 127.0.0.1:$PG_PORT"
    "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $SOCK -c max_connections=200 -c fsync=off" >&2 ||
        { say "the server did not start; its log:"; cat "$LOG" >&2 || true; exit 1; }
fi

for _ in $(seq 1 60); do
    if "${RUN_AS[@]}" "$BIN/pg_isready" -q -h "$SOCK" -p "$PG_PORT"; then break; fi
    sleep 0.5
done

if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != 1 ]]; then
    say "creating role $PG_USER"
    psql_admin -c "CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
fi
if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]]; then
    say "creating database $PG_DB"
    psql_admin -c "CREATE DATABASE $PG_DB OWNER $PG_USER"
fi

say "ready: $URL"
echo "export VEIL_TEST_POSTGRES_URL=$URL"
