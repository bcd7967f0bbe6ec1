"""Helpers for tests of hostile inputs: hand-built zstd frames and a CLI run with its peak RSS."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

_MAGIC = struct.pack("<I", 0xFD2FB528)
_BLOCK = 128 << 10  # the largest zstd block


def rle_frame(total: int, declared: int | None = None, byte: int = 0) -> bytes:
    """A zstd frame of RLE blocks that inflates to ``total`` bytes of ``byte``: ~4 bytes per
    128 KiB. ``declared`` is the content size put in the header (``None``: no size field)."""
    if declared is None:
        header = _MAGIC + b"\x00" + bytes([7 << 3])  # no size; window 2**17 (one block)
    else:
        header = _MAGIC + b"\xe0" + struct.pack("<Q", declared)  # single segment, 8-byte size
    blocks = []
    left = total
    while True:
        n = min(left, _BLOCK)
        left -= n
        last = left == 0
        blocks.append(struct.pack("<I", (n << 3) | (1 << 1) | int(last))[:3] + bytes([byte]))
        if last:
            break
    return header + b"".join(blocks)


_RUNNER = """
import json, resource, sys, traceback
from snapsync.cli import main
try:
    code = main(sys.argv[1:])
    tb = ""
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 2
    tb = ""
except BaseException:
    code = 1
    tb = traceback.format_exc()
# VmHWM belongs to this process's own address space; ru_maxrss would also count the parent's
# size at fork time (Linux keeps it across exec).
try:
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) // 1024
except (OSError, StopIteration):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
sys.stderr.write("\\n@@RESULT@@" + json.dumps({"code": code, "rss_mb": rss, "tb": tb}))
"""


def run_cli_measured(argv: list[str], cwd: Path | None = None,
                     env: dict[str, str] | None = None,
                     timeout: float = 120) -> tuple[int, str, int, str]:
    """Run ``snapsync.cli.main(argv)`` in a fresh interpreter.

    Returns ``(exit code, stderr, peak RSS in MiB, traceback text or "")``; a traceback is
    also reported when ``main`` let an exception escape.
    """
    full_env = {**os.environ, **(env or {})}
    out = subprocess.run([sys.executable, "-c", _RUNNER, *argv], capture_output=True,
                         text=True, timeout=timeout, cwd=cwd, env=full_env, check=False)
    err, _, result = out.stderr.rpartition("\n@@RESULT@@")
    if not result.startswith("{"):
        return out.returncode, out.stderr, 0, out.stderr
    res = json.loads(result)
    tb = res["tb"] or ("Traceback" in err and err) or ""
    return res["code"], err, res["rss_mb"], tb
