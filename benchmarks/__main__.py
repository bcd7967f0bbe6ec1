"""``python -m benchmarks``: same entry as ``snapsync bench``."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
