"""textops - regular-expression operations on the message text (OpenSIPS textops).

search(re) looks at the whole message, search_body(re) at the body; as in OpenSIPS the regex is
POSIX-extended, case-insensitive, and `^`/`$` match at line ends. For scripts written for OpenSIPS 1.x,
where textops also held the header functions, those are exported here too (same implementation as
sipmsgops)."""

from __future__ import annotations

import re

from routescript.core.module import Arg, Module, script_function
from routescript.modules.sipmsgops import _ops
from routescript.script.context import MsgContext

_FLAGS = re.IGNORECASE | re.MULTILINE


def _rx(pattern: re.Pattern[str] | str) -> re.Pattern[str]:
    text = pattern.pattern if isinstance(pattern, re.Pattern) else str(pattern)
    return re.compile(text, _FLAGS)


def _regex_fixup(value: object) -> object:
    try:
        return _rx(value)  # type: ignore[arg-type]
    except re.error as exc:
        raise ValueError(f"bad regular expression: {exc}") from None


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class TextopsModule(Module):
    name = "textops"

    @script_function("search", Arg("regex", "re", fixup=_regex_fixup))
    def search(self, ctx: MsgContext, pattern: re.Pattern[str]) -> int:
        if ctx.msg is None:
            return -1
        return 1 if _rx(pattern).search(_text(ctx.msg.to_bytes())) else -1

    @script_function("search_body", Arg("regex", "re", fixup=_regex_fixup))
    def search_body(self, ctx: MsgContext, pattern: re.Pattern[str]) -> int:
        if ctx.msg is None or not ctx.msg.body:
            return -1
        return 1 if _rx(pattern).search(_text(ctx.msg.body)) else -1

    # --- the header functions of OpenSIPS 1.x textops --------------------------------------------------
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

    @script_function("remove_hf", Arg("str", "hname"), Arg("str", "flags", optional=True))
    def remove_hf(self, ctx: MsgContext, name: str, flags: str | None = None) -> int:
        return _ops.remove_hf(ctx, name, flags)


MODULE = TextopsModule
