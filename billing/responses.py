"""The relay's own billing answers: JSON in the order written, never kept by a shared cache."""

from __future__ import annotations

import json

from flask import Response


def private_json(status: int, body: dict) -> Response:
    """`body` as JSON with `Cache-Control: no-store`: the figures belong to one key."""
    return Response(json.dumps(body), status=status, mimetype="application/json", headers={"Cache-Control": "no-store"})
