"""Exceptions that say what went wrong, where, and what to do about it."""

from __future__ import annotations

from pathlib import Path


class WarmstartError(Exception):
    """Base class for every error warmstart raises on purpose."""


class DataError(WarmstartError, ValueError):
    """Bad input data. Names the file, line (1-based, as an editor shows it) and column when known."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.column = column
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class DataNotFoundError(WarmstartError, FileNotFoundError):
    """A file or folder the user named (a dataset, a list of ids, an exported encoder) is missing."""


class NotFittedError(WarmstartError, RuntimeError):
    """A model was used before `fit` (or `load`)."""


class UnknownIdError(WarmstartError, KeyError):
    """An external user or item id that the model has never seen."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return str(self.args[0]) if self.args else ""


class ModelFormatError(WarmstartError, ValueError):
    """A saved model directory is missing, corrupt, or from an incompatible version."""


class ConfigError(WarmstartError, ValueError):
    """A setting the user chose is not allowed: an unknown name, a value out of range, or options
    that exclude each other. The message names the option as the user wrote it."""
