"""Import vectors that come with a dataset, aligned to the catalogue by original item id (``item_orig``).

Formats (by ``path`` suffix):
- ``.npy``: a 2-D array whose rows follow ``ids``; or, with ``allow_pickle: true`` (only for files you trust), a
  pickled ``{original id: vector}`` dict as KDSR's ``asin-raw-feature*.npy`` files.
- ``.feat`` (any other suffix): raw little-endian float32, ``dim`` per row, as UniSRec's ``<ds>.feat1CLS``.
- ``.parquet``: columns ``id_column`` (original ids) and ``vector_column`` (list of floats).

``ids`` is a text file with one original id per row of the array, or ``row_index`` meaning row k belongs to original
id ``k`` (UniSRec's files are indexed by their integer item id). Items absent from the file get a zero vector and
``has_feature = false``; ids in the file that the catalogue doesn't have are ignored (and counted in the metadata).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, ParamError
from ..io import read_text
from .registry import Encoder, EncoderConfig, register_family


def _read(cfg: EncoderConfig, key: str) -> tuple[list[str] | None, np.ndarray]:
    """-> (original ids or None when they come from ``ids``, [rows, d] float32)."""
    path = Path(cfg.path)
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=cfg.allow_pickle)
        except ValueError as e:
            raise ParamError(f"{key}.allow_pickle", f"{path} holds pickled objects ({e}); set allow_pickle: true "
                                                    "only if you trust the file") from None
        if arr.dtype == object:
            d = arr.item() if arr.shape == () else None
            if not isinstance(d, dict):
                raise DataError("object .npy must hold a {id: vector} dict", path=path)
            ids = [str(k) for k in d]
            return ids, np.stack([np.asarray(v, dtype=np.float32).reshape(-1) for v in d.values()])
        if arr.ndim != 2:
            raise DataError(f"expected a 2-D array, got shape {arr.shape}", path=path)
        return None, arr.astype(np.float32, copy=False)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(path)
        for col in (cfg.id_column, cfg.vector_column):
            if col not in t.column_names:
                raise DataError(f"missing column {col!r}; has {t.column_names}", path=path, column=col)
        ids = [str(x) for x in t.column(cfg.id_column).to_pylist()]
        vec = t.column(cfg.vector_column).combine_chunks()
        lens = np.diff(vec.offsets.to_numpy()) if hasattr(vec, "offsets") else None
        if lens is not None and len(set(lens.tolist())) > 1:
            raise DataError("vectors have different lengths", path=path, column=cfg.vector_column)
        flat = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        return ids, flat.reshape(len(ids), -1)
    if not cfg.dim:
        raise ParamError(f"{key}.dim", f"raw float32 file {path.name} needs `dim` (e.g. 768 for BERT CLS)")
    raw = np.fromfile(path, dtype="<f4")
    if raw.size % cfg.dim:
        raise DataError(f"{raw.size} floats is not a multiple of dim={cfg.dim}", path=path)
    return None, raw.reshape(-1, cfg.dim)


@register_family("precomputed")
def build(cfg: EncoderConfig, kind: str, key: str) -> Encoder:
    if not cfg.path:
        raise ParamError(f"{key}.path", "the precomputed family needs `path` (.npy, .feat or .parquet)")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise ParamError(f"{key}.path", f"{path} does not exist")
    cfg.path = str(path)
    ids, arr = _read(cfg, key)
    if ids is None:
        if cfg.ids == "row_index":
            ids = [str(i) for i in range(len(arr))]
        elif cfg.ids:
            ids_path = Path(cfg.ids).expanduser()
            if not ids_path.is_file():
                raise ParamError(f"{key}.ids", f"{ids_path} does not exist")
            ids = [ln.strip() for ln in read_text(ids_path).splitlines() if ln.strip()]
            if len(ids) != len(arr):
                raise DataError(f"{len(ids)} ids for {len(arr)} rows of {path.name}", path=ids_path)
        else:
            raise ParamError(f"{key}.ids", f"{path.name} has no ids: give an ids file (one original id per row) "
                                           "or `row_index`")
    if not np.isfinite(arr).all():
        bad = int(np.where(~np.isfinite(arr).all(1))[0][0])
        raise DataError(f"row {bad} (id {ids[bad]}) has NaN/inf values", path=path)
    index = {k: r for r, k in enumerate(ids)}
    meta: dict = {"source": str(path), "n_rows": len(arr)}

    def lookup(item_orig: list[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = np.array([index.get(k, -1) for k in item_orig])
        has = rows >= 0
        out = np.zeros((len(item_orig), arr.shape[1]), dtype=np.float32)
        out[has] = arr[rows[has]]
        meta["n_unused_rows"] = len(arr) - int(has.sum())
        return out, has

    return Encoder(kind=kind, dim=int(arr.shape[1]), n_tokens=None, forward=lambda _: None, weights_id=str(path),
                   weights_files=[path], pooling="precomputed", preprocessing=f"precomputed({path.suffix})",
                   extra_meta=meta, lookup=lookup)
