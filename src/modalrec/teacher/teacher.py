"""KDSR's correlation teacher (§3.2) with memory O(N + #pairs asked), never N².

The released code precomputes an N×N holistic matrix and an N×N×D dissected tensor, k-means-clusters all N² D-vectors
and stores an N×N code matrix (8.7 GiB for Beauty). Here the teacher keeps only the compressed item vectors m̃
(``[N+1, d]`` per modality, already loaded by the caller; for ``cos`` also their unit-split factors, ``[N+1, d + D]``,
made on the first lookup) and one codebook ``[x, D]`` per modality:

- ``holistic(i, j, m)``: ξ(m̃_i, m̃_j) for LongTensors of item ids of any equal shape;
- ``codes(i, j, m)``: the nearest codeword of the dissected correlation ``[ξ(m̃_i^(k), m̃_j^(k))]_{k=1..D}``;
- ``lookup(i, j, m)``: both at once, from one gather of the pairs' m̃ (what CDL asks for,
  :func:`modalrec.losses.cdl.teacher_lookup`);
- ``batch_lookup(items, m, b, i, j)``: the same for pairs *within* the rows of ``items [B, U]``, computed with
  per-row matrix products instead of gathering both vectors of every pair (CDL does not use it).

The codebook is fitted (:func:`fit_teacher`) on a recorded, seeded sample of pairs: ordered pairs of items that
co-occur in a training sequence (the pairs CDL supervises, diagonal included) plus uniform random pairs; or, for small
catalogues, on all N² pairs (``exact``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, ParamError
from ..io import atomic_path, read_json, write_json
from ..params import dataclass_from
from .correlation import (check_split, dissect, matrix_xi, normalise_xi, pair_xi, split_cosines, unit_rows,
                          unit_split)
from .quantize import QuantizerChoice, QuantizerConfig, QuantizerOptions, assign, fit_codebook, usage_stats

EXACT_MAX_PAIRS = 20_000_000
TEACHER_KEYS = ("seed", "D", "codes", "quantizer", "xi", "center")  # flat keys of the kdsr section the teacher reads


@dataclass
class PairSample:
    """The pairs the codebook is fitted on: params ``kdsr.pairs``."""

    cooccur: int = 1_000_000     # sampled ordered pairs of items co-occurring in a training sequence
    random: int = 1_000_000      # sampled uniform random item pairs
    exact: bool | str = "auto"   # True: all N² pairs; False: the sample; auto: all pairs when N² <= the sample size


@dataclass
class TeacherConfig:
    D: int = 8                                  # parts of the dissected correlation (must divide compress.dim)
    codes: int = QuantizerChoice.codes          # x codewords (paper 100; released code 50)
    quantizer: str = QuantizerChoice.quantizer  # kmeans (faiss.Kmeans) | vq (trained codebook)
    xi: str = "cos"                             # cos | dot | euclidean | manhattan
    pairs_cooccur: int = PairSample.cooccur     # kdsr.pairs.cooccur
    pairs_random: int = PairSample.random       # kdsr.pairs.random
    exact: bool | str = PairSample.exact        # kdsr.pairs.exact
    seed: int = 2023                            # the pair sample's and the quantiser's
    center: bool = False                        # correlations of centred m̃ (m̃ − mean over items with the modality)
    quantize: QuantizerConfig = field(default_factory=QuantizerConfig)

    @classmethod
    def from_params(cls, kdsr: dict, key: str = "kdsr") -> "TeacherConfig":
        """From the ``kdsr`` params section: ``seed``, ``D``, ``codes``, ``quantizer``, ``xi``, ``pairs: {cooccur,
        random, exact}`` and ``quantizer_options: {niter, vq_epochs, vq_batch, vq_lr, vq_restart_dead}`` (the
        section's other keys are the student's). An absent key takes its default; an unknown key of ``pairs`` or
        ``quantizer_options``, or a value of the wrong type, is a ParamError naming it (``kdsr.pairs.bogus``)."""
        pairs = dataclass_from(PairSample, kdsr.get("pairs"), f"{key}.pairs")
        options = dataclass_from(QuantizerOptions, kdsr.get("quantizer_options"), f"{key}.quantizer_options")
        cfg = dataclass_from(cls, {k: kdsr[k] for k in TEACHER_KEYS if k in kdsr}, key)
        cfg.pairs_cooccur, cfg.pairs_random, cfg.exact = pairs.cooccur, pairs.random, pairs.exact
        cfg.quantize = QuantizerConfig(codes=cfg.codes, quantizer=cfg.quantizer, **asdict(options))
        cfg.validate(key)
        return cfg

    def validate(self, key: str = "kdsr") -> None:
        self.xi = normalise_xi(self.xi, f"{key}.xi")
        if not isinstance(self.D, int) or isinstance(self.D, bool) or self.D < 1:
            raise ParamError(f"{key}.D", f"must be a positive integer, got {self.D!r}")
        self.quantize.codes, self.quantize.quantizer = self.codes, self.quantizer
        self.quantize.validate(key)
        for name, v in (("cooccur", self.pairs_cooccur), ("random", self.pairs_random)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ParamError(f"{key}.pairs.{name}", f"must be an integer >= 0, got {v!r}")
        if self.exact not in (True, False, "auto"):
            raise ParamError(f"{key}.pairs.exact", f"must be true, false or auto, got {self.exact!r}")
        if self.exact is not True and self.pairs_cooccur + self.pairs_random == 0:
            raise ParamError(f"{key}.pairs", "sample at least one pair (cooccur + random > 0) or set exact: true")


def fingerprint(x: Tensor) -> str:
    """sha256 of the float32 bytes of ``x`` (ties a teacher to the exact m̃ it was fitted on)."""
    return hashlib.sha256(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32).tobytes()).hexdigest()


class Teacher:
    """On-the-fly holistic correlations and correlation codes for item pairs (see the module docstring)."""

    def __init__(self, compressed: dict[str, Tensor], codebooks: dict[str, Tensor], xi: str, D: int,
                 meta: dict[str, Any] | None = None, chunk: int = 65536):
        self.xi = normalise_xi(xi)
        self.D = int(D)
        self.meta = dict(meta or {})
        self.chunk = chunk
        missing = sorted(set(codebooks) - set(compressed))
        if missing:
            raise ParamError("kdsr", f"the teacher has codebooks for {missing} but no compressed vectors were given")
        self.modalities = list(codebooks)
        self.codebooks = {m: torch.as_tensor(codebooks[m], dtype=torch.float32) for m in self.modalities}
        self.tables = {m: torch.as_tensor(compressed[m], dtype=torch.float32) for m in self.modalities}
        if self.meta.get("center"):  # ξ of centred codes (the fingerprints stay those of the raw m̃ given)
            self.tables = {m: center_codes(t) for m, t in self.tables.items()}
        for m in self.modalities:
            check_split(self.tables[m].shape[1], self.D)
            if self.codebooks[m].shape[1] != self.D:
                raise DataError(f"codebook of {m!r} has {self.codebooks[m].shape[1]} dims, expected D={self.D}")
        self.n_codes = {m: int(self.codebooks[m].shape[0]) for m in self.modalities}
        self.device = self.tables[self.modalities[0]].device if self.modalities else torch.device("cpu")
        self._units: dict[str, tuple[Tensor, Tensor]] = {}  # cos: per-modality unit_split(m̃), made on first lookup
        self._unit_rows: dict[str, Tensor] = {}  # cos: per-modality m̃ rows at unit norm, made on first block lookup

    # ------------------------------------------------------------------------------------------------ lookups
    def to(self, device: torch.device | str) -> "Teacher":
        device = torch.device(device)
        self.tables = {m: t.to(device) for m, t in self.tables.items()}
        self.codebooks = {m: c.to(device) for m, c in self.codebooks.items()}
        self._units, self._unit_rows = {}, {}
        self.device = device
        return self

    def _table(self, m: str) -> Tensor:
        if m not in self.tables:
            raise ParamError("kdsr", f"the teacher has no modality {m!r}; it has {self.modalities}")
        return self.tables[m]

    def lookup(self, i: Tensor, j: Tensor, m: str) -> tuple[Tensor, Tensor]:
        """``(holistic float32, codes int64)`` for the pairs ``(i[k], j[k])``, shapes equal to ``i``'s."""
        if i.shape != j.shape:
            raise ValueError(f"pair id tensors must have equal shapes, got {tuple(i.shape)} and {tuple(j.shape)}")
        hol, vec = self._correlations(i, j, m)
        codes = assign(vec, self.codebooks[m])
        return hol.reshape(i.shape), codes.reshape(i.shape)

    def _correlations(self, i: Tensor, j: Tensor, m: str) -> tuple[Tensor, Tensor]:
        Z = self._table(m)
        units = None
        if self.xi == "cos":  # the table's unit-split factors, computed once (as at fitting: the same values)
            units = self._units.get(m)
            if units is None or units[0].device != Z.device:
                units = self._units[m] = unit_split(Z, self.D)
        pairs = torch.stack([i.reshape(-1), j.reshape(-1)], 1).to(Z.device)
        return pair_correlations(Z, pairs, self.D, self.xi, self.chunk, units)

    def holistic(self, i: Tensor, j: Tensor, m: str) -> Tensor:
        """ξ(m̃_i, m̃_j) per pair (float32, shape of ``i``)."""
        return self._correlations(i, j, m)[0].reshape(i.shape)

    def holistic_block(self, items: Tensor, m: str) -> Tensor:
        """``[..., U, U]``: ξ(m̃_i, m̃_j) of every pair of items within each row of ``items [..., U]``, by one matrix
        product per row (cos: of the table's rows scaled to unit norm once; zero rows, e.g. the padding id 0, give
        0). The same values as :meth:`holistic` up to float rounding (another order of the same sums)."""
        Z, xi = self._table(m), self.xi
        if xi == "cos":  # cosines are the products of the rows at unit norm
            unit = self._unit_rows.get(m)
            if unit is None or unit.device != Z.device:
                unit = self._unit_rows[m] = unit_rows(Z)
            Z, xi = unit, "dot"
        x = Z.index_select(0, items.reshape(-1).to(Z.device)).view(*items.shape, Z.shape[1])
        return matrix_xi(x, x, xi)

    def codes(self, i: Tensor, j: Tensor, m: str) -> Tensor:
        """Nearest-codeword id (int64) of each pair's dissected correlation (shape of ``i``)."""
        return self.lookup(i, j, m)[1]

    def batch_lookup(self, items: Tensor, m: str, b: Tensor | None = None, i: Tensor | None = None,
                     j: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Pairs within rows: ``items [B, U]`` item ids (0 = padding, whose m̃ is the zero vector).

        Without ``b, i, j``: ``(holistic [B, U, U], codes [B, U, U])`` for every pair of each row. With them (equal
        shapes, ``P`` pairs): the pairs ``(items[b, i], items[b, j])`` only -> ``([P], [P])``; the per-part
        correlations are still formed by one matrix product per row and part, but codes are assigned only for the
        ``P`` requested pairs.
        """
        Z = self._table(m)
        x = Z[items.to(Z.device)]                                   # [B, U, d]
        B, U, d = x.shape
        hol = matrix_xi(x, x, self.xi)                               # [B, U, U]
        parts = dissect(x, self.D).permute(0, 2, 1, 3)                # [B, D, U, d/D]
        dis = matrix_xi(parts, parts, self.xi)                        # [B, D, U, U]
        if b is None:  # correlations are symmetric: assign the upper triangle only, then mirror it
            iu, ju = torch.triu_indices(U, U, device=x.device)
            up = assign(dis[:, :, iu, ju].permute(0, 2, 1), self.codebooks[m])    # [B, U(U+1)/2]
            codes = torch.empty(B, U, U, dtype=torch.long, device=x.device)
            codes[:, iu, ju] = up
            codes[:, ju, iu] = up
            return hol, codes
        b, i, j = (t.to(Z.device) for t in (b, i, j))
        vec = dis.permute(0, 2, 3, 1)[b, i, j]                        # [P, D]
        return hol[b, i, j], assign(vec, self.codebooks[m])

    # ------------------------------------------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        return {"xi": self.xi, "D": self.D, "modalities": self.modalities, "n_codes": self.n_codes, **self.meta}

    def save(self, out_dir: str | Path, stats: dict[str, Any] | None = None) -> None:
        """``teacher.pt`` (codebooks), ``config.json`` and ``stats.json`` in ``out_dir``, each written atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {f"codebook.{m}": c.detach().cpu().contiguous() for m, c in self.codebooks.items()}
        with atomic_path(out / "teacher.pt") as tmp:
            torch.save(state, tmp)
        write_json(out / "config.json", self.config())
        if stats is not None:
            write_json(out / "stats.json", stats)

    @classmethod
    def load(cls, path: str | Path, compressed: dict[str, Tensor]) -> "Teacher":
        """Load ``models/<ds>/teacher/`` and bind it to the compressed vectors it was fitted on (checked)."""
        path = Path(path)
        for name in ("teacher.pt", "config.json"):
            if not (path / name).is_file():
                raise DataError(f"not a teacher directory: {name} is missing (run the distill stage)", path=path)
        cfg = read_json(path / "config.json")
        state = torch.load(path / "teacher.pt", map_location="cpu", weights_only=True)
        codebooks = {m: state[f"codebook.{m}"] for m in cfg["modalities"]}
        absent = [m for m in codebooks if m not in compressed]
        if absent:
            raise DataError(f"the teacher needs the compressed vectors of {absent} (compress stage)", path=path)
        for m in codebooks:
            want = (cfg.get("fingerprints") or {}).get(m)
            if want and fingerprint(compressed[m]) != want:
                raise DataError(f"the compressed {m!r} vectors differ from those the teacher was fitted on; "
                                "re-run the distill stage", path=path)
        meta = {k: v for k, v in cfg.items() if k not in ("xi", "D", "modalities", "n_codes")}
        return cls({m: compressed[m] for m in codebooks}, codebooks, cfg["xi"], cfg["D"], meta)


# ---------------------------------------------------------------------------------------------------- fitting


def center_codes(z: Tensor) -> Tensor:
    """``z − μ`` on the rows that have the modality (μ = their mean); rows without it (zero vectors: padding, missing
    features) stay zero. m̃ are sigmoid codes in (0, 1): uncentred, every pair's cosine sits near 1 (docs/kdsr.md)."""
    z = torch.as_tensor(z, dtype=torch.float32)
    has = z.abs().sum(1, keepdim=True) > 0
    if not bool(has.any()):
        return z.clone()
    mu = z[has.squeeze(1)].mean(0, keepdim=True)
    return (z - mu) * has


def sample_pairs(train_sequences: Sequence[np.ndarray] | None, n_items: int, n_cooccur: int, n_random: int,
                 seed: int) -> tuple[np.ndarray, dict[str, int]]:
    """``[P, 2]`` int64 item pairs: ``n_cooccur`` ordered pairs (diagonal included) drawn uniformly from the pairs of
    unique items co-occurring in a training sequence (a sequence with U unique items is drawn with weight U², as in
    CDL), then ``n_random`` uniform pairs over items 1..N. Deterministic given ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    n_co = 0
    if n_cooccur and train_sequences is not None:
        uniq = [np.unique(np.asarray(s)) for s in train_sequences]
        uniq = [u[u > 0] for u in uniq]
        sizes = np.array([len(u) for u in uniq], dtype=np.int64)
        if sizes.sum() > 0:
            flat = np.concatenate([u for u in uniq if len(u)]).astype(np.int64)
            offs = np.concatenate([[0], np.cumsum(sizes)])[:-1]
            w = sizes.astype(np.float64) ** 2
            s = rng.choice(len(uniq), size=n_cooccur, p=w / w.sum())
            a = offs[s] + (rng.random(n_cooccur) * sizes[s]).astype(np.int64)
            b = offs[s] + (rng.random(n_cooccur) * sizes[s]).astype(np.int64)
            out.append(np.stack([flat[a], flat[b]], 1))
            n_co = n_cooccur
    if n_random:
        out.append(rng.integers(1, n_items + 1, size=(n_random, 2), dtype=np.int64))
    pairs = np.concatenate(out) if out else np.zeros((0, 2), np.int64)
    return pairs, {"cooccur": n_co, "random": int(n_random)}


def all_pairs(n_items: int) -> np.ndarray:
    if n_items * n_items > EXACT_MAX_PAIRS:
        raise ParamError("kdsr.pairs.exact", f"exact fitting on all {n_items}² = {n_items * n_items:,} pairs exceeds "
                                             f"{EXACT_MAX_PAIRS:,}; sample pairs instead (exact: false)")
    ids = np.arange(1, n_items + 1, dtype=np.int64)
    return np.stack(np.meshgrid(ids, ids, indexing="ij"), -1).reshape(-1, 2)


def pair_correlations(z: Tensor, pairs: Tensor, D: int, xi: str, chunk: int = 65536,
                      units: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Holistic ``[P]`` and dissected ``[P, D]`` correlations of the item pairs ``pairs [P, 2]`` (one gather each).
    Cosines come from the table's :func:`unit_split` factors (``units``, computed here when not given): one product
    of two gathered rows a pair, the same values whether the pairs are asked for at fitting or during training."""
    if xi == "cos" and units is None:
        units = unit_split(z, D)
    hol, vec = [], []
    for s in range(0, len(pairs), chunk):
        ia, ib = pairs[s:s + chunk, 0], pairs[s:s + chunk, 1]
        if xi == "cos":
            u, w = units
            h, v = split_cosines(u.index_select(0, ia), w.index_select(0, ia), u.index_select(0, ib),
                                 w.index_select(0, ib), D)
        else:
            a, b = z.index_select(0, ia), z.index_select(0, ib)
            h, v = pair_xi(a, b, xi), pair_xi(dissect(a, D), dissect(b, D), xi)
        hol.append(h)
        vec.append(v)
    if not hol:
        return z.new_zeros(0), z.new_zeros(0, D)
    return torch.cat(hol), torch.cat(vec)


def fit_teacher(compressed: dict[str, Tensor], train_sequences: Sequence[np.ndarray] | None, cfg: TeacherConfig,
                progress: bool = True) -> tuple[Teacher, dict[str, Any]]:
    """Fit one codebook per modality on the sampled pairs' dissected correlations -> ``(teacher, stats)``."""
    cfg.validate()
    if not compressed:
        raise ParamError("compress.modalities", "no compressed modality to distill")
    n_items = int(next(iter(compressed.values())).shape[0]) - 1
    for m, z in compressed.items():
        check_split(int(z.shape[1]), cfg.D)
        if int(z.shape[0]) != n_items + 1:
            raise DataError(f"compressed {m!r} has {z.shape[0]} rows, expected {n_items + 1}")
    t0 = time.perf_counter()
    exact = cfg.exact is True or (cfg.exact == "auto" and n_items * n_items <= cfg.pairs_cooccur + cfg.pairs_random)
    if exact:
        pairs, counts = all_pairs(n_items), {"all": n_items * n_items}
    else:
        pairs, counts = sample_pairs(train_sequences, n_items, cfg.pairs_cooccur, cfg.pairs_random, cfg.seed)
    pt = torch.from_numpy(pairs)
    codebooks: dict[str, Tensor] = {}
    stats: dict[str, Any] = {"pairs": {**counts, "total": int(len(pairs)), "seed": cfg.seed, "exact": exact},
                             "config": {k: v for k, v in asdict(cfg).items() if k != "quantize"} | {
                                 "quantize": asdict(cfg.quantize)}, "modalities": {}}
    fps = {}
    for k, m in enumerate(compressed):
        tm = time.perf_counter()
        z = center_codes(compressed[m]) if cfg.center else compressed[m].float()
        hol, vec = (t.numpy() for t in pair_correlations(z, pt, cfg.D, cfg.xi))
        codebooks[m] = torch.from_numpy(fit_codebook(vec, cfg.quantize, cfg.seed + k))
        st = usage_stats(vec, codebooks[m].numpy())
        st["holistic"] = {"mean": float(hol.mean()), "std": float(hol.std()), "min": float(hol.min()),
                          "max": float(hol.max())}
        st["seconds"] = round(time.perf_counter() - tm, 2)
        stats["modalities"][m] = st
        fps[m] = fingerprint(compressed[m])
        if progress:
            print(f"distill {m}: {cfg.quantizer} x={cfg.codes} D={cfg.D} on {len(vec):,} pairs, perplexity "
                  f"{st['perplexity']:.1f}, dead {st['dead_codes']}, rel. quantisation error "
                  f"{st['quantisation_mse_relative']:.3f} ({st['seconds']:.1f} s)")
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    meta = {"quantizer": cfg.quantizer, "fingerprints": fps, "n_items": n_items, "seed": cfg.seed,
            "center": bool(cfg.center)}
    return Teacher(compressed, codebooks, cfg.xi, cfg.D, meta), stats
