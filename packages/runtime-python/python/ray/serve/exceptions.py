"""``ray.serve.exceptions``."""

from tessera.ray_serve.errors import RayServeException

__all__ = ["RayServeException"]
