"""The fast ODMT training path against a straightforward reference kept here.

The fast path (``models/odmt.py``: ``run_block`` with explicit attention, sparse dropout and last-block rows,
the chunked fp16 projection; ``losses/inbatch.py``: one column per distinct item with occurrence counts;
``losses/online_distill.py``: shared log-softmaxes, masked teacher probabilities) must compute the same function as
the plain computation: the engine's ``Block`` steps one by one, a float32 copy of the token rows, the released code's
occurrence columns (the original ``build_candidates`` / ``inbatch_logits`` / ``distill_loss``, copied below).

Dropout: the fast path draws its masks with ``dropped_positions`` (geometric gaps; another random stream than
``nn.Dropout``'s Bernoulli masks, same distribution). The reference draws its masks with the same function, in the
same order and sizes, and applies them the plain way (``x * mask / (1 - p)``); positions no output reads (the
tower's last block outside its CLS / ID rows) get no mask in either. With dropout 0 the reference is also checked
against the engine's own ``Block.forward`` / ``SASRecEncoder.forward``. Losses and parameters after a few AdamW steps
agree to float rounding (summation orders differ: grouped softmax sums, chunked weight gradients).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modalrec.losses.inbatch import MASK_VALUE
from modalrec.models import build_model
from modalrec.models.odmt import dropped_positions, has_cls_token

from .helpers import batch_from_windows, context, random_windows

N, MAX_LEN = 40, 6

CONFIGS = {
    "odmt": {},
    "odmt_kl": {"kd_form": "kl", "detach_teacher": True},
    "odmt_no_id": {"use_id": False, "id_init": "random"},
    "odmt_no_id_mask": {"id_mask": False},
    "odmt_no_imt2": {"tower": "separate", "tower_layers": 1},
    "sasrec_lf": {"tower": "separate", "id_init": "random", "objective": "late_fusion"},
    "sasrec_ef": {"tower": "separate", "id_init": "random", "fusion": "early", "objective": "independent"},
}


# ---------------------------------------------------------------------------------------------------------------
# reference: dropout masks from the same draws, applied the plain way


def ref_dropout(x, p, training):
    if not training or p == 0.0:
        return x
    keep = torch.ones(x.numel(), dtype=x.dtype)
    keep[dropped_positions(x.numel(), p, x.device)] = 0.0
    return x * keep.view_as(x) * (1.0 / (1.0 - p))


def ref_block(blk, x, keep, rows=None):
    """The engine's post-LN ReLU block, step by step; ``rows``: the query positions whose output is read (the others
    are dropped before their dropout masks are drawn)."""
    p = blk.attn.dropout
    U, S, d = x.shape
    H = blk.attn.heads
    q, k, v = blk.attn.qkv(x).view(U, S, 3, H, d // H).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // H)
    probs = torch.softmax(scores.masked_fill(~keep, -math.inf), dim=-1)  # [U, H, S, S]
    res = x
    if rows is not None:
        probs, res = probs[:, :, rows], x[:, rows]
    y = (ref_dropout(probs, p, blk.training) @ v).transpose(1, 2).reshape(U, res.shape[1], d)
    x = blk.ln1(res + ref_dropout(blk.attn.out(y), p, blk.training))
    h = ref_dropout(torch.relu(blk.ffn[0](x)), p, blk.training)
    return blk.ln2(x + ref_dropout(blk.ffn[3](h), p, blk.training))


def ref_tokens(tower, m, ids):
    cache = tower.caches[m]
    idx = ids.numpy()
    tok = torch.from_numpy(np.array(cache.tokens[idx], dtype=np.float32))  # the whole block as float32
    mask = torch.from_numpy(np.array(cache.mask[idx]))
    x = tower.proj[m](tok)
    if not has_cls_token(cache):
        w = mask.unsqueeze(-1).float()
        x = torch.cat([(x * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1.0), x], dim=1)
        mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
    mask = mask.clone()
    mask[:, 0] = True
    return x, mask


def ref_tower(tower, ids):
    cfg, p = tower.cfg, tower.cfg.dropout
    feats = {m: ref_tokens(tower, m, ids) for m in cfg.modalities}
    out = {}
    if cfg.tower == "imt":
        xs = [feats[m][0] for m in cfg.modalities]
        keys = [feats[m][1] for m in cfg.modalities]
        if cfg.use_id:
            xs.append(tower.id_proj(tower.id_emb(ids)).unsqueeze(1))
            keys.append(torch.ones(len(ids), 1, dtype=torch.bool))
        x = ref_dropout(torch.cat(xs, dim=1), p, tower.training)
        key = torch.cat(keys, dim=1)
        S = x.shape[1]
        keep = key.unsqueeze(1).expand(-1, S, -1).clone()
        if cfg.use_id and cfg.id_mask:
            keep[:, :-1, -1] = False
        starts = np.cumsum([0] + [feats[m][0].shape[1] for m in cfg.modalities]).tolist()
        rows = starts[:-1] + ([S - 1] if cfg.use_id else [])
        for i, blk in enumerate(tower.blocks):
            x = ref_block(blk, x, keep.unsqueeze(1), rows if i == len(tower.blocks) - 1 else None)
        names = list(cfg.modalities) + (["id"] if cfg.use_id else [])
        out = {name: x[:, i] for i, name in enumerate(names)}
    else:
        for m in cfg.modalities:
            x, key = feats[m]
            x = ref_dropout(x, p, tower.training)
            for i, blk in enumerate(tower.mod_blocks[m]):
                x = ref_block(blk, x, key[:, None, None, :], [0] if i == len(tower.mod_blocks[m]) - 1 else None)
            out[m] = x[:, 0]
        if cfg.use_id:
            out["id"] = tower.id_proj(tower.id_emb(ids))
    return {b: tower.heads[b](out[b]) for b in tower.branches}


def ref_user(user, item_vecs, input_ids):
    enc = user.encoder
    pad = input_ids == 0
    L = input_ids.shape[1]
    keep = (~pad).unsqueeze(-1).float()
    x = ref_dropout(user.ln(item_vecs) + enc.pos(torch.arange(enc.max_len - L, enc.max_len)), enc.drop.p,
                    user.training) * keep
    mask = enc.attention_mask(pad)
    for blk in enc.blocks:
        x = ref_block(blk, x, mask) * keep
    return x


# the released code's occurrence columns: build_candidates / inbatch_logits / distill_loss before the grouping


def occurrence_candidates(input_ids, targets):
    B, L = input_ids.shape
    window = torch.cat([input_ids, targets[:, -1:]], dim=1)
    col_items = torch.cat([input_ids.reshape(-1), targets[:, -1]])
    in_window = (window.unsqueeze(2) == col_items.view(1, 1, -1)).any(dim=1)
    qb, qt = torch.nonzero(targets, as_tuple=True)
    label_col = torch.where(qt < L - 1, qb * L + qt + 1, B * L + qb)
    mask = in_window[qb] | (col_items == 0).unsqueeze(0)
    mask[torch.arange(qb.numel()), label_col] = False
    return col_items, label_col, qb * L + qt, mask


def occurrence_logits(queries, columns, col_items, mask, log_pop):
    z = queries @ columns.T
    if log_pop is not None:
        z = z - log_pop[col_items].unsqueeze(0)
    return z.masked_fill(mask, MASK_VALUE)


def ref_distill(student, teacher, T, form, detach):
    if detach:
        teacher = teacher.detach()
    log_p_s = F.log_softmax(student / T, dim=-1)
    log_p_t = F.log_softmax(teacher / T, dim=-1)
    if form == "soft_ce":
        per_row = -(log_p_t.exp() * log_p_s).sum(dim=-1)
    else:
        per_row = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=-1)
    return (T * T) * per_row.mean()


def ref_loss(model, batch):
    """ODMT.loss the plain way."""
    cfg = model.cfg
    input_ids, targets = batch.input_ids, batch.targets
    col_items, label_col, query_index, mask = occurrence_candidates(input_ids, targets)
    uniq, inverse = torch.unique(torch.cat([input_ids.reshape(-1), col_items]), return_inverse=True)
    nonzero = uniq != 0
    reps = ref_tower(model.tower, uniq[nonzero])
    if cfg.fusion == "early":
        reps = {"fused": torch.stack(list(reps.values())).mean(dim=0)}
    n_in = input_ids.numel()
    pad = (input_ids == 0).unsqueeze(-1)
    logits = {}
    for b in model.branches:
        table = reps[b].new_zeros(len(uniq), cfg.d)
        table[nonzero] = reps[b]
        seq = table[inverse[:n_in].view_as(input_ids)].masked_fill(pad, 0.0)
        states = ref_user(model.users[b], seq, input_ids)
        logits[b] = occurrence_logits(states.reshape(-1, cfg.d)[query_index], table[inverse[n_in:]], col_items, mask,
                                      model.log_pop if cfg.debias else None)
    if cfg.objective == "late_fusion":
        return F.cross_entropy(torch.stack(list(logits.values())).mean(dim=0), label_col)
    total = sum(F.cross_entropy(z, label_col) for z in logits.values())
    if cfg.objective == "online_distill" and len(logits) > 1:
        ens = torch.stack(list(logits.values())).mean(dim=0)
        kd = sum(ref_distill(z, ens if name == "id" or "id" not in logits else logits["id"], cfg.T, cfg.kd_form,
                             cfg.detach_teacher) for name, z in logits.items())
        total = total + model.kd_weight * kd
    return total


# ---------------------------------------------------------------------------------------------------------------


def _train(model, loss_fn, batches, seed):
    """SGD steps (Adam would blow the float noise of gradients that are exactly 0 in exact arithmetic, e.g. the key
    bias's, up to ±lr); returns the losses and every step's gradients."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses, grads = [], []
    for step, batch in enumerate(batches):
        torch.manual_seed(seed + step)  # the same random stream for both paths, step by step
        loss = loss_fn(model, batch)
        opt.zero_grad()
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
    return losses, grads


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fast_training_steps_match_the_reference(name, dropout):
    ctx = context(N, MAX_LEN, same_width=True)
    torch.manual_seed(0)
    fast = build_model("odmt", {**CONFIGS[name], "dropout": dropout, "alpha": 2.0}, ctx)
    ref = copy.deepcopy(fast)
    for m in (fast, ref):
        m.train()
        m.on_epoch_start(1)  # kd weight exp(-5/4): the distillation term counts
    batches = [batch_from_windows(random_windows(12, N, s, lo=2, hi=9), MAX_LEN) for s in range(4)]
    got, got_grads = _train(fast, lambda m, b: m.loss(b)["loss"], batches, 100)
    want, want_grads = _train(ref, ref_loss, batches, 100)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    gf, gr = got_grads[0], want_grads[0]  # the first step starts from the same parameters
    assert gf.keys() == gr.keys()
    for k in gr:
        assert (gf[k] - gr[k]).abs().max() <= 1e-5 * gr[k].abs().max() + 1e-8, k
    # later steps: the rounding differences grow a little (more where an activation sits at a ReLU's kink)
    for (k, a), (_, b) in zip(fast.state_dict().items(), ref.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), k


@pytest.mark.parametrize("tower", ["imt", "separate"])
def test_reference_blocks_are_the_engine_blocks_without_dropout(tower):
    """With dropout 0 the reference above is the engine's own ``Block.forward`` / ``SASRecEncoder.forward`` (so the
    test above compares the fast path with the original model, up to the random stream)."""
    ctx = context(N, MAX_LEN, same_width=True)
    ctx.tokens["image"].meta["cls_token"] = False  # also the masked-mean global token
    torch.manual_seed(0)
    m = build_model("odmt", {"tower": tower, "dropout": 0.0}, ctx).train()
    ids = torch.arange(1, N + 1)
    x, key = ref_tokens(m.tower, "text", ids)
    blk = (m.tower.blocks if tower == "imt" else m.tower.mod_blocks["text"])[0]
    keep = key[:, None, None, :]
    assert torch.allclose(ref_block(blk, x, keep), blk(x, keep), atol=1e-5)
    assert torch.allclose(ref_block(blk, x, keep, [0, 2]), blk(x, keep)[:, [0, 2]], atol=1e-5)
    b = batch_from_windows(random_windows(6, N, 1), MAX_LEN)
    user = m.users["id"]
    v = torch.randn(*b.input_ids.shape, m.cfg.d)
    assert torch.allclose(ref_user(user, v, b.input_ids), user.encoder(user.ln(v), b.input_ids == 0), atol=1e-5)
    # the fast tower and user encoder against the reference (and so against the engine blocks)
    assert all(torch.allclose(m.tower(ids)[k], r, atol=1e-5) for k, r in ref_tower(m.tower, ids).items())
    assert torch.allclose(user(v, b.input_ids), ref_user(user, v, b.input_ids), atol=1e-5)
    m.eval()  # scoring: SDPA's fused kernel, the last position only
    s = user(v, b.input_ids, last_only=True)[:, -1]
    assert torch.allclose(s, ref_user(user, v, b.input_ids)[:, -1], atol=1e-5)


def test_dropped_positions_are_independent_bernoulli_draws():
    torch.manual_seed(0)
    n, p = 200_000, 0.1
    hits = torch.zeros(n)
    reps = 20
    pairs = 0
    for _ in range(reps):
        pos = dropped_positions(n, p, torch.device("cpu"))
        assert pos.dtype == torch.int64 and bool((pos[1:] > pos[:-1]).all()) and 0 <= int(pos[0]) and pos[-1] < n
        hits[pos] += 1
        pairs += int((pos[1:] - pos[:-1] == 1).sum())
    rate = hits.mean().item() / reps
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / (n * reps))
    assert abs(pairs / (n * reps) - p * p) < 4 * math.sqrt(p * p / (n * reps))  # neighbours dropped together: p²
    first = hits[:1000].mean().item() / reps  # the first positions are no different from the rest
    assert abs(first - p) < 4 * math.sqrt(p * (1 - p) / (1000 * reps))
    torch.manual_seed(1)
    a = dropped_positions(1000, 0.5, torch.device("cpu"))
    torch.manual_seed(1)
    assert torch.equal(a, dropped_positions(1000, 0.5, torch.device("cpu")))
    assert len(dropped_positions(0, 0.1, torch.device("cpu"))) == 0

