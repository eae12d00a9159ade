"""The part of Ray Serve's public API that deployment code calls: ``serve.deployment``,
``serve.ingress``, ``.bind()``, ``.options()``, ``serve.run`` and the ``.deploy()``-era calls.

Nothing here starts a server or talks to a cluster: decorating and binding only record what the
code declares, so importing a Ray Serve module (in a replica or in the deploy-time inspector) has
no side effect. ``tessera.ray_serve.app`` turns the recorded graph into running objects.
"""

import inspect
from typing import Any, Callable, Dict, List, Optional

from .errors import RayServeCompatError, unsupported

#: Every option of ``@serve.deployment`` / ``.options()`` this shim accepts. The deploy-time
#: mapping (``mapRayServeOptions`` in TypeScript) decides what each one becomes; an option not in
#: this set fails at import, naming it, so nothing is silently dropped.
DEPLOYMENT_OPTIONS = (
    "name",
    "version",
    "prev_version",
    "num_replicas",
    "route_prefix",
    "ray_actor_options",
    "placement_group_bundles",
    "placement_group_strategy",
    "max_replicas_per_node",
    "user_config",
    "max_ongoing_requests",
    "max_concurrent_queries",
    "max_queued_requests",
    "autoscaling_config",
    "_autoscaling_config",
    "graceful_shutdown_wait_loop_s",
    "graceful_shutdown_timeout_s",
    "health_check_period_s",
    "health_check_timeout_s",
    "logging_config",
    "init_args",
    "init_kwargs",
)


class Deployment:
    """What ``@serve.deployment`` returns: a class or function plus its declared options."""

    def __init__(self, func_or_class: Any, options: Dict[str, Any]):
        if not (inspect.isclass(func_or_class) or inspect.isfunction(func_or_class)):
            raise RayServeCompatError("@serve.deployment must decorate a class or a function, got %r" % (func_or_class,))
        self.func_or_class = func_or_class
        self._options = dict(options)

    @property
    def name(self) -> str:
        return self._options.get("name") or self.func_or_class.__name__

    @property
    def version(self) -> Optional[str]:
        return self._options.get("version")

    @property
    def num_replicas(self) -> Any:
        return self._options.get("num_replicas", 1)

    @property
    def user_config(self) -> Any:
        return self._options.get("user_config")

    @property
    def ray_actor_options(self) -> Dict[str, Any]:
        return dict(self._options.get("ray_actor_options") or {})

    @property
    def options_declared(self) -> Dict[str, Any]:
        """The options as written in the code (for the inspector)."""
        return dict(self._options)

    def options(self, **kwargs: Any) -> "Deployment":
        check_options(kwargs, "%s.options()" % self.name)
        if "func_or_class" in kwargs:
            raise unsupported("%s.options(func_or_class=...)" % self.name)
        merged = dict(self._options)
        merged.update(kwargs)
        return Deployment(self.func_or_class, merged)

    def bind(self, *args: Any, **kwargs: Any) -> "Application":
        return Application(self, args, kwargs)

    # ---- the `.deploy()` era (Ray Serve 1.x) -------------------------------------------------

    def deploy(self, *init_args: Any, **init_kwargs: Any) -> None:
        """Ray 1.x deployed on call; here it records the application, which the platform deploys."""
        args = init_args or tuple(self._options.get("init_args") or ())
        kwargs = init_kwargs or dict(self._options.get("init_kwargs") or {})
        _DEPLOYED[self.name] = Application(self, args, kwargs)

    def get_handle(self, sync: Optional[bool] = None) -> Any:
        from .handles import DeploymentHandle

        return DeploymentHandle(self.name)

    def delete(self) -> None:
        raise unsupported("%s.delete() (delete the deployment with the Tessera CLI or console)" % self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RayServeCompatError(
            "deployment %r cannot be called directly: use %s.bind(...) and a handle" % (self.name, self.name))

    def __repr__(self) -> str:
        return "Deployment(name=%r)" % self.name


class Application:
    """A bound deployment (``X.bind(...)``): the node of a deployment graph. Bound applications
    passed as arguments become handles in the replica that receives them."""

    def __init__(self, deployment: Deployment, args: tuple, kwargs: Dict[str, Any]):
        self.deployment = deployment
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return "Application(%s)" % self.deployment.name


#: Applications recorded by ``.deploy()`` (Ray 1.x) and ``serve.run``, by deployment name.
_DEPLOYED: Dict[str, Application] = {}


def check_options(options: Dict[str, Any], where: str) -> None:
    unknown = sorted(k for k in options if k not in DEPLOYMENT_OPTIONS)
    if unknown:
        raise RayServeCompatError("%s: unsupported option%s %s (supported: %s)" % (
            where, "s" if len(unknown) > 1 else "", ", ".join(unknown), ", ".join(DEPLOYMENT_OPTIONS)))
    actor = options.get("ray_actor_options")
    if actor is not None and not isinstance(actor, dict):
        raise RayServeCompatError("%s: ray_actor_options must be a dict" % where)


def deployment(_func_or_class: Any = None, **options: Any) -> Any:
    """``@serve.deployment``, ``@serve.deployment(...)`` and ``serve.deployment(cls, ...)``."""
    if _func_or_class is not None and not (inspect.isclass(_func_or_class) or inspect.isfunction(_func_or_class)):
        # `@serve.deployment("name")`: Ray 1.x allowed the name as the first positional argument.
        if isinstance(_func_or_class, str):
            options = dict(options, name=_func_or_class)
            _func_or_class = None
        else:
            raise RayServeCompatError("serve.deployment: expected a class or function, got %r" % (_func_or_class,))
    check_options(options, "@serve.deployment")

    def decorate(target: Any) -> Deployment:
        return Deployment(target, options)

    return decorate(_func_or_class) if _func_or_class is not None else decorate


INGRESS_ATTR = "__tessera_ray_ingress__"


def ingress(app: Any) -> Callable[[type], type]:
    """``@serve.ingress(app)``: the class serves this ASGI app (FastAPI/Starlette); FastAPI routes
    declared on the class's methods get the replica's instance as ``self``."""
    if not callable(app):
        raise RayServeCompatError("@serve.ingress expects an ASGI app (FastAPI or Starlette), got %r" % (app,))

    def decorate(cls: type) -> type:
        if not inspect.isclass(cls):
            raise RayServeCompatError("@serve.ingress must decorate a class, got %r" % (cls,))
        if isinstance(cls, Deployment):
            raise RayServeCompatError("put @serve.ingress below @serve.deployment")
        setattr(cls, INGRESS_ATTR, app)
        return cls

    return decorate


def run(target: Any, *args: Any, **kwargs: Any) -> Any:
    """Inside Tessera the platform runs the application; ``serve.run`` records it as the entry and
    returns a handle to its ingress so code written for a Ray driver script keeps working."""
    from .handles import DeploymentHandle

    app = as_application(target)
    _DEPLOYED[app.deployment.name] = app
    return DeploymentHandle(app.deployment.name)


def as_application(target: Any) -> Application:
    if isinstance(target, Application):
        return target
    if isinstance(target, Deployment):
        # `X.options(version=...).deploy()` recorded a copy of X: the entry `module:X` means it.
        deployed = _DEPLOYED.get(target.name)
        if deployed is not None and deployed.deployment.func_or_class is target.func_or_class:
            return deployed
        return target.bind()
    raise RayServeCompatError("expected a bound application (X.bind(...)) or a deployment, got %r" % (target,))


def start(*args: Any, **kwargs: Any) -> None:
    """Ray 1.x ``serve.start()``: the platform is always started; nothing to do."""


def shutdown() -> None:
    """The platform owns the lifecycle; nothing to do inside a replica."""


def status() -> Any:
    raise unsupported("serve.status() (use `tessera status`)")


def delete(name: str, *args: Any, **kwargs: Any) -> None:
    raise unsupported("serve.delete() (delete the application with the Tessera CLI or console)")


def get_deployment(name: str) -> Any:
    raise unsupported("serve.get_deployment() (use serve.get_deployment_handle())")


def list_deployments() -> Any:
    raise unsupported("serve.list_deployments() (use `tessera status`)")
