"""modalrec.params: dotted look-ups and config dataclasses built from params sections."""

from dataclasses import dataclass

import pytest

from modalrec.errors import ParamError
from modalrec.params import dataclass_from, get


@dataclass
class Cfg:
    a: int = 1
    b: str = "x"


def test_dataclass_from_builds_and_rejects_unknown_keys():
    assert dataclass_from(Cfg, None, "sec") == Cfg()
    assert dataclass_from(Cfg, {"b": "y"}, "sec") == Cfg(b="y")
    with pytest.raises(ParamError, match=r"sec\.zz.*unknown split option; known: \['a', 'b'\]"):
        dataclass_from(Cfg, {"a": 2, "zz": 1, "zzz": 0}, "sec", "split option")


def test_get_names_the_missing_key():
    p = {"kdsr": {"D": 8}}
    assert get(p, "kdsr.D") == 8 and get(p, "kdsr.codes", 100) == 100
    with pytest.raises(ParamError, match="kdsr.codes"):
        get(p, "kdsr.codes")
