"""maxfwd - Max-Forwards processing (OpenSIPS maxfwd module).

mf_process_maxfwd_header(max_value), as documented by OpenSIPS:
   2 - no Max-Forwards: one is added with max_value;   1 - found and decremented (non-zero);
  -1 - found and 0 (cannot be decremented);            -2 - error (a value that is not a number).
The module itself never replies - as in OpenSIPS, the script answers 483 Too Many Hops on -1.
"""

from __future__ import annotations

import logging
from typing import Any

from routescript.core.relay import MAXFWD_DONE
from routescript.core.module import Arg, Module, Param, script_function
from routescript.script.context import MsgContext
from routescript.sip import ParseError

log = logging.getLogger("routescript.maxfwd")

MAXFWD_UPPER = 256  # RFC 3261 allows up to 255 hops; OpenSIPS caps the parameter at 256


def _check_limit(v: Any) -> None:
    if not 1 <= int(v) <= MAXFWD_UPPER:
        raise ValueError(f"must be between 1 and {MAXFWD_UPPER}")


def _check_max(v: Any) -> Any:
    n = int(v)
    if not 1 <= n <= MAXFWD_UPPER:
        raise ValueError(f"max_value {n} must be between 1 and {MAXFWD_UPPER}")
    return n


class MaxfwdModule(Module):
    name = "maxfwd"
    params = (Param("max_limit", int, MAXFWD_UPPER, "upper bound of a decremented Max-Forwards",
                    check=_check_limit),)

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._max_limit = int(self.param("max_limit"))   # a load-time parameter: read once

    # Runs for every request of a usual script: its work done here, in the function the route calls.
    @script_function("mf_process_maxfwd_header", Arg("int", "max_value", fixup=_check_max))
    def mf_process_maxfwd_header(self, ctx: MsgContext, max_value: int) -> int:
        msg = ctx.msg
        try:
            value = msg.max_forwards   # None when absent
        except ParseError as exc:
            log.error("bad Max-Forwards header: %s", exc.reason)
            return -2
        # the relay must not decrement it again (OpenSIPS's t_relay/forward never touch it)
        ctx.extra[MAXFWD_DONE] = True
        if value is None:
            msg.add_header("Max-Forwards", str(max_value))
            return 2
        if value == 0:
            del ctx.extra[MAXFWD_DONE]
            return -1
        new = value - 1
        if new > self._max_limit:
            new = self._max_limit
        msg.set_header("Max-Forwards", str(new))
        return 1

    @script_function("is_maxfwd_lt", Arg("int", "max_value", fixup=_check_max))
    def is_maxfwd_lt(self, ctx: MsgContext, max_value: int) -> int:
        """1 when Max-Forwards is below max_value, -1 when not, -2 when absent or bad (OpenSIPS)."""
        try:
            value = ctx.msg.max_forwards
        except ParseError as exc:
            log.error("bad Max-Forwards header: %s", exc.reason)
            return -2
        if value is None:
            return -2
        return 1 if value < max_value else -1


MODULE = MaxfwdModule
