"""The deploy manifests: each parses, names what the app needs, and starts the relay the way its host would.

No container engine runs here, so the Dockerfile is checked statically and its
command is run from a copy of the build context that its `.dockerignore` leaves.
"""

from __future__ import annotations

import ast
import base64
import fnmatch
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
import requests
import yaml
from packaging.requirements import Requirement

from proxy.settings import Settings
from proxy.trust import TrustedProxies
from tests.conftest import upstream_env
from tests.relay_server import ROOT, clean_environ, free_port

# Every setting of the relay, named as its environment variable.
SETTINGS = {f.name.upper() for f in fields(Settings)} - {"ENVIRON"}
# Set by the host or an add-on, never by the owner in a manifest.
FROM_THE_HOST = {"REDIS_URL"}
SECRETS = {"RELAY_KEYS", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"}


def read(name: str) -> str:
    return (ROOT / name).read_text()


def procfile_web() -> str:
    lines = [line for line in read("Procfile").splitlines() if line.startswith("web:")]
    assert len(lines) == 1, "the Procfile needs exactly one web process"
    return lines[0].removeprefix("web:").strip()


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", read("Dockerfile"))
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            pairs.append((instruction.upper(), args.strip()))
    return pairs


def docker(instruction: str) -> list[str]:
    return [args for name, args in dockerfile() if name == instruction]


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in docker("ENV"):
        env.update(dict(item.split("=", 1) for item in shlex.split(args)))
    return env


def serve_and_check(command: list[str], cwd: Path, env: dict[str, str], port: int, timeout: float = 30):
    """Run `command` as a host would, wait for /healthz, return (process, health JSON, landing JSON)."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            try:
                # `Connection: close`, so that no idle keep-alive connection holds up the server's graceful stop.
                health = requests.get(url + "/healthz", headers={"Connection": "close"}, timeout=1)
                if health.status_code == 200:
                    landing = requests.get(url + "/", headers={"Accept": "application/json", "Connection": "close"},
                                           timeout=5)
                    return proc, health.json(), landing.json()
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.1)
        raise AssertionError(f"{command} did not serve /healthz within {timeout}s")
    except BaseException:
        stop(proc)
        raise


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


def host_environ(extra: dict[str, str]) -> dict[str, str]:
    """A host's environment: our interpreter's bin/ on PATH (as the buildpack's), no HOST, the manifest's values."""
    env = clean_environ()
    env.pop("HOST", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


# -- requirements.txt and pyproject.toml: one list of runtime packages ----------------------------------------------


def requirement_lines(text: str) -> list[Requirement]:
    lines = (line.partition("#")[0].strip() for line in text.splitlines())
    return [Requirement(line) for line in lines if line]


def test_requirements_txt_lists_exactly_pyprojects_dependencies_and_server_extra():
    """Vercel installs pyproject.toml's `dependencies`; every other host installs requirements.txt."""
    project = tomllib.loads(read("pyproject.toml"))["project"]
    declared = [Requirement(item) for item in project["dependencies"] + project["optional-dependencies"]["server"]]
    listed = requirement_lines(read("requirements.txt"))

    def key(requirement: Requirement) -> tuple:
        return requirement.name.lower(), tuple(sorted(requirement.extras)), str(requirement.specifier)

    assert sorted(map(key, listed)) == sorted(map(key, declared))
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in declared)  # pinned
    assert {r.name for r in requirement_lines("\n".join(project["optional-dependencies"]["server"]))} == {
        "gunicorn", "gevent"}


def test_app_imports_without_gevent_or_gunicorn():
    """On Vercel neither is installed: nothing the app imports may need them."""
    code = ("import sys; sys.modules['gevent'] = sys.modules['gunicorn'] = None; import app; "
            "assert not any(m.startswith(('gevent', 'gunicorn')) for m in sys.modules if sys.modules[m])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_environ(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- Procfile, app.json, .python-version (Heroku) ------------------------------------------------------------------


def test_app_json_describes_every_setting_and_generates_the_relay_key():
    manifest = json.loads(read("app.json"))
    assert 3 <= len(manifest["name"]) <= 30 and len(manifest["description"]) <= 140
    assert manifest["keywords"] and manifest["buildpacks"] == [{"url": "heroku/python"}]
    env = manifest["env"]
    assert set(env) >= SETTINGS - FROM_THE_HOST, f"missing: {sorted(SETTINGS - FROM_THE_HOST - set(env))}"
    assert {"WEB_CONCURRENCY", "HTTPS_PROXY", "NO_PROXY"} <= set(env)
    for name, spec in env.items():
        assert spec["description"].strip(), f"{name} has no description"
        if name != "RELAY_KEYS":
            assert "generator" not in spec
    assert env["RELAY_KEYS"]["generator"] == "secret"
    for name in SECRETS - {"RELAY_KEYS"}:
        assert env[name]["required"] is False and "value" not in env[name]  # never a key in the manifest
    # The buildpack would start 2+ processes on its own; the in-memory stores need one.
    assert env["WEB_CONCURRENCY"]["value"] == "1"
    values = {name: spec["value"] for name, spec in env.items() if "value" in spec}
    Settings.load(values)
    TrustedProxies.parse(values["TRUSTED_PROXIES"])


def test_python_version_is_the_projects():
    version = read(".python-version").strip()
    assert re.fullmatch(r"3\.\d+", version)
    assert sys.version.startswith(version + ".")


def test_procfile_runs_as_heroku_would(fake):
    """`web:` run by a shell with PORT set (no HOST), with app.json's values and a generated relay key."""
    command = procfile_web()
    assert command.split()[:2] == ["gunicorn", "app:app"]
    values = {name: spec["value"] for name, spec in json.loads(read("app.json"))["env"].items() if "value" in spec}
    port = free_port()
    env = host_environ(values | upstream_env(fake) | {"PORT": str(port), "RELAY_KEYS": secrets.token_hex(32)})
    proc, health, landing = serve_and_check(["bash", "-c", command], ROOT, env, port)
    try:
        assert health["status"] == "ok"
        assert landing["relay_key_required"] is True
        workers = subprocess.run(["pgrep", "-P", str(gunicorn_master(proc))], capture_output=True, text=True)
        assert len(workers.stdout.split()) == 1  # WEB_CONCURRENCY=1 from app.json
    finally:
        stop(proc)


def gunicorn_master(shell: subprocess.Popen) -> int:
    """bash usually execs a lone command, so the shell's pid is gunicorn's; otherwise gunicorn is its child."""
    if "gunicorn" in Path(f"/proc/{shell.pid}/cmdline").read_text(errors="replace"):
        return shell.pid
    return int(subprocess.run(["pgrep", "-P", str(shell.pid)], capture_output=True, text=True).stdout.split()[0])


# -- vercel.json --------------------------------------------------------------------------------------------------


def expand_braces(pattern: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [p for option in match.group(1).split(",") for p in expand_braces(head + option + tail)]


def test_vercel_json_is_current_format_pins_a_us_region_and_the_longest_hobby_duration():
    config = json.loads(read("vercel.json"))
    assert not {"builds", "routes", "version"} & set(config), "legacy keys"
    assert config["regions"] == ["iad1"]  # Washington, D.C.: OpenAI refuses Hong Kong (hkg1) and others
    (entry, function), = config["functions"].items()
    assert function["maxDuration"] == 300  # the Hobby plan's maximum (Fluid compute)
    # The entry point is a file Vercel's Flask preset loads, exposing a top-level `app`.
    tree = ast.parse(read(entry))
    assert any(isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "app" for t in node.targets)
               for node in tree.body)
    # What Vercel's builder installs (tests/test_deploy_vercel.py runs it): pyproject.toml's dependencies.
    assert any(Requirement(d).name == "flask" for d in tomllib.loads(read("pyproject.toml"))["project"]["dependencies"])
    excluded = expand_braces(function["excludeFiles"])
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()

    def bundled(path: str) -> bool:
        return not any(fnmatch.fnmatch(path, pattern) for pattern in excluded)

    assert not any(bundled(path) for path in tracked if path.startswith(("tests/", "bench/")))
    needed = [p for p in tracked if p.endswith((".py", ".html", ".txt")) and p.split("/")[0] in
              {"app.py", "gunicorn.conf.py", "requirements.txt", "proxy", "sessions", "billing", "landing"}]
    assert needed and all(bundled(path) for path in needed)


# -- render.yaml ----------------------------------------------------------------------------------------------------


def test_render_yaml_starts_like_the_procfile_checks_health_and_prompts_for_secrets():
    blueprint = yaml.safe_load(read("render.yaml"))
    (service,) = blueprint["services"]
    assert service["type"] == "web" and service["runtime"] == "python"
    assert service["startCommand"] == procfile_web()
    assert "requirements.txt" in service["buildCommand"]
    assert service["healthCheckPath"] == "/healthz"
    env = {item["key"]: item for item in service["envVars"]}
    assert env["RELAY_KEYS"] == {"key": "RELAY_KEYS", "generateValue": True}
    for name in SECRETS - {"RELAY_KEYS"}:
        assert env[name] == {"key": name, "sync": False}  # prompted, never committed
    values = {name: item["value"] for name, item in env.items() if "value" in item}
    assert values["WEB_CONCURRENCY"] == "1"
    Settings.load(values)
    TrustedProxies.parse(values["TRUSTED_PROXIES"])


def test_a_key_like_renders_generated_one_needs_url_encoding_in_the_query(start_relay):
    """Render's `generateValue` is base64 of 256 random bits: `+`, `/` and `=` (what the README tells owners)."""
    key = base64.b64encode(b"\xfb\xef\xbe\xff\xff\xff" + secrets.token_bytes(26)).decode()
    assert len(key) == 44 and {"+", "/", "="} <= set(key)
    relay = start_relay(RELAY_KEYS=key)
    models = relay.url + "/v1/models"
    assert requests.get(models, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200
    assert requests.get(models, params={"key": key}, timeout=10).status_code == 200  # encoded: %2B %2F %3D
    assert requests.get(f"{models}?key={key}", timeout=10).status_code == 401  # as typed: `+` reads as a space


# -- Dockerfile, .dockerignore, docker-compose.yml -----------------------------------------------------------------


def test_dockerfile_is_slim_non_root_and_runs_the_procfile_command_on_port():
    (base,) = docker("FROM")
    assert re.fullmatch(r"python:3\.12-slim(@sha256:[0-9a-f]+)?", base)
    assert base.split(":")[1].startswith(read(".python-version").strip())
    assert json.loads(docker("CMD")[-1]) == procfile_web().split()
    instructions = [name for name, _ in dockerfile()]
    assert "USER" in instructions and instructions.index("USER") < instructions.index("CMD")
    # Numeric and not root: Kubernetes' `runAsNonRoot` (Sealos and others) can only verify a numeric user.
    user = docker("USER")[-1]
    assert user.isdigit() and int(user) != 0
    assert any(f"--uid {user} " in args for args in docker("RUN"))  # the user exists, with a home
    port = docker_env()["PORT"]
    assert docker("EXPOSE") == [port]
    (healthcheck,) = docker("HEALTHCHECK")
    assert "/healthz" in healthcheck and "PORT" in healthcheck


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a path is left out if it, or a directory above it, matches a pattern (`**/` = any depth)."""
    parts = path.split("/")

    def matches(pattern: str, candidate: list[str]) -> bool:
        wanted = pattern.split("/")
        if len(wanted) != len(candidate):
            return False
        return all(fnmatch.fnmatchcase(c, w) for c, w in zip(candidate, wanted, strict=True))

    for end in range(1, len(parts) + 1):
        prefix = parts[:end]
        for pattern in patterns:
            if pattern.startswith("**/"):
                if any(matches(pattern[3:], prefix[start:]) for start in range(len(prefix))):
                    return True
            elif matches(pattern, prefix):
                return True
    return False


def build_context(tmp_path: Path) -> Path:
    """The files `docker build .` would send: the tracked files its .dockerignore does not leave out."""
    patterns = [p.strip() for p in read(".dockerignore").splitlines() if p.strip() and not p.startswith("#")]
    context = tmp_path / "context"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for path in tracked:
        if not dockerignored(path, patterns) and (ROOT / path).exists():
            (context / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, context / path)
    return context


def test_dockerignore_rules():
    patterns = ["tests", "**/__pycache__", "*.md", ".env"]
    assert dockerignored("tests/test_smoke.py", patterns)
    assert dockerignored("proxy/__pycache__/relay.cpython-311.pyc", patterns)
    assert dockerignored("README.zh-CN.md", patterns) and dockerignored(".env", patterns)
    assert not dockerignored("proxy/relay.py", patterns)
    assert not dockerignored("landing/templates/landing/index.html", patterns)
    assert not dockerignored("docs/notes.md", patterns)  # `*.md` is the root only, as in Docker


def test_image_contents_serve_the_relay_with_the_dockerfile_command(tmp_path, fake):
    """Run the CMD from what .dockerignore lets into the image, then the HEALTHCHECK command against it."""
    context = build_context(tmp_path)
    assert not (context / "tests").exists() and not (context / ".env").exists()
    assert (context / "landing" / "templates" / "landing" / "index.html").exists()
    copied = [args.split()[0] for args in docker("COPY")]
    assert all((context / item).exists() for item in copied)
    port = free_port()
    env = host_environ(docker_env() | upstream_env(fake) | {"PORT": str(port)})
    command = json.loads(docker("CMD")[-1])
    proc, health, landing = serve_and_check(command, context, env, port)
    try:
        assert health["status"] == "ok" and landing["base_url"] == f"http://127.0.0.1:{port}"
        probe = json.loads(docker("HEALTHCHECK")[0].split("CMD", 1)[1])
        # A proxy in the environment is not asked: the probe talks to the relay directly.
        behind_proxy = {k: v for k, v in env.items() if k.lower() != "no_proxy"} | {"HTTP_PROXY": "http://127.0.0.1:9"}
        result = subprocess.run(probe, env=behind_proxy, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    finally:
        stop(proc)
    # And the probe fails once the relay is gone.
    result = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0


def test_compose_runs_the_relay_with_redis_through_redis_url():
    compose = yaml.safe_load(read("docker-compose.yml"))
    relay, redis = compose["services"]["relay"], compose["services"]["redis"]
    assert relay["build"] == "."
    env = relay["environment"]
    url = env["REDIS_URL"]
    match = re.fullmatch(r"redis://(?P<host>[\w-]+):(?P<port>\d+)/\d+", url)
    assert match and match["host"] in compose["services"] and match["port"] == "6379"
    assert "redis" in redis["image"] and redis["healthcheck"]["test"][-1] == "ping"
    assert relay["depends_on"]["redis"]["condition"] == "service_healthy"
    container_port = docker_env()["PORT"]
    assert env["PORT"] == container_port
    assert [mapping.rsplit(":", 1)[1] for mapping in relay["ports"]] == [container_port]
    assert Settings.load({k: str(v) for k, v in env.items()}).session_store == url  # REDIS_URL selects Redis
    assert relay["env_file"] == [{"path": ".env", "required": False}]


@pytest.mark.parametrize("name", ["Procfile", "app.json", "vercel.json", "render.yaml", "docker-compose.yml"])
def test_manifests_never_hold_a_key(name):
    text = read(name)
    assert not re.search(r"\b(sk|rk|sess)-[A-Za-z0-9_-]{8,}", text)
