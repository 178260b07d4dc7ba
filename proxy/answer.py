"""The upstream's answer as the relay reads it: http.client's response and the pooled connection it came on.

urllib3's pool wraps every answer in its own response object (a header dict built per answer, a context
manager per read); that object was a sixth of a request's CPU on the upstream side. The relay's connections
(proxy/connection.py) hand the pool this lighter `Answer` instead, which does what the relay asks of
urllib3's: the same headers (repeated names joined with ", " by `get`, each kept by `items`, folded values
unfolded), the same framing checks, the same errors, and the connection back to the pool once the body has
been read to its end (closed instead, on any failure). A body to be decoded (gzip, br, zstd) is read by
urllib3's own response object, made only then.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from http.client import HTTPException, IncompleteRead
from typing import Any

from urllib3 import HTTPHeaderDict, HTTPResponse
from urllib3.exceptions import InvalidHeader, ProtocolError, ReadTimeoutError, SSLError

_FOLD = re.compile(r"(?:(?<![ \t])[ \t]+)?\r\n[ \t]+")  # an obsolete line fold, unfolded to a space (urllib3's rule)


class LengthsDisagree(InvalidHeader):
    """The answer declares Content-Lengths that differ, so where its body ends would be a guess (urllib3's
    error, with the values kept)."""

    def __init__(self, declared: str):
        super().__init__(f"Content-Length contained multiple unmatching values ({declared})")
        self.declared = declared


class AnswerHeaders:
    """The answer's headers: case-insensitive, repeated names joined with ", " (as urllib3's `HTTPHeaderDict`)."""

    __slots__ = ("_pairs", "_joined")

    def __init__(self, pairs: list[tuple[str, str]]):
        self._pairs = pairs
        joined: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
        self._joined = joined

    def get(self, name: str, default: Any = None) -> Any:
        return self._joined.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._joined[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._joined

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._joined)

    def items(self) -> list[tuple[str, str]]:
        """Every header as received, in order, repeated names apart."""
        return list(self._pairs)



class Answer:
    """http.client's response to one request, read as urllib3's response reads it (`read1`, `read`,
    `release_conn`, `close`); `urlopen` sets `retries`, `_connection` and `_pool` as it does on its own."""

    def __init__(self, fp: Any, version_string: str, method: str | None, url: str | None):
        self._fp = fp  # http.client's response (proxy/connection.py's), which the streaming code also uses
        self.status: int = fp.status
        self.reason: str = fp.reason
        self.version: int = fp.version
        self.version_string = version_string
        self.headers = AnswerHeaders([
            (name, _FOLD.sub(" ", value) if "\r\n" in value else value) for name, value in fp.msg.raw_items()
        ])  # raw: the compat32 policy's `items` changes only values with surrogates, which Latin-1 never makes
        self.length_remaining = _declared_length(self.headers, self.status, method, fp.chunked)
        self.retries: Any = None
        self._connection: Any = None
        self._pool: Any = None
        self._method, self._url = method, url
        self._decoding: HTTPResponse | None = None

    def read1(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:
        """What has arrived of the body, up to `amt` bytes, as sent (the relay never decodes a stream); b"" at
        its end."""
        if amt == 0:
            return b""
        return self._raw_read(amt, read1=True)

    def read(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:
        """The body (decoded, given `decode_content`), or its next `amt` bytes."""
        if decode_content or self._decoding is not None:
            return self._decoded().read(amt, decode_content=decode_content)
        if amt is not None and amt < 0:
            amt = None
        if amt == 0:
            return b""
        return self._raw_read(amt, read1=False)

    def _raw_read(self, amt: int | None, read1: bool) -> bytes:
        """urllib3's `_raw_read`: a short body is an error, a failure closes the connection."""
        fp = self._fp
        if fp.isclosed():  # its end was reached, or it was closed
            return b""
        try:
            if read1:
                data = fp.read1(amt) if amt is not None else fp.read1()
            else:
                data = fp.read(amt) if amt is not None else fp.read()
            if amt is not None and not data:
                fp.close()
                if self.length_remaining:  # the declared length was not reached
                    raise IncompleteRead(b"", self.length_remaining)
            elif read1 and (not data or self.length_remaining == len(data)):
                fp.close()  # http.client's read1 does not always close at the end (CPython issue 113199)
        except BaseException as exc:  # as urllib3's: the connection is closed (and handed back), whatever the cause
            self._fail()
            error = _as_urllib3_error(exc, self._pool)
            if error is exc:
                raise
            raise error from exc
        if data and self.length_remaining is not None:
            self.length_remaining -= len(data)
        if fp.isclosed():
            self.release_conn()
        return data

    def _decoded(self) -> HTTPResponse:
        """urllib3's own response for this answer, for a body to be decoded; it takes the connection over."""
        if self._decoding is None:
            self._decoding = HTTPResponse(
                body=self._fp, headers=HTTPHeaderDict(self.headers.items()),
                status=self.status, version=self.version, version_string=self.version_string,
                reason=self.reason, preload_content=False, decode_content=True, original_response=self._fp,
                pool=self._pool, connection=self._connection, retries=self.retries,
                request_method=self._method, request_url=self._url,
            )
            self._decoding.length_remaining = self.length_remaining
            self._connection = None  # urllib3's to hand back now
        return self._decoding

    def _fail(self) -> None:
        self.close()
        self.release_conn()

    def release_conn(self) -> None:
        if self._decoding is not None:
            self._decoding.release_conn()
        elif self._pool is not None and self._connection is not None:
            self._pool._put_conn(self._connection)
            self._connection = None

    def close(self) -> None:
        """Close the body, and the connection unless it went back to the pool at the body's end."""
        if self._decoding is not None:
            self._decoding.close()
            return
        self._fp.close()
        if self._connection is not None:
            self._connection.close()

    @property
    def connection(self) -> Any:
        """The connection the answer is read from, until it goes back to the pool."""
        return self._decoding.connection if self._decoding is not None else self._connection


def _declared_length(headers: AnswerHeaders, status: int, method: str | None, chunked: bool) -> int | None:
    """The body's length as urllib3 takes it from the head (`_init_length`): None when unknown or chunked."""
    length: int | None = None
    declared = headers.get("content-length")
    if declared is not None and not chunked:
        try:
            lengths = {int(value) for value in declared.split(",")}
        except ValueError:
            lengths = set()
        if len(lengths) > 1:
            raise LengthsDisagree(declared)
        if lengths:
            length = lengths.pop()
            if length < 0:
                length = None
    if status in (204, 304) or 100 <= status < 200 or method == "HEAD":
        length = 0
    return length


def _as_urllib3_error(exc: BaseException, pool: Any) -> BaseException:
    """The exception urllib3's response would raise for `exc` (its `_error_catcher`)."""
    if isinstance(exc, socket.timeout):
        return ReadTimeoutError(pool, None, "Read timed out.")
    if isinstance(exc, ssl.SSLError):
        return SSLError(exc)
    if isinstance(exc, (HTTPException, OSError)):  # IncompleteRead among them
        return ProtocolError(f"Connection broken: {exc!r}", exc)
    return exc
