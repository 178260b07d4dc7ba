"""Balance and billing: /pro/balance and /openai/billing/credit_grants (issue 4)."""

from flask import Blueprint

bp = Blueprint("billing", __name__)
