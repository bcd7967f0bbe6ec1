"""``python -m benchmarks`` (what ``make bench`` runs)."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
