"""The DVC claim of docs/odmt.md, checked with DVC's own parameter tracking on the repository's dvc.yaml and
params.yaml (no stage is run): ``dvc exp run -S odmt.T=0.3`` re-runs ``train_odmt`` / ``evaluate_odmt`` and no
other stage; the family's trainer keys that ``odmt.train`` overrides in the global ``train`` section do not re-run
them, and the global ``train`` keys they do read are tracked.

DVC loads the stages (matrix expanded), records each stage's parameter values as ``dvc.lock`` would, and after an
edit of params.yaml reports which stages' parameters changed: exactly what decides what ``dvc repro`` re-runs
(besides file dependencies: the downstream ``metrics`` and ``report`` stages then re-run because the reports they
collect changed)."""

from __future__ import annotations

import copy
import shutil

import pytest
import yaml

from modalrec.params import load_params
from modalrec.stages.train import TRAIN_KEYS

MARK = "__changed__"


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory, repo_root):
    """A DVC project holding copies of the repository's dvc.yaml and params.yaml, every stage's parameter
    values recorded. Yields ``changed(edit) -> {stage name: {param: status}}`` for an edited copy of the params."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    root = tmp_path_factory.mktemp("odmt_dvc")
    shutil.copy(repo_root / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(repo_root / "params.yaml", root / "params.yaml")
    original = load_params(root / "params.yaml")
    Repo.init(str(root), no_scm=True)
    with Repo(str(root)) as repo:
        stages = {s.name: [d for d in s.deps if isinstance(d, ParamsDependency)] for s in repo.index.stages}
        for deps in stages.values():
            for d in deps:
                d.save()  # the values dvc.lock would record (fails if a listed parameter is missing)

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

        yield original, stages, changed


def family_stages(params: dict, models=None) -> set[str]:
    return {f"{stage}@{m}-{s}" for stage in ("train_odmt", "evaluate_odmt")
            for m in (models or params["odmt"]["models"]) for s in params["base"]["seeds"]}


def test_odmt_T_reruns_only_the_odmt_family(dvc_project):
    params, stages, changed = dvc_project
    expected = family_stages(params)
    assert expected <= set(stages)
    out = changed(lambda p: p["odmt"].update(T=0.3))  # what `dvc exp run -S odmt.T=0.3` writes
    assert set(out) == expected, sorted(out)
    # the same for the other keys of the section: overrides, per-dataset values, the family's trainer options

    def others(p):
        p["odmt"].update(alpha=7, id_init="text")
        p["odmt"]["datasets"][p["base"]["dataset"]]["T"] = 0.9
        p["odmt"]["train"]["lr"] = 0.5
        p["odmt"]["evaluate"]["ks"] = [10]

    assert set(changed(others)) == expected


def test_a_model_entry_reruns_its_own_instances_and_the_report(dvc_project):
    params, _, changed = dvc_project
    model = params["odmt"]["models"][0]
    out = changed(lambda p: p["models"][model].update(d=8))
    assert set(out) == family_stages(params, [model]) | {"report"}


def test_control_a_teacher_parameter_reruns_distill_not_odmt(dvc_project):
    params, _, changed = dvc_project
    out = changed(lambda p: p["kdsr"].update(D=2))
    assert "distill" in out and not set(out) & family_stages(params)


def test_global_train_keys_overridden_by_odmt_train_do_not_rerun_the_family(dvc_project):
    params, _, changed = dvc_project
    overridden = sorted(set(params["odmt"]["train"]) & set(params["train"]))
    assert {"epochs", "lr", "batch_size", "max_len"} <= set(overridden)
    out = changed(lambda p: p["train"].update({k: MARK for k in overridden}))
    assert out and not set(out) & family_stages(params), sorted(out)  # other stages read them; ODMT's don't


def test_global_train_keys_the_family_reads_are_tracked(dvc_project):
    """The engine's train stage reads every ``train`` key that ``odmt.train`` does not set (plus the device)."""
    params, _, changed = dvc_project
    read = sorted(set(params["train"]) - set(TRAIN_KEYS) - set(params["odmt"]["train"])) + ["device"]
    assert {"track_test", "resume", "device"} <= set(read)
    train_stages = {s for s in family_stages(params) if s.startswith("train_odmt@")}
    for key in read:
        out = changed(lambda p: p["train"].update({key: MARK}), only=train_stages)
        assert set(out) == train_stages, key
