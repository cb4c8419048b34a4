"""Metric functions against hand-computed rankings: ties, masking, k beyond the catalogue, aggregation."""

import math

import numpy as np
import pytest
import torch

from modalrec.data.batching import eval_instances
from modalrec.errors import ParamError
from modalrec.evaluate.metrics import compute_metrics, select_test_max, target_ranks
from modalrec.evaluate.protocol import EvalConfig, evaluate

NEG = float("-inf")


def test_ranks_by_hand_and_ties():
    # items 1..4; target of row 0 = item 2 (score 0.5): item 1 (0.9) is higher, item 3 ties, item 4 lower
    s = torch.tensor([[NEG, 0.9, 0.5, 0.5, 0.1],
                      [NEG, 0.0, 0.0, 0.0, 0.0]])
    t = torch.tensor([2, 4])
    assert target_ranks(s, t).tolist() == [1, 0]  # optimistic: strictly higher only
    assert target_ranks(s, t, "pessimistic").tolist() == [2, 3]  # every other item at least as high
    with pytest.raises(ParamError, match="evaluate.ties"):
        target_ranks(s, t, "random")


def test_metrics_by_hand():
    ranks = np.array([0, 1, 4, 9, 30])
    m = compute_metrics(ranks, ks=[5, 10])
    assert m["hr@5"] == pytest.approx(3 / 5)
    assert m["mrr@5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 5)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert m["hr@10"] == pytest.approx(4 / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6) + 1 / math.log2(11)) / 5)
    assert list(m)[:3] == ["hr@5", "mrr@5", "ndcg@5"]


def test_k_larger_than_catalogue():
    # 3 items: the worst possible rank is 2, so every target is a hit at k=20
    s = torch.tensor([[NEG, 0.1, 0.2, 0.3]] * 3)
    r = target_ranks(s, torch.tensor([1, 2, 3])).numpy()
    assert r.tolist() == [2, 1, 0]
    m = compute_metrics(r, ks=[20])
    assert m["hr@20"] == 1.0
    assert m["mrr@20"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)


def test_user_vs_instance_aggregation():
    ranks = np.array([0, 100, 100, 0])  # user 7 has three instances (one hit), user 9 one (hit)
    users = np.array([7, 7, 7, 9])
    assert compute_metrics(ranks, [1])["hr@1"] == pytest.approx(0.5)
    assert compute_metrics(ranks, [1], users, "user")["hr@1"] == pytest.approx((1 / 3 + 1) / 2)


def test_select_test_max_takes_each_metric_separately():
    hist = [{"hr@5": 0.1, "mrr@5": 0.3}, {"hr@5": 0.2, "mrr@5": 0.1}]
    assert select_test_max(hist) == {"hr@5": 0.2, "mrr@5": 0.3}


class Fixed(torch.nn.Module):
    """Scores every item by a fixed vector, whatever the history."""

    def __init__(self, scores):
        super().__init__()
        self.s = torch.tensor(scores, dtype=torch.float32)

    def score_all(self, input_ids):
        s = self.s.expand(input_ids.shape[0], -1).clone()
        s[:, 0] = NEG
        return s


def test_history_masking_never_masks_target():
    # items 1..5 scored 5 > 4 > 3 > 2 > 1 (item 1 best)
    model = Fixed([0, 5, 4, 3, 2, 1])
    seqs = [np.array([1, 2, 3]), np.array([5, 4, 2]), np.array([2, 1, 2])]  # user 2's target repeats its history
    n_train, n_valid = np.array([2, 2, 2]), np.array([0, 0, 0])
    inst = eval_instances(seqs, n_train, n_valid, "test", max_len=1)  # masking uses the untruncated history
    plain = evaluate(model, inst, EvalConfig(ks=[1, 2]), "cpu", progress=False)
    masked = evaluate(model, inst, EvalConfig(ks=[1, 2], mask_history=True), "cpu", progress=False)
    assert dict(zip(inst.users.tolist(), plain.ranks.tolist())) == {0: 2, 1: 1, 2: 1}
    assert dict(zip(inst.users.tolist(), masked.ranks.tolist())) == {0: 0, 1: 1, 2: 0}
    assert masked.metrics["hr@1"] == pytest.approx(2 / 3)


class TwoBranches(Fixed):
    def score_branches(self, input_ids):
        s = self.score_all(input_ids)
        return {"text": s, "image": -s.nan_to_num(neginf=1e9)}  # image branch ranks items the other way round


def test_per_branch_metrics():
    model = TwoBranches([0, 5, 4, 3, 2, 1])
    seqs = [np.array([4, 1]), np.array([3, 5])]
    inst = eval_instances(seqs, np.array([1, 1]), np.array([0, 0]), "test", max_len=3)
    res = evaluate(model, inst, EvalConfig(ks=[1]), "cpu", progress=False)
    assert res.metrics["hr@1"] == 0.5 and res.metrics["text/hr@1"] == 0.5  # item 1 ranks first, item 5 last
    assert res.metrics["image/hr@1"] == 0.5  # reversed: item 5 first, item 1 last
    assert sorted(res.branch_ranks["image"].tolist()) == [0, 4]
