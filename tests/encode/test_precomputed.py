"""Precomputed vectors (.npy + ids, UniSRec raw .feat, Parquet, KDSR pickled dict) aligned by original item id."""

import numpy as np
import polars as pl
import pytest

from modalrec.encode.cache import load_features
from modalrec.encode.registry import EncoderConfig
from modalrec.encode.runner import encode_catalogue
from modalrec.errors import DataError, ParamError

ITEMS = pl.DataFrame({"item": np.arange(1, 5, dtype=np.int32), "item_orig": ["10", "11", "12", "13"]})
VEC = np.arange(20, dtype=np.float32).reshape(5, 4)        # rows for original ids 9..13 in some order


def run(tmp_path, **kw):
    cfg = EncoderConfig.from_params({"family": "precomputed", **kw}, "encode.text")
    out = tmp_path / "text.parquet"
    s = encode_catalogue(ITEMS, cfg, "text", out, key="encode.text", progress=False)
    return load_features(out, 4), s


def test_npy_with_ids_file(tmp_path):
    np.save(tmp_path / "v.npy", VEC)
    (tmp_path / "ids.txt").write_text("13\n9\n10\n99\n12\n")        # 11 is absent
    (x, has, meta), s = run(tmp_path, path=str(tmp_path / "v.npy"), ids=str(tmp_path / "ids.txt"))
    np.testing.assert_array_equal(x[1], VEC[2])                    # item 1 = "10"
    np.testing.assert_array_equal(x[3], VEC[4])                    # item 3 = "12"
    np.testing.assert_array_equal(x[4], VEC[0])
    assert has.tolist() == [False, True, False, True, True] and not x[2].any()
    assert s.n_missing == 1 and meta["n_missing"] == 1 and meta["n_unused_rows"] == 2
    assert meta["family"] == "precomputed" and len(meta["weights_sha256"]) == 64


def test_unisrec_feat_row_index(tmp_path):
    raw = np.random.default_rng(0).normal(size=(14, 3)).astype("<f4")
    raw.tofile(tmp_path / "ds.feat1CLS")
    (x, has, _), _ = run(tmp_path, path=str(tmp_path / "ds.feat1CLS"), ids="row_index", dim=3)
    np.testing.assert_allclose(x[1:], raw[10:14])
    assert has[1:].all()
    with pytest.raises(DataError, match="not a multiple of dim=5"):
        run(tmp_path, path=str(tmp_path / "ds.feat1CLS"), ids="row_index", dim=5)
    with pytest.raises(ParamError, match="dim"):
        run(tmp_path, path=str(tmp_path / "ds.feat1CLS"), ids="row_index")


def test_parquet_and_pickled_dict(tmp_path):
    pl.DataFrame({"asin": ["12", "10"], "emb": [[1.0, 2.0], [3.0, 4.0]]}).write_parquet(tmp_path / "v.parquet")
    (x, has, _), _ = run(tmp_path, path=str(tmp_path / "v.parquet"), id_column="asin", vector_column="emb")
    assert x[1].tolist() == [3.0, 4.0] and x[3].tolist() == [1.0, 2.0] and has.sum() == 2
    np.save(tmp_path / "d.npy", {"11": np.ones(2), "13": np.full(2, 2.0)}, allow_pickle=True)
    with pytest.raises(ParamError, match="allow_pickle"):
        run(tmp_path, path=str(tmp_path / "d.npy"))
    (x, has, _), _ = run(tmp_path, path=str(tmp_path / "d.npy"), allow_pickle=True)
    assert has.tolist() == [False, False, True, False, True] and x[4].tolist() == [2.0, 2.0]


def test_errors_name_the_parameter(tmp_path):
    with pytest.raises(ParamError, match="encode.text.path"):
        run(tmp_path, path=str(tmp_path / "missing.npy"))
    np.save(tmp_path / "v.npy", VEC)
    with pytest.raises(ParamError, match="encode.text.ids"):
        run(tmp_path, path=str(tmp_path / "v.npy"))
    (tmp_path / "ids.txt").write_text("1\n2\n")
    with pytest.raises(DataError, match="2 ids for 5 rows"):
        run(tmp_path, path=str(tmp_path / "v.npy"), ids=str(tmp_path / "ids.txt"))
    bad = VEC.copy()
    bad[1, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match="NaN"):
        run(tmp_path, path=str(tmp_path / "nan.npy"), ids="row_index")
