"""Full-ranking evaluation and the protocol switches of the papers (paper-notes §1.10, §3.8, §4.3).

Every instance is scored against **every** item (no sampled negatives), batched on the model's device. Switches:

- ``mask_history``: set the scores of the items in the instance's history ``items[:p]`` (untruncated) to -inf before
  ranking, **except the target itself** (a repeated purchase stays rankable; ODMT's code would mask it away and
  make it unhittable — we deliberately don't). KDSR and RecBole: off; ODMT: on.
- ``aggregate``: mean over instances (KDSR) or over users (ODMT; each user's instances averaged first).
- ``ties``: optimistic (strictly-higher count, default) or pessimistic; see :mod:`modalrec.evaluate.metrics`.
- ``select_on``: ``valid`` (the epoch chosen on validation, test reported there; default) or ``test_max``
  (KDSR's released code: for each metric the best value over the epochs on test; flagged ``paper_parity``).

Memory: a model whose scores are dot products (``score_factors``: the ID/modality backbones, KDSR) is ranked
``item_chunk`` items at a time once the catalogue is larger than that (:func:`~.metrics.chunked_target_ranks`:
O(batch x chunk) memory, the same ranks); smaller catalogues, and other models, are scored in one [batch, N+1] piece.
``item_chunk`` and ``batch_size`` are not part of the protocol: they never change a rank.

Under a process group (``torchrun``), rank r scores the batches r, r + K, ... and the ranks are gathered before any
metric is computed, so every rank gets the metrics of the whole split (not an average of per-rank metrics).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.batching import EvalInstances
from ..errors import ParamError
from ..params import dataclass_from
from .metrics import AGGREGATES, TIES, chunked_target_ranks, compute_metrics, target_ranks

SELECT = ("valid", "test_max")


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    mask_history: bool = False
    aggregate: str = "instance"  # instance | user
    ties: str = "optimistic"  # optimistic | pessimistic
    select_on: str = "valid"  # valid | test_max
    batch_size: int = 512
    item_chunk: int = 65536  # items scored at once in full ranking (memory batch_size x item_chunk)

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ParamError("evaluate.aggregate", f"must be one of {AGGREGATES}, got {self.aggregate!r}")
        if self.ties not in TIES:
            raise ParamError("evaluate.ties", f"must be one of {TIES}, got {self.ties!r}")
        if self.select_on not in SELECT:
            raise ParamError("evaluate.select_on", f"must be one of {SELECT}, got {self.select_on!r}")
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise ParamError("evaluate.ks", f"must be a non-empty list of positive integers, got {self.ks!r}")
        for k in ("batch_size", "item_chunk"):
            if int(getattr(self, k)) < 1:
                raise ParamError(f"evaluate.{k}", "must be >= 1")

    @classmethod
    def from_params(cls, section: dict[str, Any], key: str = "evaluate") -> "EvalConfig":
        return dataclass_from(cls, section, key)

    def protocol(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("batch_size")
        d.pop("item_chunk")
        return d


@dataclass
class EvalResult:
    metrics: dict[str, float]  # "hr@10", ..., and "<branch>/hr@10" for multi-branch models
    ranks: np.ndarray  # [I] 0-based ranks of the main score, in the instances' order
    branch_ranks: dict[str, np.ndarray]
    seconds: float
    n: int

    @property
    def scores_per_second(self) -> float:
        return 0.0 if self.seconds <= 0 else self.n / self.seconds


@torch.inference_mode()
def rank_instances(model: torch.nn.Module, inst: EvalInstances, cfg: EvalConfig, device: torch.device | str,
                   progress: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """0-based target ranks for every instance (main score and per-branch scores), in ``inst`` order."""
    was_training = model.training
    model.eval()
    ranks = np.zeros(len(inst), dtype=np.int64)
    branch_ranks: dict[str, np.ndarray] = {}
    has_branches = callable(getattr(model, "score_branches", None))
    factors = getattr(model, "score_factors", None)  # (user vectors, item table) of dot-product scorers
    chunked = callable(factors) and model.item_representations().shape[0] > int(cfg.item_chunk)
    it = inst.batches(int(cfg.batch_size))
    n_batches = -(-len(inst) // int(cfg.batch_size))
    rank, world = _world()
    for bi, (rows, inp, tgt) in enumerate(tqdm(it, total=n_batches, desc=f"eval {inst.split}", leave=False,
                                               disable=None if progress and rank == 0 else True)):
        if bi % world != rank:
            continue
        inp, tgt = inp.to(device, non_blocking=True), tgt.to(device, non_blocking=True)
        if cfg.mask_history:
            b, items = inst.full_history(rows)
            b_t, i_t = torch.from_numpy(b).to(device), torch.from_numpy(items).to(device)
        uv = factors(inp) if chunked else None
        if uv is not None:  # a large catalogue: ranked chunk by chunk
            ranks[rows] = chunked_target_ranks(uv[0], uv[1], tgt, int(cfg.item_chunk), cfg.ties,
                                               (b_t, i_t) if cfg.mask_history else None).cpu().numpy()
            outs = model.score_branches(inp) if has_branches else {}
        else:
            outs = {"": model.score_all(inp)}
            if has_branches:
                outs.update(model.score_branches(inp))
        for name, s in outs.items():
            s = s.float()
            if cfg.mask_history:
                t_score = s.gather(1, tgt.view(-1, 1)).clone()
                s = s.index_put((b_t, i_t), torch.tensor(float("-inf"), device=s.device))
                s.scatter_(1, tgt.view(-1, 1), t_score)
            r = target_ranks(s, tgt, cfg.ties).cpu().numpy()
            if name == "":
                ranks[rows] = r
            else:
                branch_ranks.setdefault(name, np.zeros(len(inst), dtype=np.int64))[rows] = r
    model.train(was_training)
    if world > 1:
        ranks, branch_ranks = _gather(ranks, branch_ranks, len(inst))
    return ranks, branch_ranks


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(ranks: np.ndarray, branch_ranks: dict[str, np.ndarray], n: int):
    """Every rank filled the rows of its own batches (zeros elsewhere): the sum over ranks is the whole split."""
    import torch.distributed as dist

    names: list[list[str]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(names, sorted(branch_ranks))
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    out = []
    for name in ["", *sorted({b for ns in names for b in ns})]:
        r = ranks if name == "" else branch_ranks.get(name, np.zeros(n, dtype=np.int64))
        t = torch.from_numpy(np.ascontiguousarray(r)).to(dev)
        dist.all_reduce(t)
        out.append((name, t.cpu().numpy()))
    return out[0][1], dict(out[1:])


def evaluate(model: torch.nn.Module, inst: EvalInstances, cfg: EvalConfig, device: torch.device | str,
             n_items: int | None = None, progress: bool = True) -> EvalResult:
    """Rank every instance of ``inst`` and average the metrics under ``cfg``'s protocol."""
    t0 = time.perf_counter()
    ranks, branch_ranks = rank_instances(model, inst, cfg, device, progress)
    secs = time.perf_counter() - t0
    m = compute_metrics(ranks, cfg.ks, inst.users, cfg.aggregate)
    for name, r in branch_ranks.items():
        m.update({f"{name}/{k}": v for k, v in compute_metrics(r, cfg.ks, inst.users, cfg.aggregate).items()})
    n_scores = len(inst) * (n_items if n_items is not None else 0)
    return EvalResult(m, ranks, branch_ranks, secs, n_scores or len(inst))
