"""The page at `GET /`: what this relay is, and what to paste into a client to use it.

A browser gets a small self-contained HTML page; `Accept: application/json` gets
the same facts as JSON. Nothing secret is shown: whether a relay key is needed,
never a key, and route prefixes, never upstream URLs (they may carry credentials).
"""

from .views import bp

__all__ = ["bp"]
