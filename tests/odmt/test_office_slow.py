"""ODMT vs SASRec+LF on Amazon Office, ODMT's own dataset, through the real stages over three seeds (slow, opt-in).

Issue 19 asks for a slow test that ODMT scores at least SASRec+LF over three seeds. On the embedded default that is
not what a correct ODMT does: the five-seed study there finds ODMT below SASRec+LF (docs/odmt.md, "Results on the
embedded default": a conjunctive synthetic catalogue, where LF's specialised branches win; that file's own slow test,
tests/odmt/test_synthetic_slow.py, asserts what does hold there). The paper's claim is checked here instead, where
the study finds it (docs/results/odmt-office.md: +11.0% Recall@10, p = .007 over five seeds): the shared Amazon
Office copy (``../shared/datasets/amazon2014-office``; skipped when absent), prepared with ODMT's data rule and
encoded with the packaged offline MiniLM (text tokens: the shared copy has no images), then ``odmt`` and
``sasrec_lf`` with params.yaml's entries (``odmt.datasets.office``: T 0.4, α 40, text ID initialisation, 30-epoch
cap; epoch selection on validation Recall@10; test with history masked, per user) for seeds 1, 2 and 3, as the study
runs them (it reproduces the study's six values exactly). The decision and the figures are in docs/odmt.md
("Decision: what the slow tests assert"). About 25 minutes on a quiet 2-core machine:

    pytest -m slow tests/odmt/test_office_slow.py -s
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

DS = "office"
SEEDS = (1, 2, 3)  # the study's first three seeds (docs/results/odmt-office.md)


@pytest.fixture(scope="module")
def office(tmp_path_factory, repo_root, shared_datasets):
    from modalrec.params import load_params
    from modalrec.stages import encode, prepare

    src = shared_datasets / "amazon2014-office"
    if not src.is_dir():
        pytest.skip(f"{src} is absent")
    root = tmp_path_factory.mktemp("odmt_office")
    params = copy.deepcopy(load_params(repo_root / "params.yaml"))
    params["base"]["dataset"] = DS
    params["datasets"][DS] = {**params["datasets"][DS], "path": str(src)}
    params["train"]["device"] = "cpu"
    prepare.run(params, out_root=root / "data" / "prepared", progress=False)
    for m in params["odmt"]["datasets"][DS]["modalities"]:
        encode.run(params, f"{m}_tokens", prepared_root=root / "data" / "prepared",
                   features_root=root / "data" / "features", progress=False)
    return params, root


def _test_metrics(params, root, model, seed):
    from modalrec.stages import evaluate, train

    kw = {"data_root": root / "data", "models_root": root / "models", "progress": False}
    train.run(params, model=model, seed=seed, **kw)
    out = evaluate.run(params, model=model, seed=seed, reports_root=root / "reports", **kw)
    m = json.loads((out / "metrics.json").read_text())
    assert m["protocol"]["mask_history"] is True
    return m["test"]


def test_odmt_at_least_sasrec_lf_on_office_over_three_seeds(office):
    params, root = office
    odmt = [_test_metrics(params, root, "odmt", s)["hr@10"] for s in SEEDS]
    lf = [_test_metrics(params, root, "sasrec_lf", s)["hr@10"] for s in SEEDS]
    print(f"\nOffice test Recall@10 over seeds {SEEDS}: ODMT {np.mean(odmt):.4f} {np.round(odmt, 4).tolist()}, "
          f"SASRec+LF {np.mean(lf):.4f} {np.round(lf, 4).tolist()}")
    assert np.mean(odmt) >= np.mean(lf)
