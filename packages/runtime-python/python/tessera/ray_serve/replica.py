"""A Tessera replica serving one deployment of a Ray Serve application.

The runtime hands over when ``TESSERA_ENTRY`` names a bound application (``module:app``). Which
deployment of the graph this replica is comes from the reserved ``__ray_serve__`` key of the user
config (``{"deployment": name, "handles": {ray name: tessera deployment name}}``), written by the
``rayServe.deploy`` API; without it the replica serves the application's ingress.

Handles (constructor arguments that were bound deployments) call:
- through the gateway (``TESSERA_HANDLE_URL``/``TESSERA_HANDLE_TOKEN``, ``POST
  {url}/{deployment}/-/call/{method}``) when each deployment runs as its own Tessera deployment
  (``handles`` given), so every deployment scales on its own;
- otherwise on instances constructed in this process (a single-deployment run of the whole graph,
  e.g. ``tessera deploy`` of a Ray module, or local development).
"""

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Optional, Tuple

from ..asgi import HttpExchange, Lifespan, http_scope, run_http
from .api import INGRESS_ATTR, Application
from .context import ReplicaContext, reset_replica_context, set_replica_context
from .errors import HandleCallError, RayServeCompatError
from .graph import ingress_kind, walk
from .handles import INGRESS_ALIAS, DeploymentHandle, set_router

RESERVED_CONFIG_KEY = "__ray_serve__"
CALL_PREFIX = "/-/call/"
LIFESPAN_TIMEOUT_S = 60.0
_request_id: "contextvars.ContextVar[str]" = contextvars.ContextVar("tessera_ray_request_id", default="")


class RayReplica:
    def __init__(self, root: Application, user_config: Dict[str, Any], identity: Dict[str, str],
                 handle_url: str, handle_token: str, loop: asyncio.AbstractEventLoop,
                 pool: concurrent.futures.Executor):
        meta = user_config.get(RESERVED_CONFIG_KEY) or {}
        if not isinstance(meta, dict):
            raise RayServeCompatError("user config key %r must be an object" % RESERVED_CONFIG_KEY)
        self.override = {k: v for k, v in user_config.items() if k != RESERVED_CONFIG_KEY}
        self.graph = walk(root)
        self.ingress_name = root.deployment.name
        self.name = meta.get("deployment") or self.ingress_name
        if self.name not in self.graph:
            raise RayServeCompatError("the application has no deployment %r (it has: %s)"
                                      % (self.name, ", ".join(self.graph)))
        self.remote_names: Optional[Dict[str, str]] = meta.get("handles") if handle_url else None
        self.handle_url = handle_url.rstrip("/")
        self.handle_token = handle_token
        self.identity = identity
        self.loop = loop
        self.pool = pool
        self.instances: Dict[str, Any] = {}
        self.contexts: Dict[str, ReplicaContext] = {}
        self.asgi: Optional[Callable[..., Any]] = None
        # Handle calls through the gateway block a thread each for their whole duration: their own
        # pool, so a fan-out never starves the handlers' worker threads.
        self.io_pool = concurrent.futures.ThreadPoolExecutor(max_workers=128, thread_name_prefix="handle-io")
        self.lifespan: Optional[Lifespan] = None

    # ---- construction (runs in a worker thread) ----------------------------------------------

    def construct(self) -> None:
        set_router(self.call, self.loop)
        names = [self.name] if self.remote_names is not None else self._local_order()
        for name in names:
            self._construct_one(name)
        self.asgi = self._http_app()
        if self.asgi is not None:
            asyncio.run_coroutine_threadsafe(self._start_lifespan(self.asgi), self.loop).result()

    async def _start_lifespan(self, app: Callable[..., Any]) -> None:
        # Created on the loop: asyncio primitives made in a worker thread bind no loop before 3.10.
        self.lifespan = Lifespan(app)
        await self.lifespan.startup(LIFESPAN_TIMEOUT_S)

    def _local_order(self) -> list:
        """The target and everything it reaches, children first (``walk`` order)."""
        reach = walk(self.graph[self.name])
        return [n for n in self.graph if n in reach]

    def _construct_one(self, name: str) -> None:
        app = self.graph[name]
        target = app.deployment.func_or_class
        ctx = ReplicaContext(self.identity.get("application") or "default", name,
                             self.identity.get("replica") or "local")
        self.contexts[name] = ctx
        token = set_replica_context(ctx)
        try:
            if inspect.isclass(target):
                instance = target(*_handles_for(app.args), **_handles_for(app.kwargs))
            else:
                if app.args or app.kwargs:
                    raise RayServeCompatError("function deployment %r takes no bind() arguments" % name)
                instance = _FunctionDeployment(target)
            ctx.servable_object = instance
            user_config = self.override if (name == self.name and self.override) else app.deployment.user_config
            if user_config is not None:
                reconfigure = getattr(instance, "reconfigure", None)
                if reconfigure is None:
                    raise RayServeCompatError("deployment %r has a user_config but no reconfigure() method" % name)
                result = reconfigure(user_config)
                if inspect.isawaitable(result):
                    asyncio.run_coroutine_threadsafe(_await(result), self.loop).result()
        finally:
            reset_replica_context(token)
        self.instances[name] = instance

    def _http_app(self) -> Optional[Callable[..., Any]]:
        target = self.graph[self.name].deployment.func_or_class
        kind = ingress_kind(target)
        instance = self.instances[self.name]
        if kind == "asgi":
            app = getattr(target, INGRESS_ATTR)
            _bind_class_based_view(app, target, lambda: instance)
            return app
        if kind == "call":
            return _CallIngress(instance, self.pool)
        return None

    async def shutdown(self, timeout_s: float = 10.0) -> None:
        """After draining: the app's lifespan shutdown, then each deployment's ``__del__`` (Ray's
        cleanup hook; the runtime exits without garbage collection)."""
        if self.lifespan is not None:
            await self.lifespan.shutdown(timeout_s)
        for name, instance in reversed(list(self.instances.items())):
            cleanup = getattr(type(instance), "__del__", None)
            if cleanup is None:
                continue
            try:
                result = await self.loop.run_in_executor(self.pool, cleanup, instance)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(_await(result), timeout_s)
            except Exception as e:
                sys.stderr.write("deployment %s: __del__ failed: %s: %s\n" % (name, type(e).__name__, e))

    # ---- health ------------------------------------------------------------------------------

    def health(self) -> Any:
        """Ray's ``check_health()``: raising marks the replica unhealthy."""
        check = getattr(self.instances.get(self.name), "check_health", None)
        if check is None:
            return True
        result = check()
        if inspect.isawaitable(result):
            asyncio.run_coroutine_threadsafe(_await(result), self.loop).result()
        return True

    # ---- calls -------------------------------------------------------------------------------

    async def call(self, deployment: str, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        """The handle router: on a local instance, or through the gateway."""
        if deployment == INGRESS_ALIAS:
            deployment = self.ingress_name
        if self.remote_names is not None and deployment != self.name:
            return await self._call_remote(deployment, method, args, kwargs)
        instance = self.instances.get(deployment)
        if instance is None:
            raise HandleCallError(deployment, method, "NOT_FOUND", "no deployment %r in this application" % deployment)
        fn = getattr(instance, method, None)
        if fn is None or method.startswith("_") and method != "__call__":
            raise HandleCallError(deployment, method, "NOT_FOUND", "deployment %r has no method %r" % (deployment, method))
        return await self._invoke(deployment, fn, args, kwargs)

    async def _invoke(self, deployment: str, fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        ctx = self.contexts[deployment]
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
            token = set_replica_context(ctx)
            try:
                return await fn(*args, **kwargs)
            finally:
                reset_replica_context(token)
        run = functools.partial(contextvars.copy_context().run, _call_in_context, ctx, fn, args, kwargs)
        result = await self.loop.run_in_executor(self.pool, run)
        return await result if inspect.isawaitable(result) else result

    async def _call_remote(self, deployment: str, method: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        assert self.remote_names is not None
        target = self.remote_names.get(deployment)
        if target is None:
            raise HandleCallError(deployment, method, "NOT_FOUND", "no deployment %r in this application" % deployment)
        body = json.dumps({"args": list(args), "kwargs": kwargs}, default=json_default).encode()
        req = urllib.request.Request(
            "%s/%s%s%s" % (self.handle_url, target, CALL_PREFIX, method), data=body, method="POST",
            headers={"content-type": "application/json", "authorization": "Bearer %s" % self.handle_token,
                     "x-request-id": _request_id.get() or ""})
        status, payload = await self.loop.run_in_executor(self.io_pool, _post, req)
        try:
            data = json.loads(payload) if payload else {}
        except ValueError:
            data = {}
        if status != 200:
            err = data.get("error") if isinstance(data, dict) else None
            err = err if isinstance(err, dict) else {}
            raise HandleCallError(deployment, method, str(err.get("code") or "UPSTREAM_ERROR"),
                                  str(err.get("message") or "HTTP %d" % status))
        return data.get("result")

    # ---- serving (called by the runtime on the event loop) ------------------------------------

    async def serve_http(self, method: str, target: str, path: str, version: str, headers: Dict[str, str],
                         exchange: HttpExchange, request_id: str,
                         peer: Optional[Tuple[str, int]], sock: Optional[Tuple[str, int]]) -> None:
        assert self.asgi is not None
        token = set_replica_context(self.contexts[self.name])
        rid = _request_id.set(request_id)
        try:
            await run_http(self.asgi, http_scope(method, target, path, version, headers, peer, sock), exchange)
        finally:
            _request_id.reset(rid)
            reset_replica_context(token)

    async def serve_call(self, method: str, body: bytes, request_id: str) -> Any:
        """``POST /-/call/{method}`` from another deployment's handle: ``{args, kwargs}`` -> result."""
        try:
            payload = json.loads(body) if body else {}
        except ValueError as e:
            raise HandleCallError(self.name, method, "BAD_REQUEST", "handle call body is not JSON: %s" % e)
        args = payload.get("args") or [] if isinstance(payload, dict) else None
        kwargs = payload.get("kwargs") or {} if isinstance(payload, dict) else None
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise HandleCallError(self.name, method, "BAD_REQUEST", "handle call body must be {args: [...], kwargs: {...}}")
        rid = _request_id.set(request_id)
        try:
            return await self.call(self.name, method, tuple(args), kwargs)
        finally:
            _request_id.reset(rid)


def _handles_for(value: Any) -> Any:
    """Bound deployments among constructor arguments become handles (nested in lists/dicts too)."""
    if isinstance(value, Application):
        return DeploymentHandle(value.deployment.name)
    if isinstance(value, tuple):
        return tuple(_handles_for(v) for v in value)
    if isinstance(value, list):
        return [_handles_for(v) for v in value]
    if isinstance(value, dict):
        return {k: _handles_for(v) for k, v in value.items()}
    return value


def _call_in_context(ctx: ReplicaContext, fn: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    set_replica_context(ctx)
    return fn(*args, **kwargs)


async def _await(value: Any) -> Any:
    return await value


def _post(req: urllib.request.Request) -> Tuple[int, bytes]:
    try:
        with urllib.request.urlopen(req, timeout=300) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return 502, json.dumps({"error": {"code": "UPSTREAM_ERROR", "message": str(e)}}).encode()


def json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError("handle arguments must be JSON-serialisable; got %s" % type(o).__name__)


class _FunctionDeployment:
    """A function deployment: calling the deployment calls the function."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


class _CallIngress:
    """ASGI app for a deployment answering HTTP with ``__call__(request)`` (a Starlette request),
    as Ray Serve does without ``@serve.ingress``."""

    def __init__(self, instance: Any, pool: concurrent.futures.Executor):
        try:
            import starlette.requests  # noqa: F401
        except ImportError:
            raise RayServeCompatError(
                "a deployment answering HTTP with __call__(request) needs starlette (or fastapi) in its environment")
        self.instance = instance
        self.pool = pool
        fn = getattr(instance, "__call__")
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(instance, "fn", None))

    async def __call__(self, scope: Dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        from starlette.requests import Request
        from starlette.responses import PlainTextResponse, Response

        request = Request(scope, receive)
        await request.body()  # cached, so sync handlers can read it as well
        if self.is_async:
            result = await self.instance(request)
        else:
            loop = asyncio.get_running_loop()
            run = functools.partial(contextvars.copy_context().run, self.instance, request)
            result = await loop.run_in_executor(self.pool, run)
            if inspect.isawaitable(result):
                result = await result
        if isinstance(result, Response):
            response = result
        elif isinstance(result, (bytes, bytearray)):
            response = Response(bytes(result), media_type="application/octet-stream")
        elif isinstance(result, str):
            response = PlainTextResponse(result)
        else:
            response = Response(json.dumps(result, default=json_default), media_type="application/json")
        await response(scope, receive, send)


def _bind_class_based_view(app: Any, cls: type, get_instance: Callable[[], Any]) -> None:
    """FastAPI routes declared on the class's methods get the replica's instance as ``self``
    (Ray Serve's class-based view): ``self`` becomes a dependency, and the routes are re-added so
    FastAPI recomputes their parameters. Idempotent per app and class."""
    try:
        from fastapi import APIRouter, Depends
        from fastapi.routing import APIRoute, APIWebSocketRoute
    except ImportError:
        return  # a plain Starlette app: its endpoints are not methods
    done = getattr(app, "__tessera_cbv__", set())
    if cls in done:
        return
    methods = [r for r in app.routes if isinstance(r, (APIRoute, APIWebSocketRoute))
               and cls.__qualname__ in getattr(r.endpoint, "__qualname__", "")]
    router = APIRouter()
    for route in methods:
        app.router.routes.remove(route)
        sig = inspect.signature(route.endpoint)
        params = list(sig.parameters.values())
        if not params:
            raise RayServeCompatError("FastAPI method %s must take self" % route.endpoint.__qualname__)
        new_params = [params[0].replace(default=Depends(get_instance))] + [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[1:]]
        route.endpoint.__signature__ = sig.replace(parameters=new_params)
        router.routes.append(route)
    app.include_router(router)
    done.add(cls)
    app.__tessera_cbv__ = done
