"""Reading params.yaml sections with clear errors naming the missing key."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import DataError, ParamError

T = TypeVar("T")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamError(str(path), "params file not found")
    from .io import read_text

    try:
        params = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(f"not valid YAML: {getattr(e, 'problem', None) or e}", path=path,
                        line=mark.line + 1 if mark is not None else None) from None
    if not isinstance(params, dict):
        raise DataError(f"must be a mapping of sections, got {type(params).__name__}", path=path)
    return params


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


def dataclass_from(cls: type[T], section: dict[str, Any] | None, key: str, what: str = "option",
                   ignore: tuple[str, ...] = ()) -> T:
    """The one way a config dataclass is built from a params section: ``cls(**section)`` after two checks.

    - a key that is no field of ``cls`` (nor in ``ignore``, keys the caller reads itself) is a ParamError naming
      ``<key>.<name>`` and listing the known ones;
    - a value whose type does not fit the field's annotation (``epochs: ten`` for an ``int``) is a ParamError
      naming ``<key>.<name>``, the expected type and the value. ``int`` rejects booleans, ``float`` takes
      integers, ``X | None`` takes null, ``list[int]`` checks the items; other annotations are not checked.

    Range and choice checks stay with the dataclass (``__post_init__``)."""
    if section is not None and not isinstance(section, dict):
        raise ParamError(key, f"must be a mapping of {what}s, got {section!r}")
    section = {k: v for k, v in (section or {}).items() if k not in ignore}
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ParamError(f"{key}.{unknown[0]}", f"unknown {what}; known: {sorted(set(fields) | set(ignore))}")
    hints = _type_hints(cls)
    for name, value in section.items():
        hint = hints.get(name, fields[name].type)
        if not _fits(value, hint):
            raise ParamError(f"{key}.{name}", f"must be {_describe(hint)}, got {value!r}")
    return cls(**section)


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that names something not importable here: leave those fields unchecked
        return {}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type annotation (unknown or unparsed annotations fit anything)."""
    if hint is Any or isinstance(hint, str):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is list and args:
            return all(_fits(v, args[0]) for v in value)
        return True
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is not None:
        return str(hint).replace("typing.", "")
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(hint, getattr(hint, "__name__", str(hint)))


# ---------------------------------------------------------------------------------------------------------------
# The run lists: what `dvc repro` trains and evaluates (read by the train/evaluate matrices, metrics and report)
# ---------------------------------------------------------------------------------------------------------------

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
