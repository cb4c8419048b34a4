"""The rank processes of tests/train/test_ddp.py (spawned; a module of its own so that they can import it)."""

import json
from pathlib import Path

import numpy as np
import torch

from modalrec.data.batching import eval_instances, train_windows
from modalrec.evaluate.protocol import EvalConfig
from modalrec.models import ModelContext, build_model
from modalrec.train.trainer import TrainConfig, Trainer

N, MAXLEN = 30, 5


def data():
    rng = np.random.default_rng(1)
    seqs = [rng.integers(1, N + 1, size=int(rng.integers(5, 10))) for _ in range(30)]
    nt = np.array([len(s) - 2 for s in seqs])
    nv = np.ones(len(seqs), dtype=int)
    w = train_windows(seqs, nt, MAXLEN)
    return w, eval_instances(seqs, nt, nv, "valid", MAXLEN), eval_instances(seqs, nt, nv, "test", MAXLEN)


def batch_size(n_windows: int) -> int:
    """A batch size whose last batch has a single window: one of 2 ranks gets nothing there."""
    return next(b for b in range(7, 2, -1) if n_windows % b == 1)


def trainer(out: Path, **over) -> Trainer:
    w, valid, test = data()
    torch.manual_seed(123)
    model = build_model("sasrec", {"dim": 8, "dropout": 0.0, "item_repr": "tuned", "modalities": ["text"]},
                        ModelContext(n_items=N, max_len=MAXLEN,
                                     compressed={"text": torch.rand(N + 1, 16, generator=torch.Generator().manual_seed(0))}))
    cfg = TrainConfig(**{"epochs": 3, "batch_size": batch_size(len(w)), "lr": 5e-3, "patience": 0,
                         "track_test": True, **over})
    return Trainer(model, w, cfg, out, seed=7, valid=valid, test=test, eval_cfg=EvalConfig(ks=[5, 10]),
                   fingerprint="fp", progress=False)


def run_rank(rank: int, world: int, tmp: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    tmp = Path(tmp)
    dist.init_process_group("gloo", init_method=f"file://{tmp / 'pg'}", rank=rank, world_size=world)
    try:
        # rank 0 writes to the run's folder; the other ranks get a folder of their own that must stay empty
        own = lambda name: tmp / name if rank == 0 else tmp / f"rank{rank}" / name  # noqa: E731
        res = trainer(own("full")).fit()
        trainer(own("resumed")).fit(stop_after=1)
        res2 = trainer(own("resumed")).fit()
        if rank == 0:
            (tmp / "result.json").write_text(json.dumps({"history": res.history, "resumed_from": res2.resumed_from,
                                                         "history_resumed": res2.history}))
    finally:
        dist.destroy_process_group()
