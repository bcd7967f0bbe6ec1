"""Argument parsing for the ``snapsync`` command, as people type it.

Subcommand parsers take options between positionals (``pull URL --snapshot ID DIR``) and show
their own usage on errors; argument types refuse what would otherwise mean something else
(``--snapshot ""`` is not "latest", ``--level 99`` is not a zstd level). Used by ``cli.py``
and ``cli_deploy.py``; ``-o KEY=VALUE`` storage options and durations (``gc --grace``) too.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from snapsync.errors import UsageError

URL_HELP = "the store's URL: s3://bucket/prefix, gs://, az://, file:///path or a plain path"


class SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser: options may come between positionals, as people type them
    (``pull URL --snapshot ID DIR``), and its errors show its own usage, not the top level's.

    A parser with an ``argparse.REMAINDER`` positional (``exec URL -- COMMAND``) cannot be
    parsed intermixed; it is parsed as argparse always does.
    """

    _parsing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._parsing or any(a.nargs in (argparse.REMAINDER, argparse.PARSER)
                                for a in self._actions):
            # parse_known_intermixed_args calls back into this method
            ns, extras = super().parse_known_args(args, namespace)
            return ns, extras
        self._parsing = True
        try:
            ns, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns, extras


def nonempty(option: str) -> Callable[[str], str]:
    """argparse type: refuse an empty value (``--snapshot ""`` must not mean "latest")."""

    def check(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"{option} must not be empty")
        return value

    return check


def zstd_level(value: str) -> int:
    """argparse type for ``--level``: an integer within zstd's range."""
    from snapsync.core.codec import MAX_LEVEL, MIN_LEVEL

    try:
        level = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise argparse.ArgumentTypeError(f"zstd levels run from {MIN_LEVEL} to {MAX_LEVEL}, "
                                         f"got {level}")
    return level


def storage_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``-o KEY=VALUE``; values that parse as JSON (numbers, true, {...}) are decoded."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"-o {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_duration(text: str, option: str = "duration") -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w``, ``1y`` or combinations (``1d12h``) to seconds."""
    t = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdwy])", t)
    if not parts or "".join(n + u for n, u in parts) != t:
        if re.fullmatch(r"\d+(?:\.\d+)?", t):
            return float(t)
        raise UsageError(f"invalid duration {text!r} ({option}): use e.g. 90s, 30m, 12h, 7d, 2w")
    return sum(float(n) * _UNITS[u] for n, u in parts)
