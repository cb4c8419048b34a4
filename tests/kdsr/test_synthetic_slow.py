"""KDSR on SASRec vs SASRec with tuned tables alone, on the embedded default, through the real stages (slow, opt-in).

The synthetic default is prepared, encoded (the packaged offline MiniLM / EfficientNet-Lite0), compressed (the AE's
m̃) and distilled (the real teacher) exactly as ``dvc repro`` does, then ``sasrec_tuned`` and ``kdsr_sasrec`` (the
paper preset) go through the train / evaluate stages (DVC's train / evaluate and train_kdsr / evaluate_kdsr), both
with params.yaml's options and seed. The issue's two claims are checked on the same data:

- the forgetting curve: KDSR (CDL with the asynchronous warm-up of the tables) keeps the tuned tables E closer to m̃
  than fine-tuning alone (the same probe, pairs and seed as ``kdsr.forgetting``, attached to both runs);
- KDSR does not score below ``sasrec_tuned`` on test NDCG@10 (epoch selected on validation).

Run with ``pytest -m slow tests/kdsr/test_synthetic_slow.py -s`` (about 2 minutes on 2 CPU cores); the figures are
in docs/kdsr.md ("Results on the embedded default").
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

pytestmark = pytest.mark.slow

SEED = 2023


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, repo_root):
    from modalrec.params import load_params
    from modalrec.stages import compress, distill, encode, prepare

    root = tmp_path_factory.mktemp("kdsr_synth")
    params = copy.deepcopy(load_params(repo_root / "params.yaml"))
    assert params["base"]["dataset"] == "synthetic"
    assert params["compress"]["seed"] == params["kdsr"]["seed"] == SEED  # the AE's and the teacher's own seeds
    params["base"]["seeds"] = [SEED]
    kw = {"data_root": root / "data", "models_root": root / "models", "progress": False}
    n = torch.get_num_threads()
    torch.set_num_threads(max(n, torch.get_num_interop_threads(), 2))  # the kdsr conftest pins 1 thread per module
    try:
        prepare.run(params, out_root=root / "data" / "prepared", progress=False)
        for m in params["compress"]["modalities"]:
            encode.run(params, m, prepared_root=root / "data" / "prepared", features_root=root / "data" / "features",
                       progress=False)
            compress.run(params, m, **kw)
        distill.run(params, **kw)
        yield params, root, kw
    finally:
        torch.set_num_threads(n)


def _probe(params, root):
    from modalrec.runs import resolve_run, training_hooks

    _, probe = training_hooks(resolve_run(params, "kdsr_sasrec", SEED), params, root / "data")
    assert probe is not None
    return probe


def test_kdsr_keeps_e_closer_to_m_and_scores_no_lower_than_sasrec_tuned(synthetic, monkeypatch):
    from modalrec.stages import evaluate, train

    params, root, kw = synthetic
    rep = {"reports_root": root / "reports", **kw}
    # sasrec_tuned with the very probe the KDSR run attaches (same m̃, pairs and seed); its own hooks are none
    probe, hooks = _probe(params, root), train.training_hooks

    def tuned_hooks(spec, *args):
        assert spec.name == "sasrec_tuned" and hooks(spec, *args) == (None, None)
        return None, probe

    monkeypatch.setattr(train, "training_hooks", tuned_hooks)
    tuned_dir = train.run(params, "sasrec_tuned", seed=SEED, **kw)
    monkeypatch.undo()
    tuned = json.loads((evaluate.run(params, "sasrec_tuned", seed=SEED, **rep) / "metrics.json").read_text())
    kdsr_dir = train.run(params, "kdsr_sasrec", seed=SEED, **kw)
    kdsr = json.loads((evaluate.run(params, "kdsr_sasrec", seed=SEED, **rep) / "metrics.json").read_text())
    hist = {name: json.loads((d / "history.json").read_text()) for name, d in (("tuned", tuned_dir), ("kdsr", kdsr_dir))}
    sel = {"tuned": tuned["protocol"]["selected_epoch"], "kdsr": kdsr["protocol"]["selected_epoch"]}

    lines, checks = [], []
    for m in params["compress"]["modalities"]:
        key = f"forgetting/{m}_E_M"
        curve = {k: [r[key] for r in hist[k]] for k in hist}
        at = {k: curve[k][sel[k] - 1] for k in hist}
        for k in hist:
            lines.append(f"{m} E~m̃ {k:>5}: " + " ".join(f"{v:.4f}" for v in curve[k]) + f" (selected {sel[k]})")
        checks.append((m, curve, at))
    t, k = tuned["test"], kdsr["test"]
    print(f"\ntest NDCG@10: kdsr_sasrec {k['ndcg@10']:.4f} (epoch {sel['kdsr']}), sasrec_tuned {t['ndcg@10']:.4f} "
          f"(epoch {sel['tuned']}); HR@10 {k['hr@10']:.4f} vs {t['hr@10']:.4f}\n" + "\n".join(lines))
    # Measured (seed 2023): the image table hardly moves in either run (Pearson > 0.997 throughout); the text table
    # drifts under fine-tuning alone (0.878 at its selected epoch 9, 0.815 at its last) and much less with KDSR
    # (0.973 at epoch 7, 0.936 at its last).
    for m, curve, at in checks:
        assert curve["kdsr"][0] > 0.9 and curve["tuned"][0] > 0.9, m  # both start at m̃
        assert at["kdsr"] >= at["tuned"], m  # never further from m̃ at the epochs the protocol keeps
        if 1 - at["tuned"] > 0.05:  # where fine-tuning alone forgets measurably, KDSR forgets less than half as much
            assert 1 - at["kdsr"] < 0.5 * (1 - at["tuned"]), m
    assert any(1 - at["tuned"] > 0.05 for _, _, at in checks), "no modality table drifted: nothing was compared"
    assert kdsr["protocol"]["select_on"] == tuned["protocol"]["select_on"] == "valid"
    assert k["ndcg@10"] >= t["ndcg@10"]


SEEDS = (2023, 2024, 2025)


def test_kdsr_scores_above_sasrec_tuned_over_three_seeds(synthetic):
    """Issue 18's opt-in check: over three training seeds, KDSR on SASRec's mean test NDCG@10 (epoch selected on
    validation) is above ``sasrec_tuned``'s. docs/results/kdsr-synthetic.md has the same comparison with its t-test
    (measured: .2049 vs .1964, +4.3%, p = .03, at its 30-epoch cap; this test, params.yaml's 40: .2035 vs
    .1964)."""
    from modalrec.stages import evaluate, train

    params, root, kw = synthetic
    rep = {"reports_root": root / "reports", **kw}
    ndcg = {"kdsr_sasrec": [], "sasrec_tuned": []}
    for seed in SEEDS:
        for name in ndcg:
            train.run(params, name, seed=seed, **kw)  # seed 2023's runs may exist already: resumed, not retrained
            out = json.loads((evaluate.run(params, name, seed=seed, **rep) / "metrics.json").read_text())
            assert out["protocol"]["select_on"] == "valid"
            ndcg[name].append(out["test"]["ndcg@10"])
    print("\ntest NDCG@10 per seed " + ", ".join(f"{n}: " + " ".join(f"{v:.4f}" for v in vs) for n, vs in ndcg.items()))
    mean = {n: sum(vs) / len(vs) for n, vs in ndcg.items()}
    assert mean["kdsr_sasrec"] > mean["sasrec_tuned"], mean
