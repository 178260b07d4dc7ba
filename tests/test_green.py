"""proxy/green.py under real gevent (in a child process, since this one is not monkey-patched).

How `NewConnectionsInTurn` lets new requests in: a request already under way whose socket is ready runs
before further new ones, the new ones go in the order they came, none starves on a loop that is never idle,
and one killed while waiting leaves the queue. When `take_turn` lets the others run: when a connection has
not waited since its last request, and only then.
"""

from __future__ import annotations

import json

from tests.relay_server import run_python

SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import json, socket, time, gevent
from proxy.green import PER_TURN, _Turns

turns = _Turns()
report = {}

# A request under way waits for its upstream's answer; three turns' worth of new ones wait for theirs; the
# first new one's upstream answer arrives as soon as it has gone in.
events = []
upstream, relay_side = socket.socketpair()
def under_way():
    relay_side.recv(1)
    events.append("answer")
def new(name):
    turns.wait()
    events.append(name)
    if name == "n0":
        upstream.sendall(b"x")
first = gevent.spawn(under_way)
gevent.sleep(0)
gevent.joinall([first, *[gevent.spawn(new, f"n{i}") for i in range(3 * PER_TURN)]], timeout=5)
report["order"] = events
report["per_turn"] = PER_TURN

# A loop that is never idle: two greenlets play ping-pong on a socket pair the whole time.
left, right = socket.socketpair()
def ping():
    while True:
        left.sendall(b"p"); left.recv(1)
def pong():
    while True:
        right.recv(1); right.sendall(b"q")
players = [gevent.spawn(ping), gevent.spawn(pong)]
gevent.sleep(0.05)
busy = []
started = time.monotonic()
gevent.joinall([gevent.spawn(lambda i=i: (turns.wait(), busy.append(i))) for i in range(5)], timeout=5)
report["busy_seconds"] = time.monotonic() - started
gevent.killall(players, timeout=2)
report["busy"] = busy

# One of three is killed while it waits.
got = []
waiting = [gevent.spawn(lambda i=i: (turns.wait(), got.append(i))) for i in range(3)]
gevent.sleep(0)  # all three are in the queue
waiting[1].kill(block=False)
gevent.joinall(waiting, timeout=2)
watching = turns.when_idle.active or turns.each_iteration.active
report["killed"] = {"got": got, "left": len(turns.waiting), "watching": watching}
print(json.dumps(report))
"""


def run_script(script: str = SCRIPT) -> dict:
    """`script` under real gevent in a child process; the JSON report it prints last."""
    done = run_python(script)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_new_requests_go_in_one_at_a_time_after_ready_work():
    report = run_script()
    order, per_turn = report["order"], report["per_turn"]
    assert [name for name in order if name != "answer"] == [f"n{i}" for i in range(3 * per_turn)]  # as they came
    # n0's answer is ready on the next turn of the loop: it runs then, before that turn lets more in (with
    # every request let in at once, or the answer behind them, it would be last). The turn that let n0 in may
    # let in a batch both when idle and at its end.
    assert order.index("answer") <= 2 * per_turn, order
    # Each got in although the loop was never idle, within a few turns of it (waiting for an idle moment
    # alone took seconds).
    assert report["busy"] == [0, 1, 2, 3, 4] and report["busy_seconds"] < 0.5, report
    assert report["killed"] == {"got": [0, 2], "left": 0, "watching": False}


TURN_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import json, socket, gevent
from proxy.green import take_turn

ticks = [0]
def ticker():  # always ready: it ticks whenever another greenlet lets the others run
    while True:
        ticks[0] += 1
        gevent.sleep(0)

def turns_taken(wait_between, answer=lambda: None):
    taken = []
    for _ in range(10):
        wait_between()
        before = ticks[0]
        take_turn()
        taken.append(ticks[0] != before)
        answer()
    return taken

left, right = socket.socketpair()
def client():  # like wrk: the next request once the last answer has come
    right.sendall(b"r")
    for _ in range(9):
        right.recv(1)
        right.sendall(b"r")

running = gevent.spawn(ticker)
gevent.sleep(0)
report = {"hog": gevent.spawn(turns_taken, lambda: None).get(timeout=5)}
feeder = gevent.spawn(client)
report["waited"] = gevent.spawn(turns_taken, lambda: left.recv(1), lambda: left.sendall(b"a")).get(timeout=5)
feeder.join(timeout=5)
running.kill()
print(json.dumps(report))
"""


def test_a_request_lets_the_others_run_unless_its_connection_waited_since_the_last():
    report = run_script(TURN_SCRIPT)
    # Requests that never wait (a client and an upstream with the next bytes always ready): from the second
    # on, each lets the always-ready greenlet run (the first of a connection has waited to be let in).
    assert report["hog"] == [False] + [True] * 9, report
    # Requests that each wait for the client's next one: the loop has polled, the others have run; no turn.
    assert report["waited"] == [False] * 10, report


ACCEPT_SCRIPT = r"""
import json
from gunicorn.workers import ggevent
from proxy.green import PER_TURN, accept_in_turns

accept_in_turns()

def max_accept(workers):  # as gunicorn's gevent worker makes its server (ggevent.GeventWorker.run)
    server = ggevent.StreamServer(("127.0.0.1", 0), handle=lambda *args: None)
    if workers > 1:
        server.max_accept = 1
    return server.max_accept

print(json.dumps({"one": max_accept(1), "two": max_accept(2), "per_turn": PER_TURN}))
"""


def test_several_workers_take_a_few_new_connections_per_turn():
    """gunicorn has each of several workers accept one connection per turn of its loop; a busy worker's turns
    are long, so new connections waited in the listen queue (p99 up to 1 s in the bench, 2 workers). They take
    PER_TURN now; one worker keeps gevent's 100."""
    report = run_script(ACCEPT_SCRIPT)
    assert report == {"one": 100, "two": report["per_turn"], "per_turn": 4}, report


def test_each_timed_call_gets_its_whole_time():
    """`TimedCalls` (a WebSocket direction's reads and writes, a stream's waits for its next chunk) under real
    gevent: each call is cut after its time, the first and every later one (its one timer is restarted for
    each), with a new exception each time; calls within the time are not cut, however
    much of it the calls before them used (a libev timer stopped and started again has only what was left)."""
    out = run_python("""
        from gevent import monkey; monkey.patch_all()
        import json, time, gevent
        from proxy.green import TimedCalls
        timed, took, raised = TimedCalls(0.2, TimeoutError), [], []
        for _ in range(3):
            started = time.monotonic()
            try:
                timed(gevent.sleep, 1)
            except TimeoutError as exc:
                took.append(time.monotonic() - started)
                raised.append(exc)  # kept alive, so their ids cannot be reused
        timed(gevent.sleep, 0.05)
        within = []  # calls that each take most of the time: each has its own, not what the last one left
        for _ in range(4):
            started = time.monotonic()
            timed(gevent.sleep, 0.15)
            within.append(time.monotonic() - started)
        print(json.dumps([took, len({id(exc) for exc in raised}), within]))
    """)
    assert out.returncode == 0, out.stderr
    took, distinct, within = json.loads(out.stdout)
    assert len(took) == 3 and all(0.15 < seconds < 0.6 for seconds in took), took
    assert distinct == 3
    assert len(within) == 4 and all(seconds >= 0.14 for seconds in within), within
