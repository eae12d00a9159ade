"""``serve.get_replica_context()``: which deployment and replica the calling code runs in.

Several deployments of one graph may live in one process (in-process handles), so the current
context is a context variable set around construction and around every call into a deployment.
"""

import contextvars
from typing import Any, Optional

from .errors import RayServeException


class ReplicaID:
    def __init__(self, unique_id: str, deployment_name: str, app_name: str):
        self.unique_id = unique_id
        self.deployment_id = DeploymentID(deployment_name, app_name)

    def to_full_id_str(self) -> str:
        return "%s#%s#%s" % (self.deployment_id.app_name, self.deployment_id.name, self.unique_id)

    def __str__(self) -> str:
        return self.to_full_id_str()


class DeploymentID:
    def __init__(self, name: str, app_name: str):
        self.name = name
        self.app_name = app_name


class ReplicaContext:
    def __init__(self, app_name: str, deployment: str, replica_tag: str, servable_object: Any = None):
        self.app_name = app_name
        self.deployment = deployment
        self.replica_tag = replica_tag
        self.replica_id = ReplicaID(replica_tag, deployment, app_name)
        self.servable_object = servable_object


_current: "contextvars.ContextVar[Optional[ReplicaContext]]" = contextvars.ContextVar(
    "tessera_ray_replica_context", default=None)


def get_replica_context() -> ReplicaContext:
    ctx = _current.get()
    if ctx is None:
        raise RayServeException("`serve.get_replica_context()` may only be called from within a Ray Serve deployment")
    return ctx


def set_replica_context(ctx: ReplicaContext) -> "contextvars.Token[Optional[ReplicaContext]]":
    return _current.set(ctx)


def reset_replica_context(token: "contextvars.Token[Optional[ReplicaContext]]") -> None:
    _current.reset(token)
