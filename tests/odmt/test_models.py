"""ODMT's item tower masks and initialisation, its training step and scores, and the SASRec+EF/LF baselines."""

import numpy as np
import pytest
import torch

from modalrec.errors import ParamError
from modalrec.models import build_model
from modalrec.models.odmt import cls_features

from .helpers import batch_from_windows, context, random_windows

N, MAX_LEN = 40, 6





def test_id_mask_keeps_modality_outputs_id_free():
    ctx = context(N, MAX_LEN)
    ids = torch.arange(1, N + 1)
    for id_mask, expect_free in [(True, True), (False, False)]:
        torch.manual_seed(0)
        m = build_model("odmt", {"id_mask": id_mask}, ctx).eval()
        before = m.tower(ids)
        with torch.no_grad():
            m.tower.id_emb.weight.add_(torch.randn_like(m.tower.id_emb.weight))
        after = m.tower(ids)
        assert not torch.allclose(before["id"], after["id"])  # the ID token does read the ID embedding
        for b in ("text", "image"):
            assert torch.allclose(before[b], after[b], atol=1e-6) == expect_free, (id_mask, b)


def test_modality_tokens_cannot_attend_the_id_token_but_the_id_token_attends_all():
    ctx = context(N, MAX_LEN)
    torch.manual_seed(0)
    m = build_model("odmt", {}, ctx).eval()
    ids = torch.arange(1, 5)
    # changing only image tokens changes the ID output (ID attends to them) and the text output (shared IMT)
    base = m.tower(ids)
    img = ctx.tokens["image"]
    img.tokens = np.array(img.tokens)
    img.tokens[1:5] += np.float16(1.0)
    moved = m.tower(ids)
    assert not torch.allclose(base["id"], moved["id"])
    assert not torch.allclose(base["text"], moved["text"])


def test_id_initialisation_from_cls_features():
    ctx = context(N, MAX_LEN, same_width=True)
    t, v = cls_features(ctx.tokens["text"]), cls_features(ctx.tokens["image"])
    w = {init: build_model("odmt", {"id_init": init}, ctx).tower.id_emb.weight.detach().numpy()
         for init in ("avg", "text", "image", "random")}
    np.testing.assert_allclose(w["avg"][1:], (t[1:] + v[1:]) / 2, rtol=1e-6)
    np.testing.assert_allclose(w["text"][1:], t[1:], rtol=1e-6)
    np.testing.assert_allclose(w["image"][1:], v[1:], rtol=1e-6)
    assert w["random"].shape == (N + 1, 64) and not np.allclose(w["random"][1:, :16], t[1:])
    # different widths: the paper's fallback (concatenation), recorded in init_note
    m = build_model("odmt", {"id_init": "avg"}, context(N, MAX_LEN))
    assert m.tower.id_emb.weight.shape[1] == 16 + 12 and "concatenated" in m.tower.init_note


def test_global_token_is_the_masked_mean_for_grids_without_cls():
    ctx = context(N, MAX_LEN)
    img = ctx.tokens["image"]
    img.meta["cls_token"] = False
    g = cls_features(img)
    np.testing.assert_allclose(g[3], img.tokens[3].astype(np.float32).mean(0), rtol=1e-5)
    torch.manual_seed(0)
    m = build_model("odmt", {}, ctx).eval()
    x, mask = m.tower._tokens("image", torch.tensor([3, 4]), torch.device("cpu"))
    assert x.shape[1] == img.tokens.shape[1] + 1 and bool(mask.all())


def test_training_reads_only_the_batch_items():
    ctx = context(N, MAX_LEN)
    torch.manual_seed(0)
    m = build_model("odmt", {}, ctx)
    seen = []
    orig = m.tower.forward
    m.tower.forward = lambda ids: seen.append(ids.clone()) or orig(ids)
    b = batch_from_windows([[1, 2, 3], [3, 7, 7, 9]], MAX_LEN)
    m.loss(b)["loss"].backward()
    assert [s.tolist() for s in seen] == [[1, 2, 3, 7, 9]]


@pytest.mark.parametrize("tower_batch", [7, 1000])
def test_scores_are_the_branch_average_and_chunking_does_not_matter(tower_batch):
    ctx = context(N, MAX_LEN)
    torch.manual_seed(0)
    m = build_model("odmt", {"tower_batch": tower_batch}, ctx).eval()
    ids = batch_from_windows(random_windows(5, N, 3), MAX_LEN).input_ids
    branches = m.score_branches(ids)
    assert set(branches) == {"text", "image", "id"}
    s = m.score_all(ids)
    assert s.shape == (5, N + 1) and torch.isinf(s[:, 0]).all()
    assert torch.allclose(s[:, 1:], torch.stack([v[:, 1:] for v in branches.values()]).mean(0))
    torch.manual_seed(0)
    ref = build_model("odmt", {"tower_batch": 1000}, ctx).eval()
    assert torch.allclose(s[:, 1:], ref.score_all(ids)[:, 1:], atol=1e-4)
    # the catalogue cache is dropped when the model trains again
    assert m._catalogue is not None
    m.train()
    assert m._catalogue is None


def test_rampup_weight_follows_the_epoch_hook():
    m = build_model("odmt", {"alpha": 20.0}, context(N, MAX_LEN))
    m.on_epoch_start(1)
    w1 = m.kd_weight
    m.on_epoch_start(20)
    assert w1 == pytest.approx(0.011, abs=1e-3) and m.kd_weight == 1.0


VARIANTS = {
    "odmt": {},
    "text_init": {"id_init": "text"}, "image_init": {"id_init": "image"}, "no_init": {"id_init": "random"},
    "no_id_mask": {"id_mask": False},
    "no_imt1": {"tower": "separate", "tower_layers": 2}, "no_imt2": {"tower": "separate", "tower_layers": 1},
    "no_od": {"objective": "late_fusion"}, "no_id": {"use_id": False, "id_init": "random"},
    "kl_detached": {"kd_form": "kl", "detach_teacher": True},
}


BASELINES = {"sasrec_lf": {"tower": "separate", "id_init": "random", "objective": "late_fusion"},
             "sasrec_ef": {"tower": "separate", "id_init": "random", "fusion": "early", "objective": "independent"}}


@pytest.mark.parametrize("arch,cfg", [("odmt", c) for c in {**VARIANTS, **BASELINES}.values()],
                         ids=list(VARIANTS) + list(BASELINES))
def test_one_epoch_smoke(arch, cfg):
    """A short epoch of AdamW steps: finite losses that go down, gradients reaching the tower and encoders."""
    ctx = context(N, MAX_LEN, same_width=True)
    torch.manual_seed(0)
    m = build_model(arch, dict(cfg), ctx)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.1)
    windows = random_windows(16, N, 5)
    m.on_epoch_start(1)
    losses = []
    for step in range(8):
        batch = batch_from_windows(windows, MAX_LEN)
        out = m.loss(batch)
        opt.zero_grad()
        out["loss"].backward()
        if step == 0:
            assert all(p.grad is not None for n, p in m.named_parameters() if "users" in n or "heads" in n), arch
        torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
        opt.step()
        losses.append(out["loss"].item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    m.eval()
    s = m.score_all(batch.input_ids)
    assert s.shape == (16, N + 1) and torch.isfinite(s[:, 1:]).all()
    assert (m.score_branches(batch.input_ids) == {}) == (cfg.get("fusion") == "early")


def test_bad_options_name_the_parameter():
    with pytest.raises(ParamError, match="models.odmt.tower"):
        build_model("odmt", {"tower": "nope"}, context(N, MAX_LEN))
    with pytest.raises(ParamError, match="models.odmt.modalities"):
        ctx = context(N, MAX_LEN)
        del ctx.tokens["image"]
        build_model("odmt", {}, ctx)
    with pytest.raises(ParamError, match="models.sasrec_ef.objective"):
        build_model("sasrec_ef", {**BASELINES["sasrec_ef"], "objective": "online_distill"}, context(N, MAX_LEN),
                    arch="odmt")


def test_real_memory_mapped_token_caches(tmp_path):
    """The encode stage's writer/loader: read-only fp16 views, one training step and scores through them."""
    from modalrec.encode.cache import TokenWriter, load_tokens
    from modalrec.models.base import ModelContext
    from modalrec.models.odmt import ODMT

    rng = np.random.default_rng(0)
    caches = {}
    for m, (T, d) in {"text": (5, 16), "image": (4, 12)}.items():
        with TokenWriter(tmp_path / f"{m}_tokens.arrow", N, T, d) as w:
            w.write(np.arange(1, N + 1), rng.standard_normal((N, T, d)), np.ones((N, T), bool))
            w.close({"family": "test"})
        caches[m] = load_tokens(tmp_path / f"{m}_tokens.arrow")
        assert caches[m].tokens.dtype == np.float16 and not caches[m].tokens.flags.writeable
    assert ODMT.required_inputs(ODMT.Config()) == ["tokens/text", "tokens/image"]
    ctx = ModelContext(n_items=N, max_len=MAX_LEN, tokens=caches, item_counts=torch.ones(N + 1))
    torch.manual_seed(0)
    m = build_model("odmt", {}, ctx)
    m.loss(batch_from_windows(random_windows(4, N, 1), MAX_LEN))["loss"].backward()
    assert torch.isfinite(m.eval().score_all(torch.tensor([[0, 1, 2, 3, 4, 5]]))[:, 1:]).all()


def test_single_modality_runs():
    ctx = context(N, MAX_LEN)
    del ctx.tokens["image"]
    with pytest.raises(ParamError, match="models.odmt.id_init"):
        build_model("odmt", {"modalities": ["text"]}, ctx)
    m = build_model("odmt", {"modalities": ["text"], "id_init": "text"}, ctx)
    assert m.branches == ["text", "id"]
    m.loss(batch_from_windows(random_windows(4, N, 2), MAX_LEN))["loss"].backward()


def test_loss_is_the_summed_branch_ces_plus_the_ramped_distillation():
    """ODMT's objective: Σ_b CE_b + w(epoch) · Σ pairs D (T from the config); late fusion: one CE on the mean."""
    import torch.nn.functional as F

    from modalrec.losses.online_distill import online_distillation, rampup_weight

    ctx = context(N, MAX_LEN)
    b = batch_from_windows(random_windows(6, N, 4), MAX_LEN)
    for cfg in ({"T": 0.3, "alpha": 4.0}, {"T": 0.7, "alpha": 4.0, "kd_form": "kl", "detach_teacher": True}):
        torch.manual_seed(0)
        m = build_model("odmt", cfg, ctx).eval()  # eval: no dropout, so two passes agree
        m.on_epoch_start(2)
        out = m.loss(b)
        logits, cand = m.branch_logits(b)
        ce = sum(F.cross_entropy(z + cand.log_count, cand.label_col) for z in logits.values())
        kd = sum(online_distillation(logits, cfg["T"], cfg.get("kd_form", "soft_ce"),
                                     log_count=cand.log_count).values())
        w = rampup_weight(2, 4.0)
        assert out["kd_weight"].item() == pytest.approx(w) and 0 < w < 1
        assert out["loss"].item() == pytest.approx((ce + w * kd).item(), rel=1e-5)
    torch.manual_seed(0)
    m = build_model("odmt", {"objective": "late_fusion"}, ctx).eval()
    logits, cand = m.branch_logits(b)
    ens = torch.stack(list(logits.values())).mean(0)
    assert m.loss(b)["loss"].item() == pytest.approx(F.cross_entropy(ens + cand.log_count, cand.label_col).item(),
                                                     rel=1e-5)


def test_training_logits_are_debiased_by_training_popularity_but_scores_are_raw():
    from modalrec.losses.inbatch import log_popularity

    ctx = context(N, MAX_LEN)
    skewed = context(N, MAX_LEN)
    skewed.item_counts = torch.arange(N + 1, dtype=torch.float32) ** 3  # very different popularity
    b = batch_from_windows(random_windows(5, N, 6), MAX_LEN)
    models = {}
    for name, c, debias in (("base", ctx, True), ("plain", ctx, False), ("skewed", skewed, True)):
        torch.manual_seed(0)
        models[name] = build_model("odmt", {"debias": debias}, c).eval()
    assert torch.allclose(models["base"].log_pop, log_popularity(ctx.item_counts))
    (zb, cand), (zp, _) = models["base"].branch_logits(b), models["plain"].branch_logits(b)
    keep = ~cand.mask
    shift = -models["base"].log_pop[cand.col_items].expand_as(keep)
    for br in zb:
        assert torch.allclose((zb[br] - zp[br])[keep], shift[keep], atol=1e-4)
    ids = b.input_ids
    s = {k: m.score_all(ids) for k, m in models.items()}
    assert torch.equal(s["base"], s["plain"]) and torch.equal(s["base"], s["skewed"])


def test_one_user_encoder_and_one_leaky_relu_head_per_branch():
    m = build_model("odmt", {}, context(N, MAX_LEN))
    assert set(m.users) == set(m.tower.heads) == {"text", "image", "id"}
    ptrs = [{p.data_ptr() for p in m.users[b].parameters()} for b in m.users]
    assert all(not (a & c) for i, a in enumerate(ptrs) for c in ptrs[i + 1:])  # no shared weights
    for head in m.tower.heads.values():
        assert [type(x).__name__ for x in head] == ["Linear", "LeakyReLU", "Linear"]


def test_cuda_style_autocast_keeps_the_in_batch_logits_float32():
    """The trainer autocasts on CUDA only; under autocast the in-batch logits and losses stay float32."""
    from types import SimpleNamespace

    from modalrec.train.trainer import TrainConfig, Trainer

    with Trainer._autocast(SimpleNamespace(device=torch.device("cpu"), cfg=TrainConfig(amp=True))):
        assert not torch.is_autocast_enabled("cpu")
    m = build_model("odmt", {}, context(N, MAX_LEN))
    b = batch_from_windows(random_windows(4, N, 8), MAX_LEN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = m.branch_logits(b)
        out = m.loss(b)
    assert all(z.dtype == torch.float32 for z in logits.values()) and torch.isfinite(out["loss"])


class _ReadTracker:
    """A read-only array stand-in that records the shape of every slice the model reads and forbids whole
    conversions (``np.asarray(cache.tokens)``)."""

    def __init__(self, arr, log):
        self.arr, self.log, self.shape, self.dtype = arr, log, arr.shape, arr.dtype

    def __getitem__(self, idx):
        out = self.arr[idx]
        self.log.append((out.shape, out.dtype))
        return out

    def __array__(self, *a, **k):
        raise AssertionError("the whole token cache was converted")


def test_token_caches_are_read_in_bounded_fp16_slices():
    """No float32 (or any) copy of the whole catalogue: every read of token rows covers at most one chunk of
    ``max(1024 for the ID initialisation, tower_batch, a batch's items)`` rows and comes back fp16."""
    n = 1100  # more rows than the 1024-row chunk of the ID initialisation
    ctx = context(n, MAX_LEN)
    ctx.tokens["image"].meta["cls_token"] = False  # also the masked-mean path of CNN grids
    logs = []
    for c in ctx.tokens.values():
        c.tokens = _ReadTracker(c.tokens, logs)
    torch.manual_seed(0)
    m = build_model("odmt", {"tower_batch": 300}, ctx)
    m.loss(batch_from_windows(random_windows(8, n, 9), MAX_LEN))["loss"].backward()
    m.eval().score_all(torch.tensor([[0, 1, 2, 3, 4, 5]]))
    full = [s for s, _ in logs if len(s) == 3]
    assert full and max(s[0] for s in full) <= 1024 < n + 1
    assert all(dt == np.float16 for _, dt in logs)
