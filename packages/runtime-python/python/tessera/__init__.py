"""Tessera handler API: decorate methods of a class with ``route`` to expose them over HTTP."""

from .api import HTTPError, Request, Response, route

__all__ = ["route", "Response", "Request", "HTTPError"]
