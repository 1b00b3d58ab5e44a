"""How an action tells the executor what went wrong."""


class ActionError(Exception):
    """Permanent: retrying will not help (bad params, 4xx from the store, template error)."""


class TransientError(Exception):
    """Worth retrying with backoff (timeouts, 5xx, 429, connection errors)."""
