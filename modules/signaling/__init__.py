"""signaling - send_reply(code, reason): through the transaction when the script created one
(t_newtran), else stateless, as OpenSIPS's signaling module chooses between tm and sl."""

from __future__ import annotations

from routescript.core.module import Arg, Module, script_function
from routescript.modules.sl import send_stateless
from routescript.modules.sl._reply import check_code
from routescript.script.context import MsgContext


class SignalingModule(Module):
    name = "signaling"

    @script_function("send_reply", Arg("int", "code", fixup=check_code), Arg("str", "reason"))
    def send_reply(self, ctx: MsgContext, code: int, reason: str) -> int:
        if ctx.transaction is not None:
            from routescript.modules.tm import reply_stateful
            return reply_stateful(ctx, code, reason)
        return send_stateless(ctx, code, reason)


MODULE = SignalingModule
