"""DVC's own view of the repository's pipeline, for tests of "what does `dvc exp run -S <key>=<value>` re-run"
without running anything: copies of dvc.yaml and params.yaml in a fresh DVC project, every stage's parameter values
recorded as ``dvc.lock`` would, then (after an edit of the params) the stages whose parameters changed and, through
the stage graph, every stage downstream of them (what ``dvc repro`` re-runs, since their inputs change).

:func:`run_stages` names the train/evaluate stage instances of a family's runs (``runs.<family>`` x ``base.seeds``)
as dvc.yaml's matrices expand them."""

from __future__ import annotations

import copy
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from modalrec.params import load_params


# dvc.yaml's train / evaluate matrices, one pair per family of ``runs``
FAMILY_STAGES = {"baselines": ("train", "evaluate"), "kdsr": ("train_kdsr", "evaluate_kdsr"),
                 "odmt": ("train_odmt", "evaluate_odmt")}


def run_stages(params: dict[str, Any], family: str, models=None, stages=None) -> set[str]:
    """DVC's names of the train/evaluate instances of ``runs.<family>`` for every seed of ``base.seeds`` (only those
    of ``models`` when given; only the stages ``stages`` when given). A matrix over ``{model: ...}`` items names an
    instance ``run<i>-<seed>`` (i = the item's index in ``runs.<family>``), one over plain names ``<model>-<seed>``."""
    items = params["runs"][family]
    out = set()
    for i, item in enumerate(items):
        name = item["model"] if isinstance(item, dict) else item
        if models is not None and name not in models:
            continue
        key = f"run{i}" if isinstance(item, dict) else name
        out |= {f"{stage}@{key}-{s}" for stage in (stages or FAMILY_STAGES[family]) for s in params["base"]["seeds"]}
    if models is not None:
        listed = {item["model"] if isinstance(item, dict) else item for item in items}
        missing = sorted(set(models) - listed)
        assert not missing, f"not in runs.{family}: {missing}"
    return out


@dataclass
class DvcProject:
    params: dict[str, Any]  # the original params.yaml
    stages: dict[str, list]  # stage name -> its ParamsDependency objects
    changed: Callable[..., dict[str, dict]]  # changed(edit, only=None) -> {stage: {param: status}}
    reruns: Callable[[Callable[[dict], None]], set[str]]  # reruns(edit) -> changed stages + everything downstream


@contextmanager
def open_dvc_project(root: Path, repo_root: Path) -> Iterator[DvcProject]:
    """A :class:`DvcProject` for the repository's dvc.yaml/params.yaml copied to ``root``."""
    import networkx as nx
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    shutil.copy(repo_root / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(repo_root / "params.yaml", root / "params.yaml")
    original = load_params(root / "params.yaml")
    Repo.init(str(root), no_scm=True)
    with Repo(str(root)) as repo:
        index = repo.index
        stages = {s.name: [d for d in s.deps if isinstance(d, ParamsDependency)] for s in index.stages}
        for deps in stages.values():
            for d in deps:
                d.save()  # the values dvc.lock would record (fails if a listed parameter is missing)
        graph = index.graph  # edges run from a stage to the stages whose outputs it depends on
        by_name = {s.name: s for s in index.stages}

        def changed(edit, only=None) -> dict[str, dict]:
            params = copy.deepcopy(original)
            edit(params)
            (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            out = {}
            for name, deps in stages.items():
                if only is None or name in only:
                    status = {k: v for d in deps for st in d.workspace_status().values() for k, v in st.items()}
                    if status:
                        out[name] = status
            return out

        def reruns(edit) -> set[str]:
            hit = set(changed(edit))
            down = set(hit)
            for name in hit:
                down |= {s.name for s in nx.ancestors(graph, by_name[name])}
            return down

        yield DvcProject(original, stages, changed, reruns)
