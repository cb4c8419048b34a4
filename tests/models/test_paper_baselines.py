"""Smoke tests of the papers' baselines (SR-GNN, FDSA, UniSRec, DIF-SR, NOVA, Trans2D, MMSRec) on a tiny catalogue:
a few epochs train and lower the loss, scores cover the catalogue, padding (column 0, left padding) never matters,
and each model runs through ``build_model`` with its params.yaml defaults. Their distinctive parts are checked against
hand computations in tests/models/test_<model>.py."""

from pathlib import Path

import numpy as np
import pytest
import torch

from modalrec.data.batching import eval_instances, train_batches, train_windows
from modalrec.models import ModelContext, build_model
from modalrec.params import load_params

N, MAXLEN = 40, 8
ROOT = Path(__file__).resolve().parents[2]
# run name in params.yaml -> options overriding its defaults here (small sizes for speed)
MODELS = {
    "srgnn": {"dim": 16},
    "fdsa": {"dim": 16, "heads": 2},
    "unisrec": {"dim": 16, "heads": 2, "n_experts": 3},
    "unisrec_text": {"dim": 16, "heads": 2, "n_experts": 3},
    "difsr": {"dim": 16, "heads": 2},
    "nova": {"dim": 16, "heads": 2},
    "nova_pos": {"dim": 16, "heads": 2},
    "trans2d": {"dim": 16, "inner": 32},
    "mmsrec": {"dim": 16, "inner": 32},
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # a learnable catalogue: each user walks item -> item + 1 (mod N) with some noise
    seqs = []
    for _ in range(60):
        start, n = int(rng.integers(1, N + 1)), int(rng.integers(5, 14))
        s = (start - 1 + np.arange(n)) % N + 1
        noise = rng.random(n) < 0.1
        s[noise] = rng.integers(1, N + 1, size=int(noise.sum()))
        seqs.append(s)
    nt = np.array([len(s) - 2 for s in seqs])
    nv = np.ones(len(seqs), dtype=int)
    g = torch.Generator().manual_seed(0)
    feats = {"text": torch.randn(N + 1, 12, generator=g), "image": torch.randn(N + 1, 20, generator=g)}
    feats["image"][5] = 0  # an item without an image
    for f in feats.values():
        f[0] = 0
    ctx = ModelContext(n_items=N, max_len=MAXLEN, features=feats)
    return seqs, nt, nv, ctx


def entry(name: str) -> tuple[str, dict]:
    cfg = dict(load_params(ROOT / "params.yaml")["models"][name])
    arch = cfg.pop("arch")
    cfg.pop("train", None), cfg.pop("evaluate", None)
    return arch, {**cfg, **MODELS[name]}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trains_scores_and_ignores_padding(data, name):
    seqs, nt, nv, ctx = data
    arch, cfg = entry(name)
    torch.manual_seed(0)
    model = build_model(name, cfg, ctx, arch=arch)
    for need in type(model).required_inputs(model.cfg):
        assert need.split("/")[0] == "features" and need.split("/")[1] in ctx.features
    opt = torch.optim.Adam([g for g in model.param_groups(1e-2)])
    w = train_windows(seqs, nt, MAXLEN)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    epoch_loss = []
    for epoch in range(1, 6):
        model.train()
        model.on_epoch_start(epoch)
        losses = []
        for b in train_batches(w, 16, seed=0, epoch=epoch):
            out = model.loss(b)
            loss = out["loss"] if isinstance(out, dict) else out
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert all(np.isfinite(losses))
        epoch_loss.append(np.mean(losses))
    assert epoch_loss[-1] < 0.9 * epoch_loss[0], epoch_loss
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    inst = eval_instances(seqs, nt, nv, "test", MAXLEN)
    _, inp, _ = next(inst.batches(64))
    with torch.no_grad():
        s = model.score_all(inp)
    assert s.shape == (inp.shape[0], N + 1)
    assert torch.isinf(s[:, 0]).all() and (s[:, 0] < 0).all() and torch.isfinite(s[:, 1:]).all()
    assert (s.argmax(1) > 0).all()  # padding never wins
    assert model.item_representations().shape[0] == N + 1
    # left padding is invisible: the same history with more padding (and in a batch with others) scores the same
    with torch.no_grad():
        short = model.score_all(torch.tensor([[3, 7, 9, 9]]))
        padded = model.score_all(torch.tensor([[0, 0, 0, 3, 7, 9, 9], [1, 2, 3, 4, 5, 6, 7]]))[:1]
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-5)
    n_params = sum(len(g["params"]) for g in model.param_groups(1e-3))
    assert n_params == sum(1 for p in model.parameters() if p.requires_grad)
