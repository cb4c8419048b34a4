"""The Frobenius loss in block form (per-sequence [U, U] score blocks, no list of pairs) against the pair-list form,
at a realistic size (MovieLens-100K's long histories: 64 windows of 50 items), values and gradients."""

import pytest
import torch
from torch import nn

from modalrec.losses.cdl import CDL, CDLConfig, block_xi, frobenius_blocks, frobenius_pairs, sequence_pairs
from modalrec.losses.cdl.functions import BlockGram

from .helpers import MatrixTeacher, random_teacher


def _long_batch(n_items: int = 1300, B: int = 64, L: int = 50, seed: int = 0) -> torch.Tensor:
    """Long histories with repeats, an all-padding row, a one-item row and a short left-padded row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, n_items + 1, (B, L), generator=g)
    ids[0] = 0
    ids[1, :-1] = 0
    ids[2, :30] = 0
    ids[3, 10:] = ids[3, :10].repeat(L // 10)[:L - 10]  # at most 10 distinct items, repeated
    return ids


@pytest.mark.parametrize("diagonal", [True, False])
def test_frobenius_blocks_equal_the_pair_list_form_at_realistic_size(diagonal):
    n, d = 1300, 64
    ids = _long_batch(n)
    pairs = sequence_pairs(ids, diagonal)
    assert pairs.i.shape[0] > 50_000 and pairs.width == 50  # ML-100K-like: tens of thousands of pairs a batch
    g = torch.Generator().manual_seed(1)
    R = torch.rand(n + 1, n + 1, generator=g, dtype=torch.float64) * 2 - 1
    R = (R + R.t()) / 2  # a symmetric teacher, with non-zero values for the padding id (masked by the block form)
    Z = torch.randn(2, pairs.items.shape[0], d, generator=g, dtype=torch.float64, requires_grad=True)
    it, i, j = pairs.items, pairs.i, pairs.j
    r = torch.stack([R[it[i], it[j]], -R[it[i], it[j]]])  # [M, P], one row per "modality"
    want = frobenius_pairs(block_xi(Z, pairs, "cos"), r, pairs, 1.5)
    bi = pairs.block_items
    T = torch.stack([R[bi.unsqueeze(-1), bi.unsqueeze(-2)], -R[bi.unsqueeze(-1), bi.unsqueeze(-2)]])
    S = BlockGram.apply(Z, pairs.slot, None, pairs.n_seq, pairs.width, True)
    assert S.shape == (2, 64, 50, 50)
    got = frobenius_blocks(S, T, pairs, 1.5, diagonal)
    # (float64 throughout, except the pair form's float32 pair weights 2/τ², 1/τ²: ~3e-8 relative)
    torch.testing.assert_close(got, want, rtol=1e-7, atol=0)
    g_want, = torch.autograd.grad(want.sum(), Z)
    g_got, = torch.autograd.grad(got.sum(), Z)
    torch.testing.assert_close(g_got, g_want, rtol=1e-6, atol=1e-12)
    assert g_got.abs().max() > 0


class BlockMatrixTeacher(MatrixTeacher):
    """The dense-matrix teacher that also answers blocks, so CDL takes the block form."""

    def holistic_block(self, items: torch.Tensor, modality: str) -> torch.Tensor:
        return self.R[modality][items.unsqueeze(-1), items.unsqueeze(-2)]


@pytest.mark.parametrize("diagonal", [True, False])
def test_cdl_block_form_equals_pair_form_and_samples_the_same_code_pairs(diagonal):
    """The whole loss, both forms, with a sampled code head: the same pairs are drawn (the code terms are equal
    bit for bit), the holistic terms and every gradient agree to float32 rounding, and the block form asks the
    teacher only about the code head's pairs."""
    n, d = 60, 8
    base = random_teacher(n, n_codes=5, seed=3)
    block = BlockMatrixTeacher(base.R, base.C, base.n_codes)
    ids = _long_batch(n, B=16, L=20, seed=2)
    outs, grads, asked = [], [], []
    for teacher in (base, block):
        torch.manual_seed(0)
        tables = {m: nn.Embedding(n + 1, d) for m in ("image", "text")}
        torch.manual_seed(1)
        cdl = CDL(CDLConfig(holistic_loss="frobenius", diagonal=diagonal, code_pairs=50, teacher_cache=0,
                            weights={"image": [1.0, 0.5], "text": [0.3, 2.0]}), teacher, dim=d)
        assert cdl.uses_blocks(sequence_pairs(ids, diagonal)) == (teacher is block)
        torch.manual_seed(7)
        out = cdl(ids, tables)
        params = [t.weight for t in tables.values()] + list(cdl.parameters())
        grads.append(torch.autograd.grad(out["cdl"], params))
        outs.append(out)
        asked.append(sum(teacher.calls))
        teacher.calls.clear()
    for m in ("image", "text"):
        assert outs[1][f"cdl/{m}_code"].item() == outs[0][f"cdl/{m}_code"].item()
        assert outs[1][f"cdl/{m}_holistic"].item() == pytest.approx(outs[0][f"cdl/{m}_holistic"].item(), rel=1e-5)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    pairs = sequence_pairs(ids, diagonal)
    assert asked[0] == 4 * pairs.i.shape[0]  # holistic and codes, two modalities, every pair
    assert asked[1] == 4 * (50 + pairs.diag.shape[0])  # only the sampled pairs and the diagonal


def test_real_teacher_blocks_equal_its_pair_lookups():
    """``Teacher.holistic_block`` gives the values of ``Teacher.holistic`` (float32 rounding), 0 for padding."""
    from modalrec.teacher.teacher import Teacher

    g = torch.Generator().manual_seed(0)
    n = 30
    comp = {"image": torch.sigmoid(torch.randn(n + 1, 16, generator=g))}
    comp["image"][0] = 0
    for xi, center in (("cos", True), ("cos", False), ("dot", False), ("euclidean", False)):
        t = Teacher(comp, {"image": torch.randn(5, 4, generator=g)}, xi, 4, meta={"center": center})
        items = torch.tensor([[3, 7, 1, 0], [5, 5, 2, 9]])
        blk = t.holistic_block(items, "image")
        a, b = items.unsqueeze(-1).expand(-1, -1, 4), items.unsqueeze(-2).expand(-1, 4, -1)
        want = t.holistic(a.reshape(-1), b.reshape(-1), "image").view(2, 4, 4)
        torch.testing.assert_close(blk, want, rtol=1e-5, atol=1e-5)
        if xi != "euclidean":
            assert blk[0, 3].abs().max() == 0 and blk[0, :, 3].abs().max() == 0  # the padding id 0


def test_short_windows_keep_the_pair_list_long_histories_take_blocks():
    """The form follows the batch's shape: blocks for long histories, the pair list for short windows of unequal
    lengths (the synthetic default's), where the blocks would be mostly padding."""
    teacher = BlockMatrixTeacher(*[getattr(random_teacher(1300, n_codes=5), k) for k in ("R", "C", "n_codes")])
    cdl = CDL(CDLConfig(holistic_loss="frobenius"), teacher, dim=8)
    assert cdl.uses_blocks(sequence_pairs(_long_batch(1300)))
    g = torch.Generator().manual_seed(0)
    short = torch.randint(1, 1301, (64, 30), generator=g)
    lengths = torch.randint(3, 12, (64,), generator=g)
    lengths[0] = 25
    short[torch.arange(30) < 30 - lengths.unsqueeze(1)] = 0  # left padding: 3-11 items, one window of 25
    assert not cdl.uses_blocks(sequence_pairs(short))
    assert not CDL(CDLConfig(holistic_loss="soft_match"), teacher, dim=8).uses_blocks(sequence_pairs(_long_batch()))


@pytest.mark.parametrize("diagonal", [True, False])
def test_off_pairs_by_arithmetic_equal_the_lists(diagonal):
    """The code head's sampled pairs without building the pair lists: the same ends as ``i[off]``, ``j[off]``, for
    long histories, empty and one-item rows, and every pair of a small batch."""
    for ids in (_long_batch(), _long_batch(n_items=40, B=7, L=9, seed=3)):
        pairs = sequence_pairs(ids, diagonal)
        idx = torch.arange(pairs.n_off)
        ia, ib = pairs.off_pairs(idx)
        assert torch.equal(ia, pairs.i[pairs.off]) and torch.equal(ib, pairs.j[pairs.off])
        assert pairs.n_pairs == pairs.i.shape[0] and pairs.n_diag == pairs.diag.shape[0]
        pick = torch.randperm(pairs.n_off, generator=torch.Generator().manual_seed(0))[:300].sort().values
        ia, ib = pairs.off_pairs(pick)
        assert torch.equal(ia, pairs.i[pairs.off[pick]]) and torch.equal(ib, pairs.j[pairs.off[pick]])


def test_block_form_on_a_batch_of_padding_only():
    """No items at all (U = 0): the real teacher's blocks are empty, the loss is 0 and has a gradient."""
    from modalrec.teacher.teacher import Teacher

    g = torch.Generator().manual_seed(0)
    comp = {m: torch.sigmoid(torch.randn(21, 16, generator=g)) for m in ("image", "text")}
    teacher = Teacher(comp, {m: torch.randn(6, 4, generator=g) for m in comp}, "cos", 4, meta={"center": True})
    tables = {m: nn.Embedding(21, 16) for m in comp}
    cdl = CDL(CDLConfig(holistic_loss="frobenius", code_pairs=3), teacher, dim=16).train()
    ids = torch.zeros(3, 5, dtype=torch.long)
    assert cdl.uses_blocks(sequence_pairs(ids))
    out = cdl(ids, tables)
    assert out["cdl"].item() == 0.0
    out["cdl"].backward()
