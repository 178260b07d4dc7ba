"""The relay under the environment each host (or its owner) adds, where gunicorn reads settings of its own.

Heroku's Python buildpack exports, on every dyno (`.profile.d/python.gunicorn.sh`):
`GUNICORN_CMD_ARGS="--access-logfile -"` and `FORWARDED_ALLOW_IPS='*'`. gunicorn applies `GUNICORN_CMD_ARGS`
after gunicorn.conf.py, so without a guard its access log comes back, one line per request with the query
string (`?key=AIza...`), and it believes `X-Forwarded-*` from anyone. A Docker or Render owner may set the same
variable. Each case starts the relay with the host's own command and environment, and reads what it logged.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time

import pytest
import requests
import yaml

from tests.conftest import upstream_env
from tests.relay_server import ROOT, free_port
from tests.test_deploy import (
    build_context,
    docker,
    docker_env,
    gunicorn_master,
    host_environ,
    procfile_web,
    read,
    serve_and_check,
    stop,
)

# What Heroku's Python buildpack exports on every dyno, besides PORT and the app's config vars.
HEROKU_BUILDPACK = {"GUNICORN_CMD_ARGS": "--access-logfile -", "FORWARDED_ALLOW_IPS": "*", "DYNO": "web.1"}
# An owner who turns gunicorn's access log and proxy trust on by hand (docker run -e, Render's dashboard).
OWNER_OVERRIDE = {"GUNICORN_CMD_ARGS": "--access-logfile=- --forwarded-allow-ips=*", "FORWARDED_ALLOW_IPS": "*"}


def app_json_values() -> dict[str, str]:
    return {name: spec["value"] for name, spec in json.loads(read("app.json"))["env"].items() if "value" in spec}


def render_values() -> dict[str, str]:
    (service,) = yaml.safe_load(read("render.yaml"))["services"]
    return {item["key"]: item["value"] for item in service["envVars"] if "value" in item}


def host(name: str, tmp_path) -> tuple[list[str], object, dict[str, str]]:
    """(command, working directory, environment) as the host runs the relay."""
    if name == "heroku":
        return ["bash", "-c", procfile_web()], ROOT, app_json_values() | HEROKU_BUILDPACK
    if name == "render":
        (service,) = yaml.safe_load(read("render.yaml"))["services"]
        return ["bash", "-c", service["startCommand"]], ROOT, render_values() | OWNER_OVERRIDE
    return json.loads(docker("CMD")[-1]), build_context(tmp_path), docker_env() | OWNER_OVERRIDE


@pytest.mark.parametrize("name", ["heroku", "render", "docker"])
def test_no_key_query_string_or_header_value_is_logged(name, fake, tmp_path):
    relay_key = "rk-" + secrets.token_hex(16)
    gemini_key = "AIzaSy" + secrets.token_hex(16)  # a client's own Gemini key, as ?key=
    query_marker, header_value = "q" + secrets.token_hex(8), "hv-" + secrets.token_hex(12)
    command, cwd, env = host(name, tmp_path)
    port = free_port()
    env = host_environ(env | upstream_env(fake) | {"PORT": str(port), "RELAY_KEYS": relay_key})
    proc, _, _ = serve_and_check(command, cwd, env, port)
    url = f"http://127.0.0.1:{port}"
    close = {"Connection": "close"}  # no idle keep-alive connection to hold up the graceful stop
    try:
        answers = [
            requests.get(f"{url}/v1/models?key={relay_key}&tag={query_marker}",
                         headers=close | {"X-Trace": header_value}, timeout=10),
            requests.post(f"{url}/v1/chat/completions?tag={query_marker}", timeout=10,
                          headers=close | {"Authorization": f"Bearer {relay_key}", "User-Agent": header_value},
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
            requests.get(f"{url}/gemini/v1beta/models?key={gemini_key}&tag={query_marker}",
                         headers=close | {"Referer": f"https://{header_value}.example/"}, timeout=10),
        ]
        assert [a.status_code for a in answers[:2]] == [200, 200]
    finally:
        stop(proc)
    log = proc.stdout.read().decode(errors="replace")
    # The relay's own access line is there (no query string, no key): this is the log that counts.
    assert "/v1/chat/completions" in log and "/v1/models" in log, log[-3000:]
    for secret in (relay_key, gemini_key, "AIzaSy", query_marker, header_value, "key="):
        assert secret not in log, f"{secret!r} was logged:\n{log[-3000:]}"
    assert "HTTP/1.1\" 200" not in log  # no gunicorn access line at all


@pytest.mark.parametrize("name", ["heroku", "render", "docker"])
def test_gunicorn_trusts_no_forwarded_header_whatever_the_environment_says(name, fake, tmp_path):
    """With TRUSTED_PROXIES unset, a client's `X-Forwarded-Proto: https` changes nothing (proxy/trust.py decides)."""
    command, cwd, env = host(name, tmp_path)
    port = free_port()
    env = host_environ({k: v for k, v in env.items() if k != "TRUSTED_PROXIES"} | upstream_env(fake)
                       | {"PORT": str(port)})
    proc, _, _ = serve_and_check(command, cwd, env, port)
    url = f"http://127.0.0.1:{port}"
    try:
        forwarded = {"Accept": "application/json", "X-Forwarded-Proto": "https", "Connection": "close"}
        assert requests.get(url + "/", headers=forwarded, timeout=10).json()["base_url"] == url
        # gunicorn would refuse these two disagreeing scheme headers if it believed either.
        conflicting = {"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "off", "Connection": "close"}
        assert requests.get(url + "/healthz", headers=conflicting, timeout=10).status_code == 200
    finally:
        stop(proc)



def test_a_reload_keeps_the_access_log_off(fake):
    """SIGHUP makes gunicorn read GUNICORN_CMD_ARGS again and start new workers: they log no request line either."""
    relay_key = "rk-" + secrets.token_hex(16)
    command, cwd, env = host("heroku", None)
    port = free_port()
    env = host_environ(env | upstream_env(fake) | {"PORT": str(port), "RELAY_KEYS": relay_key})
    proc, _, _ = serve_and_check(command, cwd, env, port)
    url = f"http://127.0.0.1:{port}/v1/models?key={relay_key}"
    try:
        master = gunicorn_master(proc)
        before = set(subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split())
        os.kill(master, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = set(subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split())
            if now and not now & before:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("no new worker after SIGHUP")
        assert requests.get(url, headers={"Connection": "close"}, timeout=10).status_code == 200
    finally:
        stop(proc)
    log = proc.stdout.read().decode(errors="replace")
    assert "Hang up" in log and log.count("GET /v1/models") == 1, log[-3000:]
    assert relay_key not in log


# The longest idle time of a router in front that reuses connections to the relay: Heroku's Router 2.0 closes
# them after 90 s (devcenter.heroku.com/articles/http-routing#keepalives); AWS's and Render's 60, nginx's 75.
ROUTER_IDLE = 90


@pytest.mark.parametrize("name", ["heroku", "render"])
def test_gunicorn_keeps_an_idle_connection_longer_than_the_router_in_front(name, tmp_path):
    """Were gunicorn to close first, a request the router sends just then would fail: the router must close first."""
    command, cwd, env = host(name, tmp_path)
    command[-1] += " --print-config"  # gunicorn's own resolved settings: gunicorn.conf.py, then GUNICORN_CMD_ARGS
    printed = subprocess.run(command, cwd=cwd, env=host_environ(env | {"PORT": str(free_port())}),
                             capture_output=True, text=True, timeout=60, check=True).stdout
    (keepalive,) = [line.split("=")[1] for line in printed.splitlines() if line.split("=")[0].strip() == "keepalive"]
    assert int(keepalive) > ROUTER_IDLE
