"""The hyper-parameter search (benchmarks/search.py): its grid gives every compared model the same shared values,
and the selection picks each model's best experiment on validation, never on test."""

import importlib.util
from pathlib import Path

import yaml

from modalrec.report.sweep import best_by_model

ROOT = Path(__file__).resolve().parents[2]


def _search():
    spec = importlib.util.spec_from_file_location("search", ROOT / "benchmarks" / "search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _exp(name, mets, params):
    return {"rev": name[:7], "name": name, "data": {
        "params": {"params.yaml": {"data": params}}, "metrics": {"reports/metrics.json": {"data": mets}}}}


def test_best_by_model_selects_on_validation_per_model():
    ws = _exp("workspace", {"d/a/valid/m": 0.9, "d/a/test/m": 0.9}, {"train": {"lr": 9}})
    e1 = _exp("s-lr1", {"d/a/valid/m": 0.30, "d/a/test/m": 0.10, "d/b/valid/m": 0.20, "d/b/test/m": 0.50},
              {"train": {"lr": 1}})
    e2 = _exp("s-lr2", {"d/a/valid/m": 0.25, "d/a/test/m": 0.90, "d/b/valid/m": 0.22, "d/b/test/m": 0.05},
              {"train": {"lr": 2}})
    queued = {"rev": "q", "name": "s-lr3", "data": {"params": {}, "metrics": {}}}
    exps = [{**ws, "experiments": [{"revs": [e1]}, {"revs": [e2]}, {"revs": [queued]}]}]
    best = best_by_model(exps, "d", ["a", "b", "c"], "valid/m", show=("test/m",), params=("train.lr",), prefix="s-")
    assert best["a"] == {"exp": "s-lr1", "valid/m": 0.30, "test/m": 0.10, "params": {"train.lr": 1}, "n": 2}
    assert best["b"]["exp"] == "s-lr2" and best["b"]["test/m"] == 0.05  # test is reported, never chosen on
    assert "c" not in best  # the workspace (valid .9) does not count: it is not one of the search's experiments


def test_search_grids_share_values_and_name_real_params():
    mod = _search()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, (runs, models, monitor, shared, own) in mod.SEARCHES.items():
        points = mod.grid(name, own=False)
        n = 1
        for vals, _ in shared.values():
            n *= len(vals)
        assert len(points) == n and len({p for p, _ in points}) == n
        n_own = 1
        for vals, _ in own.values():
            n_own *= len(vals)
        assert len(mod.grid(name, own=True)) == n * n_own and n_own >= 2
        for _, sets in points:  # every model's copy of a shared axis gets the same value at a point
            for vals, keys in shared.values():
                assert len({sets[k] for k in keys}) == 1
        for m in models:  # the models compared exist, and each axis key's parent exists in params.yaml
            assert m in params["models"]
        for _, keys in {**shared, **own}.values():
            for k in keys:
                node = params
                for part in k.split(".")[:-1]:
                    assert part in node, f"{name}: {k}: no {part!r} in params.yaml"
                    node = node[part]
        assert monitor.startswith("valid/")
