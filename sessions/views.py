"""The session endpoints: `POST /pro/chat/completions`, `GET` and `DELETE /pro/sessions/<sessionId>`.

Each checks what needs no body first (the session id, the relay key, the rate limit), so a
refused client gets its answer at once, without the relay waiting for a body it may never send.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response
from flask.blueprints import BlueprintSetupState

from proxy.settings import Settings, current_settings

from . import validation
from .chat import session_store, take_turn
from .credentials import admit, admit_body, credentials, owner
from .open import open_store
from .replies import Failure, failure, success
from .store import MemoryStore, SessionBusy, StoreUnavailable

log = logging.getLogger("relay.sessions")

bp = Blueprint("sessions", __name__, url_prefix="/pro")


@bp.record_once
def open_session_store(state: BlueprintSetupState) -> None:
    settings: Settings = state.app.config["SETTINGS"]
    store = open_store(settings)
    state.app.extensions["sessions"] = store
    log.info("session store: %s, sessions live %s s after their last turn", store.name, settings.session_ttl)
    if isinstance(store, MemoryStore) and _workers(settings) > 1:
        log.warning(
            "SESSION_STORE is memory but WEB_CONCURRENCY=%s: sessions are per process, so a conversation "
            "loses its history whenever a turn reaches another worker. Run one worker (it holds thousands "
            "of connections) or set REDIS_URL to share sessions between workers.",
            settings.get("WEB_CONCURRENCY"),
        )


def _workers(settings: Settings) -> int:
    try:
        return int(settings.get("WEB_CONCURRENCY", "1") or 1)
    except ValueError:
        return 1


@bp.post("/chat/completions")
def chat_completions() -> Response:
    settings = current_settings()
    grant = admit()
    body = validation.json_body(settings, required=True)
    creds = credentials(admit_body(grant, body), body)
    return take_turn(validation.turn(body, settings), creds)


@bp.get("/sessions/<session_id>")
def show_session(session_id: str) -> Response:
    sid = validation.session_id(session_id)
    session = session_store().read((owner(admit(), _optional_body), sid))
    if session is None:
        raise Failure(404, _not_found(sid))
    return success(session.transcript())


@bp.delete("/sessions/<session_id>")
def forget_session(session_id: str) -> Response:
    sid = validation.session_id(session_id)
    with session_store().lock((owner(admit(), _optional_body), sid)) as held:
        if not held.delete():
            raise Failure(404, _not_found(sid))
    return success(None, "deleted")


def _optional_body() -> dict:
    return validation.json_body(current_settings(), required=False)


def _not_found(sid: str) -> str:
    return f"No session {sid!r} for this key: it never started, expired or was deleted."


@bp.errorhandler(Failure)
def answer_failure(exc: Failure) -> Response:
    return failure(exc.status, exc.message, exc.headers)


@bp.errorhandler(SessionBusy)
def answer_busy(exc: SessionBusy) -> Response:
    wait = current_settings().session_lock_wait
    message = (f"Another turn on this session is still running after {wait:g} s; "
               "send this message again once it has finished.")
    return failure(409, message)


@bp.errorhandler(StoreUnavailable)
def answer_store_down(exc: StoreUnavailable) -> Response:
    log.warning("session store unavailable: %s", exc)
    return failure(503, "The session store is unavailable, so the conversation cannot be read or saved now; "
                        "try again shortly. (The relay's other routes still work.)")
