"""The trainer: resume after an interruption equals an uninterrupted run; best-on-validation checkpoint; early
stopping; per-group LR schedules and per-epoch hooks."""

import json

import numpy as np
import pytest
import torch

from modalrec.data.batching import eval_instances, train_windows
from modalrec.errors import ParamError
from modalrec.evaluate.protocol import EvalConfig
from modalrec.models import ModelContext, build_model
from modalrec.train import checkpoint as ckpt
from modalrec.train.schedules import constant, linear_warmup
from modalrec.train.trainer import TrainConfig, Trainer

N, MAXLEN = 30, 5


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    seqs = [rng.integers(1, N + 1, size=int(rng.integers(5, 10))) for _ in range(24)]
    nt = np.array([len(s) - 2 for s in seqs])
    nv = np.ones(len(seqs), dtype=int)
    ctx = ModelContext(n_items=N, max_len=MAXLEN,
                       compressed={"text": torch.rand(N + 1, 128, generator=torch.Generator().manual_seed(0))})
    return (train_windows(seqs, nt, MAXLEN), eval_instances(seqs, nt, nv, "valid", MAXLEN),
            eval_instances(seqs, nt, nv, "test", MAXLEN), ctx)


def make(data, out, **cfg):
    w, valid, test, ctx = data
    torch.manual_seed(123)  # model init; the trainer reseeds for training
    model = build_model("sasrec", {"dim": 8, "item_repr": "tuned", "modalities": ["text"], "dropout": 0.3}, ctx)
    tc = TrainConfig(**{"epochs": 4, "batch_size": 7, "lr": 5e-3, "patience": 0, **cfg})
    return Trainer(model, w, tc, out, seed=7, valid=valid, test=test, eval_cfg=EvalConfig(ks=[5, 10]),
                   fingerprint="fp", progress=False)


def test_resume_equals_uninterrupted(data, tmp_path):
    full = make(data, tmp_path / "a", track_test=True)
    ra = full.fit()
    # interrupted: stops after 2 epochs (last.pt written), then a *new* trainer and model resume
    part = make(data, tmp_path / "b", track_test=True)
    part.fit(stop_after=2)
    assert not ckpt.load(tmp_path / "b" / "last.pt")["finished"]
    resumed = make(data, tmp_path / "b", track_test=True)
    rb = resumed.fit()
    assert rb.resumed_from == 2 and ra.resumed_from == 0
    sa, sb = ckpt.load(tmp_path / "a" / "last.pt")["model"], ckpt.load(tmp_path / "b" / "last.pt")["model"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    assert ra.history == rb.history and ra.best_epoch == rb.best_epoch
    ba, bb = ckpt.load(tmp_path / "a" / "best.pt"), ckpt.load(tmp_path / "b" / "best.pt")
    assert ba["epoch"] == bb["epoch"]
    hist = json.loads((tmp_path / "b" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4] and "test/ndcg@10" in hist[0]
    # dvclive logged every epoch exactly once across the interruption
    lines = (tmp_path / "b" / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").read_text().strip().splitlines()
    assert len(lines) == 1 + 4
    # a finished run is not resumed: running again retrains from scratch
    again = make(data, tmp_path / "b", track_test=True).fit()
    assert again.resumed_from == 0


def test_best_checkpoint_is_a_real_copy_of_the_best_epoch(data, tmp_path):
    tr = make(data, tmp_path, epochs=5)
    res = tr.fit()
    vals = [h["valid/ndcg@10"] for h in res.history]
    assert res.best_epoch == int(np.argmax(vals)) + 1 and res.best_value == pytest.approx(max(vals))
    best = ckpt.load(tmp_path / "best.pt")
    assert best["epoch"] == res.best_epoch
    if res.best_epoch != 5:  # the final weights differ from the best ones
        last = ckpt.load(tmp_path / "last.pt")["model"]
        assert any(not torch.equal(best["model"][k], last[k]) for k in last)


def test_early_stopping(data, tmp_path):
    tr = make(data, tmp_path, epochs=30, patience=1, lr=0.3)  # a huge LR: validation stops improving quickly
    res = tr.fit()
    assert res.epochs_run < 30
    assert res.epochs_run - res.best_epoch == 1


def test_min_epochs_holds_off_early_stopping(data, tmp_path):
    """The same run with min_epochs runs at least that long, and selects the same best epoch among the epochs
    both ran."""
    short = make(data, tmp_path / "a", epochs=30, patience=1, lr=0.3).fit()
    assert short.epochs_run < 12
    held = make(data, tmp_path / "b", epochs=30, patience=1, lr=0.3, min_epochs=12).fit()
    assert held.epochs_run >= 12
    first = [h["valid/ndcg@10"] for h in held.history[:short.epochs_run]]
    assert first == [h["valid/ndcg@10"] for h in short.history]
    with pytest.raises(ParamError, match="train.min_epochs"):
        TrainConfig(min_epochs=-1)


def test_lr_schedule_and_hooks(data, tmp_path):
    seen = []
    tr = make(data, tmp_path, epochs=3)
    tr.lr_schedule = linear_warmup(0.1, 3, groups=["modality_tables"])
    tr.epoch_callback = lambda epoch, model, logs: seen.append((epoch, "valid/hr@10" in logs)) or {"extra/x": epoch}
    starts, fit_starts = [], []
    tr.model.on_epoch_start = starts.append
    tr.model.on_fit_start = lambda windows: fit_starts.append((len(starts), windows))
    res = tr.fit()
    assert starts == [1, 2, 3] and seen == [(1, True), (2, True), (3, True)]
    assert len(fit_starts) == 1 and fit_starts[0][0] == 0 and fit_starts[0][1] is tr.windows  # once, before epoch 1
    assert [h["lr/modality_tables"] for h in res.history] == pytest.approx([5e-4, 2.75e-3, 5e-3])
    assert [h["lr/backbone"] for h in res.history] == pytest.approx([5e-3] * 3)
    assert [h["extra/x"] for h in res.history] == [1, 2, 3]
    assert constant(0.25, ["modality_tables"])(9, "modality_tables") == 0.25


def test_config_errors(data, tmp_path):
    with pytest.raises(ParamError, match="train.optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ParamError, match="train.monitor"):
        TrainConfig(monitor="test/ndcg@10")
    with pytest.raises(ParamError, match="train.bogus"):
        TrainConfig.from_params({"bogus": 1})
    w, _, test, ctx = data
    with pytest.raises(ParamError, match="no valid instances"):
        Trainer(build_model("sasrec", {}, ctx), w, TrainConfig(), tmp_path, seed=1, valid=None)


def _index_grad():
    """The backward of advanced indexing with repeated indices (ODMT's item tower, the graph backbones): a CPU
    kernel that accumulates with parallel atomic adds unless PyTorch's deterministic algorithms are on."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 50, (200_000,), generator=g)
    R = torch.randn(200_000, 16, generator=g)
    W = torch.zeros(50, 16, requires_grad=True)
    (W[idx] * R).sum().backward()
    return W.grad


def test_training_on_cpu_uses_deterministic_kernels_and_restores_the_setting(data, tmp_path):
    n = torch.get_num_threads()
    torch.set_num_threads(2)  # the atomic adds only race with several threads (CI machines have 2 cores)
    try:
        grads = []
        tr = make(data, tmp_path, epochs=2)
        tr.epoch_callback = lambda epoch, model, logs: grads.append(
            (torch.are_deterministic_algorithms_enabled(), _index_grad())) or {}
        was = torch.are_deterministic_algorithms_enabled()
        tr.fit()
        assert torch.are_deterministic_algorithms_enabled() == was  # restored after fit
        assert all(on for on, _ in grads)
        assert torch.equal(grads[0][1], grads[1][1])  # bit-for-bit, run after run
    finally:
        torch.set_num_threads(n)
