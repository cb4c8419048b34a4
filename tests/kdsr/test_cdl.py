"""CDL losses against hand / loop computations on tiny batches; pairs and masks."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modalrec.errors import ParamError
from modalrec.losses.cdl import (CDL, CDLConfig, PairCache, block_xi, code_head_nll, code_head_nll_reference,
                                 frobenius_loss, frobenius_pairs, pair_mask, pair_row_sums, pair_xi, pairwise_xi,
                                 sequence_pairs, soft_match_loss, soft_match_pairs, soft_match_pairs_reference,
                                 unique_items, upper_pairs)

from .helpers import MatrixTeacher, random_teacher


def test_unique_items_sorted_deduplicated_padding_masked():
    ids = torch.tensor([[0, 0, 3, 1, 3], [2, 2, 2, 2, 2], [0, 0, 0, 0, 4]])
    u = unique_items(ids)
    assert u.tolist() == [[1, 3], [0, 2], [0, 4]]  # U = 2 = most unique items in a row, not L = 5


def test_pair_mask_diagonal_switch_and_padding():
    items = torch.tensor([[0, 2, 5]])
    with_diag = pair_mask(items, diagonal=True)[0]
    no_diag = pair_mask(items, diagonal=False)[0]
    assert with_diag.tolist() == [[False, False, False], [False, True, True], [False, True, True]]
    assert no_diag.tolist() == [[False, False, False], [False, False, True], [False, True, False]]
    b, i, j, w = upper_pairs(pair_mask(items, True))
    assert list(zip(i.tolist(), j.tolist(), w.tolist())) == [(1, 1, 1.0), (1, 2, 2.0), (2, 2, 1.0)]


def _identity_cdl(teacher, dim, **kw):
    cfg = CDLConfig(modalities=["image"], weights={"image": [1.0, 0.0]}, **kw)
    cdl = CDL(cfg, teacher, dim=dim)
    with torch.no_grad():
        cdl.proj["image"].weight.copy_(torch.eye(dim))
        cdl.proj["image"].bias.zero_()
    return cdl


def test_frobenius_by_hand():
    # items 1, 2 with embeddings (1, 0) and (1, 1): student cos = 1/sqrt(2); teacher r_12 = 0.2, r_11 = r_22 = 1
    E = nn.Embedding(3, 2)
    with torch.no_grad():
        E.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]))
    R = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.2], [0.0, 0.2, 1.0]])
    t = MatrixTeacher({"image": R}, {"image": torch.zeros(3, 3, dtype=torch.long)}, n_codes=2)
    cdl = _identity_cdl(t, 2, tau=1.5, holistic_loss="frobenius")
    out = cdl(torch.tensor([[0, 1, 2, 1]]), {"image": E})
    diff = 1 / math.sqrt(2) - 0.2
    expect = math.sqrt(2 * diff ** 2 / 1.5 ** 2 + 1e-8)  # the diagonal pairs agree exactly (cos = 1 = r_ii)
    assert out["cdl/image_holistic"].item() == pytest.approx(expect, rel=1e-5)
    assert out["cdl"].item() == pytest.approx(expect, rel=1e-5)


def test_soft_match_by_hand():
    E = nn.Embedding(3, 2)
    with torch.no_grad():
        E.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]))
    R = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.2], [0.0, 0.2, 1.0]])
    t = MatrixTeacher({"image": R}, {"image": torch.zeros(3, 3, dtype=torch.long)}, n_codes=2)
    tau = 1.5
    cdl = _identity_cdl(t, 2, tau=tau, holistic_loss="soft_match")
    out = cdl(torch.tensor([[1, 2]]), {"image": E})
    c = 1 / math.sqrt(2)
    # each row: softmax([1, c]/τ) for the student, softmax([1, 0.2]/τ) for the teacher; 4 pairs, symmetric rows
    ps = 1 / (1 + math.exp((c - 1) / tau))
    pt = 1 / (1 + math.exp((0.2 - 1) / tau))
    expect = 4 * (ps - pt) ** 2 / 4
    assert out["cdl/image_holistic"].item() == pytest.approx(expect, rel=1e-5)


def _loop_reference(ids, tables, cdl, teacher, diagonal):
    """Ordered pairs of unique items per sequence, by explicit loops."""
    res = {}
    for m in cdl.cfg.modalities:
        E = tables[m].weight
        hol_terms, code_terms, soft_terms, n_soft = [], [], 0.0, 0
        for row in ids.tolist():
            items = sorted(set(x for x in row if x > 0))
            pairs = [(a, b) for a in items for b in items if diagonal or a != b]
            if not pairs:
                continue
            sq = 0.0
            rows = {}
            for a, b in pairs:
                za, zb = cdl.proj[m](E[a]), cdl.proj[m](E[b])
                rh = F.cosine_similarity(za, zb, dim=0, eps=1e-8)
                r = teacher.R[m][a, b]
                sq = sq + ((rh - r) / cdl.cfg.tau) ** 2
                rows.setdefault(a, []).append((rh, r))
                logit = cdl.code_head[m]((E[a] - E[b]).abs())
                code_terms.append(F.cross_entropy(logit[None], teacher.C[m][a, b][None]))
            hol_terms.append(torch.sqrt(sq + 1e-8))
            for vals in rows.values():
                s = torch.softmax(torch.stack([v[0] for v in vals]) / cdl.cfg.tau, 0)
                t = torch.softmax(torch.stack([v[1] for v in vals]) / cdl.cfg.tau, 0)
                soft_terms = soft_terms + ((s - t) ** 2).sum()
                n_soft += len(vals)
        res[f"{m}_frob"] = torch.stack(hol_terms).mean()
        res[f"{m}_soft"] = soft_terms / n_soft
        res[f"{m}_code"] = torch.stack(code_terms).mean()
    return res


@pytest.mark.parametrize("diagonal", [True, False])
def test_all_losses_match_loop_reference(diagonal):
    torch.manual_seed(0)
    n, d = 9, 6
    teacher = random_teacher(n, n_codes=4, seed=1)
    tables = {m: nn.Embedding(n + 1, d, padding_idx=0) for m in ("image", "text")}
    ids = torch.tensor([[0, 0, 3, 1, 3, 7], [2, 5, 2, 9, 8, 4], [0, 0, 0, 0, 0, 6], [0, 1, 1, 1, 2, 1]])
    weights = {"image": [2.0, 0.5], "text": [0.25, 3.0]}
    for form in ("frobenius", "soft_match"):
        cfg = CDLConfig(weights=weights, tau=1.5, holistic_loss=form, diagonal=diagonal)
        torch.manual_seed(1)
        cdl = CDL(cfg, teacher, dim=d)
        out = cdl(ids, tables)
        ref = _loop_reference(ids, tables, cdl, teacher, diagonal)
        key = "frob" if form == "frobenius" else "soft"
        total = 0.0
        for m in ("image", "text"):
            assert out[f"cdl/{m}_holistic"].item() == pytest.approx(ref[f"{m}_{key}"].item(), rel=1e-4, abs=1e-7)
            assert out[f"cdl/{m}_code"].item() == pytest.approx(ref[f"{m}_code"].item(), rel=1e-5)
            total += weights[m][0] * ref[f"{m}_{key}"].item() + weights[m][1] * ref[f"{m}_code"].item()
        assert out["cdl"].item() == pytest.approx(total, rel=1e-4)
        # gradients: the batched, hand-differentiated path equals autograd through the loop reference
        params = [t.weight for t in tables.values()] + list(cdl.parameters())
        got = torch.autograd.grad(out["cdl"], params)
        ref_total = sum(weights[m][0] * ref[f"{m}_{key}"] + weights[m][1] * ref[f"{m}_code"] for m in weights)
        want = torch.autograd.grad(ref_total, params)
        for g, w in zip(got, want):
            g = g.to_dense() if g.is_sparse else g
            assert torch.allclose(g, w, rtol=1e-4, atol=1e-6)
        assert got[0].to_dense().abs().sum() > 0  # they reach the trainable modality tables


def test_two_layer_projection_parity_and_weight_zero_drops_heads():
    teacher = random_teacher(5)
    cdl = CDL(CDLConfig(weights={"image": [1.0, 0.0], "text": [0.0, 1.0]}, proj_layers=2), teacher, dim=4)
    assert isinstance(cdl.proj["image"], nn.Sequential) and len(cdl.proj["image"]) == 2
    assert "text" not in cdl.proj and "image" not in cdl.code_head
    assert cdl.code_head["text"][-1].out_features == teacher.n_codes


def test_pair_tensors_bounded_by_the_batch_not_the_catalogue():
    n, d = 1000, 4
    teacher = random_teacher(n, n_codes=3)
    tables = {m: nn.Embedding(n + 1, d) for m in ("image", "text")}
    cdl = CDL(CDLConfig(), teacher, dim=d)
    ids = torch.zeros(3, 20, dtype=torch.long)
    ids[0, -4:] = torch.tensor([10, 500, 10, 999])  # 3 unique
    ids[1, -2:] = torch.tensor([7, 8])
    ids[2, -1] = 3
    cdl(ids, tables)
    # i <= j valid pairs only: 6 + 3 + 1 per call, never N x N nor B x L x L
    assert max(teacher.calls) == 10


def test_bad_parameters_name_the_key():
    teacher = random_teacher(3)
    with pytest.raises(ParamError, match="holistic_loss"):
        CDL(CDLConfig(holistic_loss="mse"), teacher, dim=4)
    with pytest.raises(ParamError, match="tau"):
        CDL(CDLConfig(tau=0), teacher, dim=4)
    with pytest.raises(ParamError, match="weights.text"):
        CDL(CDLConfig(weights={"image": [1, 1]}), teacher, dim=4)
    with pytest.raises(ParamError, match="teacher"):
        CDL(CDLConfig(), None, dim=4)


def test_sequence_pairs_are_the_upper_pairs_of_the_dense_layout():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 12, (7, 9), generator=g)
    ids[0] = 0
    ids[1, :8] = 0
    ids[2] = 5
    for diagonal in (True, False):
        items = unique_items(ids)
        b, i, j, w = upper_pairs(pair_mask(items, diagonal))
        p = sequence_pairs(ids, diagonal)
        assert p.items[p.i].tolist() == items[b, i].tolist()  # same pairs, same (sequence, i, j) order
        assert p.items[p.j].tolist() == items[b, j].tolist()
        assert p.seq[p.i].tolist() == b.tolist()
        assert torch.where(p.offdiag, 2.0, 1.0).tolist() == w.tolist()


@pytest.mark.parametrize("xi", ["cos", "dot", "euclidean", "manhattan"])
def test_pair_list_losses_equal_the_dense_forms(xi):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 15, (6, 10), generator=g)
    ids[0, :9] = 0
    ids[3] = 0
    ids[3, -1] = 4
    z_all = torch.randn(16, 5, generator=g)
    R = torch.rand(16, 16, generator=g)
    R = (R + R.t()) / 2
    for diagonal in (True, False):
        items = unique_items(ids)
        mask = pair_mask(items, diagonal)
        r_dense = R[items[:, :, None], items[:, None, :]]
        p = sequence_pairs(ids, diagonal)
        r_hat = pair_xi(z_all[p.items], p.i, p.j, xi)
        r = R[p.items[p.i], p.items[p.j]]
        dense_hat = pairwise_xi(z_all[items], xi)
        assert torch.allclose(r_hat, dense_hat[p.seq[p.i], items_pos(p)[0], items_pos(p)[1]], atol=1e-4)
        for tau in (1.0, 1.5):
            assert frobenius_pairs(r_hat, r, p, tau).item() == pytest.approx(
                frobenius_loss(dense_hat, r_dense, mask, tau).item(), rel=1e-4)
            assert soft_match_pairs(r_hat, r, p, tau).item() == pytest.approx(
                soft_match_loss(dense_hat, r_dense, mask, tau).item(), rel=1e-4, abs=1e-8)


def items_pos(p):
    """Slots of the pairs' items in the left-padded ``unique_items`` layout."""
    counts = torch.bincount(p.seq, minlength=p.n_seq)
    U = int(counts.max())
    start = counts.cumsum(0) - counts
    slot = U - counts[p.seq] + (torch.arange(len(p.items)) - start[p.seq])
    return slot[p.i], slot[p.j]


class LookupTeacher(MatrixTeacher):
    """A teacher that also offers the fused ``lookup`` (as the distill stage's teacher does)."""

    def lookup(self, i, j, modality):
        self.calls.append(-i.numel())
        return self.R[modality][i, j], self.C[modality][i, j]


def test_fused_lookup_gives_the_same_losses_and_tables_get_dense_gradients():
    base = random_teacher(9, n_codes=4, seed=2)
    fused = LookupTeacher(base.R, base.C, base.n_codes)
    ids = torch.tensor([[0, 3, 1, 3, 7], [2, 5, 2, 9, 8], [0, 0, 0, 0, 6]])
    res = []
    for t in (base, fused):
        torch.manual_seed(0)
        tables = {m: nn.Embedding(10, 6) for m in ("image", "text")}
        torch.manual_seed(1)
        out = CDL(CDLConfig(), t, dim=6)(ids, tables)
        out["cdl"].backward()  # CDL alone: its sparse table gradient is made dense for the optimiser
        assert not tables["image"].weight.grad.is_sparse
        res.append((out, tables["text"].weight.grad))
    assert all(c < 0 for c in fused.calls) and all(c > 0 for c in base.calls)
    for k in res[0][0]:
        assert res[0][0][k].item() == pytest.approx(res[1][0][k].item(), rel=1e-6)
    assert torch.allclose(res[0][1], res[1][1])


def test_cdl_with_the_distill_stage_teacher(tmp_path):
    """The real teacher (fit, save, load): CDL's targets are its lookups, fused or not, and x sizes the code head."""
    from modalrec.teacher.teacher import Teacher, TeacherConfig, fit_teacher

    g = torch.Generator().manual_seed(0)
    n = 20
    comp = {m: torch.sigmoid(torch.randn(n + 1, 16, generator=g)) for m in ("image", "text")}
    for c in comp.values():
        c[0] = 0
    seqs = [torch.randint(1, n + 1, (6,), generator=g).numpy() for _ in range(30)]
    fitted, _ = fit_teacher(comp, seqs, TeacherConfig(D=4, codes=6, pairs_cooccur=400, pairs_random=400, seed=0),
                            progress=False)
    fitted.save(tmp_path)
    teacher = Teacher.load(tmp_path, comp)

    class Separate:  # the same teacher without the fused lookup
        xi, n_codes, device = teacher.xi, teacher.n_codes, teacher.device
        holistic, codes, holistic_block = teacher.holistic, teacher.codes, teacher.holistic_block

    ids = torch.tensor([[0, 3, 1, 3, 7], [2, 5, 2, 9, 8], [0, 0, 0, 0, 6]])
    outs = []
    for t in (teacher, Separate()):
        tables = {m: nn.Embedding.from_pretrained(comp[m].clone(), freeze=False) for m in comp}
        torch.manual_seed(1)
        cdl = CDL(CDLConfig(holistic_loss="frobenius"), t, dim=16)
        assert cdl.code_head["image"][-1].out_features == 6
        outs.append(cdl(ids, tables))
    for k in outs[0]:
        assert outs[0][k].item() == pytest.approx(outs[1][k].item(), rel=1e-6)
    # with g_φ = identity, the student's holistic scores are the teacher's (tables = m̃): the loss is ~0
    tables = {m: nn.Embedding.from_pretrained(comp[m].clone(), freeze=False) for m in comp}
    cdl = CDL(CDLConfig(holistic_loss="frobenius", weights={"image": [1.0, 0.0], "text": [1.0, 0.0]}), teacher, dim=16)
    with torch.no_grad():
        for m in comp:
            cdl.proj[m].weight.copy_(torch.eye(16))
            cdl.proj[m].bias.zero_()
    out = cdl(ids, tables)
    assert out["cdl/image_holistic"].item() < 1e-3 and out["cdl/text_holistic"].item() < 1e-3


def test_pair_cache_returns_the_teacher_values_and_fetches_each_pair_once():
    g = torch.Generator().manual_seed(0)
    fetched = []

    def fetch(a, b):
        fetched.append(torch.stack([a, b], 1))
        return (a * 1000 + b).float() / 7, (a + b) % 5

    cache = PairCache(10**6)
    for _ in range(60):
        i, j = torch.randint(1, 80, (2, 300), generator=g)
        i, j = torch.minimum(i, j), torch.maximum(i, j)
        h, c = cache.get(i, j, fetch, (True, True))
        assert torch.equal(h, (i * 1000 + j).float() / 7) and torch.equal(c, (i + j) % 5)
    pairs = torch.cat(fetched)
    assert len(pairs) == len(torch.unique(pairs, dim=0)) == len(cache)  # every pair asked once, all kept
    small = PairCache(50)  # the bound: pairs beyond it are fetched every time, never stored
    i = torch.arange(1, 101)
    small.get(i, i, fetch, (True, True))
    assert len(small) == 0
    small.get(i[:40], i[:40], fetch, (True, False))
    assert len(small) == 40 and small.get(i[:40], i[:40], fetch, (True, False))[1] is None


def test_cdl_reuses_teacher_answers_across_batches_with_the_same_losses():
    teacher = random_teacher(9, n_codes=4, seed=2)
    ids = torch.tensor([[0, 3, 1, 3, 7], [2, 5, 2, 9, 8], [0, 0, 0, 0, 6]])
    tables = {m: nn.Embedding(10, 6) for m in ("image", "text")}
    torch.manual_seed(1)
    cached = CDL(CDLConfig(), teacher, dim=6)
    torch.manual_seed(1)
    fresh = CDL(CDLConfig(teacher_cache=0), teacher, dim=6)
    first = cached(ids, tables)
    n = len(teacher.calls)
    again = cached(ids, tables)
    assert len(teacher.calls) == n  # every pair came from the cache
    cached(ids[:2], tables)
    assert len(teacher.calls) == n
    ref = fresh(ids, tables)
    assert len(teacher.calls) > n
    for k in first:
        assert first[k].item() == again[k].item() == pytest.approx(ref[k].item(), rel=1e-6)
    with pytest.raises(ParamError, match="teacher_cache"):
        CDL(CDLConfig(teacher_cache=-1), teacher, dim=6)


@pytest.mark.parametrize("diagonal", [True, False])
def test_prefill_asks_the_teacher_once_and_training_batches_need_no_more(diagonal):
    """CDL.prefill on all training windows: every pair once, in large batches; later batches (any subset of the
    windows, cropped like train_batches) hit the cache only, with the losses of a CDL without any cache. A cache
    bound smaller than the pairs stops the prefill there; the rest is still asked for batch by batch."""
    from modalrec.data.batching import train_batches, train_windows

    g = torch.Generator().manual_seed(3)
    n = 30
    teacher = random_teacher(n, n_codes=4, seed=5)
    seqs = [torch.randint(1, n + 1, (int(k),), generator=g).numpy() for k in torch.randint(2, 14, (40,), generator=g)]
    windows = train_windows(seqs, [len(q) for q in seqs], 6)
    inputs = torch.from_numpy(windows.items[:, :-1])
    tables = {m: nn.Embedding(n + 1, 6) for m in ("image", "text")}
    torch.manual_seed(1)
    cdl = CDL(CDLConfig(diagonal=diagonal), teacher, dim=6)
    torch.manual_seed(1)
    fresh = CDL(CDLConfig(diagonal=diagonal, teacher_cache=0), random_teacher(n, n_codes=4, seed=5), dim=6)
    n_pairs = cdl.prefill(inputs, chunk=7)
    pairs = sequence_pairs(inputs, diagonal)
    keys = pairs.items[pairs.i] * (n + 1) + pairs.items[pairs.j]
    assert n_pairs == len(cdl.cache) == len(torch.unique(keys))
    assert len(cdl.cache.segments) == 1  # compacted: one search a lookup
    asked = list(teacher.calls)
    assert sum(asked) == 2 * 2 * n_pairs  # each pair once, holistic and codes, both modalities
    for batch in train_batches(windows, 16, seed=0, epoch=1):
        got, ref = cdl(batch.input_ids, tables), fresh(batch.input_ids, tables)
        for k in ref:
            assert got[k].item() == pytest.approx(ref[k].item(), rel=1e-6)
    assert teacher.calls == asked  # training asked the teacher nothing more
    counted = random_teacher(n, n_codes=4, seed=5)
    torch.manual_seed(1)
    small = CDL(CDLConfig(diagonal=diagonal, teacher_cache=n_pairs // 2), counted, dim=6)
    assert small.prefill(inputs, chunk=7) == n_pairs // 2
    assert sum(counted.calls) == 2 * 2 * (n_pairs // 2)  # asked about the pairs it keeps, no more
    for batch in train_batches(windows, 16, seed=0, epoch=2):
        got, ref = small(batch.input_ids, tables), fresh(batch.input_ids, tables)
        for k in ref:
            assert got[k].item() == pytest.approx(ref[k].item(), rel=1e-6)
    assert CDL(CDLConfig(teacher_cache=0), teacher, dim=6).prefill(inputs) == 0


@pytest.mark.parametrize("n_mod", [1, 2])
def test_code_head_backward_equals_autograd(n_mod):
    """The code head's hand-written backward against autograd through the same modules: the loss, the gradients
    of both pair ends and of every head parameter, with an exact zero difference (|x|' = 0 there, like autograd)
    and a different upstream gradient per modality."""
    torch.manual_seed(0)
    d, x, P, n_diag = 8, 5, 40, 7
    heads = [nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, x)).double() for _ in range(n_mod)]
    K = 15
    E = torch.randn(n_mod, K, d, dtype=torch.float64, requires_grad=True)
    ia, ib = torch.randint(0, K, (2, P))
    ib = torch.where(ia == ib, (ib + 1) % K, ib)
    with torch.no_grad():
        E[0, 3] = E[0, 4]  # pair 0 (rows 3 and 4): an exact zero difference in modality 0
    ia[0], ib[0] = 3, 4
    t_off, t_diag = torch.randint(0, x, (n_mod, P)), torch.randint(0, x, (n_mod, n_diag))
    params = [E] + [p for h in heads for p in h.parameters()]
    up = torch.tensor([0.7, -1.3][:n_mod], dtype=torch.float64)
    got = code_head_nll(E, ia, ib, heads, t_off, t_diag)
    want = code_head_nll_reference(E, ia, ib, heads, t_off, t_diag)
    assert torch.allclose(got, want, rtol=1e-12)
    grads = torch.autograd.grad((got * up).sum(), params)
    for g, w in zip(grads, torch.autograd.grad((want * up).sum(), params)):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)
    assert grads[0][0].abs().sum(-1).gt(0).sum() > K // 2  # (rows used by several pairs add up)


@pytest.mark.parametrize("diagonal", [True, False])
def test_soft_match_backward_equals_autograd(diagonal):
    """The soft-match loss's hand-written backward against autograd, one row of scores per modality, each with its
    own upstream gradient; the teacher's side gets no gradient."""
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(0, 20, (5, 9), generator=g)
    ids[1, :8] = 0
    p = sequence_pairs(ids, diagonal)
    P = p.i.shape[0]
    r_hat = torch.randn(2, P, dtype=torch.float64, generator=g, requires_grad=True)
    r = torch.randn(2, P, dtype=torch.float64, generator=g)
    up = torch.tensor([0.6, -1.7], dtype=torch.float64)
    for tau in (0.5, 1.5):
        got, want = soft_match_pairs(r_hat, r, p, tau), soft_match_pairs_reference(r_hat, r, p, tau)
        assert got.shape == (2,) and torch.allclose(got, want, rtol=1e-12)
        assert torch.allclose(torch.autograd.grad((got * up).sum(), r_hat)[0],
                              torch.autograd.grad((want * up).sum(), r_hat)[0], rtol=1e-10, atol=1e-14)
    one = soft_match_pairs(r_hat[0], r[0], p, 1.5)  # no leading dims
    assert one.shape == () and torch.allclose(one, soft_match_pairs_reference(r_hat[0], r[0], p, 1.5), rtol=1e-12)


def test_pair_row_sums_sparse_and_index_add_agree_with_a_loop():
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 30, (7, 12), generator=g)
    ids[2, :10] = 0
    p = sequence_pairs(ids, diagonal=False)
    K, P = p.items.shape[0], p.i.shape[0]
    v = torch.randn(2, P, 4, dtype=torch.float64, generator=g)
    want = torch.zeros(2, K, 4, dtype=torch.float64)
    for q in range(P):
        want[:, p.i[q]] += v[:, q]
        want[:, p.j[q]] -= v[:, q]
    for sparse in (True, False):
        assert torch.allclose(pair_row_sums(v, p.i, p.j, K, sparse=sparse), want, rtol=1e-12, atol=1e-12)
    empty = pair_row_sums(v[:, :0], p.i[:0], p.j[:0], K, sparse=True)
    assert empty.shape == (2, K, 4) and not empty.any()


@pytest.mark.parametrize("xi", ["cos", "dot"])
def test_block_gram_scores_and_gradients_equal_the_pair_gather(xi):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 25, (6, 11), generator=g)
    ids[0, :9] = 0
    ids[4] = 0
    p = sequence_pairs(ids)
    z = torch.randn(2, p.items.shape[0], 5, dtype=torch.float64, generator=g)
    z[0, 2] = 0  # a zero row: F.normalize's eps floor (its cosines are 0, and so is the gradient's radial part)
    z[1, 3] *= 1e-9
    z.requires_grad_(True)
    up = torch.randn(2, p.i.shape[0], dtype=torch.float64, generator=g)
    got, want = block_xi(z, p, xi), pair_xi(z, p.i, p.j, xi)
    assert torch.allclose(got, want, rtol=1e-12)
    assert torch.allclose(torch.autograd.grad((got * up).sum(), z)[0], torch.autograd.grad((want * up).sum(), z)[0],
                          rtol=1e-10, atol=1e-12)


def test_pair_cache_keeps_one_column_per_modality():
    def fetch(a, b):
        return torch.stack([(a * 100 + b).float(), -(a + b).float()], 1), torch.stack([a % 3, b % 5], 1)

    cache = PairCache(10**6)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        i, j = torch.randint(1, 40, (2, 50), generator=g)
        i, j = torch.minimum(i, j), torch.maximum(i, j)
        h, c = cache.get(i, j, fetch, (True, True))
        h_want, c_want = fetch(i, j)
        assert torch.equal(h, h_want) and torch.equal(c, c_want) and c.dtype == torch.long


@pytest.mark.parametrize("diagonal", [True, False])
def test_batches_without_pairs_give_zero_and_leave_the_cache_usable(diagonal):
    teacher = random_teacher(9, n_codes=4)
    tables = {m: nn.Embedding(10, 6) for m in ("image", "text")}
    for form in ("frobenius", "soft_match"):
        cdl = CDL(CDLConfig(holistic_loss=form, diagonal=diagonal), teacher, dim=6)
        empty = cdl(torch.zeros(3, 5, dtype=torch.long), tables)
        empty["cdl"].backward()
        assert empty["cdl"].item() == 0
        out = cdl(torch.tensor([[0, 3, 4, 3, 3], [0, 0, 0, 0, 5]]), tables)  # then a batch with pairs
        assert out["cdl"].item() > 0 and len(cdl.cache) > 0
