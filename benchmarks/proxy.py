"""A user-space TCP delay proxy: the kernel here has no netem (servers.md §9).

Forwards 127.0.0.1:LPORT to 127.0.0.1:TPORT and delivers every chunk ``delay`` seconds after it
was read, in each direction, preserving order, so a request/response pair costs one extra round
trip of ``2 * delay``. Counts bytes both ways; prints the totals as JSON on SIGTERM.

    python -m benchmarks.proxy LPORT TPORT DELAY_MS
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

_STATS = {"connections": 0, "bytes_up": 0, "bytes_down": 0}


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float,
                key: str) -> None:
    # Reading and writing run as two tasks joined by a queue: reads keep going while earlier
    # chunks wait out their delay, so the delay adds latency without capping bandwidth.
    q: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while True:
                data = await reader.read(256 << 10)
                q.put_nowait((time.monotonic() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            q.put_nowait((0.0, b""))

    async def write() -> None:
        try:
            while True:
                due, data = await q.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                _STATS[key] += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                writer.close()

    await asyncio.gather(read(), write())


async def _serve(lport: int, tport: int, delay: float) -> None:
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        _STATS["connections"] += 1
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", tport)
        except OSError:
            cw.close()
            return
        await asyncio.gather(_pump(cr, sw, delay, "bytes_up"), _pump(sr, cw, delay, "bytes_down"))
        cw.close()
        sw.close()

    server = await asyncio.start_server(handle, "127.0.0.1", lport, backlog=512)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()
        # Connections still open are cancelled on the way out; that is not an error.
        loop.set_exception_handler(lambda _loop, _ctx: None)
    print(json.dumps(_STATS), flush=True)


def main(argv: list[str]) -> None:
    lport, tport, delay_ms = int(argv[0]), int(argv[1]), float(argv[2])
    asyncio.run(_serve(lport, tport, delay_ms / 1000.0))


if __name__ == "__main__":
    main(sys.argv[1:])
