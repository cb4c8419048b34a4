"""The DVC claim of docs/odmt.md, checked with DVC's own parameter tracking on the repository's dvc.yaml and
params.yaml (no stage is run): ``dvc exp run -S odmt.T=0.3`` re-runs ``train_odmt`` / ``evaluate_odmt`` and no
other stage; the family's trainer keys that ``odmt.train`` overrides in the global ``train`` section do not re-run
them, and the global ``train`` keys they do read are tracked.

DVC loads the stages (matrix expanded), records each stage's parameter values as ``dvc.lock`` would, and after an
edit of params.yaml reports which stages' parameters changed: exactly what decides what ``dvc repro`` re-runs
(besides file dependencies: the downstream ``metrics`` and ``report`` stages then re-run because the reports they
collect changed)."""

from __future__ import annotations

import pytest
from dvc_tracking import run_stages

from modalrec.runs import TRAIN_ONLY

MARK = "__changed__"


@pytest.fixture
def dvc_project(dvc_pipeline):
    """The repository's pipeline as DVC tracks its parameters (tests/dvc_tracking.py); no stage is run."""
    return dvc_pipeline


def family_stages(params: dict, models=None) -> set[str]:
    return run_stages(params, "odmt", models)


def test_odmt_T_reruns_only_the_odmt_family(dvc_project):
    params, stages, changed = dvc_project.params, dvc_project.stages, dvc_project.changed
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
    params, changed = dvc_project.params, dvc_project.changed
    model = params["runs"]["odmt"][0]
    out = changed(lambda p: p["models"][model].update(d=8))
    assert set(out) == family_stages(params, [model]) | {"report"}


def test_control_a_teacher_parameter_reruns_distill_not_odmt(dvc_project):
    params, changed = dvc_project.params, dvc_project.changed
    out = changed(lambda p: p["kdsr"].update(D=2))
    assert "distill" in out and not set(out) & family_stages(params)


def test_global_train_keys_overridden_by_odmt_train_do_not_rerun_the_family(dvc_project):
    params, changed = dvc_project.params, dvc_project.changed
    overridden = sorted(set(params["odmt"]["train"]) & set(params["train"]))
    assert {"epochs", "lr", "batch_size", "max_len"} <= set(overridden)
    out = changed(lambda p: p["train"].update({k: MARK for k in overridden}))
    assert out and not set(out) & family_stages(params), sorted(out)  # other stages read them; ODMT's don't


def test_global_train_keys_the_family_reads_are_tracked(dvc_project):
    """The engine's train stage reads every ``train`` key that ``odmt.train`` does not set (plus the device)."""
    params, changed = dvc_project.params, dvc_project.changed
    read = sorted(set(params["train"]) - set(TRAIN_ONLY) - set(params["odmt"]["train"])) + ["device"]
    assert {"track_test", "resume", "device"} <= set(read)
    train_stages = {s for s in family_stages(params) if s.startswith("train_odmt@")}
    for key in read:
        out = changed(lambda p: p["train"].update({key: MARK}), only=train_stages)
        assert set(out) == train_stages, key


def test_odmt_T_reruns_the_family_and_the_stages_that_collect_its_reports(dvc_project):
    """With the stage graph: the family, then ``metrics`` and ``report`` (their report inputs change); nothing else."""
    out = dvc_project.reruns(lambda q: q["odmt"].update(T=0.3))
    assert out == family_stages(dvc_project.params) | {"metrics", "report"}
