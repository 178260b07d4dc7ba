"""Session chat: /pro/chat/completions with server-side history (issue 3)."""

from flask import Blueprint

bp = Blueprint("sessions", __name__)
