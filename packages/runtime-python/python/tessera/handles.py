"""Handles: call another deployment of the same application, through the gateway's handle ingress.

    result = await self.handles.preprocessor.call("/clean", {"text": text})
    async for token in self.handles.model.stream("/generate", {"prompt": p}):
        yield token

Calls go to ``TESSERA_HANDLE_URL/{deployment}/{route}`` with ``TESSERA_HANDLE_TOKEN`` as bearer, so
the gateway routes them like any request (load balancing, autoscaling, queueing) and only ever to
deployments of this application. The request id of the request being served travels along, and a
client that hangs up cancels the calls its request made. From synchronous handler methods use
``.result()`` on a call and plain ``for`` on a stream. Standard library only.
"""

import asyncio
import concurrent.futures
import json
import os
import re
import ssl
import threading
import weakref
from typing import Any, AsyncIterator, Dict, Iterator, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlencode, urlsplit

from .api import HTTPError
from .context import current_call, current_request_id

HANDLE_URL_ENV = "TESSERA_HANDLE_URL"
HANDLE_TOKEN_ENV = "TESSERA_HANDLE_TOKEN"
REQUEST_ID_HEADER = "x-request-id"
_DEPLOYMENT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_MAX_HEAD_BYTES = 64 * 1024
_IDLE_PER_HOST = 16
_EXHAUSTED = object()


class HandleError(HTTPError):
    """A handle call failed: the callee answered with an error, or could not be reached.

    ``upstream_status``/``upstream_code`` are what the callee (or the gateway) answered. Left
    uncaught in a handler it answers the client with 502 ``UPSTREAM_ERROR``.
    """

    def __init__(self, message: str, deployment: str, upstream_status: Optional[int] = None,
                 upstream_code: Optional[str] = None, request_id: Optional[str] = None,
                 status: int = 502, code: str = "UPSTREAM_ERROR"):
        super().__init__(status, message, code)
        self.deployment = deployment
        self.upstream_status = upstream_status
        self.upstream_code = upstream_code
        self.request_id = request_id


class HandleTimeout(HandleError):
    def __init__(self, message: str, deployment: str, request_id: Optional[str] = None):
        super().__init__(message, deployment, request_id=request_id, status=504, code="TIMEOUT")


class HandleCancelled(HandleError):
    """The request this call belonged to was cancelled (its client disconnected)."""


class HandlesNotConfigured(HandleError):
    def __init__(self, deployment: str):
        super().__init__("handles are not available: %s is not set (is this replica part of an application?)"
                         % HANDLE_URL_ENV, deployment, status=500, code="INTERNAL")


# ---- the runtime's event loop ----------------------------------------------------------------

_runtime_loop: Optional[asyncio.AbstractEventLoop] = None


def set_runtime_loop(loop: Optional[asyncio.AbstractEventLoop]) -> None:
    """The runtime registers its loop: synchronous handler code (worker threads) runs calls on it."""
    global _runtime_loop
    _runtime_loop = loop


def _in_loop_thread() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _foreign_loop() -> Optional[asyncio.AbstractEventLoop]:
    """The runtime loop when the caller is a worker thread; None when the caller must run its own."""
    loop = _runtime_loop
    if loop is not None and loop.is_running() and not _in_loop_thread():
        return loop
    if _in_loop_thread():
        raise RuntimeError("inside async code, await the handle call instead of calling .result()")
    return None


# ---- a small keep-alive HTTP/1.1 client on asyncio streams ------------------------------------

_Conn = Tuple[asyncio.StreamReader, asyncio.StreamWriter]
_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[Tuple[str, int, bool], List[_Conn]]]" = \
    weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def _idle_conns(key: Tuple[str, int, bool]) -> List[_Conn]:
    loop = asyncio.get_running_loop()
    with _pools_lock:
        return _pools.setdefault(loop, {}).setdefault(key, [])


async def _connect(key: Tuple[str, int, bool]) -> Tuple[_Conn, bool]:
    idle = _idle_conns(key)
    while idle:
        reader, writer = idle.pop()
        if not reader.at_eof() and not writer.is_closing():
            return (reader, writer), True
        writer.close()
    host, port, tls = key
    reader, writer = await asyncio.open_connection(host, port, ssl=ssl.create_default_context() if tls else None,
                                                   limit=_MAX_HEAD_BYTES)
    return (reader, writer), False


def _release(key: Tuple[str, int, bool], conn: _Conn) -> None:
    idle = _idle_conns(key)
    if len(idle) < _IDLE_PER_HOST and not conn[0].at_eof():
        idle.append(conn)
    else:
        conn[1].close()


class _Response:
    def __init__(self, status: int, headers: Dict[str, str], conn: _Conn, key: Tuple[str, int, bool], method: str):
        self.status = status
        self.headers = headers
        self._conn: Optional[_Conn] = conn
        self._key = key
        te = headers.get("transfer-encoding", "").lower()
        self._chunked = "chunked" in te
        self._remaining: Optional[int] = None
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            self._remaining = 0
        elif not self._chunked and "content-length" in headers:
            try:
                self._remaining = max(0, int(headers["content-length"]))
            except ValueError:
                raise ConnectionError("invalid content-length from the gateway")
        # Reusable only when the body's end is framed (length or chunks) and nobody asked to close.
        self._reusable = (self._chunked or self._remaining is not None) and \
            "close" not in headers.get("connection", "").lower()
        self._done = False

    async def chunks(self) -> AsyncIterator[bytes]:
        assert self._conn is not None
        reader = self._conn[0]
        try:
            if self._chunked:
                while True:
                    line = await reader.readuntil(b"\r\n")
                    size = int(line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":
                            pass
                        break
                    data = await reader.readexactly(size)
                    await reader.readexactly(2)
                    yield data
            elif self._remaining is not None:
                while self._remaining > 0:
                    data = await reader.read(min(self._remaining, 65536))
                    if not data:
                        raise ConnectionError("the response ended early")
                    self._remaining -= len(data)
                    yield data
            else:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    yield data
            self._done = True
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            raise ConnectionError("malformed or truncated response from the gateway")
        finally:
            self.close()

    async def read(self) -> bytes:
        parts = []
        async for chunk in self.chunks():
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Back to the pool when fully read, else closed (an abandoned stream cancels the callee)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._reusable:
            _release(self._key, conn)
        else:
            conn[1].close()


async def _send(url: str, method: str, headers: Dict[str, str], body: bytes) -> _Response:
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    key = (parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80), tls)
    target = parts.path + ("?" + parts.query if parts.query else "")
    head_lines = ["%s %s HTTP/1.1" % (method, target), "host: %s" % parts.netloc]
    head_lines += ["%s: %s" % (k, str(v).replace("\r", " ").replace("\n", " ")) for k, v in headers.items()]
    head_lines.append("content-length: %d" % len(body))
    request = ("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1", errors="replace") + body
    for attempt in (0, 1):
        conn, reused = await _connect(key)
        reader, writer = conn
        try:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            writer.close()
            # A pooled connection the gateway closed while idle fails before any response byte;
            # only then is resending safe (the request never reached anyone).
            if reused and attempt == 0 and (not isinstance(e, asyncio.IncompleteReadError) or not e.partial):
                continue
            raise ConnectionError("the gateway closed the connection: %s" % e)
        except asyncio.LimitOverrunError:
            writer.close()
            raise ConnectionError("response headers too large")
        except BaseException:
            writer.close()
            raise
        lines = head.decode("latin-1").split("\r\n")
        status_parts = lines[0].split(" ", 2)
        try:
            status = int(status_parts[1])
        except (IndexError, ValueError):
            writer.close()
            raise ConnectionError("malformed status line %r" % lines[0])
        resp_headers: Dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                resp_headers[name.strip().lower()] = value.strip()
        return _Response(status, resp_headers, conn, key, method)
    raise ConnectionError("unreachable")


# ---- handles ------------------------------------------------------------------------------------


def _encode_body(body: Any) -> Tuple[bytes, Optional[str]]:
    if body is None:
        return b"", None
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), "application/octet-stream"
    if isinstance(body, str):
        return body.encode("utf-8"), "text/plain; charset=utf-8"
    from .runtime import _dumps  # the runtime's JSON rules (numpy, datetimes, sets)
    return _dumps(body).encode("utf-8"), "application/json"


def _decode_body(headers: Mapping[str, str], data: bytes) -> Any:
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        return json.loads(data) if data else None
    if ctype.startswith("text/"):
        return data.decode("utf-8", errors="replace")
    return data


def _error_from(deployment: str, status: int, headers: Mapping[str, str], data: bytes,
                request_id: Optional[str]) -> HandleError:
    code, message = None, data.decode("utf-8", errors="replace")[:500]
    try:
        err = json.loads(data)["error"]
        code, message = err.get("code"), err.get("message", message)
    except Exception:
        pass
    text = "%s answered %d%s: %s" % (deployment, status, " " + code if code else "", message)
    rid = headers.get(REQUEST_ID_HEADER) or request_id
    if code == "TIMEOUT" or status == 504:
        return HandleTimeout(text, deployment, rid)
    return HandleError(text, deployment, upstream_status=status, upstream_code=code, request_id=rid)


class _Target:
    """What one call needs: the URL, headers and body, fixed when the call is made (the request
    id is read from the caller's context, which a worker thread's callback would not see)."""

    def __init__(self, handle: "DeploymentHandle", route: str, body: Any, method: Optional[str],
                 headers: Optional[Mapping[str, str]], query: Optional[Mapping[str, Any]], accept: Optional[str]):
        if not isinstance(route, str) or not route.startswith("/"):
            raise ValueError("a handle route must be a path starting with '/', got %r" % (route,))
        self.deployment = handle.name
        base, token = handle._config()
        path = quote(route, safe="/?%:@!$&'()*+,;=-._~")
        self.url = "%s/%s%s" % (base, handle.name, path)
        if query:
            self.url += ("&" if "?" in path else "?") + urlencode(query, doseq=True)
        self.body, ctype = _encode_body(body)
        self.method = (method or ("GET" if body is None else "POST")).upper()
        self.request_id = current_request_id()
        self.headers: Dict[str, str] = {k.lower(): str(v) for k, v in (headers or {}).items()}
        self.headers["authorization"] = "Bearer %s" % token
        if ctype and "content-type" not in self.headers:
            self.headers["content-type"] = ctype
        if accept:
            self.headers.setdefault("accept", accept)
        if self.request_id:
            self.headers[REQUEST_ID_HEADER] = self.request_id

    async def open(self) -> _Response:
        try:
            return await _send(self.url, self.method, self.headers, self.body)
        except (ConnectionError, OSError) as e:
            raise HandleError("cannot reach %s through the gateway: %s" % (self.deployment, e), self.deployment,
                              request_id=self.request_id)

    async def open_ok(self) -> _Response:
        resp = await self.open()
        if resp.status >= 400:
            data = await self._read(resp)
            raise _error_from(self.deployment, resp.status, resp.headers, data, self.request_id)
        return resp

    async def _read(self, resp: _Response) -> bytes:
        try:
            return await resp.read()
        except (ConnectionError, OSError) as e:
            raise HandleError("%s: the response broke off: %s" % (self.deployment, e), self.deployment,
                              request_id=self.request_id)

    async def result(self) -> Any:
        resp = await self.open_ok()
        return _decode_body(resp.headers, await self._read(resp))


def _run_sync(coro_fn: Any, deployment: str, timeout_s: Optional[float]) -> Any:
    """Runs a coroutine for synchronous handler code, cancelled with the request it serves."""
    loop = _foreign_loop()
    if loop is None:
        return asyncio.run(asyncio.wait_for(coro_fn(), timeout_s))
    future = asyncio.run_coroutine_threadsafe(coro_fn(), loop)
    call = current_call()
    unregister = call.on_cancel(future.cancel) if call is not None else (lambda: None)
    try:
        return future.result(timeout_s)
    except concurrent.futures.CancelledError:
        raise HandleCancelled("the request was cancelled", deployment)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise HandleTimeout("%s did not answer within %ss" % (deployment, timeout_s), deployment)
    finally:
        unregister()


class HandleCall:
    """A call in flight: ``await`` it in async code, or ``.result()`` in synchronous code."""

    def __init__(self, target: _Target, timeout_s: Optional[float]):
        self._target = target
        self._timeout_s = timeout_s

    async def _run(self) -> Any:
        if self._timeout_s is None:
            return await self._target.result()
        try:
            return await asyncio.wait_for(self._target.result(), self._timeout_s)
        except asyncio.TimeoutError:
            raise HandleTimeout("%s did not answer within %ss" % (self._target.deployment, self._timeout_s),
                                self._target.deployment, self._target.request_id)

    def __await__(self) -> Any:
        return self._run().__await__()

    def result(self, timeout_s: Optional[float] = None) -> Any:
        return _run_sync(self._run, self._target.deployment, timeout_s)


class HandleStream:
    """A streamed response: ``async for`` (or ``for`` in synchronous code) over its items.

    SSE responses yield each event's data as a str (a named event as ``{"event", "data", "id"}``,
    which a handler can yield again unchanged); an ``error`` event raises HandleError. Other
    responses yield the body's byte chunks as they arrive. Leaving the loop early closes the
    connection, which cancels the callee.
    """

    def __init__(self, target: _Target, timeout_s: Optional[float]):
        self._target = target
        self._timeout_s = timeout_s
        self._agen: Optional[AsyncIterator[Any]] = None

    async def _items(self) -> AsyncIterator[Any]:
        opening = self._target.open_ok()
        resp = await (opening if self._timeout_s is None else asyncio.wait_for(opening, self._timeout_s))
        try:
            if resp.headers.get("content-type", "").startswith("text/event-stream"):
                async for event in _sse_events(resp.chunks()):
                    if event.get("event") == "error":
                        raise _error_from(self._target.deployment, 500, {}, event["data"].encode(),
                                          self._target.request_id)
                    if set(event) == {"data"}:
                        yield event["data"]
                    else:
                        yield event
            else:
                async for chunk in resp.chunks():
                    yield chunk
        except (ConnectionError, OSError) as e:
            raise HandleError("%s: the stream broke off: %s" % (self._target.deployment, e),
                              self._target.deployment, request_id=self._target.request_id)
        finally:
            resp.close()

    def __aiter__(self) -> AsyncIterator[Any]:
        if self._agen is None:
            self._agen = self._items()
        return self._agen

    async def aclose(self) -> None:
        if self._agen is not None:
            await self._agen.aclose()  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Any]:
        agen = self.__aiter__()
        loop = _foreign_loop()
        own_loop = asyncio.new_event_loop() if loop is None else None

        async def step() -> Any:
            try:
                return await agen.__anext__()
            except StopAsyncIteration:
                return _EXHAUSTED

        async def close() -> None:
            await agen.aclose()  # type: ignore[attr-defined]

        try:
            while True:
                if own_loop is not None:
                    item = own_loop.run_until_complete(step())
                else:
                    item = _run_sync(step, self._target.deployment, None)
                if item is _EXHAUSTED:
                    return
                yield item
        finally:
            if own_loop is not None:
                own_loop.run_until_complete(close())
                own_loop.close()
            elif loop is not None:
                asyncio.run_coroutine_threadsafe(close(), loop)


async def _sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[Dict[str, str]]:
    buffer = ""
    async for chunk in chunks:
        buffer += chunk.decode("utf-8", errors="replace").replace("\r\n", "\n")
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            event: Dict[str, str] = {}
            data: List[str] = []
            for line in block.split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name in ("event", "id"):
                    event[name] = value
            if data or event:
                event["data"] = "\n".join(data)
                yield event


class DeploymentHandle:
    """Calls to one deployment of this application."""

    def __init__(self, handles: "Handles", name: str):
        if not _DEPLOYMENT_NAME.match(name):
            raise ValueError("not a deployment name: %r" % (name,))
        self._handles = handles
        self.name = name

    def _config(self) -> Tuple[str, str]:
        return self._handles._config(self.name)

    def call(self, route: str, body: Any = None, *, method: Optional[str] = None,
             headers: Optional[Mapping[str, str]] = None, query: Optional[Mapping[str, Any]] = None,
             timeout_s: Optional[float] = None) -> HandleCall:
        """Calls ``route`` (POST with a body, GET without, unless ``method`` says otherwise) and
        returns the decoded answer: JSON as Python values, text as str, anything else as bytes."""
        return HandleCall(_Target(self, route, body, method, headers, query, None), timeout_s)

    def stream(self, route: str, body: Any = None, *, method: Optional[str] = None,
               headers: Optional[Mapping[str, str]] = None, query: Optional[Mapping[str, Any]] = None,
               timeout_s: Optional[float] = None) -> HandleStream:
        """Calls a streaming route; ``timeout_s`` bounds the wait for the response to start."""
        return HandleStream(_Target(self, route, body, method, headers, query, "text/event-stream, */*"), timeout_s)

    def __repr__(self) -> str:
        return "<DeploymentHandle %s>" % self.name


class Handles:
    """``handles.<deployment>`` or ``handles["deployment"]``: handles to this application's deployments."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None):
        self._url = url
        self._token = token

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "Handles":
        env = os.environ if env is None else env
        return cls(env.get(HANDLE_URL_ENV) or None, env.get(HANDLE_TOKEN_ENV) or None)

    def _config(self, deployment: str) -> Tuple[str, str]:
        if not self._url or not self._token:
            raise HandlesNotConfigured(deployment)
        return self._url.rstrip("/"), self._token

    def get(self, name: str) -> DeploymentHandle:
        return DeploymentHandle(self, name)

    def __getitem__(self, name: str) -> DeploymentHandle:
        return DeploymentHandle(self, name)

    def __getattr__(self, name: str) -> DeploymentHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        # Python identifiers cannot hold '-': `handles.text_model` reaches deployment `text-model`.
        return DeploymentHandle(self, name.replace("_", "-"))


#: The handles of this replica's application, from its environment.
handles = Handles.from_env()


def attach_handles(instance: Any) -> None:
    """Gives a constructed handler ``self.handles`` unless it defines its own."""
    if getattr(instance, "handles", None) is None:
        try:
            instance.handles = handles
        except (AttributeError, TypeError):
            pass  # __slots__ without room: the handler uses ``tessera.handles`` instead
