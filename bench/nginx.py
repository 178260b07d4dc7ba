"""nginx as the benchmark's reference proxy, started by the bench beside the relay.

It proxies the same paths to the same upstreams as the relay's routes (`/canned/...`, `/ws/...`, the rest to
the fake upstream), configured as a streaming proxy should be: no buffering either way (`proxy_buffering off`,
`proxy_request_buffering off`), HTTP/1.1 keep-alive connections to the upstreams, WebSocket upgrades passed
through, 2 worker processes. Its configuration, pid file, logs and temporary files all live in one temporary
folder; it runs in the foreground (`-g 'daemon off;'`) as the current user and never reads or writes /etc.
Debian: `apt-get install nginx-light` (`scripts/test.sh` installs it).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.relay_server import free_port

CONF = """\
# Written by bench/nginx.py for one benchmark run.
{user}
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 8192;  # 1,000 streams are 2,000 sockets
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    keepalive_requests 1000000;  # as gunicorn: no cap on requests per client connection
    client_max_body_size 0;
    proxy_http_version 1.1;
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_read_timeout 300s;
    proxy_send_timeout 300s;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        "" "";  # no Upgrade: an empty Connection header, so the upstream connection is kept alive
    }}
    upstream fake {{ server 127.0.0.1:{fake}; keepalive 64; }}
    upstream canned {{ server 127.0.0.1:{canned}; keepalive 64; }}
    upstream ws {{ server 127.0.0.1:{ws}; keepalive 64; }}

    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        location /canned/ {{ proxy_pass http://canned/; }}
        location /ws/ {{ proxy_pass http://ws/; }}
        location / {{ proxy_pass http://fake; }}
    }}
}}
"""


def binary() -> str | None:
    """nginx on PATH, or where Debian puts it (/usr/sbin is not on every user's PATH)."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


class Nginx:
    """One nginx master and its workers on a free loopback port, proxying to the bench's upstreams."""

    def __init__(self, prefix: Path, fake: int, canned: int, ws: int, workers: int = 2):
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # As root, nginx would run its workers as `nobody`; the current user keeps the temporary folder theirs.
        user = ""
        if os.geteuid() == 0:
            user = f"user {pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name};"
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(CONF.format(user=user, workers=workers, prefix=prefix, fake=fake, canned=canned, ws=ws,
                                         port=self.port))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> Nginx:
        nginx = binary()
        if nginx is None:
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light)")
        log = open(self.prefix / "stderr.log", "wb")  # noqa: SIM115 (closed below, the child keeps its copy)
        with log:
            # -e: the error log before the configuration is read (the default is under /var/log).
            self.proc = subprocess.Popen(
                [nginx, "-p", str(self.prefix), "-e", str(self.prefix / "error.log"), "-c", str(self.conf),
                 "-g", "daemon off;"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen within {timeout}s: {self.log()}")

    def log(self) -> str:
        return "".join(
            path.read_text(errors="replace")[-2000:] for path in (self.prefix / "stderr.log", self.prefix / "error.log")
            if path.exists()
        )

    def stop(self) -> None:
        """Fast shutdown (SIGTERM to the master, which stops its workers)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)
