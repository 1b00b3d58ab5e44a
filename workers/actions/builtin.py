"""Registers the built-in actions."""

from wooflow.workers.actions.order_notes import AddOrderNote
from wooflow.workers.registry import register

for handler in (AddOrderNote(),):
    register(handler)
