"""xlog/xdbg below the xlog level are skipped before their format is expanded (FunctionSpec.guard)."""

from __future__ import annotations

import logging
from typing import Any

from routescript.core.functions import core_functions
from routescript.script import compile_script, parse_text
from routescript.script.context import MsgContext
from routescript.script.registry import PVarSpec, Registry

SRC = '''
route {
    xlog("L_INFO", "seen $count\\n");
    $var(rc) = $rc;
    xdbg("debug $count\\n");
    xlog("L_ERR", "error $count\\n");
}
'''


def _registry(reads: list[int]) -> Registry:
    reg = Registry()
    for spec in core_functions():
        reg.add_function(spec)

    def count(ctx: MsgContext, key: Any, index: Any) -> int:
        reads.append(1)
        return len(reads)

    reg.add_pvar(PVarSpec("count", count))
    reg.add_pvar(PVarSpec("rc", lambda ctx, k, i: ctx.retcode))
    reg.add_pvar(PVarSpec("var", lambda ctx, k, i: ctx.vars.get(k),
                          lambda ctx, k, i, v: ctx.vars.__setitem__(k, v), key="required"))
    return reg


async def test_lines_below_the_level_expand_nothing(caplog: Any) -> None:
    reads: list[int] = []
    script = compile_script(parse_text(SRC), _registry(reads))
    logger = logging.getLogger("routescript.xlog")
    old = logger.level
    try:
        logger.setLevel(logging.WARNING)
        ctx = MsgContext()
        with caplog.at_level(logging.WARNING, logger="routescript.xlog"):
            await script.run("request", None, ctx)
        assert len(reads) == 1                        # only the L_ERR line read $count
        assert ctx.vars["rc"] == 1                    # a skipped xlog is still true
        assert [r.getMessage() for r in caplog.records] == ["error 1"]
        logger.setLevel(logging.DEBUG)                # a level change applies at the next call
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="routescript.xlog"):
            await script.run("request", None, MsgContext())
        assert [r.getMessage() for r in caplog.records] == ["seen 2", "debug 3", "error 4"]
    finally:
        logger.setLevel(old)
