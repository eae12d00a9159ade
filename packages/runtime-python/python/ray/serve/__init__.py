"""``from ray import serve`` inside a Tessera replica (see ``tessera.ray_serve``)."""

from typing import Any

from tessera.ray_serve import *  # noqa: F401,F403
from tessera.ray_serve import __all__ as _names
from tessera.ray_serve.errors import unsupported

from . import config, exceptions, handle  # noqa: F401

__all__ = list(_names)


def __getattr__(name: str) -> Any:
    raise unsupported("serve.%s" % name)
