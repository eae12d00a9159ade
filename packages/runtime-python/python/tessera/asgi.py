"""A minimal ASGI 3 server side (HTTP + lifespan startup), standard library only.

The runtime has already parsed the request and read its body (size limits applied); this module
hands it to an ASGI application (FastAPI, Starlette, ...) and writes what the application sends:
a single-body response with its content-length, a multi-part one chunked and flushed part by part.
"""

import asyncio
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

HeadWriter = Callable[[int, List[Tuple[str, str]], bool], bytes]
ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
# Framing is ours: the application's own values would contradict how we send the body.
_FRAMING_HEADERS = ("content-length", "transfer-encoding", "connection", "keep-alive")


class AsgiProtocolError(Exception):
    """The application broke the ASGI protocol (e.g. a body before the response start)."""


def http_scope(method: str, target: str, path: str, http_version: str, headers: Dict[str, str],
               client: Optional[Tuple[str, int]], server: Optional[Tuple[str, int]]) -> Dict[str, Any]:
    raw_path, _, query = target.partition("?")
    return {
        "type": "http",
        "asgi": dict(ASGI_VERSION),
        "http_version": http_version.replace("HTTP/", "") or "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path.encode("latin-1", errors="replace"),
        "query_string": query.encode("latin-1", errors="replace"),
        "root_path": "",
        "headers": [(k.encode("latin-1", errors="replace"), v.encode("latin-1", errors="replace"))
                    for k, v in headers.items()],
        "client": client,
        "server": server,
        "state": {},
    }


class HttpExchange:
    """One request/response between the runtime and an ASGI app."""

    def __init__(self, writer: asyncio.StreamWriter, body: bytes, head: HeadWriter, close: bool, is_head: bool):
        self.writer = writer
        self.body = body
        self.head = head
        self.close = close
        self.is_head = is_head
        self.status: Optional[int] = None
        self.headers: List[Tuple[str, str]] = []
        self.head_sent = False
        self.chunked = False
        self.complete = False
        self._body_given = False
        # A complete 500 is held back until the app returns: error middleware (Starlette's) sends
        # one and then re-raises, and the runtime's own error reply (with the exception) is better.
        self._held_500: Optional[bytes] = None
        self._finished = asyncio.Event()

    async def receive(self) -> Dict[str, Any]:
        if not self._body_given:
            self._body_given = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        # Nothing more will come: park until the response is done, then report the disconnect
        # (what apps waiting for one, e.g. streaming responses, expect).
        await self._finished.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            if self.status is not None:
                raise AsgiProtocolError("http.response.start sent twice")
            self.status = int(message["status"])
            self.headers = [(_text(k), _text(v)) for k, v in message.get("headers", [])
                            if _text(k).lower() not in _FRAMING_HEADERS]
        elif kind == "http.response.body":
            if self.status is None:
                raise AsgiProtocolError("http.response.body sent before http.response.start")
            if self.complete:
                return
            data = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            await self._write_body(data, more)
        # Other messages (http.response.trailers, pathsend, ...) are not offered by our scope.

    async def _write_body(self, data: bytes, more: bool) -> None:
        w = self.writer
        if not self.head_sent:
            self.head_sent = True
            if not more and self.status == 500 and self._held_500 is None:
                self.head_sent = False
                self._held_500 = data
                return
            if not more:
                head = self.head(self.status or 200, self.headers, self.close)
                w.write(head + b"content-length: %d\r\n\r\n" % len(data) + (b"" if self.is_head else data))
                self.complete = True
                self._finished.set()
                await w.drain()
                return
            self.chunked = True
            w.write(self.head(self.status or 200, self.headers + [("transfer-encoding", "chunked")], self.close) + b"\r\n")
        if data and not self.is_head:
            w.write(b"%x\r\n%s\r\n" % (len(data), data))
        if not more:
            w.write(b"0\r\n\r\n")
            self.complete = True
            self._finished.set()
        await w.drain()

    def finish(self) -> None:
        self._finished.set()


async def run_http(app: Callable[..., Awaitable[None]], scope: Dict[str, Any], exchange: HttpExchange) -> None:
    """Runs the app for one request. Raises what the app raised; the caller decides what the
    client sees (an error reply if nothing was sent yet, a truncated stream otherwise)."""
    try:
        await app(scope, exchange.receive, exchange.send)
        if exchange._held_500 is not None and not exchange.head_sent:
            held, exchange._held_500 = exchange._held_500, b""
            await exchange._write_body(held, False)
        if exchange.head_sent and not exchange.complete:
            # The app returned mid-stream: end the chunked body properly.
            await exchange._write_body(b"", False)
    finally:
        exchange.finish()


class Lifespan:
    """Runs the app's lifespan protocol: ``startup()`` waits for startup.complete, ``shutdown()``
    for shutdown.complete. An app that does not speak lifespan (raises at once) is accepted."""

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app
        self.inbox: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.events: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.task: Optional["asyncio.Task[None]"] = None
        self.supported = True

    async def startup(self, timeout_s: float) -> None:
        self.task = asyncio.ensure_future(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        event = await asyncio.wait_for(self.events.get(), timeout=timeout_s)
        if event["type"] == "lifespan.startup.failed":
            raise RuntimeError("application startup failed: %s" % event.get("message", ""))

    async def shutdown(self, timeout_s: float) -> None:
        if not self.supported or self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self.events.get(), timeout=timeout_s)
        except asyncio.TimeoutError:
            self.task.cancel()

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": dict(ASGI_VERSION), "state": {}}
        try:
            await self.app(scope, self.inbox.get, self.events.put)
        except Exception:
            if self.supported:
                self.supported = False
                await self.events.put({"type": "lifespan.startup.complete", "unsupported": True})


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
