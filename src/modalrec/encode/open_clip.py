"""open_clip CLIP towers (image and text), e.g. ``model: ViT-B-32`` with ``weights: openai`` (a pretrained tag that
needs the hub or its cache), a local checkpoint file, or ``local-dir:/path`` (an open_clip folder with its config).

Poolings: ``embed`` (the projected CLIP embedding, ``encode_image``/``encode_text``; L2-normalised when
``normalize: true``) and ``tokens``: the transformer's output for every position *before* the final LayerNorm and
projection, i.e. HF's ``hidden_states[-1]``, which ODMT used (50 tokens for ViT-B/32). Text tokens are the first
``max_length`` positions of CLIP's causal context (causal, so truncating after encoding changes nothing) with the
padding mask.

Preprocessing: ``auto`` uses open_clip's own eval transform (CLIP mean/std); ``half`` is ODMT's parity choice.
"""

from __future__ import annotations

import torch
from PIL import Image

from ..errors import ParamError
from .images import PRESETS, preset_transform
from .registry import (Encoder, EncoderConfig, autocast, check_choice, offline_hint, pick_device, register_family,
                       resolve_weights, weight_files)

POOLINGS = ("auto", "embed", "tokens")


def _capture(module: torch.nn.Module):
    """Forward hook that keeps the module's last output (the transformer's token states)."""
    box: dict[str, torch.Tensor] = {}

    def hook(_m, _inp, out):
        box["out"] = out[0] if isinstance(out, tuple) else out
    module.register_forward_hook(hook)
    return box


@register_family("open_clip")
def build(cfg: EncoderConfig, kind: str, key: str) -> Encoder:
    import open_clip

    pooling = check_choice(f"{key}.pooling", cfg.pooling, POOLINGS)
    pooling = "embed" if pooling == "auto" else pooling
    check_choice(f"{key}.preprocess", cfg.preprocess, ("auto",) + PRESETS)
    if not cfg.model and not cfg.weights.startswith(("hf-hub:", "local-dir:")):
        raise ParamError(f"{key}.model", f"name the open_clip architecture, e.g. ViT-B-32; available: "
                                         f"{open_clip.list_models()[:12]}...")
    if cfg.weights.startswith(("hf-hub:", "local-dir:")):
        name, pretrained, origin, path = cfg.weights, None, "hub" if cfg.weights.startswith("hf-hub:") else "local", None
    else:
        if cfg.model not in open_clip.list_models():
            raise ParamError(f"{key}.model", f"unknown open_clip model {cfg.model!r}; available: "
                                             f"{open_clip.list_models()}")
        tags = open_clip.list_pretrained_tags_by_model(cfg.model)
        origin, path = ("hub", None) if cfg.weights in tags else resolve_weights(cfg.weights, key, ())
        if origin == "hub" and cfg.weights not in tags:
            raise ParamError(f"{key}.weights", f"{cfg.weights!r} is neither a local checkpoint nor a pretrained tag "
                                               f"of {cfg.model}; tags: {tags}")
        name, pretrained = cfg.model, (str(path) if path is not None else cfg.weights)
    device = pick_device(cfg.device)
    try:
        model, _, preprocess_val = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, pretrained_text=False, device=device, weights_only=True)
    except (OSError, RuntimeError) as e:
        if origin == "hub":
            raise offline_hint(key, cfg.weights, e) from None
        raise ParamError(f"{key}.weights", f"cannot load open_clip {name} from {pretrained}: {e}") from None
    model.eval()

    if kind == "image":
        transform = preprocess_val if cfg.preprocess == "auto" else preset_transform(cfg.preprocess, cfg.image_size)
        preprocessing = "open_clip eval transform" if cfg.preprocess == "auto" else f"{cfg.preprocess}({cfg.image_size})"
        box = _capture(model.visual.transformer) if pooling == "tokens" else None

        @torch.inference_mode()
        def forward(x: torch.Tensor):
            with autocast(device, cfg.precision):
                f = model.encode_image(x.to(device)).float()
            if box is not None:
                tok = box["out"].float()
                return tok, torch.ones(tok.shape[:2], dtype=torch.bool)
            return torch.nn.functional.normalize(f, dim=-1) if cfg.normalize else f

        size = getattr(model.visual, "image_size", (224, 224))
        size = size[0] if isinstance(size, (tuple, list)) else size
        probe = forward(transform(Image.new("RGB", (size, size))).unsqueeze(0))
    else:
        tokenizer = open_clip.get_tokenizer(name)
        transform, preprocessing = None, f"open_clip tokenizer (context {getattr(tokenizer, 'context_length', 77)})"
        tower = getattr(model, "text", model)
        box = _capture(tower.transformer) if pooling == "tokens" else None
        T = cfg.max_length

        @torch.inference_mode()
        def forward(texts: list[str]):
            ids = tokenizer(texts).to(device)
            with autocast(device, cfg.precision):
                f = model.encode_text(ids).float()
            if box is not None:
                tok, mask = box["out"].float()[:, :T], (ids != 0)[:, :T]
                if tok.shape[1] < T:                                  # context shorter than max_length: pad
                    pad = T - tok.shape[1]
                    tok = torch.nn.functional.pad(tok, (0, 0, 0, pad))
                    mask = torch.nn.functional.pad(mask, (0, pad))
                return tok * mask.unsqueeze(-1), mask
            return torch.nn.functional.normalize(f, dim=-1) if cfg.normalize else f

        probe = forward(["probe"])
    f = probe[0] if pooling == "tokens" else probe
    return Encoder(kind=kind, dim=int(f.shape[-1]), n_tokens=int(f.shape[1]) if pooling == "tokens" else None,
                   forward=forward, transform=transform, weights_id=f"{cfg.model}:{cfg.weights}",
                   weights_files=weight_files(path), pooling=pooling, preprocessing=preprocessing,
                   extra_meta={"model": name, "device": str(device), "normalize": cfg.normalize})
