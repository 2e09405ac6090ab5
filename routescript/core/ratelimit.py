"""A log line at most once per key and interval, for modules (the transport's RateLimitedLog: modules
never import routescript.transport, core may)."""

from routescript.transport._ratelimit import RateLimitedLog

__all__ = ["RateLimitedLog"]
