"""The Tessera python replica runtime: ``python -m tessera.runtime``.

Loads ``TESSERA_ENTRY`` (``module:Class``) from ``TESSERA_CODE_DIR``, constructs it with
``TESSERA_USER_CONFIG`` and serves its routes over HTTP/1.1 (keep-alive, chunked bodies, streamed
responses) on asyncio, standard library only, so it runs inside any tenant environment.
"""

import asyncio
import concurrent.futures
import importlib
import inspect
import json
import os
import signal
import socket
import sys
import time
import traceback
import uuid
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qs, unquote, urlsplit

from .api import HTTPError, Request, Response
from .context import ClientGone, run_in_context, serve_cancellable
from .handles import attach_handles, set_runtime_loop
from .routing import BindError, Route, bind, collect_routes, match

ERROR_STATUS = {
    "BAD_REQUEST": 400,
    "VALIDATION_FAILED": 400,
    "NOT_FOUND": 404,
    "PAYLOAD_TOO_LARGE": 413,
    "HANDLER_ERROR": 500,
    "INTERNAL": 500,
    "OVERLOADED": 503,
    "DRAINING": 503,
    "MISROUTED": 503,
}
REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 304: "Not Modified", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Payload Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}
# Longer than any sane client pool's idle timeout, so the client (gateway) always closes an idle
# pooled connection first and never writes into one we are closing.
KEEP_ALIVE_S = 65
MAX_HEADER_BYTES = 64 * 1024
REQUEST_ID_HEADER = "x-request-id"
# The revision the gateway means to reach (UPSTREAM_REVISION_HEADER in packages/core).
UPSTREAM_REVISION_HEADER = "x-tessera-upstream-revision"
_END = object()
BINARY_TYPES = ("application/octet-stream", "multipart/", "image/", "audio/", "video/")


class Settings:
    def __init__(self, env: Dict[str, str]):
        self.host = env.get("TESSERA_HOST") or "127.0.0.1"
        self.port = _int_env(env, "TESSERA_PORT", None, 0, 65535)
        self.code_dir = env.get("TESSERA_CODE_DIR") or ""
        self.entry = env.get("TESSERA_ENTRY") or ""
        if ":" not in self.entry:
            raise ValueError("TESSERA_ENTRY must be 'module:Class', got %r" % self.entry)
        self.module_name, self.class_name = self.entry.rsplit(":", 1)
        raw_config = env.get("TESSERA_USER_CONFIG") or "{}"
        try:
            self.user_config = json.loads(raw_config)
        except ValueError as e:
            raise ValueError("TESSERA_USER_CONFIG is not valid JSON: %s" % e)
        if not isinstance(self.user_config, dict):
            raise ValueError("TESSERA_USER_CONFIG must be a JSON object")
        self.deployment = env.get("TESSERA_DEPLOYMENT", "")
        self.revision = env.get("TESSERA_REVISION", "")
        self.replica = env.get("TESSERA_REPLICA", "")
        self.application = env.get("TESSERA_APPLICATION", "")
        self.max_body_bytes = _int_env(env, "TESSERA_MAX_BODY_BYTES", 10 * 1024 * 1024, 0, 1 << 40)
        self.expose_tracebacks = env.get("TESSERA_EXPOSE_TRACEBACKS") == "1"
        try:
            self.drain_timeout_s = float(env.get("TESSERA_DRAIN_TIMEOUT_S") or 30)
        except ValueError:
            raise ValueError("TESSERA_DRAIN_TIMEOUT_S must be a number, got %r" % env.get("TESSERA_DRAIN_TIMEOUT_S"))
        if not 0 <= self.drain_timeout_s < float("inf"):
            raise ValueError("TESSERA_DRAIN_TIMEOUT_S must be a non-negative number")


def _int_env(env: Dict[str, str], name: str, default: Optional[int], lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ValueError("%s is required" % name)
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("%s must be an integer, got %r" % (name, raw))
    if value < lo or value > hi:
        raise ValueError("%s must lie between %d and %d, got %d" % (name, lo, hi, value))
    return value


class Log:
    def __init__(self, base: Dict[str, str]):
        self.base = base

    def write(self, level: str, msg: str, **fields: Any) -> None:
        rec: Dict[str, Any] = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                               "level": level, "msg": msg}
        rec.update(self.base)
        rec.update({k: v for k, v in fields.items() if v is not None})
        try:
            line = json.dumps(rec, default=str)
        except Exception:
            line = json.dumps({"ts": rec["ts"], "level": level, "msg": msg})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def info(self, msg: str, **f: Any) -> None:
        self.write("info", msg, **f)

    def warn(self, msg: str, **f: Any) -> None:
        self.write("warn", msg, **f)

    def error(self, msg: str, **f: Any) -> None:
        self.write("error", msg, **f)


class ClientError(Exception):
    """A request we answer with an error before it reaches the handler."""

    def __init__(self, code: str, message: str, close: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close


class ParsedRequest:
    def __init__(self, method: str, target: str, version: str, headers: Dict[str, str]):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        parts = urlsplit(target)
        self.path = unquote(parts.path) or "/"
        self.query = parse_qs(parts.query, keep_blank_values=True)
        conn = headers.get("connection", "").lower()
        self.keep_alive = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
        self.body = b""


class Replica:
    def __init__(self, settings: Settings, log: Log):
        self.s = settings
        self.log = log
        self.instance: Any = None
        self.routes: List[Route] = []
        self.constructed = False
        self.draining = False
        self.in_flight = 0
        self.total = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=64,
                                                          thread_name_prefix="handler")
        # health() gets its own thread: a pool full of slow requests must not make a busy replica
        # look dead to the readiness probe.
        self.health_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="health")
        self.server: Optional[asyncio.AbstractServer] = None
        self.stopped = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        # Set when the entry is a Ray Serve application (tessera.ray_serve serves it over ASGI).
        self.ray: Any = None

    # ---- lifecycle -------------------------------------------------------------------------

    def construct(self) -> None:
        """Import and instantiate the handler class (runs in a worker thread: it may load a model)."""
        if self.s.code_dir and self.s.code_dir not in sys.path:
            sys.path.insert(0, self.s.code_dir)
        module = importlib.import_module(self.s.module_name)
        cls = getattr(module, self.s.class_name, None)
        from .ray_serve import serving as ray_serving

        if ray_serving.is_ray_entry(cls):
            self.ray = ray_serving.construct(cls, self.s, self.loop, self.pool)
            self.instance = self.ray  # its health() runs the deployment's check_health()
            self.constructed = True
            return
        if not inspect.isclass(cls):
            raise LookupError("module %r has no class %r" % (self.s.module_name, self.s.class_name))
        routes = collect_routes(cls)
        # A class without its own __init__ shows object's `(self, /, *args, **kwargs)`: only a
        # named parameter asks for the user config.
        init_params = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
                       if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)]
        instance = cls(self.s.user_config) if init_params else cls()
        attach_handles(instance)
        self.routes = routes
        self.instance = instance
        self.constructed = True

    async def check_health(self) -> Tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self.constructed:
            return False, "starting"
        health = getattr(self.instance, "health", None)
        if health is None:
            return True, "ok"
        try:
            if inspect.iscoroutinefunction(health):
                result = await health()
            else:
                result = await asyncio.get_running_loop().run_in_executor(self.health_pool, health)
        except Exception as e:
            return False, "health() raised %s: %s" % (type(e).__name__, e)
        if result is False:
            return False, "health() returned False"
        return True, "ok"

    def begin_drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        self.log.info("draining", inFlight=self.in_flight, timeoutS=self.s.drain_timeout_s)
        asyncio.get_running_loop().create_task(self._finish_drain())

    async def _finish_drain(self) -> None:
        try:
            await asyncio.wait_for(self.idle.wait(), timeout=self.s.drain_timeout_s)
            self.log.info("drained")
        except asyncio.TimeoutError:
            self.log.warn("drain timeout: exiting with requests in flight", inFlight=self.in_flight)
        self.stopped.set()

    # ---- HTTP ------------------------------------------------------------------------------

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        linger = False
        try:
            while not self.stopped.is_set():
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=KEEP_ALIVE_S)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self.send_error(writer, None, "BAD_REQUEST", "request headers too large", "", True)
                    linger = True
                    return
                try:
                    req = parse_head(head)
                except ClientError as e:
                    await self.send_error(writer, None, e.code, e.message, "", True)
                    linger = True
                    return
                keep = await self.handle(req, reader, writer)
                if not keep:
                    linger = True
                    return
        except (ConnectionError, asyncio.CancelledError):
            linger = False
            return
        except Exception as e:
            # A runtime bug must cost one connection, never the server; the log says what happened.
            linger = False
            self.log.error("runtime error", error="%s: %s" % (type(e).__name__, e),
                           traceback="".join(traceback.format_exception(type(e), e, e.__traceback__)))
            return
        finally:
            if linger:
                await lingering_close(reader, writer)
            try:
                writer.close()
            except Exception:
                pass

    async def handle(self, req: ParsedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; returns whether the connection may carry another."""
        request_id = req.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        if req.path.startswith("/-/") and not (self.ray is not None and req.path.startswith("/-/call/")):
            try:
                await self.read_body(req, reader, writer)
            except ClientError as e:
                await self.send_error(writer, req, e.code, e.message, request_id, True)
                return False
            return await self.handle_internal(req, writer, request_id)

        started = time.monotonic()
        counted = False
        status = 500
        keep = req.keep_alive
        try:
            expected = req.headers.get(UPSTREAM_REVISION_HEADER)
            if expected is not None and self.s.revision and expected != self.s.revision:
                # A stale gateway reached an address that now serves another revision (maybe
                # another tenant's): refuse unread and unrun, so the gateway resends it elsewhere.
                keep = False
                self.log.warn("misrouted request refused", requestId=request_id, path=req.path,
                              expectedRevision=expected)
                status = await self.send_error(writer, req, "MISROUTED",
                                               "this replica serves another revision than the one requested",
                                               request_id, True)
                return False
            if self.draining:
                keep = False
                status = await self.send_error(writer, req, "DRAINING", "replica is draining", request_id, True)
                return False
            if not self.constructed:
                # The body stays unread, so the connection cannot carry another request.
                status = await self.send_error(writer, req, "OVERLOADED", "replica is starting", request_id, True)
                return False
            self.in_flight += 1
            self.total += 1
            self.idle.clear()
            counted = True
            try:
                await self.read_body(req, reader, writer)
            except ClientError as e:
                keep = keep and not e.close
                status = await self.send_error(writer, req, e.code, e.message, request_id, not keep)
                return keep
            try:
                status, keep = await serve_cancellable(reader, request_id,
                                                       lambda: self.dispatch(req, writer, request_id, keep))
            except ClientGone:
                status, keep = 499, False
                self.log.info("client disconnected: request cancelled", requestId=request_id, path=req.path)
            return keep
        finally:
            if counted:
                self.in_flight -= 1
                if self.in_flight == 0:
                    self.idle.set()
            self.log.info("request", requestId=request_id, method=req.method, path=req.path, status=status,
                          ms=round((time.monotonic() - started) * 1000, 2))

    async def read_body(self, req: ParsedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limit = self.s.max_body_bytes
        te = req.headers.get("transfer-encoding", "").lower()
        cl = req.headers.get("content-length")
        if te and te != "identity":
            if "chunked" not in te:
                raise ClientError("BAD_REQUEST", "unsupported transfer-encoding %r" % te, True)
            await self.maybe_continue(req, writer)
            req.body = await read_chunked(reader, limit)
        elif cl is not None:
            try:
                length = int(cl)
                if length < 0:
                    raise ValueError
            except ValueError:
                raise ClientError("BAD_REQUEST", "invalid content-length", True)
            if length > limit:
                raise ClientError("PAYLOAD_TOO_LARGE", "request body of %d bytes exceeds the limit of %d bytes" % (length, limit), True)
            if length:
                await self.maybe_continue(req, writer)
                try:
                    req.body = await reader.readexactly(length)
                except asyncio.IncompleteReadError:
                    raise ClientError("BAD_REQUEST", "request body ended early", True)

    async def maybe_continue(self, req: ParsedRequest, writer: asyncio.StreamWriter) -> None:
        if req.headers.get("expect", "").lower() == "100-continue" and req.version == "HTTP/1.1":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()

    async def handle_internal(self, req: ParsedRequest, writer: asyncio.StreamWriter, request_id: str) -> bool:
        if req.path == "/-/healthz":
            await self.send_json(writer, req, 200, {"ok": True}, request_id)
        elif req.path == "/-/ready":
            ok, reason = await self.check_health()
            await self.send_json(writer, req, 200 if ok else 503, {"ready": ok, "reason": reason}, request_id)
        elif req.path == "/-/stats":
            await self.send_json(writer, req, 200,
                                 {"inFlight": self.in_flight, "total": self.total, "draining": self.draining}, request_id)
        else:
            await self.send_error(writer, req, "NOT_FOUND", "no runtime endpoint %s" % req.path, request_id, False)
        return req.keep_alive

    async def dispatch(self, req: ParsedRequest, writer: asyncio.StreamWriter, request_id: str, keep: bool) -> Tuple[int, bool]:
        if self.ray is not None:
            from .ray_serve import serving as ray_serving

            return await ray_serving.dispatch(self, req, writer, request_id, keep)
        route, path_params, allowed = match(self.routes, req.method, req.path)
        if route is None:
            msg = ("method %s is not allowed on %s (allowed: %s)" % (req.method, req.path, ", ".join(sorted(set(allowed))))
                   if allowed else "no route for %s %s" % (req.method, req.path))
            return await self.send_error(writer, req, "NOT_FOUND", msg, request_id, not keep), keep
        request = Request(req.method, req.path, req.headers, req.query, req.body, request_id, path_params)
        try:
            body = parse_body(req) if route.wants_body else None
            kwargs = bind(route, request, body)
        except BindError as e:
            return await self.send_error(writer, req, e.code, e.message, request_id, not keep), keep
        except ClientError as e:
            return await self.send_error(writer, req, e.code, e.message, request_id, not keep), keep
        method = getattr(self.instance, route.name)
        try:
            if route.is_async_gen:
                result: Any = method(**kwargs)
            elif route.is_async:
                result = await method(**kwargs)
            else:
                result = await asyncio.get_running_loop().run_in_executor(self.pool, run_in_context(method, **kwargs))
                if inspect.isawaitable(result):
                    result = await result
        except HTTPError as e:
            return await self.send_error(writer, req, e.code, e.message, request_id, not keep, e.status), keep
        except Exception as e:
            return await self.send_handler_error(writer, req, e, request_id, keep), keep
        return await self.send_result(writer, req, route, result, request_id, keep)

    async def send_result(self, writer: asyncio.StreamWriter, req: ParsedRequest, route: Route, result: Any,
                          request_id: str, keep: bool) -> Tuple[int, bool]:
        status, headers, body = 200, {}, result
        if isinstance(result, Response):
            status, headers, body = result.status, dict(result.headers), result.body
        if is_stream(body):
            # Pull the first item before committing to a status: a generator that fails before its
            # first yield (typically validating its input) still gets a proper error response.
            items = aiter_any(body, self.pool)
            try:
                first: Any = await items.__anext__()
            except StopAsyncIteration:
                first = _END
            except HTTPError as e:
                return await self.send_error(writer, req, e.code, e.message, request_id, not keep, e.status), keep
            except Exception as e:
                return await self.send_handler_error(writer, req, e, request_id, keep), keep
            return await self.send_stream(writer, req, route, status, headers, body, items, first, request_id, keep), keep
        lower = {k.lower() for k in headers}
        if isinstance(body, (bytes, bytearray, memoryview)):
            payload = bytes(body)
            if "content-type" not in lower:
                headers["content-type"] = "application/octet-stream"
        elif isinstance(body, str) and "content-type" in lower:
            payload = body.encode("utf-8")
        else:
            try:
                payload = _dumps(body).encode("utf-8")
            except (TypeError, ValueError) as e:
                return await self.send_handler_error(writer, req, e, request_id, keep), keep
            if "content-type" not in lower:
                headers["content-type"] = "application/json"
        await self.send(writer, req, status, headers, payload, request_id, not keep)
        return status, keep

    async def send_stream(self, writer: asyncio.StreamWriter, req: ParsedRequest, route: Route, status: int,
                          headers: Dict[str, str], body: Any, items: AsyncIterator[Any], first: Any,
                          request_id: str, keep: bool) -> int:
        sse = route.stream == "sse"
        lower = {k.lower() for k in headers}
        if "content-type" not in lower:
            headers["content-type"] = "text/event-stream" if sse else "application/octet-stream"
        if sse:
            headers.setdefault("cache-control", "no-cache")
        headers["transfer-encoding"] = "chunked"
        writer.write(self.head_bytes(req, status, headers, request_id, not keep) + b"\r\n")
        try:
            item = first
            while item is not _END:
                data = encode_sse(item) if sse else encode_chunk(item)
                if data:
                    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                    await writer.drain()
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    item = _END
        except (ConnectionError, asyncio.CancelledError):
            await close_iter(body)
            raise
        except Exception as e:
            self.log_handler_error(e, request_id, req)
            if not sse:
                # A truncated chunked body (no terminating chunk) tells the client the stream failed.
                raise ConnectionResetError("handler stream failed")
            err = {"error": self.error_payload("HANDLER_ERROR", "%s: %s" % (type(e).__name__, e), e)}
            data = b"event: error\ndata: " + _dumps(err).encode() + b"\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return status

    def error_payload(self, code: str, message: str, exc: Optional[BaseException] = None) -> Dict[str, Any]:
        payload: Dict[str, Any] = {"code": code, "message": message}
        if exc is not None and self.s.expose_tracebacks:
            payload["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return payload

    def log_handler_error(self, e: BaseException, request_id: str, req: ParsedRequest) -> None:
        self.log.error("handler error", requestId=request_id, method=req.method, path=req.path,
                       error="%s: %s" % (type(e).__name__, e),
                       traceback="".join(traceback.format_exception(type(e), e, e.__traceback__)))

    async def send_handler_error(self, writer: asyncio.StreamWriter, req: ParsedRequest, e: BaseException,
                                 request_id: str, keep: bool) -> int:
        self.log_handler_error(e, request_id, req)
        body = {"error": self.error_payload("HANDLER_ERROR", "%s: %s" % (type(e).__name__, e), e)}
        await self.send(writer, req, 500, {"content-type": "application/json"}, _dumps(body).encode(), request_id, not keep)
        return 500

    async def send_error(self, writer: asyncio.StreamWriter, req: Optional[ParsedRequest], code: str, message: str,
                         request_id: str, close: bool, status: Optional[int] = None) -> int:
        status = status or ERROR_STATUS.get(code, 500)
        body = _dumps({"error": {"code": code, "message": message}}).encode()
        await self.send(writer, req, status, {"content-type": "application/json"}, body, request_id, close)
        return status

    async def send_json(self, writer: asyncio.StreamWriter, req: ParsedRequest, status: int, obj: Any, request_id: str) -> None:
        await self.send(writer, req, status, {"content-type": "application/json", "cache-control": "no-store"},
                        _dumps(obj).encode(), request_id, not req.keep_alive)

    def head_bytes(self, req: Optional[ParsedRequest], status: int, headers: Union[Dict[str, str], List[Tuple[str, str]]],
                   request_id: str, close: bool) -> bytes:
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status"))]
        # A list of pairs keeps repeated headers (set-cookie) of ASGI apps.
        for k, v in (headers.items() if isinstance(headers, dict) else headers):
            if k.lower() in ("connection", "keep-alive", "content-length", REQUEST_ID_HEADER):
                continue
            lines.append("%s: %s" % (k, str(v).replace("\r", " ").replace("\n", " ")))
        if request_id:
            lines.append("%s: %s" % (REQUEST_ID_HEADER, request_id))
        if close or self.draining:
            lines.append("connection: close")
        else:
            lines.append("connection: keep-alive")
            lines.append("keep-alive: timeout=%d" % KEEP_ALIVE_S)
        return ("\r\n".join(lines) + "\r\n").encode("latin-1", errors="replace")

    async def send(self, writer: asyncio.StreamWriter, req: Optional[ParsedRequest], status: int, headers: Dict[str, str],
                   payload: bytes, request_id: str, close: bool) -> None:
        headers = dict(headers)
        head = self.head_bytes(req, status, headers, request_id, close)
        head += b"content-length: %d\r\n\r\n" % len(payload)
        writer.write(head if req is not None and req.method == "HEAD" else head + payload)
        await writer.drain()


async def lingering_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then discard what the client still sends for a moment: closing a socket with
    unread data makes the kernel send a reset, and the client may lose the response we just wrote
    (typically a 413 for a body we refused to read)."""
    try:
        if writer.can_write_eof():
            writer.write_eof()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        discarded = 0
        while discarded < 64 * 1024 * 1024:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            data = await asyncio.wait_for(reader.read(65536), timeout=remaining)
            if not data:
                return
            discarded += len(data)
    except Exception:
        return


def parse_head(head: bytes) -> ParsedRequest:
    try:
        text = head.decode("latin-1")
    except Exception:
        raise ClientError("BAD_REQUEST", "undecodable request head", True)
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ClientError("BAD_REQUEST", "malformed request line", True)
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ClientError("BAD_REQUEST", "malformed header line", True)
        key = name.lower()
        value = value.strip()
        headers[key] = headers[key] + ", " + value if key in headers else value
    if "content-length" in headers and "transfer-encoding" in headers:
        raise ClientError("BAD_REQUEST", "both content-length and transfer-encoding", True)
    return ParsedRequest(parts[0].upper(), parts[1], parts[2], headers)


async def read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    chunks: List[bytes] = []
    size_so_far = 0
    try:
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ClientError("BAD_REQUEST", "malformed chunk size", True)
            if size == 0:
                # Trailer section: skip header lines until the empty line.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(chunks)
            size_so_far += size
            if size_so_far > limit:
                raise ClientError("PAYLOAD_TOO_LARGE", "request body exceeds the limit of %d bytes" % limit, True)
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ClientError("BAD_REQUEST", "malformed chunk terminator", True)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise ClientError("BAD_REQUEST", "malformed chunked body", True)


def parse_body(req: ParsedRequest) -> Any:
    if not req.body:
        return None
    ctype = req.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    # Anything not declared as text or binary is taken as JSON: `curl -d` and many clients send
    # JSON labelled as a form.
    if ctype.startswith("text/"):
        return req.body.decode("utf-8", errors="replace")
    if ctype.startswith(BINARY_TYPES):
        return req.body
    try:
        return json.loads(req.body)
    except ValueError as e:
        raise ClientError("BAD_REQUEST", "request body is not valid JSON: %s" % e)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, separators=(",", ":"))


def _json_default(o: Any) -> Any:
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if hasattr(o, "tolist"):  # numpy arrays and scalars, without importing numpy
        return o.tolist()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


def is_stream(body: Any) -> bool:
    return inspect.isgenerator(body) or inspect.isasyncgen(body) or (
        hasattr(body, "__aiter__") and not isinstance(body, (str, bytes, dict, list)))


async def aiter_any(body: Any, pool: concurrent.futures.Executor) -> AsyncIterator[Any]:
    if hasattr(body, "__aiter__"):
        async for item in body:
            yield item
        return
    loop = asyncio.get_running_loop()
    done = object()
    while True:
        # Each next() runs in the pool: a sync generator may block between items (model steps).
        item = await loop.run_in_executor(pool, run_in_context(next, body, done))
        if item is done:
            return
        yield item


async def close_iter(body: Any) -> None:
    try:
        if inspect.isasyncgen(body):
            await body.aclose()
        elif inspect.isgenerator(body):
            body.close()
    except Exception:
        pass


def encode_chunk(item: Any) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, str):
        return item.encode("utf-8")
    return _dumps(item).encode("utf-8") + b"\n"


def encode_sse(item: Any) -> bytes:
    """One SSE event per item: str as-is, anything else as JSON. A dict of only `data` plus
    optional `event`/`id` keys is taken as an explicit event."""
    event = event_id = None
    data = item
    if isinstance(item, dict) and "data" in item and set(item.keys()) <= {"event", "data", "id"}:
        event, event_id, data = item.get("event"), item.get("id"), item["data"]
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8", errors="replace")
    text = data if isinstance(data, str) else _dumps(data)
    out = ""
    if event_id is not None:
        out += "id: %s\n" % event_id
    if event:
        out += "event: %s\n" % event
    out += "".join("data: %s\n" % line for line in text.split("\n"))
    return (out + "\n").encode("utf-8")


async def main_async(settings: Settings, log: Log) -> int:
    replica = Replica(settings, log)
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(replica.serve_connection, settings.host, settings.port,
                                        limit=MAX_HEADER_BYTES, reuse_address=True)
    replica.server = server
    set_runtime_loop(loop)
    port = server.sockets[0].getsockname()[1]
    log.info("listening", host=settings.host, port=port, pid=os.getpid(), python=sys.version.split()[0])
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, replica.begin_drain)
    try:
        started = time.monotonic()
        await loop.run_in_executor(replica.pool, replica.construct)
        log.info("constructed", entry=settings.entry, routes=["%s %s" % (r.method, r.path) for r in replica.routes],
                 ms=round((time.monotonic() - started) * 1000, 2))
    except BaseException as e:
        log.error("handler construction failed", entry=settings.entry, error="%s: %s" % (type(e).__name__, e),
                  traceback="".join(traceback.format_exception(type(e), e, e.__traceback__)))
        server.close()
        return 1
    await replica.stopped.wait()
    if replica.ray is not None:
        await replica.ray.shutdown()
    server.close()
    replica.pool.shutdown(wait=False)
    log.info("stopped", total=replica.total)
    return 0


def main() -> None:
    env = dict(os.environ)
    log = Log({"deployment": env.get("TESSERA_DEPLOYMENT", ""), "revision": env.get("TESSERA_REVISION", ""),
               "replica": env.get("TESSERA_REPLICA", "")})
    try:
        settings = Settings(env)
    except ValueError as e:
        log.error("invalid runtime environment", error=str(e))
        sys.exit(2)
    # Not asyncio.run: its teardown cancels every task and waits for them, and a task that does not
    # end on cancellation (tenant code swallowing CancelledError, or asyncio.wait_for in 3.11
    # swallowing a cancel that races a request arriving on a keep-alive connection) would keep a
    # stopped or failed replica alive for its keep-alive timeout or forever. Once main_async is done
    # the process has nothing left to do.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        code = loop.run_until_complete(main_async(settings, log))
    except OSError as e:
        log.error("cannot listen", error=str(e))
        code = 1
    sys.stdout.flush()
    # os._exit: a handler's stray non-daemon thread must not keep a stopped replica alive either.
    os._exit(code)


if __name__ == "__main__":
    main()
