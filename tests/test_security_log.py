"""The access log cannot be forged or used to send escape codes: the client's path is escaped and bounded."""

from __future__ import annotations

from proxy.accesslog import MAX_LOGGED_PATH
from tests.raw_http import raw_get
from tests.session_client import wait_for


def test_a_path_cannot_forge_a_log_line_or_carry_escape_codes(relay):
    forged = "GET /v1/models 200 3ms 120B"
    target = "/v1/log-forgery%0a" + forged.replace(" ", "%20") + "%0d%1b[2J%1b]0;pwned%07%e4%b8%ad"
    assert raw_get(relay.port, target).startswith(b"HTTP/1.1 400")  # control characters: refused, still logged
    wait_for(lambda: "log-forgery" in relay.log(), what="the access line")
    lines = [line for line in relay.log().splitlines() if "log-forgery" in line or forged in line]
    assert len(lines) == 1, lines
    assert "relay.access: GET /v1/log-forgery%0AGET%20/v1/models%20200%203ms%20120B%0D%1B[2J%1B]0;pwned%07" \
           "%E4%B8%AD 400 " in lines[0]
    assert "\x1b" not in relay.log() and "\x07" not in relay.log()


def test_a_long_path_is_cut_in_the_log(relay):
    target = "/v1/long-path-" + "a" * 3000  # under gunicorn's 4094-byte request line
    raw_get(relay.port, target)
    wait_for(lambda: "long-path-" in relay.log(), what="the access line")
    line = next(line for line in relay.log().splitlines() if "long-path-" in line)
    logged = line.split("relay.access: GET ", 1)[1].split(" ", 1)[0]
    assert logged == target[:MAX_LOGGED_PATH] + "..."
