"""`modalrec recommend` with a real registered model trained for one epoch on a tiny prepared dataset."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from modalrec import recommend as R
from modalrec.data.batching import train_windows
from modalrec.errors import DataError
from modalrec.io import write_json, write_parquet
from modalrec.models.base import ModelContext, build_model
from modalrec.train.trainer import TrainConfig, Trainer

N = 30


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    """data/prepared/toy/{items,split}.parquet + models/toy/sasrec/s1/{config.json,best.pt} as the stages write them."""
    root = tmp_path_factory.mktemp("rec")
    seqs = [[int(x) for x in (np.arange(u, u + 8) % N) + 1] for u in range(40)]  # next item = id + 1 (mod N)
    write_parquet(root / "data/prepared/toy/items.parquet",
                  pa.table({"item": pa.array(np.arange(1, N + 1), pa.int32()),
                            "item_orig": [f"B{i:03d}" for i in range(1, N + 1)]}))
    write_parquet(root / "data/prepared/toy/split.parquet",
                  pa.table({"user": pa.array(range(40), pa.int32()), "items": pa.array(seqs, pa.list_(pa.int32())),
                            "n_train": pa.array([6] * 40, pa.int32()), "n_valid": pa.array([1] * 40, pa.int32())}))
    cfg = {"dim": 16, "layers": 1, "heads": 1, "dropout": 0.0}
    torch.manual_seed(0)
    net = build_model("sasrec", cfg, ModelContext(n_items=N, max_len=5))
    out = root / "models/toy/sasrec/s1"
    windows = train_windows([np.asarray(s) for s in seqs], np.full(40, 6), 5)
    Trainer(net, windows, TrainConfig(epochs=1, batch_size=8, lr=1e-2, monitor=None), out, seed=1,
            live=False, progress=False).fit()
    write_json(out / "config.json", {"model": "sasrec", "arch": "sasrec", "cfg": cfg, "seed": 1, "dataset": "toy",
                                     "max_len": 5, "prepared": {"n_items": N}})
    return out


def _lines(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_topk_valid_and_masked(trained_dir, tmp_path):
    root = trained_dir.parents[3]
    inp = _lines(tmp_path / "h.jsonl", [{"id": "u1", "history": ["B001", "B002", "B003", "B004", "B005", "B006"]},
                                        ["B010", "NOPE"], {"history": ["B020"], "k": 3}])
    out = tmp_path / "recs.jsonl"
    n = R.run(trained_dir, inp, out, k=7, mask_history=True, data_root=root / "data")
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert n == 3 and [r["id"] for r in recs] == ["u1", 2, 3]
    assert [len(r["items"]) for r in recs] == [7, 7, 3]
    for r, hist in zip(recs, (["B001", "B002", "B003", "B004", "B005", "B006"], ["B010"], ["B020"])):
        assert all(1 <= i <= N for i in r["item_ids"]) and len(set(r["item_ids"])) == len(r["item_ids"])
        assert r["items"] == [f"B{i:03d}" for i in r["item_ids"]]
        assert not set(r["items"]) & set(hist)  # masked: nothing from the history
        assert r["scores"] == sorted(r["scores"], reverse=True)
    assert recs[1]["dropped"] == ["NOPE"]


def test_scores_match_the_model_and_unmasked_can_repeat(trained_dir):
    root = trained_dir.parents[3]
    tm = R.load_trained(trained_dir, root / "data")
    hist = list(range(1, 12))  # longer than max_len: the last 5 items are used
    (items, scores), = R.recommend(tm, [hist], k=N)
    assert len(items) == N and sorted(items) == list(range(1, N + 1))  # unmasked: every item, history included
    with torch.no_grad():
        ref = tm.net.score_all(torch.tensor([hist[-5:]]))[0]
    assert scores[0] == pytest.approx(float(ref[1:].max()), rel=1e-5)
    (m_items, _), = R.recommend(tm, [hist], k=N, mask_history=True)
    assert len(m_items) == N - len(hist) and not set(m_items) & set(hist)  # fewer only when the catalogue runs out
    assert R.recommend(tm, [hist], k=5) == R.recommend(tm, [hist], k=5)


def test_internal_ids_and_errors_name_the_line(trained_dir, tmp_path):
    root = trained_dir.parents[3]
    tm = R.load_trained(trained_dir, root / "data")
    reqs = R.read_requests(_lines(tmp_path / "a.jsonl", [[1, 2, 3]]), tm, ids="internal")
    assert reqs[0].history == [1, 2, 3]
    with pytest.raises(DataError, match=r"b.jsonl:2.*not in 1..30"):
        R.read_requests(_lines(tmp_path / "b.jsonl", [[1], [0]]), tm, ids="internal")
    (tmp_path / "c.jsonl").write_text('["B001"]\n{bad\n')
    with pytest.raises(DataError, match=r"c.jsonl:2.*not valid JSON"):
        R.read_requests(tmp_path / "c.jsonl", tm)
    with pytest.raises(DataError, match=r"d.jsonl:1.*no known item"):
        R.read_requests(_lines(tmp_path / "d.jsonl", [["X", "Y"]]), tm)
    with pytest.raises(DataError, match="config.json"):
        R.load_trained(tmp_path, root / "data")


def test_cli(trained_dir, tmp_path, monkeypatch):
    from modalrec.cli import app

    root = trained_dir.parents[3]
    monkeypatch.chdir(root)
    (root / "params.yaml").write_text("base: {dataset: toy, seeds: [1]}\n")
    _lines(tmp_path / "h.jsonl", [["B001", "B002"]])
    res = CliRunner().invoke(app, ["recommend", "sasrec", "-i", str(tmp_path / "h.jsonl"), "-k", "4",
                                   "--mask-history", "-o", str(tmp_path / "o.jsonl")])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "o.jsonl").read_text())
    assert len(rec["items"]) == 4 and not {"B001", "B002"} & set(rec["items"])
    res = CliRunner().invoke(app, ["recommend", "sasrec", "-i", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2 and "histories file not found" in res.output
