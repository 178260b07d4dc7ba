"""Running the relay the way users do: `gunicorn app:app` with the project's gunicorn.conf.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent

# Variables of the developer's shell that would change the relay under test.
_RELAY_VARIABLES = ("REDIS_URL", "KV_URL", "WEB_CONCURRENCY", "ROUTES", "RELAY_KEYS", "SESSION_STORE")
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environ() -> dict[str, str]:
    """This process's environment without anything that configures a relay or a proxy."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in _RELAY_VARIABLES and key not in _PROXY_VARIABLES and not key.endswith("_API_KEY")
    } | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


class PortTaken(RuntimeError):
    """Another process bound the port between free_port() and gunicorn's bind."""


class RelayServer:
    """One gunicorn process tree serving the relay on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path, python: str = sys.executable, root: Path = ROOT):
        self.python = python
        self.root = root  # the project folder it runs from (bench/bench.py --baseline: an older revision's copy)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = clean_environ() | {"HOST": "127.0.0.1", "PORT": str(self.port)} | env
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20, attempts: int = 3) -> RelayServer:
        """Start and wait for /healthz; on a port taken meanwhile by another process, try a fresh one."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except PortTaken:
                if attempt == attempts - 1:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.env["PORT"] = str(self.port)
        return self

    def _start_once(self, timeout: float) -> RelayServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "gunicorn", "app:app"],
                cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "Connection in use" in self.log() or "Address already in use" in self.log():
                    raise PortTaken(self.port)
                raise RuntimeError(f"relay exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # the worker may still be booting
                pass
            time.sleep(0.02)  # a relay starts in about half a second: each poll is a refused connect
        self.stop()
        raise RuntimeError(f"relay did not answer /healthz within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logged(self, line: str, times: int = 1, wait: float = 5.0) -> bool:
        """Whether `line` is in the log `times` times, within `wait` seconds (the access log writes a request's
        line when its response is closed, just after the client has read it)."""
        deadline = time.monotonic() + wait
        while self.log().count(line) < times:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def workers_started(self, expected: int, wait: float = 10.0) -> list[int]:
        """The worker pids once gunicorn has forked `expected` of them, or what it has after `wait` seconds."""
        deadline = time.monotonic() + wait
        while len(pids := self.worker_pids()) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return pids

    def stop(self) -> None:
        """Quick shutdown (SIGINT): a graceful one would wait for idle keep-alive clients."""
        self.interrupt()
        self.wait_stopped()

    def interrupt(self) -> None:
        """Ask for the quick shutdown without waiting for it (`stop_all` stops many relays at once)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)

    def wait_stopped(self) -> None:
        """Wait for the process tree to exit after `interrupt`, killing it after 10 seconds."""
        if self.proc is None:
            return
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def stop_all(servers: Iterable[RelayServer]) -> None:
    """Stop every relay, all at once: each takes a few tenths of a second to shut down."""
    servers = list(servers)
    for server in servers:
        server.interrupt()
    for server in servers:
        server.wait_stopped()


def run_python(script: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter in the project root (one that gevent may patch, or a worker hook's), with
    this process's environment unless `env` is given."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def proc_stat(pid: int) -> list[str]:
    """A process's /proc/PID/stat fields after its name: [0] is the state, [7] minflt, [11] utime, [12] stime."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user and system."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def minor_faults(pid: int) -> int:
    """Pages a process has faulted in without reading a disk."""
    return int(proc_stat(pid)[7])


def rss_kib(pid: int) -> int:
    """A process's resident memory (a worker's, from `RelayServer.worker_pids`), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
