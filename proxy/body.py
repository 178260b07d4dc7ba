"""The client's request body, read on demand for the relay, session chat and anything else that reads one.

A body is only ever taken as it was declared: one that ends before its
`Content-Length`, or a chunked one without its last chunk, is an error and never
a shorter body. Sent upstream as a shorter body, it would leave the upstream
waiting for the rest on a pooled connection, and the next client's request
would become that rest (request smuggling).
"""

from __future__ import annotations

import time
from typing import IO

from flask import request

from .pace import ClientTooSlow, Pace
from .settings import current_settings
from .upstream import UPLOAD_BLOCK

# A slow body is read in pieces of 64 KiB, so that its pace is checked as it arrives (a read of n bytes may
# take n / CLIENT_MIN_RATE seconds); a piece that came within a second lets the next be twice as large, up to
# UPLOAD_BLOCK, since gunicorn copies what it holds beyond each read, and small reads of a fast body cost time.
PIECE = 64 * 1024
GROW_WITHIN = 1.0


class BodyTooLarge(Exception):
    """The client's body went over its limit."""


class ClientBodyError(Exception):
    """The client's body could not be read whole: it ended early, or it sent a broken chunk."""


class ClientBody:
    """The client's body as a file-like object read on demand, never whole unless asked.

    Capped at `limit` bytes (`BodyTooLarge`), complete or an error (`ClientBodyError`),
    and on time (`ClientTooSlow`: see `proxy/pace.py`).
    """

    def __init__(self, stream: IO[bytes], limit: int, length: int | None, pace: Pace):
        self.stream = stream
        self.limit = limit
        self.length = length  # None: chunked, ended by its last chunk
        self.pace = pace
        self.count = 0
        self.waited = 0.0  # seconds spent waiting for the client, not for the upstream
        self.ended = False
        self.piece = PIECE

    @property
    def complete(self) -> bool:
        """True once the body was read to its declared end."""
        return self.ended

    def read(self, size: int = -1) -> bytes:
        if self.ended:
            return b""
        want = size if size and size > 0 else UPLOAD_BLOCK
        if self.length is not None:
            want = min(want, self.length - self.count)
        parts: list[bytes] = []
        got = 0
        while got < want:
            piece = self._piece(min(self.piece, want - got))
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        if not got or self.count == self.length:  # at the declared end, without a read that waits for nothing
            self._end()
        return b"".join(parts)

    def read_all(self) -> bytes:
        return b"".join(iter(self.read, b""))

    def _piece(self, size: int) -> bytes:
        started = time.monotonic()
        try:
            with self.pace.limit(self.waited, self.count + size):
                data = self.stream.read(size)
        except ClientTooSlow:
            raise
        except TimeoutError as exc:  # the socket's own timeout: CLIENT_TIMEOUT without a byte
            raise ClientTooSlow("the client sent nothing for too long") from exc
        except Exception as exc:  # a broken chunk, a chunked body without its last chunk, a reset
            raise ClientBodyError(str(exc)) from exc
        finally:
            took = time.monotonic() - started
            self.waited += took
        self.piece = min(self.piece * 2, UPLOAD_BLOCK) if took < GROW_WITHIN else PIECE
        self.count += len(data)
        if self.count > self.limit:
            raise BodyTooLarge()
        return data

    def _end(self) -> None:
        """The stream has no more: fine at the declared end, an error before it."""
        if self.length is not None and self.count < self.length:
            raise ClientBodyError(f"the body ended after {self.count} of its {self.length} bytes")
        self.ended = True


def request_body(limit: int) -> ClientBody:
    """The current request's body, with the relay's pace settings."""
    settings = current_settings()
    pace = Pace(settings.client_timeout, settings.client_min_rate)
    return ClientBody(request.stream, limit, request.content_length, pace)
