#!/usr/bin/env bash
# Set up a virtualenv with the runtime packages and serve the relay on http://127.0.0.1:8000
# (or $PORT) with the embedded defaults: in-memory session store, official upstream.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "$(command -v python3.12 || command -v python3)" -m venv .venv  # .python-version: 3.12
.venv/bin/pip install -q -r requirements.txt
exec .venv/bin/gunicorn app:app
