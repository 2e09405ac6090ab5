"""xlog - formatted script logging. xlog()/xdbg() are core functions (as in OpenSIPS since 2.x; see
routescript.core.functions); this package lets scripts written for older versions `loadmodule "xlog.so"`
and set its parameters."""

from __future__ import annotations

from routescript.core.module import Module, Param


class XlogModule(Module):
    name = "xlog"
    params = (
        Param("buf_size", int, 4096, "accepted; lines are not truncated"),
        Param("force_color", int, 0, "accepted; no colours"),
    )


MODULE = XlogModule
