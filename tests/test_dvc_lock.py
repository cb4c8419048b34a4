"""The committed dvc.lock records exactly the stages dvc.yaml defines.

DVC rewrites only the lock entries of the stages it runs and never drops the entry of a stage that left dvc.yaml,
so a renamed stage (e.g. ``train@sasrec-2023`` when the matrices became ``train@run<i>-<seed>``) stays in the lock
for good: every later ``dvc repro`` re-reads and rewrites it after each stage (DVC's round-trip YAML parser was ~2
seconds a stage of the default run), and a reader of dvc.lock sees stages that no longer exist."""

from __future__ import annotations

import yaml


def test_dvc_lock_names_exactly_the_stages_of_dvc_yaml(dvc_pipeline, repo_root):
    lock = yaml.safe_load((repo_root / "dvc.lock").read_text())
    locked, defined = set(lock["stages"]), set(dvc_pipeline.stages)
    assert not locked - defined, f"dvc.lock has entries of stages dvc.yaml no longer defines: {sorted(locked - defined)}"
    assert not defined - locked, f"stages never run into dvc.lock: {sorted(defined - locked)}"
