"""The context of the request a handler is serving: its request id and its cancellation.

The runtime enters a ``CallContext`` around every handler call. Handle calls read it to propagate
``x-request-id`` and to stop when the client that asked for this request has gone away. It lives
in a ``ContextVar``, so it follows the request into coroutines, tasks, and (because the runtime
copies the context) the worker threads that run synchronous handler methods.
"""

import asyncio
import contextvars
import threading
from typing import Any, Awaitable, Callable, List, Optional

# Where asyncio offers no way to wait for a peer's close without consuming data (see
# _client_gone), a running request polls for EOF this often.
DISCONNECT_POLL_S = 0.05


class CallContext:
    def __init__(self, request_id: str):
        self.request_id = request_id
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._on_cancel: List[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Runs ``callback`` (from any thread) when the request is cancelled; returns an unregister function."""
        with self._lock:
            if not self._cancelled.is_set():
                self._on_cancel.append(callback)
                return lambda: self._forget(callback)
        callback()
        return lambda: None

    def _forget(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._on_cancel:
                self._on_cancel.remove(callback)

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled.is_set():
                return
            self._cancelled.set()
            callbacks, self._on_cancel = self._on_cancel, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                pass


_current: "contextvars.ContextVar[Optional[CallContext]]" = contextvars.ContextVar("tessera_call", default=None)


def current_call() -> Optional[CallContext]:
    """The request the calling code is serving, or None outside a request (tests, constructors)."""
    return _current.get()


def current_request_id() -> Optional[str]:
    call = _current.get()
    return call.request_id if call is not None else None


class ClientGone(Exception):
    """The client closed its connection before the handler finished."""


async def _client_gone(reader: asyncio.StreamReader) -> bool:
    """Resolves True once the client closed the connection, False if it sent more data instead
    (a pipelined request: we stop watching rather than consume it)."""
    if reader.at_eof():
        return True
    wait = getattr(reader, "_wait_for_data", None)
    if wait is not None and not getattr(reader, "_buffer", b"x") and not getattr(reader, "_eof", True):
        # StreamReader's own wait wakes on data, EOF or a lost connection, without reading.
        try:
            await wait("tessera_disconnect_watch")
        except (ConnectionError, OSError):
            return True
        except RuntimeError:
            pass  # someone else is waiting on the reader: fall back to polling
        else:
            return reader.at_eof()
    while not reader.at_eof():
        if getattr(reader, "_buffer", None):
            return False
        await asyncio.sleep(DISCONNECT_POLL_S)
    return True


async def serve_cancellable(reader: asyncio.StreamReader, request_id: str, serve: Callable[[], Awaitable[Any]]) -> Any:
    """Runs ``serve()`` (handler call + response) inside a fresh CallContext and cancels it if the
    client disconnects meanwhile: the handler task is cancelled, and handle calls made from worker
    threads are aborted through the context. Raises ClientGone in that case."""
    call = CallContext(request_id)
    token = _current.set(call)
    try:
        task = asyncio.ensure_future(serve())
    finally:
        _current.reset(token)
    watcher = asyncio.ensure_future(_client_gone(reader))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done() or watcher.cancelled() or watcher.exception() is not None or not watcher.result():
            return await task
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        if not watcher.done():
            # Wait for the cancellation to land: the reader's waiter slot must be free before the
            # connection reads its next request.
            watcher.cancel()
            await asyncio.wait({watcher})
    call.cancel()
    task.cancel()
    try:
        await task
    except BaseException:
        pass
    raise ClientGone()


def run_in_context(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Callable[[], Any]:
    """A zero-argument callable running ``fn`` in a copy of the current context (for executors,
    which do not carry contextvars into their threads)."""
    ctx = contextvars.copy_context()
    return lambda: ctx.run(fn, *args, **kwargs)
