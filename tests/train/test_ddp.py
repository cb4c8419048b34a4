"""DDP on CPU with 2 gloo processes (torchrun's engine): the same seed gives the metrics and weights of one process,
ranks see disjoint windows that together make the global batch, only rank 0 writes, and a run interrupted and
resumed under DDP equals the uninterrupted one."""

import json

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from ddp_worker import data, run_rank, trainer
from modalrec.data.batching import shard, sharded_train_batches, train_batches
from modalrec.train import checkpoint as ckpt


def test_shards_are_disjoint_and_make_the_global_batch():
    w = data()[0]
    bs = 7
    for world in (2, 3):
        per_rank = [list(sharded_train_batches(w, bs, seed=5, epoch=2, rank=r, world=world)) for r in range(world)]
        for step, full in enumerate(train_batches(w, bs, seed=5, epoch=2)):
            parts = [per_rank[r][step] for r in range(world)]
            got = [(u, tuple(row[row > 0].tolist())) for b, wt in parts if wt > 0
                   for u, row in zip(b.users.tolist(), b.input_ids)]
            want = [(u, tuple(row[row > 0].tolist())) for u, row in zip(full.users.tolist(), full.input_ids)]
            assert sorted(got) == sorted(want) and len(got) == len(want)  # disjoint, and all of them
            assert sum(wt for _, wt in parts) == pytest.approx(world)  # the weights average to the global mean
    idx = np.arange(10)
    assert [shard(idx, r, 3).tolist() for r in range(3)] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.start_processes(run_rank, args=(2, str(tmp)), nprocs=2, start_method="spawn", join=True)
    return tmp, json.loads((tmp / "result.json").read_text())


def test_ddp_equals_one_process(ddp_run, tmp_path):
    tmp, res = ddp_run
    one = trainer(tmp_path / "one").fit()
    assert len(res["history"]) == len(one.history) == 3
    for a, b in zip(res["history"], one.history):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
    sa, sb = ckpt.load(tmp / "full" / "last.pt")["model"], ckpt.load(tmp_path / "one" / "last.pt")["model"]
    for k in sb:
        a, b = sa[k], sb[k]
        if k.endswith("attn.qkv.bias"):  # the key bias has a zero gradient in exact arithmetic (softmax is shift-
            a, b = a[torch.arange(len(a)) // (len(a) // 3) != 1], b[torch.arange(len(b)) // (len(b) // 3) != 1]
            # invariant): Adam turns its rounding noise into steps of ~lr either way, so it is left out
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert one.history[-1]["valid/ndcg@10"] != one.history[0]["valid/ndcg@10"]  # it trained


def test_only_rank_0_writes_and_resume_under_ddp(ddp_run):
    tmp, res = ddp_run
    assert {p.name for p in (tmp / "full").iterdir()} >= {"last.pt", "best.pt", "history.json", "dvclive"}
    assert not (tmp / "rank1").exists() or not any((tmp / "rank1").rglob("*"))
    assert res["resumed_from"] == 1
    assert res["history_resumed"] == res["history"]
    sa, sb = ckpt.load(tmp / "full" / "last.pt")["model"], ckpt.load(tmp / "resumed" / "last.pt")["model"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)
    assert len(ckpt.load(tmp / "resumed" / "last.pt")["rng_ranks"]) == 2
