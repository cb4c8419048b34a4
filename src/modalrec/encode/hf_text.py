"""Hugging Face text encoders: BERT-like encoders, T5 encoders, decoder LLMs (LLaMA, OPT...) and
sentence-transformers checkpoints, all through plain ``transformers``.

Poolings (over ``hidden_states[layer]``, the last hidden state by default):
- ``mean``: attention-masked mean (the default; paper-notes K11). ``mean_unmasked``: the plain mean over all positions
  *including padding*, which is what KDSR's released code did (parity only: it depends on how the batch was padded,
  so the runner keeps KDSR's item order instead of sorting by length).
- ``cls``: the first token (BERT [CLS], UniSRec). ``last``: the last non-padding token (decoder LLMs; works with
  left or right padding). ``max``: masked max.
- ``tokens``: every position up to ``max_length`` (padded to exactly ``max_length``) plus the attention mask, for
  ODMT's token-level caches (BERT, 30 tokens).
- ``auto``: what a sentence-transformers folder declares in ``1_Pooling/config.json`` (and its Normalize module),
  else ``mean``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ParamError
from .registry import (Encoder, EncoderConfig, autocast, check_choice, hub_cache_files, offline_hint, pick_device,
                       register_family, resolve_weights, weight_files)

POOLINGS = ("auto", "mean", "mean_unmasked", "cls", "last", "max", "tokens")


def sentence_transformers_pooling(path: Path | None) -> tuple[str | None, bool]:
    """(pooling, normalize) declared by a sentence-transformers folder, or (None, False) for a plain checkpoint."""
    if path is None or not (path / "modules.json").is_file():
        return None, False
    modules = json.loads((path / "modules.json").read_text())
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    pooling = "mean"
    for m in modules:
        if m.get("type", "").endswith("Pooling"):
            pc = json.loads((path / m.get("path", "1_Pooling") / "config.json").read_text())
            if pc.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif pc.get("pooling_mode_lasttoken"):
                pooling = "last"
            elif pc.get("pooling_mode_max_tokens"):
                pooling = "max"
    return pooling, normalize


def pool(h: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool ``[B, L, d]`` hidden states with attention mask ``[B, L]`` (1 = real token) into ``[B, d]``."""
    m = mask.to(h.dtype).unsqueeze(-1)
    if pooling == "mean":
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    if pooling == "mean_unmasked":
        return h.mean(1)
    if pooling == "cls":
        return h[:, 0]
    if pooling == "last":
        L = mask.shape[1]
        idx = L - 1 - mask.flip(1).long().argmax(1)          # last real position, whatever the padding side
        return h[torch.arange(h.shape[0], device=h.device), idx]
    if pooling == "max":
        return h.masked_fill(m == 0, torch.finfo(h.dtype).min).amax(1)
    raise ValueError(pooling)


def _load_model(src: str, cfg: EncoderConfig, dtype: torch.dtype):
    import transformers
    from transformers import AutoConfig, AutoModel

    kw = dict(trust_remote_code=cfg.trust_remote_code)
    config = AutoConfig.from_pretrained(src, **kw)
    if getattr(config, "is_encoder_decoder", False):
        # T5-family: load only the encoder stack (T5EncoderModel, MT5EncoderModel, ...) when such a class exists.
        enc_cls = getattr(transformers, type(config).__name__.replace("Config", "EncoderModel"), None)
        if enc_cls is not None:
            return enc_cls.from_pretrained(src, dtype=dtype, **kw), config
        return AutoModel.from_pretrained(src, dtype=dtype, **kw).get_encoder(), config
    return AutoModel.from_pretrained(src, dtype=dtype, **kw), config


@register_family("hf_text")
@register_family("sentence_transformers")
def build(cfg: EncoderConfig, kind: str, key: str) -> Encoder:
    from transformers import AutoTokenizer

    if kind != "text":
        raise ParamError(f"{key}.family", f"{cfg.family} encodes text; for images use hf_vision, open_clip or timm")
    check_choice(f"{key}.pooling", cfg.pooling, POOLINGS)
    origin, path = resolve_weights(cfg.weights, key, ("all-MiniLM-L6-v2",))
    src = str(path) if path is not None else cfg.weights
    st_pooling, st_norm = sentence_transformers_pooling(path)
    if cfg.family == "sentence_transformers" and path is not None and st_pooling is None:
        raise ParamError(f"{key}.weights", f"{src} has no modules.json: not a sentence-transformers folder "
                                           "(use family: hf_text with an explicit pooling)")
    pooling = cfg.pooling if cfg.pooling != "auto" else (st_pooling or "mean")
    normalize = cfg.normalize or (cfg.pooling == "auto" and st_norm)

    device = pick_device(cfg.device)
    half = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.precision) if device.type == "cuda" else None
    try:
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=cfg.trust_remote_code)
        model, config = _load_model(src, cfg, half or torch.float32)
    except OSError as e:
        if origin == "hub":
            raise offline_hint(key, cfg.weights, e) from None
        raise ParamError(f"{key}.weights", f"cannot load a transformers text model from {src}: {e}") from None
    if tok.pad_token is None:            # decoder LLMs ship without a pad token
        if tok.eos_token is None:
            raise ParamError(f"{key}.weights", f"tokenizer of {src} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    model.eval().to(device)
    n_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None)
    tokens = pooling == "tokens"

    @torch.inference_mode()
    def forward(texts: list[str]):
        enc = tok(texts, padding="max_length" if tokens else True, truncation=True, max_length=cfg.max_length,
                  return_tensors="pt")
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        with autocast(device, cfg.precision):
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=cfg.layer != -1)
        h = (out.last_hidden_state if cfg.layer == -1 else out.hidden_states[cfg.layer]).float()
        if tokens:
            return h, mask.bool()
        v = pool(h, mask, pooling)
        return torch.nn.functional.normalize(v, dim=-1) if normalize else v

    files = weight_files(path) if path is not None else hub_cache_files(cfg.weights)
    dim = int(config.hidden_size if hasattr(config, "hidden_size") else config.d_model)
    return Encoder(kind="text", dim=dim, n_tokens=cfg.max_length if tokens else None, forward=forward,
                   weights_id=f"packaged:{cfg.weights}" if origin == "packaged" else cfg.weights,
                   weights_files=files, pooling=pooling,
                   preprocessing=f"{type(tok).__name__}(max_length={cfg.max_length}, truncation, "
                                 f"padding={'max_length' if tokens else 'longest'}, lowercase={cfg.lowercase})"
                                 + (", l2-normalised" if normalize else ""),
                   extra_meta={"model_type": config.model_type, "layer": cfg.layer, "n_layers": n_layers,
                               "normalize": bool(normalize), "device": str(device)})

