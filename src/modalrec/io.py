"""Atomic writes and Parquet I/O with provenance metadata.

Every output is written to a temporary file in the same directory and renamed into place, so a crash never leaves
a partial output. Parquet files carry a JSON provenance blob under the ``modalrec`` key of the file metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import DataError

META_KEY = b"modalrec"


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    try:
        try:
            os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp creates 0600; outputs get the usual 0644 (modulo umask)
        finally:
            os.close(fd)
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; swap it in for ``path`` only if the block succeeds.

    An existing ``path`` is moved aside first and removed only after the swap, so readers see the old directory or
    the complete new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` onto ``dst``; an existing ``dst`` is moved aside first and removed only after success."""
    old = None
    if dst.exists() or dst.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
        os.rmdir(old)
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    os.chmod(dst, 0o777 & ~current_umask())  # mkdtemp creates 0700; a folder gets the usual 0755 (modulo umask)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's contents; a byte that is not text is a DataError naming its line and column."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except OSError as e:
        raise DataError(f"cannot read: {e}", path=path) from None
    return decode(data, path)


def read_json(path: str | Path) -> Any:
    """A JSON file; undecodable bytes or invalid JSON are a DataError naming the file and line."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg} (column {e.colno})", path=path, line=e.lineno) from None


def undecodable(data: bytes, path: Path, first_line: int = 1) -> DataError | None:
    """The DataError for the first byte of ``data`` (whole lines, the first being line ``first_line`` of ``path``)
    that is not UTF-8 text, an undecodable byte or a NUL (no text file has one), naming its line and byte column;
    None when ``data`` is text."""
    try:
        data.decode("utf-8")
        pos = len(data)
    except UnicodeDecodeError as e:
        pos = e.start
    nul = data.find(b"\0", 0, pos)
    pos = nul if nul >= 0 else pos
    if pos == len(data):
        return None
    start = data.rfind(b"\n", 0, pos) + 1
    what = ("not text: NUL byte" if nul >= 0 else f"not UTF-8 text: undecodable byte 0x{data[pos]:02x}")
    return DataError(f"{what} at column {pos - start + 1} (a binary file, or another encoding?)",
                     path=path, line=first_line + data.count(b"\n", 0, pos))


def decode(data: bytes, path: Path, first_line: int = 1) -> str:
    """``data`` (whole lines of ``path`` from line ``first_line`` on) as UTF-8 text; a byte that is not text is a
    DataError naming its line (:func:`undecodable`)."""
    err = undecodable(data, path, first_line)
    if err is not None:
        raise err
    return data.decode("utf-8")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_parquet(path: str | Path, table: pa.Table, meta: dict[str, Any] | None = None,
                  compression: str = "zstd") -> None:
    """Write ``table`` atomically, recording ``meta`` (JSON) under the ``modalrec`` metadata key."""
    if meta is not None:
        existing = dict(table.schema.metadata or {})
        existing[META_KEY] = json.dumps(meta, default=_json_default).encode()
        table = table.replace_schema_metadata(existing)
    with atomic_path(path, suffix=".parquet.tmp") as tmp:
        pq.write_table(table, tmp, compression=compression)


def read_parquet_meta(path: str | Path) -> dict[str, Any]:
    """The ``modalrec`` provenance blob of a Parquet file (empty dict if none)."""
    md = pq.read_schema(path).metadata or {}
    raw = md.get(META_KEY)
    return json.loads(raw) if raw else {}
