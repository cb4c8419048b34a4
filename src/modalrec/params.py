"""Reading params.yaml sections with clear errors naming the missing key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ParamError

T = TypeVar("T")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamError(str(path), "params file not found")
    with path.open() as f:
        return yaml.safe_load(f) or {}


def get(params: dict[str, Any], dotted: str, default: Any = ...) -> Any:
    """``get(p, "kdsr.D")`` -> value, or a ParamError naming ``kdsr.D`` when it is missing and no default given."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is ...:
                raise ParamError(dotted, "missing from params.yaml")
            return default
        node = node[part]
    return node


def dataclass_from(cls: type[T], section: dict[str, Any] | None, key: str, what: str = "option") -> T:
    """``cls(**section)`` for a config dataclass; a key that is no field of ``cls`` is a ParamError naming
    ``<key>.<name>`` and listing the known ones (the fields' own checks stay with the dataclass)."""
    section = dict(section or {})
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ParamError(f"{key}.{unknown[0]}", f"unknown {what}; known: {known}")
    return cls(**section)
