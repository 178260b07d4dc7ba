"""Balance and billing: `/pro/balance` and `/openai/billing/credit_grants` (issue 4).

`/openai/billing/credit_grants` is a rule without variables, so Flask prefers it to
the relay's `/openai/<path:rest>`: only a GET of that exact path is served here,
every other path and method under `/openai/` still goes upstream untouched.
"""

from flask import Blueprint

from .balance import pro_balance
from .credit_grants import openai_credit_grants

bp = Blueprint("billing", __name__)
bp.add_url_rule("/pro/balance", view_func=pro_balance, methods=["GET"])
bp.add_url_rule(
    "/openai/billing/credit_grants",
    view_func=openai_credit_grants,
    methods=["GET"],
    provide_automatic_options=False,  # an OPTIONS that is not a CORS preflight goes upstream like any other
)
