"""train.loss: the sampled softmax with its logQ correction against a hand computation and against the full
softmax (it converges to it as K grows, and without the correction it does not); the proposal's draws; training
with sampled / in-batch softmax learns; models with a loss of their own refuse it."""

import math

import numpy as np
import pytest
import torch

from modalrec.data.batching import eval_instances, train_windows
from modalrec.errors import ParamError
from modalrec.evaluate.protocol import EvalConfig, evaluate
from modalrec.losses.sampled import OutputLoss, sampled_softmax_ce
from modalrec.models import ModelContext, build_model
from modalrec.models.base import SeqRecModel
from modalrec.train.trainer import TrainConfig, Trainer


def test_sampled_softmax_by_hand():
    queries = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    table = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])
    targets = torch.tensor([1, 3])
    negatives = torch.tensor([2, 3, 4])
    q = [0.0, 0.1, 0.2, 0.3, 0.4]
    log_q = torch.log(torch.tensor(q).clamp(min=1e-30))
    K = 3
    # row 0: target 1 (score 1), negatives 2 (score 2), 3 (0), 4 (-1), each minus log(K q_j)
    z0 = [1.0, 2 - math.log(K * .2), 0 - math.log(K * .3), -1 - math.log(K * .4)]
    # row 1: target 3 (score 2); negative 3 is an accidental hit (masked); 2 (score 0), 4 (score 2)
    z1 = [2.0, 0 - math.log(K * .2), 2 - math.log(K * .4)]
    want = np.mean([-z[0] + math.log(sum(math.exp(v) for v in z)) for z in (z0, z1)])
    got = sampled_softmax_ce(queries, table, targets, negatives, log_q)
    assert got.item() == pytest.approx(want, rel=1e-6)
    plain = np.mean([-1 + math.log(math.exp(1) + math.exp(2) + 1 + math.exp(-1)),
                     -2 + math.log(math.exp(2) + 1 + math.exp(2))])
    assert sampled_softmax_ce(queries, table, targets, negatives, None).item() == pytest.approx(plain, rel=1e-6)


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_corrected_sampled_softmax_converges_to_the_full_one(sampling):
    g = torch.Generator().manual_seed(0)
    n, d = 60, 8
    table = torch.randn(n + 1, d, generator=g) * 0.5
    queries = torch.randn(16, d, generator=g)
    targets = torch.randint(1, n + 1, (16,), generator=g)
    logits = queries @ table.T
    logits[:, 0] = float("-inf")
    full = torch.nn.functional.cross_entropy(logits, targets).item()
    counts = np.random.default_rng(0).integers(0, 100, n + 1).astype(float)  # a skewed popularity
    counts[0] = 0
    loss = OutputLoss("sampled", 200_000, sampling, counts)
    torch.manual_seed(1)
    neg = loss.sample(n + 1, torch.device("cpu"))
    assert int(neg.min()) >= 1 and int(neg.max()) <= n
    log_q, _ = loss._proposal(n + 1, torch.device("cpu"))
    corrected = sampled_softmax_ce(queries, table, targets, neg, log_q).item()
    assert corrected == pytest.approx(full, abs=0.02)
    if sampling == "popularity":  # without the correction, popular negatives dominate: far from the full softmax
        assert abs(sampled_softmax_ce(queries, table, targets, neg, None).item() - math.log(len(neg)) - full) > 0.3
        freq = np.bincount(neg.numpy(), minlength=n + 1) / len(neg)
        p = (counts + 1) / (counts[1:] + 1).sum()
        p[0] = 0
        assert np.abs(freq - p).max() < 0.01  # the draws follow the proposal


N, MAXLEN = 40, 6


@pytest.fixture(scope="module")
def data():
    # learnable sequences: item i is followed by i + 1 (mod N)
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(60):
        start, ln = int(rng.integers(1, N + 1)), int(rng.integers(5, 10))
        seqs.append(np.array([(start + k - 1) % N + 1 for k in range(ln)]))
    nt = np.array([len(s) - 2 for s in seqs])
    nv = np.ones(len(seqs), int)
    return train_windows(seqs, nt, MAXLEN), eval_instances(seqs, nt, nv, "valid", MAXLEN)


@pytest.mark.parametrize("arch,loss", [("sasrec", "sampled"), ("sasrec", "inbatch"), ("gru4rec", "sampled")])
def test_training_with_a_cheaper_softmax_learns(data, tmp_path, arch, loss):
    windows, valid = data
    torch.manual_seed(0)
    model = build_model(arch, {"dim": 16, "dropout": 0.0}, ModelContext(n_items=N, max_len=MAXLEN))
    before = evaluate(model, valid, EvalConfig(ks=[10]), "cpu", progress=False).metrics["ndcg@10"]
    cfg = TrainConfig(epochs=6, batch_size=16, lr=1e-2 if arch == "sasrec" else 3e-2, patience=0, loss=loss, num_negatives=8, monitor=None)
    Trainer(model, windows, cfg, tmp_path, seed=1, valid=valid, eval_cfg=EvalConfig(ks=[10]), live=False,
            progress=False).fit()
    after = evaluate(model, valid, EvalConfig(ks=[10]), "cpu", progress=False).metrics["ndcg@10"]
    assert after > max(0.3, 2 * before)  # (untrained: ~0.15; the next item is a function of the last)


def test_config_errors_and_models_with_their_own_loss(data, tmp_path):
    with pytest.raises(ParamError, match="train.loss"):
        TrainConfig(loss="nce")
    with pytest.raises(ParamError, match="train.num_negatives"):
        TrainConfig(loss="sampled", num_negatives=0)
    with pytest.raises(ParamError, match="train.sampling"):
        TrainConfig(sampling="zipf")

    class Own(SeqRecModel):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

    with pytest.raises(ParamError, match="train.loss"):
        Trainer(Own(), data[0], TrainConfig(loss="sampled", monitor=None), tmp_path, seed=0, live=False,
                progress=False).fit()
