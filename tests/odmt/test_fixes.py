"""The fixes of issue 19 against hand computations: the capped ramp and ramp_fraction, the two loss forms with and
without a detached teacher, the per-user candidate mask, the ID initialisation from the pooled sentence vector and
standardised modalities, and the user encoders (sasrec / gru4rec / nextitnet) on the ODMT framework."""

import math

import numpy as np
import pytest
import torch

from modalrec.errors import ParamError
from modalrec.losses.inbatch import build_candidates, inbatch_ce, inbatch_logits
from modalrec.losses.online_distill import online_distillation, rampup_weight
from modalrec.models import build_model
from modalrec.models.base import Batch
from modalrec.models.odmt import pooled_features, standardise
from modalrec.runs import ramp_length, resolve_run

from .helpers import FakeTokenCache, batch_from_windows, context, random_windows

N, MAX_LEN = 40, 6


# ---------------------------------------------------------------------------------------------------------- ramp
def test_capped_ramp_by_hand():
    # w = max · exp(-5 (1 - e/α)²): α = 10, max 0.2
    assert rampup_weight(5, 10, 0.2) == pytest.approx(0.2 * math.exp(-5 * 0.25))
    assert rampup_weight(10, 10, 0.2) == pytest.approx(0.2)
    assert rampup_weight(15, 10, 0.2) == pytest.approx(0.2)
    assert rampup_weight(3, 0.5, 0.2) == pytest.approx(0.1)  # α < 1: constant α, scaled too
    assert rampup_weight(10, 20) == pytest.approx(math.exp(-5 * 0.25))  # the released ramp is unchanged


def test_ramp_fraction_ends_the_ramp_within_the_epoch_cap():
    assert ramp_length(0.5, 20) == 10.0 and ramp_length(1.0, 20) == 20.0 and ramp_length(0.01, 20) == 1.0
    assert ramp_length(0.25, 30) == 8.0  # round(7.5) = 8 (banker's rounding) -> full weight at epoch 8
    with pytest.raises(ParamError, match="odmt.ramp_fraction"):
        ramp_length(1.5, 20)


def _params(odmt=None, entry=None):
    return {"base": {"dataset": "synthetic", "seeds": [1]}, "train": {"epochs": 40, "device": "cpu"},
            "odmt": {"train": {"epochs": 20}, "datasets": {"synthetic": {"T": 0.5, "alpha": 20}}, **(odmt or {})},
            "models": {"odmt": {"arch": "odmt", **(entry or {})}, "sasrec": {"arch": "sasrec"}}}


def test_resolve_run_folds_ramp_fraction_into_alpha():
    assert resolve_run(_params(), "odmt").cfg["alpha"] == 20  # the dataset's value when no fraction is set
    spec = resolve_run(_params({"ramp_fraction": 0.5, "kd_max_weight": 0.3}), "odmt")
    assert spec.cfg["alpha"] == 10.0 and spec.cfg["kd_max_weight"] == 0.3 and spec.train.epochs == 20
    # the entry's own fraction wins, and it follows the run's own epoch cap
    spec = resolve_run(_params({"ramp_fraction": 0.5}, {"ramp_fraction": 0.25, "train": {"epochs": 8}}), "odmt")
    assert spec.cfg["alpha"] == 2.0
    with pytest.raises(ParamError, match="models.odmt.ramp_fraction"):
        resolve_run(_params({"ramp_fraction": "half"}), "odmt")
    assert "ramp_fraction" not in resolve_run(_params({"ramp_fraction": 0.5}), "sasrec").cfg  # other families


def test_early_stopping_waits_for_the_end_of_the_ramp():
    """wait_for_ramp: a distilling run's min_epochs = ceil(alpha) + patience (train section: patience 5 unless set);
    runs without distillation, with a constant weight, without the rule, or without early stopping keep 0."""
    ramp = {"ramp_fraction": 0.5, "wait_for_ramp": True}
    spec = resolve_run(_params(ramp), "odmt")  # alpha 10 of a 20-epoch cap
    assert spec.train.min_epochs == 10 + spec.train.patience == 15
    spec = resolve_run(_params({"wait_for_ramp": True}, {"alpha": 7.5, "train": {"epochs": 30, "patience": 3}}), "odmt")
    assert spec.train.min_epochs == 8 + 3  # ceil(7.5): the first epoch at full weight, then patience
    for odmt, entry in [({"ramp_fraction": 0.5}, None),  # the released code: no rule
                        (ramp, {"objective": "late_fusion"}), (ramp, {"objective": "independent"}),
                        (ramp, {"kd_max_weight": 0.0}), ({"wait_for_ramp": True}, {"alpha": 0.5}),
                        (ramp, {"train": {"patience": 0}}), (ramp, {"wait_for_ramp": False})]:
        assert resolve_run(_params(odmt, entry), "odmt").train.min_epochs == 0, (odmt, entry)
    assert resolve_run(_params(ramp), "sasrec").train.min_epochs == 0  # other families


def test_model_weight_reaches_the_cap_at_the_end_of_the_ramp():
    m = build_model("odmt", {"alpha": 4.0, "kd_max_weight": 0.2}, context(N, MAX_LEN))
    ws = []
    for e in range(1, 7):
        m.on_epoch_start(e)
        ws.append(m.kd_weight)
    assert ws[:4] == pytest.approx([0.2 * math.exp(-5 * (1 - e / 4) ** 2) for e in range(1, 5)])
    assert ws[3:] == [pytest.approx(0.2)] * 3
    m.train()
    out = m.loss(batch_from_windows(random_windows(6, N, 0), MAX_LEN))
    assert out["kd_weight"].item() == pytest.approx(0.2)
    assert out["loss"].item() == pytest.approx(out["ce"].item() + 0.2 * out["kd"].item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------------- loss forms
def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("form", ["soft_ce", "kl"])
@pytest.mark.parametrize("detach", [False, True])
def test_loss_forms_and_detach_by_hand(form, detach):
    """One query, three columns, branches text / image / id: each term computed with math by hand."""
    T = 0.5
    raw = {"text": [1.0, 0.0, -1.0], "image": [0.5, 0.5, 0.0], "id": [2.0, -1.0, 0.0]}
    z = {k: torch.tensor([v], requires_grad=True) for k, v in raw.items()}
    out = online_distillation(z, T, form, detach)
    ens = [sum(raw[k][c] for k in raw) / 3 for c in range(3)]
    teacher = {"text": raw["id"], "image": raw["id"], "id": ens}
    for s in raw:
        p_s = _softmax([v / T for v in raw[s]])
        p_t = _softmax([v / T for v in teacher[s]])
        ce = -sum(a * math.log(b) for a, b in zip(p_t, p_s))
        kl = sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
        assert out[s].item() == pytest.approx(T * T * (ce if form == "soft_ce" else kl), rel=1e-5), s
    # gradients: with a detached teacher only the students' own logits move; d(loss)/d(z_s) = T (p_s - p_t) either
    # way (the teacher entropy in soft CE has no student gradient)
    total = sum(out.values())
    total.backward()
    if detach:
        for s in raw:
            p_s = _softmax([v / T for v in raw[s]])
            p_t = _softmax([v / T for v in teacher[s]])
            np.testing.assert_allclose(z[s].grad[0].numpy(), [T * (a - b) for a, b in zip(p_s, p_t)], rtol=1e-5)
    else:  # the ID logits also get the teacher gradients of text <- id and image <- id (mutual learning)
        p_id = _softmax([v / T for v in raw["id"]])
        p_ens = _softmax([v / T for v in ens])
        own = [T * (a - b) for a, b in zip(p_id, p_ens)]
        assert not np.allclose(z["id"].grad[0].numpy(), own, rtol=1e-3)


# --------------------------------------------------------------------------------------------- per-user masking
def test_per_user_mask_by_hand():
    """User 7 has two windows in the batch ([1, 2, 3] and [4, 5]), user 8 one ([2, 6]). Columns: items 1..6."""
    b = batch_from_windows([[1, 2, 3], [4, 5], [2, 6]], max_len=2)
    users = torch.tensor([7, 7, 8])
    win = build_candidates(b.input_ids, b.targets)
    usr = build_candidates(b.input_ids, b.targets, users)
    assert win.col_items.tolist() == usr.col_items.tolist() == [1, 2, 3, 4, 5, 6]
    assert win.label_col.tolist() == usr.label_col.tolist() == [1, 2, 4, 5]  # targets 2, 3 | 5 | 6
    T, F = True, False
    assert win.mask.tolist() == [[T, F, T, F, F, F],   # window [1,2,3], label 2: its own 1 and 3 masked
                                 [T, T, F, F, F, F],   # label 3
                                 [F, F, F, T, F, F],   # window [4,5], label 5: only 4 masked
                                 [F, T, F, F, F, F]]   # user 8, label 6: its own 2 masked
    assert usr.mask.tolist() == [[T, F, T, T, T, F],   # ... plus the other window's 4 and 5
                                 [T, T, F, T, T, F],
                                 [T, T, T, T, F, F],   # ... plus the other window's 1, 2, 3
                                 [F, T, F, F, F, F]]   # one window: unchanged
    # item 2 occurs twice (users 7 and 8): a negative worth log 2 for window [4, 5] only under the window rule
    assert win.log_count[2, 1].item() == pytest.approx(math.log(2)) and usr.log_count[2, 1].item() == 0.0
    # the loss by hand for the query of window [4, 5] (label 5) under the user rule: negatives are item 6 only
    vec, state = torch.randn(7, 3, generator=torch.Generator().manual_seed(0)), torch.randn(6, 3)
    z = inbatch_logits(state[usr.query_index], vec[usr.col_items], usr, None)
    q = state[usr.query_index[2]]
    want = -torch.log_softmax(torch.stack([q @ vec[5], q @ vec[6]]), 0)[0]
    got = torch.nn.functional.cross_entropy((z + usr.log_count)[2:3], usr.label_col[2:3])
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert torch.isfinite(inbatch_ce(z, usr))


def test_user_mask_reaches_the_model_loss():
    ctx = context(N, MAX_LEN)
    wins = random_windows(8, N, 3, lo=4, hi=7)
    b = batch_from_windows(wins, MAX_LEN)
    losses = {}
    for mode in ("window", "user"):
        torch.manual_seed(0)
        m = build_model("odmt", {"user_mask": mode, "dropout": 0.0}, ctx).train()
        distinct = m.loss(b)["loss"].item()
        shared = m.loss(Batch(b.input_ids, b.targets, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])))["loss"].item()
        losses[mode] = (distinct, shared)
    assert losses["window"][0] == pytest.approx(losses["user"][0], rel=1e-6)  # one window a user: the same
    assert losses["window"][1] == pytest.approx(losses["window"][0], rel=1e-6)  # the window rule ignores users
    assert losses["user"][1] != pytest.approx(losses["user"][0], rel=1e-4)  # shared users: fewer negatives


# ------------------------------------------------------------------------------------------------ ID initialisation
def _text_cache():
    tok = np.array([[[0, 0], [0, 0], [0, 0]],
                    [[3, 4], [1, 0], [9, 9]],      # item 1: two valid tokens, the third is padding
                    [[0, 2], [2, 0], [2, 2]],      # item 2: three valid tokens
                    [[5, 0], [0, 0], [0, 0]]], dtype=np.float16)  # item 3: one token
    mask = np.array([[0, 0, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=bool)
    return FakeTokenCache(tok, mask, {})


def test_sentence_vector_is_the_normalised_masked_mean_by_hand():
    c = _text_cache()
    got = pooled_features(c, "sentence")
    want = np.array([[0, 0], [2, 2], [4 / 3, 4 / 3], [5, 0]], dtype=np.float32)  # masked means
    want[1:] /= np.linalg.norm(want[1:], axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(pooled_features(c, "first"), c.tokens[:, 0].astype(np.float32))
    np.testing.assert_allclose(pooled_features(c, "mean")[1], [2, 2])


def test_standardise_by_hand():
    x = np.array([[9, 9], [1, 10], [3, 10], [0, 0]], dtype=np.float32)  # item 3 has no feature
    has = np.array([False, True, True, False])
    z = standardise(x, has)
    # dim 0: mean 2, sd 1 -> -1, 1; dim 1: no spread, sd clamped to 1e-3 -> 0, 0
    np.testing.assert_allclose(z, [[0, 0], [-1, 0], [1, 0], [0, 0]], atol=1e-6)


def test_id_table_starts_from_the_standardised_sentence_vectors():
    ctx = context(N, MAX_LEN, d_text=16, d_image=12)
    text, image = ctx.tokens["text"], ctx.tokens["image"]
    m = build_model("odmt", {"id_init": "avg", "init_text_pool": "sentence", "init_standardise": True}, ctx)
    w = m.tower.id_emb.weight.detach().numpy()
    assert w.shape == (N + 1, 28) and np.all(w[0] == 0)
    # by hand: masked mean -> L2 norm -> z-score per dimension over items 1..N; image: token 0 z-scored
    t = np.stack([text.tokens[i][text.mask[i]].astype(np.float64).mean(0) for i in range(1, N + 1)])
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    v = image.tokens[1:, 0].astype(np.float64)
    zt, zv = (t - t.mean(0)) / t.std(0), (v - v.mean(0)) / v.std(0)
    # concatenated with an equal share of the norm: sqrt(28 / (2 * 16)) and sqrt(28 / (2 * 12))
    np.testing.assert_allclose(w[1:, :16], zt * math.sqrt(28 / 32), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(w[1:, 16:], zv * math.sqrt(28 / 24), rtol=1e-4, atol=1e-4)
    # the released initialisation is unchanged: raw token 0 of each
    raw = build_model("odmt", {"id_init": "avg"}, ctx).tower.id_emb.weight.detach().numpy()
    np.testing.assert_allclose(raw[1:, :16], text.tokens[1:, 0].astype(np.float32), rtol=1e-6)


@pytest.mark.slow
def test_sentence_vector_from_the_token_cache_is_minilms_own():
    """The real MiniLM (packaged offline weights): the sentence pooling of its token-level output is the vector
    sentence-transformers pooling gives (masked mean + L2 norm) at the same max_length, and token 0 is not it."""
    from modalrec.encode.registry import EncoderConfig, build_encoder

    texts = ["star wars. action adventure sci-fi. a farm boy joins a rebellion against an empire.",
             "toy story. animation children's comedy.", "a short one."]
    cfg = dict(family="sentence_transformers", weights="all-MiniLM-L6-v2", max_length=30, device="cpu")
    h, mask = build_encoder(EncoderConfig(**cfg, pooling="tokens"), "text").forward(texts)
    sent = build_encoder(EncoderConfig(**cfg, pooling="auto"), "text").forward(texts).numpy()
    cache = FakeTokenCache(np.concatenate([np.zeros((1, *h.shape[1:])), h.numpy()]).astype(np.float16),
                           np.concatenate([np.zeros((1, mask.shape[1]), bool), mask.numpy()]), {})
    got = pooled_features(cache, "sentence")[1:]
    np.testing.assert_allclose(got, sent, atol=3e-3)
    cls = pooled_features(cache, "first")[1:]
    cos = (cls * sent).sum(1) / np.linalg.norm(cls, axis=1)
    assert cos.max() < 0.9


# ------------------------------------------------------------------------------------------------- user encoders
@pytest.mark.parametrize("enc", ["sasrec", "gru4rec", "nextitnet"])
@pytest.mark.parametrize("objective", ["online_distill", "late_fusion"])
def test_user_encoders_smoke(enc, objective):
    ctx = context(N, MAX_LEN)
    torch.manual_seed(0)
    extra = {} if objective == "online_distill" else {"tower": "separate", "id_init": "random"}
    m = build_model("odmt", {"user_encoder": enc, "objective": objective, "conv_dilations": [1, 2],
                             "conv_blocks": 1, **extra}, ctx)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()
    for s in range(2):
        out = m.loss(batch_from_windows(random_windows(8, N, s), MAX_LEN))
        assert torch.isfinite(out["loss"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert all(not torch.equal(before[k], v) for k, v in m.state_dict().items() if k.startswith("users.id.")
               and k.endswith("weight") and "ln" not in k)
    m.eval()
    short, padded = torch.tensor([[3, 7, 9]]), torch.tensor([[0, 0, 0, 3, 7, 9]])
    s = m.score_all(short)
    assert s.shape == (1, N + 1) and torch.isinf(s[:, 0]).all() and torch.isfinite(s[:, 1:]).all()
    torch.testing.assert_close(s, m.score_all(padded), atol=1e-5, rtol=1e-5)  # padding is invisible
    branches = m.score_branches(padded)
    assert set(branches) == {"text", "image", "id"}
    # the scoring path (last position only) gives the training path's last state
    cat = m.catalogue()
    for b, user in m.users.items():
        vecs = cat[b][padded]
        torch.testing.assert_close(user(vecs, padded, last_only=True)[:, -1], user(vecs, padded)[:, -1],
                                   atol=1e-5, rtol=1e-5)


def test_user_encoder_choice_is_checked():
    with pytest.raises(ParamError, match="models.odmt.user_encoder"):
        build_model("odmt", {"user_encoder": "bert4rec"}, context(N, MAX_LEN))


def test_a_fixed_alpha_next_to_a_ramp_fraction_is_refused():
    from modalrec.errors import ParamError

    p = _params()
    p["odmt"]["ramp_fraction"], p["odmt"]["alpha"] = 0.5, 5
    with pytest.raises(ParamError, match="odmt.alpha"):
        resolve_run(p, "odmt")
    p["odmt"]["ramp_fraction"] = None
    assert resolve_run(p, "odmt").cfg["alpha"] == 5


# ------------------------------------------------------------------------------------------------------ ID only
def test_id_only_sasrec_on_the_odmt_trainer():
    """``modalities: []`` is the ID-only SASRec with ODMT's data, trainer and in-batch loss (the studies' baseline):
    one ``id`` branch that reads no token cache; without a random ID table it is refused by name."""
    from modalrec.models.odmt import ODMT

    cfg = {"modalities": [], "tower": "separate", "id_init": "random", "objective": "independent"}
    assert ODMT.required_inputs(ODMT.Config(**cfg)) == []
    ctx = context(N, MAX_LEN)
    ctx.tokens = None  # no token cache at all
    torch.manual_seed(0)
    m = build_model("odmt", cfg, ctx)
    assert m.branches == ["id"] and not any(k.startswith("tower.proj") for k in m.state_dict())
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    m.train()
    batch = batch_from_windows(random_windows(16, N, 0), MAX_LEN)
    losses = []
    for _ in range(8):
        out = m.loss(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < losses[0]
    m.eval()
    padded = torch.tensor([[0, 0, 0, 3, 7, 9]])
    s = m.score_all(padded)
    assert s.shape == (1, N + 1) and torch.isinf(s[:, 0]).all() and torch.isfinite(s[:, 1:]).all()
    torch.testing.assert_close(s, m.score_all(torch.tensor([[3, 7, 9]])), atol=1e-5, rtol=1e-5)
    with pytest.raises(ParamError, match="models.odmt.modalities"):
        build_model("odmt", {**cfg, "id_init": "text"}, context(N, MAX_LEN))
    with pytest.raises(ParamError, match="models.odmt.modalities"):
        build_model("odmt", {**cfg, "modalities": ["text", "text"]}, context(N, MAX_LEN))
