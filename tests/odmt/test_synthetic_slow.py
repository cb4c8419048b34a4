"""ODMT vs SASRec+LF on the embedded default (the synthetic catalogue), through the real stages (slow, opt-in).

The synthetic dataset is prepared with ODMT's data rule (users with >= 5 interactions, the last 15 kept,
leave-one-out: the prepare stage's ``loo_window`` split, no item filter), encoded by the encode stage's packaged
offline encoders (MiniLM tokens, EfficientNet-Lite0 tokens), then both runs go through the train and evaluate
stages (DVC's ``train_odmt`` / ``evaluate_odmt``) with the params.yaml entries (epoch selection on validation
hr@10 = Recall@10, history masked, per-user). Run with ``pytest -m slow tests/odmt/test_synthetic_slow.py -s``;
``ODMT_SLOW_EPOCHS`` sets the epoch budget (default 8). The figures measured so far, and why SASRec+LF's fused ranking wins here, are in docs/odmt.md.
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.slow

DS = "synthetic_odmt"


@pytest.fixture(scope="module")
def synthetic_odmt(tmp_path_factory, repo_root):
    from modalrec.params import load_params
    from modalrec.stages import encode, prepare

    root = tmp_path_factory.mktemp("odmt_synth")
    params = copy.deepcopy(load_params(repo_root / "params.yaml"))
    entry = {k: v for k, v in params["datasets"]["synthetic"].items() if k not in ("filter", "split")}
    params["datasets"][DS] = {**entry, "filter": {"min_len": 5}, "split": {"name": "loo_window", "window": 15}}
    params["base"]["dataset"] = DS
    params["odmt"]["datasets"][DS] = params["odmt"]["datasets"]["synthetic"]
    params["odmt"]["train"]["epochs"] = int(os.environ.get("ODMT_SLOW_EPOCHS", "8"))
    prepare.run(params, out_root=root / "data" / "prepared", progress=False)
    for key in ("text_tokens", "image_tokens"):
        encode.run(params, key, prepared_root=root / "data" / "prepared", features_root=root / "data" / "features",
                   progress=False)
    return params, root


def _train_and_evaluate(params, root, model, seed=2023):
    from modalrec.stages import evaluate, train

    kw = {"data_root": root / "data", "models_root": root / "models", "progress": False}
    train.run(params, model=model, seed=seed, **kw)
    out = evaluate.run(params, model=model, seed=seed, reports_root=root / "reports", **kw)
    return json.loads((out / "metrics.json").read_text())


def _most_popular_recall(root) -> float:
    from modalrec.data.prepared import load_prepared

    prep = load_prepared(root / "data" / "prepared" / DS)
    counts = np.asarray(prep.train_item_counts(), dtype=float)
    order = np.argsort(-counts[1:], kind="stable") + 1
    hits = []
    for seq in prep.sequences:
        hist = set(seq[:-1].tolist())
        top = [i for i in order[:10 + len(hist)] if i not in hist][:10]
        hits.append(int(seq[-1]) in top)
    return float(np.mean(hits))


def test_odmt_vs_sasrec_lf_recall_at_10(synthetic_odmt):
    params, root = synthetic_odmt
    odmt = _train_and_evaluate(params, root, "odmt")
    lf = _train_and_evaluate(params, root, "sasrec_lf")
    pop = _most_popular_recall(root)
    o, l = odmt["test"], lf["test"]
    branches = ", ".join(f"{b} {o[f'{b}/hr@10']:.4f}" for b in ("id", "text", "image") if f"{b}/hr@10" in o)
    print(f"\ntest Recall@10: ODMT {o['hr@10']:.4f} ({branches}; epoch {odmt['protocol'].get('selected_epoch')}), "
          f"SASRec+LF {l['hr@10']:.4f} (epoch {lf['protocol'].get('selected_epoch')}), MostPop {pop:.4f}; "
          f"NDCG@10 ODMT {o['ndcg@10']:.4f}, SASRec+LF {l['ndcg@10']:.4f}")
    assert odmt["protocol"]["mask_history"] is True
    assert o["hr@10"] > pop and l["hr@10"] > pop
    # What online distillation reliably buys here: every branch on its own is stronger than SASRec+LF's branch
    # (8 epochs: id .264/.147, text .288/.142, image .233/.058). It needs the distillation ramped in: after 2
    # epochs the text branches were still level (.1745 vs .179), so shorter budgets only check the floor.
    if params["odmt"]["train"]["epochs"] >= 6:
        for b in ("id", "text", "image"):
            assert o[f"{b}/hr@10"] > l[f"{b}/hr@10"], b
    # The fused ranking is NOT asserted: on this catalogue SASRec+LF's fused Recall@10 is higher (docs/odmt.md,
    # "Results"): its branches, trained only through the summed logits, specialise (a product of experts for a
    # target defined by a conjunction of attributes), while ODMT's per-branch losses and distillation make every
    # branch a full, similar predictor whose average adds little.
