"""Writing content: chunk blobs sealed into packs and uploaded — the one pack writer.

Push and gc's repack both write through :class:`PackWriter`. A pack is journaled just before
its upload starts (so a killed push can resume, see ``journal.py``), and at most
``in_flight`` packs are uploading at once, which bounds memory at about
``(in_flight + 1) x pack_size`` whatever the producer does (``in_flight=0``: the producer
uploads each pack itself, one buffer in all). Each pack is built in place in a buffer
(``PackBuilder``) that is handed to the store as a view, then reused for a later pack once
its upload returned: no join copy, and no pack-size blocks churning through the heap. On a
store that takes objects piece by piece (``Store.open_upload``), a pack streams into a
temporary file as it is built (hashed on the way), so no pack buffer exists at all: a local
store (``in_flight=0``) links it into place when sealed; S3 and Azure (through obstore) upload
it in the background in parts, at most ``STREAMED_PACKS_IN_FLIGHT`` packs at once.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from snapsync.concurrency import (
    PACKS_IN_FLIGHT,
    STREAMED_PACKS_IN_FLIGHT,
    STREAMED_PACKS_QUEUED,
    Window,
)
from snapsync.core.manifest import Location
from snapsync.core.pack import PackBuilder, new_buffer
from snapsync.errors import AlreadyExistsError
from snapsync.repository.journal import UploadJournal
from snapsync.store import Layout, Store
from snapsync.store.store import Upload


class PackIndex(Mapping[bytes, Location]):
    """Chunk id -> :class:`Location` of the chunks one writer packed, kept as columns.

    One dict entry (id -> row) and four array slots per chunk; a :class:`Location` is made
    only when looked up: a first push of 100k files held 100k ``Location`` objects and their
    ints (~20 MB) in a plain dict; this holds ~7 MB. ``in`` also knows the chunks of the pack
    still being filled (push asks it whether a chunk is new); looking one of those up fails
    until the pack is sealed.
    """

    def __init__(self) -> None:
        self._row: dict[bytes, int] = {}
        self._packs: list[bytes] = []
        self._pack = array("I")
        self._offset = array("Q")
        self._length = array("Q")
        self._raw = array("Q")

    def add(self, cid: bytes, offset: int, length: int, raw: int) -> None:
        """Record a chunk of the open pack (the one :meth:`seal` names next). A chunk
        recorded before moves here, as a dict's ``update`` would have it."""
        p = len(self._packs)
        i = self._row.get(cid)
        if i is not None:
            self._pack[i], self._offset[i], self._length[i], self._raw[i] = (p, offset, length,
                                                                               raw)
            return
        self._row[cid] = len(self._pack)
        self._pack.append(p)
        self._offset.append(offset)
        self._length.append(length)
        self._raw.append(raw)

    def seal(self, pid: bytes) -> None:
        """The open pack's id: its chunks can be looked up from now on."""
        self._packs.append(pid)

    def __getitem__(self, cid: bytes) -> Location:
        i = self._row[cid]
        p = self._pack[i]
        if p >= len(self._packs):  # in the pack still being filled: no location yet
            raise KeyError(cid)
        return Location(self._packs[p], self._offset[i], self._length[i], self._raw[i])

    def __contains__(self, cid: object) -> bool:
        return cid in self._row

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._row)

    def __len__(self) -> int:
        return len(self._row)


class PackWriter:
    """Add stored chunk blobs; full packs go out in the background. Use as a context manager.

    Not thread-safe: one producer thread calls :meth:`add` and :meth:`finish`. With
    ``dry_run`` packs are built and counted but never uploaded.
    """

    def __init__(self, store: Store, pack_size: int, *, journal: UploadJournal | None = None,
                 dry_run: bool = False, in_flight: int = PACKS_IN_FLIGHT) -> None:
        self.store = store
        self.pack_size = pack_size
        self.journal = journal
        self.dry_run = dry_run
        self.locations = PackIndex()  # chunk id -> where this writer put it
        self.existed: set[bytes] = set()  # packs a create-only write found already stored
        self.packs = 0
        self.bytes = 0
        # Room for a full pack plus one more large blob and the trailer; pages never written
        # cost nothing (new_buffer), and a bigger blob moves the builder to a bigger buffer.
        self._capacity = pack_size + (8 << 20)
        self._free: list[Any] = []  # buffers whose upload is done, ready for the next pack
        # To a store that takes objects piece by piece, each pack streams through a small
        # staging buffer into the store's temporary file as it is built, so no pack-size
        # buffer exists at all: a local store links it into place in this thread
        # (``in_flight=0``, 16 MiB of push's peak at any tree size); an object store uploads
        # it in parts in the background, fewer packs at once since each sends several parts
        # (``STREAMED_PACKS_IN_FLIGHT``; 5k files over SeaweedFS: see docs/design.md).
        self._stream = not dry_run and store.can_stream
        queued = in_flight  # sealed packs waiting or uploading before add() waits
        if self._stream and in_flight > 0:
            # A sealed pack waits in its temporary file, not in memory: the reading thread
            # may run ahead of the uploads by more packs than are uploading.
            in_flight = min(in_flight, STREAMED_PACKS_IN_FLIGHT)
            queued = max(in_flight, STREAMED_PACKS_QUEUED)
        self._sync = in_flight < 1
        self._up: Any = None  # the open pack's upload (streamed)
        self._pending: set[Upload] = set()  # sealed streamed packs not published yet
        self._stage = new_buffer(_STAGE) if self._stream else None
        self._builder = self._new_builder()
        self._ex = ThreadPoolExecutor(max(1, in_flight), thread_name_prefix="snapsync-up")
        self._uploads: Window[tuple[int, Any]] = Window(self._ex, queued, self._uploaded)

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self._uploads.cancel()
            if self._up is not None:
                self._up.abort()
                self._up = None
        self._ex.shutdown(wait=True)
        for up in list(self._pending):  # sealed, never published (cancelled): dropped
            up.abort()
        self._pending.clear()

    def _new_builder(self) -> PackBuilder:
        if self._stream:  # its upload opens with the first chunk (finish may find none)
            return PackBuilder(self._stage, sink=self._sink)
        return PackBuilder(self._free.pop() if self._free else new_buffer(self._capacity))

    def _sink(self, data: memoryview) -> None:
        if self._up is None:
            self._up = self.store.open_upload(_PACKS)
        self._up.write(data)

    def add(self, cid: bytes, blob: bytes | memoryview, raw_size: int,
            tag: bytes = b"") -> None:
        """Append one stored blob (codec output: ``tag + blob``) of ``raw_size`` bytes."""
        at = self._builder.size
        self._builder.add(cid, blob, raw_size, tag)
        self.locations.add(cid, at, self._builder.size - at, raw_size)
        if self._builder.size >= self.pack_size:
            self._seal()

    def finish(self) -> Mapping[bytes, Location]:
        """Seal the last pack, wait for every upload; return the locations written."""
        if len(self._builder):
            self._seal()
        self._uploads.drain()
        # The buffers go now (unmapped at once), not when the writer does: the caller goes
        # on to build the manifest, the push's other peak.
        self._free.clear()
        self._stage = None
        self._builder = PackBuilder()
        return self.locations

    def _seal(self) -> None:
        builder = self._builder
        if self._stream:
            pid, size = builder.seal_streamed()
            self.locations.seal(pid)
            up, self._up = self._up, None
            try:
                if self.journal is not None:  # before it is published: a resume checks it
                    self.journal.record(pid, size, builder.locations(pid))
            except BaseException:
                up.abort()  # no temporary file stays behind
                raise
            self._builder = self._new_builder()
            if self._sync:
                self._uploaded(self._publish(pid, size, up))
            else:
                self._pending.add(up)
                self._uploads.submit(self._publish, pid, size, up)
            return
        pid, data = builder.seal_bytes()
        buf = builder.buffer
        self.locations.seal(pid)
        # The journal's rows for this pack (a few thousand at most, gone after the PUT).
        locs = builder.locations(pid) if self.journal is not None and not self.dry_run else {}
        # Submitting first: when the window is full this waits for the oldest upload, whose
        # buffer is then free for the next pack.
        if self._sync:  # in this thread: one buffer, and no thread to hand it to
            self._uploaded(self._upload(pid, data, locs, buf))
        else:
            self._uploads.submit(self._upload, pid, data, locs, buf)
        self._builder = self._new_builder()

    def _mode(self) -> Any:
        # Create-only where the store can: a pack's id is the hash of its bytes, so one
        # already there is this very pack (whether gc is about to delete it is checked
        # before the ref moves, docs/format.md §8).
        return "create" if self.store.conditional else "overwrite"

    def _publish(self, pid: bytes, size: int, up: Upload) -> tuple[int, Any]:
        """Publish one streamed pack; return its size (no buffer to give back)."""
        try:
            up.publish(Layout.pack(pid), self._mode())
        except AlreadyExistsError:
            self.existed.add(pid)  # an old copy: the publisher confirms it is still there
        except BaseException:
            up.abort()  # no temporary file stays behind, whatever failed
            raise
        finally:
            self._pending.discard(up)
        return size, None

    def _upload(self, pid: bytes, data: memoryview, locs: dict[bytes, Location],
                buf: Any) -> tuple[int, Any]:
        """Upload one pack; return its size and its buffer (free again once this returns)."""
        self._put(pid, data, locs)
        return len(data), buf

    def _put(self, pid: bytes, data: memoryview, locs: dict[bytes, Location]) -> None:
        if not self.dry_run:
            if self.journal is not None:  # before the PUT: a resume checks the pack landed
                self.journal.record(pid, len(data), locs)
            try:
                self.store.put(Layout.pack(pid), data, mode=self._mode())
            except AlreadyExistsError:
                self.existed.add(pid)  # an old copy: the publisher confirms it is still there

    def _uploaded(self, done: tuple[int, Any]) -> None:
        n, buf = done
        self.packs += 1
        self.bytes += n
        if buf is not None:
            self._free.append(buf)
        _trim()


_PACKS = "packs"  # where a streamed pack's temporary file lives (the packs' file system)
_STAGE = 1 << 20  # a streamed pack is written in pieces of about this size


_malloc_trim: Any = None


def _trim() -> None:
    """Give freed heap memory back to the system after each pack (glibc only).

    Packs no longer pass through the heap (``new_buffer``), but the chunks compressed into
    them do, and glibc keeps their freed blocks: at 20 x 40 MB a first push peaked at
    92-94 MB with the trim, 103-106 MB without it (3 runs each).
    """
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                _malloc_trim = ctypes.CDLL(None).malloc_trim
            except (OSError, AttributeError):
                pass
    if _malloc_trim:
        _malloc_trim(0)
