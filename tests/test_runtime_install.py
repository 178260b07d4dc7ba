"""The relay runs from requirements.txt alone, as a host installs it (no test packages to lean on)."""

from __future__ import annotations

import subprocess
import sys

import requests

from tests.relay_server import ROOT, RelayServer


def test_runtime_requirements_alone_serve_the_relay(tmp_path, fake, logs_dir):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    requirements = str(ROOT / "requirements.txt")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", requirements],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]

    relay = RelayServer({"UPSTREAM_URL": fake.url}, logs_dir / "runtime-only.log", python=str(python))
    try:
        relay.start()
        answer = requests.get(relay.url + "/v1/models", timeout=10)
        assert answer.status_code == 200
        assert answer.json()["data"][0]["id"] == "gpt-4o-mini"
        assert "Using worker: RelayWorker" in relay.log()
    finally:
        relay.stop()
