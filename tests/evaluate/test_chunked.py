"""Chunked full ranking (memory batch x chunk) gives exactly the ranks of the one-piece ranking: ties, the history
mask (the target itself never masked) and padding included, for any chunk size, through the evaluator too."""

import numpy as np
import pytest
import torch

from modalrec.data.batching import eval_instances
from modalrec.errors import ParamError
from modalrec.evaluate.metrics import chunked_target_ranks, target_ranks
from modalrec.evaluate.protocol import EvalConfig, rank_instances
from modalrec.models import ModelContext, build_model


def _full_scores(u, table, exclude, targets):
    s = u @ table.T
    s[:, 0] = float("-inf")
    if exclude is not None:
        t = s.gather(1, targets.view(-1, 1)).clone()
        s[exclude] = float("-inf")
        s.scatter_(1, targets.view(-1, 1), t)
    return s


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic"])
def test_chunked_ranks_equal_unchunked_with_ties_and_masking(ties):
    g = torch.Generator().manual_seed(0)
    n, d, b = 23, 3, 40
    # small integers: every score is exact and ties are everywhere (row 0 of the table = padding = zeros)
    table = torch.randint(-2, 3, (n + 1, d), generator=g).float()
    table[0] = 0
    u = torch.randint(-2, 3, (b, d), generator=g).float()
    targets = torch.randint(1, n + 1, (b,), generator=g)
    # history pairs, some of them the row's own target (which must stay rankable)
    hb = torch.randint(0, b, (120,), generator=g)
    hi = torch.randint(1, n + 1, (120,), generator=g)
    hb, hi = torch.cat([hb, torch.arange(5)]), torch.cat([hi, targets[:5]])
    for exclude in (None, (hb, hi)):
        want = target_ranks(_full_scores(u, table, exclude, targets), targets, ties)
        assert len(set(want.tolist())) > 3
        for chunk in (1, 2, 5, 7, n, n + 1, 1000):
            got = chunked_target_ranks(u, table, targets, chunk, ties, exclude)
            assert got.tolist() == want.tolist(), (chunk, exclude is None)
    # a constant model: optimistic ranks every target first, pessimistic last (every other real item ties)
    zeros = torch.zeros(b, d)
    r = chunked_target_ranks(zeros, table, targets, 4, ties)
    assert r.tolist() == ([0] * b if ties == "optimistic" else [n - 1] * b)
    with pytest.raises(ParamError, match="evaluate.item_chunk"):
        chunked_target_ranks(u, table, targets, 0, ties)


@pytest.mark.parametrize("arch", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("mask", [False, True])
def test_evaluator_chunked_equals_one_piece(arch, mask):
    n, max_len = 37, 6
    rng = np.random.default_rng(4)
    seqs = [rng.integers(1, n + 1, size=int(rng.integers(4, 12))) for _ in range(30)]
    nt = np.array([len(s) - 2 for s in seqs])
    inst = eval_instances(seqs, nt, np.ones(len(seqs), int), "test", max_len)
    torch.manual_seed(0)
    model = build_model(arch, {"dim": 8}, ModelContext(n_items=n, max_len=max_len))
    ref, _ = rank_instances(model, inst, EvalConfig(mask_history=mask, batch_size=8), "cpu", progress=False)
    for chunk in (1, 5, 16):
        got, _ = rank_instances(model, inst, EvalConfig(mask_history=mask, batch_size=8, item_chunk=chunk), "cpu",
                                progress=False)
        np.testing.assert_array_equal(got, ref)
    assert ref.max() > 5  # not a degenerate ranking
    assert "item_chunk" not in EvalConfig(item_chunk=3).protocol()
