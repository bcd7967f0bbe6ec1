"""A network namespace of our own, with ``tbf`` on its loopback (servers.md §9).

Everything that talks to the latency backend (server, delay proxy, every client) runs inside
it, so the bandwidth limit touches nothing else on the machine. Needs root and iproute2; the
caller falls back to the delay proxy alone when :func:`available` says no.
"""

from __future__ import annotations

import os
import shutil
import subprocess


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def available() -> tuple[bool, str]:
    """Whether we can make a namespace and shape its loopback; the reason when not."""
    if not shutil.which("ip") or not shutil.which("tc"):
        return False, "iproute2 (ip, tc) not installed"
    if os.geteuid() != 0:
        return False, "not root (network namespaces need CAP_SYS_ADMIN)"
    return True, ""


class Namespace:
    """``with Namespace(name, rate_mbit) as ns: subprocess.run(ns.wrap(argv))``."""

    def __init__(self, name: str, rate_mbit: float | None) -> None:
        self.name = name
        self.rate_mbit = rate_mbit
        self.created = False

    def __enter__(self) -> Namespace:
        _ip("netns", "add", self.name)
        self.created = True
        try:
            _ip("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
            if self.rate_mbit:
                subprocess.run(
                    ["ip", "netns", "exec", self.name, "tc", "qdisc", "add", "dev", "lo", "root",
                     "tbf", "rate", f"{self.rate_mbit:g}mbit", "burst", "512kb", "latency",
                     "50ms"], capture_output=True, text=True, check=True, timeout=30)
        except BaseException:
            self.delete()
            raise
        return self

    def wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def delete(self) -> None:
        if not self.created:
            return
        # The qdisc goes with the namespace's lo, but remove it explicitly first anyway.
        subprocess.run(["ip", "netns", "exec", self.name, "tc", "qdisc", "del", "dev", "lo",
                        "root"], capture_output=True, check=False, timeout=30)
        _ip("netns", "del", self.name, check=False)
        self.created = False

    def __exit__(self, *exc: object) -> None:
        self.delete()
