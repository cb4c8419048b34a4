"""Typed errors that name the file, line or parameter at fault.

Library code raises these; pipeline scripts and the CLI turn them into a one-line message and a non-zero exit
(see :func:`modalrec.cli.run_main`). Never let a deep pandas/torch traceback be the user's error message.
"""

from __future__ import annotations

from pathlib import Path


class ModalrecError(Exception):
    """Base class of every error the project raises on purpose."""


class DataError(ModalrecError):
    """Bad input data: names the file and, where known, the line (1-based) and the column."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None,
                 column: str | None = None):
        self.path, self.line, self.column = path, line, column
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
            if column is not None:
                where += f" (column {column!r})"
            where += ": "
        super().__init__(where + message)


class ParamError(ModalrecError):
    """A bad parameter value: names the dotted parameter key (for example ``kdsr.D``)."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"parameter {key}: {message}")


class EmptyResultError(DataError):
    """Filtering or splitting left nothing."""
