"""A minimal HTTP/1.1 receiver that answers every request after a fixed delay (default 50 ms).

Deliberately tiny (asyncio streams + uvloop, keep-alive, no framework) so that the
receiver is not what limits the webhook benchmark. Counts requests; GET /count answers it.

    python bench/workers/receiver.py --port 8099 --delay 0.05
"""

from __future__ import annotations

import argparse
import asyncio

COUNT = 0


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    global COUNT
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:].strip())
            if length:
                await reader.readexactly(length)
            if head.startswith(b"GET /count"):
                body = str(COUNT).encode()
            else:
                COUNT += 1
                await asyncio.sleep(delay)
                body = b'{"ok":true}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port: int, delay: float) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, delay), "127.0.0.1", port, backlog=4096)
    print(f"listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay", type=float, default=0.05)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.port, args.delay))
