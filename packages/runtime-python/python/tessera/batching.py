"""Request batching, after Ray Serve's ``@serve.batch``.

    @batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def predict(self, inputs: List[str]) -> List[float]:
        return self.model(inputs)

    @route.post("/predict")
    async def handle(self, body):
        return await self.predict(body["text"])      # one item in, one result out

Concurrent calls are collected into one call with a list of at most ``max_batch_size`` items; a
batch starts once it is full or ``batch_wait_timeout_s`` after its first item arrived. The
function returns one result per item, in order; an item whose result is an exception instance
raises that exception for its caller only. A batch runs one at a time per handler instance
(items arriving meanwhile form the next batch). A synchronous batch function runs in a thread.
A route method may itself be batched: each request then contributes its ``body`` as one item.
"""

import asyncio
import functools
import inspect
import time
from typing import Any, Callable, Deque, List, Optional, Tuple
from collections import deque

_BATCHERS_ATTR = "__tessera_batchers__"


class BatchError(Exception):
    """The batch function broke its contract (did not return one result per item)."""


class _Batcher:
    def __init__(self, fn: Callable[..., Any], owner: Any, max_batch_size: int, timeout_s: float):
        self.fn = fn
        self.owner = owner
        self.max_batch_size = max_batch_size
        self.timeout_s = timeout_s
        self.queue: Deque[Tuple[Any, "asyncio.Future[Any]"]] = deque()
        self.arrived = asyncio.Event()
        self.worker: Optional["asyncio.Task[None]"] = None
        self.loop = asyncio.get_running_loop()

    def submit(self, item: Any) -> "asyncio.Future[Any]":
        future = self.loop.create_future()
        self.queue.append((item, future))
        self.arrived.set()
        if self.worker is None or self.worker.done():
            self.worker = self.loop.create_task(self._work())
        return future

    def _live(self) -> int:
        return sum(1 for _, f in self.queue if not f.done())

    async def _work(self) -> None:
        while self.queue:
            deadline = time.monotonic() + self.timeout_s
            while self._live() < self.max_batch_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch: List[Tuple[Any, "asyncio.Future[Any]"]] = []
            while self.queue and len(batch) < self.max_batch_size:
                item, future = self.queue.popleft()
                if not future.done():  # a caller cancelled while waiting is not served
                    batch.append((item, future))
            if batch:
                await self._run(batch)

    async def _run(self, batch: List[Tuple[Any, "asyncio.Future[Any]"]]) -> None:
        items = [item for item, _ in batch]
        args = (self.owner, items) if self.owner is not None else (items,)
        try:
            if inspect.iscoroutinefunction(self.fn):
                results = await self.fn(*args)
            else:
                results = await self.loop.run_in_executor(None, functools.partial(self.fn, *args))
                if inspect.isawaitable(results):
                    results = await results
            results = list(results)
            if len(results) != len(items):
                raise BatchError("%s returned %d results for a batch of %d items"
                                 % (getattr(self.fn, "__qualname__", "batch function"), len(results), len(items)))
        except Exception as e:
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        for (_, future), result in zip(batch, results):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _batcher_for(owner: Any, key: Callable[..., Any], fn: Callable[..., Any], max_batch_size: int,
                 timeout_s: float) -> _Batcher:
    loop = asyncio.get_running_loop()
    store = owner if owner is not None else fn
    batchers = getattr(store, _BATCHERS_ATTR, None)
    if batchers is None:
        batchers = {}
        setattr(store, _BATCHERS_ATTR, batchers)
    batcher = batchers.get(key)
    if batcher is None or batcher.loop is not loop:
        batcher = batchers[key] = _Batcher(fn, owner, max_batch_size, timeout_s)
    return batcher


def batch(_fn: Optional[Callable[..., Any]] = None, *, max_batch_size: int = 10,
          batch_wait_timeout_s: float = 0.01) -> Any:
    """Decorates a function or method taking a list of items and returning a list of results;
    the decorated one takes a single item and returns (awaitably) its result."""
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise ValueError("max_batch_size must be a positive integer, got %r" % (max_batch_size,))
    if isinstance(batch_wait_timeout_s, bool) or not isinstance(batch_wait_timeout_s, (int, float)) \
            or not 0 <= batch_wait_timeout_s < float("inf"):
        raise ValueError("batch_wait_timeout_s must be a non-negative number, got %r" % (batch_wait_timeout_s,))

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = list(inspect.signature(fn).parameters)
        is_method = bool(params) and params[0] == "self"
        if len(params) != (2 if is_method else 1):
            raise TypeError("a batched function takes exactly one list argument%s, got %s"
                            % (" after self" if is_method else "", ", ".join(params) or "none"))

        @functools.wraps(fn)
        async def batched(*args: Any, **kwargs: Any) -> Any:
            # Keyword calls too: the runtime calls a batched route method as `method(body=...)`.
            owner = args[0] if is_method and args else None
            values = list(args[1:] if is_method else args) + list(kwargs.values())
            if len(values) != 1 or (is_method and owner is None):
                raise TypeError("%s takes one item per call" % fn.__qualname__)
            batcher = _batcher_for(owner, batched, fn, max_batch_size, float(batch_wait_timeout_s))
            # A caller cancelled while waiting cancels its future, and the batch skips the item.
            return await batcher.submit(values[0])

        batched.max_batch_size = max_batch_size  # type: ignore[attr-defined]
        batched.batch_wait_timeout_s = batch_wait_timeout_s  # type: ignore[attr-defined]
        return batched

    return decorate(_fn) if _fn is not None else decorate
