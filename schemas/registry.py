"""The bundled Avro schemas: every version of every event type, loaded once.

Layout: `avro/<Name>/v<N>.avsc`. The highest version is what this build writes and
reads with; older versions stay so that data written by older builds can be resolved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    version: int
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes  # CRC-64-AVRO, little-endian, as single-object encoding puts it on the wire

    @property
    def full_name(self) -> str:
        return f"{self.raw.get('namespace', '')}.{self.raw['name']}".lstrip(".")


@dataclass(frozen=True)
class Catalog:
    by_name: dict[str, list[SchemaVersion]]
    by_fingerprint: dict[bytes, SchemaVersion]

    def latest(self, name: str) -> SchemaVersion:
        try:
            return self.by_name[name][-1]
        except KeyError:
            raise KeyError(f"unknown schema {name!r}; known: {sorted(self.by_name)}") from None

    def versions(self, name: str) -> list[SchemaVersion]:
        return self.by_name[name]


def _load_version(name: str, version: int, text: str) -> SchemaVersion:
    raw = json.loads(text)
    # parse with a fresh named-type table per file: each .avsc is self-contained
    parsed = fastavro.parse_schema(raw, named_schemas={})
    canonical = to_parsing_canonical_form(parsed)
    fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    return SchemaVersion(name, version, raw, parsed, fp)


@lru_cache(maxsize=1)
def catalog() -> Catalog:
    root = resources.files("wooflow.schemas") / "avro"
    by_name: dict[str, list[SchemaVersion]] = {}
    by_fp: dict[bytes, SchemaVersion] = {}
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if not folder.is_dir():
            continue
        versions = []
        for f in folder.iterdir():
            if f.name.startswith("v") and f.name.endswith(".avsc"):
                versions.append(_load_version(folder.name, int(f.name[1:-5]), f.read_text()))
        versions.sort(key=lambda v: v.version)
        by_name[folder.name] = versions
        for v in versions:
            by_fp[v.fingerprint] = v
    return Catalog(by_name, by_fp)
