"""Jinja2 templates for action content, rendered in a sandbox.

Store owners write these templates, so they run in Jinja's SandboxedEnvironment (no
attribute access to internals, no imports); errors become clear ActionErrors, never a
crash of the worker.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from wooflow.workers.errors import ActionError


@lru_cache(maxsize=1)
def _env() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)


@lru_cache(maxsize=1)
def _html_env() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=True, trim_blocks=True, lstrip_blocks=True)


@lru_cache(maxsize=2048)
def _compile(source: str, html: bool) -> Any:
    return (_html_env() if html else _env()).from_string(source)


def render(source: str, context: dict[str, Any], *, html: bool = False) -> str:
    try:
        return _compile(source, html).render(**context)
    except SecurityError as exc:
        raise ActionError(f"template refused by the sandbox: {exc}") from exc
    except TemplateError as exc:
        raise ActionError(f"template error: {exc}") from exc
    except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError, IndexError) as exc:
        raise ActionError(f"template error: {type(exc).__name__}: {exc}") from exc
