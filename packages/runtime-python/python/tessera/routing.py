"""Turns a handler class into a route table and binds request data to method parameters."""

import inspect
import json
import re
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

from .api import ROUTES_ATTR, HTTPError, Request

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(path))?\}")


class Route:
    def __init__(self, method: str, path: str, stream: Optional[str], name: str, fn: Callable):
        self.method = method
        self.path = path
        self.stream = stream
        self.name = name
        self.fn = fn
        self.pattern, self.param_names = _compile(path)
        self.signature = inspect.signature(fn)
        self.hints = _type_hints(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.is_async_gen = inspect.isasyncgenfunction(fn)
        # Parameters after `self`; a method bound late (on the instance) keeps its own signature.
        params = list(self.signature.parameters.values())
        self.params = params[1:] if params and params[0].name == "self" else params
        for p in self.params:
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                raise TypeError("route %s %s: *args parameters are not supported" % (method, path))

    @property
    def wants_body(self) -> bool:
        return any(p.name == "body" for p in self.params)


def _compile(path: str) -> Tuple["re.Pattern[str]", List[str]]:
    names: List[str] = []
    out = "^"
    pos = 0
    for m in _PARAM.finditer(path):
        out += re.escape(path[pos : m.start()])
        names.append(m.group(1))
        out += "(?P<%s>.+)" % m.group(1) if m.group(2) == "path" else "(?P<%s>[^/]+)" % m.group(1)
        pos = m.end()
    out += re.escape(path[pos:]) + "$"
    return re.compile(out), names


def _type_hints(fn: Callable) -> Dict[str, Any]:
    # get_type_hints resolves string annotations (`from __future__ import annotations`); a hint
    # naming something unimportable must not stop the replica, so fall back to raw annotations.
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return dict(getattr(fn, "__annotations__", {}))


def collect_routes(cls: type) -> List[Route]:
    routes: List[Route] = []
    seen = set()
    for klass in cls.__mro__:
        for name, member in vars(klass).items():
            if name in seen:
                continue
            fn = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            specs = getattr(fn, ROUTES_ATTR, None)
            if not specs:
                continue
            seen.add(name)
            for spec in specs:
                routes.append(Route(spec["method"], spec["path"], spec["stream"], name, fn))
    keys = set()
    for r in routes:
        key = (r.method, r.path)
        if key in keys:
            raise TypeError("two methods declare the route %s %s" % key)
        keys.add(key)
    # Literal paths win over parameterised ones so `/items/new` beats `/items/{id}`.
    routes.sort(key=lambda r: (len(r.param_names) > 0, -len(r.path)))
    return routes


def match(routes: List[Route], method: str, path: str) -> Tuple[Optional[Route], Dict[str, str], List[str]]:
    """The route for (method, path), its path params, and the methods allowed on the path if none matched."""
    allowed: List[str] = []
    for r in routes:
        m = r.pattern.match(path)
        if not m:
            continue
        if r.method == method or (method == "HEAD" and r.method == "GET"):
            return r, m.groupdict(), []
        allowed.append(r.method)
    return None, {}, allowed


class BindError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, raw: str, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else str
    if hint is inspect.Parameter.empty or hint is str or hint is Any or hint is None:
        return raw
    try:
        if hint is bool:
            low = raw.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint in (dict, list) or typing.get_origin(hint) in (dict, list):
            return json.loads(raw)
    except ValueError:
        type_name = getattr(hint, "__name__", str(hint))
        raise BindError("VALIDATION_FAILED", "parameter %r: %r is not a valid %s" % (name, raw, type_name))
    return raw


def _is_list_hint(hint: Any) -> bool:
    return hint is list or typing.get_origin(hint) is list


def bind(route: Route, request: Request, body: Any) -> Dict[str, Any]:
    """Keyword arguments for the route's method: path params, `body`, `request`, then the query."""
    kwargs: Dict[str, Any] = {}
    for p in route.params:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            for k, v in request.query.items():
                if k not in kwargs and k not in ("body", "request"):
                    kwargs[k] = v
            continue
        hint = route.hints.get(p.name, inspect.Parameter.empty)
        if p.name in request.path_params:
            kwargs[p.name] = _convert(p.name, request.path_params[p.name], hint)
        elif p.name == "body":
            kwargs["body"] = body
        elif p.name == "request":
            kwargs["request"] = request
        elif p.name in request.query_all:
            values = request.query_all[p.name]
            if _is_list_hint(hint):
                inner = typing.get_args(hint)
                kwargs[p.name] = [_convert(p.name, v, inner[0] if inner else str) for v in values]
            else:
                kwargs[p.name] = _convert(p.name, values[-1], hint)
        elif p.default is inspect.Parameter.empty:
            raise BindError("VALIDATION_FAILED", "missing query parameter %r" % p.name)
    return kwargs


__all__ = ["Route", "collect_routes", "match", "bind", "BindError", "HTTPError"]
