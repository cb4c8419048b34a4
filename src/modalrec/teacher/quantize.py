"""Codebooks for KDSR's dissected correlations: x codewords in R^D, and nearest-codeword assignment.

- ``kmeans``: ``faiss.Kmeans`` (on GPU when ``faiss.get_num_gpus() > 0``), seeded, k-means++-free random init as faiss
  does it. The released code ran sklearn MiniBatchKMeans on all N² pairs; we fit on a sample (paper-notes §4.1 K4).
- ``vq``: a vector-quantisation codebook as the paper describes it: "initialized randomly, then optimized with
  training data". Codewords start as Gaussian draws matching the data's per-dimension mean and std and are optimised
  with Adam on the VQ codebook loss ``‖sg(v) − e_{q(v)}‖²`` over shuffled mini-batches of the pair vectors; codewords
  that won no vector during an epoch are re-seeded on random vectors of the next batch (the usual dead-code restart,
  switchable). This is not a second k-means: no Lloyd steps, no data-point initialisation.

Assignment (``assign``) is exact nearest-codeword search in chunks, so memory is O(chunk · x), never O(P · x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import ParamError

QUANTIZERS = ("kmeans", "vq")


@dataclass
class QuantizerChoice:
    """Which codebook: params ``kdsr.codes`` and ``kdsr.quantizer``."""

    codes: int = 100             # x: the number of codewords
    quantizer: str = "kmeans"    # kmeans | vq


@dataclass
class QuantizerOptions:
    """How it is fitted: params ``kdsr.quantizer_options``."""

    niter: int = 25              # k-means iterations
    vq_epochs: int = 20          # vq: passes over the sample
    vq_batch: int = 4096
    vq_lr: float = 0.01
    vq_restart_dead: bool = True


@dataclass
class QuantizerConfig(QuantizerOptions, QuantizerChoice):
    """Everything :func:`fit_codebook` reads. Fields: ``codes, quantizer, niter, vq_epochs, vq_batch, vq_lr,
    vq_restart_dead`` in that order (a dataclass lists the last base's fields first; the distill stage records
    them in this order in ``stats.json``)."""

    def validate(self, key: str = "kdsr") -> None:
        if self.quantizer not in QUANTIZERS:
            raise ParamError(f"{key}.quantizer", f"must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if not isinstance(self.codes, int) or isinstance(self.codes, bool) or self.codes < 2:
            raise ParamError(f"{key}.codes", f"the number of codewords x must be an integer >= 2, got {self.codes!r}")
        for name in ("niter", "vq_epochs", "vq_batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ParamError(f"{key}.{name}", f"must be a positive integer, got {v!r}")
        if not self.vq_lr > 0:
            raise ParamError(f"{key}.vq_lr", f"must be > 0, got {self.vq_lr}")


def fit_codebook(vectors: np.ndarray, cfg: QuantizerConfig, seed: int, key: str = "kdsr") -> np.ndarray:
    """Fit ``cfg.codes`` codewords on ``vectors [P, D]`` (float32) -> ``[x, D]`` float32."""
    cfg.validate(key)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) < cfg.codes:
        raise ParamError(f"{key}.codes", f"x={cfg.codes} codewords need at least as many sampled pairs, got "
                                         f"{len(vectors)} (raise {key}.pairs or lower {key}.codes)")
    if cfg.quantizer == "kmeans":
        return fit_kmeans(vectors, cfg.codes, seed, cfg.niter)
    return fit_vq(vectors, cfg, seed)


def fit_kmeans(vectors: np.ndarray, k: int, seed: int, niter: int = 25) -> np.ndarray:
    import faiss

    km = faiss.Kmeans(vectors.shape[1], k, niter=niter, seed=int(seed) % (2**31), verbose=False,
                      gpu=faiss.get_num_gpus() > 0, max_points_per_centroid=max(256, len(vectors) // k + 1))
    km.train(vectors)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def fit_vq(vectors: np.ndarray, cfg: QuantizerConfig, seed: int) -> np.ndarray:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator().manual_seed(int(seed))
    data = torch.from_numpy(vectors)
    mean, std = data.mean(0), data.std(0).clamp(min=1e-6)
    codebook = (mean + std * torch.randn(cfg.codes, data.shape[1], generator=gen)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([codebook], lr=cfg.vq_lr)
    n = len(data)
    for _ in range(cfg.vq_epochs):
        perm = torch.randperm(n, generator=gen)
        used = torch.zeros(cfg.codes, dtype=torch.bool, device=device)
        for s in range(0, n, cfg.vq_batch):
            v = data[perm[s:s + cfg.vq_batch]].to(device)
            with torch.no_grad():
                q = _nearest(v, codebook.detach())
            used[q] = True
            loss = (v - codebook[q]).pow(2).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        dead = (~used).nonzero().flatten()
        if cfg.vq_restart_dead and len(dead):
            pick = torch.randint(0, n, (len(dead),), generator=gen)
            with torch.no_grad():
                codebook[dead] = data[pick].to(device)
            opt.state.clear()  # fresh moments for the moved codewords (and the rest: they restart gently)
    return codebook.detach().cpu().numpy().astype(np.float32)


def _nearest(v: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest codeword (squared L2) of each row of ``v [P, D]``; ties -> the lowest index."""
    d = (v * v).sum(-1, keepdim=True) - 2 * v @ codebook.t() + (codebook * codebook).sum(-1)
    return d.argmin(-1)


def assign(v: Tensor, codebook: Tensor, chunk: int = 65536) -> Tensor:
    """Nearest-codeword ids ``[...]`` (int64) of ``v [..., D]``; exact search, ties -> the lowest index.

    CPU tensors use a FAISS flat L2 index (blocked distance + top-1 in one pass, about 2.5x faster than a matrix
    product followed by argmin); CUDA tensors are searched in chunks of ``chunk`` rows with torch.
    """
    flat = v.reshape(-1, v.shape[-1])
    if flat.device.type == "cpu":
        import faiss

        index = faiss.IndexFlatL2(int(codebook.shape[1]))
        index.add(np.ascontiguousarray(codebook.detach().cpu().numpy(), dtype=np.float32))
        _, ids = index.search(np.ascontiguousarray(flat.detach().numpy(), dtype=np.float32), 1)
        return torch.from_numpy(ids[:, 0]).reshape(v.shape[:-1])
    cb = codebook.to(device=flat.device, dtype=flat.dtype)
    cn = (cb * cb).sum(-1)
    out = torch.empty(len(flat), dtype=torch.long, device=flat.device)
    cbt = cb.t().contiguous()
    for s in range(0, len(flat), chunk):
        # ‖x‖² is constant per row: argmin of ‖c‖² − 2 x·c is the nearest codeword
        out[s:s + chunk] = torch.addmm(cn, flat[s:s + chunk], cbt, beta=1.0, alpha=-2.0).argmin(-1)
    return out.reshape(v.shape[:-1])


def usage_stats(vectors: np.ndarray, codebook: np.ndarray) -> dict:
    """Code usage histogram, perplexity, dead codes and quantisation error of ``vectors`` under ``codebook``."""
    v = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    cb = torch.from_numpy(codebook)
    codes = assign(v, cb)
    hist = torch.bincount(codes, minlength=len(cb)).numpy()
    p = hist / max(hist.sum(), 1)
    nz = p[p > 0]
    err = (v - cb[codes]).pow(2).sum(-1)
    total_var = float(v.var(0, unbiased=False).sum())
    return {
        "histogram": hist.tolist(),
        "perplexity": float(math.exp(-(nz * np.log(nz)).sum())),
        "dead_codes": int((hist == 0).sum()),
        "quantisation_mse": float(err.mean()),
        "quantisation_mse_relative": float(err.mean()) / total_var if total_var > 0 else 0.0,
        "n_vectors": int(len(v)),
    }
