"""gunicorn settings, loaded automatically by `gunicorn app:app` from the project root.

gevent workers hold thousands of concurrent event streams in one process (a thread
worker caps them at its thread count), and the worker timeout only watches the
worker's own heartbeat, so long streams are never killed by it.
"""

import ctypes
import gc
import os

import gevent
from gunicorn.workers.base import Worker
from gunicorn.workers.ggevent import GeventWorker

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"


def _cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (`docker --cpus`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as limits:
            quota, period = limits.read().split()  # "max 100000" or "150000 100000"
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cores


def _state_shared(env) -> bool:
    """Whether what the relay keeps between requests lives in Redis, so that any worker may take any request.

    REDIS_URL or KV_URL hold it all (sessions, rate-limit counters, usage and budgets). A Redis SESSION_STORE
    alone moves only the sessions: it is enough unless rate limits, budgets or relay keys (usage figures,
    failed-key counts) are counted, which then stay in each process.
    """
    if env.get("REDIS_URL") or env.get("KV_URL"):
        return True
    if not env.get("SESSION_STORE", "").startswith(("redis://", "rediss://", "unix://")):
        return False
    return not (env.get("RATE_LIMIT") or env.get("KEY_BUDGETS") or env.get("RELAY_KEYS"))


# WEB_CONCURRENCY when set (Heroku's buildpack sets it from the dyno's memory unless the app does); otherwise one
# worker per core when the shared state is in Redis, and one worker with the in-memory stores, which live in it.
workers = int(os.environ.get("WEB_CONCURRENCY") or (_cores() if _state_shared(os.environ) else 1))


class RelayWorker(GeventWorker):
    """gunicorn's gevent worker, with several workers taking new connections a few at a time (proxy/green.py's
    accept_in_turns), and a quick shutdown (Ctrl-C: SIGINT, or SIGQUIT) that ends without a traceback.

    gunicorn's worker takes that signal in a greenlet: it stops the worker's loop, waits 0.1 s, then calls
    `sys.exit(0)` to cut the streams still open. An idle worker's loop has often ended meanwhile, and the exit
    then fell into the interpreter's shutdown, printed as a SystemExit traceback by every worker (benoitc/
    gunicorn#3239). Here it is raised only while the loop still runs (tests/test_shutdown.py).
    """

    loop_ended = False

    def run(self) -> None:
        from proxy.green import accept_in_turns

        accept_in_turns()
        try:
            super().run()
        finally:
            self.loop_ended = True

    def handle_quit(self, sig, frame) -> None:
        gevent.spawn(self._quit, sig, frame)

    def _quit(self, sig, frame) -> None:
        """gunicorn's own quick exit (base Worker.handle_quit), its SystemExit dropped once the loop has ended."""
        try:
            Worker.handle_quit(self, sig, frame)
        except SystemExit:
            if not self.loop_ended:
                raise


worker_class = RelayWorker
worker_connections = int(os.environ.get("WORKER_CONNECTIONS") or 2000)
timeout = 60
graceful_timeout = 30
# Longer than the idle timeout of the load balancers in front (Heroku's router 90 s, AWS/Render 60 s,
# nginx 75 s), so they never reuse a connection the relay is closing: 95, as Heroku's own templates.
keepalive = 95
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


# The cycle collector's young generation: Python's default (700) is sized for scripts, not for a worker with
# dozens of requests in flight (see post_worker_init).
YOUNG_GENERATION_THRESHOLD = 7000


# glibc's malloc: blocks up to this size come from the heap, and up to this much free memory stays at its top.
MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 16 * 1024 * 1024
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def keep_large_buffers(env) -> bool:
    """Have glibc's malloc reuse the memory of a large body's buffers instead of mapping fresh pages for each.

    By default a block of 128 KiB or more is mapped on its own and unmapped once freed, and the heap gives back
    its free top past 128 KiB, both raised only as such blocks come and go: a worker relaying a 200 MiB upload
    (reads of up to 1 MiB from the client, copied by gunicorn's body reader) took ~80,000 fresh pages from the
    kernel, 3x the CPU and a third of the rate, for several uploads until glibc happened to adapt. A body's
    buffers take a few MiB, so a worker keeps at most TRIM_THRESHOLD more than it holds. An owner's own setting
    of either (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, or in `GLIBC_TUNABLES`) is left to glibc;
    elsewhere (musl, macOS) this does nothing.
    """
    tunables = env.get("GLIBC_TUNABLES", "")
    if {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(env) or "_threshold=" in tunables:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def post_worker_init(worker) -> None:
    """Send each answer's head with its first piece of body (proxy/client_writes.py), keep the allocator steady
    under large bodies (keep_large_buffers), and keep the cycle collector's cost per request from growing with
    the requests in flight.

    A young collection walks every object made since the last one, which in a busy worker are mostly the live
    objects of the requests in flight: with the default threshold it cost 7 µs per request at 16 connections and
    28 at 64, and each full collection also walked the ~65,000 objects of the loaded app. Those are frozen out
    of every later collection (they live as long as the worker), and a young generation ten times larger is
    collected ten times less often: 1.6 and 2.2 µs. Garbage in cycles is still collected, a few thousand
    objects later (tests/test_worker_gc.py).
    """
    from proxy.client_writes import install

    install()
    keep_large_buffers(os.environ)
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD)


# Prometheus metrics (METRICS=1, usage/metrics.py): several workers add up their figures through files in
# PROMETHEUS_MULTIPROC_DIR, which must be set before a worker imports prometheus-client: a fresh directory is
# made here unless the deployment names one (then its stale *.db files are removed at start-up).
if os.environ.get("METRICS", "").strip().lower() in ("1", "true", "yes", "on"):
    import glob
    import tempfile

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
        for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
            os.remove(stale)
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="relay-metrics-")


def child_exit(server, worker):
    """A worker has ended: forget its live gauges (open streams), as prometheus-client's multiprocess mode asks."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
