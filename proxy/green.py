"""Whether the relay runs on gevent's greenlets, and the places where a request gives the others their turn.

Under gunicorn's gevent worker the standard library is monkey-patched: a blocked read switches to another
connection, a `gevent.Timeout` interrupts it, a "thread" is a greenlet. Elsewhere (Vercel's runtime, tests
that import the app) there are plain threads, and these are no-ops.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable

PER_TURN = 4  # new requests let in together at least (see NewConnectionsInTurn)
_started = 0  # requests gone upstream (counted by take_turn) and not yet matched by a new request let in
_patched = False  # gevent's patch of the socket module, once seen (it is never undone)
_accepted = itertools.count()  # the worker's connections, numbered as they are accepted
# A client socket's descriptor: the socket's number, from its accept (accept_in_turns) until its first request
# goes in. Every client socket is numbered anew at its accept, so an entry left by a connection that closed
# without a request is overwritten before its descriptor is looked up again.
_arrivals: dict[int, int] = {}


def greenlets_rule_sockets() -> bool:
    """True under gunicorn's gevent worker: sockets and threads are gevent's. Asked a dozen times per request,
    so a yes is remembered (gevent's own check took 0.9% of a stream's setup)."""
    global _patched
    if not _patched:
        try:
            from gevent import monkey
        except ImportError:
            return False
        _patched = monkey.is_module_patched("socket")
    return _patched


def take_turn() -> None:
    """Under gevent, let every other ready connection of the worker run once (before a request goes upstream),
    unless this connection has already let them since its last request.

    A greenlet only gives the worker up when a socket has nothing for it. A client and an upstream that always
    have the next bytes ready (a fast client on keep-alive, a fast upstream) would let one connection run
    request after request while the others wait: at 64 connections on 2 workers, p90 went from 25 to 350 ms.
    But a connection has nearly always waited since its last request (for the client's next one, for the
    upstream's answer), and the loop has polled its sockets meanwhile, so every other ready connection has
    run: the extra switch is then skipped (under wrk, for 97% of requests; it took 4% of a request's CPU in
    py-spy at 64 connections). The loop counts its polls (`iteration`, libev's; gevent's libuv loop gives -1,
    and then every request takes the turn).
    """
    if not greenlets_rule_sockets():
        return
    import gevent

    global _started
    _started += 1
    current = gevent.getcurrent()
    loop = gevent.get_hub().loop
    if getattr(current, "relay_polls_seen", None) == loop.iteration:  # no poll since its last request
        gevent.sleep(0)
    current.relay_polls_seen = loop.iteration


class TimedCalls:
    """Under gevent: calls (a socket's reads and writes) each cut after `seconds`, by `exception` raised in the
    caller, from one timer kept for all of them. Per wait, a new `gevent.Timeout` cost 5.7 µs and a socket's
    own timeout 8.5 (it makes one inside gevent); restarting one kept timer costs 0.4.

    The timer is restarted with libev's `again`, which gives each call its whole time, counted from when the
    call starts. A libev timer stopped and started again goes on with the time left at its stop: each call got
    what the calls before it had not used (a stream's heartbeat came after 0.1-0.2 s of silence, not 1 s).
    """

    def __init__(self, seconds: float, exception: type[BaseException]):
        self.seconds = seconds
        self.exception = exception  # a class: the greenlet gets a new one each time, so no traceback is kept here
        self._timer = None
        self._current: Callable | None = None  # gevent.getcurrent, imported with the timer (Vercel has no gevent)

    def __call__(self, call: Callable, *args: object) -> object:
        timer = self._timer
        if timer is None:
            import gevent

            # `again` starts a timer that is not running with its repeat time; priority -1, as gevent.Timeout's:
            # an answer that is ready when the time is up comes first.
            timer = self._timer = gevent.get_hub().loop.timer(self.seconds, self.seconds, priority=-1)
            self._current = gevent.getcurrent
        timer.again(self._current().throw, self.exception)
        try:
            return call(*args)
        finally:
            timer.stop()


class NewConnectionsInTurn:
    """WSGI middleware: under gevent, the first request of a new connection waits until the worker is between
    other work, and such requests go in a few at a time.

    A burst of new connections (100 streams started at once) otherwise has the worker start every request
    before it answers any, so every first chunk waits for the last request's setup. New requests go in,
    `PER_TURN` at a time, when the worker's loop has nothing else ready, and at least once per turn of the
    loop (so none waits for a quiet moment that never comes); sockets that are ready come first. The first to
    arrive are answered first: in the bench's bursts (2 workers), the first chunk came 6 to 9 ms sooner. They go
    in in the order their connections were accepted (numbered by `accept_in_turns`' server), not in the order
    they reach this queue: requests whose bytes reach the worker in one poll of its loop wake their greenlets
    last first (libev runs one poll's ready watchers from the last to the first), and a whole burst then went
    upstream in reverse (tests/test_relay_bursts.py). One at
    a time did a little better there but cost 13% of the rate when every request comes on a new connection
    (a poll of the loop per request); four cost nothing measurable. Later requests on a kept-alive connection
    go straight in, and `take_turn` keeps those fair. Only connections numbered at their accept wait: under
    gunicorn.conf.py's worker (RelayWorker), every one; elsewhere (threads, another worker class), none.

    A turn lets in as many as the requests that went upstream (kept-alive connections' too) and that no new one
    has matched yet, PER_TURN at least: new connections joining a worker busy with kept-alive ones start about
    as many requests per turn as those do.
    Four a turn alone made them wait for many turns: with 64 new connections joining at once (wrk's start, one
    worker), the p99 was 480-620 ms where the median was 85; 120-250 ms since.
    """

    def __init__(self, app: Callable):
        self.app = app
        self._turns: _Turns | None = None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        client = environ.get("gunicorn.socket")
        arrival = _arrivals.pop(client.fileno(), None) if client is not None else None  # a number: its first request
        if arrival is not None:
            if self._turns is None:
                self._turns = _Turns()
            self._turns.wait(arrival)
        return self.app(environ, start_response)


class _Turns:
    """Greenlets waiting to start, let in `PER_TURN` at a time, first come first (by their connections' arrival
    numbers): when the loop is idle, and at least once per turn."""

    def __init__(self):
        from gevent import get_hub

        self.hub = get_hub()
        self.waiting: list[tuple[int, object]] = []  # a heap of (arrival number, Waiter)
        # Both after the sockets that are ready (a lower priority than theirs): an answer from upstream, a
        # client's next bytes, always come before a request that has not started.
        self.when_idle = self.hub.loop.idle()  # when nothing else is pending
        self.each_iteration = self.hub.loop.check()  # once per turn of the loop, after its poll
        self.when_idle.priority = self.each_iteration.priority = -1

    def wait(self, arrival: int | None = None) -> None:
        from gevent.hub import Waiter

        global _started
        waiter = Waiter(self.hub)
        heapq.heappush(self.waiting, (next(_accepted) if arrival is None else arrival, waiter))
        if not self.when_idle.active:
            _started = 0  # the requests that start from now on
            self.when_idle.start(self._let_some_in)
            self.each_iteration.start(self._let_some_in)
        waiter.get()  # a greenlet killed meanwhile stays in the queue, and its turn passes at once

    def _let_some_in(self) -> None:
        """As many as the requests gone upstream (kept-alive connections' too, and those let in before) that no
        new request has matched yet, PER_TURN at least."""
        global _started
        for _ in range(max(PER_TURN, _started)):
            if not self.waiting:
                return
            _started = max(0, _started - 1)
            _, waiter = heapq.heappop(self.waiting)
            self._stop_when_empty()
            waiter.switch(None)  # runs until it waits for something, then the next goes in

    def _stop_when_empty(self) -> None:
        if not self.waiting:
            self.when_idle.stop()
            self.each_iteration.stop()


def accept_in_turns() -> None:
    """Have each of several gevent workers take up to PER_TURN new connections per turn of its loop, not one, and
    number every connection as it is accepted (the order NewConnectionsInTurn lets their first requests in).

    With several workers gunicorn sets its listening server's `max_accept` to 1, so that one worker does not
    take a whole burst while the others are idle. But a worker busy with kept-alive connections turns its loop
    once per round of their requests (tens of ms), so it then takes one new connection per round, and the others
    wait in the listen queue: with 64 connections joining 2 busy workers (wrk's start), p99 650-1,000 ms where
    the median was 40-50, the last accepted after 1.4 s. Four per turn: p99 160-290 ms. A burst of new streams
    splits between the workers as before (its first chunks came no later). One worker keeps gevent's 100.
    """
    from gunicorn.workers import ggevent

    class AcceptsInTurns(ggevent.StreamServer):
        _max_accept = ggevent.StreamServer.max_accept  # gevent's default, which gunicorn keeps for one worker

        @property
        def max_accept(self) -> int:
            return self._max_accept

        @max_accept.setter
        def max_accept(self, value: int) -> None:  # gunicorn's 1, with several workers
            self._max_accept = max(value, PER_TURN)

        def do_read(self):  # one accept: (client socket, address), or None when there is none
            accepted = super().do_read()
            if accepted:
                _arrivals[accepted[0].fileno()] = next(_accepted)
            return accepted

    ggevent.StreamServer = AcceptsInTurns

