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


@dataclass
class Typed:
    n: int = 1
    lr: float = 1e-3
    flag: bool = True
    name: str | None = None
    ks: list[int] | None = None


@pytest.mark.parametrize("section, key, expected", [
    ({"n": "ten"}, "n", "an integer"), ({"n": True}, "n", "an integer"), ({"lr": "fast"}, "lr", "a number"),
    ({"flag": "yes"}, "flag", "true or false"), ({"name": 3}, "name", "a string or null"),
    ({"ks": [10, "x"]}, "ks", "list"),
])
def test_dataclass_from_checks_types_and_names_the_key(section, key, expected):
    with pytest.raises(ParamError, match=rf"parameter train\.{key}: must be {expected}.*got"):
        dataclass_from(Typed, section, "train")


def test_dataclass_from_accepts_what_yaml_gives():
    cfg = dataclass_from(Typed, {"n": 3, "lr": 1, "name": None, "ks": [5, 10]}, "train")
    assert (cfg.n, cfg.lr, cfg.name, cfg.ks) == (3, 1, None, [5, 10])


def test_train_epochs_ten_is_one_line_naming_the_key():
    from modalrec.train.trainer import TrainConfig

    with pytest.raises(ParamError, match=r"^parameter train\.epochs: must be an integer, got 'ten'$"):
        TrainConfig.from_params({"epochs": "ten"})
