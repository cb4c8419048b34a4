"""The teacher on a small catalogue: on-the-fly scores and codes equal a brute-force dense computation; codes are in
range and deterministic for a seed; save/load round-trips and refuses m̃ it was not fitted on; pair sampling."""

import numpy as np
import pytest
import torch

from modalrec.errors import DataError, ParamError
from modalrec.teacher.teacher import Teacher, TeacherConfig, fit_teacher, sample_pairs

N, DIM, D = 40, 16, 4


def catalogue(seed=0):
    g = torch.Generator().manual_seed(seed)
    comp = {m: torch.rand(N + 1, DIM, generator=g) for m in ("image", "text")}
    for z in comp.values():
        z[0] = 0            # padding
    comp["image"][7] = 0    # an item without an image
    return comp


def sequences(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, N + 1, size=rng.integers(2, 9)) for _ in range(60)]


def dense(z: np.ndarray, codebook: np.ndarray, xi: str):
    """Brute force in float64: the released code's N×N holistic matrix, N×N×D dissected tensor and N×N codes."""
    def xi_fn(a, b):  # a [..., d], b [..., d]
        if xi == "cos":
            na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
            den = na * nb
            return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1), 0.0)
        if xi == "dot":
            return (a * b).sum(-1)
        if xi == "euclidean":
            return np.linalg.norm(a - b, axis=-1)
        return np.abs(a - b).sum(-1)

    z = z.astype(np.float64)
    R = xi_fn(z[:, None, :], z[None, :, :])
    parts = z.reshape(len(z), D, -1)
    V = xi_fn(parts[:, None], parts[None, :])                         # [N+1, N+1, D]
    dist = ((V[..., None, :] - codebook.astype(np.float64)) ** 2).sum(-1)  # [N+1, N+1, x]
    srt = np.sort(dist, -1)
    return R, dist.argmin(-1), srt[..., 1] - srt[..., 0]


@pytest.mark.parametrize("xi", ["cos", "dot", "euclidean", "manhattan"])
def test_on_the_fly_equals_brute_force(xi):
    comp = catalogue()
    teacher, stats = fit_teacher(comp, sequences(), TeacherConfig(D=D, codes=6, xi=xi, pairs_cooccur=2000,
                                                                  pairs_random=2000, seed=5), progress=False)
    ii, jj = torch.meshgrid(torch.arange(N + 1), torch.arange(N + 1), indexing="ij")
    for m in ("image", "text"):
        R, C, margin = dense(comp[m].numpy(), teacher.codebooks[m].numpy(), xi)
        clear = margin > 1e-5  # float32 vs float64 may only disagree on near-ties
        assert clear.mean() > 0.99
        hol, codes = teacher.lookup(ii, jj, m)
        np.testing.assert_allclose(hol.numpy(), R, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(teacher.holistic(ii, jj, m).numpy(), R, rtol=1e-5, atol=1e-5)
        assert np.array_equal(codes.numpy()[clear], C[clear])
        assert np.array_equal(teacher.codes(ii, jj, m).numpy(), codes.numpy())
        # the within-row fast path: full matrices and selected pairs
        items = torch.tensor([[3, 7, 0, 12], [40, 1, 2, 2]])
        mh, mc = teacher.batch_lookup(items, m)
        a, b = items[:, :, None].expand(2, 4, 4), items[:, None, :].expand(2, 4, 4)
        np.testing.assert_allclose(mh.numpy(), R[a, b], rtol=1e-5, atol=1e-5)
        ok = clear[a, b]
        assert np.array_equal(mc.numpy()[ok], C[a, b][ok])
        bb, i, j = torch.tensor([0, 1, 1]), torch.tensor([0, 0, 2]), torch.tensor([1, 3, 3])
        ph, pc = teacher.batch_lookup(items, m, bb, i, j)
        torch.testing.assert_close(ph, mh[bb, i, j])
        assert torch.equal(pc, mc[bb, i, j])
    assert set(stats["modalities"]) == {"image", "text"}


def test_codes_in_range_and_deterministic():
    comp = catalogue()
    cfg = TeacherConfig(D=D, codes=8, pairs_cooccur=3000, pairs_random=1000, seed=11, exact=False)
    t1, s1 = fit_teacher(comp, sequences(), cfg, progress=False)
    t2, s2 = fit_teacher(comp, sequences(), TeacherConfig(D=D, codes=8, pairs_cooccur=3000, pairs_random=1000,
                                                           seed=11, exact=False), progress=False)
    i = torch.randint(0, N + 1, (500,), generator=torch.Generator().manual_seed(0))
    j = torch.randint(0, N + 1, (500,), generator=torch.Generator().manual_seed(1))
    for m in comp:
        c = t1.codes(i, j, m)
        assert c.dtype == torch.long and c.min() >= 0 and c.max() < 8
        assert torch.equal(c, t2.codes(i, j, m))
        assert torch.equal(c, t1.codes(j, i, m))  # correlations are symmetric, so are the codes
        torch.testing.assert_close(t1.codebooks[m], t2.codebooks[m], rtol=0, atol=0)
    assert s1["modalities"]["image"]["histogram"] == s2["modalities"]["image"]["histogram"]
    assert sum(s1["modalities"]["text"]["histogram"]) == 4000
    assert t1.n_codes == {"image": 8, "text": 8}


def test_save_load_round_trip_and_stale_inputs(tmp_path):
    comp = catalogue()
    teacher, stats = fit_teacher(comp, sequences(), TeacherConfig(D=D, codes=5, pairs_cooccur=1000,
                                                                  pairs_random=1000), progress=False)
    teacher.save(tmp_path / "teacher", stats)
    loaded = Teacher.load(tmp_path / "teacher", comp)
    assert loaded.xi == "cos" and loaded.D == D and loaded.n_codes == {"image": 5, "text": 5}
    i, j = torch.arange(N + 1), torch.arange(N + 1).flip(0)
    for m in comp:
        assert torch.equal(loaded.codes(i, j, m), teacher.codes(i, j, m))
    other = catalogue(seed=1)
    with pytest.raises(DataError, match="re-run the distill stage"):
        Teacher.load(tmp_path / "teacher", other)
    with pytest.raises(DataError, match="compressed vectors"):
        Teacher.load(tmp_path / "teacher", {"text": comp["text"]})
    with pytest.raises(DataError, match="teacher.pt is missing"):
        Teacher.load(tmp_path / "nowhere", comp)


def test_bad_parameters():
    comp = catalogue()
    with pytest.raises(ParamError, match=r"kdsr\.D.*does not divide"):
        fit_teacher(comp, sequences(), TeacherConfig(D=5), progress=False)
    with pytest.raises(ParamError, match="kdsr.codes"):
        fit_teacher(comp, sequences(), TeacherConfig(codes=0), progress=False)
    with pytest.raises(ParamError, match="kdsr.xi"):
        TeacherConfig.from_params({"xi": "pearson"})
    with pytest.raises(ParamError, match="kdsr.pairs.sample"):
        TeacherConfig.from_params({"pairs": {"sample": 3}})
    with pytest.raises(ParamError, match="kdsr.pairs.exact"):
        fit_teacher({"image": torch.rand(5001, 16)}, None, TeacherConfig(D=4, codes=4, exact=True), progress=False)


def test_pair_sample_comes_from_sequences_and_is_seeded():
    seqs = [np.array([1, 2, 2, 3]), np.array([4, 5])]
    pairs, counts = sample_pairs(seqs, n_items=9, n_cooccur=3000, n_random=1000, seed=0)
    assert pairs.shape == (4000, 2) and counts == {"cooccur": 3000, "random": 1000}
    co = pairs[:3000]
    same_seq = (np.isin(co, [1, 2, 3]).all(1)) | (np.isin(co, [4, 5]).all(1))
    assert same_seq.all()
    # sequence 1 has 3 unique items (9 ordered pairs), sequence 2 has 2 (4 pairs): drawn in proportion 9:4
    assert np.isin(co[:, 0], [1, 2, 3]).mean() == pytest.approx(9 / 13, abs=0.03)
    assert (co[:, 0] == co[:, 1]).any()            # the diagonal is included, as CDL supervises it
    assert pairs[3000:].min() >= 1 and pairs[3000:].max() <= 9
    again, _ = sample_pairs(seqs, n_items=9, n_cooccur=3000, n_random=1000, seed=0)
    assert np.array_equal(pairs, again)


def test_exact_mode_uses_all_pairs():
    comp = {"text": catalogue()["text"]}
    teacher, stats = fit_teacher(comp, None, TeacherConfig(D=D, codes=4, exact=True), progress=False)
    assert stats["pairs"]["total"] == N * N and stats["pairs"]["exact"]
    # auto: all pairs once the sample would be at least as large as N² (here 1600 <= 2000), else the sample
    _, auto = fit_teacher(comp, sequences(), TeacherConfig(D=D, codes=4, pairs_cooccur=1000, pairs_random=1000),
                          progress=False)
    assert auto["pairs"]["total"] == N * N and auto["pairs"]["exact"]
    _, sampled = fit_teacher(comp, sequences(), TeacherConfig(D=D, codes=4, pairs_cooccur=1000, pairs_random=500),
                             progress=False)
    assert sampled["pairs"]["total"] == 1500 and not sampled["pairs"]["exact"]
    with pytest.raises(ParamError, match="kdsr.pairs.exact"):
        TeacherConfig.from_params({"pairs": {"exact": "sometimes"}})
