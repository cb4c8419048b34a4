"""Correlation functions ξ of KDSR's teacher (§3.2), for explicit pairs of vectors, never for all N² pairs.

``xi`` names: ``cos`` (cosine; a zero vector has cosine 0 with everything, as sklearn's ``cosine_similarity``),
``dot`` (inner product), ``euclidean`` (L2 distance) and ``manhattan`` (L1 distance). The released code's ``dot``,
``euc`` and ``man`` are raw products and distances without normalisation (paper-notes §1.5); so are ours.

*Holistic* correlation: ξ of the whole vectors. *Dissected* correlation: the vectors are cut into D equal parts
(``np.split(m, D, axis=1)`` in the released code) and ξ is taken per part, giving a D-vector per pair.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ParamError

XI = ("cos", "dot", "euclidean", "manhattan")
_ALIASES = {"cosine": "cos", "euc": "euclidean", "l2": "euclidean", "man": "manhattan", "l1": "manhattan"}
_EPS = 1e-12


def normalise_xi(xi: str, key: str = "kdsr.xi") -> str:
    """The canonical name of ``xi`` (accepts the released code's ``euc``/``man`` and ``cosine``)."""
    name = _ALIASES.get(str(xi).lower(), str(xi).lower())
    if name not in XI:
        raise ParamError(key, f"must be one of {XI} (or cosine/euc/man), got {xi!r}")
    return name


def check_split(dim: int, D: int, key: str = "kdsr.D") -> int:
    """The part size ``dim // D``; a clear error when ``D`` does not divide ``dim``."""
    if not isinstance(D, int) or isinstance(D, bool) or D < 1:
        raise ParamError(key, f"must be a positive integer, got {D!r}")
    if dim % D:
        divisors = [k for k in range(1, dim + 1) if dim % k == 0]
        raise ParamError(key, f"D={D} does not divide the compressed dimension {dim} (compress.dim); "
                              f"use one of {divisors}")
    return dim // D


def pair_xi(a: Tensor, b: Tensor, xi: str) -> Tensor:
    """ξ over the last dimension of two equally shaped tensors ``[..., d]`` -> ``[...]``."""
    if xi == "cos":
        num = (a * b).sum(-1)
        den = a.norm(dim=-1) * b.norm(dim=-1)
        return torch.where(den > _EPS, num / den.clamp(min=_EPS), torch.zeros_like(num))
    if xi == "dot":
        return (a * b).sum(-1)
    if xi == "euclidean":
        return (a - b).norm(dim=-1)
    if xi == "manhattan":
        return (a - b).abs().sum(-1)
    raise ParamError("kdsr.xi", f"must be one of {XI}, got {xi!r}")


def dissect(x: Tensor, D: int) -> Tensor:
    """``[..., d]`` -> ``[..., D, d/D]``: the D consecutive equal parts of the vectors."""
    check_split(x.shape[-1], D)
    return x.reshape(*x.shape[:-1], D, x.shape[-1] // D)


def holistic(a: Tensor, b: Tensor, xi: str) -> Tensor:
    """Holistic correlation of pairs of vectors ``a[k]``, ``b[k]`` (``[..., d]`` -> ``[...]``)."""
    return pair_xi(a, b, xi)


def dissected(a: Tensor, b: Tensor, D: int, xi: str) -> Tensor:
    """Dissected correlation of pairs of vectors (``[..., d]`` -> ``[..., D]``): ξ per part."""
    return pair_xi(dissect(a, D), dissect(b, D), xi)


def unit_split(x: Tensor, D: int) -> tuple[Tensor, Tensor]:
    """Per-vector factors for cosines of pairs: ``x [..., d]`` -> ``(u [..., d], w [..., D])``, ``u`` the D parts of
    each vector scaled to unit norm and ``w`` each part's share of the vector's norm (``|x_k| / |x|``); zero parts
    and vectors give zeros. Computed once per table, they make a pair's cosines one product of two gathered rows
    (:func:`split_cosines`) instead of normalising both vectors, and their parts, pair by pair."""
    p = dissect(x, D)
    n = p.norm(dim=-1)  # [..., D]
    u = torch.where(n.unsqueeze(-1) > _EPS, p / n.clamp(min=_EPS).unsqueeze(-1), torch.zeros_like(p))
    tot = n.norm(dim=-1, keepdim=True)  # |x|
    w = torch.where(tot > _EPS, n / tot.clamp(min=_EPS), torch.zeros_like(n))
    return u.flatten(-2), w


def split_cosines(ua: Tensor, wa: Tensor, ub: Tensor, wb: Tensor, D: int) -> tuple[Tensor, Tensor]:
    """Holistic ``[...]`` and per-part ``[..., D]`` cosines of pairs from their :func:`unit_split` factors: the part
    cosines are the part sums of ``u_a ⊙ u_b``, and since ``a·b = Σ_k |a_k| |b_k| cos_k``, the holistic cosine is
    ``Σ_k w_a,k w_b,k cos_k``."""
    cos = (ua * ub).reshape(*ua.shape[:-1], D, ua.shape[-1] // D).sum(-1)
    return (cos * wa * wb).sum(-1), cos


def unit_rows(z: Tensor) -> Tensor:
    """``z [..., d]`` with every row scaled to unit norm; zero rows (norm <= eps) stay zero."""
    n = z.norm(dim=-1, keepdim=True)
    return torch.where(n > _EPS, z / n.clamp(min=_EPS), torch.zeros_like(z))


def matrix_xi(za: Tensor, zb: Tensor, xi: str) -> Tensor:
    """``[..., U, d] x [..., V, d] -> [..., U, V]``: ξ of every row of ``za`` with every row of ``zb``.

    Memory is O(U·V) for cos/dot/euclidean (matrix products); manhattan needs O(U·V·d) and is done in row chunks.
    """
    if xi == "cos":
        return unit_rows(za) @ unit_rows(zb).transpose(-1, -2)
    if xi == "dot":
        return za @ zb.transpose(-1, -2)
    if xi == "euclidean":
        return torch.cdist(za, zb, compute_mode="donot_use_mm_for_euclid_dist")
    if xi == "manhattan":
        return torch.cdist(za, zb, p=1.0)
    raise ParamError("kdsr.xi", f"must be one of {XI}, got {xi!r}")
