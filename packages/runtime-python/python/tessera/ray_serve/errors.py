"""Errors of the Ray Serve compatibility layer."""


class RayServeCompatError(Exception):
    """Ray Serve code uses something the compatibility layer does not provide. Raised at import or
    graph-building time, so the deploy-time inspector reports it before anything runs."""


class RayServeException(Exception):
    """Ray Serve's own exception type (``ray.serve.exceptions.RayServeException``)."""


class HandleCallError(RayServeException):
    """A handle call failed in the called deployment; ``code`` is the Tessera error code."""

    def __init__(self, deployment: str, method: str, code: str, message: str):
        super().__init__("%s.%s failed (%s): %s" % (deployment, method, code, message))
        self.deployment = deployment
        self.method = method
        self.code = code


def unsupported(call: str) -> RayServeCompatError:
    return RayServeCompatError("%s is not supported on Tessera (see README \"Moving from Ray Serve\")" % call)
