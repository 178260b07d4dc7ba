#!/usr/bin/env bash
# Set up everything the tests need (a virtualenv with the dev packages, and the
# redis-server, chromium, wrk and nginx binaries the tests start themselves), lint, then run pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k stream
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v wrk >/dev/null || missing+=(wrk)  # bench/ load generator (tests/test_bench_smoke.py)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)  # bench/'s reference proxy
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "The tests need: ${missing[*]} (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || "$(command -v python3.12 || command -v python3)" -m venv .venv  # .python-version: 3.12
.venv/bin/pip install -q -r requirements-dev.txt
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"  # two processes: README, Development
