#!/usr/bin/env bash
# Install (from Debian packages) and start a Redis server on 127.0.0.1:6379 for the shared-state
# tests. Idempotent. Tests that stop or restart Redis start their own `redis-server` on a free
# port (tests/support/redis.py); this one serves the rest, as TEST_REDIS_URL.
#
# As for PostgreSQL (start-postgres.sh): the daemon must not inherit the caller's stdout or
# stderr, or a CI log reader waits for it for ever; its log goes to a file.
set -euo pipefail

if ! command -v redis-server >/dev/null 2>&1; then
  log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; } \
    </dev/null >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes \
    --logfile /tmp/ci-redis.log </dev/null >/dev/null 2>&1
fi
for _ in $(seq 1 100); do
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
  sleep 0.1
done
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "Redis did not start; its log:" >&2
  tail -n 30 /tmp/ci-redis.log >&2 || true
  exit 1
fi
echo "Redis ready on 127.0.0.1:6379" >&2
