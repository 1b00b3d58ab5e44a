"""Avro schema-resolution compatibility: can a reader schema read what a writer wrote?

Implements the resolution rules of the Avro specification for the types our schemas
use. `check_backward(name)` asserts the rule the product promises: the newest version
of a schema reads data written by every older one.
"""

from __future__ import annotations

from typing import Any

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


def _kind(s: Any) -> str:
    if isinstance(s, list):
        return "union"
    if isinstance(s, str):
        return s
    return s["type"] if isinstance(s["type"], str) else _kind(s["type"])


def _resolve_names(s: Any, names: dict[str, Any]) -> Any:
    if isinstance(s, str) and s in names:
        return names[s]
    return s


def _collect(s: Any, names: dict[str, Any]) -> None:
    if isinstance(s, list):
        for b in s:
            _collect(b, names)
    elif isinstance(s, dict):
        if s.get("type") in ("record", "enum", "fixed"):
            ns = s.get("namespace")
            names[s["name"]] = s
            if ns:
                names[f"{ns}.{s['name']}"] = s
        for key in ("fields",):
            for f in s.get(key, []):
                _collect(f["type"], names)
        for key in ("items", "values"):
            if key in s:
                _collect(s[key], names)
        if isinstance(s.get("type"), (dict, list)):
            _collect(s["type"], names)


def problems(reader: Any, writer: Any) -> list[str]:
    rn: dict[str, Any] = {}
    wn: dict[str, Any] = {}
    _collect(reader, rn)
    _collect(writer, wn)
    return _check(reader, writer, rn, wn, "$")


def _check(r: Any, w: Any, rn: dict, wn: dict, path: str) -> list[str]:
    r = _resolve_names(r, rn)
    w = _resolve_names(w, wn)
    rk, wk = _kind(r), _kind(w)
    if wk == "union":
        out: list[str] = []
        for i, branch in enumerate(w):
            out += _check(r, branch, rn, wn, f"{path}|{i}")
        return out
    if rk == "union":
        if any(not _check(branch, w, rn, wn, path) for branch in r):
            return []
        return [f"{path}: writer type {wk} matches no branch of the reader union"]
    if isinstance(r, dict) and isinstance(r.get("type"), (dict, list)):
        r = r["type"]
    if isinstance(w, dict) and isinstance(w.get("type"), (dict, list)):
        w = w["type"]
    if rk != wk and rk not in _PROMOTIONS.get(wk, set()):
        return [f"{path}: writer {wk} cannot be read as {rk}"]
    if rk == "record":
        out = []
        wfields = {f["name"]: f for f in w["fields"]}
        for f in r["fields"]:
            names = [f["name"], *f.get("aliases", [])]
            match = next((wfields[n] for n in names if n in wfields), None)
            if match is None:
                if "default" not in f:
                    out.append(f"{path}.{f['name']}: new field without a default")
            else:
                out += _check(f["type"], match["type"], rn, wn, f"{path}.{f['name']}")
        return out
    if rk == "enum":
        missing = set(w["symbols"]) - set(r["symbols"])
        if missing and "default" not in r:
            return [f"{path}: enum symbols {sorted(missing)} unknown to the reader and no default"]
        return []
    if rk == "array":
        return _check(r["items"], w["items"], rn, wn, f"{path}[]")
    if rk == "map":
        return _check(r["values"], w["values"], rn, wn, f"{path}{{}}")
    if rk == "fixed" and r.get("size") != w.get("size"):
        return [f"{path}: fixed size changed"]
    if isinstance(r, dict) and isinstance(w, dict) and r.get("logicalType") != w.get("logicalType"):
        return [f"{path}: logical type changed from {w.get('logicalType')} to {r.get('logicalType')}"]
    if isinstance(r, dict) and r.get("logicalType") == "decimal" and \
            (r.get("precision"), r.get("scale")) != (w.get("precision"), w.get("scale")):
        return [f"{path}: decimal precision/scale changed"]
    return []


def check_backward(name: str) -> list[str]:
    """Problems preventing the newest version of `name` from reading any older version."""
    from wooflow.schemas.registry import catalog

    versions = catalog().versions(name)
    newest = versions[-1]
    out: list[str] = []
    for old in versions[:-1]:
        out += [f"v{newest.version} reading v{old.version}: {p}" for p in problems(newest.raw, old.raw)]
    return out
