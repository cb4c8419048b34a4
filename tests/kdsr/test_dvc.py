"""The DVC claim of docs/kdsr.md, checked with DVC's own parameter tracking and stage graph on the repository's
dvc.yaml and params.yaml (tests/dvc_tracking.py; no stage is run): ``dvc exp run -S kdsr.D=8`` re-runs distill, the
KDSR trainings and evaluations, and the metrics/report stages that collect them; never prepare, encode, compress
or the baselines."""

from __future__ import annotations

import pytest
from dvc_tracking import run_stages

UPSTREAM_OR_BASELINES = ("prepare", "encode@", "compress", "train@", "evaluate@", "train_odmt@", "evaluate_odmt@")


@pytest.fixture
def dvc(dvc_pipeline):
    return dvc_pipeline


def kdsr_stages(params: dict) -> set[str]:
    return run_stages(params, "kdsr")


def tuned_baselines(params: dict) -> list[str]:
    """The baselines of runs.baselines that read the compress stage's m~ (item_repr: tuned, or frozen_m)."""
    return [r["model"] for r in params["runs"]["baselines"]
            if (params["models"][r["model"]] or {}).get("item_repr") in ("tuned", "frozen_m")]


def test_teacher_keys_rerun_distill_and_the_kdsr_family_only(dvc):
    expected = {"distill", "metrics", "report"} | kdsr_stages(dvc.params)
    assert kdsr_stages(dvc.params) <= set(dvc.stages)
    for edit in (lambda p: p["kdsr"].update(D=4), lambda p: p["kdsr"].update(codes=50),
                 lambda p: p["kdsr"]["pairs"].update(cooccur=10)):
        out = dvc.reruns(edit)
        assert out == expected, sorted(out ^ expected)
        assert not [s for s in out if s.startswith(UPSTREAM_OR_BASELINES)]


def test_student_keys_rerun_the_kdsr_family_not_the_teacher(dvc):
    expected = {"metrics", "report"} | kdsr_stages(dvc.params)
    for edit in (lambda p: p["kdsr"]["presets"]["kdsr"].update(tau=1.0),
                 lambda p: p["kdsr"]["backbones"]["sasrec"].update(dim=32),
                 lambda p: p["kdsr"]["forgetting"].update(pairs=10)):
        assert dvc.reruns(edit) == expected


def test_compress_reruns_the_tuned_baseline_and_kdsr_but_not_encode_or_the_id_baselines(dvc):
    params = dvc.params
    out = dvc.reruns(lambda p: p["compress"].update(lr=5e-4))
    assert "distill" in out and kdsr_stages(params) <= out
    tuned = tuned_baselines(params)
    assert tuned and {s for s in out if s.startswith("compress")} and run_stages(params, "baselines", tuned) <= out
    others = [r["model"] for r in params["runs"]["baselines"] if r["model"] not in tuned]  # ID and frozen baselines
    assert others and not run_stages(params, "baselines", others) & out
    assert not [s for s in out if s.startswith(("prepare", "encode@", "train_odmt@"))]
