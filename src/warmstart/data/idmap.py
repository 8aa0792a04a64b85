"""External <-> internal id maps. External ids stay as given (str or int); internal ids are dense 0..n-1."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from warmstart.errors import DataError, UnknownIdError


class IdMap:
    """An immutable, ordered set of external ids; position = internal id."""

    __slots__ = ("_external", "_index", "_positions")

    def __init__(self, external: Sequence[Any] | np.ndarray | pd.Index) -> None:
        index = pd.Index(external)
        if index.has_duplicates:
            dup = index[index.duplicated()][0]
            raise DataError(f"duplicate id {dup!r} in id map")
        self._index = index
        self._external: np.ndarray | None = None
        self._positions: dict[Any, int] | None = None

    @property
    def external(self) -> np.ndarray:
        """The ids as a numpy array (read-only), built once: for string ids pandas converts
        the whole index on every call (6 ms at 100,000 ids), and serving asks per item."""
        if self._external is None:
            external = self._index.to_numpy()
            external.setflags(write=False)
            self._external = external
        return self._external

    def prepare(self) -> None:
        """Build the numpy ids and the dict of positions now. A service does this when it
        starts, so that its first write (which looks up and extends the map) and first read do
        not build them over every id while other requests wait for the GIL."""
        _ = self.external
        if self._positions is None:
            self._positions = {v: i for i, v in enumerate(self.to_list())}

    @property
    def is_integer(self) -> bool:
        return pd.api.types.is_integer_dtype(self._index.dtype)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, external_id: object) -> bool:
        return bool(self.lookup([external_id])[0] >= 0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._index.equals(other._index)

    def __hash__(
        self,
    ) -> int:  # ids maps are values; hash by content size (cheap, consistent with eq)
        return hash(len(self._index))

    def _coerce(self, ids: Iterable[Any]) -> list[Any]:
        """Let '42' find 42 in an integer map (ids typed on a command line are strings)."""
        values = list(ids)
        if self.is_integer:
            out: list[Any] = []
            for v in values:
                digits = isinstance(v, str) and v.strip().lstrip("-").isdigit()
                if digits or isinstance(v, (np.integer, int)):
                    out.append(int(v))
                else:
                    out.append(v)
            return out
        return [v.item() if isinstance(v, np.generic) else v for v in values]

    def lookup(self, ids: Iterable[Any]) -> np.ndarray:
        """Internal ids for `ids`, -1 where unknown."""
        values = self._coerce(ids)
        if not values:
            return np.empty(0, dtype=np.int64)
        if self._positions is not None and len(values) < 1000:
            # A map grown by `extend` answers a few ids from its dict: pandas would first
            # rebuild its hash table of every id (85 ms at 100,000 string ids).
            get = self._positions.get
            return np.array([get(v, -1) for v in values], dtype=np.int64)
        try:
            pos = self._index.get_indexer(pd.Index(values, dtype=object))
        except TypeError:
            pos = np.array([self._index.get_loc(v) if v in self._index else -1 for v in values])
        return np.asarray(pos, dtype=np.int64)

    def to_internal(self, ids: Iterable[Any], *, kind: str = "id") -> np.ndarray:
        """Internal ids for `ids`; raises UnknownIdError naming the first unknown one."""
        values = list(ids)
        pos = self.lookup(values)
        missing = np.flatnonzero(pos < 0)
        if missing.size:
            raise UnknownIdError(
                f"unknown {kind} {values[missing[0]]!r}"
                + (f" (and {missing.size - 1} more)" if missing.size > 1 else "")
            )
        return pos

    def to_external(self, internal: Iterable[int] | np.ndarray) -> np.ndarray:
        return self.external[np.asarray(internal, dtype=np.int64)]

    def extend(self, new_ids: Iterable[Any]) -> IdMap:
        """A new map with the ids not already present appended, in order."""
        values = self._coerce(new_ids)
        fresh = [v for v, p in zip(values, self.lookup(values), strict=True) if p < 0]
        fresh = list(dict.fromkeys(fresh))
        if not fresh:
            return self
        # Unique by construction (the old ids are, and `fresh` holds only new, distinct ones),
        # so the new map skips the duplicate check, and carries a dict of positions and the
        # numpy ids forward instead of rebuilding them from the whole index: a service adding
        # one item to 100,000 paid about 200 ms for those.
        out = IdMap.__new__(IdMap)
        out._index = self._index.append(pd.Index(fresh))
        start = len(self._index)
        if self._positions is None:
            self._positions = {v: i for i, v in enumerate(self.to_list())}
        out._positions = {**self._positions, **{v: start + j for j, v in enumerate(fresh)}}
        if pd.api.types.is_integer_dtype(out._index.dtype):
            tail = np.asarray(fresh, dtype=np.int64)
            combined = np.concatenate([self.external.astype(np.int64, copy=False), tail])
        else:
            tail = np.empty(len(fresh), dtype=object)
            tail[:] = fresh
            combined = np.concatenate([self.external.astype(object, copy=False), tail])
        combined.setflags(write=False)
        out._external = combined
        return out

    def to_list(self) -> list[Any]:
        return [v.item() if isinstance(v, np.generic) else v for v in self._index.to_numpy()]
