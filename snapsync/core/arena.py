"""Reused buffers that push reads and batches chunks in: no chunk-size blocks on the heap.

Pure: no I/O. A batch of new chunks for a compression thread lives in one :class:`Arena`
(an anonymous ``mmap``, see ``pack.new_buffer``): small files are read straight into it, and
the chunks of large files are copied in. The arena goes back to its :class:`ArenaPool` once
the batch is packed, so a push keeps a fixed handful of them whatever the tree's size: the
heap never sees the read bytes, which is where glibc's fragmentation came from (freed 1 MiB
blocks interleaved with the walk's and the index's long-lived objects).
"""

from __future__ import annotations

from snapsync.core.pack import new_buffer


class Arena:
    """One buffer filled from the front; what is kept is handed out as views of it."""

    __slots__ = ("capacity", "used", "view")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.view = memoryview(new_buffer(capacity))
        self.used = 0

    def room(self) -> memoryview:
        """The free space, to read into (nothing is kept until :meth:`keep`)."""
        return self.view[self.used:]

    def keep(self, n: int) -> memoryview:
        """Keep the next ``n`` bytes of the free space (just written); return their view."""
        seg = self.view[self.used:self.used + n]
        self.used += n
        return seg

    def put(self, data: bytes | memoryview) -> memoryview:
        """Copy ``data`` into the free space and keep it."""
        n = len(data)
        self.view[self.used:self.used + n] = data
        return self.keep(n)


class ArenaPool:
    """Arenas of one capacity; a returned arena is reused (its pages stay resident)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free: list[Arena] = []
        self.made = 0

    def get(self) -> Arena:
        if self._free:
            return self._free.pop()
        self.made += 1
        return Arena(self.capacity)

    def put(self, arena: Arena) -> None:
        arena.used = 0
        self._free.append(arena)

    def clear(self) -> None:
        """Drop the free arenas (unmapped once no view of them is left)."""
        self._free.clear()
