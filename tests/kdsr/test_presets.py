"""params.yaml's KDSR presets and ablations: resolution of the kdsr section, asynchronous LR, one epoch each."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from modalrec.data.batching import eval_instances, train_windows
from modalrec.errors import ParamError
from modalrec.evaluate.protocol import EvalConfig
from modalrec.models import ModelContext, build_model
from modalrec.params import load_params
from modalrec.runs import ENTRY_KEYS, FAMILY_ARCHS, resolve_run, training_hooks
from modalrec.train.trainer import TrainConfig, Trainer

from .helpers import random_teacher

ROOT = Path(__file__).resolve().parents[2]
N = 40
KDSR_FAMILY = ["kdsr_sasrec", "kdsr_gru4rec", "kdsr_mmsr", "kdsr_graph_cdl", "kdsr_parity", "mmsr", "kdsr_graph",
               "kdsr_no_tau", "kdsr_no_code", "kdsr_no_holistic", "kdsr_no_both", "kdsr_no_at"]


@pytest.fixture(scope="module")
def params():
    p = load_params(ROOT / "params.yaml")
    p["kdsr"]["forgetting"]["enabled"] = False  # the probe (the other hook) would read data/compressed
    return p


def lr_schedule(params, spec):
    """The asynchronous LR schedule of the modality tables that training gets for a resolved run."""
    schedule, callback = training_hooks(spec, params)
    assert callback.probe is None  # the forgetting probe is off; the loss-term sizes are always logged
    return schedule


def test_the_family_is_the_kdsr_section(params):
    for name in KDSR_FAMILY:
        spec = resolve_run(params, name)
        assert spec.family == "kdsr" and spec.arch in FAMILY_ARCHS["kdsr"], name
        assert not set(spec.cfg) & set(ENTRY_KEYS), name  # model Config fields only


def test_paper_and_parity_presets_resolve(params):
    spec = resolve_run(params, "kdsr_sasrec")
    paper = spec.cfg
    assert paper["weights"] == {"image": [1.0, 0.05], "text": [1.0, 0.05]}  # λ_C chosen on validation (issue 18)
    assert (paper["tau"], paper["holistic_loss"], paper["async_lr"], paper["proj_layers"]) == (1.5, "frobenius", "linear", 1)
    assert (paper["norm"], paper["represent"], paper["code_pairs"]) == ("rows", "scored", 1024)  # issue 18
    assert paper["backbone_cfg"] == params["kdsr"]["backbones"]["sasrec"]
    # no trainer or protocol overrides in the paper preset: the train section and the global protocol apply
    assert spec.train.batch_size == params["train"]["batch_size"] and spec.train.track_test is False
    assert spec.train.patience == params["kdsr"]["train"]["patience"] == params["train"]["patience"]  # one budget
    assert spec.evaluate == {}
    parity_spec = resolve_run(params, "kdsr_parity")
    parity = parity_spec.cfg
    assert parity["weights"] == {"image": [4.0, 4.0], "text": [0.5, 0.5]}
    assert (parity["holistic_loss"], parity["async_lr"], parity["async_factor"], parity["proj_layers"]) == \
        ("frobenius", "constant", 0.25, 2)
    assert parity_spec.train.batch_size == 256 and parity_spec.train.track_test is True
    assert parity_spec.train.lr == params["train"]["lr"]  # the rest from the train section
    assert parity_spec.evaluate["select_on"] == "test_max"
    # an ablation states only what it changes; the entry wins over the preset
    no_tau = resolve_run(params, "kdsr_no_tau").cfg
    assert no_tau["tau"] == 1.0 and no_tau["weights"] == paper["weights"]
    assert resolve_run(params, "kdsr_no_at").cfg["async_lr"] == "none"


def test_resolution_errors_name_the_key(params):
    p = copy.deepcopy(params)
    p["models"]["kdsr_sasrec"]["preset"] = "nope"
    with pytest.raises(ParamError, match="models.kdsr_sasrec.preset"):
        resolve_run(p, "kdsr_sasrec")
    # a model of another family gets nothing of the kdsr section (its arch decides)
    sasrec = resolve_run(p, "sasrec")
    assert sasrec.family == "baselines" and sasrec.evaluate == {}
    assert sasrec.cfg == {k: v for k, v in p["models"]["sasrec"].items() if k != "arch"}
    assert training_hooks(sasrec, p) == (None, None)
    with pytest.raises(ParamError, match="models.missing"):
        resolve_run(p, "missing")


def test_async_schedules(params):
    lin = lr_schedule(params, resolve_run(params, "kdsr_sasrec"))
    assert lin(1, "modality_tables") == pytest.approx(0.1)
    assert lin(10, "modality_tables") == pytest.approx(1.0) and lin(30, "modality_tables") == 1.0
    assert lin(5, "modality_tables") == pytest.approx(0.1 + 0.9 * 4 / 9)
    assert lin(1, "backbone") == 1.0 and lin(1, "cdl") == 1.0 and lin(1, "id") == 1.0
    const = lr_schedule(params, resolve_run(params, "kdsr_parity"))
    assert const(1, "modality_tables") == const(50, "modality_tables") == 0.25 and const(1, "id") == 1.0
    assert lr_schedule(params, resolve_run(params, "kdsr_no_at")) is None
    assert lr_schedule(params, resolve_run(params, "mmsr")) is None


def _data(seed=0):
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, N + 1, rng.integers(4, 12)) for _ in range(60)]
    lens = np.array([len(s) for s in seqs])
    nv = np.ones_like(lens)
    nt = lens - 2
    return seqs, nt, nv


@pytest.mark.parametrize("name", KDSR_FAMILY)
def test_every_preset_and_ablation_trains_one_epoch(params, name, tmp_path):
    spec = resolve_run(params, name)
    entry = spec.cfg
    cfg = dict(entry)
    if "backbone_cfg" in cfg:  # small widths keep this fast; mmsr / kdsr_graph need dim = the codes' width
        cfg["backbone_cfg"] = {**cfg["backbone_cfg"], "dim": 16}
    else:
        cfg["dim"] = 16
    g = torch.Generator().manual_seed(0)
    comp = {m: torch.rand(N + 1, 16, generator=g) for m in ("image", "text")}
    ctx = ModelContext(n_items=N, max_len=10, compressed=comp, teacher=random_teacher(N, 7))
    torch.manual_seed(0)
    model = build_model(name, cfg, ctx, spec.arch)
    seqs, nt, nv = _data()
    tcfg = TrainConfig(epochs=1, batch_size=16, lr=1e-3, monitor="valid/ndcg@10")
    sched = lr_schedule(params, spec)
    tr = Trainer(model, train_windows(seqs, nt, 10), tcfg, tmp_path, seed=1,
                 valid=eval_instances(seqs, nt, nv, "valid", 10), eval_cfg=EvalConfig(ks=[10]), lr_schedule=sched,
                 live=False, progress=False)
    res = tr.fit()
    row = res.history[0]
    assert np.isfinite(row["train/loss"]) and "valid/ndcg@10" in row
    lr = tcfg.lr
    expect = {"linear": 0.1 * lr, "constant": 0.25 * lr, "none": lr}.get(entry.get("async_lr"), lr)
    assert row["lr/modality_tables"] == pytest.approx(expect)
    assert row["lr/id"] == pytest.approx(lr)
