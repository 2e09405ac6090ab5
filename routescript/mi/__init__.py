"""MI: the management interface. A registry of commands (the core's and every loaded module's),
dispatched with OpenSIPS 3.x's JSON-RPC semantics; served by the mi_http and mi_fifo modules and used by
`routescript mi COMMAND ...` (routescript.mi.cli)."""

from .jsonrpc import JSONRPCError, handle_payload
from .registry import MIRegistry, build_registry, mi_registry
from .stats import Statistics, StatVar, statistics_of

__all__ = ["JSONRPCError", "MIRegistry", "StatVar", "Statistics", "build_registry", "handle_payload",
           "mi_registry", "statistics_of"]
