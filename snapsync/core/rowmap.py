"""A chunk id -> int mapping over a manifest index's rows: one 8-byte slot per chunk.

A pull keeps, for every chunk it needs, where that chunk lies in the local cache. As a
``dict`` that costs ~110 bytes a chunk (the entry, its share of the table, an int object);
at 100k chunks, 11 MB of a 100 MB budget. The index already numbers its chunks, so the
values live in an ``array`` by row and the index's own id -> row table finds the slot.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, MutableMapping, Sequence

_EMPTY = -1  # values are non-negative (packed cache places)


class RowMap(MutableMapping[bytes, int]):
    """``id -> value >= 0`` for the ids of an index (``row_of``: its id -> row lookup;
    ``cids[r]``: row ``r``'s id). An id the index lacks falls back to a small ``dict``."""

    __slots__ = ("_cids", "_extra", "_n", "_row", "_vals")

    def __init__(self, row_of: Callable[[bytes], int | None], cids: Sequence[bytes]) -> None:
        self._row = row_of
        self._cids = cids
        self._vals = array("q", [_EMPTY]) * len(cids)
        self._extra: dict[bytes, int] = {}
        self._n = 0

    @classmethod
    def of_values(cls, row_of: Callable[[bytes], int | None], cids: Sequence[bytes],
                  vals: array[int]) -> RowMap:
        """A map holding ``vals[r]`` for row ``r`` (``-1``: none), e.g. saved by an earlier
        pull; ``ValueError`` unless there is one value per row."""
        if len(vals) != len(cids):
            raise ValueError(f"{len(vals)} values for {len(cids)} rows")
        m = cls(row_of, cids)
        m._vals = vals
        m._n = len(vals) - vals.count(_EMPTY)
        if vals and min(vals) < _EMPTY:
            raise ValueError("a RowMap value is negative")
        return m

    @property
    def values_array(self) -> array[int]:
        """The value of every row (``-1``: none): what :meth:`of_values` takes back."""
        return self._vals

    def get(self, cid: bytes, default: int | None = None) -> int | None:  # type: ignore[override]
        r = self._row(cid)
        if r is None:
            return self._extra.get(cid, default)
        v = self._vals[r]
        return default if v < 0 else v

    def at(self, r: int) -> int:
        """The value of index row ``r`` (``KeyError`` naming its id when it has none)."""
        v = self._vals[r]
        if v < 0:
            raise KeyError(self._cids[r])
        return v

    def __getitem__(self, cid: bytes) -> int:
        v = self.get(cid)
        if v is None:
            raise KeyError(cid)
        return v

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, bytes) and self.get(cid) is not None

    def __setitem__(self, cid: bytes, value: int) -> None:
        if value < 0:
            raise ValueError(f"RowMap holds values >= 0, not {value}")
        r = self._row(cid)
        if r is None:
            self._extra[cid] = value
            return
        if self._vals[r] < 0:
            self._n += 1
        self._vals[r] = value

    def __delitem__(self, cid: bytes) -> None:
        r = self._row(cid)
        if r is None:
            del self._extra[cid]
            return
        if self._vals[r] < 0:
            raise KeyError(cid)
        self._vals[r] = _EMPTY
        self._n -= 1

    def __iter__(self) -> Iterator[bytes]:
        cids = self._cids
        for r, v in enumerate(self._vals):
            if v >= 0:  # a repeated id of the index has one row set: the one row_of answers
                yield cids[r]
        yield from self._extra

    def __len__(self) -> int:
        return self._n + len(self._extra)

    # One pass over the array, not a lookup per key: a pull walks these for every chunk.
    def items(self) -> Iterator[tuple[bytes, int]]:  # type: ignore[override]
        """``(id, value)`` pairs (an iterator, not a view)."""
        cids = self._cids
        yield from ((cids[r], v) for r, v in enumerate(self._vals) if v >= 0)
        yield from list(self._extra.items())

    def values(self) -> Iterator[int]:  # type: ignore[override]
        """The values (an iterator, not a view)."""
        yield from (v for v in self._vals if v >= 0)
        yield from list(self._extra.values())
