"""gunicorn settings, loaded automatically by `gunicorn app:app` from the project root.

gevent workers hold thousands of concurrent event streams in one process (a thread
worker caps them at its thread count), and the worker timeout only watches the
worker's own heartbeat, so long streams are never killed by it.
"""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
# One process by default: the in-memory session store lives in it. Heroku sets WEB_CONCURRENCY itself.
workers = int(os.environ.get("WEB_CONCURRENCY") or 1)
worker_class = "gevent"
worker_connections = int(os.environ.get("WORKER_CONNECTIONS") or 2000)
timeout = 60
graceful_timeout = 30
# Longer than the idle timeout of the load balancers in front (AWS/Render 60 s, nginx 75 s),
# so they never reuse a connection the relay has just closed.
keepalive = 90
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# gunicorn's runtime control socket (a fixed path under $HOME) is not needed by a relay, and
# several instances on one machine, or a read-only home on a PaaS, would trip over it.
control_socket_disable = True

# Settings no environment may change, kept by the hooks below:
# - gunicorn's access line holds the query string (`?key=...`) and the Referer and User-Agent values; the app
#   writes its own (proxy/accesslog.py), without them;
# - gunicorn would believe X-Forwarded-* from the addresses listed; TRUSTED_PROXIES (proxy/trust.py) alone decides.
# gunicorn applies GUNICORN_CMD_ARGS after this file: Heroku's buildpack exports GUNICORN_CMD_ARGS="--access-logfile -"
# (and FORWARDED_ALLOW_IPS='*') on every dyno, and an owner may set either anywhere.
accesslog = None
disable_redirect_access_to_syslog = True  # with --log-syslog, the error log only
forwarded_allow_ips = ""
PRIVATE = ("accesslog", "disable_redirect_access_to_syslog", "forwarded_allow_ips")


def _keep_private(server) -> None:
    """Set the PRIVATE settings again once gunicorn has read every source, before any worker starts."""
    for name in PRIVATE:
        server.cfg.set(name, globals()[name])
    server.log.setup(server.cfg)


def on_starting(server) -> None:
    _keep_private(server)


def on_reload(server) -> None:  # a reload (SIGHUP) reads GUNICORN_CMD_ARGS again
    _keep_private(server)
