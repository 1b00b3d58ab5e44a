"""Jinja2 templates for action content, rendered in a sandbox.

Store owners write these templates (through the rules API), so they run in Jinja's
ImmutableSandboxedEnvironment — no dunder attributes or internals, no imports or includes
(there is no loader), no changing lists and dicts in place — with bounds on what a short
template can make the worker do:

- **time**: every loop iteration, call, filter, operator and printed value spends a step
  of a budget (MAX_STEPS) and looks at a deadline (RENDER_TIMEOUT_S of the rendering
  thread's CPU time: on a machine at a load average of 40 a one-line email waited more than
  2 s of wall time for a core, and was dead-lettered as a hostile template);
- **size**: no value a template builds may hold more than MAX_SIZE characters or items,
  shared references counted each time they occur (so `[a, a]` nested twenty times does not
  slip through as twenty small lists); operations whose result can outgrow their inputs —
  `*`, `**`, `+`, `~`, `%` and `format` widths, `replace`, `join`, `center` and friends,
  `expandtabs`, `translate`, `indent`, `wordwrap`, `batch`, `slice`, `tojson` — are refused
  before they run when their result would be too large; the output is capped too
  (MAX_OUTPUT, counted as it is produced: a loop's literal text included).

Every refusal and every template failure is an ActionError naming the problem: a template
never crashes the worker, and never holds it for more than the deadline.
"""

from __future__ import annotations

import functools
import operator
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes, pass_context
from jinja2.runtime import Context, LoopContext, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer

from wooflow.workers.errors import ActionError

MAX_OUTPUT = 1_000_000  # characters rendered
MAX_SIZE = 1_000_000  # characters or items in one value a template builds
MAX_REPEAT = 100_000  # items/characters a `*` may produce
MAX_POWER = 10_000  # bits of an integer
MAX_WIDTH = 10_000  # a width or precision in a format
MAX_STEPS = 1_000_000  # loop iterations, calls, filters, operators, printed values
MAX_DEPTH = 100  # lists in lists in lists...
RENDER_TIMEOUT_S = 2.0


class _Budget:
    __slots__ = ("deadline", "output", "steps")

    def __init__(self) -> None:
        self.steps = MAX_STEPS
        self.output = 0
        self.deadline = time.thread_time() + RENDER_TIMEOUT_S


_budget: ContextVar[_Budget | None] = ContextVar("wooflow_template_budget", default=None)


def _spend(output: int = 0) -> None:
    budget = _budget.get()
    if budget is None:  # Jinja folding a constant while compiling: no render is running
        return
    budget.steps -= 1
    budget.output += output
    if budget.steps < 0:
        raise SecurityError(f"template runs too long (more than {MAX_STEPS} steps)")
    if budget.output > MAX_OUTPUT:
        raise SecurityError(f"template output too large (more than {MAX_OUTPUT} characters)")
    if time.thread_time() > budget.deadline:
        raise SecurityError(f"template took longer than {RENDER_TIMEOUT_S:g} s")


def _size(value: object, limit: int = MAX_SIZE) -> int:
    """Characters and items in `value`, nested containers expanded (one list held twice
    counts twice, but is looked at once); counting stops past `limit`."""
    memo: dict[int, int] = {}  # id → size, for containers reachable from `value` (alive meanwhile)

    def size(v: object, depth: int) -> int:
        if isinstance(v, (str, bytes, bytearray, range)):
            return len(v)
        if isinstance(v, Namespace):  # namespace(): its attributes live in a private dict
            try:
                v = object.__getattribute__(v, "_Namespace__attrs")
            except AttributeError:
                return 1
        if not isinstance(v, (list, tuple, set, frozenset, dict)):
            return 1
        if id(v) in memo:
            return memo[id(v)]
        if depth > MAX_DEPTH:
            raise SecurityError(f"value nested more than {MAX_DEPTH} levels deep")
        total = 1 + len(v)
        if total <= limit:
            for child in ([*v.keys(), *v.values()] if isinstance(v, dict) else v):
                total += size(child, depth + 1)
                if total > limit:
                    break
        memo[id(v)] = total
        return total

    return size(value, 0)


def _check_size(value: object, what: str) -> None:
    if isinstance(value, (str, bytes, list, tuple, set, frozenset, dict, Namespace)) and _size(value) > MAX_SIZE:
        raise SecurityError(f"{what} too large (more than {MAX_SIZE} characters or items)")


def _ints(args: Iterable[object]) -> Iterator[int]:
    return (a for a in args if isinstance(a, int))


def _check_percent(fmt: str, args: object) -> None:
    """`%`-formatting: a width or precision (`%099999999d`, `%*d`) must stay small."""
    values = args.values() if isinstance(args, Mapping) else args if isinstance(args, tuple) else (args,)
    for m in re.finditer(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?", fmt):
        for part in m.groups():
            if part == "*" and any(abs(n) > MAX_WIDTH for n in _ints(values)):
                raise SecurityError(f"format width or precision above {MAX_WIDTH}")
            if part and part != "*" and int(part) > MAX_WIDTH:
                raise SecurityError(f"format width or precision above {MAX_WIDTH}")


def _check_format(fmt: str, args: tuple[object, ...], kwargs: Mapping[str, object]) -> None:
    """`str.format`: a width or precision (`{:>99999999}`, `{:{}}`) must stay small."""
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if not spec:
            continue
        if any(int(d) > MAX_WIDTH for d in re.findall(r"\d+", spec)) or (
                "{" in spec and any(abs(n) > MAX_WIDTH for n in _ints([*args, *kwargs.values()]))):
            raise SecurityError(f"format width or precision above {MAX_WIDTH}")


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _replaced(value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    old, new, count = _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"), _arg(args, kwargs, 2, "count", -1)
    parts = (value, old, new)
    if not all(isinstance(v, str) for v in parts) and not all(isinstance(v, bytes) for v in parts):
        return 0
    n = value.count(old) if old else len(value) + 1
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(value) + n * max(0, len(new) - len(old))


def _joined(items: Any, separator: Any) -> int:
    n = len(items) if hasattr(items, "__len__") else MAX_SIZE  # an iterator of unknown length: assume the worst
    return _size(items) + (len(separator) if isinstance(separator, (str, bytes)) else 0) * n


def _widened(value: Any, width: Any) -> int:
    return max(len(value) if isinstance(value, (str, bytes)) else 0, width if isinstance(width, int) else 0)


def _tabs(value: str | bytes) -> int:
    return value.count("\t") if isinstance(value, str) else value.count(b"\t")


def _lines(value: Any) -> int:
    return str(value).count("\n") + 1


# How large a call's result may get, for the calls whose result can outgrow their inputs:
# str (and bytes) methods by name, called on `value` ...
_METHOD_GROWTH: dict[str, Callable[[Any, tuple[Any, ...], Mapping[str, Any]], int]] = {
    "replace": _replaced,
    "join": lambda value, args, kwargs: _joined(_arg(args, kwargs, 0, "iterable", ()), value),
    "center": lambda value, args, kwargs: _widened(value, _arg(args, kwargs, 0, "width")),
    "ljust": lambda value, args, kwargs: _widened(value, _arg(args, kwargs, 0, "width")),
    "rjust": lambda value, args, kwargs: _widened(value, _arg(args, kwargs, 0, "width")),
    "zfill": lambda value, args, kwargs: _widened(value, _arg(args, kwargs, 0, "width")),
    "expandtabs": lambda value, args, kwargs: len(value) + _tabs(value) * max(
        0, int(_arg(args, kwargs, 0, "tabsize", 8))),
    "translate": lambda value, args, kwargs: len(value) * max(
        [1, *(len(v) for v in dict(_arg(args, kwargs, 0, "table") or {}).values() if isinstance(v, (str, bytes)))]),
}
# ... and filters by name, applied to `value`.
_FILTER_GROWTH: dict[str, Callable[[Any, tuple[Any, ...], Mapping[str, Any]], int]] = {
    "replace": _replaced,
    "join": lambda value, args, kwargs: _joined(value, _arg(args, kwargs, 0, "d", "")),
    "center": lambda value, args, kwargs: _widened(str(value), _arg(args, kwargs, 0, "width", 80)),
    "indent": lambda value, args, kwargs: len(str(value)) + _lines(value) * (
        lambda w: w if isinstance(w, int) else len(str(w)))(_arg(args, kwargs, 0, "width", 4)),
    "wordwrap": lambda value, args, kwargs: len(str(value)) + (
        len(str(value)) // max(1, int(_arg(args, kwargs, 0, "width", 79))) + _lines(value) + 1) * len(
        str(_arg(args, kwargs, 2, "wrapstring", "\n") or "\n")),
    "batch": lambda value, args, kwargs: _size(value) + max(0, int(_arg(args, kwargs, 0, "linecount", 0))),
    "slice": lambda value, args, kwargs: _size(value) + max(0, int(_arg(args, kwargs, 0, "slices", 0))),
    "tojson": lambda value, args, kwargs: _size(value) * (1 + max(0, int(_arg(args, kwargs, 0, "indent") or 0))),
    "urlize": lambda value, args, kwargs: len(str(value)) * (
        1 + sum(len(a) for a in [*args, *kwargs.values()] if isinstance(a, str))),
}


def _check_growth(name: str, table: Mapping[str, Callable[..., int]], value: Any, args: tuple[Any, ...],
                  kwargs: Mapping[str, Any]) -> None:
    grow = table.get(name)
    if grow is None:
        return
    try:
        size = grow(value, args, kwargs)
    except (TypeError, ValueError, OverflowError):  # arguments the call itself will refuse, with its own message
        return
    if size > MAX_SIZE:
        raise SecurityError(f"{name}() would make a value too large (more than {MAX_SIZE} characters or items)")


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter with its step, growth check and result size check."""
    skip = 1 if hasattr(func, "jinja_pass_arg") else 0  # Jinja hands such filters its context first

    @functools.wraps(func)  # keeps `jinja_pass_arg`: Jinja still passes the context
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _spend()
        if len(args) > skip:
            value, rest = args[skip], args[skip + 1:]
            if name == "format" and isinstance(value, str):
                _check_percent(value, rest or tuple(kwargs.values()))
            _check_growth(name, _FILTER_GROWTH, value, rest, kwargs)
        result = func(*args, **kwargs)
        _check_size(result, f"the result of |{name}")
        return result

    return guarded


def _steps(iterable: Iterable[Any], output: int) -> Iterator[Any]:
    for item in iterable:
        _spend(output)
        yield item


@pass_context
def _loop(context: Context, iterable: Iterable[Any], output: int) -> Iterator[Any]:
    """Every `{% for %}` iterates through this: a step per item, and the loop body's literal
    text counted towards the output."""
    return _steps(iterable, output)


@pass_context
def _sized(context: Context, value: Any) -> Any:
    """Every list, tuple and dict literal goes through this."""
    _spend()
    _check_size(value, "a list or dict built by the template")
    return value


@pass_context
def _concat(context: Context, parts: list[Any]) -> str:
    """The `~` operator."""
    _spend()
    if sum(_size(p) for p in parts) > MAX_SIZE:
        raise SecurityError(f"'~' would make a string too large (more than {MAX_SIZE} characters)")
    return markup_join(parts) if context.eval_ctx.autoescape else str_join(parts)


class _Bounds(NodeTransformer):
    """Rewrites a parsed template so that loops, literals and `~` go through the guards above."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        text = sum(len(d.data) for part in node.body for d in part.find_all(nodes.TemplateData))
        node.iter = nodes.Filter(node.iter, "_wooflow_loop", [nodes.Const(text)], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), "_wooflow_concat", [], [], None, None,
                            lineno=node.lineno)

    def _sized(self, node: nodes.Node) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, "_wooflow_sized", [], [], None, None, lineno=node.lineno)

    visit_List = visit_Dict = _sized

    def visit_Tuple(self, node: nodes.Tuple) -> nodes.Node:
        return self._sized(node) if node.ctx == "load" else self.generic_visit(node)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._printed, **options)
        del self.globals["lipsum"]  # placeholder text, n paragraphs of it at a call: nothing a message needs
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.filters.update(_wooflow_loop=_loop, _wooflow_sized=_sized, _wooflow_concat=_concat)

    @staticmethod
    def _printed(value: Any) -> Any:
        """Every `{{ value }}`."""
        _spend(len(value) if isinstance(value, str) else _size(value))
        return value

    def call_binop(self, context: Context, operator_name: str, left: Any, right: Any) -> Any:
        _spend()
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > 64 and abs(left) not in (0, 1):
                raise SecurityError("exponent too large")
            result = operator.pow(left, right)
            if isinstance(result, int) and result.bit_length() > MAX_POWER:
                raise SecurityError("number too large")
            return result
        if operator_name == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and _size(seq) * n > MAX_REPEAT:
                    raise SecurityError("repetition too large")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_POWER:
                raise SecurityError("number too large")
        elif operator_name == "+":
            if not isinstance(left, (int, float)) and _size(left) + _size(right) > MAX_SIZE:
                raise SecurityError(f"'+' would make a value too large (more than {MAX_SIZE} characters or items)")
        elif operator_name == "%" and isinstance(left, str):
            _check_percent(left, right)
        return super().call_binop(context, operator_name, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        if isinstance(__obj, LoopContext) and args:  # `loop(children)` in a recursive loop
            args = (_steps(args[0], 0), *args[1:])
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(method, "__self__", None)
        if isinstance(owner, (str, bytes)):
            name = getattr(method, "__name__", "")
            if name in ("format", "format_map") and isinstance(owner, str):
                _check_format(owner, args, args[0] if name == "format_map" and args else kwargs)
            _check_growth(name, _METHOD_GROWTH, owner, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        _check_size(result, "a call's result")
        return result


@functools.lru_cache(maxsize=2)
def _env(html: bool) -> _Sandbox:
    return _Sandbox(undefined=StrictUndefined, autoescape=html, trim_blocks=True, lstrip_blocks=True)


@functools.lru_cache(maxsize=2048)
def _compile(source: str, html: bool) -> Any:
    env = _env(html)
    tree = _Bounds().visit(env.parse(source))
    tree.set_environment(env)
    return env.from_string(tree)


def render(source: str, context: Mapping[str, object], *, html: bool = False) -> str:
    if "{" not in source:  # no Jinja syntax: nothing to render
        return source
    token = _budget.set(_Budget())
    try:
        out = _compile(source, html).render(**context)
    except SecurityError as exc:
        raise ActionError(f"template refused by the sandbox: {exc}") from exc
    except TemplateError as exc:
        raise ActionError(f"template error: {exc}") from exc
    except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError, IndexError, OverflowError,
            RecursionError, MemoryError) as exc:
        raise ActionError(f"template error: {type(exc).__name__}: {exc}") from exc
    finally:
        _budget.reset(token)
    if len(out) > MAX_OUTPUT:
        raise ActionError(f"template output too large ({len(out)} characters > {MAX_OUTPUT})")
    return out
