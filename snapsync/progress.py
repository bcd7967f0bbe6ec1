"""Progress reporting hooks. Engines call these; they never print.

The CLI passes a tqdm-backed implementation on stderr; the Prefect steps and the library
default pass ``NullProgress``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Progress(Protocol):
    def phase(self, name: str, total: int | None, unit: str = "B") -> None:
        """Start a phase (``scan``, ``read``, ``upload``, ``download``, ``write``...)."""

    def advance(self, n: int) -> None:
        """Add ``n`` units of work done in the current phase (thread-safe)."""

    def close(self) -> None:
        """End the current phase."""


class NullProgress:
    def phase(self, name: str, total: int | None, unit: str = "B") -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class Warnings(list[str]):
    """An operation's warnings: kept for its result, and handed to ``hook`` as they happen."""

    def __init__(self, hook: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._hook = hook

    def __call__(self, msg: str) -> None:
        self.append(msg)
        if self._hook is not None:
            self._hook(msg)


def format_size(n: float) -> str:
    """Bytes in binary units as the summaries and progress bars show them: ``512 B``,
    ``1.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # unreachable: the loop returns at GiB
