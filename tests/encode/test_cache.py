"""Feature/token cache I/O: schema, metadata, zero rows, zero-copy memory mapping, stale-cache errors."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modalrec.encode.cache import TokenWriter, load_features, load_tokens, write_features
from modalrec.errors import DataError
from modalrec.io import read_parquet_meta


def test_features_roundtrip_schema_and_zero_rows(tmp_path):
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(4, 3)).astype(np.float32)
    has = np.array([True, False, True, True])
    path = tmp_path / "text.parquet"
    write_features(path, vec, has, {"family": "hf_text", "pooling": "mean"})
    schema = pq.read_schema(path)
    assert schema.field("item").type == pa.int32()
    assert schema.field("vector").type == pa.list_(pa.float32(), 3)
    assert schema.field("has_feature").type == pa.bool_()
    meta = read_parquet_meta(path)
    assert meta["family"] == "hf_text" and meta["dim"] == 3 and meta["n_with_feature"] == 3
    x, h, m = load_features(path, n_items=4)
    assert x.shape == (5, 3) and x.dtype == np.float32
    assert not x[0].any() and not h[0]
    assert not x[2].any() and not h[2]              # missing item forced to zero
    np.testing.assert_allclose(x[[1, 3, 4]], vec[[0, 2, 3]])
    assert m == meta


def test_features_float16_and_stale_cache(tmp_path):
    path = tmp_path / "image.parquet"
    write_features(path, np.ones((2, 5)), np.ones(2, bool), {}, dtype="float16")
    assert pq.read_schema(path).field("vector").type == pa.list_(pa.float16(), 5)
    x, _, _ = load_features(path)
    assert x.dtype == np.float32 and x[1:].sum() == 10
    with pytest.raises(DataError, match="prepared catalogue has 3"):
        load_features(path, n_items=3)
    with pytest.raises(DataError, match="not found"):
        load_features(tmp_path / "nope.parquet")


def test_tokens_roundtrip_memory_mapped(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "image_tokens.arrow"
    tok = rng.normal(size=(2, 4, 6)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
    with TokenWriter(path, n_items=3, n_tokens=4, dim=6) as w:
        w.write(np.array([3, 1]), tok, mask)
        w.close({"family": "timm"})
    assert [p.name for p in tmp_path.iterdir()] == ["image_tokens.arrow"]       # temp memmap removed
    c = load_tokens(path)
    assert c.tokens.shape == (4, 4, 6) and c.tokens.dtype == np.float16
    assert c.mask.shape == (4, 4) and c.mask.dtype == bool
    # A view onto the mapped file, not a private copy: read-only and not owning its data.
    assert not c.tokens.flags.writeable and not c.tokens.flags.owndata
    np.testing.assert_array_equal(c.tokens[3], tok[0].astype(np.float16))
    np.testing.assert_array_equal(c.tokens[1], tok[1].astype(np.float16))
    assert not c.tokens[0].any() and not c.tokens[2].any()
    np.testing.assert_array_equal(c.mask[[3, 1]], mask)
    assert not c.mask[0].any() and not c.mask[2].any()
    assert c.has.tolist() == [False, True, False, True]
    assert c.meta["family"] == "timm" and c.meta["n_tokens"] == 4 and c.n_items == 3


def test_token_writer_failure_leaves_nothing(tmp_path):
    path = tmp_path / "t.arrow"
    with pytest.raises(RuntimeError):
        with TokenWriter(path, n_items=2, n_tokens=2, dim=2) as w:
            w.write(np.array([1]), np.ones((1, 2, 2)), np.ones((1, 2)))
            raise RuntimeError("encoder crashed")
    assert list(tmp_path.iterdir()) == []


def test_load_tokens_rejects_other_files(tmp_path):
    bad = tmp_path / "x.arrow"
    bad.write_bytes(b"not arrow")
    with pytest.raises(DataError, match="x.arrow"):
        load_tokens(bad)
