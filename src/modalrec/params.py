"""Reading params.yaml sections with clear errors naming the missing key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ParamError


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
