"""sipmsgops - SIP message operations (OpenSIPS 3.x sipmsgops): methods, To tag, headers, R-URI
parameters, headers for the reply. SDP/codec operations are not provided (a presence server does not
touch SDP).

remove_hf(hname[, flags]) takes the 2.x/3.x flags ("r": hname is a regular expression, "g": a glob);
remove_hf_re(expr) and remove_hf_glob(pattern) are the newer spellings of the same."""

from __future__ import annotations

import fnmatch
import re

from routescript.core.module import Arg, Module, script_function
from routescript.core.stats import KNOWN_METHODS
from routescript.script.context import ERROR_ROUTE, FAILURE_ROUTE, REQUEST_ROUTE, MsgContext

from . import _ops


class HeaderFunctions:
    """The header functions sipmsgops shares with textops (OpenSIPS 1.x textops held them): one
    implementation, mixed into both module classes (Module collects tagged methods over the MRO)."""

    # The three tests every script runs per request do their work here, in the function the compiled
    # route calls (one frame, issue 18); the other functions share their code with textops through _ops.
    @script_function("is_method", Arg("str", "methods", fixup=_ops.methods_fixup))
    def is_method(self, ctx: MsgContext, methods: frozenset[str]) -> int:
        """`methods` is the fixup's set of upper-case names. A standard method is upper case already:
        a set test; any other spelling is compared upper-cased (SIP methods are case-sensitive, OpenSIPS
        compares them without case)."""
        msg = ctx.msg
        if msg is None:
            return -1
        method = msg.method if msg.is_request else msg.cseq.method
        if method in methods:
            return 1
        return -1 if method in KNOWN_METHODS or method.upper() not in methods else 1

    @script_function("has_totag")
    def has_totag(self, ctx: MsgContext) -> int:
        msg = ctx.msg
        return -1 if msg is None or not msg.to.tag else 1

    @script_function("is_present_hf", Arg("str", "hname", fixup=_ops.header_name_fixup))
    def is_present_hf(self, ctx: MsgContext, name: str) -> int:
        msg = ctx.msg
        return 1 if msg is not None and msg.has_header(name) else -1

    @script_function("append_hf", Arg("str", "txt", fixup=_ops.header_line_fixup),
                     Arg("str", "hdr", optional=True, fixup=_ops.header_name_fixup))
    def append_hf(self, ctx: MsgContext, text: str, anchor: str | None = None) -> int:
        if anchor is not None:
            return _ops.append_hf_after(ctx, text, anchor)
        return _ops.append_hf(ctx, text)

    @script_function("remove_hf", Arg("str", "hname"), Arg("str", "flags", optional=True))
    def remove_hf(self, ctx: MsgContext, name: str, flags: str | None = None) -> int:
        return _ops.remove_hf(ctx, name, flags)

    @script_function("append_to_reply", Arg("str", "txt"), routes=(REQUEST_ROUTE, FAILURE_ROUTE, ERROR_ROUTE))
    def append_to_reply(self, ctx: MsgContext, text: str) -> int:
        return _ops.append_to_reply(ctx, text)


class SipmsgopsModule(HeaderFunctions, Module):
    name = "sipmsgops"

    @script_function("insert_hf", Arg("str", "txt", fixup=_ops.header_line_fixup),
                     Arg("str", "hdr", optional=True, fixup=_ops.header_name_fixup))
    def insert_hf(self, ctx: MsgContext, text: str, anchor: str | None = None) -> int:
        if anchor is not None:
            return _ops.insert_hf_before(ctx, text, anchor)
        return _ops.insert_hf(ctx, text)
    # script regexes are compiled case-insensitive, as header names compare
    @script_function("remove_hf_re", Arg("regex", "hname_expr"))
    def remove_hf_re(self, ctx: MsgContext, rx: re.Pattern[str]) -> int:
        return _ops.remove_matching(ctx, lambda n: rx.fullmatch(n) is not None)

    @script_function("remove_hf_glob", Arg("str", "hname_pattern"))
    def remove_hf_glob(self, ctx: MsgContext, pattern: str) -> int:
        low = pattern.lower()
        return _ops.remove_matching(ctx, lambda n: fnmatch.fnmatchcase(n.lower(), low))
    @script_function("is_uri_user_e164", Arg("str", "uri"))
    def is_uri_user_e164(self, ctx: MsgContext, uri: str) -> int:
        return _ops.is_uri_user_e164(ctx, uri)

    @script_function("ruri_has_param", Arg("str", "param"), Arg("str", "value", optional=True))
    def ruri_has_param(self, ctx: MsgContext, param: str, value: str | None = None) -> int:
        return _ops.ruri_has_param(ctx, param, value)

    @script_function("ruri_add_param", Arg("str", "param"))
    def ruri_add_param(self, ctx: MsgContext, param: str) -> int:
        return _ops.ruri_add_param(ctx, param)

    @script_function("ruri_del_param", Arg("str", "param"))
    def ruri_del_param(self, ctx: MsgContext, param: str) -> int:
        return _ops.ruri_del_param(ctx, param)


MODULE = SipmsgopsModule
