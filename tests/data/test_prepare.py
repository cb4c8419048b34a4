"""The prepare stage end to end: fixture and synthetic datasets, bad input, and the real-data checks."""

import numpy as np
import polars as pl
import pytest

from modalrec.data.prepared import load_prepared
from modalrec.errors import DataError, EmptyResultError, ParamError
from modalrec.io import read_json, read_parquet_meta
from modalrec.stages.prepare import run


def params(entry, name="toy"):
    return {"base": {"dataset": name}, "datasets": {name: entry}}


@pytest.fixture
def seq_file(tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"u{u} " + " ".join(f"i{x}" for x in rng.integers(0, 30, size=rng.integers(3, 12)))
             for u in range(60)]
    f = tmp_path / "user_sequence.txt"
    f.write_text("\n".join(lines) + "\n")
    return f


def test_prepare_user_sequence(tmp_path, seq_file):
    entry = {"format": "user_sequence", "path": str(seq_file), "filter": {"user_core": 5, "item_core": 3},
             "split": {"name": "ratio"}}
    out = run(params(entry), out_root=tmp_path / "prep", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["interactions.parquet", "items.parquet", "split.parquet",
                                                     "stats.json"]
    p = load_prepared(out)
    stats = read_json(out / "stats.json")
    inter = pl.read_parquet(out / "interactions.parquet")
    assert stats["users"] == p.n_users and stats["items"] == p.n_items and stats["interactions"] == inter.height
    assert stats["split"]["name"] == "ratio" and p.split_meta["split"]["test_ratio"] == 0.2
    assert p.split_meta["filter"]["item_core"] == 3 and p.split_meta["dataset"] == "toy"
    # the split sequences are the interactions, in order, and every user has >= 5 after core-5
    assert np.concatenate(p.sequences).tolist() == inter["item"].to_list()
    assert min(len(s) for s in p.sequences) >= 5 and (p.train_item_counts()[1:] >= 0).all()
    # the stored sequence of a user equals the original file's line restricted to surviving items
    first = inter.filter(pl.col("user") == 0)
    orig = dict(line.split(" ", 1) for line in seq_file.read_text().splitlines())
    kept = set(inter["item_orig"].to_list())
    assert first["item_orig"].to_list() == [x for x in orig[first["user_orig"][0]].split() if x in kept]
    assert read_parquet_meta(out / "items.parquet")["text_fields"] == []
    assert stats["items_missing_text"] == p.n_items == stats["items_missing_image"]


def test_prepare_loo_window(tmp_path, seq_file):
    entry = {"format": "user_sequence", "path": str(seq_file), "filter": {"min_len": 5},
             "split": {"name": "loo_window", "window": 6}}
    p = load_prepared(run(params(entry), out_root=tmp_path / "prep", progress=False))
    assert max(len(s) for s in p.sequences) == 6 and (p.n_test == 1).all() and (p.n_valid == 1).all()
    assert p.split_meta["split"] == {"name": "loo_window", "window": 6}
    assert set(np.concatenate(p.sequences)) == set(range(1, p.n_items + 1))


def test_prepare_synthetic(tmp_path):
    entry = {"format": "synthetic", "options": {"n_users": 120, "n_items": 60, "n_interactions": 1500,
                                                "image_size": 32, "seed": 1},
             "filter": {"user_core": 5, "item_core": 5}, "split": {"name": "ratio"}}
    out = run(params(entry, "synthetic"), out_root=tmp_path / "prep", progress=False)
    p = load_prepared(out)
    assert p.items["image_bytes"].null_count() == 0 and p.items["title"].null_count() == 0
    assert p.items["image_bytes"][0][:8] == b"\x89PNG\r\n\x1a\n"
    stats = read_json(out / "stats.json")
    assert stats["items_missing_image"] == 0 and stats["has_timestamps"]
    first = pl.read_parquet(out / "interactions.parquet")
    assert first.group_by("user").agg(pl.col("timestamp").diff().min()).drop_nulls()["timestamp"].min() >= 0


def test_bad_inputs_leave_nothing(tmp_path, seq_file):
    root = tmp_path / "prep"
    with pytest.raises(ParamError, match="base.dataset"):
        run(params({"format": "user_sequence", "path": str(seq_file)}), dataset="other", out_root=root)
    with pytest.raises(ParamError, match="datasets.toy.format"):
        run(params({"format": "parquet", "path": str(seq_file)}), out_root=root)
    with pytest.raises(ParamError, match="datasets.toy.path"):
        run(params({"format": "user_sequence"}), out_root=root)
    with pytest.raises(ParamError, match="datasets.toy.filtr"):
        run(params({"format": "user_sequence", "path": str(seq_file), "filtr": {}}), out_root=root)
    with pytest.raises(EmptyResultError):
        run(params({"format": "user_sequence", "path": str(seq_file), "filter": {"user_core": 50}}), out_root=root)
    bad = tmp_path / "bad.txt"
    bad.write_text("u1 a b\nlonely\n")
    with pytest.raises(DataError, match="bad.txt:2"):
        run(params({"format": "user_sequence", "path": str(bad)}), out_root=root)
    assert not root.exists() or list(root.iterdir()) == []


def test_failed_rerun_keeps_previous_output(tmp_path, seq_file):
    root = tmp_path / "prep"
    entry = {"format": "user_sequence", "path": str(seq_file), "filter": {"user_core": 5}}
    out = run(params(entry), out_root=root, progress=False)
    before = (out / "split.parquet").read_bytes()
    with pytest.raises(EmptyResultError):
        run(params({**entry, "filter": {"user_core": 500}}), out_root=root, progress=False)
    assert (out / "split.parquet").read_bytes() == before and sorted(x.name for x in root.iterdir()) == ["toy"]


# ------------------------------------------------------------------ real data (skipped without ../shared)
def test_beauty_reproduces_kdsr_table1(tmp_path, shared_datasets, repo_root):
    from modalrec.params import load_params

    prm = load_params(repo_root / "params.yaml")
    entry = dict(prm["datasets"]["beauty"], path=str(shared_datasets / "amazon2014-beauty-seq/Beauty/user_sequence.txt"))
    out = run(params(entry, "beauty"), out_root=tmp_path, progress=False)
    s = read_json(out / "stats.json")
    assert (s["users"], s["items"], s["interactions"]) == (22363, 12101, 198502)
    assert round(s["avg_len"], 2) == 8.88
    p = load_prepared(out)
    # KDSR ratio rule: every user has a test item; test targets = sum of int(0.2 * len)
    lens = p.lengths
    assert int(p.n_test.sum()) == int((lens * 0.2).astype(int).sum()) and (p.n_test >= 1).all()


def test_ml100k_joins_titles_plots_posters(tmp_path, shared_datasets, repo_root):
    from modalrec.params import load_params

    prm = load_params(repo_root / "params.yaml")
    entry = dict(prm["datasets"]["ml100k"], path=str(shared_datasets / "ml-100k-multimodal"))
    out = run(params(entry, "ml100k"), out_root=tmp_path, progress=False)
    items = pl.read_parquet(out / "items.parquet")
    assert items["title"].null_count() == 0
    assert items["plot"].null_count() < 0.05 * items.height
    assert items["image_path"].null_count() < 0.05 * items.height
    toy = items.filter(pl.col("item_orig") == "1").row(0, named=True)
    assert toy["title"] == "Toy Story (1995)" and "Woody" in toy["plot"]
    assert toy["image_path"].endswith("posters/1.jpg")
    assert read_parquet_meta(out / "items.parquet")["text_fields"] == ["title", "categories", "plot"]


def test_office_loo_window_test_targets_match_release(tmp_path, shared_datasets, repo_root):
    from modalrec.params import load_params

    prm = load_params(repo_root / "params.yaml")
    src = shared_datasets / "amazon2014-office"
    out = run(params(dict(prm["datasets"]["office"], path=str(src)), "office"), out_root=tmp_path, progress=False)
    p = load_prepared(out)
    inter = pl.read_parquet(out / "interactions.parquet")
    assert p.n_users == 4905 and p.lengths.max() == 15
    # our leave-one-out test / valid targets are the release's test.csv / dev.csv items
    asin = dict(zip(p.items["item"].to_list(), p.items["item_orig"].to_list()))
    i2i = dict(line.split("\t")[::-1] for line in (src / "Office.item2index").read_text().split("\n") if line)
    user_orig = inter.unique("user").sort("user")["user_orig"].to_list()
    for part, fname in (("test", "test.csv"), ("valid", "dev.csv")):
        u, pos = p.instances(part)
        ours = {user_orig[a]: asin[int(b)] for a, b in zip(u, p.targets(u, pos))}
        rel = pl.read_csv(src / fname, separator="\t", columns=["user_id", "item_id"], infer_schema=False)
        theirs = {a: i2i[b] for a, b in rel.iter_rows()}
        assert ours == theirs
