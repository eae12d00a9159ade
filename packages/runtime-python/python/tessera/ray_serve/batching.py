"""``@serve.batch``: callers await one item each; the decorated method runs on lists of items.

A batch is flushed when it holds ``max_batch_size`` items or ``batch_wait_timeout_s`` after its
first item arrived, whichever comes first. One queue per (instance, method), on the event loop.
"""

import asyncio
import functools
import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import RayServeCompatError

_QUEUES_ATTR = "__tessera_batch_queues__"


class _BatchQueue:
    def __init__(self, fn: Callable, max_batch_size: int, wait_s: float, max_concurrent: int):
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.pending: List[Tuple[Tuple[Any, ...], "asyncio.Future[Any]"]] = []
        self.arrived = asyncio.Event()
        self.slots = asyncio.Semaphore(max_concurrent)
        self.task: Optional["asyncio.Task[None]"] = None

    async def submit(self, owner: Any, args: Tuple[Any, ...]) -> Any:
        fut: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        self.pending.append((args, fut))
        self.arrived.set()
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._flush_loop(owner))
        return await fut

    async def _flush_loop(self, owner: Any) -> None:
        while self.pending:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.wait_s
            while len(self.pending) < self.max_batch_size:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), timeout=left)
                except asyncio.TimeoutError:
                    break
            batch, self.pending = self.pending[: self.max_batch_size], self.pending[self.max_batch_size:]
            await self.slots.acquire()
            asyncio.ensure_future(self._run(owner, batch))

    async def _run(self, owner: Any, batch: List[Tuple[Tuple[Any, ...], "asyncio.Future[Any]"]]) -> None:
        try:
            columns = [list(col) for col in zip(*(args for args, _ in batch))]
            try:
                results = await (self.fn(owner, *columns) if owner is not None else self.fn(*columns))
                if not isinstance(results, (list, tuple)) or len(results) != len(batch):
                    raise RayServeCompatError(
                        "@serve.batch method %s must return a list with one result per input (%d inputs, got %r)"
                        % (self.fn.__name__, len(batch), type(results).__name__ if not isinstance(results, (list, tuple)) else len(results)))
            except BaseException as e:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                return
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
        finally:
            self.slots.release()


def batch(_func: Optional[Callable] = None, *, max_batch_size: int = 10, batch_wait_timeout_s: float = 0.01,
          max_concurrent_batches: int = 1, batch_size_fn: Any = None) -> Any:
    if batch_size_fn is not None:
        raise RayServeCompatError("@serve.batch(batch_size_fn=...) is not supported on Tessera")
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise RayServeCompatError("@serve.batch: max_batch_size must be an integer >= 1, got %r" % (max_batch_size,))
    if not isinstance(batch_wait_timeout_s, (int, float)) or batch_wait_timeout_s < 0:
        raise RayServeCompatError("@serve.batch: batch_wait_timeout_s must be >= 0, got %r" % (batch_wait_timeout_s,))

    def decorate(fn: Callable) -> Callable:
        if not inspect.iscoroutinefunction(fn):
            raise RayServeCompatError("@serve.batch requires an async function, %s is not" % fn.__qualname__)
        params = list(inspect.signature(fn).parameters)
        is_method = bool(params) and params[0] == "self"

        @functools.wraps(fn)
        async def batched(*args: Any, **kwargs: Any) -> Any:
            if kwargs:
                raise TypeError("@serve.batch methods take positional arguments only, got %s" % ", ".join(kwargs))
            owner = args[0] if is_method else None
            items = args[1:] if is_method else args
            holder: Any = owner if owner is not None else batched
            queues: Dict[str, _BatchQueue] = holder.__dict__.setdefault(_QUEUES_ATTR, {})
            queue = queues.get(fn.__qualname__)
            if queue is None:
                queue = queues[fn.__qualname__] = _BatchQueue(fn, max_batch_size, float(batch_wait_timeout_s),
                                                              max_concurrent_batches)
            return await queue.submit(owner, tuple(items))

        batched.__tessera_batch__ = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s}
        return batched

    return decorate(_func) if _func is not None else decorate
