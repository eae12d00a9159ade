"""Deploy-time inspection of a Ray Serve application: ``python -m tessera.ray_serve.inspect ENTRY``.

Imports the entry module from the current directory (the code bundle), walks the bound
application and prints one JSON document on stdout: the deployments with their declared options,
HTTP routes, handles and batched methods, plus uses of Ray APIs the compatibility layer lacks
(found in the source, so a call made only at request time is reported now). Whatever the module
prints while importing goes to stderr. Exit status 0 whenever the JSON was written.
"""

import ast
import inspect as pyinspect
import json
import os
import sys
import traceback
from typing import Any, Dict, List, Optional

from . import __all__ as SERVE_EXPORTS
from .api import INGRESS_ATTR, Application
from .errors import RayServeCompatError
from .graph import ingress_kind, resolve_entry, walk
from .stubs import StubFinder, is_stub

# Exported for old code but unsupported when called (they raise): reported as unsupported.
_SERVE_REFUSED = {"status", "delete", "get_deployment", "list_deployments"}
SERVE_SUPPORTED = (set(SERVE_EXPORTS) - _SERVE_REFUSED) | {"handle", "exceptions", "config"}
RAY_MODULES = ("ray.serve", "ray.serve.handle", "ray.serve.exceptions", "ray.serve.config")
RAY_SUPPORTED = {"serve", "init", "is_initialized", "shutdown", "get", "__version__"}
MAX_SOURCE_FILES = 1000
MAX_ROUTES = 1000
# Tenant code runs here at deploy time: bounded, whatever it does. The address-space limit is
# TESSERA_INSPECT_MEMORY_MB (0: none), as libraries like torch reserve much virtual memory.
MEMORY_LIMIT_ENV = "TESSERA_INSPECT_MEMORY_MB"
DEFAULT_MEMORY_LIMIT_MB = 4096
CPU_LIMIT_S = 120
MAX_SOURCE_BYTES = 2 * 1024 * 1024


def json_safe(value: Any, path: str, problems: List[str]) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [json_safe(v, "%s[%d]" % (path, i), problems) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): json_safe(v, "%s.%s" % (path, k), problems) for k, v in value.items()}
    problems.append("%s: %s is not JSON-serialisable" % (path, type(value).__name__))
    return repr(value)


def describe(app: Application, handles: List[str]) -> Dict[str, Any]:
    d = app.deployment
    target = d.func_or_class
    problems: List[str] = []
    options = json_safe({k: v for k, v in d.options_declared.items() if k not in ("init_args", "init_kwargs")},
                        "options", problems)
    http = ingress_kind(target)
    routes: List[Dict[str, Any]] = []
    asgi_app = getattr(target, INGRESS_ATTR, None) if http == "asgi" else None
    if asgi_app is not None and not is_stub(asgi_app):
        for r in list(getattr(asgi_app, "routes", None) or [])[:MAX_ROUTES]:
            path = getattr(r, "path", None)
            if isinstance(path, str):
                methods = getattr(r, "methods", None)
                routes.append({"path": path, "methods": sorted(str(m) for m in methods) if isinstance(methods, (set, list)) else []})
    batched = []
    if pyinspect.isclass(target):
        for name, member in vars(target).items():
            spec = getattr(member, "__tessera_batch__", None)
            if spec:
                batched.append({"method": name, "maxBatchSize": spec["max_batch_size"],
                                "batchWaitTimeoutS": spec["batch_wait_timeout_s"]})
    has_reconfigure = callable(getattr(target, "reconfigure", None))
    if d.user_config is not None and not has_reconfigure:
        problems.append("user_config is set but %s has no reconfigure() method" % d.name)
    return {
        "name": d.name,
        "className": target.__qualname__,
        "kind": "class" if pyinspect.isclass(target) else "function",
        "http": http,
        "routes": routes,
        "handles": handles,
        "options": options,
        "hasReconfigure": has_reconfigure,
        "hasCheckHealth": callable(getattr(target, "check_health", None)),
        "batched": batched,
        "problems": problems,
    }


def unsupported_calls(code_dir: str) -> List[Dict[str, Any]]:
    found: List[Dict[str, Any]] = []
    count = 0
    for root, dirs, files in os.walk(code_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules", "site-packages"))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            count += 1
            if count > MAX_SOURCE_FILES:
                return found
            path = os.path.join(root, name)
            try:
                if os.path.getsize(path) > MAX_SOURCE_BYTES:
                    continue
                with open(path, "rb") as f:
                    tree = ast.parse(f.read(), filename=path)
            except (OSError, SyntaxError, ValueError):
                continue  # a syntax error surfaces when the module is imported
            found.extend(_scan(tree, os.path.relpath(path, code_dir)))
    return found


def _scan(tree: ast.AST, rel: str) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    uses_ray = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "ray" or a.name.startswith("ray.") for a in node.names):
            uses_ray = True
            for alias in node.names:
                if alias.name.startswith("ray.") and alias.name not in RAY_MODULES:
                    out.append({"call": alias.name, "file": rel, "line": node.lineno})
        elif isinstance(node, ast.ImportFrom) and node.module and (node.module == "ray" or node.module.startswith("ray.")):
            uses_ray = True
            for alias in node.names:
                if node.module == "ray" and alias.name not in RAY_SUPPORTED:
                    out.append({"call": "ray.%s" % alias.name, "file": rel, "line": node.lineno})
                elif node.module == "ray.serve" and alias.name not in SERVE_SUPPORTED:
                    out.append({"call": "ray.serve.%s" % alias.name, "file": rel, "line": node.lineno})
                elif node.module.startswith("ray.") and node.module not in RAY_MODULES:
                    out.append({"call": node.module, "file": rel, "line": node.lineno})
    if not uses_ray:
        return []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "options"
                and any(k.arg == "stream" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                        for k in node.keywords)):
            out.append({"call": "handle.options(stream=...)", "file": rel, "line": node.lineno})
        if not isinstance(node, ast.Attribute):
            continue
        base = node.value
        if isinstance(base, ast.Name) and base.id == "serve" and node.attr not in SERVE_SUPPORTED:
            out.append({"call": "serve.%s" % node.attr, "file": rel, "line": node.lineno})
        elif isinstance(base, ast.Name) and base.id == "ray" and node.attr not in RAY_SUPPORTED:
            out.append({"call": "ray.%s" % node.attr, "file": rel, "line": node.lineno})
        elif (isinstance(base, ast.Attribute) and base.attr == "serve" and isinstance(base.value, ast.Name)
              and base.value.id == "ray" and node.attr not in SERVE_SUPPORTED):
            out.append({"call": "ray.serve.%s" % node.attr, "file": rel, "line": node.lineno})
    return out


def inspect_entry(entry: str, code_dir: str) -> Dict[str, Any]:
    if ":" not in entry:
        return _error("BAD_ENTRY", "entry must be 'module:app', got %r" % entry)
    module_name, attr = entry.rsplit(":", 1)
    calls = unsupported_calls(code_dir)
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    stubs = StubFinder()
    try:
        module = _import_with_stubs(module_name, code_dir, stubs)
    except RayServeCompatError as e:
        return _error("UNSUPPORTED", str(e), calls=calls)
    except BaseException as e:  # the tenant's module may raise anything, SystemExit included
        return _error("IMPORT_FAILED", "importing %r failed: %s: %s" % (module_name, type(e).__name__, e),
                      "".join(traceback.format_exception(type(e), e, e.__traceback__)), calls)
    obj = getattr(module, attr, None)
    try:
        root = resolve_entry(obj, entry)
        graph = walk(root)
    except RayServeCompatError as e:
        return _error("NOT_AN_APPLICATION" if obj is None or "not a Ray Serve" in str(e) else "UNSUPPORTED", str(e), calls=calls)
    deployments = []
    from .graph import children

    for name, app in graph.items():
        deployments.append(describe(app, sorted({c.deployment.name for c in children(app)})))
    ingress = graph[root.deployment.name]
    if ingress_kind(ingress.deployment.func_or_class) == "none":
        deployments[-1]["problems"].append(
            "the ingress deployment %s answers no HTTP: give it @serve.ingress(app) or __call__(self, request)" % ingress.deployment.name)
    return {"ok": True, "ingress": root.deployment.name, "deployments": deployments, "unsupportedCalls": calls,
            "stubbedModules": sorted(stubs.roots)}


MAX_STUBBED = 50


def _import_with_stubs(module_name: str, code_dir: str, stubs: StubFinder) -> Any:
    """Imports the entry module; each third-party module this python lacks is replaced by a stub
    and the import retried (the tenant's own modules must all be there)."""
    import importlib

    root = os.path.realpath(code_dir)
    while True:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            missing = (e.name or "").split(".", 1)[0]
            if (not missing or missing in stubs.roots or missing in ("ray", "tessera") or len(stubs.roots) >= MAX_STUBBED
                    or _in_code_dir(missing, root)):
                raise
            stubs.roots.add(missing)
            stubs.install()
            # Forget the half-imported tenant modules, so the retry runs them again from the top.
            for name, mod in list(sys.modules.items()):
                f = getattr(mod, "__file__", None)
                if f and os.path.realpath(f).startswith(root + os.sep):
                    del sys.modules[name]
            sys.modules.pop(module_name, None)


def _in_code_dir(name: str, root: str) -> bool:
    return os.path.exists(os.path.join(root, name + ".py")) or os.path.isdir(os.path.join(root, name))


def _error(code: str, message: str, tb: Optional[str] = None, calls: Optional[list] = None) -> Dict[str, Any]:
    err: Dict[str, Any] = {"code": code, "message": message}
    if tb:
        err["traceback"] = tb
    return {"ok": False, "error": err, "unsupportedCalls": calls or []}


def limit_resources() -> None:
    try:
        import resource

        try:
            memory_mb = int(os.environ.get(MEMORY_LIMIT_ENV) or DEFAULT_MEMORY_LIMIT_MB)
        except ValueError:
            memory_mb = DEFAULT_MEMORY_LIMIT_MB
        limits = [(resource.RLIMIT_CPU, CPU_LIMIT_S)]
        if memory_mb > 0:
            limits.append((resource.RLIMIT_AS, memory_mb * 1024 * 1024))
        for kind, value in limits:
            soft, hard = resource.getrlimit(kind)
            cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(kind, (cap, hard))
    except (ImportError, ValueError, OSError):
        pass  # not on this platform: the caller's timeout still applies


def main() -> None:
    limit_resources()
    out = sys.stdout
    sys.stdout = sys.stderr  # the module's prints must not corrupt the JSON
    if len(sys.argv) != 2:
        result = _error("BAD_ENTRY", "usage: python -m tessera.ray_serve.inspect module:app")
    else:
        result = inspect_entry(sys.argv[1], os.getcwd())
    out.write(json.dumps(result) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
