"""The transparent relay: routes, header rules, upstream pools and streaming."""

from .views import VERSION, bp, register_routes

__all__ = ["VERSION", "bp", "register_routes"]
