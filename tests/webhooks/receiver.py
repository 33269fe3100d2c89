"""A local HTTP receiver for webhook tests: a real socket server speaking HTTP/1.1 (keep-alive), scriptable.

- `plan(path, [500, 500])`: the next answers on that path (then 200).
- `hold(path)`: the next request on that path is held until `release` is set or the client hangs up
  (`holding` is set while it waits; a hang-up sets `disconnected` and the request is not completed).
- `/redirect` answers 302 to `/landing`; `/big` answers a 5 KB body.
`received` lists every request read whole; `completed` only those answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from dataclasses import dataclass


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when read


class Receiver:
    def __init__(self) -> None:
        self.port = 0
        self.received: list[Request] = []
        self.completed: list[Request] = []
        self.plans: dict[str, list[int]] = {}
        self.held: set[str] = set()
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.disconnected = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def plan(self, path: str, statuses: list[int]) -> None:
        self.plans[path] = list(statuses)

    def hold(self, path: str) -> None:
        self.held.add(path)

    def completed_on(self, path: str) -> list[Request]:
        return [r for r in self.completed if r.path == path]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path = target.split("?", 1)[0]
                request = Request(method, path, headers, body, time.time())
                self.received.append(request)
                if path in self.held:
                    self.held.discard(path)
                    self.holding.set()
                    hang_up = asyncio.ensure_future(reader.read(1))
                    released = asyncio.ensure_future(self.release.wait())
                    done, pending = await asyncio.wait({hang_up, released}, return_when=asyncio.FIRST_COMPLETED)
                    for task in pending:
                        task.cancel()
                    if hang_up in done:
                        self.disconnected.set()
                        break
                plan = self.plans.get(path)
                status = plan.pop(0) if plan else 200
                extra = ""
                answer = b'{"ok": true}'
                if path == "/redirect":
                    status, extra = 302, f"location: http://127.0.0.1:{self.port}/landing\r\n"
                elif path == "/big":
                    answer = b"x" * 5000
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(answer)}\r\n"
                    f"{extra}\r\n".encode()
                    + answer
                )
                await writer.drain()
                self.completed.append(request)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> list[bool]:
    """Written from the Standard Webhooks text, independently of app.webhooks.signing: for each signature in
    `webhook-signature`, whether it is HMAC-SHA256(base64-decoded secret, "{id}.{timestamp}.{body}")."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    content = headers["webhook-id"].encode() + b"." + headers["webhook-timestamp"].encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    results = []
    for part in headers["webhook-signature"].split(" "):
        version, _, signature = part.partition(",")
        results.append(version == "v1" and hmac.compare_digest(signature, expected))
    return results
