"""What handler code imports: the ``route`` decorators, ``Response`` and ``Request``.

Kept free of server concerns so that importing ``tessera`` from a handler (or its unit tests)
never starts anything.
"""

import json
from typing import Any, Callable, Dict, List, Mapping, Optional

ROUTES_ATTR = "__tessera_routes__"
STREAM_MODES = (None, "sse", "chunked")


class _RouteDecorators:
    """``@route.get(path)``, ``@route.post(path, stream="sse")`` ... ; stackable on one method."""

    def __call__(self, method: str, path: str, stream: Optional[str] = None) -> Callable:
        if stream not in STREAM_MODES:
            raise ValueError("stream must be None, 'sse' or 'chunked', got %r" % (stream,))
        if not path.startswith("/"):
            raise ValueError("route path must start with '/', got %r" % (path,))
        if path.startswith("/-/"):
            raise ValueError("paths under /-/ are reserved for the runtime, got %r" % (path,))

        def decorate(fn: Callable) -> Callable:
            specs = list(getattr(fn, ROUTES_ATTR, ()))
            specs.append({"method": method.upper(), "path": path, "stream": stream})
            setattr(fn, ROUTES_ATTR, specs)
            return fn

        return decorate

    def get(self, path: str, stream: Optional[str] = None) -> Callable:
        return self("GET", path, stream)

    def post(self, path: str, stream: Optional[str] = None) -> Callable:
        return self("POST", path, stream)

    def put(self, path: str, stream: Optional[str] = None) -> Callable:
        return self("PUT", path, stream)

    def patch(self, path: str, stream: Optional[str] = None) -> Callable:
        return self("PATCH", path, stream)

    def delete(self, path: str, stream: Optional[str] = None) -> Callable:
        return self("DELETE", path, stream)


route = _RouteDecorators()


class Response:
    """Full control over a reply: status, body (JSON-able, str, bytes or an iterator to stream), headers."""

    def __init__(self, status: int = 200, body: Any = None, headers: Optional[Mapping[str, str]] = None):
        if not isinstance(status, int) or status < 100 or status > 599:
            raise ValueError("status must be an int between 100 and 599, got %r" % (status,))
        self.status = status
        self.body = body
        self.headers: Dict[str, str] = dict(headers or {})


class HTTPError(Exception):
    """Raise from a handler to answer with a client error instead of a 500 ``HANDLER_ERROR``."""

    def __init__(self, status: int, message: str, code: str = "BAD_REQUEST"):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Request:
    """The incoming request as a handler sees it when it asks for a ``request`` parameter."""

    def __init__(
        self,
        method: str,
        path: str,
        headers: Dict[str, str],
        query: Dict[str, List[str]],
        body: bytes,
        request_id: str,
        path_params: Dict[str, str],
    ):
        self.method = method
        self.path = path
        #: lower-cased header names
        self.headers = headers
        #: every value of each query parameter, in order
        self.query_all = query
        #: last value of each query parameter
        self.query = {k: v[-1] for k, v in query.items() if v}
        self.body = body
        self.request_id = request_id
        self.path_params = path_params

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")
