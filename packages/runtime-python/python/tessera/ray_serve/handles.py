"""``DeploymentHandle`` and ``DeploymentResponse``: how one deployment calls another.

A handle only names its target; the replica installs a router (``set_router``) that performs the
call, either on an instance in this process or through the gateway's handle endpoint. Calls start
when ``.remote()`` is called (as in Ray); the response is awaitable from async code and has a
blocking ``.result()`` for sync code running in the replica's worker threads.
"""

import asyncio
import concurrent.futures
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

from .errors import RayServeException, unsupported

Router = Callable[[str, str, Tuple[Any, ...], Dict[str, Any]], Awaitable[Any]]

#: The name ``serve.get_app_handle()`` targets: the replica's router maps it to the ingress.
INGRESS_ALIAS = "__ingress__"

_router: Optional[Router] = None
_loop: Optional[asyncio.AbstractEventLoop] = None


def set_router(router: Optional[Router], loop: Optional[asyncio.AbstractEventLoop]) -> None:
    global _router, _loop
    _router, _loop = router, loop


class DeploymentResponse:
    def __init__(self, future: "concurrent.futures.Future[Any] | asyncio.Future[Any]", loop: asyncio.AbstractEventLoop):
        self._future = future
        self._loop = loop

    def __await__(self) -> Any:
        fut = self._future
        if isinstance(fut, concurrent.futures.Future):
            fut = asyncio.wrap_future(fut)
        return fut.__await__()

    def result(self, timeout_s: Optional[float] = None, **_: Any) -> Any:
        if _on_loop_thread(self._loop):
            raise RayServeException(
                "DeploymentResponse.result() blocks and cannot be called from the event loop: use `await response`")
        fut = self._future
        if isinstance(fut, concurrent.futures.Future):
            return fut.result(timeout_s)
        return asyncio.run_coroutine_threadsafe(_await(fut), self._loop).result(timeout_s)

    def cancel(self) -> None:
        if isinstance(self._future, concurrent.futures.Future):
            self._future.cancel()
        else:
            self._loop.call_soon_threadsafe(self._future.cancel)


async def _await(fut: Any) -> Any:
    return await fut


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def _resolve(value: Any) -> Any:
    """Responses passed as arguments are awaited first, as Ray resolves them before the call."""
    if isinstance(value, DeploymentResponse):
        return await value
    if isinstance(value, (list, tuple)):
        items = [await _resolve(v) for v in value]
        return type(value)(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        return {k: await _resolve(v) for k, v in value.items()}
    return value


class _MethodCaller:
    def __init__(self, handle: "DeploymentHandle", method: str):
        self._handle = handle
        self._method = method

    def remote(self, *args: Any, **kwargs: Any) -> DeploymentResponse:
        return self._handle._call(self._method, args, kwargs)


class DeploymentHandle:
    def __init__(self, deployment_name: str, app_name: str = "default", method_name: str = "__call__"):
        self.deployment_name = deployment_name
        self.app_name = app_name
        self._method_name = method_name

    def options(self, method_name: Optional[str] = None, stream: bool = False, **_: Any) -> "DeploymentHandle":
        # Other options (multiplexed_model_id, use_new_handle_api) do not change routing here.
        if stream:
            raise unsupported("handle.options(stream=True)")
        return DeploymentHandle(self.deployment_name, self.app_name, method_name or self._method_name)

    def remote(self, *args: Any, **kwargs: Any) -> DeploymentResponse:
        return self._call(self._method_name, args, kwargs)

    def __getattr__(self, name: str) -> _MethodCaller:
        if name.startswith("_"):
            raise AttributeError(name)
        return _MethodCaller(self, name)

    def _call(self, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> DeploymentResponse:
        router, loop = _router, _loop
        if router is None or loop is None:
            raise RayServeException(
                "handle to %r called outside a running replica: handles work inside deployments" % self.deployment_name)

        async def call() -> Any:
            return await router(self.deployment_name, method, await _resolve(tuple(args)), await _resolve(dict(kwargs)))

        if _on_loop_thread(loop):
            return DeploymentResponse(asyncio.ensure_future(call()), loop)
        return DeploymentResponse(asyncio.run_coroutine_threadsafe(call(), loop), loop)

    def __reduce__(self) -> Any:
        return (DeploymentHandle, (self.deployment_name, self.app_name, self._method_name))

    def __repr__(self) -> str:
        return "DeploymentHandle(deployment=%r)" % self.deployment_name


# Ray 2.x kept these names for the older handle API; code imports them for type hints.
RayServeHandle = DeploymentHandle
RayServeSyncHandle = DeploymentHandle
