"""Ray Serve compatibility: run Ray Serve deployment code unchanged on Tessera.

``ray.serve`` (shipped next to this package) re-exports the API from here. See the README
section "Moving from Ray Serve" for what is supported.
"""

from .api import Application, Deployment, deployment, ingress, run, start, shutdown, status, delete
from .api import get_deployment, list_deployments
from .batching import batch
from .context import get_replica_context
from .errors import HandleCallError, RayServeCompatError, RayServeException
from .handles import INGRESS_ALIAS, DeploymentHandle, DeploymentResponse


def get_deployment_handle(deployment_name: str, app_name: str = "default", **_: object) -> DeploymentHandle:
    return DeploymentHandle(deployment_name, app_name)


def get_app_handle(app_name: str = "default") -> DeploymentHandle:
    """A handle to the application's ingress (only the replica's own application is reachable)."""
    return DeploymentHandle(INGRESS_ALIAS, app_name)


__all__ = [
    "Application", "Deployment", "DeploymentHandle", "DeploymentResponse", "HandleCallError",
    "RayServeCompatError", "RayServeException", "batch", "delete", "deployment", "get_app_handle", "get_deployment",
    "get_deployment_handle", "get_replica_context", "ingress", "list_deployments", "run", "shutdown",
    "start", "status",
]
