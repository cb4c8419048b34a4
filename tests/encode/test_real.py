"""The offline defaults on real ML-100K items (plots and posters from ../shared; skipped when absent): related films
get closer text vectors than unrelated ones, and a re-compressed, cropped poster is closest to its own original."""

import io
import warnings

import numpy as np
import polars as pl
import pytest
import yaml
from PIL import Image

from modalrec.encode.cache import load_features, load_tokens
from modalrec.encode.registry import EncoderConfig
from modalrec.encode.runner import encode_catalogue

pytestmark = pytest.mark.shared


def default_cfg(repo_root, key):
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    return EncoderConfig.from_params(params["encode"][key], f"encode.{key}")


def test_minilm_plots_related_films_are_closer(ml100k, repo_root, tmp_path):
    # Star Wars trilogy (50, 172, 181), The Godfather I/II (127, 187); unrelated: Toy Story, Sleepless in Seattle,
    # Home Alone, Amistad.
    ids = [50, 172, 181, 127, 187, 1, 88, 94, 750]
    items = ml100k.filter(ml100k["item"].is_in(ids)).with_columns(
        item=np.arange(1, len(ids) + 1, dtype=np.int32))
    cfg = default_cfg(repo_root, "text")
    with pytest.warns(UserWarning, match="brand"):            # the default template's fields ML-100K lacks
        encode_catalogue(items, cfg, "text", tmp_path / "text.parquet", key="encode.text", progress=False)
    x, has, meta = load_features(tmp_path / "text.parquet", len(ids))
    assert has[1:].all() and meta["weights"] == "packaged:all-MiniLM-L6-v2" and meta["dim"] == 384
    np.testing.assert_allclose(np.linalg.norm(x[1:], axis=1), 1.0, atol=1e-5)
    row = {orig: i + 1 for i, orig in enumerate(sorted(ids))}
    sim = lambda a, b: float(x[row[a]] @ x[row[b]])          # noqa: E731
    unrelated = [1, 88, 94, 750]
    assert min(sim(50, 172), sim(50, 181), sim(172, 181)) > max(sim(s, u) for s in (50, 172, 181) for u in unrelated)
    assert sim(127, 187) > max(sim(127, u) for u in unrelated + [50, 172, 181])


@pytest.mark.slow
def test_efficientnet_posters_augmented_copy_is_nearest(ml100k, repo_root, tmp_path):
    items = ml100k.filter(ml100k["image_path"].is_not_null()).head(8)
    augmented = []
    for p in items["image_path"]:
        with Image.open(p) as im:
            w, h = im.size
            buf = io.BytesIO()
            im.convert("RGB").crop((3, 4, w - 3, h - 4)).save(buf, format="JPEG", quality=40)
        augmented.append(buf.getvalue())
    both = pl.concat([items.with_columns(image_bytes=pl.lit(None, pl.Binary)),
                      items.with_columns(image_path=pl.lit(None, pl.String),
                                         image_bytes=pl.Series(augmented, dtype=pl.Binary))])
    both = both.with_columns(item=np.arange(1, 17, dtype=np.int32))
    s = encode_catalogue(both, default_cfg(repo_root, "image"), "image", tmp_path / "image.parquet",
                         key="encode.image", progress=False)
    assert s.n_encoded == 16 and s.n_unreadable == 0
    x, _, meta = load_features(tmp_path / "image.parquet", 16)
    assert meta["dim"] == 1280 and meta["weights"] == "packaged:efficientnet_lite0"
    v = x[1:] / np.linalg.norm(x[1:], axis=1, keepdims=True)
    sims = v[8:] @ v[:8].T
    assert (sims.argmax(1) == np.arange(8)).all()


@pytest.mark.slow
def test_default_token_caches_shapes(ml100k, repo_root, tmp_path):
    items = ml100k.head(3)
    for key, kind, shape in (("text_tokens", "text", (4, 30, 384)), ("image_tokens", "image", (4, 50, 1280))):
        out = tmp_path / f"{key}.arrow"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                     # absent template fields
            encode_catalogue(items, default_cfg(repo_root, key), kind, out, key=f"encode.{key}", progress=False)
        c = load_tokens(out)
        assert c.tokens.shape == shape and c.mask.shape == shape[:2] and c.has[1:].all()

