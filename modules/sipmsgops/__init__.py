"""sipmsgops - SIP message operations (OpenSIPS 3.x sipmsgops): methods, To tag, headers.
SDP/codec operations are not provided (a presence server does not touch SDP)."""

from __future__ import annotations

from routescript.core.module import Arg, Module, script_function
from routescript.script.context import MsgContext

from . import _ops


class SipmsgopsModule(Module):
    name = "sipmsgops"

    @script_function("is_method", Arg("str", "methods", fixup=_ops.methods_fixup))
    def is_method(self, ctx: MsgContext, methods: object) -> int:
        return _ops.is_method(ctx, methods)

    @script_function("has_totag")
    def has_totag(self, ctx: MsgContext) -> int:
        return _ops.has_totag(ctx)

    @script_function("is_present_hf", Arg("str", "hname", fixup=_ops.header_name_fixup))
    def is_present_hf(self, ctx: MsgContext, name: str) -> int:
        return _ops.is_present_hf(ctx, name)

    @script_function("append_hf", Arg("str", "txt", fixup=_ops.header_line_fixup))
    def append_hf(self, ctx: MsgContext, text: str) -> int:
        return _ops.append_hf(ctx, text)

    @script_function("insert_hf", Arg("str", "txt", fixup=_ops.header_line_fixup))
    def insert_hf(self, ctx: MsgContext, text: str) -> int:
        return _ops.insert_hf(ctx, text)

    @script_function("remove_hf", Arg("str", "hname"), Arg("str", "flags", optional=True))
    def remove_hf(self, ctx: MsgContext, name: str, flags: str | None = None) -> int:
        return _ops.remove_hf(ctx, name, flags)


MODULE = SipmsgopsModule
