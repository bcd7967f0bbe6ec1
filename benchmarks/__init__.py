"""snapsync's benchmark suite: snapsync side by side with the tools users would pick instead.

Run ``python -m benchmarks --quick`` (or ``make bench``); see ``benchmarks/README.md``.
"""

from __future__ import annotations

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"
RESULTS_DIR = BENCH_DIR / "results"
