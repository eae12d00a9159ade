"""The runtime's hooks for Ray Serve entries: construct the replica, dispatch its requests.

``tessera.runtime`` calls ``construct`` when ``TESSERA_ENTRY`` names a bound application, then
``dispatch`` for every request outside ``/-/`` (and for ``/-/call/{method}`` handle calls), so the
HTTP server, limits, draining and logging stay the runtime's own.
"""

import asyncio
import concurrent.futures
import json
import os
from typing import Any, Optional, Tuple

from ..asgi import HttpExchange
from .errors import HandleCallError
from .graph import is_ray_entry, resolve_entry
from .replica import CALL_PREFIX, RayReplica, json_default

__all__ = ["is_ray_entry", "construct", "dispatch"]


def construct(obj: Any, settings: Any, loop: asyncio.AbstractEventLoop, pool: concurrent.futures.Executor) -> RayReplica:
    """Builds the replica's deployment(s); runs in a worker thread like any handler constructor."""
    replica = RayReplica(
        resolve_entry(obj, settings.entry), settings.user_config,
        {"application": settings.application, "replica": settings.replica},
        os.environ.get("TESSERA_HANDLE_URL", ""), os.environ.get("TESSERA_HANDLE_TOKEN", ""), loop, pool)
    replica.construct()
    return replica


def _addr(value: Any) -> Optional[Tuple[str, int]]:
    return (str(value[0]), int(value[1])) if isinstance(value, tuple) and len(value) >= 2 else None


async def dispatch(rt: Any, req: Any, writer: asyncio.StreamWriter, request_id: str, keep: bool) -> Tuple[int, bool]:
    ray: RayReplica = rt.ray
    if req.path.startswith(CALL_PREFIX):
        return await _dispatch_call(rt, ray, req, writer, request_id, keep)
    if ray.asgi is None:
        msg = ("deployment %r has no HTTP ingress (no @serve.ingress or __call__); call it through a handle" % ray.name)
        return await rt.send_error(writer, req, "NOT_FOUND", msg, request_id, not keep), keep
    exchange = HttpExchange(writer, req.body, lambda status, headers, close: rt.head_bytes(req, status, headers, request_id, close),
                            not keep, req.method == "HEAD")
    try:
        await ray.serve_http(req.method, req.target, req.path, req.version, req.headers, exchange, request_id,
                             _addr(writer.get_extra_info("peername")), _addr(writer.get_extra_info("sockname")))
    except Exception as e:
        if not exchange.head_sent:
            return await rt.send_handler_error(writer, req, e, request_id, keep), keep
        rt.log_handler_error(e, request_id, req)
        if not exchange.complete:
            # A truncated chunked body tells the client the stream failed.
            raise ConnectionResetError("ASGI app failed mid-response")
    if not exchange.head_sent:
        err = RuntimeError("the ASGI app returned without sending a response")
        return await rt.send_handler_error(writer, req, err, request_id, keep), keep
    return exchange.status or 200, keep


async def _dispatch_call(rt: Any, ray: RayReplica, req: Any, writer: asyncio.StreamWriter, request_id: str,
                         keep: bool) -> Tuple[int, bool]:
    method = req.path[len(CALL_PREFIX):]
    if req.method != "POST" or not method or "/" in method:
        return await rt.send_error(writer, req, "NOT_FOUND", "handle calls are POST /-/call/{method}", request_id, not keep), keep
    try:
        result = await ray.serve_call(method, req.body, request_id)
        payload = json.dumps({"result": result}, separators=(",", ":"), default=json_default).encode()
    except HandleCallError as e:
        return await rt.send_error(writer, req, e.code, str(e), request_id, not keep), keep
    except Exception as e:
        return await rt.send_handler_error(writer, req, e, request_id, keep), keep
    await rt.send(writer, req, 200, {"content-type": "application/json"}, payload, request_id, not keep)
    return 200, keep
