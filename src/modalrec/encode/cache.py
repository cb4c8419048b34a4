"""Feature cache I/O: pooled vectors in Parquet, token-level features in a memory-mapped Arrow IPC file.

Pooled caches (``data/features/<ds>/<modality>.parquet``) are small ([N, d]) and are read fully into RAM.
Token caches (``<modality>_tokens.arrow``) are big ([N+1, T, d] fp16: ODMT's Office catalogue is ~11 GB), so they are
written as ONE uncompressed Arrow record batch and read through ``pa.memory_map``: :func:`load_tokens` returns a numpy
view straight onto the mapped file, and the OS pages in only the rows a training step touches. The token file keeps
row 0 (the padding item, all zeros, mask all False) so the view is indexable by item id without any copy.

The writer streams rows into a temporary raw memmap first and only wraps it as an Arrow batch at the end, so the
encoder never holds the catalogue's tokens in RAM either.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ..errors import DataError
from ..io import META_KEY, atomic_path, write_parquet

# ----------------------------------------------------------------------------------------------------- pooled vectors


def features_table(vectors: np.ndarray, has: np.ndarray, dtype: str = "float32") -> pa.Table:
    """Arrow table for items 1..N: ``item`` int32, ``vector`` fixed_size_list<dtype>[d], ``has_feature`` bool.

    ``vectors`` is [N, d] for items 1..N (no padding row); rows without a feature must already be zero.
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    vectors = np.ascontiguousarray(vectors, dtype=np.dtype(dtype))
    n, d = vectors.shape
    values = pa.array(vectors.reshape(-1), type=pa.float16() if dtype == "float16" else pa.float32())
    return pa.table({
        "item": pa.array(np.arange(1, n + 1, dtype=np.int32)),
        "vector": pa.FixedSizeListArray.from_arrays(values, d),
        "has_feature": pa.array(np.asarray(has, dtype=bool)),
    })


def write_features(path: str | Path, vectors: np.ndarray, has: np.ndarray, meta: dict[str, Any],
                   dtype: str = "float32") -> None:
    """Write a pooled feature cache atomically with its provenance metadata."""
    has = np.asarray(has, dtype=bool)
    vectors = np.where(has[:, None], np.asarray(vectors), 0)     # contract: no feature -> zero vector
    meta = {**meta, "dim": int(vectors.shape[1]), "dtype": dtype, "n_items": int(vectors.shape[0]),
            "n_with_feature": int(np.asarray(has).sum())}
    # Zstd barely shrinks float vectors; skip it so reading stays fast.
    write_parquet(path, features_table(vectors, has, dtype), meta, compression="none")


def load_features(path: str | Path, n_items: int | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a pooled cache -> (``[N+1, d]`` float32 with row 0 = 0, ``has`` ``[N+1]`` bool with has[0]=False, meta).

    ``n_items`` (the prepared catalogue's N) is checked against the file so a stale cache fails loudly.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("feature cache not found (run the encode stage first)", path=path)
    table = pq.read_table(path)
    missing = {"item", "vector", "has_feature"} - set(table.column_names)
    if missing:
        raise DataError(f"not a feature cache: missing columns {sorted(missing)}", path=path)
    items = table.column("item").to_numpy()
    n = len(items)
    if n_items is not None and n != n_items:
        raise DataError(f"cache has {n} items but the prepared catalogue has {n_items}; re-run encode", path=path)
    if not np.array_equal(items, np.arange(1, n + 1)):
        raise DataError("items must be exactly 1..N in order", path=path, column="item")
    vec_type = table.schema.field("vector").type
    if not pa.types.is_fixed_size_list(vec_type):
        raise DataError(f"vector column must be fixed_size_list, got {vec_type}", path=path, column="vector")
    d = vec_type.list_size
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    out = np.zeros((n + 1, d), dtype=np.float32)
    out[1:] = flat.reshape(n, d)
    has = np.zeros(n + 1, dtype=bool)
    has[1:] = table.column("has_feature").to_numpy(zero_copy_only=False)
    md = table.schema.metadata or {}
    meta = json.loads(md[META_KEY]) if META_KEY in md else {}
    return out, has, meta


# ----------------------------------------------------------------------------------------------------- token caches


@dataclass
class TokenCache:
    """A memory-mapped token cache. ``tokens[i]`` is item i's ``[T, d]`` fp16 tokens, ``mask[i]`` its valid tokens."""

    tokens: np.ndarray          # [N+1, T, d] float16, read-only view onto the mapped file (row 0 = zeros)
    mask: np.ndarray            # [N+1, T] bool (row 0 all False)
    has: np.ndarray             # [N+1] bool: item has a feature (False -> zero tokens)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return self.tokens.shape[0] - 1


class TokenWriter:
    """Stream ``[B, T, d]`` token batches into a temporary memmap, then publish one Arrow IPC file atomically.

    Use as a context manager; rows never written stay zero with an all-False mask (items without a feature).
    """

    def __init__(self, path: str | Path, n_items: int, n_tokens: int, dim: int):
        self.path = Path(path)
        self.n_rows, self.T, self.d = n_items + 1, int(n_tokens), int(dim)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".raw", dir=self.path.parent)
        os.close(fd)
        self._raw = Path(tmp)
        self.tokens = np.memmap(self._raw, dtype=np.float16, mode="w+", shape=(self.n_rows, self.T, self.d))
        self.mask = np.zeros((self.n_rows, self.T), dtype=np.uint8)
        self.has = np.zeros(self.n_rows, dtype=np.uint8)

    def write(self, items: np.ndarray, tokens: np.ndarray, mask: np.ndarray) -> None:
        """Store rows for item ids ``items`` (1..N): tokens ``[B, T, d]``, mask ``[B, T]``."""
        items = np.asarray(items, dtype=np.int64)
        if tokens.shape[1:] != (self.T, self.d):
            raise ValueError(f"token batch shape {tokens.shape[1:]} != ({self.T}, {self.d})")
        self.tokens[items] = tokens.astype(np.float16, copy=False)
        self.mask[items] = np.asarray(mask, dtype=np.uint8)
        self.has[items] = 1

    def close(self, meta: dict[str, Any]) -> None:
        self.tokens.flush()
        meta = {**meta, "n_items": self.n_rows - 1, "n_tokens": self.T, "dim": self.d, "dtype": "float16",
                "n_with_feature": int(self.has.sum())}
        # Zero-copy wrap of the memmap: Arrow streams it to the IPC file page by page.
        values = pa.Array.from_buffers(pa.float16(), self.n_rows * self.T * self.d, [None, pa.py_buffer(self.tokens)])
        mask_values = pa.Array.from_buffers(pa.uint8(), self.n_rows * self.T, [None, pa.py_buffer(self.mask)])
        batch = pa.record_batch({
            "item": pa.array(np.arange(self.n_rows, dtype=np.int32)),
            "has_feature": pa.array(self.has.astype(bool)),
            "mask": pa.FixedSizeListArray.from_arrays(mask_values, self.T),       # uint8 so it maps zero-copy
            "tokens": pa.FixedSizeListArray.from_arrays(values, self.T * self.d),
        })
        schema = batch.schema.with_metadata({META_KEY: json.dumps(meta).encode(),
                                             b"shape": json.dumps([self.n_rows, self.T, self.d]).encode()})
        try:
            with atomic_path(self.path, suffix=".arrow.tmp") as tmp:
                with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, schema) as writer:
                    writer.write_batch(batch)
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the temporary memmap (also called after a successful close)."""
        del self.tokens
        self._raw.unlink(missing_ok=True)

    def __enter__(self) -> "TokenWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and hasattr(self, "tokens"):
            self.discard()


def _zero_copy_values(col: pa.Array, dtype: np.dtype, per_row: int) -> np.ndarray:
    """numpy view of a fixed_size_list column's values (no copy; respects slicing offsets)."""
    buf = col.values.buffers()[1]
    start = (col.offset * per_row + col.values.offset) * dtype.itemsize
    return np.frombuffer(buf, dtype=dtype, count=len(col) * per_row, offset=start)


def load_tokens(path: str | Path) -> TokenCache:
    """Memory-map a token cache. ``.tokens`` is a read-only ``[N+1, T, d]`` float16 view onto the file (no copy)."""
    path = Path(path)
    if not path.exists():
        raise DataError("token cache not found (run the encode token stage first)", path=path)
    try:
        reader = ipc.open_file(pa.memory_map(str(path), "r"))
    except pa.ArrowInvalid as e:
        raise DataError(f"not an Arrow IPC token cache: {e}", path=path) from None
    if reader.num_record_batches != 1:
        raise DataError(f"expected one record batch, found {reader.num_record_batches}", path=path)
    md = reader.schema.metadata or {}
    if b"shape" not in md:
        raise DataError("missing 'shape' metadata; not a modalrec token cache", path=path)
    n_rows, T, d = json.loads(md[b"shape"])
    batch = reader.get_batch(0)
    tokens = _zero_copy_values(batch.column("tokens"), np.dtype(np.float16), T * d).reshape(n_rows, T, d)
    mask = _zero_copy_values(batch.column("mask"), np.dtype(np.uint8), T).reshape(n_rows, T).view(bool)
    has = batch.column("has_feature").to_numpy(zero_copy_only=False)
    meta = json.loads(md[META_KEY]) if META_KEY in md else {}
    return TokenCache(tokens=tokens, mask=mask, has=has, meta=meta)
