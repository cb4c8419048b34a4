"""Templates, the catalogue runner and the stage: missing/unreadable inputs, cache schema and metadata, token caches,
determinism, and clear errors for bad parameters."""

import os

import numpy as np
import polars as pl
import pyarrow.parquet as pq

import pytest

from modalrec.encode.cache import load_features, load_tokens
from modalrec.encode.registry import EncoderConfig, build_encoder
from modalrec.encode.runner import encode_catalogue
from modalrec.encode.text import Template
from modalrec.errors import DataError, ParamError
from modalrec.stages import encode as stage


@pytest.mark.parametrize("row, expect", [
    ({"title": "T", "brand": "B", "description": "D"}, "T. B. D"),
    ({"title": "T", "brand": None, "description": "D"}, "T. D"),
    ({"title": "T", "brand": "B", "description": None}, "T. B"),
    ({"title": None, "brand": "  ", "description": "D\n  more"}, "D more"),
    ({"title": None, "brand": None, "description": None}, None),
])
def test_template_skips_missing_fields(row, expect):
    assert Template.parse("{title}. {brand}. {description}").render(row) == expect


def test_template_prefix_tail_lowercase_and_errors():
    t = Template.parse("Item: {title} ({brand})")
    assert t.render({"title": "Mug", "brand": "Acme"}) == "Item: Mug (Acme)"
    # A missing field drops its own separator; the template's tail stays (documented rule, kept simple).
    assert t.render({"title": "Mug", "brand": None}) == "Item: Mug)"
    assert Template.parse("{title}").render({"title": "Big MUG"}, lowercase=True) == "big mug"
    assert t.without(["brand"]).render({"title": "Mug"}) == "Item: Mug)"
    with pytest.raises(ParamError, match="names no item field"):
        Template.parse("just text")
    with pytest.raises(ParamError, match="plain names"):
        Template.parse("{title:>10}")
    with pytest.raises(ParamError, match="none of the template fields"):
        t.check_fields(["plot"])
    assert t.check_fields(["title", "plot"]) == ["brand"]


@pytest.fixture
def vit_cfg(tiny_vision_models):
    return EncoderConfig.from_params({"family": "hf_vision", "weights": str(tiny_vision_models["vit"]),
                                      "batch_size": 2}, "encode.image")


def test_images_missing_and_unreadable_are_counted(items_table, vit_cfg, tmp_path):
    out = tmp_path / "image.parquet"
    with pytest.warns(UserWarning, match="2 unreadable"):
        s = encode_catalogue(items_table, vit_cfg, "image", out, key="encode.image", progress=False)
    assert (s.n_items, s.n_encoded, s.n_missing, s.n_unreadable) == (6, 3, 1, 2)
    assert "items/s" in s.line("encode.image")
    x, has, meta = load_features(out, 6)
    assert has.tolist() == [False, True, True, False, False, False, True]
    assert not x[3:6].any() and np.abs(x[[1, 2, 6]]).sum(1).min() > 0
    for key in ("family", "weights", "weights_sha256", "pooling", "dim", "dtype", "preprocessing", "n_missing",
                "n_unreadable", "encoder"):
        assert key in meta, key
    assert meta["n_unreadable"] == 2 and any("gone.jpg" in u for u in meta["unreadable"])
    assert len(meta["weights_sha256"]) == 64 and meta["dim"] == 16 and meta["template"] is None
    assert pq.read_schema(out).field("vector").type.list_size == 16


def test_text_cache_float16_template_and_determinism(items_table, tiny_text_models, tmp_path):
    cfg = EncoderConfig.from_params({"family": "hf_text", "weights": str(tiny_text_models["bert"]),
                                     "template": "{title}. {brand}. {description}", "dtype": "float16",
                                     "batch_size": 2}, "encode.text")
    s = encode_catalogue(items_table, cfg, "text", tmp_path / "a.parquet", key="encode.text", progress=False)
    assert (s.n_encoded, s.n_missing) == (4, 2)
    x, has, meta = load_features(tmp_path / "a.parquet", 6)
    assert has.tolist() == [False, True, True, False, True, False, True]
    assert meta["dtype"] == "float16" and meta["template"] == "{title}. {brand}. {description}"
    assert pq.read_schema(tmp_path / "a.parquet").field("vector").type.value_type.bit_width == 16
    # Same result run to run, and independent of the batch size (masked pooling ignores the padding).
    encode_catalogue(items_table, cfg, "text", tmp_path / "b.parquet", key="encode.text", progress=False)
    cfg.batch_size = 5
    encode_catalogue(items_table, cfg, "text", tmp_path / "c.parquet", key="encode.text", progress=False)
    np.testing.assert_array_equal(x, load_features(tmp_path / "b.parquet")[0])
    np.testing.assert_allclose(x, load_features(tmp_path / "c.parquet")[0], atol=2e-3)


def test_absent_template_fields_are_skipped_with_warning(items_table, tiny_text_models, tmp_path):
    cfg = EncoderConfig.from_params({"family": "hf_text", "weights": str(tiny_text_models["bert"]),
                                     "template": "{title}. {plot}"}, "encode.text")
    with pytest.warns(UserWarning, match="plot"):
        s = encode_catalogue(items_table, cfg, "text", tmp_path / "t.parquet", key="encode.text", progress=False)
    assert s.n_encoded == 4 and s.meta["template_absent_fields"] == ["plot"]


def test_stage_token_caches(items_table, tiny_text_models, tiny_vision_models, tmp_path, capsys):
    (tmp_path / "prep" / "toy").mkdir(parents=True)
    items_table.write_parquet(tmp_path / "prep" / "toy" / "items.parquet")
    params = {"base": {"dataset": "toy"}, "encode": {
        "text_tokens": {"family": "hf_text", "weights": str(tiny_text_models["bert"]), "pooling": "tokens",
                        "max_length": 6, "template": "{title}. {description}"},
        "image_tokens": {"family": "hf_vision", "weights": str(tiny_vision_models["clip"]), "pooling": "tokens",
                         "preprocess": "half", "image_size": 32}}}
    kw = dict(prepared_root=tmp_path / "prep", features_root=tmp_path / "feat", progress=False)
    out = stage.run(params, "text_tokens", **kw)
    assert out == tmp_path / "feat" / "toy" / "text_tokens.arrow"
    assert "encode.text_tokens: 6 items, 4 encoded, 2 missing" in capsys.readouterr().out
    c = load_tokens(out)
    assert c.tokens.shape == (7, 6, 16) and c.mask[1].all() and not c.mask[3].any() and not c.tokens[3].any()
    assert c.meta["dataset"] == "toy" and c.meta["pooling"] == "tokens"
    with pytest.warns(UserWarning):
        c = load_tokens(stage.run(params, "image_tokens", **kw))
    assert c.tokens.shape == (7, 17, 16) and c.has.tolist() == [False, True, True, False, False, False, True]
    # encode.<key>.datasets.<ds> overrides the entry for that dataset only (the synthetic images' native size)
    params["encode"]["text_tokens"]["datasets"] = {"toy": {"max_length": 4}, "other": {"max_length": 64}}
    assert load_tokens(stage.run(params, "text_tokens", **kw)).tokens.shape == (7, 4, 16)
    params["encode"]["image_tokens"]["datasets"] = {"toy": {"image_sise": 16}}
    with pytest.raises(ParamError, match="image_sise"):
        stage.run(params, "image_tokens", **kw)
    params["encode"]["image_tokens"]["datasets"] = {"toy": 16}
    with pytest.raises(ParamError, match="encode.image_tokens.datasets.toy"):
        stage.run(params, "image_tokens", **kw)


def test_clear_errors(items_table, tiny_vision_models, tmp_path, monkeypatch):
    with pytest.raises(ParamError, match=r"encode.image.family.*available: \[.*timm"):
        EncoderConfig.from_params({"family": "keras"}, "encode.image")
    with pytest.raises(ParamError, match="encode.image.batch_size: must be an integer"):
        EncoderConfig.from_params({"family": "timm", "batch_size": "32"}, "encode.image")
    with pytest.raises(ParamError, match="encode.image.weigths.*known"):
        EncoderConfig.from_params({"family": "timm", "weigths": "x"}, "encode.image")
    with pytest.raises(ParamError, match="does not exist.*packaged offline model"):
        build_encoder(EncoderConfig(family="hf_vision", weights="/no/such/dir"), "image", "encode.image")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ParamError, match="HF_HUB_OFFLINE=1.*local directory"):
        build_encoder(EncoderConfig(family="hf_vision", weights="google/vit-base-patch16-224"), "image",
                      "encode.image")
    with pytest.raises(ParamError, match="HF_HUB_OFFLINE=1.*local directory"):
        build_encoder(EncoderConfig(family="hf_text", weights="bert-base-uncased"), "text", "encode.text")
    params = {"base": {"dataset": "toy"},
              "encode": {"image": {"family": "timm", "weights": "efficientnet_lite0", "pooling": "tokens"}}}
    with pytest.raises(ParamError, match="encode.image.pooling"):
        stage.run(params, "image", prepared_root=tmp_path)
    params["encode"]["image"]["pooling"] = "pooled"
    with pytest.raises(DataError, match="run the prepare stage"):
        stage.run(params, "image", prepared_root=tmp_path)
    bad = items_table.with_columns(pl.Series("item", [1, 2, 3, 4, 5, 7], dtype=pl.Int32))
    cfg = EncoderConfig(family="hf_vision", weights=str(tiny_vision_models["vit"]))
    with pytest.raises(DataError, match="1..N"):
        encode_catalogue(bad, cfg, "image", tmp_path / "x.parquet", progress=False)
    assert not os.path.exists(tmp_path / "x.parquet")
