"""The debiased in-batch softmax against a hand computation, and its masks."""

import math

import pytest
import torch

from modalrec.losses.inbatch import MASK_VALUE, build_candidates, inbatch_ce, inbatch_logits, log_popularity

from .helpers import batch_from_windows


def test_log_popularity_matches_frequencies():
    counts = torch.tensor([0.0, 3.0, 1.0, 6.0])
    lp = log_popularity(counts)
    assert lp[0] == 0.0
    assert torch.allclose(lp[1:], torch.log(torch.tensor([0.3, 0.1, 0.6])))


def test_window_mask_keeps_target_and_masks_past_and_future():
    # user 0 repeats item 5: its window is [5, 7, 5, 9]; user 1's window is [2, 9]
    b = batch_from_windows([[5, 7, 5, 9], [2, 9]], max_len=3)
    cand = build_candidates(b.input_ids, b.targets)
    # the released code's occurrence columns are 5, 7, 5, 0, 0, 2, 9, 9; one column per distinct item here
    assert cand.col_items.tolist() == [2, 5, 7, 9]
    log2 = math.log(2.0)
    # query (user 0, target 7 at position 0): its items 5 (past) and 9 (future) masked; padding has no column
    # query (user 0, target 5 at position 1): the label column stands for the label occurrence only (count 1),
    #   the other occurrence of 5 is masked
    # query (user 0, last target 9): user 1's occurrence of 9 is masked too: count 1
    # user 1's query (target 9): user 0's items 5 (twice: log 2) and 7 are negatives, its own 2 is masked
    assert cand.label_col.tolist() == [2, 1, 3, 3]
    assert cand.mask.tolist() == [[False, True, False, True], [False, False, True, True],
                                  [False, True, True, False], [True, False, False, False]]
    assert torch.allclose(cand.log_count, torch.tensor([[0.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, log2, 0, 0]]))


def test_grouped_columns_give_the_occurrence_softmax():
    """Per query, the softmax over the distinct items with ``+ log count`` equals the released code's softmax over
    every occurrence column (masks as described in the module docstring), label by label."""
    torch.manual_seed(3)
    windows = [[5, 7, 5, 9], [2, 9], [9, 9, 4, 2, 5], [3]]
    b = batch_from_windows(windows, max_len=4)
    B, L = b.input_ids.shape
    cand = build_candidates(b.input_ids, b.targets)
    occ = torch.cat([b.input_ids.reshape(-1), b.targets[:, -1]])
    vec, state = torch.randn(10, 3), torch.randn(B * L, 3)
    z = inbatch_logits(state[cand.query_index], vec[cand.col_items], cand, None) + cand.log_count
    qb, qt = torch.nonzero(b.targets, as_tuple=True)
    for q in range(len(qb)):
        u, t = int(qb[q]), int(qt[q])
        window = set(torch.cat([b.input_ids[u], b.targets[u, -1:]]).tolist())
        label = u * L + t + 1 if t < L - 1 else B * L + u
        keep = [c for c in range(len(occ)) if c == label or (occ[c] != 0 and int(occ[c]) not in window)]
        ref = torch.log_softmax(state[u * L + t] @ vec[occ[keep]].T, -1)[keep.index(label)]
        assert torch.log_softmax(z[q], -1)[cand.label_col[q]].item() == pytest.approx(ref.item(), abs=1e-6)


def test_debiased_loss_matches_hand_computation():
    torch.manual_seed(0)
    windows = [[1, 2, 3, 4], [3, 5, 6], [6, 1]]
    b = batch_from_windows(windows, max_len=3)
    B, L = b.input_ids.shape
    counts = torch.tensor([0.0, 4.0, 1.0, 2.0, 1.0, 3.0, 5.0])
    logpop = log_popularity(counts)
    d = 4
    item_vec = torch.randn(7, d)
    user_state = torch.randn(B, L, d)
    cand = build_candidates(b.input_ids, b.targets)
    logits = inbatch_logits(user_state.reshape(-1, d)[cand.query_index], item_vec[cand.col_items], cand, logpop)
    loss = inbatch_ce(logits, cand)

    # by hand: every column is an occurrence; negatives are occurrences of items outside the user's window
    total = 0.0
    n = 0
    for u, w in enumerate(windows):
        occ = [(v, s) for s, ww in enumerate(windows) for v in ([0] * (L - len(ww) + 1) + ww)[:-1]] + \
              [(ww[-1], s) for s, ww in enumerate(windows)]
        for t in range(1, len(w)):
            h = user_state[u, L - (len(w) - 1) + t - 1]
            pos = float(h @ item_vec[w[t]] - logpop[w[t]])
            negs = [float(h @ item_vec[v] - logpop[v]) for v, _ in occ if v != 0 and v not in w]
            total += -(pos - math.log(math.exp(pos) + sum(math.exp(x) for x in negs)))
            n += 1
    assert n == cand.label_col.numel()
    assert loss.item() == pytest.approx(total / n, rel=1e-5)
    assert (logits == MASK_VALUE).any()


def test_batches_that_are_not_teacher_forced_are_rejected():
    b = batch_from_windows([[1, 2, 3]], max_len=2)
    b.targets[0, 0] = 3
    with pytest.raises(ValueError, match="teacher-forced"):
        build_candidates(b.input_ids, b.targets)


def test_last_position_only_batches_are_supported():
    b = batch_from_windows([[1, 2, 3], [4, 5]], max_len=2)
    b.targets[:, :-1] = 0
    cand = build_candidates(b.input_ids, b.targets)
    assert cand.label_col.tolist() == [2, 4]  # columns 1, 2, 3, 4, 5: the last targets 3 and 5
    assert cand.col_items[cand.label_col].tolist() == [3, 5]
