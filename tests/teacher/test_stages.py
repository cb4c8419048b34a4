"""compress and distill stage runners on a tiny dataset: outputs, provenance, stats, missing features, clear errors."""

import numpy as np
import pytest
import torch

from modalrec.encode.cache import load_features
from modalrec.errors import DataError, ParamError
from modalrec.io import read_json, read_parquet_meta
from modalrec.stages import compress, distill
from modalrec.teacher.teacher import Teacher

from .conftest import DS, small_params


def run_all(root, params):
    kw = {"data_root": root / "data", "models_root": root / "models", "progress": False}
    for m in ("image", "text"):
        compress.run(params, modality=m, **kw)
    return distill.run(params, **kw)


def test_compress_then_distill(project):
    root, n = project
    out = run_all(root, small_params())
    z, has, meta = load_features(root / "data/compressed" / DS / "image.parquet", n)
    assert z.shape == (n + 1, 16) and not has[0] and has.sum() == n - 2
    assert (z[1:][has[1:]] > 0).all() and (z[1:][has[1:]] < 1).all()     # sigmoid codes
    assert not z[~has].any()                                              # no feature -> zero vector
    assert meta["family"] == "autoencoder" and meta["ae"]["d_in"] == 1280 and meta["source_meta"]["family"] == "test"
    info = read_json(root / "models" / DS / "ae" / "image.json")
    assert info["n_with_feature"] == n - 2 and info["reconstruction_mse"] > 0
    assert set(torch.load(root / "models" / DS / "ae" / "image.pt", weights_only=True)) == {
        "encoder.0.weight", "encoder.0.bias", "decoder.weight", "decoder.bias"}

    stats = read_json(out / "stats.json")
    assert stats["pairs"]["total"] == 4000 and stats["pairs"]["seed"] == 7
    for m in ("image", "text"):
        s = stats["modalities"][m]
        assert len(s["histogram"]) == 6 and sum(s["histogram"]) == 4000
        assert 1 <= s["perplexity"] <= 6 and s["dead_codes"] >= 0 and s["quantisation_mse"] >= 0
        assert s["autoencoder"]["reconstruction_mse"] > 0
    comp = {m: torch.from_numpy(load_features(root / "data/compressed" / DS / f"{m}.parquet", n)[0])
            for m in ("image", "text")}
    teacher = Teacher.load(out, comp)
    i = torch.arange(1, n + 1)
    c = teacher.codes(i, i.flip(0), "text")
    assert c.min() >= 0 and c.max() < 6
    # the same params give the same teacher (seeded sample, seeded k-means)
    again = run_all(root, small_params())
    assert torch.equal(Teacher.load(again, comp).codebooks["text"], teacher.codebooks["text"])


def test_vq_quantizer_and_a_modality_without_features(project):
    root, n = project
    from modalrec.encode.cache import write_features

    write_features(root / "data/features" / DS / "image.parquet", np.zeros((n, 8), np.float32),
                   np.zeros(n, bool), meta={})
    out = run_all(root, small_params(quantizer="vq"))
    cfg = read_json(out / "config.json")
    assert cfg["modalities"] == ["text"] and cfg["quantizer"] == "vq"
    assert read_json(out / "stats.json")["skipped_modalities"] == ["image"]


def test_errors_name_the_culprit(project):
    root, n = project
    kw = {"data_root": root / "data", "models_root": root / "models", "progress": False}
    with pytest.raises(ParamError, match="compress.dim"):
        compress.run({**small_params(), "compress": {"dim": -3}}, modality="text", **kw)
    with pytest.raises(DataError, match="run the encode stage"):
        compress.run({**small_params(), "base": {"dataset": "nope", "seed": 1}}, modality="text", **kw)
    for m in ("image", "text"):
        compress.run(small_params(), modality=m, **kw)
    with pytest.raises(ParamError, match=r"kdsr\.D.*does not divide.*16"):
        distill.run(small_params(D=5), **kw)
    with pytest.raises(ParamError, match="kdsr.codes"):
        distill.run(small_params(codes=1), **kw)
    assert not (root / "models" / DS / "teacher").exists()  # no partial output
