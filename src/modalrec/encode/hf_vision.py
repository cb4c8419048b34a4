"""Hugging Face vision encoders: ResNet, Swin, ViT and CLIP vision towers.

Poolings:
- ``pooled``: the model's pooled feature (ResNet/Swin global average pool, CLIP's post-LN CLS; ViT's CLS token).
- ``logits``: the ImageNet classification logits, which is what KDSR's released code stored (paper-notes K10). Needs a
  checkpoint with a classification head (``...ForImageClassification``); otherwise a clear error.
- ``cls`` / ``mean``: first token / mean of ``hidden_states[layer]`` (transformers only).
- ``tokens``: ``hidden_states[layer]`` for every position, the last layer by default. For CLIP this is the encoder
  output *before* ``post_layernorm``, exactly ODMT's ``hidden_states[12]`` (50 tokens for ViT-B/32). Convolutional
  and Swin feature maps become ``[pooled; H*W spatial]`` tokens.

Preprocessing: ``auto`` uses the checkpoint's image processor when it has one, else the ``imagenet`` preset; ``half``
is ODMT's Resize((224,224)) + Normalize(0.5, 0.5) (paper-notes O5).
"""

from __future__ import annotations

import torch
from PIL import Image

from ..errors import ParamError
from .images import PRESETS, preset_transform, processor_transform
from .registry import (Encoder, EncoderConfig, autocast, check_choice, hub_cache_files, offline_hint, pick_device,
                       register_family, resolve_weights, weight_files)

POOLINGS = ("auto", "pooled", "logits", "cls", "mean", "tokens")
CLIP_TYPES = ("clip", "clip_vision_model")


def _load(src: str, cfg: EncoderConfig, pooling: str, key: str):
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, CLIPVisionModel

    config = AutoConfig.from_pretrained(src)
    if pooling == "logits":
        model, info = AutoModelForImageClassification.from_pretrained(src, output_loading_info=True)
        if any("classifier" in k or "head" in k for k in info["missing_keys"]):
            raise ParamError(f"{key}.pooling", f"{src} has no trained classification head, so 'logits' would be "
                                               "random; use pooling: pooled or a ...ForImageClassification checkpoint")
        return model, config
    if config.model_type in CLIP_TYPES:
        return CLIPVisionModel.from_pretrained(src), config
    return AutoModel.from_pretrained(src), config


@register_family("hf_vision")
def build(cfg: EncoderConfig, kind: str, key: str) -> Encoder:
    from transformers import AutoImageProcessor

    if kind != "image":
        raise ParamError(f"{key}.family", "hf_vision encodes images; for text use hf_text or open_clip")
    pooling = check_choice(f"{key}.pooling", cfg.pooling, POOLINGS)
    pooling = "pooled" if pooling == "auto" else pooling
    check_choice(f"{key}.preprocess", cfg.preprocess, ("auto", "processor") + PRESETS)
    origin, path = resolve_weights(cfg.weights, key, ())
    src = str(path) if path is not None else cfg.weights
    try:
        model, config = _load(src, cfg, pooling, key)
    except OSError as e:
        if origin == "hub":
            raise offline_hint(key, cfg.weights, e) from None
        raise ParamError(f"{key}.weights", f"cannot load a transformers vision model from {src}: {e}") from None

    preprocess = cfg.preprocess
    processor = None
    if preprocess in ("auto", "processor"):
        try:
            processor = AutoImageProcessor.from_pretrained(src)
            preprocess = "processor"
        except (OSError, ValueError) as e:
            if preprocess == "processor":
                raise ParamError(f"{key}.preprocess", f"{src} has no image processor ({e}); use one of "
                                                      f"{list(PRESETS)}") from None
            preprocess = "imagenet"
    transform = processor_transform(processor) if processor is not None else preset_transform(preprocess,
                                                                                              cfg.image_size)
    device = pick_device(cfg.device)
    is_conv = config.model_type in ("resnet", "convnext", "convnextv2", "regnet", "efficientnet", "mobilenet_v2")
    layout = torch.channels_last if is_conv else torch.contiguous_format    # oneDNN's fast conv layout
    model.eval().to(device, memory_format=layout)

    def _features(out) -> torch.Tensor:
        if pooling == "logits":
            return out.logits
        h = out.last_hidden_state if cfg.layer == -1 else out.hidden_states[cfg.layer]
        if h.dim() == 4:                                   # conv feature map [B, C, H, W] -> [B, HW, C]
            h = h.flatten(2).transpose(1, 2)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None and pooled.dim() == 4:
            pooled = pooled.flatten(1)
        if pooling == "pooled":
            if config.model_type == "vit" or pooled is None:
                return h[:, 0] if not is_conv else h.mean(1)
            return pooled
        if pooling == "cls":
            return h[:, 0]
        if pooling == "mean":
            return h.mean(1)
        # tokens: transformers with a CLS token keep their sequence; feature maps get the pooled vector in front
        if is_conv or config.model_type in ("swin", "swinv2"):
            first = pooled if pooled is not None else h.mean(1)
            h = torch.cat([first.unsqueeze(1), h], 1)
        return h

    @torch.inference_mode()
    def forward(x: torch.Tensor):
        with autocast(device, cfg.precision):
            out = model(pixel_values=x.to(device).contiguous(memory_format=layout),
                        output_hidden_states=cfg.layer != -1)
        f = _features(out).float()
        if pooling == "tokens":
            return f, torch.ones(f.shape[:2], dtype=torch.bool)
        return torch.nn.functional.normalize(f, dim=-1) if cfg.normalize else f

    probe = forward(transform(Image.new("RGB", (cfg.image_size, cfg.image_size))).unsqueeze(0))
    f = probe[0] if pooling == "tokens" else probe
    return Encoder(kind="image", dim=int(f.shape[-1]), n_tokens=int(f.shape[1]) if pooling == "tokens" else None,
                   forward=forward, transform=transform, weights_id=cfg.weights,
                   weights_files=weight_files(path) if path is not None else hub_cache_files(cfg.weights),
                   pooling=pooling,
                   preprocessing=(f"processor:{type(processor).__name__}" if processor is not None
                                  else f"{preprocess}(size={cfg.image_size})"),
                   extra_meta={"model_type": config.model_type, "layer": cfg.layer, "device": str(device),
                               "normalize": cfg.normalize})
