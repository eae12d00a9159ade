"""``ray.serve.config``: option objects some code passes instead of plain dicts. They are dicts
(with attribute access), so the deploy-time mapping reads them like the dict form."""

from typing import Any


class _Options(dict):
    def __init__(self, **kwargs: Any):
        super().__init__({k: v for k, v in kwargs.items() if v is not None})

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)


class AutoscalingConfig(_Options):
    """``autoscaling_config=AutoscalingConfig(min_replicas=..., max_replicas=..., ...)``."""


class HTTPOptions(_Options):
    """``serve.start(http_options=...)``: the gateway serves HTTP; accepted and unused."""


class gRPCOptions(_Options):
    """Accepted for ``serve.start``; gRPC itself is not served."""


__all__ = ["AutoscalingConfig", "HTTPOptions", "gRPCOptions"]
