"""Template sandbox escape attempts (workers/templating.py): store owners write the Jinja2
of emails, SMS, notes, tasks and webhook payloads, so each attempt below — reaching Python
internals, format-string tricks, work or values out of proportion to the template, files —
must end in a clear ActionError and nothing else. A Hypothesis property composes templates
from hostile pieces (`FUZZ_TEMPLATES` examples; the suite runs a few hundred), and a real
worker shows a refused template failing its command only, the next one running."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.support import Discards, make_store, read_topic, wait_for
from wooflow.workers.errors import ActionError
from wooflow.workers.templating import MAX_OUTPUT, render
from wooflow.workers.testing import WorkerThread, command, produce

CONTEXT: dict[str, Any] = {
    "order": {"id": 7, "number": "1007", "total": "99.50", "note": "a\tb\nc",
              "billing": {"email": "ala@example.com", "first_name": "Ala"},
              "line_items": [{"name": "Kubek", "quantity": 2}, {"name": "Herbata", "quantity": 1}]},
    "customer": {"first_name": "Ala", "email": "ala@example.com"},
}
NEST_40 = "{% set a = [1] %}" + "{% set a = [a, a] %}" * 40
TWIN_40 = "{% set a = [1] %}{% set b = [1] %}" + "{% set a = [a, a] %}{% set b = [b, b] %}" * 40

# (template, what the refusal says)
ESCAPES = [
    # Python internals
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    ("{{ ().__class__.__base__.__subclasses__() }}", "unsafe"),
    ("{{ order.__class__ }}", "unsafe"),
    ("{{ order['__class__'] }}", "unsafe"),
    ("{{ order|attr('__class__') }}", "unsafe"),
    ("{{ cycler.__init__.__globals__ }}", "unsafe"),
    ("{{ joiner.__init__.__globals__['os'] }}", "unsafe"),
    ("{{ namespace.__init__.__globals__ }}", "unsafe"),
    ("{{ self._TemplateReference__context }}", "unsafe"),
    ("{{ range.__self__ }}", "no attribute"),
    ("{{ lipsum(100000) }}", "undefined"),
    ("{{ order.items.__func__ }}", "no attribute"),
    ("{% set l = [] %}{{ l.append(1) }}", "unsafe"),
    ("{{ order.update({'total': '0'}) }}", "unsafe"),
    ("{{ order.pop('id') }}", "unsafe"),
    # format-string tricks
    ("{{ '{0.__class__}'.format(order) }}", "unsafe"),
    ("{{ '{0.__init__.__globals__}'.format(cycler) }}", "unsafe"),
    ("{{ '{0[__class__]}'.format(order) }}", "unsafe"),
    ("{{ '{x.__class__}'.format_map({'x': order}) }}", "unsafe"),
    ("{{ '%999999999d' % 1 }}", "format width"),
    ("{{ '%(x)999999999s' % {'x': 1} }}", "format width"),
    ("{{ '%*d' % (999999999, 1) }}", "format width"),
    ("{{ '%.999999999f'|format(1.5) }}", "format width"),
    ("{{ '{:>999999999}'.format(1) }}", "format width"),
    ("{{ '{:{}}'.format(1, 999999999) }}", "format width"),
    ("{{ '{:.{p}f}'.format(1.5, p=999999999) }}", "format width"),
    # values out of proportion to the template
    ("{{ 'x' * 100000000 }}", "repetition too large"),
    ("{{ [1] * 100000000 }}", "repetition too large"),
    ("{{ 10 ** 100000 }}", "exponent too large"),
    ("{% set x = 2**64 %}" + "{% set x = x*x %}" * 20 + "{{ x }}", "number too large"),
    ("{% set a = 'x'*50000 %}" + "{% set a = a + a %}" * 8 + "{{ a|length }}", "'+' would make"),
    ("{% set a = 'x'*50000 %}" + "{% set a = a ~ a %}" * 8 + "{{ a|length }}", "'~' would make"),
    (NEST_40 + "{{ a }}", "too large"),
    (TWIN_40 + "{{ a == b }}", "too large"),
    ("{% set n = namespace(a=1) %}" + "{% set n = namespace(a=n, b=n) %}" * 40 + "{{ n }}", "too large"),
    ("{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
     "too large"),
    ("{{ 'a'.ljust(10**9) }}", "ljust() would make"),
    ("{{ 'a'.zfill(10**9) }}", "zfill() would make"),
    ("{{ 'a\tb'.expandtabs(10**9) }}", "expandtabs() would make"),
    ("{{ ('a'*100000).replace('a', 'a'*100000) }}", "replace() would make"),
    ("{{ ('a'*100000)|replace('a', 'a'*100000) }}", "replace() would make"),
    ("{{ ('a'*100000).translate({97: 'x'*100000}) }}", "translate() would make"),
    ("{{ ('y'*100000).join(range(100000)|map('string')) }}", "join() would make"),
    ("{{ range(100000)|join('x'*100000) }}", "join() would make"),
    ("{{ range(100000)|map('string')|join('y'*20) }}", "join() would make"),
    ("{{ 'x'|center(1000000000) }}", "center() would make"),
    ("{{ ('a\n'*50000)|indent('x'*100000) }}", "indent() would make"),
    ("{{ ('ab '*30000)|wordwrap(1, wrapstring='y'*100000) }}", "wordwrap() would make"),
    ("{{ range(10)|batch(1000000000)|list }}", "batch() would make"),
    ("{{ range(10)|slice(1000000000)|list }}", "slice() would make"),
    ("{{ order|tojson(100000) }}", "tojson() would make"),
    # work out of proportion to the template
    ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "too long"),
    ("{% for a in range(100000) %}{% for b in 'x'*100000 %}{% endfor %}{% endfor %}", "too long"),
    ("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}", "took longer"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
    ("{% for x in range(10) recursive %}{{ loop(range(100000)) }}{% endfor %}", "RecursionError"),
    ("{% for i in range(100000) %}{{ 'z'*100 }}{% endfor %}", "output too large"),
    ("{% for i in range(100000) %}" + "x" * 1000 + "{% endfor %}", "output too large"),
    # files
    ("{% include '/etc/passwd' %}", "no loader"),
    ("{% import 'os' as os %}", "no loader"),
    ("{% from '/etc/passwd' import x %}", "no loader"),
    ("{% extends '../../../../etc/passwd' %}", "no loader"),
    # plain mistakes
    ("{{ x }}", "'x' is undefined"),
    ("{{ 1/0 }}", "ZeroDivisionError"),
    ("{% for %}", "template error"),
    ("{{ order.nope.deeper }}", "no attribute 'nope'"),
]


@pytest.mark.unit
def test_every_escape_attempt_is_refused_with_a_clear_error() -> None:
    wrong = {}
    for source, reason in ESCAPES:
        try:
            out = render(source, CONTEXT)
        except ActionError as exc:
            if "template" not in str(exc) or reason not in str(exc):
                wrong[source[:80]] = f"refused, but: {exc}"
        else:
            wrong[source[:80]] = f"rendered {len(out)} characters"
    assert not wrong, wrong


@pytest.mark.unit
@pytest.mark.parametrize("source, expected", [
    ("Hi {{ customer.first_name }}, order {{ order.number }} ({{ order.total }})", "Hi Ala, order 1007 (99.50)"),
    ("{% for i in order.line_items %}{{ i.quantity }} x {{ i.name }}{% if not loop.last %}, {% endif %}{% endfor %}",
     "2 x Kubek, 1 x Herbata"),
    ("{{ 'a' ~ order.number ~ 'b' }}", "a1007b"),
    ("{{ '%05.2f'|format(12.5) }} {{ '{:>6}'.format(order.number) }}", "12.50   1007"),
    ("{% set ns = namespace(n=0) %}{% for i in range(10) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}", "45"),
    ("{{ [1, 2, 3]|join(', ') }} {{ {'a': 1}|tojson }} {{ (1, 2)|list }}", '1, 2, 3 {"a": 1} [1, 2]'),
    ("{% for k, v in order.billing|dictsort %}{{ k }}={{ v }};{% endfor %}", "email=ala@example.com;first_name=Ala;"),
    ("{% macro m(n) %}{% if n %}{{ n }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(5) }}", "54321"),
    ("{% for x in [[1, [2]], [3]] recursive %}{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}"
     "{% endfor %}", "123"),
    ("{{ order.note|replace('\n', '<br>')|replace('\t', ' ') }}", "a b<br>c"),
    ("{{ ('x' * 5000)|length }} {{ 'ab'|center(6) }}|{{ order.note.expandtabs(4) }}", "5000   ab  |a   b\nc"),
])
def test_ordinary_templates_still_render(source: str, expected: str) -> None:
    assert render(source, CONTEXT) == expected


# --- fuzzing ---------------------------------------------------------------------------------

TEMPLATES = int(os.environ.get("FUZZ_TEMPLATES", "200"))
ATOMS = ["order", "order.number", "order.line_items", "customer.first_name", "order.note", "'x'", "'%s'", "'{}'",
         "'{0}'", "'{:>9}'", "1", "7", "100000", "999999999", "2**64", "[1, 2]", "{'a': 1}", "range(5)",
         "range(100000)", "namespace(a=1)", "cycler(1, 2)", "''", "'a' * 100000", "-1", "0.5", "none", "true"]
FILTERS = ["length", "upper", "list", "string", "join(', ')", "join('x' * 1000)", "replace('a', 'bb')",
           "replace('', 'x' * 1000)", "center(80)", "center(999999999)", "indent(4)", "wordwrap(5)", "tojson",
           "tojson(4)", "batch(3)", "batch(999999999)", "slice(2)", "format(1)", "first", "last", "sum",
           "sort", "unique", "dictsort", "items", "reverse", "truncate(3)", "urlencode", "wordcount", "int",
           "default('d')", "map('string')", "select", "attr('__class__')", "attr('format')", "pprint", "trim"]
METHODS = [".format(1)", ".format(order)", ".__class__", ".replace('x', 'yy')", ".join(['a', 'b'])",
           ".ljust(999999999)", ".center(20)", ".split()", ".items()", ".keys()", ".get('id')", ".append(1)",
           ".format_map({})", ".expandtabs(100000)", ".mro()", "[0]", "['id']", "[1:3]"]
OPERATORS = ["+", "-", "*", "**", "%", "~", "//", "/", "==", "in", "and", "or"]


@st.composite
def expressions(draw: Any, depth: int = 0) -> str:
    expr = draw(st.sampled_from(ATOMS))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["filter", "method", "operator", "wrap"] if depth < 2 else ["filter", "method"]))
        if kind == "filter":
            expr = f"({expr})|{draw(st.sampled_from(FILTERS))}"
        elif kind == "method":
            expr = f"({expr}){draw(st.sampled_from(METHODS))}"
        elif kind == "operator":
            expr = f"({expr}) {draw(st.sampled_from(OPERATORS))} ({draw(expressions(depth + 1))})"
        else:
            expr = f"[{expr}, {expr}]"
    return expr


@st.composite
def templates(draw: Any) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["print", "print", "set", "loop", "macro", "text"]))
        e = draw(expressions())
        if kind == "print":
            parts.append(f"{{{{ {e} }}}}")
        elif kind == "set":
            parts.append(f"{{% set v = {e} %}}{{{{ v }}}}")
        elif kind == "loop":
            parts.append(f"{{% for i in {e} %}}{{{{ i }}}}{{% for j in {draw(expressions())} %}}.{{% endfor %}}"
                         "{% endfor %}")
        elif kind == "macro":
            parts.append(f"{{% macro m(n) %}}{{% if n %}}{{{{ m(n - 1) }}}}{{{{ m(n - 1) }}}}{{% endif %}}{{{{ {e} }}}}"
                         f"{{% endmacro %}}{{{{ m({draw(st.integers(0, 10))}) }}}}")  # deeper: ESCAPES' deadline case
        else:
            parts.append(draw(st.text(max_size=20)).replace("{", "(").replace("}", ")"))
    return "".join(parts)


@pytest.mark.unit
def test_a_template_starved_of_cpu_is_not_refused_as_too_slow() -> None:
    """The deadline is the rendering thread's CPU time: a render that waits (here a value
    whose text takes 2.5 s of sleep — as a thread waiting for a core on a loaded machine)
    is no hostile template."""
    import time

    class Slow:
        waited = False

        def __str__(self) -> str:
            if not self.waited:
                self.waited = True
                time.sleep(2.5)
            return "ready"

    slow = Slow()
    assert render("{{ slow }}, {{ slow }}", {"slow": slow}) == "ready, ready"


@pytest.mark.unit
@pytest.mark.filterwarnings("ignore::SyntaxWarning")  # Python's compiler on `1[0]` in a template's code
def test_composed_hostile_templates_render_or_fail_clearly() -> None:
    """Any composition renders to at most MAX_OUTPUT characters or fails with ActionError:
    no other exception, no crash."""
    outcomes = Discards("hostile templates", max_share=0.9)  # "dropped" = refused; most are, not all

    @given(templates())
    @hsettings(max_examples=TEMPLATES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(source: str) -> None:
        for html in (False, True):
            try:
                out = render(source, CONTEXT, html=html)
            except ActionError:
                outcomes.drop()
                continue
            assert len(out) <= MAX_OUTPUT
            outcomes.keep()

    run()
    outcomes.check()
    print(f"\nhostile templates: {outcomes.kept + outcomes.dropped} renders, {outcomes.dropped} refused or failed")


@pytest.mark.integration
def test_a_refused_template_fails_its_command_and_the_worker_goes_on(settings, engine) -> None:  # type: ignore[no-untyped-def]
    store = make_store(engine)
    bombs = ["{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
             "{{ ('a'*100000)|replace('a', 'a'*100000) }}", "{{ ''.__class__.__mro__ }}", "{% include 'x' %}"]
    cmds = [command(store_id=store.id, action_type="create_admin_task", customer_key="c1", context=CONTEXT,
                    params={"title": bomb}) for bomb in bombs]
    fine = command(store_id=store.id, action_type="create_admin_task", customer_key="c1", context=CONTEXT,
                   params={"title": "Call {{ customer.first_name }} about {{ order.number }}"})
    produce(settings, [*cmds, fine])  # one key: the fine command runs after every bomb
    keys = {c["idempotency_key"] for c in [*cmds, fine]}
    with WorkerThread(settings):
        logs = wait_for(lambda: (f := {r["idempotency_key"]: r for _, r in read_topic(settings, "automation.logs")})
                        and keys <= set(f) and f, 60, 0.3, "a log for every command")
    for cmd in cmds:
        rec = logs[cmd["idempotency_key"]]
        assert rec["status"] == "failed" and "template" in rec["message"], rec
    assert logs[fine["idempotency_key"]]["status"] == "succeeded"
    from sqlalchemy import text

    with engine.connect() as conn:
        titles = conn.execute(text("SELECT title FROM tasks WHERE store_id = :s"), {"s": store.id}).scalars().all()
    assert titles == ["Call Ala about 1007"]
