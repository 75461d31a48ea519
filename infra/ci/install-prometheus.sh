#!/usr/bin/env bash
# Install (from Debian packages) `prometheus` and `promtool` for the alert-rule tests
# (tests/unit/test_prometheus_rules.py) and the real-Prometheus test
# (tests/integration/test_prometheus_real.py, which starts its own server on a free loopback
# port). Idempotent. Nothing is left running: the tests start and stop their own server.
#
# Debian's package tries to start its own prometheus service (invoke-rc.d / systemd). In a
# container without an init system `policy-rc.d` is honoured, so one that answers 101
# ("action forbidden") is put in place for the install and removed after; should a daemon
# start anyway, it is stopped. As for the other servers (start-redis.sh), nothing the install
# runs may keep the caller's stdout or stderr: apt's output goes to a log file.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  echo "prometheus and promtool present: $(promtool --version 2>&1 | head -n 1)" >&2
  exit 0
fi

policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

log=$(mktemp)
if ! { apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
  </dev/null >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
# The package's own daemon, should anything have started it (the tests run their own).
if command -v service >/dev/null 2>&1; then
  service prometheus stop </dev/null >/dev/null 2>&1 || true
fi
command -v promtool >/dev/null 2>&1 || { echo "promtool missing after install" >&2; exit 1; }
echo "installed: $(promtool --version 2>&1 | head -n 1)" >&2
