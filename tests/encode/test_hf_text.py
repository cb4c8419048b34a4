"""hf_text family on tiny BERT / T5 / LLaMA checkpoints loaded from local folders: pooling semantics against a
manual computation with the same model, token outputs, determinism, sentence-transformers configs."""

import json

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, T5EncoderModel

from modalrec.encode.hf_text import pool
from modalrec.encode.registry import EncoderConfig, build_encoder
from modalrec.errors import ParamError

TEXTS = ["a red plate", "a much longer sentence about a blue coffee mug with a handle", "bowl"]


def enc(path, **kw):
    cfg = EncoderConfig.from_params({"family": "hf_text", "weights": str(path), **kw}, "encode.text")
    return build_encoder(cfg, "text", "encode.text")


def manual(path, model_cls=AutoModel, max_length=128):
    tok = AutoTokenizer.from_pretrained(str(path))
    model = model_cls.from_pretrained(str(path)).eval()
    b = tok(TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        h = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    return h, b["attention_mask"]


def test_bert_cls_and_masked_mean_match_manual(tiny_text_models):
    h, m = manual(tiny_text_models["bert"])
    assert (m == 0).any()                                   # the batch really has padding
    cls = enc(tiny_text_models["bert"], pooling="cls")
    assert cls.dim == 16 and not cls.tokens
    torch.testing.assert_close(cls.forward(TEXTS), h[:, 0])
    mean = enc(tiny_text_models["bert"], pooling="mean").forward(TEXTS)
    expect = torch.stack([h[i, m[i].bool()].mean(0) for i in range(len(TEXTS))])
    torch.testing.assert_close(mean, expect)


def test_t5_encoder_masked_vs_unmasked_mean(tiny_text_models):
    h, m = manual(tiny_text_models["t5"], T5EncoderModel)
    e = enc(tiny_text_models["t5"], pooling="mean")
    assert e.extra_meta["model_type"] == "t5"
    masked = e.forward(TEXTS)
    unmasked = enc(tiny_text_models["t5"], pooling="mean_unmasked").forward(TEXTS)
    torch.testing.assert_close(unmasked, h.mean(1))          # KDSR parity: padding included
    torch.testing.assert_close(masked[1], h[1, m[1].bool()].mean(0))
    longest = int(m.sum(1).argmax())
    torch.testing.assert_close(masked[longest], unmasked[longest])   # no padding -> identical
    short = int(m.sum(1).argmin())
    assert not torch.allclose(masked[short], unmasked[short])         # padding -> they differ


def test_llama_last_token_is_last_real_position(tiny_text_models):
    h, m = manual(tiny_text_models["llama"])
    last = enc(tiny_text_models["llama"], pooling="last").forward(TEXTS)
    idx = m.sum(1) - 1                                         # right padding
    torch.testing.assert_close(last, h[torch.arange(len(TEXTS)), idx])


def test_pool_last_with_left_padding():
    h = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    assert pool(h, mask, "last").flatten().tolist() == [3.0, 6.0]
    assert pool(h, mask, "max").flatten().tolist() == [3.0, 6.0]
    assert pool(h, mask, "mean").flatten().tolist() == [2.5, 5.0]


def test_tokens_are_padded_to_max_length_with_mask(tiny_text_models):
    e = enc(tiny_text_models["bert"], pooling="tokens", max_length=8)
    assert e.tokens and e.n_tokens == 8
    tok, mask = e.forward(TEXTS)
    assert tok.shape == (3, 8, 16) and mask.shape == (3, 8) and mask.dtype == torch.bool
    assert mask[1].all() and mask[2].sum() == 3               # [CLS] bowl [SEP]
    h, _ = manual(tiny_text_models["bert"], max_length=8)
    torch.testing.assert_close(tok[1], h[1])                  # the longest text fills all 8 positions either way


def test_layer_selects_hidden_state(tiny_text_models):
    first = enc(tiny_text_models["bert"], pooling="cls", layer=0).forward(TEXTS)
    last = enc(tiny_text_models["bert"], pooling="cls", layer=-1).forward(TEXTS)
    assert not torch.allclose(first, last)


def test_deterministic(tiny_text_models):
    a = enc(tiny_text_models["bert"], pooling="mean").forward(TEXTS)
    b = enc(tiny_text_models["bert"], pooling="mean").forward(TEXTS)
    assert torch.equal(a, b)


def test_sentence_transformers_folder_config(tiny_text_models, tmp_path):
    import shutil

    d = tmp_path / "st"
    shutil.copytree(tiny_text_models["bert"], d)
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    cfg = EncoderConfig.from_params({"family": "sentence_transformers", "weights": str(d)}, "encode.text")
    e = build_encoder(cfg, "text", "encode.text")
    assert e.pooling == "cls" and e.extra_meta["normalize"]
    h, _ = manual(d)
    torch.testing.assert_close(e.forward(TEXTS), torch.nn.functional.normalize(h[:, 0], dim=-1))
    bad = EncoderConfig.from_params({"family": "sentence_transformers",
                                     "weights": str(tiny_text_models["bert"])}, "encode.text")
    with pytest.raises(ParamError, match="not a sentence-transformers folder"):
        build_encoder(bad, "text", "encode.text")


def test_text_family_rejects_images_and_bad_pooling(tiny_text_models):
    with pytest.raises(ParamError, match="encodes text"):
        build_encoder(EncoderConfig(family="hf_text", weights=str(tiny_text_models["bert"])), "image", "encode.image")
    with pytest.raises(ParamError, match="encode.text.pooling"):
        enc(tiny_text_models["bert"], pooling="median")
