"""What the pipeline runs: the run lists of params.yaml (``runs.<family>``) and how a model's entry resolves.

``runs.baselines`` and ``runs.kdsr`` hold ``{model: <name>, code: ..., data: ...}`` items (the extra keys are the
DVC stage's own code file and input caches), ``runs.odmt`` plain names; :func:`listed_runs` gives the names.
"""

from __future__ import annotations

from typing import Any

from .errors import ParamError
from .params import get

FAMILIES = ("baselines", "kdsr", "odmt")


def listed_runs(params: dict[str, Any]) -> dict[str, list[str]]:
    """``{family: [model names]}`` of ``runs.<family>`` in params.yaml order (a family that is absent is empty)."""
    section = get(params, "runs", {}) or {}
    if not isinstance(section, dict):
        raise ParamError("runs", f"must be a mapping of families {list(FAMILIES)}, got {section!r}")
    unknown = sorted(set(section) - set(FAMILIES))
    if unknown:
        raise ParamError(f"runs.{unknown[0]}", f"unknown family; known: {list(FAMILIES)}")
    out: dict[str, list[str]] = {}
    for family in FAMILIES:
        items = section.get(family) or []
        if not isinstance(items, list):
            raise ParamError(f"runs.{family}", f"must be a list of runs, got {items!r}")
        names = []
        for i, item in enumerate(items):
            name = item.get("model") if isinstance(item, dict) else item
            if not isinstance(name, str):
                raise ParamError(f"runs.{family}[{i}]", f"must be a model name or {{model: <name>, ...}}, got {item!r}")
            names.append(name)
        out[family] = names
    return out


def is_proposed(params: dict[str, Any], model: str) -> bool:
    """Whether a ``models`` entry is one of the papers' methods (KDSR, or ODMT trained with online distillation and
    its ablations that keep it) rather than a baseline: the report's default split of its columns."""
    entry = (get(params, "models", {}) or {}).get(model) or {}
    arch = entry.get("arch", model)
    return arch == "kdsr" or (arch == "odmt" and entry.get("objective", "online_distill") == "online_distill")
