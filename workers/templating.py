"""Jinja2 templates for action content, rendered in a sandbox.

Store owners write these templates, so they run in Jinja's SandboxedEnvironment (no
access to dunder attributes or internals, no imports) with two more limits: `*` and `**`
may not build huge strings, lists or numbers, and rendered output is capped. Every
failure becomes a clear ActionError naming the problem — a template never crashes the
worker.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from wooflow.workers.errors import ActionError

MAX_OUTPUT = 1_000_000  # characters
MAX_REPEAT = 100_000  # items/characters a `*` may produce
MAX_POWER = 10_000


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > 64 and abs(left) not in (0, 1):
                raise SecurityError("exponent too large")
            result = operator.pow(left, right)
            if isinstance(result, int) and result.bit_length() > MAX_POWER:
                raise SecurityError("number too large")
            return result
        if operator_name == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_REPEAT:
                    raise SecurityError("repetition too large")
            return operator.mul(left, right)
        return super().call_binop(context, operator_name, left, right)


@lru_cache(maxsize=2)
def _env(html: bool) -> SandboxedEnvironment:
    return _Sandbox(undefined=StrictUndefined, autoescape=html, trim_blocks=True, lstrip_blocks=True)


@lru_cache(maxsize=2048)
def _compile(source: str, html: bool) -> Any:
    return _env(html).from_string(source)


def render(source: str, context: Mapping[str, object], *, html: bool = False) -> str:
    if "{" not in source:  # no Jinja syntax: nothing to render
        return source
    try:
        out = _compile(source, html).render(**context)
    except SecurityError as exc:
        raise ActionError(f"template refused by the sandbox: {exc}") from exc
    except TemplateError as exc:
        raise ActionError(f"template error: {exc}") from exc
    except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError, IndexError, OverflowError,
            RecursionError, MemoryError) as exc:
        raise ActionError(f"template error: {type(exc).__name__}: {exc}") from exc
    if len(out) > MAX_OUTPUT:
        raise ActionError(f"template output too large ({len(out)} characters > {MAX_OUTPUT})")
    return out
