"""Tessera's stand-in for ``ray`` inside replicas: only what Ray Serve code needs.

Ray Core (tasks, actors, the object store) is not provided: using it fails at import (deploy
time) with a message naming the call.
"""

from typing import Any

from tessera.ray_serve.errors import unsupported
from tessera.ray_serve.handles import DeploymentResponse

from . import serve

__version__ = "2.9.0+tessera"


def init(*args: Any, **kwargs: Any) -> None:
    """The platform is the cluster: nothing to connect to."""


def is_initialized() -> bool:
    return True


def shutdown(*args: Any, **kwargs: Any) -> None:
    """Nothing to shut down inside a replica."""


def get(refs: Any, timeout: Any = None) -> Any:
    """Ray 1.x code resolved handle results with ``ray.get(handle.remote(x))``."""
    if isinstance(refs, list):
        return [get(r, timeout) for r in refs]
    if isinstance(refs, DeploymentResponse):
        return refs.result(timeout_s=timeout)
    raise unsupported("ray.get() on %s (only handle responses can be resolved)" % type(refs).__name__)


def __getattr__(name: str) -> Any:
    raise unsupported("ray.%s" % name)
