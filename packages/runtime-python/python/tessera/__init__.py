"""Tessera handler API: decorate methods of a class with ``route`` to expose them over HTTP."""

from .api import HTTPError, Request, Response, route
from .batching import BatchError, batch
from .context import current_request_id
from .handles import DeploymentHandle, HandleCancelled, HandleError, Handles, HandleTimeout, handles

__all__ = ["route", "Response", "Request", "HTTPError", "batch", "BatchError", "handles", "Handles",
           "DeploymentHandle", "HandleError", "HandleTimeout", "HandleCancelled", "current_request_id"]
