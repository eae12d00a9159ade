"""Walks a bound application (``Ingress.bind(A.bind(), B.bind())``) into its deployments."""

import inspect
from typing import Any, Dict, List

from .api import INGRESS_ATTR, Application, Deployment, as_application
from .errors import RayServeCompatError


def resolve_entry(obj: Any, entry: str) -> Application:
    """The application an entry attribute names: a bound application, a deployment (bound with
    the arguments ``.deploy()`` recorded, else none), or a builder function returning one."""
    if isinstance(obj, (Application, Deployment)):
        return as_application(obj)
    if inspect.isfunction(obj):
        raise RayServeCompatError(
            "entry %r is a function: application builders are not supported; "
            "bind the application at module level (app = X.bind(...))" % entry)
    raise RayServeCompatError("entry %r is not a Ray Serve application (expected `app = X.bind(...)`)" % entry)


def is_ray_entry(obj: Any) -> bool:
    return isinstance(obj, (Application, Deployment))


def walk(root: Application) -> Dict[str, Application]:
    """Every deployment reachable from ``root`` by name, children before parents."""
    found: Dict[str, Application] = {}

    def visit(app: Application, path: List[str]) -> None:
        name = app.deployment.name
        if name in path:
            raise RayServeCompatError("deployment graph has a cycle through %r" % name)
        known = found.get(name)
        if known is not None:
            if known is not app and known.deployment.func_or_class is not app.deployment.func_or_class:
                raise RayServeCompatError(
                    "two different deployments are named %r: give one another name with .options(name=...)" % name)
            if known is not app and (known.args != app.args or known.kwargs != app.kwargs):
                raise RayServeCompatError(
                    "deployment %r is bound twice with different arguments: give one another name "
                    "with .options(name=...)" % name)
            return
        for child in children(app):
            visit(child, path + [name])
        found[name] = app

    visit(root, [])
    return found


def children(app: Application) -> List[Application]:
    out: List[Application] = []

    def scan(value: Any) -> None:
        if isinstance(value, Application):
            out.append(value)
        elif isinstance(value, Deployment):
            raise RayServeCompatError(
                "deployment %r is passed unbound to %r: pass %s.bind()" % (value.name, app.deployment.name, value.name))
        elif isinstance(value, (list, tuple, set)):
            for v in value:
                scan(v)
        elif isinstance(value, dict):
            for v in value.values():
                scan(v)

    scan(list(app.args))
    scan(app.kwargs)
    return out


def ingress_kind(target: Any) -> str:
    """How a deployment answers HTTP: ``asgi`` (@serve.ingress), ``call`` (``__call__(request)``
    or a function deployment) or ``none`` (reachable through handles only)."""
    if inspect.isclass(target) and getattr(target, INGRESS_ATTR, None) is not None:
        return "asgi"
    if inspect.isfunction(target) or (inspect.isclass(target) and callable(getattr(target, "__call__", None))
                                      and "__call__" in _own_attrs(target)):
        return "call"
    return "none"


def _own_attrs(cls: type) -> set:
    names: set = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        names.update(vars(klass))
    return names
