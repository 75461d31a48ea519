#!/usr/bin/env bash
# Install (from Debian packages) and start a PostgreSQL server on 127.0.0.1:5432 with a
# `gateway` role and database, for the ledger tests. Idempotent.
#
# The server is a daemon: it must not inherit the caller's stdout or stderr. A daemon that
# holds an inherited pipe keeps a `$(...)` or a CI log reader waiting for ever (a CI run
# once hung here until its 90-minute limit), so every start below gets /dev/null.
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  # The package may start a server of its own: it must not hold our output either.
  log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; } \
    </dev/null >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -q "^$version main$"; then
  pg_createcluster "$version" main </dev/null >/dev/null 2>&1
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  timeout 60 pg_ctlcluster "$version" main start </dev/null >/dev/null 2>&1 || true
fi
for _ in $(seq 1 100); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 0.2
done
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "PostgreSQL did not start; its log:" >&2
  tail -n 30 "/var/log/postgresql/postgresql-$version-main.log" >&2 || true
  exit 1
fi
psql_as_postgres() { su postgres -c "psql -q $1" </dev/null; }
psql_as_postgres "-tc \"SELECT 1 FROM pg_roles WHERE rolname='gateway'\"" | grep -q 1 ||
  psql_as_postgres "-c \"CREATE ROLE gateway LOGIN PASSWORD 'gateway'\""
psql_as_postgres "-tc \"SELECT 1 FROM pg_database WHERE datname='gateway'\"" | grep -q 1 ||
  psql_as_postgres "-c \"CREATE DATABASE gateway OWNER gateway\""
echo "PostgreSQL ready on 127.0.0.1:5432 (database gateway)" >&2
