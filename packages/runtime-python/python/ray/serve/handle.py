"""``ray.serve.handle``: the handle types, for code that imports them for type hints."""

from tessera.ray_serve.handles import DeploymentHandle, DeploymentResponse, RayServeHandle, RayServeSyncHandle

__all__ = ["DeploymentHandle", "DeploymentResponse", "RayServeHandle", "RayServeSyncHandle"]
