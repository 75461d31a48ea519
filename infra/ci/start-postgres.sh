#!/usr/bin/env bash
# Install (from Debian packages) and start a PostgreSQL server on 127.0.0.1:5432 with a
# `gateway` role and database, for the ledger tests. Prints the URL to use. Idempotent.
set -euo pipefail
# Only the URL goes to stdout (the caller captures it); everything else to stderr.
exec 3>&1 1>&2

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -q "^$version main$"; then
  pg_createcluster "$version" main >/dev/null
fi
pg_ctlcluster "$version" main start 2>/dev/null || true
for _ in $(seq 1 50); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 0.2
done
su postgres -c "psql -q -tc \"SELECT 1 FROM pg_roles WHERE rolname='gateway'\"" | grep -q 1 ||
  su postgres -c "psql -q -c \"CREATE ROLE gateway LOGIN PASSWORD 'gateway'\""
su postgres -c "psql -q -tc \"SELECT 1 FROM pg_database WHERE datname='gateway'\"" | grep -q 1 ||
  su postgres -c "psql -q -c \"CREATE DATABASE gateway OWNER gateway\""
echo "postgresql+asyncpg://gateway:gateway@127.0.0.1:5432/gateway" >&3
