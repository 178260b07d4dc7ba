"""Session chat: /pro/chat/completions with server-side history in a TTL store (memory or Redis)."""

from .views import bp

__all__ = ["bp"]
